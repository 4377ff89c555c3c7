"""The GIS data contract: the network map's layers, the meter-to-DMA join and the network per DMA.

Every table is a weekly snapshot: ``snapshot_week`` (UTC, the start of the week) is its time column, so the
network can be compared week to week. Geometries are WKB in EPSG:4326 (``geometry``), written as GeoParquet;
lengths and areas are metric, computed in UTM 47N (EPSG:32647) or 48N (EPSG:32648) east of 102°E, and
``utm_epsg`` says which. Assets and checks both import it from here, so ``quality/`` never imports ``assets/``.
"""

import dagster as dg
import polars as pl

from resources.lake import Column, LakeTable

UTC_TIME = pl.Datetime("us", "UTC")
STORED_CRS = "EPSG:4326"
LAYERS = ("dma_boundaries", "pipes", "meters", "valves", "facilities")

_WEEK = Column("snapshot_week", UTC_TIME, "Start (UTC) of the week this snapshot of the map is for.", nullable=False)
_GEOMETRY = Column(
    "geometry", pl.Binary(), "The feature's geometry (repaired when needed).", geometry=True, crs=STORED_CRS
)
_REPAIR = (
    Column("geometry_repaired", pl.Boolean(), "Whether the source geometry was invalid and repaired.", nullable=False),
    Column("repair_note", pl.String(), "What was wrong with the source geometry and how it was repaired."),
)
_UTM = Column("utm_epsg", pl.Int64(), "UTM zone the metric measures were computed in (32647 or 32648).")
_POINT = (
    Column("longitude", pl.Float64(), "Longitude, EPSG:4326 degrees."),
    Column("latitude", pl.Float64(), "Latitude, EPSG:4326 degrees."),
)


def _layer(name: str, description: str, key: str, columns: tuple[Column, ...]) -> LakeTable:
    return LakeTable(
        layer="raw",
        name=f"gis_{name}",
        description=description,
        columns=(_WEEK, *columns, _GEOMETRY, *_REPAIR),
        key=("snapshot_week", key),
        time_column="snapshot_week",
    )


DMA_BOUNDARIES = _layer(
    "dma_boundaries",
    "Boundaries of the district metered areas as the GIS draws them, one (multi)polygon per DMA.",
    "dma_id",
    (
        Column("dma_id", pl.String(), "DMA identifier, as DMAMA knows it.", nullable=False, identifier=True),
        Column("name", pl.String(), "DMA name."),
        Column("zone", pl.String(), "Supply zone."),
        Column("area_km2", pl.Float64(), "Area of the DMA, km², computed in UTM."),
        Column("centroid_longitude", pl.Float64(), "Longitude of the DMA's centroid (computed in UTM), EPSG:4326."),
        Column("centroid_latitude", pl.Float64(), "Latitude of the DMA's centroid (computed in UTM), EPSG:4326."),
        _UTM,
    ),
)

PIPES = _layer(
    "pipes",
    "The pipe network: one line per pipe with its material, diameter and install year.",
    "pipe_id",
    (
        Column("pipe_id", pl.String(), "Pipe identifier.", nullable=False, identifier=True),
        Column("material", pl.String(), "Pipe material: AC, PVC, HDPE, DI (ductile iron), steel."),
        Column("diameter_mm", pl.Int64(), "Nominal diameter, mm."),
        Column("install_year", pl.Int64(), "Year the pipe was laid."),
        Column("length_m", pl.Float64(), "Length of the pipe, metres, computed in UTM."),
        _UTM,
    ),
)

METERS = _layer(
    "meters",
    "Where every meter is (customer and DMA inflow meters), as the GIS places them.",
    "meter_id",
    (
        Column("meter_id", pl.String(), "Meter identifier, as DMAMA knows it.", nullable=False, identifier=True),
        Column("kind", pl.String(), "customer or inflow."),
        Column("installed_on", pl.Date(), "Date the meter was installed."),
        *_POINT,
    ),
)

VALVES = _layer(
    "valves",
    "Network valves: kind, diameter and whether they stand open or closed.",
    "valve_id",
    (
        Column("valve_id", pl.String(), "Valve identifier.", nullable=False, identifier=True),
        Column("kind", pl.String(), "gate, butterfly, PRV (pressure reducing) or air."),
        Column("diameter_mm", pl.Int64(), "Nominal diameter, mm."),
        Column("status", pl.String(), "open or closed."),
        *_POINT,
    ),
)

FACILITIES = _layer(
    "facilities",
    "Pump stations and tanks.",
    "facility_id",
    (
        Column("facility_id", pl.String(), "Facility identifier.", nullable=False, identifier=True),
        Column("kind", pl.String(), "pump_station or tank."),
        Column("name", pl.String(), "Facility name."),
        Column("capacity_m3", pl.Float64(), "Storage capacity of a tank, m³."),
        Column("design_flow_m3h", pl.Float64(), "Design flow of a pump station, m³/h."),
        *_POINT,
    ),
)

LAYER_TABLES = {
    "dma_boundaries": DMA_BOUNDARIES,
    "pipes": PIPES,
    "meters": METERS,
    "valves": VALVES,
    "facilities": FACILITIES,
}
# Each layer's geometry family: a repair must stay in it (a polygon repaired into a line is a reject).
GEOMETRY_FAMILY = {
    "dma_boundaries": "polygon",
    "pipes": "line",
    "meters": "point",
    "valves": "point",
    "facilities": "point",
}
# The source's field names (a Shapefile allows ten characters) and the contract's.
SOURCE_FIELDS = {
    "dma_boundaries": {"dma_id": "dma_id", "name": "name", "zone": "zone"},
    "pipes": {"pipe_id": "pipe_id", "material": "material", "diam_mm": "diameter_mm", "inst_year": "install_year"},
    "meters": {"meter_id": "meter_id", "kind": "kind", "inst_date": "installed_on"},
    "valves": {"valve_id": "valve_id", "kind": "kind", "diam_mm": "diameter_mm", "status": "status"},
    "facilities": {
        "fac_id": "facility_id",
        "kind": "kind",
        "name": "name",
        "cap_m3": "capacity_m3",
        "flow_m3h": "design_flow_m3h",
    },
}

METER_STATUSES = ("matched", "outside_every_dma", "in_overlapping_dmas", "disagrees_with_dmama", "unknown_to_dmama")

METER_DMA = LakeTable(
    layer="staging",
    name="gis_meter_dma",
    description=(
        "Every meter of the map joined spatially to the DMA boundary containing it, next to the DMA DMAMA "
        "files it under: matched, outside every DMA, inside overlapping DMAs, disagreeing with DMAMA, or "
        "unknown to DMAMA."
    ),
    columns=(
        _WEEK,
        Column("meter_id", pl.String(), "Meter identifier.", nullable=False),
        Column("kind", pl.String(), "customer or inflow."),
        Column("map_dma_id", pl.String(), "DMA whose boundary contains the meter (one of them if several)."),
        Column("map_dma_ids", pl.List(pl.String()), "Every DMA whose boundary contains the meter."),
        Column("dmama_dma_id", pl.String(), "DMA DMAMA files the meter under (raw.dmama_meters)."),
        Column("status", pl.String(), f"One of {', '.join(METER_STATUSES)}.", nullable=False),
        Column("nearest_dma_id", pl.String(), "For a meter outside every DMA: the nearest DMA."),
        Column("distance_to_dma_m", pl.Float64(), "For a meter outside every DMA: distance to the nearest, m."),
    ),
    key=("snapshot_week", "meter_id"),
    time_column="snapshot_week",
)

DMA_OVERLAPS = LakeTable(
    layer="staging",
    name="gis_dma_overlaps",
    description="Pairs of DMA boundaries that overlap each other (a DMA must not share ground with another).",
    columns=(
        _WEEK,
        Column("dma_id", pl.String(), "One DMA of the pair (the smaller id).", nullable=False),
        Column("other_dma_id", pl.String(), "The other DMA.", nullable=False),
        Column("overlap_area_m2", pl.Float64(), "Area the two share, m², computed in UTM.", nullable=False),
    ),
    key=("snapshot_week", "dma_id", "other_dma_id"),
    time_column="snapshot_week",
)

DMA_NETWORK = LakeTable(
    layer="marts",
    name="gis_dma_network",
    description=(
        "The network per DMA from the map: area, length of mains inside the boundary (km, in UTM), pipes, "
        "service connections (customer meters located inside), valves, and the centroid the weather "
        "stations are placed at."
    ),
    columns=(
        _WEEK,
        Column("dma_id", pl.String(), "DMA identifier.", nullable=False),
        Column("name", pl.String(), "DMA name."),
        Column("area_km2", pl.Float64(), "Area, km² (UTM)."),
        Column("pipe_length_km", pl.Float64(), "Length of pipe inside the DMA boundary, km (UTM).", nullable=False),
        Column("pipes", pl.Int64(), "Pipes with some length inside the boundary.", nullable=False),
        Column("connections", pl.Int64(), "Customer meters inside the boundary.", nullable=False),
        Column("inflow_meters", pl.Int64(), "DMA inflow meters inside the boundary.", nullable=False),
        Column("valves", pl.Int64(), "Valves inside the boundary.", nullable=False),
        Column("centroid_longitude", pl.Float64(), "Longitude of the centroid, EPSG:4326.", nullable=False),
        Column("centroid_latitude", pl.Float64(), "Latitude of the centroid, EPSG:4326.", nullable=False),
        Column("overlapping_dma_ids", pl.List(pl.String()), "Other DMAs whose boundary overlaps this one."),
        Column("utm_epsg", pl.Int64(), "UTM zone of the metric measures."),
    ),
    key=("snapshot_week", "dma_id"),
    time_column="snapshot_week",
)

TABLES = (*LAYER_TABLES.values(), METER_DMA, DMA_OVERLAPS, DMA_NETWORK)

LAYER_KEYS = {name: dg.AssetKey(["gis", name]) for name in LAYERS}
METER_DMA_KEY = dg.AssetKey(["gis", "meter_dma"])
DMA_OVERLAPS_KEY = dg.AssetKey(["gis", "dma_overlaps"])
DMA_NETWORK_KEY = dg.AssetKey(["gis", "dma_network"])
GEOJSON_EXPORT_KEY = dg.AssetKey(["gis", "geojson_export"])
