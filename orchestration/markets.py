"""Markets' contribution to the hub: tariffs, holidays and energy price steps, their checks, jobs,
schedules and client, as one Definitions."""

from datetime import UTC, timedelta

import dagster as dg

from assets import markets
from contracts.markets import ENERGY_PRICE_STEPS_KEY, HOLIDAYS_KEY, TARIFFS_KEY
from orchestration.settings import local_timezone
from quality.markets import markets_checks
from resources.markets import MarketsClient

SOURCE_TAGS = {"source": "markets"}

markets_reference_job = dg.define_asset_job(
    "markets_reference_job",
    selection=dg.AssetSelection.assets(TARIFFS_KEY, HOLIDAYS_KEY),
    description="Refresh the published tariff versions and the public holidays, with their checks.",
    tags=SOURCE_TAGS,
)

markets_price_steps_job = dg.define_asset_job(
    "markets_price_steps_job",
    selection=dg.AssetSelection.assets(ENERGY_PRICE_STEPS_KEY),
    partitions_def=markets.price_days,
    description="Price every 15-minute step of the chosen UTC days from the tariffs and holidays in the lake.",
    tags=SOURCE_TAGS,
)

markets_reference_daily = dg.ScheduleDefinition(
    name="markets_reference_daily",
    job=markets_reference_job,
    cron_schedule="0 4 * * *",
    execution_timezone=local_timezone(),
    description="Refresh tariffs and holidays every morning, local time.",
)


@dg.schedule(
    name="markets_price_steps_daily",
    job=markets_price_steps_job,
    cron_schedule="30 4 * * *",
    execution_timezone=local_timezone(),
    description="After the reference refresh, price today's UTC day and the next 7 (the pump plan looks ahead).",
)
def markets_price_steps_daily(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest]:
    today = context.scheduled_execution_time.astimezone(UTC).date()
    keys = [(today + timedelta(days=n)).isoformat() for n in range(markets.PRICE_DAYS_AHEAD + 1)]
    tick = context.scheduled_execution_time.isoformat()
    return [dg.RunRequest(run_key=f"{key}@{tick}", partition_key=key) for key in keys]


defs = dg.Definitions(
    assets=[markets.tariffs, markets.holidays, markets.energy_price_steps],
    asset_checks=markets_checks(markets.price_days),
    jobs=[markets_reference_job, markets_price_steps_job],
    schedules=[markets_reference_daily, markets_price_steps_daily],
    resources={"markets": MarketsClient(base_url=dg.EnvVar("MARKETS_BASE_URL"), api_key=dg.EnvVar("MARKETS_API_KEY"))},
)
