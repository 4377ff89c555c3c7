"""Markets' contribution to the hub: tariffs, holidays and energy price steps; weekly fuel prices and road
freight costs; daily exchange rates and cement prices; their checks, jobs, schedules and resources, as one
Definitions."""

from datetime import UTC, timedelta

import dagster as dg

from assets import markets
from contracts.markets import (
    CEMENT_MARKET_PRICES_KEY,
    CEMENT_PRICES_KEY,
    ENERGY_PRICE_STEPS_KEY,
    EXCHANGE_RATES_KEY,
    FUEL_PRICES_KEY,
    HOLIDAYS_KEY,
    ROAD_FREIGHT_COSTS_KEY,
    TARIFFS_KEY,
)
from orchestration.settings import local_timezone
from quality.markets import markets_checks
from resources.markets import FreightModelResource, MarketsClient

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


markets_fuel_job = dg.define_asset_job(
    "markets_fuel_job",
    selection=dg.AssetSelection.assets(FUEL_PRICES_KEY),
    partitions_def=markets.weeks,
    description="Load the weekly diesel and Brent prices of the chosen weeks (Monday to Monday, UTC).",
    tags=SOURCE_TAGS,
)

markets_daily_prices_job = dg.define_asset_job(
    "markets_daily_prices_job",
    selection=dg.AssetSelection.assets(EXCHANGE_RATES_KEY, CEMENT_PRICES_KEY, CEMENT_MARKET_PRICES_KEY),
    partitions_def=markets.days,
    description=(
        "Load the chosen UTC days' exchange rates and cement prices per city, then convert the prices to USD "
        "per tonne with the rates (a failed blocking rate check stops the conversion)."
    ),
    tags=SOURCE_TAGS,
)

markets_freight_job = dg.define_asset_job(
    "markets_freight_job",
    selection=dg.AssetSelection.assets(ROAD_FREIGHT_COSTS_KEY),
    partitions_def=markets.weeks,
    description="Cost road freight per tonne-km for the chosen weeks from the diesel prices and USD/INR rates.",
    tags=SOURCE_TAGS,
)


def _for_the_tick(
    name: str, job: dg.JobDefinition, partitions_def: dg.TimeWindowPartitionsDefinition, cron: str, description: str
) -> dg.ScheduleDefinition:
    """A schedule running the partition (UTC day or week) that holds its tick."""

    @dg.schedule(name=name, job=job, cron_schedule=cron, execution_timezone=local_timezone(), description=description)
    def _schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        tick = context.scheduled_execution_time
        key = partitions_def.get_partition_key_for_timestamp(tick.timestamp())
        return dg.RunRequest(run_key=f"{key}@{tick.isoformat()}", partition_key=key)

    return _schedule


# The publisher releases the week's fuel prices on Monday at 10:00 Bangkok time.
markets_fuel_weekly = _for_the_tick(
    "markets_fuel_weekly",
    markets_fuel_job,
    markets.weeks,
    "0 11 * * 1",
    "Every Monday at 11:00 local, load the fuel prices of the week that starts that day.",
)

# Freight uses the rate fixed last before the week (the Friday before), there since the weekend.
markets_freight_weekly = _for_the_tick(
    "markets_freight_weekly",
    markets_freight_job,
    markets.weeks,
    "30 11 * * 1",
    "Every Monday at 11:30 local, after the fuel prices, cost road freight for the week.",
)

# Rates are fixed at 16:30 and the cement survey is out at 18:00 Bangkok time.
markets_daily_prices = _for_the_tick(
    "markets_daily_prices",
    markets_daily_prices_job,
    markets.days,
    "0 19 * * *",
    "Every evening at 19:00 local, load the day's exchange rates and cement prices and convert them.",
)

defs = dg.Definitions(
    assets=[
        markets.tariffs,
        markets.holidays,
        markets.energy_price_steps,
        markets.fuel_prices,
        markets.exchange_rates,
        markets.cement_prices,
        markets.cement_market_prices,
        markets.road_freight_costs,
    ],
    asset_checks=markets_checks(markets.price_days, markets.days, markets.weeks),
    jobs=[
        markets_reference_job,
        markets_price_steps_job,
        markets_fuel_job,
        markets_daily_prices_job,
        markets_freight_job,
    ],
    schedules=[
        markets_reference_daily,
        markets_price_steps_daily,
        markets_fuel_weekly,
        markets_freight_weekly,
        markets_daily_prices,
    ],
    resources={
        "markets": MarketsClient(base_url=dg.EnvVar("MARKETS_BASE_URL"), api_key=dg.EnvVar("MARKETS_API_KEY")),
        "freight_model": FreightModelResource(),
    },
)
