"""The markets source in the hub's Definitions: its assets, checks, jobs and the price schedule."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg


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
