"""The price of the machine a job spec runs on (or, on ``local``, imitates).

    price_for_spec(spec)        # live price (clouds, with credentials), else the table; spec overrides win

Which machine a spec names is the backend's business (:meth:`runner.backends.base.Backend.machine`);
the tables are :mod:`runner.cost.table`, live prices :mod:`runner.cost.live`.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from runner.cost.live import live_price
from runner.cost.table import (  # noqa: F401 - the price API in one import
    _FIELDS,
    _PRICE_FIELDS,
    CLOUDS,
    DEFAULT_REGIONS,
    Price,
    PriceError,
    PriceTable,
    check_currency,
    check_date,
    load_price_file,
    parse_machine,
    parse_prices,
    price_table,
    shipped_prices,
)

if TYPE_CHECKING:
    from runner.spec.model import JobSpec

log = logging.getLogger(__name__)


def machine_of(spec: JobSpec, table: PriceTable) -> tuple[str, str, str] | None:
    """Return (cloud, region, instance type) the spec runs on or imitates, or None when it names none."""
    from runner.plugins import backend_class

    return backend_class(spec.backend).machine(spec, table)


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
    local_price = getattr(spec.section(spec.backend), "price_per_hour", None)
    if local_price is not None:
        overrides["spot_per_hour"] = float(local_price)
        overrides["source"] = f"job spec ({spec.backend}.price_per_hour)"
    if cost is not None:
        overrides.update({k: v for k, v in cost.model_dump().items() if k != "prices_file" and v is not None})
    if machine is None and not overrides:
        return None
    base: Price | None = None
    if machine is not None:
        if live and machine[0] == spec.backend:  # a cloud's own machine, not one imitated
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
            what = f"{spec.backend}.price_per_hour" if "source" in overrides else " and ".join(f"cost.{k}" for k in spec_fields)
            overrides["source"] = f"job spec ({what}); the rest from {base.source}"
    price = replace(base, **{k: v for k, v in overrides.items() if k in _FIELDS})
    if price.spot_per_hour > price.on_demand_per_hour:
        log.warning("spot price %s is above on-demand %s for %s; check the spec's prices",
                    price.spot_per_hour, price.on_demand_per_hour, price.machine)
    return price
