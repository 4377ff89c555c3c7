"""Fleet's contribution to the hub: truck positions and trips, their checks, the job and its daily schedule.

The fixes come out of the SCADA collector's spool, so the ``scada_spool`` resource is the one
``orchestration/scada.py`` declares (``IHUB_SPOOL_DIR``); the fleet only reads windows, never acknowledges
them. Freshness is declared on the assets (``assets/fleet.py``): a day is late 36 hours after it began.
"""

from datetime import timedelta

import dagster as dg

from assets import fleet
from assets.partitions import daily
from contracts.fleet import POSITIONS_KEY, TRIPS_KEY
from quality.fleet import fleet_checks
from resources.fleet import FleetSettings

SOURCE_TAGS = {"source": "fleet"}

fleet_job = dg.define_asset_job(
    "fleet_job",
    selection=dg.AssetSelection.assets(POSITIONS_KEY, TRIPS_KEY),
    partitions_def=daily,
    description="Land the chosen UTC days' truck fixes from the collector's spool and derive their trips, with checks.",
    tags=SOURCE_TAGS,
)


@dg.schedule(
    name="fleet_daily",
    job=fleet_job,
    cron_schedule="0 7 * * *",
    execution_timezone="UTC",
    description="At 07:00 UTC, land yesterday's fixes and trips (after the 6 hours late fixes may take).",
)
def fleet_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    tick = context.scheduled_execution_time
    key = daily.get_partition_key_for_timestamp((tick - timedelta(days=1)).timestamp())
    return dg.RunRequest(partition_key=key, run_key=f"{key}@{tick:%Y-%m-%dT%H:%M}")


defs = dg.Definitions(
    assets=[fleet.positions, fleet.trips],
    asset_checks=fleet_checks(daily),
    jobs=[fleet_job],
    schedules=[fleet_daily],
    resources={"fleet": FleetSettings()},
)
