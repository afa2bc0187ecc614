"""`runner exec` around a script that saves a checkpoint as a folder of files, the way the Hugging Face
``Trainer`` does (``checkpoint-N/``: the weights, the optimizer, ..., ``trainer_state.json`` last) and
resumes from the newest such folder without checking it (``get_last_checkpoint``).

A save of several files has gaps between them where no file is open for writing. A notice that
lands in one must not signal the script there, and what a signal cut short must not be committed:
the next attempt would resume from a folder without its state file and fail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# argv: seconds between two files of a save, files per save, seconds between saves, "plain" (dies of
# SIGTERM, no handler) or "save-on-term" (its SIGTERM handler starts one more save, then dies of it),
# and optionally the seconds each file takes to write (in ten pieces; 0 by default).
FOLDER_SAVER = r'''
import os, re, shutil, signal, sys, time
gap, files, pause, mode = float(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
write_s = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
out = os.environ["RUNNER_SYNC_DIR"]
found = [d for d in os.listdir(out) if re.fullmatch(r"checkpoint-\d+", d)] if os.path.isdir(out) else []
n = 0
if found:
    last = max(found, key=lambda d: int(d.split("-")[1]))
    n = int(open(os.path.join(out, last, "state.txt")).read())  # no try: a torn folder fails here
    print("resumed", n, flush=True)

def save(n, announce=True):
    folder = os.path.join(out, f"checkpoint-{n}")
    os.makedirs(folder, exist_ok=True)
    for i in range(files):
        with open(os.path.join(folder, f"part-{i}.bin"), "wb") as fh:
            for _ in range(10):
                fh.write(os.urandom(20_000))
                fh.flush()
                time.sleep(write_s / 10)
        if i == 0 and announce:
            print("between files", n, flush=True)
        time.sleep(gap)
    with open(os.path.join(folder, "state.txt"), "w") as fh:
        fh.write(str(n))
    for old in sorted((d for d in os.listdir(out) if d.startswith("checkpoint-")), key=lambda d: int(d.split("-")[1]))[:-2]:
        shutil.rmtree(os.path.join(out, old))
    print("saved", n, flush=True)

if mode == "save-on-term":
    def on_term(signum, frame):
        os.makedirs(os.path.join(out, f"checkpoint-{n + 100}"))
        with open(os.path.join(out, f"checkpoint-{n + 100}", "part-0.bin"), "wb") as fh:
            fh.write(b"x" * 1000)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)  # dies of it, its save cut short
    signal.signal(signal.SIGTERM, on_term)
while n < 6:
    n += 1
    save(n)
    time.sleep(pause)
print("done", n, flush=True)
'''


def _exec(tmp: Path, attempt: int, *args: str, **env_extra: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env.update({"RUNNER_CHECKPOINT_URI": f"file://{tmp / 'store'}", "RUNNER_NOTICE": "none",
                "RUNNER_ATTEMPT": str(attempt), "RUNNER_HALT_FILE": str(tmp / "halt.txt"), "PYTHONPATH": str(ROOT),
                "RUNNER_CHECKPOINT_KEEP": "2", **env_extra})
    return subprocess.Popen([sys.executable, "-m", "runner.exec", "--dir", str(tmp / f"work{attempt}"), "--settle",
                             "0.3", "--", sys.executable, "-c", FOLDER_SAVER, *args], cwd=tmp, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _notice_at(proc: subprocess.Popen[str], line: str) -> tuple[str, str]:
    assert proc.stdout is not None
    seen = []
    while not (got := proc.stdout.readline()).startswith(line):
        assert got, f"the script ended before printing {line!r}: {seen}"
        seen.append(got)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    return "".join(seen) + line + out, err


def _restored(tmp: Path) -> dict[str, list[str]]:
    from runner.exec.sync import FolderSync
    from runner.stores import open_store

    sync = FolderSync(open_store(f"file://{tmp / 'store'}"), tmp / "check")
    assert sync.restore() is not None
    return {d.name: sorted(p.name for p in d.iterdir()) for d in sorted(sync.folder.iterdir())}


def _resume_and_finish(tmp: Path) -> tuple[int, str]:
    code_out_err = _exec(tmp, 2, "0", "3", "0", "plain").communicate(timeout=120)
    return int(code_out_err[0].split("resumed ")[1].split()[0]) if "resumed" in code_out_err[0] else 0, \
        code_out_err[0] + code_out_err[1]


def test_a_notice_between_two_files_of_a_folder_save_waits_for_the_whole_folder(tmp_path):
    # 4 files 0.15 s apart: no file is open in the gaps, but the folder changed less than 0.3 s ago
    out, err = _notice_at(_exec(tmp_path, 1, "0.15", "4", "1.0", "plain"), "between files 2")
    assert "saved 2" in out, err
    assert "being written: letting the save finish before the signal" in err
    folders = _restored(tmp_path)
    assert folders["checkpoint-2"] == ["part-0.bin", "part-1.bin", "part-2.bin", "part-3.bin", "state.txt"], folders
    resumed, log = _resume_and_finish(tmp_path)
    assert resumed == 2 and "done 6" in log, log


def test_what_a_save_cut_short_by_the_signal_wrote_is_not_committed(tmp_path):
    # The handler starts checkpoint-102/ and dies of SIGTERM with one file of it written.
    out, err = _notice_at(_exec(tmp_path, 1, "0", "2", "0.8", "save-on-term"), "saved 2")
    assert "killed by SIGTERM while it was saving: not committing the 1 file it wrote since the signal" in err, err
    assert "not committing checkpoint-102/part-0.bin: written by a save that SIGTERM cut short" in err
    folders = _restored(tmp_path)
    assert "checkpoint-102" not in folders and folders["checkpoint-2"][-1] == "state.txt", folders
    resumed, log = _resume_and_finish(tmp_path)
    assert resumed == 2 and "done 6" in log, log


def test_a_folder_save_longer_than_the_window_is_left_out_whole(tmp_path):
    # Each save: 20 files written in 0.3 s each, 0.05 s apart (7 s), then 1 s of quiet. The 4 s window
    # ends inside save 2, so the script is signalled while it saves and dies of it with part of
    # checkpoint-2/ written.
    out, err = _notice_at(_exec(tmp_path, 1, "0.05", "20", "1.0", "plain", "0.3", RUNNER_NOTICE_WINDOW="4"),
                          "between files 2")
    assert "saved 2" not in out
    assert "it wrote since the last snapshot" in err, err
    folders = _restored(tmp_path)
    assert list(folders) == ["checkpoint-1"] and len(folders["checkpoint-1"]) == 21, folders
    resumed, log = _resume_and_finish(tmp_path)
    assert resumed == 1 and "done 6" in log, log
