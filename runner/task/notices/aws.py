"""AWS: ``spot/instance-action`` from the EC2 instance metadata service, the way the AWS SDKs read it.

- Token first (IMDSv2): ``PUT /latest/api/token``. When no token can be had, read without one
  (IMDSv1) as botocore's ``IMDSFetcher`` does: the PUT's answer never arrives (a container behind
  a bridge with a PUT response hop limit of 1) or it is 403/404/405 (or 400). The token is asked
  for again every ``TOKEN_RETRY_S`` seconds. Where tokenless reads are refused too (401: the
  instance requires IMDSv2) the poller says how to fix it and asks for a token at every poll.
- Identified by ``GET /latest/meta-data/instance-id`` answering ``i-...``.
- ``instance-action`` 200 ``{"action": "terminate"|"stop"|"hibernate", "time": ...}`` is a notice;
  its deadline is the service's ``time`` (hibernation starts at once: no later than now). 404 is
  "nothing pending". ``events/recommendations/rebalance`` is a hint, logged, never a notice.
"""

from __future__ import annotations

import json
import re
import time

from runner.task.notices.base import (
    TRANSIENT_STATUSES,
    CloudPoller,
    Reply,
    Unusable,
    log,
    short,
    status_error,
    to_epoch,
)

TOKEN_PATH = "/latest/api/token"
TOKEN_TTL = 21600
TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
ID_PATH = "/latest/meta-data/instance-id"
ACTION_PATH = "/latest/meta-data/spot/instance-action"
REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"
_INSTANCE_ID = re.compile(r"i-[0-9a-f]{8,17}")
HOP_LIMIT_FIX = ("set the instance's metadata options to HttpPutResponseHopLimit=2 "
                 "(`runner init aws` sets it in the compute environment's launch template)")


class AwsPoller(CloudPoller):
    source = "aws"
    TOKEN_RETRY_S = 60.0  # in IMDSv1 fallback: how often to ask for a token again

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.token: str | None = None
        self.token_renew_at = 0.0
        self.v1 = False  # reading without a token
        self.token_retry_at = 0.0
        self.rebalance_seen: bytes | None = None
        self.v1_reason = ""
        self.put_timed_out = False

    # -- the token ------------------------------------------------------------------------

    def current_token(self) -> str | None:
        """A valid token, or None to read without one (IMDSv1); raises only for a busy or absent service."""
        now = time.monotonic()
        if self.token is not None and now < self.token_renew_at:
            return self.token
        if self.v1 and now < self.token_retry_at:
            return None
        self.put_timed_out = False
        try:
            reply = self.http("PUT", TOKEN_PATH, {TTL_HEADER: str(TOKEN_TTL)})
        except Unusable as exc:
            if not exc.timed_out:
                raise
            self.put_timed_out = True
            self.fallback(f"the token PUT got no answer within {self.watcher.request_timeout:g}s "
                          "(a PUT response hop limit of 1 seen from a container?)")
            return None
        token = reply.body.decode("ascii", "replace").strip()
        if reply.status == 200 and 0 < len(token) < 4096 and token.isprintable() and " " not in token:
            if self.v1:
                log.info("aws: an IMDSv2 token can be had again; reading with it")
            self.token, self.token_renew_at, self.v1 = token, time.monotonic() + TOKEN_TTL * 0.9, False
            return token
        if reply.status in TRANSIENT_STATUSES:
            raise Unusable(f"token PUT answered HTTP {reply.status} {short(reply.body)}", "busy")
        if reply.headers.get("Metadata-Flavor"):
            raise Unusable("token PUT answered by a GCP metadata server", "foreign")
        self.fallback(f"the token PUT answered HTTP {reply.status}")
        return None

    def fallback(self, why: str) -> None:
        if not self.v1 and self.identified:
            self.tell_v1(why)
        self.v1, self.token, self.v1_reason = True, None, why
        self.token_retry_at = time.monotonic() + self.TOKEN_RETRY_S

    def get(self, path: str) -> Reply:
        token = self.current_token()
        reply = self.http("GET", path, {TOKEN_HEADER: token} if token else {})
        if reply.status == 401 and token:  # expired or revoked: a new one, once
            self.token = None
            token = self.current_token()
            reply = self.http("GET", path, {TOKEN_HEADER: token} if token else {})
        if reply.status == 401 and not token:
            # Only the EC2 metadata service refuses a tokenless read with 401: IMDSv2 is required
            # and the token cannot be had. Ask for a token at every poll until it can.
            self.identified = True
            self.token_retry_at = 0.0
            waited = self.put_timed_out  # the unanswered PUT was the wait: ask again at once
            raise Unusable(f"IMDSv2 is required here (a read without a token answered 401) and no token "
                           f"can be had: notices cannot be read; {HOP_LIMIT_FIX}", "bad", 0.0 if waited else None)
        return reply

    # -- polling --------------------------------------------------------------------------

    def identify(self) -> None:
        reply = self.get(ID_PATH)
        body = reply.body.decode("ascii", "replace").strip()
        if reply.headers.get("Metadata-Flavor"):
            raise Unusable("answered by a GCP metadata server", "foreign")
        if reply.status != 200 or not _INSTANCE_ID.fullmatch(body):
            raise status_error("instance-id", reply, False) if reply.status != 200 else Unusable(
                f"instance-id is not an EC2 instance id: {short(reply.body)}", "foreign")
        self.identified = True
        log.debug("aws metadata service at %s: instance %s", self.base, body)
        if self.v1:
            self.tell_v1(self.v1_reason)

    def tell_v1(self, why: str) -> None:
        log.info("aws: %s; reading without a token (IMDSv1), as the AWS SDKs do; "
                 "asking for a token again every %gs", why, self.TOKEN_RETRY_S)

    def poll(self) -> float | None:
        if not self.identified:
            self.identify()
        reply = self.get(ACTION_PATH)
        if reply.status == 200:
            try:
                doc = json.loads(reply.body)
                action = doc["action"]
                if not isinstance(action, str) or not action:
                    raise TypeError(action)
            except (ValueError, TypeError, KeyError) as exc:
                raise Unusable(f"instance-action is not a notice: {short(reply.body)}") from exc
            deadline = to_epoch(str(doc.get("time", "")))
            if action == "hibernate":  # "the hibernation process begins immediately"
                deadline = min(deadline, time.time()) if deadline is not None else time.time()
            self.record(deadline, action, kind=action)
            return None
        if reply.status != 404:
            raise status_error("instance-action", reply, True)
        self.check_rebalance()
        return self.watcher.poll_interval

    def check_rebalance(self) -> None:
        """Log a rebalance recommendation once: a hint that a notice may follow, not a notice."""
        try:
            reply = self.get(REBALANCE_PATH)
        except Unusable as exc:
            log.debug("aws rebalance check failed: %s", exc)
            return
        if reply.status == 200 and reply.body != self.rebalance_seen:
            self.rebalance_seen = reply.body
            log.info("aws rebalance recommendation (a hint, not a notice): %s", short(reply.body))
            self.hint(f"rebalance {reply.body.decode('utf-8', 'replace').strip()}")
