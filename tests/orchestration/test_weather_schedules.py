"""The weather schedules ask for the right hours: the issue hour in progress, the observed hour just ended."""

from datetime import UTC, datetime

import dagster as dg

from orchestration.definitions import defs
from orchestration.weather import weather_forecasts_hourly, weather_observations_hourly


def _keys(schedule, tick: datetime) -> list[str]:
    context = dg.build_schedule_context(scheduled_execution_time=tick, repository_def=defs.get_repository_def())
    result = schedule.evaluate_tick(context)
    return [request.partition_key for request in result.run_requests]


def test_forecasts_run_for_the_hour_in_progress():
    assert _keys(weather_forecasts_hourly, datetime(2026, 3, 2, 8, 5, tzinfo=UTC)) == ["2026-03-02-08:00"]


def test_observations_run_for_the_hour_just_ended():
    assert _keys(weather_observations_hourly, datetime(2026, 3, 2, 0, 20, tzinfo=UTC)) == ["2026-03-01-23:00"]


def test_the_source_resolves_its_jobs():
    assert {job.name for job in defs.resolve_all_job_defs()} >= {"weather_forecasts_job", "weather_observations_job"}
