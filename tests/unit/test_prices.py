"""Price tables: the shipped table is complete and sourced; a wrong price file gives one line naming the fix."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from runner.cost import live as live_mod
from runner.cost import table as prices_mod
from runner.cost.live import live_price
from runner.cost.prices import price_for_spec
from runner.cost.table import (
    SHIPPED_FILE,
    Price,
    PriceTable,
    load_price_file,
    parse_machine,
    price_table,
    shipped_prices,
)
from runner.errors import PriceError, SpecError
from tests.conftest import CLOUD_URI, cloud_overrides
from runner.spec import load_spec, spec_from_dict

ROOT = Path(__file__).resolve().parents[2]
JOBS = sorted((ROOT / "jobs").glob("*.yaml"))
GOOD = {"cloud": "aws", "region": "us-east-1", "instance_type": "g4dn.xlarge", "on_demand_per_hour": 0.526,
        "spot_per_hour": 0.2, "currency": "USD", "source": "https://aws.amazon.com/ec2/pricing/on-demand/",
        "date": "2024-06-01"}


@pytest.fixture(autouse=True)
def _no_live_prices(monkeypatch, tmp_path):
    """No test here reaches a cloud: live prices off, the cache and RUNNER_PRICES private to the test."""
    monkeypatch.setenv("RUNNER_LIVE_PRICES", "0")
    monkeypatch.setenv("RUNNER_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RUNNER_PRICES", raising=False)


def write(tmp_path: Path, entries: list[dict] | str, name: str = "prices.yaml") -> Path:
    path = tmp_path / name
    path.write_text(entries if isinstance(entries, str) else yaml.safe_dump({"prices": entries}))
    return path


def spec(**fields) -> object:
    if fields.get("backend") in CLOUD_URI:
        fields.setdefault("checkpoint", {"uri": CLOUD_URI[fields["backend"]]})
    return spec_from_dict({"name": "demo", "image": "localhost/runner-cifar:latest", **fields})


# ---------------------------------------------------------------------------- the shipped table


def test_every_shipped_entry_loads_with_a_source_and_a_date():
    raw = yaml.safe_load(SHIPPED_FILE.read_text())["prices"]
    table = shipped_prices()
    assert len(table) == len(raw) >= 30
    for entry in raw:  # read raw, not through the loader: each entry itself carries both
        assert entry.get("source") and entry.get("date"), entry
    for price in table:
        assert price.source.startswith("https://"), price
        assert len(price.date) == 10 and price.date.startswith("20"), price
        assert 0 < price.spot_per_hour < price.on_demand_per_hour, price
        assert price.currency == "USD"
    clouds = {p.cloud for p in table}
    assert clouds == {"aws", "gcp", "azure"}
    assert {p.region for p in table.select("aws")} >= {"us-east-1", "us-west-2"}


@pytest.mark.parametrize("machine", [
    "aws:us-east-1:g4dn.xlarge", "aws:us-east-1:g5.xlarge", "aws:us-east-1:p3.2xlarge", "aws:us-east-1:m5.xlarge",
    "aws:us-east-1:c5.2xlarge", "aws:us-west-2:g4dn.xlarge", "aws:us-west-2:p3.2xlarge",
    "gcp:us-central1:n1-standard-8", "gcp:us-central1:n1-standard-8+nvidia-tesla-t4",
    "gcp:us-central1:a2-highgpu-1g", "gcp:us-central1:g2-standard-8", "gcp:us-central1:e2-standard-4",
    "azure:eastus:Standard_NC4as_T4_v3", "azure:eastus:Standard_NC6s_v3", "azure:eastus:Standard_D4s_v3",
])
def test_shipped_table_has_the_common_training_machines(machine):
    assert shipped_prices().lookup(*machine.split(":")).machine == machine


@pytest.mark.parametrize("job", JOBS, ids=lambda p: p.stem)
@pytest.mark.parametrize("backend", ["local", "aws", "gcp", "azure"])
def test_every_job_prices_on_every_backend(job, backend):
    """Whatever machine a repository job names, on any backend, the shipped table prices it."""
    s = load_spec(job, cloud_overrides(job, backend))
    price = price_for_spec(s, live=False)
    section = s.section(backend)
    names_machine = {"local": "imitates", "aws": "instance_types", "gcp": "machine_type", "azure": "vm_size"}[backend]
    names_machine = bool(section is not None and getattr(section, names_machine))
    assert (price is not None) == names_machine
    if price is not None and backend == "local":
        assert price.spot_per_hour == s.local.price_per_hour
        assert "local.price_per_hour" in price.source


def test_shipped_table_is_package_data():
    text = (ROOT / "pyproject.toml").read_text()
    assert '"runner.cost" = ["prices.yaml"]' in text
    assert SHIPPED_FILE.parent == Path(prices_mod.__file__).parent


# ---------------------------------------------------------------------------- wrong price files


def entry(**changes) -> dict:
    e = {**GOOD, **changes}
    return {k: v for k, v in e.items() if v is not None}


# (case, file text or entries, substrings the one line must hold: the entry, the field, the fix)
BAD_FILES = {
    "no-source": ([entry(source=None)], ["entry 1 (aws us-east-1 g4dn.xlarge)", "'source'", "is required; add"]),
    "empty-source": ([entry(source="")], ["'source'", "is required"]),
    "no-date": ([entry(date=None)], ["'date'", "is required", "YYYY-MM-DD"]),
    "negative-price": ([entry(spot_per_hour=-0.2)], ["'spot_per_hour'", "-0.2 must be more than zero"]),
    "zero-price": ([entry(on_demand_per_hour=0)], ["'on_demand_per_hour'", "more than zero"]),
    "quoted-price": ([entry(spot_per_hour="0.2")], ["'spot_per_hour'", "expected a number", "without quotes"]),
    "spot-above-on-demand": ([entry(spot_per_hour=0.9)], ["'spot_per_hour'", "above on_demand_per_hour", "swapped"]),
    "unknown-currency": ([entry(currency="USS")], ["'currency'", "'USS' is not a known currency",
                                                   "did you mean 'USD'"]),
    "lowercase-currency": ([entry(currency="usd")], ["'currency'", "did you mean 'USD'"]),
    "missing-field": ([entry(region=None)], ["entry 1", "'region'", "is required"]),
    "unknown-field": ([entry(spot_per_hr=0.2)], ["'spot_per_hr'", "unknown field", "did you mean 'spot_per_hour'"]),
    "bad-date": ([entry(date="2024-13-01")], ["'date'", "not a date", "YYYY-MM-DD"]),
    "words-date": ([entry(date="last week")], ["'date'", "not a date"]),
    "future-date": ([entry(date="2999-01-01")], ["'date'", "in the future"]),
    "unknown-cloud": ([entry(cloud="ibm")], ["'cloud'", "use one of aws, gcp, azure"]),
    "duplicate-entry": ([entry(), entry(spot_per_hour=0.3)], ["entry 2 (aws us-east-1 g4dn.xlarge)",
                                                              "duplicates entry 1", "remove one"]),
    "second-entry-wrong": ([entry(), entry(instance_type="g5.xlarge", currency="XYZ")],
                           ["entry 2 (aws us-east-1 g5.xlarge)", "'currency'"]),
    "entry-not-mapping": (["just text"], ["entry 1", "not a mapping"]),
    "duplicate-key": ("prices:\n  - {cloud: aws, cloud: gcp}\n", ["written twice"]),
    "unknown-top-level": ("price:\n  - {}\n", ["unknown top-level field 'price'", "write prices:"]),
    "empty-file": ("", ["holds no entries"]),
    "bad-yaml": ("prices: [unclosed\n", ["not valid YAML", "line"]),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_bad_price_file_gives_one_line_naming_file_entry_field_and_fix(tmp_path, case):
    content, expected = BAD_FILES[case]
    path = write(tmp_path, content)
    with pytest.raises(PriceError) as info:
        load_price_file(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path) + ": ")
    for part in expected:
        assert part in message, message
    assert info.value.exit_code == 2


def test_bad_json_price_file(tmp_path):
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"prices": [entry(date=None)]}))
    with pytest.raises(PriceError, match=r"prices\.json: entry 1 .*'date': is required"):
        load_price_file(path)
    path.write_text('{"prices": [')
    with pytest.raises(PriceError, match=r"prices\.json: not valid JSON at line 1"):
        load_price_file(path)


def test_missing_price_file(tmp_path):
    with pytest.raises(PriceError, match="no such price file; check the path"):
        load_price_file(tmp_path / "nope.yaml")


def test_yaml_dates_and_json_files_load(tmp_path):
    yaml_path = write(tmp_path, "prices:\n  - {cloud: aws, region: us-east-1, instance_type: x1.tiny, "
                                "on_demand_per_hour: 1, spot_per_hour: 0.5, currency: EUR, source: my quote, "
                                "date: 2025-01-31}\n")
    (price,) = load_price_file(yaml_path)
    assert (price.date, price.currency, price.on_demand_per_hour) == ("2025-01-31", "EUR", 1.0)
    json_path = tmp_path / "p.json"
    json_path.write_text(json.dumps([GOOD]))
    assert load_price_file(json_path).lookup("aws", "us-east-1", "g4dn.xlarge").spot_per_hour == 0.2


@pytest.mark.parametrize("case", ["negative-price", "unknown-field", "no-source", "duplicate-entry"])
def test_bad_price_file_through_the_cli(tmp_path, case):
    path = write(tmp_path, BAD_FILES[case][0])
    env = {**os.environ, "RUNNER_HOME": str(tmp_path), "PYTHONPATH": str(ROOT), "RUNNER_LIVE_PRICES": "0"}
    proc = subprocess.run([sys.executable, "-m", "runner.cli", "prices", "--file", str(path)],
                          capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {path}: entry "), proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


def test_cli_lists_and_looks_up(tmp_path):
    env = {**os.environ, "RUNNER_HOME": str(tmp_path), "PYTHONPATH": str(ROOT), "RUNNER_LIVE_PRICES": "0",
           "COLUMNS": "300"}
    run = lambda *a: subprocess.run([sys.executable, "-m", "runner.cli", "prices", *a],  # noqa: E731
                                    capture_output=True, text=True, env=env, timeout=60)
    proc = run("azure", "eastus", "Standard_NC4as_T4_v3")
    assert proc.returncode == 0, proc.stderr
    assert "0.526 USD" in proc.stdout and "0.18 USD" in proc.stdout and "66%" in proc.stdout
    proc = run("aws", "us-east-1", "g4dn.xlrage")
    assert proc.returncode == 2 and "did you mean 'g4dn.xlarge'?" in proc.stderr
    override = write(tmp_path, [entry(spot_per_hour=0.123)])
    proc = run("--file", str(override), "aws", "us-east-1")
    assert proc.returncode == 0 and "0.123 USD" in proc.stdout and "m5.xlarge" in proc.stdout


# ---------------------------------------------------------------------------- tables and lookups


def test_later_files_override_earlier_entries(tmp_path, monkeypatch):
    env_file = write(tmp_path, [entry(spot_per_hour=0.3), entry(instance_type="x9.new", spot_per_hour=0.5)],
                     "env.yaml")
    extra = write(tmp_path, [entry(spot_per_hour=0.25, source="my quote")], "extra.yaml")
    monkeypatch.setenv("RUNNER_PRICES", str(env_file))
    assert price_table().lookup("aws", "us-east-1", "g4dn.xlarge").spot_per_hour == 0.3
    table = price_table(extra)
    assert table.lookup("aws", "us-east-1", "g4dn.xlarge").source == "my quote"
    assert table.lookup("aws", "us-east-1", "x9.new").spot_per_hour == 0.5
    assert table.lookup("aws", "us-west-2", "g4dn.xlarge").spot_per_hour == 0.19  # untouched shipped entry
    assert len(table) == len(shipped_prices()) + 1


def test_lookup_errors_name_the_machine_and_the_fix():
    table = shipped_prices()
    with pytest.raises(PriceError) as info:
        table.lookup("aws", "us-east-1", "g4dn.xlrage")
    assert "aws us-east-1 g4dn.xlrage" in str(info.value) and "did you mean 'g4dn.xlarge'?" in str(info.value)
    assert "prices file" in str(info.value)
    with pytest.raises(PriceError, match="g4dn.xlarge is priced only in us-east-1, us-west-2"):
        table.lookup("aws", "eu-west-9", "g4dn.xlarge")
    with pytest.raises(PriceError, match="use one of aws, gcp, azure"):
        table.lookup("ibm", "x", "y")


def test_cost_is_seconds_times_the_hourly_rate():
    p = Price("aws", "us-east-1", "g4dn.xlarge", 0.526, 0.2, "USD", "x", "2024-06-01")
    assert p.cost(1800) == pytest.approx(0.1)
    assert p.cost(7200, spot=False) == pytest.approx(1.052)
    assert p.cost(-5) == 0.0


@pytest.mark.parametrize("text,parts", [
    ("g4dn.xlarge", (None, None, "g4dn.xlarge")), ("aws:g5.xlarge", ("aws", None, "g5.xlarge")),
    ("gcp:us-central1:a2-highgpu-1g", ("gcp", "us-central1", "a2-highgpu-1g"))])
def test_parse_machine(text, parts):
    assert parse_machine(text) == parts


# ---------------------------------------------------------------------------- the spec's price


def test_local_imitation_charges_the_spec_price_with_the_table_on_demand():
    price = price_for_spec(spec(local={"imitates": "aws:us-east-1:g4dn.xlarge", "price_per_hour": 0.16}))
    assert (price.machine, price.on_demand_per_hour, price.spot_per_hour) == ("aws:us-east-1:g4dn.xlarge", 0.526, 0.16)
    assert price.cost(3600) == pytest.approx(0.16)
    bare = price_for_spec(spec(local={"imitates": "Standard_NC6s_v3"}))
    assert bare == shipped_prices().lookup("azure", "eastus", "Standard_NC6s_v3")
    west = price_for_spec(spec(local={"imitates": "aws:us-west-2:g5.xlarge"}))
    assert west.spot_per_hour == 0.4 and west.region == "us-west-2"


def test_spec_cost_fields_win_over_everything(tmp_path):
    file = write(tmp_path, [entry(spot_per_hour=0.3)])
    s = spec(local={"imitates": "aws:us-east-1:g4dn.xlarge", "price_per_hour": 0.16},
             cost={"prices_file": str(file), "spot_per_hour": 0.11, "currency": "EUR", "source": "our contract",
                   "date": "2025-02-01"})
    price = price_for_spec(s)
    assert (price.spot_per_hour, price.on_demand_per_hour, price.currency, price.source, price.date) == (
        0.11, 0.526, "EUR", "our contract", "2025-02-01")
    assert price_for_spec(spec(local={"imitates": "aws:us-east-1:g4dn.xlarge"}, cost={"prices_file": str(file)}),
                          ).spot_per_hour == 0.3


def test_cloud_backends_price_their_machine():
    aws = price_for_spec(spec(backend="aws", aws={"job_queue": "q", "region": "us-west-2",
                                                  "instance_types": ["p3.2xlarge", "g4dn.xlarge"]}))
    assert aws.machine == "aws:us-west-2:p3.2xlarge"
    gcp = price_for_spec(spec(backend="gcp", gcp={"project": "p", "region": "us-central1",
                                                  "machine_type": "n1-standard-8",
                                                  "accelerator_type": "nvidia-tesla-t4", "accelerator_count": 1}))
    assert gcp.instance_type == "n1-standard-8+nvidia-tesla-t4" and gcp.on_demand_per_hour == 0.73
    g2 = price_for_spec(spec(backend="gcp", gcp={"project": "p", "region": "us-central1", "machine_type":
                                                 "g2-standard-8", "accelerator_type": "nvidia-l4"}))
    assert g2.instance_type == "g2-standard-8"  # the L4 comes with the machine type
    az = price_for_spec(spec(backend="azure", azure={"account_url": "https://acct.westus2.batch.azure.com",
                                                     "pool_id": "p", "vm_size": "Standard_D4s_v3"}))
    assert az.machine == "azure:westus2:Standard_D4s_v3"
    az2 = price_for_spec(spec(backend="azure", azure={"account_url": "http://127.0.0.1:9000", "pool_id": "p",
                                                      "vm_size": "Standard_D4s_v3", "region": "eastus"}))
    assert az2.region == "eastus"


def test_no_machine_means_no_price_and_unknown_machine_is_one_line():
    assert price_for_spec(spec()) is None
    assert price_for_spec(spec(backend="aws", aws={"job_queue": "q"})) is None
    with pytest.raises(PriceError) as info:
        price_for_spec(spec(local={"imitates": "aws:us-east-1:g9.huge"}))
    message = str(info.value)
    assert "aws us-east-1 g9.huge" in message and "cost.on_demand_per_hour" in message and "\n" not in message
    with pytest.raises(PriceError, match="'g9.huge' is in no price table"):
        price_for_spec(spec(local={"imitates": "g9.huge"}))
    only = price_for_spec(spec(cost={"on_demand_per_hour": 1.0, "spot_per_hour": 0.3}))
    assert (only.on_demand_per_hour, only.spot_per_hour, only.cloud) == (1.0, 0.3, "local")
    with pytest.raises(PriceError, match="cost.on_demand_per_hour is needed"):
        price_for_spec(spec(cost={"spot_per_hour": 0.3}))


@pytest.mark.parametrize("fields,expected", [
    ({"local": {"imitates": "mars:us-east-1:g4dn.xlarge"}}, "field 'local.imitates': cloud 'mars'"),
    ({"local": {"imitates": "aws::g4dn.xlarge"}}, "field 'local.imitates'"),
    ({"local": {"price_per_hour": 0.16}}, "field 'local.imitates': is needed with local.price_per_hour"),
    ({"local": {"imitates": "g4dn.xlarge", "price_per_hour": 0}}, "field 'local.price_per_hour'"),
    ({"cost": {"currency": "DOLLARS"}}, "field 'cost.currency': 'DOLLARS' is not a known currency"),
    ({"cost": {"spot_per_hour": -1}}, "field 'cost.spot_per_hour'"),
    ({"cost": {"date": "yesterday"}}, "field 'cost.date': 'yesterday' is not a date"),
    ({"cost": {"spot_per_hr": 1}}, "did you mean 'spot_per_hour'?"),
])
def test_spec_price_fields_are_validated(fields, expected):
    with pytest.raises(SpecError) as info:
        spec(**fields)
    assert expected in str(info.value)


def test_spec_cost_date_may_be_an_unquoted_yaml_date(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("name: demo\nimage: x\ncost: {on_demand_per_hour: 1, spot_per_hour: 0.5, date: 2025-03-04}\n")
    assert load_spec(path).cost.date == "2025-03-04"


# ---------------------------------------------------------------------------- live prices, offline parts


def test_live_prices_can_be_turned_off_and_are_read_from_a_fresh_cache(monkeypatch, tmp_path):
    assert live_price("aws", "us-east-1", "g4dn.xlarge") is None  # RUNNER_LIVE_PRICES=0
    monkeypatch.setenv("RUNNER_LIVE_PRICES", "1")
    cached = Price("azure", "eastus", "Standard_D4s_v3", 0.2, 0.04, "USD", "azure retail prices API", "2026-01-02")
    cache = tmp_path / "home" / "prices-cache.json"
    cache.parent.mkdir(parents=True)
    cache.write_text(json.dumps({"azure/eastus/Standard_D4s_v3": {"fetched_at": time.time() - 3600,
                                                                  "price": cached.__dict__},
                                 "azure/eastus/Standard_D2s_v3": {"fetched_at": time.time() - 60, "price": None}}))
    monkeypatch.setenv("RUNNER_AZURE_PRICES_URL", "http://127.0.0.1:9/unreachable")  # a miss would warn
    assert live_price("azure", "eastus", "Standard_D4s_v3") == cached
    assert live_price("azure", "eastus", "Standard_D2s_v3") is None  # a recent failure is not retried


def test_no_credentials_means_no_live_price_and_no_warning(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("RUNNER_LIVE_PRICES", "1")
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
                "GOOGLE_APPLICATION_CREDENTIALS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    monkeypatch.setattr("google.auth.compute_engine._metadata._NO_GCE_CHECK", True)
    with caplog.at_level(logging.WARNING, logger="runner.cost.prices"):
        assert live_price("aws", "us-east-1", "g4dn.xlarge") is None
        assert live_price("gcp", "us-central1", "n1-standard-8") is None
    assert not caplog.records
    s = spec(backend="aws", aws={"job_queue": "q", "instance_types": ["g4dn.xlarge"], "region": "us-east-1"})
    assert price_for_spec(s) == shipped_prices().lookup("aws", "us-east-1", "g4dn.xlarge")


def test_gcp_machine_shapes():
    assert live_mod.gcp_shape("n1-standard-8+nvidia-tesla-t4") == ("n1", 8, 30.0, {"nvidia-tesla-t4": 1})
    assert live_mod.gcp_shape("n1-standard-4+2xnvidia-tesla-v100")[3] == {"nvidia-tesla-v100": 2}
    assert live_mod.gcp_shape("a2-highgpu-2g") == ("a2", 24, 170.0, {"nvidia-tesla-a100": 2})
    assert live_mod.gcp_shape("g2-standard-8") == ("g2", 8, 32.0, {"nvidia-l4": 1})
    assert live_mod.gcp_shape("e2-standard-4") == ("e2", 4, 16.0, {})


def test_table_merge_keeps_sources():
    a = PriceTable([Price(**GOOD)], ["a.yaml"])
    b = PriceTable([Price(**{**GOOD, "spot_per_hour": 0.1})], ["b.yaml"])
    merged = a.merged(b)
    assert merged.sources == ("a.yaml", "b.yaml") and next(iter(merged)).spot_per_hour == 0.1
