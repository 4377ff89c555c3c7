"""The lake: Parquet files, one per Dagster partition, on a local disk or in an S3-compatible bucket.

Layout under the root (a path, or ``s3://bucket/prefix``; see ``resources/storage.py``):

- time partitions: ``<layer>/<table>/date=YYYY-MM-DD/part-HHMM-<length>.parquet``, where the date and
  ``HHMM`` are the window's start in UTC and ``<length>`` its ISO 8601 duration: ``PT15M``, ``PT1H``,
  ``P1D``, ``P7D``, ``P1M`` (a calendar month starting at 00:00 UTC on the 1st; a month in another time
  zone is named by its exact length, e.g. ``P31D``). Any ``TimeWindowPartitionsDefinition`` maps onto
  this, and a file's name alone says which rows it may hold, so a range read finds a month's file from
  a query in the middle of the month.
- processing windows (SCADA receive windows): ``.../date=YYYY-MM-DD/part-HHMM.parquet``, filed by the
  window a row was *received* in rather than its own time.
- static partitions: the same below ``<layer>/<table>/<static column>=<key>/`` (a plant, a region).
- snapshots (tables replaced whole): ``<layer>/<table>/snapshot.parquet`` (or under the static key).

A table with a geometry column (``Column(geometry=True, crs=...)``, WKB) is written as GeoParquet 1.1:
the file metadata's ``geo`` key names the column, its encoding, geometry types and CRS (PROJJSON), so
GeoPandas, GDAL and DuckDB read the column as geometry.

``date=`` folders stay Hive-style for analysts and DuckDB. Every write replaces whole files atomically
(a temporary file renamed into place locally, a single PUT on object storage), so a reader sees the
old partition or the new one, two runs writing different partitions never wait on each other, and the
same rows give the same bytes. A partition with no rows is written as an empty file.
"""

from __future__ import annotations

import functools
import io
import json
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import PrivateAttr

from resources.storage import Storage, open_storage
from resources.tables import Column, LakeTable, is_safe_identifier

__all__ = [
    "Column",
    "Lake",
    "LakeTable",
    "Written",
    "time_windows",
    "window_file_name",
]

_PARQUET_COMPRESSION = "zstd"
_WINDOW_FILE = re.compile(r"^part-(?P<hhmm>\d{4})-(?P<length>P[0-9A-Z]+)\.parquet$")
_DURATION = re.compile(r"^P(?:(?P<months>\d+)M|(?P<days>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?)?$")
# Files written before windows were named: hourly parts and daily parts of the first lake layout.
_LEGACY_NAMES = {timedelta(hours=1): "part-{hhmm}.parquet", timedelta(days=1): "part-day.parquet"}


def time_windows(
    partitions_def: dg.TimeWindowPartitionsDefinition, start: datetime, end: datetime
) -> list[dg.TimeWindow]:
    """The partitions of ``partitions_def`` that lie in ``[start, end)``, in time order."""
    keys = partitions_def.get_partition_keys_in_time_window(dg.TimeWindow(start, end))
    return [partitions_def.time_window_for_partition_key(key) for key in keys]


def window_file_name(window: dg.TimeWindow) -> str:
    """``part-HHMM-<ISO 8601 duration>.parquet`` for a window (start in UTC)."""
    start, end = window.start.astimezone(UTC), window.end.astimezone(UTC)
    if end <= start:
        raise ValueError(f"time window {start:%Y-%m-%dT%H:%M}Z–{end:%Y-%m-%dT%H:%M}Z is empty")
    return f"part-{start:%H%M}-{_duration(start, end)}.parquet"


def _duration(start: datetime, end: datetime) -> str:
    months = (end.year - start.year) * 12 + end.month - start.month
    first_of_month = start == start.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    if first_of_month and months > 0 and _add_months(start, months) == end:
        return f"P{months}M"
    length = end - start
    if length.microseconds:
        raise ValueError(f"time window of {length} is not a whole number of seconds")
    if length % timedelta(days=1) == timedelta(0):
        return f"P{length.days}D"
    seconds = int(length.total_seconds())
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return "PT" + (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "") + (f"{secs}S" if secs else "")


def _add_months(start: datetime, months: int) -> datetime:
    year, month = divmod(start.month - 1 + months, 12)
    return start.replace(year=start.year + year, month=month + 1)


def _window_of_file(folder: str, name: str) -> tuple[datetime, datetime] | None:
    """The window a time-partition file holds, from its folder and name; ``None`` for other files."""
    match = _WINDOW_FILE.match(name)
    if match is None or not folder.startswith("date="):
        return None
    day = date.fromisoformat(folder.removeprefix("date="))
    start = datetime(day.year, day.month, day.day, int(match["hhmm"][:2]), int(match["hhmm"][2:]), tzinfo=UTC)
    length = _DURATION.match(match["length"])
    if length is None:
        return None
    if length["months"]:
        return start, _add_months(start, int(length["months"]))
    span = timedelta(
        days=int(length["days"] or 0),
        hours=int(length["h"] or 0),
        minutes=int(length["m"] or 0),
        seconds=int(length["s"] or 0),
    )
    return start, start + span


@dataclass(frozen=True)
class Written:
    """What a write put in the lake: file locations, rows and the frame itself for summary figures."""

    table: LakeTable
    paths: tuple[str, ...]
    frame: pl.DataFrame = field(repr=False)

    @property
    def rows(self) -> int:
        return self.frame.height

    def distinct(self, column: str) -> int:
        return self.frame.get_column(column).n_unique() if self.rows else 0

    def time_range(self) -> tuple[datetime, datetime] | None:
        column = self.table.time_column
        if column is None or self.rows == 0:
            return None
        series = self.frame.get_column(column)
        return series.min(), series.max()  # type: ignore[return-value]


class Lake(dg.ConfigurableResource):
    """The Parquet lake: ``IHUB_DATA_DIR``/lake by default, or a bucket (``s3://bucket/prefix``)."""

    root: str
    _storage: Storage | None = PrivateAttr(default=None)

    @property
    def storage(self) -> Storage:
        if self._storage is None:
            self._storage = open_storage(self.root)
        return self._storage

    # -- where things are --------------------------------------------------------------------------

    def table_key(self, table: LakeTable, static_key: str | None = None) -> str:
        key = f"{table.layer}/{table.name}"
        if table.static_column is None:
            if static_key is not None:
                raise ValueError(f"{table.layer}.{table.name} has no static partitions; got key {static_key!r}")
            return key
        if static_key is None:
            raise ValueError(f"{table.layer}.{table.name} is partitioned by {table.static_column}; give its key")
        if not is_safe_identifier(static_key):
            raise ValueError(
                f"{table.layer}.{table.name}: static partition key {static_key!r} cannot be a folder name "
                "(no '.', '..', separators, URL syntax or blanks)"
            )
        return f"{key}/{table.static_column}={static_key}"

    def partition_key(self, table: LakeTable, window: dg.TimeWindow, static_key: str | None = None) -> str:
        start = window.start.astimezone(UTC)
        return f"{self.table_key(table, static_key)}/date={start:%Y-%m-%d}/{window_file_name(window)}"

    def location(self, table: LakeTable, window: dg.TimeWindow | None = None, static_key: str | None = None) -> str:
        """Where a partition's file is (the snapshot's when ``window`` is ``None``): a path or a URL."""
        if window is None:
            return self.storage.location(f"{self.table_key(table, static_key)}/snapshot.parquet")
        return self.storage.location(self.partition_key(table, window, static_key))

    def table_dir(self, table: LakeTable) -> Path:
        """The table's folder on a local lake."""
        return Path(self._local_location(f"{table.layer}/{table.name}"))

    def partition_path(self, table: LakeTable, window: dg.TimeWindow, static_key: str | None = None) -> Path:
        """The file of one time partition on a local lake."""
        return Path(self._local_location(self.partition_key(table, window, static_key)))

    def snapshot_path(self, table: LakeTable) -> Path:
        return Path(self._local_location(f"{self.table_key(table)}/snapshot.parquet"))

    def window_path(self, table: LakeTable, start: datetime) -> Path:
        """The file of one processing window on a local lake (``window_location`` works on every lake)."""
        return Path(self._local_location(self._window_key(table, start)))

    def window_location(self, table: LakeTable, start: datetime) -> str:
        """Where one processing window's file is: a path or a URL."""
        return self.storage.location(self._window_key(table, start))

    def _window_key(self, table: LakeTable, start: datetime) -> str:
        start = start.astimezone(UTC)
        return f"{self.table_key(table)}/date={start:%Y-%m-%d}/part-{start:%H%M}.parquet"

    def _local_location(self, key: str) -> str:
        if not self.storage.is_local:
            raise ValueError(f"the lake at {self.storage.root} is not on a local disk; use Lake.location()")
        return self.storage.location(key)

    def glob(self, table: LakeTable) -> str:
        """The absolute glob (path or URL) that matches every file of the table (what catalog views read)."""
        return self.storage.location(f"{table.layer}/{table.name}/**/*.parquet")

    def files(self, table: LakeTable) -> list[str]:
        """Locations of every file of the table, sorted."""
        return [self.storage.location(k) for k in self.storage.find(f"{table.layer}/{table.name}", ".parquet")]

    # -- writes ------------------------------------------------------------------------------------

    def replace_partitions(
        self,
        table: LakeTable,
        frame: pl.DataFrame,
        windows: Sequence[dg.TimeWindow],
        *,
        static_key: str | None = None,
    ) -> Written:
        """Replace each partition in ``windows`` with the rows of ``frame`` whose time column it holds.

        ``windows`` are the Dagster time windows of the partitions being written (``time_windows``), any
        length from minutes to months. A row in none of them refuses the whole write before any file is
        touched. A partition with no rows is written as an empty file: an empty hour (or month) is a fact
        worth keeping, and it replaces whatever an earlier run had put there. ``static_key`` names the
        static partition of a table with a ``static_column``.
        """
        if table.time_column is None:
            raise ValueError(f"table {table.layer}.{table.name} has no time column to partition by")
        spans = _as_windows(table, windows)
        frame = table.conform(frame)
        self._check_static(table, frame, static_key)
        slots = _slot_of_rows(frame.get_column(table.time_column), spans)
        stray = frame.filter(slots.is_null())
        if stray.height:
            first = stray.get_column(table.time_column).min()
            shown = f"{first:%Y-%m-%dT%H:%M}Z" if isinstance(first, datetime) else "no time"
            raise ValueError(
                f"{table.layer}.{table.name}: rows at {shown} fall outside the partitions being written "
                f"({_describe(spans)})"
            )
        by_slot = {
            key[0]: part.drop("_slot")
            for key, part in frame.with_columns(_slot=slots).partition_by("_slot", as_dict=True).items()
        }
        paths = []
        folders: set[str] = set()
        for index, (start, end) in enumerate(spans):
            rows = by_slot[index] if index in by_slot else table.empty()
            window = dg.TimeWindow(start, end)
            key = self.partition_key(table, window, static_key)
            paths.append(self.storage.write(key, _encode(rows, table)))
            folders.add(key.rsplit("/", 1)[0])
        self._remove_legacy_names(spans, folders)
        return Written(table, tuple(paths), frame)

    def replace_window(self, table: LakeTable, start: datetime, frame: pl.DataFrame) -> Written:
        """Replace the file of one processing window (e.g. a SCADA receive window), whatever the rows'
        own timestamps: late points belong to the window that received them."""
        frame = table.conform(frame)
        path = self.storage.write(self._window_key(table, start), _encode(frame, table))
        return Written(table, (path,), frame)

    def replace_snapshot(self, table: LakeTable, frame: pl.DataFrame, *, static_key: str | None = None) -> Written:
        """Replace a whole slowly changing table (a catalogue), or one static partition of it, at once."""
        frame = table.conform(frame)
        self._check_static(table, frame, static_key)
        path = self.storage.write(f"{self.table_key(table, static_key)}/snapshot.parquet", _encode(frame, table))
        return Written(table, (path,), frame)

    def _check_static(self, table: LakeTable, frame: pl.DataFrame, static_key: str | None) -> None:
        self.table_key(table, static_key)  # validates the key
        if table.static_column is None or frame.height == 0:
            return
        others = frame.filter(pl.col(table.static_column) != static_key).get_column(table.static_column)
        if others.len() or frame.get_column(table.static_column).null_count():
            shown = others[0] if others.len() else None
            raise ValueError(
                f"{table.layer}.{table.name}: rows for {table.static_column}={shown!r} in the write of "
                f"{table.static_column}={static_key!r}"
            )

    def _remove_legacy_names(self, spans: list[tuple[datetime, datetime]], folders: set[str]) -> None:
        """Drop an hourly or daily file of the first layout that the window just written replaces."""
        legacy = {}
        for start, end in spans:
            pattern = _LEGACY_NAMES.get(end - start)
            if pattern and (end - start < timedelta(days=1) or start.astimezone(UTC).hour == 0):
                legacy[
                    (f"date={start.astimezone(UTC):%Y-%m-%d}", pattern.format(hhmm=f"{start.astimezone(UTC):%H%M}"))
                ] = True
        if not legacy:
            return
        for folder in folders:
            _, names = self.storage.list_dir(folder)
            day = folder.rsplit("/", 1)[-1]
            for name in names:
                if (day, name) in legacy:
                    self.storage.delete(f"{folder}/{name}")

    # -- reads -------------------------------------------------------------------------------------

    def read(
        self,
        table: LakeTable,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> pl.DataFrame:
        """Rows of the table, optionally only those with the time column in ``[start, end)``."""
        keys = self._keys_between(table, start, end)
        if not keys:
            return table.empty()
        scan = self._scan(keys)
        if table.time_column is not None:
            # A Date column is filed by its midnight UTC, as replace_partitions buckets it.
            time = pl.col(table.time_column).cast(pl.Datetime("us", "UTC"))
            if start is not None:
                scan = scan.filter(time >= start)
            if end is not None:
                scan = scan.filter(time < end)
        return table.conform(table.with_added_columns(scan.collect()))

    def read_windows(self, table: LakeTable, starts: Sequence[datetime]) -> pl.DataFrame:
        """Rows of the processing-window files starting at ``starts`` (those that exist), in key order."""
        wanted = [self._window_key(table, start) for start in starts]
        present: set[str] = set()
        for folder in sorted({k.rsplit("/", 1)[0] for k in wanted}):
            present.update(f"{folder}/{name}" for name in self.storage.list_dir(folder)[1])
        keys = [k for k in wanted if k in present]
        if not keys:
            return table.empty()
        return table.conform(table.with_added_columns(self._scan(keys).collect()))

    def _scan(self, keys: Sequence[str]) -> pl.LazyFrame:
        if self.storage.is_local:
            sources: list = [self.storage.location(k) for k in keys]
        else:
            sources = self.storage.read_many(keys)
        return pl.scan_parquet(sources, hive_partitioning=False, missing_columns="insert", extra_columns="ignore")

    def _keys_between(self, table: LakeTable, start: datetime | None, end: datetime | None) -> list[str]:
        """Only the ``date=`` folders that can hold rows in range are listed: a year of 5-minute windows is
        105,120 files. A window starting before ``start`` can still reach into it (a month read from its
        middle), so the nearest earlier folder is looked into as well."""
        base = f"{table.layer}/{table.name}"
        if start is None and end is None:
            return self.storage.find(base, ".parquet")
        prefixes = [base]
        folders, files = self.storage.list_dir(base)
        if table.static_column is not None:
            prefixes = [f"{base}/{f}" for f in folders if f.startswith(f"{table.static_column}=")]
        keys = [f"{base}/{name}" for name in files if name.endswith(".parquet")]  # a snapshot has no date folder
        low = (start or datetime.min.replace(tzinfo=UTC)).astimezone(UTC)
        high = (end or datetime.max.replace(tzinfo=UTC)).astimezone(UTC)
        for prefix in prefixes:
            if prefix != base:
                folders, files = self.storage.list_dir(prefix)
                keys.extend(f"{prefix}/{name}" for name in files if name.endswith(".parquet"))
            days = sorted(f for f in folders if f.startswith("date="))
            in_range = [f for f in days if low.date() <= date.fromisoformat(f[5:]) <= high.date()]
            earlier = [f for f in days if date.fromisoformat(f[5:]) < low.date()]
            for folder in ([earlier[-1]] if earlier else []) + in_range:
                for name in self.storage.list_dir(f"{prefix}/{folder}")[1]:
                    if not name.endswith(".parquet"):
                        continue
                    span = _window_of_file(folder, name)
                    inside = span[0] < high and span[1] > low if span else folder in in_range
                    if inside:
                        keys.append(f"{prefix}/{folder}/{name}")
        return sorted(keys)


def _as_windows(table: LakeTable, windows: Sequence[dg.TimeWindow]) -> list[tuple[datetime, datetime]]:
    spans = sorted((w.start.astimezone(UTC), w.end.astimezone(UTC)) for w in windows)
    for (_, end), (start, _) in pairwise(spans):
        if start < end:
            raise ValueError(f"{table.layer}.{table.name}: partitions being written overlap at {start:%Y-%m-%dT%H:%M}Z")
    return spans


def _slot_of_rows(times: pl.Series, spans: list[tuple[datetime, datetime]]) -> pl.Series:
    """Index into ``spans`` (sorted, disjoint) of the window holding each time; null for none."""
    stamp = pl.Datetime("us", "UTC")
    if not spans:
        return pl.Series("_slot", [None] * len(times), dtype=pl.Int64)
    times = times.cast(stamp)  # a Date column is filed by its midnight UTC
    starts = pl.Series([s for s, _ in spans], dtype=stamp)
    ends = pl.Series([e for _, e in spans], dtype=stamp)
    index = starts.search_sorted(times, side="right").cast(pl.Int64) - 1
    holds = (index >= 0) & times.is_not_null() & (times < ends.gather(index.clip(0, len(spans) - 1)))
    return index.zip_with(holds.fill_null(False), pl.Series([None] * len(index), dtype=pl.Int64)).alias("_slot")


def _describe(spans: list[tuple[datetime, datetime]]) -> str:
    if not spans:
        return "no partitions"
    first, last = spans[0], spans[-1]
    return f"{len(spans)} from {first[0]:%Y-%m-%dT%H:%M}Z to {last[1]:%Y-%m-%dT%H:%M}Z"


def _encode(frame: pl.DataFrame, table: LakeTable) -> bytes:
    # No timestamp goes into the footer, so the same rows always give the same bytes.
    buffer = io.BytesIO()
    geo = geoparquet_metadata(table, frame)
    frame.write_parquet(
        buffer, compression=_PARQUET_COMPRESSION, statistics=True, metadata={"geo": geo} if geo else None
    )
    return buffer.getvalue()


# WKB geometry type codes (ISO, 2D) and the GeoParquet names for them.
_WKB_TYPES = {1: "Point", 2: "LineString", 3: "Polygon", 4: "MultiPoint", 5: "MultiLineString", 6: "MultiPolygon"}


def geoparquet_metadata(table: LakeTable, frame: pl.DataFrame) -> str | None:
    """The GeoParquet 1.1 ``geo`` key for a table with geometry columns (None without any).

    Geometry columns hold WKB (``Column(geometry=True, crs=...)``); the key names each one's encoding, the
    geometry types present and its CRS as PROJJSON, so GeoPandas (``read_parquet``), GDAL and DuckDB
    spatial read the files as geometries. The first geometry column is the primary one.
    """
    columns = [c for c in table.columns if c.geometry]
    if not columns:
        return None
    described = {}
    for column in columns:
        kinds = set()
        for value in frame.get_column(column.name).drop_nulls().to_list():
            order = "<" if value[0] == 1 else ">"
            code = struct.unpack(f"{order}I", value[1:5])[0] % 1000
            kinds.add(_WKB_TYPES.get(code, "Unknown"))
        entry: dict = {"encoding": "WKB", "geometry_types": sorted(kinds - {"Unknown"})}
        if column.crs:
            entry["crs"] = _projjson(column.crs)
        described[column.name] = entry
    return json.dumps({"version": "1.1.0", "primary_column": columns[0].name, "columns": described}, sort_keys=True)


@functools.lru_cache(maxsize=8)
def _projjson(crs: str) -> dict:
    """PROJJSON of a CRS such as ``EPSG:4326`` (pyproj, imported only for tables that carry geometry)."""
    from pyproj import CRS

    return CRS.from_user_input(crs).to_json_dict()
