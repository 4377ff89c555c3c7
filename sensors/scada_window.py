"""The sensor that turns each sealed SCADA spool window into exactly one window run."""

import dagster as dg

from collector import spool
from quality.scada import WINDOW_TAG
from resources.scada_spool import ScadaSpool

# A backlog (after an outage) drains a bounded number of windows per tick instead of flooding the queue.
MAX_RUNS_PER_TICK = 24


def scada_window_sensor(job) -> dg.SensorDefinition:
    """Requests one run of ``job`` per sealed window, keyed by the window so none ever runs twice.

    Every tick lists all sealed (not yet archived) windows, not only those after the cursor: a window
    the collector sealed late (after a restart) is still picked up, and the run key stops repeats. The
    cursor records the newest window requested, for the UI and for ordering.
    """

    @dg.sensor(
        name="scada_window_sensor",
        job=job,
        minimum_interval_seconds=5,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="One run per sealed 5-minute SCADA spool window (run key = window).",
    )
    def _sensor(context: dg.SensorEvaluationContext, scada_spool: ScadaSpool):
        windows = spool.sealed_windows(scada_spool.root)
        cursor = context.cursor or ""
        # Windows at or before the cursor are normally running or failed (a failed one waits for a
        # person to re-execute it); only one sealed late, with no run yet, is requested again.
        pending = [w for w in windows if w > cursor or not _has_run(context.instance, w)]
        if not pending:
            return dg.SkipReason(f"no new sealed window in {scada_spool.root}")
        batch = pending[:MAX_RUNS_PER_TICK]
        newest = max([*batch, cursor])
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=f"scada-window-{w}", tags={WINDOW_TAG: w}) for w in batch],
            cursor=newest,
        )

    return _sensor


def _has_run(instance: dg.DagsterInstance, window: str) -> bool:
    return bool(instance.get_run_records(filters=dg.RunsFilter(tags={WINDOW_TAG: window}), limit=1))
