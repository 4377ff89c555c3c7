"""The markets data contract: electricity tariffs, public holidays and the energy price per 15-minute step.

Rates carry their unit in the column name (THB/kWh, THB/kW); times are UTC, local calendar dates are
Asia/Bangkok. Assets and checks both import it from here, so ``quality/`` never imports ``assets/``.
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

TABLES = (TARIFFS, HOLIDAYS, ENERGY_PRICE_STEPS)

TARIFFS_KEY = dg.AssetKey(["markets", "tariffs"])
HOLIDAYS_KEY = dg.AssetKey(["markets", "holidays"])
ENERGY_PRICE_STEPS_KEY = dg.AssetKey(["markets", "energy_price_steps"])
