"""SCADA gateway simulator: the readings it makes (no network), then what it publishes to a real Mosquitto."""

from __future__ import annotations

import asyncio
import itertools
import json
import statistics
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from collector.mqtt import build_reader
from simulators.mqtt_broker import MosquittoProcess
from simulators.scada_gateway import RANGES, SENSORS, UNITS, GatewayConfig, GatewaySimulator, Reading, Scenario
from tests.collector.test_mqtt import Collected, config, require_mosquitto, run, running, until

START = datetime(2026, 3, 1, tzinfo=UTC)  # 07:00 in Bangkok
START_US = 1772323200000000
ROUNDS_PER_DAY = 24 * 3600 // 5


def day_of_readings(hours: float = 24, **overrides: object) -> list[Reading]:
    settings: dict[str, object] = {"start": START, "seed": 7, **overrides}
    simulator = GatewaySimulator(GatewayConfig(**settings))  # type: ignore[arg-type]
    rounds = int(ROUNDS_PER_DAY * hours / 24)
    return list(itertools.islice(simulator.readings(), rounds * len(UNITS) * len(SENSORS)))


def series(readings: list[Reading], unit: str, sensor: str) -> list[Reading]:
    return [r for r in readings if r.unit == unit and r.sensor == sensor]


def test_the_same_seed_gives_the_same_readings_and_another_seed_others() -> None:
    def first(seed: int) -> list[Reading]:
        sim = GatewaySimulator(GatewayConfig(start=START, seed=seed))
        return list(itertools.islice(sim.readings(), 2000))

    assert first(1) == first(1)
    assert [r.value for r in first(1)] != [r.value for r in first(2)]
    # Every reading of a round shares the round's time; rounds are interval_s apart.
    readings = first(1)
    assert readings[0].ts_us == 1772323200000000
    assert {r.ts_us for r in readings[:20]} == {1772323200000000}
    assert readings[20].ts_us == 1772323200000000 + 5_000_000


def test_values_stay_in_their_ranges_and_follow_the_day() -> None:
    readings = day_of_readings(outlier_share=0.0, status_changes=False)
    for sensor in SENSORS:
        low, high = RANGES[sensor]
        values = [r.value for r in readings if r.sensor == sensor and r.value is not None]
        assert low <= min(values) and max(values) <= high, sensor
    # Flow follows residential demand in Bangkok time: the 06-08 peak is well above the 02-04 trough.
    flow = series(readings, "UNIT002", "flow")

    def mean_flow(local_from: int, local_to: int) -> float:
        picked = [r.value for r in flow if local_from <= (r.ts_us // 3_600_000_000 + 7) % 24 < local_to]
        return statistics.fmean(v for v in picked if v is not None)

    assert mean_flow(6, 8) > 1.3 * mean_flow(2, 4)
    # Pressure drops when demand peaks (head loss).
    pressure = [r.value for r in series(readings, "UNIT002", "pressure")]
    flows = [r.value for r in flow]
    assert statistics.correlation(flows, pressure) < -0.3  # type: ignore[arg-type]


def test_quality_shares_and_outliers_are_configurable() -> None:
    readings = day_of_readings(hours=4, bad_quality_share=0.05, outlier_share=0.0, status_changes=False)
    qualities = Counter(r.quality for r in readings)
    assert 0.04 < qualities["BAD"] / len(readings) < 0.06
    assert qualities.keys() == {"GOOD", "BAD"}

    spiky = day_of_readings(hours=4, bad_quality_share=0.0, outlier_share=0.02, status_changes=False)
    over = [r for r in spiky if r.value is not None and r.value > RANGES[r.sensor][1]]
    assert len(over) > 0.005 * len(spiky)


def test_units_change_status_and_an_offline_unit_is_silent_or_bad() -> None:
    readings = day_of_readings()
    changes = [r for r in readings if r.sensor == "status"]
    assert changes and {c.status for c in changes} <= {"online", "offline", "maintenance"}
    # Every outage ends with the unit back online, and an offline unit publishes nothing meanwhile.
    unit, went_offline = next((c.unit, c.ts_us) for c in changes if c.status == "offline")
    back = next(c.ts_us for c in changes if c.unit == unit and c.status == "online" and c.ts_us > went_offline)
    assert not [r for r in readings if r.unit == unit and r.sensor != "status" and went_offline <= r.ts_us < back]
    bad = day_of_readings(hours=(back - START_US) / 3.6e9 + 0.1, offline="bad")
    during = [r for r in bad if r.unit == unit and r.sensor != "status" and went_offline <= r.ts_us < back]
    assert during and {r.quality for r in during} == {"BAD"}
    maintenance = next((c for c in changes if c.status == "maintenance"), None)
    if maintenance is not None:
        after = [r for r in readings if r.unit == maintenance.unit and r.ts_us == maintenance.ts_us + 5_000_000]
        assert {r.quality for r in after} == {"UNCERTAIN"}


def test_scenarios_change_what_the_units_report() -> None:
    hot = day_of_readings(
        hours=1, status_changes=False, outlier_share=0.0, scenarios=[Scenario.parse("high_temperature@60+600")]
    )
    temps = series(hot, "UNIT001", "temperature")
    during = [r.value for r in temps if 360 * 1e6 <= r.ts_us - temps[0].ts_us < 660 * 1e6]
    assert min(during) > 38  # type: ignore[type-var]
    assert max(r.value for r in series(hot, "UNIT002", "temperature")) < 38  # type: ignore[type-var]

    flat = day_of_readings(hours=1, status_changes=False, scenarios=[Scenario.parse("flatline:UNIT003/flow@0+300")])
    first_minutes = [r.value for r in series(flat, "UNIT003", "flow")[:60]]
    assert len(set(first_minutes)) == 1
    assert len({r.value for r in series(flat, "UNIT003", "pressure")[:60]}) > 30

    gone = day_of_readings(hours=1, status_changes=False, scenarios=[Scenario.parse("dropout:UNIT004@0+600")])
    assert not [r for r in gone if r.unit == "UNIT004" and r.ts_us < START_US + 600_000_000]
    assert [r for r in gone if r.unit == "UNIT004" and r.ts_us >= START_US + 600_000_000]

    storm = day_of_readings(
        hours=1, status_changes=False, outlier_share=0.0, scenarios=[Scenario.parse("spike_storm@0+600")]
    )
    window = [r for r in storm if r.ts_us < START_US + 600_000_000]
    assert sum(r.value > RANGES[r.sensor][1] for r in window if r.value is not None) > 0.15 * len(window)


def test_scenario_text_and_validation() -> None:
    assert Scenario.parse("flatline:UNIT002/pressure@60+300") == Scenario("flatline", "UNIT002", "pressure", 60, 300)
    assert Scenario.parse("high_temperature").target_unit == "UNIT001"
    assert Scenario.parse("spike_storm").target_unit is None
    for bad in ("meteor", "flatline:UNIT002/humidity", "flatline@x"):
        with pytest.raises(ValueError):
            Scenario.parse(bad)
    with pytest.raises(ValueError, match="cannot batch"):
        GatewayConfig(batch=True, payload="bare")


def test_payload_styles() -> None:
    sim = GatewaySimulator(GatewayConfig(start=START, status_changes=False, bad_quality_share=0.0))
    topic, payload, readings = next(sim.messages_for(sim.readings()))
    assert topic == "scada/UNIT001/temperature"
    assert json.loads(payload) == {
        "value": readings[0].value,
        "quality": "GOOD",
        "timestamp": "2026-03-01T00:00:00.000000Z",
    }

    bare = GatewaySimulator(GatewayConfig(start=START, payload="bare", status_changes=False))
    topic, payload, readings = next(bare.messages_for(bare.readings()))
    assert float(payload) == readings[0].value

    batched = GatewaySimulator(GatewayConfig(start=START, batch=True, status_changes=False))
    topic, payload, readings = next(batched.messages_for(batched.readings()))
    items = json.loads(payload)
    assert topic == "scada/UNIT001/batch" and len(items) == len(readings) == 100
    assert {item["sensor_type"] for item in items} == set(SENSORS)
    assert {r.unit for r in readings} == {"UNIT001"}


# ---------------------------------------------------------------------------------------- published


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoProcess]:
    require_mosquitto()
    broker = MosquittoProcess(data_dir=tmp_path / "mosquitto").start()
    yield broker
    broker.close()


@pytest.mark.parametrize("mode", ["json", "batch", "bare"])
def test_what_is_published_is_what_the_collector_reads(mode: str, mosquitto: MosquittoProcess, tmp_path: Path) -> None:
    settings = {"json": {}, "batch": {"batch": True}, "bare": {"payload": "bare"}}[mode]
    sim = GatewaySimulator(
        GatewayConfig(
            port=mosquitto.port, start=START, rate=0, scenarios=[Scenario.parse("spike_storm@0+60")], **settings
        )  # type: ignore[arg-type]
    )
    emit = Collected()
    reader = build_reader(config(mosquitto.port, tmp_path))

    async def scenario() -> None:
        async with running(reader, emit):
            await asyncio.to_thread(sim.run, count=2000)
            await until(lambda: len(emit.points) >= sim.published, what=f"{sim.published} points")

    run(scenario())
    assert sim.published >= 2000 and sim.messages == (sim.published // 100 if mode == "batch" else sim.published)
    assert len(emit.points) == sim.published
    assert reader.health()["dead_letters"] == 0
    if mode == "bare":
        assert sim.keys == set()  # bare payloads carry no time: only the receiver knows the keys
        assert sorted(p.value for p in emit.points) == sorted(r.value for r in sim.readings_published)
    else:
        assert emit.keys == sim.keys
        published = {r.key: r for r in sim.readings_published}
        for point in emit.points:
            reading = published[point.key]
            assert (point.value, point.quality) == (reading.value, reading.quality)
