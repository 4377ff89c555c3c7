"""The ERP's SQL database (production capacity, maintenance shutdowns), read through SQLAlchemy 2 Core.

Every read is a Core ``select`` on a declared table with the window as bound parameters; no SQL text is
ever built from values. Incremental reads take the rows whose ``changed_at`` falls in a half-open UTC
window ``[start, end)``: the watermark is the Dagster partition's window, so a partition read again gives
the same rows and a backfill of a range is one query (see docs/sources/erp.md for why not "max changed_at
seen").

Each statement runs under a query timeout the database enforces itself: PostgreSQL ``statement_timeout``,
MariaDB/MySQL ``max_statement_time``, SQLite a progress handler that interrupts the statement. A
statement stopped that way, a refused connection or a missing table comes back as an `ErpSqlError` that
names the table and what to do, with the connection URL's password never in it (the URL is a secret:
``ERP_SQL_URL``).

Values come back as the text a JSON source would send (ISO 8601 times with ``Z``, dates ``YYYY-MM-DD``,
decimals exactly as stored, to the column's scale), so typing and rejecting stay ``quality/conform.py``'s
job and the rows are the same whichever database served them.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import dagster as dg
import sqlalchemy as sa
from pydantic import Field, PrivateAttr

from resources.http import SourceError

__all__ = ["ERP_SQL_TABLES", "ErpSqlError", "ErpSqlReader", "redacted_url"]

SOURCE = "erp"

# What the hub reads of the ERP's planning schema (the columns it needs, not the database's whole DDL).
_METADATA = sa.MetaData()
PRODUCTION_CAPACITY = sa.Table(
    "production_capacity",
    _METADATA,
    sa.Column("plant_id", sa.String(10)),
    sa.Column("period_start", sa.Date),
    sa.Column("capacity_t", sa.Numeric(12, 3)),
    sa.Column("changed_at", sa.DateTime),
)
MAINTENANCE_SHUTDOWNS = sa.Table(
    "maintenance_shutdowns",
    _METADATA,
    sa.Column("plant_id", sa.String(10)),
    sa.Column("starts_at", sa.DateTime),
    sa.Column("ends_at", sa.DateTime),
    sa.Column("reason", sa.String(200)),
    sa.Column("changed_at", sa.DateTime),
)
ERP_SQL_TABLES = {t.name: t for t in (PRODUCTION_CAPACITY, MAINTENANCE_SHUTDOWNS)}
_ORDER = {"production_capacity": ("plant_id", "period_start"), "maintenance_shutdowns": ("plant_id", "starts_at")}


class ErpSqlError(SourceError):
    """A read from the ERP database failed; names the table (as the endpoint) and what to do."""


def redacted_url(url: str) -> str:
    """The URL with its password replaced by ``***`` (or a placeholder when it does not parse)."""
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparseable URL may still hold a password: show none of it
        return "<ERP_SQL_URL that is not a SQLAlchemy URL>"


def _password(url: str) -> str | None:
    try:
        return sa.engine.make_url(url).password
    except Exception:
        return None


def _text(value: Any, column: sa.Column) -> Any:
    """A database value as a JSON source would send it."""
    if value is None:
        return None
    if isinstance(value, datetime):
        stamp = value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
        return stamp.isoformat(timespec="microseconds" if stamp.microsecond else "seconds") + "Z"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal | float | int) and isinstance(column.type, sa.Numeric):
        scale = column.type.scale or 0
        return str(Decimal(str(value)).quantize(Decimal(1).scaleb(-scale)))
    return value


class ErpSqlReader(dg.ConfigurableResource):
    """The ERP's planning database: ``production_capacity`` and ``maintenance_shutdowns`` by change time."""

    url: str = Field(description="SQLAlchemy URL of the ERP database (ERP_SQL_URL); a secret, never logged.")
    db_schema: str = Field(
        default="", description="Schema (PostgreSQL) or database (MariaDB) holding the tables (ERP_SQL_SCHEMA)."
    )
    query_timeout_s: float = Field(default=60.0, description="Longest a statement may run before it is stopped.")
    connect_timeout_s: float = Field(default=10.0, description="Longest to wait for a connection.")

    _engine: sa.Engine | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __repr__(self) -> str:
        return f"ErpSqlReader(url={redacted_url(self.url)!r}, db_schema={self.db_schema!r})"

    __str__ = __repr__

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.dispose()

    # ------------------------------------------------------------------ reads

    def production_capacity(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Capacity rows (plant, month, tonnes) whose ``changed_at`` is in ``[start, end)`` UTC."""
        return self.changed_rows("production_capacity", start, end)

    def maintenance_shutdowns(self, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Shutdown rows (plant, start, end, reason) whose ``changed_at`` is in ``[start, end)`` UTC."""
        return self.changed_rows("maintenance_shutdowns", start, end)

    def changed_rows(self, table_name: str, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """Rows of one table changed in ``[start, end)`` UTC, in key order, values as text."""
        table = ERP_SQL_TABLES[table_name]
        if start.tzinfo is None or end.tzinfo is None:
            raise ValueError("the window must be timezone-aware UTC datetimes")
        changed = table.c.changed_at
        statement = (
            sa.select(*table.columns)
            .where(changed >= sa.bindparam("window_start"), changed < sa.bindparam("window_end"))
            .order_by(*(table.c[name] for name in _ORDER[table_name]))
        )
        window = {
            "window_start": start.astimezone(UTC).replace(tzinfo=None),
            "window_end": end.astimezone(UTC).replace(tzinfo=None),
        }
        with self._statement(table_name) as connection:
            result = connection.execute(statement, window)
            return [{c.name: _text(v, c) for c, v in zip(table.columns, row, strict=True)} for row in result]

    # ------------------------------------------------------------------ connections, timeouts, errors

    def engine(self) -> sa.Engine:
        with self._lock:
            if self._engine is None:
                self._engine = self._create_engine()
            return self._engine

    def _fail(self, table: str, reason: str) -> ErpSqlError:
        secret = _password(self.url)
        if secret:
            reason = reason.replace(secret, "***")
        return ErpSqlError(SOURCE, table, reason, method="SELECT")

    def _create_engine(self) -> sa.Engine:
        if not self.url:
            raise self._fail("(connection)", "ERP_SQL_URL is empty or not set; set it to the ERP database's URL")
        try:
            url = sa.engine.make_url(self.url)
        except sa.exc.ArgumentError:
            raise self._fail(
                "(connection)", "ERP_SQL_URL is not a SQLAlchemy URL (expected e.g. postgresql+psycopg2://…)"
            ) from None
        backend = url.get_backend_name()
        connect_args: dict[str, Any] = {}
        if backend == "postgresql":
            connect_args["connect_timeout"] = max(1, round(self.connect_timeout_s))
        elif backend in ("mysql", "mariadb"):
            connect_args["connect_timeout"] = max(1, round(self.connect_timeout_s))
            connect_args["read_timeout"] = max(1, round(self.query_timeout_s + self.connect_timeout_s))
        elif backend == "sqlite":
            connect_args["timeout"] = self.connect_timeout_s  # waiting for a writer's lock
        try:
            engine = sa.create_engine(url, connect_args=connect_args, pool_pre_ping=True, pool_size=2, max_overflow=2)
        except TypeError:  # SQLite's pool takes no size
            engine = sa.create_engine(url, connect_args=connect_args)
        except (sa.exc.ArgumentError, ImportError) as exc:
            raise self._fail("(connection)", f"cannot use ERP_SQL_URL ({redacted_url(self.url)}): {exc}") from None
        if self.db_schema:
            engine = engine.execution_options(schema_translate_map={None: self.db_schema})
        return engine

    @contextmanager
    def _statement(self, table: str) -> Iterator[sa.Connection]:
        """A connection whose next statement the database stops after ``query_timeout_s``."""
        engine = self.engine()
        backend = engine.dialect.name
        timeout_ms = max(1, round(self.query_timeout_s * 1000))
        started = time.monotonic()
        try:
            with engine.connect() as connection:
                raw = None
                if backend == "postgresql":
                    # set_config takes bound parameters where SET cannot; false: for the whole session.
                    connection.execute(
                        sa.text("SELECT set_config('statement_timeout', :ms, false)"), {"ms": str(timeout_ms)}
                    )
                elif backend in ("mysql", "mariadb"):
                    connection.execute(sa.text("SET SESSION max_statement_time = :s"), {"s": timeout_ms / 1000})
                elif backend == "sqlite":
                    raw = connection.connection.driver_connection
                    deadline = started + self.query_timeout_s
                    # Called every 10,000 VM instructions; a non-zero answer interrupts the statement.
                    raw.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
                # The timeout is set for the session before every read, so a pooled connection never runs
                # a statement of this reader without it; nothing else shares the engine.
                try:
                    with warnings.catch_warnings():
                        # SQLite keeps NUMERIC as a float; _text quantizes it back to the column's scale.
                        warnings.filterwarnings("ignore", message=".*does \\*not\\* support Decimal objects.*")
                        yield connection
                finally:
                    if raw is not None:
                        raw.set_progress_handler(None, 0)
        except sa.exc.DBAPIError as exc:
            elapsed = time.monotonic() - started
            raise self._explain(table, exc, elapsed) from None
        except sa.exc.SQLAlchemyError as exc:
            raise self._fail(table, f"{type(exc).__name__}: {exc}") from None

    def _explain(self, table: str, exc: sa.exc.DBAPIError, elapsed_s: float) -> ErpSqlError:
        original = exc.orig
        message = " ".join(str(original).split()) if original is not None else str(exc)
        code = getattr(original, "pgcode", None)
        if code is None and original is not None and original.args and isinstance(original.args[0], int):
            code = original.args[0]  # PyMySQL: (errno, message)
        timed_out = (
            code == "57014"  # PostgreSQL query_canceled (statement_timeout)
            or code in (1969, 3024)  # MariaDB max_statement_time, MySQL max_execution_time
            or (self.engine().dialect.name == "sqlite" and "interrupted" in message)
        )
        if timed_out:
            return self._fail(
                table,
                f"query stopped by the database after {elapsed_s:.1f} s: it exceeded the {self.query_timeout_s:g} s "
                "query timeout (ErpSqlReader.query_timeout_s). The ERP database is slow or the window is large: "
                f"backfill fewer days per run, ask the DBA for an index on {table}.changed_at, or raise the timeout. "
                f"Database said: {message[:200]}",
            )
        lowered = message.lower()
        if "connect" in lowered or "unable to open database" in lowered or code in (1044, 1045, 2003, 2005, 2013):
            return self._fail(
                table,
                f"cannot reach the ERP database at {redacted_url(self.url)}: {message[:300]}. "
                "Check ERP_SQL_URL, the network and the credentials.",
            )
        if "no such table" in message or "does not exist" in message or code in (1146,):
            where = f" in schema {self.db_schema!r}" if self.db_schema else ""
            return self._fail(
                table,
                f"table {table}{where} not found: {message[:200]}. Check ERP_SQL_SCHEMA and the grants of the "
                "hub's database user.",
            )
        return self._fail(table, f"{type(original).__name__ if original else type(exc).__name__}: {message[:300]}")
