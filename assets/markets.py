"""Markets and energy: electricity tariff versions and public holidays, landed raw, and the price of
energy for every 15-minute step, derived from them (the table the pump scheduling model reads); weekly
fuel prices, daily exchange rates and cement prices per city, landed raw; cement prices converted to USD
per tonne with the rate used; and the road freight cost per tonne-km the supply plan reads.

The tariff is data with a validity period, never a constant in code: each step is priced with the one
version valid at its start. A step where no version, or more than one, is valid is not priced: it goes to
the rejects table with the reason, so overlapping validity periods are never resolved silently. Likewise
a price is converted only with a plausible rate fixed on or before its date, and a week's freight cost
only from a plausible diesel price and rate: otherwise the row is a reject naming what was missing.
"""

import json
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
import polars as pl

from assets import source_assets as common
from assets.partitions import HISTORY_START, daily
from contracts.markets import (
    CEMENT_MARKET_PRICES,
    CEMENT_PRICES,
    ENERGY_PRICE_STEPS,
    EXCHANGE_RATES,
    FUEL_PRICES,
    FX_MAX_AGE_DAYS,
    HOLIDAYS,
    ROAD_FREIGHT_COSTS,
    STEP_MINUTES,
    TARIFF_TIMEZONE,
    TARIFFS,
)
from quality.conform import Conformed, conform, rejects_table
from quality.markets import implausible_diesel, implausible_rate, overlapping_tariffs
from resources.lake import Lake, LakeTable, time_windows
from resources.markets import FreightModelResource, MarketsClient

SOURCE = "markets"

# Days ahead that can be priced: a published tariff prices the future too, and the pump plan looks a
# week ahead. end_offset makes today and the next PRICE_DAYS_AHEAD UTC days partitions.
PRICE_DAYS_AHEAD = 7
price_days = dg.DailyPartitionsDefinition(start_date=HISTORY_START, end_offset=1 + PRICE_DAYS_AHEAD)
# Fuel is priced by the week (Monday to Monday, UTC), and so is road freight, which follows it: weekly
# partitions are 520 in ten years, and the week in progress is one (end_offset) once its price is out.
# The first week is the one holding HISTORY_START (1 January 2026, a Thursday).
weeks = dg.WeeklyPartitionsDefinition(start_date="2025-12-29", day_offset=1, end_offset=1)
# Exchange rates and cement prices come once a day: one partition per UTC day, today included.
days = daily


def _common(table: LakeTable, fresh_within: timedelta) -> dict:
    return common.source_asset(SOURCE, table, owner="team:energy", fresh_within=fresh_within)


@dg.asset(name="tariffs", kinds={"http", "parquet"}, **_common(TARIFFS, timedelta(days=2)))
def tariffs(context: dg.AssetExecutionContext, markets: MarketsClient, lake: Lake) -> dg.MaterializeResult:
    """Every published version of the electricity time-of-use tariff, with its validity period (UTC),
    energy rates on-peak and off-peak (THB/kWh), Ft (THB/kWh) and demand charge (THB/kW). Replaced whole;
    versions whose validity overlaps are kept as sent and flagged (the price steps reject the overlap)."""
    loaded = conform(
        common.fetch(context, SOURCE, "tariffs", markets.tariffs), TARIFFS, source=SOURCE, partition_key="snapshot"
    )
    written = lake.replace_snapshot(TARIFFS, loaded.frame)
    lake.replace_snapshot(rejects_table(TARIFFS), loaded.rejects)
    overlaps = overlapping_tariffs(written.frame)
    if overlaps:
        context.log.warning(f"markets: tariff versions with overlapping validity: {overlaps}")
    return dg.MaterializeResult(
        metadata={
            **common.reconciliation(loaded),
            "tariff_versions": written.rows,
            "overlapping_pairs": len(overlaps),
            "overlaps": ", ".join(f"{a} & {b}" for a, b in overlaps) or "none",
            "preview": common.preview(written.frame),
        }
    )


@dg.asset(name="holidays", kinds={"http", "parquet"}, **_common(HOLIDAYS, timedelta(days=7)))
def holidays(context: dg.AssetExecutionContext, markets: MarketsClient, lake: Lake) -> dg.MaterializeResult:
    """Public holidays of every year the publisher has announced (local dates): off-peak all day.
    Replaced whole."""
    loaded = conform(
        common.fetch(context, SOURCE, "holidays", markets.holidays), HOLIDAYS, source=SOURCE, partition_key="snapshot"
    )
    written = lake.replace_snapshot(HOLIDAYS, loaded.frame)
    lake.replace_snapshot(rejects_table(HOLIDAYS), loaded.rejects)
    years = sorted(set(written.frame["date"].dt.year().to_list()))
    return dg.MaterializeResult(
        metadata={**common.reconciliation(loaded), "holidays": written.rows, "years": ", ".join(map(str, years))}
    )


@dg.asset(
    name="energy_price_steps",
    kinds={"polars", "parquet"},
    partitions_def=price_days,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[tariffs, holidays],
    **_common(ENERGY_PRICE_STEPS, timedelta(days=1)),
)
def energy_price_steps(context: dg.AssetExecutionContext, lake: Lake) -> dg.MaterializeResult:
    """Price of electricity for every 15-minute step of the UTC day: the tariff version valid at the step,
    on-peak or off-peak (weekdays 09:00–22:00 Asia/Bangkok as the tariff says; weekends and public
    holidays off-peak), the energy price in THB/kWh with Ft, and whether the demand charge applies.
    Steps with no valid tariff, or with overlapping ones, are rejected with the reason, never guessed."""
    window = context.partition_time_window
    label = common.partition_label(context)
    tariff_frame = lake.read(TARIFFS)
    holiday_frame = lake.read(HOLIDAYS)
    if tariff_frame.height == 0:
        raise dg.Failure(f"markets/energy_price_steps {label}: no tariffs in the lake; materialize markets/tariffs.")
    _require_holidays(holiday_frame, window.start, window.end, label)
    priced, rejects = price_steps(window.start, window.end, tariff_frame, holiday_frame, partition_key=label)
    windows = time_windows(price_days, window.start, window.end)
    written = lake.replace_partitions(ENERGY_PRICE_STEPS, priced, windows)
    lake.replace_partitions(rejects_table(ENERGY_PRICE_STEPS), rejects, windows)
    if rejects.height:
        context.log.warning(f"markets: {rejects.height} steps not priced, e.g. {rejects['reason'][0]}")
    frame = written.frame
    periods = dict(frame.group_by("period").len().iter_rows())
    return dg.MaterializeResult(
        metadata={
            "steps_expected": int((window.end - window.start) / timedelta(minutes=STEP_MINUTES)),
            "rows_written": written.rows,
            "rows_rejected": rejects.height,
            "dagster/row_count": written.rows,
            "on_peak_steps": int(periods.get("on_peak", 0)),
            "off_peak_steps": int(periods.get("off_peak", 0)),
            "tariffs_used": ", ".join(sorted(frame["tariff_id"].unique().to_list())) or "none",
            "mean_energy_thb_per_kwh": round(float(frame["energy_thb_per_kwh"].mean() or 0.0), 4),
            "preview": common.preview(frame),
        }
    )


def price_steps(
    start: datetime, end: datetime, tariffs: pl.DataFrame, holidays: pl.DataFrame, *, partition_key: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(priced steps, rejected steps) for the 15-minute steps in ``[start, end)`` UTC."""
    steps = pl.DataFrame(
        {
            "step_start": pl.datetime_range(
                start, end, interval=f"{STEP_MINUTES}m", closed="left", time_unit="us", time_zone="UTC", eager=True
            )
        }
    ).with_row_index("row_number")
    local = pl.col("step_start").dt.convert_time_zone(TARIFF_TIMEZONE)
    steps = steps.with_columns(
        local_date=local.dt.date(),
        local_minute=local.dt.hour().cast(pl.Int64) * 60 + local.dt.minute().cast(pl.Int64),
        weekday=local.dt.weekday(),  # 1 = Monday … 7 = Sunday
    ).join(holidays.select(pl.col("date").alias("local_date"), pl.col("name").alias("holiday")), "local_date", "left")

    def minutes(column: str) -> pl.Expr:
        parts = pl.col(column).str.extract_groups(r"^(\d{2}):(\d{2})$")
        return parts.struct[0].cast(pl.Int64) * 60 + parts.struct[1].cast(pl.Int64)

    versions = tariffs.with_columns(peak_from=minutes("on_peak_start_local"), peak_to=minutes("on_peak_end_local"))
    valid = steps.join(versions, how="cross").filter(
        (pl.col("valid_from") <= pl.col("step_start"))
        & (pl.col("valid_to").is_null() | (pl.col("step_start") < pl.col("valid_to")))
    )
    found = valid.group_by("row_number").agg(pl.col("tariff_id").sort().alias("tariffs"))
    steps = steps.join(found, "row_number", "left").with_columns(pl.col("tariffs").fill_null([]))
    single = steps.filter(pl.col("tariffs").list.len() == 1).select("row_number")
    chosen = valid.join(single, "row_number", "semi")
    unreadable = chosen.filter(pl.col("peak_from").is_null() | pl.col("peak_to").is_null())

    on_peak = (
        (pl.col("weekday") <= 5)
        & pl.col("holiday").is_null()
        & (pl.col("local_minute") >= pl.col("peak_from"))
        & (pl.col("local_minute") < pl.col("peak_to"))
    )
    priced = chosen.join(unreadable, "row_number", "anti").with_columns(
        step_minutes=pl.lit(STEP_MINUTES, pl.Int64),
        period=pl.when(on_peak).then(pl.lit("on_peak")).otherwise(pl.lit("off_peak")),
        energy_thb_per_kwh=(
            pl.when(on_peak).then(pl.col("energy_on_peak_thb_per_kwh")).otherwise(pl.col("energy_off_peak_thb_per_kwh"))
            + pl.col("ft_thb_per_kwh")
        ).round(4),
        demand_charge_applies=on_peak,
    )

    problems: list[dict] = []
    for row in steps.filter(pl.col("tariffs").list.len() != 1).iter_rows(named=True):
        ids = row["tariffs"]
        reason = (
            f"no tariff version is valid at {row['step_start']:%Y-%m-%dT%H:%M}Z"
            if not ids
            else f"tariff versions {', '.join(ids)} have overlapping validity at {row['step_start']:%Y-%m-%dT%H:%M}Z; "
            "the publisher must close one"
        )
        problems.append({**row, "reason": reason})
    for row in unreadable.iter_rows(named=True):
        reason = (
            f"tariff {row['tariff_id']} gives on-peak hours {row['on_peak_start_local']!r}–"
            f"{row['on_peak_end_local']!r}, not HH:MM"
        )
        problems.append({**row, "tariffs": [row["tariff_id"]], "reason": reason})
    rejects = pl.DataFrame(
        {
            "source": [SOURCE] * len(problems),
            "table_name": [ENERGY_PRICE_STEPS.name] * len(problems),
            "partition_key": [partition_key] * len(problems),
            "row_number": [int(p["row_number"]) for p in problems],
            "field": ["tariff_id"] * len(problems),
            "reason": [p["reason"] for p in problems],
            "raw_payload": [
                json.dumps({"step_start": p["step_start"].isoformat(), "tariff_ids": p["tariffs"]}) for p in problems
            ],
            "partition_start": [p["step_start"].replace(hour=0, minute=0, second=0, microsecond=0) for p in problems],
        },
        schema=rejects_table(ENERGY_PRICE_STEPS).schema,
    )
    return ENERGY_PRICE_STEPS.conform(priced), rejects_table(ENERGY_PRICE_STEPS).conform(rejects)


def _require_holidays(holidays: pl.DataFrame, start: datetime, end: datetime, label: str) -> None:
    """Fail when a local year the steps touch has no holidays: pricing it would call every holiday on-peak."""
    first = start.astimezone(_zone()).year
    last = (end - timedelta(microseconds=1)).astimezone(_zone()).year
    known = set(holidays["date"].dt.year().to_list())
    missing = [year for year in range(first, last + 1) if year not in known]
    if missing:
        raise dg.Failure(
            f"markets/energy_price_steps {label}: no public holidays known for {missing}; the calendar is not "
            "published yet or markets/holidays has not run."
        )


def _zone():
    from zoneinfo import ZoneInfo

    return ZoneInfo(TARIFF_TIMEZONE)


# ---------------------------------------------------------------------------------------- prices


def _dates(context: dg.AssetExecutionContext) -> tuple[date, date]:
    window = context.partition_time_window
    return window.start.astimezone(UTC).date(), window.end.astimezone(UTC).date()


def _land(
    context: dg.AssetExecutionContext,
    lake: Lake,
    table: LakeTable,
    partitions_def: dg.TimeWindowPartitionsDefinition,
    rows: list[dict[str, Any]],
    screen: Callable[[dict[str, Any]], tuple[str, str] | None] | None = None,
) -> tuple[Conformed, pl.DataFrame]:
    """Conform the rows of the run's partitions (``screen`` may reject a row before typing, with its field
    and reason), write them and their rejects partition by partition; returns the load and what landed."""
    window = context.partition_time_window
    windows = time_windows(partitions_def, window.start, window.end)
    label = common.partition_label(context)
    loaded = _conform_screened(rows, table, label, windows, screen)
    written = lake.replace_partitions(table, loaded.frame, windows)
    lake.replace_partitions(rejects_table(table), loaded.rejects, windows)
    if loaded.rejected:
        context.log.warning(
            f"markets: {loaded.rejected} rows of {table.name} rejected, e.g. {loaded.rejects['reason'][0]}"
        )
    return loaded, written.frame


@dg.asset(
    name="fuel_prices",
    kinds={"http", "parquet"},
    partitions_def=weeks,
    backfill_policy=dg.BackfillPolicy.single_run(),
    **_common(FUEL_PRICES, timedelta(days=8)),
)
def fuel_prices(context: dg.AssetExecutionContext, markets: MarketsClient, lake: Lake) -> dg.MaterializeResult:
    """Weekly fuel prices, one row per week starting Monday (UTC weeks): diesel in USD per litre and Brent
    crude in USD per barrel, as published. A row dated on another day than a Monday is rejected."""
    start, end = _dates(context)
    rows = common.fetch(context, SOURCE, "fuel prices", lambda: markets.fuel_prices(start, end))
    loaded, frame = _land(context, lake, FUEL_PRICES, weeks, rows, _not_a_monday)
    return dg.MaterializeResult(
        metadata={
            **common.reconciliation(loaded),
            "weeks": frame.height,
            "mean_diesel_usd_per_l": _mean(frame, "diesel_usd_per_l", 3),
            "mean_brent_usd_per_bbl": _mean(frame, "brent_usd_per_bbl", 2),
            "preview": common.preview(frame),
        }
    )


@dg.asset(
    name="exchange_rates",
    kinds={"http", "parquet"},
    partitions_def=days,
    backfill_policy=dg.BackfillPolicy.single_run(),
    **_common(EXCHANGE_RATES, timedelta(days=2)),
)
def exchange_rates(context: dg.AssetExecutionContext, markets: MarketsClient, lake: Lake) -> dg.MaterializeResult:
    """Reference exchange rates USD→THB and USD→INR of each day, with the publisher's date. Weekends and
    public holidays have none (an empty partition): prices on those days are converted with the last rate
    fixed before them. Kept as sent; a rate outside its plausible band fails the blocking check."""
    start, end = _dates(context)
    rows = common.fetch(context, SOURCE, "exchange rates", lambda: markets.exchange_rates(start, end))
    loaded, frame = _land(context, lake, EXCHANGE_RATES, days, rows)
    implausible = [
        problem
        for base, quote, rate in frame.select("base", "quote", "rate").iter_rows()
        if (problem := implausible_rate(base, quote, rate))
    ]
    for problem in implausible[:5]:
        context.log.warning(f"markets: {problem}")
    latest = frame.sort("rate_date").group_by("base", "quote", maintain_order=True).last()
    return dg.MaterializeResult(
        metadata={
            **common.reconciliation(loaded),
            "days_with_rates": frame["rate_date"].n_unique(),
            "implausible_rates": len(implausible),
            **{f"{b}/{q}": r for b, q, r in latest.select("base", "quote", "rate").iter_rows()},
            "preview": common.preview(frame),
        }
    )


@dg.asset(
    name="cement_prices",
    kinds={"http", "parquet"},
    partitions_def=days,
    backfill_policy=dg.BackfillPolicy.single_run(),
    **_common(CEMENT_PRICES, timedelta(days=2)),
)
def cement_prices(context: dg.AssetExecutionContext, markets: MarketsClient, lake: Lake) -> dg.MaterializeResult:
    """Dealer price of cement per city of the plant network and grade, per bag (50 kg) in the currency
    the survey sent (INR), every day, as sent."""
    start, end = _dates(context)
    rows = common.fetch(context, SOURCE, "cement prices", lambda: markets.cement_prices(start, end))
    loaded, frame = _land(context, lake, CEMENT_PRICES, days, rows)
    return dg.MaterializeResult(
        metadata={
            **common.reconciliation(loaded),
            "cities": frame["city"].n_unique(),
            "grades": ", ".join(sorted(frame["grade"].unique().to_list())) or "none",
            "mean_price_per_bag": _mean(frame, "price_per_bag", 2),
            "preview": common.preview(frame),
        }
    )


@dg.asset(
    name="cement_market_prices",
    kinds={"polars", "parquet"},
    partitions_def=days,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[cement_prices, exchange_rates],
    **_common(CEMENT_MARKET_PRICES, timedelta(days=2)),
)
def cement_market_prices(context: dg.AssetExecutionContext, lake: Lake) -> dg.MaterializeResult:
    """Cement prices per city and grade per tonne, in the source currency (INR) and converted to USD with
    the latest USD rate fixed on or before the price date (its date kept beside it): price_usd_per_tonne =
    price_per_bag × 1000 / bag_kg / rate. A price with no rate in the 7 days before it, an implausible rate
    or a price not above 0 is rejected with the reason, never converted."""
    window = context.partition_time_window
    prices = lake.read(CEMENT_PRICES, window.start, window.end)
    rates = lake.read(EXCHANGE_RATES, window.start - timedelta(days=FX_MAX_AGE_DAYS), window.end)
    converted, rejects = convert_prices(prices, rates, partition_key=common.partition_label(context))
    windows = time_windows(days, window.start, window.end)
    written = lake.replace_partitions(CEMENT_MARKET_PRICES, converted, windows)
    lake.replace_partitions(rejects_table(CEMENT_MARKET_PRICES), rejects, windows)
    if rejects.height:
        context.log.warning(f"markets: {rejects.height} cement prices not converted, e.g. {rejects['reason'][0]}")
    frame = written.frame
    return dg.MaterializeResult(
        metadata={
            "rows_received": prices.height,
            "rows_written": written.rows,
            "rows_rejected": rejects.height,
            "dagster/row_count": written.rows,
            "rate_dates_used": ", ".join(sorted({f"{d}" for d in frame["fx_rate_date"]})) or "none",
            "mean_price_usd_per_tonne": _mean(frame, "price_usd_per_tonne", 2),
            "preview": common.preview(frame),
        }
    )


@dg.asset(
    name="road_freight_costs",
    kinds={"polars", "parquet"},
    partitions_def=weeks,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[fuel_prices, exchange_rates],
    **_common(ROAD_FREIGHT_COSTS, timedelta(days=8)),
)
def road_freight_costs(
    context: dg.AssetExecutionContext, lake: Lake, freight_model: FreightModelResource
) -> dg.MaterializeResult:
    """Road freight cost per tonne-km of each week, the figure the supply plan reads for road legs:
    (fixed INR per km + litres per km × diesel INR per litre) / payload, with the model's parameters from
    its YAML (resources/markets_freight_model.yaml), the week's diesel price (USD/l) and the USD/INR rate
    fixed last before the week starts. A week without a plausible diesel price or rate is rejected."""
    model = freight_model.model()
    window = context.partition_time_window
    fuel = lake.read(FUEL_PRICES, window.start, window.end)
    rates = lake.read(EXCHANGE_RATES, window.start - timedelta(days=model.max_fx_age_days), window.end)
    windows = time_windows(weeks, window.start, window.end)
    costs, rejects = freight_costs(
        [w.start.astimezone(UTC).date() for w in windows],
        fuel,
        rates,
        model,
        partition_key=common.partition_label(context),
    )
    written = lake.replace_partitions(ROAD_FREIGHT_COSTS, costs, windows)
    lake.replace_partitions(rejects_table(ROAD_FREIGHT_COSTS), rejects, windows)
    if rejects.height:
        context.log.warning(f"markets: {rejects.height} weeks not costed, e.g. {rejects['reason'][0]}")
    frame = written.frame
    return dg.MaterializeResult(
        metadata={
            "weeks_expected": len(windows),
            "rows_received": len(windows),
            "rows_written": written.rows,
            "rows_rejected": rejects.height,
            "dagster/row_count": written.rows,
            "model": model.name,
            "mean_freight_inr_per_tonne_km": _mean(frame, "freight_inr_per_tonne_km", 4),
            "preview": common.preview(frame),
        }
    )


def convert_prices(
    prices: pl.DataFrame, rates: pl.DataFrame, *, partition_key: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(converted prices, rejects): each price with the latest USD rate to its currency dated on or before
    it, at most FX_MAX_AGE_DAYS old."""
    usd = (
        rates.filter(pl.col("base") == "USD")
        .select(pl.col("quote").alias("currency"), "rate_date", "rate")
        .sort("rate_date")
    )
    joined = (
        prices.with_row_index("row_number")
        .sort("price_date")
        # Both sides are sorted by date just above; polars cannot verify that within the currency groups.
        .join_asof(
            usd, left_on="price_date", right_on="rate_date", by="currency", strategy="backward", check_sortedness=False
        )
        .sort("row_number")
    )
    good: list[dict[str, Any]] = []
    problems: list[tuple[dict[str, Any], str, str]] = []
    for row in joined.iter_rows(named=True):
        day, currency = row["price_date"], row["currency"]
        if row["price_per_bag"] <= 0:
            problems.append((row, "price_per_bag", f"price {row['price_per_bag']:g} {currency} per bag is not above 0"))
        elif row["rate_date"] is None or (day - row["rate_date"]).days > FX_MAX_AGE_DAYS:
            last = f"; the last was fixed on {row['rate_date']}" if row["rate_date"] is not None else ""
            problems.append(
                (row, "fx_rate", f"no USD/{currency} rate fixed in the {FX_MAX_AGE_DAYS} days up to {day}{last}")
            )
        elif problem := implausible_rate("USD", currency, row["rate"]):
            problems.append((row, "fx_rate", f"not converted: the rate fixed on {row['rate_date']}: {problem}"))
        else:
            per_tonne = row["price_per_bag"] * 1000.0 / row["bag_kg"]
            good.append(
                {
                    "price_date": day,
                    "city": row["city"],
                    "grade": row["grade"],
                    "source_price_per_bag": row["price_per_bag"],
                    "bag_kg": row["bag_kg"],
                    "source_currency": currency,
                    "source_price_per_tonne": round(per_tonne, 2),
                    "price_usd_per_tonne": round(per_tonne / row["rate"], 2),
                    "fx_rate_per_usd": row["rate"],
                    "fx_rate_date": row["rate_date"],
                }
            )
    rejects = _rejects(
        CEMENT_MARKET_PRICES,
        partition_key,
        [
            (int(row["row_number"]), field, reason, _payload(row, CEMENT_PRICES.column_names), row["price_date"])
            for row, field, reason in problems
        ],
    )
    converted = pl.DataFrame(good, schema=CEMENT_MARKET_PRICES.schema) if good else CEMENT_MARKET_PRICES.empty()
    return CEMENT_MARKET_PRICES.conform(converted), rejects


def freight_costs(
    week_starts: list[date], fuel: pl.DataFrame, rates: pl.DataFrame, model: Any, *, partition_key: str
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(costs, rejects) for each week: the model applied to the week's diesel price and the USD/INR rate
    fixed last before the week starts (at most ``model.max_fx_age_days`` before it)."""
    diesel = dict(fuel.select("week_start", "diesel_usd_per_l").iter_rows())
    inr = rates.filter((pl.col("base") == "USD") & (pl.col("quote") == "INR")).sort("rate_date")
    good: list[dict[str, Any]] = []
    problems: list[tuple[int, str, str, str, date]] = []
    for number, week in enumerate(week_starts):
        before = inr.filter(
            (pl.col("rate_date") < week) & (pl.col("rate_date") >= week - timedelta(days=model.max_fx_age_days))
        )
        price = diesel.get(week)
        inputs = {"week_start": week.isoformat(), "diesel_usd_per_l": price, "model": model.name}
        if price is None:
            reason = f"no diesel price for the week starting {week}; materialize markets/fuel_prices for it"
            problems.append((number, "diesel_usd_per_l", reason, json.dumps(inputs), week))
            continue
        if problem := implausible_diesel(price):
            problems.append((number, "diesel_usd_per_l", f"not costed: {problem}", json.dumps(inputs), week))
            continue
        if before.height == 0:
            reason = (
                f"no USD/INR rate fixed in the {model.max_fx_age_days} days before the week starting {week}; "
                "materialize markets/exchange_rates for them"
            )
            problems.append((number, "usd_inr_rate", reason, json.dumps(inputs), week))
            continue
        rate_date, rate = before.select("rate_date", "rate").row(-1)
        inputs.update(usd_inr_rate=rate, usd_inr_rate_date=rate_date.isoformat())
        if problem := implausible_rate("USD", "INR", rate):
            reason = f"not costed: the rate fixed on {rate_date}: {problem}"
            problems.append((number, "usd_inr_rate", reason, json.dumps(inputs), week))
            continue
        diesel_inr = price * rate
        fuel_part = model.fuel_inr_per_tonne_km(diesel_inr)
        good.append(
            {
                "week_start": week,
                "freight_inr_per_tonne_km": round(model.fixed_inr_per_tonne_km + fuel_part, 4),
                "fuel_inr_per_tonne_km": round(fuel_part, 4),
                "fixed_inr_per_tonne_km": round(model.fixed_inr_per_tonne_km, 4),
                "diesel_usd_per_l": price,
                "usd_inr_rate": rate,
                "usd_inr_rate_date": rate_date,
                "diesel_inr_per_l": round(diesel_inr, 4),
                "fuel_l_per_km": model.fuel_l_per_km,
                "payload_t": model.payload_t,
                "model": model.name,
            }
        )
    costs = pl.DataFrame(good, schema=ROAD_FREIGHT_COSTS.schema) if good else ROAD_FREIGHT_COSTS.empty()
    return ROAD_FREIGHT_COSTS.conform(costs), _rejects(ROAD_FREIGHT_COSTS, partition_key, problems)


# ---------------------------------------------------------------------------------------------- helpers


def _not_a_monday(row: dict[str, Any]) -> tuple[str, str] | None:
    try:
        day = date.fromisoformat(str(row.get("week_start")))
    except ValueError:
        return None  # conform words the reason for an unreadable date
    if day.weekday() != 0:
        return "week_start", f"week_start {day} is a {day:%A}; price weeks start on Monday"
    return None


def _conform_screened(
    rows: list[dict[str, Any]],
    table: LakeTable,
    label: str,
    windows: list[dg.TimeWindow],
    screen: Callable[[dict[str, Any]], tuple[str, str] | None] | None,
) -> Conformed:
    """``conform``, after ``screen`` set aside the rows it refuses (numbered by their place in what was sent)."""
    refused = {i: found for i, row in enumerate(rows) if screen and isinstance(row, dict) and (found := screen(row))}
    kept = [i for i in range(len(rows)) if i not in refused]
    loaded = conform([rows[i] for i in kept], table, source=SOURCE, partition_key=label, partitions=windows)
    if not refused:
        return loaded
    renumbered = loaded.rejects.with_columns(
        pl.col("row_number").replace_strict(dict(enumerate(kept)), return_dtype=pl.Int64)
    )
    screened = _rejects(
        table,
        label,
        [
            (i, field, reason, json.dumps(rows[i], sort_keys=True, default=str), _filed_under(rows[i], table, windows))
            for i, (field, reason) in refused.items()
        ],
    )
    return Conformed(
        frame=loaded.frame, rejects=pl.concat([renumbered, screened]).sort("row_number"), received=len(rows)
    )


def _filed_under(row: dict[str, Any], table: LakeTable, windows: list[dg.TimeWindow]) -> datetime:
    try:
        day = date.fromisoformat(str(row.get(table.time_column)))
        when = datetime(day.year, day.month, day.day, tzinfo=UTC)
    except ValueError:
        return windows[0].start
    return next((w.start for w in windows if w.start <= when < w.end), windows[0].start)


def _rejects(table: LakeTable, partition_key: str, problems: list[tuple[int, str, str, str, Any]]) -> pl.DataFrame:
    """A rejects frame from (row_number, field, reason, raw payload JSON, the row's date or time)."""

    def start_of(value: Any) -> datetime | None:
        if isinstance(value, datetime):
            return value
        if isinstance(value, date):
            return datetime(value.year, value.month, value.day, tzinfo=UTC)
        return None

    frame = pl.DataFrame(
        {
            "source": [SOURCE] * len(problems),
            "table_name": [table.name] * len(problems),
            "partition_key": [partition_key] * len(problems),
            "row_number": [p[0] for p in problems],
            "field": [p[1] for p in problems],
            "reason": [p[2] for p in problems],
            "raw_payload": [p[3] for p in problems],
            "partition_start": [start_of(p[4]) for p in problems],
        },
        schema=rejects_table(table).schema,
    )
    return rejects_table(table).conform(frame)


def _payload(row: dict[str, Any], columns: list[str]) -> str:
    return json.dumps({c: row.get(c) for c in columns}, sort_keys=True, default=str)


def _mean(frame: pl.DataFrame, column: str, digits: int) -> float | str:
    return round(float(frame[column].mean()), digits) if frame.height else "none"
