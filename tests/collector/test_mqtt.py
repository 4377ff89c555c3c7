"""MQTT reader: decoding by hand, then against a real Mosquitto this test starts (and restarts, and kills).

Every broker test runs ``mosquitto`` with the shipped ``deploy/mosquitto.conf`` on a free loopback port
(``simulators.mqtt_broker.MosquittoProcess``), so it needs no system service; one test uses the
machine's broker on 1883 (marked ``service``). The crash test runs the collector (reader + real spool)
as a subprocess, started through ``collector_process_main`` below.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from pydantic import ValidationError

from collector.mqtt import MessageDecoder, MqttBrokerConfig, MqttReader, acknowledge, build_reader
from collector.points import BAD, GOOD, UNCERTAIN, Point
from simulators.mqtt_broker import MosquittoProcess, start_embedded_broker
from simulators.scada_gateway import GatewayConfig, GatewaySimulator

T = TypeVar("T")
REPO = Path(__file__).resolve().parents[2]
START = datetime(2026, 3, 1, tzinfo=UTC)
START_US = 1772323200000000  # START in microseconds


def run(coroutine: Awaitable[T], timeout: float = 60.0) -> T:
    """Run a coroutine to completion, never longer than ``timeout`` seconds."""

    async def bounded() -> T:
        return await asyncio.wait_for(coroutine, timeout)

    return asyncio.run(bounded())


def require_mosquitto() -> None:
    if shutil.which("mosquitto") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("mosquitto is not installed, and CI=true requires it")
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[MosquittoProcess]:
    """Mosquitto with deploy/mosquitto.conf on a free port, its persistence under the test's tmp dir."""
    require_mosquitto()
    broker = MosquittoProcess(data_dir=tmp_path / "mosquitto").start()
    yield broker
    broker.close()


def config(port: int, tmp_path: Path, **overrides: Any) -> MqttBrokerConfig:
    settings: dict[str, Any] = {
        "name": "gw",
        "port": port,
        "client_id": f"test-{uuid.uuid4().hex[:8]}",
        "dead_letter_path": tmp_path / "dead-letters.jsonl",
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 1.0,
        "max_batch_delay_ms": 2.0,
    }
    return MqttBrokerConfig(**{**settings, **overrides})


class Collected:
    """An emit that keeps every point (in memory: fine for a test, not durable)."""

    def __init__(self) -> None:
        self.points: list[Point] = []
        self.calls = 0

    async def __call__(self, points: Sequence[Point]) -> None:
        self.calls += 1
        self.points.extend(points)

    @property
    def keys(self) -> set[tuple[str, str, str, int]]:
        return {point.key for point in self.points}


async def until(predicate: Callable[[], bool], timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.02)


def subscribed(reader: MqttReader) -> bool:
    health = reader.health()
    return health["connected"] and all(isinstance(v, int) for v in health["subscriptions"].values())


@contextlib.asynccontextmanager
async def running(reader: MqttReader, emit: Callable[[Sequence[Point]], Awaitable[None]]) -> Any:
    """The reader running in the background, subscribed, cancelled on exit."""
    task = asyncio.create_task(reader.run(emit))
    try:
        await until(lambda: subscribed(reader) or task.done(), what=f"{reader.name} to subscribe")
        if task.done():
            task.result()
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def publish(port: int, messages: Sequence[tuple[str, bytes | str]], qos: int = 1, **tls: Any) -> None:
    """Publish and wait until the broker acknowledged every message (blocking: call via to_thread)."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:8]}")
    client.max_inflight_messages_set(100)
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=qos) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def decoder(**overrides: Any) -> MessageDecoder:
    return MessageDecoder(MqttBrokerConfig(name="gw", dead_letter_path="/dev/null", **overrides))


# ---------------------------------------------------------------------------------------- decoding


def test_json_payload_with_defaults_and_explicit_fields() -> None:
    dec = decoder()
    points, reason = dec.decode("scada/UNIT001/temperature", b'{"value": 25.5}', 111)
    assert reason is None
    assert points == [Point("mqtt", "gw", "UNIT001", "temperature", 25.5, "°C", GOOD, 111, 111)]

    payload = b'{"value": 3, "quality": "uncertain", "timestamp": "2026-03-01T00:00:00Z"}'
    (point,), reason = dec.decode("scada/UNIT002/pressure", payload, 222)
    assert reason is None
    assert (point.value, point.unit, point.quality, point.source_ts_us, point.received_ts_us) == (
        3.0,
        "bar",
        UNCERTAIN,
        START_US,
        222,
    )
    # A reading without a value is BAD unless the gateway says otherwise; an unknown sensor has no unit.
    (point,), _ = dec.decode("scada/UNIT002/vibration", b'{"value": null, "timestamp": "2026-03-01T07:00:00+07:00"}', 1)
    assert (point.value, point.quality, point.unit, point.source_ts_us) == (None, BAD, "", START_US)


def test_bare_number_and_status_payloads() -> None:
    dec = decoder()
    (point,), reason = dec.decode("scada/UNIT003/flow", b" 182.25\n", 5)
    assert reason is None
    assert (point.sensor_type, point.value, point.unit, point.quality, point.source_ts_us) == (
        "flow",
        182.25,
        "L/min",
        GOOD,
        5,
    )
    (status,), _ = dec.decode("scada/UNIT003/status", b"Maintenance", 6)
    assert (status.sensor_type, status.value, status.unit) == ("status", 2.0, "")
    (status,), _ = dec.decode("scada/UNIT003/status", b'{"status": "offline", "timestamp": "2026-03-01T00:00:00Z"}', 7)
    assert (status.value, status.source_ts_us) == (0.0, START_US)


def test_batch_payload_keeps_good_elements_and_names_the_bad_ones() -> None:
    dec = decoder()
    payload = json.dumps(
        [
            {"sensor_type": "temperature", "value": 21.5, "timestamp": "2026-03-01T00:00:00Z"},
            {"sensor_type": "power", "value": 80, "quality": "BAD", "timestamp": "2026-03-01T00:00:05Z"},
            {"sensor_type": "flow", "value": "high"},
            {"value": 1.0},
        ]
    ).encode()
    points, reason = dec.decode("scada/UNIT004/batch", payload, 9)
    assert [(p.unit_id, p.sensor_type, p.value, p.unit, p.quality, p.source_ts_us) for p in points] == [
        ("UNIT004", "temperature", 21.5, "°C", GOOD, START_US),
        ("UNIT004", "power", 80.0, "kW", BAD, START_US + 5_000_000),
    ]
    assert reason is not None
    assert "2 of 4 batch elements unusable" in reason
    assert "element 2: value 'high' is not a number" in reason
    assert "element 3: sensor_type is missing" in reason


@pytest.mark.parametrize(
    ("topic", "payload", "reason"),
    [
        ("scada/UNIT001/temperature", b'{"value": 25.5', "invalid JSON"),
        ("scada/UNIT001/temperature", b"twenty", "neither a JSON object nor a number"),
        ("scada/UNIT001/temperature", b"nan", "not a finite number"),
        ("scada/UNIT001/temperature", b'{"value": true}', "is not a number"),
        ("scada/UNIT001/temperature", b'{"value": "25.5"}', "is not a number"),
        ("scada/UNIT001/temperature", b'{"reading": 25.5}', "no 'value'"),
        ("scada/UNIT001/temperature", b'{"value": 1, "quality": "FINE"}', "quality 'FINE' is not one of"),
        ("scada/UNIT001/temperature", b'{"value": null, "quality": "GOOD"}', "null but quality is GOOD"),
        ("scada/UNIT001/temperature", b'{"value": 1, "timestamp": "yesterday"}', "timestamp 'yesterday'"),
        ("scada/UNIT001/temperature", b'{"value": 1, "timestamp": "2026-03-01T00:00:00"}', "no time zone"),
        ("scada/UNIT001/temperature", b'{"value": 1, "timestamp": 1772323200}', "not an ISO 8601 string"),
        ("scada/UNIT001/temperature", b"[1, 2]", "only accepted on"),
        ("scada/UNIT001/temperature", b"\xff\xfe", "neither a JSON object nor a number"),
        ("scada/UNIT001/batch", b'{"value": 1}', "must be a JSON array"),
        ("scada/UNIT001/status", b"exploded", "status 'exploded' is not one of"),
        ("scada/UNIT001", b"1", "is not <prefix>/{unit_id}/{sensor_type}"),
        ("scada/UNIT001/temperature/extra", b"1", "is not <prefix>/{unit_id}/{sensor_type}"),
    ],
)
def test_unusable_payloads_name_their_reason(topic: str, payload: bytes, reason: str) -> None:
    points, why = decoder().decode(topic, payload, 1)
    assert points == []
    assert why is not None and reason in why


TOO_LARGE = "is not a finite number that fits a 64-bit float"
DIGITS_400 = "1234567890" * 40


@pytest.mark.parametrize(
    ("topic", "payload"),
    [
        ("scada/UNIT001/flow", b'{"value": 1e400}'),
        ("scada/UNIT001/flow", b'{"value": -1e400, "timestamp": "2026-03-01T00:00:00Z"}'),
        ("scada/UNIT001/flow", b'{"value": %s}' % DIGITS_400.encode()),
        ("scada/UNIT001/flow", b"1e400"),
        ("scada/UNIT001/flow", DIGITS_400.encode()),
    ],
)
def test_numbers_too_large_for_a_float_are_refused_with_one_reason(topic: str, payload: bytes) -> None:
    # Before, a 400-digit integer raised OverflowError out of the decoder (a logged traceback).
    points, why = decoder().decode(topic, payload, 1)
    assert points == []
    assert why is not None and why.startswith("value ") and TOO_LARGE in why


def test_numbers_too_large_for_a_float_in_a_batch_spoil_only_their_element() -> None:
    payload = (
        b'[{"sensor_type": "flow", "value": 1e400}, {"sensor_type": "flow", "value": %s},'
        b' {"sensor_type": "level", "value": 2.5}]' % DIGITS_400.encode()
    )
    points, why = decoder().decode("scada/UNIT001/batch", payload, 1)
    assert [(p.sensor_type, p.value) for p in points] == [("level", 2.5)]
    assert why is not None
    assert f"element 0: value inf {TOO_LARGE}" in why
    assert f"element 1: value 12345678901234567890… (400 characters) {TOO_LARGE}" in why


def test_config_defaults_aliases_and_validation(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("IHUB_DATA_DIR", str(tmp_path))
    cfg = MqttBrokerConfig.model_validate({"name": "plant", "clean_start": True})
    assert cfg.client_id == "ihub-collector-plant"
    assert cfg.clean_session is True
    assert cfg.dead_letter_path == tmp_path / "spool" / "dead-letter" / "mqtt-plant.jsonl"
    assert (cfg.topics, cfg.qos, cfg.units["flow"]) == (["scada/+/+"], 1, "L/min")
    # MQTT 5 with the widest window unless the broker cannot: what keeps up with a stock broker.
    assert (cfg.protocol, cfg.receive_maximum, cfg.broker_stats) == ("auto", 65535, True)
    policy = build_reader(cfg)._retry
    assert (policy.initial_s, policy.max_delay_s) == (cfg.reconnect_min_s, cfg.reconnect_max_s) == (0.5, 30.0)
    assert "secret" not in repr(MqttBrokerConfig(name="p", username="u", password="secret"))
    with pytest.raises(ValidationError, match="extra"):
        MqttBrokerConfig.model_validate({"name": "p", "topic": "scada/#"})
    with pytest.raises(ValidationError, match="cert_file and key_file"):
        MqttBrokerConfig.model_validate({"name": "p", "tls": {"cert_file": "c.pem"}})
    with pytest.raises(ValidationError, match="needs a username"):
        MqttBrokerConfig(name="p", password="x")


# ---------------------------------------------------------------------------------------- real broker


def test_payload_styles_arrive_as_points(mosquitto: MosquittoProcess, tmp_path: Path) -> None:
    reader = build_reader(config(mosquitto.port, tmp_path))
    emit = Collected()
    batch = json.dumps(
        [
            {"sensor_type": s, "value": i, "timestamp": f"2026-03-01T00:00:{i:02d}Z"}
            for i, s in enumerate(["flow", "pressure", "power"])
        ]
    )
    messages = [
        ("scada/UNIT001/temperature", '{"value": 25.5, "quality": "GOOD", "timestamp": "2026-03-01T00:00:00Z"}'),
        ("scada/UNIT001/pressure", "4.25"),
        ("scada/UNIT002/batch", batch),
        ("scada/UNIT002/status", "offline"),
    ]

    async def scenario() -> None:
        async with running(reader, emit):
            await asyncio.to_thread(publish, mosquitto.port, messages)
            await until(lambda: len(emit.points) == 6, what="6 points")
        health = reader.health()
        assert (health["messages_committed"], health["points_emitted"], health["dead_letters"]) == (4, 6, 0)

    run(scenario())
    got = {(p.unit_id, p.sensor_type): p for p in emit.points}
    assert got["UNIT001", "temperature"].value == 25.5
    assert got["UNIT001", "temperature"].source_ts_us == START_US
    assert (got["UNIT001", "pressure"].value, got["UNIT001", "pressure"].unit) == (4.25, "bar")
    assert [got["UNIT002", s].value for s in ("flow", "pressure", "power")] == [0.0, 1.0, 2.0]
    assert got["UNIT002", "power"].source_ts_us == START_US + 2_000_000
    assert got["UNIT002", "status"].value == 0.0
    assert all(p.source == "mqtt" and p.device == "gw" for p in emit.points)
    assert all(p.received_ts_us > START_US for p in emit.points)


def test_malformed_messages_go_to_the_dead_letter_file_and_are_not_redelivered(
    mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    cfg = config(mosquitto.port, tmp_path)
    messages = [
        ("scada/UNIT001/temperature", "{not json"),
        ("scada/UNIT001/pressure", b"\x00\xff\x10"),
        ("scada/UNIT001/flow", '{"value": 12, "timestamp": "not a time"}'),
        ("scada/UNIT001/power", "88.5"),
    ]

    async def first() -> Collected:
        emit = Collected()
        reader = build_reader(cfg)
        async with running(reader, emit):
            await asyncio.to_thread(publish, mosquitto.port, messages)
            await until(lambda: reader.health()["messages_committed"] == 4, what="4 messages committed")
        assert reader.health()["dead_letters"] == 3
        return emit

    emit = run(first())
    assert [(p.sensor_type, p.value) for p in emit.points] == [("power", 88.5)]
    records = build_reader(cfg).dead_letters.read()
    assert [r["topic"] for r in records] == [m[0] for m in messages[:3]]
    assert "invalid JSON" in records[0]["reason"]
    assert records[0]["payload"] == "{not json" and records[0]["payload_encoding"] == "utf-8"
    assert records[1]["payload_encoding"] == "base64"
    assert base64.b64decode(records[1]["payload"]) == b"\x00\xff\x10"
    assert "timestamp 'not a time'" in records[2]["reason"]
    assert all(r["broker"] == "gw" and r["source"] == "mqtt" and r["qos"] == 1 for r in records)
    assert all(datetime.fromisoformat(r["at"]).tzinfo is not None for r in records)

    # Dead letters were acknowledged: the same session gets nothing again.
    async def again() -> Collected:
        emit = Collected()
        reader = build_reader(cfg)
        async with running(reader, emit):
            await asyncio.sleep(0.5)
        assert reader.health()["messages_received"] == 0
        return emit

    assert run(again()).points == []
    assert len(build_reader(cfg).dead_letters.read()) == 3


def test_a_message_is_acknowledged_only_after_emit_returns(mosquitto: MosquittoProcess, tmp_path: Path) -> None:
    cfg = config(mosquitto.port, tmp_path)
    payload = '{"value": 30.5, "timestamp": "2026-03-01T00:00:00Z"}'

    async def blocked() -> None:
        never = asyncio.Event()
        entered = asyncio.Event()

        async def stuck_emit(points: Sequence[Point]) -> None:
            entered.set()
            await never.wait()  # the spool never confirms

        reader = build_reader(cfg)
        async with running(reader, stuck_emit):
            await asyncio.to_thread(publish, mosquitto.port, [("scada/UNIT001/temperature", payload)])
            await asyncio.wait_for(entered.wait(), 10)
        # The reader stops (as a killed collector would) with the emit still waiting.
        assert reader.health()["messages_committed"] == 0

    async def resumed() -> tuple[Collected, dict[str, Any]]:
        emit = Collected()
        reader = build_reader(cfg)
        async with running(reader, emit):
            await until(lambda: len(emit.points) == 1, what="the redelivered message")
        return emit, reader.health()

    run(blocked())
    emit, health = run(resumed())
    assert [(p.sensor_type, p.value, p.source_ts_us) for p in emit.points] == [("temperature", 30.5, START_US)]
    assert health["redelivered"] == 1  # the broker flagged it DUP: it had been sent, never acknowledged


def test_a_failed_emit_leaves_messages_unacked_and_they_come_again(mosquitto: MosquittoProcess, tmp_path: Path) -> None:
    cfg = config(mosquitto.port, tmp_path)
    messages = [
        (f"scada/UNIT00{i % 5 + 1}/flow", f'{{"value": {i}, "timestamp": "2026-03-01T00:{i // 60:02d}:{i % 60:02d}Z"}}')
        for i in range(200)
    ]
    stored = Collected()
    failures = {"left": 2}

    async def full_spool(points: Sequence[Point]) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise OSError("spool is full")
        await stored(points)

    async def scenario() -> dict[str, Any]:
        reader = build_reader(cfg)
        async with running(reader, full_spool):
            await asyncio.to_thread(publish, mosquitto.port, messages)
            await until(lambda: len(stored.keys) == 200, timeout=20, what="all 200 points stored")
            return reader.health()

    health = run(scenario())
    assert health["emit_failures"] == 2
    assert health["reconnects"] >= 2
    assert "spool is full" in (health["last_error"] or "") or health["errors"] >= 2
    assert sorted(p.value for p in {p.key: p for p in stored.points}.values()) == [float(i) for i in range(200)]


def test_mqtt5_session_keeps_messages_published_while_the_collector_is_down(
    mosquitto: MosquittoProcess, tmp_path: Path
) -> None:
    cfg = config(mosquitto.port, tmp_path, protocol="5", receive_maximum=50, session_expiry_s=300)

    async def once(publish_first: bool) -> Collected:
        emit = Collected()
        reader = build_reader(cfg)
        async with running(reader, emit):
            if publish_first:
                await asyncio.sleep(0.1)
            else:
                await until(lambda: len(emit.points) == 300, what="300 queued points")
        return emit

    run(once(publish_first=True))  # registers the session and subscription, then goes away
    publish(mosquitto.port, [(f"scada/UNIT001/level{i}", str(i)) for i in range(300)])
    emit = run(once(publish_first=False))
    assert sorted(p.value for p in emit.points) == [float(i) for i in range(300)]


def test_acknowledgements_of_a_batch_go_out_as_one_write() -> None:
    # The coalesced path relies on paho 2.x's outgoing packet queue: an upgrade without it must show here.
    assert callable(getattr(paho.Client, "_packet_queue", None))
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="acks", manual_ack=True)
    queued: list[tuple[int, bytes]] = []
    client._packet_queue = lambda command, packet, mid, qos, info=None: queued.append((command, bytes(packet)))  # type: ignore[method-assign]
    acknowledge(client, [(1, 1), (2, 1), (700, 1)])
    assert queued == [(0x40, bytes.fromhex("4002000140020002400202bc"))]
    queued.clear()
    acknowledge(client, [(5, 1), (6, 2)])  # QoS 2 needs PUBCOMP: each message through client.ack
    assert [packet for _, packet in queued] == [bytes.fromhex("40020005"), bytes.fromhex("70020006")]


def _publish_packet(topic: bytes, payload: bytes, qos: int, mid: int, properties: bytes | None) -> bytes:
    packet = len(topic).to_bytes(2, "big") + topic + (mid.to_bytes(2, "big") if qos else b"")
    if properties is not None:
        packet += bytes([len(properties)]) + properties
    return packet + payload


@pytest.mark.parametrize("protocol", [paho.MQTTv311, paho.MQTTv5])
def test_the_fast_publish_path_reads_what_paho_reads(protocol: int) -> None:
    # _Client reads PUBLISH packets itself (paho 2.x internals): an upgrade that changes them must show here.
    from paho.mqtt import _packet

    from collector.mqtt import _Client

    fast: list[tuple[bytes, bytes, int, int, bool]] = []
    slow: list[paho.MQTTMessage] = []
    client = _Client(
        CallbackAPIVersion.VERSION2,
        client_id="fast",
        protocol=protocol,
        manual_ack=True,
        deliver=lambda *fields: fast.append(fields),
    )
    client.on_message = lambda c, u, message: slow.append(message)
    v5 = protocol == paho.MQTTv5
    empty = b"" if v5 else None
    cases = [
        (0x32, _publish_packet(b"scada/UNIT001/flow", b'{"value": 1.5}', 1, 513, empty)),
        (0x3A, _publish_packet(b"scada/UNIT001/flow", b"2.5", 1, 65535, empty)),  # DUP set
        (0x30, _publish_packet(b"scada/U/level", b"", 0, 0, empty)),
        (0x31, _publish_packet(b"$SYS/broker/uptime", b"12 seconds", 0, 0, empty)),  # retained
    ]
    for header, packet in cases:
        client._in_packet = {"command": header, "packet": bytearray(packet)}
        assert client._handle_publish() == 0
        expected = _packet.decode_publish(header, packet, protocol)
        assert fast[-1] == (expected.topic, expected.payload, expected.mid, expected.qos, expected.dup)
        assert type(fast[-1][0]) is bytes and type(fast[-1][1]) is bytes
    assert len(fast) == len(cases) and slow == []
    if v5:
        # With properties (a payload format indicator), paho's own path decodes them and calls on_message.
        packet = _publish_packet(b"scada/UNIT001/flow", b"3.5", 1, 7, b"\x01\x01")
        client._in_packet = {"command": 0x32, "packet": bytearray(packet)}
        client._handle_publish()
        assert len(fast) == len(cases)
        assert [(m.topic, m.payload, m.mid, m.properties.PayloadFormatIndicator) for m in slow] == [
            ("scada/UNIT001/flow", b"3.5", 7, 1)
        ]


def test_qos2_subscription_is_acknowledged_once_stored(mosquitto: MosquittoProcess, tmp_path: Path) -> None:
    cfg = config(mosquitto.port, tmp_path, qos=2)

    async def once(expect: int) -> Collected:
        emit = Collected()
        reader = build_reader(cfg)
        async with running(reader, emit):
            if expect:
                await asyncio.to_thread(publish, mosquitto.port, [("scada/UNIT001/level", "1.5")] * expect, 2)
                await until(lambda: len(emit.points) == expect, what=f"{expect} QoS 2 points")
            else:
                await asyncio.sleep(0.5)
        return emit

    assert [p.value for p in run(once(3)).points] == [1.5, 1.5, 1.5]
    assert run(once(0)).points == []  # completed (PUBCOMP), so nothing comes again


@pytest.mark.slow
def test_broker_restarted_mid_stream_loses_nothing(mosquitto: MosquittoProcess, tmp_path: Path) -> None:
    cfg = config(mosquitto.port, tmp_path)
    emit = Collected()
    sim = GatewaySimulator(
        GatewayConfig(port=mosquitto.port, start=START, rate=2000, status_changes=True, client_id="gw-restart")
    )

    async def scenario() -> dict[str, Any]:
        reader = build_reader(cfg)
        async with running(reader, emit):
            publishing = asyncio.create_task(asyncio.to_thread(sim.run, duration_s=4.0, timeout_s=30.0))
            await asyncio.sleep(1.5)
            await asyncio.to_thread(mosquitto.restart, 0.5)  # SIGTERM: the broker saves its queues
            await asyncio.wait_for(publishing, 60)
            await until(lambda: emit.keys >= sim.keys, timeout=30, what="every published point")
            await asyncio.sleep(0.3)  # anything extra would show now
            return reader.health()

    health = run(scenario(), timeout=120)
    assert sim.published > 3000
    assert health["reconnects"] >= 1
    assert emit.keys == sim.keys
    assert len(emit.keys) == sim.published  # count published = count received after dedup


def test_embedded_broker_serves_the_reader(tmp_path: Path) -> None:
    broker = start_embedded_broker()
    try:
        emit = Collected()
        reader = build_reader(config(broker.port, tmp_path))

        async def scenario() -> dict[str, Any]:
            async with running(reader, emit):
                await asyncio.to_thread(publish, broker.port, [("scada/UNIT001/level", "2.5")])
                await until(lambda: len(emit.points) == 1, what="one point")
                return reader.health()

        health = run(scenario())
    finally:
        broker.stop()
    assert [(p.sensor_type, p.value, p.unit) for p in emit.points] == [("level", 2.5, "m")]
    # amqtt neither answers nor closes an MQTT 5 CONNECT: protocol auto tries 3.1.1 after a few seconds.
    assert health["mqtt_version"] == "3.1.1"


def _make_certificates(directory: Path) -> dict[str, Path]:
    """A CA and a server certificate for 127.0.0.1, made with the openssl command line."""
    files = {name: directory / f"{name}" for name in ("ca.key", "ca.crt", "server.key", "server.csr", "server.crt")}

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=30)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl(
        "req",
        "-x509",
        *ec,
        "-keyout",
        str(files["ca.key"]),
        "-out",
        str(files["ca.crt"]),
        "-days",
        "2",
        "-subj",
        "/CN=ca",
    )
    openssl("req", "-new", *ec, "-keyout", str(files["server.key"]), "-out", str(files["server.csr"]), "-subj", "/CN=x")
    ext = directory / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1\n")
    openssl(
        "x509",
        "-req",
        "-in",
        str(files["server.csr"]),
        "-CA",
        str(files["ca.crt"]),
        "-CAkey",
        str(files["ca.key"]),
        "-CAcreateserial",
        "-out",
        str(files["server.crt"]),
        "-days",
        "2",
        "-extfile",
        str(ext),
    )
    return files


def test_tls_with_username_and_password(tmp_path: Path) -> None:
    require_mosquitto()
    if shutil.which("openssl") is None or shutil.which("mosquitto_passwd") is None:
        pytest.skip("needs openssl and mosquitto_passwd to make certificates and a password file")
    certs = _make_certificates(tmp_path)
    passwords = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-b", "-c", str(passwords), "collector", "s3cret"], check=True, timeout=30)
    tls_port = MosquittoProcess(data_dir=tmp_path / "probe").port
    broker = MosquittoProcess(
        data_dir=tmp_path / "mosquitto",
        extra=(
            f"listener {tls_port} 127.0.0.1",
            f"cafile {certs['ca.crt']}",
            f"certfile {certs['server.crt']}",
            f"keyfile {certs['server.key']}",
            f"password_file {passwords}",
            "allow_anonymous false",
        ),
    ).start()
    try:

        async def scenario(password: str) -> tuple[Collected, dict[str, Any]]:
            emit = Collected()
            cfg = config(
                tls_port,
                tmp_path,
                username="collector",
                password=password,
                tls={"ca_file": certs["ca.crt"]},
                client_id="tls-collector",
            )
            reader = build_reader(cfg)
            task = asyncio.create_task(reader.run(emit))
            try:
                await until(lambda: subscribed(reader) or reader.health()["errors"] > 0, what="connect or refusal")
                if subscribed(reader):
                    await asyncio.to_thread(_publish_tls, tls_port, certs["ca.crt"])
                    await until(lambda: len(emit.points) == 1, what="one point over TLS")
                return emit, reader.health()
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        _, refused = run(scenario("wrong"))
        assert not refused["connected"] and "refused" in refused["last_error"]
        emit, health = run(scenario("s3cret"))
        assert health["errors"] == 0
        assert [(p.unit_id, p.value) for p in emit.points] == [("UNIT009", 7.0)]
    finally:
        broker.close()


def _publish_tls(port: int, ca_file: Path) -> None:
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id="tls-publisher")
    client.tls_set(ca_certs=str(ca_file))
    client.username_pw_set("collector", "s3cret")
    client.connect("127.0.0.1", port)
    client.loop_start()
    try:
        client.publish("scada/UNIT009/flow", "7", qos=1).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.service
def test_machine_broker_round_trip(tmp_path: Path) -> None:
    from tests.conftest import require_service

    require_service("Mosquitto", 1883)
    unit = f"TEST{uuid.uuid4().hex[:8].upper()}"
    cfg = config(1883, tmp_path, topics=[f"scada/{unit}/+"])
    emit = Collected()

    async def scenario() -> None:
        reader = build_reader(cfg)
        async with running(reader, emit):
            await asyncio.to_thread(
                publish, 1883, [(f"scada/{unit}/temperature", '{"value": 21.0}'), (f"scada/{unit}/flow", "99")]
            )
            await until(lambda: len(emit.points) == 2, what="two points from the machine's broker")

    try:
        run(scenario())
    finally:
        # Leave no persistent session behind on a shared broker.
        cleaner = paho.Client(CallbackAPIVersion.VERSION2, client_id=cfg.client_id, clean_session=True)
        with contextlib.suppress(OSError):
            cleaner.connect("127.0.0.1", 1883)
            cleaner.disconnect()
    assert sorted((p.sensor_type, p.value) for p in emit.points) == [("flow", 99.0), ("temperature", 21.0)]


# ---------------------------------------------------------------------------------------- stock broker


def require_mosquitto_pub() -> None:
    require_mosquitto()
    if shutil.which("mosquitto_pub") is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("mosquitto_pub is not installed, and CI=true requires it")
        pytest.skip("mosquitto_pub is not installed (apt-get install mosquitto-clients)")


@contextlib.contextmanager
def burst(port: int, values: dict[str, range]) -> Iterator[None]:
    """QoS 1 ``{"value": v, "timestamp": ...}`` on scada/{unit}/flow, as fast as ``mosquitto_pub -l`` goes.

    One publisher process (a C client, not the bottleneck) per unit; their input stays open until the
    block ends, because mosquitto_pub drops what it has not sent yet when its input closes.
    """
    processes = []
    for unit, numbers in values.items():
        process = subprocess.Popen(
            ["mosquitto_pub", "-p", str(port), "-q", "1", "-M", "1000", "-t", f"scada/{unit}/flow", "-l"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        lines = "".join(
            f'{{"value": {v}, "timestamp": "{datetime.fromtimestamp(START_US / 1e6 + v / 1000, UTC).isoformat()}"}}\n'
            for v in numbers
        ).encode()

        def feed(process: subprocess.Popen[bytes] = process, lines: bytes = lines) -> None:
            assert process.stdin is not None
            with contextlib.suppress(BrokenPipeError, ValueError):
                process.stdin.write(lines)
                process.stdin.flush()

        threading.Thread(target=feed, daemon=True).start()
        processes.append(process)
    try:
        yield
    finally:
        for process in processes:
            with contextlib.suppress(BrokenPipeError, ValueError, OSError):
                process.stdin.close()  # type: ignore[union-attr]
        for process in processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def stats_reported(reader: MqttReader) -> bool:
    health = reader.health()
    return health["broker_stats"] == "subscribed" and health["broker_dropped_messages"] is not None


@pytest.mark.service
def test_a_burst_on_a_stock_broker_reaches_the_spool_whole(tmp_path: Path) -> None:
    """Mosquitto as installed (20 in flight, 1,000 queued per 3.1.1 client) and 45,000 QoS 1 messages at once.

    The old default (MQTT 3.1.1, so the broker's 20-message window) lost most of such a burst at the
    broker; MQTT 5 with a 65,535-message receive maximum keeps it in flight instead. Why not more:
    Mosquitto 2.0.11 (this machine's) miscounts its in-flight quota under load (probably
    eclipse/mosquitto#2306, fixed in 2.0.13), so past about 50,000 messages to a subscriber that runs
    behind it drops some even inside the window (docs/protocols/mqtt.md, "A stock broker").
    """
    require_mosquitto_pub()
    from collector.spool import Spool

    values = {"UNIT001": range(0, 15_000), "UNIT002": range(15_000, 30_000), "UNIT003": range(30_000, 45_000)}
    total = sum(len(numbers) for numbers in values.values())
    spool_dir = tmp_path / "spool"
    with MosquittoProcess(data_dir=tmp_path / "mosquitto", config=None) as broker:
        assert broker.config_path.read_text() == f"listener {broker.port} 127.0.0.1\nallow_anonymous true\n"

        async def scenario() -> tuple[dict[str, Any], float]:
            reader = build_reader(config(broker.port, tmp_path))  # the defaults, as a site would run them
            async with Spool(spool_dir, writer="mqtt-test") as spool, running(reader, spool.append):
                await until(lambda: stats_reported(reader), what="the broker's $SYS counters")
                started = time.monotonic()
                with burst(broker.port, values):
                    try:
                        await until(lambda: reader.health()["points_emitted"] >= total, timeout=45, what="the burst")
                    except AssertionError as error:
                        state = f"reader: {reader.health()}; broker: {broker.log_tail()}"
                        raise AssertionError(f"{error}; {state}") from None
                    seconds = time.monotonic() - started
                # Stock Mosquitto republishes its counters every 10 s: wait for the round after the burst.
                uptime = reader.health()["broker_uptime_s"]
                await until(lambda: reader.health()["broker_uptime_s"] > uptime, timeout=15, what="a $SYS round")
                await asyncio.sleep(0.3)  # the rest of that round
                return reader.health(), seconds

        health, seconds = run(scenario(), timeout=90)
    points = spool_points(spool_dir)
    assert health["mqtt_version"] == "5"
    assert (health["broker_dropped_messages"], health["broker_dropped_since_connect"]) == (0, 0)
    assert health["dead_letters"] == 0
    assert len({point.key for point in points}) == total
    assert sorted(int(point.value) for point in points if point.key) == list(range(total))  # each value once
    assert sum(point.value for point in points) == total * (total - 1) / 2
    assert total / seconds > 2000  # a burst, not a trickle (about 15,000 messages/s on two busy cores)


def _register_offline_session(port: int, client_id: str, topic: str) -> None:
    """A persistent QoS 1 session that then goes away, so the broker queues (and drops) for it."""
    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    subscribed = threading.Event()
    client.on_subscribe = lambda *args: subscribed.set()
    client.connect("127.0.0.1", port)
    client.loop_start()
    client.subscribe(topic, qos=1)
    assert subscribed.wait(5), "the broker did not acknowledge the subscription"
    client.disconnect()
    client.loop_stop()
    time.sleep(0.5)  # until the broker has seen it go: a connected client would take 20 more in flight


def test_messages_the_broker_drops_are_reported(tmp_path: Path) -> None:
    """A broker with a 100-message queue: drops while the reader was away, then drops for another client."""
    require_mosquitto()
    # Mosquitto also holds QoS 0 messages (the $SYS counters) to this limit of unsent packets per client.
    extra = ("max_queued_messages 100", "sys_interval 1")
    with MosquittoProcess(data_dir=tmp_path / "mosquitto", config=None, extra=extra) as broker:
        cfg = config(broker.port, tmp_path)
        emit = Collected()

        async def away() -> None:
            async with running(build_reader(cfg), emit):
                pass  # registers the persistent session, then leaves

        run(away())
        time.sleep(0.5)  # until the broker has seen the reader go
        publish(broker.port, [(f"scada/UNIT001/level{i}", str(i)) for i in range(300)])
        time.sleep(1.5)  # one $SYS round, so the counter the reader finds is current

        async def back() -> tuple[dict[str, Any], dict[str, Any]]:
            reader = build_reader(cfg)
            async with running(reader, emit):
                await until(lambda: stats_reported(reader) and len(emit.points) == 100, what="the queued hundred")
                on_return = reader.health()
                # The counter is the broker's, for every client: a dashboard's session overflowing counts too.
                await asyncio.to_thread(_register_offline_session, broker.port, "dashboard", "other/#")
                await asyncio.to_thread(publish, broker.port, [(f"other/{i}", str(i)) for i in range(300)])
                await until(lambda: reader.health()["broker_dropped_since_connect"] == 200, what="the new drops")
                return on_return, reader.health()

        on_return, health = run(back())
    # While away, the session's queue kept 100 of 300; the broker counted the rest before the reader returned.
    assert (on_return["broker_dropped_messages"], on_return["broker_dropped_since_connect"]) == (200, 0)
    assert on_return["last_error"] is None
    assert [p.value for p in emit.points] == [float(i) for i in range(100)]
    assert (health["broker_dropped_messages"], health["broker_dropped_since_connect"]) == (400, 200)
    assert "the broker dropped" in health["last_error"] and "(200 since the reader connected" in health["last_error"]


# ---------------------------------------------------------------------------------------- crash test


def collector_process_main(port: int, spool_dir: str, client_id: str, dead_letters: str, slow_disk_s: float) -> None:
    """A minimal collector process: one MQTT reader into the real spool, until SIGTERM (or SIGKILL).

    Prints ``ready`` once subscribed. Started by the crash test with ``python -c``. ``slow_disk_s``
    delays every append, as a slow disk would: it widens the moment between receiving a batch and
    its fsync, so a reader that acknowledged before durability would lose points to the kill.
    """
    from collector.spool import Spool

    async def main() -> None:
        cfg = MqttBrokerConfig(
            name="gw",
            port=port,
            client_id=client_id,
            dead_letter_path=dead_letters,
            reconnect_min_s=0.1,
            max_batch_delay_ms=2.0,
        )
        reader = build_reader(cfg)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        async with Spool(spool_dir, writer="mqtt-test") as spool:

            async def emit(points: Sequence[Point]) -> None:
                await asyncio.sleep(slow_disk_s)
                await spool.append(points)

            task = asyncio.create_task(reader.run(emit))
            while not subscribed(reader):
                await asyncio.sleep(0.02)
            print("ready", flush=True)
            await stop.wait()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    asyncio.run(main())


def spool_points(root: Path) -> list[Point]:
    """Every point in the spool, however far its windows got (open windows are sealed by a clock an hour on)."""
    from collector.spool import Spool, read_window, sealed_windows

    Spool(root, writer="reader", clock=lambda: time.time() + 3600).close()
    return [point for name in sealed_windows(root) for point in read_window(root, name)]


def spool_keys_so_far(root: Path) -> set[tuple[str, str, str, int]]:
    """Keys in the open segments while the collector writes (a torn last line is skipped)."""
    keys = set()
    for path in (root / "open").glob("*/*.jsonl"):
        for line in path.read_bytes().splitlines():
            with contextlib.suppress(ValueError, TypeError):
                keys.add(Point.from_json(line).key)
    return keys


class CollectorProcess:
    def __init__(self, port: int, spool_dir: Path, client_id: str, dead_letters: Path, slow_disk_s: float) -> None:
        self.args = (port, str(spool_dir), client_id, str(dead_letters), slow_disk_s)
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        code = f"from tests.collector.test_mqtt import collector_process_main as m; m(*{self.args!r})"
        self.process = subprocess.Popen(
            [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL
        )
        ready = threading.Event()

        def wait_ready() -> None:
            assert self.process is not None and self.process.stdout is not None
            if self.process.stdout.readline().strip() == "ready":
                ready.set()

        threading.Thread(target=wait_ready, daemon=True).start()
        if not ready.wait(30):
            self.process.kill()
            raise AssertionError("the collector process did not subscribe within 30 s")

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)
        self.process.wait(30)


@pytest.mark.slow
def test_collector_killed_mid_stream_loses_no_acknowledged_point(mosquitto: MosquittoProcess, tmp_path: Path) -> None:
    spool_dir = tmp_path / "spool"
    collector = CollectorProcess(mosquitto.port, spool_dir, "crash-collector", tmp_path / "dead.jsonl", 0.05)
    sim = GatewaySimulator(GatewayConfig(port=mosquitto.port, start=START, rate=3000, client_id="gw-crash"))
    collector.start()
    publisher = threading.Thread(target=sim.run, kwargs={"duration_s": 4.0, "timeout_s": 30.0})
    try:
        publisher.start()
        time.sleep(1.5)
        collector.signal(signal.SIGKILL)  # mid-stream, batches in flight
        stored_before_restart = len(spool_keys_so_far(spool_dir))
        time.sleep(0.5)
        collector.start()  # same client id: resumes the session, gets what was queued or unacked
        publisher.join(60)
        deadline = time.monotonic() + 30
        while not spool_keys_so_far(spool_dir) >= sim.keys and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.3)
    finally:
        publisher.join(60)
        if collector.process is not None and collector.process.poll() is None:
            collector.signal(signal.SIGTERM)
    points = spool_points(spool_dir)
    keys = {point.key for point in points}
    assert 0 < stored_before_restart < sim.published
    # 3,000/s for 4 s; a loaded machine publishes fewer, still thousands around the kill.
    assert sim.published > 2000
    assert keys == sim.keys
    assert len(keys) == sim.published  # count published = count stored after dedup by key
