"""SCADA windows: the collector's sealed spool windows loaded into the lake, checked, aggregated and alerted on.

The collector files every point under the 5-minute window in which it was *received* and seals the
window once it is over. The ``scada_window_sensor`` asks for one run per sealed window (tag
``scada/window``); the run loads the window's points (idempotently: a re-run replaces the same file),
archives the spool segments, aggregates per point by *measurement* time, and tells operators about
flatlines, gaps and breaches that held for the whole window.
"""

from datetime import timedelta

import dagster as dg
import polars as pl

from assets.lake_tables import lake_metadata
from assets.partitions import hourly
from collector import spool
from quality import timeseries
from quality.conform import conform, rejects_table
from quality.scada import (
    HISTORIAN_POINTS,
    SCADA_AGGREGATES,
    SCADA_POINTS,
    SCADA_WINDOW_ALERTS,
    points_between,
    window_of,
)
from resources.historian import HistorianClient
from resources.http import SourceError
from resources.lake import Lake, partition_starts
from resources.notifier import Notification, Notifier
from resources.scada_spool import ScadaSpool

SOURCE = "scada"


def _common(table, kinds: set[str], *also) -> dict:
    return {
        "key_prefix": SOURCE,
        "group_name": SOURCE,
        "owners": ["team:operations"],
        "kinds": kinds,
        "metadata": lake_metadata(table, *also),
        "tags": {"source": SOURCE},
    }


@dg.asset(name="points", **_common(SCADA_POINTS, {"mqtt", "modbus", "opcua", "parquet"}))
def points(context: dg.AssetExecutionContext, scada_spool: ScadaSpool, lake: Lake) -> dg.MaterializeResult:
    """Every SCADA point received in one 5-minute window (flow, pressure, level, temperature, power,
    status), with its quality and both timestamps; redelivered copies removed. One file per window."""
    name = window_of(context)
    start = spool.window_start(name)
    received = spool.read_window(scada_spool.root, name)
    frame = _points_frame(received)
    unique = frame.sort([*SCADA_POINTS.key, "received_ts"]).unique(subset=list(SCADA_POINTS.key), keep="first")
    written = lake.replace_window(SCADA_POINTS, start, unique)
    # Archived only once the window is safely in the lake; a re-run reads it back from the archive.
    spool.archive_window(scada_spool.root, name)
    end = start + timedelta(seconds=scada_spool.window_s)
    late = unique.filter(pl.col("source_ts") < start).height
    by_quality = dict(unique.group_by("quality").len().iter_rows())
    return dg.MaterializeResult(
        metadata={
            "window": name,
            "points_received": len(received),
            "points_written": written.rows,
            "duplicates_removed": len(received) - written.rows,
            "dagster/row_count": written.rows,
            "units": written.distinct("unit_id"),
            "sensors": unique.select("unit_id", "sensor_type").n_unique() if written.rows else 0,
            "late_points": late,
            "comm_fail_points": int(by_quality.get("COMM_FAIL", 0)),
            "bad_points": int(by_quality.get("BAD", 0)),
            "window_end": end.isoformat(),
        }
    )


@dg.asset(name="point_aggregates", deps=[points], **_common(SCADA_AGGREGATES, {"parquet"}))
def point_aggregates(context: dg.AssetExecutionContext, scada_spool: ScadaSpool, lake: Lake) -> dg.MaterializeResult:
    """Per point and 5-minute window of measurement time: min, max, mean, last, count and availability.
    Each run recomputes its window and the one before, so points that arrived a window late count."""
    name = window_of(context)
    start = spool.window_start(name)
    step = timedelta(seconds=scada_spool.window_s)
    limits = timeseries.load_limits()
    written = 0
    for window in (start - step, start):
        measured = points_between(lake, window, window + step, scada_spool.window_s)
        latest = _aggregate(measured, limits, window, scada_spool.window_s)
        written += lake.replace_window(SCADA_AGGREGATES, window, latest).rows
    availability = latest["availability_pct"].mean() if latest.height else 0.0
    return dg.MaterializeResult(
        metadata={
            "window": name,
            "aggregates_written": written,
            "points_aggregated": latest.height,
            "mean_availability_pct": round(float(availability or 0.0), 1),
        }
    )


@dg.asset(name="window_alerts", deps=[points], **_common(SCADA_WINDOW_ALERTS, {"parquet"}))
def window_alerts(
    context: dg.AssetExecutionContext, scada_spool: ScadaSpool, lake: Lake, notifier: Notifier
) -> dg.MaterializeResult:
    """Alerts about a whole window, sent to operators: a sensor stuck on one value, a sensor gone silent,
    or a threshold breach that held for the whole window (the collector already alerts on single points)."""
    name = window_of(context)
    start = spool.window_start(name)
    end = start + timedelta(seconds=scada_spool.window_s)
    measured = points_between(lake, start, end, scada_spool.window_s)
    limits = timeseries.load_limits()
    alerts = _window_alerts(measured, limits, start, end)
    for alert in alerts.iter_rows(named=True):
        notifier.send(
            Notification(
                severity=alert["severity"],
                title=f"SCADA {alert['kind'].replace('_', ' ')}: {alert['unit_id']} {alert['sensor_type']}",
                message=alert["message"],
                source=alert["source"],
                unit_id=alert["unit_id"],
                sensor_type=alert["sensor_type"],
            )
        )
    lake.replace_window(SCADA_WINDOW_ALERTS, start, alerts)
    by_kind = dict(alerts.group_by("kind").len().iter_rows()) if alerts.height else {}
    return dg.MaterializeResult(
        metadata={"window": name, "alerts": alerts.height, **{f"{k}_alerts": int(v) for k, v in by_kind.items()}}
    )


@dg.asset(
    name="historian_points",
    partitions_def=hourly,
    backfill_policy=dg.BackfillPolicy.single_run(),
    **_common(HISTORIAN_POINTS, {"http", "parquet"}, rejects_table(HISTORIAN_POINTS)),
)
def historian_points(context: dg.AssetExecutionContext, historian: HistorianClient, lake: Lake) -> dg.MaterializeResult:
    """One-minute samples of every SCADA tag from the plant historian, one file per hour: the source for
    backfilling windows the collector never saw and for repairing gaps."""
    window = context.partition_time_window
    keys = context.partition_key_range
    label = keys.start if keys.start == keys.end else f"{keys.start}…{keys.end}"
    received = written = rejected = 0
    cursor = window.start
    while cursor < window.end:
        # A day at a time: 20 tags × 1,440 samples stay small, and a year's backfill streams.
        end = min(cursor + timedelta(days=1), window.end)
        try:
            rows = historian.points(cursor, end)
        except SourceError as error:
            raise dg.Failure(description=f"scada historian: could not load partition {label}: {error}") from error
        loaded = conform(rows, HISTORIAN_POINTS, source="historian", partition_key=label, window=(cursor, end))
        starts = partition_starts(cursor, end, "hour")
        written += lake.replace_partitions(HISTORIAN_POINTS, loaded.frame, starts, "hour").rows
        lake.replace_partitions(rejects_table(HISTORIAN_POINTS), loaded.rejects, starts, "hour")
        received += loaded.received
        rejected += loaded.rejected
        cursor = end
    return dg.MaterializeResult(
        metadata={
            "rows_received": received,
            "rows_written": written,
            "rows_rejected": rejected,
            "dagster/row_count": written,
        }
    )


def _points_frame(received: list) -> pl.DataFrame:
    frame = pl.DataFrame(
        {
            "source": [p.source for p in received],
            "device": [p.device for p in received],
            "unit_id": [p.unit_id for p in received],
            "sensor_type": [p.sensor_type for p in received],
            "value": [p.value for p in received],
            "unit": [p.unit for p in received],
            "quality": [p.quality for p in received],
            "source_ts": [p.source_ts_us for p in received],
            "received_ts": [p.received_ts_us for p in received],
        },
        schema_overrides={"value": pl.Float64, "source_ts": pl.Int64, "received_ts": pl.Int64},
    )
    return frame.with_columns(
        pl.col("source_ts").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
        pl.col("received_ts").cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
    )


def _aggregate(measured: pl.DataFrame, limits, window, window_s: int) -> pl.DataFrame:
    if measured.height == 0:
        return SCADA_AGGREGATES.empty()
    # Values outside the physical range and lone spikes would distort min, max and mean: left out.
    implausible = (
        pl.concat(
            [
                timeseries.out_of_gross_range(measured, limits).select(SCADA_POINTS.key),
                timeseries.spikes(measured, limits).select(SCADA_POINTS.key),
            ]
        )
        .unique()
        .with_columns(implausible=pl.lit(True))
    )
    flagged = measured.join(implausible, on=list(SCADA_POINTS.key), how="left")
    usable = (
        pl.col("quality").is_in(["GOOD", "UNCERTAIN"]) & pl.col("value").is_not_null() & pl.col("implausible").is_null()
    )
    interval = {k: v.sample_interval_s for k, v in limits.items()}
    grouped = (
        flagged.sort("source_ts")
        .group_by(["source", "device", "unit_id", "sensor_type"])
        .agg(
            unit=pl.col("unit").last(),
            min=pl.col("value").filter(usable).min(),
            max=pl.col("value").filter(usable).max(),
            mean=pl.col("value").filter(usable).mean(),
            last=pl.col("value").filter(usable).last(),
            count=pl.len().cast(pl.Int64),
            usable_count=usable.sum().cast(pl.Int64),
        )
    )
    expected = pl.col("sensor_type").replace_strict(interval, default=None, return_dtype=pl.Float64)
    share = pl.min_horizontal(pl.lit(100.0), 100.0 * pl.col("usable_count") / (window_s / expected))
    # Report-by-exception sources send nothing while a value holds still: no expected count, no availability.
    periodic = pl.col("source").is_in(timeseries.periodic_sources())
    return grouped.with_columns(
        window_start=pl.lit(window).cast(pl.Datetime("us", "UTC")),
        availability_pct=pl.when(periodic).then(share).otherwise(None),
    )


def _window_alerts(measured: pl.DataFrame, limits, start, end) -> pl.DataFrame:
    span_s = (end - start).total_seconds()
    flat = timeseries.flatlines(measured, limits).filter(pl.col("duration_s") >= 0.8 * span_s)
    silent = (
        timeseries.gaps(measured, limits, start, end)
        .group_by("source", "device", "unit_id", "sensor_type")
        .agg(gap_s=pl.col("gap_s").max())
    )
    held = timeseries.breaches_held(measured, limits, start, end)
    frames = [
        _alert_rows(
            flat,
            "flatline",
            "warning",
            "{} {} stuck at {} for {} s: check the sensor",
            pl.col("value"),
            pl.col("duration_s").round(0),
        ),
        _alert_rows(
            silent, "gap", "warning", "{} {} silent for {} s: check the link or the device", pl.col("gap_s").round(0)
        ),
        _alert_rows(
            held,
            "breach_held",
            "critical",
            "{} {} beyond its alarm limit for the whole window (mean {})",
            pl.col("mean").round(2),
        ),
    ]
    found = [frame for frame in frames if frame.height]
    if not found:
        return SCADA_WINDOW_ALERTS.empty()
    return pl.concat(found).with_columns(window_start=pl.lit(start).cast(pl.Datetime("us", "UTC")))


def _alert_rows(found: pl.DataFrame, kind: str, severity: str, template: str, *details: pl.Expr) -> pl.DataFrame:
    """One alert row per offending point, the message naming the unit, the sensor and the figures."""
    return found.select(
        "source",
        "device",
        "unit_id",
        "sensor_type",
        kind=pl.lit(kind),
        severity=pl.lit(severity),
        message=pl.format(template, "unit_id", "sensor_type", *details),
    )
