"""GIS's contribution to the hub: the map's weekly snapshot (layers, meter join, overlaps, network per DMA,
GeoJSON export), its checks, the weekly job and schedule, and the reader."""

import os

import dagster as dg

from assets import gis
from quality.gis import gis_checks
from resources.gis import GisSource

SOURCE_TAGS = {"source": "gis"}

gis_weekly_job = dg.define_asset_job(
    "gis_weekly_job",
    selection=dg.AssetSelection.groups("gis"),
    partitions_def=gis.weekly,
    description=(
        "Snapshot the network map for the week in progress: every layer, the meter-to-DMA join, overlapping "
        "DMAs, the network per DMA and the GeoJSON export, with their checks."
    ),
    tags=SOURCE_TAGS,
)


@dg.schedule(
    name="gis_weekly",
    job=gis_weekly_job,
    # Monday 02:00 UTC (09:00 in Bangkok): inside the UTC week the snapshot is filed under.
    cron_schedule="0 2 * * 1",
    execution_timezone="UTC",
    description="Every Monday, take this week's snapshot of the network map.",
)
def gis_weekly(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    tick = context.scheduled_execution_time
    key = gis.weekly.get_partition_key_for_timestamp(tick.timestamp())
    return dg.RunRequest(partition_key=key, run_key=f"{key}@{tick:%Y-%m-%dT%H:%M}")


def _env(name: str) -> str | dg.EnvVar:
    # Either the WFS or the folder is configured; an unset one is simply empty, not a load error.
    return dg.EnvVar(name) if os.environ.get(name) else ""


defs = dg.Definitions(
    assets=[*gis.layer_assets, *gis.derived_assets],
    asset_checks=gis_checks(gis.weekly),
    jobs=[gis_weekly_job],
    schedules=[gis_weekly],
    resources={
        "gis": GisSource(
            wfs_base_url=_env("GIS_WFS_BASE_URL"),
            wfs_api_key=_env("GIS_WFS_API_KEY"),
            files_dir=_env("GIS_FILES_DIR"),
        )
    },
)
