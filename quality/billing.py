"""The rules the billing tables must meet: GX suites run as Dagster asset checks, plus the DMA totals rule.

Blocking where wrong data would mislead what is built on it: keys, duplicates, negative consumption and
DMA totals that do not add up would all corrupt billed-versus-inflow comparisons (non-revenue water). A
meter billing knows and DMAMA does not is worth a warning, not a stop: the meter lists are refreshed on
different days. The tables are declared in ``contracts/billing.py``; checks name their assets by key.
"""

import dagster as dg
import polars as pl

from contracts.billing import (
    CONSUMPTION_MONTHLY,
    CONSUMPTION_MONTHLY_KEY,
    CUSTOMER_STATUSES,
    CUSTOMERS,
    CUSTOMERS_KEY,
    LEVELS,
    METER_READINGS,
    METER_READINGS_KEY,
    TARIFF_CLASSES,
)
from contracts.dmama import METERS
from quality.gx import CheckInput, Rule, build_gx_checks, checked_window
from quality.rules import keys_present, unique
from resources.lake import Lake

# Far above any customer meter's day (a large industrial user draws a few hundred m³): beyond it the
# reading or the rollover judgement is wrong, and a person should look.
MAX_DAILY_CONSUMPTION_M3 = 2_000.0
TOTALS_TOLERANCE_M3 = 0.01  # billing rounds each bill to the litre


def dma_total_mismatches(frame: pl.DataFrame) -> pl.DataFrame:
    """(month, dma_id, dma_total_m3, customers_sum_m3) where a DMA's billed total is not the sum of its
    customers' bills, or the DMA has customer bills but no total."""
    customers = (
        frame.filter(pl.col("level") == "customer")
        .group_by("month", "dma_id")
        .agg(pl.col("billed_m3").sum().round(3).alias("customers_sum_m3"))
    )
    totals = frame.filter(pl.col("level") == "dma").select("month", "dma_id", pl.col("billed_m3").alias("dma_total_m3"))
    both = totals.join(customers, on=["month", "dma_id"], how="full", coalesce=True)
    off = (pl.col("dma_total_m3") - pl.col("customers_sum_m3")).abs() > TOTALS_TOLERANCE_M3
    return both.filter(off | pl.col("dma_total_m3").is_null() | pl.col("customers_sum_m3").is_null()).sort(
        "month", "dma_id"
    )


def _known_meters(check: CheckInput) -> list[str]:
    return check.lake.read(METERS).filter(pl.col("kind") == "customer")["meter_id"].to_list()


def _keys(*columns: str) -> Rule:
    return keys_present(*columns)


def _unique(*columns: str) -> Rule:
    return unique(*columns, why="a re-run never doubles a value")


KNOWN_METERS = Rule(
    name="meters_known_to_dmama",
    description="Every billed meter is a customer meter in DMAMA's meter list (dmama/meters).",
    expectations=lambda gxe, check: [
        gxe.ExpectColumnValuesToBeInSet(column="meter_id", value_set=_known_meters(check))
    ],
    severity=dg.AssetCheckSeverity.WARN,
    blocking=False,
)

READING_RULES = (
    _keys("meter_id", "reading_date", "register_m3"),
    _unique("meter_id", "reading_date"),
    Rule(
        name="consumption_not_negative",
        description="Consumption and registers are never negative; a register stays within its 4–8 digits.",
        expectations=lambda gxe, _: [
            gxe.ExpectColumnValuesToBeBetween(column="consumption_m3", min_value=0),
            gxe.ExpectColumnValuesToBeBetween(column="register_m3", min_value=0),
            gxe.ExpectColumnValuesToBeBetween(column="register_digits", min_value=4, max_value=8),
        ],
    ),
    Rule(
        name="consumption_plausible",
        description=f"No meter used more than {MAX_DAILY_CONSUMPTION_M3:,.0f} m³ in a day (rollovers included).",
        expectations=lambda gxe, _: [
            gxe.ExpectColumnValuesToBeBetween(column="consumption_m3", max_value=MAX_DAILY_CONSUMPTION_M3)
        ],
        severity=dg.AssetCheckSeverity.WARN,
        blocking=False,
    ),
    KNOWN_METERS,
)

MONTHLY_RULES = (
    _keys("month", "level", "dma_id", "billed_m3"),
    _unique("month", "level", "dma_id", "customer_id"),
    Rule(
        name="billed_not_negative",
        description="Billed volumes are never negative and every row is a customer bill or a DMA total.",
        expectations=lambda gxe, _: [
            gxe.ExpectColumnValuesToBeBetween(column="billed_m3", min_value=0),
            gxe.ExpectColumnValuesToBeInSet(column="level", value_set=list(LEVELS)),
            gxe.ExpectColumnValuesToBeBetween(column="customers", min_value=1),
        ],
    ),
)

CUSTOMER_RULES = (
    _keys("customer_id", "meter_id", "dma_id", "updated_at"),
    _unique("customer_id"),
    Rule(
        name="classes_known",
        description="Tariff class and status take their known values.",
        expectations=lambda gxe, _: [
            gxe.ExpectColumnValuesToBeInSet(column="tariff_class", value_set=list(TARIFF_CLASSES)),
            gxe.ExpectColumnValuesToBeInSet(column="status", value_set=list(CUSTOMER_STATUSES)),
        ],
    ),
    Rule(
        name="no_raw_phone_numbers",
        description="phone_hash holds only 64-hex-digit HMAC-SHA256 digests, never a phone number.",
        expectations=lambda gxe, _: [gxe.ExpectColumnValuesToMatchRegex(column="phone_hash", regex=r"^[0-9a-f]{64}$")],
    ),
    Rule(
        name="meters_known_to_dmama",
        description=KNOWN_METERS.description,
        expectations=KNOWN_METERS.expectations,
        severity=dg.AssetCheckSeverity.WARN,
        blocking=False,
    ),
)


def _dma_totals_check(months: dg.TimeWindowPartitionsDefinition) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=CONSUMPTION_MONTHLY_KEY,
        name="dma_totals_match_customers",
        blocking=True,
        partitions_def=months,
        description=f"Each DMA's billed total equals the sum of its customers' bills (±{TOTALS_TOLERANCE_M3} m³).",
    )
    def dma_totals_match_customers(context: dg.AssetCheckExecutionContext, lake: Lake) -> dg.AssetCheckResult:
        window = checked_window(context)
        frame = lake.read(CONSUMPTION_MONTHLY, *window) if window else lake.read(CONSUMPTION_MONTHLY)
        off = dma_total_mismatches(frame)
        return dg.AssetCheckResult(
            passed=off.height == 0,
            metadata={
                "dma_months_checked": frame.filter(pl.col("level") == "dma").height,
                "mismatched": off.height,
                "examples": dg.MetadataValue.json(
                    [{k: (str(v) if k == "month" else v) for k, v in row.items()} for row in off.head(5).to_dicts()]
                ),
            },
        )

    return dma_totals_match_customers


def billing_checks(
    days: dg.TimeWindowPartitionsDefinition, months: dg.TimeWindowPartitionsDefinition
) -> list[dg.AssetChecksDefinition]:
    """Every billing check: a GX suite per table (per partition where the table is partitioned) and the
    DMA totals rule on monthly consumption."""
    return [
        build_gx_checks(METER_READINGS_KEY, METER_READINGS, READING_RULES, days),
        build_gx_checks(CONSUMPTION_MONTHLY_KEY, CONSUMPTION_MONTHLY, MONTHLY_RULES, months),
        _dma_totals_check(months),
        build_gx_checks(CUSTOMERS_KEY, CUSTOMERS, CUSTOMER_RULES),
    ]
