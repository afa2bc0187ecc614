"""Price tables: what an hour of a machine costs on demand and on spot, with where the figure came from.

    table = price_table()                          # shipped, then $RUNNER_PRICES, then an extra file
    price = table.lookup("aws", "us-east-1", "g4dn.xlarge")
    price.cost(3600)                               # one spot hour, in price.currency

A price file is YAML or JSON: ``prices:`` and a list of entries, each with every field of
:class:`Price`. Entries without a source or a date, with a price that is not positive, a spot price
above the on-demand one, an unknown currency, an unknown field or a duplicate are rejected with one
line naming the file, the entry, the field and the fix. Later files override earlier entries.

Live prices are in :mod:`runner.cost.live`; the price of a job spec's machine in :mod:`runner.cost.prices`.
"""

from __future__ import annotations

import datetime as dt
import difflib
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import yaml

from runner.errors import PriceError
from runner.inputs import UniqueKeyLoader, read_text

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


#: Price files already parsed, by (path, modification time, size): every job of `runner status` or
#: `runner ui` is priced from the same few files, and parsing the shipped YAML costs ~10 ms.
_PARSED: dict[tuple[str, int, int], PriceTable] = {}


def load_price_file(path: str | Path) -> PriceTable:
    """Read a YAML or JSON price file (parsed once per version of the file); errors name the file, the
    entry and the field."""
    try:
        st = os.stat(path)
        key: tuple[str, int, int] | None = (os.path.abspath(path), st.st_mtime_ns, st.st_size)
    except OSError:
        key = None  # read_text says what is wrong with it
    if key is not None and key in _PARSED:
        return _PARSED[key]
    table = _load_price_file(path)
    if key is not None:
        if len(_PARSED) >= 64:
            _PARSED.clear()
        _PARSED[key] = table
    return table


def _load_price_file(path: str | Path) -> PriceTable:
    label = str(path)
    text = read_text(path, PriceError, "price file")
    try:
        data = json.loads(text) if label.endswith(".json") else yaml.load(text, Loader=UniqueKeyLoader)
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
