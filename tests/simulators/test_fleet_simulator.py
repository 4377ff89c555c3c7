"""The fleet simulator: deterministic, realistic trucks, its own faults counted, and publishing paced to a clock."""

from __future__ import annotations

import json
import shutil
import time
from datetime import UTC, datetime, timedelta

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from simulators.fleet import FleetConfig, FleetSimulator, publish
from simulators.plant_network import PLANTS, haversine_km, plant

DAY = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def day():
    return FleetSimulator(FleetConfig(trucks=6, seed=7, interval_s=30)).day(DAY)


def fixes(day, truck: str | None = None) -> list[dict]:
    return [json.loads(m.payload) for m in day.messages if truck is None or m.truck_id == truck]


def test_the_same_seed_gives_the_same_day_and_a_new_truck_leaves_the_others_alone():
    def morning(trucks: int = 6, seed: int = 7):
        return FleetSimulator(FleetConfig(trucks=trucks, seed=seed, interval_s=60)).day(DAY, DAY + timedelta(hours=8))

    first = morning()
    assert [m.payload for m in morning().messages] == [m.payload for m in first.messages]
    assert first.trips
    assert [t for t in morning(trucks=7).trips if t.truck_id != "TRK07"] == first.trips
    assert [m.payload for m in morning(seed=8).messages] != [m.payload for m in first.messages]


def test_trucks_carry_clinker_from_integrated_units_to_grinding_units_and_hubs(day):
    assert len(day.trips) >= 10
    for trip in day.trips:
        assert plant(trip.origin).kind == "IU" and plant(trip.destination).kind in ("GU", "HUB")
        assert 25 <= trip.load_t <= 35
        hours = (trip.arrived_at - trip.departed_at).total_seconds() / 3600
        # 50-70 km/h on the road, with rest stops: somewhat under the cruise speed on average.
        assert 40 <= trip.distance_km / hours <= 70, trip
        # The road winds: longer than the straight line between the plants, as the network says.
        a, b = plant(trip.origin), plant(trip.destination)
        assert trip.distance_km > 1.15 * haversine_km(a.latitude, a.longitude, b.latitude, b.longitude)


def test_speeds_loads_and_fuel_look_like_a_truck(day):
    sent = fixes(day, "TRK01")
    moving = [f["speed_kmh"] for f in sent if f["speed_kmh"] > 0]
    assert min(moving) >= 45 and max(moving) <= 75
    assert sum(f["speed_kmh"] == 0 for f in sent) > len(sent) / 4  # waits, loading, unloading, rest stops
    assert {f["load_t"] for f in sent} >= {0.0} and max(f["load_t"] for f in sent) <= 35.5
    fuel = [f["fuel_pct"] for f in sent]
    assert all(0 < f <= 100 for f in fuel)
    assert fuel[-1] != fuel[0]  # it burns with the distance (and refuels at home when low)


def test_a_stationary_truck_jitters_by_a_few_metres(day):
    yard = [f for f in fixes(day, "TRK02")[:60] if f["speed_kmh"] == 0]
    centre_lat = sum(f["lat"] for f in yard) / len(yard)
    centre_lon = sum(f["lon"] for f in yard) / len(yard)
    spread_m = [1000 * haversine_km(centre_lat, centre_lon, f["lat"], f["lon"]) for f in yard]
    assert 0 < max(spread_m) < 25


def test_its_own_bad_data_is_there_and_counted(day):
    [(truck, at)] = day.teleports
    sent = {m.ts: json.loads(m.payload) for m in day.messages if m.truck_id == truck}
    before, jump = sent[at - timedelta(seconds=30)], sent[at]
    assert haversine_km(before["lat"], before["lon"], jump["lat"], jump["lon"]) == pytest.approx(300, abs=2)
    assert day.duplicates > 0 and day.out_of_order > 0 and day.dropouts
    assert len(day.messages) == day.fixes + day.duplicates
    for truck_id, quiet_from, quiet_to in day.dropouts:
        assert quiet_to - quiet_from >= timedelta(seconds=30)
        assert not [m for m in day.messages if m.truck_id == truck_id and quiet_from <= m.ts < quiet_to]
    # No dropout near a plant: every stop at a plant is seen.
    for truck_id, quiet_from, _ in day.dropouts:
        last = [json.loads(m.payload) for m in day.messages if m.truck_id == truck_id and m.ts < quiet_from][-1]
        assert min(haversine_km(last["lat"], last["lon"], p.latitude, p.longitude) for p in PLANTS) > 4


def test_publishing_is_paced_to_a_compressed_clock():
    if shutil.which("mosquitto") is None:
        pytest.skip("mosquitto is not installed")
    from simulators.mqtt_broker import MosquittoProcess

    hour = FleetSimulator(FleetConfig(trucks=2, seed=3, interval_s=60)).day(DAY, DAY + timedelta(hours=1))
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    received: list[bytes] = []
    with MosquittoProcess(config=None).start() as broker:
        listener = paho.Client(CallbackAPIVersion.VERSION2)
        listener.on_message = lambda client, userdata, message: received.append(message.payload)
        listener.connect(broker.host, broker.port)
        listener.subscribe("fleet/+/telemetry", qos=1)
        listener.loop_start()
        try:
            sent = publish(
                hour.messages, broker.host, broker.port, speedup=600, start=DAY, clock=lambda: now[0], sleep=sleep
            )
            deadline = time.monotonic() + 10
            while len(received) < sent and time.monotonic() < deadline:
                time.sleep(0.05)
        finally:
            listener.loop_stop()
            listener.disconnect()
    assert sent == len(hour.messages)
    # An hour of fixes took six compressed seconds: the last fix at 00:59 waited 59 min / 600.
    assert now[0] == pytest.approx(59 * 60 / 600)
    assert sorted(received) == sorted(m.payload for m in hour.messages)
