"""The notice cases: every condition the issue names, each with what the cloud's docs say must happen.

``CASES`` is the table ``benchmarks/notice_cases.py`` prints and ``docs/notices.md`` keeps;
``tests/notices/test_cases.py`` runs it under pytest. Windows are the documented ones (AWS 120 s,
GCP 30 s and 60 s, Azure 30 s to 15 min): a case ends when its notice is seen, so no window is
waited out. Outages last 2 to 65 s. Timings are seconds after the watcher starts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from runner.task.notices.gcp import HANG_S
from tests.notices import sdk
from tests.notices.harness import Case, Ctx, Result

AWS_DOC = "https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/"
SPOT = AWS_DOC + "spot-instance-termination-notices.html"
IMDS_V2 = AWS_DOC + "configuring-instance-metadata-service.html#instance-metadata-v2-how-it-works"
IMDS_GET = AWS_DOC + "instancedata-data-retrieval.html"
REBALANCE = AWS_DOC + "rebalance-recommendations.html"
BOTOCORE = "botocore/utils.py IMDSFetcher._fetch_metadata_token (404/403/405 and read timeouts: no token)"
GCP_DOC = "https://cloud.google.com/compute/docs/"
GCP_SPOT = GCP_DOC + "instances/spot#preemption-process"
GCP_WAIT = GCP_DOC + "metadata/querying-metadata#waitforchange"
GCP_MAINT = GCP_DOC + "metadata/getting-live-migration-notice"
GCP_GPU = GCP_DOC + "gpus/gpu-host-maintenance"
GCP_CODES = GCP_DOC + "troubleshooting/troubleshoot-metadata-server#troubleshoot-server-codes"
AZ_DOC = "https://learn.microsoft.com/azure/virtual-machines/"
AZ_SE = AZ_DOC + "linux/scheduled-events"
AZ_OVERVIEW = AZ_DOC + "scheduled-events-overview"
AZ_IMDS = AZ_DOC + "instance-metadata-service#errors-and-debugging"
AWS_WINDOW, GCP_WINDOW, GCP_MAINT_WINDOW, AZ_WINDOW = 120.0, 30.0, 60.0, 30.0
AZ_WINDOWS = {"Preempt": 30.0, "Terminate": 300.0, "Reboot": 900.0, "Redeploy": 600.0}
POST_AT = 3.0  # the watcher has identified its cloud by then


# -- plays ----------------------------------------------------------------------------------

def notice(cloud: str, window: float, at: float = POST_AT, **how: Any) -> Callable[[Ctx], None]:
    def play(ctx: Ctx) -> None:
        ctx.ready(cloud)
        ctx.at(at)
        ctx.post(cloud, window, **how)
    return play


def outage(cloud: str, window: float, length: float, answer: str = "reset", **how: Any) -> Callable[[Ctx], None]:
    """The namespace hangs up (or answers ``answer``) for ``length`` s; the notice comes 1 s in."""
    def play(ctx: Ctx) -> None:
        ctx.ready(cloud)
        ctx.at(POST_AT)
        ends = ctx.fault("outage", length, answer=answer)
        ctx.at(POST_AT + 1)
        ctx.post(cloud, window, **how)
        ctx.at(POST_AT + length)
        ctx.recovered(ends)
    return play


def server_down(cloud: str, window: float, length: float, **how: Any) -> Callable[[Ctx], None]:
    """The whole server stops (connections refused) for ``length`` s; the notice comes 1 s in."""
    def play(ctx: Ctx) -> None:
        ctx.ready(cloud)
        ctx.at(POST_AT)
        ctx.sim.stop()
        ctx.at(POST_AT + 1)
        ctx.post(cloud, window, **how)
        ctx.at(POST_AT + length)
        ctx.sim.start()
        ctx.recovered()
    return play


def stall(cloud: str, window: float, length: float, **how: Any) -> Callable[[Ctx], None]:
    """Every answer is held until the service recovers, ``length`` s later; the notice comes 1 s in."""
    def play(ctx: Ctx) -> None:
        ctx.ready(cloud)
        ctx.at(POST_AT)
        ends = ctx.fault("slow", length, delay=length + 60)
        ctx.at(POST_AT + 1)
        ctx.post(cloud, window, **how)
        ctx.at(POST_AT + length)
        ctx.recovered(ends)
    return play


def slow_beyond_timeout(cloud: str, window: float, length: float, **how: Any) -> Callable[[Ctx], None]:
    """Every answer 3 s late (past the listener's 2 s timeout) for ``length`` s; the notice comes 1 s in."""
    def play(ctx: Ctx) -> None:
        ctx.ready(cloud)
        ctx.at(POST_AT)
        ends = ctx.fault("slow", length, delay=3.0)
        ctx.at(POST_AT + 1)
        ctx.post(cloud, window, **how)
        ctx.at(POST_AT + length)
        ctx.recovered(ends)
    return play


def fault_first(kind: str, seconds: float, **how: Any) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        ctx.fault(kind, seconds, **how)
    return setup


def configure(**options: Any) -> Callable[[Ctx], None]:
    def setup(ctx: Ctx) -> None:
        ctx.configure(**options)
    return setup


def nothing(ctx: Ctx) -> None:
    pass


# -- checks ---------------------------------------------------------------------------------

def hinted(word: str) -> Callable[[Result], str | None]:
    return lambda r: None if any(word in d for _, d in r.hints) else f"no {word!r} hint"


def gcp_deadline_close(r: Result) -> str | None:
    """GCP: the deadline counts from the last FALSE, so it is early by at most one hanging GET."""
    e = r.deadline_error
    return None if e is not None and -(HANG_S + 1.0) <= e <= 1.0 else f"deadline off by {e} s"


def gcp_from_before_outage(r: Result) -> str | None:
    """GCP after an outage: the deadline counts from the last FALSE, before the outage (1 s before the post)."""
    n, ctx = r.notice, r.ctx
    if n is None or n.deadline is None or ctx is None or ctx.post_at is None:
        return "no deadline"
    latest = ctx.post_at - 1.0 + GCP_WINDOW + 0.5
    return None if n.deadline <= latest else f"deadline {n.deadline - latest:.1f} s after the last FALSE + 30 s"


def acknowledged(count: int) -> Callable[[Result], str | None]:
    return lambda r: None if len(r.acknowledged) == count else f"{len(r.acknowledged)} events acknowledged, not {count}"


def deadline_now(r: Result) -> str | None:
    ctx, n = r.ctx, r.notice
    ok = ctx is not None and n is not None and n.deadline is not None and ctx.post_at is not None \
        and n.deadline <= (r.seen_at or 0) + 0.5
    return None if ok else "the deadline is not 'now'"


# -- the table ------------------------------------------------------------------------------

def _aws() -> list[Case]:
    def c(id: str, condition: str, expected: str, source: str, expect: str, play: Callable[[Ctx], None],
          **kw: Any) -> Case:
        kw.setdefault("kind", "terminate" if expect == "notice" else "")
        return Case(id, "aws", condition, expected, source, expect, play, **kw)
    post = notice("aws", AWS_WINDOW)
    v1 = {"imdsv1": True}
    return [
        c("aws-terminate", "spot interruption, IMDSv2 required (HttpTokens=required)",
          "instance-action {action: terminate, time}; 2 minutes ahead", SPOT + "#instance-action-metadata",
          "notice", post),
        c("aws-stop", "spot interruption with the stop behaviour", "instance-action {action: stop}",
          SPOT + "#instance-action-metadata", "notice", notice("aws", AWS_WINDOW, action="stop"), kind="stop"),
        c("aws-hibernate", "spot interruption with the hibernate behaviour",
          "instance-action {action: hibernate}; no 2-minute warning (hibernation begins at once)",
          SPOT, "notice", notice("aws", 0.0, action="hibernate"), kind="hibernate"),
        c("aws-explicit", "RUNNER_NOTICE=aws (no detection)", "as aws-terminate", SPOT, "notice", post, mode="aws"),
        c("aws-optional", "IMDSv1 allowed too (HttpTokens=optional), token works",
          "a token is still given; reads with it work", IMDS_V2, "notice", post, setup=configure(**v1)),
        c("aws-hop1-v1", "PUT response hop limit 1 from a container; IMDSv1 allowed",
          "the token's answer never arrives; SDKs fall back to IMDSv1", IMDS_GET + "#imds-considerations",
          "notice", post, setup=configure(hop_limit=1, **v1)),
        c("aws-token-403", "token PUT answers 403 (IMDSv1 allowed)", "403: not allowed; SDKs read without a token",
          IMDS_GET + "#instance-metadata-returns; " + BOTOCORE, "notice", post,
          setup=configure(token_status=403, **v1)),
        c("aws-token-404", "token PUT answers 404 (IMDSv1 allowed)", "SDKs read without a token", BOTOCORE,
          "notice", post, setup=configure(token_status=404, **v1)),
        c("aws-token-405", "token PUT answers 405 (IMDSv1 allowed)", "SDKs read without a token", BOTOCORE,
          "notice", post, setup=configure(token_status=405, **v1)),
        c("aws-xff-proxy", "requests pass a proxy that adds X-Forwarded-For (IMDSv1 allowed)",
          "PUTs carrying X-Forwarded-For are rejected (403); tokenless reads work", IMDS_V2, "notice", post,
          setup=configure(**v1), proxy=True),
        c("aws-hop1-v2only", "hop limit 1 and IMDSv2 required; hop limit raised to 2 at 8 s",
          "nothing can be read until a token arrives (401 without one); then the notice",
          IMDS_GET + "#imds-considerations", "notice", _raise_hop_limit, setup=configure(hop_limit=1),
          recovery=True),
        c("aws-token-expired", "the token expires (or is revoked) just before the notice",
          "401 for an invalid token: get a new one", IMDS_GET + "#instance-metadata-returns", "notice",
          _expire_then_post),
        c("aws-rebalance", "rebalance recommendation, no interruption",
          "events/recommendations/rebalance {noticeTime}: a signal, not an interruption", REBALANCE, "none",
          _rebalance, check=hinted("rebalance")),
        c("aws-rebalance-then-terminate", "rebalance recommendation, then the interruption 2 s later",
          "the recommendation may come before the interruption notice", REBALANCE, "notice",
          _rebalance_then_post, check=hinted("rebalance")),
        c("aws-stale-termination-time", "spot/termination-time holds a past time, no instance-action",
          "a stale termination-time stays after a failed termination; instance-action is 404",
          SPOT + "#termination-time-metadata", "none", nothing,
          setup=configure(termination_time="2015-01-05T18:02:00Z")),
        c("aws-503-at-start", "the service answers 503 for its first 4 s (auto mode)",
          "throttled or failing requests: retry with backoff", IMDS_GET + "#instancedata-throttling", "notice",
          notice("aws", AWS_WINDOW, at=6.0), setup=fault_first("outage", 4.0, answer="503")),
        c("aws-429-at-start", "the service answers 429 for its first 4 s (auto mode)",
          "throttled: retry with an exponential backoff", IMDS_GET + "#instancedata-throttling", "notice",
          notice("aws", AWS_WINDOW, at=6.0), setup=fault_first("outage", 4.0, answer="429")),
        c("aws-outage-12s", "the service hangs up on every request for 12 s; the notice comes during it",
          "seen within 5 s of recovery", IMDS_GET + "#instancedata-throttling", "notice",
          outage("aws", AWS_WINDOW, 12.0), recovery=True, until=25.0),
        c("aws-down-31s", "the service is down (connections refused) for 31 s",
          "seen within 5 s of recovery", IMDS_GET, "notice", server_down("aws", AWS_WINDOW, 31.0),
          recovery=True, own_server=True, until=45.0),
        c("aws-slow-1.2s", "every answer 1.2 s late for 30 s", "still seen with 80% of 2 minutes left",
          IMDS_GET, "notice", notice("aws", AWS_WINDOW, at=4.0), setup=fault_first("slow", 30.0, delay=1.2)),
        c("aws-slow-3s", "every answer 3 s late (past the 2 s request timeout) for 15 s",
          "answers slower than the client's timeout are no answers (botocore waits 1 s); seen within 5 s of "
          "recovery", IMDS_GET, "notice", slow_beyond_timeout("aws", AWS_WINDOW, 15.0), recovery=True, until=28.0),
        c("aws-stall-10s", "answers held for 10 s (longer than the request timeout), then all at once",
          "seen within 5 s of recovery", IMDS_GET, "notice", stall("aws", AWS_WINDOW, 10.0), recovery=True,
          until=25.0),
        c("aws-quiet", "nothing pending for 12 s", "instance-action 404: no notice", SPOT, "none", nothing),
    ]


def _raise_hop_limit(ctx: Ctx) -> None:
    ctx.at(POST_AT)
    ctx.post("aws", AWS_WINDOW)
    ctx.at(8.0)
    ctx.configure(hop_limit=2)
    ctx.recovered()


def _expire_then_post(ctx: Ctx) -> None:
    ctx.ready("aws")
    ctx.at(POST_AT)
    ctx.sim.expire_tokens(ctx.ns)
    ctx.post("aws", AWS_WINDOW)


def _rebalance(ctx: Ctx) -> None:
    ctx.ready("aws")
    ctx.at(POST_AT)
    ctx.sim.rebalance(ctx.ns)


def _rebalance_then_post(ctx: Ctx) -> None:
    _rebalance(ctx)
    ctx.at(POST_AT + 2)
    ctx.post("aws", AWS_WINDOW)


def _gcp() -> list[Case]:
    def c(id: str, condition: str, expected: str, source: str, expect: str, play: Callable[[Ctx], None],
          **kw: Any) -> Case:
        kw.setdefault("kind", "preempted" if expect == "notice" else "")
        return Case(id, "gcp", condition, expected, source, expect, play, **kw)
    post = notice("gcp", GCP_WINDOW)
    maint: dict[str, Any] = {"kind": "maintenance"}
    migrate: dict[str, Any] = {**maint, "maintenance": "MIGRATE_ON_HOST_MAINTENANCE"}
    return [
        c("gcp-preempted", "spot preemption", "instance/preempted turns TRUE; 30 s to hard off; "
          "deadline from the last FALSE", GCP_SPOT + "; " + GCP_WAIT, "notice", post, check=gcp_deadline_close),
        c("gcp-explicit", "RUNNER_NOTICE=gcp (no detection)", "as gcp-preempted", GCP_SPOT, "notice", post,
          mode="gcp", check=gcp_deadline_close),
        c("gcp-preempted-late", "preemption after 12 s of FALSE (several hanging GETs expired)",
          "deadline from the last FALSE, early by one hanging GET at most", GCP_WAIT, "notice",
          notice("gcp", GCP_WINDOW, at=12.0), until=16.0, check=gcp_deadline_close),
        c("gcp-maintenance-terminate", "host maintenance announced: TERMINATE_ON_HOST_MAINTENANCE",
          "maintenance-event changes 60 s before (GPU VMs: 1 hour); spot VMs are stopped, not migrated",
          GCP_MAINT + "; " + GCP_GPU, "notice", notice("gcp", GCP_MAINT_WINDOW, **maint), kind="maintenance"),
        c("gcp-maintenance-migrate", "MIGRATE_ON_HOST_MAINTENANCE", "a live migration: the VM keeps running",
          GCP_MAINT, "none", notice("gcp", GCP_MAINT_WINDOW, **migrate), check=hinted("MIGRATE")),
        c("gcp-migrate-then-terminate", "MIGRATE first, TERMINATE_ON_HOST_MAINTENANCE 3 s later",
          "the terminate value is the notice", GCP_MAINT, "notice", _migrate_then_terminate, kind="maintenance"),
        c("gcp-503-at-start", "the server answers 503 for its first 4 s (auto mode)",
          "5xx: retry", GCP_CODES, "notice", notice("gcp", GCP_WINDOW, at=6.0),
          setup=fault_first("outage", 4.0, answer="503")),
        c("gcp-429-at-start", "the server answers 429 for its first 4 s (auto mode)",
          "429: rate limited, retry", GCP_CODES, "notice", notice("gcp", GCP_WINDOW, at=6.0),
          setup=fault_first("outage", 4.0, answer="429")),
        c("gcp-outage-12s", "the server hangs up on every request for 12 s; preemption during it",
          "seen within 5 s of recovery; deadline from the last FALSE (before the outage)", GCP_WAIT, "notice",
          outage("gcp", GCP_WINDOW, 12.0), recovery=True, check=gcp_from_before_outage, until=25.0),
        c("gcp-outage-65s", "the server hangs up for 65 s (longer than a hanging GET)", "seen within 5 s of "
          "recovery (the machine itself would be gone by then)", GCP_WAIT, "notice",
          outage("gcp", GCP_WINDOW, 65.0), recovery=True, check=gcp_from_before_outage, until=78.0),
        c("gcp-down-31s", "the server is down (connections refused) for 31 s", "seen within 5 s of recovery",
          GCP_WAIT, "notice", server_down("gcp", GCP_WINDOW, 31.0), recovery=True, check=gcp_from_before_outage,
          own_server=True, until=45.0),
        c("gcp-slow-1.2s", "every answer 1.2 s late for 30 s", "still seen with 80% of 30 s left", GCP_WAIT,
          "notice", notice("gcp", GCP_WINDOW, at=5.0), setup=fault_first("slow", 30.0, delay=1.2)),
        c("gcp-slow-3s", "every answer 3 s late (past the 2 s request timeout) for 15 s",
          "a hanging GET already held gets its late answer (80% left); else within 5 s of recovery", GCP_WAIT, "notice",
          slow_beyond_timeout("gcp", GCP_WINDOW, 15.0), recovery="either", until=28.0),
        c("gcp-stall-10s", "answers held for 10 s, then all at once", "seen within 5 s of recovery", GCP_WAIT,
          "notice", stall("gcp", GCP_WINDOW, 10.0), recovery=True, check=gcp_from_before_outage, until=25.0),
        c("gcp-quiet", "nothing pending for 14 s (hanging GETs time out and are renewed)",
          "preempted stays FALSE, maintenance-event NONE", GCP_WAIT, "none", nothing, until=14.0),
    ]


def _migrate_then_terminate(ctx: Ctx) -> None:
    ctx.ready("gcp")
    ctx.at(POST_AT)
    ctx.sim.preempt("gcp", GCP_MAINT_WINDOW, ctx.ns, kind="maintenance", maintenance="MIGRATE_ON_HOST_MAINTENANCE")
    ctx.at(POST_AT + 3)
    ctx.post("gcp", GCP_MAINT_WINDOW, kind="maintenance")


def _azure() -> list[Case]:
    def c(id: str, condition: str, expected: str, source: str, expect: str, play: Callable[[Ctx], None],
          **kw: Any) -> Case:
        kw.setdefault("kind", "Preempt" if expect == "notice" else "")
        return Case(id, "azure", condition, expected, source, expect, play, **kw)
    post = notice("azure", AZ_WINDOW)

    def typed(event_type: str, **how: Any) -> Callable[[Ctx], None]:
        return notice("azure", AZ_WINDOWS.get(event_type, 0.0), event_type=event_type, **how)
    return [
        c("azure-preempt", "spot eviction of this VM", "a Preempt event naming this VM, NotBefore 30 s ahead; "
          "acknowledging lets it proceed", AZ_SE + "#event-properties", "notice", post, check=acknowledged(1)),
        c("azure-explicit", "RUNNER_NOTICE=azure (no detection)", "as azure-preempt", AZ_SE, "notice", post,
          mode="azure"),
        c("azure-other-vm", "Preempt for another VM of the scale set", "events go to every VM of the set; "
          "check Resources", AZ_SE + "#scope", "none", typed("Preempt", resources=["vm7"])),
        c("azure-reboot", "Reboot of this VM", "non-persistent memory is lost; 15 minutes ahead",
          AZ_SE + "#event-scheduling", "notice", typed("Reboot"), kind="Reboot"),
        c("azure-redeploy", "Redeploy of this VM", "moved to another node; 10 minutes ahead",
          AZ_SE + "#event-scheduling", "notice", typed("Redeploy"), kind="Redeploy"),
        c("azure-terminate", "Terminate of this VM (scale-set scale-in)", "deleted; 5-15 minutes ahead (user set)",
          AZ_SE + "#event-scheduling", "notice", typed("Terminate"), kind="Terminate"),
        c("azure-freeze", "Freeze of this VM", "paused for seconds, memory kept", AZ_SE + "#event-properties",
          "none", typed("Freeze"), check=hinted("Freeze")),
        c("azure-started", "a Redeploy already Started (hardware failure: no Scheduled state)",
          "EventStatus Started, NotBefore blank: it is happening", AZ_OVERVIEW + "#exceptional-cases", "notice",
          notice("azure", 0.0, event_type="Redeploy", status="Started"), kind="Redeploy", check=deadline_now),
        c("azure-two-events", "a Preempt for another VM and a Reboot for this one in one document",
          "act on this VM's event only", AZ_SE + "#scope", "notice", _two_events, kind="Reboot"),
        c("azure-shared-event", "one Preempt naming this VM and another", "acknowledging would let it proceed "
          "for both VMs: not acknowledged", AZ_SE + "#start-an-event", "notice",
          typed("Preempt", resources=["vm0", "vm3"]), check=acknowledged(0)),
        c("azure-name-late", "the VM-name lookup answers 503 for its first 6 s; a Preempt for this VM comes "
          "meanwhile",
          "no action on an event before this VM's name is known; then within 5 s", AZ_SE + "#scope", "notice",
          _name_late, setup=fault_first("name", 6.0, answer="503"), recovery=True),
        c("azure-name-never", "the VM-name lookup never answers; a Preempt for this VM comes",
          "an event that cannot be attributed is not acted on (a limit, logged)", AZ_SE + "#scope", "none",
          post, setup=fault_first("name", math.inf, answer="reset")),
        c("azure-410-at-start", "IMDS answers 410 Gone for its first 4 s", "410: retry for up to 70 s",
          AZ_IMDS, "notice", notice("azure", AZ_WINDOW, at=6.0), setup=fault_first("outage", 4.0, answer="410")),
        c("azure-429-at-start", "IMDS answers 429 for its first 4 s", "429: rate limit (5 requests/s); retry",
          AZ_IMDS, "notice", notice("azure", AZ_WINDOW, at=6.0), setup=fault_first("outage", 4.0, answer="429")),
        c("azure-500-outage-12s", "IMDS answers 500 for 12 s; the event comes during it",
          "500: retry after some time; seen within 5 s of recovery", AZ_IMDS, "notice",
          outage("azure", AZ_WINDOW, 12.0, answer="500"), recovery=True, until=25.0),
        c("azure-down-31s", "IMDS is down (connections refused) for 31 s", "seen within 5 s of recovery", AZ_IMDS,
          "notice", server_down("azure", AZ_WINDOW, 31.0), recovery=True, own_server=True, until=45.0),
        c("azure-slow-first-call", "the first calls take 5 s (the service being enabled)",
          "the first call may take up to 2 minutes", AZ_SE + "#enabling-and-disabling-scheduled-events", "notice",
          notice("azure", AZ_WINDOW, at=8.0), setup=fault_first("slow", 6.0, delay=5.0)),
        c("azure-slow-3s", "every answer 3 s late (past the 2 s request timeout) for 15 s",
          "seen within 5 s of recovery", AZ_IMDS, "notice", slow_beyond_timeout("azure", AZ_WINDOW, 15.0),
          recovery=True, until=28.0),
        c("azure-stall-12s", "answers held for 12 s, then all at once", "seen within 5 s of recovery", AZ_IMDS,
          "notice", stall("azure", AZ_WINDOW, 12.0), recovery=True, until=27.0),
        c("azure-quiet", "no events for 12 s", "Events: []", AZ_SE + "#query-for-events", "none", nothing),
    ]


def _two_events(ctx: Ctx) -> None:
    ctx.ready("azure")
    ctx.at(POST_AT)
    ctx.sim.preempt("azure", AZ_WINDOW, ctx.ns, event_type="Preempt", resources=["vm7"])
    ctx.post("azure", AZ_WINDOWS["Reboot"], event_type="Reboot")


def _name_late(ctx: Ctx) -> None:
    ctx.ready("azure")
    ctx.post("azure", AZ_WINDOW)  # while the name lookup still fails
    assert ctx.fault_ends is not None and ctx.post_at is not None and ctx.post_at < ctx.fault_ends - 1.0, \
        "the event came after the name was known: the case tests nothing"
    ctx.recovered(ctx.fault_ends)  # the name lookup answers from then on


def _sdk() -> list[Case]:
    def c(id: str, cloud: str, condition: str, expected: str, source: str, check: Callable[..., str]) -> Case:
        return Case(id, cloud, condition, expected, source, "sdk", nothing, sdk=check)
    return [
        c("sdk-botocore-v2", "aws", "botocore IMDSFetcher: token, instance-action; region fetcher",
          "a token; the action JSON; the region from placement/availability-zone", BOTOCORE, sdk.botocore_v2),
        c("sdk-botocore-hop1", "aws", "botocore, hop limit 1, IMDSv1 allowed", "no token after the 1 s "
          "timeout; tokenless reads work", IMDS_GET + "#imds-considerations", sdk.botocore_hop1),
        c("sdk-botocore-v2only-hop1", "aws", "botocore, hop limit 1, IMDSv2 required",
          "no token; the tokenless read is refused (401) and botocore gives up", IMDS_V2, sdk.botocore_v2only_hop1),
        c("sdk-botocore-403", "aws", "botocore, token PUT answers 403", "no token; tokenless reads work",
          BOTOCORE, sdk.botocore_token_403),
        c("sdk-aws-xff", "aws", "a token PUT carrying X-Forwarded-For", "403", IMDS_V2, sdk.aws_xff),
        c("sdk-google-auth", "gcp", "google-auth _metadata: ping (GET /), get, wait_for_change, "
          "compute_engine.Credentials.refresh", "ping True; values; the hanging GET returns on the change; "
          "a token", "google/auth/compute_engine/_metadata.py ping/get; " + GCP_WAIT, sdk.google_auth),
        c("sdk-gcp-flavor", "gcp", "requests without Metadata-Flavor: Google", "403; every answer carries "
          "the header", GCP_DOC + "metadata/querying-metadata", sdk.gcp_flavor),
        c("sdk-azure-headers", "azure", "requests without Metadata: true or api-version; a malformed POST",
          "400 each", AZ_SE + "#headers; " + AZ_IMDS, sdk.azure_headers),
    ]


CASES: list[Case] = _aws() + _gcp() + _azure() + _sdk()
