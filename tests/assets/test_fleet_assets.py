"""Fleet positions and trips: a simulated day of telemetry written through the collector's decoder and spool,
landed by real Dagster runs, and compared with what the simulator says the trucks did."""

from __future__ import annotations

import asyncio
import itertools
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from assets import fleet
from assets.partitions import daily
from collector.mqtt import FleetTopic, MessageDecoder, MqttBrokerConfig
from collector.spool import Spool
from contracts.fleet import POSITIONS, TRIPS
from quality.conform import rejects_table
from quality.fleet import fleet_checks
from resources.fleet import FleetSettings
from resources.lake import Lake
from resources.scada_spool import ScadaWindows
from simulators.fleet import FleetConfig, FleetDay, FleetSimulator, Message
from simulators.plant_network import PLANTS

DAY = datetime(2026, 3, 1, tzinfo=UTC)
KEY = "2026-03-01"
CONFIG = FleetConfig(trucks=4, seed=11, interval_s=60)


@pytest.fixture(scope="module")
def simulated() -> FleetDay:
    return FleetSimulator(CONFIG).day(DAY)


def spool_messages(messages: list[Message], root: Path) -> None:
    """Decode and spool the messages exactly as the collector's MQTT reader does, received 2 s after each
    fix in the order they were published (so out-of-order ones arrive after their successor)."""
    decoder = MessageDecoder(
        MqttBrokerConfig(name="fleet-gw", fleet=FleetTopic(), dead_letter_path=root.parent / "dead-letters.jsonl")
    )
    points, last = [], 0
    for message in messages:
        received = max(last + 1, int(message.ts.timestamp() * 1_000_000) + 2_000_000)
        last = received
        decoded, reason = decoder.decode(message.topic, message.payload, received)
        assert reason is None, reason
        points.extend(decoded)

    # The spool's clock follows the receipts, so each point is filed under the window it was received in.
    now = [points[0].received_ts_us / 1e6]
    window_us = 300 * 1_000_000
    by_window: dict[int, list] = {}
    for point in points:
        by_window.setdefault(point.received_ts_us // window_us, []).append(point)

    async def write() -> None:
        async with Spool(root, window_s=300, fsync=False, seal_delay_s=0, clock=lambda: now[0]) as spool:
            for index, chunk in sorted(by_window.items()):
                now[0] = index * 300 + 1
                await spool.append(chunk)
            now[0] = max(by_window) * 300 + 301  # the last window is over: every window is sealed and published
            spool.seal_due()

    asyncio.run(write())


@pytest.fixture(scope="module")
def landed(simulated, tmp_path_factory):
    """The simulated day spooled and landed once (positions, trips and their checks), shared by the tests
    that only read what it wrote."""
    base = tmp_path_factory.mktemp("fleet-day")
    spool_messages(simulated.messages, base / "spool")
    lake = Lake(root=str(base / "lake"))
    with dg.instance_for_test() as instance:
        metadata, result = land(base / "spool", lake, instance, checks=True)
        yield base / "spool", lake, metadata, result


def resources(spool: Path, lake: Lake, **settings) -> dict:
    return {"scada_spool": ScadaWindows(root=str(spool)), "fleet": FleetSettings(**settings), "lake": lake}


def land(spool: Path, lake: Lake, instance, key: str = KEY, checks: bool = False, trips: bool = True, **settings):
    result = dg.materialize(
        [fleet.positions, *([fleet.trips] if trips else []), *(fleet_checks(daily) if checks else [])],
        partition_key=key,
        resources=resources(spool, lake, **settings),
        instance=instance,
    )
    assert result.success
    return {
        event.materialization.asset_key.to_user_string(): event.materialization.metadata
        for event in result.get_asset_materialization_events()
    }, result


def value(metadata, name: str):
    return metadata[name].value


def test_a_simulated_day_lands_every_fix_and_the_trips_the_trucks_drove(simulated, landed):
    _, lake, metadata, result = landed

    positions = lake.read(POSITIONS)
    assert positions.height == simulated.positions_expected
    assert positions.select("truck_id", "ts").n_unique() == positions.height
    moved = metadata["fleet/positions"]
    assert value(moved, "rows_received") == len(simulated.messages)
    assert value(moved, "rows_received") == value(moved, "rows_written") + value(moved, "rows_rejected")
    assert value(moved, "duplicates_rejected") == simulated.duplicates
    assert value(moved, "teleports_rejected") == len(simulated.teleports)

    trips = lake.read(TRIPS).sort("arrived_at", "truck_id")
    truth = simulated.trips
    assert len(truth) >= 6  # the day is busy enough to mean something
    assert trips.height == len(truth)
    assert trips.select("truck_id", "origin_plant_id", "destination_plant_id").rows() == [
        (t.truck_id, t.origin, t.destination) for t in truth
    ]
    assert trips["departed_at"].to_list() == [t.departed_at for t in truth]
    assert trips["arrived_at"].to_list() == [t.arrived_at for t in truth]
    for row, trip in zip(trips.iter_rows(named=True), truth, strict=True):
        assert row["load_t"] == pytest.approx(trip.load_t, abs=0.1)
        assert row["distance_km"] == pytest.approx(trip.distance_km, rel=0.02)
    derived = metadata["fleet/trips"]
    assert value(derived, "rows_written") == len(truth)
    assert value(derived, "geofences_from").endswith("fleet_geofences.yaml")
    assert value(derived, "tonnes_delivered") == pytest.approx(sum(t.load_t for t in truth), abs=0.5)

    checks = {(e.asset_key.path[-1], e.check_name): e.passed for e in result.get_asset_check_evaluations()}
    assert checks and all(checks.values()), checks


def test_a_teleport_is_rejected_with_its_reason_and_does_not_touch_the_trips(simulated, landed):
    _, lake, _, _ = landed

    [(truck, at)] = simulated.teleports
    rejects = lake.read(rejects_table(POSITIONS)).filter(pl.col("field") == "lat,lon")
    assert rejects.height == 1
    reject = rejects.row(0, named=True)
    payload = json.loads(reject["raw_payload"])
    assert (payload["truck_id"], datetime.fromisoformat(payload["ts"])) == (truck, at)
    assert reject["reason"].startswith("GPS jump: 3")  # ~300 km
    assert "km/h, over the 150 km/h a truck can do" in reject["reason"]
    assert lake.read(POSITIONS).filter((pl.col("truck_id") == truck) & (pl.col("ts") == at)).height == 0
    assert lake.read(TRIPS).height == len(simulated.trips)


def test_duplicates_land_once_and_out_of_order_fixes_are_sorted(simulated, landed):
    assert simulated.duplicates > 0 and simulated.out_of_order > 0
    _, lake, _, _ = landed

    positions = lake.read(POSITIONS)
    assert positions.select("truck_id", "ts").is_duplicated().sum() == 0
    for _, fixes in positions.group_by("truck_id"):
        assert fixes["ts"].is_sorted()
    # The simulator really sent some fixes after their successor (the lake has them in place regardless).
    sent: dict[str, list[datetime]] = {}
    for message in simulated.messages:
        sent.setdefault(message.truck_id, []).append(message.ts)
    assert any(later < earlier for times in sent.values() for earlier, later in itertools.pairwise(times))
    duplicates = lake.read(rejects_table(POSITIONS)).filter(pl.col("field") == "truck_id,ts")
    assert duplicates.height == simulated.duplicates
    assert duplicates["reason"].str.contains("duplicate of another row").all()


def test_a_dropout_in_the_middle_of_a_trip_does_not_split_it(simulated, tmp_path, lake, instance):
    trip = max(simulated.trips, key=lambda t: t.arrived_at - t.departed_at)
    quiet_from, quiet_to = trip.departed_at + timedelta(minutes=20), trip.arrived_at - timedelta(minutes=20)
    assert quiet_to - quiet_from > timedelta(hours=1)  # far longer than the simulator's own dropouts
    kept = [m for m in simulated.messages if not (m.truck_id == trip.truck_id and quiet_from <= m.ts < quiet_to)]
    spool_messages(kept, tmp_path / "spool")
    land(tmp_path / "spool", lake, instance)

    trips = lake.read(TRIPS)
    assert trips.height == len(simulated.trips)
    [row] = trips.filter((pl.col("truck_id") == trip.truck_id) & (pl.col("departed_at") == trip.departed_at)).rows(
        named=True
    )
    assert (row["origin_plant_id"], row["destination_plant_id"], row["arrived_at"]) == (
        trip.origin,
        trip.destination,
        trip.arrived_at,
    )
    assert row["fixes"] < (trip.arrived_at - trip.departed_at) / timedelta(seconds=CONFIG.interval_s) - 60


def test_rerunning_a_partition_replaces_it(landed, instance):
    spool, lake, _, _ = landed
    first_positions, first_trips = lake.read(POSITIONS), lake.read(TRIPS)
    first_rejects = lake.read(rejects_table(POSITIONS))
    land(spool, lake, instance)
    assert lake.read(POSITIONS).equals(first_positions)
    assert lake.read(TRIPS).equals(first_trips)
    assert lake.read(rejects_table(POSITIONS)).height == first_rejects.height
    assert len(lake.files(POSITIONS)) == 1 and len(lake.files(TRIPS)) == 1


def test_the_erps_plants_are_preferred_to_the_geofence_file_once_they_are_in_the_lake(
    simulated, landed, lake, instance
):
    # The ERP names its plants its own way; the fleet must follow the ERP's plant master, not its own file.
    from contracts.erp import PLANTS as ERP_PLANT_MASTER

    n = len(PLANTS)
    plants = pl.DataFrame(
        {
            "plant_id": [f"P-{p.plant_id}" for p in PLANTS],
            "plant_kind": [p.kind for p in PLANTS],
            "name": [p.name for p in PLANTS],
            "city": [p.city for p in PLANTS],
            "latitude_deg": [p.latitude for p in PLANTS],
            "longitude_deg": [p.longitude for p in PLANTS],
            "clinker_capacity_t_per_month": [Decimal("90000.000") if p.kind == "IU" else None for p in PLANTS],
            "production_cost_inr_per_t": [Decimal("3200.00") if p.kind == "IU" else None for p in PLANTS],
            "opening_stock_t": [Decimal("1000.000")] * n,
            "safety_stock_t": [Decimal("200.000")] * n,
            "max_stock_t": [Decimal("5000.000")] * n,
            "changed_at": [datetime(2026, 1, 1, tzinfo=UTC)] * n,
        }
    )
    # Written as the ERP source writes it: the fleet must read the ERP's own columns.
    lake.replace_snapshot(ERP_PLANT_MASTER, plants)
    spool, *_ = landed  # the same published windows, read into a lake of its own
    metadata, _ = land(spool, lake, instance)

    trips = lake.read(TRIPS).sort("arrived_at", "truck_id")
    assert value(metadata["fleet/trips"], "geofences_from") == "raw.erp_plants"
    assert trips.select("origin_plant_id", "destination_plant_id").rows() == [
        (f"P-{t.origin}", f"P-{t.destination}") for t in simulated.trips
    ]


def test_a_loaded_truck_that_comes_back_without_unloading_is_refused_with_the_reason(lake):
    home = next(p for p in PLANTS if p.plant_id == "IU01")
    start = DAY + timedelta(hours=6)
    fixes = []
    # Loaded in the yard, 30 km out along a meridian, then back into the yard still loaded.
    for minute in range(0, 90):
        out = minute if minute <= 45 else 90 - minute
        fixes.append((start + timedelta(minutes=minute), home.latitude + out * 0.006, home.longitude, 30.0))
    track = pl.DataFrame(
        {
            "truck_id": ["TRK99"] * len(fixes),
            "ts": [f[0] for f in fixes],
            "lat": [f[1] for f in fixes],
            "lon": [f[2] for f in fixes],
            "speed_kmh": [40.0] * len(fixes),
            "load_t": [f[3] for f in fixes],
            "fuel_pct": [50.0] * len(fixes),
            "received_at": [f[0] for f in fixes],
            "broker": ["gw"] * len(fixes),
        }
    )
    fences = FleetSettings().geofences(lake)
    trips, refused = fleet.derive_trips(POSITIONS.conform(track), fences.frame, unloaded_below_t=5.0)
    assert trips.height == 0
    [reason] = [r["reason"] for r in refused]
    assert reason.startswith("left IU01 loaded (30.0 t) at 2026-03-01T06:")
    assert reason.endswith("without unloading at another plant")


def test_a_day_with_nothing_published_fails_naming_the_spool(tmp_path, lake, instance):
    (tmp_path / "spool").mkdir()
    result = dg.materialize(
        [fleet.positions],
        partition_key=KEY,
        resources=resources(tmp_path / "spool", lake),
        instance=instance,
        raise_on_error=False,
    )
    assert not result.success
    [failure] = [e for e in result.all_events if e.is_step_failure]
    message = failure.step_failure_data.error.message
    assert "fleet: no window received between 2026-03-01T00:00Z and 2026-03-02T06:00Z" in message
    assert str(tmp_path / "spool") in message


def test_the_first_fix_of_a_day_is_judged_against_the_last_good_fix_of_the_day_before(tmp_path, lake, instance):
    two_days = FleetSimulator(FleetConfig(trucks=2, seed=4, interval_s=120, teleports=0)).day(
        DAY, DAY + timedelta(days=2)
    )
    second = DAY + timedelta(days=1)
    first_of_day = next(m for m in two_days.messages if m.truck_id == "TRK01" and m.ts >= second)
    glitch = {**json.loads(first_of_day.payload), "lat": 27.9, "lon": 74.6}  # ~300 km north of anywhere it drives
    messages = [
        Message(m.topic, json.dumps(glitch).encode(), m.truck_id, m.ts) if m is first_of_day else m
        for m in two_days.messages
    ]
    spool_messages(messages, tmp_path / "spool")
    land(tmp_path / "spool", lake, instance, key="2026-03-01", trips=False)
    land(tmp_path / "spool", lake, instance, key="2026-03-02", trips=False)

    jumps = lake.read(rejects_table(POSITIONS), second, second + timedelta(days=1)).filter(pl.col("field") == "lat,lon")
    assert jumps.height == 1
    assert json.loads(jumps["raw_payload"][0])["ts"].startswith(f"{first_of_day.ts:%Y-%m-%dT%H:%M:%S}")
    assert "from the fix at 23:" in jumps["reason"][0]  # the truck's last fix of the day before
