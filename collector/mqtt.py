"""MQTT reader: subscribes to SCADA topics on a broker and acknowledges only what the spool holds.

Topics are ``scada/{unit_id}/{sensor_type}`` with a JSON payload
``{"value": 25.5, "quality": "GOOD", "timestamp": "2026-03-01T00:00:00Z"}`` (quality and timestamp
optional: GOOD and the receipt time) or a bare number ``25.5``; gateways that bundle readings publish
a JSON array of such objects, each naming its ``sensor_type``, on ``scada/{unit_id}/batch``; unit
status (``online``, ``offline``, ``maintenance``, bare or as ``{"status": ...}``) on
``scada/{unit_id}/status`` becomes a ``status`` point coded by ``status_codes``.

Fleet telemetry is a second topic family on the same broker and the same spool (``fleet:`` in the
broker's config, ``fleet/+/telemetry`` by default, the ``+`` level naming the truck): one JSON object per
GPS fix, ``{"ts": "2026-03-01T08:00:00Z", "lat": 24.88, "lon": 74.62, "speed_kmh": 56.0, "load_t": 30.5,
"fuel_pct": 71.0}`` (``lat`` and ``lon`` required, the rest optional, ``ts`` the receipt time when
absent), becomes one point per field with ``source`` ``fleet`` (``collector.points.FLEET_FIELDS``), so it
is acknowledged, spooled, sealed and published exactly like a SCADA reading; a fix that cannot be read
goes to the dead-letter file with the reason.

Delivery guarantee (QoS 1, persistent session): paho runs with ``manual_ack=True`` and a message is
acknowledged only after ``await emit(points)`` returned, i.e. after the points were fsynced in the
spool. If ``emit`` raises (the spool is full, a disk error), nothing of that batch or of what came
after it is acknowledged: the reader disconnects, waits (``resources.retry.RetryPolicy`` backoff from
``reconnect_min_s`` to ``reconnect_max_s``) and reconnects with the same client id, and the broker
delivers the unacknowledged messages again from the session. A message
that cannot be decoded goes to the dead-letter file (fsynced) and is then acknowledged, so it is never
silently dropped and never redelivered for ever. Redelivered copies of a point share its
``Point.key``; the window job removes them.

How paho meets asyncio: paho's own network thread reads one packet per ``select()`` wake-up and hands
every message across threads; instead the client's socket is registered with the event loop
(``add_reader``/``add_writer``, paho's documented external-loop interface), so a wake-up drains many
packets, decoding happens where the message is read, and acknowledgements need no lock. Messages
accumulate into a batch that is committed with one ``emit`` when it holds ``max_batch`` points or its
first message is ``max_batch_delay_ms`` old, or holds half the broker's inflight window
(``receive_maximum`` messages) so acknowledgements leave before the window closes; while one batch is
being synced the next one fills, so under load batches grow by themselves. A batch's PUBACKs leave as
one write (see ``acknowledge``). Reading pauses while ``4 × max_batch`` points wait for the spool, so
memory stays bounded and a backlog stays in the broker. Only the TCP connect (and TLS handshake) runs
in a worker thread, so a slow broker never blocks the loop other readers share.

Keeping up with a stock broker: Mosquitto as installed keeps 20 unacknowledged messages in flight
and 1,000 queued per MQTT 3.1.1 subscriber and drops the rest, so a subscriber that acknowledges only
after an fsync loses a burst there (a quarter of 19,000 messages/s). MQTT 5 is therefore the default
(``protocol: auto``; 3.1.1 when the broker does not speak 5): the reader announces ``receive_maximum``
(65,535 by default) and Mosquitto honours it as the in-flight window towards this client, so a burst
waits in flight (outside the queue limit) while batches are synced. paho builds a ``Properties``
object for every MQTT 5 PUBLISH, which would halve the throughput; ``_Client`` reads the PUBLISH
packets that carry no properties (every reading) directly. With 3.1.1, the broker's
``max_inflight_messages`` and ``max_queued_messages`` must be raised (``deploy/mosquitto.conf``), and
so must the queue for the time the collector is away, and on Mosquitto 2.0.11, which miscounts its
in-flight quota under load (docs/protocols/mqtt.md, "A stock broker").

Broker statistics: the reader also subscribes (QoS 0) to Mosquitto's ``$SYS`` counters of dropped
and stored messages and its uptime, and reports them in ``health()`` (``broker_dropped_messages``):
a broker that dropped messages lost them before any subscriber saw them, which only the broker can tell.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import ssl
import struct
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from math import isfinite
from pathlib import Path
from typing import Any, Literal

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from collector.points import (
    BAD,
    FLEET_FIELDS,
    FLEET_REQUIRED,
    FLEET_SOURCE,
    GOOD,
    QUALITIES,
    Emit,
    Point,
    now_micros,
    to_micros,
)
from resources.retry import RetryPolicy

__all__ = [
    "BROKER_STATS_TOPICS",
    "DEFAULT_STATUS_CODES",
    "DEFAULT_UNITS",
    "DeadLetterFile",
    "FleetTopic",
    "MessageDecoder",
    "MqttBrokerConfig",
    "MqttReader",
    "MqttTls",
    "acknowledge",
    "build_reader",
]

log = logging.getLogger(__name__)

SOURCE = "mqtt"
BATCH_SENSOR = "batch"
STATUS_SENSOR = "status"
# What the topic cache holds as the "sensor" of a fleet topic: it has a '/', so no SCADA topic level can be it.
_FLEET_TOPIC = "fleet/telemetry"

DEFAULT_UNITS: dict[str, str] = {
    "temperature": "°C",
    "pressure": "bar",
    "flow": "L/min",
    "power": "kW",
    "level": "m",
}
DEFAULT_STATUS_CODES: dict[str, float] = {"offline": 0.0, "online": 1.0, "maintenance": 2.0}

# A read wake-up handles at most this many packets before yielding, so a flood cannot starve the
# other readers and the alert path sharing the event loop (500 packets take a few milliseconds).
_PACKETS_PER_WAKEUP = 500
# Reading pauses while this many times max_batch points wait for their commit: memory stays bounded
# however wide the broker's inflight window (1,000 batch messages of 100 points would be 100,000 points),
# and TCP pushes back to the broker, which is where a backlog belongs.
_PENDING_BATCHES = 4
# Topic shapes seen so far; a broker flooding random topics must not grow it without end.
_TOPIC_CACHE_SIZE = 10_000
_RATE_SPAN_S = 10
_MISSING = object()

# Mosquitto's counters (retained, republished every sys_interval, 10 s by default): messages dropped
# because a client's queue was full, messages held for delivery, and the uptime that says a restart.
_SYS_DROPPED = "$SYS/broker/publish/messages/dropped"
_SYS_STORED = "$SYS/broker/store/messages/count"
_SYS_UPTIME = "$SYS/broker/uptime"
BROKER_STATS_TOPICS = (_SYS_DROPPED, _SYS_STORED, _SYS_UPTIME)
_UNSUPPORTED_PROTOCOL = "Unsupported protocol version"
# protocol auto: a broker that never answered an MQTT 5 CONNECT gets this long before 3.1.1 is tried
# (amqtt neither answers nor closes; a real broker answers within a round trip).
_MQTT5_PROBE_S = 5.0


class MqttTls(BaseModel):
    """TLS towards the broker; without ``ca_file`` the system's trusted CAs verify it."""

    model_config = ConfigDict(extra="forbid")

    ca_file: Path | None = Field(default=None, description="CA bundle (PEM) that signed the broker's certificate")
    cert_file: Path | None = Field(default=None, description="client certificate (PEM), for brokers that ask")
    key_file: Path | None = Field(default=None, description="the client certificate's private key (PEM)")
    insecure: bool = Field(
        default=False, description="skip the host name check of the broker's certificate (tests only)"
    )

    @model_validator(mode="after")
    def _pair(self) -> MqttTls:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("give both cert_file and key_file, or neither")
        return self


class FleetTopic(BaseModel):
    """Truck telemetry on this broker: one JSON object per GPS fix, spooled as ``fleet`` points.

    ``topic`` has exactly one ``+`` level, the truck id (``fleet/+/telemetry``). ``fields`` maps each
    telemetry field (``lat``, ``lon``, ``speed_kmh``, ``load_t``, ``fuel_pct``) to the key the trucks'
    payload uses for it, for telematics units that say ``latitude``; ``timestamp_key`` likewise.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    topic: str = Field(default="fleet/+/telemetry", description="topic filter with one + level: the truck id")
    fields: dict[str, str] = Field(
        default_factory=lambda: {name: name for name in FLEET_FIELDS},
        description="telemetry field -> payload key (lat, lon, speed_kmh, load_t, fuel_pct)",
    )
    timestamp_key: str = Field(default="ts", min_length=1, description="payload key of the fix's UTC ISO 8601 time")

    @model_validator(mode="after")
    def _shape(self) -> FleetTopic:
        levels = self.topic.split("/")
        if self.topic.startswith("$") or "#" in self.topic or any(not level for level in levels):
            raise ValueError(f"topic {self.topic!r}: expected levels like fleet/+/telemetry, without # or $")
        if levels.count("+") != 1:
            raise ValueError(f"topic {self.topic!r}: expected exactly one + level (the truck id)")
        return self

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, fields: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(fields) - set(FLEET_FIELDS))
        if unknown:
            raise ValueError(f"{', '.join(unknown)} unknown; expected some of {', '.join(FLEET_FIELDS)}")
        # Fields not named keep their own name as the payload key.
        return {name: fields.get(name, name) for name in FLEET_FIELDS}

    @property
    def levels(self) -> tuple[str, ...]:
        return tuple(self.topic.split("/"))


class MqttBrokerConfig(BaseModel):
    """One MQTT broker the collector subscribes to (QoS 1, persistent session, ack after durable)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = Field(min_length=1, description="broker name: the points' device, and the name in health and logs")
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    client_id: str = Field(
        default="",
        description="stable id of the persistent session (default ihub-collector-<name>); never share it",
    )
    protocol: Literal["auto", "3.1.1", "5"] = Field(
        default="auto",
        description="MQTT version: auto is 5 (the reader sets its own in-flight window, so a stock broker keeps up), "
        "and 3.1.1 when the broker refuses 5",
    )
    topics: list[str] = Field(default_factory=lambda: ["scada/+/+"], min_length=1)
    qos: Literal[0, 1, 2] = 1
    clean_session: bool = Field(
        default=False,
        validation_alias=AliasChoices("clean_session", "clean_start"),
        description="start without the broker's stored session (clean_start in MQTT 5); false keeps "
        "messages queued while the collector is down",
    )
    session_expiry_s: int = Field(
        default=7 * 24 * 3600, ge=0, le=0xFFFFFFFF, description="MQTT 5: how long the broker keeps the session"
    )
    username: str | None = None
    password: str | None = Field(default=None, repr=False, description="usually ${MQTT_PASSWORD}")
    tls: MqttTls | None = None
    keepalive_s: int = Field(default=30, ge=5, le=65535)
    receive_maximum: int = Field(
        default=65535,
        ge=2,
        le=65535,
        description="unacknowledged messages the broker may send at once: MQTT 5 asks the broker for it (a burst "
        "then waits in flight, not in the broker's queue); with 3.1.1 the broker decides (max_inflight_messages) "
        "and this should say what it is",
    )
    max_batch: int = Field(default=2000, ge=1, description="points per spool append (at most)")
    max_batch_delay_ms: float = Field(default=5.0, ge=0, description="longest a message waits for its batch")
    reconnect_min_s: float = Field(default=0.5, gt=0, description="first wait before reconnecting; doubles")
    reconnect_max_s: float = Field(default=30.0, gt=0, description="longest wait before reconnecting")
    broker_stats: bool = Field(
        default=True,
        description="subscribe to the broker's $SYS counters (Mosquitto: dropped and stored messages) for health",
    )
    dead_letter_path: Path | None = Field(
        default=None,
        description="JSON lines of undecodable messages; default <IHUB_DATA_DIR>/spool/dead-letter/mqtt-<name>.jsonl",
    )
    units: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_UNITS), description="sensor_type -> unit")
    status_codes: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_STATUS_CODES), description="status text -> value of the status point"
    )
    fleet: FleetTopic | None = Field(
        default=None, description="also take truck telemetry from this broker (docs/sources/fleet.md)"
    )

    @property
    def subscriptions(self) -> list[str]:
        """Every topic filter the reader subscribes to: the SCADA topics, then the fleet topic if configured."""
        return [*self.topics, *([self.fleet.topic] if self.fleet is not None else [])]

    @model_validator(mode="after")
    def _defaults(self) -> MqttBrokerConfig:
        if not self.client_id:
            self.client_id = f"ihub-collector-{self.name}"
        if self.dead_letter_path is None:
            data_dir = Path(os.environ.get("IHUB_DATA_DIR", ".data"))
            self.dead_letter_path = data_dir / "spool" / "dead-letter" / f"mqtt-{self.name}.jsonl"
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s must be at least reconnect_min_s")
        if self.password is not None and self.username is None:
            raise ValueError("a password needs a username")
        self.status_codes = {key.lower(): value for key, value in self.status_codes.items()}
        return self


# ---------------------------------------------------------------------------------------- decoding


class _Undecodable(ValueError):
    """The reason a payload (or one element of a batch) is not a point; it ends in the dead-letter file."""


class MessageDecoder:
    """Turns one MQTT message into points, or says why it cannot (no I/O, no state but caches)."""

    def __init__(self, config: MqttBrokerConfig) -> None:
        self.device = config.name
        self.units = dict(config.units)
        self.status_codes = dict(config.status_codes)
        self._topics: dict[str, tuple[str, str]] = {}
        self._fleet = config.fleet
        # Gateways stamp every reading of a poll with the same time: parse each string once.
        self._last_ts: str | None = None
        self._last_ts_us = 0

    def decode(self, topic: str, payload: bytes, received_us: int) -> tuple[list[Point], str | None]:
        """The points a message carries and, if some or all of it is unusable, the reason (else None)."""
        try:
            unit_id, sensor = self._topic(topic)
            if sensor == BATCH_SENSOR:
                return self._batch(unit_id, payload, received_us)
            if sensor == STATUS_SENSOR:
                return [self._status(unit_id, payload, received_us)], None
            if sensor is _FLEET_TOPIC:
                return self._fleet_fix(unit_id, payload, received_us), None
            return [self._single(unit_id, sensor, payload, received_us)], None
        except _Undecodable as reason:
            return [], str(reason)

    def _topic(self, topic: str) -> tuple[str, str]:
        shape = self._topics.get(topic)
        if shape is None:
            parts = topic.split("/")
            truck = self._truck_of(parts)
            if truck is not None:
                shape = (truck, _FLEET_TOPIC)
            elif len(parts) != 3 or not parts[1] or not parts[2]:
                raise _Undecodable(f"topic {topic!r} is not <prefix>/{{unit_id}}/{{sensor_type}}")
            else:
                shape = (parts[1], parts[2])
            if len(self._topics) >= _TOPIC_CACHE_SIZE:
                self._topics.clear()
            self._topics[topic] = shape
        return shape

    def _truck_of(self, parts: list[str]) -> str | None:
        """The truck id if the topic is of the fleet family (its + level), else None."""
        if self._fleet is None:
            return None
        levels = self._fleet.levels
        if len(parts) != len(levels):
            return None
        if any(level != "+" and level != part for level, part in zip(levels, parts, strict=True)):
            return None
        truck = parts[levels.index("+")]
        return truck or None

    def _fleet_fix(self, truck: str, payload: bytes, received_us: int) -> list[Point]:
        """One truck fix: a point per telemetry field present, all at the fix's time."""
        fleet = self._fleet
        assert fleet is not None
        obj = _json(payload)
        if type(obj) is not dict:
            raise _Undecodable(f"fleet telemetry must be a JSON object, got {type(obj).__name__}")
        source_us = self._timestamp(obj.get(fleet.timestamp_key), received_us)
        points = []
        for name, key in fleet.fields.items():
            value = obj.get(key)
            if value is None:
                if name in FLEET_REQUIRED:
                    raise _Undecodable(f"fleet telemetry has no {key!r} (the fix's {name})")
                continue
            if type(value) is not float and type(value) is not int:
                raise _Undecodable(f"fleet telemetry {key!r} = {value!r} is not a number")
            try:
                value = float(value)
            except OverflowError:
                raise _Undecodable(_not_finite(str(value))) from None
            if not isfinite(value):
                raise _Undecodable(_not_finite(repr(value)))
            points.append(
                Point(FLEET_SOURCE, self.device, truck, name, value, FLEET_FIELDS[name], GOOD, source_us, received_us)
            )
        return points

    def _single(self, unit_id: str, sensor: str, payload: bytes, received_us: int) -> Point:
        body = payload.strip()
        if body[:1] == b"{":
            return self._from_object(unit_id, sensor, _json(body), received_us)
        if body[:1] == b"[":
            raise _Undecodable(f"a JSON array is only accepted on {{prefix}}/{unit_id}/{BATCH_SENSOR}")
        try:
            value = float(body)
        except ValueError:
            raise _Undecodable(f"payload is neither a JSON object nor a number: {_preview(payload)}") from None
        if not isfinite(value):
            raise _Undecodable(_not_finite(body.decode("ascii", errors="replace")))
        return Point(
            SOURCE, self.device, unit_id, sensor, value, self.units.get(sensor, ""), GOOD, received_us, received_us
        )

    def _batch(self, unit_id: str, payload: bytes, received_us: int) -> tuple[list[Point], str | None]:
        items = _json(payload)
        if type(items) is not list:
            raise _Undecodable(f"a batch must be a JSON array of points, got {type(items).__name__}")
        points: list[Point] = []
        append = points.append
        problems: list[str] = []
        from_object = self._from_object
        for index, item in enumerate(items):
            try:
                append(from_object(unit_id, None, item, received_us))
            except _Undecodable as reason:
                problems.append(f"element {index}: {reason}")
        if not problems:
            return points, None
        # Good elements still count; the whole payload is kept with every reason, so nothing is lost.
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        return points, f"{len(problems)} of {len(items)} batch elements unusable: {shown}"

    def _from_object(self, unit_id: str, sensor: str | None, obj: Any, received_us: int) -> Point:
        """One JSON object as a point; ``sensor`` None takes it from the object (batch elements).

        The hot path of the reader (every point of a batch passes here), hence exact type checks
        and a single dictionary lookup per field.
        """
        if type(obj) is not dict:
            raise _Undecodable(f"expected a JSON object, got {type(obj).__name__}")
        if sensor is None:
            sensor = obj.get("sensor_type")
            if type(sensor) is not str or not sensor or "/" in sensor:
                raise _Undecodable("sensor_type is missing or not a name")
        value = obj.get("value", _MISSING)
        kind = type(value)
        if kind is float:
            if not isfinite(value):
                raise _Undecodable(_not_finite(repr(value)))  # json reads 1e400 as inf
        elif kind is int:
            try:
                value = float(value)
            except OverflowError:  # an integer literal of more than 308 digits
                raise _Undecodable(_not_finite(str(value))) from None
        elif value is _MISSING:
            raise _Undecodable("no 'value'")
        elif value is not None:
            raise _Undecodable(f"value {value!r} is not a number")
        quality = obj.get("quality")
        if quality is None:
            quality = GOOD if value is not None else BAD
        elif type(quality) is not str or (quality not in QUALITIES and (quality := quality.upper()) not in QUALITIES):
            raise _Undecodable(f"quality {obj.get('quality')!r} is not one of {', '.join(sorted(QUALITIES))}")
        elif value is None and quality == GOOD:
            raise _Undecodable("value is null but quality is GOOD")
        unit = obj.get("unit")
        if unit is None:
            unit = self.units.get(sensor, "")
        elif type(unit) is not str:
            raise _Undecodable(f"unit {unit!r} is not a string")
        raw = obj.get("timestamp")
        if raw is None:
            source_us = received_us
        elif raw == self._last_ts:
            source_us = self._last_ts_us
        else:
            source_us = self._timestamp(raw, received_us)
        return Point(SOURCE, self.device, unit_id, sensor, value, unit, quality, source_us, received_us)

    def _status(self, unit_id: str, payload: bytes, received_us: int) -> Point:
        body = payload.strip()
        source_us = received_us
        if body[:1] == b"{":
            obj = _json(body)
            status = obj.get("status") if isinstance(obj, dict) else None
            if not isinstance(status, str):
                raise _Undecodable("a status object needs a 'status' string")
            source_us = self._timestamp(obj.get("timestamp"), received_us)
        else:
            try:
                status = body.decode("utf-8")
            except UnicodeDecodeError:
                raise _Undecodable("status payload is not UTF-8 text") from None
        code = self.status_codes.get(status.strip().lower())
        if code is None:
            raise _Undecodable(f"status {status!r} is not one of {', '.join(sorted(self.status_codes))}")
        return Point(SOURCE, self.device, unit_id, STATUS_SENSOR, code, "", GOOD, source_us, received_us)

    def _timestamp(self, raw: Any, received_us: int) -> int:
        if raw is None:
            return received_us
        if raw == self._last_ts:
            return self._last_ts_us
        if not isinstance(raw, str):
            raise _Undecodable(f"timestamp {raw!r} is not an ISO 8601 string")
        try:
            moment = datetime.fromisoformat(raw)
            micros = to_micros(moment)
        except ValueError as error:
            raise _Undecodable(f"timestamp {raw!r}: {error}") from None
        self._last_ts, self._last_ts_us = raw, micros
        return micros


# json.loads on bytes sniffs the encoding first; payloads are UTF-8 by the MQTT spec, so decode directly.
_decode_json = json.JSONDecoder().decode


def _json(body: bytes) -> Any:
    try:
        return _decode_json(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise _Undecodable(f"payload is not UTF-8: {_preview(body)}") from None
    except ValueError as error:
        raise _Undecodable(f"invalid JSON ({error}): {_preview(body)}") from None


def _not_finite(literal: str) -> str:
    """The one reason for a value a 64-bit float cannot hold, whichever payload style carried it."""
    if len(literal) > 24:
        literal = f"{literal[:20]}… ({len(literal)} characters)"
    return f"value {literal} is not a finite number that fits a 64-bit float (at most ±1.8e308)"


def _preview(payload: bytes, limit: int = 60) -> str:
    text = payload[:limit].decode("utf-8", errors="replace")
    return repr(text + ("…" if len(payload) > limit else ""))


# ---------------------------------------------------------------------------------------- dead letters


class DeadLetterFile:
    """Appends undecodable messages as JSON lines and fsyncs them before they may be acknowledged.

    One object per line, in the spool's dead-letter shape plus the MQTT details: ``at`` (receipt, UTC
    ISO 8601), ``source``, ``broker``, ``topic``, ``qos``, ``reason``, ``payload`` (text when UTF-8,
    else base64) and ``payload_encoding``. Several writers may append: each record is one ``write``
    to a file opened with ``O_APPEND``.
    """

    def __init__(self, path: str | os.PathLike[str], broker: str) -> None:
        self.path = Path(path)
        self.broker = broker
        self._lock = threading.Lock()

    def record(self, topic: str, payload: bytes, reason: str, received_us: int, qos: int) -> dict[str, Any]:
        """The line that will be written for one message (cheap; called where the message is decoded)."""
        try:
            text, encoding = payload.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            text, encoding = base64.b64encode(payload).decode("ascii"), "base64"
        return {
            "at": datetime.fromtimestamp(received_us / 1_000_000, UTC).isoformat(timespec="microseconds"),
            "source": SOURCE,
            "broker": self.broker,
            "topic": topic,
            "qos": qos,
            "reason": reason,
            "payload": text,
            "payload_encoding": encoding,
        }

    def write(self, records: Sequence[dict[str, Any]]) -> None:
        """Append ``records`` and fsync; raises OSError if they are not safely on disk."""
        data = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in records).encode()
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                os.fsync(fd)
            finally:
                os.close(fd)

    def read(self) -> list[dict[str, Any]]:
        """Every record written so far (for tests and the status command)."""
        try:
            with self.path.open("rb") as handle:
                return [json.loads(line) for line in handle if line.strip()]
        except FileNotFoundError:
            return []


# ---------------------------------------------------------------------------------------- reader


@dataclass(slots=True)
class _Batch:
    """Messages of one connection waiting for one commit: their points, dead letters and acks."""

    generation: int
    started: float = 0.0
    messages: int = 0
    points: list[Point] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)
    acks: list[tuple[int, int]] = field(default_factory=list)


class _Rates:
    """Committed points and messages per second over the last ``_RATE_SPAN_S`` seconds."""

    def __init__(self) -> None:
        self._samples: deque[tuple[float, int, int]] = deque()
        self.points = 0
        self.messages = 0

    def add(self, points: int, messages: int) -> None:
        self.points += points
        self.messages += messages
        now = time.monotonic()
        samples = self._samples
        if not samples or now - samples[-1][0] >= 1.0:
            samples.append((now, self.points, self.messages))
            while len(samples) > 1 and now - samples[0][0] > _RATE_SPAN_S:
                samples.popleft()

    def per_second(self) -> tuple[float, float]:
        if not self._samples:
            return 0.0, 0.0
        t0, points0, messages0 = self._samples[0]
        span = time.monotonic() - t0
        if span < 1.0:
            return 0.0, 0.0
        return (self.points - points0) / span, (self.messages - messages0) / span


class _BrokerStats:
    """The broker's own counters from ``$SYS`` (Mosquitto), as the reader last heard them.

    ``dropped`` is the broker's count since it started, for every client (a queue that was full);
    ``dropped_since_connect`` only what it dropped while this reader listened: the first report is
    the baseline, and a counter that goes down means the broker restarted and counts from zero again.
    """

    def __init__(self) -> None:
        self.subscription = "off"
        self.dropped: int | None = None
        self.stored: int | None = None
        self.uptime_s: int | None = None
        self.updated_at_us: int | None = None
        self.updates = 0
        self._baseline = 0
        self._carried = 0

    @property
    def dropped_since_connect(self) -> int | None:
        return None if self.dropped is None else self._carried + self.dropped - self._baseline

    def update(self, topic: str, payload: bytes, error: Any) -> None:
        try:
            value = int(payload.split(None, 1)[0])  # "123" or, for the uptime, "123 seconds"
        except (ValueError, IndexError):
            return  # another broker's $SYS shape: nothing to report rather than a wrong figure
        self.updates += 1
        self.updated_at_us = now_micros()
        if topic == _SYS_DROPPED:
            before = self.dropped_since_connect
            if self.dropped is None:
                self._baseline = value
            elif value < self.dropped:
                self._carried += self.dropped - self._baseline
                self._baseline = 0
            self.dropped = value
            now = self.dropped_since_connect
            if before is not None and now is not None and now > before:
                error(
                    f"the broker dropped {now - before} message(s) since its last report ({now} since the reader "
                    "connected, for all its clients): a subscriber's queue is full; see max_queued_messages in "
                    "docs/protocols/mqtt.md"
                )
        elif topic == _SYS_STORED:
            self.stored = value
        elif topic == _SYS_UPTIME:
            self.uptime_s = value

    def health(self, enabled: bool) -> dict[str, Any]:
        return {
            "broker_stats": self.subscription if enabled else "off",
            "broker_dropped_messages": self.dropped,
            "broker_dropped_since_connect": self.dropped_since_connect,
            "broker_stored_messages": self.stored,
            "broker_uptime_s": self.uptime_s,
            "broker_stats_at_us": self.updated_at_us,
        }


class _Client(paho.Client):
    """paho's client with a fast path for the PUBLISH packets that carry readings.

    For every MQTT 5 PUBLISH paho builds a ``Properties`` object (about 16 µs, as much as the rest of
    the reader's work on a message) and for every PUBLISH an ``MQTTMessage`` with its own threading
    condition. A QoS 0 or 1 PUBLISH without properties (what gateways send) is read here instead and
    handed to ``deliver(topic, payload, mid, qos, dup)``, exactly as paho would have handed it to
    ``on_message`` with ``manual_ack``; anything else (QoS 2, properties such as a topic alias, a
    malformed packet) takes paho's own path. ``_handle_publish`` and ``_in_packet`` are paho 2.x
    internals (pinned ``paho-mqtt<3``); a test compares both paths on the same packets.
    """

    def __init__(self, *args: Any, deliver: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deliver = deliver
        self._with_properties = self._protocol == paho.MQTTv5

    def _handle_publish(self) -> MQTTErrorCode:
        header = self._in_packet["command"]
        qos = (header & 0x06) >> 1
        packet = self._in_packet["packet"]
        if qos < 2 and len(packet) >= 3:
            end = 2 + ((packet[0] << 8) | packet[1])
            start = end + 2 if qos else end
            if end > 2 and start <= len(packet):
                mid = (packet[end] << 8) | packet[end + 1] if qos else 0
                if self._with_properties:
                    if start == len(packet) or packet[start] != 0:
                        return super()._handle_publish()
                    start += 1  # an empty property list
                self._deliver(bytes(packet[2:end]), bytes(packet[start:]), mid, qos, bool(header & 0x08))
                return MQTTErrorCode.MQTT_ERR_SUCCESS
        return super()._handle_publish()


class MqttReader:
    """Subscribes to one broker and hands decoded points to ``emit``; see the module docstring."""

    protocol = "mqtt"

    def __init__(self, config: MqttBrokerConfig) -> None:
        self.name = config.name
        self.config = config
        self.decoder = MessageDecoder(config)
        assert config.dead_letter_path is not None
        self.dead_letters = DeadLetterFile(config.dead_letter_path, config.name)
        self._flush_at = config.max_batch
        # backoff() never gives up (max_attempts only bounds retrying()); one schedule for a failing broker,
        # one for a failing spool, and the reader waits the longer of the two.
        self._retry = RetryPolicy(initial_s=config.reconnect_min_s, max_delay_s=config.reconnect_max_s, factor=2.0)
        self._spool_backoff = self._retry.backoff()
        self._spool_wait_s = 0.0
        self._v5 = config.protocol != "3.1.1"
        self._v5_answered = False
        self._mqtt5_refused = False
        # Commit by half windows, so acknowledgements go out before the broker's window closes.
        self._flush_messages = max(1, config.receive_maximum // 2)
        self._pause_at = _PENDING_BATCHES * config.max_batch
        self._pending_points = 0
        self._paused = False
        self._delay_s = config.max_batch_delay_ms / 1000.0

        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._client: paho.Client | None = None
        self._fd: int | None = None
        self._connack: asyncio.Future[str | None] | None = None
        self._gone: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None

        # A generation is one connection. Packet ids (mids) are only meaningful on the connection
        # that delivered them, so a batch is acknowledged only if its generation is still current.
        self._generation = 0
        self._connected = False
        self._discarding = False
        self._batch = _Batch(generation=0)
        self._ready: deque[_Batch] = deque()

        self._received = 0
        self._packets = 0
        self._rates = _Rates()
        self._stats = _BrokerStats()
        self._dead_count = 0
        self._errors = 0
        self._emit_failures = 0
        self._reconnects = 0
        self._connects = 0
        self._redelivered = 0
        self._last_error: str | None = None
        self._last_error_at_us: int | None = None
        self._subscriptions: dict[str, int | str] = {}
        self._topics_mid: int | None = None
        self._stats_mid: int | None = None

    # ------------------------------------------------------------------------------ public

    async def run(self, emit: Emit) -> None:
        """Connect, subscribe and commit batches until cancelled; broker and emit failures are retried."""
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wake = asyncio.Event()
        self._client = self._new_client()
        committer = asyncio.create_task(self._commit_forever(emit), name=f"mqtt-{self.name}-commit")
        # A bug that ends the commit loop must end run() (the service restarts it), not wait for a disconnect.
        committer.add_done_callback(lambda _: self._gone.set() if self._gone is not None else None)
        try:
            await self._connect_forever(committer)
        finally:
            committer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await committer
            self._shutdown()

    def health(self) -> dict[str, Any]:
        """Connection, subscriptions, committed rates and counters for the status endpoint."""
        points_per_s, messages_per_s = self._rates.per_second()
        return {
            "protocol": "mqtt",
            "name": self.name,
            "broker": f"{self.config.host}:{self.config.port}",
            "client_id": self.config.client_id,
            "mqtt_version": "5" if self._v5 else "3.1.1",
            "connected": self._connected,
            "subscriptions": dict(self._subscriptions),
            "points_per_s": round(points_per_s, 1),
            "messages_per_s": round(messages_per_s, 1),
            "messages_received": self._received,
            "messages_committed": self._rates.messages,
            "points_emitted": self._rates.points,
            "pending_messages": self._batch.messages + sum(batch.messages for batch in self._ready),
            "redelivered": self._redelivered,
            "dead_letters": self._dead_count,
            "dead_letter_path": str(self.dead_letters.path),
            "errors": self._errors,
            "emit_failures": self._emit_failures,
            "connects": self._connects,
            "reconnects": self._reconnects,
            "last_error": self._last_error,
            "last_error_at_us": self._last_error_at_us,
            **self._stats.health(self.config.broker_stats),
        }

    # ------------------------------------------------------------------------------ connection

    def _new_client(self) -> paho.Client:
        config = self.config
        v5 = self._v5
        client = _Client(
            CallbackAPIVersion.VERSION2,
            client_id=config.client_id,
            protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
            clean_session=None if v5 else config.clean_session,
            manual_ack=True,
            deliver=self._deliver,
        )
        # Never reached for PUBLISH packets, but keeps paho from re-raising into the event loop.
        client.suppress_exceptions = True
        if config.username is not None:
            client.username_pw_set(config.username, config.password)
        if config.tls is not None:
            tls = config.tls
            client.tls_set(
                ca_certs=str(tls.ca_file) if tls.ca_file else None,
                certfile=str(tls.cert_file) if tls.cert_file else None,
                keyfile=str(tls.key_file) if tls.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
            client.tls_insecure_set(tls.insecure)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        if v5:
            properties = Properties(PacketTypes.CONNECT)
            properties.SessionExpiryInterval = config.session_expiry_s
            properties.ReceiveMaximum = config.receive_maximum
            client.connect_async(
                config.host,
                config.port,
                config.keepalive_s,
                clean_start=config.clean_session,
                properties=properties,
            )
        else:
            client.connect_async(config.host, config.port, config.keepalive_s)
        return client

    async def _connect_forever(self, committer: asyncio.Task[None]) -> None:
        config, loop = self.config, self._loop
        assert loop is not None
        backoff = self._retry.backoff()
        while True:
            if committer.done():
                committer.result()  # a bug in the commit loop must surface, not hang the reader
            client = self._client
            assert client is not None
            self._gone = asyncio.Event()
            self._connack = loop.create_future()
            self._mqtt5_refused = False
            try:
                # Connecting (and a TLS handshake) blocks; the rest of the collector must not wait for it.
                await asyncio.to_thread(client.reconnect)
            except (OSError, ssl.SSLError, ValueError) as error:
                self._error(f"cannot connect to {config.host}:{config.port}: {error}")
            else:
                keepalive = asyncio.create_task(self._keepalive(), name=f"mqtt-{self.name}-keepalive")
                probing = self._v5 and config.protocol == "auto" and not self._v5_answered
                timeout = min(config.keepalive_s, _MQTT5_PROBE_S) if probing else config.keepalive_s
                try:
                    try:
                        refused = await asyncio.wait_for(asyncio.shield(self._connack), timeout=timeout)
                    except TimeoutError:
                        refused = f"no CONNACK within {timeout:g} s"
                        self._mqtt5_refused = probing
                        self._drop_socket()
                    if refused is None:
                        backoff.reset()
                    elif not self._mqtt5_refused:
                        self._error(f"broker {config.host}:{config.port} refused the connection: {refused}")
                    # paho closes the socket itself after a refusal; wait for that or for the connection to end.
                    await self._gone.wait()
                finally:
                    keepalive.cancel()
                if self._mqtt5_refused:
                    log.warning(
                        "mqtt %s: %s:%d does not speak MQTT 5 (%s); using 3.1.1, so the broker's max_inflight_messages "
                        "and max_queued_messages bound a burst (deploy/mosquitto.conf)",
                        self.name,
                        config.host,
                        config.port,
                        refused,
                    )
                    self._v5 = False
                    self._client = self._new_client()
                    continue
            wait = max(backoff.next(), self._spool_wait_s)
            log.info("mqtt %s: reconnecting to %s:%d in %.1f s", self.name, config.host, config.port, wait)
            await asyncio.sleep(wait)
            self._reconnects += 1

    async def _keepalive(self) -> None:
        # paho's loop_misc sends PINGREQ and notices a broker that went silent (keepalive timeout).
        client = self._client
        assert client is not None
        while True:
            await asyncio.sleep(1.0)
            client.loop_misc()

    def _drop_socket(self) -> None:
        client = self._client
        if client is not None and client.socket() is not None:
            client.disconnect()
            client.loop_write()

    def _shutdown(self) -> None:
        """Disconnect on the way out; unacknowledged messages stay in the broker's session."""
        self._generation += 1
        self._connected = False
        client = self._client
        if client is None:
            return
        with contextlib.suppress(Exception):
            if client.socket() is not None:
                client.disconnect()
                client.loop_write()
        self._remove_fd()
        with contextlib.suppress(Exception):
            sock = client.socket()
            if sock is not None:
                sock.close()
        self._client = None

    # ------------------------------------------------------------------------------ paho callbacks

    def _on_connect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            # Brokers older than Mosquitto 1.6 answer an MQTT 5 CONNECT this way; any other answer is MQTT 5.
            unsupported = self._v5 and str(reason) == _UNSUPPORTED_PROTOCOL
            self._mqtt5_refused = unsupported and self.config.protocol == "auto" and not self._v5_answered
            self._v5_answered = self._v5_answered or (self._v5 and not unsupported)
            self._resolve_connack(str(reason))
            return
        self._v5_answered = self._v5
        self._generation += 1
        self._connected = True
        self._discarding = False
        self._connects += 1
        session = "resumed" if flags.session_present else "new"
        log.info(
            "mqtt %s: connected to %s:%d as %s (%s session)",
            self.name,
            self.config.host,
            self.config.port,
            self.config.client_id,
            session,
        )
        # Subscribing again on a resumed session is harmless and picks up topics added to the config.
        topics = self.config.subscriptions
        _, self._topics_mid = client.subscribe([(topic, self.config.qos) for topic in topics])
        self._subscriptions = {topic: "pending" for topic in topics}
        if self.config.broker_stats:
            # Separately, so a broker that forbids $SYS (an ACL) refuses only this one.
            _, self._stats_mid = client.subscribe([(topic, 0) for topic in BROKER_STATS_TOPICS])
            self._stats.subscription = "pending"
        self._resolve_connack(None)

    def _on_subscribe(self, client: paho.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        if mid == self._stats_mid:
            refused = [str(reason) for reason in reasons if reason.is_failure]
            self._stats.subscription = f"refused: {refused[0]}" if refused else "subscribed"
            if refused:
                log.info("mqtt %s: the broker refused its $SYS counters (%s); no drop counts", self.name, refused[0])
            return
        for topic, reason in zip(self.config.subscriptions, reasons, strict=False):
            if reason.is_failure:
                self._subscriptions[topic] = str(reason)
                self._error(f"subscription to {topic!r} refused: {reason}")
            else:
                self._subscriptions[topic] = reason.value

    def _on_disconnect(self, client: paho.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        was_connected = self._connected
        self._generation += 1
        self._connected = False
        if self._batch.messages:
            # What was read on the lost connection can still be stored (a copy comes again), never acked.
            self._ready.append(self._batch)
            self._batch = _Batch(generation=self._generation)
            self._wake_committer()
        if was_connected and not self._discarding:
            self._error(f"lost the connection to {self.config.host}:{self.config.port}: {reason}")
        self._resolve_connack(f"disconnected before CONNACK: {reason}")
        if self._gone is not None:
            self._gone.set()

    def _on_message(self, client: paho.Client, userdata: Any, message: paho.MQTTMessage) -> None:
        # paho's own path: QoS 2, or an MQTT 5 PUBLISH with properties (see _Client).
        self._deliver(message._topic, message.payload, message.mid, message.qos, message.dup)

    def _deliver(self, raw_topic: bytes, payload: bytes, mid: int, qos: int, dup: bool) -> None:
        self._packets += 1
        if raw_topic[:5] == b"$SYS/":
            self._stats.update(raw_topic.decode("utf-8", errors="replace"), payload, self._error)
            if qos:
                self._batch_now().acks.append((mid, qos))  # in order with the readings around it
            return
        self._received += 1
        if self._discarding:
            return  # a commit failed on this connection: not acked, the broker sends it again
        received_us = time.time_ns() // 1000
        try:
            topic = raw_topic.decode("utf-8")
        except UnicodeDecodeError:
            topic = repr(raw_topic)
            points: list[Point] = []
            reason: str | None = "topic is not UTF-8"
        else:
            try:
                points, reason = self.decoder.decode(topic, payload, received_us)
            except Exception as error:  # a decoder bug must not take the connection down
                log.exception("mqtt %s: decoding a message on %s failed", self.name, topic)
                points, reason = [], f"internal decoder error: {type(error).__name__}: {error}"
        if dup:
            self._redelivered += 1
        batch = self._batch_now()
        if not batch.messages:
            batch.started = time.monotonic()
            self._wake_committer()
        batch.messages += 1
        if points:
            batch.points.extend(points)
            self._pending_points += len(points)
            if self._pending_points >= self._pause_at and not self._paused:
                self._pause_reading()
        if reason is not None:
            batch.dead.append(self.dead_letters.record(topic, payload, reason, received_us, qos))
        if qos:
            batch.acks.append((mid, qos))
        if len(batch.points) >= self._flush_at or batch.messages >= self._flush_messages:
            self._wake_committer()

    def _batch_now(self) -> _Batch:
        batch = self._batch
        if batch.generation != self._generation:
            batch = self._batch = _Batch(generation=self._generation)
        return batch

    def _on_socket_open(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._watch, sock.fileno())

    def _on_socket_close(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._remove_fd)

    def _on_register_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._watch_write)

    def _on_unregister_write(self, client: paho.Client, userdata: Any, sock: Any) -> None:
        self._in_loop(self._unwatch_write)

    # ------------------------------------------------------------------------------ event loop glue

    def _in_loop(self, function: Any, *args: Any) -> None:
        # paho calls the socket callbacks from reconnect(), which runs in a worker thread.
        assert self._loop is not None
        if threading.get_ident() == self._loop_thread:
            function(*args)
        else:
            self._loop.call_soon_threadsafe(function, *args)

    def _watch(self, fd: int) -> None:
        assert self._loop is not None
        self._remove_fd()
        self._fd = fd
        self._paused = False
        self._loop.add_reader(fd, self._readable)
        client = self._client
        if client is not None and client.want_write():
            self._loop.add_writer(fd, self._writable)

    def _watch_write(self) -> None:
        if self._fd is not None and self._loop is not None:
            self._loop.add_writer(self._fd, self._writable)

    def _unwatch_write(self) -> None:
        if self._fd is not None and self._loop is not None:
            self._loop.remove_writer(self._fd)

    def _remove_fd(self) -> None:
        if self._fd is not None and self._loop is not None:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
        self._fd = None

    def _pause_reading(self) -> None:
        self._paused = True
        if self._fd is not None and self._loop is not None:
            self._loop.remove_reader(self._fd)

    def _resume_reading(self) -> None:
        self._paused = False
        if self._fd is not None and self._loop is not None:
            self._loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        client = self._client
        if client is None:
            return
        # loop_read() handles one packet per call; keep reading while packets keep coming.
        for _ in range(_PACKETS_PER_WAKEUP):
            before = self._packets
            if client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS or self._packets == before or self._paused:
                break

    def _writable(self) -> None:
        client = self._client
        if client is not None:
            client.loop_write()

    def _resolve_connack(self, refused: str | None) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.set_result(refused)

    def _wake_committer(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # ------------------------------------------------------------------------------ commits

    async def _commit_forever(self, emit: Emit) -> None:
        wake = self._wake
        assert wake is not None
        while True:
            if not self._ready and not self._batch.messages:
                wake.clear()
                await wake.wait()
                continue
            batch = self._batch
            if not self._ready and len(batch.points) < self._flush_at and batch.messages < self._flush_messages:
                remaining = batch.started + self._delay_s - time.monotonic()
                if remaining > 0:
                    wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(wake.wait(), remaining)
                    continue
            if self._ready:
                batch = self._ready.popleft()
            else:
                self._batch = _Batch(generation=self._generation)
            await self._commit(batch, emit)

    async def _commit(self, batch: _Batch, emit: Emit) -> None:
        try:
            await self._store(batch, emit)
        finally:
            self._pending_points = sum(len(b.points) for b in self._ready) + len(self._batch.points)
            if self._paused and self._pending_points < self._pause_at:
                self._resume_reading()

    async def _store(self, batch: _Batch, emit: Emit) -> None:
        try:
            if batch.dead:
                await asyncio.to_thread(self.dead_letters.write, batch.dead)
            if batch.points:
                await emit(batch.points)
        except Exception as error:
            self._commit_failed(batch, error)
            return
        self._spool_backoff.reset()
        self._spool_wait_s = 0.0
        if batch.dead:
            self._dead_count += len(batch.dead)
            log.warning(
                "mqtt %s: %d message(s) to the dead-letter file %s, e.g. %s: %s",
                self.name,
                len(batch.dead),
                self.dead_letters.path,
                batch.dead[-1]["topic"],
                batch.dead[-1]["reason"],
            )
        client = self._client
        if batch.generation == self._generation and self._connected and client is not None:
            acknowledge(client, batch.acks)
        self._rates.add(len(batch.points), batch.messages)

    def _commit_failed(self, batch: _Batch, error: Exception) -> None:
        """Acknowledge nothing more on this connection; reconnect so the broker redelivers it all."""
        self._emit_failures += 1
        # A failing spool gets the same backoff as a failing broker before the reader reconnects.
        self._spool_wait_s = self._spool_backoff.next()
        current = self._generation
        if batch.generation != current:
            # Read on a connection that is gone: never acknowledged, already sent again on the new one.
            self._error(f"could not store {batch.messages} message(s) of a lost connection: {error}")
            return
        dropped = batch.messages + self._batch.messages
        self._batch = _Batch(generation=current)
        self._error(
            f"could not store a batch ({type(error).__name__}: {error}); {dropped} message(s) left "
            "unacknowledged for the broker to deliver again after reconnecting"
        )
        if self._connected:
            # Later messages of this connection cannot be acknowledged before this batch (MQTT keeps
            # acknowledgements in order), so drop them too and let the broker resend all of them.
            self._discarding = True
            self._drop_socket()

    def _error(self, message: str) -> None:
        self._errors += 1
        self._last_error = message
        self._last_error_at_us = now_micros()
        log.warning("mqtt %s: %s", self.name, message)


_PUBACK = 0x40
_pack_puback = struct.Struct("!BBH").pack


def acknowledge(client: paho.Client, acks: Sequence[tuple[int, int]]) -> None:
    """Send the acknowledgements of a committed batch, in the order the messages arrived.

    ``client.ack(mid, qos)`` costs a Python call chain and a ``send`` system call per message, about a
    sixth of the reader's time at 20,000 messages/s. When every message is QoS 1, the PUBACKs (4 bytes
    each, the same bytes paho's ``ack`` would send, valid in MQTT 3.1.1 and 5) go out as one write
    through paho's own outgoing packet queue. ``_packet_queue`` is paho 2.x internal API (pinned
    ``paho-mqtt<3`` in pyproject.toml; a test checks it is there): without it, or with any QoS 2
    message, each message is acknowledged with ``client.ack``.
    """
    queue = getattr(client, "_packet_queue", None)
    if queue is None or any(qos != 1 for _, qos in acks):
        for mid, qos in acks:
            client.ack(mid, qos)
        return
    if acks:
        queue(_PUBACK, b"".join([_pack_puback(_PUBACK, 2, mid) for mid, _ in acks]), 0, 0)


def build_reader(config: MqttBrokerConfig) -> MqttReader:
    """The reader the collector service runs for one configured MQTT broker."""
    return MqttReader(config)
