"""Billing assets and checks, materialized through Dagster against the simulator on loopback."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from assets import billing
from assets import dmama as dmama_assets
from contracts.billing import CONSUMPTION_MONTHLY, CUSTOMERS, METER_READINGS
from contracts.dmama import METERS
from quality.billing import billing_checks, dma_total_mismatches
from quality.conform import rejects_table
from resources.billing import BillingClient, CustomerPseudonymizer, normalize_phone
from resources.lake import Lake
from simulators.billing import CUSTOMERS_PATH, READINGS_PATH, BillingConfig, serve_billing
from tests.conftest import dmama_client

NOW = datetime(2026, 3, 15, 6, tzinfo=UTC)
KEY = "test-pii-key-0123456789abcdef"
CHECKS = billing_checks(billing.reading_days, billing.billing_months)
ASSETS = [billing.meter_readings, billing.consumption_monthly, billing.customers]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def clock():
    return Clock(NOW)


@pytest.fixture(scope="module")
def billing_server(clock):
    with serve_billing(BillingConfig(), clock=clock) as running:
        yield running


@pytest.fixture
def sim(billing_server, clock):
    clock.now = NOW
    billing_server.simulator.clear_faults()
    billing_server.simulator.reset_stats()
    yield billing_server.simulator
    billing_server.simulator.clear_faults()


def billing_resources(server, lake, **client) -> dict:
    settings = {
        "base_url": server.url,
        "username": server.config.username,
        "password": server.config.password,
        "backoff_base_s": 0.01,
        **client,
    }
    return {"billing": BillingClient(**settings), "billing_pii": CustomerPseudonymizer(hash_key=KEY), "lake": lake}


@pytest.fixture(scope="module")
def dmama_meters(server, tmp_path_factory) -> pl.DataFrame:
    """DMAMA's meter list as dmama/meters lands it from the module's DMAMA simulator (``server``), once."""
    landed = Lake(root=str(tmp_path_factory.mktemp("dmama") / "lake"))
    with dg.instance_for_test() as instance:
        dg.materialize(
            [dmama_assets.meters], resources={"dmama": dmama_client(server), "lake": landed}, instance=instance
        )
    return landed.read(METERS)


@pytest.fixture
def resources(billing_server, sim, lake, dmama_meters):
    # The billed meters are checked against DMAMA's meter list in the same lake.
    lake.replace_snapshot(METERS, dmama_meters)
    return billing_resources(billing_server, lake)


def run(assets, resources, instance, keys=None, raise_on_error=True, checks=True):
    tags = {}
    if keys is not None:
        tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[1]}
    return dg.materialize(
        [*ASSETS, *(CHECKS if checks else [])],
        selection=dg.AssetSelection.assets(*assets),
        resources=resources,
        instance=instance,
        tags=tags,
        raise_on_error=raise_on_error,
    )


def checks_of(result) -> dict[str, bool]:
    return {f"{e.asset_key.path[-1]}:{e.check_name}": e.passed for e in result.get_asset_check_evaluations()}


def metadata_of(result, name: str) -> dict:
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == name)
    return {k: v.value for k, v in event.materialization.metadata.items()}


def reading(lake, meter: str, day: str) -> dict:
    rows = lake.read(METER_READINGS).filter(
        (pl.col("meter_id") == meter) & (pl.col("reading_date") == date.fromisoformat(day))
    )
    assert rows.height == 1, f"no single reading of {meter} on {day}"
    return rows.to_dicts()[0]


def test_a_week_of_readings_lands_with_consumption_and_passes_its_checks(resources, instance, lake, sim):
    result = run([billing.meter_readings], resources, instance, ("2026-03-01", "2026-03-07"))
    assert all(checks_of(result).values()), checks_of(result)
    meta = metadata_of(result, "meter_readings")
    billed = len(sim.meters())
    assert (meta["rows_received"], meta["rows_written"], meta["rows_rejected"]) == (7 * billed, 7 * billed, 0)
    assert (meta["rollovers"], meta["implausible_decreases"], meta["jwt_logins"]) == (0, 0, 1)
    frame = lake.read(METER_READINGS)
    # Billed meters are DMAMA's customer meters, one for one.
    dmama_customers = lake.read(METERS).filter(pl.col("kind") == "customer")["meter_id"].sort().to_list()
    assert frame["meter_id"].unique().sort().to_list() == dmama_customers
    # The first day's consumption is measured from the baseline day (28 February), not left empty.
    meter = sim.meters()[0]["meter_id"]
    registers = (
        sim.dmama_registers_at(datetime(2026, 3, 1, tzinfo=UTC)),
        sim.dmama_registers_at(datetime(2026, 3, 2, tzinfo=UTC)),
    )
    first = reading(lake, meter, "2026-03-01")
    assert first["previous_reading_date"] == date(2026, 2, 28)
    assert first["consumption_m3"] == pytest.approx(registers[1][meter] - registers[0][meter], abs=1e-6)
    assert frame["consumption_m3"].null_count() == 0


def test_the_rollover_example_gives_445_m3_and_is_flagged(resources, instance, lake, sim):
    meter = sim.first_meter_with_digits(5)
    sim.inject("rollover", READINGS_PATH, meter_id=meter, date="2026-03-05")
    result = run([billing.meter_readings], resources, instance, ("2026-03-05", "2026-03-06"))
    rolled = reading(lake, meter, "2026-03-05")
    assert (rolled["previous_register_m3"], rolled["register_m3"]) == (99_678.0, 123.0)
    assert (rolled["consumption_m3"], rolled["register_rollover"]) == (445.0, True)
    assert reading(lake, meter, "2026-03-06")["register_rollover"] is False
    meta = metadata_of(result, "meter_readings")
    assert (meta["rollovers"], meta["rows_rejected"]) == (1, 0)
    assert meta["rollover_readings"] == [
        {"meter_id": meter, "day": "2026-03-05", "previous_m3": 99_678.0, "current_m3": 123.0, "consumption_m3": 445.0}
    ]
    assert checks_of(result)["meter_readings:consumption_not_negative"] is True


def test_a_decrease_that_is_not_a_rollover_is_rejected_with_its_reason(resources, instance, lake, sim):
    meter = sim.meters()[3]["meter_id"]
    truth = sim.closing_registers(date(2026, 3, 4), date(2026, 3, 7))
    true = {r["reading_date"]: r["register_m3"] for r in truth if r["meter_id"] == meter}
    sim.inject("implausible_decrease", READINGS_PATH, meter_id=meter, date="2026-03-05")
    result = run([billing.meter_readings], resources, instance, ("2026-03-05", "2026-03-06"))
    meta = metadata_of(result, "meter_readings")
    billed = len(sim.meters())
    assert (meta["rows_received"], meta["rows_written"], meta["rows_rejected"]) == (2 * billed, 2 * billed - 1, 1)
    rejects = lake.read(rejects_table(METER_READINGS))
    (reason,) = rejects["reason"].to_list()
    low = true["2026-03-04"] - 230.0 if true["2026-03-04"] >= 230 else true["2026-03-04"] / 2
    assert reason.startswith(
        f"meter {meter} on 2026-03-05: register went down from {true['2026-03-04']:,.3f} m³ (2026-03-04) to "
        f"{round(low, 3):,.3f} m³"
    )
    assert rejects["field"].to_list() == ["register_m3"] and json.loads(rejects["raw_payload"][0])["meter_id"] == meter
    assert rejects["partition_start"].to_list() == [datetime(2026, 3, 5, tzinfo=UTC)]
    after = reading(lake, meter, "2026-03-06")  # measured from the last reading kept, two days before
    assert after["previous_reading_date"] == date(2026, 3, 4)
    assert after["consumption_m3"] == pytest.approx(true["2026-03-06"] - true["2026-03-04"], abs=1e-3)


def test_a_token_expiring_mid_backfill_refreshes_once(billing_server, resources, instance, lake, sim):
    small_pages = billing_resources(billing_server, lake, page_size=100, days_per_request=4)
    sim.expire_tokens_after(2)
    result = run([billing.meter_readings], small_pages, instance, ("2026-02-01", "2026-02-14"), checks=False)
    meta = metadata_of(result, "meter_readings")
    assert (meta["jwt_logins"], meta["jwt_refreshes"], meta["rows_written"]) == (1, 1, 14 * len(sim.meters()))
    assert sim.stats.snapshot()[(READINGS_PATH, 401)] == 1


def test_a_revoked_token_logs_in_again_once(billing_server, resources, instance, lake, sim):
    small_pages = billing_resources(billing_server, lake, page_size=100, days_per_request=4)
    sim.revoke_sessions_after(3)
    result = run([billing.meter_readings], small_pages, instance, ("2026-02-01", "2026-02-10"), checks=False)
    meta = metadata_of(result, "meter_readings")
    assert (meta["jwt_logins"], meta["jwt_refreshes"], meta["rows_written"]) == (2, 0, 10 * len(sim.meters()))


def test_monthly_bills_add_up_per_dma_and_match_the_daily_readings(resources, instance, lake, sim):
    result = run([billing.consumption_monthly], resources, instance, ("2026-01-01", "2026-02-01"))
    assert all(checks_of(result).values()), checks_of(result)
    meta = metadata_of(result, "consumption_monthly")
    billed = len(sim.meters())
    assert (meta["rows_written"], meta["months"], meta["dma_totals_mismatched"]) == (2 * (billed + 5), 2, 0)
    run([billing.meter_readings], resources, instance, ("2026-02-01", "2026-02-28"), checks=False)
    daily = lake.read(METER_READINGS).group_by("customer_id").agg(pl.col("consumption_m3").sum().alias("daily_sum_m3"))
    february = lake.read(CONSUMPTION_MONTHLY, datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))
    bills = february.filter(pl.col("level") == "customer").join(daily, on="customer_id")
    assert bills.height == billed
    assert (bills["billed_m3"] - bills["daily_sum_m3"]).abs().max() < 1e-6


def test_dma_totals_that_do_not_add_up_are_found():
    month = date(2026, 2, 1)
    frame = pl.DataFrame(
        {
            "month": [month] * 4,
            "level": ["customer", "customer", "dma", "dma"],
            "dma_id": ["DMA-0001", "DMA-0001", "DMA-0001", "DMA-0002"],
            "billed_m3": [10.0, 5.5, 16.0, 3.0],
        }
    )
    off = dma_total_mismatches(frame)
    assert off.select("dma_id", "dma_total_m3", "customers_sum_m3").rows() == [
        ("DMA-0001", 16.0, 15.5),
        ("DMA-0002", 3.0, None),
    ]


def test_the_customer_cursor_survives_a_restart_and_only_changes_come_back(billing_server, resources, lake, sim, clock):
    with dg.instance_for_test() as first_process:
        full = run([billing.customers], resources, first_process)
    meta = metadata_of(full, "customers")
    assert (meta["sync"], meta["rows_written"], meta["cursor_now"]) == (
        "full",
        len(sim.meters()),
        "2026-03-15T06:00:00Z",
    )
    assert all(checks_of(full).values()), checks_of(full)
    before = lake.read(CUSTOMERS)

    clock.now = NOW + timedelta(days=40)
    changed = sim.changed_between(NOW, clock.now)
    assert changed  # the simulator's customers do change within 40 days
    # A new process: a new Dagster instance and new clients, only the lake in common.
    with dg.instance_for_test() as second_process:
        later = run([billing.customers], billing_resources(billing_server, lake), second_process)
    meta = metadata_of(later, "customers")
    assert (meta["sync"], meta["changed_since"], meta["rows_received"]) == (
        "incremental",
        "2026-03-15T06:00:00Z",
        len(changed),
    )
    assert sim.last_changed_since == "2026-03-15T06:00:00Z"
    after = lake.read(CUSTOMERS)
    assert after.height == before.height
    moved = after.filter(pl.col("updated_at") > NOW)["customer_id"].to_list()
    assert set(moved) == changed
    unchanged = after.filter(~pl.col("customer_id").is_in(list(changed)))
    assert unchanged.equals(before.filter(~pl.col("customer_id").is_in(list(changed))))
    state = json.loads((Path(lake.root) / billing.CURSOR_KEY).read_text())
    assert state["changed_since"] == "2026-04-24T06:00:00Z" and state["customers"] == len(sim.meters())


def test_a_rejected_customer_holds_the_cursor_back(resources, instance, lake, sim):
    sim.inject("wrong_types", CUSTOMERS_PATH)
    result = run([billing.customers], resources, instance)
    meta = metadata_of(result, "customers")
    assert (meta["rows_received"], meta["rows_rejected"], meta["cursor_now"]) == (len(sim.meters()), 1, "beginning")
    assert lake.read(rejects_table(CUSTOMERS))["field"].to_list() == ["connected_on"]
    again = run([billing.customers], resources, instance)
    assert metadata_of(again, "customers")["sync"] == "full"
    assert lake.read(CUSTOMERS).height == len(sim.meters()) and lake.read(rejects_table(CUSTOMERS)).height == 0


def test_no_name_address_or_raw_phone_lands_anywhere_in_the_lake(resources, instance, lake, sim):
    sim.inject("wrong_types", CUSTOMERS_PATH)  # a reject too: its raw payload must be clean as well
    run([billing.customers], resources, instance, checks=False)
    records = sim.customers()
    personal = {r["name"] for r in records} | {r["address"] for r in records}
    phones = {r["phone"] for r in records} | {normalize_phone(r["phone"]) for r in records}
    phones |= {p.replace("-", "") for p in phones}
    texts: list[str] = []
    for path in sorted(Path(lake.root).rglob("*.parquet")):
        frame = pl.read_parquet(path)
        for column, dtype in frame.schema.items():
            if dtype == pl.String:
                texts.extend(v for v in frame[column].to_list() if v)
    texts.append((Path(lake.root) / billing.CURSOR_KEY).read_text())
    blob = "\n".join(texts)
    assert "C-0001-0003" in blob  # the scan does see the customer files
    leaked = [value for value in personal | phones if value in blob]
    assert leaked == []
    for surname in ("Jaidee", "Srisuk", "Wongsawat", "Boonmee"):
        assert surname not in blob
    hashes = dict(lake.read(CUSTOMERS).select("customer_id", "phone_hash").iter_rows())
    first = records[0]
    expected = hmac.new(KEY.encode(), normalize_phone(first["phone"]).encode(), hashlib.sha256).hexdigest()
    assert hashes.get(first["customer_id"], expected) == expected  # (None only if it was the rejected one)


def test_an_outage_fails_the_run_naming_the_endpoint(billing_server, resources, instance, lake, sim):
    sim.inject("status", READINGS_PATH, count=10, status=503)
    one_retry = billing_resources(billing_server, lake, max_retries=1)
    result = run(
        [billing.meter_readings], one_retry, instance, ("2026-03-01", "2026-03-01"), raise_on_error=False, checks=False
    )
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith("billing: could not load meter readings for partition 2026-03-01")
    assert READINGS_PATH in description and "503" in description
    assert lake.read(METER_READINGS).height == 0


def test_billing_is_in_the_hub_with_its_jobs_and_schedules():
    from orchestration.billing import billing_monthly_schedule as billing_monthly
    from orchestration.billing import billing_readings_daily
    from orchestration.definitions import defs

    keys = {k.to_user_string() for k in defs.resolve_asset_graph().get_all_asset_keys()}
    assert {"billing/meter_readings", "billing/consumption_monthly", "billing/customers"} <= keys
    assert {"billing", "billing_pii"} <= set(defs.resources)
    tick = datetime(2026, 3, 15, 1, 30, tzinfo=UTC)
    context = dg.build_schedule_context(scheduled_execution_time=tick, repository_def=defs.get_repository_def())
    (request,) = billing_readings_daily.evaluate_tick(context).run_requests
    assert request.partition_key == "2026-03-14"  # the day closed at midnight
    tick = datetime(2026, 4, 2, 2, tzinfo=UTC)
    context = dg.build_schedule_context(scheduled_execution_time=tick, repository_def=defs.get_repository_def())
    (request,) = billing_monthly.evaluate_tick(context).run_requests
    assert request.partition_key == "2026-03-01"  # March, closed on the 1st


def test_reordered_duplicated_and_mistyped_answers(resources, instance, lake, sim):
    keys = ("2026-03-02", "2026-03-02")
    clean = metadata_of(run([billing.meter_readings], resources, instance, keys, checks=False), "meter_readings")
    landed = lake.read(METER_READINGS)
    sim.inject("out_of_order", READINGS_PATH)
    run([billing.meter_readings], resources, instance, keys, checks=False)
    assert lake.read(METER_READINGS).equals(landed)
    # The answer starts with the baseline day (1 March): its repeated first row is the baseline's own
    # business, judged when that day is loaded; this day lands exactly as before.
    sim.inject("duplicates", READINGS_PATH)
    twice = metadata_of(run([billing.meter_readings], resources, instance, keys, checks=False), "meter_readings")
    assert (twice["rows_received"], twice["rows_rejected"]) == (clean["rows_received"], 0)
    assert lake.read(METER_READINGS).equals(landed)
    # A baseline row whose date reads "yesterday" cannot be placed: it is rejected here, and its meter's
    # consumption on 2 March cannot be computed (no previous reading), rather than guessed.
    sim.inject("wrong_types", READINGS_PATH)
    spoilt = metadata_of(run([billing.meter_readings], resources, instance, keys, checks=False), "meter_readings")
    assert (spoilt["rows_received"], spoilt["rows_written"], spoilt["rows_rejected"]) == (
        clean["rows_received"] + 1,
        clean["rows_written"],
        1,
    )
    rejected = lake.read(rejects_table(METER_READINGS))
    assert rejected["field"].to_list() == ["reading_date"] and "yesterday" in rejected["reason"][0]
    first_meter = sim.meters()[0]["meter_id"]
    assert reading(lake, first_meter, "2026-03-02")["consumption_m3"] is None


def test_a_new_hash_key_rehashes_every_customer(billing_server, resources, instance, lake, sim):
    run([billing.customers], resources, instance, checks=False)
    old = dict(lake.read(CUSTOMERS).select("customer_id", "phone_hash").iter_rows())
    rotated = {**resources, "billing_pii": CustomerPseudonymizer(hash_key=KEY + "-rotated")}
    result = run([billing.customers], rotated, instance, checks=False)
    meta = metadata_of(result, "customers")
    assert meta["sync"] == "full" and meta["full_sync_reason"].startswith("BILLING_PII_HASH_KEY changed")
    new = dict(lake.read(CUSTOMERS).select("customer_id", "phone_hash").iter_rows())
    assert new.keys() == old.keys() and all(new[c] != old[c] for c in new)
