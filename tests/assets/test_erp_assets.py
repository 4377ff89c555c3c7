"""ERP assets and checks, materialized through Dagster against the OData simulator and a seeded SQLite
database: typed tables, rejects with reasons, referential integrity, daily partitions, the catalog."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal

import dagster as dg
import duckdb
import polars as pl
import pytest

from assets import erp
from contracts.erp import (
    DEMAND_FORECASTS,
    INVENTORY,
    MAINTENANCE_SHUTDOWNS,
    PLANTS,
    PRODUCTION_CAPACITY,
    ROUTES,
    ROUTES_KEY,
)
from quality.conform import rejects_table
from quality.erp import erp_checks
from resources.erp import ErpODataClient
from resources.erp_sql import ErpSqlReader
from simulators.erp import SERVICE_PATH, ErpConfig, credentials_env, serve_erp
from simulators.erp_sql import seed_database

NOW = datetime(2026, 12, 4, 6, 0, tzinfo=UTC)
CHECKS = erp_checks(erp.daily)
DAILY = [erp.demand_forecasts, erp.inventory, erp.production_capacity, erp.maintenance_shutdowns]


@pytest.fixture(scope="module")
def server():
    with serve_erp(ErpConfig(now=lambda: NOW)) as running:
        yield running


@pytest.fixture
def sim(server):
    server.simulator.clear_faults()
    server.simulator.reset_stats()
    yield server.simulator
    server.simulator.clear_faults()


@pytest.fixture
def resources(server, lake, tmp_path):
    url = f"sqlite:///{tmp_path / 'erp.sqlite'}"
    seed_database(url, now=NOW)
    env = credentials_env(server.url, server.config, url)
    client = ErpODataClient(
        base_url=env["ERP_ODATA_BASE_URL"],
        user=env["ERP_ODATA_USER"],
        password=env["ERP_ODATA_PASSWORD"],
        backoff_base_s=0.01,
    )
    return {"erp": client, "erp_sql": ErpSqlReader(url=url), "lake": lake}


def run(assets, resources, instance, *, partition_key=None, tags=None, raise_on_error=True, selection=None):
    return dg.materialize(
        [*erp.ASSETS, *CHECKS],
        selection=selection or dg.AssetSelection.assets(*assets),
        partition_key=partition_key,
        tags=tags,
        resources=resources,
        instance=instance,
        raise_on_error=raise_on_error,
    )


def checks_of(result) -> dict[str, bool]:
    return {f"{e.asset_key.path[-1]}:{e.check_name}": e.passed for e in result.get_asset_check_evaluations()}


def metadata_of(result, name: str) -> dict:
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == name)
    return {k: v.value for k, v in event.materialization.metadata.items()}


@pytest.fixture
def reference(resources, instance, sim):
    """Plants and routes in the lake (without their checks: the first test runs those)."""
    return dg.materialize([erp.plants, erp.routes], resources=resources, instance=instance)


def test_plants_and_routes_land_typed_with_units_in_their_names(resources, instance, lake, sim):
    reference = run([erp.plants, erp.routes], resources, instance)
    assert checks_of(reference) and all(checks_of(reference).values()), checks_of(reference)
    plants = lake.read(PLANTS)
    assert plants.height == 10 and sorted(set(plants["plant_kind"])) == ["GU", "HUB", "IU"]
    iu01 = plants.filter(pl.col("plant_id") == "IU01").row(0, named=True)
    master = sim.network.master("IU01")
    assert iu01["clinker_capacity_t_per_month"] == Decimal("230500.000") == master.clinker_capacity_t_per_month
    assert iu01["production_cost_inr_per_t"] == master.production_cost_inr_per_t
    assert iu01["changed_at"] == master.changed_at  # /Date(ms)/ → the same UTC instant
    assert plants.filter(pl.col("plant_kind") == "GU")["clinker_capacity_t_per_month"].null_count() == 5
    routes = lake.read(ROUTES)
    assert routes.height == len(sim.network.routes)
    rail = routes.filter(pl.col("mode") == "RAIL")
    assert rail.height > 0 and rail["vehicle_capacity_t"].min() >= Decimal("3700")
    meta = metadata_of(reference, "routes")
    assert meta["rows_received"] == meta["rows_written"] + meta["rows_rejected"] == routes.height
    assert meta["road_routes"] + meta["rail_routes"] == routes.height


def test_an_orphan_route_is_rejected_with_its_reason(reference, resources, instance, lake, sim):
    sim.inject("orphan_route", f"{SERVICE_PATH}/RouteSet")
    result = run([erp.routes], resources, instance)
    meta = metadata_of(result, "routes")
    assert (meta["rows_received"], meta["rows_written"], meta["rows_rejected"]) == (
        len(sim.network.routes) + 1,
        len(sim.network.routes),
        1,
    )
    reject = lake.read(rejects_table(ROUTES)).row(0, named=True)
    assert reject["field"] == "destination_plant_id"
    assert reject["reason"] == "plant 'GU99' is not in the ERP's plant master data (erp_plants has 10 plants)"
    assert json.loads(reject["raw_payload"])["RouteId"] == "IU01-GU99-ROAD"  # the row as the ERP sent it
    assert checks_of(result)["routes:plants_known"]  # what landed is sound


def test_a_plant_gone_from_the_master_data_fails_the_blocking_check(reference, resources, instance, lake):
    plants = lake.read(PLANTS)
    lake.replace_snapshot(PLANTS, plants.filter(pl.col("plant_id") != "GU02"))
    selection = dg.AssetSelection.checks_for_assets(ROUTES_KEY)
    result = run([], resources, instance, selection=selection, raise_on_error=False)
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "plants_known")
    assert not evaluation.passed
    assert "destination_plant_id=GU02" in evaluation.metadata["dangling"].value
    assert "not in the ERP's plant master data" in evaluation.metadata["dangling"].value


def test_daily_partitions_load_the_changes_of_their_days(reference, resources, instance, lake, sim):
    tags = {"dagster/asset_partition_range_start": "2026-11-30", "dagster/asset_partition_range_end": "2026-12-02"}
    result = run(DAILY, resources, instance, tags=tags)
    assert all(checks_of(result).values()), checks_of(result)
    start, end = datetime(2026, 11, 30, tzinfo=UTC), datetime(2026, 12, 3, tzinfo=UTC)
    demand = lake.read(DEMAND_FORECASTS)
    expected = sim.network.demand_revisions(start, end)
    assert demand.select("plant_id", "period_start", "revision", "demand_t", "changed_at").rows() == [
        (r.plant_id, r.period_start, r.revision, r.demand_t, r.changed_at) for r in expected
    ]
    stock = lake.read(INVENTORY)
    assert stock.height == 10 * 3 and stock["stock_date"].unique().sort().to_list() == [
        date(2026, 11, 30),
        date(2026, 12, 1),
        date(2026, 12, 2),
    ]
    assert (
        stock.filter((pl.col("plant_id") == "GU01") & (pl.col("stock_date") == date(2026, 12, 1)))["stock_t"].item()
        == sim.network.stock("GU01", date(2026, 12, 1)).stock_t
    )
    capacity = lake.read(PRODUCTION_CAPACITY)
    plans = [p for p in sim.network.capacity_plans(date(2026, 1, 1), date(2028, 1, 1)) if start <= p.changed_at < end]
    assert sorted(capacity.select("plant_id", "period_start", "capacity_t").rows()) == sorted(
        (p.plant_id, p.period_start, p.capacity_t) for p in plans
    )
    assert lake.read(MAINTENANCE_SHUTDOWNS).height == 0 or all(
        start <= t < end for t in lake.read(MAINTENANCE_SHUTDOWNS)["changed_at"]
    )
    meta = metadata_of(result, "inventory")
    assert meta["days"] == 3 and meta["rows_received"] == meta["rows_written"] == 30
    # Re-running a day replaces it: no duplicates.
    run([erp.inventory], resources, instance, partition_key="2026-12-01")
    assert lake.read(INVENTORY).height == 30


def test_capacity_and_shutdowns_come_from_the_sql_database(reference, resources, instance, lake, sim):
    result = run([erp.production_capacity, erp.maintenance_shutdowns], resources, instance, partition_key="2026-01-01")
    capacity = lake.read(PRODUCTION_CAPACITY)
    assert capacity.height == metadata_of(result, "production_capacity")["rows_written"] > 0
    assert set(capacity["plant_id"]) == {"IU01", "IU02", "IU03"}
    assert capacity["capacity_t"].dtype == pl.Decimal(14, 3)
    assert all(checks_of(result).values()), checks_of(result)


def test_bad_rows_are_rejected_with_reasons_and_counted(reference, resources, instance, lake, sim):
    sim.inject("wrong_types", f"{SERVICE_PATH}/InventorySet")
    result = run([erp.inventory], resources, instance, partition_key="2026-12-01")
    meta = metadata_of(result, "inventory")
    assert (meta["rows_received"], meta["rows_written"], meta["rows_rejected"]) == (10, 9, 1)
    reject = lake.read(rejects_table(INVENTORY)).row(0, named=True)
    assert reject["row_number"] == 0 and reject["field"] == "stock_date"
    assert reject["reason"] == "expected a date YYYY-MM-DD, got '/Date(yesterday)/'"
    assert json.loads(reject["raw_payload"])["Stock"] == "n/a"

    sim.inject("duplicates", f"{SERVICE_PATH}/InventorySet")
    meta = metadata_of(run([erp.inventory], resources, instance, partition_key="2026-12-01"), "inventory")
    assert (meta["rows_received"], meta["rows_written"], meta["rows_rejected"]) == (11, 10, 1)
    assert lake.read(rejects_table(INVENTORY))["reason"].to_list() == [
        "duplicate of another row with the same (plant_id,stock_date)"
    ]


def test_a_looping_page_fails_the_run_naming_source_partition_and_entity_set(reference, resources, instance, sim):
    sim.inject("repeated_page", f"{SERVICE_PATH}/InventorySet", mode="loop")
    tags = {"dagster/asset_partition_range_start": "2026-11-01", "dagster/asset_partition_range_end": "2026-11-30"}
    result = run([erp.inventory], resources, instance, tags=tags, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error.message
    assert "erp: could not load InventorySet for partition 2026-11-01…2026-11-30" in failure
    assert "__next points back at a page already read" in failure


def test_the_analyst_catalog_gets_a_view_per_erp_table(reference, resources, instance, lake, analyst_catalog):
    from orchestration.definitions import build_definitions

    # The hub's own catalog job: it finds the ERP tables from the assets' lake-table metadata.
    hub = build_definitions({"lake": lake, "catalog": analyst_catalog})
    assert hub.resolve_job_def("analyst_catalog_job").execute_in_process(instance=instance).success
    with duckdb.connect(analyst_catalog.path, read_only=True) as con:
        views = {
            row[0] for row in con.execute("SELECT view_name FROM duckdb_views() WHERE schema_name = 'raw'").fetchall()
        }
        assert {
            t.name for t in (PLANTS, ROUTES, DEMAND_FORECASTS, INVENTORY, PRODUCTION_CAPACITY, MAINTENANCE_SHUTDOWNS)
        } <= views
        assert con.execute("SELECT count(*) FROM raw.erp_plants WHERE plant_kind = 'IU'").fetchone()[0] == 3
        comment = con.execute(
            "SELECT comment FROM duckdb_columns() WHERE table_name = 'erp_routes' AND column_name = ?",
            ["freight_cost_inr_per_t"],
        ).fetchone()[0]
        assert comment == "Freight cost, INR per tonne carried."
        assert con.execute("SELECT count(*) FROM raw.erp_inventory").fetchone()[0] == 0  # typed, empty until loaded


def test_rows_out_of_order_land_as_the_same_table(reference, resources, instance, lake, sim):
    clean = lake.read(ROUTES)
    files = {p.name: p.read_bytes() for p in lake.table_dir(ROUTES).glob("*.parquet")}
    sim.inject("out_of_order", f"{SERVICE_PATH}/RouteSet")
    meta = metadata_of(run([erp.routes], resources, instance), "routes")
    assert meta["rows_rejected"] == 0
    assert lake.read(ROUTES).equals(clean)
    assert {p.name: p.read_bytes() for p in lake.table_dir(ROUTES).glob("*.parquet")} == files  # same bytes


def test_capacity_for_a_grinding_unit_is_rejected(reference, resources, instance, lake):
    import sqlalchemy as sa

    engine = sa.create_engine(resources["erp_sql"].url)
    with engine.begin() as connection:
        connection.execute(
            sa.text(
                "INSERT INTO production_capacity (plant_id, period_start, capacity_t, changed_at) "
                "VALUES (:plant, :period, :tonnes, :changed)"
            ),
            {"plant": "GU01", "period": date(2027, 1, 1), "tonnes": 50_000, "changed": datetime(2026, 12, 1, 8, 0)},
        )
    engine.dispose()
    result = run([erp.production_capacity], resources, instance, partition_key="2026-12-01")
    meta = metadata_of(result, "production_capacity")
    assert meta["rows_rejected"] == 1 and meta["rows_received"] == meta["rows_written"] + 1
    reject = lake.read(rejects_table(PRODUCTION_CAPACITY)).row(0, named=True)
    assert reject["reason"] == "plant GU01 is a GU; production capacity belongs to IU plants"
    assert json.loads(reject["raw_payload"])["capacity_t"] == "50000.000"
    assert "GU01" not in lake.read(PRODUCTION_CAPACITY)["plant_id"].to_list()
