"""SCADA windows: the windows the collector publishes, loaded into the lake, checked, aggregated and alerted on.

The collector files every point under the receive window (5 minutes by default) in which it arrived
and publishes the window, with a manifest, once it is over (``resources.scada_manifest``). The
``scada_window_sensor`` asks for one run per published window: partition = the window's hour, tag
``scada/window`` = the window. The run loads the window's points (idempotently: a re-run replaces the
same file), acknowledges the window (the collector then archives it), aggregates per point by
*measurement* time, and tells operators about flatlines, gaps and breaches that held for the whole
window. The assets are hourly-partitioned, so the UI shows which hours are in and a data engineer can
re-run an hour: without the tag, a run takes every window of its hour still published or archived.

Window lengths come from each window's manifest, never from configuration here.
"""

from datetime import timedelta

import dagster as dg
import polars as pl

from assets.lake_tables import lake_metadata
from assets.partitions import hourly
from collector.points import FLEET_SOURCE
from contracts.scada import HISTORIAN_POINTS, SCADA_AGGREGATES, SCADA_POINTS, SCADA_WINDOW_ALERTS
from quality import timeseries
from quality.conform import conform, rejects_table
from quality.scada import (
    device_gaps,
    points_between,
    run_windows,
)
from resources.historian import HistorianClient
from resources.http import SourceError
from resources.lake import Lake, time_windows
from resources.notifier import Notification, Notifier
from resources.scada_spool import ScadaWindows

SOURCE = "scada"
# What makes two alerts of one window the same alert: a re-run must not tell operators twice.
ALERT_IDENTITY = ["kind", "source", "device", "unit_id", "sensor_type"]


def _common(table, kinds: set[str], *also) -> dict:
    return {
        "key_prefix": SOURCE,
        "group_name": SOURCE,
        "owners": ["team:operations"],
        "kinds": kinds,
        "metadata": lake_metadata(table, *also),
        "tags": {"source": SOURCE},
    }


@dg.asset(name="points", partitions_def=hourly, **_common(SCADA_POINTS, {"mqtt", "modbus", "opcua", "parquet"}))
def points(context: dg.AssetExecutionContext, scada_spool: ScadaWindows, lake: Lake) -> dg.MaterializeResult:
    """Every SCADA point received (flow, pressure, level, temperature, power, status), with its quality
    and both timestamps; redelivered copies removed. One file per receive window, hourly partitions: a
    window run loads its window into its hour, an hour run every window of the hour still available."""
    from resources.scada_manifest import ManifestError

    manifests = run_windows(context, scada_spool, loaded=False)
    if not manifests:
        span = context.partition_time_window
        raise dg.Failure(
            description=f"scada: no published or archived window starts in {span.start:%Y-%m-%dT%H:%M}Z–"
            f"{span.end:%H:%M}Z in {scada_spool.root}; nothing to load (was the collector running?)"
        )
    from quality.qartod import FLAG_NAMES, flag_points

    limits = timeseries.load_limits()
    received_total = written_total = late = comm_fail = bad = fleet = 0
    frames = []
    for listed in manifests:
        try:
            manifest, received = scada_spool.read(listed.window)
        except (ManifestError, FileNotFoundError) as error:
            raise dg.Failure(description=f"scada: cannot load window {listed.window}: {error}") from error
        everything = _points_frame(received)
        # Truck fixes share the spool (a second MQTT topic family) but are the fleet assets' to land.
        measured = everything.filter(pl.col("source") != FLEET_SOURCE)
        fleet += everything.height - measured.height
        unique = measured.sort([*SCADA_POINTS.key, "received_ts"]).unique(subset=list(SCADA_POINTS.key), keep="first")
        # Each point carries its QARTOD verdict, so a chart or a mart can leave out what failed.
        unique = flag_points(unique, limits)
        written = lake.replace_window(SCADA_POINTS, manifest.start, unique)
        # Acknowledged only once the window is safely in the lake: acknowledged means loaded.
        scada_spool.acknowledge(manifest.window, by=f"dagster run {context.run.run_id}", points=written.rows)
        by_quality = dict(unique.group_by("quality").len().iter_rows())
        received_total += measured.height
        written_total += written.rows
        late += unique.filter(pl.col("source_ts") < manifest.start).height
        comm_fail += int(by_quality.get("COMM_FAIL", 0))
        bad += int(by_quality.get("BAD", 0))
        frames.append(unique)
    unique = pl.concat(frames)
    flags = {FLAG_NAMES[code]: int(n) for code, n in unique.group_by("qc_flag").len().iter_rows() if code is not None}
    return dg.MaterializeResult(
        metadata={
            "window": ", ".join(m.window for m in manifests),
            "window_length_s": manifests[-1].length_s,
            "points_received": received_total,
            "points_written": written_total,
            "duplicates_removed": received_total - written_total,
            "dagster/row_count": written_total,
            "units": unique["unit_id"].n_unique(),
            "sensors": unique.select("unit_id", "sensor_type").n_unique() if written_total else 0,
            "late_points": late,
            "comm_fail_points": comm_fail,
            "bad_points": bad,
            "qc_flags": flags,
            "qc_suspect_or_failed_pct": round(
                100 * (flags.get("suspect", 0) + flags.get("fail", 0)) / max(1, written_total), 3
            ),
            "fleet_points_left_to_fleet_assets": fleet,
            "window_end": manifests[-1].end.isoformat(),
            **_hour_status(context, scada_spool, manifests[-1].length_s),
        }
    )


def _hour_status(context: dg.AssetExecutionContext, windows: ScadaWindows, length_s: int) -> dict:
    """How complete the run's hour(s) are: windows loaded so far out of the windows it can hold."""
    if not context.has_partition_key_range and not context.has_partition_key:
        return {}
    span = context.partition_time_window
    loaded = len(windows.available(span.start, span.end, acknowledged_only=True))
    expected = int((span.end - span.start).total_seconds()) // length_s
    return {"hour_windows_loaded": loaded, "hour_windows_expected": expected, "hour_complete": loaded >= expected}


@dg.asset(name="point_aggregates", deps=[points], partitions_def=hourly, **_common(SCADA_AGGREGATES, {"parquet"}))
def point_aggregates(context: dg.AssetExecutionContext, scada_spool: ScadaWindows, lake: Lake) -> dg.MaterializeResult:
    """Per point and window of measurement time (the receive windows' length): min, max, mean, last, count
    and availability. Each window recomputes itself and the one before, so points that arrived a window
    late count."""
    manifests = run_windows(context, scada_spool, loaded=True)
    limits = timeseries.load_limits()
    own = {m.start: m.length_s for m in manifests}
    targets = {**{m.start - timedelta(seconds=m.length_s): m.length_s for m in manifests}, **own}
    written = aggregated = 0
    availability: list[float] = []
    for window, length_s in sorted(targets.items()):
        measured = points_between(lake, window, window + timedelta(seconds=length_s), length_s)
        latest = _aggregate(measured, limits, window, length_s)
        written += lake.replace_window(SCADA_AGGREGATES, window, latest).rows
        if window in own:
            aggregated += latest.height
            availability.extend(v for v in latest["availability_pct"].to_list() if v is not None)
    return dg.MaterializeResult(
        metadata={
            "window": ", ".join(m.window for m in manifests) or "none",
            "aggregates_written": written,
            "points_aggregated": aggregated,
            "mean_availability_pct": round(sum(availability) / len(availability), 1) if availability else 0.0,
        }
    )


@dg.asset(name="window_alerts", deps=[points], partitions_def=hourly, **_common(SCADA_WINDOW_ALERTS, {"parquet"}))
def window_alerts(
    context: dg.AssetExecutionContext, scada_spool: ScadaWindows, lake: Lake, notifier: Notifier
) -> dg.MaterializeResult:
    """Alerts about a whole window, sent to operators: a sensor stuck on one value, a sensor gone silent
    (while the collector was running), or a threshold breach that held for the whole window (the
    collector already alerts on single points). A re-run tells operators only what they were not told."""
    manifests = run_windows(context, scada_spool, loaded=True)
    limits = timeseries.load_limits()
    raised = notified = repeated = 0
    by_kind: dict[str, int] = {}
    for manifest in manifests:
        measured = points_between(lake, manifest.start, manifest.end, manifest.length_s)
        alerts = _window_alerts(measured, limits, manifest)
        # The window's alert file is what operators were already told: a re-run reads it before replacing it.
        told = lake.read_windows(SCADA_WINDOW_ALERTS, [manifest.start]).select(ALERT_IDENTITY)
        new = alerts.join(told, on=ALERT_IDENTITY, how="anti", nulls_equal=True)
        for alert in new.iter_rows(named=True):
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
        lake.replace_window(SCADA_WINDOW_ALERTS, manifest.start, alerts)
        raised += alerts.height
        notified += new.height
        repeated += alerts.height - new.height
        for kind, count in alerts.group_by("kind").len().iter_rows() if alerts.height else []:
            by_kind[kind] = by_kind.get(kind, 0) + int(count)
    return dg.MaterializeResult(
        metadata={
            "window": ", ".join(m.window for m in manifests) or "none",
            "alerts": raised,
            "notified": notified,
            "already_notified": repeated,
            **{f"{k}_alerts": v for k, v in by_kind.items()},
        }
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
        hours = time_windows(hourly, cursor, end)
        loaded = conform(
            rows, HISTORIAN_POINTS, source="historian", partition_key=label, window=(cursor, end), partitions=hours
        )
        written += lake.replace_partitions(HISTORIAN_POINTS, loaded.frame, hours).rows
        lake.replace_partitions(rejects_table(HISTORIAN_POINTS), loaded.rejects, hours)
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


def _window_alerts(measured: pl.DataFrame, limits, manifest) -> pl.DataFrame:
    start, end = manifest.start, manifest.end
    span_s = (end - start).total_seconds()
    flat = timeseries.flatlines(measured, limits).filter(pl.col("duration_s") >= 0.8 * span_s)
    silent = (
        device_gaps(measured, limits, manifest)
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
