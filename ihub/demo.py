"""``ihub demo``: every source's pipeline end to end on embedded defaults, with progress and a summary.

Each source is one `DemoSource` in `SOURCES`: how to start its simulator and which jobs to run.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

EXAMPLE_QUERY = """
SELECT dma_id, night_of, round(min_night_flow_m3h, 1) AS min_night_flow_m3h,
       round(min_night_flow_l_per_connection_h, 2) AS l_per_connection_h
FROM marts.dma_night_flow
ORDER BY min_night_flow_l_per_connection_h DESC
LIMIT 5
""".strip()


# The demo prints its own progress; Dagster's step-by-step log stays in the instance (and the UI).
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass(frozen=True)
class Step:
    """One job the demo runs, with the partition range it covers (None: unpartitioned)."""

    what: str
    job: str
    keys: tuple[str, str] | None = None
    show: str | None = None  # a markdown-list metadata entry of the run's assets printed after it (deliveries)
    # Partition range worked out when the step starts, for a source that only answers for the hour in
    # progress (a forecast is fetched as issued): the demo may have crossed an hour since it began.
    keys_when_run: Callable[[], tuple[str, str]] | None = None
    config: dict | None = None  # run config of the job's ops, merged with the demo's quiet logging


@dataclass(frozen=True)
class DemoSource:
    """A source in the demo: `serve` starts its simulator in the stack and returns (what listens where,
    the environment the hub's resources read); `steps` are its jobs, in order, for the window ending now."""

    name: str
    serve: Callable[[contextlib.ExitStack, DemoOptions], tuple[str, dict[str, str]]]
    steps: Callable[[datetime, DemoOptions], list[Step]]


@dataclass(frozen=True)
class DemoOptions:
    hours: int = 24
    dmas: int = 5
    meters_per_dma: int = 10


def _serve_dmama(stack: contextlib.ExitStack, options: DemoOptions) -> tuple[str, dict[str, str]]:
    from simulators.dmama import DmamaConfig, credentials_env, serve_dmama

    config = DmamaConfig(dmas=options.dmas, meters_per_dma=options.meters_per_dma)
    simulator = stack.enter_context(serve_dmama(config))
    where = f"{simulator.url} ({options.dmas} DMAs, {options.dmas * options.meters_per_dma} meters)"
    return where, credentials_env(simulator.url, config)


def _dmama_steps(now: datetime, options: DemoOptions) -> list[Step]:
    from assets.partitions import daily, hourly

    last_hour = hourly.get_partition_key_for_timestamp(now.timestamp())
    hour_keys = hourly.get_partition_keys(current_time=now)[-options.hours :]
    first_day = daily.get_partition_key_for_timestamp((now - timedelta(hours=options.hours)).timestamp())
    last_day = daily.get_partition_key_for_timestamp(now.timestamp())
    return [
        Step("DMA catalogue and meter list", "dmama_catalogue_job"),
        Step(
            f"DMA readings, {hour_keys[0]} … {last_hour} UTC ({len(hour_keys)} hourly partitions)",
            "dmama_readings_job",
            (hour_keys[0], last_hour),
        ),
        Step(f"meter readings, {first_day} … {last_day} UTC", "dmama_meter_readings_job", (first_day, last_day)),
    ]


# The demo's own phone-hash key, used only when BILLING_PII_HASH_KEY is not set: a real deployment sets a
# random secret. Fixed, so that the demo's lake keeps one key from run to run.
DEMO_PII_HASH_KEY = "ihub-demo-only-pii-hash-key"


def _serve_billing(stack: contextlib.ExitStack, options: DemoOptions) -> tuple[str, dict[str, str]]:
    from simulators.billing import BillingConfig, credentials_env, serve_billing

    # Same seed and size as the demo's DMAMA: billing bills DMAMA's customer meters.
    config = BillingConfig(dmas=options.dmas, meters_per_dma=options.meters_per_dma)
    simulator = stack.enter_context(serve_billing(config))
    env = credentials_env(simulator.url, config)
    env["BILLING_PII_HASH_KEY"] = os.environ.get("BILLING_PII_HASH_KEY") or DEMO_PII_HASH_KEY
    return f"{simulator.url} ({len(simulator.simulator.meters())} billed meters)", env


def _billing_steps(now: datetime, options: DemoOptions) -> list[Step]:
    from assets.billing import billing_months, reading_days

    days = reading_days.get_partition_keys(current_time=now)[-7:]
    month = billing_months.get_partition_keys(current_time=now)[-1]
    return [
        Step("billing customers (incremental from the cursor in the lake)", "billing_customers_job"),
        Step(f"billing meter readings, {days[0]} … {days[-1]} UTC", "billing_readings_job", (days[0], days[-1])),
        Step(f"billed consumption of {month[:7]}", "billing_monthly_job", (month, month)),
    ]


def _serve_gis(stack: contextlib.ExitStack, options: DemoOptions) -> tuple[str, dict[str, str]]:
    from orchestration.settings import data_dir
    from simulators.gis import GisConfig, GisSimulator, credentials_env
    from simulators.http_server import serve_simulator

    # Bad geometry the map repairs or rejects; the spatial defects (meters outside, overlaps) would fail checks.
    config = GisConfig(
        dmas=options.dmas,
        meters_per_dma=options.meters_per_dma,
        defects=frozenset({"bow_tie", "collapsed_polygon", "missing_crs"}),
    )
    simulator = GisSimulator(config)
    files = data_dir() / "gis-files"
    simulator.write_files(files)
    server = stack.enter_context(serve_simulator(simulator))
    return f"{server.url}/wfs/{{layer}} (files in {files})", credentials_env(server.url, config, files)


def _gis_steps(now: datetime, options: DemoOptions) -> list[Step]:
    from assets.gis import weekly

    week = weekly.get_partition_key_for_timestamp(now.timestamp())
    return [
        Step(
            f"network map, week of {week} (weather stations move to its DMA centroids)", "gis_weekly_job", (week, week)
        )
    ]


def _serve_markets(stack: contextlib.ExitStack, options: DemoOptions) -> tuple[str, dict[str, str]]:
    from simulators.markets import MarketsConfig, credentials_env, serve_markets

    config = MarketsConfig()
    simulator = stack.enter_context(serve_markets(config))
    return simulator.url, credentials_env(simulator.url, config)


def _markets_steps(now: datetime, options: DemoOptions) -> list[Step]:
    from assets.markets import PRICE_DAYS_AHEAD, days, price_days, weeks

    keys = price_days.get_partition_keys(current_time=now)
    today = keys[-1 - PRICE_DAYS_AHEAD]
    # The last two fuel weeks (this one included), and the days from a week before the first of them, so
    # each week's freight cost finds the USD/INR rate fixed last before it even across a long holiday.
    week_keys = weeks.get_partition_keys(current_time=now)[-2:]
    first_day = (datetime.fromisoformat(week_keys[0]) - timedelta(days=7)).date().isoformat()
    last_day = days.get_partition_keys(current_time=now)[-1]
    return [
        Step("tariffs and public holidays", "markets_reference_job"),
        Step(f"energy price per 15-minute step, {today} … {keys[-1]}", "markets_price_steps_job", (today, keys[-1])),
        Step(
            f"fuel prices, weeks of {week_keys[0]} and {week_keys[1]}", "markets_fuel_job", (week_keys[0], week_keys[1])
        ),
        Step(
            f"exchange rates and cement prices per city, {first_day} … {last_day}, converted to USD per tonne",
            "markets_daily_prices_job",
            (first_day, last_day),
        ),
        Step("road freight cost per tonne-km, the same two weeks", "markets_freight_job", (week_keys[0], week_keys[1])),
    ]


def _serve_weather(stack: contextlib.ExitStack, options: DemoOptions) -> tuple[str, dict[str, str]]:
    from simulators.weather import WeatherConfig, credentials_env, serve_weather

    config = WeatherConfig()
    simulator = stack.enter_context(serve_weather(config))
    return simulator.url, credentials_env(simulator.url, config)


def _weather_steps(now: datetime, options: DemoOptions) -> list[Step]:
    from assets.partitions import hourly

    # The last few hours: enough to show both providers side by side without slowing the demo.
    hour_keys = hourly.get_partition_keys(current_time=now)[-min(options.hours, 3) :]
    return [
        Step(
            f"weather observations, {hour_keys[0]} … {hour_keys[-1]} UTC",
            "weather_observations_job",
            (hour_keys[0], hour_keys[-1]),
        ),
        Step(
            "weather forecasts issued in the same hours",
            "weather_forecasts_job",
            (hour_keys[0], hour_keys[-1]),
            keys_when_run=lambda: (
                hour_keys[0],
                hourly.get_partition_key_for_timestamp(datetime.now(UTC).timestamp()),
            ),
        ),
    ]


def _serve_erp(stack: contextlib.ExitStack, options: DemoOptions) -> tuple[str, dict[str, str]]:
    from orchestration.settings import data_dir
    from simulators.erp import SERVICE_PATH, ErpConfig, credentials_env, serve_erp
    from simulators.erp_sql import seed_database

    path = data_dir() / "erp" / "erp.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    sql_url = f"sqlite:///{path}"
    seeded = seed_database(sql_url, replace=True)
    config = ErpConfig()
    simulator = stack.enter_context(serve_erp(config))
    where = f"{simulator.url}{SERVICE_PATH} and {path} ({sum(seeded.values())} SQL rows)"
    return where, credentials_env(simulator.url, config, sql_url)


def _erp_steps(now: datetime, options: DemoOptions) -> list[Step]:
    from assets.partitions import daily
    from orchestration.erp import LOOKBACK_DAYS

    # The days the morning schedule loads: yesterday again (late postings) and today so far.
    today = daily.get_partition_key_for_timestamp(now.timestamp())
    first = daily.get_partition_key_for_timestamp((now - timedelta(days=LOOKBACK_DAYS)).timestamp())
    return [
        Step("ERP plants and routes", "erp_reference_job"),
        Step(
            f"ERP demand revisions, stock, capacity and shutdowns, {first} … {today}", "erp_daily_job", (first, today)
        ),
    ]


def _serve_fleet(stack: contextlib.ExitStack, options: DemoOptions) -> tuple[str, dict[str, str]]:
    """A day of truck telemetry, compressed: published to a local broker, taken by a real collector (MQTT
    reader, durable spool) whose clock is moved one window on at the end, so the window it filled is sealed
    now instead of a minute later. The fleet job then reads the windows as it would any other day."""
    import asyncio

    import yaml

    from collector.config import load_config
    from collector.service import Collector
    from orchestration.settings import data_dir
    from simulators.fleet import FleetConfig, FleetSimulator, publish
    from simulators.mqtt_broker import start_local_broker

    broker = stack.enter_context(contextlib.closing(start_local_broker()))
    spool, path = data_dir() / "spool", data_dir() / "fleet-demo-collector.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    mqtt = {
        "name": "fleet-demo",
        "host": broker.host,
        "port": broker.port,
        "client_id": f"ihub-demo-fleet-{os.getpid()}",
    }
    mqtt.update(topics=["scada/+/+"], fleet={"topic": "fleet/+/telemetry"}, clean_session=True)
    settings = {
        "spool": {"dir": str(spool), "window_s": 60},
        "alerts": {"enabled": False},
        "health": {"enabled": False},
    }
    path.write_text(yaml.safe_dump({**settings, "mqtt": [mqtt]}))
    end = datetime.now(UTC).replace(second=0, microsecond=0)
    day = FleetSimulator(FleetConfig(trucks=4, interval_s=60)).day(end - timedelta(hours=options.hours), end)
    shift = [0.0]

    async def collect() -> None:
        collector = Collector(load_config(path), clock=lambda: time.time() + shift[0])
        await collector.start()
        try:
            deadline = time.monotonic() + 30
            while set(collector.health()["readers"]["fleet-demo"]["subscriptions"].values()) != {1}:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the demo collector did not subscribe to {broker.host}:{broker.port}")
                await asyncio.sleep(0.05)
            await asyncio.to_thread(publish, day.messages, broker.host, broker.port)
            while collector.spool.health()["points_appended"] < 5 * len(day.messages):
                if time.monotonic() > deadline + 60:
                    raise RuntimeError("the demo collector did not spool every fleet message in time")
                await asyncio.sleep(0.1)
            shift[0] = 62.0  # the window in progress is over: stopping seals it
        finally:
            await collector.stop()

    asyncio.run(collect())
    where = (
        f"{broker.host}:{broker.port}, {len(day.messages):,} fixes of {len(day.trips)} trips by 4 trucks "
        f"spooled in {spool}"
    )
    return where, {"IHUB_SPOOL_DIR": str(spool)}


def _fleet_steps(now: datetime, options: DemoOptions) -> list[Step]:
    from assets.partitions import daily

    first = daily.get_partition_key_for_timestamp((now - timedelta(hours=options.hours)).timestamp())
    last = daily.get_partition_key_for_timestamp(now.timestamp())
    return [Step(f"truck positions and trips, {first} … {last} UTC", "fleet_job", (first, last))]


def _serve_outbound(stack: contextlib.ExitStack, options: DemoOptions) -> tuple[str, dict[str, str]]:
    """Outbound talks to the billing simulator started above. So that the demo has an anomaly to tell billing
    about, a register rollover is armed on billing's readings of the last closed day (as billing's own tests
    do): the readings job lands it, flagged, and the alerts job posts it once."""
    import httpx

    from assets.billing import reading_days
    from simulators.billing import ALERTS_PATH, READINGS_PATH

    url = os.environ["BILLING_BASE_URL"]
    day = reading_days.get_partition_keys(current_time=datetime.now(UTC))[-1]
    armed = httpx.post(f"{url}/_sim/faults", json={"kind": "rollover", "path": READINGS_PATH, "date": day})
    armed.raise_for_status()
    return f"{url}{ALERTS_PATH} (billing's alerts endpoint; a rollover armed on {day})", {}


def _outbound_steps(now: datetime, options: DemoOptions) -> list[Step]:
    from assets.billing import reading_days

    day = reading_days.get_partition_keys(current_time=now)[-1]
    return [Step(f"anomaly alerts to billing for {day}", "outbound_billing_alerts_job", (day, day), "deliveries")]


def _serve_pump_station(stack: contextlib.ExitStack, options: DemoOptions) -> tuple[str, dict[str, str]]:
    """The simulated pump station PS01 (the Modbus simulator's model) over the last 30 minutes, its tank
    levels and pump states spooled as the collector files them, so the plan starts from SCADA's latest
    points. (The live part of the demo reads the same station over Modbus TCP; the batch part needs its
    points now, not after a collector has run.)"""
    import asyncio

    from collector.points import Point, to_micros
    from collector.spool import Spool
    from orchestration.settings import data_dir
    from simulators.modbus import PumpStationModel

    spool = data_dir() / "spool"
    # The last closed 5-minute window, filled to its end: a window judged before its end would show the
    # minutes still to come as a silence (the gaps check).
    now = datetime.now(UTC).timestamp()
    end = datetime.fromtimestamp(now - now % 300, UTC)
    model = PumpStationModel(seed=1, plant_unit_id="PS01", start=end - timedelta(minutes=30))
    points = []
    for second in range(1, 1801):
        model.step()
        if second % 60:
            continue
        at = to_micros(model.start + timedelta(seconds=model.t))
        readings = [
            ("level", "PS01-T1", model.values["tank1_level"], "m"),
            ("level", "PS01-T2", model.values["tank2_level"], "m"),
        ]
        readings += [("pump_status", f"PS01-P{p}", float(model.values[f"pump{p}_status"]), "") for p in (1, 2, 3)]
        for sensor, unit, value, eng in readings:
            points.append(Point("modbus", "ps01-plc", unit, sensor, round(value, 3), eng, "GOOD", at, at + 20_000))
    window_start = end.timestamp() - 300
    clock = [window_start + 1]

    async def write() -> None:
        async with Spool(spool, window_s=300, clock=lambda: clock[0]) as filed:
            await filed.append(points)
            clock[0] = window_start + 305  # the window is over: sealed now, not in five minutes
            filed.seal_due()

    asyncio.run(write())
    env = {"IHUB_SPOOL_DIR": str(spool), "IHUB_DEMO_PS01_WINDOW_START": str(int(window_start))}
    return f"PS01 model, {len(points)} points of the 30 minutes to {end:%H:%M}Z spooled in {spool}", env


def _pump_steps(now: datetime, options: DemoOptions) -> list[Step]:
    from assets.partitions import hourly
    from assets.pump_schedule import schedule_days

    # The hour of the window the PS01 points were spooled into (set when the demo served them).
    window_start = float(os.environ.get("IHUB_DEMO_PS01_WINDOW_START", (now - timedelta(minutes=5)).timestamp()))
    hour = hourly.get_partition_key_for_timestamp(window_start)
    tomorrow = schedule_days.get_partition_key_for_timestamp((now + timedelta(days=1)).timestamp())
    config = {"plans__pump_schedule": {"config": {"time_limit_s": 20.0}}}
    return [
        Step(f"SCADA window of pump station PS01, hour {hour} UTC", "scada_window_job", (hour, hour)),
        Step(
            f"tomorrow's pump schedule for PS01 ({tomorrow} UTC)",
            "pump_schedule_job",
            (tomorrow, tomorrow),
            config=config,
        ),
    ]


# In order: a source whose assets read another's tables comes after it (billing and the GIS join DMAMA's
# meters; weather places its stations at the GIS's DMA centroids, or DMAMA's coordinates; the fleet's geofences
# come from the ERP's plants; outbound sends what billing's readings showed).
SOURCES: tuple[DemoSource, ...] = (
    DemoSource("dmama", _serve_dmama, _dmama_steps),
    DemoSource("billing", _serve_billing, _billing_steps),
    DemoSource("gis", _serve_gis, _gis_steps),
    DemoSource("markets", _serve_markets, _markets_steps),
    DemoSource("weather", _serve_weather, _weather_steps),
    DemoSource("erp", _serve_erp, _erp_steps),
    DemoSource("fleet", _serve_fleet, _fleet_steps),
    DemoSource("outbound", _serve_outbound, _outbound_steps),
    # Last: tomorrow's pump schedule reads DMAMA's inflow, the weather forecast, the price steps and SCADA.
    DemoSource("pump", _serve_pump_station, _pump_steps),
)


def run_demo(hours: int = 24, dmas: int = 5, meters_per_dma: int = 10, live_minutes: float = 0) -> int:
    from ihub.environment import prepare_dagster_home

    home = prepare_dagster_home()
    _say(f"Dagster instance: {home} (SQLite unless DAGSTER_PG_* is set)")
    options = DemoOptions(hours=hours, dmas=dmas, meters_per_dma=meters_per_dma)
    with contextlib.ExitStack() as stack:
        for source in SOURCES:
            where, env = source.serve(stack, options)
            os.environ.update(env)
            _say(f"{source.name} simulator on {where}")
        outcome = _run_pipeline(options)
    if outcome == 0 and live_minutes > 0:
        from ihub.live_demo import run_live
        from orchestration.settings import data_dir

        _say("")
        _say("Live SCADA path")
        outcome = run_live(live_minutes, data_dir(), _say)
    return outcome


@dataclass
class SourceTally:
    """What one source's runs landed, from their materializations' metadata."""

    assets: set[str] = field(default_factory=set)
    rows_written: int = 0
    rows_rejected: int = 0
    checks: Counter[str] = field(default_factory=Counter)


def _run_pipeline(options: DemoOptions) -> int:
    import dagster as dg

    from orchestration.definitions import defs

    instance = dg.DagsterInstance.get()
    now = datetime.now(UTC)
    steps = [(source.name, step) for source in SOURCES for step in source.steps(now, options)]
    steps.append(("catalog", Step("analyst catalog", "analyst_catalog_job")))
    tallies: dict[str, SourceTally] = {}
    failures: list[str] = []
    for number, (source, step) in enumerate(steps, start=1):
        _say(f"[{number}/{len(steps)}] {step.what} …")
        started = time.monotonic()
        tags = {}
        keys = step.keys_when_run() if step.keys_when_run else step.keys
        if keys:
            tags = {
                "dagster/asset_partition_range_start": keys[0],
                "dagster/asset_partition_range_end": keys[1],
            }
        run_config = {**QUIET, "ops": step.config} if step.config else QUIET
        result = defs.resolve_job_def(step.job).execute_in_process(
            instance=instance, tags=tags, run_config=run_config, raise_on_error=False
        )
        tally = tallies.setdefault(source, SourceTally())
        # A single-run backfill reports its totals on every partition it wrote: count each asset once a run.
        per_asset = {}
        for event in result.get_asset_materialization_events():
            materialization = event.materialization
            per_asset.setdefault(materialization.asset_key.to_user_string(), materialization.metadata)
        for asset, metadata in per_asset.items():
            tally.assets.add(asset)
            tally.rows_written += _count(metadata.get("rows_written"))
            tally.rows_rejected += _count(metadata.get("rows_rejected"))
        for event in result.get_asset_check_evaluations():
            outcome = "passed" if event.passed else f"failed ({event.severity.value})"
            tally.checks[outcome] += 1
            if not event.passed:
                failures.append(f"{event.asset_key.to_user_string()}:{event.check_name} {outcome}")
        status = "done" if result.success else "FAILED"
        _say(f"      {status} in {time.monotonic() - started:.1f}s (run {result.run_id[:8]})")
        if step.show:
            for metadata in per_asset.values():
                shown = getattr(metadata.get(step.show), "value", "")
                for line in str(shown or "").splitlines():
                    _say(f"      {line.removeprefix('- ')}")
        if not result.success:
            for event in result.all_events:
                if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
                    _say(f"      {event.step_key}: {event.step_failure_data.error.message.strip()}")
            return 1
    _summary(tallies, failures)
    _pump_summary()
    return 0 if not failures else 1


def _pump_summary() -> None:
    """Tomorrow's pump schedule in one paragraph: cost, saving against the level rule, where the plots are."""
    import polars as pl

    from assets.pump_schedule import COSTS
    from orchestration.settings import lake_dir
    from resources.lake import Lake

    costs = Lake(root=lake_dir()).read(COSTS)
    if costs.height == 0:
        return
    row = costs.sort("day_start").filter(pl.col("scenario") == "base").row(-1, named=True)
    _say("")
    _say(f"Pump schedule for {row['station_id']} on {row['day_start']:%Y-%m-%d} (UTC day), scenario base:")
    if row["plan_cost_thb"] is None:
        _say(f"  no plan ({row['status']}): {row['why_no_plan']}")
        return
    gap = f", gap {row['gap_pct']:.2f} %" if row["gap_pct"] is not None else ""
    _say(
        f"  {row['status']}{gap}: {row['plan_cost_thb']:,.2f} THB against {row['baseline_cost_thb']:,.2f} THB "
        f"for the operators' level rule (+{row['baseline_end_water_thb'] or 0:,.2f} THB to end as full), "
        f"saving {row['saving_thb']:,.2f} THB ({row['saving_pct']:.1f} %)"
    )
    _say(f"  plots: {row['plots_dir'] or 'not rendered (matplotlib not installed)'}")
    _say("  schedule: SELECT * FROM marts.pump_schedule WHERE scenario = 'base' ORDER BY pump_id, step")


def _count(value: object) -> int:
    raw = getattr(value, "value", value)
    return int(raw) if isinstance(raw, int | float) else 0


def _summary(tallies: dict[str, SourceTally], failures: list[str]) -> None:
    import duckdb

    from orchestration.settings import catalog_path

    path = catalog_path()
    _say("")
    _say("Summary")
    width = max(len(name) for name in tallies)
    for name, tally in tallies.items():
        if name == "catalog":
            continue
        passed = tally.checks.get("passed", 0)
        _say(
            f"  {name:<{width}}  {len(tally.assets):>2} assets  {tally.rows_written:>9,} rows written"
            f"  {tally.rows_rejected:>6,} rejected  checks {passed}/{sum(tally.checks.values())} passed"
        )
    _say("")
    with duckdb.connect(str(path), read_only=True) as con:
        views = con.execute(
            "SELECT schema_name, view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1, 2"
        ).fetchall()
        width = max(len(f"{s}.{v}") for s, v in views)
        for schema, view in views:
            rows = con.execute(f'SELECT count(*) FROM {schema}."{view}"').fetchall()[0][0]
            _say(f"  {schema + '.' + view:<{width}}  {rows:>9,} rows")
        checks = sum((t.checks for t in tallies.values()), Counter())
        passed = checks.get("passed", 0)
        _say(f"  checks: {passed} passed, {sum(checks.values()) - passed} failed")
        for failure in failures:
            _say(f"    {failure}")
        _say(f"  analyst catalog: {path}")
        _say(f'    open it read-only: duckdb.connect({str(path)!r}, read_only=True)  or  ihub query "…"')
        _say("  example query (highest night flow per connection, a leak indicator):")
        for line in EXAMPLE_QUERY.splitlines():
            _say(f"    {line}")
        _say("")
        for line in str(con.sql(EXAMPLE_QUERY)).splitlines():
            _say(f"    {line}")


def _say(text: str) -> None:
    print(text, flush=True)
