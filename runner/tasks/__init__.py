"""The reference training tasks, each runnable as ``python -m runner.tasks.<name>``."""

import time

#: When this process began importing the task (before torch), for recovery-latency figures.
PROCESS_STARTED_AT = time.time()
