"""The GIS simulator: the same DMAs and meters as DMAMA, its files and its WFS-like endpoint."""

from __future__ import annotations

import math

import httpx
import numpy as np
import pyogrio
import pytest
import shapely

from simulators.dmama import DmamaConfig, DmamaSimulator
from simulators.gis import LAYERS, GisConfig, GisSimulator, serve_gis


@pytest.fixture(scope="module")
def server():
    with serve_gis(GisConfig()) as running:
        yield running


@pytest.fixture
def sim(server):
    server.simulator.faults.clear()
    server.simulator.stats.reset()
    yield server.simulator
    server.simulator.faults.clear()


def get(server, layer, **params):
    return httpx.get(f"{server.url}/wfs/{layer}", params=params, headers={"X-API-Key": server.config.api_key})


def test_the_map_covers_dmama_s_dmas_and_meters(sim):
    dmama = DmamaSimulator(DmamaConfig())
    dmas = sim.layer("dma_boundaries")
    assert list(dmas["dma_id"]) == [*dmama.dma_ids(), "DMA-0006"]  # plus the planned extension
    meters = sim.layer("meters")
    expected = sorted(m["meter_id"] for d in dmama.dma_ids() for m in dmama.meters(d))
    assert sorted(meters["meter_id"]) == expected
    truth = sim.ground_truth()
    for detail in dmama.dmas():
        if detail["dma_id"] == "DMA-0002":
            continue  # its sliver across DMA-0001 pulls the centroid away
        centre = shapely.Point(detail["longitude"], detail["latitude"])
        shape = dmas.to_crs(4326).set_index("dma_id").geometry[detail["dma_id"]]
        assert shape.buffer(0).contains(centre) or truth["dmas"][detail["dma_id"]].geom_type == "MultiPolygon"
    assert truth["meter_dma"]["M-0001-0010"] is None
    assert truth["meter_dma"]["M-0002-0010"] == "DMA-0003"


def test_pipes_add_up_to_about_dmama_s_mains_length(sim):
    dmama = DmamaSimulator(DmamaConfig())
    pipes = sim.layer("pipes")
    total_km = pipes.length.sum() / 1000.0
    expected_km = sum(d["mains_length_km"] for d in dmama.dmas())
    assert 0.5 * expected_km < total_km < 1.5 * expected_km
    assert set(pipes["material"]) <= {"AC", "PVC", "HDPE", "DI"}


def test_files_in_three_formats_with_the_valves_shapefile_missing_its_prj(sim, tmp_path):
    written = sim.write_files(tmp_path, ["geojson", "shapefile", "gpkg"])
    assert {p.name for p in written["gpkg"].values()} == {"network.gpkg"}
    assert {str(name) for name, _ in pyogrio.list_layers(tmp_path / "network.gpkg")} == set(LAYERS)
    assert not (tmp_path / "valves.prj").exists() and (tmp_path / "pipes.prj").exists()
    assert pyogrio.read_info(tmp_path / "valves.shp")["crs"] is None
    assert pyogrio.read_info(tmp_path / "pipes.shp")["crs"] == "EPSG:32647"
    assert pyogrio.read_info(tmp_path / "pipes.geojson")["crs"] == "EPSG:4326"
    counts = {fmt: len(pyogrio.read_dataframe(paths["pipes"], layer="pipes")) for fmt, paths in written.items()}
    assert len(set(counts.values())) == 1 and counts["gpkg"] == len(sim.layer("pipes"))


def test_clean_map_has_no_bad_data():
    clean = GisSimulator(GisConfig(defects=frozenset()))
    dmas = clean.layer("dma_boundaries")
    assert len(dmas) == 5 and dmas.is_valid.all()
    assert all(v is not None for v in clean.ground_truth()["meter_dma"].values())


def test_wfs_pages_with_number_matched_and_next_links(server, sim):
    total = len(sim.layer("pipes"))
    seen, start, pages = [], 0, 0
    while True:
        body = get(server, "pipes", startIndex=start, count=100).json()
        pages += 1
        assert body["type"] == "FeatureCollection" and body["numberMatched"] == total
        assert body["numberReturned"] == len(body["features"])
        seen.extend(f["id"] for f in body["features"])
        following = [link["href"] for link in body["links"] if link["rel"] == "next"]
        if not following:
            break
        start = int(httpx.URL(following[0]).params["startIndex"])
    assert pages == math.ceil(total / 100)
    assert seen == list(sim.layer("pipes")["pipe_id"])


def test_wfs_bbox_keeps_exactly_the_features_meeting_it(server, sim):
    meters = sim.layer("meters").to_crs(4326)
    minx, miny, maxx, maxy = meters.total_bounds
    box = (minx, miny, (minx + maxx) / 2, maxy)
    body = get(server, "meters", bbox=",".join(map(str, box)), count=500).json()
    inside = meters[meters.intersects(shapely.box(*box))]
    assert body["numberMatched"] == len(inside) > 0
    assert sorted(f["id"] for f in body["features"]) == sorted(inside["meter_id"])
    coords = np.array([f["geometry"]["coordinates"] for f in body["features"]])
    assert (coords[:, 0] <= box[2] + 1e-9).all()


def test_wfs_refuses_a_wrong_key_and_bad_paging(server, sim):
    assert httpx.get(f"{server.url}/wfs/pipes", headers={"X-API-Key": "nope"}).status_code == 401
    assert get(server, "pipes", count=0).status_code == 400
    assert get(server, "pipes", startIndex="-1").status_code == 400
    assert get(server, "roads").status_code == 404
    assert get(server, "pipes", bbox="1,2,3").status_code == 400
