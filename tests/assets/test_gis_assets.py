"""GIS assets and checks, materialized through Dagster from the simulator's files and WFS on loopback."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import dagster as dg
import geopandas as gpd
import polars as pl
import pyarrow.parquet as pq
import pyogrio
import pytest
import shapely

from assets import gis as gis_assets
from assets import weather as weather_assets
from contracts.dmama import DMAS as DMAMA_DMAS
from contracts.dmama import METERS as DMAMA_METERS
from contracts.gis import DMA_BOUNDARIES, DMA_NETWORK, DMA_OVERLAPS, METER_DMA, METERS, PIPES, TABLES
from quality.conform import conform, rejects_table
from quality.gis import gis_checks
from resources.catalog import AnalystCatalog
from resources.gis import GisSource
from resources.lake import Lake
from simulators.dmama import DmamaConfig, DmamaSimulator
from simulators.gis import GisConfig, GisSimulator, serve_gis

ASSETS = [*gis_assets.layer_assets, *gis_assets.derived_assets]
WEEK = gis_assets.weekly.get_partition_key_for_timestamp(datetime.now(UTC).timestamp())


def land_dmama(lake: Lake) -> DmamaSimulator:
    """DMAMA's DMAs and meters in the lake, as dmama/dmas and dmama/meters land them."""
    dmama = DmamaSimulator(DmamaConfig())
    meters = [m for dma in dmama.dma_ids() for m in dmama.meters(dma)]
    lake.replace_snapshot(DMAMA_METERS, conform(meters, DMAMA_METERS, source="dmama", partition_key="s").frame)
    dmas = [{k: v for k, v in d.items() if k != "inflow_meter_ids"} for d in dmama.dmas()]
    lake.replace_snapshot(DMAMA_DMAS, conform(dmas, DMAMA_DMAS, source="dmama", partition_key="s").frame)
    return dmama


def metadata_of(result, name: str) -> dict:
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == name)
    return {k: v.value for k, v in event.materialization.metadata.items()}


@pytest.fixture(scope="module")
def gis_instance():
    """One Dagster instance for the module's single-asset runs (creating one costs about a second)."""
    with dg.instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture(scope="module")
def simulator():
    return GisSimulator(GisConfig())


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, simulator, gis_instance):
    """Every GIS asset and check for this week, read from the GeoPackage: one run shared by the module."""
    root = tmp_path_factory.mktemp("gis")
    simulator.write_files(root / "files", ["gpkg"])
    lake = Lake(root=str(root / "lake"))
    land_dmama(lake)
    result = dg.materialize(
        [*ASSETS, *gis_checks(gis_assets.weekly)],
        partition_key=WEEK,
        resources={"lake": lake, "gis": GisSource(files_dir=str(root / "files"))},
        instance=gis_instance,
    )
    return result, lake, root


def test_every_layer_reconciles_and_the_bad_polygons_are_repaired_or_rejected(full_run, simulator):
    result, lake, _ = full_run
    for layer in ("dma_boundaries", "pipes", "meters", "valves", "facilities"):
        meta = metadata_of(result, layer)
        assert meta["rows_received"] == meta["rows_written"] + meta["rows_rejected"], layer
        assert meta["source_crs"] == "EPSG:32647" and meta["stored_crs"] == "EPSG:4326"
    dmas_meta = metadata_of(result, "dma_boundaries")
    assert (dmas_meta["rows_received"], dmas_meta["rows_written"], dmas_meta["rows_rejected"]) == (6, 5, 1)
    assert dmas_meta["geometries_repaired"] == 1

    dmas = lake.read(DMA_BOUNDARIES)
    bow_tie = dmas.filter(pl.col("dma_id") == "DMA-0005").row(0, named=True)
    assert bow_tie["geometry_repaired"] is True and bow_tie["repair_note"].startswith("Self-intersection")
    truth = simulator.ground_truth()["dmas"]["DMA-0005"]
    assert bow_tie["area_km2"] == pytest.approx(truth.area / 1e6, rel=1e-6)
    repaired = gpd.GeoSeries(shapely.from_wkb([bow_tie["geometry"]]), crs=4326).to_crs(32647).iloc[0]
    assert repaired.is_valid and repaired.symmetric_difference(truth).area < 1.0  # m²

    [reject] = lake.read(rejects_table(DMA_BOUNDARIES)).rows(named=True)
    assert reject["field"] == "geometry" and "cannot be repaired" in reject["reason"]
    assert json.loads(reject["raw_payload"])["properties"]["dma_id"] == "DMA-0006"


def test_meters_are_joined_to_the_right_dma_and_the_odd_ones_reported(full_run):
    _, lake, _ = full_run
    joined = {row["meter_id"]: row for row in lake.read(METER_DMA).iter_rows(named=True)}
    assert len(joined) == 50
    assert joined["M-0003-0004"]["status"] == "matched" and joined["M-0003-0004"]["map_dma_id"] == "DMA-0003"
    flagged = {m: r["status"] for m, r in joined.items() if r["status"] != "matched"}
    assert flagged == {"M-0001-0010": "outside_every_dma", "M-0002-0010": "disagrees_with_dmama"}
    mismatch = joined["M-0002-0010"]
    assert (mismatch["map_dma_id"], mismatch["dmama_dma_id"]) == ("DMA-0003", "DMA-0002")
    assert joined["M-0001-0010"]["distance_to_dma_m"] > 0

    [overlap] = lake.read(DMA_OVERLAPS).rows(named=True)
    assert (overlap["dma_id"], overlap["other_dma_id"]) == ("DMA-0001", "DMA-0002")
    assert overlap["overlap_area_m2"] > 10_000


def test_spatial_checks_warn_about_the_bad_data_and_the_rest_pass(full_run):
    result, _, _ = full_run
    outcomes = {f"{e.asset_key.path[-1]}:{e.check_name}": e for e in result.get_asset_check_evaluations()}
    for name in (
        "meter_dma:meters_inside_one_dma",
        "meter_dma:meters_agree_with_dmama",
        "dma_overlaps:dmas_do_not_overlap",
    ):
        assert outcomes[name].passed is False and outcomes[name].severity == dg.AssetCheckSeverity.WARN, name
    assert outcomes["meter_dma:meters_agree_with_dmama"].metadata["disagreements"].value == (
        "M-0002-0010 (map DMA-0003, DMAMA DMA-0002)"
    )
    others = {k: e.passed for k, e in outcomes.items() if not k.startswith(("meter_dma:", "dma_overlaps:"))}
    assert others and all(others.values()), others


def test_pipe_km_per_dma_equals_the_sum_computed_in_utm(full_run):
    _, lake, root = full_run
    package = root / "files" / "network.gpkg"
    pipes = pyogrio.read_dataframe(package, layer="pipes")
    dmas = pyogrio.read_dataframe(package, layer="dma_boundaries")
    dmas = dmas[dmas["dma_id"] != "DMA-0006"].assign(geometry=lambda f: shapely.make_valid(f.geometry.values))
    inside = gpd.overlay(pipes, dmas[["dma_id", "geometry"]], how="intersection", keep_geom_type=True)
    expected_km = (inside.length.groupby(inside["dma_id"]).sum() / 1000.0).to_dict()

    network = {row["dma_id"]: row for row in lake.read(DMA_NETWORK).iter_rows(named=True)}
    assert set(network) == set(expected_km)
    for dma_id, km in expected_km.items():
        assert network[dma_id]["pipe_length_km"] == pytest.approx(km, abs=1e-3), dma_id
    own = lake.read(DMAMA_METERS).filter((pl.col("dma_id") == "DMA-0003") & (pl.col("kind") == "customer")).height
    misplaced = lake.read(DMAMA_METERS).filter(pl.col("meter_id") == "M-0002-0010")["kind"][0] == "customer"
    assert network["DMA-0003"]["connections"] == own + misplaced  # DMA-0002's misplaced meter lies in DMA-0003
    assert network["DMA-0001"]["overlapping_dma_ids"] == ["DMA-0002"]
    stored = lake.read(PIPES)
    assert stored["length_m"].sum() / 1000 == pytest.approx(pipes.length.sum() / 1000, abs=1e-3)


def test_layers_are_geoparquet_readable_by_geopandas(full_run, simulator):
    _, lake, _ = full_run
    [path] = lake.files(METERS)
    geo = json.loads(pq.ParquetFile(path).metadata.metadata[b"geo"])
    assert geo["primary_column"] == "geometry" and geo["version"] == "1.1.0"
    assert geo["columns"]["geometry"]["encoding"] == "WKB"
    assert geo["columns"]["geometry"]["geometry_types"] == ["Point"]
    frame = gpd.read_parquet(path)
    assert frame.crs.to_epsg() == 4326 and len(frame) == 50
    source = simulator.layer("meters").to_crs(4326).set_index("meter_id").geometry
    for meter_id, point in zip(frame["meter_id"], frame.geometry, strict=True):
        assert point.distance(source[meter_id]) < 1e-9
    [dma_file] = lake.files(DMA_BOUNDARIES)
    types = json.loads(pq.ParquetFile(dma_file).metadata.metadata[b"geo"])["columns"]["geometry"]["geometry_types"]
    assert types == ["MultiPolygon"]  # the GeoPackage layer declares MultiPolygon: single parts come promoted


def test_geojson_export_for_web_maps(full_run):
    result, _, root = full_run
    meta = metadata_of(result, "geojson_export")
    assert meta["features_meters"] == 50 and meta["week"] == WEEK
    exported = pyogrio.read_dataframe(root / "lake" / "exports" / "gis" / "dma_boundaries.geojson")
    assert exported.crs.to_epsg() == 4326 and len(exported) == 5
    assert {"pipe_length_km", "connections", "area_km2"} <= set(exported.columns)


def test_catalog_exposes_geometry_as_wkb_and_as_geometry_views(full_run, tmp_path):
    import duckdb

    _, lake, _ = full_run
    published = AnalystCatalog(path=str(tmp_path / "c.duckdb")).publish(lake, TABLES)
    with duckdb.connect(published.path, read_only=True) as con:
        kind = con.execute(
            "SELECT data_type FROM duckdb_columns() WHERE table_name = 'gis_meters' AND column_name = 'geometry'"
        ).fetchone()[0]
        comment = con.execute(
            "SELECT comment FROM duckdb_columns() WHERE table_name = 'gis_meters' AND column_name = 'geometry'"
        ).fetchone()[0]
        wkb = con.execute("SELECT geometry FROM raw.gis_meters WHERE meter_id = 'M-0003-0004'").fetchone()[0]
        geo_views = sorted(
            name
            for (name,) in con.execute("SELECT view_name FROM duckdb_views() WHERE view_name LIKE '%_geo'").fetchall()
        )
        text = con.execute(
            "SELECT ST_AsText(geometry) FROM raw.gis_meters_geo WHERE meter_id = 'M-0003-0004'"
        ).fetchone()
    assert kind == "BLOB" and "WKB in EPSG:4326" in comment
    point = shapely.from_wkb(bytes(wkb))
    assert point.geom_type == "Point" and 99 < point.x < 102 and 12 < point.y < 16
    # DuckDB 2 has GEOMETRY and ST_GeomFromWKB in its core; the spatial extension (ST_Area…) is not installed
    # here (no internet), so published.spatial is False and the _geo views still exist.
    assert geo_views == [f"gis_{name}_geo" for name in sorted(gis_assets.LAYERS)]
    assert shapely.from_wkt(text[0]).equals_exact(point, 1e-9)
    assert published.spatial is False


def test_weather_stations_move_to_the_gis_centroids(full_run):
    _, lake, _ = full_run
    network = {r["dma_id"]: r for r in lake.read(DMA_NETWORK).iter_rows(named=True)}
    locations = {dma_id: (lat, lon) for dma_id, lat, lon in weather_assets._locations(None, lake)}
    assert set(locations) == {f"DMA-000{i}" for i in range(1, 6)}
    for dma_id, (lat, lon) in locations.items():
        assert (lat, lon) == (network[dma_id]["centroid_latitude"], network[dma_id]["centroid_longitude"])


def test_weather_keeps_dmama_coordinates_without_a_map(tmp_path):
    lake = Lake(root=str(tmp_path / "lake"))
    dmama = land_dmama(lake)
    locations = weather_assets._locations(None, lake)
    assert locations == [(d["dma_id"], d["latitude"], d["longitude"]) for d in dmama.dmas()]


def test_a_shapefile_without_prj_fails_the_run_naming_file_and_layer(tmp_path, gis_instance):
    GisSimulator(GisConfig(dmas=2, meters_per_dma=2)).write_files(tmp_path / "files", ["shapefile"])
    result = dg.materialize(
        ASSETS,
        selection=[gis_assets.LAYER_KEYS["valves"]],
        partition_key=WEEK,
        resources={"lake": Lake(root=str(tmp_path / "lake")), "gis": GisSource(files_dir=str(tmp_path / "files"))},
        instance=gis_instance,
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    message = failure.step_failure_data.error.message
    assert "valves.shp (layer valves) has no coordinate reference system" in message
    assert f"partition {WEEK}" in message


@pytest.fixture(scope="module")
def wfs_server():
    with serve_gis(GisConfig()) as running:
        yield running


def test_wfs_duplicates_become_rejects_and_a_rerun_replaces_the_week(wfs_server, tmp_path, gis_instance):
    lake = Lake(root=str(tmp_path / "lake"))
    client = GisSource(wfs_base_url=wfs_server.url, wfs_api_key=wfs_server.config.api_key, page_size=20)
    wfs_server.simulator.faults.clear()
    wfs_server.simulator.inject("duplicates", "/wfs/meters")
    results = [
        dg.materialize(
            ASSETS,
            selection=[gis_assets.LAYER_KEYS["meters"]],
            partition_key=WEEK,
            resources={"lake": lake, "gis": client},
            instance=gis_instance,
        )
        for _ in range(2)
    ]
    first, second = (metadata_of(r, "meters") for r in results)
    assert (first["rows_received"], first["rows_written"], first["rows_rejected"]) == (51, 50, 1)
    assert first["pages"] == 3 and first["source_crs"] == "EPSG:4326"
    assert (second["rows_received"], second["rows_rejected"]) == (50, 0)
    assert lake.read(METERS).height == 50 and lake.read(rejects_table(METERS)).height == 0


def test_wfs_wrong_types_are_rejected_with_the_field(wfs_server, tmp_path, gis_instance):
    lake = Lake(root=str(tmp_path / "lake"))
    client = GisSource(wfs_base_url=wfs_server.url, wfs_api_key=wfs_server.config.api_key)
    wfs_server.simulator.faults.clear()
    wfs_server.simulator.inject("wrong_types", "/wfs/pipes")
    result = dg.materialize(
        ASSETS,
        selection=[gis_assets.LAYER_KEYS["pipes"]],
        partition_key=WEEK,
        resources={"lake": lake, "gis": client},
        instance=gis_instance,
    )
    meta = metadata_of(result, "pipes")
    assert meta["rows_rejected"] == 1 and meta["rows_received"] == meta["rows_written"] + 1
    [reject] = lake.read(rejects_table(PIPES)).rows(named=True)
    assert reject["field"] == "diameter_mm" and reject["reason"] == "expected a whole number, got 'n/a'"


def test_a_past_week_cannot_be_snapshotted(tmp_path, gis_instance):
    past = gis_assets.weekly.get_partition_key_for_timestamp((datetime.now(UTC) - timedelta(days=14)).timestamp())
    result = dg.materialize(
        ASSETS,
        selection=[gis_assets.LAYER_KEYS["pipes"]],
        partition_key=past,
        resources={"lake": Lake(root=str(tmp_path / "lake")), "gis": GisSource(files_dir=str(tmp_path))},
        instance=gis_instance,
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert "a past week's map cannot be read again" in failure.step_failure_data.error.message


def test_wfs_boundaries_in_wgs84_are_repaired_and_rejected_like_the_files(wfs_server, tmp_path, gis_instance):
    lake = Lake(root=str(tmp_path / "lake"))
    client = GisSource(wfs_base_url=wfs_server.url, wfs_api_key=wfs_server.config.api_key)
    wfs_server.simulator.faults.clear()
    result = dg.materialize(
        ASSETS,
        selection=[gis_assets.LAYER_KEYS["dma_boundaries"]],
        partition_key=WEEK,
        resources={"lake": lake, "gis": client},
        instance=gis_instance,
    )
    meta = metadata_of(result, "dma_boundaries")
    assert (meta["rows_received"], meta["rows_written"], meta["rows_rejected"]) == (6, 5, 1)
    assert meta["geometries_repaired"] == 1 and meta["source_crs"] == "EPSG:4326"
    truth = wfs_server.simulator.ground_truth()["dmas"]["DMA-0005"]
    area = lake.read(DMA_BOUNDARIES).filter(pl.col("dma_id") == "DMA-0005")["area_km2"][0]
    assert area == pytest.approx(truth.area / 1e6, rel=1e-4)  # repaired in EPSG:4326, measured in UTM
    [reject] = lake.read(rejects_table(DMA_BOUNDARIES)).rows(named=True)
    assert json.loads(reject["raw_payload"])["properties"]["dma_id"] == "DMA-0006"


@pytest.mark.parametrize("fmt", ["geojson", "shapefile"])
def test_geojson_and_shapefile_layers_land_typed(fmt, tmp_path, gis_instance):
    simulator = GisSimulator(GisConfig(dmas=2, meters_per_dma=3, defects=frozenset()))
    written = simulator.write_files(tmp_path / "files", [fmt])[fmt]
    lake = Lake(root=str(tmp_path / "lake"))
    layers = ["meters", "facilities", "pipes"]
    result = dg.materialize(
        ASSETS,
        selection=[gis_assets.LAYER_KEYS[layer] for layer in layers],
        partition_key=WEEK,
        resources={"lake": lake, "gis": GisSource(layer_files={k: str(v) for k, v in written.items()})},
        instance=gis_instance,
    )
    for layer in layers:
        meta = metadata_of(result, layer)
        assert meta["rows_rejected"] == 0 and meta["rows_written"] == len(simulator.layer(layer)), (layer, meta)
    meters = lake.read(METERS)
    assert meters["installed_on"].null_count() == 0 and meters["installed_on"].dtype == pl.Date
    tanks = lake.read(gis_assets.LAYER_TABLES["facilities"]).filter(pl.col("kind") == "tank")
    assert tanks["capacity_m3"].null_count() == 0 and tanks["design_flow_m3h"].null_count() == tanks.height
    assert lake.read(PIPES)["diameter_mm"].dtype == pl.Int64
