"""GIS reader: the network map's layers from vector files (GeoJSON, Shapefile, GeoPackage) or a WFS-like
GeoJSON endpoint, as a resource.

Where a layer comes from, first match wins:

1. ``layer_files[layer]``: a path or an http(s) URL to one file (a GeoPackage is read at the layer's name);
2. ``wfs_base_url`` (``GIS_WFS_BASE_URL``): ``GET {base}/wfs/{layer}`` with the ``X-API-Key`` header
   (``GIS_WFS_API_KEY``), paged by ``startIndex``/``count`` following the ``rel="next"`` link, through
   ``resources/http.py``'s ``ResilientClient`` (retries, Retry-After, deadline, size cap, breaker);
3. ``files_dir`` (``GIS_FILES_DIR``): ``<layer>.gpkg``, then any ``*.gpkg`` holding a layer of that name,
   then ``<layer>.shp``, then ``<layer>.geojson`` / ``<layer>.json``.

The format is detected from the file name (and GDAL's driver). The layer comes back in its source CRS,
read from the data: a file without one is refused with an error naming file and layer, never guessed;
GeoJSON without a ``crs`` member is EPSG:4326 by RFC 7946. Typing, repairs and rejects are the assets' and
``quality/gis.py``'s job. geopandas and pyogrio are imported inside the methods only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

import dagster as dg
from pydantic import Field, PrivateAttr

from resources.http import ApiKeyAuth, PayloadError, ResilientClient, Secrets, SourceError, check_secret

if TYPE_CHECKING:
    import geopandas as gpd

__all__ = ["GisSource", "LayerRead", "MissingCrsError"]

SOURCE = "gis"
WFS_PATH = "/wfs/{layer}"
RFC7946_CRS = "EPSG:4326"
_FILE_SUFFIXES = (".gpkg", ".shp", ".geojson", ".json", ".zip")


class MissingCrsError(SourceError):
    """A layer's file carries no coordinate reference system; its coordinates are not guessed."""


@dataclass(frozen=True)
class LayerRead:
    """One layer as read: the features (a GeoDataFrame in the source CRS), where they came from, the CRS."""

    layer: str
    origin: str
    crs: str
    frame: gpd.GeoDataFrame
    pages: int = 1


class GisSource(dg.ConfigurableResource):
    """The network map: DMA boundaries, pipes, meters, valves and facilities, from files or a WFS.

    The WFS answers are paged by ``startIndex``/``count``; transient failures are retried with backoff,
    429 answers waited out as their ``Retry-After`` says, within a budget; each answer is bounded in time
    and size; the API key never appears in logs or errors.
    """

    wfs_base_url: str = Field(default="", description="Base URL of the WFS-like endpoint (GIS_WFS_BASE_URL).")
    wfs_api_key: str = Field(default="", description="Value of the X-API-Key header (GIS_WFS_API_KEY).")
    files_dir: str = Field(default="", description="Folder holding the map's files (GIS_FILES_DIR).")
    layer_files: dict[str, str] = Field(
        default_factory=dict, description="Per layer, a file path or URL that overrides the WFS and the folder."
    )
    bbox: list[float] | None = Field(
        default=None, description="Only features meeting minlon, minlat, maxlon, maxlat (EPSG:4326)."
    )
    page_size: int = Field(default=500, description="Features asked for per WFS page (count).")
    max_pages: int = Field(default=1000, description="Most WFS pages one layer may take.")
    timeout_s: float = Field(default=15.0, description="Timeout per network read, seconds.")
    deadline_s: float = Field(default=60.0, description="Total time one request may take, seconds.")
    max_body_mb: int = Field(default=32, description="Largest answer accepted, MiB.")
    max_retries: int = Field(default=3, description="Retries after the first attempt for transient failures.")
    backoff_base_s: float = Field(default=0.5, description="First retry wait; doubles on each further retry.")
    rate_limit_budget_s: float = Field(
        default=120.0, description="How long one request may keep waiting out 429 / Retry-After answers."
    )

    _http: ResilientClient | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _sleep: Callable[[float], None] = PrivateAttr(default=time.sleep)

    def __repr__(self) -> str:
        return f"GisSource(wfs_base_url={self.wfs_base_url!r}, files_dir={self.files_dir!r})"  # never the key

    __str__ = __repr__

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            http, self._http = self._http, None
        if http is not None:
            http.close()

    @property
    def rate_limit_waits(self) -> int:
        """How often the WFS asked this client to slow down (429 or Retry-After) so far."""
        return self._client().limiter.deferrals

    # ------------------------------------------------------------------ reading

    def describe(self, layer: str) -> str:
        """Where ``layer`` is read from, for messages (no secret)."""
        if layer in self.layer_files:
            return self.layer_files[layer]
        if self.wfs_base_url:
            return f"{self.wfs_base_url.rstrip('/')}{WFS_PATH.format(layer=layer)}"
        if self.files_dir:
            try:
                return str(self._find_file(layer)[0])
            except SourceError:
                return f"{self.files_dir} (no file found for it)"
        return "nowhere (set GIS_WFS_BASE_URL or GIS_FILES_DIR)"

    def read_layer(self, layer: str) -> LayerRead:
        """Every feature of ``layer`` in its source CRS; ``SourceError`` (or ``MissingCrsError``) on failure."""
        if layer in self.layer_files:
            return self._read_file(layer, self.layer_files[layer], None)
        if self.wfs_base_url:
            return self._read_wfs(layer)
        if self.files_dir:
            path, inner = self._find_file(layer)
            return self._read_file(layer, str(path), inner)
        raise SourceError(
            SOURCE, layer, "no GIS source configured: set GIS_WFS_BASE_URL (and GIS_WFS_API_KEY) or GIS_FILES_DIR"
        )

    def _find_file(self, layer: str) -> tuple[Path, str | None]:
        import pyogrio

        folder = Path(self.files_dir)
        if not folder.is_dir():
            raise SourceError(SOURCE, str(folder), f"GIS_FILES_DIR {str(folder)!r} is not a folder")
        own = folder / f"{layer}.gpkg"
        if own.is_file():
            return own, layer
        for package in sorted(folder.glob("*.gpkg")):
            names = [str(name) for name, _ in pyogrio.list_layers(package)]
            if layer in names:
                return package, layer
        for suffix in (".shp", ".geojson", ".json"):
            candidate = folder / f"{layer}{suffix}"
            if candidate.is_file():
                return candidate, None
        raise SourceError(
            SOURCE,
            str(folder),
            f"no file for layer {layer} in {folder}: expected {layer}.gpkg, a GeoPackage with a {layer} layer, "
            f"{layer}.shp or {layer}.geojson",
        )

    def _read_file(self, layer: str, location: str, inner: str | None) -> LayerRead:
        import pyogrio

        remote = location.startswith(("http://", "https://"))
        if not remote and not Path(location).is_file():
            raise SourceError(SOURCE, location, f"layer {layer}: file {location} does not exist")
        if not location.lower().endswith(_FILE_SUFFIXES):
            raise SourceError(
                SOURCE, location, f"layer {layer}: cannot tell the format of {location}; expected {_FILE_SUFFIXES}"
            )
        if inner is None and location.lower().endswith(".gpkg"):
            inner = layer
        try:
            options: dict[str, Any] = {"layer": inner} if inner else {}
            frame = pyogrio.read_dataframe(location, **options)
        except Exception as exc:  # GDAL's errors name the file; keep them, under the source's name
            raise SourceError(SOURCE, location, f"layer {layer}: cannot read {location}: {exc}") from exc
        if frame.crs is None:
            raise MissingCrsError(
                SOURCE,
                location,
                f"{location} (layer {layer}) has no coordinate reference system (a Shapefile needs its .prj, a "
                "GeoPackage its srs); coordinates are not guessed: re-export the layer with its CRS",
            )
        frame = self._clip(frame)
        return LayerRead(layer=layer, origin=location, crs=_crs_name(frame), frame=frame)

    def _clip(self, frame: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
        """Keep the features meeting ``bbox`` (given in EPSG:4326), judged in the frame's own CRS."""
        if not self.bbox:
            return frame
        import shapely
        from pyproj import Transformer

        minx, miny, maxx, maxy = self.bbox
        box = shapely.box(minx, miny, maxx, maxy)
        if frame.crs.to_epsg() != 4326:
            transform = Transformer.from_crs(RFC7946_CRS, frame.crs, always_xy=True).transform
            box = shapely.ops.transform(transform, box.segmentize(0.01))
        return frame[frame.geometry.intersects(box)]

    def _read_wfs(self, layer: str) -> LayerRead:
        import geopandas as gpd

        path = WFS_PATH.format(layer=layer)
        params: dict[str, Any] = {"startIndex": 0, "count": self.page_size}
        if self.bbox:
            params["bbox"] = ",".join(repr(float(v)) for v in self.bbox)
        features: list[dict[str, Any]] = []
        matched: int | None = None
        crs = RFC7946_CRS
        pages = 0
        try:
            while True:
                pages += 1
                if pages > self.max_pages:
                    raise PayloadError(
                        SOURCE, path, f"more than {self.max_pages} pages (max_pages); paging never ended"
                    )
                body = self._client().get_json(path, params)
                page, following, total, declared = _feature_page(body, path, params["startIndex"])
                if matched is not None and total != matched:
                    raise PayloadError(
                        SOURCE, path, f"numberMatched went from {matched} to {total} mid-read: the layer changed"
                    )
                matched = total
                crs = declared or crs
                features.extend(page)
                if following is None:
                    break
                params = self._next_params(path, following, params)
        except BaseException as exc:
            cleaned = Secrets([self.wfs_api_key]).clean(exc)
            if cleaned is None:
                raise
            raise cleaned from None
        if matched is not None and len({_feature_key(f) for f in features}) < matched:
            raise PayloadError(
                SOURCE, path, f"numberMatched is {matched} but the pages held {len(features)} features: some were lost"
            )
        frame = (
            gpd.GeoDataFrame.from_features(features, crs=crs)
            if features
            else gpd.GeoDataFrame({"geometry": []}, geometry="geometry", crs=crs)
        )
        return LayerRead(layer=layer, origin=self.describe(layer), crs=crs, frame=frame, pages=pages)

    def _next_params(self, path: str, href: str, current: dict[str, Any]) -> dict[str, Any]:
        """The query of a ``next`` link, refusing one that leaves the WFS (it would carry the key away)."""
        link, base = urlsplit(href), urlsplit(self.wfs_base_url)
        if link.netloc and (link.scheme, link.netloc) != (base.scheme, base.netloc):
            raise PayloadError(SOURCE, path, f"next link points to another server ({link.scheme}://{link.netloc})")
        if link.path and link.path != path and not link.path.endswith(path):
            raise PayloadError(SOURCE, path, f"next link points to another path ({link.path})")
        query = dict(parse_qsl(link.query))
        following = query.get("startIndex", "")
        if not following.isdigit() or int(following) <= int(current["startIndex"]):
            raise PayloadError(
                SOURCE, path, f"next link startIndex {following!r} does not move past {current['startIndex']}"
            )
        return {**current, **query, "startIndex": int(following)}

    def _client(self) -> ResilientClient:
        with self._lock:
            if self._http is None:
                check_secret(self.wfs_api_key, "GIS_WFS_API_KEY")
                if not self.wfs_base_url.startswith(("http://", "https://")):
                    raise ValueError(f"GisSource.wfs_base_url must be an http(s) URL, got {self.wfs_base_url!r}")
                self._http = ResilientClient(
                    SOURCE,
                    self.wfs_base_url,
                    timeout_s=self.timeout_s,
                    deadline_s=self.deadline_s,
                    max_body_bytes=self.max_body_mb * 1024 * 1024,
                    max_retries=self.max_retries,
                    backoff_base_s=self.backoff_base_s,
                    rate_limit_budget_s=self.rate_limit_budget_s,
                    max_connections=2,
                    auth=ApiKeyAuth(self.wfs_api_key, "X-API-Key", name="GIS_WFS_API_KEY"),
                    sleep=self._sleep,
                )
            return self._http


def _feature_page(body: Any, path: str, start: int) -> tuple[list[dict[str, Any]], str | None, int | None, str | None]:
    """(features, next link, numberMatched, declared CRS) of one page, or a ``PayloadError``."""
    if (
        not isinstance(body, dict)
        or body.get("type") != "FeatureCollection"
        or not isinstance(body.get("features"), list)
    ):
        got = sorted(body) if isinstance(body, dict) else type(body).__name__
        raise PayloadError(SOURCE, path, f"page at startIndex {start}: expected a GeoJSON FeatureCollection, got {got}")
    features = body["features"]
    for position, feature in enumerate(features):
        if not isinstance(feature, dict) or feature.get("type") != "Feature":
            raise PayloadError(SOURCE, path, f"page at startIndex {start}: item {position} is not a GeoJSON Feature")
    links = body.get("links") if isinstance(body.get("links"), list) else []
    following = next((link.get("href") for link in links if isinstance(link, dict) and link.get("rel") == "next"), None)
    total = body.get("numberMatched")
    total = total if isinstance(total, int) and not isinstance(total, bool) else None
    declared = None
    crs = body.get("crs")
    if isinstance(crs, dict) and isinstance(crs.get("properties"), dict):
        declared = _urn_to_crs(str(crs["properties"].get("name", "")))
    return features, following if isinstance(following, str) else None, total, declared


def _urn_to_crs(name: str) -> str | None:
    """``urn:ogc:def:crs:EPSG::32647`` → ``EPSG:32647``; CRS84 → EPSG:4326 (lon/lat)."""
    if name.endswith("CRS84"):
        return RFC7946_CRS
    parts = name.split(":")
    if len(parts) >= 2 and parts[-1].isdigit():
        return f"EPSG:{parts[-1]}"
    return name or None


def _feature_key(feature: dict[str, Any]) -> str:
    identifier = feature.get("id")
    return str(identifier) if identifier is not None else repr(sorted((feature.get("properties") or {}).items()))


def _crs_name(frame: gpd.GeoDataFrame) -> str:
    authority = frame.crs.to_authority()
    return ":".join(authority) if authority else frame.crs.to_wkt()
