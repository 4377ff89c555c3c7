"""Weather's contribution to the hub: its assets, checks, jobs, hourly schedules and client."""

from datetime import timedelta

import dagster as dg

from assets import weather
from assets.partitions import hourly
from contracts.weather import FORECASTS_KEY, OBSERVATIONS_KEY
from quality.weather import weather_checks
from resources.weather import WeatherClient

SOURCE_TAGS = {"source": "weather"}

weather_forecasts_job = dg.define_asset_job(
    "weather_forecasts_job",
    selection=dg.AssetSelection.assets(FORECASTS_KEY),
    description="Fetch the OWM forecast issued this hour for every DMA, with its checks.",
    tags=SOURCE_TAGS,
)

weather_observations_job = dg.define_asset_job(
    "weather_observations_job",
    selection=dg.AssetSelection.assets(OBSERVATIONS_KEY),
    description="Load the met office's observations of the chosen hours for every DMA, with their checks.",
    tags=SOURCE_TAGS,
)


def _hour_partition(name: str, job, cron: str, back: timedelta, description: str) -> dg.ScheduleDefinition:
    """An hourly schedule running the partition of the hour that held ``tick - back``."""

    @dg.schedule(name=name, job=job, cron_schedule=cron, execution_timezone="UTC", description=description)
    def _schedule(context: dg.ScheduleEvaluationContext):
        tick = context.scheduled_execution_time
        key = hourly.get_partition_key_for_timestamp((tick - back).timestamp())
        return dg.RunRequest(partition_key=key, run_key=f"{key}@{tick:%Y-%m-%dT%H:%M}")

    return _schedule


# A forecast can only be fetched as issued now, so only the hour in progress is ever asked for.
weather_forecasts_hourly = _hour_partition(
    "weather_forecasts_hourly",
    weather_forecasts_job,
    "5 * * * *",
    timedelta(0),
    "At :05 every hour, store the forecast OWM issues now under this issue hour.",
)

# The met feed publishes an hour once it has ended; :20 leaves it time to arrive.
weather_observations_hourly = _hour_partition(
    "weather_observations_hourly",
    weather_observations_job,
    "20 * * * *",
    timedelta(hours=1),
    "At :20 every hour, load the met observations of the hour that just ended.",
)

defs = dg.Definitions(
    assets=[weather.forecasts, weather.observations],
    asset_checks=weather_checks(hourly),
    jobs=[weather_forecasts_job, weather_observations_job],
    schedules=[weather_forecasts_hourly, weather_observations_hourly],
    resources={
        "weather": WeatherClient(
            owm_base_url=dg.EnvVar("WEATHER_OWM_BASE_URL"),
            owm_api_key=dg.EnvVar("WEATHER_OWM_API_KEY"),
            met_base_url=dg.EnvVar("WEATHER_MET_BASE_URL"),
        ),
    },
)
