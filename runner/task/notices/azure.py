"""Azure: Scheduled Events from the instance metadata service, attributed to this VM by name.

- ``GET /metadata/scheduledevents?api-version=2020-07-01`` with ``Metadata: true``, once a
  second as Azure advises; the first call may take up to two minutes (it enables the service).
- Events go to every VM of an availability set or scale-set placement group; ``Resources``
  names the VMs an event affects. This VM's name comes from
  ``/metadata/instance/compute/name``; it is asked for at every poll until known, and no event
  is acted on before it is (an event is this VM's only when its ``Resources`` name this VM, as
  Microsoft's own sample checks).
- ``Preempt``, ``Terminate``, ``Reboot`` and ``Redeploy`` end the processes: notices.
  ``Freeze`` pauses the VM for seconds with memory kept: a hint. The deadline is ``NotBefore``
  for a ``Scheduled`` event and now for a ``Started`` one (its ``NotBefore`` is blank).
- 410, 429 and 5xx are retried (IMDS: "410 Gone: retry after some time for a max of 70 seconds").
"""

from __future__ import annotations

import json
import time

from runner.task.notices.base import CloudPoller, Unusable, log, status_error, to_epoch

EVENTS_PATH = "/metadata/scheduledevents?api-version=2020-07-01"
NAME_PATH = "/metadata/instance/compute/name?api-version=2021-02-01&format=text"
FIRST_CALL_TIMEOUT = 120.0  # the real service's first call may take up to 2 minutes
NOTICE_TYPES = ("Preempt", "Terminate", "Reboot", "Redeploy")
HINT_TYPES = ("Freeze",)


class AzurePoller(CloudPoller):
    source = "azure"

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.vm_name: str | None = None
        self.name_error = ""
        self.waiting: set[str] = set()  # events seen while this VM's name is unknown
        self.hinted: set[str] = set()

    def poll(self) -> float | None:
        first_real = not self.identified and self.real_service
        reply = self.http("GET", EVENTS_PATH, {"Metadata": "true"}, FIRST_CALL_TIMEOUT if first_real else None)
        if reply.status != 200:
            raise status_error("scheduledevents", reply, self.identified)
        try:
            doc = json.loads(reply.body)
        except ValueError:
            doc = None
        if not isinstance(doc, dict) or "DocumentIncarnation" not in doc:
            raise Unusable(f"scheduledevents is not an events document: {reply.body[:60]!r}",
                           "bad" if self.identified else "foreign")
        self.identified = True
        if self.vm_name is None:
            self.vm_name = self.fetch_vm_name()
        events = doc.get("Events")
        for event in events if isinstance(events, list) else []:
            if isinstance(event, dict):
                self.consider(event)
        return self.watcher.poll_interval

    def consider(self, event: dict[str, object]) -> None:
        event_id, event_type = str(event.get("EventId", "")), str(event.get("EventType", ""))
        resources = event.get("Resources")
        names = [str(r) for r in resources] if isinstance(resources, list) else []
        if event_type not in NOTICE_TYPES + HINT_TYPES:
            log.debug("azure event %s of type %r: not a notice", event_id, event_type)
            return
        if self.vm_name is None:
            if event_id not in self.waiting:
                self.waiting.add(event_id)
                self.warn(f"azure {event_type} event {event_id} names {names}, but this VM's name is not "
                          f"known yet ({self.name_error}): nothing is done until it is")
            return
        if self.vm_name.lower() not in (name.lower() for name in names):
            return  # another VM of the same availability set or scale set
        if event_type in HINT_TYPES:
            if event_id not in self.hinted:
                self.hinted.add(event_id)
                log.info("azure %s event %s (a pause with memory kept: a hint, not a notice)", event_type, event_id)
                self.hint(f"{event_type} {event_id}")
            return
        if str(event.get("EventStatus", "")) == "Started":
            deadline: float | None = time.time()
        else:
            deadline = to_epoch(str(event.get("NotBefore", "")))
        if len(names) == 1:  # acknowledging lets the event proceed for every VM it names: ours alone only
            self.watcher._seen_azure_event(self.base, event_id)
        self.record(deadline, event_id, kind=event_type)

    def fetch_vm_name(self) -> str | None:
        """This VM's name, or None (asked again at the next poll)."""
        try:
            reply = self.http("GET", NAME_PATH, {"Metadata": "true"})
        except Unusable as exc:
            self.name_error = f"the name lookup failed: {exc}"
            return None
        name = reply.body.decode("utf-8", "replace").strip()
        if reply.status != 200 or not 0 < len(name) < 256:
            self.name_error = f"the name lookup answered HTTP {reply.status}"
            return None
        if self.waiting:
            log.info("azure: this VM is %s; considering the events seen meanwhile", name)
        return name
