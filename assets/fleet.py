"""Fleet: the trucks' telemetry landed from the collector's spool, one UTC day a partition, and the trips
derived from it.

Trucks publish a GPS fix with speed, load and fuel on ``fleet/{truck_id}/telemetry``; the SCADA collector
takes them through the same durable spool as the SCADA points (``collector/mqtt.py``, ``fleet:``), so a
fix is acknowledged to the broker only once it is on disk. ``positions`` reads the receive windows that
can hold a day's fixes (the day, and ``late_hours`` after it for units that buffer through a coverage
gap), keeps one row per truck and fix time, and rejects, with the reason, resent copies, coordinates off
the globe and GPS jumps (a fix implying more than ``teleport_speed_kmh`` from the previous good one).
``trips`` finds the deliveries in the positions: a loaded departure from one plant's geofence followed by
an unloaded stop in another plant's geofence, filed under the day the truck arrived.
"""

import json
import statistics
from datetime import datetime, timedelta

import dagster as dg
import polars as pl

from assets import source_assets as common
from assets.partitions import daily
from contracts.fleet import POSITIONS, TRIPS
from quality.conform import conform, rejects_table
from quality.fleet import haversine_km, teleports
from resources.fleet import FleetSettings, read_fixes
from resources.lake import Lake, LakeTable, time_windows
from resources.scada_spool import ScadaWindows
from resources.yaml_files import ConfigError

SOURCE = "fleet"
# Trips longer than this are not looked for across days: the positions read for a day start this early.
LONGEST_TRIP = timedelta(days=1)
# Out of a plant's geofence and back in within this, with no other plant between: the road skirts the
# fence (one visit), not a truck that turned back (a departure that came back, refused).
SKIRTING = timedelta(minutes=20)


def _common(table: LakeTable) -> dict:
    # Daily partitions, run once the late fixes of the day are in: late by a day and a half.
    return common.source_asset(SOURCE, table, owner="team:logistics", fresh_within=timedelta(hours=36))


@dg.asset(
    name="positions",
    kinds={"mqtt", "parquet"},
    partitions_def=daily,
    backfill_policy=dg.BackfillPolicy.single_run(),
    **_common(POSITIONS),
)
def positions(
    context: dg.AssetExecutionContext, scada_spool: ScadaWindows, fleet: FleetSettings, lake: Lake
) -> dg.MaterializeResult:
    """Every GPS fix of every truck on the UTC day, with speed (km/h), load (t) and fuel (%), one row per
    truck and fix time, as the trucks' telematics units reported them through the collector. Resent copies,
    coordinates off the globe and GPS jumps (teleports) are in rejects.fleet_positions with the reason."""
    from resources.scada_manifest import ManifestError

    window = context.partition_time_window
    label = common.partition_label(context)
    days = time_windows(daily, window.start, window.end)
    late = timedelta(hours=fleet.late_hours)
    try:
        fixes = read_fixes(scada_spool, window.start, window.end, late)
    except (ManifestError, FileNotFoundError) as error:
        raise dg.Failure(description=f"fleet: cannot read the collector's windows for {label}: {error}") from error
    if not fixes.windows:
        raise dg.Failure(
            description=f"fleet: no window received between {window.start:%Y-%m-%dT%H:%M}Z and "
            f"{window.end + late:%Y-%m-%dT%H:%M}Z is published or archived in {scada_spool.root}; nothing to load "
            f"for partition {label} (was the collector running, with fleet: on its MQTT broker?)"
        )
    start_us, end_us = int(window.start.timestamp() * 1e6), int(window.end.timestamp() * 1e6)
    # A window also holds fixes of other days (late ones, or early ones from a skewed clock): each day takes its own.
    day_rows = sorted(
        (row for row in fixes.rows if start_us <= row["_ts_us"] < end_us),
        key=lambda row: (row["truck_id"], row["_ts_us"], row["received_at"]),
    )
    rows = [{k: v for k, v in row.items() if k != "_ts_us"} for row in day_rows]
    loaded = conform(rows, POSITIONS, source=SOURCE, partition_key=label, partitions=days)
    frame = loaded.frame
    off_globe = frame.filter(~pl.col("lat").is_between(-90, 90) | ~pl.col("lon").is_between(-180, 180))
    # Each truck's first fix of the day is judged against its last good fix of the day before, when landed.
    anchors = (
        lake.read(POSITIONS, window.start - LONGEST_TRIP, window.start)
        .sort("ts")
        .group_by("truck_id", maintain_order=True)
        .last()
        .select("truck_id", "ts", "lat", "lon")
    )
    judged = frame.join(off_globe, on=list(POSITIONS.key), how="anti").select("truck_id", "ts", "lat", "lon")
    jumps = teleports(pl.concat([anchors, judged]), fleet.teleport_speed_kmh)
    position_of = {(row["truck_id"], row["_ts_us"]): n for n, row in reversed(list(enumerate(day_rows)))}
    extra = _rejects(
        [
            *(
                (row, "lat" if not -90 <= row["lat"] <= 90 else "lon", _off_globe(row["lat"], row["lon"]))
                for row in off_globe.iter_rows(named=True)
            ),
            *((row, "lat,lon", row["reason"]) for row in jumps.iter_rows(named=True)),
        ],
        POSITIONS,
        label,
        rows,
        position_of,
    )
    good = frame.join(off_globe, on=list(POSITIONS.key), how="anti").join(jumps, on=list(POSITIONS.key), how="anti")
    rejects = pl.concat([loaded.rejects, extra])
    written = lake.replace_partitions(POSITIONS, good, days)
    lake.replace_partitions(rejects_table(POSITIONS), rejects, days)
    duplicates = int((loaded.rejects["field"] == ",".join(POSITIONS.key)).sum())
    if jumps.height:
        first = jumps.row(0, named=True)
        context.log.warning(f"fleet: {jumps.height} GPS jump(s) rejected, e.g. {first['truck_id']}: {first['reason']}")
    return dg.MaterializeResult(
        metadata={
            "rows_received": loaded.received,
            "rows_written": written.rows,
            "rows_rejected": rejects.height,
            "dagster/row_count": written.rows,
            "duplicates_rejected": duplicates,
            "teleports_rejected": jumps.height,
            "off_globe_rejected": off_globe.height,
            "trucks": good["truck_id"].n_unique(),
            "windows_read": len(fixes.windows),
            "fleet_points_read": fixes.points,
            "first_fix": good["ts"].min().isoformat() if good.height else "none",
            "last_fix": good["ts"].max().isoformat() if good.height else "none",
            "preview": common.preview(good),
        }
    )


@dg.asset(
    name="trips",
    kinds={"polars", "parquet"},
    partitions_def=daily,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[positions],
    **_common(TRIPS),
)
def trips(context: dg.AssetExecutionContext, fleet: FleetSettings, lake: Lake) -> dg.MaterializeResult:
    """Deliveries that arrived on the UTC day: a truck leaving a plant's geofence loaded and unloading in
    another plant's geofence (origin, destination, departure and arrival UTC, tonnes, km along the GPS
    track). Geofences around the ERP's plants (raw.erp_plants) once they are in the lake, else around the
    coordinates of resources/fleet_geofences.yaml. A loaded departure that came back to its origin without
    unloading anywhere else is in rejects.fleet_trips with the reason."""
    window = context.partition_time_window
    label = common.partition_label(context)
    days = time_windows(daily, window.start, window.end)
    try:
        fences = fleet.geofences(lake)
    except (ConfigError, ValueError) as error:
        raise dg.Failure(description=f"fleet/trips {label}: cannot read the plants' geofences: {error}") from error
    # A trip arriving on the day may have left the day before; its unloading may be seen the day after.
    track = lake.read(POSITIONS, window.start - LONGEST_TRIP, window.end + LONGEST_TRIP)
    found, refused = derive_trips(track, fences.frame, fleet.unloaded_below_t)
    arrived = found.filter((pl.col("arrived_at") >= window.start) & (pl.col("arrived_at") < window.end))
    refused = [r for r in refused if window.start <= r["concluded_at"] < window.end]
    rejects = _trip_rejects(refused, label)
    written = lake.replace_partitions(TRIPS, arrived, days)
    lake.replace_partitions(rejects_table(TRIPS), rejects, days)
    routes = arrived.group_by("origin_plant_id", "destination_plant_id").len().sort("len", descending=True)
    return dg.MaterializeResult(
        metadata={
            # Loaded departures concluded on the day: as trips, or as rejects (back at the origin still loaded).
            "rows_received": written.rows + rejects.height,
            "rows_written": written.rows,
            "rows_rejected": rejects.height,
            "dagster/row_count": written.rows,
            "tonnes_delivered": round(float(arrived["load_t"].sum() or 0.0), 1),
            "km_loaded": round(float(arrived["distance_km"].sum() or 0.0), 1),
            "trucks": arrived["truck_id"].n_unique(),
            "routes": ", ".join(f"{o}→{d} ×{n}" for o, d, n in routes.iter_rows()) or "none",
            "geofences_from": fences.source,
            "positions_read": track.height,
            "preview": common.preview(arrived),
        }
    )


def derive_trips(track: pl.DataFrame, fences: pl.DataFrame, unloaded_below_t: float) -> tuple[pl.DataFrame, list[dict]]:
    """(trips, refused departures) in a truck track (``raw.fleet_positions`` rows, any span).

    Each fix is placed in the nearest geofence whose radius holds it. A *visit* is a run of fixes in one
    plant's geofence (a road that skirts the fence, out and back in within ``SKIRTING``, stays one visit;
    a dropout inside a visit does not split it, whatever its length). A visit whose last
    fix carries ``unloaded_below_t`` or more is a loaded departure; it becomes a trip at the first later
    visit of another plant where a fix carries less (loaded visits in between are plants passed on the
    way). A departure that reaches its own origin again first is refused, with the reason; one still on
    the road when the track ends waits for a later run.
    """
    if track.height == 0:
        return TRIPS.empty(), []
    ordered = track.sort("truck_id", "ts").with_row_index("_fix")
    inside = (
        ordered.select("_fix", "lat", "lon")
        .join(fences.select("plant_id", "latitude", "longitude", "radius_km"), how="cross")
        .with_columns(km=haversine_km(pl.col("lat"), pl.col("lon"), pl.col("latitude"), pl.col("longitude")))
        .filter(pl.col("km") <= pl.col("radius_km"))
        .sort("_fix", "km")
        .unique("_fix", keep="first")
        .select("_fix", "plant_id")
    )
    step = haversine_km(
        pl.col("lat").shift(1).over("truck_id"), pl.col("lon").shift(1).over("truck_id"), pl.col("lat"), pl.col("lon")
    )
    ordered = (
        ordered.join(inside, on="_fix", how="left")
        .sort("_fix")
        .with_columns(track_km=step.fill_null(0.0).cum_sum().over("truck_id"))
    )
    trips: list[dict] = []
    refused: list[dict] = []
    for (truck,), fixes in ordered.group_by(["truck_id"], maintain_order=True):
        ts, plants = fixes["ts"].to_list(), fixes["plant_id"].to_list()
        loads, km = fixes["load_t"].to_list(), fixes["track_km"].to_list()
        visits = _visits(ts, plants, loads, unloaded_below_t)
        k = 0
        while k < len(visits):
            origin = visits[k]
            departure = origin["last"]
            if loads[departure] is None or loads[departure] < unloaded_below_t:
                k += 1
                continue
            passed: list[str] = []
            for j in range(k + 1, len(visits)):
                stop = visits[j]
                if stop["plant"] == origin["plant"]:
                    refused.append(
                        {
                            "truck_id": truck,
                            "origin_plant_id": origin["plant"],
                            "departed_at": ts[departure],
                            "concluded_at": ts[stop["first"]],
                            "load_t": loads[departure],
                            "reason": f"left {origin['plant']} loaded ({loads[departure]:.1f} t) at "
                            f"{ts[departure]:%Y-%m-%dT%H:%M}Z and was back there at {ts[stop['first']]:%H:%M}Z "
                            f"without unloading at another plant"
                            + (f" (passed {', '.join(passed)} loaded)" if passed else ""),
                        }
                    )
                    break
                if stop["unloaded"]:
                    arrival = stop["first"]
                    carried = [v for v in loads[departure : arrival + 1] if v is not None]
                    trips.append(
                        {
                            "truck_id": truck,
                            "origin_plant_id": origin["plant"],
                            "destination_plant_id": stop["plant"],
                            "departed_at": ts[departure],
                            "arrived_at": ts[arrival],
                            "load_t": round(statistics.median(carried), 2),
                            "distance_km": round(km[arrival] - km[departure], 1),
                            "duration_h": round((ts[arrival] - ts[departure]).total_seconds() / 3600, 2),
                            "fixes": arrival - departure + 1,
                        }
                    )
                    break
                passed.append(stop["plant"])
            else:
                break  # still on the road where the track ends
            k = j
    frame = pl.DataFrame(trips, schema=TRIPS.schema) if trips else TRIPS.empty()
    return TRIPS.conform(frame), refused


def _visits(ts: list, plants: list, loads: list, unloaded_below_t: float) -> list[dict]:
    """Runs of fixes in one plant's geofence; two runs of one plant less than ``SKIRTING`` apart are one."""
    visits: list[dict] = []
    for i, plant in enumerate(plants):
        if plant is None:
            continue
        unloaded = loads[i] is not None and loads[i] < unloaded_below_t
        last = visits[-1] if visits else None
        if (
            last is not None
            and last["plant"] == plant
            and (last["last"] == i - 1 or ts[i] - ts[last["last"]] < SKIRTING)
        ):
            visits[-1]["last"] = i
            visits[-1]["unloaded"] = visits[-1]["unloaded"] or unloaded
        else:
            visits.append({"plant": plant, "first": i, "last": i, "unloaded": unloaded})
    return visits


def _off_globe(lat: float, lon: float) -> str:
    return f"position {lat}, {lon} is off the globe: latitude must be −90…90 and longitude −180…180 degrees (WGS 84)"


def _rejects(
    found: list[tuple[dict, str, str]], table: LakeTable, label: str, rows: list[dict], position_of: dict
) -> pl.DataFrame:
    """Reject rows, in the shape of ``quality.conform``'s, for typed rows a later rule refused."""
    numbered = []
    for row, field, reason in found:
        n = position_of[(row["truck_id"], int(row["ts"].timestamp() * 1_000_000))]
        numbered.append((n, field, reason, row["ts"].replace(hour=0, minute=0, second=0, microsecond=0)))
    return pl.DataFrame(
        {
            "source": [SOURCE] * len(numbered),
            "table_name": [table.name] * len(numbered),
            "partition_key": [label] * len(numbered),
            "row_number": [n for n, *_ in numbered],
            "field": [f for _, f, *_ in numbered],
            "reason": [r for _, _, r, _ in numbered],
            "raw_payload": [json.dumps(rows[n], sort_keys=True) for n, *_ in numbered],
            "partition_start": [p for *_, p in numbered],
        },
        schema=rejects_table(table).schema,
    )


def _trip_rejects(refused: list[dict], label: str) -> pl.DataFrame:
    ordered = sorted(refused, key=lambda r: (r["truck_id"], r["departed_at"]))
    return pl.DataFrame(
        {
            "source": [SOURCE] * len(ordered),
            "table_name": [TRIPS.name] * len(ordered),
            "partition_key": [label] * len(ordered),
            "row_number": list(range(len(ordered))),
            "field": ["destination_plant_id"] * len(ordered),
            "reason": [r["reason"] for r in ordered],
            "raw_payload": [json.dumps({k: v for k, v in r.items() if k != "reason"}, default=_iso) for r in ordered],
            "partition_start": [r["concluded_at"].replace(hour=0, minute=0, second=0, microsecond=0) for r in ordered],
        },
        schema=rejects_table(TRIPS).schema,
    )


def _iso(value: object) -> str:
    return value.isoformat() if isinstance(value, datetime) else str(value)
