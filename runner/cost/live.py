"""Live prices: today's figures from each cloud's own price API, cached for a day.

AWS spot price history and the price list, the Azure retail prices API, the GCP billing catalog.
They are fetched only where the cloud's own SDK finds credentials (Azure's API is public), cached
for a day under ``<data_dir>/prices-cache.json``, and any failure falls back to the table with
one logged warning. ``RUNNER_LIVE_PRICES=0`` turns them off.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import re
import time
import urllib.parse
import urllib.request
from dataclasses import asdict
from pathlib import Path
from typing import Any

from runner.cost.table import Price
from runner.paths import data_dir

log = logging.getLogger(__name__)


_POSITIVE_TTL_S = 86400.0
_NEGATIVE_TTL_S = 3600.0


def _cache_path() -> Path:
    return data_dir() / "prices-cache.json"


def _read_cache() -> dict[str, Any]:
    try:
        data = json.loads(_cache_path().read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, price: Price | None) -> None:
    path = _cache_path()
    cache = _read_cache()
    cache[key] = {"fetched_at": time.time(), "date": dt.date.today().isoformat(),
                  "price": None if price is None else asdict(price)}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_text(json.dumps(cache, indent=1, sort_keys=True), encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        log.warning("cannot write the price cache %s (%s)", path, type(exc).__name__)


def live_price(cloud: str, region: str, instance_type: str, *, timeout: float = 5.0) -> Price | None:
    """Return today's price from the cloud's own API, or None (a warning logged) when it cannot.

    AWS and GCP are asked only when their SDK finds credentials; Azure's retail API is public.
    Results (and failures, for an hour) are cached for a day. ``RUNNER_LIVE_PRICES=0`` disables this.
    """
    if os.environ.get("RUNNER_LIVE_PRICES", "1").lower() in ("0", "false", "no", "off"):
        return None
    key = f"{cloud}/{region}/{instance_type}"
    hit = _read_cache().get(key)
    if isinstance(hit, dict) and isinstance(hit.get("fetched_at"), (int, float)):
        age = time.time() - hit["fetched_at"]
        if hit.get("price") is None and age < _NEGATIVE_TTL_S:
            return None
        if hit.get("price") is not None and age < _POSITIVE_TTL_S:
            try:
                return Price(**hit["price"])
            except TypeError:
                pass
    fetch = {"aws": _aws_price, "gcp": _gcp_price, "azure": _azure_price}.get(cloud)
    if fetch is None:
        return None
    try:
        price = fetch(region, instance_type, timeout)
    except _NoCredentials:  # nothing to ask with: the table is the answer, no warning (cached: probes are slow)
        price = None
    except Exception as exc:  # noqa: BLE001 - any failure falls back to the table
        log.warning("live %s price for %s %s unavailable (%s); using the price table",
                    cloud, region, instance_type, _describe_failure(exc))
        price = None
    if price is not None and price.spot_per_hour > price.on_demand_per_hour:
        log.warning("live spot price %s is above on-demand %s for %s", price.spot_per_hour,
                    price.on_demand_per_hour, price.machine)
    _write_cache(key, price)
    return price


class _NoCredentials(Exception):
    """The cloud's SDK found no credentials (or is not installed): no live price, no warning."""


class _NoPrice(Exception):
    """The API answered but holds no usable price for the machine."""


def _describe_failure(exc: BaseException) -> str:
    """Name a failure without echoing URLs, headers or anything else that might carry a secret."""
    code = getattr(exc, "code", None) or getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, _NoPrice):
        return str(exc)
    error = getattr(exc, "response", None)
    if isinstance(error, dict):  # botocore ClientError
        code = error.get("Error", {}).get("Code", code)
    name = type(exc).__name__
    return name if code in (None, "", name) else f"{name} {code}"


def _today() -> str:
    return dt.date.today().isoformat()


def _aws_price(region: str, instance_type: str, timeout: float) -> Price:
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise _NoCredentials from None
    session = boto3.Session()
    if session.get_credentials() is None:
        raise _NoCredentials
    config = Config(connect_timeout=timeout, read_timeout=timeout, retries={"max_attempts": 2, "mode": "standard"})
    ec2 = session.client("ec2", region_name=region, config=config)
    start = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=1)
    history = ec2.describe_spot_price_history(InstanceTypes=[instance_type], StartTime=start, MaxResults=300,
                                              ProductDescriptions=["Linux/UNIX", "Linux/UNIX (Amazon VPC)"])
    latest: dict[str, tuple[Any, float]] = {}  # per zone, the newest Linux/UNIX price
    for item in history.get("SpotPriceHistory", []):
        if item.get("InstanceType") != instance_type or not str(item.get("ProductDescription", "")).startswith(
                "Linux/UNIX"):
            continue
        zone, stamp, value = item.get("AvailabilityZone", ""), str(item.get("Timestamp", "")), float(item["SpotPrice"])
        if zone not in latest or stamp > latest[zone][0]:
            latest[zone] = (stamp, value)
    if not latest:
        raise _NoPrice(f"no Linux/UNIX spot price history for {instance_type} in {region}")
    spot = sum(v for _, v in latest.values()) / len(latest)
    pricing = session.client("pricing", region_name="us-east-1", config=config)  # the price list lives there
    filters = {"instanceType": instance_type, "regionCode": region, "operatingSystem": "Linux", "tenancy": "Shared",
               "preInstalledSw": "NA", "capacitystatus": "Used", "licenseModel": "No License required"}
    products = pricing.get_products(ServiceCode="AmazonEC2", FormatVersion="aws_v1", MaxResults=10,
                                    Filters=[{"Type": "TERM_MATCH", "Field": k, "Value": v}
                                             for k, v in filters.items()])
    on_demand = None
    for text in products.get("PriceList", []):
        item = json.loads(text) if isinstance(text, str) else text
        for term in item.get("terms", {}).get("OnDemand", {}).values():
            for dim in term.get("priceDimensions", {}).values():
                usd = float(dim.get("pricePerUnit", {}).get("USD", 0) or 0)
                if dim.get("unit") == "Hrs" and usd > 0:
                    on_demand = usd
    if on_demand is None:
        raise _NoPrice(f"the AWS price list has no Linux on-demand price for {instance_type} in {region}")
    return Price("aws", region, instance_type, on_demand, round(spot, 6), "USD",
                 "aws ec2 describe_spot_price_history (zone average) + pricing get_products", _today())


def _azure_price(region: str, vm_size: str, timeout: float) -> Price:
    base = os.environ.get("RUNNER_AZURE_PRICES_URL", "https://prices.azure.com/api/retail/prices")
    query = f"armRegionName eq '{region}' and armSkuName eq '{vm_size}' and priceType eq 'Consumption'"
    url: str | None = f"{base}?{urllib.parse.urlencode({'$filter': query})}"
    on_demand = spot = None
    for _ in range(5):  # pages; one machine's meters fit in one or two
        if not url:
            break
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            page = json.load(resp)
        for item in page.get("Items", []):
            sku, product = str(item.get("skuName", "")), str(item.get("productName", ""))
            if (item.get("armSkuName") != vm_size or "Windows" in product or item.get("currencyCode") != "USD"
                    or "Low Priority" in sku or item.get("unitOfMeasure") != "1 Hour"
                    or not float(item.get("retailPrice") or 0) > 0):
                continue
            if sku.endswith(" Spot"):
                spot = float(item["retailPrice"])
            else:
                on_demand = float(item["retailPrice"])
        url = page.get("NextPageLink")
    if on_demand is None or spot is None:
        raise _NoPrice(f"the Azure retail prices API has no Linux {'spot' if on_demand else 'pay-as-you-go'} "
                       f"price for {vm_size} in {region}")
    return Price("azure", region, vm_size, on_demand, spot, "USD", "azure retail prices API (prices.azure.com)",
                 _today())


#: GCP machine families: SKU description prefix for cores and RAM, and the GPU a machine type bundles.
_GCP_FAMILIES = {"n1": "N1 Predefined Instance", "n2": "N2 Instance", "e2": "E2 Instance",
                 "a2": "A2 Instance", "g2": "G2 Instance"}
_GCP_GPUS = {"nvidia-tesla-t4": "Nvidia Tesla T4 GPU", "nvidia-tesla-v100": "Nvidia Tesla V100 GPU",
             "nvidia-tesla-p100": "Nvidia Tesla P100 GPU", "nvidia-tesla-p4": "Nvidia Tesla P4 GPU",
             "nvidia-l4": "Nvidia L4 GPU", "nvidia-tesla-a100": "Nvidia Tesla A100 GPU"}
_GCP_MEMORY_PER_CPU = {"standard": {"n1": 3.75, "n2": 4.0, "e2": 4.0, "g2": 4.0}, "highmem": {"n1": 6.5, "n2": 8.0,
                       "e2": 8.0}, "highcpu": {"n1": 0.9, "n2": 1.0, "e2": 1.0}}


def gcp_shape(machine: str) -> tuple[str, int, float, dict[str, int]]:
    """Return (family, vCPUs, memory GB, {gpu: count}) of ``n1-standard-8+nvidia-tesla-t4``-style names."""
    name, _, accel = machine.partition("+")
    gpus: dict[str, int] = {}
    if accel:
        count, _, gpu = accel.rpartition("x") if re.match(r"^\d+x", accel) else ("1", "", accel)
        gpus[gpu] = int(count)
    if m := re.fullmatch(r"a2-highgpu-(\d+)g", name):
        n = int(m.group(1))
        return "a2", 12 * n, 85.0 * n, {"nvidia-tesla-a100": n, **gpus}
    if m := re.fullmatch(r"g2-standard-(\d+)", name):
        cpus = int(m.group(1))
        return "g2", cpus, 4.0 * cpus, {"nvidia-l4": {24: 2, 48: 4, 96: 8}.get(cpus, 1), **gpus}
    if m := re.fullmatch(r"(n1|n2|e2)-(standard|highmem|highcpu)-(\d+)", name):
        family, kind, cpus = m.group(1), m.group(2), int(m.group(3))
        return family, cpus, _GCP_MEMORY_PER_CPU[kind][family] * cpus, gpus
    raise _NoPrice(f"machine type {name} is not one the GCP catalog lookup knows (n1/n2/e2/a2/g2)")


def _gcp_unit_price(sku: dict[str, Any]) -> float:
    rates = sku["pricingInfo"][-1]["pricingExpression"]["tieredRates"]
    money = rates[-1]["unitPrice"]
    return int(money.get("units") or 0) + int(money.get("nanos") or 0) / 1e9


def _gcp_price(region: str, machine: str, timeout: float) -> Price:
    try:
        import google.auth
        import google.auth.exceptions
        from google.auth.transport.requests import AuthorizedSession
    except ImportError:
        raise _NoCredentials from None
    quiet = logging.getLogger("google.auth._default")  # it warns when no metadata server answers
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/cloud-platform"])
    except google.auth.exceptions.DefaultCredentialsError:
        raise _NoCredentials from None
    finally:
        quiet.setLevel(level)
    family, cpus, memory, gpus = gcp_shape(machine)
    wanted = {f"{_GCP_FAMILIES[family]} Core": cpus, f"{_GCP_FAMILIES[family]} Ram": memory}
    for gpu, count in gpus.items():
        if gpu not in _GCP_GPUS:
            raise _NoPrice(f"accelerator {gpu} is not one the GCP catalog lookup knows")
        wanted[_GCP_GPUS[gpu]] = count
    base = os.environ.get("RUNNER_GCP_BILLING_URL", "https://cloudbilling.googleapis.com/v1").rstrip("/")
    session = AuthorizedSession(credentials)
    found: dict[tuple[str, str], float] = {}
    token = ""
    for _ in range(40):  # Compute Engine has tens of thousands of SKUs, 5,000 a page
        params = {"currencyCode": "USD", "pageSize": "5000", **({"pageToken": token} if token else {})}
        resp = session.get(f"{base}/services/6F81-5844-456A/skus", params=params, timeout=timeout)
        resp.raise_for_status()
        page = resp.json()
        for sku in page.get("skus", []):
            usage = sku.get("category", {}).get("usageType")
            if region not in sku.get("serviceRegions", []) or usage not in ("OnDemand", "Preemptible"):
                continue
            what = re.sub(r"^(Spot )?Preemptible ", "", str(sku.get("description", ""))).split(" running in ")[0]
            if what in wanted:
                found[(what, usage)] = _gcp_unit_price(sku)
        token = page.get("nextPageToken") or ""
        if not token or len(found) == 2 * len(wanted):
            break
    totals = {}
    for usage in ("OnDemand", "Preemptible"):
        missing = [w for w in wanted if (w, usage) not in found]
        if missing:
            raise _NoPrice(f"the GCP billing catalog has no {usage} SKU '{missing[0]}' in {region}")
        totals[usage] = sum(found[(w, usage)] * n for w, n in wanted.items())
    return Price("gcp", region, machine, round(totals["OnDemand"], 6), round(totals["Preemptible"], 6), "USD",
                 "gcp cloud billing catalog (services/6F81-5844-456A/skus)", _today())
