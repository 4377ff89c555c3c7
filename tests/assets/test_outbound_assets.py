"""Outbound assets materialized through Dagster against the billing and ERP simulators on loopback: what is
found, what is sent (once), what the ledger and the dead letters say, and what a re-run does."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb
import polars as pl
import pytest

from assets import billing as billing_assets
from assets import dmama as dmama_assets
from assets import outbound
from assets.catalog import analyst_catalog_asset
from assets.lake_tables import lake_tables_by_asset
from contracts.dmama import FLOW_READINGS
from contracts.outbound import DEAD_LETTERS, DELIVERIES
from contracts.scada import SCADA_POINTS
from quality.qartod import flag_points
from quality.timeseries import load_limits
from resources.billing import BillingClient
from resources.erp import ErpODataClient
from resources.lake import time_windows
from simulators.billing import ALERTS_PATH, READINGS_PATH, BillingConfig, serve_billing
from simulators.erp import SERVICE_PATH, ErpConfig, credentials_env, serve_erp

NOW = datetime(2026, 3, 15, 6, tzinfo=UTC)
DOWNTIME_PATH = f"{SERVICE_PATH}/EquipmentDowntimeSet"
CONFIRMATION_PATH = f"{SERVICE_PATH}/PlanConfirmationSet"


# One simulator per test: each test's lake starts empty, and so must what billing and the ERP have stored.
@pytest.fixture
def billing_server():
    with serve_billing(BillingConfig(), clock=lambda: NOW) as running:
        yield running


@pytest.fixture
def erp_server():
    with serve_erp(ErpConfig(now=lambda: NOW)) as running:
        yield running


@pytest.fixture
def bsim(billing_server):
    billing_server.simulator.clear_faults()
    yield billing_server.simulator
    billing_server.simulator.clear_faults()


@pytest.fixture
def esim(erp_server):
    erp_server.simulator.clear_faults()
    yield erp_server.simulator
    erp_server.simulator.clear_faults()


@pytest.fixture
def resources(billing_server, erp_server, lake):
    env = credentials_env(erp_server.url, erp_server.config)
    return {
        "billing": BillingClient(
            base_url=billing_server.url,
            username=billing_server.config.username,
            password=billing_server.config.password,
            backoff_base_s=0.01,
        ),
        "erp": ErpODataClient(
            base_url=env["ERP_ODATA_BASE_URL"],
            user=env["ERP_ODATA_USER"],
            password=env["ERP_ODATA_PASSWORD"],
            backoff_base_s=0.01,
        ),
        "lake": lake,
    }


def run(asset, resources, instance, keys=None, config=None, raise_on_error=True):
    tags = {}
    if keys is not None:
        tags = {"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[1]}
    run_config = {"ops": {f"outbound__{asset.key.path[-1]}": {"config": config}}} if config else None
    return dg.materialize(
        [asset], resources=resources, instance=instance, tags=tags, run_config=run_config, raise_on_error=raise_on_error
    )


def metadata(result) -> dict:
    event = result.get_asset_materialization_events()[0]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def check_passed(result) -> bool:
    return [e.passed for e in result.get_asset_check_evaluations()] == [True]


def ledger(lake, scope: str) -> pl.DataFrame:
    return lake.read(DELIVERIES).filter(pl.col("ledger_scope") == scope).sort("kind", "business_key")


def write_night_flow(lake) -> None:
    """Two DMAs, 10 m³/h day and night, except DMA-T1 at 16 m³/h through the night of 2026-03-05 (Bangkok)."""
    start, end = datetime(2026, 2, 25, tzinfo=UTC), datetime(2026, 3, 7, tzinfo=UTC)
    stamps = pl.datetime_range(start, end, "15m", closed="left", time_zone="UTC", eager=True)
    night = (stamps >= datetime(2026, 3, 4, 19, tzinfo=UTC)) & (stamps < datetime(2026, 3, 4, 21, tzinfo=UTC))
    frames = [
        pl.DataFrame(
            {
                "dma_id": dma,
                "timestamp": stamps,
                "flow_m3h": pl.Series([16.0 if (dma == "DMA-T1" and n) else 10.0 for n in night]),
                "pressure_bar": 3.0,
            }
        )
        for dma in ("DMA-T1", "DMA-T2")
    ]
    windows = time_windows(billing_assets.reading_days, start, end)
    lake.replace_partitions(FLOW_READINGS, pl.concat(frames), windows)


def land_billing_readings(resources, instance, sim) -> tuple[str, str]:
    """The real billing readings asset for 2026-03-01 … 03-06, a rollover on 03-05 and a decrease on 03-06."""
    rolled = sim.first_meter_with_digits(5)
    backwards = next(m["meter_id"] for m in sim.meters() if m["meter_id"] != rolled)
    assets = [billing_assets.meter_readings]
    dg.materialize(assets, resources=resources, instance=instance, tags=_range("2026-03-01", "2026-03-04"))
    sim.inject("rollover", READINGS_PATH, meter_id=rolled, date="2026-03-05")
    dg.materialize(assets, resources=resources, instance=instance, partition_key="2026-03-05")
    sim.inject("implausible_decrease", READINGS_PATH, meter_id=backwards, date="2026-03-06")
    dg.materialize(assets, resources=resources, instance=instance, partition_key="2026-03-06")
    return rolled, backwards


def _key_of(lake, kind: str) -> str:
    return lake.read(DELIVERIES).filter(pl.col("kind") == kind)["idempotency_key"][0]


def _range(first: str, last: str) -> dict:
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}


def test_alerts_reach_billing_once_and_a_rerun_sends_nothing(resources, instance, lake, bsim):
    write_night_flow(lake)
    rolled, backwards = land_billing_readings(resources, instance, bsim)
    # The first alert meets a 503 in front of billing, then a 500 after billing stored it: three attempts.
    bsim.inject("status", ALERTS_PATH, count=1, status=503)
    bsim.inject("commit_then_500", ALERTS_PATH, count=1)
    stored_before = len(bsim.alerts)
    result = run(outbound.billing_anomaly_alerts, resources, instance, keys=("2026-03-05", "2026-03-06"))
    new = bsim.alerts[stored_before:]
    by_kind = {(a["kind"], a.get("meter_id") or a["dma_id"], a["detected_on"]) for a in new}
    assert by_kind == {
        ("leak_suspicion", "DMA-T1", "2026-03-05"),
        ("meter_rollover", rolled, "2026-03-05"),
        ("reverse_flow", backwards, "2026-03-06"),
    }
    leak = next(a for a in new if a["kind"] == "leak_suspicion")
    assert leak["evidence"] == {"min_night_flow_m3h": 16.0, "baseline_m3h": 10.0, "baseline_nights": 7}
    assert leak["summary"] == "minimum night flow 16.0 m³/h, 60.0% above the 7 nights before (10.0 m³/h)"
    rollover = next(a for a in new if a["kind"] == "meter_rollover")
    assert (rollover["evidence"]["previous_register_m3"], rollover["evidence"]["register_m3"]) == (99_678.0, 123.0)
    assert rollover["evidence"]["consumption_m3"] == 445.0
    meta = metadata(result)
    assert (meta["messages"], meta["delivered"], meta["dead_letters"], meta["http_attempts"]) == (3, 3, 0, 5)
    assert (meta["replayed_by_target"], check_passed(result)) == (1, True)
    assert [p["outcome"] for p in bsim.posts_with_key(_key_of(lake, "leak_suspicion"))] == ["stored", "replayed"]

    rows = ledger(lake, "billing_anomaly_alerts.2026-03-05")
    assert rows.select("kind", "business_key", "result", "http_status", "attempts", "replayed").rows() == [
        ("leak_suspicion", "DMA-T1 night of 2026-03-05", "delivered", 200, 3, True),  # 503, 500 after commit, 200
        ("meter_rollover", f"{rolled} 2026-03-05", "delivered", 201, 1, False),
    ]
    assert rows["response_id"].to_list() == [
        next(a["alert_id"] for a in new if a["kind"] == k) for k in ("leak_suspicion", "meter_rollover")
    ]
    assert ledger(lake, "billing_anomaly_alerts.2026-03-06")["kind"].to_list() == ["reverse_flow"]

    posts = len(bsim.alert_posts)
    again = run(outbound.billing_anomaly_alerts, resources, instance, keys=("2026-03-05", "2026-03-06"))
    assert len(bsim.alert_posts) == posts  # nothing reached billing
    assert (metadata(again)["skipped_already_delivered"], metadata(again)["http_attempts"]) == (3, 0)


def test_a_refused_alert_is_a_dead_letter_until_a_rerun_after_the_fix(resources, instance, lake, bsim):
    write_night_flow(lake)
    bsim.inject("status", ALERTS_PATH, count=10, status=422)
    first = run(outbound.billing_anomaly_alerts, resources, instance, keys=("2026-03-05", "2026-03-05"))
    assert not check_passed(first)
    letters = lake.read(DEAD_LETTERS).filter(pl.col("ledger_scope") == "billing_anomaly_alerts.2026-03-05")
    assert letters.select("kind", "business_key", "dead_reason", "http_status", "attempts").rows() == [
        ("leak_suspicion", "DMA-T1 night of 2026-03-05", "rejected", 422, 1)
    ]
    bsim.clear_faults()
    stored = len(bsim.alerts)
    second = run(outbound.billing_anomaly_alerts, resources, instance, keys=("2026-03-05", "2026-03-05"))
    assert check_passed(second)
    assert (metadata(second)["delivered"], metadata(second)["dead_letters_resent"]) == (1, 1)
    assert [a["dma_id"] for a in bsim.alerts[stored:]] == ["DMA-T1"]
    assert lake.read(DEAD_LETTERS).filter(pl.col("ledger_scope") == "billing_anomaly_alerts.2026-03-05").height == 0
    row = ledger(lake, "billing_anomaly_alerts.2026-03-05").row(0, named=True)
    assert (row["result"], row["runs"], row["attempts"], row["http_status"]) == ("delivered", 2, 2, 201)


def scada_pump_points(day: datetime) -> pl.DataFrame:
    """PS09-P1 faulted 03:00-03:20 and from 23:50 on; PS09-P2 never; a COMM_FAIL reading in the middle."""
    signal = [
        ("PS09-P1", day - timedelta(minutes=30), 0.0, "GOOD"),
        ("PS09-P1", day + timedelta(hours=3), 1.0, "GOOD"),
        ("PS09-P1", day + timedelta(hours=3, minutes=10), None, "COMM_FAIL"),
        ("PS09-P1", day + timedelta(hours=3, minutes=20), 0.0, "GOOD"),
        ("PS09-P1", day + timedelta(hours=23, minutes=50), 1.0, "GOOD"),
        ("PS09-P2", day + timedelta(hours=1), 0.0, "GOOD"),
    ]
    measured = pl.DataFrame(
        {
            "source": "modbus",
            "device": "pump-station-9",
            "unit_id": [u for u, *_ in signal],
            "sensor_type": "pump_fault",
            "value": [v for _, _, v, _ in signal],
            "unit": None,
            "quality": [q for *_, q in signal],
            "source_ts": [t for _, t, _, _ in signal],
            "received_ts": [t + timedelta(seconds=1) for _, t, _, _ in signal],
        },
        schema={name: dtype for name, dtype in SCADA_POINTS.schema.items() if not name.startswith("qc_")},
    )
    return flag_points(measured, load_limits())  # as the scada/points asset lands them


def test_pump_downtime_reaches_the_erp_once_through_a_500_after_commit_and_an_expired_csrf_token(
    resources, instance, lake, esim
):
    day = datetime(2026, 3, 10, tzinfo=UTC)
    lake.replace_window(SCADA_POINTS, day - timedelta(hours=1), scada_pump_points(day))
    esim.inject("csrf_expired", DOWNTIME_PATH, count=1)
    before = len(esim.created("EquipmentDowntimeSet"))
    result = run(outbound.erp_pump_downtime, resources, instance, keys=("2026-03-10", "2026-03-10"))
    stored = esim.created("EquipmentDowntimeSet")[before:]
    assert [(r["Equipment"], r["StartedAt"], r["EndedAt"], r["DurationMin"], r["Ongoing"]) for r in stored] == [
        ("PS09-P1", day + timedelta(hours=3), day + timedelta(hours=3, minutes=20), 20, False),
        ("PS09-P1", day + timedelta(hours=23, minutes=50), None, 10, True),
    ]
    assert metadata(result)["downtime_intervals"] == 2

    # A 500 after the ERP committed, on a re-run from scratch (a lost ledger): the same keys, nothing new.
    lake.storage.delete(f"{lake.table_key(DELIVERIES, 'erp_pump_downtime.2026-03-10')}/snapshot.parquet")
    esim.inject("commit_then_500", DOWNTIME_PATH, count=1)
    again = run(outbound.erp_pump_downtime, resources, instance, keys=("2026-03-10", "2026-03-10"))
    assert len(esim.created("EquipmentDowntimeSet")) == before + 2
    rows = ledger(lake, "erp_pump_downtime.2026-03-10")
    assert rows.select("result", "http_status", "replayed").rows() == [("delivered", 200, True)] * 2
    assert rows["response_id"].to_list() == [r["DowntimeId"] for r in stored]
    assert metadata(again)["replayed_by_target"] == 2


def write_plan(lake, route: str) -> None:
    production = pl.DataFrame(
        {
            "scenario": ["base", "base", "high"],
            "plant_id": ["IU01", "IU02", "IU01"],
            "period_start": [datetime(2026, 4, 1).date()] * 3,
            "production_t": [12_000.5, 0.0, 15_000.0],
        }
    )
    shipments = pl.DataFrame(
        {"scenario": ["base"], "route_id": [route], "period_start": [datetime(2026, 4, 1).date()]}
    ).with_columns(shipped_t=pl.lit(800.0))
    # Where and how the supply plan asset writes them (contracts/supply_plan.py).
    for key, frame in ((outbound.PLAN_PRODUCTION, production), (outbound.PLAN_SHIPMENTS, shipments)):
        buffer = io.BytesIO()
        frame.write_parquet(buffer)
        lake.storage.write(f"{key}/snapshot.parquet", buffer.getvalue())


def test_a_plan_is_confirmed_only_when_approved_and_only_once(resources, instance, lake, esim):
    refused = run(outbound.erp_plan_confirmations, resources, instance, raise_on_error=False)
    assert not refused.success
    assert "not approved" in _failure(refused)
    approval = {"approve": True, "approver": "K. Planner", "scenario": "base"}
    absent = run(outbound.erp_plan_confirmations, resources, instance, config=approval, raise_on_error=False)
    assert "no supply plan in the lake" in _failure(absent)

    route = esim.network.routes[0].route_id
    write_plan(lake, route)

    before = len(esim.created("PlanConfirmationSet"))
    result = run(outbound.erp_plan_confirmations, resources, instance, config=approval)
    stored = esim.created("PlanConfirmationSet")[before:]
    assert [(r["LineType"], r["Plant"], r["RouteId"], str(r["Quantity"]), r["ApprovedBy"]) for r in stored] == [
        ("PRODUCTION", "IU01", None, "12000.500", "K. Planner"),
        ("SHIPMENT", None, route, "800.000", "K. Planner"),
    ]
    meta = metadata(result)
    assert (meta["production_lines"], meta["shipment_lines"], meta["delivered"]) == (1, 1, 2)
    assert stored[0]["PlanId"] == meta["plan_id"] and meta["plan_id"].startswith("base-")
    again = run(outbound.erp_plan_confirmations, resources, instance, config=approval)
    assert len(esim.created("PlanConfirmationSet")) == before + 2
    assert metadata(again)["skipped_already_delivered"] == 2


def test_overlapping_plans_of_two_months_are_confirmed_one_plan_at_a_time(resources, instance, lake, esim):
    route = esim.network.routes[0].route_id
    april, may = datetime(2026, 4, 1).date(), datetime(2026, 5, 1).date()
    production = pl.DataFrame(
        {
            "scenario": ["base"] * 3,
            "plan_start": [april, april, may],
            "plant_id": ["IU01", "IU01", "IU01"],
            "period_start": [april, may, may],  # both plans cover May
            "production_t": [10_000.0, 11_000.0, 9_500.0],
        }
    )
    shipments = pl.DataFrame(
        {"scenario": ["base"], "plan_start": [may], "route_id": [route], "period_start": [may], "shipped_t": [700.0]}
    )
    for key, frame in ((outbound.PLAN_PRODUCTION, production), (outbound.PLAN_SHIPMENTS, shipments)):
        buffer = io.BytesIO()
        frame.write_parquet(buffer)
        lake.storage.write(f"{key}/snapshot.parquet", buffer.getvalue())
    latest, _ = outbound.read_supply_plan(lake, "base")
    assert latest.rows() == [("IU01", may, 9_500.0)]  # the latest plan, not a mix with April's view of May
    first, first_shipments = outbound.read_supply_plan(lake, "base", "2026-04")
    assert first.rows() == [("IU01", april, 10_000.0), ("IU01", may, 11_000.0)]
    assert first_shipments.height == 0


def _failure(result) -> str:
    return next(e.step_failure_data.error.message for e in result.all_events if e.is_step_failure)


def test_the_ledger_is_in_the_analyst_catalog(resources, instance, lake, bsim, analyst_catalog):
    write_night_flow(lake)
    run(outbound.billing_anomaly_alerts, resources, instance, keys=("2026-03-05", "2026-03-05"))
    # With DMAMA's tables: the catalog's night-flow view reads them.
    sources = [dmama_assets.dmas, dmama_assets.flow_readings, *outbound.ASSETS]
    catalog = analyst_catalog_asset(lake_tables_by_asset(sources))
    dg.materialize([catalog], resources={"catalog": analyst_catalog, "lake": lake}, instance=instance)
    with duckdb.connect(analyst_catalog.path, read_only=True) as con:
        rows = con.execute("SELECT kind, result, http_status FROM outbound.deliveries").fetchall()
        comment = con.execute(
            "SELECT comment FROM duckdb_columns() WHERE table_name = 'deliveries' AND column_name = 'idempotency_key'"
        ).fetchall()[0][0]
        dead = con.execute("SELECT count(*) FROM outbound.dead_letters").fetchall()[0][0]
    assert rows == [("leak_suspicion", "delivered", 201)]
    assert comment.startswith("sha256 of target, kind and business key")
    assert dead == 0


def test_a_meter_is_told_stopped_once_on_the_day_its_zero_run_reaches_the_threshold():
    days = [datetime(2026, 3, d, tzinfo=UTC).date() for d in range(1, 8)]
    used = {"M-0001-0001": [1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0], "M-0001-0002": [0.0] * 7}
    readings = pl.DataFrame(
        [
            {
                "meter_id": meter,
                "dma_id": "DMA-0001",
                "reading_date": day,
                "consumption_m3": c,
                "register_rollover": False,
                "previous_register_m3": 0.0,
                "register_m3": 0.0,
                "register_digits": 5,
            }
            for meter, series in used.items()
            for day, c in zip(days, series, strict=True)
        ]
    )
    empty_rejects = pl.DataFrame(schema={"field": pl.String, "row_number": pl.Int64, "raw_payload": pl.String})
    told = {
        day.day: [(m.kind, m.business_key) for m in outbound.meter_anomalies(readings, empty_rejects, day, 3)]
        for day in days
    }
    # M-0001-0001 stops on the 2nd and is told on the 4th only; M-0001-0002 never used water since the 1st:
    # its run reaches three days on the 3rd, when it has no reading before the run to compare with.
    assert told == {
        1: [],
        2: [],
        3: [("stopped_meter", "M-0001-0002 stopped since 2026-03-01")],
        4: [("stopped_meter", "M-0001-0001 stopped since 2026-03-02")],
        5: [],
        6: [],
        7: [],
    }
