"""Tomorrow's pump schedule from the lake: demand forecast, tariff, starting state, plan, and how good the forecast was.

One line in the asset graph from a Modbus register and a tariff to a pump schedule:

- ``plans/pump_demand_forecast`` — water each tank will supply per 15-minute step of the schedule day: the
  mean DMAMA inflow of the tank's DMAs at that time of day over the last four weeks, weekdays and weekends
  apart, scaled by the weather forecast's temperature (``DEMAND_PER_DEGREE`` per °C above the history's
  reference). Deliberately simple; ``plans/pump_forecast_error`` says how far off it was once the day is in.
- ``plans/pump_initial_state`` — each tank's level and each pump's state at the start of the day, from the
  latest SCADA points before it (the points the station's YAML names), with how long each pump has been in
  that state (minimum run and rest times carry over midnight).
- ``plans/pump_schedule`` — the MILP (optimization/pump.py) on those inputs and the day's
  ``markets/energy_price_steps``: schedule, tank trajectories and costs against the operators' level rule,
  with plots. Scenarios (tariff, demand uplift, pumps out of service, solver) come as run config and are
  kept side by side under their name. It refuses to run when a blocking check on its inputs failed.

Partitions are schedule days (UTC), as the price steps are.
"""

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
from pydantic import Field

from assets.lake_tables import lake_metadata
from assets.partitions import HISTORY_START
from assets.upstream_checks import require_upstream_checks
from contracts.dmama import FLOW_READINGS, FLOW_READINGS_KEY
from contracts.markets import ENERGY_PRICE_STEPS, ENERGY_PRICE_STEPS_KEY
from contracts.scada import SCADA_POINTS, SCADA_POINTS_KEY, UTC_TIME
from contracts.weather import FORECASTS, FORECASTS_KEY
from resources.lake import Column, Lake, LakeTable, time_windows

GROUP = "plans"
STEP = timedelta(minutes=15)
STEPS_PER_DAY = 96
HISTORY_DAYS = 28
DEMAND_PER_DEGREE = 0.015  # +1.5 % demand per °C warmer than the reference (a planning assumption)
# Asia/Bangkok: the day's shape and weekends are local. As optimization/pump.py has it, not imported from
# there: that would load the solver stack (scipy) with the definitions.
LOCAL_OFFSET = timedelta(hours=7)
STATE_LOOKBACK = timedelta(hours=24)  # SCADA points older than this do not start a plan
# Schedule days: one more than the price steps' today, so tomorrow can be planned this evening.
schedule_days = dg.DailyPartitionsDefinition(start_date=HISTORY_START, end_offset=2)


class PumpScenario(dg.Config):
    """A plan's scenario: the station, what to change in the inputs, and how to solve."""

    station: str = Field(default="PS01", description="Station of optimization/stations.yaml.")
    scenario: str = Field(default="base", description="Name the results are kept under, side by side.")
    tariff_multiplier: float = Field(default=1.0, gt=0, description="Every step's energy price × this.")
    tariff_override_thb_per_kwh: list[float] | None = Field(
        default=None, description="96 prices (THB/kWh) replacing the day's tariff steps."
    )
    demand_uplift_pct: float = Field(default=0.0, ge=-90, le=300, description="Forecast demand + this %.")
    pumps_out_of_service: list[str] = Field(default_factory=list, description="Pump ids unavailable all day.")
    solver: str = Field(default="highs", description="highs or cbc.")
    time_limit_s: float = Field(default=60.0, gt=0)
    mip_rel_gap: float = Field(default=1e-3, ge=0, lt=1)


def _key(name: str) -> dg.AssetKey:
    return dg.AssetKey([GROUP, name])


def _t(name: str, description: str, columns: Sequence[Column], key: Sequence[str], time_column: str) -> LakeTable:
    return LakeTable(
        layer="marts",
        name=name,
        description=description,
        columns=tuple(columns),
        key=tuple(key),
        time_column=time_column,
    )


_STATION = Column("station_id", pl.String(), "Pump station (optimization/stations.yaml).", nullable=False)
_SCENARIO = Column(
    "scenario", pl.String(), "Scenario the plan was computed under (base unless overridden).", nullable=False
)
_STEP = Column("step_start", UTC_TIME, "Start of the 15-minute step, UTC.", nullable=False)

DEMAND_FORECAST = _t(
    "pump_demand_forecast",
    "Forecast water drawn from each tank per 15-minute step: the tank's DMAs' mean inflow at that local time "
    "over the last 28 days (weekdays and weekends apart), scaled by the forecast temperature.",
    [
        _STATION,
        Column("tank_id", pl.String(), "Tank the DMAs draw from.", nullable=False),
        _STEP,
        Column("demand_m3h", pl.Float64(), "Forecast demand on the tank, m³/h.", nullable=False),
        Column("profile_m3h", pl.Float64(), "Same-day-type mean inflow at this time of day, m³/h.", nullable=False),
        Column("temperature_c", pl.Float64(), "Forecast air temperature at the DMAs (mean), °C; empty without one."),
        Column(
            "temperature_factor",
            pl.Float64(),
            "Demand multiplier from the temperature (1 without forecast).",
            nullable=False,
        ),
        Column("history_days", pl.Int64(), "Days of history the profile value averages.", nullable=False),
    ],
    ["station_id", "tank_id", "step_start"],
    "step_start",
)
INITIAL_STATE = _t(
    "pump_initial_state",
    "Tank levels and pump states a schedule day starts from: the latest SCADA point of each before the day.",
    [
        _STATION,
        Column("plan_start", UTC_TIME, "Start of the schedule day, UTC.", nullable=False),
        Column("kind", pl.String(), "tank or pump.", nullable=False),
        Column("asset_id", pl.String(), "Tank or pump id in the station.", nullable=False),
        Column("unit_id", pl.String(), "SCADA unit of the point.", nullable=False),
        Column("sensor_type", pl.String(), "SCADA sensor type of the point (level, pump_status).", nullable=False),
        Column("value", pl.Float64(), "Level in m, or 1 running / 0 stopped.", nullable=False),
        Column("source_ts", UTC_TIME, "When the device measured it, UTC.", nullable=False),
        Column("steps_in_state", pl.Int64(), "Pumps: 15-minute steps already spent in this state (seen in SCADA)."),
    ],
    ["station_id", "plan_start", "kind", "asset_id"],
    "plan_start",
)
SCHEDULE = _t(
    "pump_schedule",
    "The pump schedule: per station, scenario, pump and 15-minute step, on/off, flow, power, energy and cost.",
    [
        _STATION,
        _SCENARIO,
        Column("pump_id", pl.String(), "Pump.", nullable=False),
        Column("step", pl.Int64(), "Step number in the day, 0–95.", nullable=False),
        _STEP,
        Column("on", pl.Boolean(), "Whether the pump runs in the step.", nullable=False),
        Column("flow_m3h", pl.Float64(), "Flow at its duty point when on, m³/h.", nullable=False),
        Column("power_kw", pl.Float64(), "Electrical power when on, kW.", nullable=False),
        Column("energy_kwh", pl.Float64(), "Energy in the step, kWh.", nullable=False),
        Column("cost_thb", pl.Float64(), "Energy cost of the step, THB (demand charge not spread).", nullable=False),
    ],
    ["station_id", "scenario", "pump_id", "step_start"],
    "step_start",
)
TRAJECTORIES = _t(
    "pump_tank_trajectories",
    "Planned tank levels at the end of each step, with the baseline's, the band, demand and bulk supply.",
    [
        _STATION,
        _SCENARIO,
        Column("tank_id", pl.String(), "Tank.", nullable=False),
        Column("step", pl.Int64(), "Step number in the day, 0–95.", nullable=False),
        _STEP,
        Column("level_end_m", pl.Float64(), "Planned level at the end of the step, m."),
        Column("baseline_level_end_m", pl.Float64(), "Level under the operators' level rule, m.", nullable=False),
        Column("min_level_m", pl.Float64(), "Lowest level allowed, m.", nullable=False),
        Column("max_level_m", pl.Float64(), "Highest level allowed, m.", nullable=False),
        Column("demand_m3h", pl.Float64(), "Demand on the tank (forecast, scenario applied), m³/h.", nullable=False),
        Column("supply_m3h", pl.Float64(), "Planned inflow from the bulk main, m³/h."),
    ],
    ["station_id", "scenario", "tank_id", "step_start"],
    "step_start",
)
COSTS = _t(
    "pump_plan_costs",
    "One row per station, day and scenario: solver status and gap, plan and baseline cost, the saving.",
    [
        _STATION,
        _SCENARIO,
        Column("day_start", UTC_TIME, "Start of the schedule day, UTC.", nullable=False),
        Column("status", pl.String(), "optimal, feasible (time limit: see gap), infeasible, …", nullable=False),
        Column("gap_pct", pl.Float64(), "Relative MIP gap reached, %."),
        Column("plan_cost_thb", pl.Float64(), "Energy plus on-peak demand charge of the plan, THB."),
        Column("plan_energy_thb", pl.Float64(), "Energy part of the plan's cost, THB."),
        Column("plan_demand_charge_thb", pl.Float64(), "Demand charge part, THB."),
        Column("baseline_cost_thb", pl.Float64(), "Same for the operators' level rule, THB.", nullable=False),
        Column(
            "baseline_end_water_thb",
            pl.Float64(),
            "Energy (THB, cheapest price) to bring the baseline's end levels to the plan's; added before the saving.",
        ),
        Column("saving_thb", pl.Float64(), "Baseline minus plan, THB."),
        Column("saving_pct", pl.Float64(), "Saving as % of the baseline."),
        Column("why_no_plan", pl.String(), "When infeasible: which requirement fails, in the planner's words."),
        Column("plots_dir", pl.String(), "Where the PNG plots of the plan are."),
    ],
    ["station_id", "scenario", "day_start"],
    "day_start",
)
FORECAST_ERROR = _t(
    "pump_forecast_error",
    "How far the demand forecast of a day was from the DMAMA inflow that then happened, per station and tank.",
    [
        _STATION,
        Column("tank_id", pl.String(), "Tank.", nullable=False),
        Column("day_start", UTC_TIME, "Start of the day forecast, UTC.", nullable=False),
        Column("steps_compared", pl.Int64(), "Steps with both a forecast and a complete actual.", nullable=False),
        Column("forecast_m3", pl.Float64(), "Forecast volume over those steps, m³.", nullable=False),
        Column("actual_m3", pl.Float64(), "Actual volume over those steps, m³.", nullable=False),
        Column("mae_m3h", pl.Float64(), "Mean absolute error, m³/h."),
        Column("bias_m3h", pl.Float64(), "Mean of forecast − actual, m³/h (positive: over-forecast)."),
        Column("mape_pct", pl.Float64(), "Mean absolute percentage error, %."),
    ],
    ["station_id", "tank_id", "day_start"],
    "day_start",
)


# ---------------------------------------------------------------------------------------------- pure parts


def _day_start(day: date | str) -> datetime:
    day = date.fromisoformat(day) if isinstance(day, str) else day
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def _tank_flows(flows: pl.DataFrame, dmas: Sequence[str]) -> pl.DataFrame:
    """The tank's demand as the sum of its DMAs' inflow per 15-minute timestamp (only complete timestamps)."""
    return (
        flows.filter(pl.col("dma_id").is_in(list(dmas)))
        .group_by("timestamp")
        .agg(pl.col("flow_m3h").sum(), pl.col("dma_id").n_unique().alias("dmas"))
        .filter(pl.col("dmas") == len(dmas))
        .select("timestamp", "flow_m3h")
        .sort("timestamp")
    )


def _local(frame: pl.DataFrame, column: str) -> pl.DataFrame:
    local = pl.col(column) + LOCAL_OFFSET
    return frame.with_columns(
        slot=(local.dt.hour() * 4 + local.dt.minute() // 15).cast(pl.Int64),
        weekend=local.dt.weekday() >= 6,
    )


def forecast_demand(station, day: date | str, flows: pl.DataFrame, weather: pl.DataFrame | None = None) -> pl.DataFrame:
    """The demand forecast of every tank of `station` for `day` (rows of DEMAND_FORECAST)."""
    start = _day_start(day)
    steps = pl.DataFrame({"step_start": [start + STEP * t for t in range(STEPS_PER_DAY)]}).with_columns(
        pl.col("step_start").cast(UTC_TIME)
    )
    steps = _local(steps, "step_start")
    temps = _temperatures(station, start, weather)
    frames = []
    for tank in station.tanks:
        if not tank.dmas:
            frames.append(
                steps.select(
                    pl.lit(station.id).alias("station_id"),
                    pl.lit(tank.id).alias("tank_id"),
                    "step_start",
                    pl.lit(0.0).alias("demand_m3h"),
                    pl.lit(0.0).alias("profile_m3h"),
                    pl.lit(None, pl.Float64).alias("temperature_c"),
                    pl.lit(1.0).alias("temperature_factor"),
                    pl.lit(0, pl.Int64).alias("history_days"),
                )
            )
            continue
        history = _local(_tank_flows(flows, tank.dmas), "timestamp")
        history = history.filter(
            (pl.col("timestamp") >= start - timedelta(days=HISTORY_DAYS)) & (pl.col("timestamp") < start)
        )
        if history.height == 0:
            raise ValueError(
                f"station {station.id}, tank {tank.id}: no complete DMAMA inflow of DMAs {list(tank.dmas)} in the "
                f"{HISTORY_DAYS} days before {start:%Y-%m-%d}; materialize dmama/flow_readings for them"
            )
        by_type = history.group_by("weekend", "slot").agg(
            pl.col("flow_m3h").mean().alias("typed"), pl.len().alias("typed_days")
        )
        any_day = history.group_by("slot").agg(pl.col("flow_m3h").mean().alias("all"), pl.len().alias("all_days"))
        profile = (
            steps.join(by_type, on=["weekend", "slot"], how="left")
            .join(any_day, on="slot", how="left")
            .with_columns(
                # A weekend slot not seen yet (a short history) falls back to the mean over all days.
                profile_m3h=pl.coalesce("typed", "all"),
                history_days=pl.coalesce("typed_days", "all_days").cast(pl.Int64),
            )
        )
        profile = profile.sort("step_start")
        values = profile["profile_m3h"].to_numpy().astype(float)
        gaps = np.isnan(values)
        if gaps.any():
            # A slot never seen (the hour in progress, a feed gap): interpolated between its neighbours on the
            # day's circle, and marked with history_days 0 so the forecast says what it did not see.
            known = np.flatnonzero(~gaps)
            values[gaps] = np.interp(np.flatnonzero(gaps), known, values[known], period=STEPS_PER_DAY)
            profile = profile.with_columns(
                profile_m3h=pl.Series(values), history_days=pl.col("history_days").fill_null(0)
            )
        profile = profile.join(temps, on="step_start", how="left").with_columns(
            temperature_factor=pl.when(pl.col("temperature_c").is_null())
            .then(1.0)
            .otherwise(1.0 + DEMAND_PER_DEGREE * (pl.col("temperature_c") - pl.col("reference_c")))
        )
        frames.append(
            profile.select(
                pl.lit(station.id).alias("station_id"),
                pl.lit(tank.id).alias("tank_id"),
                "step_start",
                (pl.col("profile_m3h") * pl.col("temperature_factor")).alias("demand_m3h"),
                "profile_m3h",
                "temperature_c",
                "temperature_factor",
                "history_days",
            )
        )
    return DEMAND_FORECAST.conform(pl.concat(frames))


def _temperatures(station, start: datetime, weather: pl.DataFrame | None) -> pl.DataFrame:
    """Per step: the latest forecast issued before the day, mean over the station's DMAs, and the reference
    (the mean of that forecast over the day: a warmer-than-usual afternoon raises demand, a cool one lowers it)."""
    empty = pl.DataFrame(schema={"step_start": UTC_TIME, "temperature_c": pl.Float64, "reference_c": pl.Float64})
    dmas = sorted({d for t in station.tanks for d in t.dmas})
    if weather is None or weather.height == 0 or not dmas:
        return empty
    issued = weather.filter(pl.col("location_id").is_in(dmas) & (pl.col("issued_at") <= start))
    if issued.height == 0:
        return empty
    latest = issued.filter(pl.col("issued_at") == pl.col("issued_at").max())
    hourly = latest.group_by("valid_at").agg(pl.col("temperature_c").mean())
    steps = pl.DataFrame({"step_start": [start + STEP * t for t in range(STEPS_PER_DAY)]}).with_columns(
        pl.col("step_start").cast(UTC_TIME), hour=pl.col("step_start").cast(UTC_TIME).dt.truncate("1h")
    )
    joined = steps.join(hourly.rename({"valid_at": "hour"}), on="hour", how="left").drop("hour")
    reference = joined["temperature_c"].mean()
    return joined.with_columns(reference_c=pl.lit(reference, pl.Float64))


def initial_state(station, day: date | str, points: pl.DataFrame) -> pl.DataFrame:
    """Each tank's level and pump's state at the start of `day` (rows of INITIAL_STATE), from SCADA points."""
    start = _day_start(day)
    recent = points.filter(
        (pl.col("source_ts") < start)
        & (pl.col("source_ts") >= start - STATE_LOOKBACK)
        & (pl.col("quality") == "GOOD")
        & pl.col("value").is_not_null()
    )
    rows, problems = [], []
    wanted = [("tank", t.id, t.level_point) for t in station.tanks] + [
        ("pump", p.id, p.state_point) for p in station.pumps
    ]
    for kind, asset_id, point in wanted:
        series = recent.filter(
            (pl.col("unit_id") == point.unit_id) & (pl.col("sensor_type") == point.sensor_type)
        ).sort("source_ts")
        if series.height == 0:
            problems.append(f"{kind} {asset_id} ({point.unit_id} {point.sensor_type})")
            continue
        last = series.row(-1, named=True)
        steps_in_state = None
        if kind == "pump":
            on = series["value"].to_numpy() >= 0.5
            changed = np.flatnonzero(on != on[-1])
            since = series["source_ts"][int(changed[-1]) + 1] if changed.size else start - STATE_LOOKBACK
            steps_in_state = int((start - since) // STEP)
        rows.append(
            {
                "station_id": station.id,
                "plan_start": start,
                "kind": kind,
                "asset_id": asset_id,
                "unit_id": point.unit_id,
                "sensor_type": point.sensor_type,
                "value": float(last["value"]),
                "source_ts": last["source_ts"],
                "steps_in_state": steps_in_state,
            }
        )
    if problems:
        raise ValueError(
            f"station {station.id}: no GOOD SCADA point in the {STATE_LOOKBACK} before {start:%Y-%m-%d %H:%M} UTC "
            f"for {', '.join(problems)}; the plan cannot start without them"
        )
    return INITIAL_STATE.conform(pl.DataFrame(rows, schema=INITIAL_STATE.schema))


def build_instance(
    station, day: date | str, forecast: pl.DataFrame, prices: pl.DataFrame, state: pl.DataFrame, scenario: PumpScenario
):
    """The PumpInstance of a day from the three input tables and the scenario's overrides."""
    from optimization.pump import PumpInstance

    start = _day_start(day)
    grid = pl.DataFrame({"step_start": [start + STEP * t for t in range(STEPS_PER_DAY)]}).with_columns(
        pl.col("step_start").cast(UTC_TIME)
    )
    priced = grid.join(prices, on="step_start", how="left")
    price = priced["energy_thb_per_kwh"].to_numpy().astype(float)  # NaN where a step is missing: validation names it
    if scenario.tariff_override_thb_per_kwh is not None:
        price = np.asarray(scenario.tariff_override_thb_per_kwh, dtype=float)
    price = price * scenario.tariff_multiplier
    on_peak = priced["demand_charge_applies"].fill_null(False).to_numpy().astype(bool)
    charges = priced.filter(pl.col("demand_charge_applies").fill_null(False))["demand_charge_thb_per_kw"]
    charge = float(charges.max()) if charges.len() else 0.0
    demand = np.zeros((len(station.tanks), STEPS_PER_DAY))
    for k, tank in enumerate(station.tanks):
        rows = grid.join(forecast.filter(pl.col("tank_id") == tank.id), on="step_start", how="left")
        demand[k] = rows["demand_m3h"].to_numpy().astype(float) * (1 + scenario.demand_uplift_pct / 100)
    values = {(r["kind"], r["asset_id"]): r for r in state.iter_rows(named=True)}
    return PumpInstance(
        station=station,
        start=start,
        demand_m3h=demand,
        price_thb_per_kwh=price,
        on_peak=on_peak,
        initial_level_m=np.array([values[("tank", t.id)]["value"] for t in station.tanks], dtype=float),
        initial_on=np.array([values[("pump", p.id)]["value"] >= 0.5 for p in station.pumps]),
        initial_steps_in_state=np.array([values[("pump", p.id)]["steps_in_state"] or 0 for p in station.pumps]),
        demand_charge_thb_per_kw=charge,
        out_of_service=frozenset(scenario.pumps_out_of_service),
        name=scenario.scenario,
    )


def instance_from_lake(lake: Lake, station_id: str, day: date | str, scenario: PumpScenario | None = None):
    """The day's instance straight from the lake's raw and mart tables (the CLI's ``--station --date``)."""
    from optimization.stations import station as find_station

    scenario = scenario or PumpScenario(station=station_id)
    station = find_station(station_id)
    start = _day_start(day)
    flows = lake.read(FLOW_READINGS, start - timedelta(days=HISTORY_DAYS), start)
    weather = lake.read(FORECASTS, start - timedelta(days=2), start + timedelta(hours=1))
    forecast = forecast_demand(station, day, flows, weather)
    points = lake.read(SCADA_POINTS, start - STATE_LOOKBACK, start)
    state = initial_state(station, day, points)
    prices = lake.read(ENERGY_PRICE_STEPS, start, start + timedelta(days=1))
    return build_instance(station, day, forecast, prices, state, scenario)


def keep_other_scenarios(lake: Lake, table: LakeTable, frame: pl.DataFrame, window, scenario: str) -> pl.DataFrame:
    """This run's rows plus the partition's rows of other scenarios: results stay side by side by name."""
    existing = lake.read(table, window.start, window.end)
    others = existing.filter(pl.col("scenario") != scenario) if existing.height else existing
    return pl.concat([others, table.conform(frame)]).sort(list(table.key))


# ---------------------------------------------------------------------------------------------- assets


def _common(table: LakeTable) -> dict:
    return {
        "key_prefix": GROUP,
        "group_name": GROUP,
        "owners": ["team:operations"],
        "partitions_def": schedule_days,
        "metadata": lake_metadata(table),
        "kinds": {"polars", "parquet"},
        "tags": {"plan": "pump_schedule"},
    }


def _station(config: PumpScenario):
    from optimization.stations import station

    try:
        return station(config.station)
    except KeyError as exc:
        raise dg.Failure(str(exc.args[0])) from exc


def _preview(frame: pl.DataFrame) -> dg.MetadataValue:
    from assets.source_assets import preview

    return preview(frame) if frame.height else dg.MetadataValue.md("(none)")


@dg.asset(name="pump_demand_forecast", deps=[FLOW_READINGS_KEY, FORECASTS_KEY], **_common(DEMAND_FORECAST))
def pump_demand_forecast(context: dg.AssetExecutionContext, config: PumpScenario, lake: Lake) -> dg.MaterializeResult:
    """Water each tank of the station will supply per 15-minute step of the schedule day: its DMAs' mean
    inflow at that local time over the last four weeks (weekdays and weekends apart), scaled by the
    latest weather forecast's temperature. Simple on purpose; pump_forecast_error scores it."""
    station = _station(config)
    window = context.partition_time_window
    start = window.start
    flows = lake.read(FLOW_READINGS, start - timedelta(days=HISTORY_DAYS), start)
    weather = lake.read(FORECASTS, start - timedelta(days=2), start + timedelta(hours=1))
    try:
        frame = forecast_demand(station, context.partition_key, flows, weather)
    except ValueError as exc:
        raise dg.Failure(f"plans/pump_demand_forecast {context.partition_key}: {exc}") from exc
    lake.replace_partitions(DEMAND_FORECAST, frame, time_windows(schedule_days, window.start, window.end))
    scaled = frame.filter(pl.col("temperature_c").is_not_null()).height
    return dg.MaterializeResult(
        metadata={
            "station": station.id,
            "dagster/row_count": frame.height,
            "forecast_m3": round(float(frame["demand_m3h"].sum() * 0.25), 1),
            "steps_temperature_scaled": scaled,
            "weather": "scaled by the latest forecast" if scaled else "no weather forecast before the day: unscaled",
            "preview": _preview(frame),
        }
    )


@dg.asset(name="pump_initial_state", deps=[SCADA_POINTS_KEY], **_common(INITIAL_STATE))
def pump_initial_state(context: dg.AssetExecutionContext, config: PumpScenario, lake: Lake) -> dg.MaterializeResult:
    """Where the schedule day starts: each tank's level and each pump's run status from the latest GOOD
    SCADA point before midnight UTC (within a day), and how long each pump has been in that state."""
    station = _station(config)
    window = context.partition_time_window
    points = lake.read(SCADA_POINTS, window.start - STATE_LOOKBACK, window.start)
    try:
        frame = initial_state(station, context.partition_key, points)
    except ValueError as exc:
        raise dg.Failure(f"plans/pump_initial_state {context.partition_key}: {exc}") from exc
    lake.replace_partitions(INITIAL_STATE, frame, time_windows(schedule_days, window.start, window.end))
    return dg.MaterializeResult(
        metadata={"station": station.id, "dagster/row_count": frame.height, "state": _preview(frame)}
    )


@dg.asset(
    name="pump_schedule",
    deps=[pump_demand_forecast, pump_initial_state, ENERGY_PRICE_STEPS_KEY],
    **{**_common(SCHEDULE), "metadata": lake_metadata(SCHEDULE, TRAJECTORIES, COSTS)},
)
def pump_schedule(context: dg.AssetExecutionContext, config: PumpScenario, lake: Lake) -> dg.MaterializeResult:
    """The pump schedule of the day: which pump runs in which 15-minute step so every tank stays in its
    band at least cost (energy plus the on-peak demand charge), against the operators' level rule on the
    same inputs, with the saving and three plots. Not computed if a blocking check on its inputs failed."""
    from optimization.pump import PumpInputError, plan
    from optimization.solver import SolverOptions

    window = context.partition_time_window
    day = context.partition_key
    # Inputs' checks: the day's price steps, and the last day of the hourly sources feeding the plan.
    require_upstream_checks(context, [ENERGY_PRICE_STEPS_KEY], [day])
    hours = [(window.start - timedelta(hours=h)).strftime("%Y-%m-%d-%H:00") for h in range(24, 0, -1)]
    require_upstream_checks(context, [FLOW_READINGS_KEY, SCADA_POINTS_KEY, FORECASTS_KEY], hours)
    station = _station(config)
    forecast = lake.read(DEMAND_FORECAST, window.start, window.end).filter(pl.col("station_id") == station.id)
    state = lake.read(INITIAL_STATE, window.start, window.end).filter(pl.col("station_id") == station.id)
    prices = lake.read(ENERGY_PRICE_STEPS, window.start, window.end)
    if forecast.height == 0 or state.height == 0:
        raise dg.Failure(
            f"plans/pump_schedule {day}: no demand forecast or initial state of station {station.id} for the day; "
            "materialize plans/pump_demand_forecast and plans/pump_initial_state for it first"
        )
    try:
        instance = build_instance(station, day, forecast, prices, state, config)
        options = SolverOptions(solver=config.solver, time_limit_s=config.time_limit_s, mip_rel_gap=config.mip_rel_gap)
        result = plan(instance, options)
    except PumpInputError as exc:
        raise dg.Failure(f"plans/pump_schedule {day}, scenario {config.scenario}: {exc}") from exc
    windows = time_windows(schedule_days, window.start, window.end)
    plots_dir = plot_dir(lake, station.id, day, config.scenario)
    plots_md, plots_note = "", ""
    if result.has_plan:
        try:
            from optimization.pump_plots import render_plots

            paths = render_plots(result, plots_dir)
            plots_md = "\n\n".join(f"**{name}** `{path}`\n\n![{name}]({path.as_uri()})" for name, path in paths.items())
        except ImportError:
            plots_note = "plots skipped: matplotlib is not installed"
    costs = result.costs()
    cost_row = {
        "station_id": station.id,
        "scenario": config.scenario,
        "day_start": window.start,
        "status": str(result.solution.status),
        "gap_pct": 100 * result.solution.gap if result.solution.gap is not None else None,
        **{
            k: costs.get(k)
            for k in (
                "plan_cost_thb",
                "plan_energy_thb",
                "plan_demand_charge_thb",
                "baseline_cost_thb",
                "baseline_end_water_thb",
                "saving_thb",
                "saving_pct",
            )
        },
        "why_no_plan": "; ".join(v.description for v in result.violations) or None,
        "plots_dir": str(plots_dir) if plots_md else None,
    }
    for table, frame in (
        (SCHEDULE, result.schedule()),
        (TRAJECTORIES, result.trajectories()),
        (COSTS, pl.DataFrame([cost_row], schema=COSTS.schema)),
    ):
        lake.replace_partitions(table, keep_other_scenarios(lake, table, frame, window, config.scenario), windows)
    metadata = {
        **{k: v for k, v in result.metadata().items()},
        "plots": dg.MetadataValue.md(plots_md or plots_note or "no plan, no plots"),
        "dagster/row_count": result.schedule().height,
    }
    if not result.has_plan:
        raise dg.Failure(
            f"plans/pump_schedule {day}, scenario {config.scenario}: {result.solution.status}"
            + (f": {metadata.get('why_no_plan')}" if result.violations else f" ({result.solution.message})"),
            metadata=metadata,
        )
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(name="pump_forecast_error", deps=[pump_demand_forecast, FLOW_READINGS_KEY], **_common(FORECAST_ERROR))
def pump_forecast_error(context: dg.AssetExecutionContext, config: PumpScenario, lake: Lake) -> dg.MaterializeResult:
    """How far the day's demand forecast was from the DMAMA inflow that then happened, per tank: volume,
    mean absolute error, bias and MAPE over the steps where the actual is complete. Run once the day is in."""
    station = _station(config)
    window = context.partition_time_window
    forecast = lake.read(DEMAND_FORECAST, window.start, window.end).filter(pl.col("station_id") == station.id)
    flows = lake.read(FLOW_READINGS, window.start, window.end)
    rows = []
    for tank in station.tanks:
        if not tank.dmas:
            continue
        actual = _tank_flows(flows, tank.dmas).rename({"timestamp": "step_start", "flow_m3h": "actual_m3h"})
        both = forecast.filter(pl.col("tank_id") == tank.id).join(actual, on="step_start", how="inner")
        error = both["demand_m3h"] - both["actual_m3h"] if both.height else pl.Series([], dtype=pl.Float64)
        rows.append(
            {
                "station_id": station.id,
                "tank_id": tank.id,
                "day_start": window.start,
                "steps_compared": both.height,
                "forecast_m3": float(both["demand_m3h"].sum() * 0.25) if both.height else 0.0,
                "actual_m3": float(both["actual_m3h"].sum() * 0.25) if both.height else 0.0,
                "mae_m3h": float(error.abs().mean()) if both.height else None,
                "bias_m3h": float(error.mean()) if both.height else None,
                "mape_pct": float((error.abs() / both["actual_m3h"]).mean() * 100) if both.height else None,
            }
        )
    frame = pl.DataFrame(rows, schema=FORECAST_ERROR.schema)
    lake.replace_partitions(FORECAST_ERROR, frame, time_windows(schedule_days, window.start, window.end))
    if frame.height and frame["steps_compared"].min() < STEPS_PER_DAY:
        context.log.warning(f"pump_forecast_error {context.partition_key}: the day's actuals are not complete yet")
    return dg.MaterializeResult(metadata={"station": station.id, "errors": _preview(frame)})


def plot_dir(lake: Lake, station_id: str, day: str, scenario: str) -> Path:
    """Plots go next to the plan: ``<data dir>/plans/pump/<station>/<day>/<scenario>/``."""
    root = Path(lake.root) if "://" not in lake.root else Path("/tmp/ihub")
    return root.parent / "plans" / "pump" / station_id / day / scenario


ASSETS = [pump_demand_forecast, pump_initial_state, pump_schedule, pump_forecast_error]
