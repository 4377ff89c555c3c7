"""The analyst catalog: one DuckDB file of documented views over the lake.

Analysts open the file read-only (``duckdb.connect(path, read_only=True)``) while pipelines run.
Publishing builds a complete new file beside the old one and renames it into place: an analyst's open
connection keeps reading the file it opened, and the next connection sees the new one. Views read
Parquet by absolute path, so the file answers the same from any working directory.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import polars as pl

from resources.lake import Lake, LakeTable

_DUCKDB_TYPES: dict[type, str] = {
    pl.String: "VARCHAR",
    pl.Float64: "DOUBLE",
    pl.Float32: "FLOAT",
    pl.Int64: "BIGINT",
    pl.Int32: "INTEGER",
    pl.Boolean: "BOOLEAN",
    pl.Date: "DATE",
}


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


class AnalystCatalog(dg.ConfigurableResource):
    """Where the analysts' DuckDB file is published (``IHUB_DATA_DIR``/catalog/ihub.duckdb by default)."""

    path: str
    local_timezone: str = "Asia/Bangkok"

    def publish(self, lake: Lake, tables: Sequence[LakeTable], views: Sequence[SqlView] = ()) -> Published:
        """Build the catalog aside with a view per lake table and each derived view; swap it in."""
        import duckdb  # heavy-ish import kept out of definition loading

        target = Path(self.path).resolve()
        target.parent.mkdir(parents=True, exist_ok=True)
        building = target.with_name(f".{target.name}.{uuid.uuid4().hex}.building")
        empty: list[str] = []
        try:
            with duckdb.connect(str(building)) as con:
                for table in tables:
                    con.execute(f"CREATE SCHEMA IF NOT EXISTS {table.layer}")
                    files = lake.files(table)
                    if files:
                        source = (
                            f"SELECT {', '.join(_quote(c) for c in table.column_names)} FROM read_parquet("
                            f"{_literal(lake.glob(table))}, union_by_name = true, hive_partitioning = false)"
                        )
                    else:
                        # No partition yet: a typed, empty view rather than one that fails on no files.
                        empty.append(f"{table.layer}.{table.name}")
                        source = (
                            "SELECT "
                            + ", ".join(
                                f"CAST(NULL AS {_duckdb_type(c.dtype)}) AS {_quote(c.name)}" for c in table.columns
                            )
                            + " WHERE false"
                        )
                    con.execute(f"CREATE VIEW {table.layer}.{_quote(table.name)} AS {source}")
                    _comment(
                        con,
                        table.layer,
                        table.name,
                        table.description,
                        {c.name: c.description for c in table.columns},
                    )
                for view in views:
                    con.execute(f"CREATE SCHEMA IF NOT EXISTS {view.schema}")
                    con.execute(f"CREATE VIEW {view.schema}.{_quote(view.name)} AS {view.sql}")
                    _comment(con, view.schema, view.name, view.description, view.columns)
                con.execute("CHECKPOINT")
            with open(building, "rb") as handle:
                os.fsync(handle.fileno())
            os.replace(building, target)
        except BaseException:
            building.unlink(missing_ok=True)
            Path(f"{building}.wal").unlink(missing_ok=True)
            raise
        return Published(
            path=str(target),
            views=len(tables) + len(views),
            empty_tables=tuple(empty),
            bytes=target.stat().st_size,
        )


def _comment(con, schema: str, name: str, description: str, columns: dict[str, str]) -> None:
    con.execute(f"COMMENT ON VIEW {schema}.{_quote(name)} IS {_literal(description)}")
    for column, text in columns.items():
        con.execute(f"COMMENT ON COLUMN {schema}.{_quote(name)}.{_quote(column)} IS {_literal(text)}")


def _duckdb_type(dtype: pl.DataType) -> str:
    if isinstance(dtype, pl.Datetime):
        return "TIMESTAMPTZ" if dtype.time_zone else "TIMESTAMP"
    if isinstance(dtype, pl.List):
        return f"{_duckdb_type(dtype.inner)}[]"
    try:
        return _DUCKDB_TYPES[type(dtype)]
    except KeyError:
        raise TypeError(f"no DuckDB type for {dtype}") from None


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
