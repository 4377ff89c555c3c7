"""The sensor that turns each published SCADA window into exactly one window run, in the window's hour."""

import dagster as dg

from assets.partitions import hourly
from quality.scada import WINDOW_TAG
from resources.scada_spool import ScadaWindows

# A backlog (after an outage) drains a bounded number of windows per tick instead of flooding the queue.
MAX_RUNS_PER_TICK = 24


def scada_window_sensor(job) -> dg.SensorDefinition:
    """Requests one run of ``job`` per published window, keyed by the window so none ever runs twice.

    The run's partition is the hour the window starts in (so the UI shows the hour as materialized and
    the hour's checks get the result) and its ``scada/window`` tag names the window, so the run loads
    only that window: one run per window, 12 (5-minute windows) or 60 (1-minute) per hourly partition.

    Every tick lists all published windows not yet acknowledged, not only those after the cursor: a
    window the collector sealed late (after a restart) is still picked up, and the run key stops
    repeats. The cursor records the newest window requested, for the UI and for ordering.
    """

    @dg.sensor(
        name="scada_window_sensor",
        job=job,
        minimum_interval_seconds=5,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="One run per published SCADA window (run key = window, partition = its hour).",
    )
    def _sensor(context: dg.SensorEvaluationContext, scada_spool: ScadaWindows):
        from resources.scada_manifest import window_start

        windows = scada_spool.pending()
        cursor = context.cursor or ""
        # Windows at or before the cursor are normally running or failed (a failed one waits for a
        # person to re-execute it); only one published late, with no run yet, is requested again.
        pending = [w for w in windows if w > cursor or not _has_run(context.instance, w)]
        if not pending:
            return dg.SkipReason(f"no new published window in {scada_spool.root}")
        batch = pending[:MAX_RUNS_PER_TICK]
        newest = max([*batch, cursor])
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key=f"scada-window-{w}",
                    partition_key=hourly.get_partition_key_for_timestamp(window_start(w).timestamp()),
                    tags={WINDOW_TAG: w},
                )
                for w in batch
            ],
            cursor=newest,
        )

    return _sensor


def _has_run(instance: dg.DagsterInstance, window: str) -> bool:
    return bool(instance.get_run_records(filters=dg.RunsFilter(tags={WINDOW_TAG: window}), limit=1))
