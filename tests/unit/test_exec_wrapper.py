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
               RUNNER_HALT_FILE=str(tmp / "halt.txt"), PYTHONPATH=str(ROOT), RUNNER_SYNC_DIR=str(tmp / f"work{attempt}"),
               TMPDIR=str(tmp / "tmpdir"))  # where the default notice file goes
    (tmp / "tmpdir").mkdir(exist_ok=True)
    return subprocess.Popen([sys.executable, "-m", "runner.exec", "--signal", signal_name, "--settle", "0.2",
                             *extra, "--", sys.executable, "-c", CHILD, *child_args],
                            cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def started(tmp: Path, attempt: int = 1, timeout: float = 30) -> None:
    """Wait until the child counts (its notice handler is set by then): a notice sent before that kills
    a child still starting, whatever it would do with it (a fixed 1.5 s was too short on a busy host)."""
    deadline = time.monotonic() + timeout
    while not (tmp / f"work{attempt}" / "count.txt").exists():
        assert time.monotonic() < deadline, "the child never started counting"
        time.sleep(0.02)


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
    started(tmp_path)
    (tmp_path / "halt.txt").touch()
    code, out, err = finish(proc)
    assert code == 75, err
    assert "notice SIGUSR1 halt-file None" in out  # the child read the notice file
    assert not (tmp_path / "halt.txt").exists()
    assert not list((tmp_path / "tmpdir").iterdir())  # and the wrapper removed it: nothing left in /tmp
    count = int((tmp_path / "work1" / "count.txt").read_text())
    code, out, _ = finish(wrapper(tmp_path, "SIGUSR1", "0", "0", "0", attempt=2))
    assert f"start {count}" in out  # the folder as the child left it was committed


def test_sigterm_to_the_wrapper_reaches_a_child_that_dies_of_it(tmp_path):
    proc = wrapper(tmp_path, "SIGUSR2", "0", "100", "0")  # the child does not handle SIGTERM
    started(tmp_path)
    proc.send_signal(signal.SIGTERM)
    code, _, err = finish(proc)
    assert code == 75, err
    assert "sent SIGTERM" in err and "exiting 75" in err


def test_a_child_that_ignores_the_notice_runs_until_the_wrapper_is_stopped(tmp_path):
    proc = wrapper(tmp_path, "SIGTERM", "ignore", "30", "0")
    started(tmp_path)
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


# A child that saves a big file slowly, in place (emptied first, then written in pieces), and dies
# of SIGTERM like a script without a handler; it prints when each save starts and ends.
SLOW_SAVER = r'''
import os, sys, time
folder = os.environ["RUNNER_SYNC_DIR"]
path = os.path.join(folder, "state.json")
n = int(open(path).read().split(",")[0][1:]) if os.path.exists(path) else 0
print("start", n, flush=True)
while True:
    n += 1
    with open(path, "w") as fh:  # non-atomic: the old content is gone from here on
        print("saving", n, flush=True)
        fh.write("[%d" % n)
        for _ in range(10):
            fh.flush()
            time.sleep(float(sys.argv[1]))
            fh.write(", 0" * 20000)
        fh.write("]")
    print("saved", n, flush=True)
    time.sleep(float(sys.argv[2]))
'''


def _exec(tmp: Path, child: list[str], attempt: int = 1, **env_extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env.update({"RUNNER_CHECKPOINT_URI": f"file://{tmp / 'store'}", "RUNNER_NOTICE": "none",
                "RUNNER_ATTEMPT": str(attempt), "RUNNER_HALT_FILE": str(tmp / "halt.txt"), "PYTHONPATH": str(ROOT),
                **env_extra})
    return subprocess.Popen([sys.executable, "-m", "runner.exec", "--dir", str(tmp / f"work{attempt}"), "--settle",
                             "0.2", "--", *child], cwd=tmp, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _restored(tmp: Path, name: str) -> Path:
    from runner.exec.sync import FolderSync
    from runner.stores import open_store

    sync = FolderSync(open_store(f"file://{tmp / 'store'}"), tmp / name)
    sync.restore()
    return sync.folder


def test_a_notice_inside_a_save_lets_the_save_finish_before_the_signal(tmp_path):
    proc = _exec(tmp_path, [sys.executable, "-c", SLOW_SAVER, "0.1", "0.3"])
    assert proc.stdout is not None
    while not proc.stdout.readline().startswith("saving 2"):
        pass
    proc.send_signal(signal.SIGTERM)  # inside save 2: the file is half written
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err
    assert "saved 2" in out and "letting the save finish before the signal" in err
    doc = json.loads((_restored(tmp_path, "check") / "state.json").read_text())
    assert doc[0] == 2 and len(doc) == 1 + 10 * 20000  # save 2, whole


def test_a_notice_whose_window_ends_inside_a_save_keeps_the_last_whole_version(tmp_path):
    """A save longer than the window: the child is signalled, then killed; the torn file is not committed."""
    # each save takes 10 x 0.5 s; the 3 s window ends inside the second one
    proc = _exec(tmp_path, [sys.executable, "-c", SLOW_SAVER, "0.5", "2.5"], RUNNER_NOTICE_WINDOW="3")
    assert proc.stdout is not None
    while not proc.stdout.readline().startswith("saving 2"):
        pass
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err
    assert time.monotonic() - started < 4.5  # inside the window (3 s; the save alone would take 5 s)
    assert "saved 2" not in out and "not committing state.json" in err
    doc = json.loads((_restored(tmp_path, "check") / "state.json").read_text())
    assert doc[0] == 1  # the last whole version


def test_a_command_failing_right_after_a_restore_falls_back_to_the_snapshot_before(tmp_path):
    # Attempt 1 saves twice ("good" then "poison"); attempt 2 restores "poison", dies on it, commits
    # nothing new; attempt 3 restores "good" and finishes.
    script = r'''
import os, sys, time
folder = os.environ["RUNNER_SYNC_DIR"]
path = os.path.join(folder, "data.txt")
if os.path.exists(path) and open(path).read() == "poison":
    sys.exit("cannot read my own checkpoint")
if sys.argv[1] == "save":
    for text in ("good", "poison"):
        open(path + ".tmp", "w").write(text); os.replace(path + ".tmp", path)
        time.sleep(1.5)
'''
    assert _exec(tmp_path, [sys.executable, "-c", script, "save"], attempt=1).wait(60) == 0
    second = _exec(tmp_path, [sys.executable, "-c", script, "run"], attempt=2)
    _, err = second.communicate(timeout=60)
    assert second.returncode == 1 and "the next attempt restores the step before it" in err
    third = _exec(tmp_path, [sys.executable, "-c", script, "run"], attempt=3)
    _, err = third.communicate(timeout=60)
    assert third.returncode == 0, err
    assert (tmp_path / "work3" / "data.txt").read_text() == "good"


def test_a_final_sync_that_cannot_finish_in_the_window_exits_75_and_says_what_is_lost(tmp_path):
    slowdisk = ROOT / "tests" / "faults" / "slowdisk"
    control = tmp_path / "delay"
    control.write_text("0")
    # It stops cleanly on the signal: a command the signal kills right after a save would have that save held.
    child = [sys.executable, "-c", ("import os, signal, sys, time\n"
             "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
             "p = os.path.join(os.environ['RUNNER_SYNC_DIR'], 'big.bin')\n"
             "open(p + '.tmp', 'wb').write(os.urandom(200000)); os.replace(p + '.tmp', p)\n"
             "print('saved', flush=True); time.sleep(3)\n"
             "open(p + '.tmp', 'wb').write(os.urandom(200000)); os.replace(p + '.tmp', p)\n"
             "print('saved again', flush=True); time.sleep(60)")]
    proc = _exec(tmp_path, child, RUNNER_NOTICE_WINDOW="5", PYTHONPATH=f"{slowdisk}:{ROOT}",
                 RUNNER_TEST_SLOW_DISK=f"{tmp_path / 'store'}:{control}")
    assert proc.stdout is not None
    while not proc.stdout.readline().startswith("saved again"):
        pass
    control.write_text("60")  # the disk under the store hangs now
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 75, err
    assert time.monotonic() - started < 5
    assert "did not finish before the notice window ends" in err and "restores step 1" in err


def test_a_halt_request_exits_76_after_the_final_sync(tmp_path):
    """``runner halt`` writes HALT under the checkpoint URI: the command is signalled, the folder committed,
    and the exit is 76 (no service retries it in place), with progress.json saying "halted"."""
    proc = wrapper(tmp_path, "SIGUSR1", "0", "200", "0", signal_name="SIGUSR1")
    started(tmp_path)
    (tmp_path / "store").mkdir(exist_ok=True)
    (tmp_path / "store" / "HALT").write_text("halt")
    code, out, err = finish(proc)
    assert code == 76, err
    assert "notice SIGUSR1 halt-request" in out, err
    assert json.loads((tmp_path / "store" / "progress.json").read_text())["state"] == "halted"
