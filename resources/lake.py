"""The lake: Parquet files under the data directory, one file per Dagster partition.

Layout: ``<root>/<layer>/<table>/date=YYYY-MM-DD/part-HHMM.parquet`` for intraday partitions,
``.../date=YYYY-MM-DD/part-day.parquet`` for daily ones and ``<root>/<layer>/<table>/snapshot.parquet``
for tables that are replaced whole (slowly changing catalogues). Every file is written beside its final
name and renamed into place, so a reader sees the old partition or the new one, never half of either,
and two runs writing different partitions never wait on each other.
"""

from __future__ import annotations

import glob
import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal

import dagster as dg
import polars as pl

Grain = Literal["hour", "day"]
GRAIN_STEP: dict[Grain, timedelta] = {"hour": timedelta(hours=1), "day": timedelta(days=1)}

# Written into every file's footer instead of a timestamp: a re-run must produce identical bytes.
_PARQUET_COMPRESSION = "zstd"


@dataclass(frozen=True)
class Column:
    """One column of a lake table: its name, type and what it means to a person reading it."""

    name: str
    dtype: pl.DataType
    description: str
    nullable: bool = True


@dataclass(frozen=True)
class LakeTable:
    """A table of the lake: where it lives, its columns, its key and how time cuts it into files.

    The same declaration types incoming rows, writes the files, documents the asset in the Dagster UI
    and comments the analyst catalog, so the four never disagree.
    """

    layer: str
    name: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    time_column: str | None = None

    @property
    def schema(self) -> pl.Schema:
        return pl.Schema({c.name: c.dtype for c in self.columns})

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for candidate in self.columns:
            if candidate.name == name:
                return candidate
        raise KeyError(f"table {self.layer}.{self.name} has no column {name!r}; it has {self.column_names}")

    def empty(self) -> pl.DataFrame:
        return pl.DataFrame(schema=self.schema)

    def dagster_column_schema(self) -> dg.TableSchema:
        """The column list the Dagster UI shows on the asset's page."""
        return dg.TableSchema(
            columns=[
                dg.TableColumn(
                    name=c.name,
                    type=str(c.dtype),
                    description=c.description,
                    constraints=dg.TableColumnConstraints(nullable=c.nullable),
                )
                for c in self.columns
            ]
        )

    def conform(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Columns in declared order and type, rows in key order, so equal data gives equal files."""
        missing = [c for c in self.column_names if c not in frame.columns]
        if missing:
            raise ValueError(
                f"frame for {self.layer}.{self.name} lacks columns {missing}; expected {self.column_names}"
            )
        conformed = frame.select([pl.col(c.name).cast(c.dtype) for c in self.columns])
        order = list(self.key) or self.column_names
        return conformed.sort(order, nulls_last=True, maintain_order=True)


@dataclass(frozen=True)
class Written:
    """What a write put in the lake: files, rows and the frame itself for summary figures."""

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


def partition_starts(start: datetime, end: datetime, grain: Grain) -> list[datetime]:
    """Every partition start in ``[start, end)`` at the given grain."""
    step = GRAIN_STEP[grain]
    starts, cursor = [], start
    while cursor < end:
        starts.append(cursor)
        cursor += step
    return starts


class Lake(dg.ConfigurableResource):
    """The Parquet lake under the data directory (``IHUB_DATA_DIR``/lake by default)."""

    root: str

    # -- paths -------------------------------------------------------------------------------------

    def table_dir(self, table: LakeTable) -> Path:
        return Path(self.root).resolve() / table.layer / table.name

    def partition_path(self, table: LakeTable, start: datetime, grain: Grain) -> Path:
        start = start.astimezone(UTC)
        part = "part-day" if grain == "day" else f"part-{start:%H%M}"
        return self.table_dir(table) / f"date={start:%Y-%m-%d}" / f"{part}.parquet"

    def snapshot_path(self, table: LakeTable) -> Path:
        return self.table_dir(table) / "snapshot.parquet"

    def glob(self, table: LakeTable) -> str:
        """The absolute glob that matches every file of the table (what the catalog views read)."""
        return str(self.table_dir(table) / "**" / "*.parquet")

    def files(self, table: LakeTable) -> list[str]:
        return sorted(glob.glob(self.glob(table), recursive=True))

    # -- writes ------------------------------------------------------------------------------------

    def replace_partitions(
        self,
        table: LakeTable,
        frame: pl.DataFrame,
        starts: Sequence[datetime],
        grain: Grain,
    ) -> Written:
        """Replace each partition in ``starts`` with the rows of ``frame`` that fall in it.

        A partition with no rows is written as an empty file: an empty hour is a fact worth keeping,
        and it replaces whatever an earlier run had put there.
        """
        if table.time_column is None:
            raise ValueError(f"table {table.layer}.{table.name} has no time column to partition by")
        frame = table.conform(frame)
        step = GRAIN_STEP[grain]
        paths = []
        bucket = pl.col(table.time_column).dt.truncate("1h" if grain == "hour" else "1d")
        by_start = {
            key[0]: part for key, part in frame.with_columns(_slot=bucket).partition_by("_slot", as_dict=True).items()
        }
        stray = sorted(set(by_start) - set(starts))
        if stray:
            # Checked before any file is touched: a refused write changes nothing.
            raise ValueError(
                f"{table.layer}.{table.name}: rows at {stray[0]:%Y-%m-%dT%H:%M}Z fall outside the partitions "
                f"being written ({starts[0]:%Y-%m-%dT%H:%M}Z + {len(starts)} × {step})"
            )
        for start in starts:
            part = by_start.get(start)
            rows = table.empty() if part is None else part.drop("_slot")
            paths.append(str(self._write_atomically(rows, self.partition_path(table, start, grain))))
        return Written(table, tuple(paths), frame)

    def window_path(self, table: LakeTable, start: datetime) -> Path:
        start = start.astimezone(UTC)
        return self.table_dir(table) / f"date={start:%Y-%m-%d}" / f"part-{start:%H%M}.parquet"

    def replace_window(self, table: LakeTable, start: datetime, frame: pl.DataFrame) -> Written:
        """Replace the file of one processing window (e.g. a SCADA receive window), whatever the rows'
        own timestamps: late points belong to the window that received them."""
        frame = table.conform(frame)
        path = self._write_atomically(frame, self.window_path(table, start))
        return Written(table, (str(path),), frame)

    def replace_snapshot(self, table: LakeTable, frame: pl.DataFrame) -> Written:
        """Replace a whole slowly changing table (a catalogue) in one rename."""
        frame = table.conform(frame)
        path = self._write_atomically(frame, self.snapshot_path(table))
        return Written(table, (str(path),), frame)

    def _write_atomically(self, frame: pl.DataFrame, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        # The temporary name does not end in .parquet, so no reader's glob ever picks it up.
        temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
        try:
            frame.write_parquet(temporary, compression=_PARQUET_COMPRESSION, statistics=True)
            with open(temporary, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        _fsync_directory(path.parent)
        return path

    # -- reads -------------------------------------------------------------------------------------

    def read(
        self,
        table: LakeTable,
        start: datetime | None = None,
        end: datetime | None = None,
    ) -> pl.DataFrame:
        """Rows of the table, optionally only those with the time column in ``[start, end)``."""
        files = self._files_between(table, start, end)
        if not files:
            return table.empty()
        scan = pl.scan_parquet(files, hive_partitioning=False, missing_columns="insert", extra_columns="ignore")
        if table.time_column is not None and start is not None:
            scan = scan.filter(pl.col(table.time_column) >= start)
        if table.time_column is not None and end is not None:
            scan = scan.filter(pl.col(table.time_column) < end)
        return table.conform(scan.collect())

    def read_windows(self, table: LakeTable, starts: Sequence[datetime]) -> pl.DataFrame:
        """Rows of the processing-window files starting at ``starts`` (those that exist), in key order."""
        files = [str(path) for path in (self.window_path(table, start) for start in starts) if path.exists()]
        if not files:
            return table.empty()
        return table.conform(pl.read_parquet(files, missing_columns="insert"))

    def _files_between(self, table: LakeTable, start: datetime | None, end: datetime | None) -> list[str]:
        """Only the ``date=`` folders in range are listed: a year of 5-minute windows is 105,120 files."""
        if start is None and end is None:
            return self.files(table)
        root = self.table_dir(table)
        if not root.is_dir():
            return []
        first = (start or datetime.min.replace(tzinfo=UTC)).astimezone(UTC).date()
        last = (end or datetime.max.replace(tzinfo=UTC)).astimezone(UTC).date()
        files = [str(path) for path in root.glob("*.parquet")]  # a snapshot has no date folder
        for folder in root.glob("date=*"):
            if first <= date.fromisoformat(folder.name.removeprefix("date=")) <= last:
                files.extend(str(path) for path in folder.glob("*.parquet"))
        return sorted(files)


def _fsync_directory(directory: Path) -> None:
    # The rename is only durable once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
