"""The SCADA data contract: the tables the window job writes and the checks a window's points must pass."""

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl

from quality import timeseries
from resources.lake import Column, Lake, LakeTable

UTC_TIME = pl.Datetime("us", "UTC")
WINDOW_TAG = "scada/window"

SCADA_POINTS_KEY = dg.AssetKey(["scada", "points"])

_POINT_COLUMNS = (
    Column("source", pl.String(), "Protocol the point came in by: modbus, opcua, mqtt or historian.", nullable=False),
    Column("device", pl.String(), "Configured device, endpoint or broker the point was read from.", nullable=False),
    Column("unit_id", pl.String(), "Plant unit (pump station, machine) the sensor belongs to.", nullable=False),
    Column("sensor_type", pl.String(), "What is measured: flow, pressure, level, temperature, power …", nullable=False),
)

SCADA_POINTS = LakeTable(
    layer="raw",
    name="scada_points",
    description="Every SCADA point the collector received, one file per 5-minute receive window, duplicates removed.",
    columns=(
        *_POINT_COLUMNS,
        Column("value", pl.Float64(), "Value in the unit below; empty when the read failed (COMM_FAIL)."),
        Column("unit", pl.String(), "Engineering unit of the value (°C, bar, L/min, m³/h, kW, m)."),
        Column(
            "quality", pl.String(), "GOOD, UNCERTAIN, BAD or COMM_FAIL, as the source or the link said.", nullable=False
        ),
        Column("source_ts", UTC_TIME, "When the device measured the value, UTC.", nullable=False),
        Column("received_ts", UTC_TIME, "When the collector received it, UTC.", nullable=False),
    ),
    key=("source", "unit_id", "sensor_type", "source_ts"),
    time_column="source_ts",
)

SCADA_AGGREGATES = LakeTable(
    layer="staging",
    name="scada_point_aggregates",
    description="Per point and 5-minute window (by measurement time): min, max, mean, last, count, availability.",
    columns=(
        Column(
            "window_start",
            UTC_TIME,
            "Start of the 5-minute window, UTC (by the values' own timestamps).",
            nullable=False,
        ),
        *_POINT_COLUMNS,
        Column("unit", pl.String(), "Engineering unit."),
        Column(
            "min", pl.Float64(), "Lowest usable value (GOOD or UNCERTAIN, within the physical range, not a lone spike)."
        ),
        Column("max", pl.Float64(), "Highest usable value."),
        Column("mean", pl.Float64(), "Mean of usable values."),
        Column("last", pl.Float64(), "Last usable value in the window."),
        Column("count", pl.Int64(), "Points received in the window, any quality."),
        Column(
            "usable_count", pl.Int64(), "Points that were GOOD or UNCERTAIN, physically plausible and not lone spikes."
        ),
        Column(
            "availability_pct",
            pl.Float64(),
            "Usable points as a share of the samples a periodic sensor should send, %; "
            "empty for report-by-exception sources (OPC UA).",
        ),
    ),
    key=("window_start", "source", "unit_id", "sensor_type", "device"),
    time_column="window_start",
)

SCADA_WINDOW_ALERTS = LakeTable(
    layer="marts",
    name="scada_window_alerts",
    description="Window-level alerts raised to operators: flatlines, gaps and breaches held for a whole window.",
    columns=(
        Column("window_start", UTC_TIME, "Receive window the alert was raised for, UTC.", nullable=False),
        *_POINT_COLUMNS,
        Column("kind", pl.String(), "flatline, gap or breach_held.", nullable=False),
        Column("severity", pl.String(), "warning or critical.", nullable=False),
        Column("message", pl.String(), "What the operator was told.", nullable=False),
    ),
    key=("window_start", "kind", "source", "unit_id", "sensor_type", "device"),
    time_column="window_start",
)

HISTORIAN_POINTS_KEY = dg.AssetKey(["scada", "historian_points"])

HISTORIAN_POINTS = LakeTable(
    layer="raw",
    name="scada_historian_points",
    description="The SCADA historian's one-minute samples, for backfilling past windows and repairing gaps.",
    columns=(
        Column("unit_id", pl.String(), "Plant unit the sensor belongs to.", nullable=False),
        Column("sensor_type", pl.String(), "What is measured: flow, pressure, temperature, power …", nullable=False),
        Column("unit", pl.String(), "Engineering unit of the value."),
        Column("timestamp", UTC_TIME, "When the historian recorded the sample, UTC.", nullable=False),
        Column("value", pl.Float64(), "Recorded value; empty when the historian has none."),
        Column("quality", pl.String(), "GOOD, UNCERTAIN or BAD as the historian recorded it.", nullable=False),
    ),
    key=("unit_id", "sensor_type", "timestamp"),
    time_column="timestamp",
)

TABLES = (SCADA_POINTS, SCADA_AGGREGATES, SCADA_WINDOW_ALERTS, HISTORIAN_POINTS)


def historian_as_points(frame: pl.DataFrame) -> pl.DataFrame:
    """Historian rows in the shape of collector points, so the same time-series rules apply."""
    return frame.select(
        source=pl.lit("historian"),
        device=pl.lit("historian"),
        unit_id="unit_id",
        sensor_type="sensor_type",
        value="value",
        unit="unit",
        quality="quality",
        source_ts="timestamp",
        received_ts="timestamp",
    )


def historian_checks(partitions_def) -> dg.AssetChecksDefinition:
    """The same time-series rules as the live windows, over the historian partitions a run loaded."""
    from quality.gx import checked_window

    names = ["gross_range", "spikes", "rate_of_change", "flatline", "gaps"]
    specs = [
        dg.AssetCheckSpec(
            n,
            asset=HISTORIAN_POINTS_KEY,
            description=f"Historian samples pass the {n} rule.",
            partitions_def=partitions_def,
        )
        for n in names
    ]

    @dg.multi_asset_check(specs=specs, name="scada_historian_checks")
    def _checks(context: dg.AssetCheckExecutionContext, lake: Lake) -> Iterator[dg.AssetCheckResult]:
        window = checked_window(context)
        assert window is not None
        start, end = window
        frame = historian_as_points(lake.read(HISTORIAN_POINTS, start, end))
        limits = timeseries.load_limits()
        # The historian samples once a minute, whatever the live sampling interval is.
        limits = {k: replace(v, sample_interval_s=60.0, flatline_s=max(v.flatline_s, 600.0)) for k, v in limits.items()}
        span = {"window": f"{start:%Y-%m-%dT%H:%M}Z–{end:%Y-%m-%dT%H:%M}Z"}
        yield _result("gross_range", timeseries.out_of_gross_range(frame, limits), span, key=HISTORIAN_POINTS_KEY)
        yield _result("spikes", timeseries.spikes(frame, limits), span, key=HISTORIAN_POINTS_KEY)
        yield _result("rate_of_change", timeseries.rate_of_change(frame, limits), span, key=HISTORIAN_POINTS_KEY)
        yield _result("flatline", timeseries.flatlines(frame, limits), span, key=HISTORIAN_POINTS_KEY)
        yield _result(
            "gaps", timeseries.gaps(frame, limits, start, min(end, datetime.now(UTC))), span, key=HISTORIAN_POINTS_KEY
        )

    return _checks


def window_of(context: dg.AssetCheckExecutionContext | dg.AssetExecutionContext) -> str:
    """The receive window a run processes, from its ``scada/window`` tag (the sensor sets it)."""
    window = context.run.tags.get(WINDOW_TAG)
    if not window:
        raise dg.Failure(
            description=f"scada: run {context.run.run_id[:8]} has no '{WINDOW_TAG}' tag; launch it with the tag "
            "set to a sealed spool window such as 20260301T1205Z (the scada_window_sensor does)."
        )
    return window


def points_between(lake: Lake, start: datetime, end: datetime, window_s: int) -> pl.DataFrame:
    """Points measured in [start, end), duplicates across windows removed.

    Only the receive windows that can hold them are read: those of [start, end) and the one after, for
    points that arrived a window late (the same grace the aggregates give).
    """
    step = timedelta(seconds=window_s)
    first = datetime.fromtimestamp(start.timestamp() // window_s * window_s, start.tzinfo)
    receive_windows = []
    while first < end + step:
        receive_windows.append(first)
        first += step
    frame = lake.read_windows(SCADA_POINTS, receive_windows)
    frame = frame.filter((pl.col("source_ts") >= start) & (pl.col("source_ts") < end))
    return frame.sort([*SCADA_POINTS.key, "received_ts"]).unique(subset=list(SCADA_POINTS.key), keep="first")


def scada_point_checks(window_start, window_s: int = 300) -> dg.AssetChecksDefinition:
    """The time-series checks on one receive window's points (UNE 500540 / QARTOD levels).

    ``window_start`` turns a window name into its start time (``collector.spool.window_start``).
    """
    specs = [
        dg.AssetCheckSpec(
            "no_duplicates",
            asset=SCADA_POINTS_KEY,
            blocking=True,
            description="No two points share (source, unit, sensor, timestamp) after redelivered copies are removed.",
        ),
        dg.AssetCheckSpec(
            "gross_range", asset=SCADA_POINTS_KEY, description="Values inside the physical range of their sensor type."
        ),
        dg.AssetCheckSpec(
            "spikes", asset=SCADA_POINTS_KEY, description="No lone value jumping away from both neighbours."
        ),
        dg.AssetCheckSpec(
            "rate_of_change", asset=SCADA_POINTS_KEY, description="No change faster than the process can move."
        ),
        dg.AssetCheckSpec(
            "flatline", asset=SCADA_POINTS_KEY, description="No sensor stuck on one value longer than its noise allows."
        ),
        dg.AssetCheckSpec(
            "gaps", asset=SCADA_POINTS_KEY, description="No sensor silent for more than three sample intervals."
        ),
        dg.AssetCheckSpec(
            "future_timestamps", asset=SCADA_POINTS_KEY, description="No point stamped after it was received."
        ),
    ]

    @dg.multi_asset_check(specs=specs, name="scada_points_window_checks")
    def _checks(context: dg.AssetCheckExecutionContext, lake: Lake) -> Iterator[dg.AssetCheckResult]:
        name = window_of(context)
        start = window_start(name)
        end = start + timedelta(seconds=window_s)
        received = pl.read_parquet(lake.window_path(SCADA_POINTS, start))
        measured = points_between(lake, start, end, window_s)
        limits = timeseries.load_limits()
        window = {"window": name}
        yield _result("no_duplicates", timeseries.duplicated(received), window, dg.AssetCheckSeverity.ERROR)
        yield _result("gross_range", timeseries.out_of_gross_range(received, limits), window)
        yield _result("spikes", timeseries.spikes(measured, limits), window)
        yield _result("rate_of_change", timeseries.rate_of_change(measured, limits), window)
        yield _result("flatline", timeseries.flatlines(measured, limits), window)
        yield _result("gaps", timeseries.gaps(measured, limits, start, end), window)
        yield _result("future_timestamps", timeseries.future_timestamps(received), window)

    return _checks


def _result(
    name: str,
    offending: pl.DataFrame,
    metadata: dict,
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.WARN,
    key: dg.AssetKey = SCADA_POINTS_KEY,
) -> dg.AssetCheckResult:
    points = sorted({f"{u}/{s}" for u, s in offending.select("unit_id", "sensor_type").iter_rows()})
    return dg.AssetCheckResult(
        asset_key=key,
        check_name=name,
        passed=offending.height == 0,
        severity=severity,
        metadata={**metadata, "offending_rows": offending.height, "points": ", ".join(points[:20]) or "none"},
    )
