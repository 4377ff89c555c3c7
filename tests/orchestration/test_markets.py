"""The markets source in the hub's Definitions: its assets, checks, jobs and the price schedule."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg

from assets import markets as markets_assets


def test_markets_is_in_the_hub_with_its_checks_and_resource():
    from orchestration.definitions import defs

    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"markets/tariffs", "markets/holidays", "markets/energy_price_steps"} <= keys
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert ("markets/tariffs", "validity_periods_do_not_overlap") in checks
    assert ("markets/energy_price_steps", "rates_positive") in checks
    assert "markets" in defs.resources
    assert defs.get_job_def("markets_price_steps_job").partitions_def is not None


def test_the_price_schedule_prices_today_and_the_week_ahead():
    from orchestration.definitions import defs
    from orchestration.markets import markets_price_steps_daily

    tick = datetime(2026, 3, 1, 21, 30, tzinfo=UTC)  # 04:30 local on 2 March
    context = dg.build_schedule_context(scheduled_execution_time=tick, repository_def=defs.get_repository_def())
    requests = markets_price_steps_daily.evaluate_tick(context).run_requests
    assert [r.partition_key for r in requests] == [f"2026-03-{d:02d}" for d in range(1, 9)]
    assert len({r.run_key for r in requests}) == 8


def _requests(schedule, tick: datetime) -> list[dg.RunRequest]:
    from orchestration.definitions import defs

    context = dg.build_schedule_context(scheduled_execution_time=tick, repository_def=defs.get_repository_def())
    return schedule.evaluate_tick(context).run_requests


def test_the_new_tables_have_weekly_and_daily_jobs_with_their_checks_and_freshness():
    from orchestration.definitions import defs

    graph = defs.resolve_asset_graph()
    weekly = {"markets/fuel_prices", "markets/road_freight_costs"}
    daily = {"markets/exchange_rates", "markets/cement_prices", "markets/cement_market_prices"}
    for key in weekly | daily:
        node = graph.get(dg.AssetKey.from_user_string(key))
        grain = "weekly" if key in weekly else "daily"
        assert (key, type(node.partitions_def).__name__) == (key, f"{grain.capitalize()}PartitionsDefinition")
        assert node.freshness_policy is not None, key
        assert node.backfill_policy == dg.BackfillPolicy.single_run(), key
    checks = {(c.asset_key.to_user_string(), c.name) for c in graph.asset_check_keys}
    assert {
        ("markets/exchange_rates", "usd_thb_plausible"),
        ("markets/exchange_rates", "usd_inr_plausible"),
        ("markets/fuel_prices", "prices_plausible"),
        ("markets/cement_prices", "prices_positive"),
        ("markets/cement_market_prices", "converted_plausible"),
        ("markets/road_freight_costs", "cost_plausible"),
    } <= checks
    assert {"markets", "freight_model"} <= set(defs.resources)
    jobs = {name: defs.resolve_job_def(name) for name in ("markets_fuel_job", "markets_daily_prices_job")}
    assert jobs["markets_fuel_job"].partitions_def == markets_assets.weeks
    assert jobs["markets_daily_prices_job"].partitions_def == markets_assets.days


def test_the_fuel_and_freight_schedules_run_the_week_starting_that_monday():
    from orchestration.markets import markets_freight_weekly, markets_fuel_weekly

    tick = datetime(2026, 3, 2, 4, tzinfo=UTC)  # 11:00 local on Monday 2 March
    assert [r.partition_key for r in _requests(markets_fuel_weekly, tick)] == ["2026-03-02"]
    later = datetime(2026, 3, 2, 4, 30, tzinfo=UTC)
    assert [r.partition_key for r in _requests(markets_freight_weekly, later)] == ["2026-03-02"]
    assert markets_fuel_weekly.cron_schedule == "0 11 * * 1"


def test_the_daily_prices_schedule_runs_the_day_of_its_tick():
    from orchestration.markets import markets_daily_prices

    tick = datetime(2026, 3, 3, 12, tzinfo=UTC)  # 19:00 local on 3 March
    (request,) = _requests(markets_daily_prices, tick)
    assert request.partition_key == "2026-03-03"
    assert request.run_key == f"2026-03-03@{tick.isoformat()}"
