"""Time-series rules for SCADA points (UNE 500540 / QARTOD levels), as whole-frame polars expressions.

Each rule takes the points of a window (columns of ``quality/scada.py``'s ``SCADA_POINTS``) and the
per-sensor-type limits, and returns the offending rows or runs. The same functions serve the window
job's asset checks and its window-level alerts, so what an operator is told and what the check reports
never disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from resources.sensor_limits import load_sensor_limits

POINT = ["source", "device", "unit_id", "sensor_type"]


@dataclass(frozen=True)
class SensorLimits:
    """What is physically plausible for one sensor type, and how often it should report."""

    sensor_type: str
    gross_min: float
    gross_max: float
    max_step: float
    max_rate_per_s: float
    flatline_s: float
    flatline_tolerance: float
    sample_interval_s: float
    alert_above: float | None = None
    alert_below: float | None = None
    # The alarm limits hold for these engineering units only (a pump station's m³/h flow is not judged
    # by a gateway's L/min limits); empty: any unit.
    alert_units: tuple[str, ...] = ()


def periodic_sources(path: Path | None = None) -> list[str]:
    """Sources that report on a fixed interval; report-by-exception sources (OPC UA subscriptions) are
    silent while a value holds still, so silence there is not a gap and availability has no meaning."""
    return list(load_sensor_limits(path).periodic_sources)


def load_limits(path: Path | None = None) -> dict[str, SensorLimits]:
    """Limits per sensor type from the sensor limits file the collector reads too (``IHUB_SENSOR_LIMITS``,
    else ``resources/sensor_limits.yaml``); ``ConfigError`` names the file, the line and the field.

    A window-level alert is judged by the most severe alarm limit on each side (``SensorType.window_limit``).
    """
    limits = {}
    for sensor_type, entry in load_sensor_limits(path).sensor_types.items():
        limits[sensor_type] = SensorLimits(
            sensor_type=sensor_type,
            gross_min=entry.gross_min,
            gross_max=entry.gross_max,
            max_step=entry.max_step,
            max_rate_per_s=entry.max_rate_per_s,
            flatline_s=entry.flatline_s,
            flatline_tolerance=entry.flatline_tolerance,
            sample_interval_s=entry.sample_interval_s,
            alert_above=entry.window_limit("above"),
            alert_below=entry.window_limit("below"),
            alert_units=entry.alarm_units,
        )
    return limits


def _limits_frame(limits: dict[str, SensorLimits]) -> pl.DataFrame:
    return pl.DataFrame(
        [{k: v for k, v in vars(limit).items() if k != "alert_units"} for limit in limits.values()],
        schema={
            "sensor_type": pl.String,
            "gross_min": pl.Float64,
            "gross_max": pl.Float64,
            "max_step": pl.Float64,
            "max_rate_per_s": pl.Float64,
            "flatline_s": pl.Float64,
            "flatline_tolerance": pl.Float64,
            "sample_interval_s": pl.Float64,
            "alert_above": pl.Float64,
            "alert_below": pl.Float64,
        },
    )


def _usable(points: pl.DataFrame, limits: dict[str, SensorLimits]) -> pl.DataFrame:
    """Good or uncertain numeric points of known sensor types, in time order per point, with limits."""
    return (
        points.filter(pl.col("quality").is_in(["GOOD", "UNCERTAIN"]) & pl.col("value").is_not_null())
        .join(_limits_frame(limits), on="sensor_type", how="inner")
        .sort([*POINT, "source_ts"])
    )


def out_of_gross_range(points: pl.DataFrame, limits: dict[str, SensorLimits]) -> pl.DataFrame:
    """Values outside the physically possible range of their sensor type."""
    usable = _usable(points, limits)
    return usable.filter((pl.col("value") < pl.col("gross_min")) | (pl.col("value") > pl.col("gross_max")))


def _with_neighbours(points: pl.DataFrame, limits: dict[str, SensorLimits]) -> pl.DataFrame:
    usable = _usable(points, limits)
    return usable.with_columns(
        previous=pl.col("value").shift(1).over(POINT),
        following=pl.col("value").shift(-1).over(POINT),
        seconds=(pl.col("source_ts") - pl.col("source_ts").shift(1).over(POINT)).dt.total_microseconds() / 1e6,
    )


def spikes(points: pl.DataFrame, limits: dict[str, SensorLimits]) -> pl.DataFrame:
    """A lone value that jumps away from both neighbours by more than the sensor's plausible step."""
    frame = _with_neighbours(points, limits)
    up = (pl.col("value") - pl.col("previous")).abs() > pl.col("max_step")
    back = (pl.col("value") - pl.col("following")).abs() > pl.col("max_step")
    return frame.filter(up & back)


def rate_of_change(points: pl.DataFrame, limits: dict[str, SensorLimits]) -> pl.DataFrame:
    """Consecutive values changing faster per second than the process can move."""
    frame = _with_neighbours(points, limits)
    rate = (pl.col("value") - pl.col("previous")).abs() / pl.col("seconds")
    return frame.filter((pl.col("seconds") > 0) & (rate > pl.col("max_rate_per_s"))).with_columns(rate_per_s=rate)


def flatlines(points: pl.DataFrame, limits: dict[str, SensorLimits]) -> pl.DataFrame:
    """Runs of the same value (within tolerance) lasting longer than the sensor's noise allows.

    One row per run: the point, first and last timestamp, duration and the stuck value.
    """
    frame = _with_neighbours(points, limits)
    changed = (pl.col("value") - pl.col("previous")).abs() > pl.col("flatline_tolerance")
    runs = frame.with_columns(run=(changed | pl.col("previous").is_null()).cum_sum().over(POINT))
    grouped = runs.group_by([*POINT, "run"]).agg(
        first=pl.col("source_ts").min(),
        last=pl.col("source_ts").max(),
        value=pl.col("value").first(),
        samples=pl.len(),
        flatline_s=pl.col("flatline_s").first(),
    )
    duration = (pl.col("last") - pl.col("first")).dt.total_microseconds() / 1e6
    return (
        grouped.with_columns(duration_s=duration)
        .filter((pl.col("duration_s") >= pl.col("flatline_s")) & (pl.col("samples") >= 3))
        .drop("run")
        .sort(POINT)
    )


def gaps(
    points: pl.DataFrame,
    limits: dict[str, SensorLimits],
    start: datetime,
    end: datetime,
    sources: list[str] | None = None,
) -> pl.DataFrame:
    """Silences longer than three sample intervals per point of a periodic source, up to the window's end.

    The window's start is not an edge: a point silent since before the window was already reported by
    the previous window's run (and a collector that just started has no silence to report).
    """
    periodic = sources if sources is not None else periodic_sources()
    usable = (
        points.filter(pl.col("source").is_in(periodic))
        .join(_limits_frame(limits), on="sensor_type", how="inner")
        .sort([*POINT, "source_ts"])
    )
    if usable.height == 0:
        return pl.DataFrame(schema={**{c: pl.String for c in POINT}, "gap_start": pl.Datetime("us", "UTC")})
    edges = usable.group_by(POINT).agg(pl.col("sample_interval_s").first())
    bounds = edges.with_columns(source_ts=pl.lit(end).cast(pl.Datetime("us", "UTC")))
    columns = [*POINT, "source_ts", "sample_interval_s"]
    timeline = pl.concat([usable.select(columns), bounds.select(columns)]).sort([*POINT, "source_ts"])
    with_gap = timeline.with_columns(
        gap_start=pl.col("source_ts").shift(1).over(POINT),
        gap_s=(pl.col("source_ts") - pl.col("source_ts").shift(1).over(POINT)).dt.total_microseconds() / 1e6,
    )
    return (
        with_gap.filter(pl.col("gap_s") > 3 * pl.col("sample_interval_s"))
        .select([*POINT, "gap_start", pl.col("source_ts").alias("gap_end"), "gap_s"])
        .sort([*POINT, "gap_start"])
    )


def duplicated(points: pl.DataFrame) -> pl.DataFrame:
    """Rows sharing (source, unit, sensor, timestamp) with another row: redelivered copies."""
    key = ["source", "unit_id", "sensor_type", "source_ts"]
    return points.filter(pl.struct(key).is_duplicated())


def future_timestamps(points: pl.DataFrame, tolerance: timedelta = timedelta(seconds=5)) -> pl.DataFrame:
    """Points stamped later than they were received: the device's clock runs ahead."""
    return points.filter(pl.col("source_ts") > pl.col("received_ts") + tolerance)


def breaches_held(
    points: pl.DataFrame, limits: dict[str, SensorLimits], start: datetime, end: datetime, coverage: float = 0.8
) -> pl.DataFrame:
    """Points whose every usable value in the window is beyond the alert threshold, and that reported
    for most of the window: a breach that lasted, not a blip."""
    usable = _usable(points, limits).filter(pl.col("alert_above").is_not_null() | pl.col("alert_below").is_not_null())
    for limit in limits.values():
        if limit.alert_units:
            usable = usable.filter(
                (pl.col("sensor_type") != limit.sensor_type) | pl.col("unit").is_in(list(limit.alert_units))
            )
    beyond = (pl.col("alert_above").is_not_null() & (pl.col("value") > pl.col("alert_above"))) | (
        pl.col("alert_below").is_not_null() & (pl.col("value") < pl.col("alert_below"))
    )
    span = (end - start).total_seconds()
    grouped = usable.group_by(POINT).agg(
        all_beyond=beyond.all(),
        first=pl.col("source_ts").min(),
        last=pl.col("source_ts").max(),
        mean=pl.col("value").mean(),
        alert_above=pl.col("alert_above").first(),
        alert_below=pl.col("alert_below").first(),
    )
    covered = (pl.col("last") - pl.col("first")).dt.total_microseconds() / 1e6 >= coverage * span - 1e-9
    return grouped.filter(pl.col("all_beyond") & covered).drop("all_beyond").sort(POINT)
