"""The rules the markets tables must meet: GX suites run as Dagster asset checks, plus the validity rule.

The tables are declared in ``contracts/markets.py``; checks name their assets by key.
"""

from __future__ import annotations

import dagster as dg
import polars as pl

from contracts.markets import (
    ENERGY_PRICE_STEPS,
    ENERGY_PRICE_STEPS_KEY,
    HOLIDAYS,
    HOLIDAYS_KEY,
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


def markets_checks(price_days: dg.TimeWindowPartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    """Every markets check: a GX suite per table, and the no-overlap rule on tariff validity."""
    return [
        build_gx_checks(TARIFFS_KEY, TARIFFS, TARIFF_RULES),
        validity_periods_do_not_overlap,
        build_gx_checks(HOLIDAYS_KEY, HOLIDAYS, HOLIDAY_RULES),
        build_gx_checks(ENERGY_PRICE_STEPS_KEY, ENERGY_PRICE_STEPS, PRICE_STEP_RULES, price_days),
    ]
