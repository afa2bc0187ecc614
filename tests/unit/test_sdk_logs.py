"""azure-core's chatty loggers are quieted wherever the runner makes an Azure client (runner/logs.py),
unless RUNNER_LOG_LEVEL=DEBUG: each case in a fresh process, as logger levels are process-wide."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

PROBE = r'''
import logging, os, sys
if sys.argv[1] == "batch":
    from runner.backends.azure_setup import make_client
    make_client("http://127.0.0.1:9")  # builds the client; no request is sent
else:
    import runner.stores.azure_blob  # noqa: F401
transport = logging.getLogger("azure.core.pipeline.transport._requests_basic")
http = logging.getLogger("azure.core.pipeline.policies.http_logging_policy")
model = logging.getLogger("azure.batch._utils.model_base")  # a traceback at WARNING for a non-JSON 503 body
print(transport.isEnabledFor(logging.WARNING), transport.isEnabledFor(logging.ERROR), http.isEnabledFor(logging.INFO),
      model.isEnabledFor(logging.WARNING))
'''


@pytest.mark.parametrize("where", ["batch", "blob"])
@pytest.mark.parametrize("level,expected", [("INFO", "False True False False"), ("DEBUG", "True True True True")])
def test_azure_sdk_warnings_and_request_lines_are_quiet_unless_debug(where: str, level: str, expected: str) -> None:
    pytest.importorskip("azure.batch")
    pytest.importorskip("azure.storage.blob")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RUNNER_LOG_LEVEL": level, "AZURE_BATCH_ACCOUNT": "acct",
           "AZURE_BATCH_KEY": "a2V5"}
    code = f"import logging; logging.basicConfig(level={level!r})\n{PROBE}"
    out = subprocess.run([sys.executable, "-c", code, where], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == expected.split()
