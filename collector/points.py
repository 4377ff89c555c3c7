"""The SCADA point: one value of one sensor at one instant, as every protocol reader emits it.

Readers never write anywhere themselves. They hand batches of points to an ``Emit`` callback, which
returns only once the points are durable in the spool (and have passed the inline alert rules); a
reader that must acknowledge its source (MQTT QoS 1) acknowledges after that call returns.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Protocol

GOOD: Final = "GOOD"
UNCERTAIN: Final = "UNCERTAIN"
BAD: Final = "BAD"
COMM_FAIL: Final = "COMM_FAIL"
QUALITIES: Final = frozenset({GOOD, UNCERTAIN, BAD, COMM_FAIL})

# Fleet telemetry rides the same spool as points of their own kind: a truck's fix (one MQTT message on
# the broker's fleet topic) becomes one point per field, ``source`` "fleet", ``unit_id`` the truck id,
# ``sensor_type`` the field, all sharing the fix's time and receipt time. Field -> unit of the value.
FLEET_SOURCE: Final = "fleet"
FLEET_FIELDS: Final = {"lat": "°", "lon": "°", "speed_kmh": "km/h", "load_t": "t", "fuel_pct": "%"}
FLEET_REQUIRED: Final = ("lat", "lon")

_MICROS = 1_000_000
# One encoder for every point: json.dumps with custom separators builds a new one per call (~4 µs).
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class Point:
    """One reading. Times are integer microseconds since the Unix epoch, UTC (cheap to compare and store).

    ``source`` is the protocol (``modbus``, ``opcua``, ``mqtt``, ``http``), or ``fleet`` for a field of a
    truck's telemetry fix (``FLEET_FIELDS``; ``unit_id`` is then the truck); ``device`` the configured
    device, endpoint or broker name; ``unit_id`` the plant unit (pump station, machine); ``sensor_type``
    what is measured (``flow``, ``pressure``, ``level``, ``temperature``, ``power``, ``pump_status`` …);
    ``value`` is None when the quality is COMM_FAIL (or the source sent no number).
    """

    source: str
    device: str
    unit_id: str
    sensor_type: str
    value: float | None
    unit: str
    quality: str
    source_ts_us: int
    received_ts_us: int

    @property
    def source_ts(self) -> datetime:
        return datetime.fromtimestamp(self.source_ts_us / _MICROS, UTC)

    @property
    def received_ts(self) -> datetime:
        return datetime.fromtimestamp(self.received_ts_us / _MICROS, UTC)

    @property
    def key(self) -> tuple[str, str, str, int]:
        """What makes a point unique downstream: redelivered copies share it."""
        return (self.source, self.unit_id, self.sensor_type, self.source_ts_us)

    def to_json(self) -> str:
        return _ENCODER.encode(
            [
                self.source,
                self.device,
                self.unit_id,
                self.sensor_type,
                self.value,
                self.unit,
                self.quality,
                self.source_ts_us,
                self.received_ts_us,
            ]
        )

    @classmethod
    def from_json(cls, line: str | bytes) -> Point:
        fields = json.loads(line)
        return cls(*fields)


def to_micros(moment: datetime) -> int:
    """UTC microseconds since the epoch; a naive datetime is refused, not guessed."""
    if moment.tzinfo is None:
        raise ValueError(f"timestamp {moment.isoformat()} has no time zone; SCADA times must be UTC-aware")
    return int(moment.timestamp() * _MICROS)


def now_micros() -> int:
    return int(datetime.now(UTC).timestamp() * _MICROS)


# A reader calls this with each batch; it returns once the batch is durable.
Emit = Callable[[Sequence[Point]], Awaitable[None]]


class Reader(Protocol):
    """What every protocol reader offers the collector service."""

    name: str

    async def run(self, emit: Emit) -> None:
        """Read until cancelled, handing every batch to ``emit``; never raise on a device error."""

    def health(self) -> dict[str, Any]:
        """Connected or not, subscriptions, points per second, error counts (for the status endpoint)."""
