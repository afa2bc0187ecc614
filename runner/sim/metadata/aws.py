"""The EC2 instance metadata service, as the EC2 user guide describes it (docs/notices.md has the links).

IMDSv2 tokens (``PUT /latest/api/token``, TTL 1..21600 s, 400 otherwise; a PUT carrying
``X-Forwarded-For`` is refused, 403), IMDSv1 allowed or not (a tokenless read answers 401 when
tokens are required; an invalid token always does), a PUT response hop limit of 1 (the token's
answer never arrives), ``spot/instance-action`` (terminate, stop, hibernate), the legacy
``spot/termination-time``, rebalance recommendations, and what botocore reads for a region.
Every answer is ``text/plain``.
"""

from __future__ import annotations

import json
import secrets
import time
from typing import TYPE_CHECKING

from runner.sim.metadata.state import Namespace

if TYPE_CHECKING:
    from runner.sim.metadata.server import _Handler

MAX_TOKEN_TTL = 21600
META = "/latest/meta-data/"
LISTING = ("ami-id", "events/", "iam/", "instance-action", "instance-id", "instance-life-cycle",
           "instance-type", "placement/", "spot/")


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def handle(h: _Handler, space: Namespace, path: str, query: dict[str, str]) -> None:
    if h.command == "PUT":
        if path != "/latest/api/token":  # "PUT requests to any version-specific path ... 403 Forbidden"
            h.reply(403, "Forbidden")
        else:
            _token(h, space)
        return
    if h.command not in ("GET", "HEAD"):
        h.reply(405, "Method Not Allowed")
        return
    if not path.startswith("/latest/"):
        h.reply(404, "Not Found")
        return
    token = h.headers.get("X-aws-ec2-metadata-token")
    with h.sim._cond:
        valid = space.tokens.get(token or "", 0.0) > time.monotonic()
        deadline, action, rebalance = space.deadline, space.action, space.rebalance
        stale, imdsv1 = space.termination_time, space.imdsv1
    if (token is not None and not valid) or (token is None and not imdsv1):
        h.reply(401, "Unauthorized")
        return
    item = path[len(META):] if path.startswith(META) else None
    value = {
        "": "\n".join(LISTING),
        "ami-id": "ami-0abcdef1234567890",
        "instance-id": space.instance_id,
        "instance-life-cycle": "spot",
        "instance-type": "g4dn.xlarge",
        "placement/availability-zone": space.zone,
        "placement/availability-zone/": space.zone,  # botocore's region fetcher asks with the slash
        "placement/region": space.zone[:-1],
        "iam/": "info",
    }.get(item or "\0")
    if value is not None:
        h.reply(200, value)
    elif item == "spot/instance-action" and deadline is not None:
        h.reply(200, json.dumps({"action": action, "time": _when(deadline)}))
    elif item == "spot/termination-time" and deadline is not None and action == "terminate":
        h.reply(200, _when(deadline))
    elif item == "spot/termination-time" and stale is not None:
        h.reply(200, stale)  # "remains ... with the original approximate time, which is now in the past"
    elif item == "events/recommendations/rebalance" and rebalance is not None:
        h.reply(200, json.dumps({"noticeTime": rebalance}))
    else:
        h.reply(404, "Not Found")


def _token(h: _Handler, space: Namespace) -> None:
    if h.headers.get("X-Forwarded-For") is not None:  # "PUT requests are rejected if they contain X-Forwarded-For"
        h.reply(403, "Forbidden")
        return
    ttl = h.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
    if not ttl.strip().isdigit() or not 1 <= int(ttl) <= MAX_TOKEN_TTL:
        h.reply(400, "Bad Request: X-aws-ec2-metadata-token-ttl-seconds must be 1..21600")
        return
    with h.sim._cond:
        status, hops = space.token_status, space.hop_limit
    if status is not None:
        h.reply(status, "Forbidden" if status == 403 else "Not Found" if status == 404 else "Error")
        return
    if hops < 2:  # the answer's IP TTL runs out on the bridge between the host and the container
        h.hold_unanswered()
        return
    token = secrets.token_urlsafe(42)
    with h.sim._cond:
        space.tokens[token] = time.monotonic() + int(ttl)
    h.reply(200, token, headers={"X-aws-ec2-metadata-token-ttl-seconds": ttl.strip()})
