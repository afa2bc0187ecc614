"""Watch every source of a preemption notice at once: signals, a halt file, a halt request, the clouds.

``NoticeWatcher`` (:mod:`.watcher`) runs one daemon thread per source; the first notice wins.
The cloud pollers follow each cloud's documentation and its own SDK's behaviour, one module per
cloud (:mod:`.aws`, :mod:`.gcp`, :mod:`.azure`, sharing :mod:`.base`); ``docs/notices.md``
writes down every choice with its source and the cases table that checks them. Standard
library only: this runs in slim task containers.
"""

from __future__ import annotations

from runner.task.notices.base import Notice
from runner.task.notices.watcher import MODES, NoticeWatcher

__all__ = ["MODES", "Notice", "NoticeWatcher"]
