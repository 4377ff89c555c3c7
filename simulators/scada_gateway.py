"""SCADA protocol gateway simulator: field readings published to MQTT, as a plant gateway does.

Five units (UNIT001–UNIT005), each with temperature (°C), pressure (bar), flow (L/min) and power
(kW), sampled every ``interval_s`` of simulated time and published to ``scada/{unit}/{sensor}``
(JSON ``{"value", "quality", "timestamp"}`` or a bare number) or, in batch mode, 100 readings of a
unit per message on ``scada/{unit}/batch``. Values follow their physics loosely but recognisably:

- **flow** follows the residential day in Asia/Bangkok time (peaks 06–08 and 18–21, lowest 02–04),
  50–300 L/min; **pressure** moves against it (head loss at peak), 0.5–8 bar; **power** follows
  flow × pressure (a pump's ρ·g·Q·H/η, scaled), 30–120 kW; **temperature** follows the day
  (warmest mid-afternoon), −10–40 °C. Each series has its own level, a slow random-walk drift and
  noise.
- Units change status (online → offline or maintenance → online) now and then, published on
  ``scada/{unit}/status``; an offline unit publishes nothing (or BAD readings, ``offline="bad"``), a
  unit in maintenance publishes UNCERTAIN readings.
- A configurable share of readings is BAD quality, and a share are outliers (a spike of 3–5 times
  the value, or a drop to near zero).
- Scenarios, in simulated seconds from the start: ``high_temperature`` (a unit's temperature ramps
  past 38 °C, UNIT001 by default), ``flatline`` (a sensor stuck on one value), ``dropout`` (a unit
  publishes nothing), ``spike_storm`` (a third of the readings are outliers).

Everything is deterministic from the seed and the start time: the same configuration publishes the
same readings, whatever the publishing rate. The simulated clock advances ``interval_s`` per round
of readings; ``rate`` only paces the publishing (None keeps simulated time with the wall clock).

``GatewaySimulator.run`` publishes with paho and counts what the broker acknowledged: ``published``
(points), ``messages``, and ``keys``, the ``Point.key`` of every acknowledged point, for loss checks
(bare payloads carry no timestamp, so their keys are only known to the receiver and none are kept).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import random
import re
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

__all__ = [
    "SCENARIOS",
    "SENSORS",
    "UNITS",
    "GatewayConfig",
    "GatewaySimulator",
    "Reading",
    "Scenario",
    "main",
    "main_publish",
]

UNITS: tuple[str, ...] = ("UNIT001", "UNIT002", "UNIT003", "UNIT004", "UNIT005")
SENSORS: tuple[str, ...] = ("temperature", "pressure", "flow", "power")
RANGES: dict[str, tuple[float, float]] = {
    "temperature": (-10.0, 40.0),
    "pressure": (0.5, 8.0),
    "flow": (50.0, 300.0),
    "power": (30.0, 120.0),
}
SCENARIOS: tuple[str, ...] = ("high_temperature", "flatline", "dropout", "spike_storm")
STATUSES: tuple[str, ...] = ("online", "offline", "maintenance")
LOCAL_OFFSET_H = 7  # Asia/Bangkok, UTC+7 all year
SOURCE = "mqtt"  # what the collector's MQTT reader puts in Point.source, hence in the keys
_MICROS = 1_000_000


@dataclass(frozen=True)
class Scenario:
    """An injected fault: ``kind`` on ``unit`` (and ``sensor``) from ``start_s`` for ``duration_s`` (simulated)."""

    kind: Literal["high_temperature", "flatline", "dropout", "spike_storm"]
    unit: str | None = None
    sensor: str | None = None
    start_s: float = 0.0
    duration_s: float = 600.0

    def __post_init__(self) -> None:
        if self.kind not in SCENARIOS:
            raise ValueError(f"scenario {self.kind!r} is not one of {', '.join(SCENARIOS)}")
        if self.sensor is not None and self.sensor not in SENSORS:
            raise ValueError(f"scenario sensor {self.sensor!r} is not one of {', '.join(SENSORS)}")
        if self.duration_s <= 0:
            raise ValueError("scenario duration_s must be positive")

    @property
    def target_unit(self) -> str | None:
        """The unit hit; high_temperature, flatline and dropout default to UNIT001, spike_storm to every unit."""
        if self.unit is None and self.kind != "spike_storm":
            return UNITS[0]
        return self.unit

    def active(self, elapsed_s: float, unit: str, sensor: str | None = None) -> bool:
        if not self.start_s <= elapsed_s < self.start_s + self.duration_s:
            return False
        if self.target_unit is not None and unit != self.target_unit:
            return False
        return self.sensor is None or sensor is None or sensor == self.sensor

    @classmethod
    def parse(cls, text: str) -> Scenario:
        """``kind[:UNIT[/sensor]][@start_s[+duration_s]]``, e.g. ``flatline:UNIT002/pressure@60+300``."""
        match = re.fullmatch(r"([a-z_]+)(?::([A-Za-z0-9_-]+)(?:/([a-z_]+))?)?(?:@([\d.]+)(?:\+([\d.]+))?)?", text)
        if not match:
            raise ValueError(f"scenario {text!r}: expected kind[:UNIT[/sensor]][@start_s[+duration_s]]")
        kind, unit, sensor, start, duration = match.groups()
        return cls(
            kind=kind,  # type: ignore[arg-type]
            unit=unit,
            sensor=sensor,
            start_s=float(start) if start else 0.0,
            duration_s=float(duration) if duration else 600.0,
        )


@dataclass
class GatewayConfig:
    """What the simulated gateway publishes, where, and how fast."""

    host: str = "127.0.0.1"
    port: int = 1883
    seed: int = 42
    units: Sequence[str] = UNITS
    start: datetime | None = None  # simulated time of the first round; None: now, to the second
    interval_s: float = 5.0  # simulated seconds between two readings of a sensor (SCADA: flow every 5 s)
    rate: float | None = None  # points per second of wall time; None: real time, 0: as fast as possible
    batch: bool = False  # scada/{unit}/batch, batch_size readings of one unit per message
    batch_size: int = 100
    payload: Literal["json", "bare"] = "json"
    qos: int = 1
    bad_quality_share: float = 0.01
    outlier_share: float = 0.005
    status_changes: bool = True
    offline: Literal["silent", "bad"] = "silent"
    scenarios: Sequence[Scenario] = ()
    client_id: str = "scada-gateway-sim"
    topic_prefix: str = "scada"
    max_inflight: int = 1000  # QoS 1 publishes awaiting PUBACK; paho's default of 20 caps the rate

    def __post_init__(self) -> None:
        if not self.units:
            raise ValueError("at least one unit")
        if self.payload not in ("json", "bare"):
            raise ValueError(f"payload must be json or bare, got {self.payload!r}")
        if self.batch and self.payload != "json":
            raise ValueError("batch messages are JSON arrays; payload='bare' cannot batch")
        if self.qos not in (0, 1, 2):
            raise ValueError(f"qos must be 0, 1 or 2, got {self.qos}")
        if self.interval_s <= 0 or self.batch_size < 1:
            raise ValueError("interval_s and batch_size must be positive")
        for share in (self.bad_quality_share, self.outlier_share):
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"shares are between 0 and 1, got {share}")


@dataclass(frozen=True, slots=True)
class Reading:
    """One reading as published (``sensor`` is ``status`` for a status change, with the status text)."""

    unit: str
    sensor: str
    ts_us: int
    value: float | None
    quality: str
    status: str | None = None

    @property
    def key(self) -> tuple[str, str, str, int]:
        """The ``Point.key`` the collector gives this reading."""
        return (SOURCE, self.unit, self.sensor, self.ts_us)

    @property
    def timestamp(self) -> str:
        moment = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=self.ts_us)
        return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def json_fields(self) -> str:
        """The JSON object's members (without braces), shared by single and batch payloads."""
        if self.status is not None:
            return f'"status": "{self.status}", "timestamp": "{self.timestamp}"'
        value = "null" if self.value is None else repr(self.value)
        return f'"value": {value}, "quality": "{self.quality}", "timestamp": "{self.timestamp}"'


def _diurnal_demand(local_hour: float) -> float:
    """Residential demand relative to the daily mean: peaks 06–08 and 18–21, lowest 02–04."""
    morning = math.exp(-(((local_hour - 7.0) / 1.3) ** 2))
    evening = 0.9 * math.exp(-(((local_hour - 19.5) / 1.6) ** 2))
    night = -0.55 * math.exp(-(((local_hour - 3.0) / 1.8) ** 2))
    return 0.85 + 0.55 * morning + 0.5 * evening + night


class _Series:
    """One sensor of one unit: level, drift and noise from its own random stream."""

    def __init__(self, seed: int, unit: str, sensor: str) -> None:
        self.sensor = sensor
        self.rng = random.Random(f"{seed}:{unit}:{sensor}")
        rng = self.rng
        self.level = {
            "temperature": rng.uniform(24.0, 29.0),
            "pressure": rng.uniform(3.0, 4.5),
            "flow": rng.uniform(140.0, 190.0),
            "power": rng.uniform(0.9, 1.1),  # pump efficiency spread, scales the power curve
        }[sensor]
        self.drift = 0.0
        self.noise = {"temperature": 0.15, "pressure": 0.04, "flow": 2.5, "power": 0.8}[sensor]

    def step(self, local_hour: float, flow: float, pressure: float) -> float:
        # A slow random walk, pulled back towards zero so a long run stays in range.
        self.drift = 0.999 * self.drift + self.rng.gauss(0.0, self.noise * 0.05)
        noise = self.rng.gauss(0.0, self.noise)
        demand = _diurnal_demand(local_hour)
        if self.sensor == "temperature":
            value = self.level + 5.5 * math.sin((local_hour - 8.5) / 24.0 * 2 * math.pi) + self.drift + noise
        elif self.sensor == "flow":
            value = self.level * demand + self.drift * 10 + noise
        elif self.sensor == "pressure":
            value = self.level - 1.2 * (demand - 1.0) - 0.000012 * flow**2 + self.drift + noise
        else:
            value = self.level * (22.0 + 0.2 * flow * max(pressure, 0.5) / 4.0) + self.drift * 5 + noise
        low, high = RANGES[self.sensor]
        return min(max(value, low), high)


class _Unit:
    """A unit's status machine and its four series."""

    def __init__(self, seed: int, name: str) -> None:
        self.name = name
        self.series = {sensor: _Series(seed, name, sensor) for sensor in SENSORS}
        self.rng = random.Random(f"{seed}:{name}:status")
        self.status = "online"
        self.rounds_left = 0
        self.flat: dict[str, float] = {}

    def next_status(self, enabled: bool) -> str | None:
        """The new status if it changes this round (rare: a few times a day of simulated time)."""
        if not enabled:
            return None
        if self.status != "online":
            self.rounds_left -= 1
            if self.rounds_left > 0:
                return None
            self.status = "online"
            return self.status
        draw = self.rng.random()
        if draw < 0.00005:
            self.status, self.rounds_left = "offline", self.rng.randint(12, 120)
        elif draw < 0.00008:
            self.status, self.rounds_left = "maintenance", self.rng.randint(60, 360)
        else:
            return None
        return self.status


class GatewaySimulator:
    """Publishes the units' readings to an MQTT broker; deterministic from ``config.seed`` and ``config.start``."""

    def __init__(self, config: GatewayConfig | None = None) -> None:
        self.config = config or GatewayConfig()
        self.start = (self.config.start or datetime.now(UTC).replace(microsecond=0)).astimezone(UTC)
        self.published = 0  # points acknowledged by the broker (QoS 0: handed to the socket)
        self.messages = 0  # messages acknowledged
        self.sent_messages = 0  # messages handed to paho
        self.keys: set[tuple[str, str, str, int]] = set()
        self.readings_published: list[Reading] = []
        self.record = True  # keep readings_published (turn off for very long runs)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._inflight: dict[int, list[Reading]] = {}
        self._acked: set[int] = set()
        self._connected = threading.Event()

    # ------------------------------------------------------------------------------ readings

    def readings(self) -> Iterator[Reading]:
        """Every reading, round after round, without end (no network; the same stream every time)."""
        config = self.config
        units = [_Unit(config.seed, name) for name in config.units]
        outlier_rng = random.Random(f"{config.seed}:outliers")
        quality_rng = random.Random(f"{config.seed}:quality")
        start_us = int((self.start - datetime(1970, 1, 1, tzinfo=UTC)) / timedelta(microseconds=1))
        step_us = int(config.interval_s * _MICROS)
        scenarios = list(config.scenarios)
        round_index = 0
        while True:
            ts_us = start_us + round_index * step_us
            elapsed = round_index * config.interval_s
            local_hour = ((ts_us / _MICROS / 3600.0) + LOCAL_OFFSET_H) % 24.0
            for unit in units:
                change = unit.next_status(config.status_changes)
                if change is not None:
                    yield Reading(unit.name, "status", ts_us, None, "GOOD", status=change)
                # Scenarios hitting this unit now (most rounds: none, so the sensors skip them cheaply).
                on_unit = [s for s in scenarios if s.active(elapsed, unit.name)] if scenarios else []
                if any(s.kind == "dropout" for s in on_unit):
                    continue
                if unit.status == "offline" and config.offline == "silent":
                    continue
                flow = unit.series["flow"].step(local_hour, 0.0, 0.0)
                pressure = unit.series["pressure"].step(local_hour, flow, 0.0)
                values = {
                    "temperature": unit.series["temperature"].step(local_hour, flow, pressure),
                    "pressure": pressure,
                    "flow": flow,
                    "power": unit.series["power"].step(local_hour, flow, pressure),
                }
                for sensor in SENSORS:
                    value = values[sensor]
                    quality = "GOOD"
                    active = [s for s in on_unit if s.sensor is None or s.sensor == sensor] if on_unit else []
                    storm = any(s.kind == "spike_storm" for s in active)
                    for scenario in active:
                        if scenario.kind == "high_temperature" and sensor == "temperature":
                            # Ramp from the normal value to 45 °C over the first half, then hold.
                            progress = min(1.0, (elapsed - scenario.start_s) / max(scenario.duration_s / 2, 1e-9))
                            value = value + (45.0 - value) * progress
                        elif scenario.kind == "flatline" and (scenario.sensor or "pressure") == sensor:
                            value = unit.flat.setdefault(sensor, value)
                    if not any(s.kind == "flatline" for s in active):
                        unit.flat.pop(sensor, None)
                    if outlier_rng.random() < (0.33 if storm else config.outlier_share):
                        value = value * outlier_rng.uniform(3.0, 5.0) if outlier_rng.random() < 0.7 else value * 0.02
                    if unit.status == "offline":
                        quality = "BAD"
                    elif unit.status == "maintenance":
                        quality = "UNCERTAIN"
                    elif quality_rng.random() < config.bad_quality_share:
                        quality = "BAD"
                    yield Reading(unit.name, sensor, ts_us, round(value, 3), quality)
            round_index += 1

    def messages_for(self, readings: Iterator[Reading]) -> Iterator[tuple[str, bytes, list[Reading]]]:
        """(topic, payload, readings) as the gateway sends them, in the configured payload style."""
        config = self.config
        prefix = config.topic_prefix
        pending: dict[str, list[Reading]] = {}
        for reading in readings:
            if reading.status is not None:
                yield f"{prefix}/{reading.unit}/status", ("{" + reading.json_fields() + "}").encode(), [reading]
            elif config.batch:
                bucket = pending.setdefault(reading.unit, [])
                bucket.append(reading)
                if len(bucket) >= config.batch_size:
                    body = ", ".join('{"sensor_type": "' + r.sensor + '", ' + r.json_fields() + "}" for r in bucket)
                    yield f"{prefix}/{reading.unit}/batch", f"[{body}]".encode(), bucket
                    pending[reading.unit] = []
            elif config.payload == "bare":
                yield f"{prefix}/{reading.unit}/{reading.sensor}", repr(reading.value).encode(), [reading]
            else:
                yield (
                    f"{prefix}/{reading.unit}/{reading.sensor}",
                    ("{" + reading.json_fields() + "}").encode(),
                    [reading],
                )

    # ------------------------------------------------------------------------------ publishing

    def run(self, duration_s: float | None = None, count: int | None = None, timeout_s: float = 60.0) -> int:
        """Publish until ``duration_s`` (wall) has passed or ``count`` points went out (or ``stop()``).

        Waits up to ``timeout_s`` for the broker to acknowledge what was sent (paho resends QoS 1
        messages after a reconnect), then returns ``published``.
        """
        if duration_s is None and count is None:
            raise ValueError("give duration_s or count (or both)")
        config = self.config
        client = paho.Client(CallbackAPIVersion.VERSION2, client_id=config.client_id, protocol=paho.MQTTv311)
        client.max_inflight_messages_set(config.max_inflight)
        client.max_queued_messages_set(0)
        client.reconnect_delay_set(1, 5)
        client.on_connect = lambda *args: self._connected.set()
        client.on_disconnect = lambda *args: self._connected.clear()
        client.on_publish = self._on_publish
        client.connect_async(config.host, config.port, keepalive=30)
        client.loop_start()
        try:
            if not self._connected.wait(timeout_s):
                raise ConnectionError(f"no MQTT broker answered on {config.host}:{config.port} within {timeout_s} s")
            self._publish_loop(client, duration_s, count)
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                with self._lock:
                    if not self._inflight:
                        break
                time.sleep(0.01)
        finally:
            client.disconnect()
            client.loop_stop()
        return self.published

    def stop(self) -> None:
        """End ``run`` early (from another thread); what was sent is still awaited."""
        self._stop.set()

    def _publish_loop(self, client: paho.Client, duration_s: float | None, count: int | None) -> None:
        config = self.config
        points_per_round = len(config.units) * len(SENSORS)
        rate = config.rate if config.rate is not None else points_per_round / config.interval_s
        started = time.monotonic()
        sent_points = 0
        for topic, payload, readings in self.messages_for(self.readings()):
            if self._stop.is_set():
                break
            if duration_s is not None and time.monotonic() - started >= duration_s:
                break
            if count is not None and sent_points >= count:
                break
            if rate > 0:
                # Pace to the rate; sleeping only when ahead keeps the loop cheap at high rates.
                ahead = sent_points / rate - (time.monotonic() - started)
                if ahead > 0.002:
                    time.sleep(ahead)
            # paho runs on_publish while holding its own lock, so ours is never held around publish().
            info = client.publish(topic, payload, qos=config.qos)
            with self._lock:
                if not config.qos:
                    self._count(readings)
                elif info.mid in self._acked:
                    # The PUBACK was handled before publish() returned the mid.
                    self._acked.discard(info.mid)
                    self._count(readings)
                else:
                    self._inflight[info.mid] = readings
            self.sent_messages += 1
            sent_points += len(readings)

    def _on_publish(self, client: paho.Client, userdata: object, mid: int, reason: object, properties: object) -> None:
        if self.config.qos == 0:
            return
        with self._lock:
            readings = self._inflight.pop(mid, None)
            if readings is None:
                self._acked.add(mid)
                return
            self._count(readings)

    def _count(self, readings: list[Reading]) -> None:
        self.messages += 1
        self.published += len(readings)
        if self.config.payload == "json":
            self.keys.update(reading.key for reading in readings)
        if self.record:
            self.readings_published.extend(readings)


def main_publish(config: GatewayConfig, duration_s: float | None = None, count: int | None = None) -> int:
    """Publish in the foreground (``ihub simulate scada``); prints what went out; returns points published."""
    simulator = GatewaySimulator(config)
    simulator.record = False
    mode = f"batch of {config.batch_size}" if config.batch else config.payload
    print(
        f"SCADA gateway simulator -> mqtt://{config.host}:{config.port} ({len(config.units)} units, {mode}, "
        f"QoS {config.qos}, seed {config.seed}, scenarios: {', '.join(s.kind for s in config.scenarios) or 'none'})",
        flush=True,
    )
    with contextlib.suppress(KeyboardInterrupt):
        simulator.run(duration_s=duration_s, count=count)
    print(f"published {simulator.published} points in {simulator.messages} messages", flush=True)
    return simulator.published


def main(argv: list[str] | None = None) -> None:
    """``python -m simulators.scada_gateway``: publish the five units' readings to an MQTT broker."""
    parser = argparse.ArgumentParser(prog="python -m simulators.scada_gateway", description=main.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--embedded", action="store_true", help="start an embedded broker (amqtt) on --port")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--rate", type=float, default=None, help="points per second (default: real time; 0: flat out)")
    parser.add_argument("--duration", type=float, default=None, help="seconds to publish (default: until Ctrl-C)")
    parser.add_argument("--count", type=int, default=None, help="points to publish")
    parser.add_argument("--batch", action="store_true", help="100 readings a message on scada/{unit}/batch")
    parser.add_argument("--payload", choices=["json", "bare"], default="json")
    parser.add_argument("--qos", type=int, choices=[0, 1, 2], default=1)
    parser.add_argument("--bad-quality-share", type=float, default=0.01)
    parser.add_argument("--outlier-share", type=float, default=0.005)
    parser.add_argument(
        "--scenario",
        action="append",
        default=[],
        type=Scenario.parse,
        help=f"kind[:UNIT[/sensor]][@start_s[+duration_s]], kind one of {', '.join(SCENARIOS)}; repeatable",
    )
    args = parser.parse_args(argv)
    config = GatewayConfig(
        host=args.host,
        port=args.port,
        seed=args.seed,
        rate=args.rate,
        batch=args.batch,
        payload=args.payload,
        qos=args.qos,
        bad_quality_share=args.bad_quality_share,
        outlier_share=args.outlier_share,
        scenarios=args.scenario,
    )
    duration = args.duration if args.duration is not None or args.count is not None else float("inf")
    broker = None
    if args.embedded:
        from simulators.mqtt_broker import start_embedded_broker

        broker = start_embedded_broker(args.host, args.port)
        config.port = broker.port
    try:
        main_publish(config, duration_s=duration, count=args.count)
    finally:
        if broker is not None:
            broker.stop()


if __name__ == "__main__":
    main()
