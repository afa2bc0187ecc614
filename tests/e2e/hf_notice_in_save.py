"""Run inside the runner-example-hf-trainer image: notices that land inside the Trainer's checkpoint saves.

Each trial is two attempts of ``runner exec -- python train.py`` (the image's entry point), each in
a fresh folder restored from a ``file://`` store, as on a new machine. Attempt 1 gets its notice
(SIGTERM to the wrapper) the moment the Trainer creates the k-th ``checkpoint-N/`` folder, that
is inside its save; attempt 2 must resume from a whole checkpoint folder and finish. Prints one
JSON line per trial.

    python hf_notice_in_save.py WORKDIR TRIALS MAX_STEPS
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

work, trials, max_steps = sys.argv[1], int(sys.argv[2]), sys.argv[3]


def attempt(base, n, notice_at=None):
    folder = os.path.join(base, f"attempt{n}", "checkpoints")
    os.makedirs(os.path.dirname(folder))
    env = {k: v for k, v in os.environ.items() if not k.startswith("RUNNER_")}
    env.update(RUNNER_CHECKPOINT_URI=f"file://{base}/store", RUNNER_NOTICE="none", RUNNER_ATTEMPT=str(n),
               RUNNER_CHECKPOINT_KEEP="2")
    proc = subprocess.Popen(["runner", "exec", "--dir", folder, "--", "python", "/workspace/train.py", "--out", folder,
                             "--max-steps", max_steps, "--save-steps", "5"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    noticed = None
    while notice_at is not None and proc.poll() is None:
        names = os.listdir(folder) if os.path.isdir(folder) else []
        if sum(name.startswith("checkpoint-") for name in names) >= notice_at:
            proc.send_signal(signal.SIGTERM)
            noticed = sorted(names)
            break
        time.sleep(0.002)
    out, _ = proc.communicate(timeout=600)
    return proc.returncode, out, noticed


for trial in range(trials):
    base = os.path.join(work, f"trial{trial}")
    shutil.rmtree(base, ignore_errors=True)
    first, out1, noticed = attempt(base, 1, notice_at=1 + trial % 2)
    second, out2, _ = attempt(base, 2)
    resumed = [line for line in out2.splitlines() if line.startswith(("resuming from", "starting from"))]
    print(json.dumps({"trial": trial, "noticed_with": noticed, "first": first, "second": second,
                      "resumed": resumed, "first_tail": out1.splitlines()[-6:], "second_tail": out2.splitlines()[-6:]}),
          flush=True)
