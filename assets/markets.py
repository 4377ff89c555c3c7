"""Markets and energy: electricity tariff versions and public holidays, landed raw, and the price of
energy for every 15-minute step, derived from them (the table the pump scheduling model reads).

The tariff is data with a validity period, never a constant in code: each step is priced with the one
version valid at its start. A step where no version, or more than one, is valid is not priced: it goes to
the rejects table with the reason, so overlapping validity periods are never resolved silently.
"""

import json
from datetime import datetime, timedelta

import dagster as dg
import polars as pl

from assets import source_assets as common
from assets.partitions import HISTORY_START
from contracts.markets import ENERGY_PRICE_STEPS, HOLIDAYS, STEP_MINUTES, TARIFF_TIMEZONE, TARIFFS
from quality.conform import conform, rejects_table
from quality.markets import overlapping_tariffs
from resources.lake import Lake, LakeTable, time_windows
from resources.markets import MarketsClient

SOURCE = "markets"

# Days ahead that can be priced: a published tariff prices the future too, and the pump plan looks a
# week ahead. end_offset makes today and the next PRICE_DAYS_AHEAD UTC days partitions.
PRICE_DAYS_AHEAD = 7
price_days = dg.DailyPartitionsDefinition(start_date=HISTORY_START, end_offset=1 + PRICE_DAYS_AHEAD)


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
