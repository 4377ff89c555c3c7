"""What tells operators that the platform itself is in trouble: a run that failed.

Freshness is declared per asset (``assets/source_assets.py``: a source's tables turn late in the UI when
nothing landed within their cadence); this module adds the push side, a run-failure sensor that sends
through the same notifier (and the same record) as the SCADA alerts, so a failed night backfill reaches
someone before the morning's plan runs on stale data.
"""

from __future__ import annotations

import dagster as dg

from resources.notifier import Notification, Notifier

MAX_ERROR_CHARS = 600  # a stack trace does not fit an SMS or a LINE message; the UI has the whole of it


def failure_notification(context: dg.RunFailureSensorContext) -> Notification:
    """What operators are told about a failed run: the job, the partition, the step and why, in words."""
    run = context.dagster_run
    tags = run.tags
    partition = tags.get("dagster/partition") or (
        f"{tags['dagster/asset_partition_range_start']}…{tags['dagster/asset_partition_range_end']}"
        if "dagster/asset_partition_range_start" in tags
        else None
    )
    steps = []
    for event in context.get_step_failure_events():
        error = event.step_failure_data.error
        text = (error.message if error else "no error recorded").strip().splitlines()
        steps.append(f"{event.step_key}: {text[-1] if text else ''}"[:MAX_ERROR_CHARS])
    where = f" (partition {partition})" if partition else ""
    reason = "; ".join(steps) if steps else (context.failure_event.message or "the run failed")
    return Notification(
        severity="critical" if tags.get("ihub/criticality") == "high" else "warning",
        title=f"Run of {run.job_name}{where} failed",
        message=f"{run.job_name}{where} failed: {reason[:MAX_ERROR_CHARS]} (run {run.run_id[:8]})",
        source="dagster",
    )


@dg.run_failure_sensor(
    name="run_failure_to_operators",
    description="Sends every failed run (job, partition, failing step and why) to the operator notifier.",
    default_status=dg.DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
)
def run_failure_to_operators(context: dg.RunFailureSensorContext, notifier: Notifier) -> None:
    outcome = notifier.send(failure_notification(context))
    context.log.info(f"run {context.dagster_run.run_id[:8]} failure sent: delivered={outcome.delivered}")


defs = dg.Definitions(sensors=[run_failure_to_operators])
