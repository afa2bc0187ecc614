"""The one loop that keeps jobs alive: poll, classify, resubmit, within budgets.

Each pass (:meth:`Watcher.tick`):

1. polls every open attempt, one batched call per backend, and stores what it hears;
   a poll that fails gives UNKNOWN, which never leads to a resubmission;
2. adopts attempts reserved but never recorded as submitted (a watcher killed mid-submit):
   the backend finds them by their deterministic key, else they are submitted now;
3. for each active job and array index, looks at the newest attempt: a PREEMPTED one is
   followed by the next attempt on the same checkpoint URI while the preemption budget lasts,
   a FAILED one while the failure budget lasts; budgets are recounted from the attempts, so
   a crash between two steps never double-charges;
4. asks the preemption simulator (local runs only) whether to preempt a running attempt.

The ledger is the only state; a watcher killed at any instant and started again carries on.
The ledger's one-open-attempt rule makes a second concurrent attempt impossible.

Several watchers may share one ledger (a service, a cron ``--once``, a ``submit`` in the
foreground): each pass first takes or renews the lease on every active job it can
(:meth:`Ledger.acquire_leases`) and then acts only on the jobs it holds; the lease is renewed
again just before each job is advanced and checked inside the ledger's transaction when an
attempt is reserved or a job ends. A watcher that stops cleanly releases its leases at once
(:meth:`Watcher.close`); one that dies leaves them to expire after ``lease_ttl`` (30 s), and the
next pass of another watcher takes the jobs over. So a job is taken over within
``lease_ttl + interval`` of its watcher's death.

Health, for a service: :meth:`Watcher.health` (last pass, jobs held, owner id),
:class:`runner.health.HealthServer` (``GET /healthz`` on 127.0.0.1, 503 when the last pass is stale)
and :func:`runner.health.write_status` (the same JSON, replaced atomically).
"""

from runner.watcher.loop import Event, Watcher, new_owner_id, stale_after
from runner.watcher.simulation import SIM_PORT, sim_cloud

__all__ = ["SIM_PORT", "Event", "Watcher", "new_owner_id", "sim_cloud", "stale_after"]
