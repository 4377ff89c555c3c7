"""The analyst catalog: one DuckDB file of documented views over the lake.

Analysts open the file read-only (``duckdb.connect(path, read_only=True)``) while pipelines run.
Publishing builds a complete new file beside the old one and renames it into place: an analyst's open
connection keeps reading the file it opened, and the next connection sees the new one. Building files
carry their writer (host and pid), and a publish first removes those of publishers that died.

Views read the lake wherever it is. On a local disk they name absolute paths, so the file answers the
same from any working directory. On object storage they name ``s3://`` URLs; DuckDB reads those
either through its httpfs extension (which must be installed on the analyst's machine; this hub's
machines cannot download it) or through the lake's own fsspec filesystem mounted on the connection,
which is what ``open_catalog(path, lake)`` does, and what ``publish`` does while it builds the file.
An analyst without this package opens an S3 catalog with httpfs and a secret for the bucket:

    INSTALL httpfs; LOAD httpfs;
    CREATE SECRET lake (TYPE s3, KEY_ID '…', SECRET '…', ENDPOINT 'host:port', URL_STYLE 'path', USE_SSL false);

Column types come from the one type registry (``resources/tables.py``): decimals stay DECIMAL(p, s),
geometry stays WKB in a BLOB (``ST_GeomFromWKB`` with DuckDB spatial), lists become ``type[]``.

Geometry: every view keeps its geometry columns as WKB in a BLOB (the lake writes them as GeoParquet,
which DuckDB 2 would read as its GEOMETRY type; the view casts them back, so the column is the same type
with or without data and any client reads it). Each table with a geometry column also gets a
``<table>_geo`` view beside it whose geometry columns are ``GEOMETRY`` (``ST_GeomFromWKB``, in DuckDB's
core since 1.4: ``ST_AsText``, ``ST_AsGeoJSON``, ``ST_Intersects_Extent``). The full spatial function set
(``ST_Area``, ``ST_Contains``, ``ST_Transform``) needs DuckDB's spatial extension: publishing loads it
when it is installed (``spatial_extension="load"``) or tries ``INSTALL spatial`` first (``"install"``,
which needs the internet; this hub's machines have none). ``Published.spatial`` says whether it loaded;
without it (or without ``ST_GeomFromWKB``) the WKB views stand alone and analysts decode WKB themselves.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from resources.lake import Lake, LakeTable
from resources.storage import fsync_directory, sweep_debris, temporary_name


@dataclass(frozen=True)
class SqlView:
    """A derived view the catalog carries besides the lake tables, with its documentation."""

    schema: str
    name: str
    sql: str
    description: str
    columns: dict[str, str]


@dataclass(frozen=True)
class Published:
    path: str
    views: int
    empty_tables: tuple[str, ...]
    bytes: int
    spatial: bool = False  # whether DuckDB's spatial extension was loaded (ST_Area and friends on _geo views)


class AnalystCatalog(dg.ConfigurableResource):
    """Where the analysts' DuckDB file is published (``IHUB_DATA_DIR``/catalog/ihub.duckdb by default)."""

    path: str
    local_timezone: str = "Asia/Bangkok"
    spatial_extension: str = "load"  # "off", "load" (if installed) or "install" (needs the internet)

    def publish(self, lake: Lake, tables: Sequence[LakeTable], views: Sequence[SqlView] = ()) -> Published:
        """Build the catalog aside with a view per lake table and each derived view; swap it in."""
        import duckdb  # heavy-ish import kept out of definition loading

        target = Path(self.path).resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        sweep_debris(target.parent)
        building = target.with_name(temporary_name(target.name, "building"))
        empty: list[str] = []
        spatial = False
        geo_views = 0
        try:
            with duckdb.connect(str(building)) as con:
                _mount(con, lake)
                geo = False
                if any(c.geometry for table in tables for c in table.columns):
                    spatial = _load_spatial(con, self.spatial_extension)
                    geo = spatial or _has_function(con, "st_geomfromwkb")
                for table in tables:
                    con.execute(f"CREATE SCHEMA IF NOT EXISTS {table.layer}")
                    files = lake.files(table)
                    if files:
                        source = (
                            f"SELECT {', '.join(_select(c) for c in table.columns)} FROM read_parquet("
                            f"{_literal(lake.glob(table))}, union_by_name = true, hive_partitioning = false)"
                        )
                    else:
                        # No partition yet: a typed, empty view rather than one that fails on no files.
                        empty.append(f"{table.layer}.{table.name}")
                        source = (
                            "SELECT "
                            + ", ".join(f"CAST(NULL AS {c.duckdb_type}) AS {_quote(c.name)}" for c in table.columns)
                            + " WHERE false"
                        )
                    con.execute(f"CREATE VIEW {table.layer}.{_quote(table.name)} AS {source}")
                    _comment(
                        con,
                        table.layer,
                        table.name,
                        table.description,
                        {c.name: _column_comment(c) for c in table.columns},
                    )
                    if geo and any(c.geometry for c in table.columns):
                        _geo_view(con, table)
                        geo_views += 1
                for view in views:
                    con.execute(f"CREATE SCHEMA IF NOT EXISTS {view.schema}")
                    con.execute(f"CREATE VIEW {view.schema}.{_quote(view.name)} AS {view.sql}")
                    _comment(con, view.schema, view.name, view.description, view.columns)
                con.execute("CHECKPOINT")
            with open(building, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(building, target)
            fsync_directory(target.parent)
        except BaseException:
            building.unlink(missing_ok=True)
            Path(f"{building}.wal").unlink(missing_ok=True)
            raise
        return Published(
            path=str(target),
            views=len(tables) + len(views) + geo_views,
            empty_tables=tuple(empty),
            bytes=target.stat().st_size,
            spatial=spatial,
        )


def _comment(con, schema: str, name: str, description: str, columns: dict[str, str]) -> None:
    con.execute(f"COMMENT ON VIEW {schema}.{_quote(name)} IS {_literal(description)}")
    for column, text in columns.items():
        con.execute(f"COMMENT ON COLUMN {schema}.{_quote(name)}.{_quote(column)} IS {_literal(text)}")


def _column_comment(column) -> str:
    if column.geometry:
        crs = f" in {column.crs}" if column.crs else ""
        return f"{column.description} (geometry as WKB{crs}; ST_GeomFromWKB with DuckDB spatial)"
    return column.description


def _load_spatial(con: Any, mode: str) -> bool:
    """Whether DuckDB's spatial extension is loaded on ``con`` (never an error: the WKB views stand alone)."""
    import duckdb

    if mode == "off":
        return False
    if mode not in ("load", "install"):
        raise ValueError(f"AnalystCatalog.spatial_extension must be off, load or install, got {mode!r}")
    try:
        con.execute("LOAD spatial")
        return True
    except duckdb.Error:
        if mode == "load":
            return False
    try:  # needs extensions.duckdb.org; fails within seconds without the internet
        con.execute("INSTALL spatial")
        con.execute("LOAD spatial")
        return True
    except duckdb.Error:
        return False


def _has_function(con: Any, name: str) -> bool:
    return bool(con.execute("SELECT count(*) FROM duckdb_functions() WHERE function_name = ?", [name]).fetchone()[0])


def _select(column: Any) -> str:
    """A column of a view over Parquet: geometry as WKB in a BLOB whether or not DuckDB read GeoParquet."""
    if column.geometry:
        return f"CAST({_quote(column.name)} AS BLOB) AS {_quote(column.name)}"
    return _quote(column.name)


def _geo_view(con: Any, table: LakeTable) -> None:
    """``<table>_geo``: the table's view with its WKB columns as GEOMETRY (DuckDB spatial)."""
    columns = ", ".join(
        f"ST_GeomFromWKB({_quote(c.name)}) AS {_quote(c.name)}" if c.geometry else _quote(c.name) for c in table.columns
    )
    name = f"{table.name}_geo"
    con.execute(f"CREATE VIEW {table.layer}.{_quote(name)} AS SELECT {columns} FROM {table.layer}.{_quote(table.name)}")
    _comment(
        con,
        table.layer,
        name,
        f"{table.description} Geometry columns as DuckDB spatial GEOMETRY.",
        {c.name: (f"{c.description} (GEOMETRY in {c.crs})" if c.geometry else c.description) for c in table.columns},
    )


def _mount(con: Any, lake: Lake) -> None:
    """Let DuckDB read a lake on object storage through the lake's own filesystem (no httpfs needed)."""
    filesystem = lake.storage.filesystem()
    if filesystem is not None:
        con.register_filesystem(filesystem)


def open_catalog(path: str, lake: Lake | None = None) -> Any:
    """Open the published catalog read-only, able to read the lake wherever it is."""
    import duckdb

    con = duckdb.connect(str(Path(path).resolve()), read_only=True)
    if lake is not None:
        _mount(con, lake)
    return con


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
