"""GIS simulator: the water network's map, as files (GeoJSON, Shapefile, GeoPackage) and a WFS-like endpoint.

The map covers the same district metered areas and meters DMAMA knows (``simulators/dmama.py``, same seed,
DMA count and meters per DMA): each DMA is an irregular octagon around DMAMA's centre coordinates, sized from
its connections (about 250 per km²) and kept clear of its neighbours; the pipe network is a street grid
clipped to the DMA, its spacing chosen so that the mains add up to DMAMA's ``mains_length_km``; every DMAMA
meter is a point inside its DMA; valves sit at pipe junctions; each DMA has a pump station, every other one
a tank. Coordinates are built in UTM 47N (EPSG:32647, shared/DOMAIN.md); everything is deterministic from
the seed.

Layers and their fields (names fit a Shapefile's ten characters, as a utility's GIS export would):

| layer            | geometry        | fields                                                     |
|------------------|-----------------|------------------------------------------------------------|
| ``dma_boundaries`` | (Multi)Polygon | ``dma_id``, ``name``, ``zone``                            |
| ``pipes``          | LineString     | ``pipe_id``, ``material``, ``diam_mm``, ``inst_year``     |
| ``meters``         | Point          | ``meter_id``, ``kind``, ``inst_date``                     |
| ``valves``         | Point          | ``valve_id``, ``kind``, ``diam_mm``, ``status``           |
| ``facilities``     | Point          | ``fac_id``, ``kind``, ``name``, ``cap_m3``, ``flow_m3h``  |

``write_files(dir, formats)`` writes ``<layer>.geojson`` (EPSG:4326, as RFC 7946 requires),
``<layer>.shp`` (EPSG:32647, with its ``.prj``) and one ``network.gpkg`` holding every layer (EPSG:32647).

The WFS-like endpoint ``GET /wfs/{layer}`` answers GeoJSON FeatureCollections in EPSG:4326, paged with
``startIndex`` (0-based) and ``count`` (at most ``max_count``), with ``numberMatched``, ``numberReturned``
and a ``links`` entry ``rel="next"`` while features remain; ``bbox=minlon,minlat,maxlon,maxlat`` keeps the
features whose bounding box meets it. Every request needs the ``X-API-Key`` header. Faults come from the
shared fault book (``simulators/faults.py``): status answers (429 with Retry-After, 5xx), ``rate_limited``,
``slow``, ``truncated`` and ``malformed`` bodies, ``duplicates`` and ``out_of_order`` features and
``wrong_types`` properties.

The map's own bad data (``GisConfig.defects``, all on by default, the way a real export arrives):

- ``bow_tie``: the last DMA's boundary is digitised as a self-intersecting ring (a bow-tie of two lobes);
  ``shapely.make_valid`` repairs it into the two lobes, which is the DMA's true shape;
- ``collapsed_polygon``: a planned DMA (the id after the last) whose ring runs along a straight line:
  it has no area and cannot be repaired;
- ``missing_crs``: the valves Shapefile has no ``.prj``, so its coordinates are in no known system;
- ``meter_outside``: DMA-0001's last meter lies outside every DMA;
- ``overlapping_dmas``: DMA-0002's boundary carries a second part lying across DMA-0001's edge;
- ``meter_dma_mismatch``: DMA-0002's last meter lies inside DMA-0003 (DMA-0001 with fewer DMAs), so the
  map and DMAMA disagree about its DMA.

``ground_truth()`` tells tests what the map should yield (true DMA shapes, every meter's DMA by location).
"""

from __future__ import annotations

import argparse
import json
import math
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.dmama import DmamaConfig, DmamaSimulator
from simulators.faults import FaultBook, RequestStats, delay, faults_endpoint, mangle_body, row_fault, status_response

__all__ = [
    "DEFECTS",
    "FORMATS",
    "LAYERS",
    "GisConfig",
    "GisSimulator",
    "credentials_env",
    "main",
    "serve_gis",
]

LAYERS = ("dma_boundaries", "pipes", "meters", "valves", "facilities")
FORMATS = ("geojson", "shapefile", "gpkg")
DEFECTS = frozenset(
    {"bow_tie", "collapsed_polygon", "missing_crs", "meter_outside", "overlapping_dmas", "meter_dma_mismatch"}
)
UTM_CRS = "EPSG:32647"
WGS84 = "EPSG:4326"
GPKG_NAME = "network.gpkg"

_CONNECTIONS_PER_KM2 = 250.0
_MATERIALS_BY_ERA = ((1990, "AC"), (2008, "PVC"), (2100, "HDPE"))
_DIAMETERS_MM = (63, 90, 110, 160, 200)
_TRUNK_MM = 300


@dataclass(frozen=True)
class GisConfig:
    """Size, seed, credentials and bad data of a simulated GIS; seed and sizes match the DMAMA it maps."""

    seed: int = 42
    dmas: int = 5
    meters_per_dma: int = 10
    api_key: str = "sim-gis-key"
    defects: frozenset[str] = DEFECTS
    max_count: int = 500  # largest page the WFS serves

    def __post_init__(self) -> None:
        unknown = set(self.defects) - DEFECTS
        if unknown:
            raise ValueError(f"GisConfig.defects: unknown {sorted(unknown)}; expected some of {sorted(DEFECTS)}")
        if self.max_count < 1:
            raise ValueError(f"GisConfig.max_count must be positive, got {self.max_count}")
        DmamaConfig(seed=self.seed, dmas=self.dmas, meters_per_dma=self.meters_per_dma)  # same limits

    def __repr__(self) -> str:
        return f"GisConfig(seed={self.seed}, dmas={self.dmas}, meters_per_dma={self.meters_per_dma})"


@dataclass
class _Map:
    """The generated map: one GeoDataFrame per layer in UTM 47N, and what it should yield."""

    layers: dict[str, Any]
    true_dmas: dict[str, Any]  # DMA id -> valid shapely geometry (UTM)
    meter_dma: dict[str, str | None]  # meter id -> DMA containing it by location (None: outside every DMA)
    features: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # EPSG:4326 GeoJSON, for the WFS
    bounds: dict[str, np.ndarray] = field(default_factory=dict)  # per layer: (n, 4) lon/lat bboxes


class GisSimulator:
    """The map as GeoDataFrames (``layer``), as files (``write_files``) and as a WFS-like app (``.app``)."""

    def __init__(self, config: GisConfig | None = None) -> None:
        self.config = config or GisConfig()
        self.faults = FaultBook()
        self.stats = RequestStats()
        self._map = _build_map(self.config)
        self.app = Starlette(
            routes=[
                Route("/wfs/{layer}", self._wfs, methods=["GET"]),
                Route("/_sim/faults", faults_endpoint(self.faults), methods=["GET", "POST", "DELETE"]),
            ]
        )

    # ------------------------------------------------------------------ data

    def layer(self, name: str) -> Any:
        """One layer as a GeoDataFrame in EPSG:32647, bad data included (a copy)."""
        if name not in LAYERS:
            raise KeyError(f"no layer {name!r}; layers are {', '.join(LAYERS)}")
        return self._map.layers[name].copy()

    def ground_truth(self) -> dict[str, Any]:
        """What a correct reading of the map gives: true DMA shapes (UTM, valid) and each meter's DMA."""
        return {"dmas": dict(self._map.true_dmas), "meter_dma": dict(self._map.meter_dma)}

    def inject(self, kind: str, path: str = "*", count: int = 1, **params: Any) -> None:
        """Arm a shared-book fault for the next ``count`` requests matching ``path`` (e.g. ``/wfs/pipes``)."""
        self.faults.inject(kind, path, count, **params)

    def write_files(self, directory: str | Path, formats: Iterable[str] = FORMATS) -> dict[str, dict[str, Path]]:
        """Write every layer in each of ``formats``; returns {format: {layer: path}}."""
        return write_files(self, directory, formats)

    # ------------------------------------------------------------------ HTTP

    async def _wfs(self, request: Request) -> Response:
        path = request.url.path
        fault = self.faults.take(path)
        await delay(fault)
        if fault is not None and fault.kind == "status":
            response: Response = status_response(fault)
        elif not secrets.compare_digest(request.headers.get("x-api-key", "").encode(), self.config.api_key.encode()):
            response = JSONResponse({"error": "invalid_api_key", "detail": "missing or wrong X-API-Key header"}, 401)
        else:
            try:
                body = self._page(request)
            except ValueError as exc:
                response = JSONResponse({"error": "bad_request", "detail": str(exc)}, 400)
            except KeyError as exc:
                response = JSONResponse({"error": "not_found", "detail": str(exc.args[0])}, 404)
            else:
                if fault is not None and fault.kind in ("duplicates", "out_of_order"):
                    body["features"] = row_fault(body["features"], fault.kind)
                elif fault is not None and fault.kind == "wrong_types":
                    props = row_fault([f["properties"] for f in body["features"]], "wrong_types")
                    body["features"] = [{**f, "properties": p} for f, p in zip(body["features"], props, strict=True)]
                content = json.dumps(body, separators=(",", ":")).encode()
                response = Response(mangle_body(content, fault), media_type="application/geo+json")
        self.stats.record(path, response.status_code)
        return response

    def _page(self, request: Request) -> dict[str, Any]:
        layer = request.path_params["layer"]
        if layer not in LAYERS:
            raise KeyError(f"no layer {layer!r}; layers are {', '.join(LAYERS)}")
        params = request.query_params
        start = _non_negative(params.get("startIndex", "0"), "startIndex")
        count = _non_negative(params.get("count", str(min(100, self.config.max_count))), "count")
        if not 1 <= count <= self.config.max_count:
            raise ValueError(f"count must be between 1 and {self.config.max_count}, got {count}")
        features = self._map.features[layer]
        chosen = np.arange(len(features))
        if params.get("bbox"):
            chosen = chosen[_meets(self._map.bounds[layer], _parse_bbox(params["bbox"]))]
        page = [features[i] for i in chosen[start : start + count].tolist()]
        body: dict[str, Any] = {
            "type": "FeatureCollection",
            "name": layer,
            "numberMatched": len(chosen),
            "numberReturned": len(page),
            "features": page,
            "links": [{"rel": "self", "href": str(request.url), "type": "application/geo+json"}],
        }
        if start + count < len(chosen):
            following = request.url.include_query_params(startIndex=start + count, count=count)
            body["links"].append({"rel": "next", "href": str(following), "type": "application/geo+json"})
        return body


# ---------------------------------------------------------------------------------------------- files


def write_files(
    simulator: GisSimulator, directory: str | Path, formats: Iterable[str] = FORMATS
) -> dict[str, dict[str, Path]]:
    """Write the map's layers as GeoJSON (EPSG:4326), Shapefiles and a GeoPackage (EPSG:32647) in ``directory``.

    With the ``missing_crs`` defect the valves Shapefile is written without its ``.prj``.
    """
    import pyogrio

    chosen = list(formats)
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown:
        raise ValueError(f"unknown formats {unknown}; expected some of {list(FORMATS)}")
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    written: dict[str, dict[str, Path]] = {}
    for fmt in chosen:
        paths: dict[str, Path] = {}
        for name in LAYERS:
            frame = simulator.layer(name)
            if fmt == "geojson":
                path = root / f"{name}.geojson"
                path.unlink(missing_ok=True)
                pyogrio.write_dataframe(frame.to_crs(WGS84), path, driver="GeoJSON")
            elif fmt == "shapefile":
                path = root / f"{name}.shp"
                for sibling in root.glob(f"{name}.*"):
                    if sibling.suffix in (".shp", ".shx", ".dbf", ".prj", ".cpg"):
                        sibling.unlink()
                # A layer mixing Polygon and MultiPolygon is one polygon layer to a Shapefile.
                kind = "MultiPolygon" if name == "dma_boundaries" else None
                pyogrio.write_dataframe(frame, path, driver="ESRI Shapefile", geometry_type=kind)
                if name == "valves" and "missing_crs" in simulator.config.defects:
                    path.with_suffix(".prj").unlink()
            else:
                path = root / GPKG_NAME
                if name == LAYERS[0]:
                    path.unlink(missing_ok=True)
                kind = "MultiPolygon" if name == "dma_boundaries" else None
                pyogrio.write_dataframe(frame, path, layer=name, driver="GPKG", geometry_type=kind)
            paths[name] = path
        written[fmt] = paths
    return written


# ---------------------------------------------------------------------------------------------- the map


def _rng(seed: int, *keys: int) -> np.random.Generator:
    return np.random.default_rng([seed & 0xFFFFFFFF, 0x6715, *keys])


def _build_map(config: GisConfig) -> _Map:
    import geopandas as gpd
    import shapely
    from pyproj import Transformer
    from shapely.geometry import LineString, MultiPolygon, Point, Polygon

    dmama = DmamaSimulator(DmamaConfig(seed=config.seed, dmas=config.dmas, meters_per_dma=config.meters_per_dma))
    details = dmama.dmas()
    to_utm = Transformer.from_crs(WGS84, UTM_CRS, always_xy=True)
    centres = np.array([to_utm.transform(d["longitude"], d["latitude"]) for d in details])
    n = len(details)
    defects = config.defects

    # DMA shapes: octagons sized from connections, never closer to a neighbour than 40 % of the distance.
    radius = np.array([math.sqrt(d["connections"] / (math.pi * _CONNECTIONS_PER_KM2)) * 1000.0 for d in details])
    if n > 1:
        gaps = np.linalg.norm(centres[:, None, :] - centres[None, :, :], axis=2)
        np.fill_diagonal(gaps, np.inf)
        radius = np.minimum(radius, 0.4 * gaps.min(axis=1))
    true_dmas: dict[str, Any] = {}
    drawn: dict[str, Any] = {}
    for i, d in enumerate(details):
        cx, cy = centres[i]
        r = radius[i]
        if i == n - 1 and "bow_tie" in defects:
            # Two lobes meeting at the centre; the digitiser drew them as one ring crossing itself.
            a, b = (cx - r, cy - 0.6 * r), (cx + r, cy + 0.6 * r)
            c, e = (cx + r, cy - 0.6 * r), (cx - r, cy + 0.6 * r)
            drawn[d["dma_id"]] = Polygon([a, b, c, e, a])
            true_dmas[d["dma_id"]] = MultiPolygon([Polygon([a, (cx, cy), e, a]), Polygon([(cx, cy), b, c, (cx, cy)])])
            continue
        jitter = 0.9 + 0.1 * _rng(config.seed, 1, i).random(8)
        angles = np.arange(8) * math.pi / 4 + math.pi / 8
        ring = [(cx + r * k * math.cos(t), cy + r * k * math.sin(t)) for k, t in zip(jitter, angles, strict=True)]
        true_dmas[d["dma_id"]] = drawn[d["dma_id"]] = Polygon(ring)
    if "overlapping_dmas" in defects and n >= 2:
        # A sliver of DMA-0002 digitised across DMA-0001's edge, facing DMA-0002 (no meter lies there).
        (ax, ay), (bx, by) = centres[0], centres[1]
        heading = math.atan2(by - ay, bx - ax)
        lobe = Point(ax + 0.95 * radius[0] * math.cos(heading), ay + 0.95 * radius[0] * math.sin(heading))
        own = true_dmas[details[1]["dma_id"]]
        parts = [*getattr(own, "geoms", [own]), lobe.buffer(0.2 * radius[0], 16)]
        true_dmas[details[1]["dma_id"]] = MultiPolygon(parts)
        if not (n == 2 and "bow_tie" in defects):
            drawn[details[1]["dma_id"]] = true_dmas[details[1]["dma_id"]]
        else:  # the bow-tie DMA is DMA-0002 itself: keep its crossing ring and add the sliver
            drawn[details[1]["dma_id"]] = MultiPolygon([drawn[details[1]["dma_id"]], parts[-1]])
    dma_rows = [
        {"dma_id": d["dma_id"], "name": d["name"], "zone": d["zone"], "geometry": drawn[d["dma_id"]]} for d in details
    ]
    if "collapsed_polygon" in defects:
        # A planned extension whose ring runs out along a line and back over the same points: no area in
        # any CRS (a retraced line stays one after reprojection), nothing to repair.
        cx, cy = centres[-1]
        line = [(cx + 3 * radius[-1], cy), (cx + 4 * radius[-1], cy + radius[-1]), (cx + 5 * radius[-1], cy)]
        line = [*line, line[1]]
        dma_rows.append(
            {
                "dma_id": f"DMA-{n + 1:04d}",
                "name": "Planned extension",
                "zone": details[-1]["zone"],
                "geometry": Polygon([*line, line[0]]),
            }
        )

    # Pipes: a street grid clipped to each DMA's own shape (not the sliver), cut into pipes one block long.
    pipe_rows = []
    valve_rows = []
    for i, d in enumerate(details):
        shape = true_dmas[d["dma_id"]]
        core = shape if i != 1 or "overlapping_dmas" not in defects else MultiPolygon(list(shape.geoms)[:-1])
        core = shapely.union_all(getattr(core, "geoms", [core])) if core.geom_type == "MultiPolygon" else core
        area = core.area
        spacing = float(np.clip(2.0 * area / (d["mains_length_km"] * 1000.0), 150.0, 1000.0))
        minx, miny, maxx, maxy = core.bounds
        cx, cy = centres[i]
        rng = _rng(config.seed, 2, i)
        lines = []
        for k in range(-int((cy - miny) // spacing), int((maxy - cy) // spacing) + 1):
            lines.append((LineString([(minx - 1, cy + k * spacing), (maxx + 1, cy + k * spacing)]), k == 0))
        for k in range(-int((cx - minx) // spacing), int((maxx - cx) // spacing) + 1):
            lines.append((LineString([(cx + k * spacing, miny - 1), (cx + k * spacing, maxy + 1)]), k == 0))
        number = 0
        for street, trunk in lines:
            clipped = street.intersection(core)
            for piece in getattr(clipped, "geoms", [clipped]):
                if piece.geom_type != "LineString" or piece.length < 1.0:
                    continue
                cuts = max(1, math.ceil(piece.length / spacing))
                for c in range(cuts):
                    segment = shapely.ops.substring(piece, c * piece.length / cuts, (c + 1) * piece.length / cuts)
                    number += 1
                    year = int(1975 + rng.integers(0, 51))
                    material = "DI" if trunk else next(m for until, m in _MATERIALS_BY_ERA if year < until)
                    diameter = _TRUNK_MM if trunk else int(rng.choice(_DIAMETERS_MM))
                    pipe_id = f"P-{i + 1:04d}-{number:05d}"
                    pipe_rows.append(
                        {
                            "pipe_id": pipe_id,
                            "material": material,
                            "diam_mm": diameter,
                            "inst_year": year,
                            "geometry": segment,
                        }
                    )
                    if rng.random() < 0.3:
                        valve_rows.append(
                            {
                                "valve_id": f"V-{i + 1:04d}-{len(valve_rows) + 1:05d}",
                                "kind": "butterfly" if trunk else "gate",
                                "diam_mm": diameter,
                                "status": "closed" if rng.random() < 0.05 else "open",
                                "geometry": Point(segment.coords[0]),
                            }
                        )

    # Meters: DMAMA's meters, each at a random spot well inside its DMA (the defects move two of them).
    meter_rows = []
    meter_dma: dict[str, str | None] = {}
    for i, d in enumerate(details):
        inner = true_dmas[d["dma_id"]]
        if i == 1 and "overlapping_dmas" in defects:
            inner = MultiPolygon(list(inner.geoms)[:-1]) if len(inner.geoms) > 2 else next(iter(inner.geoms))
        inner = inner.buffer(-0.25 * radius[i])
        rng = _rng(config.seed, 3, i)
        minx, miny, maxx, maxy = inner.bounds
        for meter in dmama.meters(d["dma_id"]):
            while True:
                spot = Point(rng.uniform(minx, maxx), rng.uniform(miny, maxy))
                if inner.contains(spot):
                    break
            meter_rows.append(
                {
                    "meter_id": meter["meter_id"],
                    "kind": meter["kind"],
                    "inst_date": meter["installed_on"],
                    "geometry": spot,
                }
            )
            meter_dma[meter["meter_id"]] = d["dma_id"]
    last = config.meters_per_dma
    if "meter_outside" in defects:
        # Beyond DMA-0001 on the side away from its nearest neighbour, clear of every DMA.
        (ax, ay) = centres[0]
        heading = math.atan2(centres[1][1] - ay, centres[1][0] - ax) + math.pi if n > 1 else 0.0
        everything = shapely.union_all(list(true_dmas.values()))
        step = 1.5
        spot = Point(ax + step * radius[0] * math.cos(heading), ay + step * radius[0] * math.sin(heading))
        while everything.intersects(spot.buffer(50.0)):
            step += 0.25
            spot = Point(ax + step * radius[0] * math.cos(heading), ay + step * radius[0] * math.sin(heading))
        _move(meter_rows, f"M-0001-{last:04d}", spot)
        meter_dma[f"M-0001-{last:04d}"] = None
    if "meter_dma_mismatch" in defects and n >= 2:
        target = 2 if n >= 3 else 0
        spot = Point(centres[target]) if target != n - 1 or "bow_tie" not in defects else None
        if spot is None:  # the bow-tie's centre is its crossing point: use a lobe's middle instead
            spot = true_dmas[details[target]["dma_id"]].geoms[0].centroid
        _move(meter_rows, f"M-0002-{last:04d}", spot)
        meter_dma[f"M-0002-{last:04d}"] = details[target]["dma_id"]

    # Facilities: a pump station at each DMA's inlet side, a tank in every other DMA.
    facility_rows = []
    for i, d in enumerate(details):
        cx, cy = centres[i]
        inlet = Point(cx - 0.3 * radius[i], cy - 0.1 * radius[i])
        if not true_dmas[d["dma_id"]].contains(inlet):
            inlet = true_dmas[d["dma_id"]].representative_point()
        peak = d["connections"] * 0.9 / 24.0 * 2.5  # m³/h: 0.9 m³ per connection a day, peak factor 2.5
        facility_rows.append(
            {
                "fac_id": f"F-{i + 1:04d}-PS",
                "kind": "pump_station",
                "name": f"{d['name']} pump station",
                "cap_m3": None,
                "flow_m3h": round(peak, 1),
                "geometry": inlet,
            }
        )
        if i % 2 == 0:
            facility_rows.append(
                {
                    "fac_id": f"F-{i + 1:04d}-T1",
                    "kind": "tank",
                    "name": f"{d['name']} elevated tank",
                    "cap_m3": float(round(d["connections"] * 0.3 / 50.0) * 50.0 + 100.0),
                    "flow_m3h": None,
                    "geometry": Point(cx + 0.2 * radius[i], cy + 0.2 * radius[i]),
                }
            )

    layers = {
        "dma_boundaries": gpd.GeoDataFrame(dma_rows, geometry="geometry", crs=UTM_CRS),
        "pipes": gpd.GeoDataFrame(pipe_rows, geometry="geometry", crs=UTM_CRS),
        "meters": gpd.GeoDataFrame(meter_rows, geometry="geometry", crs=UTM_CRS),
        "valves": gpd.GeoDataFrame(valve_rows, geometry="geometry", crs=UTM_CRS),
        "facilities": gpd.GeoDataFrame(facility_rows, geometry="geometry", crs=UTM_CRS),
    }
    built = _Map(layers=layers, true_dmas=true_dmas, meter_dma=meter_dma)
    for name, frame in layers.items():
        wgs = frame.to_crs(WGS84)
        built.features[name] = _features(wgs, name)
        built.bounds[name] = shapely.bounds(wgs.geometry.values)
    return built


def _move(rows: list[dict[str, Any]], meter_id: str, spot: Any) -> None:
    for row in rows:
        if row["meter_id"] == meter_id:
            row["geometry"] = spot
            return


def _features(frame: Any, layer: str) -> list[dict[str, Any]]:
    import shapely

    id_field = {"dma_boundaries": "dma_id", "pipes": "pipe_id", "meters": "meter_id", "valves": "valve_id"}.get(
        layer, "fac_id"
    )
    columns = [c for c in frame.columns if c != "geometry"]
    records = frame[columns].astype(object).where(frame[columns].notna(), None).to_dict("records")
    shapes = [json.loads(shapely.to_geojson(g)) for g in frame.geometry.values]
    return [
        {"type": "Feature", "id": record[id_field], "properties": record, "geometry": shape}
        for record, shape in zip(records, shapes, strict=True)
    ]


def _non_negative(text: str, name: str) -> int:
    if not text.isdigit():
        raise ValueError(f"{name} must be a whole number ≥ 0, got {text!r}")
    return int(text)


def _parse_bbox(text: str) -> tuple[float, float, float, float]:
    parts = text.split(",")
    if len(parts) == 5 and parts[4] in ("EPSG:4326", "urn:ogc:def:crs:OGC:1.3:CRS84", "CRS84"):
        parts = parts[:4]
    try:
        minx, miny, maxx, maxy = (float(p) for p in parts)
    except ValueError:
        raise ValueError(f"bbox must be minlon,minlat,maxlon,maxlat in EPSG:4326, got {text!r}") from None
    if not (minx <= maxx and miny <= maxy):
        raise ValueError(f"bbox {text!r} has its minimum above its maximum")
    return minx, miny, maxx, maxy


def _meets(bounds: np.ndarray, box: Sequence[float]) -> np.ndarray:
    minx, miny, maxx, maxy = box
    return (bounds[:, 0] <= maxx) & (bounds[:, 2] >= minx) & (bounds[:, 1] <= maxy) & (bounds[:, 3] >= miny)


# ---------------------------------------------------------------------------------------------- serving


def serve_gis(config: GisConfig | None = None, host: str = "127.0.0.1", port: int = 0):
    """Serve a GIS simulator's WFS in a background thread for the duration of the ``with`` block."""
    from simulators.http_server import serve_simulator

    return serve_simulator(GisSimulator(config or GisConfig()), host=host, port=port)


def credentials_env(url: str, config: GisConfig, files_dir: str | Path | None = None) -> dict[str, str]:
    """Environment variables the hub's GIS resource reads to reach this simulator (and its files)."""
    env = {"GIS_WFS_BASE_URL": url, "GIS_WFS_API_KEY": config.api_key}
    if files_dir is not None:
        env["GIS_FILES_DIR"] = str(files_dir)
    return env


def main(argv: Sequence[str] | None = None) -> None:
    """``ihub simulate gis``: write the map's files, then serve the WFS in the foreground until interrupted."""
    import uvicorn

    from simulators.http_server import bind_socket, quiet_config

    parser = argparse.ArgumentParser(
        prog="ihub simulate gis",
        description=(
            "The GIS simulator: writes the network map (DMA boundaries, pipes, meters, valves, facilities) as "
            "GeoJSON, Shapefile and GeoPackage files, then serves it as a WFS-like GeoJSON endpoint."
        ),
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8706)
    parser.add_argument("--dmas", type=int, default=5, help="DMAs, as the DMAMA simulator has them")
    parser.add_argument("--meters-per-dma", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--files-dir", default="gis-files", help="where the map's files are written")
    parser.add_argument("--formats", default=",".join(FORMATS), help=f"comma-separated, of {', '.join(FORMATS)}")
    parser.add_argument("--clean", action="store_true", help="no bad data (bow-tie, missing .prj, ...)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    config = GisConfig(
        seed=args.seed,
        dmas=args.dmas,
        meters_per_dma=args.meters_per_dma,
        defects=frozenset() if args.clean else DEFECTS,
    )
    simulator = GisSimulator(config)
    written = simulator.write_files(args.files_dir, [f for f in args.formats.split(",") if f])
    sock = bind_socket(args.host, args.port)
    url = f"http://{f'[{args.host}]' if ':' in args.host else args.host}:{sock.getsockname()[1]}"
    env = " ".join(f"{k}={v}" for k, v in credentials_env(url, config, Path(args.files_dir).resolve()).items())
    print(f"GIS simulator: files ({', '.join(written)}) in {Path(args.files_dir).resolve()}", flush=True)
    print(f"GIS simulator WFS ({args.dmas} DMAs, seed {args.seed}) on {url}/wfs/{{layer}}  {env}", flush=True)
    uvicorn.Server(quiet_config(simulator.app)).run(sockets=[sock])
