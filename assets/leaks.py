"""Leak indicators per DMA from minimum night flow: risen beyond the DMA's own history, since when, how.

A DMA's minimum night flow (the lowest 15-minute inflow in the quiet hours) is legitimate night use plus
leakage. Each DMA is its own reference: the median of its first ``baseline_nights`` nights in the
look-back is its baseline, their scaled median absolute deviation its night-to-night spread (floored, so
a very quiet DMA does not flag noise). A leak is suspected when each of the last ``persist_nights``
nights stands above the baseline by more than ``band`` spreads and by more than ``min_rise_pct``. The
rise began the night after the last night still inside the band; a rise carried mostly by one
night-to-night step is a burst, otherwise a growing leak (shared/DOMAIN.md: a leak rises over days, a
burst is a step).
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl
from pydantic import Field

from assets.lake_tables import lake_metadata
from contracts.dmama import DMAS, DMAS_KEY, FLOW_READINGS, FLOW_READINGS_KEY
from contracts.marts import LEAK_INDICATORS, LEAK_INDICATORS_KEY
from orchestration.settings import local_timezone
from resources.lake import Lake

QUIET_READINGS = 8  # 02:00–04:00 at 15 minutes


class LeakIndicatorConfig(dg.Config):
    """How a DMA's night flow is judged against its own history."""

    lookback_nights: int = Field(default=60, ge=10, le=400, description="Nights read back from today.")
    quiet_start_hour: int = Field(default=2, ge=0, le=23, description="Start of the quiet hours, local.")
    quiet_end_hour: int = Field(default=4, ge=1, le=24, description="End of the quiet hours, local (exclusive).")
    baseline_nights: int = Field(default=7, ge=3, description="First nights of the look-back that set the baseline.")
    persist_nights: int = Field(default=3, ge=1, description="Last nights that must all stand out.")
    band: float = Field(default=4.0, gt=0, description="How many spreads above the baseline a night must be.")
    min_rise_pct: float = Field(default=10.0, ge=0, description="Smallest rise over the baseline that counts, %.")
    min_spread_pct: float = Field(default=2.0, gt=0, description="Floor of the spread, % of the baseline.")
    burst_share: float = Field(
        default=0.6, gt=0, le=1, description="A step carrying this share of the rise is a burst."
    )


def nightly_minimum(readings: pl.DataFrame, timezone: str, start_hour: int = 2, end_hour: int = 4) -> pl.DataFrame:
    """Minimum and mean inflow per DMA and local night from 15-minute readings (``dma_id``, ``timestamp``,
    ``flow_m3h``); only nights whose quiet hours are complete are kept (a partial night's minimum lies)."""
    local = pl.col("timestamp").dt.convert_time_zone(timezone)
    quiet = readings.filter(
        (local.dt.hour() >= start_hour) & (local.dt.hour() < end_hour) & pl.col("flow_m3h").is_not_null()
    )
    expected = (end_hour - start_hour) * 4
    return (
        quiet.group_by("dma_id", night_of=local.dt.date())
        .agg(
            min_night_flow_m3h=pl.col("flow_m3h").min(),
            mean_night_flow_m3h=pl.col("flow_m3h").mean(),
            readings=pl.len().cast(pl.Int64),
        )
        .filter(pl.col("readings") >= expected)
        .sort("dma_id", "night_of")
    )


def leak_indicators(nights: pl.DataFrame, config: LeakIndicatorConfig) -> pl.DataFrame:
    """One row per DMA (columns of ``contracts.marts.LEAK_INDICATORS``) from its nightly minimum series."""
    rows = []
    for (dma_id,), series in nights.sort("night_of").group_by("dma_id", maintain_order=True):
        values = series["min_night_flow_m3h"].to_list()
        dates = series["night_of"].to_list()
        row = {
            "dma_id": dma_id,
            "nights": len(values),
            "baseline_m3h": None,
            "spread_m3h": None,
            "latest_night": dates[-1] if dates else None,
            "latest_m3h": None,
            "rise_m3h": None,
            "rise_pct": None,
            "leak_suspected": False,
            "rise_began_on": None,
            "kind": None,
            "largest_step_m3h": None,
        }
        if len(values) < config.baseline_nights + config.persist_nights:
            rows.append(row)  # too short a history to judge: reported, not flagged
            continue
        base = pl.Series(values[: config.baseline_nights])
        baseline = float(base.median())
        spread = max(1.4826 * float((base - baseline).abs().median()), config.min_spread_pct / 100 * baseline, 1e-6)
        excess = [v - baseline for v in values]
        threshold = max(config.band * spread, config.min_rise_pct / 100 * baseline)
        latest = float(pl.Series(values[-config.persist_nights :]).median())
        suspected = all(e > threshold for e in excess[-config.persist_nights :])
        row.update(
            baseline_m3h=round(baseline, 3),
            spread_m3h=round(spread, 3),
            latest_m3h=round(latest, 3),
            rise_m3h=round(latest - baseline, 3),
            rise_pct=round(100 * (latest - baseline) / baseline, 2) if baseline > 0 else None,
            leak_suspected=suspected,
        )
        if suspected:
            # The rise began the night after the last night still inside the band (within one spread).
            inside = [i for i, e in enumerate(excess) if e <= spread]
            first = (inside[-1] + 1) if inside else config.baseline_nights
            steps = [values[i] - values[i - 1] for i in range(max(first, 1), len(values))]
            largest = max(steps, default=0.0)
            row.update(
                rise_began_on=dates[first],
                largest_step_m3h=round(largest, 3),
                kind="burst" if largest >= config.burst_share * (latest - baseline) else "growing_leak",
            )
        rows.append(row)
    schema = {column.name: column.dtype for column in LEAK_INDICATORS.columns}
    return pl.DataFrame(rows, schema=schema)


@dg.asset(
    key=LEAK_INDICATORS_KEY,
    group_name="marts",
    kinds={"parquet"},
    owners=["team:network"],
    deps=[FLOW_READINGS_KEY, DMAS_KEY],
    metadata=lake_metadata(LEAK_INDICATORS),
    # Judged every morning after the night's quiet hours have landed (orchestration/marts.py).
    freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=26), warn_window=timedelta(hours=25)),
)
def dma_leak_indicators(
    context: dg.AssetExecutionContext, config: LeakIndicatorConfig, lake: Lake
) -> dg.MaterializeResult:
    """Which DMAs' minimum night flow has risen beyond what their own history explains, since which night,
    by how much, and whether it looks like a burst (a step) or a growing leak. One row per DMA; the nights
    themselves are in the catalog's marts.dma_night_flow."""
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=config.lookback_nights + 1)
    readings = lake.read(FLOW_READINGS, start, end).select("dma_id", "timestamp", "flow_m3h")
    if readings.height == 0:
        raise dg.Failure(
            description=(
                f"marts/dma_leak_indicators: no DMA readings in the lake between {start:%Y-%m-%d} and "
                f"{end:%Y-%m-%d}; backfill dmama/flow_readings over the look-back ({config.lookback_nights} nights)."
            )
        )
    nights = nightly_minimum(readings, local_timezone(), config.quiet_start_hour, config.quiet_end_hour)
    indicators = leak_indicators(nights, config)
    lake.replace_snapshot(LEAK_INDICATORS, indicators)
    suspected = indicators.filter(pl.col("leak_suspected"))
    dmas = lake.read(DMAS)
    context.log.info(
        f"{suspected.height} of {indicators.height} DMAs with a suspected leak: {suspected['dma_id'].to_list()}"
    )
    return dg.MaterializeResult(
        metadata={
            "dmas_judged": indicators.height,
            "leaks_suspected": suspected.height,
            "suspected": dg.MetadataValue.md(
                suspected.select("dma_id", "rise_began_on", "rise_m3h", "rise_pct", "kind")
                .to_pandas()
                .to_markdown(index=False)
                if suspected.height
                else "none"
            ),
            "dmas_in_catalogue_without_nights": sorted(
                set(dmas["dma_id"].to_list()) - set(indicators["dma_id"].to_list())
            )
            if dmas.height
            else [],
            "dagster/row_count": indicators.height,
        }
    )
