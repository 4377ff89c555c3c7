"""DMAMA's contribution to the hub: its assets, checks, jobs, schedules and client, as one Definitions."""

from datetime import timedelta

import dagster as dg

from assets import dmama
from assets.partitions import daily, hourly
from contracts.dmama import DMAS_KEY, FLOW_READINGS_KEY, METER_READINGS_KEY, METERS_KEY
from orchestration.schedules import refresh_open_partition
from orchestration.settings import local_timezone
from quality.dmama import dmama_checks
from resources.dmama import DmamaClient

SOURCE_TAGS = {"source": "dmama"}

dmama_catalogue_job = dg.define_asset_job(
    "dmama_catalogue_job",
    selection=dg.AssetSelection.assets(DMAS_KEY, METERS_KEY),
    description="Refresh the DMA catalogue and the meter list from DMAMA, with their checks.",
    tags=SOURCE_TAGS,
)

dmama_readings_job = dg.define_asset_job(
    "dmama_readings_job",
    selection=dg.AssetSelection.assets(FLOW_READINGS_KEY),
    description="Load DMA flow and pressure readings for the chosen hours, with their checks.",
    tags=SOURCE_TAGS,
)

dmama_meter_readings_job = dg.define_asset_job(
    "dmama_meter_readings_job",
    selection=dg.AssetSelection.assets(METER_READINGS_KEY),
    description="Load hourly meter register readings for the chosen days, with their checks.",
    tags=SOURCE_TAGS,
)

dmama_readings_every_15_minutes = refresh_open_partition(
    "dmama_readings_every_15_minutes",
    dmama_readings_job,
    "*/15 * * * *",
    hourly,
    settle=timedelta(minutes=15),
    description="Reload the current hour of DMA readings every 15 minutes (and the last hour just after it ends).",
)

dmama_meter_readings_hourly = refresh_open_partition(
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

defs = dg.Definitions(
    assets=[dmama.dmas, dmama.meters, dmama.flow_readings, dmama.meter_readings],
    asset_checks=dmama_checks(hourly, daily),
    jobs=[dmama_catalogue_job, dmama_readings_job, dmama_meter_readings_job],
    schedules=[dmama_readings_every_15_minutes, dmama_meter_readings_hourly, dmama_catalogue_daily],
    resources={
        "dmama": DmamaClient(
            base_url=dg.EnvVar("DMAMA_BASE_URL"),
            api_key=dg.EnvVar("DMAMA_API_KEY"),
            client_id=dg.EnvVar("DMAMA_CLIENT_ID"),
            client_secret=dg.EnvVar("DMAMA_CLIENT_SECRET"),
        ),
    },
)
