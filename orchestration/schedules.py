"""Schedules: 15-minute readings, hourly meter reads, daily catalogues, in the utility's time zone."""

from datetime import datetime, timedelta

import dagster as dg

from assets.partitions import daily, hourly
from orchestration.jobs import (
    analyst_catalog_job,
    dmama_catalogue_job,
    dmama_meter_readings_job,
    dmama_readings_job,
)
from orchestration.settings import local_timezone


def _refresh_open_partition(
    name: str,
    job,
    cron: str,
    partitions_def: dg.TimeWindowPartitionsDefinition,
    settle: timedelta,
    description: str,
) -> dg.ScheduleDefinition:
    """A schedule that reloads the partition in progress, and the one before it while late data settles.

    Re-running a partition replaces it exactly, so refreshing the open hour every 15 minutes is safe;
    the run key carries the tick so each tick runs once even if the daemon restarts.
    """

    @dg.schedule(name=name, job=job, cron_schedule=cron, execution_timezone="UTC", description=description)
    def _schedule(context: dg.ScheduleEvaluationContext):
        tick: datetime = context.scheduled_execution_time
        current = partitions_def.get_partition_key_for_timestamp(tick.timestamp())
        keys = [current]
        window = partitions_def.time_window_for_partition_key(current)
        if tick - window.start < settle:
            previous = partitions_def.get_prev_partition_window(window.start)
            if previous is not None:
                keys.insert(0, partitions_def.get_partition_key_for_timestamp(previous.start.timestamp()))
        for key in keys:
            yield dg.RunRequest(partition_key=key, run_key=f"{key}@{tick:%Y-%m-%dT%H:%M}")

    return _schedule


dmama_readings_every_15_minutes = _refresh_open_partition(
    "dmama_readings_every_15_minutes",
    dmama_readings_job,
    "*/15 * * * *",
    hourly,
    settle=timedelta(minutes=15),
    description="Reload the current hour of DMA readings every 15 minutes (and the last hour just after it ends).",
)

dmama_meter_readings_hourly = _refresh_open_partition(
    "dmama_meter_readings_hourly",
    dmama_meter_readings_job,
    "10 * * * *",
    daily,
    settle=timedelta(hours=2),
    description="Reload today's meter readings every hour (and yesterday's during the first two hours).",
)

dmama_catalogue_daily = dg.ScheduleDefinition(
    name="dmama_catalogue_daily",
    job=dmama_catalogue_job,
    cron_schedule="0 5 * * *",
    execution_timezone=local_timezone(),
    description="Refresh DMAs and meters every morning, local time.",
)

analyst_catalog_daily = dg.ScheduleDefinition(
    name="analyst_catalog_daily",
    job=analyst_catalog_job,
    cron_schedule="30 5 * * *",
    execution_timezone=local_timezone(),
    description="Republish the analysts' catalog after the morning catalogue refresh.",
)

SCHEDULES = [
    dmama_readings_every_15_minutes,
    dmama_meter_readings_hourly,
    dmama_catalogue_daily,
    analyst_catalog_daily,
]
