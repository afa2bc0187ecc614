"""Price tables: what an hour of a machine costs on demand and on spot, with where the figure came from.

    table = price_table()                          # shipped, then $RUNNER_PRICES, then an extra file
    price = table.lookup("aws", "us-east-1", "g4dn.xlarge")
    price.cost(3600)                               # one spot hour, in price.currency
    price_for_spec(spec)                           # the machine a job spec runs on (or imitates)

A price file is YAML or JSON: ``prices:`` and a list of entries, each with every field of
:class:`Price`. Entries without a source or a date, with a price that is not positive, a spot price
above the on-demand one, an unknown currency, an unknown field or a duplicate are rejected with one
line naming the file, the entry, the field and the fix. Later files override earlier entries.

Live prices (AWS spot price history and price list, the Azure retail prices API, the GCP billing
catalog) are fetched only where the cloud's own SDK finds credentials (Azure's API is public),
cached for a day under ``<data_dir>/prices-cache.json``, and any failure falls back to the table
with one logged warning. ``RUNNER_LIVE_PRICES=0`` turns them off.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import logging
import os
import re
import time
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from runner.errors import PriceError

if TYPE_CHECKING:
    from runner.spec import JobSpec

log = logging.getLogger(__name__)

CLOUDS = ("aws", "gcp", "azure")
#: The region a bare ``local.imitates: g5.xlarge`` (or ``aws:g5.xlarge``) stands for.
DEFAULT_REGIONS = {"aws": "us-east-1", "gcp": "us-central1", "azure": "eastus"}
SHIPPED_FILE = Path(__file__).with_name("prices.yaml")
#: ISO 4217 codes in use (2024), without funds codes and precious metals.
CURRENCIES = frozenset("""
AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN BZD
CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD
GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT
LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR
NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD SHP SLE SLL SOS SRD
SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES VND VUV WST XAF XCD
XOF XPF YER ZAR ZMW ZWL""".split())


@dataclass(frozen=True)
class Price:
    """What one hour of one machine costs, on demand and on spot, and where the figures came from."""

    cloud: str                 # "aws" | "gcp" | "azure"
    region: str                # e.g. "us-east-1", "us-central1", "eastus"
    instance_type: str         # "g4dn.xlarge", "n1-standard-8", "Standard_NC4as_T4_v3", ...
    on_demand_per_hour: float  # > 0
    spot_per_hour: float       # > 0
    currency: str              # ISO 4217, e.g. "USD"
    source: str                # URL or API name the numbers came from
    date: str                  # ISO date (YYYY-MM-DD) the numbers were read

    def cost(self, seconds: float, *, spot: bool = True) -> float:
        """Return what ``seconds`` of this machine cost, on spot or on demand."""
        rate = self.spot_per_hour if spot else self.on_demand_per_hour
        return rate * max(0.0, seconds) / 3600.0

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.cloud, self.region, self.instance_type)

    @property
    def machine(self) -> str:
        """Return ``cloud:region:instance_type``, the form ``local.imitates`` takes."""
        return ":".join(self.key)


_FIELDS = tuple(f.name for f in fields(Price))
_PRICE_FIELDS = ("on_demand_per_hour", "spot_per_hour")


class PriceTable:
    """Prices by (cloud, region, instance type); :meth:`merged` lets a later table override entries."""

    def __init__(self, prices: Iterable[Price] = (), sources: Iterable[str] = ()) -> None:
        self._prices: dict[tuple[str, str, str], Price] = {p.key: p for p in prices}
        self.sources: tuple[str, ...] = tuple(sources)

    def __len__(self) -> int:
        return len(self._prices)

    def __iter__(self) -> Iterator[Price]:
        return iter(sorted(self._prices.values(), key=lambda p: p.key))

    def __contains__(self, key: object) -> bool:
        return key in self._prices

    def merged(self, other: PriceTable) -> PriceTable:
        """Return a table with this one's entries, overridden by ``other``'s."""
        return PriceTable([*self._prices.values(), *other._prices.values()], [*self.sources, *other.sources])

    def select(self, cloud: str | None = None, region: str | None = None,
               instance_type: str | None = None) -> list[Price]:
        """Return the entries matching every given part, sorted."""
        return [p for p in self if (cloud is None or p.cloud == cloud) and (region is None or p.region == region)
                and (instance_type is None or p.instance_type == instance_type)]

    def lookup(self, cloud: str, region: str, instance_type: str) -> Price:
        """Return the price of one machine, or raise a PriceError naming what is missing and the fix."""
        price = self._prices.get((cloud, region, instance_type))
        if price is not None:
            return price
        fix = "add an entry to a prices file (RUNNER_PRICES or cost.prices_file; see docs/prices.md)"
        if cloud not in CLOUDS:
            raise PriceError(f"no prices for cloud {cloud!r}; use one of {', '.join(CLOUDS)}")
        in_region = sorted({p.instance_type for p in self.select(cloud, region)})
        regions = sorted({p.region for p in self.select(cloud, instance_type=instance_type)})
        if regions:
            hint = f"{instance_type} is priced only in {', '.join(regions)}"
        elif in_region:
            close = difflib.get_close_matches(instance_type, in_region, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known there: {', '.join(in_region[:12])}"
        else:
            hint = f"the table has no {cloud} region {region!r}"
        where = " + ".join(Path(s).name for s in self.sources) or "the price table"
        raise PriceError(f"no price for {cloud} {region} {instance_type} in {where} ({hint}); {fix}")


# ---------------------------------------------------------------------------- loading price files


def check_currency(value: str) -> str:
    """Return ``value`` if it is a known ISO 4217 code, else raise ValueError naming the fix."""
    if not isinstance(value, str) or value not in CURRENCIES:
        common = ["USD", "EUR", "GBP", "JPY", "CNY", "INR", "CAD", "AUD", "CHF", "KRW", "BRL", "SEK"]
        close = (difflib.get_close_matches(str(value).upper(), common, n=1)
                 or difflib.get_close_matches(str(value).upper(), sorted(CURRENCIES), n=1))
        hint = f"did you mean {close[0]!r}?" if close else "use an ISO 4217 code such as USD or EUR"
        raise ValueError(f"{value!r} is not a known currency; {hint}")
    return value


def check_date(value: Any) -> str:
    """Return an ISO date (YYYY-MM-DD) that is not in the future, else raise ValueError naming the fix."""
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        day = value
    else:
        try:
            if not (isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value)):
                raise ValueError
            day = dt.date.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a date; write the day the figure was read as YYYY-MM-DD") from None
    if day > dt.date.today() + dt.timedelta(days=1):
        raise ValueError(f"{day.isoformat()} is in the future; write the day the figure was read")
    return day.isoformat()


def parse_machine(text: str) -> tuple[str | None, str | None, str]:
    """Split ``[cloud:[region:]]instance_type`` (``local.imitates``) into its parts; ValueError if malformed."""
    parts = text.split(":") if isinstance(text, str) else []
    if not 1 <= len(parts) <= 3 or not all(p and p == p.strip() and " " not in p for p in parts):
        raise ValueError(f"{text!r} is not a machine; write cloud:region:type such as aws:us-east-1:g4dn.xlarge")
    if len(parts) == 1:
        return None, None, parts[0]
    if parts[0] not in CLOUDS:
        raise ValueError(f"cloud {parts[0]!r} is not one of {', '.join(CLOUDS)}; write e.g. aws:us-east-1:g4dn.xlarge")
    return parts[0], parts[1] if len(parts) == 3 else None, parts[-1]


def _entry_error(label: str, index: int, entry: Any, field: str | None, problem: str) -> PriceError:
    name = f"entry {index + 1}"
    if isinstance(entry, dict) and all(isinstance(entry.get(k), str) for k in ("cloud", "region", "instance_type")):
        name += f" ({entry['cloud']} {entry['region']} {entry['instance_type']})"
    where = f"{label}: {name}" + (f": field {field!r}" if field else "")
    return PriceError(" ".join(f"{where}: {problem}".split()))


def _check_entry(entry: Any) -> tuple[str | None, str] | Price:
    """Return the entry as a Price, or (field, problem) for its first error."""
    if not isinstance(entry, dict):
        return None, f"is a {type(entry).__name__}, not a mapping; write key: value lines"
    for key in entry:
        if key not in _FIELDS:
            close = difflib.get_close_matches(str(key), _FIELDS, n=1)
            fix = f"did you mean {close[0]!r}?" if close else "remove it or fix its spelling"
            return str(key), f"unknown field (valid fields: {', '.join(_FIELDS)}); {fix}"
    for key in _FIELDS:
        if entry.get(key) in (None, ""):
            what = "the URL or API the figures came from" if key == "source" else (
                "the day the figures were read, YYYY-MM-DD" if key == "date" else "a value")
            return key, f"is required; add {key}: <{what}>"
    values = dict(entry)
    for key in ("cloud", "region", "instance_type", "source"):
        if not isinstance(values[key], str) or not values[key].strip():
            return key, f"expected text, got {values[key]!r}; quote it"
    if values["cloud"] not in CLOUDS:
        return "cloud", f"{values['cloud']!r} is not a cloud; use one of {', '.join(CLOUDS)}"
    for key in _PRICE_FIELDS:
        value = values[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return key, f"expected a number, got {value!r}; write the hourly price without quotes, e.g. 0.526"
        if not value > 0 or value != value or value == float("inf"):
            return key, f"{value} must be more than zero; write the hourly price, e.g. 0.526"
        values[key] = float(value)
    if values["spot_per_hour"] > values["on_demand_per_hour"]:
        return "spot_per_hour", (f"{values['spot_per_hour']} is above on_demand_per_hour "
                                 f"{values['on_demand_per_hour']}; check the figures (swapped?)")
    try:
        values["currency"] = check_currency(values["currency"])
    except ValueError as exc:
        return "currency", str(exc)
    try:
        values["date"] = check_date(values["date"])
    except ValueError as exc:
        return "date", str(exc)
    return Price(**values)


def parse_prices(data: Any, label: str) -> PriceTable:
    """Validate the mapping read from a price file into a table; errors are one-line PriceErrors."""
    if isinstance(data, dict):
        extra = sorted(set(data) - {"prices"})
        if extra:
            raise PriceError(f"{label}: unknown top-level field {extra[0]!r}; write prices: and a list of entries")
        data = data.get("prices")
    if not isinstance(data, list) or not data:
        raise PriceError(f"{label}: holds no entries; write prices: and a list of entries (see docs/prices.md)")
    prices: dict[tuple[str, str, str], tuple[int, Price]] = {}
    for index, entry in enumerate(data):
        checked = _check_entry(entry)
        if not isinstance(checked, Price):
            raise _entry_error(label, index, entry, *checked)
        if checked.key in prices:
            first = prices[checked.key][0] + 1
            raise _entry_error(label, index, entry, None,
                               f"duplicates entry {first}; remove one of them")
        prices[checked.key] = (index, checked)
    return PriceTable([p for _, p in prices.values()], [label])


def load_price_file(path: str | Path) -> PriceTable:
    """Read a YAML or JSON price file; errors name the file, the entry and the field."""
    from runner.spec import _UniqueKeyLoader  # the spec's loader: a key written twice is an error

    label = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PriceError(f"{label}: no such price file; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise PriceError(f"{label}: cannot be read ({type(exc).__name__}); check the file") from None
    try:
        data = json.loads(text) if label.endswith(".json") else yaml.load(text, Loader=_UniqueKeyLoader)
    except (yaml.YAMLError, ValueError) as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else (f" at line {exc.lineno}" if hasattr(exc, "lineno") else "")
        problem = getattr(exc, "problem", None) or getattr(exc, "msg", None) or type(exc).__name__
        raise PriceError(" ".join(f"{label}: not valid {'JSON' if label.endswith('.json') else 'YAML'}"
                                  f"{where}: {problem}; fix the syntax".split())) from None
    return parse_prices(data, label)


def shipped_prices() -> PriceTable:
    """Return the table shipped with the package (approximate list prices; see docs/prices.md)."""
    return load_price_file(SHIPPED_FILE)


def price_table(extra_file: str | Path | None = None) -> PriceTable:
    """Return the shipped table, overridden by ``$RUNNER_PRICES``'s file, then by ``extra_file``."""
    table = shipped_prices()
    for path in (os.environ.get("RUNNER_PRICES") or None, extra_file):
        if path:
            table = table.merged(load_price_file(path))
    return table


# ---------------------------------------------------------------------------- the spec's machine


#: GCP families whose GPUs come with the machine type (the accelerator fields only repeat them).
_GCP_BUNDLED_GPU = ("a2-", "a3-", "g2-")


def machine_of(spec: JobSpec, table: PriceTable) -> tuple[str, str, str] | None:
    """Return (cloud, region, instance type) the spec runs on or imitates, or None when it names none."""
    if spec.backend == "local":
        if spec.local is None or not spec.local.imitates:
            return None
        cloud, region, itype = parse_machine(spec.local.imitates)
        if cloud is None:
            clouds = sorted({p.cloud for p in table.select(instance_type=itype)})
            if len(clouds) > 1:
                raise PriceError(f"local.imitates {itype!r} is priced on {', '.join(clouds)}; "
                                 f"write cloud:region:type, such as {clouds[0]}:{DEFAULT_REGIONS[clouds[0]]}:{itype}")
            if not clouds:
                raise PriceError(f"local.imitates {itype!r} is in no price table; write cloud:region:type and add "
                                 "it to a prices file (see docs/prices.md), or set cost.on_demand_per_hour")
            cloud = clouds[0]
        if region is None:
            regions = [p.region for p in table.select(cloud, instance_type=itype)]
            region = DEFAULT_REGIONS[cloud] if DEFAULT_REGIONS[cloud] in regions or not regions else regions[0]
        return cloud, region, itype
    if spec.backend == "aws":
        aws = spec.aws
        if aws is None or not aws.instance_types or aws.instance_types[0] in ("optimal", "default"):
            return None
        region = aws.region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        return "aws", region, aws.instance_types[0]
    if spec.backend == "gcp":
        gcp = spec.gcp
        if gcp is None or not gcp.machine_type or not gcp.region:
            return None
        itype = gcp.machine_type
        if gcp.accelerator_type and (gcp.accelerator_count or 1) > 0 and not itype.startswith(_GCP_BUNDLED_GPU):
            count = gcp.accelerator_count or 1
            itype += f"+{gcp.accelerator_type}" if count == 1 else f"+{count}x{gcp.accelerator_type}"
        return "gcp", gcp.region, itype
    azure = spec.azure
    if azure is None or not azure.vm_size:
        return None
    region = azure.region or _azure_region(azure.account_url)
    if region is None:
        raise PriceError(f"azure.vm_size {azure.vm_size} has no region to price it in; "
                         "add region: eastus (for example) under azure:")
    return "azure", region, azure.vm_size


def _azure_region(account_url: str | None) -> str | None:
    """Return the region in ``https://<account>.<region>.batch.azure.com``, if the URL has that shape."""
    host = urllib.parse.urlsplit(account_url or "").hostname or ""
    parts = host.split(".")
    return parts[1] if len(parts) >= 5 and host.endswith(".batch.azure.com") else None


def price_for_spec(spec: JobSpec, table: PriceTable | None = None, *, live: bool = True) -> Price | None:
    """Return the price of the machine a spec runs on (or, on ``local``, imitates); None if it names none.

    Order: live prices (cloud backends, when ``live``), else the table (shipped, ``$RUNNER_PRICES``,
    ``cost.prices_file``); then ``local.price_per_hour`` as the spot price; then the spec's ``cost:``
    fields, which win over everything.
    """
    cost = spec.cost
    if table is None:
        table = price_table(cost.prices_file if cost else None)
    elif cost is not None and cost.prices_file:
        table = table.merged(load_price_file(cost.prices_file))
    machine = machine_of(spec, table)
    overrides: dict[str, Any] = {}
    if spec.backend == "local" and spec.local is not None and spec.local.price_per_hour is not None:
        overrides["spot_per_hour"] = float(spec.local.price_per_hour)
        overrides["source"] = "job spec (local.price_per_hour)"
    if cost is not None:
        overrides.update({k: v for k, v in cost.model_dump().items() if k != "prices_file" and v is not None})
    if machine is None and not overrides:
        return None
    base: Price | None = None
    if machine is not None:
        if live and spec.backend != "local":
            base = live_price(*machine)
        if base is None:
            try:
                base = table.lookup(*machine)
            except PriceError as exc:
                if not {"on_demand_per_hour", "spot_per_hour"} <= overrides.keys():
                    raise PriceError(f"{exc} or set cost.on_demand_per_hour and cost.spot_per_hour") from None
    if base is None:
        missing = [k for k in ("on_demand_per_hour", "spot_per_hour") if k not in overrides]
        if missing:
            raise PriceError(f"the spec names no machine to price, so cost.{missing[0]} is needed; set it, "
                             "or name the machine (local.imitates: aws:us-east-1:g4dn.xlarge, aws.instance_types, ...)")
        cloud, region, itype = machine or (spec.backend, "", "")
        base = Price(cloud, region, itype, overrides["on_demand_per_hour"], overrides["spot_per_hour"],
                     "USD", "job spec (cost:)", dt.date.today().isoformat())
    elif overrides.keys() & set(_PRICE_FIELDS):
        overrides.setdefault("date", dt.date.today().isoformat())
        if cost is None or cost.source is None:
            spec_fields = [k for k in _PRICE_FIELDS if k in overrides]
            what = "local.price_per_hour" if "source" in overrides else " and ".join(f"cost.{k}" for k in spec_fields)
            overrides["source"] = f"job spec ({what}); the rest from {base.source}"
    price = replace(base, **{k: v for k, v in overrides.items() if k in _FIELDS})
    if price.spot_per_hour > price.on_demand_per_hour:
        log.warning("spot price %s is above on-demand %s for %s; check the spec's prices",
                    price.spot_per_hour, price.on_demand_per_hour, price.machine)
    return price


# ---------------------------------------------------------------------------- live prices


_POSITIVE_TTL_S = 86400.0
_NEGATIVE_TTL_S = 3600.0


def _cache_path() -> Path:
    from runner.ledger import data_dir

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
