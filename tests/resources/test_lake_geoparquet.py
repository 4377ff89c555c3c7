"""The lake writes tables with a geometry column as GeoParquet, and every other table as before."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import polars as pl
import pyarrow.parquet as pq
import shapely

from resources.lake import Column, Lake, LakeTable

SITES = LakeTable(
    layer="raw",
    name="sites",
    description="Sites.",
    columns=(
        Column("site_id", pl.String(), "Site.", nullable=False),
        Column("outline", pl.Binary(), "Outline.", geometry=True, crs="EPSG:32647"),
    ),
    key=("site_id",),
)
PLAIN = LakeTable(
    layer="raw",
    name="plain",
    description="No geometry.",
    columns=(Column("n", pl.Int64(), "A number."), Column("blob", pl.Binary(), "Bytes, not geometry.")),
)


def test_geometry_tables_carry_geoparquet_metadata(lake: Lake):
    shapes = [shapely.box(650_000, 1_550_000, 650_100, 1_550_100), shapely.Point(650_050, 1_550_050), None]
    frame = pl.DataFrame(
        {"site_id": ["A", "B", "C"], "outline": [shapely.to_wkb(g) if g is not None else None for g in shapes]},
        schema=SITES.schema,
    )
    [path] = lake.replace_snapshot(SITES, frame).paths
    geo = json.loads(pq.ParquetFile(path).metadata.metadata[b"geo"])
    assert geo["version"] == "1.1.0" and geo["primary_column"] == "outline"
    column = geo["columns"]["outline"]
    assert column["encoding"] == "WKB" and column["geometry_types"] == ["Point", "Polygon"]
    assert column["crs"]["id"] == {"authority": "EPSG", "code": 32647}
    read = gpd.read_parquet(path)
    assert read.crs.to_epsg() == 32647 and read.geometry.iloc[0].area == 10_000.0
    assert read.geometry.iloc[2] is None
    # Same rows, same bytes: the metadata is deterministic.
    assert lake.replace_snapshot(SITES, frame).frame.equals(lake.read(SITES))
    first = Path(path).read_bytes()
    lake.replace_snapshot(SITES, frame)
    assert Path(path).read_bytes() == first


def test_other_tables_have_no_geo_key(lake: Lake):
    [path] = lake.replace_snapshot(PLAIN, pl.DataFrame({"n": [1], "blob": [b"\x01\x02"]}, schema=PLAIN.schema)).paths
    assert b"geo" not in (pq.ParquetFile(path).metadata.metadata or {})
