"""The GIS reader against the simulator's files and WFS on loopback: formats, CRS, paging, bbox, faults."""

from __future__ import annotations

import math

import pytest
import shapely

from resources.gis import GisSource, MissingCrsError
from resources.http import SourceError
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


@pytest.fixture(scope="module")
def files(tmp_path_factory, server):
    root = tmp_path_factory.mktemp("gis-files")
    written = server.simulator.write_files(root, ["geojson", "shapefile", "gpkg"])
    return root, written


def wfs(server, **options) -> tuple[GisSource, list[float]]:
    waits: list[float] = []
    client = GisSource(wfs_base_url=server.url, wfs_api_key=server.config.api_key, backoff_base_s=0.01, **options)
    client._sleep = waits.append
    return client, waits


def test_each_file_format_gives_the_same_features_in_its_own_crs(files, sim):
    _, written = files
    expected = list(sim.layer("meters")["meter_id"])
    crs = {}
    for fmt in ("geojson", "shapefile", "gpkg"):
        read = GisSource(layer_files={"meters": str(written[fmt]["meters"])}).read_layer("meters")
        assert sorted(read.frame["meter_id"]) == sorted(expected), fmt
        crs[fmt] = read.crs
    assert crs == {"geojson": "EPSG:4326", "shapefile": "EPSG:32647", "gpkg": "EPSG:32647"}


def test_a_folder_is_searched_geopackage_first(files):
    root, _ = files
    client = GisSource(files_dir=str(root))
    read = client.read_layer("valves")  # network.gpkg has the valves with their CRS
    assert read.origin.endswith("network.gpkg") and read.crs == "EPSG:32647"
    assert client.describe("pipes").endswith("network.gpkg")


def test_a_file_without_crs_is_refused_naming_file_and_layer(files):
    _, written = files
    client = GisSource(layer_files={"valves": str(written["shapefile"]["valves"])})
    with pytest.raises(MissingCrsError) as caught:
        client.read_layer("valves")
    message = str(caught.value)
    assert "valves.shp" in message and "(layer valves)" in message and "not guessed" in message


def test_missing_files_and_folders_say_what_was_expected(tmp_path):
    with pytest.raises(SourceError, match="no file for layer pipes"):
        GisSource(files_dir=str(tmp_path)).read_layer("pipes")
    with pytest.raises(SourceError, match="does not exist"):
        GisSource(layer_files={"pipes": str(tmp_path / "nope.gpkg")}).read_layer("pipes")
    with pytest.raises(SourceError, match="no GIS source configured"):
        GisSource().read_layer("pipes")


def test_wfs_pages_through_every_layer(server, sim):
    client, _ = wfs(server, page_size=100)
    for layer in LAYERS:
        read = client.read_layer(layer)
        expected = sim.layer(layer)
        assert len(read.frame) == len(expected), layer
        assert read.pages == max(1, math.ceil(len(expected) / 100))
        assert read.crs == "EPSG:4326"
    assert sim.stats.requests_to("/wfs/pipes") == math.ceil(len(sim.layer("pipes")) / 100)


def test_wfs_bbox_reads_only_the_features_meeting_it(server, sim):
    pipes = sim.layer("pipes").to_crs(4326)
    minx, miny, maxx, maxy = pipes.total_bounds
    box = [minx, miny, (minx + maxx) / 2, (miny + maxy) / 2]
    client, _ = wfs(server, bbox=box)
    read = client.read_layer("pipes")
    expected = pipes[pipes.intersects(shapely.box(*box))]
    assert sorted(read.frame["pipe_id"]) == sorted(expected["pipe_id"]) and 0 < len(expected) < len(pipes)


def test_file_bbox_is_judged_in_the_file_s_crs(files, sim):
    _, written = files
    pipes = sim.layer("pipes").to_crs(4326)
    minx, miny, maxx, maxy = pipes.total_bounds
    box = [minx, miny, (minx + maxx) / 2, (miny + maxy) / 2]
    read = GisSource(layer_files={"pipes": str(written["gpkg"]["pipes"])}, bbox=box).read_layer("pipes")
    expected = pipes[pipes.intersects(shapely.box(*box))]
    # The box reprojected to UTM bends slightly: allow a feature or two on its edge.
    assert abs(len(read.frame) - len(expected)) <= 2 and len(read.frame) < len(pipes)


def test_429_is_waited_out_as_retry_after_says(server, sim):
    client, waits = wfs(server, page_size=100)
    sim.inject("status", "/wfs/meters", status=429, retry_after=3)
    read = client.read_layer("meters")
    assert len(read.frame) == len(sim.layer("meters"))
    assert 3 in [round(w) for w in waits]
    assert sim.stats.snapshot()[("/wfs/meters", 429)] == 1


def test_a_rate_limited_backfill_is_slowed_down_not_failed(server, sim):
    client, waits = wfs(server, page_size=100)
    sim.inject("rate_limited", "/wfs/pipes", count=20, share=0.5, retry_after=2)
    read = client.read_layer("pipes")
    assert len(read.frame) == len(sim.layer("pipes"))
    refused = sim.stats.snapshot()[("/wfs/pipes", 429)]
    assert refused >= 3 and waits.count(2) >= 1 and client.rate_limit_waits >= refused


@pytest.mark.parametrize("status", [500, 502, 503])
def test_server_errors_are_retried(server, sim, status):
    client, waits = wfs(server)
    sim.inject("status", "/wfs/facilities", count=2, status=status)
    read = client.read_layer("facilities")
    assert len(read.frame) == len(sim.layer("facilities"))
    assert sim.stats.snapshot()[("/wfs/facilities", status)] == 2 and len(waits) >= 2


def test_a_persistent_outage_fails_naming_the_endpoint_without_the_key(server, sim):
    client, _ = wfs(server, max_retries=1)
    sim.inject("status", "/wfs/valves", count=5, status=503)
    with pytest.raises(SourceError) as caught:
        client.read_layer("valves")
    assert "/wfs/valves" in str(caught.value) and server.config.api_key not in str(caught.value)


def test_a_slow_answer_past_the_timeout_is_retried(server, sim, caplog):
    client, waits = wfs(server, timeout_s=0.3)
    sim.inject("slow", "/wfs/facilities", delay_s=1.0)
    read = client.read_layer("facilities")
    assert len(read.frame) == len(sim.layer("facilities"))
    assert len(waits) == 1 and "no answer within 0.3 s" in caplog.text


@pytest.mark.parametrize("kind", ["truncated", "malformed"])
def test_broken_bodies_are_retried(server, sim, kind):
    client, _ = wfs(server)
    sim.inject(kind, "/wfs/dma_boundaries")
    read = client.read_layer("dma_boundaries")
    assert sorted(read.frame["dma_id"]) == sorted(sim.layer("dma_boundaries")["dma_id"])
    assert sim.stats.requests_to("/wfs/dma_boundaries") == 2


def test_duplicates_and_out_of_order_features_come_through_as_sent(server, sim):
    client, _ = wfs(server, page_size=100)
    sim.inject("duplicates", "/wfs/valves")
    sim.inject("out_of_order", "/wfs/valves")
    read = client.read_layer("valves")
    expected = list(sim.layer("valves")["valve_id"])
    assert len(read.frame) == len(expected) + 1  # the typed layer drops the repeat as a reject
    assert set(read.frame["valve_id"]) == set(expected)


def test_a_wrong_key_fails_with_401(server, sim):
    client = GisSource(wfs_base_url=server.url, wfs_api_key="not-the-key", max_retries=0)
    with pytest.raises(SourceError) as caught:
        client.read_layer("pipes")
    assert caught.value.status == 401 and "not-the-key" not in str(caught.value)


def test_a_next_link_to_another_server_is_refused(server):
    client, _ = wfs(server)
    with pytest.raises(SourceError, match="another server"):
        client._next_params("/wfs/pipes", "http://elsewhere.example:80/wfs/pipes?startIndex=100", {"startIndex": 0})
    with pytest.raises(SourceError, match="does not move past"):
        client._next_params("/wfs/pipes", f"{server.url}/wfs/pipes?startIndex=0", {"startIndex": 0})


def test_clean_simulator_files_read_without_errors(tmp_path):
    simulator = GisSimulator(GisConfig(defects=frozenset(), dmas=2, meters_per_dma=3))
    simulator.write_files(tmp_path, ["shapefile"])
    read = GisSource(files_dir=str(tmp_path)).read_layer("valves")
    assert read.crs == "EPSG:32647" and len(read.frame) == len(simulator.layer("valves"))
