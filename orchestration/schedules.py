"""Schedule shapes shared by the sources: where a clock, not an upstream change, is the real trigger."""

from datetime import datetime, timedelta

import dagster as dg


def refresh_open_partition(
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
