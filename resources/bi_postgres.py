"""The marts in PostgreSQL, for BI tools that speak nothing else (Power BI, Tableau, Grafana).

Each lake table of the ``marts`` layer is loaded into one schema, table by table, each in one
transaction: the new rows go into a fresh table that replaces the old one on commit, so a dashboard
reading at that moment sees the old table or the new one, never half of either. A read-only role gets
``USAGE`` on the schema and ``SELECT`` on its tables and nothing else: it cannot write, create, or read any
other schema. Table and column comments come from the lake tables' descriptions, so the BI tool's field
list says what each column holds and in which unit.

Secrets (the admin URL's password, the BI role's password) come from the environment and never reach
logs, metadata or errors: errors name the host, the database, the schema and the table.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

import dagster as dg
import polars as pl
from pydantic import Field

from resources.lake import LakeTable

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _pg_type(dtype: pl.DataType) -> str:
    if dtype == pl.String:
        return "text"
    if dtype == pl.Int64:
        return "bigint"
    if dtype in (pl.Int32, pl.Int16, pl.Int8):
        return "integer"
    if dtype in (pl.Float64, pl.Float32):
        return "double precision"
    if dtype == pl.Boolean:
        return "boolean"
    if dtype == pl.Date:
        return "date"
    if isinstance(dtype, pl.Datetime):
        return "timestamptz" if dtype.time_zone else "timestamp"
    if isinstance(dtype, pl.Decimal):
        return f"numeric({dtype.precision},{dtype.scale})" if dtype.precision else "numeric"
    if dtype == pl.Binary:
        return "bytea"
    return "jsonb"  # lists and structs: one JSON value per cell


def _checked(name: str, what: str) -> str:
    if not _IDENTIFIER.match(name):
        raise ValueError(f"BI export: {what} {name!r} is not a plain lower-case PostgreSQL identifier")
    return name


@dataclass(frozen=True)
class Loaded:
    table: str
    rows: int


class BiPostgres(dg.ConfigurableResource):
    """Where the marts go for BI tools: an admin connection, a schema and a read-only role."""

    url: str = Field(
        default="",
        description="Admin connection URL postgresql://user[:password]@host:port/db (IHUB_BI_PG_URL); empty: none.",
    )
    schema_name: str = Field(default="ihub_marts", description="Schema the marts are loaded into.")
    reader_role: str = Field(default="ihub_bi_reader", description="Read-only role BI tools log in as.")
    reader_password: str = Field(default="", description="Its password (IHUB_BI_READER_PASSWORD); empty: no login.")

    @property
    def configured(self) -> bool:
        return bool(self.url)

    def where(self) -> str:
        """host:port/db, without user or password: what errors and metadata may say."""
        parts = urlsplit(self.url)
        return f"{parts.hostname}:{parts.port or 5432}{parts.path}"

    def _connect(self):
        import psycopg2

        try:
            return psycopg2.connect(self.url, connect_timeout=10)
        except psycopg2.OperationalError as error:
            # psycopg2's message can echo the DSN; say where, not how.
            raise RuntimeError(
                f"BI export: cannot connect to PostgreSQL at {self.where()}: {type(error).__name__}"
            ) from None

    def load(self, tables: Sequence[tuple[LakeTable, pl.DataFrame]]) -> list[Loaded]:
        """Replace each table in the schema with the given rows, and keep the reader role read-only."""
        schema = _checked(self.schema_name, "schema")
        role = _checked(self.reader_role, "role")
        loaded = []
        with self._connect() as connection:
            connection.autocommit = False
            with connection.cursor() as cursor:
                self._prepare(cursor, schema, role)
            connection.commit()
            for table, frame in tables:
                with connection.cursor() as cursor:
                    loaded.append(self._replace(cursor, schema, role, table, frame))
                connection.commit()  # one table per transaction: readers see it whole or not yet
        return loaded

    def _prepare(self, cursor, schema: str, role: str) -> None:
        cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
        if cursor.fetchone() is None:
            cursor.execute(f"CREATE ROLE {role} NOLOGIN")
        if self.reader_password:
            cursor.execute(f"ALTER ROLE {role} LOGIN PASSWORD %s", (self.reader_password,))
        # Read-only however the role was made: no creating, no superpowers, a read-only default.
        cursor.execute(f"ALTER ROLE {role} NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT")
        cursor.execute(f"ALTER ROLE {role} SET default_transaction_read_only = on")
        cursor.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        cursor.execute(f"REVOKE ALL ON SCHEMA {schema} FROM PUBLIC")
        cursor.execute(f"REVOKE CREATE ON SCHEMA {schema} FROM {role}")
        cursor.execute(f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        cursor.execute(
            f"COMMENT ON SCHEMA {schema} IS %s",
            ("The integration hub's marts for BI tools; reloaded by the exports/bi_postgres asset.",),
        )

    def _replace(self, cursor, schema: str, role: str, table: LakeTable, frame: pl.DataFrame) -> Loaded:
        name = _checked(table.name, "table")
        staging = f"{name}__loading"
        columns = [c for c in table.columns if c.name in frame.columns]
        cursor.execute(f"DROP TABLE IF EXISTS {schema}.{staging}")
        definition = ", ".join(f"{_checked(c.name, 'column')} {_pg_type(c.dtype)}" for c in columns)
        cursor.execute(f"CREATE TABLE {schema}.{staging} ({definition})")
        out = frame.select(
            [
                pl.col(c.name).map_elements(_json, return_dtype=pl.String)
                if _pg_type(c.dtype) == "jsonb"
                else pl.col(c.name)
                for c in columns
            ]
        )
        buffer = io.StringIO()
        out.write_csv(buffer, include_header=False, null_value="\\N", datetime_format="%Y-%m-%dT%H:%M:%S%.f%z")
        buffer.seek(0)
        names = ", ".join(c.name for c in columns)
        cursor.copy_expert(f"COPY {schema}.{staging} ({names}) FROM STDIN WITH (FORMAT csv, NULL '\\N')", buffer)
        cursor.execute(f"DROP TABLE IF EXISTS {schema}.{name}")
        cursor.execute(f"ALTER TABLE {schema}.{staging} RENAME TO {name}")
        cursor.execute(f"COMMENT ON TABLE {schema}.{name} IS %s", (table.description,))
        for column in columns:
            cursor.execute(f"COMMENT ON COLUMN {schema}.{name}.{column.name} IS %s", (column.description,))
        cursor.execute(f"REVOKE ALL ON {schema}.{name} FROM PUBLIC")
        cursor.execute(f"GRANT SELECT ON {schema}.{name} TO {role}")
        return Loaded(table=f"{schema}.{name}", rows=frame.height)


def _json(value) -> str | None:
    if value is None:
        return None
    return json.dumps(value.to_list() if hasattr(value, "to_list") else value, default=str)
