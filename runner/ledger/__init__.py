"""Jobs and attempts in SQLite; survives a crash of the watcher at any point.

One file, ``$RUNNER_HOME/ledger.db`` (``RUNNER_HOME`` defaults to ``~/.local/share/spot-runner``),
in WAL mode. Every write is one ``BEGIN IMMEDIATE`` transaction, so a process killed mid-write
leaves the previous state, and two writers never interleave.

Never two attempts at once: :meth:`Ledger.reserve_attempt` inserts the next attempt (PENDING,
no ``backend_id``) *before* the backend is asked to run it, and refuses while another attempt of
the same job and array index is not terminal; a partial unique index enforces the same rule in
the database. A watcher that restarts finds a reserved-but-maybe-unsubmitted attempt in
:meth:`Ledger.open_attempts` with ``backend_id`` None, and can look it up on the backend by
:attr:`Attempt.key` (a deterministic name to submit under) instead of submitting twice.

Never two watchers on one job: a watcher acts on a job (submits, resubmits, finishes it) only
while it holds the job's lease, a row in ``leases`` (job id, owner ``host:pid:random``,
``expires_at``). :meth:`Ledger.acquire_leases` takes free or expired leases and renews its own in
one ``BEGIN IMMEDIATE`` transaction, so two processes never both hold one; a watcher renews every
tick, releases on a clean exit, and a killed watcher's leases expire (``LEASE_TTL``, 30 s), after
which another watcher takes the jobs over. A lease whose owner ran on this machine, in this PID
namespace (same ``local_id``: boot id and namespace), and whose process is gone, is taken at once:
a watcher restarted by systemd or cron does not wait out its predecessor's leases.
:meth:`Ledger.reserve_attempt` and
:meth:`Ledger.set_job_state` take an ``owner`` and check the lease in the same transaction, so a
watcher that lost its lease mid-tick (paused, too slow) cannot start or end anything.

Schema versions: 1 (jobs, attempts), 2 (leases), 3 (who is submitting an attempt since when; a job's
machine, for the preemption history), 4 (each attempt's capacity, spot or on-demand, and why the
runner asked it to stop: a switch of capacity or a budget). An older ledger is upgraded in place when it is opened; a newer
one is refused.

Never one attempt submitted twice: before the backend is asked, :meth:`Ledger.begin_submit` marks the
attempt as being submitted by its watcher (``submitting_by``, ``submitting_at``), in a transaction that
checks the watcher's lease has time left. Another watcher that finds the attempt reserved but
unrecorded waits until that mark is old (:data:`SUBMIT_GRACE`; less when the marking process is known
dead), then asks the backend (``find``) before submitting it itself. ``RUNNER_SUBMIT_GRACE`` and
``RUNNER_DEAD_SUBMIT_GRACE`` (seconds) override the two grace periods (tests shorten them).

The stored spec is redacted: ``env`` values whose name looks like a secret, or whose value does
(an Azure ``AccountKey=``/``SharedAccessSignature=``, an AWS key id, a PEM private key, a URL with a
password), read ``***``.
"""


from runner.ledger.database import Ledger, default_path
from runner.ledger.leases import (
    DEAD_SUBMIT_GRACE,
    DEAD_SUBMIT_GRACE_ENV,
    LEASE_TTL,
    SUBMIT_GRACE,
    SUBMIT_GRACE_ENV,
    local_id,
)
from runner.ledger.records import (
    REDACTED,
    SECRET_NAME,
    SECRET_VALUE,
    Attempt,
    AttemptStillOpen,
    Job,
    JobNotActive,
    JobNotFound,
    JobStateChanged,
    Lease,
    LeaseLost,
    SubmitInProgress,
    attempt_from_row,
    job_from_row,
    redact_spec,
)
from runner.ledger.schema import _SCHEMA, SCHEMA_VERSION
from runner.paths import data_dir

__all__ = [
    "DEAD_SUBMIT_GRACE", "DEAD_SUBMIT_GRACE_ENV", "LEASE_TTL", "REDACTED", "SCHEMA_VERSION", "SECRET_NAME",
    "SECRET_VALUE", "SUBMIT_GRACE", "SUBMIT_GRACE_ENV", "_SCHEMA", "Attempt", "AttemptStillOpen", "Job",
    "JobNotActive", "JobNotFound", "JobStateChanged", "Lease", "LeaseLost", "Ledger", "SubmitInProgress",
    "attempt_from_row", "data_dir", "default_path", "job_from_row", "local_id", "redact_spec",
]
