"""The pump schedule planned through Dagster on data landed from the simulators: DMAMA inflow, OWM forecasts,
the markets' tariff, and SCADA points of the simulated pump station through the collector's spool."""

from __future__ import annotations

import asyncio
import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from assets import dmama, markets, pump_schedule, scada, weather
from assets.partitions import hourly
from collector.points import Point, to_micros
from collector.spool import Spool
from contracts.dmama import FLOW_READINGS
from contracts.markets import ENERGY_PRICE_STEPS, TARIFFS
from quality.dmama import dmama_checks
from quality.markets import markets_checks
from resources.lake import Lake
from resources.markets import MarketsClient
from resources.scada_spool import ScadaWindows
from resources.weather import WeatherClient
from simulators.markets import MarketsConfig, serve_markets
from simulators.modbus import PumpStationModel
from simulators.weather import WeatherConfig, serve_weather
from tests.conftest import dmama_client

# Landing a week of DMAMA inflow, a forecast, the tariff and a SCADA window, then solving: a minute or two.
pytestmark = pytest.mark.slow

DAY = "2026-03-04"  # a Wednesday (3 March is Makha Bucha, a holiday: off-peak all day)
START = datetime(2026, 3, 4, tzinfo=UTC)
PLAN_ASSETS = [
    pump_schedule.pump_demand_forecast,
    pump_schedule.pump_initial_state,
    pump_schedule.pump_schedule,
    pump_schedule.pump_forecast_error,
]


def _range(first: datetime, last: datetime) -> dict[str, str]:
    return {
        "dagster/asset_partition_range_start": f"{first:%Y-%m-%d-%H:00}",
        "dagster/asset_partition_range_end": f"{last:%Y-%m-%d-%H:00}",
    }


def scada_points_before(start: datetime) -> list[Point]:
    """The simulated station PS01 over the 30 minutes before `start`, as its register map reports it
    (tank levels every minute, pump status on change and every minute)."""
    model = PumpStationModel(seed=1, plant_unit_id="PS01", start=start - timedelta(minutes=30))
    points = []
    for second in range(1, 1800):  # the last minute before `start` (a point at midnight is the next day)
        model.step()
        if second % 60:
            continue
        at = to_micros(model.start + timedelta(seconds=model.t))
        values = model.values
        for sensor, unit, value, eng in (
            ("level", "PS01-T1", values["tank1_level"], "m"),
            ("level", "PS01-T2", values["tank2_level"], "m"),
            *[("pump_status", f"PS01-P{p}", float(values[f"pump{p}_status"]), "") for p in (1, 2, 3)],
        ):
            points.append(Point("modbus", "ps01-plc", unit, sensor, round(value, 3), eng, "GOOD", at, at + 20_000))
    return points


def fill_spool(root: Path, points: list[Point], window_start: datetime) -> None:
    now = [window_start.timestamp() + 1]

    async def write():
        async with Spool(root, window_s=300, clock=lambda: now[0]) as spool:
            await spool.append(points)
            now[0] = window_start.timestamp() + 305
            assert spool.seal_due()

    asyncio.run(write())


@pytest.fixture(scope="module")
def landed(server, tmp_path_factory):
    """One lake for the module: 7 days of DMAMA inflow before the day and the day itself, the OWM forecast
    issued at 23:00 the evening before, the tariff's price steps of the day, and the last SCADA window."""
    root = tmp_path_factory.mktemp("pump") / "lake"
    lake = Lake(root=str(root))
    with (
        dg.instance_for_test() as instance,
        serve_markets(MarketsConfig()) as market,
        serve_weather(WeatherConfig()) as sky,
    ):
        resources = {"dmama": dmama_client(server), "lake": lake}
        dg.materialize([dmama.dmas], resources=resources, instance=instance)
        dg.materialize(
            [dmama.flow_readings, *dmama_checks(hourly, dmama.daily)],
            selection=dg.AssetSelection.assets(dmama.flow_readings),
            resources=resources,
            instance=instance,
            tags=_range(START - timedelta(days=7), START + timedelta(hours=23)),
        )
        sky.simulator.now = START - timedelta(minutes=30)
        client = WeatherClient(owm_base_url=sky.url, owm_api_key=sky.config.api_key, met_base_url=sky.url)
        dg.materialize(
            [weather.forecasts],
            partition_key=f"{START - timedelta(hours=1):%Y-%m-%d-%H:00}",
            resources={"weather": client, "lake": lake},
            instance=instance,
        )
        prices = {"markets": MarketsClient(base_url=market.url, api_key=market.config.api_key), "lake": lake}
        dg.materialize(
            [markets.tariffs, markets.holidays, markets.energy_price_steps],
            selection=[markets.tariffs, markets.holidays],
            resources=prices,
            instance=instance,
        )
        dg.materialize(
            [markets.tariffs, markets.holidays, markets.energy_price_steps],
            selection=[markets.energy_price_steps],
            partition_key=DAY,
            resources=prices,
            instance=instance,
        )
        spool = root.parent / "spool"
        points = scada_points_before(START)
        fill_spool(spool, points, START - timedelta(minutes=5))
        dg.materialize(
            [scada.points],
            partition_key=f"{START - timedelta(hours=1):%Y-%m-%d-%H:00}",
            resources={"scada_spool": ScadaWindows(root=str(spool)), "lake": lake},
            instance=instance,
        )
    return root, points


@pytest.fixture
def lake(landed, tmp_path) -> Lake:
    root, _ = landed
    copy = tmp_path / "lake"
    shutil.copytree(root, copy)
    return Lake(root=str(copy))


def plan_run(lake, instance, config: dict | None = None, selection=None, raise_on_error=True):
    selection = selection or PLAN_ASSETS[:3]
    ops = {}
    if pump_schedule.pump_schedule in selection:
        ops["plans__pump_schedule"] = {"config": {"time_limit_s": 20.0, "mip_rel_gap": 0.005, **(config or {})}}
    return dg.materialize(
        PLAN_ASSETS,
        selection=selection,
        partition_key=DAY,
        resources={"lake": lake},
        instance=instance,
        run_config={"ops": ops},
        raise_on_error=raise_on_error,
    )


def metadata_of(result, name: str) -> dict:
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == name)
    return {k: v.value for k, v in event.materialization.metadata.items()}


def test_the_day_is_planned_from_the_landed_sources(lake, landed, instance):
    _, points = landed
    result = plan_run(lake, instance)
    assert result.success
    # Initial state: the last points the simulated station sent before midnight.
    state = lake.read(pump_schedule.INITIAL_STATE)
    last_t2 = [p for p in points if p.unit_id == "PS01-T2"][-1]
    assert state.filter(pl.col("asset_id") == "T2")["value"].item() == pytest.approx(last_t2.value)
    running = {p.unit_id: p.value for p in points if p.sensor_type == "pump_status"}
    pumps = state.filter(pl.col("kind") == "pump").sort("asset_id")
    assert pumps["value"].to_list() == [running["PS01-P1"], running["PS01-P2"], running["PS01-P3"]]
    # Forecast: the Wednesday slot 00:00 UTC (07:00 local) is the mean of the weekday 07:00 readings × temperature.
    forecast = lake.read(pump_schedule.DEMAND_FORECAST).filter(pl.col("tank_id") == "T2").sort("step_start")
    assert forecast.height == 96
    flows = lake.read(FLOW_READINGS).filter(pl.col("dma_id").is_in(["DMA-0003", "DMA-0005"]))
    at_seven = (
        flows.filter(
            (pl.col("timestamp").dt.hour() == 0)
            & (pl.col("timestamp").dt.minute() == 0)
            & (pl.col("timestamp") < START)
            & ((pl.col("timestamp") + timedelta(hours=7)).dt.weekday() <= 5)
        )
        .group_by("timestamp")
        .agg(pl.col("flow_m3h").sum())
    )
    first = forecast.row(0, named=True)
    assert first["profile_m3h"] == pytest.approx(at_seven["flow_m3h"].mean())
    assert first["history_days"] == at_seven.height == 5
    assert first["temperature_c"] is not None
    assert first["demand_m3h"] == pytest.approx(first["profile_m3h"] * first["temperature_factor"])
    # The plan: a schedule per pump and step, its cost equal to the price steps times the power run.
    meta = metadata_of(result, "pump_schedule")
    assert meta["solver_status"] in ("optimal", "feasible") and meta["steps"] == 96
    schedule = lake.read(pump_schedule.SCHEDULE)
    prices = lake.read(ENERGY_PRICE_STEPS).select("step_start", "energy_thb_per_kwh")
    priced = schedule.join(prices, on="step_start")
    assert priced.height == 3 * 96
    expected_energy = float((priced["power_kw"] * 0.25 * priced["energy_thb_per_kwh"]).sum())
    costs = lake.read(pump_schedule.COSTS).row(0, named=True)
    assert costs["plan_energy_thb"] == pytest.approx(expected_energy, abs=0.02)
    compared = costs["baseline_cost_thb"] + costs["baseline_end_water_thb"]
    assert costs["saving_thb"] == pytest.approx(compared - costs["plan_cost_thb"], abs=0.02)
    assert meta["saving_thb"] == costs["saving_thb"]
    levels = lake.read(pump_schedule.TRAJECTORIES).filter(pl.col("tank_id") == "T2")
    assert levels["level_end_m"].min() >= 1.0 - 1e-6 and levels["level_end_m"].max() <= 5.5 + 1e-6
    if "plots skipped" not in meta["plots"]:
        for name in ("levels", "gantt", "cost"):
            assert (Path(costs["plots_dir"]) / f"{name}.png").stat().st_size > 10_000
    # The forecast's error once the day is in: against the DMAMA inflow of the day.
    scored = plan_run(lake, instance, selection=[pump_schedule.pump_forecast_error])
    assert scored.success
    error = lake.read(pump_schedule.FORECAST_ERROR).row(0, named=True)
    actual = flows.filter((pl.col("timestamp") >= START) & (pl.col("timestamp") < START + timedelta(days=1)))
    assert error["steps_compared"] == 96
    assert error["actual_m3"] == pytest.approx(actual["flow_m3h"].sum() * 0.25)
    assert error["forecast_m3"] == pytest.approx(forecast["demand_m3h"].sum() * 0.25)


def test_a_scenario_changes_the_plan_and_is_kept_beside_the_base(lake, instance):
    assert plan_run(lake, instance).success
    base = lake.read(pump_schedule.SCHEDULE)
    result = plan_run(
        lake, instance, {"scenario": "p1_out_uplift", "pumps_out_of_service": ["P1"], "demand_uplift_pct": 10.0}
    )
    assert result.success
    schedule = lake.read(pump_schedule.SCHEDULE)
    assert sorted(schedule["scenario"].unique().to_list()) == ["base", "p1_out_uplift"]
    scenario = schedule.filter(pl.col("scenario") == "p1_out_uplift")
    assert not scenario.filter(pl.col("pump_id") == "P1")["on"].any()
    assert scenario.height == base.height == 3 * 96
    demand = lake.read(pump_schedule.TRAJECTORIES).filter(pl.col("tank_id") == "T2").sort("scenario", "step")
    by = {name: group["demand_m3h"].to_numpy() for (name,), group in demand.group_by("scenario")}
    np.testing.assert_allclose(by["p1_out_uplift"], by["base"] * 1.1)
    costs = lake.read(pump_schedule.COSTS).sort("scenario")
    assert costs["scenario"].to_list() == ["base", "p1_out_uplift"]
    assert costs["plan_cost_thb"][1] != costs["plan_cost_thb"][0]


def test_a_missing_tariff_step_stops_the_plan_naming_the_step(lake, instance):
    assert plan_run(lake, instance, selection=PLAN_ASSETS[:2]).success
    steps = lake.read(ENERGY_PRICE_STEPS).filter(pl.col("step_start") != START + timedelta(hours=10))
    windows = dg.TimeWindow(START, START + timedelta(days=1))
    lake.replace_partitions(ENERGY_PRICE_STEPS, steps, [windows])
    result = plan_run(lake, instance, selection=[pump_schedule.pump_schedule], raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    assert "tariff missing or out of range at step(s) 40" in failure.step_failure_data.error.message


def test_the_plan_is_not_computed_when_a_blocking_check_on_its_tariff_failed(lake, instance, analyst_catalog):
    from orchestration.definitions import build_definitions

    # A tariff version whose on-peak rate came through ×10 (a broken feed): the price steps computed
    # from it fail their blocking check rates_positive when they land.
    tariffs = lake.read(TARIFFS).with_columns(energy_on_peak_thb_per_kwh=pl.lit(45.0))
    lake.replace_snapshot(TARIFFS, tariffs)
    checks = markets_checks(markets.price_days, markets.days, markets.weeks)
    unused = MarketsClient(base_url="http://127.0.0.1:9", api_key="unused")  # the lake has the tariffs already
    checked = dg.materialize(
        [markets.tariffs, markets.holidays, markets.energy_price_steps, *checks],
        selection=dg.AssetSelection.assets(markets.energy_price_steps),
        partition_key=DAY,
        resources={"lake": lake, "markets": unused},
        instance=instance,
        raise_on_error=False,
    )
    assert {e.check_name: e.passed for e in checked.get_asset_check_evaluations()}["rates_positive"] is False

    defs = build_definitions({"lake": lake, "catalog": analyst_catalog})
    run = defs.resolve_job_def("pump_schedule_job").execute_in_process(
        partition_key=DAY, instance=instance, raise_on_error=False
    )
    assert not run.success
    failure = next(e for e in run.all_events if e.is_step_failure and e.step_key == "plans__pump_schedule")
    message = failure.step_failure_data.error.message
    assert "not computed, because blocking checks on its inputs failed" in message
    assert "markets/energy_price_steps:rates_positive (partition 2026-03-04)" in message
    assert lake.read(pump_schedule.SCHEDULE).height == 0  # nothing planned on the broken tariff


def test_the_command_line_plans_a_day_from_the_lake(lake, monkeypatch, tmp_path, capsys):
    from ihub.cli import main

    monkeypatch.setenv("IHUB_LAKE_DIR", lake.root)
    scenario = tmp_path / "scenario.json"
    scenario.write_text('{"scenario": "p3_out", "pumps_out_of_service": ["P3"]}')
    argv = ["optimize", "pump", "--station", "PS01", "--date", DAY, "--scenario", str(scenario), "--time-limit", "20"]
    assert main([*argv, "--gap", "0.005"]) == 0
    out = capsys.readouterr().out
    assert f"station PS01  scenario p3_out  from {DAY} 00:00 UTC  96 steps of 15 min" in out
    p3 = next(line for line in out.splitlines() if line.startswith("P3      "))
    assert set(p3[8:]) == {"·"}  # out of service all day
    assert "saving     " in out
