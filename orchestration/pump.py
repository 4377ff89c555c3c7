"""Pump scheduling's contribution to the hub: the plan's input assets, the plan, its forecast score, a job
and an evening schedule that plans tomorrow."""

import dagster as dg

from assets import pump_schedule

PLAN_TAGS = {"plan": "pump_schedule"}

pump_schedule_job = dg.define_asset_job(
    "pump_schedule_job",
    selection=dg.AssetSelection.assets(
        pump_schedule.pump_demand_forecast, pump_schedule.pump_initial_state, pump_schedule.pump_schedule
    ),
    partitions_def=pump_schedule.schedule_days,
    description=(
        "Forecast tomorrow's demand, read the tanks' and pumps' state at midnight from SCADA, and plan the day's "
        "pump schedule (run config: station, scenario and its overrides, solver)."
    ),
    tags=PLAN_TAGS,
)

pump_forecast_error_job = dg.define_asset_job(
    "pump_forecast_error_job",
    selection=dg.AssetSelection.assets(pump_schedule.pump_forecast_error),
    partitions_def=pump_schedule.schedule_days,
    description="Score a day's demand forecast against the DMAMA inflow that then happened.",
    tags=PLAN_TAGS,
)


@dg.schedule(job=pump_schedule_job, cron_schedule="55 23 * * *", execution_timezone="UTC")
def pump_schedule_nightly(context: dg.ScheduleEvaluationContext):
    """At 23:55 UTC, plan the UTC day that starts in five minutes (the last SCADA points are in by then)."""
    tick = context.scheduled_execution_time
    day = pump_schedule.schedule_days.get_partition_key_for_timestamp(tick.timestamp() + 600)
    return dg.RunRequest(partition_key=day, run_key=f"pump_schedule/{day}")


defs = dg.Definitions(
    assets=pump_schedule.ASSETS,
    jobs=[pump_schedule_job, pump_forecast_error_job],
    schedules=[pump_schedule_nightly],
)
