"""Fleet telemetry in the collector: the MQTT decoder's fleet topic family, its configuration, and the whole
path from the machine's Mosquitto through the collector's spool into the fleet assets."""

from __future__ import annotations

import asyncio
import contextlib
import textwrap
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from assets import fleet
from collector.config import ConfigError, load_config
from collector.mqtt import FleetTopic, MessageDecoder, MqttBrokerConfig
from collector.points import FLEET_SOURCE, GOOD
from collector.service import Collector
from contracts.fleet import POSITIONS, TRIPS
from resources.fleet import FleetSettings
from resources.lake import Lake
from resources.scada_manifest import WindowDirectory
from resources.scada_spool import ScadaWindows
from simulators.fleet import FleetConfig, FleetSimulator, publish

FIX = (
    b'{"ts": "2026-03-01T08:00:30Z", "lat": 24.8887, "lon": 74.6269, "speed_kmh": 56, "load_t": 30.5, "fuel_pct": 71.2}'
)
FIX_US = 1_772_352_030_000_000  # 2026-03-01T08:00:30Z


def decoder(tmp_path: Path, **fleet) -> MessageDecoder:
    return MessageDecoder(
        MqttBrokerConfig(name="gw", fleet=FleetTopic(**fleet), dead_letter_path=tmp_path / "dead-letters.jsonl")
    )


def test_a_fleet_fix_becomes_one_point_per_field_at_the_fixs_time(tmp_path):
    points, reason = decoder(tmp_path).decode("fleet/TRK07/telemetry", FIX, 1)
    assert reason is None
    assert [(p.source, p.device, p.unit_id, p.quality, p.source_ts_us, p.received_ts_us) for p in points] == [
        (FLEET_SOURCE, "gw", "TRK07", GOOD, FIX_US, 1)
    ] * 5
    assert {p.sensor_type: (p.value, p.unit) for p in points} == {
        "lat": (24.8887, "°"),
        "lon": (74.6269, "°"),
        "speed_kmh": (56.0, "km/h"),
        "load_t": (30.5, "t"),
        "fuel_pct": (71.2, "%"),
    }


def test_payload_keys_can_follow_the_telematics_vendor(tmp_path):
    vendor = decoder(
        tmp_path,
        topic="telematics/+/position",
        fields={"lat": "latitude", "lon": "longitude", "speed_kmh": "speed"},
        timestamp_key="time",
    )
    points, reason = vendor.decode(
        "telematics/TRK01/position",
        b'{"time": "2026-03-01T08:00:30Z", "latitude": 24.9, "longitude": 74.6, "speed": 50}',
        7,
    )
    assert reason is None
    assert {p.sensor_type: p.value for p in points} == {"lat": 24.9, "lon": 74.6, "speed_kmh": 50.0}
    assert {p.source_ts_us for p in points} == {FIX_US}
    # The SCADA topics of the same broker decode as before.
    [point], reason = vendor.decode("scada/PS01/pressure", b'{"value": 2.5}', 7)
    assert (point.source, point.unit_id, point.sensor_type, point.value, reason) == (
        "mqtt",
        "PS01",
        "pressure",
        2.5,
        None,
    )


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b'{"ts": "2026-03-01T08:00:30Z", "lon": 74.6}', "fleet telemetry has no 'lat' (the fix's lat)"),
        (b'{"lat": "24.9", "lon": 74.6}', "fleet telemetry 'lat' = '24.9' is not a number"),
        (b'{"lat": true, "lon": 74.6}', "fleet telemetry 'lat' = True is not a number"),
        (b'{"lat": NaN, "lon": 74.6}', "value nan is not a finite number"),
        (b'[{"lat": 24.9, "lon": 74.6}]', "fleet telemetry must be a JSON object, got list"),
        (b'{"ts": "08:00", "lat": 24.9, "lon": 74.6}', "timestamp '08:00'"),
        (b'{"ts": "2026-03-01T08:00:30", "lat": 24.9, "lon": 74.6}', "has no time zone"),
        (b"24.9,74.6", "invalid JSON"),
    ],
)
def test_a_fix_that_cannot_be_read_is_refused_with_the_reason(tmp_path, payload, reason):
    points, found = decoder(tmp_path).decode("fleet/TRK07/telemetry", payload, 1)
    assert points == []
    assert found is not None and reason in found


def test_without_a_fleet_section_the_topic_is_not_fleet_telemetry(tmp_path):
    plain = MessageDecoder(MqttBrokerConfig(name="gw", dead_letter_path=tmp_path / "dl.jsonl"))
    points, reason = plain.decode("fleet/TRK07/telemetry", FIX, 1)
    assert (points, reason) == ([], "no 'value'")


def test_fleet_configuration_errors_name_the_file_the_line_and_the_field(tmp_path):
    path = tmp_path / "collector.yaml"
    path.write_text(
        textwrap.dedent(
            """
            alerts: {enabled: false}
            mqtt:
              - name: gw
                fleet:
                  topic: "fleet/#"
              - name: gw2
                fleet:
                  fields: {latitude: lat}
            """
        ).lstrip()
    )
    with pytest.raises(ConfigError) as error:
        load_config(path)
    text = str(error.value)
    assert f"{path}:4: mqtt[0].fleet: " in text and "expected levels like fleet/+/telemetry" in text
    assert f"{path}:8: mqtt[1].fleet.fields: latitude unknown" in text


def test_the_subscriptions_are_the_scada_topics_and_the_fleet_topic():
    config = MqttBrokerConfig(name="gw", topics=["scada/+/+"], fleet=FleetTopic())
    assert config.subscriptions == ["scada/+/+", "fleet/+/telemetry"]
    assert MqttBrokerConfig(name="gw").subscriptions == ["scada/+/+"]


@pytest.mark.service
def test_the_collector_spools_fleet_telemetry_from_mosquitto_beside_scada_points(tmp_path, instance):
    from tests.conftest import require_service

    require_service("Mosquitto", 1883)
    tag = uuid.uuid4().hex[:8]
    client_id = f"test-fleet-{tag}"
    path = tmp_path / "collector.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            spool: {{dir: spool, window_s: 300, seal_delay_s: 1, fsync: false}}
            alerts: {{enabled: false}}
            health: {{enabled: false}}
            mqtt:
              - name: machine
                host: 127.0.0.1
                port: 1883
                client_id: {client_id}
                topics: ["scada-{tag}/+/+"]
                fleet: {{topic: "fleet-{tag}/+/telemetry"}}
                dead_letter_path: dead-letters.jsonl
                reconnect_min_s: 0.1
            """
        ).lstrip()
    )
    config = load_config(path)
    # Six hours of a fleet's day, published now as fast as the broker takes it.
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    simulated = FleetSimulator(FleetConfig(trucks=4, seed=5, interval_s=60, topic_prefix=f"fleet-{tag}")).day(
        start, start + timedelta(hours=6)
    )
    assert simulated.trips  # (seed 5: two deliveries in the first six hours)
    shift = [0.0]
    collector = Collector(config, clock=lambda: time.time() + shift[0])

    def publish_scada() -> None:
        client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv311)
        client.connect("127.0.0.1", 1883)
        client.loop_start()
        infos = [client.publish(f"scada-{tag}/PS01/pressure", f'{{"value": {2 + n / 10}}}', qos=1) for n in range(10)]
        for info in infos:
            info.wait_for_publish(10)
        client.loop_stop()
        client.disconnect()

    async def scenario() -> None:
        await collector.start()
        try:
            # A fresh session gets only what is published after it subscribed: wait for both subscriptions.
            deadline = time.monotonic() + 15
            while set(collector.health()["readers"]["machine"]["subscriptions"].values()) != {1}:
                assert time.monotonic() < deadline, collector.health()["readers"]["machine"]
                await asyncio.sleep(0.05)
            await asyncio.to_thread(publish_scada)
            await asyncio.to_thread(publish, simulated.messages, "127.0.0.1", 1883)
            expected = 10 + 5 * len(simulated.messages)
            deadline = time.monotonic() + 30
            while collector.spool.health()["points_appended"] < expected:
                assert time.monotonic() < deadline, f"only {collector.spool.health()['points_appended']} of {expected}"
                await asyncio.sleep(0.1)
            shift[0] = 302.0  # the window in progress is over: stopping seals it
        finally:
            await collector.stop()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 90))
    finally:
        # Leave no persistent session behind on a shared broker.
        cleaner = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
        with contextlib.suppress(OSError):
            cleaner.connect("127.0.0.1", 1883)
            cleaner.disconnect()

    spool = config.spool.dir
    directory = WindowDirectory(spool)
    points = [p for name in directory.pending() for p in directory.read(name)[1]]
    scada = sorted(p.value for p in points if p.source == "mqtt")
    assert scada == [2 + n / 10 for n in range(10)]
    fixes = {(p.unit_id, p.sensor_type, p.source_ts_us) for p in points if p.source == FLEET_SOURCE}
    assert len(fixes) == 5 * simulated.fixes

    # The same windows, landed by the fleet assets for the day.
    result = dg.materialize(
        [fleet.positions, fleet.trips],
        partition_key=f"{start:%Y-%m-%d}",
        resources={
            "scada_spool": ScadaWindows(root=str(spool)),
            "fleet": FleetSettings(),
            "lake": (lake := Lake(root=str(tmp_path / "lake"))),
        },
        instance=instance,
    )
    assert result.success
    assert lake.read(POSITIONS).height == simulated.positions_expected
    assert lake.read(TRIPS).height == len(simulated.trips)

    # The SCADA window job loads the same windows and leaves the truck fixes to the fleet assets.
    from assets import scada as scada_assets
    from contracts.scada import SCADA_POINTS

    hours = sorted({directory.read(name)[0].start.strftime("%Y-%m-%d-%H:00") for name in directory.pending()})
    for hour in hours:
        loaded = dg.materialize(
            [scada_assets.points],
            partition_key=hour,
            resources={"scada_spool": ScadaWindows(root=str(spool)), "lake": lake},
            instance=instance,
        )
        assert loaded.success
    landed = lake.read(SCADA_POINTS)
    assert set(landed["source"].to_list()) == {"mqtt"}
    assert sorted(landed["value"].to_list()) == scada
