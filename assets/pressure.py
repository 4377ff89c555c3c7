"""Pressure compliance per DMA and day, and the low-pressure spells behind it.

The utility promises a service pressure band (shared/DOMAIN.md: 10–30 m in Thai provincial systems). The
DMA inlet readings say, day by day, how much of the time it was kept and when it was not: a spell below
the minimum is a customer complaint waiting to happen (or a burst draining the network).
"""

from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl
from pydantic import Field

from assets.lake_tables import lake_metadata
from contracts.dmama import FLOW_READINGS, FLOW_READINGS_KEY
from contracts.marts import BAR_PER_METRE, LOW_PRESSURE_EVENTS, PRESSURE_COMPLIANCE, PRESSURE_COMPLIANCE_KEY
from orchestration.settings import local_timezone
from resources.lake import Lake

READING = timedelta(minutes=15)


class PressureBandConfig(dg.Config):
    """The service pressure band and how far back the readings are judged."""

    band_min_m: float = Field(default=10.0, ge=0, description="Service pressure minimum, m of water column.")
    band_max_m: float = Field(default=30.0, gt=0, description="Service pressure maximum, m of water column.")
    lookback_days: int = Field(default=35, ge=1, le=400, description="Days (re)judged per run.")


def pressure_compliance(readings: pl.DataFrame, timezone: str, band_min_m: float, band_max_m: float) -> pl.DataFrame:
    """One row per DMA and local day from readings (``dma_id``, ``timestamp``, ``pressure_bar``)."""
    if band_min_m >= band_max_m:
        raise ValueError(f"pressure band: minimum {band_min_m} m must be below maximum {band_max_m} m")
    metres = pl.col("pressure_bar") / BAR_PER_METRE
    return (
        readings.filter(pl.col("pressure_bar").is_not_null())
        .group_by("dma_id", day=pl.col("timestamp").dt.convert_time_zone(timezone).dt.date())
        .agg(
            readings=pl.len().cast(pl.Int64),
            within_band_pct=((metres >= band_min_m) & (metres <= band_max_m)).mean() * 100,
            below_band_pct=(metres < band_min_m).mean() * 100,
            above_band_pct=(metres > band_max_m).mean() * 100,
            min_pressure_m=metres.min(),
            mean_pressure_m=metres.mean(),
        )
        .with_columns(band_min_m=pl.lit(band_min_m), band_max_m=pl.lit(band_max_m))
        .sort("dma_id", "day")
    )


def low_pressure_events(readings: pl.DataFrame, band_min_m: float) -> pl.DataFrame:
    """Spells of consecutive readings (no gap over one interval) below ``band_min_m``, per DMA."""
    metres = pl.col("pressure_bar") / BAR_PER_METRE
    below = (
        readings.filter(pl.col("pressure_bar").is_not_null())
        .sort("dma_id", "timestamp")
        .filter(metres < band_min_m)
        .with_columns(pressure_m=metres)
    )
    new_spell = (pl.col("dma_id") != pl.col("dma_id").shift(1)) | (
        pl.col("timestamp") - pl.col("timestamp").shift(1) > READING
    )
    return (
        below.with_columns(spell=new_spell.fill_null(True).cum_sum())
        .group_by("dma_id", "spell")
        .agg(
            started_at=pl.col("timestamp").min(),
            ended_at=pl.col("timestamp").max(),
            readings=pl.len().cast(pl.Int64),
            lowest_pressure_m=pl.col("pressure_m").min(),
        )
        .with_columns(
            duration_min=((pl.col("ended_at") - pl.col("started_at")).dt.total_seconds() + READING.total_seconds()) / 60
        )
        .select([c.name for c in LOW_PRESSURE_EVENTS.columns])
        .sort("dma_id", "started_at")
    )


@dg.asset(
    key=PRESSURE_COMPLIANCE_KEY,
    group_name="marts",
    kinds={"parquet"},
    owners=["team:network"],
    deps=[FLOW_READINGS_KEY],
    metadata=lake_metadata(PRESSURE_COMPLIANCE, LOW_PRESSURE_EVENTS),
    freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(hours=26), warn_window=timedelta(hours=25)),
)
def dma_pressure_compliance(
    context: dg.AssetExecutionContext, config: PressureBandConfig, lake: Lake
) -> dg.MaterializeResult:
    """How much of each day each DMA was kept inside the service pressure band, and every spell below it."""
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=config.lookback_days)
    readings = lake.read(FLOW_READINGS, start, end).select("dma_id", "timestamp", "pressure_bar")
    if readings.height == 0:
        raise dg.Failure(
            description=(
                f"marts/dma_pressure_compliance: no DMA readings in the lake between {start:%Y-%m-%d} and "
                f"{end:%Y-%m-%d}; materialize dmama/flow_readings for those days."
            )
        )
    days = pressure_compliance(readings, local_timezone(), config.band_min_m, config.band_max_m)
    spells = low_pressure_events(readings, config.band_min_m)
    # History before the look-back is kept as judged then; the look-back is judged again.
    kept_days = lake.read(PRESSURE_COMPLIANCE).join(days.select("dma_id", "day"), on=["dma_id", "day"], how="anti")
    kept_spells = lake.read(LOW_PRESSURE_EVENTS).filter(pl.col("started_at") < start)
    lake.replace_snapshot(
        PRESSURE_COMPLIANCE, pl.concat([kept_days, days.select(kept_days.columns)]).sort("dma_id", "day")
    )
    lake.replace_snapshot(LOW_PRESSURE_EVENTS, pl.concat([kept_spells, spells.select(kept_spells.columns)]))
    worst = days.sort("within_band_pct").head(5)
    return dg.MaterializeResult(
        metadata={
            "dma_days": days.height,
            "mean_within_band_pct": round(float(days["within_band_pct"].mean()), 2),
            "low_pressure_spells": spells.height,
            "worst_days": dg.MetadataValue.md(worst.to_pandas().to_markdown(index=False)),
            "dagster/row_count": days.height,
        }
    )
