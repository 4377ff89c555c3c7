"""The supply plan asset on ERP data landed from the ERP simulator: the plan balances, reads the forecast in
force and fuel-driven road freight, keeps scenarios side by side, and does not run on failed checks."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import duckdb
import polars as pl
import pytest

from assets import erp, markets, supply_plan
from contracts.erp import INVENTORY, PLANTS, ROUTES, ROUTES_KEY
from contracts.markets import ROAD_FREIGHT_COSTS
from contracts.supply_plan import PLAN_COSTS, PLAN_PRODUCTION, PLAN_SHIPMENTS, PLAN_SHORTAGES, PLAN_STOCK
from quality.erp import erp_checks
from resources.erp import ErpODataClient
from resources.erp_sql import ErpSqlReader
from resources.lake import Lake, time_windows
from simulators.erp import ErpConfig, credentials_env, serve_erp
from simulators.erp_sql import seed_database

NOW = datetime(2026, 12, 4, 6, 0, tzinfo=UTC)
CHECKS = erp_checks(erp.daily)
PLAN = "2027-01-01"
WEEKS = [date(2026, 11, 2) + timedelta(weeks=n) for n in range(5)]
LANDED_UNTIL = datetime(2026, 12, 4, tzinfo=UTC)  # the daily partitions landed end with 2026-12-03
RATE = [2.10, 2.15, 2.20, 2.25, 2.30]  # INR per tonne-km, rising with diesel


@pytest.fixture(scope="module")
def server():
    with serve_erp(ErpConfig(now=lambda: NOW)) as running:
        yield running


pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    return Lake(root=str(tmp_path_factory.mktemp("data") / "lake"))


@pytest.fixture(scope="module")
def instance():
    with dg.instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture(scope="module")
def landed(server, lake, instance, tmp_path_factory):
    """The ERP's tables landed (plants and routes with their checks) as the ERP jobs would, and a month of
    road freight costs: once for the module, as landing six months of ERP history is most of its time. The
    tests share the lake: plans are filed by scenario, and the last test is the one that breaks the data."""
    url = f"sqlite:///{tmp_path_factory.mktemp('erp') / 'erp.sqlite'}"
    seed_database(url, now=NOW)
    env = credentials_env(server.url, server.config, url)
    resources = {
        "erp": ErpODataClient(
            base_url=env["ERP_ODATA_BASE_URL"], user=env["ERP_ODATA_USER"], password=env["ERP_ODATA_PASSWORD"]
        ),
        "erp_sql": ErpSqlReader(url=url),
        "lake": lake,
    }
    everything = [*erp.ASSETS, *CHECKS]
    dg.materialize(
        everything, selection=dg.AssetSelection.assets(erp.plants, erp.routes), resources=resources, instance=instance
    )
    # The daily tables without their GX suites (tests/assets/test_erp_assets.py runs those): a check that
    # never ran does not stop a plan, and a range of 180 days of suites is most of this test's time.
    history = {"dagster/asset_partition_range_start": "2026-06-01", "dagster/asset_partition_range_end": "2026-12-03"}
    dg.materialize(
        list(erp.ASSETS),
        selection=dg.AssetSelection.assets(erp.demand_forecasts, erp.production_capacity),
        tags=history,
        resources=resources,
        instance=instance,
    )
    recent = {"dagster/asset_partition_range_start": "2026-12-01", "dagster/asset_partition_range_end": "2026-12-03"}
    dg.materialize(
        everything,
        selection=dg.AssetSelection.assets(erp.inventory),
        tags=recent,
        resources=resources,
        instance=instance,
    )
    # What markets/road_freight_costs writes for these weeks (its own tests cover how it computes them).
    freight = pl.DataFrame(
        {
            "week_start": WEEKS,
            "freight_inr_per_tonne_km": RATE,
            "fuel_inr_per_tonne_km": [r - 0.96 for r in RATE],
            "fixed_inr_per_tonne_km": [0.96] * 5,
            "diesel_usd_per_l": [1.0 + 0.02 * n for n in range(5)],
            "usd_inr_rate": [85.0] * 5,
            "usd_inr_rate_date": [w - timedelta(days=3) for w in WEEKS],
            "diesel_inr_per_l": [85.0 * (1.0 + 0.02 * n) for n in range(5)],
            "fuel_l_per_km": [0.35] * 5,
            "payload_t": [25.0] * 5,
            "model": ["bulker-25t-v1"] * 5,
        }
    )
    windows = time_windows(markets.weeks, datetime(2026, 11, 2, tzinfo=UTC), datetime(2026, 12, 7, tzinfo=UTC))
    lake.replace_partitions(ROAD_FREIGHT_COSTS, freight, windows)
    return resources


def run_plan(lake, instance, raise_on_error=True, **config):
    return dg.materialize(
        [supply_plan.supply_plan, *CHECKS],
        selection=dg.AssetSelection.assets(supply_plan.supply_plan),
        partition_key=PLAN,
        resources={"lake": lake},
        instance=instance,
        run_config={"ops": {"plans__supply_plan": {"config": config}}} if config else None,
        raise_on_error=raise_on_error,
    )


def metadata_of(result) -> dict:
    event = next(iter(result.get_asset_materialization_events()))
    return {k: v.value for k, v in event.materialization.metadata.items()}


def of(table, lake, scenario="base"):
    return lake.read(table).filter(pl.col("scenario") == scenario)


def test_the_plan_balances_on_the_erp_data(landed, lake, instance, server):
    result = run_plan(lake, instance, time_limit_s=60, mip_rel_gap=0.001)
    meta = metadata_of(result)
    assert meta["solver_status"] == "optimal" and meta["gap_pct"] <= 0.1
    assert meta["input_periods"] == "2027-01, 2027-02, 2027-03"
    assert meta["input_road_routes_costed_from_markets"] == lake.read(ROUTES).filter(mode="ROAD").height
    assert meta["upstream_blocking_checks_passed"] > 0
    network = server.simulator.network
    production = of(PLAN_PRODUCTION, lake)
    stock = of(PLAN_STOCK, lake)
    ships = of(PLAN_SHIPMENTS, lake)
    short = of(PLAN_SHORTAGES, lake)
    assert production.height == 3 * 3 and (production["production_t"] <= production["capacity_t"] + 1e-6).all()
    # Demand is the highest revision made before now, as the ERP has it.
    months = [date(2027, 1, 1), date(2027, 2, 1), date(2027, 3, 1)]
    plants = lake.read(PLANTS)
    demand = {
        (p, m): float([r for r in network.demand_revisions_of(p, m) if r.changed_at < LANDED_UNTIL][-1].demand_t)
        for p in network.demand_plants
        for m in months
    }
    # Each GU and hub: stock carried + arrivals − demand + shortage = closing stock, every month.
    for plant_id in network.demand_plants:
        opening = float(plants.filter(plant_id=plant_id)["opening_stock_t"].item())

        inv = lake.read(INVENTORY).filter(plant_id=plant_id).sort("stock_date")
        previous = float(inv["stock_t"][-1]) if inv.height else opening
        for m in months:
            arrived = ships.filter(destination_plant_id=plant_id, period_start=m)["shipped_t"].sum()
            shortage = short.filter(plant_id=plant_id, period_start=m)["shortage_t"].sum()
            closing = stock.filter(plant_id=plant_id, period_start=m)["closing_stock_t"].item()
            assert previous + arrived - demand[(plant_id, m)] + shortage == pytest.approx(closing, abs=1e-3)
            previous = closing
    # Road freight follows fuel: distance × the latest week's rate before the month (2026-11-30: 2.30 INR/t-km).
    routes = lake.read(ROUTES)
    road = ships.filter(mode="ROAD").join(
        routes.select("route_id", "distance_km", "handling_cost_inr_per_t"), on="route_id"
    )
    row = road.row(0, named=True)
    expected = row["shipped_t"] * (round(float(row["distance_km"]) * 2.30, 2) + float(row["handling_cost_inr_per_t"]))
    assert row["transport_cost_inr"] == pytest.approx(expected)
    costs = of(PLAN_COSTS, lake)
    assert costs["cost_inr"].sum() == pytest.approx(meta["objective"], rel=1e-6)
    assert "Tonnes shipped by mode" in meta["shipments_summary"]
    png = lake.storage.location("plans/supply_plan_reports/scenario=base/date=2027-01-01/shipments.png")
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_a_scenario_changes_the_plan_and_sits_beside_the_base(landed, lake, instance):
    run_plan(lake, instance)
    base_ships = of(PLAN_SHIPMENTS, lake)
    rail = base_ships.filter(mode="RAIL").group_by("route_id").agg(pl.col("shipped_t").sum()).sort("shipped_t")
    assert rail.height > 0, "the base plan uses rail"
    closed = rail["route_id"][-1]
    result = run_plan(lake, instance, scenario="rail_closed_uplift", demand_uplift_pct=20.0, closed_routes=[closed])
    meta = metadata_of(result)
    ships = of(PLAN_SHIPMENTS, lake, "rail_closed_uplift")
    assert ships.filter(route_id=closed).height == 0
    assert (
        of(PLAN_PRODUCTION, lake, "rail_closed_uplift")["production_t"].sum()
        > of(PLAN_PRODUCTION, lake)["production_t"].sum()
    )
    both = lake.read(PLAN_COSTS).group_by("scenario").agg(pl.col("cost_inr").sum()).sort("scenario")
    assert both["scenario"].to_list() == ["base", "rail_closed_uplift"]
    assert both["cost_inr"][1] > both["cost_inr"][0]
    assert "rail_closed_uplift" in meta["scenarios_side_by_side"] and "base" in meta["scenarios_side_by_side"]
    assert meta["closed_routes"] == closed and meta["demand_uplift_pct"] == 20.0
    # The base plan's files are untouched by the scenario.
    assert of(PLAN_SHIPMENTS, lake).equals(base_ships)


def test_the_catalog_and_the_command_line_see_the_plan(landed, lake, instance, analyst_catalog, monkeypatch, capsys):
    from ihub.cli import main
    from orchestration.definitions import build_definitions

    hub = build_definitions({"lake": lake, "catalog": analyst_catalog})
    assert hub.resolve_job_def("analyst_catalog_job").execute_in_process(instance=instance).success
    with duckdb.connect(analyst_catalog.path, read_only=True) as con:
        totals = dict(
            con.execute(
                "SELECT scenario, sum(cost_inr) FROM plans.supply_plan_costs WHERE plan_start = DATE '2027-01-01' "
                "GROUP BY scenario"
            ).fetchall()
        )
        comment = con.execute(
            "SELECT comment FROM duckdb_columns() WHERE table_name = 'supply_plan_shipments' AND column_name = 'trips'"
        ).fetchone()[0]
    assert set(totals) == {"base", "rail_closed_uplift"}
    # What outbound/erp_plan_confirmations would confirm to the ERP: this plan's lines.
    from assets.outbound import read_supply_plan

    production, shipments = read_supply_plan(lake, "base")
    assert production["quantity_t"].sum() == pytest.approx(of(PLAN_PRODUCTION, lake)["production_t"].sum())
    assert shipments.height == of(PLAN_SHIPMENTS, lake).height
    assert comment == "Trucks or rakes dispatched in the month."
    # The planner's command on the same lake: the base plan again, within the 1 % gap.
    monkeypatch.setenv("IHUB_LAKE_DIR", lake.root)
    assert main(["optimize", "supply", "--period-start", "2027-01", "--gap", "0.01"]) == 0
    out = capsys.readouterr().out
    assert "plan:      clinker plan 2027-01…2027-03" in out
    objective = float(
        next(line for line in out.splitlines() if line.startswith("objective:")).split()[1].replace(",", "")
    )
    assert objective == pytest.approx(totals["base"], rel=0.02)


def test_the_solver_is_a_scenario_choice(landed, lake, instance):
    cbc = metadata_of(run_plan(lake, instance, scenario="cbc", solver="cbc", mip_rel_gap=0.001))
    highs = metadata_of(run_plan(lake, instance, scenario="highs", mip_rel_gap=0.001))
    assert (cbc["solver"], highs["solver"]) == ("cbc", "highs")
    assert cbc["objective"] == pytest.approx(highs["objective"], rel=0.002)
    refused = run_plan(lake, instance, raise_on_error=False, scenario="glpk", solver="glpk")
    failure = next(e for e in refused.all_events if e.is_step_failure).step_failure_data.user_failure_data
    assert "solver must be one of highs, cbc, got 'glpk'" in failure.description


def test_no_plan_when_a_blocking_check_on_an_input_failed(landed, lake, instance):
    before = lake.read(PLAN_SHIPMENTS)
    plants = lake.read(PLANTS)
    lake.replace_snapshot(PLANTS, plants.filter(pl.col("plant_id") != "GU02"))
    checked = dg.materialize(
        [*erp.ASSETS, *CHECKS],
        selection=dg.AssetSelection.checks_for_assets(ROUTES_KEY),
        resources=landed,
        instance=instance,
        raise_on_error=False,
    )
    assert not all(e.passed for e in checked.get_asset_check_evaluations())
    result = run_plan(lake, instance, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data.user_failure_data
    assert "erp/routes:plants_known" in failure.description
    # Nothing planned on a network with a dangling route: no materialization, the plans as they were.
    assert result.get_asset_materialization_events() == []
    assert lake.read(PLAN_SHIPMENTS).equals(before)
