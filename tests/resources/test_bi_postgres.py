"""The marts in the machine's PostgreSQL for BI tools: loaded with their comments, readable by a role that
can select and nothing else."""

import uuid
from datetime import date

import dagster as dg
import polars as pl
import psycopg2
import pytest

from assets.bi_export import bi_export_defs
from assets.leaks import dma_leak_indicators
from contracts.marts import LEAK_INDICATORS
from resources.bi_postgres import BiPostgres
from resources.lake import Lake

pytestmark = pytest.mark.service

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture
def names():
    """A schema and a role of this test's own (the database is shared by parallel workers)."""
    suffix = uuid.uuid4().hex[:8]
    schema, role = f"bi_test_{suffix}", f"bi_reader_{suffix}"
    yield schema, role
    with psycopg2.connect(ADMIN_URL) as connection, connection.cursor() as cursor:
        cursor.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        cursor.execute(f"DROP SCHEMA IF EXISTS {schema}_other CASCADE")
        if _role_exists(cursor, role):
            cursor.execute(f"DROP OWNED BY {role}")
        cursor.execute(f"DROP ROLE IF EXISTS {role}")


def _role_exists(cursor, role: str) -> bool:
    cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
    return cursor.fetchone() is not None


def indicators() -> pl.DataFrame:
    schema = {c.name: c.dtype for c in LEAK_INDICATORS.columns}
    rows = [
        {"dma_id": "DMA-0001", "nights": 60, "baseline_m3h": 12.5, "leak_suspected": True, "kind": "growing_leak",
         "rise_began_on": date(2026, 11, 2), "rise_m3h": 6.25, "latest_night": date(2026, 12, 3)},
        {"dma_id": "DMA-0002", "nights": 60, "baseline_m3h": 8.0, "leak_suspected": False},
    ]  # fmt: skip
    return pl.DataFrame([{c: row.get(c) for c in schema} for row in rows], schema=schema)


def test_the_marts_load_with_comments_and_the_reader_can_only_read(names, tmp_path):
    schema, role = names
    lake = Lake(root=str(tmp_path / "lake"))
    lake.replace_snapshot(LEAK_INDICATORS, indicators())
    with psycopg2.connect(ADMIN_URL) as connection, connection.cursor() as cursor:  # a schema BI must not see
        cursor.execute(f"CREATE SCHEMA {schema}_other")
        cursor.execute(f"CREATE TABLE {schema}_other.salaries AS SELECT 1 AS amount")
    (export,) = bi_export_defs(dg.Definitions(assets=[dma_leak_indicators])).assets
    resource = BiPostgres(url=ADMIN_URL, schema_name=schema, reader_role=role)
    for _ in range(2):  # reloading replaces, it does not append
        result = dg.materialize([export], resources={"lake": lake, "bi_postgres": resource})
    metadata = result.asset_materializations_for_node("exports__bi_postgres")[0].metadata
    assert metadata["tables"].value == {f"{schema}.dma_leak_indicators": 2}
    assert "postgres" not in metadata["database"].value  # where, never who

    with psycopg2.connect(ADMIN_URL) as connection, connection.cursor() as cursor:
        cursor.execute(f"SET ROLE {role}")
        cursor.execute(
            f"SELECT dma_id, rise_began_on, leak_suspected FROM {schema}.dma_leak_indicators ORDER BY dma_id"
        )
        assert cursor.fetchall() == [("DMA-0001", date(2026, 11, 2), True), ("DMA-0002", None, False)]
        cursor.execute(
            "SELECT col_description(c.oid, a.attnum) FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = %s AND c.relname = %s AND a.attname = %s",
            (schema, "dma_leak_indicators", "rise_m3h"),
        )
        assert cursor.fetchone() == ("Latest minus baseline, m³/h.",)
        connection.rollback()

    for statement, error in (
        (
            f"INSERT INTO {schema}.dma_leak_indicators (dma_id, nights, leak_suspected) VALUES ('X', 1, false)",
            "read-only",
        ),
        (f"CREATE TABLE {schema}.mine (x int)", "read-only"),
        (f"SELECT amount FROM {schema}_other.salaries", "permission denied"),
    ):
        with psycopg2.connect(ADMIN_URL) as connection, connection.cursor() as cursor:
            cursor.execute(f"SET ROLE {role}")
            cursor.execute("SET default_transaction_read_only = on")  # what the role's login session gets
            connection.commit()
            cursor.execute(f"SET ROLE {role}")
            with pytest.raises(psycopg2.Error) as refused:
                cursor.execute(statement)
            assert error in str(refused.value), statement
    # Even with read-only off in its own session, the role holds no write grant on the marts.
    with psycopg2.connect(ADMIN_URL) as connection, connection.cursor() as cursor:
        cursor.execute(f"SET ROLE {role}")
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cursor.execute(f"DELETE FROM {schema}.dma_leak_indicators")


def test_an_unconfigured_export_says_what_to_set(tmp_path):
    (export,) = bi_export_defs(dg.Definitions(assets=[dma_leak_indicators])).assets
    result = dg.materialize(
        [export], resources={"lake": Lake(root=str(tmp_path)), "bi_postgres": BiPostgres()}, raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "set IHUB_BI_PG_URL" in failure.step_failure_data.error.message


def test_the_hub_loads_without_bi_postgres_and_exports_every_mart():
    from orchestration.definitions import defs

    export = defs.resolve_assets_def(dg.AssetKey(["exports", "bi_postgres"]))
    assert dg.AssetKey(["marts", "dma_leak_indicators"]) in export.dependency_keys
    assert dg.AssetKey(["quality", "scores"]) in export.dependency_keys
