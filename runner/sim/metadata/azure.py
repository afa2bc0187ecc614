"""Azure's instance metadata service: Scheduled Events and the VM's name, as Microsoft documents them.

Every request needs ``Metadata: true`` and an ``api-version`` (400 without). ``GET
/metadata/scheduledevents`` answers ``{"DocumentIncarnation": N, "Events": [...]}``; events of
every type, for this VM or others of its set, ``Scheduled`` (with ``NotBefore``) or ``Started``
(``NotBefore`` blank). ``POST`` with ``{"StartRequests": [{"EventId": ...}]}`` approves events:
200 for a valid id, 400 for a malformed body. ``/metadata/instance/compute/name`` answers the
VM's name, or fails as told (``MetadataSimulator.fault(kind="name")``).
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from runner.sim.metadata.state import Namespace

if TYPE_CHECKING:
    from runner.sim.metadata.server import _Handler

EVENTS = "/metadata/scheduledevents"
NAME = "/metadata/instance/compute/name"


def handle(h: _Handler, space: Namespace, path: str, query: dict[str, str]) -> None:
    sim = h.sim
    if path not in (EVENTS, NAME):
        h.reply(404, "Not Found")
        return
    if h.headers.get("Metadata", "").lower() != "true":
        h.json(400, {"error": "Bad request. Required metadata header not specified"})
        return
    if not query.get("api-version"):
        h.json(400, {"error": "Bad request. api-version was not specified in the request."})
        return
    if path == NAME:
        with sim._cond:
            fault, name = space.name_fault, space.vm_name
        if h.command != "GET":
            h.reply(405, "Method Not Allowed")
        elif fault.active() and fault.answer.isdigit():
            h.reply(int(fault.answer), "Service Unavailable (simulated)")
        elif fault.active():
            h.hang_up()
        else:
            h.reply(200, name)
        return
    if h.command == "GET":
        with sim._cond:
            doc = {"DocumentIncarnation": space.incarnation, "Events": [dict(e) for e in space.events]}
        h.json(200, doc)
        return
    if h.command != "POST":
        h.reply(405, "Method Not Allowed")
        return
    try:
        requests = json.loads(h.body)["StartRequests"]
        ids = [str(item["EventId"]) for item in requests]
    except (ValueError, TypeError, KeyError):
        h.json(400, {"error": 'Bad request. Expected {"StartRequests": [{"EventId": "..."}]}'})
        return
    with sim._cond:
        known = {event["EventId"] for event in space.events}
        started = [event_id for event_id in ids if event_id in known]
        if started:
            space.acknowledged.extend(started)
            space.events = [e for e in space.events if e["EventId"] not in started]
            space.incarnation += 1
            sim._cond.notify_all()
    h.reply(200)
