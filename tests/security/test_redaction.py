"""The ledger keeps no secret: env values redacted by their name or by what they look like."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from runner.ledger import REDACTED, Ledger
from runner.spec import load_spec
from runner.job_files import resolve_secrets

ROOT = Path(__file__).resolve().parents[2]
AZURE_KEY = "FAKEazureKEY" + "f" * 74 + "=="


@pytest.mark.parametrize("value", [
    f"DefaultEndpointsProtocol=https;AccountName=x;AccountKey={AZURE_KEY}",
    "https://acct.blob.core.windows.net/c?sv=2022-11-02&sig=AbCdEfGhIjKlMnOpQrStUv%3D",
    "AKIAZZFAKE0123456789",
    "postgres://trainer:hunter2hunter2@db.internal:5432/runs",
    "-----BEGIN PRIVATE KEY-----\nMIIE...\n-----END PRIVATE KEY-----\n",
])
def test_regression_secret_value_in_innocent_env_name(tmp_path: Path, value: str) -> None:
    """Found by test_no_credential_in_anything_the_runner_wrote: only names were checked, so
    ``STORAGE: "...AccountKey=..."`` reached ledger.db as written."""
    data = yaml.safe_load((ROOT / "jobs" / "cifar-smoke.yaml").read_text())
    data["env"] = {"STORAGE": value, "EPOCHS_NOTE": "plain text stays"}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    spec = load_spec(path)
    with Ledger(tmp_path / "ledger.db") as ledger:
        job_id = ledger.create_job(spec, spec_path=path)
        job = ledger.get_job(job_id)
        stored = job.spec()
        assert stored.env["STORAGE"] == REDACTED and stored.env["EPOCHS_NOTE"] == "plain text stays"
        assert resolve_secrets(stored, job).env["STORAGE"] == value  # the watcher still gets it
    raw = b"".join(p.read_bytes() for p in tmp_path.glob("ledger.db*"))
    assert value.encode() not in raw and value.split("\n")[0][-12:].encode() not in raw


def test_regression_job_secret_wins_over_the_watchers_own(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A redacted value comes back from the job's spec file first: the watcher's own variable of
    the same name (its cloud credentials, say) must not reach the job's container; the watcher's
    environment is the fallback when the spec file no longer has it."""
    data = yaml.safe_load((ROOT / "jobs" / "cifar-smoke.yaml").read_text())
    data["env"] = {"AWS_SECRET_ACCESS_KEY": "the-jobs-own-secret"}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(data))
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "the-watchers-secret")
    with Ledger(tmp_path / "ledger.db") as ledger:
        job = ledger.get_job(ledger.create_job(load_spec(path), spec_path=path))
        assert resolve_secrets(job.spec(), job).env["AWS_SECRET_ACCESS_KEY"] == "the-jobs-own-secret"
        path.unlink()
        assert resolve_secrets(job.spec(), job).env["AWS_SECRET_ACCESS_KEY"] == "the-watchers-secret"
