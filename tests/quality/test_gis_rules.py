"""The GIS geometry rules as pure functions: repairs, rejects, UTM measures and the spatial joins."""

from __future__ import annotations

import geopandas as gpd
import pytest
import shapely
from shapely.geometry import LineString, MultiPolygon, Point, Polygon

from quality.gis import (
    dma_overlaps,
    join_meters,
    metric_measures,
    pipe_length_per_dma,
    repair_geometries,
    utm_epsg,
)

UTM = "EPSG:32647"
X0, Y0 = 650_000.0, 1_550_000.0  # near Ayutthaya, UTM 47N metres


def frame(geometries, crs=UTM, **columns) -> gpd.GeoDataFrame:
    return gpd.GeoDataFrame(columns, geometry=list(geometries), crs=crs)


def test_bow_tie_is_repaired_into_its_two_lobes_with_the_same_area():
    # A 2 km × 1 km bow-tie: the ring crosses itself at the centre; each lobe is a triangle of 0.5 km².
    a, b, c, d = (X0, Y0), (X0 + 2000, Y0 + 1000), (X0 + 2000, Y0), (X0, Y0 + 1000)
    bow_tie = Polygon([a, b, c, d, a])
    assert not bow_tie.is_valid
    lobes = MultiPolygon([Polygon([a, (X0 + 1000, Y0 + 500), d, a]), Polygon([(X0 + 1000, Y0 + 500), b, c])])

    out = repair_geometries(frame([bow_tie], dma_id=["DMA-0001"]), "dma_boundaries")

    assert out.rejects == []
    repaired = out.frame.to_crs(UTM).geometry.iloc[0]
    assert repaired.is_valid and repaired.geom_type == "MultiPolygon" and len(repaired.geoms) == 2
    assert repaired.area == pytest.approx(lobes.area, rel=1e-6)
    assert repaired.area == pytest.approx(1_000_000.0, rel=1e-6)
    assert bool(out.frame["geometry_repaired"].iloc[0]) is True
    assert out.frame["repair_note"].iloc[0].startswith("Self-intersection")
    assert out.frame.crs.to_epsg() == 4326


def test_polygon_collapsing_to_a_line_is_rejected_with_its_reason():
    flat = Polygon([(X0, Y0), (X0 + 100, Y0), (X0 + 200, Y0), (X0, Y0)])
    good = Polygon([(X0, Y0), (X0 + 100, Y0), (X0 + 100, Y0 + 100), (X0, Y0 + 100)])

    out = repair_geometries(frame([good, flat], dma_id=["DMA-0001", "DMA-0002"]), "dma_boundaries")

    assert list(out.frame["dma_id"]) == ["DMA-0001"]
    assert bool(out.frame["geometry_repaired"].iloc[0]) is False
    [(row, reason)] = out.rejects
    assert row == 1
    assert reason.startswith("invalid Polygon (")
    assert "no polygon part left" in reason and "cannot be repaired" in reason


def test_empty_and_wrong_family_geometries_are_rejected():
    pipe = LineString([(X0, Y0), (X0 + 50, Y0)])
    out = repair_geometries(frame([pipe, Point(X0, Y0), None], pipe_id=["P-1", "P-2", "P-3"]), "pipes")
    assert list(out.frame["pipe_id"]) == ["P-1"]
    assert out.rejects == [
        (1, "a Point in the pipes layer, which holds line geometries"),
        (2, "geometry is missing or empty"),
    ]


def test_utm_zone_follows_longitude():
    assert utm_epsg(100.5) == 32647
    assert utm_epsg(101.999) == 32647
    assert utm_epsg(102.0) == 32648
    assert utm_epsg(104.8) == 32648  # Ubon Ratchathani


def test_metric_measures_are_computed_in_each_feature_s_utm_zone():
    west = LineString([(X0, Y0), (X0 + 1000, Y0)])  # 1 km in zone 47
    east_utm = gpd.GeoSeries([LineString([(300_000, 1_700_000), (300_000, 1_702_500)])], crs="EPSG:32648")
    square = Polygon([(X0, Y0), (X0 + 1000, Y0), (X0 + 1000, Y0 + 2000), (X0, Y0 + 2000)])
    west_wgs = gpd.GeoSeries([west, square], crs=UTM).to_crs(4326)
    data = gpd.GeoDataFrame(geometry=[*west_wgs, east_utm.to_crs(4326).iloc[0]], crs=4326)

    measured = metric_measures(data)

    assert measured["utm_epsg"].to_list() == [32647, 32647, 32648]
    assert measured["length_m"][0] == pytest.approx(1000.0, abs=0.01)
    assert measured["area_km2"][1] == pytest.approx(2.0, rel=1e-6)
    assert measured["length_m"][2] == pytest.approx(2500.0, abs=0.01)
    centre = gpd.GeoSeries([Point(X0 + 500, Y0 + 1000)], crs=UTM).to_crs(4326).iloc[0]
    assert measured["centroid_longitude"][1] == pytest.approx(centre.x, abs=1e-7)
    assert measured["centroid_latitude"][1] == pytest.approx(centre.y, abs=1e-7)


def _squares() -> gpd.GeoDataFrame:
    # DMA-A: 0..1000 m, DMA-B: 900..2000 m (100 m × 1000 m shared), DMA-C far away.
    a = shapely.box(X0, Y0, X0 + 1000, Y0 + 1000)
    b = shapely.box(X0 + 900, Y0, X0 + 2000, Y0 + 1000)
    c = shapely.box(X0 + 5000, Y0, X0 + 6000, Y0 + 1000)
    return frame([a, b, c], dma_id=["DMA-A", "DMA-B", "DMA-C"]).to_crs(4326)


def test_overlapping_dmas_are_reported_with_the_shared_area():
    [(first, second, area)] = dma_overlaps(_squares())
    assert (first, second) == ("DMA-A", "DMA-B")
    assert area == pytest.approx(100_000.0, rel=1e-4)


def test_meters_are_joined_to_their_dma_and_the_odd_ones_flagged():
    points = [
        Point(X0 + 500, Y0 + 500),  # in A
        Point(X0 + 950, Y0 + 500),  # in A and B
        Point(X0 + 1500, Y0 + 500),  # in B, DMAMA says A
        Point(X0 + 3000, Y0 + 500),  # between B and C: 1000 m from B
        Point(X0 + 5500, Y0 + 500),  # in C, unknown to DMAMA
    ]
    ids = ["M-1", "M-2", "M-3", "M-4", "M-5"]
    meters = frame(points, meter_id=ids, kind=["customer"] * 5).to_crs(4326)
    dmama = {"M-1": "DMA-A", "M-2": "DMA-A", "M-3": "DMA-A", "M-4": "DMA-B"}

    joined = {row["meter_id"]: row for row in join_meters(meters, _squares(), dmama).iter_rows(named=True)}

    assert joined["M-1"]["status"] == "matched" and joined["M-1"]["map_dma_id"] == "DMA-A"
    assert joined["M-2"]["status"] == "in_overlapping_dmas" and joined["M-2"]["map_dma_ids"] == ["DMA-A", "DMA-B"]
    assert joined["M-3"]["status"] == "disagrees_with_dmama"
    assert (joined["M-3"]["map_dma_id"], joined["M-3"]["dmama_dma_id"]) == ("DMA-B", "DMA-A")
    assert joined["M-4"]["status"] == "outside_every_dma" and joined["M-4"]["map_dma_id"] is None
    assert joined["M-4"]["nearest_dma_id"] == "DMA-B"
    assert joined["M-4"]["distance_to_dma_m"] == pytest.approx(1000.0, abs=0.5)
    assert joined["M-5"]["status"] == "unknown_to_dmama"


def test_pipe_length_counts_only_what_lies_inside_each_boundary():
    crossing = LineString([(X0 + 500, Y0 + 200), (X0 + 3000, Y0 + 200)])  # 500 in A, 1100 in B (100 shared)
    inside = LineString([(X0 + 5100, Y0 + 100), (X0 + 5100, Y0 + 400)])  # 300 in C
    pipes = frame([crossing, inside], pipe_id=["P-1", "P-2"]).to_crs(4326)

    lengths = pipe_length_per_dma(pipes, _squares())

    assert lengths["DMA-A"][0] == pytest.approx(500.0, abs=0.05) and lengths["DMA-A"][1] == 1
    assert lengths["DMA-B"][0] == pytest.approx(1100.0, abs=0.05)
    assert lengths["DMA-C"] == (pytest.approx(300.0, abs=0.05), 1)


def test_a_valid_polygon_without_area_is_a_sliver_reject():
    from quality.gis import slivers

    # Straight in UTM, bent a hair by reprojection: valid in EPSG:4326 yet with no ground to speak of.
    thin = Polygon([(X0, Y0), (X0 + 500, Y0 + 1e-4), (X0 + 1000, Y0), (X0, Y0)])
    real = shapely.box(X0, Y0, X0 + 100, Y0 + 100)
    data = frame([real, thin], dma_id=["DMA-A", "DMA-B"]).to_crs(4326)
    data["source_row"] = [0, 1]
    [(row, reason)] = slivers(data, metric_measures(data), "dma_boundaries")
    assert row == 1 and reason.endswith("a sliver, not a boundary")
    assert slivers(data, metric_measures(data), "pipes") == []
