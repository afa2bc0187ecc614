"""Simulate the AWS, GCP and Azure instance-metadata services over real HTTP, every case on request.

One server serves many task containers: a path prefix ``/ns/<name>`` selects an independent
namespace (no prefix: namespace ``""``), each imitating one cloud (:mod:`.aws`, :mod:`.gcp`,
:mod:`.azure`; state in :mod:`.state`, the server in :mod:`.server`). What each answer is based
on, and which cases are checked against the real SDK clients (botocore, google-auth), is in
``docs/notices.md``. Besides the notices themselves it plays, on request: IMDSv1 allowed or not,
a PUT response hop limit of 1, token PUTs refused, stop/hibernate actions, rebalance
recommendations, GCP maintenance events, Azure events of every type for this VM or others, a
failing VM-name lookup, outages (hang-ups or any HTTP status) and slow answers of any length.
Other processes drive it through a small control API::

    POST /_sim/preempt?cloud=aws&notice=5&ns=NAME[&action=stop][&kind=maintenance&maintenance=...]
                      [&type=Reboot&resources=vm0,vm7&status=Started]
    POST /_sim/configure?cloud=gcp&ns=NAME[&imdsv1=true&hop_limit=1&token_status=403&vm_name=...]
    POST /_sim/rebalance?ns=NAME                     an AWS rebalance recommendation
    POST /_sim/fault?ns=NAME&kind=outage|slow|name&seconds=S[&answer=503|reset][&delay=D]
    POST /_sim/clear?ns=NAME                         withdraw notices, hints, faults, acknowledgements
    GET  /_sim/state?ns=NAME                         {"namespace", "cloud", "pending", "deadline", ...}

Run it alone with ``python -m runner.sim.metadata --host 0.0.0.0 --port 8080 --cloud aws``.
"""

from __future__ import annotations

from runner.sim.metadata.cli import main
from runner.sim.metadata.server import HANG_SECONDS, MetadataSimulator
from runner.sim.metadata.state import CLOUDS, DEFAULT_NOTICE

__all__ = ["CLOUDS", "DEFAULT_NOTICE", "HANG_SECONDS", "MetadataSimulator", "main"]
