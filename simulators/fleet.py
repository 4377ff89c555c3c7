"""A fleet of clinker trucks driving the road legs of the plant network, publishing telemetry over MQTT.

Each truck is based at an integrated unit (``simulators.plant_network``): it waits in the plant's yard,
loads 25–35 t of clinker, drives a road leg to a grinding unit or hub at 50–70 km/h with rest stops,
unloads there and drives back empty; fuel burns with the distance (more when loaded) and is topped up
at the home plant. Every ``interval_s`` it publishes one fix on ``fleet/{truck_id}/telemetry``::

    {"ts": "2026-03-01T08:00:30Z", "lat": 24.889512, "lon": 74.627301, "speed_kmh": 57.3, "load_t": 30.41,
     "fuel_pct": 71.2}

Roads wind: a leg's path is the straight line between the two yards bent by a few smooth lateral waves,
scaled so its length is the network's road distance (great circle × circuity). Everything is
deterministic from ``seed`` (each truck has its own random stream, so adding trucks leaves the others'
days unchanged) and computed from explicit timestamps: ``FleetSimulator.day(start, end)`` builds the
messages of any span in a fraction of a second, and ``publish`` sends them as fast as the broker takes
them (tests, the demo) or paced to a clock compressed ``speedup`` times (``ihub simulate fleet``).

Its own bad data, counted in the ``FleetDay`` it returns so tests can assert against ground truth:

- **GPS jitter**: every fix is off by a few metres (``gps_jitter_m``, normal per axis).
- **dropouts**: while driving away from plants, the unit goes silent for 3–15 minutes (no messages).
- **teleports**: ``teleports`` fixes of the span are reported ``teleport_km`` (300 km) away from where the
  truck is, for one fix, as a confused GPS receiver does.
- **duplicates**: a share of messages is published twice, byte for byte (a unit resending after a
  lost acknowledgement).
- **out of order**: a share of messages is published after the truck's next one (store-and-forward
  units flushing their buffer).

Ground truth: ``FleetDay.trips`` lists every delivery whose loaded departure from the origin's geofence
and unloading at the destination's geofence both happened in the span, as the truck actually drove it
(before any fault), with departure and arrival at the sample instants the fleet asset sees.

Nothing at runtime imports this module: the collector takes whatever the trucks' units publish.
"""

from __future__ import annotations

import argparse
import heapq
import itertools
import json
import math
import random
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from simulators.plant_network import PLANTS, ROAD_LEGS, Plant, haversine_km, plant, road_km

__all__ = ["FleetConfig", "FleetDay", "FleetSimulator", "Message", "Trip", "main", "publish"]

_KM_PER_DEG_LAT = 110.574
_KM_PER_DEG_LON_EQUATOR = 111.320
_EARTH_KM = 6371.0088


@dataclass(frozen=True)
class FleetConfig:
    """The fleet and its faults. Rates are per message (duplicates, out of order) or per driving hour."""

    trucks: int = 6
    seed: int = 7
    interval_s: int = 30
    topic_prefix: str = "fleet"
    capacity_t: tuple[float, float] = (25.0, 35.0)
    cruise_kmh: tuple[float, float] = (50.0, 70.0)
    # Legs a truck drives from its home plant: to grinding units and hubs, short enough for a day's round trip.
    max_leg_km: float = 300.0
    tank_l: float = 400.0
    burn_l_per_km_empty: float = 0.30
    burn_l_per_km_loaded: float = 0.42
    refuel_below_pct: float = 40.0
    # What the ground truth calls a plant's geofence and an unloaded truck: the fleet asset's defaults.
    geofence_radius_km: float = 2.0
    unloaded_below_t: float = 5.0
    gps_jitter_m: float = 4.0
    dropouts_per_driving_hour: float = 0.3
    dropout_s: tuple[float, float] = (180.0, 900.0)
    teleports: int = 1
    teleport_km: float = 300.0
    duplicate_rate: float = 0.01
    out_of_order_rate: float = 0.01

    def __post_init__(self) -> None:
        if self.trucks < 1 or self.interval_s < 1:
            raise ValueError("a fleet needs at least one truck and an interval of at least one second")
        if not 0 <= self.duplicate_rate < 1 or not 0 <= self.out_of_order_rate < 1:
            raise ValueError("duplicate_rate and out_of_order_rate are shares of messages, in [0, 1)")


@dataclass(frozen=True)
class Trip:
    """One delivery as the truck drove it: loaded out of the origin's geofence, unloaded in the destination's."""

    truck_id: str
    origin: str
    destination: str
    departed_at: datetime  # last sample inside the origin's geofence
    arrived_at: datetime  # first sample inside the destination's geofence
    load_t: float
    distance_km: float  # along the road between those two samples


@dataclass(frozen=True)
class Message:
    topic: str
    payload: bytes
    truck_id: str
    ts: datetime


@dataclass
class FleetDay:
    """The messages of a span, in publishing order, and what the simulator knows about them."""

    start: datetime
    end: datetime
    messages: list[Message] = field(default_factory=list)
    trips: list[Trip] = field(default_factory=list)
    fixes: int = 0  # distinct (truck, ts) published, duplicates not counted
    dropped: int = 0  # samples not published (dropouts)
    dropouts: list[tuple[str, datetime, datetime]] = field(default_factory=list)
    teleports: list[tuple[str, datetime]] = field(default_factory=list)
    duplicates: int = 0
    out_of_order: int = 0

    @property
    def positions_expected(self) -> int:
        """Rows the fleet asset should write: every fix published, less the teleported ones."""
        return self.fixes - len(self.teleports)


# ---------------------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class _Path:
    points: tuple[tuple[float, float], ...]
    cumulative_km: tuple[float, ...]

    @property
    def length_km(self) -> float:
        return self.cumulative_km[-1]

    def at(self, km: float) -> tuple[float, float]:
        km = min(max(km, 0.0), self.length_km)
        index = max(0, min(len(self.points) - 2, _bisect(self.cumulative_km, km) - 1))
        a, b = self.points[index], self.points[index + 1]
        span = self.cumulative_km[index + 1] - self.cumulative_km[index]
        f = 0.0 if span <= 0 else (km - self.cumulative_km[index]) / span
        return a[0] + (b[0] - a[0]) * f, a[1] + (b[1] - a[1]) * f

    def reversed(self) -> _Path:
        points = self.points[::-1]
        return _Path(points, _cumulative(points))


def _bisect(values: Sequence[float], x: float) -> int:
    lo, hi = 0, len(values)
    while lo < hi:
        mid = (lo + hi) // 2
        if values[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _cumulative(points: Sequence[tuple[float, float]]) -> tuple[float, ...]:
    total, out = 0.0, [0.0]
    for (a_lat, a_lon), (b_lat, b_lon) in itertools.pairwise(points):
        total += haversine_km(a_lat, a_lon, b_lat, b_lon)
        out.append(total)
    return tuple(out)


def _offset(lat: float, lon: float, north_km: float, east_km: float) -> tuple[float, float]:
    return (
        lat + north_km / _KM_PER_DEG_LAT,
        lon + east_km / (_KM_PER_DEG_LON_EQUATOR * math.cos(math.radians(lat))),
    )


def _destination(lat: float, lon: float, bearing_deg: float, km: float) -> tuple[float, float]:
    """The point ``km`` away on a great circle at ``bearing_deg`` (for teleports far enough to matter)."""
    p1, l1, b, d = math.radians(lat), math.radians(lon), math.radians(bearing_deg), km / _EARTH_KM
    p2 = math.asin(math.sin(p1) * math.cos(d) + math.cos(p1) * math.sin(d) * math.cos(b))
    l2 = l1 + math.atan2(math.sin(b) * math.sin(d) * math.cos(p1), math.cos(d) - math.sin(p1) * math.sin(p2))
    return math.degrees(p2), (math.degrees(l2) + 540.0) % 360.0 - 180.0


def _yard(p: Plant) -> tuple[float, float]:
    """Where trucks stand at a plant: a fixed spot a few hundred metres from its reference coordinates."""
    rng = random.Random(f"yard-{p.plant_id}")
    return _offset(p.latitude, p.longitude, rng.uniform(-0.3, 0.3), rng.uniform(-0.3, 0.3))


def _road(origin: str, destination: str) -> _Path:
    """The road between two yards: the straight line bent by smooth waves, as long as the road distance."""
    a, b = _yard(plant(origin)), _yard(plant(destination))
    rng = random.Random(f"road-{min(origin, destination)}-{max(origin, destination)}")
    modes = [(rng.randint(2, 6), rng.uniform(0.4, 1.0), rng.uniform(0, math.pi)) for _ in range(3)]
    steps = 120
    lat0 = (a[0] + b[0]) / 2
    kx = _KM_PER_DEG_LON_EQUATOR * math.cos(math.radians(lat0))
    dx, dy = (b[1] - a[1]) * kx, (b[0] - a[0]) * _KM_PER_DEG_LAT
    length = math.hypot(dx, dy)
    nx, ny = -dy / length, dx / length  # unit normal, east/north km

    def bent(amplitude_km: float) -> tuple[tuple[float, float], ...]:
        points = []
        for i in range(steps + 1):
            f = i / steps
            wave = sum(w * math.sin(m * math.pi * f + phase) for m, w, phase in modes)
            side = amplitude_km * wave * math.sin(math.pi * f)
            east, north = dx * f + nx * side, dy * f + ny * side
            points.append((a[0] + north / _KM_PER_DEG_LAT, a[1] + east / kx))
        return tuple(points)

    target = road_km(origin, destination)
    lo, hi = 0.0, length
    for _ in range(40):
        mid = (lo + hi) / 2
        if _cumulative(bent(mid))[-1] < target:
            lo = mid
        else:
            hi = mid
    points = bent(lo)
    return _Path(points, _cumulative(points))


# ---------------------------------------------------------------------------------------- trucks


@dataclass
class _Sample:
    ts: datetime
    lat: float
    lon: float
    speed_kmh: float
    load_t: float
    fuel_pct: float
    driving: bool


@dataclass
class _Truck:
    """One truck's state machine, advanced one sample interval at a time."""

    truck_id: str
    home: str
    config: FleetConfig
    rng: random.Random
    destinations: list[str]
    phase: str = "idle"
    phase_left_s: float = 0.0
    phase_total_s: float = 0.0
    at_plant: str = ""
    load_t: float = 0.0
    target_t: float = 0.0
    fuel_l: float = 0.0
    refuel_from_l: float = 0.0
    path: _Path | None = None
    km: float = 0.0
    destination: str = ""
    cruise_kmh: float = 60.0
    cruise_left_s: float = 0.0
    stop_left_s: float = 0.0
    next_stop_km: float = 0.0
    # The delivery in progress, for the ground truth.
    trip_origin: str = ""
    trip_departed: datetime | None = None
    trip_departed_km: float = 0.0
    trip_arrived: datetime | None = None
    trip_arrived_km: float = 0.0
    trip_load_t: float = 0.0
    last_ts: datetime | None = None  # the sample being taken

    def __post_init__(self) -> None:
        self.at_plant = self.home
        self.fuel_l = self.config.tank_l * self.rng.uniform(0.5, 0.95)
        self.refuel_from_l = self.fuel_l
        # Trucks start the span in their home yard, each waiting its own while before the first load.
        self._enter("idle", self.rng.uniform(0, 3 * 3600))

    def _enter(self, phase: str, seconds: float) -> None:
        self.phase, self.phase_left_s, self.phase_total_s = phase, seconds, max(seconds, 1.0)

    def _start_leg(self, origin: str, destination: str, loaded: bool) -> None:
        self.path = _ROADS.setdefault((origin, destination), _road(origin, destination))
        self.km, self.destination = 0.0, destination
        self.stop_left_s, self.cruise_left_s = 0.0, 0.0
        self.next_stop_km = self.rng.uniform(60, 120)
        self._enter("loaded" if loaded else "empty", 0.0)
        self.at_plant = ""

    def step(self, ts: datetime, dt: float, trips: list[Trip]) -> _Sample:
        """Advance ``dt`` seconds to ``ts`` and return the truck's true state there."""
        c, rng = self.config, self.rng
        speed = 0.0
        if self.phase in ("loaded", "empty"):
            assert self.path is not None
            remaining = dt
            if self.stop_left_s > 0:
                used = min(self.stop_left_s, remaining)
                self.stop_left_s -= used
                remaining -= used
            if remaining > 0:
                if self.cruise_left_s <= 0:
                    self.cruise_kmh = rng.uniform(*c.cruise_kmh)
                    self.cruise_left_s = rng.uniform(300, 900)
                self.cruise_left_s -= remaining
                before = self.km
                self.km = min(self.path.length_km, self.km + self.cruise_kmh * remaining / 3600.0)
                burn = c.burn_l_per_km_loaded if self.phase == "loaded" else c.burn_l_per_km_empty
                self.fuel_l = max(0.0, self.fuel_l - (self.km - before) * burn)
                speed = self.cruise_kmh
                if self.km >= self.next_stop_km and self.km < self.path.length_km - 10:
                    # A rest stop at a roadside dhaba: 5 to 25 minutes standing.
                    self.stop_left_s = rng.uniform(300, 1500)
                    self.next_stop_km = self.km + rng.uniform(60, 120)
            lat, lon = self.path.at(self.km)
            self._truth_on_road(ts, lat, lon)
            if self.km >= self.path.length_km:
                self.at_plant = self.destination
                if self.phase == "loaded":
                    self._enter("unloading", rng.uniform(1800, 3600))
                else:
                    self._enter("idle", rng.uniform(1200, 3600))
                    self.refuel_from_l = self.fuel_l
            reported_speed = max(0.0, speed + rng.gauss(0, 1.0)) if speed > 0 else 0.0
            return _Sample(ts, lat, lon, reported_speed, self.load_t, self.fuel_pct, driving=True)

        # Standing in a yard: waiting, loading or unloading.
        self.phase_left_s -= dt
        done = 1.0 - max(self.phase_left_s, 0.0) / self.phase_total_s
        if self.phase == "loading":
            self.load_t = self.target_t * done
        elif self.phase == "unloading":
            self.load_t = self.trip_load_t * (1.0 - done)
        elif (
            self.phase == "idle"
            and self.at_plant == self.home
            and self.refuel_from_l < c.tank_l * c.refuel_below_pct / 100
        ):
            # Topped up at the home pump while it waits for the next load.
            self.fuel_l = self.refuel_from_l + (c.tank_l - self.refuel_from_l) * done
        lat, lon = _yard(plant(self.at_plant))
        sample = _Sample(ts, lat, lon, 0.0, self.load_t, self.fuel_pct, driving=False)
        if self.phase == "unloading" and self.trip_arrived is not None and self.load_t < c.unloaded_below_t:
            self._deliver(trips)
        if self.phase_left_s <= 0:
            self._next_phase()
        return sample

    def _truth_on_road(self, ts: datetime, lat: float, lon: float) -> None:
        if self.phase != "loaded" or self.trip_departed is None:
            return
        origin, destination = plant(self.trip_origin), plant(self.destination)
        radius = self.config.geofence_radius_km
        if haversine_km(lat, lon, origin.latitude, origin.longitude) <= radius and self.trip_arrived is None:
            self.trip_departed, self.trip_departed_km = ts, self.km
        if self.trip_arrived is None and haversine_km(lat, lon, destination.latitude, destination.longitude) <= radius:
            self.trip_arrived, self.trip_arrived_km = ts, self.km

    def _deliver(self, trips: list[Trip]) -> None:
        assert self.trip_departed is not None and self.trip_arrived is not None
        trips.append(
            Trip(
                truck_id=self.truck_id,
                origin=self.trip_origin,
                destination=self.at_plant,
                departed_at=self.trip_departed,
                arrived_at=self.trip_arrived,
                load_t=round(self.trip_load_t, 2),
                distance_km=round(self.trip_arrived_km - self.trip_departed_km, 1),
            )
        )
        self.trip_departed = self.trip_arrived = None

    def _next_phase(self) -> None:
        rng = self.rng
        if self.phase == "idle" and self.at_plant == self.home:
            self.target_t = round(rng.uniform(*self.config.capacity_t), 2)
            self._enter("loading", rng.uniform(1800, 3000))
        elif self.phase == "idle":
            # Waited at a destination (only after a delivery): drive home empty.
            self._start_leg(self.at_plant, self.home, loaded=False)
        elif self.phase == "loading":
            self.load_t = self.target_t
            self.trip_origin, self.trip_load_t = self.home, self.target_t
            self.trip_departed, self.trip_departed_km, self.trip_arrived = self.last_ts, 0.0, None
            self._start_leg(self.home, rng.choice(self.destinations), loaded=True)
        elif self.phase == "unloading":
            self.load_t = 0.0
            self._start_leg(self.at_plant, self.home, loaded=False)

    @property
    def fuel_pct(self) -> float:
        return 100.0 * self.fuel_l / self.config.tank_l


# Roads are the same for every truck and every run: computed once per leg.
_ROADS: dict[tuple[str, str], _Path] = {}


class FleetSimulator:
    """Builds the fleet's telemetry for a span of time; see the module docstring."""

    def __init__(self, config: FleetConfig | None = None) -> None:
        self.config = config or FleetConfig()
        homes = [p.plant_id for p in PLANTS if p.kind == "IU"]
        self.trucks = [(f"TRK{n + 1:02d}", homes[n % len(homes)]) for n in range(self.config.trucks)]

    def destinations(self, home: str) -> list[str]:
        """Where a truck based at ``home`` delivers: grinding units and hubs within ``max_leg_km`` by road."""
        kinds = {p.plant_id: p.kind for p in PLANTS}
        found = [
            leg.destination
            for leg in ROAD_LEGS
            if leg.origin == home
            and kinds[leg.destination] in ("GU", "HUB")
            and leg.distance_km <= self.config.max_leg_km
        ]
        if not found:
            raise ValueError(f"no grinding unit or hub within {self.config.max_leg_km:g} km of {home}")
        return sorted(found)

    def day(self, start: datetime, end: datetime | None = None) -> FleetDay:
        """Every message of ``[start, end)`` (default: a day), faults included, in publishing order."""
        if start.tzinfo is None:
            raise ValueError("start must be UTC-aware")
        start = start.astimezone(UTC)
        end = (end or start + timedelta(days=1)).astimezone(UTC)
        c = self.config
        result = FleetDay(start=start, end=end)
        per_truck: list[list[tuple[datetime, dict]]] = []
        driving: list[tuple[int, int]] = []  # (truck index, sample index) eligible for a teleport
        for index, (truck_id, home) in enumerate(self.trucks):
            rng = random.Random(f"{c.seed}-{truck_id}")
            truck = _Truck(truck_id, home, c, rng, self.destinations(home))
            noise = random.Random(f"{c.seed}-{truck_id}-faults")
            samples: list[tuple[datetime, dict]] = []
            silent_from: datetime | None = None
            silent_until = start
            ts = start
            while ts < end:
                truck.last_ts = ts
                sample = truck.step(ts, c.interval_s, result.trips)
                # Coverage fails on the open road, never in a plant's yard: a stop at a plant is always seen.
                near_plant = _near_any_plant(sample.lat, sample.lon, 5.0)
                if silent_from is not None and (ts >= silent_until or near_plant):
                    result.dropouts.append((truck_id, silent_from, ts))
                    silent_from = None
                coverage_lost = noise.random() < c.dropouts_per_driving_hour * c.interval_s / 3600
                if silent_from is None and sample.driving and not near_plant and coverage_lost:
                    silent_from, silent_until = ts, ts + timedelta(seconds=noise.uniform(*c.dropout_s))
                if silent_from is not None:
                    result.dropped += 1
                else:
                    if sample.driving and not near_plant:
                        driving.append((index, len(samples)))
                    samples.append((ts, self._payload(sample, noise)))
                ts += timedelta(seconds=c.interval_s)
            if silent_from is not None:
                result.dropouts.append((truck_id, silent_from, end))
            per_truck.append(samples)

        faults = random.Random(f"{c.seed}-teleports")
        for _ in range(min(c.teleports, len(driving))):
            while True:
                index, at = driving.pop(faults.randrange(len(driving)))
                ts, payload = per_truck[index][at]
                lat, lon = _destination(payload["lat"], payload["lon"], faults.uniform(0, 360), c.teleport_km)
                if not _near_any_plant(lat, lon, 10.0):
                    break
            payload.update(lat=round(lat, 6), lon=round(lon, 6))
            result.teleports.append((self.trucks[index][0], ts))

        result.trips.sort(key=lambda trip: (trip.arrived_at, trip.truck_id))
        result.fixes = sum(len(samples) for samples in per_truck)
        result.messages = self._publishing_order(per_truck, result)
        return result

    def _payload(self, sample: _Sample, noise: random.Random) -> dict:
        jitter_km = self.config.gps_jitter_m / 1000.0
        lat, lon = _offset(sample.lat, sample.lon, noise.gauss(0, jitter_km), noise.gauss(0, jitter_km))
        return {
            "ts": sample.ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "lat": round(lat, 6),
            "lon": round(lon, 6),
            "speed_kmh": round(sample.speed_kmh, 1),
            "load_t": round(max(0.0, sample.load_t + noise.gauss(0, 0.05)), 2) if sample.load_t > 0 else 0.0,
            "fuel_pct": round(sample.fuel_pct, 1),
        }

    def _publishing_order(self, per_truck: list[list[tuple[datetime, dict]]], result: FleetDay) -> list[Message]:
        """Merge the trucks by send time; some messages go out after their successor, some twice."""
        c = self.config
        rng = random.Random(f"{c.seed}-order")
        streams = []
        for index, samples in enumerate(per_truck):
            truck_id = self.trucks[index][0]
            topic = f"{c.topic_prefix}/{truck_id}/telemetry"
            slots = [(ts, truck_id, topic, payload) for ts, payload in samples]
            i = 0
            while i < len(slots) - 1:
                if rng.random() < c.out_of_order_rate:
                    # Sent in the next message's slot, and the next one in its own: the later fix arrives first.
                    (t1, *a), (t2, *b) = slots[i], slots[i + 1]
                    slots[i], slots[i + 1] = (t1, *b), (t2, *a)
                    result.out_of_order += 1
                    i += 2
                else:
                    i += 1
            streams.append(slots)
        messages = []
        for _, truck_id, topic, payload in heapq.merge(*streams, key=lambda slot: (slot[0], slot[1])):
            body = json.dumps(payload, separators=(",", ":")).encode()
            message = Message(topic, body, truck_id, datetime.fromisoformat(payload["ts"]))
            messages.append(message)
            if rng.random() < c.duplicate_rate:
                messages.append(message)
                result.duplicates += 1
        return messages


def _near_any_plant(lat: float, lon: float, km: float) -> bool:
    return any(haversine_km(lat, lon, p.latitude, p.longitude) <= km for p in PLANTS)


# ---------------------------------------------------------------------------------------- publishing


def publish(
    messages: Iterable[Message],
    host: str = "127.0.0.1",
    port: int = 1883,
    *,
    qos: int = 1,
    speedup: float | None = None,
    start: datetime | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    client_id: str = "",
) -> int:
    """Publish ``messages`` to the broker; returns how many. Without ``speedup``, as fast as the broker
    takes them; with it, each message waits until ``(ts - start) / speedup`` seconds of ``clock`` passed."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv311)
    client.max_inflight_messages_set(1000)
    client.connect(host, port, keepalive=30)
    client.loop_start()
    sent = 0
    pending = []
    began = clock()
    try:
        for message in messages:
            if speedup:
                origin = start or message.ts
                start = origin
                due = began + (message.ts - origin).total_seconds() / speedup
                wait = due - clock()
                if wait > 0:
                    sleep(wait)
            info = client.publish(message.topic, message.payload, qos=qos)
            if info.rc != paho.MQTT_ERR_SUCCESS:
                raise ConnectionError(f"fleet: publishing to {host}:{port} failed: {paho.error_string(info.rc)}")
            pending.append(info)
            sent += 1
            if len(pending) >= 5000:
                for info in pending:
                    info.wait_for_publish(timeout=30)
                pending.clear()
        for info in pending:
            info.wait_for_publish(timeout=30)
            if not info.is_published():
                raise TimeoutError(f"fleet: the broker at {host}:{port} did not acknowledge every message in 30 s")
    finally:
        client.loop_stop()
        client.disconnect()
    return sent


def main(argv: Sequence[str] | None = None) -> int:
    """``ihub simulate fleet``: drive the fleet and publish its telemetry to a broker."""
    parser = argparse.ArgumentParser(
        prog="ihub simulate fleet",
        description="Clinker trucks driving between the plants, publishing GPS, speed, load and fuel on "
        "fleet/{truck_id}/telemetry (MQTT, QoS 1), with jitter, dropouts, a teleport, duplicates and "
        "out-of-order messages.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1883)
    parser.add_argument("--trucks", type=int, default=6)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--interval-s", type=int, default=30, help="seconds between a truck's fixes")
    parser.add_argument("--start", help="UTC start of the simulated span (ISO 8601); default: now")
    parser.add_argument("--hours", type=float, default=24.0, help="length of the simulated span")
    parser.add_argument(
        "--speedup", type=float, default=60.0, help="simulated seconds per real second (0: as fast as possible)"
    )
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.start:
        start = datetime.fromisoformat(args.start)
        start = start.replace(tzinfo=UTC) if start.tzinfo is None else start.astimezone(UTC)
    else:
        now = datetime.now(UTC)
        start = now.replace(second=0, microsecond=0)
    config = FleetConfig(trucks=args.trucks, seed=args.seed, interval_s=args.interval_s)
    day = FleetSimulator(config).day(start, start + timedelta(hours=args.hours))
    host, port = args.host, args.port
    print(
        f"fleet: {config.trucks} trucks, {len(day.messages):,} messages from {start:%Y-%m-%dT%H:%MZ} for "
        f"{args.hours:g} h to {host}:{port} (speedup {args.speedup:g}); ground truth: {len(day.trips)} trips, "
        f"{len(day.teleports)} teleports, {day.duplicates} duplicates, {day.out_of_order} out of order, "
        f"{len(day.dropouts)} dropouts",
        flush=True,
    )
    try:
        sent = publish(day.messages, host, port, speedup=args.speedup or None, start=start)
    except KeyboardInterrupt:
        return 0
    print(f"fleet: published {sent:,} messages", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
