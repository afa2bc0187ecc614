"""Third-party SDK loggers kept out of users' logs (shared by the control plane and the task side).

azure-core logs every request's URL and headers at INFO (a task logs at INFO: each checkpoint read
or write added a dozen lines per request to the job's log), and its transport warns a bare
"Incomplete download." for each body cut short, which the retry policies retry (a last failure
is the caller's own one-line error). azure-batch logs a traceback at WARNING for an error answer
whose body is not JSON (a gateway's 503 page); the runner reports that error itself, in one line.
All are quieted unless the logger's level was set already or ``RUNNER_LOG_LEVEL=DEBUG`` asks for
everything.
"""

from __future__ import annotations

import logging
import os

QUIETED = (("azure.core.pipeline.policies.http_logging_policy", logging.WARNING),
           ("azure.core.pipeline.transport", logging.ERROR),
           ("azure.batch._utils.model_base", logging.ERROR))


def quiet_azure_logs() -> None:
    """Raise the Azure SDKs' chatty loggers to the levels in :data:`QUIETED` (idempotent)."""
    if os.environ.get("RUNNER_LOG_LEVEL", "").upper() == "DEBUG":
        return
    for name, level in QUIETED:
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(level)
