"""The rules the markets tables must meet: GX suites run as Dagster asset checks, the tariff validity rule,
and the plausible bands of prices and rates that the derived tables use to refuse a bad input.

The tables are declared in ``contracts/markets.py``; checks name their assets by key. A rate or a price
outside its band is kept in its raw table as sent and fails that table's blocking check; the marts that
would use it (converted cement prices, freight costs) reject the rows it would have priced, naming it.
"""

from __future__ import annotations

from collections.abc import Callable

import dagster as dg
import polars as pl

from contracts.markets import (
    CEMENT_MARKET_PRICES,
    CEMENT_MARKET_PRICES_KEY,
    CEMENT_PRICES,
    CEMENT_PRICES_KEY,
    ENERGY_PRICE_STEPS,
    ENERGY_PRICE_STEPS_KEY,
    EXCHANGE_RATES,
    EXCHANGE_RATES_KEY,
    FUEL_PRICES,
    FUEL_PRICES_KEY,
    HOLIDAYS,
    HOLIDAYS_KEY,
    ROAD_FREIGHT_COSTS,
    ROAD_FREIGHT_COSTS_KEY,
    STEP_MINUTES,
    TARIFFS,
    TARIFFS_KEY,
)
from quality.gx import CheckInput, Rule, build_gx_checks
from resources.lake import Lake

# Plausible bounds, THB: far outside any Thai tariff since the 1990s; beyond them the feed is broken.
MAX_ENERGY_THB_PER_KWH = 20.0
MAX_DEMAND_THB_PER_KW = 1000.0
RATE_COLUMNS = ("energy_on_peak_thb_per_kwh", "energy_off_peak_thb_per_kwh", "demand_charge_thb_per_kw")

# Plausible bands (low, high), inclusive. Wide enough for a decade of real markets (USD/THB 29–38 and
# USD/INR 63–88 since 2015; Brent 20–130 USD/bbl; Indian diesel 0.8–1.3 USD/l), narrow enough that a
# unit slip (a rate per 100 USD, a price per barrel in a per-litre column) or a sign error falls outside.
FX_BANDS: dict[tuple[str, str], tuple[float, float]] = {("USD", "THB"): (25.0, 45.0), ("USD", "INR"): (60.0, 110.0)}
DIESEL_USD_PER_L = (0.3, 3.0)
BRENT_USD_PER_BBL = (10.0, 200.0)
BAG_KG = (10.0, 100.0)
CEMENT_USD_PER_TONNE = (20.0, 300.0)
FREIGHT_INR_PER_TONNE_KM = (0.5, 10.0)


def implausible_rate(base: str, quote: str, rate: float) -> str | None:
    """Why an exchange rate cannot be used (an unknown pair, or outside its band), else None."""
    band = FX_BANDS.get((base, quote))
    if band is None:
        known = ", ".join(f"{b}/{q}" for b, q in FX_BANDS)
        return f"no plausible band is known for {base}/{quote} (known: {known})"
    low, high = band
    if not low <= rate <= high:
        return f"{base}/{quote} rate {rate:g} is outside the plausible {low:g}–{high:g} {quote} per {base}"
    return None


def implausible_diesel(price_usd_per_l: float) -> str | None:
    """Why a diesel price cannot be used, else None."""
    low, high = DIESEL_USD_PER_L
    if not low <= price_usd_per_l <= high:
        return f"diesel price {price_usd_per_l:g} USD/l is outside the plausible {low:g}–{high:g} USD/l"
    return None


def overlapping_tariffs(tariffs: pl.DataFrame) -> list[tuple[str, str]]:
    """Pairs of tariff versions whose validity periods overlap (an open end runs forever), sorted."""
    rows = tariffs.select("tariff_id", "valid_from", "valid_to").sort("valid_from", "tariff_id").rows()
    pairs = []
    for i, (a, a_from, a_to) in enumerate(rows):
        for b, b_from, b_to in rows[i + 1 :]:
            if (a_to is None or b_from < a_to) and (b_to is None or a_from < b_to):
                pairs.append((a, b))
    return pairs


def _keys(*columns: str) -> Rule:
    return Rule(
        name="keys_present",
        description=f"Every row names its {' and '.join(columns)}.",
        expectations=lambda gxe, _: [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in columns],
    )


def _unique(column: str, what: str) -> Rule:
    return Rule(
        name=f"unique_{column}",
        description=f"No two rows share a {column}: {what}.",
        expectations=lambda gxe, _: [gxe.ExpectColumnValuesToBeUnique(column=column)],
    )


def _steps_expected(check: CheckInput) -> int:
    if check.window is None:
        return 0
    start, end = check.window
    return int((end - start).total_seconds() // (STEP_MINUTES * 60))


TARIFF_RULES = (
    _keys("tariff_id", "valid_from"),
    _unique("tariff_id", "one row per published version"),
    Rule(
        name="rates_positive",
        description=(
            f"Energy rates are above 0 and at most {MAX_ENERGY_THB_PER_KWH:.0f} THB/kWh, the demand charge above 0 "
            f"and at most {MAX_DEMAND_THB_PER_KW:.0f} THB/kW, Ft within ±{MAX_ENERGY_THB_PER_KWH / 10:.0f} THB/kWh "
            "(Ft may be negative)."
        ),
        expectations=lambda gxe, _: (
            [
                gxe.ExpectColumnValuesToBeBetween(
                    column=c,
                    min_value=0,
                    max_value=MAX_DEMAND_THB_PER_KW if c.startswith("demand") else MAX_ENERGY_THB_PER_KWH,
                    strict_min=True,
                )
                for c in RATE_COLUMNS
            ]
            + [gxe.ExpectColumnValuesToBeBetween(column="ft_thb_per_kwh", min_value=-2.0, max_value=2.0)]
        ),
    ),
    Rule(
        name="on_peak_hours_readable",
        description="On-peak start and end are local times written HH:MM.",
        expectations=lambda gxe, _: [
            gxe.ExpectColumnValuesToMatchRegex(column=c, regex=r"^([01]\d|2[0-4]):[0-5]\d$")
            for c in ("on_peak_start_local", "on_peak_end_local")
        ],
    ),
)

HOLIDAY_RULES = (
    _keys("date"),
    _unique("date", "a holiday is listed once"),
)

PRICE_STEP_RULES = (
    _keys("step_start", "tariff_id", "period"),
    _unique("step_start", "one price per 15-minute step"),
    Rule(
        name="rates_positive",
        description=f"Every step's energy price is above 0 and at most {MAX_ENERGY_THB_PER_KWH:.0f} THB/kWh.",
        expectations=lambda gxe, _: [
            gxe.ExpectColumnValuesToBeBetween(
                column="energy_thb_per_kwh", min_value=0, max_value=MAX_ENERGY_THB_PER_KWH, strict_min=True
            ),
            gxe.ExpectColumnValuesToBeInSet(column="period", value_set=["on_peak", "off_peak"]),
        ],
    ),
    Rule(
        name="complete",
        description="Every 15-minute step of the day is priced (missing steps are in the rejects, with the reason).",
        expectations=lambda gxe, check: [gxe.ExpectTableRowCountToBeBetween(min_value=_steps_expected(check))],
        severity=dg.AssetCheckSeverity.WARN,
        blocking=False,
    ),
)


def _compound_unique(*columns: str) -> Rule:
    return Rule(
        name="unique_key",
        description=f"No two rows share ({', '.join(columns)}): a re-run never doubles a value.",
        expectations=lambda gxe, _: [gxe.ExpectCompoundColumnsToBeUnique(column_list=list(columns))],
    )


def _between(column: str, band: tuple[float, float], **kwargs) -> Callable:
    return lambda gxe: gxe.ExpectColumnValuesToBeBetween(column=column, min_value=band[0], max_value=band[1], **kwargs)


FUEL_RULES = (
    _keys("week_start", "diesel_usd_per_l"),
    _unique("week_start", "one price per week"),
    Rule(
        name="prices_plausible",
        description=(
            f"Diesel {DIESEL_USD_PER_L[0]:g}–{DIESEL_USD_PER_L[1]:g} USD/l and Brent {BRENT_USD_PER_BBL[0]:g}–"
            f"{BRENT_USD_PER_BBL[1]:g} USD/bbl: outside, a sign or unit error the freight costs must not use."
        ),
        expectations=lambda gxe, _: [
            _between("diesel_usd_per_l", DIESEL_USD_PER_L)(gxe),
            _between("brent_usd_per_bbl", BRENT_USD_PER_BBL)(gxe),
        ],
    ),
)

EXCHANGE_RATE_RULES = (
    _keys("rate_date", "base", "quote", "rate"),
    _compound_unique("rate_date", "base", "quote"),
    # One rule per pair, so the UI says which pair is off and each reports its own unexpected count.
    *(
        Rule(
            name=f"{base.lower()}_{quote.lower()}_plausible",
            description=(
                f"Every {base}/{quote} rate lies within {low:g}–{high:g} {quote} per {base}: a rate 100 times too "
                "large is a unit slip that would mislead every price converted with it."
            ),
            expectations=lambda gxe, _, base=base, quote=quote, band=(low, high): [
                _between("rate", band, row_condition=f'base=="{base}" and quote=="{quote}"', condition_parser="pandas")(
                    gxe
                )
            ],
        )
        for (base, quote), (low, high) in FX_BANDS.items()
    ),
    Rule(
        name="known_pairs",
        description="Rates are from USD to THB or INR, the pairs the hub converts with.",
        expectations=lambda gxe, _: [
            gxe.ExpectColumnValuesToBeInSet(column="base", value_set=sorted({b for b, _ in FX_BANDS})),
            gxe.ExpectColumnValuesToBeInSet(column="quote", value_set=sorted({q for _, q in FX_BANDS})),
        ],
        severity=dg.AssetCheckSeverity.WARN,
        blocking=False,
    ),
)

CEMENT_PRICE_RULES = (
    _keys("price_date", "city", "grade"),
    _compound_unique("price_date", "city", "grade"),
    Rule(
        name="prices_positive",
        description=f"Every bag price is above 0 and every bag weighs {BAG_KG[0]:g}–{BAG_KG[1]:g} kg.",
        expectations=lambda gxe, _: [
            gxe.ExpectColumnValuesToBeBetween(column="price_per_bag", min_value=0, strict_min=True),
            _between("bag_kg", BAG_KG)(gxe),
        ],
    ),
)

CEMENT_MARKET_PRICE_RULES = (
    _keys("price_date", "city", "grade", "fx_rate_date"),
    _compound_unique("price_date", "city", "grade"),
    Rule(
        name="converted_plausible",
        description=(
            f"Converted prices lie within {CEMENT_USD_PER_TONNE[0]:g}–{CEMENT_USD_PER_TONNE[1]:g} USD per tonne, "
            "and no rate used is dated after its price."
        ),
        expectations=lambda gxe, _: [
            _between("price_usd_per_tonne", CEMENT_USD_PER_TONNE)(gxe),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="price_date", column_B="fx_rate_date", or_equal=True),
        ],
    ),
)

FREIGHT_RULES = (
    _keys("week_start", "freight_inr_per_tonne_km"),
    _unique("week_start", "one cost per week"),
    Rule(
        name="cost_plausible",
        description=(
            f"Road freight costs {FREIGHT_INR_PER_TONNE_KM[0]:g}–{FREIGHT_INR_PER_TONNE_KM[1]:g} INR per tonne-km "
            "(the supply plan would route on a wrong figure)."
        ),
        expectations=lambda gxe, _: [
            _between("freight_inr_per_tonne_km", FREIGHT_INR_PER_TONNE_KM)(gxe),
            gxe.ExpectColumnValuesToBeBetween(column="fuel_inr_per_tonne_km", min_value=0, strict_min=True),
        ],
    ),
)


@dg.asset_check(
    asset=TARIFFS_KEY,
    name="validity_periods_do_not_overlap",
    blocking=True,
    description="At most one tariff version is valid at any instant; overlapping versions are named.",
)
def validity_periods_do_not_overlap(lake: Lake) -> dg.AssetCheckResult:
    pairs = overlapping_tariffs(lake.read(TARIFFS))
    return dg.AssetCheckResult(
        passed=not pairs,
        metadata={"overlapping_pairs": len(pairs), "overlaps": ", ".join(f"{a} & {b}" for a, b in pairs) or "none"},
    )


def markets_checks(
    price_days: dg.TimeWindowPartitionsDefinition,
    days: dg.TimeWindowPartitionsDefinition,
    weeks: dg.TimeWindowPartitionsDefinition,
) -> list[dg.AssetChecksDefinition]:
    """Every markets check: a GX suite per table, and the no-overlap rule on tariff validity."""
    return [
        build_gx_checks(TARIFFS_KEY, TARIFFS, TARIFF_RULES),
        validity_periods_do_not_overlap,
        build_gx_checks(HOLIDAYS_KEY, HOLIDAYS, HOLIDAY_RULES),
        build_gx_checks(ENERGY_PRICE_STEPS_KEY, ENERGY_PRICE_STEPS, PRICE_STEP_RULES, price_days),
        build_gx_checks(FUEL_PRICES_KEY, FUEL_PRICES, FUEL_RULES, weeks),
        build_gx_checks(EXCHANGE_RATES_KEY, EXCHANGE_RATES, EXCHANGE_RATE_RULES, days),
        build_gx_checks(CEMENT_PRICES_KEY, CEMENT_PRICES, CEMENT_PRICE_RULES, days),
        build_gx_checks(CEMENT_MARKET_PRICES_KEY, CEMENT_MARKET_PRICES, CEMENT_MARKET_PRICE_RULES, days),
        build_gx_checks(ROAD_FREIGHT_COSTS_KEY, ROAD_FREIGHT_COSTS, FREIGHT_RULES, weeks),
    ]
