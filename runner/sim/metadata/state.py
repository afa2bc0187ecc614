"""What one simulated machine's metadata service knows, and the faults it is told to play."""

from __future__ import annotations

import collections
import email.utils
import math
import secrets
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

CLOUDS = ("aws", "gcp", "azure")
DEFAULT_NOTICE = {"aws": 120.0, "gcp": 30.0, "azure": 30.0}
AWS_ACTIONS = ("terminate", "stop", "hibernate")
GCP_KINDS = ("preempted", "maintenance")
GCP_MAINTENANCE = ("TERMINATE_ON_HOST_MAINTENANCE", "MIGRATE_ON_HOST_MAINTENANCE")
AZURE_TYPES = ("Preempt", "Terminate", "Reboot", "Redeploy", "Freeze")
AZURE_NOTICE_TYPES = ("Preempt", "Terminate", "Reboot", "Redeploy")
AZURE_STATUSES = ("Scheduled", "Started")
REQUEST_LOG_LIMIT = 10_000


def new_etag() -> str:
    return secrets.token_hex(8)  # 16 hex digits, like the real server's


def check_cloud(cloud: str) -> str:
    if cloud not in CLOUDS:
        raise ValueError(f"unknown cloud {cloud!r}: use one of {', '.join(CLOUDS)}")
    return cloud


def check_choice(what: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"unknown {what} {value!r}: use one of {', '.join(choices)}")
    return value


@dataclass
class Fault:
    """A fault of the whole namespace until ``until`` (monotonic): an outage or slow answers."""

    until: float = -math.inf
    answer: str = "reset"  # outage: "reset" (hang up without an answer) or an HTTP status such as "503"
    delay: float = 0.0  # slow: each answer waits this long (at most until the slow period ends)

    def active(self) -> bool:
        return time.monotonic() < self.until


@dataclass
class Namespace:
    """One simulated machine: its cloud, its pending notice, its knobs and its request log."""

    cloud: str
    deadline: float | None = None  # wall clock; set while a notice is pending
    outage: Fault = field(default_factory=Fault)
    slow: Fault = field(default_factory=Fault)
    log: collections.deque[tuple[str, str]] = field(
        default_factory=lambda: collections.deque(maxlen=REQUEST_LOG_LIMIT))
    # AWS
    imdsv1: bool = False  # False: HttpTokens=required (tokenless reads answer 401)
    hop_limit: int = 2  # 1: the token PUT's answer is lost on the way to a container (never arrives)
    token_status: int | None = None  # the token PUT answers this status instead of a token
    tokens: dict[str, float] = field(default_factory=dict)  # token -> monotonic expiry
    action: str = "terminate"
    rebalance: str | None = None  # noticeTime of a rebalance recommendation
    termination_time: str | None = None  # spot/termination-time with no notice pending (a stale value)
    instance_id: str = "i-0a1b2c3d4e5f60718"
    zone: str = "us-east-1a"
    # GCP
    etags: dict[str, str] = field(default_factory=lambda: {"preempted": new_etag(), "maintenance-event": new_etag()})
    preempted: bool = False  # instance/preempted is TRUE
    maintenance: str = "NONE"
    # Azure
    vm_name: str = "vm0"
    name_fault: Fault = field(default_factory=Fault)
    incarnation: int = 1
    events: list[dict[str, Any]] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)

    @property
    def pending(self) -> bool:
        if self.cloud == "azure":
            return any(e["EventType"] in AZURE_NOTICE_TYPES and self.vm_name in e["Resources"] for e in self.events)
        return self.deadline is not None

    def options(self) -> dict[str, Any]:
        return {"imdsv1": self.imdsv1, "hop_limit": self.hop_limit, "token_status": self.token_status,
                "action": self.action, "maintenance": self.maintenance, "vm_name": self.vm_name}

    def state(self, name: str) -> dict[str, Any]:
        return {"namespace": name, "cloud": self.cloud, "pending": self.pending,
                "deadline": self.deadline if self.pending else None,
                "acknowledged": list(self.acknowledged), "options": self.options()}

    def configure(self, **options: Any) -> None:
        """Set knobs: imdsv1, hop_limit, token_status, vm_name, instance_id, zone, termination_time."""
        for key, value in options.items():
            if key == "imdsv1":
                self.imdsv1 = bool(value)
            elif key == "hop_limit":
                if int(value) < 1:
                    raise ValueError("hop_limit must be 1 or more")
                self.hop_limit = int(value)
            elif key == "token_status":
                self.token_status = int(value) if value not in (None, "", 0, "0") else None
            elif key in ("vm_name", "instance_id", "zone", "termination_time"):
                setattr(self, key, None if value is None else str(value))
            else:
                raise ValueError(f"unknown option {key!r}: use imdsv1, hop_limit, token_status, vm_name, "
                                 "instance_id, zone, termination_time")

    def announce(self, cloud: str, seconds: float, *, action: str = "terminate", kind: str = "preempted",
                 maintenance: str = GCP_MAINTENANCE[0], event_type: str = "Preempt",
                 resources: list[str] | None = None, status: str = "Scheduled") -> None:
        """Make ``cloud``'s notice pending, ``seconds`` ahead."""
        self.cloud = check_cloud(cloud)
        deadline = time.time() + seconds
        if cloud == "aws":
            self.action, self.deadline = check_choice("action", action, AWS_ACTIONS), deadline
        elif cloud == "gcp":
            if check_choice("kind", kind, GCP_KINDS) == "preempted":
                self.deadline, self.preempted = deadline, True
                self.etags["preempted"] = new_etag()
            else:
                self.maintenance = check_choice("maintenance value", maintenance, GCP_MAINTENANCE)
                self.etags["maintenance-event"] = new_etag()
                if self.maintenance.startswith("TERMINATE"):
                    self.deadline = deadline
        else:
            check_choice("event type", event_type, AZURE_TYPES)
            started = check_choice("event status", status, AZURE_STATUSES) == "Started"
            names = list(resources) if resources is not None else [self.vm_name]
            self.events.append({
                "EventId": str(uuid.uuid4()), "EventType": event_type, "ResourceType": "VirtualMachine",
                "Resources": names, "EventStatus": status,
                "NotBefore": "" if started else email.utils.formatdate(deadline, usegmt=True),
                "Description": "", "EventSource": "Platform", "DurationInSeconds": -1})
            self.incarnation += 1
            if event_type in AZURE_NOTICE_TYPES and self.vm_name in names:
                self.deadline = time.time() if started else deadline

    def clear(self) -> None:
        """Withdraw every notice, hint and fault; forget acknowledgements."""
        if self.preempted:
            self.preempted = False
            self.etags["preempted"] = new_etag()
        if self.maintenance != "NONE":
            self.maintenance = "NONE"
            self.etags["maintenance-event"] = new_etag()
        if self.events:
            self.incarnation += 1
        self.deadline, self.rebalance, self.termination_time = None, None, None
        self.events.clear()
        self.acknowledged.clear()
        self.outage, self.slow, self.name_fault = Fault(), Fault(), Fault()
