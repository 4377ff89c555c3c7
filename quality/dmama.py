"""The rules DMAMA's rows must meet, as Great Expectations suites run as Dagster asset checks.

The tables themselves are declared in ``contracts/dmama.py``; checks name their assets by key, so
``quality/`` never imports ``assets/``.
"""

from datetime import UTC, datetime, timedelta

import dagster as dg

from contracts.dmama import (
    DMAS,
    DMAS_KEY,
    FLOW_READINGS,
    FLOW_READINGS_KEY,
    METER_READINGS,
    METER_READINGS_KEY,
    METERS,
    METERS_KEY,
)
from quality.gx import CheckInput, Rule, build_gx_checks
from quality.rules import keys_present, unique

# Physical limits, not operating targets: a value outside them is a broken meter or a broken feed.
MAX_DMA_INFLOW_M3H = 10_000.0
MAX_NETWORK_PRESSURE_BAR = 16.0
READING_INTERVAL = timedelta(minutes=15)


def _known_dma_ids(check: CheckInput) -> list[str]:
    return check.lake.read(DMAS)["dma_id"].to_list()


def _known_meter_ids(check: CheckInput) -> list[str]:
    return check.lake.read(METERS)["meter_id"].to_list()


def _expected_flow_rows(check: CheckInput) -> int:
    """Readings the window should hold by now: one per DMA per quarter hour that has ended."""
    if check.window is None:
        return 0
    start, end = check.window
    ended = min(end, check.now.astimezone(UTC)) - start
    quarters = max(0, int(ended / READING_INTERVAL))
    return quarters * len(_known_dma_ids(check))


def _newest_expected(check: CheckInput, interval: timedelta) -> datetime | None:
    """The newest reading the window should hold by now, allowing one interval of lateness; None when no
    reading of the window is due yet (the first quarter hour of the hour in progress)."""
    assert check.window is not None
    start, end = check.window
    horizon = min(end, check.now.astimezone(UTC))
    newest = horizon - 2 * interval
    return newest if newest >= start else None


def _fresh(what: str, interval: timedelta) -> Rule:
    return Rule(
        name="fresh",
        description=(
            f"The newest {what} in the window is at most {int(2 * interval.total_seconds() // 60)} minutes "
            "older than the window's end (or than now, for the period in progress): the source is still sending."
        ),
        expectations=lambda gxe, check: (
            []
            if check.window is None or (newest := _newest_expected(check, interval)) is None
            else [gxe.ExpectColumnMaxToBeBetween(column="timestamp", min_value=newest)]
        ),
        severity=dg.AssetCheckSeverity.WARN,
        blocking=False,
    )


def _keys(*columns: str) -> Rule:
    return keys_present(*columns)


def _unique(*columns: str) -> Rule:
    return unique(
        *columns, name="unique_" + "_".join(columns), why="a re-run or a duplicated answer never doubles a reading"
    )


FLOW_RULES = (
    _keys("dma_id", "timestamp"),
    _unique("dma_id", "timestamp"),
    Rule(
        name="values_in_physical_range",
        description=(
            f"Flow within 0–{MAX_DMA_INFLOW_M3H:,.0f} m³/h and pressure within 0–{MAX_NETWORK_PRESSURE_BAR:.0f} bar: "
            "anything outside is a faulty instrument or feed, not demand."
        ),
        expectations=lambda gxe, _: [
            gxe.ExpectColumnValuesToBeBetween(column="flow_m3h", min_value=0, max_value=MAX_DMA_INFLOW_M3H),
            gxe.ExpectColumnValuesToBeBetween(column="pressure_bar", min_value=0, max_value=MAX_NETWORK_PRESSURE_BAR),
        ],
    ),
    Rule(
        name="known_dmas",
        description="Every reading belongs to a DMA in the DMA catalogue (dmama/dmas); refresh it if a DMA is new.",
        expectations=lambda gxe, check: [
            gxe.ExpectColumnValuesToBeInSet(column="dma_id", value_set=_known_dma_ids(check))
        ],
        severity=dg.AssetCheckSeverity.WARN,
        blocking=False,
    ),
    Rule(
        name="complete",
        description="One reading per DMA for every quarter hour of the window that has ended (gaps show here).",
        expectations=lambda gxe, check: [gxe.ExpectTableRowCountToBeBetween(min_value=_expected_flow_rows(check))],
        severity=dg.AssetCheckSeverity.WARN,
        blocking=False,
    ),
    _fresh("reading", READING_INTERVAL),
)

METER_RULES = (
    _keys("meter_id", "timestamp"),
    _unique("meter_id", "timestamp"),
    Rule(
        name="register_not_negative",
        description="Register readings are zero or more m³ (a register counts up and rolls over to zero).",
        expectations=lambda gxe, _: [gxe.ExpectColumnValuesToBeBetween(column="register_m3", min_value=0)],
    ),
    Rule(
        name="known_meters",
        description="Every reading belongs to a meter in the meter list (dmama/meters).",
        expectations=lambda gxe, check: [
            gxe.ExpectColumnValuesToBeInSet(column="meter_id", value_set=_known_meter_ids(check))
        ],
        severity=dg.AssetCheckSeverity.WARN,
        blocking=False,
    ),
    _fresh("register reading", timedelta(hours=1)),
)

DMA_RULES = (
    _keys("dma_id"),
    _unique("dma_id"),
    Rule(
        name="plausible_size",
        description="A DMA has 1–100,000 connections and a pressure target of 0.5–10 bar.",
        expectations=lambda gxe, _: [
            gxe.ExpectColumnValuesToBeBetween(column="connections", min_value=1, max_value=100_000),
            gxe.ExpectColumnValuesToBeBetween(column="target_pressure_bar", min_value=0.5, max_value=10),
        ],
    ),
)

METER_LIST_RULES = (
    _keys("meter_id", "dma_id"),
    _unique("meter_id"),
    Rule(
        name="known_kind",
        description="A meter is either a customer meter or a DMA inflow meter.",
        expectations=lambda gxe, _: [gxe.ExpectColumnValuesToBeInSet(column="kind", value_set=["customer", "inflow"])],
    ),
    Rule(
        name="known_dmas",
        description="Every meter belongs to a DMA in the DMA catalogue (dmama/dmas).",
        expectations=lambda gxe, check: [
            gxe.ExpectColumnValuesToBeInSet(column="dma_id", value_set=_known_dma_ids(check))
        ],
        severity=dg.AssetCheckSeverity.WARN,
        blocking=False,
    ),
)


def dmama_checks(
    hourly: dg.TimeWindowPartitionsDefinition, daily: dg.TimeWindowPartitionsDefinition
) -> list[dg.AssetChecksDefinition]:
    """Every DMAMA check: one GX suite per table, each rule reported as its own check."""
    return [
        build_gx_checks(FLOW_READINGS_KEY, FLOW_READINGS, FLOW_RULES, hourly),
        clock_on_slot_grid(hourly),
        build_gx_checks(METER_READINGS_KEY, METER_READINGS, METER_RULES, daily),
        build_gx_checks(DMAS_KEY, DMAS, DMA_RULES),
        build_gx_checks(METERS_KEY, METERS, METER_LIST_RULES),
    ]


def clock_on_slot_grid(partitions_def: dg.TimeWindowPartitionsDefinition) -> dg.AssetChecksDefinition:
    """WARN when a DMA's readings arrived shifted off the 15-minute slot grid (a source clock skew).

    The skew can only be seen in what the source *sent* for a request, before conform filed the shifted
    rows that fell outside the request as rejects; the asset measures it there (``quality/slot_grid.py``)
    and records it on each partition's materialization, which this check judges.
    """

    @dg.asset_check(
        asset=FLOW_READINGS_KEY,
        name="clock_on_slot_grid",
        partitions_def=partitions_def,
        blocking=False,
        description=(
            "Every DMA's readings sit on the 15-minute slot grid of the window asked for; a series shifted as a "
            "whole (a skewed source clock) is flagged with its offset, even when a wide request hid it."
        ),
    )
    def _check(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
        skewed: dict[str, float] = {}
        judged = 0
        keys = context.partition_keys
        # One query for the whole range: the newest materialization of each partition (this run's) comes first.
        records = context.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=FLOW_READINGS_KEY, asset_partitions=keys), limit=len(keys)
        ).records
        latest = {}
        for record in records:
            latest.setdefault(record.partition_key, record.asset_materialization.metadata)
        for metadata in latest.values():
            judged += 1 if "clock_skewed" in metadata else 0
            by_dma = metadata.get("clock_skew_s_by_dma_id")
            skewed.update(by_dma.value if by_dma is not None else {})
        return dg.AssetCheckResult(
            passed=not skewed,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "partitions_judged": judged,
                "skewed_dmas": len(skewed),
                "max_clock_skew_s": max((abs(v) for v in skewed.values()), default=0.0),
                "skew_s_by_dma": ", ".join(f"{d}: {v:+.0f}" for d, v in sorted(skewed.items())) or "none",
            },
        )

    return _check
