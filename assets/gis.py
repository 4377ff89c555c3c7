"""The network map from the GIS, one weekly snapshot per layer, and what the hub derives from it: each
meter's DMA by location (against DMAMA's), the DMAs that overlap each other, the network per DMA (mains km,
connections, centroid) and a GeoJSON export for web maps.

A layer is read in its source CRS (a file without one fails, naming file and layer), its invalid geometries
repaired with ``make_valid`` where that keeps the layer's geometry family and rejected with the reason
otherwise (``quality/gis.py``), reprojected to EPSG:4326 for storage (GeoParquet: WKB with the ``geo``
key), its lengths and areas measured in UTM, then typed by the contract (``quality/conform.py``). Nothing
is dropped silently: ``rows_received = rows_written + rows_rejected`` for every materialization.

A snapshot records the map as it is when it is taken: a layer asset only loads the week in progress (a
past week's map cannot be read again, so its partition is left as it was). The derived assets work on any
week already in the lake.
"""

import json
import math
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

import dagster as dg
import polars as pl

from assets import source_assets as common
from assets.partitions import HISTORY_START
from contracts.dmama import METERS as DMAMA_METERS
from contracts.dmama import METERS_KEY as DMAMA_METERS_KEY
from contracts.gis import (
    DMA_BOUNDARIES,
    DMA_NETWORK,
    DMA_NETWORK_KEY,
    DMA_OVERLAPS,
    LAYER_KEYS,
    LAYER_TABLES,
    LAYERS,
    METER_DMA,
    METERS,
    PIPES,
    SOURCE_FIELDS,
    VALVES,
)
from quality.conform import Conformed, conform, rejects_table
from resources.gis import GisSource
from resources.lake import Lake, LakeTable, time_windows

if TYPE_CHECKING:
    import geopandas as gpd

SOURCE = "gis"
OWNER = "team:network"
EXPORT_PREFIX = "exports/gis"

# Weeks start on Monday 00:00 UTC; end_offset makes the week in progress a partition (520 over ten years).
weekly = dg.WeeklyPartitionsDefinition(start_date=HISTORY_START, day_offset=1, end_offset=1)
FRESH_WITHIN = timedelta(days=8)  # a weekly refresh, with a day of slack


def _common(table: LakeTable, rejects: bool = True) -> dict[str, Any]:
    return {
        **common.source_asset(SOURCE, table, owner=OWNER, fresh_within=FRESH_WITHIN, rejects=rejects),
        "partitions_def": weekly,
    }


# ---------------------------------------------------------------------------------------------- layers


def _layer_asset(layer: str) -> dg.AssetsDefinition:
    table = LAYER_TABLES[layer]
    descriptions = {
        "dma_boundaries": "Boundaries of the district metered areas",
        "pipes": "The pipe network (material, diameter mm, install year, length m)",
        "meters": "Where every customer and inflow meter is",
        "valves": "Network valves (kind, diameter mm, open or closed)",
        "facilities": "Pump stations and tanks",
    }

    def _load(context: dg.AssetExecutionContext, gis: GisSource, lake: Lake) -> dg.MaterializeResult:
        return load_layer(context, gis, lake, layer)

    _load.__doc__ = (
        f"{descriptions[layer]}, as the GIS has them this week: geometry in EPSG:4326 (GeoParquet), metric "
        "measures computed in UTM 47N/48N. Invalid geometries are repaired with make_valid where that keeps "
        "the geometry type, rejected with the reason otherwise; a file without a CRS fails the run."
    )
    # One policy for the whole group (a backfill is one run); a range of past weeks fails in load_layer.
    return dg.asset(
        name=layer, kinds={"gis", "geoparquet"}, backfill_policy=dg.BackfillPolicy.single_run(), **_common(table)
    )(_load)


def load_layer(context: dg.AssetExecutionContext, gis: GisSource, lake: Lake, layer: str) -> dg.MaterializeResult:
    """Read, repair, measure, type and write one layer for the week in progress."""
    from quality.gis import metric_measures, repair_geometries, slivers

    table = LAYER_TABLES[layer]
    window = context.partition_time_window
    label = common.partition_label(context)
    now = datetime.now(UTC)
    if not window.start <= now < window.end or window.end - window.start > timedelta(days=7):
        raise dg.Failure(
            description=(
                f"gis/{layer} for week {label}: a snapshot records the map as it is now, in the week from "
                f"{weekly.get_partition_key_for_timestamp(now.timestamp())}; a past week's map cannot be read "
                "again, so its partition is left as it was."
            )
        )
    read = common.fetch(context, SOURCE, f"layer {layer} from {gis.describe(layer)}", lambda: gis.read_layer(layer))
    source = read.frame.reset_index(drop=True)
    source["source_row"] = range(len(source))
    repaired = repair_geometries(source, layer)
    kept = repaired.frame.reset_index(drop=True)
    measures = metric_measures(kept)
    tiny = slivers(kept, measures, layer)
    if tiny:
        small = {row for row, _ in tiny}
        keep = ~kept["source_row"].isin(small)
        kept, measures = kept[keep].reset_index(drop=True), measures.filter(pl.Series(keep.to_list()))
    geometry_rejected = sorted([*repaired.rejects, *tiny])
    rows = _contract_rows(kept, measures, layer, window.start)
    windows = time_windows(weekly, window.start, window.end)
    typed = conform(rows, table, source=SOURCE, partition_key=label, partitions=windows)
    source_rows = kept["source_row"].tolist()
    geometry_rejects = _geometry_rejects(source, geometry_rejected, table, label, window.start)
    remapped = typed.rejects.with_columns(
        pl.col("row_number").map_elements(lambda i: source_rows[i], return_dtype=pl.Int64)
    )
    loaded = Conformed(
        frame=typed.frame,
        rejects=rejects_table(table).conform(pl.concat([geometry_rejects, remapped])),
        received=len(source),
    )
    written = lake.replace_partitions(table, loaded.frame, windows)
    lake.replace_partitions(rejects_table(table), loaded.rejects, windows)
    for reason in loaded.rejects["reason"].to_list()[:5]:
        context.log.warning(f"gis/{layer} {label}: rejected: {reason}")
    frame = written.frame
    metadata: dict[str, Any] = {
        **common.reconciliation(loaded),
        "origin": read.origin,
        "source_crs": read.crs,
        "stored_crs": "EPSG:4326",
        "pages": read.pages,
        "geometries_repaired": int(frame["geometry_repaired"].sum()) if frame.height else 0,
        "geometries_rejected": len(geometry_rejected),
        "reject_reasons": json.dumps(loaded.reasons()),
        "preview": common.preview(frame.drop("geometry")),
    }
    if layer == "pipes" and frame.height:
        metadata["pipe_length_km"] = round(float(frame["length_m"].sum()) / 1000.0, 3)
    if layer == "dma_boundaries" and frame.height:
        metadata["area_km2"] = round(float(frame["area_km2"].sum()), 3)
    return dg.MaterializeResult(metadata=metadata)


def _contract_rows(kept: "gpd.GeoDataFrame", measures: pl.DataFrame, layer: str, week: datetime) -> list[dict]:
    """The kept features as raw contract rows (source field names mapped, WKB geometry, UTM measures)."""
    import shapely

    fields = SOURCE_FIELDS[layer]
    wkb = shapely.to_wkb(kept.geometry.values, output_dimension=2) if len(kept) else []
    rows = []
    for position, record in enumerate(kept.drop(columns="geometry").to_dict("records")):
        measured = measures.row(position, named=True)
        row: dict[str, Any] = {"snapshot_week": week.isoformat()}
        for source_name, name in fields.items():
            row[name] = _native(record.get(source_name))
        row["geometry"] = bytes(wkb[position])
        row["geometry_repaired"] = bool(record["geometry_repaired"])
        row["repair_note"] = _native(record["repair_note"])
        row["utm_epsg"] = measured["utm_epsg"]
        if layer == "dma_boundaries":
            row["area_km2"] = round(measured["area_km2"], 6)
            row["centroid_longitude"] = round(measured["centroid_longitude"], 6)
            row["centroid_latitude"] = round(measured["centroid_latitude"], 6)
        elif layer == "pipes":
            row["length_m"] = round(measured["length_m"], 3)
        else:
            row["longitude"] = round(measured["centroid_longitude"], 7)
            row["latitude"] = round(measured["centroid_latitude"], 7)
        rows.append(row)
    return rows


def _native(value: Any) -> Any:
    """A source value as conform reads it: missing (None, NaN) as None, numpy scalars as Python ones."""
    if value is None:
        return None
    if isinstance(value, datetime):  # GDAL reads a GeoJSON "YYYY-MM-DD" text as a date-time (pandas Timestamp)
        if value != value:  # NaT
            return None
        plain = value.tzinfo is None and (value.hour, value.minute, value.second, value.microsecond) == (0, 0, 0, 0)
        return value.date().isoformat() if plain else value.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)  # a Shapefile or GeoJSON reader may give 110.0 for an integer field
    return value


def _geometry_rejects(
    source: "gpd.GeoDataFrame", rejected: list[tuple[int, str]], table: LakeTable, label: str, week: datetime
) -> pl.DataFrame:
    """Features the geometry rules refused, as rows of the rejects table (raw payload: properties and WKT)."""
    records = []
    for row_number, reason in rejected:
        feature = source.iloc[row_number]
        properties = {k: _native(v) for k, v in feature.drop(labels=["geometry", "source_row"]).items()}
        geometry = feature.geometry.wkt if feature.geometry is not None else None
        payload = json.dumps({"properties": properties, "geometry_wkt": geometry}, default=str, ensure_ascii=False)
        records.append(
            {
                "source": SOURCE,
                "table_name": table.name,
                "partition_key": label,
                "row_number": row_number,
                "field": "geometry",
                "reason": reason,
                "raw_payload": payload[:20_000],
                "partition_start": week,
            }
        )
    return pl.DataFrame(records, schema=rejects_table(table).schema)


layer_assets = [_layer_asset(layer) for layer in LAYERS]


# ---------------------------------------------------------------------------------------------- derived


def _week_frames(lake: Lake, table: LakeTable, start: datetime, end: datetime) -> "gpd.GeoDataFrame":
    from quality.gis import to_geodataframe

    return to_geodataframe(lake.read(table, start, end))


def _weeks(context: dg.AssetExecutionContext) -> list[dg.TimeWindow]:
    window = context.partition_time_window
    return time_windows(weekly, window.start, window.end)


def _require_boundaries(lake: Lake, window: dg.TimeWindow, label: str, what: str) -> "gpd.GeoDataFrame":
    dmas = _week_frames(lake, DMA_BOUNDARIES, window.start, window.end)
    if len(dmas) == 0:
        raise dg.Failure(
            description=(
                f"gis/{what} for week {label}: no DMA boundaries in {DMA_BOUNDARIES.layer}.{DMA_BOUNDARIES.name} "
                f"for the week of {window.start:%Y-%m-%d}; materialize gis/dma_boundaries for it first."
            )
        )
    return dmas


@dg.asset(
    name="meter_dma",
    kinds={"gis", "parquet"},
    deps=[LAYER_KEYS["meters"], LAYER_KEYS["dma_boundaries"], DMAMA_METERS_KEY],
    backfill_policy=dg.BackfillPolicy.single_run(),
    **_common(METER_DMA, rejects=False),
)
def meter_dma(context: dg.AssetExecutionContext, lake: Lake) -> dg.MaterializeResult:
    """Every meter of the map joined spatially to the DMA boundary containing it, next to the DMA DMAMA
    files it under. Meters outside every DMA (with the nearest one and the distance), inside two
    overlapping DMAs, or placed in another DMA than DMAMA says are flagged, never dropped."""
    from quality.gis import join_meters

    label = common.partition_label(context)
    dmama = dict(lake.read(DMAMA_METERS).select("meter_id", "dma_id").iter_rows())
    frames = []
    for window in _weeks(context):
        dmas = _require_boundaries(lake, window, label, "meter_dma")
        meters = _week_frames(lake, METERS, window.start, window.end)
        joined = join_meters(meters, dmas, dmama)
        frames.append(joined.with_columns(snapshot_week=pl.lit(window.start, METER_DMA.schema["snapshot_week"])))
    frame = pl.concat(frames) if frames else METER_DMA.empty()
    written = lake.replace_partitions(METER_DMA, frame, _weeks(context))
    statuses = dict(written.frame.group_by("status").len().iter_rows()) if written.rows else {}
    if not dmama:
        context.log.warning("gis/meter_dma: raw.dmama_meters is empty, so no meter can be compared with DMAMA")
    return dg.MaterializeResult(
        metadata={
            "rows_written": written.rows,
            "dagster/row_count": written.rows,
            **{f"meters_{status}": int(statuses.get(status, 0)) for status in sorted(set(statuses) | {"matched"})},
            "flagged": ", ".join(
                f"{m} ({s})"
                for m, s in written.frame.filter(pl.col("status") != "matched").select("meter_id", "status").rows()[:20]
            )
            or "none",
        }
    )


@dg.asset(
    name="dma_overlaps",
    kinds={"gis", "parquet"},
    deps=[LAYER_KEYS["dma_boundaries"]],
    backfill_policy=dg.BackfillPolicy.single_run(),
    **_common(DMA_OVERLAPS, rejects=False),
)
def dma_overlaps(context: dg.AssetExecutionContext, lake: Lake) -> dg.MaterializeResult:
    """Pairs of DMA boundaries that share ground, with the shared area in m² (computed in UTM). A DMA must
    not overlap another: each pair here is a digitising error to fix in the GIS."""
    from quality.gis import dma_overlaps as overlaps_of

    label = common.partition_label(context)
    rows = []
    for window in _weeks(context):
        dmas = _require_boundaries(lake, window, label, "dma_overlaps")
        rows.extend(
            {"snapshot_week": window.start, "dma_id": a, "other_dma_id": b, "overlap_area_m2": round(area, 1)}
            for a, b, area in overlaps_of(dmas)
        )
    frame = pl.DataFrame(rows, schema=DMA_OVERLAPS.schema)
    written = lake.replace_partitions(DMA_OVERLAPS, frame, _weeks(context))
    return dg.MaterializeResult(
        metadata={
            "rows_written": written.rows,
            "dagster/row_count": written.rows,
            "overlaps": ", ".join(f"{a} & {b}" for a, b in frame.select("dma_id", "other_dma_id").rows()) or "none",
        }
    )


@dg.asset(
    name="dma_network",
    kinds={"gis", "parquet"},
    deps=[LAYER_KEYS["dma_boundaries"], LAYER_KEYS["pipes"], LAYER_KEYS["meters"], LAYER_KEYS["valves"]],
    backfill_policy=dg.BackfillPolicy.single_run(),
    **_common(DMA_NETWORK, rejects=False),
)
def dma_network(context: dg.AssetExecutionContext, lake: Lake) -> dg.MaterializeResult:
    """The network per DMA from the map: area (km²), length of pipe inside the boundary (km, measured in
    UTM), pipes, service connections (customer meters inside), inflow meters, valves, the DMAs it overlaps,
    and its centroid, which is where the weather stations are placed."""
    from quality.gis import dma_overlaps as overlaps_of
    from quality.gis import pipe_length_per_dma, points_per_dma

    label = common.partition_label(context)
    rows = []
    for window in _weeks(context):
        dmas = _require_boundaries(lake, window, label, "dma_network")
        pipes = _week_frames(lake, PIPES, window.start, window.end)
        meters = _week_frames(lake, METERS, window.start, window.end)
        valves = _week_frames(lake, VALVES, window.start, window.end)
        lengths = pipe_length_per_dma(pipes, dmas)
        customers = points_per_dma(meters[meters["kind"] == "customer"] if len(meters) else meters, dmas)
        inflow = points_per_dma(meters[meters["kind"] == "inflow"] if len(meters) else meters, dmas)
        valve_counts = points_per_dma(valves, dmas)
        overlapping: dict[str, list[str]] = {}
        for a, b, _ in overlaps_of(dmas):
            overlapping.setdefault(a, []).append(b)
            overlapping.setdefault(b, []).append(a)
        for dma in dmas.itertuples():
            metres, pipe_count = lengths[dma.dma_id]
            rows.append(
                {
                    "snapshot_week": window.start,
                    "dma_id": dma.dma_id,
                    "name": dma.name,
                    "area_km2": dma.area_km2,
                    "pipe_length_km": round(metres / 1000.0, 4),
                    "pipes": pipe_count,
                    "connections": customers[dma.dma_id],
                    "inflow_meters": inflow[dma.dma_id],
                    "valves": valve_counts[dma.dma_id],
                    "centroid_longitude": dma.centroid_longitude,
                    "centroid_latitude": dma.centroid_latitude,
                    "overlapping_dma_ids": sorted(overlapping.get(dma.dma_id, [])),
                    "utm_epsg": dma.utm_epsg,
                }
            )
    frame = pl.DataFrame(rows, schema=DMA_NETWORK.schema)
    written = lake.replace_partitions(DMA_NETWORK, frame, _weeks(context))
    out = written.frame
    return dg.MaterializeResult(
        metadata={
            "rows_written": written.rows,
            "dagster/row_count": written.rows,
            "dmas": written.distinct("dma_id"),
            "pipe_length_km": round(float(out["pipe_length_km"].sum()), 3) if out.height else 0.0,
            "connections": int(out["connections"].sum()) if out.height else 0,
            "preview": common.preview(out),
        }
    )


@dg.asset(
    name="geojson_export",
    group_name=SOURCE,
    key_prefix=SOURCE,
    owners=[OWNER],
    tags={"source": SOURCE},
    pool=SOURCE,
    kinds={"gis", "geojson"},
    partitions_def=weekly,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[*LAYER_KEYS.values(), DMA_NETWORK_KEY],
)
def geojson_export(context: dg.AssetExecutionContext, lake: Lake) -> dg.MaterializeResult:
    """The week's map as GeoJSON for web maps (EPSG:4326, RFC 7946): ``exports/gis/<layer>.geojson`` under
    the lake, one FeatureCollection per layer, DMA boundaries carrying their network figures (mains km,
    connections). The last week exported wins: these files are always the latest map."""
    import shapely

    window = context.partition_time_window
    network = lake.read(DMA_NETWORK, window.start, window.end)
    figures = {row["dma_id"]: row for row in network.drop("snapshot_week").iter_rows(named=True)}
    counts = {}
    paths = {}
    for layer in LAYERS:
        frame = lake.read(LAYER_TABLES[layer], window.start, window.end)
        geometries = shapely.from_wkb(frame["geometry"].to_list()) if frame.height else []
        features = []
        for record, geometry in zip(frame.drop("geometry").iter_rows(named=True), geometries, strict=True):
            properties = {k: _json_value(v) for k, v in record.items()}
            if layer == "dma_boundaries":
                extra = figures.get(record["dma_id"], {})
                for name in ("pipe_length_km", "pipes", "connections", "valves"):
                    properties[name] = extra.get(name)
            identifier = next(v for k, v in record.items() if k.endswith("_id"))
            features.append(
                {
                    "type": "Feature",
                    "id": identifier,
                    "properties": properties,
                    "geometry": json.loads(shapely.to_geojson(geometry)),
                }
            )
        body = {"type": "FeatureCollection", "name": layer, "features": features}
        paths[layer] = lake.storage.write(
            f"{EXPORT_PREFIX}/{layer}.geojson", json.dumps(body, ensure_ascii=False).encode("utf-8")
        )
        counts[layer] = len(features)
    return dg.MaterializeResult(
        metadata={
            "week": f"{window.start:%Y-%m-%d}",
            "folder": dg.MetadataValue.path(paths[LAYERS[0]].rsplit("/", 1)[0]),
            **{f"features_{layer}": n for layer, n in counts.items()},
        }
    )


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat().replace("+00:00", "Z")
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, list):
        return [_json_value(v) for v in value]
    return value


derived_assets = [meter_dma, dma_overlaps, dma_network, geojson_export]
