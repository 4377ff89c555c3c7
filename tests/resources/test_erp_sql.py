"""The ERP SQL reader on SQLite, PostgreSQL and MariaDB: the same rows from each, incremental windows,
query timeouts the database enforces, errors that name the table and never the password."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa

from resources.erp_sql import ErpSqlError, ErpSqlReader
from simulators.erp_data import ErpNetwork
from simulators.erp_sql import seed_database
from tests.conftest import require_service

NOW = datetime(2026, 12, 4, 6, 0, tzinfo=UTC)
YEAR = (datetime(2026, 1, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
POSTGRES = "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
MARIADB = "mysql+pymysql://root@127.0.0.1:3306/test"
BACKENDS = [
    "sqlite",
    pytest.param("postgresql", marks=pytest.mark.service),
    pytest.param("mariadb", marks=pytest.mark.service),
]


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="seconds") + "Z"


def expected_capacity(start: datetime, end: datetime) -> list[dict]:
    plans = ErpNetwork(7).capacity_plans(date(2026, 1, 1), date(2028, 1, 1))
    return [
        {
            "plant_id": p.plant_id,
            "period_start": p.period_start.isoformat(),
            "capacity_t": str(p.capacity_t),
            "changed_at": _iso(p.changed_at),
        }
        for p in sorted(plans, key=lambda p: (p.plant_id, p.period_start))
        if start <= p.changed_at < end and p.changed_at <= NOW
    ]


@pytest.fixture
def database(request, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A freshly seeded ERP database of the asked backend: (URL, schema), dropped afterwards."""
    backend = request.param
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'erp.sqlite'}"
        seed_database(url, now=NOW)
        yield url, ""
        return
    url = POSTGRES if backend == "postgresql" else MARIADB
    require_service("PostgreSQL" if backend == "postgresql" else "MariaDB", 5432 if backend == "postgresql" else 3306)
    schema = f"erp_test_{uuid.uuid4().hex[:10]}"
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sa.schema.CreateSchema(schema))
    try:
        seed_database(url, schema=schema, now=NOW)
        yield url, schema
    finally:
        with engine.begin() as connection:
            connection.execute(sa.schema.DropSchema(schema, cascade=backend == "postgresql", if_exists=True))
        engine.dispose()


def reader(database: tuple[str, str], **overrides) -> ErpSqlReader:
    url, schema = database
    return ErpSqlReader(**{"url": url, "db_schema": schema, **overrides})


@pytest.mark.parametrize("database", BACKENDS, indirect=True)
def test_reads_give_the_same_text_rows_on_every_database(database):
    erp_sql = reader(database)
    try:
        capacity = erp_sql.production_capacity(*YEAR)
        shutdowns = erp_sql.maintenance_shutdowns(*YEAR)
    finally:
        erp_sql.close()
    assert capacity == expected_capacity(*YEAR)
    assert capacity[0] == {
        "plant_id": "IU01",
        "period_start": "2026-01-01",
        "capacity_t": "219137.000",  # NUMERIC(12, 3), exactly, even from SQLite's float storage
        "changed_at": "2026-01-01T14:04:00Z",
    }
    network = ErpNetwork(7)
    assert [(s["plant_id"], s["starts_at"], s["ends_at"], s["reason"]) for s in shutdowns] == [
        (s.plant_id, _iso(s.starts_at), _iso(s.ends_at), s.reason)
        for s in network.shutdowns(2026)
        if YEAR[0] <= s.changed_at < YEAR[1] and s.changed_at <= NOW
    ]


@pytest.mark.parametrize("database", BACKENDS, indirect=True)
def test_an_incremental_read_takes_the_half_open_window(database):
    erp_sql = reader(database)
    try:
        everything = erp_sql.production_capacity(*YEAR)
        boundary = datetime.fromisoformat(everything[5]["changed_at"])
        before = erp_sql.production_capacity(YEAR[0], boundary)
        after = erp_sql.production_capacity(boundary, YEAR[1])
    finally:
        erp_sql.close()
    assert before == expected_capacity(YEAR[0], boundary) and after == expected_capacity(boundary, YEAR[1])
    assert len(before) + len(after) == len(everything)
    assert all(r["changed_at"] != everything[5]["changed_at"] for r in before)  # end excluded, start included
    assert any(r["changed_at"] == everything[5]["changed_at"] for r in after)


SLOW_VIEW = {
    "sqlite": (
        "CREATE VIEW maintenance_shutdowns AS WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n "
        "WHERE x < 2000000000) SELECT m.* FROM maintenance_shutdowns_base m WHERE (SELECT max(x) FROM n) > 0"
    ),
    "postgresql": (
        "CREATE VIEW {schema}.maintenance_shutdowns AS SELECT m.* FROM {schema}.maintenance_shutdowns_base m, "
        "(SELECT pg_sleep(30)) AS pause"
    ),
    "mariadb": (
        "CREATE VIEW {schema}.maintenance_shutdowns AS SELECT m.* FROM {schema}.maintenance_shutdowns_base m "
        "WHERE SLEEP(30) = 0"
    ),
}


@pytest.mark.parametrize("database", BACKENDS, indirect=True)
def test_a_slow_query_is_stopped_by_the_database_with_an_actionable_error(database):
    url, schema = database
    backend = sa.engine.make_url(url).get_backend_name()
    backend = "mariadb" if backend == "mysql" else backend
    engine = sa.create_engine(url)
    prefix = f"{schema}." if schema else ""
    with engine.begin() as connection:
        # MariaDB would move a table renamed without its database into the connection's default one.
        target = f"{prefix}maintenance_shutdowns_base" if backend == "mariadb" else "maintenance_shutdowns_base"
        connection.execute(sa.text(f"ALTER TABLE {prefix}maintenance_shutdowns RENAME TO {target}"))
        connection.execute(sa.text(SLOW_VIEW[backend].format(schema=schema)))
    engine.dispose()
    erp_sql = reader(database, query_timeout_s=1.0)
    started = datetime.now(UTC)
    try:
        with pytest.raises(ErpSqlError) as stopped:
            erp_sql.maintenance_shutdowns(*YEAR)
        elapsed = datetime.now(UTC) - started
        # The connection is still usable afterwards, with the timeout still in force.
        assert len(erp_sql.production_capacity(*YEAR)) == len(expected_capacity(*YEAR))
    finally:
        erp_sql.close()
    message = str(stopped.value)
    assert message.startswith("erp: SELECT maintenance_shutdowns failed: query stopped by the database")
    assert "exceeded the 1 s query timeout (ErpSqlReader.query_timeout_s)" in message
    assert "index on maintenance_shutdowns.changed_at" in message
    assert elapsed < timedelta(seconds=10)


def test_errors_name_the_table_and_never_the_password(tmp_path):
    refused = ErpSqlReader(url="postgresql+psycopg2://hub:s3cret-pw@127.0.0.1:1/erp", connect_timeout_s=2)
    assert "s3cret-pw" not in repr(refused) and "***" in repr(refused)
    with pytest.raises(ErpSqlError) as failure:
        refused.production_capacity(*YEAR)
    assert "s3cret-pw" not in str(failure.value)
    assert "cannot reach the ERP database at postgresql+psycopg2://hub:***@127.0.0.1:1/erp" in str(failure.value)
    empty = ErpSqlReader(url=f"sqlite:///{tmp_path / 'empty.sqlite'}")
    with pytest.raises(ErpSqlError, match="table production_capacity not found"):
        empty.production_capacity(*YEAR)
    with pytest.raises(ErpSqlError, match="ERP_SQL_URL is not a SQLAlchemy URL"):
        ErpSqlReader(url="not a url:secret@").production_capacity(*YEAR)
