"""`runner exec` with real child processes: restore, exit codes, notices forwarded as signals."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from runner.errors import ConfigError
from runner.exec.wrapper import ExecOptions, exit_code_of, parse_signal

ROOT = Path(__file__).resolve().parents[2]

# A child that counts in $RUNNER_SYNC_DIR/count.txt, resuming from it, and reports the notice.
CHILD = r'''
import json, os, signal, sys, time
folder = os.environ["RUNNER_SYNC_DIR"]
path = os.path.join(folder, "count.txt")
n = int(open(path).read()) if os.path.exists(path) else 0
print("start", n, flush=True)
def on_notice(signum, frame):
    doc = json.load(open(os.environ["RUNNER_NOTICE_FILE"]))
    print("notice", signal.Signals(signum).name, doc["source"], doc["seconds_left"], flush=True)
    if sys.argv[2] == "ignore":
        return
    sys.exit(int(sys.argv[2]))
signal.signal(getattr(signal, sys.argv[1]), on_notice)
for i in range(n, n + int(sys.argv[3])):
    time.sleep(0.1)
    open(path + ".tmp", "w").write(str(i + 1)); os.replace(path + ".tmp", path)
sys.exit(int(sys.argv[4]))
'''


def wrapper(tmp: Path, *child_args: str, signal_name: str = "SIGTERM", attempt: int = 1,
            extra: tuple[str, ...] = ()) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env.update(RUNNER_CHECKPOINT_URI=f"file://{tmp / 'store'}", RUNNER_NOTICE="none", RUNNER_ATTEMPT=str(attempt),
               RUNNER_HALT_FILE=str(tmp / "halt.txt"), PYTHONPATH=str(ROOT), RUNNER_SYNC_DIR=str(tmp / f"work{attempt}"))
    return subprocess.Popen([sys.executable, "-m", "runner.exec", "--signal", signal_name, "--settle", "0.2",
                             *extra, "--", sys.executable, "-c", CHILD, *child_args],
                            cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def test_finishes_with_the_child_code_and_the_next_attempt_resumes(tmp_path):
    code, out, err = finish(wrapper(tmp_path, "SIGUSR1", "0", "5", "0"))
    assert code == 0, err
    assert "start 0" in out
    progress = json.loads((tmp_path / "store" / "progress.json").read_text())
    assert progress["state"] == "done" and progress["step"] >= 1 and progress["task"] == "exec"
    code, out, err = finish(wrapper(tmp_path, "SIGUSR1", "0", "3", "3", attempt=2))
    assert code == 3, err  # passed through; the folder is still synced
    assert "start 5" in out
    code, out, _ = finish(wrapper(tmp_path, "SIGUSR1", "0", "0", "0", attempt=3))
    assert "start 8" in out


def test_halt_file_notice_becomes_the_configured_signal_and_exit_75(tmp_path):
    proc = wrapper(tmp_path, "SIGUSR1", "0", "100", "0", signal_name="usr1")
    time.sleep(1.5)
    (tmp_path / "halt.txt").touch()
    code, out, err = finish(proc)
    assert code == 75, err
    assert "notice SIGUSR1 halt-file None" in out
    assert not (tmp_path / "halt.txt").exists()
    count = int((tmp_path / "work1" / "count.txt").read_text())
    code, out, _ = finish(wrapper(tmp_path, "SIGUSR1", "0", "0", "0", attempt=2))
    assert f"start {count}" in out  # the folder as the child left it was committed


def test_sigterm_to_the_wrapper_reaches_a_child_that_dies_of_it(tmp_path):
    proc = wrapper(tmp_path, "SIGUSR2", "0", "100", "0")  # the child does not handle SIGTERM
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    code, _, err = finish(proc)
    assert code == 75, err
    assert "sent SIGTERM" in err and "exiting 75" in err


def test_a_child_that_ignores_the_notice_runs_until_the_wrapper_is_stopped(tmp_path):
    proc = wrapper(tmp_path, "SIGTERM", "ignore", "30", "0")
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc)
    assert "notice SIGTERM" in out
    assert code == 75, err  # it went on, finished its 30 counts, and the folder was committed


def test_bad_input_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env.update(PYTHONPATH=str(ROOT), RUNNER_CHECKPOINT_URI=f"file://{tmp_path / 's'}", RUNNER_NOTICE="none")
    run = subprocess.run([sys.executable, "-m", "runner.exec", "--dir", str(tmp_path / "w"), "--",
                          "no-such-command-here"], env=env, capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "not found" in run.stderr and "Traceback" not in run.stderr
    run = subprocess.run([sys.executable, "-m", "runner.cli", "exec", "--", "true"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "no checkpoint folder" in run.stderr and "Traceback" not in run.stderr


def test_options():
    assert parse_signal("usr1") == signal.SIGUSR1 and parse_signal("15") == signal.SIGTERM
    with pytest.raises(ConfigError, match="catch"):
        parse_signal("SIGKILL")
    with pytest.raises(ConfigError, match="absolute"):
        ExecOptions.build(["x"], "rel/dir", environ={})
    opts = ExecOptions.build(["python", "t.py"], None, None, environ={"RUNNER_SYNC_DIR": "/w",
                                                                      "RUNNER_NOTICE_SIGNAL": "SIGUSR1"})
    assert opts.folder == Path("/w") and opts.signal == signal.SIGUSR1
    assert exit_code_of(-9) == 137 and exit_code_of(3) == 3
