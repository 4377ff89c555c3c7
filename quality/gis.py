"""The rules the GIS map must meet: geometry repair and rejection, CRS, metric measures, the spatial joins,
and the GX suites and checks over the lake tables.

The geometry rules are pure functions over GeoDataFrames, used by the assets and by the checks alike (a
layer without a coordinate reference system never gets here: ``resources/gis.py`` refuses it, naming the
file and the layer):

- ``repair_geometries``: invalid geometries are repaired with ``shapely.make_valid`` when the result stays in
  the layer's geometry family (a bow-tie polygon becomes its two lobes), and rejected with the reason
  otherwise (a polygon collapsing to a line, a point in a pipe layer, an empty geometry);
- ``slivers``: boundary polygons that are valid but cover under 1 m² are rejected;
- ``utm_epsg`` and ``metric_measures``: lengths and areas in UTM 47N, or 48N east of 102°E (shared/DOMAIN.md);
- ``join_meters``, ``dma_overlaps`` and ``pipe_length_per_dma``: the meter-to-DMA join, the DMAs that overlap
  each other and the mains per DMA.

geopandas and shapely are imported inside the functions: definitions load without them.
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import dagster as dg
import polars as pl

from contracts.gis import (
    DMA_NETWORK,
    DMA_NETWORK_KEY,
    DMA_OVERLAPS,
    DMA_OVERLAPS_KEY,
    GEOMETRY_FAMILY,
    LAYER_KEYS,
    LAYER_TABLES,
    METER_DMA,
    METER_DMA_KEY,
    STORED_CRS,
)
from quality.gx import CheckInput, Rule, build_gx_checks, checked_window
from quality.rules import keys_present, unique
from resources.lake import Lake, LakeTable

if TYPE_CHECKING:
    import geopandas as gpd

# Longitude where UTM zone 48 begins (zone 47: 96–102°E; Thailand spans about 97.3–105.6°E).
ZONE_48_FROM_LON = 102.0
# Shared ground below this is digitising noise along a common boundary, not an overlap.
OVERLAP_TOLERANCE_M2 = 1.0
# A boundary polygon smaller than this has no ground to speak of.
MIN_POLYGON_AREA_M2 = 1.0

_FAMILIES = {
    "polygon": ("Polygon", "MultiPolygon"),
    "line": ("LineString", "MultiLineString"),
    "point": ("Point", "MultiPoint"),
}


def utm_epsg(longitude: float) -> int:
    """EPSG code of the UTM zone metric measures use at ``longitude`` (degrees east)."""
    return 32648 if longitude >= ZONE_48_FROM_LON else 32647


@dataclass(frozen=True)
class Repaired:
    """A layer after the geometry rules: kept features (EPSG:4326, with ``geometry_repaired`` and
    ``repair_note``) and the rejected ones as (position in the source, reason)."""

    frame: "gpd.GeoDataFrame"
    rejects: list[tuple[int, str]]


def repair_geometries(frame: "gpd.GeoDataFrame", layer: str) -> Repaired:
    """Repair invalid geometries where it keeps the layer's geometry family; reject the rest with a reason.

    ``frame`` is in its source CRS (repairs are made there, before reprojection) and keeps its source
    positions in a ``source_row`` column (added from the index when missing).
    """
    import geopandas as gpd
    import shapely

    family = GEOMETRY_FAMILY[layer]
    allowed = _FAMILIES[family]
    frame = frame.copy()
    if "source_row" not in frame.columns:
        frame["source_row"] = range(len(frame))
    geoms = frame.geometry.values
    repaired_flags = [False] * len(frame)
    notes: list[str | None] = [None] * len(frame)
    rejects: list[tuple[int, str]] = []
    keep = [True] * len(frame)
    fixed = list(geoms)
    for position, geom in enumerate(geoms):
        row = int(frame["source_row"].iloc[position])
        if geom is None or geom.is_empty:
            rejects.append((row, "geometry is missing or empty"))
            keep[position] = False
            continue
        if geom.geom_type not in allowed:
            rejects.append((row, f"a {geom.geom_type} in the {layer} layer, which holds {family} geometries"))
            keep[position] = False
            continue
        if geom.is_valid:
            continue
        problem = shapely.is_valid_reason(geom)
        result = shapely.make_valid(geom)
        parts = _family_parts(result, allowed)
        if parts is None:
            rejects.append(
                (
                    row,
                    f"invalid {geom.geom_type} ({problem}); make_valid turns it into a {result.geom_type} with no "
                    f"{family} part left, so it cannot be repaired without redrawing",
                )
            )
            keep[position] = False
            continue
        dropped = "" if parts.equals(result) else f", dropping the {result.geom_type}'s non-{family} parts"
        fixed[position] = parts
        repaired_flags[position] = True
        notes[position] = f"{problem}; repaired by make_valid into a {parts.geom_type}{dropped}"
    out = frame.copy()
    out = out.set_geometry(gpd.GeoSeries(fixed, index=frame.index, crs=frame.crs))
    out["geometry_repaired"] = repaired_flags
    out["repair_note"] = notes
    return Repaired(frame=out[keep].to_crs(STORED_CRS), rejects=rejects)


def _family_parts(geom: Any, allowed: tuple[str, str]) -> Any | None:
    """The parts of ``geom`` in the family (a single or multi geometry), or None when there is none."""
    import shapely

    if geom.geom_type in allowed:
        return None if geom.is_empty else geom
    parts = [g for g in getattr(geom, "geoms", []) if g.geom_type in allowed and not g.is_empty]
    if not parts:
        return None
    singles = [p for g in parts for p in getattr(g, "geoms", [g])]
    if len(singles) == 1:
        return singles[0]
    return {
        "Polygon": shapely.MultiPolygon,
        "LineString": shapely.MultiLineString,
        "Point": shapely.MultiPoint,
    }[allowed[0]](singles)


def metric_measures(frame: "gpd.GeoDataFrame") -> pl.DataFrame:
    """Per feature of an EPSG:4326 frame, in its UTM zone: ``length_m``, ``area_km2``, ``centroid_longitude``,
    ``centroid_latitude`` and ``utm_epsg`` (rows in the frame's order)."""
    import geopandas as gpd

    if frame.crs is None or frame.crs.to_epsg() != 4326:
        raise ValueError("metric_measures expects a frame in EPSG:4326")
    if len(frame) == 0:
        return pl.DataFrame(
            schema={
                "length_m": pl.Float64,
                "area_km2": pl.Float64,
                "centroid_longitude": pl.Float64,
                "centroid_latitude": pl.Float64,
                "utm_epsg": pl.Int64,
            }
        )
    zones = [utm_epsg(p.x) for p in frame.geometry.representative_point()]
    out: dict[str, list] = {k: [0.0] * len(frame) for k in ("length_m", "area_km2", "lon", "lat")}
    for zone in sorted(set(zones)):
        positions = [i for i, z in enumerate(zones) if z == zone]
        projected = frame.iloc[positions].to_crs(epsg=zone)
        centroids = gpd.GeoSeries(projected.geometry.centroid, crs=projected.crs).to_crs(STORED_CRS)
        for k, position in enumerate(positions):
            out["length_m"][position] = float(projected.geometry.iloc[k].length)
            out["area_km2"][position] = float(projected.geometry.iloc[k].area) / 1e6
            out["lon"][position] = float(centroids.iloc[k].x)
            out["lat"][position] = float(centroids.iloc[k].y)
    return pl.DataFrame(
        {
            "length_m": out["length_m"],
            "area_km2": out["area_km2"],
            "centroid_longitude": out["lon"],
            "centroid_latitude": out["lat"],
            "utm_epsg": zones,
        },
        schema_overrides={"utm_epsg": pl.Int64},
    )


def slivers(frame: "gpd.GeoDataFrame", measures: pl.DataFrame, layer: str) -> list[tuple[int, str]]:
    """Valid polygons of a boundary layer with (almost) no area in UTM, as (source row, reason): a ring
    that is valid only because reprojection bent a straight line is a sliver, not a boundary."""
    if GEOMETRY_FAMILY[layer] != "polygon" or measures.height == 0:
        return []
    found = []
    for position, area_km2 in enumerate(measures["area_km2"].to_list()):
        if area_km2 * 1e6 < MIN_POLYGON_AREA_M2:
            row = int(frame["source_row"].iloc[position])
            found.append(
                (
                    row,
                    f"polygon covers {area_km2 * 1e6:.3g} m² in UTM, under {MIN_POLYGON_AREA_M2:.0f} m²: "
                    "a sliver, not a boundary",
                )
            )
    return found


def to_geodataframe(frame: pl.DataFrame, column: str = "geometry") -> "gpd.GeoDataFrame":
    """A lake table's rows as a GeoDataFrame in EPSG:4326 (its WKB column decoded)."""
    import geopandas as gpd
    import shapely

    geometries = shapely.from_wkb(frame.get_column(column).to_list()) if frame.height else []
    return gpd.GeoDataFrame(frame.drop(column).to_pandas(), geometry=list(geometries), crs=STORED_CRS)


def _zone_of(frame: "gpd.GeoDataFrame") -> int:
    """One UTM zone for a whole set of features: the zone of their common centre."""
    minx, _, maxx, _ = frame.total_bounds
    return utm_epsg((minx + maxx) / 2.0)


def dma_overlaps(dmas: "gpd.GeoDataFrame") -> list[tuple[str, str, float]]:
    """(dma_id, other_dma_id, shared area in m²) for every pair of DMA boundaries sharing ground, sorted."""
    import shapely

    if len(dmas) < 2:
        return []
    projected = dmas.to_crs(epsg=_zone_of(dmas)).reset_index(drop=True)
    left, right = projected.sindex.query(projected.geometry, predicate="intersects")
    pairs = []
    for a, b in zip(left.tolist(), right.tolist(), strict=True):
        first, second = projected["dma_id"].iloc[a], projected["dma_id"].iloc[b]
        if first >= second:
            continue
        area = float(shapely.intersection(projected.geometry.iloc[a], projected.geometry.iloc[b]).area)
        if area > OVERLAP_TOLERANCE_M2:
            pairs.append((first, second, area))
    return sorted(pairs)


def join_meters(meters: "gpd.GeoDataFrame", dmas: "gpd.GeoDataFrame", dmama_dma: Mapping[str, str]) -> pl.DataFrame:
    """Each meter with the DMA boundaries containing it, DMAMA's DMA and a status (``METER_STATUSES``)."""
    import geopandas as gpd

    schema = {
        "meter_id": pl.String,
        "kind": pl.String,
        "map_dma_id": pl.String,
        "map_dma_ids": pl.List(pl.String),
        "dmama_dma_id": pl.String,
        "status": pl.String,
        "nearest_dma_id": pl.String,
        "distance_to_dma_m": pl.Float64,
    }
    if len(meters) == 0:
        return pl.DataFrame(schema=schema)
    zone = _zone_of(meters if len(dmas) == 0 else dmas)
    points = meters[["meter_id", "kind", "geometry"]].to_crs(epsg=zone).reset_index(drop=True)
    areas = dmas[["dma_id", "geometry"]].to_crs(epsg=zone).reset_index(drop=True)
    joined = gpd.sjoin(points, areas, how="left", predicate="within")
    containing: dict[str, list[str]] = {}
    for meter_id, dma_id in zip(joined["meter_id"], joined["dma_id"], strict=True):
        containing.setdefault(meter_id, [])
        if isinstance(dma_id, str):
            containing[meter_id].append(dma_id)
    nearest: dict[str, tuple[str, float]] = {}
    outside = points[points["meter_id"].map(lambda m: not containing[m])]
    if len(outside) and len(areas):
        found = gpd.sjoin_nearest(outside, areas, how="left", distance_col="distance_m")
        for meter_id, dma_id, distance in zip(found["meter_id"], found["dma_id"], found["distance_m"], strict=True):
            nearest.setdefault(meter_id, (dma_id, float(distance)))
    rows = []
    for meter_id, kind in zip(points["meter_id"], points["kind"], strict=True):
        inside = sorted(containing[meter_id])
        filed = dmama_dma.get(meter_id)
        if not inside:
            status = "outside_every_dma"
        elif len(inside) > 1:
            status = "in_overlapping_dmas"
        elif filed is None:
            status = "unknown_to_dmama"
        elif filed != inside[0]:
            status = "disagrees_with_dmama"
        else:
            status = "matched"
        near = nearest.get(meter_id)
        rows.append(
            {
                "meter_id": meter_id,
                "kind": kind,
                "map_dma_id": (filed if filed in inside else inside[0]) if inside else None,
                "map_dma_ids": inside,
                "dmama_dma_id": filed,
                "status": status,
                "nearest_dma_id": near[0] if near else None,
                "distance_to_dma_m": round(near[1], 1) if near else None,
            }
        )
    return pl.DataFrame(rows, schema=schema)


def pipe_length_per_dma(pipes: "gpd.GeoDataFrame", dmas: "gpd.GeoDataFrame") -> dict[str, tuple[float, int]]:
    """{dma_id: (metres of pipe inside its boundary, pipes with length inside)} measured in UTM."""
    import shapely

    totals = {dma_id: (0.0, 0) for dma_id in dmas["dma_id"]}
    if len(pipes) == 0 or len(dmas) == 0:
        return totals
    zone = _zone_of(dmas)
    lines = pipes.to_crs(epsg=zone).reset_index(drop=True)
    areas = dmas.to_crs(epsg=zone).reset_index(drop=True)
    area_index, line_index = lines.sindex.query(areas.geometry, predicate="intersects")
    inside = shapely.intersection(lines.geometry.values[line_index], areas.geometry.values[area_index])
    lengths = shapely.length(inside)
    for a, length in zip(area_index.tolist(), lengths.tolist(), strict=True):
        if length <= 0:
            continue
        dma_id = areas["dma_id"].iloc[a]
        metres, count = totals[dma_id]
        totals[dma_id] = (metres + float(length), count + 1)
    return totals


def points_per_dma(points: "gpd.GeoDataFrame", dmas: "gpd.GeoDataFrame") -> dict[str, int]:
    """{dma_id: points inside its boundary} (a point in two overlapping DMAs counts for both)."""
    import geopandas as gpd

    counts = {dma_id: 0 for dma_id in dmas["dma_id"]}
    if len(points) == 0 or len(dmas) == 0:
        return counts
    joined = gpd.sjoin(points[["geometry"]], dmas[["dma_id", "geometry"]], how="inner", predicate="within")
    for dma_id, n in joined["dma_id"].value_counts().items():
        counts[dma_id] = int(n)
    return counts


# ---------------------------------------------------------------------------------------------- GX and checks


def _keys(*columns: str) -> Rule:
    return keys_present(*columns)


def _unique(column: str) -> Rule:
    return unique(column, name=f"unique_{column}", why="each feature of a weekly snapshot is there once")


def _in_set(column: str, values: list[str], what: str) -> Rule:
    return Rule(
        name=f"{column}_known",
        description=f"{what}: one of {', '.join(values)}.",
        expectations=lambda gxe, _: [gxe.ExpectColumnValuesToBeInSet(column=column, value_set=values)],
        severity=dg.AssetCheckSeverity.WARN,
        blocking=False,
    )


def _geometry_present() -> Rule:
    return Rule(
        name="geometry_present",
        description="Every stored feature has a geometry (rejected ones are in the rejects table).",
        expectations=lambda gxe, _: [gxe.ExpectColumnValuesToNotBeNull(column="geometry")],
    )


def _diameter() -> Rule:
    return Rule(
        name="diameter_plausible",
        description="Nominal diameters lie between 15 and 3000 mm.",
        expectations=lambda gxe, _: [
            gxe.ExpectColumnValuesToBeBetween(column="diameter_mm", min_value=15, max_value=3000)
        ],
        severity=dg.AssetCheckSeverity.WARN,
        blocking=False,
    )


def _install_year(gxe: Any, check: CheckInput) -> list:
    return [gxe.ExpectColumnValuesToBeBetween(column="install_year", min_value=1900, max_value=check.now.year)]


LAYER_RULES: dict[str, tuple[Rule, ...]] = {
    "dma_boundaries": (
        _keys("snapshot_week", "dma_id"),
        _unique("dma_id"),
        _geometry_present(),
        Rule(
            name="area_positive",
            description="Every DMA covers some ground, at most 500 km².",
            expectations=lambda gxe, _: [
                gxe.ExpectColumnValuesToBeBetween(column="area_km2", min_value=0, max_value=500, strict_min=True)
            ],
        ),
    ),
    "pipes": (
        _keys("snapshot_week", "pipe_id"),
        _unique("pipe_id"),
        _geometry_present(),
        _diameter(),
        Rule(
            name="install_year_plausible",
            description="Pipes were laid between 1900 and this year.",
            expectations=_install_year,
            severity=dg.AssetCheckSeverity.WARN,
            blocking=False,
        ),
        Rule(
            name="length_positive",
            description="Every pipe has a length, at most 20 km.",
            expectations=lambda gxe, _: [
                gxe.ExpectColumnValuesToBeBetween(column="length_m", min_value=0, max_value=20_000, strict_min=True)
            ],
        ),
    ),
    "meters": (
        _keys("snapshot_week", "meter_id"),
        _unique("meter_id"),
        _geometry_present(),
        _in_set("kind", ["customer", "inflow"], "Meter kinds"),
    ),
    "valves": (
        _keys("snapshot_week", "valve_id"),
        _unique("valve_id"),
        _geometry_present(),
        _diameter(),
        _in_set("status", ["open", "closed"], "Valve status"),
    ),
    "facilities": (
        _keys("snapshot_week", "facility_id"),
        _unique("facility_id"),
        _geometry_present(),
        _in_set("kind", ["pump_station", "tank"], "Facility kinds"),
    ),
}

NETWORK_RULES = (
    _keys("snapshot_week", "dma_id"),
    _unique("dma_id"),
    Rule(
        name="network_measured",
        description="Every DMA has a centroid in Thailand's longitudes and no negative pipe length.",
        expectations=lambda gxe, _: [
            gxe.ExpectColumnValuesToBeBetween(column="pipe_length_km", min_value=0),
            gxe.ExpectColumnValuesToBeBetween(column="centroid_longitude", min_value=97.0, max_value=106.0),
            gxe.ExpectColumnValuesToBeBetween(column="centroid_latitude", min_value=5.0, max_value=21.0),
        ],
    ),
)


def _read_window(context: dg.AssetCheckExecutionContext, lake: Lake, table: LakeTable) -> pl.DataFrame:
    window = checked_window(context)
    return lake.read(table, *window) if window else lake.read(table)


def spatial_checks(weekly: dg.TimeWindowPartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    """The map's spatial rules as checks: valid geometries in every layer, meters inside one DMA that
    agrees with DMAMA, DMAs that do not overlap. They warn (non-blocking): the map is still usable."""

    def geometries_valid(layer: str, table: LakeTable) -> dg.AssetChecksDefinition:
        @dg.asset_check(
            asset=LAYER_KEYS[layer],
            name="geometries_valid",
            partitions_def=weekly,
            description=f"Every stored {layer} geometry is valid (OGC) and of the layer's family.",
            blocking=True,
        )
        def _check(context: dg.AssetCheckExecutionContext, lake: Lake) -> dg.AssetCheckResult:
            import shapely

            frame = _read_window(context, lake, table)
            geoms = shapely.from_wkb(frame.get_column("geometry").to_list()) if frame.height else []
            allowed = _FAMILIES[GEOMETRY_FAMILY[layer]]
            bad = [g for g in geoms if g is None or not g.is_valid or g.geom_type not in allowed]
            return dg.AssetCheckResult(
                passed=not bad,
                metadata={
                    "features": len(geoms),
                    "invalid": len(bad),
                    "repaired": int(frame["geometry_repaired"].sum()),
                },
            )

        return _check

    @dg.asset_check(
        asset=METER_DMA_KEY,
        name="meters_inside_one_dma",
        partitions_def=weekly,
        description="Every meter lies inside exactly one DMA boundary; the others are named.",
    )
    def meters_inside_one_dma(context: dg.AssetCheckExecutionContext, lake: Lake) -> dg.AssetCheckResult:
        frame = _read_window(context, lake, METER_DMA)
        outside = frame.filter(pl.col("status") == "outside_every_dma")["meter_id"].to_list()
        several = frame.filter(pl.col("status") == "in_overlapping_dmas")["meter_id"].to_list()
        return dg.AssetCheckResult(
            passed=not outside and not several,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "meters": frame.height,
                "outside_every_dma": len(outside),
                "outside": ", ".join(outside[:20]) or "none",
                "in_overlapping_dmas": len(several),
            },
        )

    @dg.asset_check(
        asset=METER_DMA_KEY,
        name="meters_agree_with_dmama",
        partitions_def=weekly,
        description="The DMA the map places each meter in is the one DMAMA files it under.",
    )
    def meters_agree_with_dmama(context: dg.AssetCheckExecutionContext, lake: Lake) -> dg.AssetCheckResult:
        frame = _read_window(context, lake, METER_DMA)
        disagree = frame.filter(pl.col("status") == "disagrees_with_dmama")
        unknown = frame.filter(pl.col("status") == "unknown_to_dmama")["meter_id"].to_list()
        shown = [
            f"{m} (map {a}, DMAMA {b})" for m, a, b in disagree.select("meter_id", "map_dma_id", "dmama_dma_id").rows()
        ]
        return dg.AssetCheckResult(
            passed=disagree.height == 0 and not unknown,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={
                "disagreeing": disagree.height,
                "disagreements": ", ".join(shown[:20]) or "none",
                "unknown_to_dmama": len(unknown),
            },
        )

    @dg.asset_check(
        asset=DMA_OVERLAPS_KEY,
        name="dmas_do_not_overlap",
        partitions_def=weekly,
        description=f"No two DMA boundaries share more than {OVERLAP_TOLERANCE_M2:.0f} m² of ground.",
    )
    def dmas_do_not_overlap(context: dg.AssetCheckExecutionContext, lake: Lake) -> dg.AssetCheckResult:
        frame = _read_window(context, lake, DMA_OVERLAPS)
        pairs = [
            f"{a} & {b} ({area:,.0f} m²)"
            for a, b, area in frame.select("dma_id", "other_dma_id", "overlap_area_m2").rows()
        ]
        return dg.AssetCheckResult(
            passed=frame.height == 0,
            severity=dg.AssetCheckSeverity.WARN,
            metadata={"overlapping_pairs": frame.height, "overlaps": ", ".join(pairs) or "none"},
        )

    return [
        *(geometries_valid(layer, table) for layer, table in LAYER_TABLES.items()),
        meters_inside_one_dma,
        meters_agree_with_dmama,
        dmas_do_not_overlap,
    ]


def gis_checks(weekly: dg.TimeWindowPartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    """Every GIS check: a GX suite per layer and for the network mart, and the spatial rules."""
    return [
        *(build_gx_checks(LAYER_KEYS[layer], LAYER_TABLES[layer], LAYER_RULES[layer], weekly) for layer in LAYER_RULES),
        build_gx_checks(DMA_NETWORK_KEY, DMA_NETWORK, NETWORK_RULES, weekly),
        *spatial_checks(weekly),
    ]
