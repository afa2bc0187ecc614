"""GCP: two metadata keys, each watched by its own thread with hanging GETs.

- ``instance/preempted``: ``FALSE``, then ``TRUE`` when the preemption starts; the VM is powered
  off 30 s later (ACPI G2 soft off, then hard off).
- ``instance/maintenance-event``: ``NONE``; ``TERMINATE_ON_HOST_MAINTENANCE`` announces that the
  VM is stopped for host maintenance (60 s ahead; GPU VMs get an hour, which a container cannot
  tell, so 60 s is assumed); ``MIGRATE_ON_HOST_MAINTENANCE`` is a live migration the processes
  survive: a hint, not a notice.

Each key is read once plainly, then with ``?wait_for_change=true&timeout_sec=5&last_etag=E``,
chained back to back. The deadline counts from the last moment the service was known to say
the normal value, never from when the change was seen: the send time of the last request
answered normally, or of the hanging GET the service held on that value and then answered with
the change. So a change seen late (after an outage) reports the little time that is left.
After an error the key is read plainly (short timeouts, capped backoff) until it answers again.
"""

from __future__ import annotations

import time
import urllib.parse

from runner.task.notices.base import TRANSIENT_STATUSES, CloudPoller, Unusable, log, short, status_error

FLAVOR = {"Metadata-Flavor": "Google"}
PREFIX = "/computeMetadata/v1/instance/"
HANG_S = 5  # timeout_sec of each hanging GET; also the most the deadline can be underestimated by
PREEMPT_WINDOW_S = 30.0
MAINTENANCE_WINDOW_S = 60.0
_QUICK_S = 0.25  # a hanging GET back this fast with nothing new: the server does not hang; slow down


class GcpKeyPoller(CloudPoller):
    """Watch one ``instance/`` key; subclasses say what its values mean."""

    source = "gcp"
    key = ""
    normal = ""
    optional = False  # True: a 404 once identified means "not served here", not an error

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.etag: str | None = None
        self.value: str | None = None
        self.last_normal: float | None = None  # wall-clock time the service last said ``normal``

    @property
    def name(self) -> str:
        return f"gcp {self.key}"

    def poll(self) -> float | None:
        hanging = self.identified and self.etag is not None and self.failures == 0
        path, timeout = PREFIX + self.key, self.watcher.request_timeout
        if hanging:
            path += f"?wait_for_change=true&timeout_sec={HANG_S}&last_etag={urllib.parse.quote(self.etag or '')}"
            timeout += HANG_S
        sent, started = time.time(), time.monotonic()
        reply = self.http("GET", path, FLAVOR, timeout)
        if reply.status in TRANSIENT_STATUSES:
            raise status_error(self.key, reply, self.identified)
        if reply.headers.get("Metadata-Flavor") != "Google":
            raise Unusable(f"HTTP {reply.status} without the header Metadata-Flavor: Google",
                           "bad" if self.identified else "foreign")
        if reply.status == 404 and self.identified and self.optional:
            log.info("%s: the key is not served here (HTTP 404); not watching it", self.name)
            return None
        if reply.status != 200:
            raise status_error(self.key, reply, self.identified)
        value = reply.body.decode("ascii", "replace").strip().upper()
        self.check(value, reply.body)
        was_normal = self.value == self.normal
        self.identified, self.etag = True, reply.headers.get("ETag") or None
        if value == self.normal:
            self.last_normal = sent
        elif hanging and was_normal:
            self.last_normal = sent  # the service held this GET on the normal value, then it changed
        changed, self.value = value != self.value, value
        if value != self.normal and changed:
            self.changed(value)
        if hanging and not changed and time.monotonic() - started < _QUICK_S:
            return self.watcher.poll_interval
        return 0.0

    def check(self, value: str, body: bytes) -> None:
        """Raise ``Unusable`` for a value this key never takes."""

    def changed(self, value: str) -> None:
        """React to a new value other than the normal one."""

    def deadline(self, window: float) -> float | None:
        return None if self.last_normal is None else self.last_normal + window


class GcpPreemptedPoller(GcpKeyPoller):
    key = "preempted"
    normal = "FALSE"

    def check(self, value: str, body: bytes) -> None:
        if value not in ("TRUE", "FALSE"):
            raise Unusable(f"preempted answered {short(body)}", "bad" if self.identified else "foreign")

    def changed(self, value: str) -> None:
        self.record(self.deadline(PREEMPT_WINDOW_S), "preempted", kind="preempted")


class GcpMaintenancePoller(GcpKeyPoller):
    key = "maintenance-event"
    normal = "NONE"
    optional = True

    def check(self, value: str, body: bytes) -> None:
        if not value or not value.replace("_", "").isalnum():
            raise Unusable(f"maintenance-event answered {short(body)}", "bad" if self.identified else "foreign")

    def changed(self, value: str) -> None:
        if value.startswith("TERMINATE"):
            self.record(self.deadline(MAINTENANCE_WINDOW_S), value, kind="maintenance")
        else:  # MIGRATE_ON_HOST_MAINTENANCE: a live migration; the processes go on
            log.info("gcp maintenance-event %s (a hint, not a notice)", value)
            self.hint(f"maintenance-event {value}")
