"""The markets data contract: electricity tariffs, public holidays, the energy price per 15-minute step,
weekly fuel prices, daily exchange rates, cement prices per city (as sent and converted) and the road
freight cost per tonne-km.

Prices and rates carry their unit in the column name (THB/kWh, USD/l, INR per USD); times are UTC, local
calendar dates are Asia/Bangkok. Assets and checks both import it from here, so ``quality/`` never imports
``assets/``.
"""

import dagster as dg
import polars as pl

from resources.lake import Column, LakeTable

UTC_TIME = pl.Datetime("us", "UTC")
STEP_MINUTES = 15
# On-peak hours are published in Thai local time, whatever time zone the hub is deployed in.
TARIFF_TIMEZONE = "Asia/Bangkok"

TARIFFS = LakeTable(
    layer="raw",
    name="markets_tariffs",
    description=(
        "Every published version of the electricity time-of-use tariff, with the period it is valid for: "
        "energy rates on-peak and off-peak, fuel adjustment (Ft) and demand charge. As the publisher sent them."
    ),
    columns=(
        Column("tariff_id", pl.String(), "Publisher's identifier of the tariff version.", nullable=False),
        Column("name", pl.String(), "Name of the tariff version."),
        Column("published_on", pl.Date(), "Date the version was published (local calendar)."),
        Column("valid_from", UTC_TIME, "Start of validity, UTC (inclusive).", nullable=False),
        Column("valid_to", UTC_TIME, "End of validity, UTC (exclusive); empty: until further notice."),
        Column("on_peak_start_local", pl.String(), "Start of on-peak hours on weekdays, HH:MM Asia/Bangkok."),
        Column("on_peak_end_local", pl.String(), "End of on-peak hours on weekdays, HH:MM Asia/Bangkok (exclusive)."),
        Column("energy_on_peak_thb_per_kwh", pl.Float64(), "Energy rate on-peak, THB/kWh (before Ft).", nullable=False),
        Column(
            "energy_off_peak_thb_per_kwh", pl.Float64(), "Energy rate off-peak, THB/kWh (before Ft).", nullable=False
        ),
        Column("ft_thb_per_kwh", pl.Float64(), "Fuel adjustment charge (Ft) on every unit, THB/kWh.", nullable=False),
        Column(
            "demand_charge_thb_per_kw",
            pl.Float64(),
            "On-peak demand charge, THB per kW of maximum 15-minute demand in the billing month.",
            nullable=False,
        ),
    ),
    key=("tariff_id",),
)

HOLIDAYS = LakeTable(
    layer="raw",
    name="markets_holidays",
    description="Public holidays (local calendar dates, Asia/Bangkok): off-peak all day under the TOU tariff.",
    columns=(
        Column("date", pl.Date(), "The holiday, local calendar date.", nullable=False),
        Column("name", pl.String(), "Name of the holiday."),
    ),
    key=("date",),
)

ENERGY_PRICE_STEPS = LakeTable(
    layer="marts",
    name="energy_price_steps",
    description=(
        "Price of electricity for every 15-minute step, from the tariff valid at the step and the public "
        "holidays: the period (on_peak/off_peak), the energy price including Ft, and whether the step counts "
        "toward the on-peak demand charge. The table the pump scheduling model reads."
    ),
    columns=(
        Column("step_start", UTC_TIME, "Start of the 15-minute step, UTC.", nullable=False),
        Column("step_minutes", pl.Int64(), "Length of the step, minutes (15).", nullable=False),
        Column("tariff_id", pl.String(), "Tariff version valid at the step.", nullable=False),
        Column("period", pl.String(), "on_peak or off_peak (weekday hours, weekends, holidays).", nullable=False),
        Column("energy_thb_per_kwh", pl.Float64(), "Energy price of the step, THB/kWh, Ft included.", nullable=False),
        Column(
            "demand_charge_applies",
            pl.Boolean(),
            "Whether demand in this step counts toward the on-peak demand charge (on-peak steps).",
            nullable=False,
        ),
        Column(
            "demand_charge_thb_per_kw",
            pl.Float64(),
            "The tariff's demand charge, THB per kW of maximum 15-minute on-peak demand.",
            nullable=False,
        ),
        Column("holiday", pl.String(), "Name of the public holiday the step falls on (local date), else empty."),
    ),
    key=("step_start",),
    time_column="step_start",
)

FUEL_PRICES = LakeTable(
    layer="raw",
    name="markets_fuel_prices",
    description=(
        "Weekly fuel prices, one row per week (the Monday it starts): retail diesel in USD per litre and "
        "Brent crude in USD per barrel, as the publisher sent them. Road freight costs follow diesel."
    ),
    columns=(
        Column("week_start", pl.Date(), "Monday the price week starts (the partition).", nullable=False),
        Column("diesel_usd_per_l", pl.Float64(), "Diesel price of the week, USD per litre.", nullable=False),
        Column("brent_usd_per_bbl", pl.Float64(), "Brent crude price of the week, USD per barrel (159 l)."),
        Column("published_at", UTC_TIME, "When the publisher released the week's prices, UTC."),
    ),
    key=("week_start",),
    time_column="week_start",
)

EXCHANGE_RATES = LakeTable(
    layer="raw",
    name="markets_exchange_rates",
    description=(
        "Reference exchange rates from USD (USD→THB, USD→INR), one per business day of the publisher: "
        "none on weekends and public holidays, when the last fixed rate still applies."
    ),
    columns=(
        Column("rate_date", pl.Date(), "The publisher's date of the rate (local business day).", nullable=False),
        Column("base", pl.String(), "Currency converted from, ISO 4217 (USD).", nullable=False),
        Column("quote", pl.String(), "Currency converted to, ISO 4217 (THB, INR).", nullable=False),
        Column(
            "rate",
            pl.Float64(),
            "Units of the quote currency per 1 unit of the base (e.g. INR per USD).",
            nullable=False,
        ),
        Column("published_at", UTC_TIME, "When the publisher fixed the rate, UTC."),
    ),
    key=("rate_date", "base", "quote"),
    time_column="rate_date",
)

CEMENT_PRICES = LakeTable(
    layer="raw",
    name="markets_cement_prices",
    description=(
        "Dealer price of cement per city of the plant network and grade, per bag in the currency the survey "
        "sent (INR per 50 kg bag), one row per day. markets/cement_market_prices converts them."
    ),
    columns=(
        Column("price_date", pl.Date(), "Day of the price survey (local calendar date).", nullable=False),
        Column("city", pl.String(), "City the dealers were surveyed in.", nullable=False),
        Column("grade", pl.String(), "Cement grade, e.g. OPC 53, PPC.", nullable=False),
        Column("price_per_bag", pl.Float64(), "Dealer price of one bag, in `currency`.", nullable=False),
        Column("bag_kg", pl.Float64(), "Weight of the bag priced, kg (50).", nullable=False),
        Column("currency", pl.String(), "Currency of the price, ISO 4217 (INR).", nullable=False),
    ),
    key=("price_date", "city", "grade"),
    time_column="price_date",
)

CEMENT_MARKET_PRICES = LakeTable(
    layer="marts",
    name="cement_market_prices",
    description=(
        "Cement market prices per city and grade, per tonne, keeping the source amount and currency beside the "
        "amount converted to USD with the rate used and the rate's date (the latest USD rate fixed on or "
        "before the price date). A price with no usable rate is in the rejects, never converted with a guess."
    ),
    columns=(
        Column("price_date", pl.Date(), "Day of the price survey (local calendar date).", nullable=False),
        Column("city", pl.String(), "City the dealers were surveyed in.", nullable=False),
        Column("grade", pl.String(), "Cement grade, e.g. OPC 53, PPC.", nullable=False),
        Column("source_price_per_bag", pl.Float64(), "Price of one bag as sent, in source_currency.", nullable=False),
        Column("bag_kg", pl.Float64(), "Weight of the bag priced, kg.", nullable=False),
        Column("source_currency", pl.String(), "Currency the price was sent in, ISO 4217.", nullable=False),
        Column(
            "source_price_per_tonne",
            pl.Float64(),
            "Price per tonne in source_currency: price_per_bag × 1000 / bag_kg.",
            nullable=False,
        ),
        Column(
            "price_usd_per_tonne",
            pl.Float64(),
            "Price per tonne in USD: source_price_per_tonne / fx_rate_per_usd (rounded to 0.01).",
            nullable=False,
        ),
        Column("fx_rate_per_usd", pl.Float64(), "Rate used: units of source_currency per USD.", nullable=False),
        Column(
            "fx_rate_date", pl.Date(), "Publisher's date of the rate used (on or before price_date).", nullable=False
        ),
    ),
    key=("price_date", "city", "grade"),
    time_column="price_date",
)

ROAD_FREIGHT_COSTS = LakeTable(
    layer="marts",
    name="road_freight_costs",
    description=(
        "Road freight cost per tonne-km for each week, from the week's diesel price and the USD/INR rate, by "
        "the cost model of resources/markets_freight_model.yaml: (fixed INR per km + litres per km × diesel "
        "INR per litre) / payload. The figure the supply plan reads for road legs."
    ),
    columns=(
        Column("week_start", pl.Date(), "Monday the week starts.", nullable=False),
        Column("freight_inr_per_tonne_km", pl.Float64(), "Road freight cost, INR per tonne-km.", nullable=False),
        Column("fuel_inr_per_tonne_km", pl.Float64(), "Its fuel part, INR per tonne-km.", nullable=False),
        Column(
            "fixed_inr_per_tonne_km",
            pl.Float64(),
            "Its fixed part (driver, tolls, wear), INR per tonne-km.",
            nullable=False,
        ),
        Column("diesel_usd_per_l", pl.Float64(), "Diesel price of the week used, USD per litre.", nullable=False),
        Column("usd_inr_rate", pl.Float64(), "USD/INR rate used, INR per USD.", nullable=False),
        Column(
            "usd_inr_rate_date", pl.Date(), "Publisher's date of that rate (on or before week_start).", nullable=False
        ),
        Column(
            "diesel_inr_per_l",
            pl.Float64(),
            "Diesel price in INR per litre: diesel_usd_per_l × usd_inr_rate.",
            nullable=False,
        ),
        Column("fuel_l_per_km", pl.Float64(), "Model: diesel burned per km loaded, litres.", nullable=False),
        Column("payload_t", pl.Float64(), "Model: tonnes per loaded trip.", nullable=False),
        Column("model", pl.String(), "Name of the cost model (its YAML's road_truck.name).", nullable=False),
    ),
    key=("week_start",),
    time_column="week_start",
)

TABLES = (
    TARIFFS,
    HOLIDAYS,
    ENERGY_PRICE_STEPS,
    FUEL_PRICES,
    EXCHANGE_RATES,
    CEMENT_PRICES,
    CEMENT_MARKET_PRICES,
    ROAD_FREIGHT_COSTS,
)

TARIFFS_KEY = dg.AssetKey(["markets", "tariffs"])
HOLIDAYS_KEY = dg.AssetKey(["markets", "holidays"])
ENERGY_PRICE_STEPS_KEY = dg.AssetKey(["markets", "energy_price_steps"])
FUEL_PRICES_KEY = dg.AssetKey(["markets", "fuel_prices"])
EXCHANGE_RATES_KEY = dg.AssetKey(["markets", "exchange_rates"])
CEMENT_PRICES_KEY = dg.AssetKey(["markets", "cement_prices"])
CEMENT_MARKET_PRICES_KEY = dg.AssetKey(["markets", "cement_market_prices"])
ROAD_FREIGHT_COSTS_KEY = dg.AssetKey(["markets", "road_freight_costs"])

# Reference rates are fixed on business days only; a price dated on a weekend or holiday takes the last
# rate fixed before it. Songkran with its weekend is five days without a rate; a week covers any gap a
# publisher's calendar has, and beyond it the rate is stale and the price is rejected, not converted.
FX_MAX_AGE_DAYS = 7
