"""The checks a SCADA window's points (and the historian's samples) must pass; tables in ``contracts/scada.py``."""

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import dagster as dg
import polars as pl

from contracts.scada import HISTORIAN_POINTS, HISTORIAN_POINTS_KEY, SCADA_POINTS, SCADA_POINTS_KEY, UTC_TIME
from quality import consistency, timeseries
from resources.lake import Lake
from resources.scada_spool import ScadaWindows

if TYPE_CHECKING:
    from resources.scada_manifest import WindowManifest

WINDOW_TAG = "scada/window"


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


def historian_checks(partitions_def: dg.TimeWindowPartitionsDefinition) -> dg.AssetChecksDefinition:
    """The same time-series rules as the live windows, over exactly the historian partitions the run loaded.

    The checks are partitioned like the asset, so Dagster hands them the run's partition (or range)
    and the UI shows a result per hour; nothing is guessed from run tags.
    """
    names = ["gross_range", "spikes", "rate_of_change", "flatline", "gaps"]
    specs = [
        dg.AssetCheckSpec(
            n,
            asset=HISTORIAN_POINTS_KEY,
            partitions_def=partitions_def,
            description=f"Historian samples pass the {n} rule.",
        )
        for n in names
    ]

    @dg.multi_asset_check(specs=specs, name="scada_historian_checks")
    def _checks(context: dg.AssetCheckExecutionContext, lake: Lake) -> Iterator[dg.AssetCheckResult]:
        window = context.partition_time_window
        start, end = window.start, window.end
        frame = historian_as_points(lake.read(HISTORIAN_POINTS, start, end))
        limits = timeseries.load_limits()
        # The historian samples once a minute, whatever the live sampling interval is.
        limits = {k: replace(v, sample_interval_s=60.0, flatline_s=max(v.flatline_s, 600.0)) for k, v in limits.items()}
        span = {"window": f"{start:%Y-%m-%dT%H:%M}Z–{end:%Y-%m-%dT%H:%M}Z", "rows_judged": frame.height}
        yield _result("gross_range", timeseries.out_of_gross_range(frame, limits), span, key=HISTORIAN_POINTS_KEY)
        yield _result("spikes", timeseries.spikes(frame, limits), span, key=HISTORIAN_POINTS_KEY)
        yield _result("rate_of_change", timeseries.rate_of_change(frame, limits), span, key=HISTORIAN_POINTS_KEY)
        yield _result("flatline", timeseries.flatlines(frame, limits), span, key=HISTORIAN_POINTS_KEY)
        yield _result(
            "gaps", timeseries.gaps(frame, limits, start, min(end, datetime.now(UTC))), span, key=HISTORIAN_POINTS_KEY
        )

    return _checks


def run_windows(
    context: dg.AssetCheckExecutionContext | dg.AssetExecutionContext, windows: ScadaWindows, loaded: bool
) -> list["WindowManifest"]:
    """The receive windows a SCADA window run processes, each with its manifest (and so its length).

    A run the ``scada_window_sensor`` launched names its one window in the ``scada/window`` tag, inside
    its hourly partition. A run launched for an hour without the tag (from the UI, a backfill) takes
    every window of that hour still available: sealed or archived when it loads them (``loaded``
    False, the ``points`` step), and only those a run has loaded into the lake (acknowledged) for the
    steps and checks that read the lake afterwards, so they never judge a window the load did not write.
    """
    tag = context.run.tags.get(WINDOW_TAG)
    partitioned = context.has_partition_key or context.has_partition_key_range
    if not tag and not partitioned:
        raise dg.Failure(
            description=f"scada: run {context.run.run_id[:8]} has neither a '{WINDOW_TAG}' tag nor an hourly "
            "partition; launch it for an hour (every window of it) or with the tag set to one published window "
            "such as 20260301T1205Z (the scada_window_sensor does both)."
        )
    from resources.scada_manifest import ManifestError

    if tag:
        try:
            manifest = windows.manifest(tag)
        except (FileNotFoundError, ManifestError, ValueError) as error:
            raise dg.Failure(description=f"scada: window {tag} (tag {WINDOW_TAG}): {error}") from error
        if partitioned:
            span = context.partition_time_window
            if not span.start <= manifest.start < span.end:
                raise dg.Failure(
                    description=f"scada: window {tag} does not start in partition {_label(context)} "
                    f"({span.start:%Y-%m-%dT%H:%M}Z–{span.end:%H:%M}Z); the partition is the window's hour"
                )
        return [manifest]
    span = context.partition_time_window
    return windows.available(span.start, span.end, acknowledged_only=loaded)


def _label(context: dg.AssetCheckExecutionContext | dg.AssetExecutionContext) -> str:
    keys = context.partition_key_range
    return keys.start if keys.start == keys.end else f"{keys.start}…{keys.end}"


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


def device_gaps(measured: pl.DataFrame, limits: dict, manifest: "WindowManifest") -> pl.DataFrame:
    """Silences of the window's devices, left out where the collector itself was not running.

    The one gap rule of a window: its check and its alerts both call this, so they cannot disagree.
    """
    found = [
        timeseries.gaps(measured.filter((pl.col("source_ts") >= a) & (pl.col("source_ts") < b)), limits, a, b)
        for a, b in manifest.listening()
    ]
    found = [frame for frame in found if frame.height]
    if not found:
        return pl.DataFrame(
            schema={
                **dict.fromkeys(timeseries.POINT, pl.String),
                "gap_start": UTC_TIME,
                "gap_end": UTC_TIME,
                "gap_s": pl.Float64,
            }
        )
    return pl.concat(found)


def scada_point_checks(partitions_def: dg.TimeWindowPartitionsDefinition) -> dg.AssetChecksDefinition:
    """The time-series checks on the receive windows a run loaded (UNE 500540 / QARTOD levels).

    Partitioned like ``scada/points`` (hourly): a window run's result lands on its hour, an hour run's
    on the same hour. Each window is judged with its own length, from its manifest.
    """

    def spec(name: str, description: str, blocking: bool = False) -> dg.AssetCheckSpec:
        return dg.AssetCheckSpec(
            name, asset=SCADA_POINTS_KEY, partitions_def=partitions_def, blocking=blocking, description=description
        )

    specs = [
        spec(
            "no_duplicates",
            "No two points share (source, unit, sensor, timestamp) after redelivered copies are removed.",
            blocking=True,
        ),
        spec("gross_range", "Values inside the physical range of their sensor type."),
        spec("spikes", "No lone value jumping away from both neighbours."),
        spec("rate_of_change", "No change faster than the process can move."),
        spec("flatline", "No sensor stuck on one value longer than its noise allows."),
        spec("gaps", "No sensor silent for more than three sample intervals while the collector was running."),
        spec("future_timestamps", "No point stamped after it was received."),
        spec(
            "pump_status_agrees_with_power",
            "No pump reported stopped while its motor draws power (a stuck status contact or a miswired meter).",
        ),
        spec(
            "valve_status_agrees_with_flow",
            "No valve reported closed while the flow meter behind it measures flow.",
        ),
        spec(
            "station_water_balance",
            "Each pumping station's inflow minus outflow matches what its tanks gained over the window (within "
            "10 % or 2 m³; stations and meters from optimization/stations.yaml).",
        ),
    ]

    @dg.multi_asset_check(specs=specs, name="scada_points_window_checks")
    def _checks(
        context: dg.AssetCheckExecutionContext, lake: Lake, scada_spool: ScadaWindows
    ) -> Iterator[dg.AssetCheckResult]:
        manifests = run_windows(context, scada_spool, loaded=True)
        limits = timeseries.load_limits()
        stations = consistency.balances_of_stations()
        balances: list[dict] = []
        found: dict[str, list[pl.DataFrame]] = {spec.name: [] for spec in specs}
        judged = 0
        for manifest in manifests:
            received = lake.read_windows(SCADA_POINTS, [manifest.start])
            measured = points_between(lake, manifest.start, manifest.end, manifest.length_s)
            judged += received.height
            found["no_duplicates"].append(timeseries.duplicated(received))
            found["gross_range"].append(timeseries.out_of_gross_range(received, limits))
            found["spikes"].append(timeseries.spikes(measured, limits))
            found["rate_of_change"].append(timeseries.rate_of_change(measured, limits))
            found["flatline"].append(timeseries.flatlines(measured, limits))
            found["gaps"].append(device_gaps(measured, limits, manifest))
            found["future_timestamps"].append(timeseries.future_timestamps(received))
            found["pump_status_agrees_with_power"].append(consistency.pumps_off_drawing_power(measured))
            found["valve_status_agrees_with_flow"].append(consistency.closed_valves_passing_flow(measured))
            judged_balances = [consistency.station_balance(measured, s, manifest.start, manifest.end) for s in stations]
            balances.extend(b for b in judged_balances if b["balanced"] is not None)
            found["station_water_balance"].append(
                pl.DataFrame(
                    {
                        "unit_id": [b["station"] for b in judged_balances if b["balanced"] is False],
                        "sensor_type": ["water_balance"] * sum(b["balanced"] is False for b in judged_balances),
                    },
                    schema={"unit_id": pl.String, "sensor_type": pl.String},
                )
            )
        metadata = {
            "windows": ", ".join(m.window for m in manifests) or "none",
            "window_count": len(manifests),
            "window_length_s": ", ".join(sorted({str(m.length_s) for m in manifests})) or "none",
            "points_judged": judged,
            "station_balances_judged": len(balances),
            "largest_balance_residual_m3": round(max((abs(b["residual_m3"]) for b in balances), default=0.0), 3),
        }
        for spec in specs:
            frames = [f.select("unit_id", "sensor_type") for f in found[spec.name]]
            empty = pl.DataFrame(schema={"unit_id": pl.String, "sensor_type": pl.String})
            offending = pl.concat(frames) if frames else empty
            severity = dg.AssetCheckSeverity.ERROR if spec.blocking else dg.AssetCheckSeverity.WARN
            yield _result(spec.name, offending, metadata, severity)

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
