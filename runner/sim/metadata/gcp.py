"""The Compute Engine metadata server, as Google's metadata docs and google-auth expect it.

``GET /`` answers 200 with ``Metadata-Flavor: Google`` (google-auth's ``ping`` checks exactly
that). Under ``/computeMetadata/v1/`` the request needs ``Metadata-Flavor: Google`` (403
without); every answer carries that header and a 16-hex-digit ``ETag``; ``?wait_for_change=true``
holds the request until the value's ETag differs from ``last_etag`` (or the one current when it
arrived) or ``timeout_sec`` passes. Keys: ``instance/preempted``, ``instance/maintenance-event``
and the few that google-auth and the tests read (ids, zone, project, the default service account).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from runner.sim.metadata.state import Namespace

if TYPE_CHECKING:
    from runner.sim.metadata.server import _Handler

FLAVOR = {"Metadata-Flavor": "Google"}
TEXT = "application/text"
ROOT = "/computeMetadata/v1/"
EMAIL = "runner-sim@sim-project.iam.gserviceaccount.com"
STATIC: dict[str, Any] = {
    "instance/id": "4520031799277581759",
    "instance/zone": "projects/123456789012/zones/us-central1-a",
    "instance/machine-type": "projects/123456789012/machineTypes/g2-standard-4",
    "instance/scheduling/preemptible": "TRUE",
    "instance/scheduling/provisioning-model": "SPOT",
    "instance/scheduling/on-host-maintenance": "TERMINATE",
    "project/project-id": "sim-project",
    "project/numeric-project-id": "123456789012",
    "instance/service-accounts/default/email": EMAIL,
    "instance/service-accounts/default/": {"aliases": ["default"], "email": EMAIL,
                                           "scopes": ["https://www.googleapis.com/auth/cloud-platform"]},
    # A made-up bearer token: the simulator grants nothing anywhere.
    "instance/service-accounts/default/token": {"access_token": "simulated-metadata-token",
                                                "expires_in": 3599, "token_type": "Bearer"},
}


def handle(h: _Handler, space: Namespace, path: str, query: dict[str, str]) -> None:
    if path == "/" and h.command in ("GET", "HEAD"):
        h.reply(200, "0.1/\ncomputeMetadata/\n", TEXT, headers=FLAVOR)
        return
    if not path.startswith(ROOT) or h.command not in ("GET", "HEAD"):
        h.reply(404, "Not Found", headers=FLAVOR)
        return
    if h.headers.get("Metadata-Flavor") != "Google":
        h.reply(403, "Missing Metadata-Flavor:Google header.", headers=FLAVOR)
        return
    key = path[len(ROOT):]
    if key in ("instance/preempted", "instance/maintenance-event"):
        _watched(h, space, key.split("/", 1)[1], query)
        return
    value = STATIC.get(key)
    if value is not None:
        etag = {**FLAVOR, "ETag": "0f0f0f0f0f0f0f0f"}
        if isinstance(value, dict):
            h.json(200, value, etag)
        else:
            h.reply(200, value, TEXT, headers=etag)
        return
    h.reply(404, "Not Found", headers=FLAVOR)


def _watched(h: _Handler, space: Namespace, name: str, query: dict[str, str]) -> None:
    """``preempted`` or ``maintenance-event``, with the hanging GET."""
    sim = h.sim
    with sim._cond:
        if query.get("wait_for_change", "").lower() == "true":
            start_etag = query.get("last_etag") or space.etags[name]
            try:
                timeout = float(query.get("timeout_sec") or sim.hang_seconds)
            except ValueError:
                timeout = sim.hang_seconds
            sim._cond.wait_for(lambda: space.etags[name] != start_etag or sim._closing,
                               max(0.0, min(timeout, sim.hang_seconds)))
        if name == "preempted":
            value = "TRUE" if space.preempted else "FALSE"
        else:
            value = space.maintenance
        etag = space.etags[name]
    h.reply(200, value, TEXT, headers={**FLAVOR, "ETag": etag})
