"""DMAMA simulator: district metered areas, their meters, and flow/pressure readings over HTTP.

Serves the contract in ``docs/sources/dmama-api.md`` (REST JSON, SOAP 1.1, API key + OAuth2 client
credentials, fault injection under ``/_sim``) from a Starlette app.

Every value is a pure function of the seed and the thing it describes: a DMA's attributes of
(seed, DMA number); a reading of (seed, DMA number, 15-minute slot); a meter register of
(seed, DMA number, meter number, hour). Noise comes from a counter-based hash (splitmix64) of those
keys, never from a sequential random stream, so any range can be generated on its own and
``rows[a, c) == rows[a, b) + rows[b, c)`` holds exactly.

The model, in domain terms (the project's DOMAIN.md facts):

- Demand follows a residential diurnal shape in Asia/Bangkok local time (UTC+7): peaks 06-08 and
  18-21, lowest 02-04, the weekend morning peak later and a little higher overall, times a day factor
  shared by all DMAs (season: hot April, wet October; plus day-to-day weather noise).
- DMA flow = connections × (legitimate night use 1-2 L/property/h + daytime demand)
  + background leakage (ILI 2-6 times the unavoidable real losses for the DMA's mains, connections and
  pressure) + for leaking DMAs a leak that grows linearly from its start slot until it plateaus.
- Pressure = target pressure − head loss ∝ flow², so pressure dips at peak demand.
- Flow noise sums to zero over each hour, so hourly inflow-meter register increments equal the sum of
  the 15-minute flow readings (up to rounding): the inflow meters and the readings tell one story.
- Meter registers are closed-form cumulative volumes (day-factor prefix sums plus within-day shape
  prefix sums), offset by a per-meter start value and rolling over at 10^register_digits m³.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fnmatch
import functools
import json
import math
import secrets
import threading
import time
import xml.etree.ElementTree as ET
import zlib
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs, unquote
from xml.sax.saxutils import escape as xml_escape

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from simulators.http_server import SimulatorServer, serve_simulator

__all__ = [
    "FAULT_KINDS",
    "DmamaConfig",
    "DmamaSimulator",
    "credentials_env",
    "main_serve",
    "serve_dmama",
]

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
DM_NS = "urn:dmama:readings:1"
# The contract's kinds, plus the data faults DESIGN.md asks simulators for (spikes, flatline, gaps,
# clock_skew); all row-level kinds act on the rows of the answer (readings, or items of a page).
_ROW_FAULTS = frozenset({"wrong_types", "duplicates", "out_of_order", "spikes", "flatline", "gaps", "clock_skew"})
# Hostile answers (issue 7): a source that rate-limits half its requests, drip-feeds its body, pages
# forever, nests JSON without end, sends a gzip bomb, lists DMA ids that are paths, or echoes the
# credentials it was sent in its error text.
_HOSTILE_FAULTS = frozenset(
    {"rate_limited", "drip", "endless_pages", "nested", "gzip_bomb", "bad_ids", "echo_credentials"}
)
FAULT_KINDS = frozenset({"status", "slow", "truncated", "malformed"}) | _ROW_FAULTS | _HOSTILE_FAULTS
MAX_RANGE = timedelta(days=31)
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 100

SLOT_S = 900  # 15 minutes
SLOTS_PER_HOUR = 4
SLOTS_PER_DAY = 96
LOCAL_OFFSET_SLOTS = 7 * SLOTS_PER_HOUR  # Asia/Bangkok is UTC+7 all year (no daylight saving)
# The day-factor table spans local calendar days of 2000-2099; nothing is served outside it.
FIRST_DAY = date(2000, 1, 1)
END_DAY = date(2100, 1, 1)
_EPOCH_DAY = date(1970, 1, 1)

# Hash streams: one per independent quantity, so changing one never shifts another.
_S_DMA = 1
_S_DAY = 2
_S_FLOW = 3
_S_PRESSURE = 4
_S_METER = 5
_S_FAULT = 6

_ZONES = ("North", "South", "East", "West", "Central")
_NAME_HEAD = ("Ban", "Bang", "Nong", "Khlong", "Huai", "Don", "Wang", "Tha", "Lat", "Sam", "Nong Bua", "Pak")
_NAME_TAIL = (
    "Khae",
    "Phli",
    "Bua",
    "Sai",
    "Yai",
    "Noi",
    "Kaeo",
    "Thong",
    "Pho",
    "Si",
    "Luang",
    "Chan",
    "Mai",
)

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_U64 = 0xFFFFFFFFFFFFFFFF


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic is intended)."""
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def _hash(seed: int, stream: int, *keys: Any) -> np.ndarray:
    """Counter-based hash of (seed, stream, keys...) -> uint64 array broadcast over the keys."""
    h = _mix(np.atleast_1d(np.asarray((seed ^ (stream << 56)) & _U64, dtype=np.uint64)))
    for key in keys:
        k = np.atleast_1d(np.asarray(key)).astype(np.int64).view(np.uint64)
        h = _mix(h ^ k)
    return h


def _uniform(seed: int, stream: int, *keys: Any) -> np.ndarray:
    """Uniform [0, 1) floats from the hash (53 random bits)."""
    return (_hash(seed, stream, *keys) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def _normal(seed: int, stream: int, *keys: Any) -> np.ndarray:
    """Standard normal floats (Box-Muller over two independent hashes of the same keys)."""
    u1 = 1.0 - _uniform(seed, stream, *keys, 1)  # (0, 1]: log stays finite
    u2 = _uniform(seed, stream, *keys, 2)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def _diurnal_shape(weekend: bool) -> np.ndarray:
    """Demand multiplier per local 15-minute slot of a day, mean 1.0 (weekdays) or 1.05 (weekends).

    Residential pattern: a morning peak (07:00, later and broader at weekends), an evening peak
    (19:30), a midday plateau, and almost nothing in 02:00-04:00.
    """
    hours = (np.arange(SLOTS_PER_DAY) + 0.5) / SLOTS_PER_HOUR

    def bump(centre: float, width: float) -> np.ndarray:
        d = np.abs(hours - centre)
        d = np.minimum(d, 24.0 - d)  # the day wraps around midnight
        return np.exp(-0.5 * (d / width) ** 2)

    if weekend:
        raw = 0.01 + 0.85 * bump(8.5, 1.5) + 0.95 * bump(19.5, 1.5) + 0.55 * bump(13.0, 3.0)
        total = 1.05
    else:
        raw = 0.01 + 1.00 * bump(7.0, 1.0) + 0.90 * bump(19.5, 1.4) + 0.40 * bump(13.0, 3.0)
        total = 1.0
    shape = raw / raw.mean() * total
    shape.setflags(write=False)
    return shape


def _parse_time(value: str | datetime, name: str) -> datetime:
    """Parse an ISO 8601 UTC instant; naive values are refused because the API speaks UTC only."""
    if isinstance(value, datetime):
        parsed = value
    else:
        try:
            parsed = datetime.fromisoformat(value.strip())
        except (ValueError, AttributeError) as exc:
            raise _ApiError(
                400, "bad_request", f"{name} must be ISO 8601 UTC such as 2026-03-01T00:00:00Z, got {value!r}"
            ) from exc
    if parsed.tzinfo is None:
        raise _ApiError(400, "bad_request", f"{name} must carry a time zone (UTC, 'Z'), got {value!r}")
    return parsed.astimezone(UTC)


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def _timestamps(seconds: np.ndarray) -> list[str]:
    """ISO 8601 'Z' strings for unix seconds, vectorised."""
    return [t + "Z" for t in np.datetime_as_string(seconds.astype("datetime64[s]"), unit="s").tolist()]


class _ApiError(Exception):
    """An error answer: HTTP status, OAuth/REST error code and a detail for the caller."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers or {}


@dataclass(frozen=True)
class DmamaConfig:
    """Size, seed and credentials of a simulated DMAMA."""

    seed: int = 42
    dmas: int = 5
    meters_per_dma: int = 10
    leaking_share: float = 0.2  # share of DMAs with a growing leak; at least one when dmas >= 3
    api_key: str = "sim-dmama-key"
    client_id: str = "ihub"
    client_secret: str = "sim-dmama-secret"
    token_ttl_s: int = 3600
    epoch: str = "2026-01-01T00:00:00Z"  # leaks start a deterministic number of days after this

    def __post_init__(self) -> None:
        if not 1 <= self.dmas <= 9999:
            raise ValueError(f"DmamaConfig.dmas must be between 1 and 9999, got {self.dmas}")
        if not 1 <= self.meters_per_dma <= 9999:
            raise ValueError(f"DmamaConfig.meters_per_dma must be between 1 and 9999, got {self.meters_per_dma}")
        if not 0.0 <= self.leaking_share <= 1.0:
            raise ValueError(f"DmamaConfig.leaking_share must be in [0, 1], got {self.leaking_share}")
        if self.token_ttl_s <= 0:
            raise ValueError(f"DmamaConfig.token_ttl_s must be positive, got {self.token_ttl_s}")
        try:
            _parse_time(self.epoch, "DmamaConfig.epoch")
        except _ApiError as exc:
            raise ValueError(exc.detail) from None

    def __repr__(self) -> str:
        # Credentials stay out of logs and test reports even though they are simulator defaults.
        return f"DmamaConfig(seed={self.seed}, dmas={self.dmas}, meters_per_dma={self.meters_per_dma})"


@dataclass
class _Fault:
    kind: str
    path: str
    remaining: int
    params: dict[str, Any]
    seen: int = 0  # matching requests so far (rate_limited refuses a share of them)


@functools.lru_cache(maxsize=4)
def _gzip_bomb(size_mb: int) -> bytes:
    """`size_mb` MiB of zeros, gzip-compressed (about 1 MiB per GiB): a tiny body, a huge answer."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    block = bytes(1024 * 1024)
    parts = [packer.compress(block) for _ in range(size_mb)]
    parts.append(packer.flush())
    return b"".join(parts)


@dataclass(frozen=True)
class _MeterTable:
    """All meters of one DMA as arrays (index j-1 for meter number j)."""

    rows: list[dict[str, Any]]
    night_m3h: np.ndarray  # constant part of the rate
    var_m3h: np.ndarray  # part that follows day factor × diurnal shape
    share: np.ndarray  # inflow meters: share of the DMA's inflow, else 0
    digits: np.ndarray
    offset_m3: np.ndarray


@dataclass
class _Payload:
    """What an endpoint produced, before fault mangling and encoding."""

    body: bytes
    media_type: str
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)


class DmamaSimulator:
    """A deterministic DMAMA: ground truth as Python methods, the same data over HTTP via `.app`."""

    def __init__(self, config: DmamaConfig | None = None, clock: Callable[[], datetime] | None = None) -> None:
        self.config = config or DmamaConfig()
        # Like the real system, the simulator has no readings from the future: an interval is served
        # once it has closed (flow), a register reading once its hour has come (meters).
        self._clock = clock or (lambda: datetime.now(UTC))
        cfg = self.config
        self._seed = cfg.seed & _U64
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._stats: Counter[tuple[str, int]] = Counter()
        self._tokens: dict[str, float] = {}
        self._issued_tokens = 0
        self._meter_cache: dict[int, _MeterTable] = {}
        self._epoch = _parse_time(cfg.epoch, "epoch")
        self._build_calendar()
        self._build_dmas()
        self.app = self._build_app()

    # ------------------------------------------------------------------ model: calendar and DMAs

    def _build_calendar(self) -> None:
        self._shape_wd = _diurnal_shape(weekend=False)
        self._shape_we = _diurnal_shape(weekend=True)
        self._day0 = (FIRST_DAY - _EPOCH_DAY).days  # local days since 1970-01-01
        n_days = (END_DAY - FIRST_DAY).days
        days = np.arange(self._day0, self._day0 + n_days, dtype=np.int64)
        dates = days.astype("datetime64[D]")
        doy = (dates - dates.astype("datetime64[Y]").astype("datetime64[D]")).astype(np.int64)
        # Hot season peaks mid-April, the wet season trough falls in October.
        seasonal = 1.0 + 0.06 * np.cos(2.0 * np.pi * (doy - 105) / 365.25)
        weather = 0.03 * _normal(self._seed, _S_DAY, days)
        self._day_factor = seasonal * (1.0 + weather)
        weekend = (days + 3) % 7 >= 5  # 1970-01-01 was a Thursday
        hours_wd = self._shape_wd.sum() / SLOTS_PER_HOUR
        hours_we = self._shape_we.sum() / SLOTS_PER_HOUR
        day_units = self._day_factor * np.where(weekend, hours_we, hours_wd)
        # Prefix sums turn cumulative volume at any instant into O(1) lookups (meter registers).
        self._day_prefix = np.concatenate([[0.0], np.cumsum(day_units)])
        self._slot_prefix_wd = np.concatenate([[0.0], np.cumsum(self._shape_wd)]) / SLOTS_PER_HOUR
        self._slot_prefix_we = np.concatenate([[0.0], np.cumsum(self._shape_we)]) / SLOTS_PER_HOUR
        self._first_slot = self._day0 * SLOTS_PER_DAY - LOCAL_OFFSET_SLOTS  # UTC slot of 2000-01-01 00:00 local
        self._end_slot = (self._day0 + n_days) * SLOTS_PER_DAY - LOCAL_OFFSET_SLOTS

    def _build_dmas(self) -> None:
        cfg, seed = self.config, self._seed
        n = np.arange(1, cfg.dmas + 1, dtype=np.int64)

        def u(attr: int) -> np.ndarray:
            return _uniform(seed, _S_DMA, n, attr)

        conns = 500 + np.floor(u(1) * 2501).astype(np.int64)
        daily_m3 = 0.6 + 0.4 * u(2)  # per connection per day
        night_m3h = (1.0 + 1.0 * u(3)) / 1000.0  # 1-2 L per property per hour
        target = np.round(1.5 + 1.5 * u(4), 2)
        mains_km = np.round(conns / (35.0 + 45.0 * u(5)), 2)
        ili = 2.0 + 4.0 * u(6)
        # IWA unavoidable annual real losses, litres/day, with 5 m of private pipe per connection.
        uarl_l_day = (18.0 * mains_km + 0.8 * conns + 25.0 * conns * 0.005) * target * 10.197
        self._conns = conns
        self._night = conns * night_m3h  # m³/h, flat
        self._var = conns * (daily_m3 / 24.0 - night_m3h)  # m³/h at day factor 1 and shape 1
        self._background = ili * uarl_l_day / 24_000.0  # m³/h
        self._target = target
        mean_flow = conns * daily_m3 / 24.0 + self._background
        self._q_ref = conns * daily_m3 / 24.0 * float(self._shape_wd.max())  # nominal peak demand
        self._head_loss = 0.25 + 0.35 * u(7)  # bar lost at nominal peak
        self._mains_km = mains_km
        self._lat = np.round(13.0 + 1.5 * u(8), 6)
        self._lon = np.round(99.8 + 1.4 * u(9), 6)
        self._commissioned = (np.datetime64("1995-01-01") + np.floor(u(10) * 10_500).astype(np.int64)).astype(str)
        self._zone = np.floor(u(11) * len(_ZONES)).astype(np.int64)
        self._name_a = np.floor(u(12) * len(_NAME_HEAD)).astype(np.int64)
        self._name_b = np.floor(u(13) * len(_NAME_TAIL)).astype(np.int64)
        self._n_inflow = np.where((u(14) < 0.35) & (cfg.meters_per_dma >= 2), 2, 1)
        self._inflow_share = np.where(self._n_inflow == 2, 0.55 + 0.25 * u(15), 1.0)

        leaking = 0
        if cfg.leaking_share > 0:
            leaking = round(cfg.leaking_share * cfg.dmas)
            if cfg.dmas >= 3:
                leaking = max(1, leaking)
        order = np.argsort(u(16), kind="stable")
        self._leaking = np.zeros(cfg.dmas, dtype=bool)
        self._leaking[order[:leaking]] = True
        epoch_slot = int(self._epoch.timestamp()) // SLOT_S
        start_days = 5 + np.floor(u(17) * 36).astype(np.int64)  # 5-40 days after the epoch
        self._leak_start = epoch_slot + start_days * SLOTS_PER_DAY + np.floor(u(18) * SLOTS_PER_DAY).astype(np.int64)
        self._leak_growth = np.where(self._leaking, mean_flow * (0.006 + 0.009 * u(19)), 0.0)  # m³/h per day
        self._leak_max = np.where(self._leaking, mean_flow * (0.4 + 0.3 * u(20)), 0.0)

    # ------------------------------------------------------------------ ids

    def _dma_index(self, dma_id: str) -> int:
        """0-based index of a DMA id, or a 404."""
        prefix, _, number = dma_id.partition("-")
        n = int(number) if prefix == "DMA" and len(number) == 4 and number.isdigit() else 0
        if not 1 <= n <= self.config.dmas:
            raise _ApiError(404, "not_found", f"no DMA {dma_id!r} (ids run DMA-0001..DMA-{self.config.dmas:04d})")
        return n - 1

    def _meter_index(self, meter_id: str) -> tuple[int, int]:
        """(0-based DMA index, 0-based meter index) of a meter id, or a 404."""
        parts = meter_id.split("-")
        ok = len(parts) == 3 and parts[0] == "M" and all(len(p) == 4 and p.isdigit() for p in parts[1:])
        if ok:
            n, j = int(parts[1]), int(parts[2])
            ok = 1 <= n <= self.config.dmas and 1 <= j <= self.config.meters_per_dma
        if not ok:
            last = f"M-{self.config.dmas:04d}-{self.config.meters_per_dma:04d}"
            raise _ApiError(404, "not_found", f"no meter {meter_id!r} (ids run M-0001-0001..{last})")
        return n - 1, j - 1

    def dma_ids(self) -> list[str]:
        """All DMA ids, in list order."""
        return [f"DMA-{i:04d}" for i in range(1, self.config.dmas + 1)]

    def _summary(self, i: int) -> dict[str, Any]:
        name = f"{_NAME_HEAD[self._name_a[i]]} {_NAME_TAIL[self._name_b[i]]}"
        return {"dma_id": f"DMA-{i + 1:04d}", "name": name, "zone": _ZONES[self._zone[i]]}

    def _details(self, i: int) -> dict[str, Any]:
        inflow = [f"M-{i + 1:04d}-{j:04d}" for j in range(1, int(self._n_inflow[i]) + 1)]
        return {
            **self._summary(i),
            "connections": int(self._conns[i]),
            "mains_length_km": float(self._mains_km[i]),
            "target_pressure_bar": float(self._target[i]),
            "inflow_meter_ids": inflow,
            "latitude": float(self._lat[i]),
            "longitude": float(self._lon[i]),
            "commissioned_on": str(self._commissioned[i]),
        }

    def dmas(self) -> list[dict[str, Any]]:
        """Details of every DMA, as `GET /api/dma/{id}` serves them."""
        return [self._details(i) for i in range(self.config.dmas)]

    def dma_details(self, dma_id: str) -> dict[str, Any]:
        """Details of one DMA (KeyError if unknown)."""
        try:
            return self._details(self._dma_index(dma_id))
        except _ApiError as exc:
            raise KeyError(exc.detail) from None

    def leaks(self) -> dict[str, dict[str, Any]]:
        """Ground truth the API never tells: each leaking DMA's leak start, growth and plateau."""
        out = {}
        for i in np.flatnonzero(self._leaking):
            out[f"DMA-{i + 1:04d}"] = {
                "start": datetime.fromtimestamp(int(self._leak_start[i]) * SLOT_S, UTC),
                "growth_m3h_per_day": float(self._leak_growth[i]),
                "max_m3h": float(self._leak_max[i]),
            }
        return out

    def _meter_table(self, i: int) -> _MeterTable:
        cached = self._meter_cache.get(i)
        if cached is not None:
            return cached
        cfg, seed = self.config, self._seed
        j = np.arange(1, cfg.meters_per_dma + 1, dtype=np.int64)

        def u(attr: int) -> np.ndarray:
            return _uniform(seed, _S_METER, i + 1, j, attr)

        n_inflow = int(self._n_inflow[i])
        inflow = j <= n_inflow
        cls_u = u(1)
        cls = np.where(cls_u < 0.80, 0, np.where(cls_u < 0.95, 1, 2))  # residential, commercial, industrial
        per_conn = (self._night[i] + self._var[i]) / self._conns[i] * 24.0  # m³/day per connection
        scale = np.choose(cls, [0.4 + 1.2 * u(2), 3.0 + 7.0 * u(2), 20.0 + 40.0 * u(2)])
        daily = per_conn * scale
        night_frac = np.choose(cls, [0.045, 0.05, 0.3])  # industry runs at night too
        night = np.where(inflow, 0.0, daily * night_frac / 24.0)
        var = np.where(inflow, 0.0, daily * (1.0 - night_frac) / 24.0)
        share = np.zeros(len(j))
        share[0] = self._inflow_share[i]
        if n_inflow == 2:
            share[1] = 1.0 - self._inflow_share[i]
        digits = np.where(inflow, 6, np.choose(cls, [np.where(u(3) < 0.5, 4, 5), 5, 6]))
        offset = np.floor(u(4) * 10.0**digits * 1000.0) / 1000.0
        commissioned = np.datetime64(str(self._commissioned[i]))
        span = (np.datetime64("2025-12-31") - commissioned).astype(np.int64)
        installed = (commissioned + np.floor(u(5) * span).astype(np.int64)).astype(str)
        classes = ("residential", "commercial", "industrial")
        rows = [
            {
                "meter_id": f"M-{i + 1:04d}-{jj:04d}",
                "dma_id": f"DMA-{i + 1:04d}",
                "kind": "inflow" if jj <= n_inflow else "customer",
                "customer_class": None if jj <= n_inflow else classes[int(cls[jj - 1])],
                "register_digits": int(digits[jj - 1]),
                "installed_on": str(installed[jj - 1]),
            }
            for jj in j.tolist()
        ]
        table = _MeterTable(rows, night, var, share, digits, offset)
        self._meter_cache[i] = table
        return table

    def meters(self, dma_id: str) -> list[dict[str, Any]]:
        """Meters of one DMA as `GET /api/dma/{id}/meters` serves them (inflow meters first)."""
        try:
            i = self._dma_index(dma_id)
        except _ApiError as exc:
            raise KeyError(exc.detail) from None
        return [dict(row) for row in self._meter_table(i).rows]

    # ------------------------------------------------------------------ model: series

    def _check_slots(self, first: int, end: int) -> None:
        if first < self._first_slot or end > self._end_slot:
            raise _ApiError(400, "bad_request", "readings exist only from 2000-01-01 to 2099-12-31 (local time)")

    def _demand_units(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(day factor × shape) per UTC slot, and the cumulative of it in hours at UTC slot starts."""
        local = slots + LOCAL_OFFSET_SLOTS
        day = local // SLOTS_PER_DAY
        k = local % SLOTS_PER_DAY
        weekend = (day + 3) % 7 >= 5
        d = day - self._day0
        factor = self._day_factor[d]
        units = factor * np.where(weekend, self._shape_we[k], self._shape_wd[k])
        within = np.where(weekend, self._slot_prefix_we[k], self._slot_prefix_wd[k])
        cumulative = self._day_prefix[d] + factor * within
        return units, cumulative

    def _leak(self, i: int, slots: np.ndarray) -> np.ndarray:
        if not self._leaking[i]:
            return np.zeros(len(slots))
        k = slots - self._leak_start[i]
        growth = self._leak_growth[i] / SLOTS_PER_DAY
        return np.where(k >= 0, np.minimum(growth * k, self._leak_max[i]), 0.0)

    def _leak_volume(self, i: int, slots: np.ndarray) -> np.ndarray:
        """Leak volume (m³) in all slots before each given slot, closed form (arithmetic series)."""
        if not self._leaking[i]:
            return np.zeros(len(slots))
        g = self._leak_growth[i] / SLOTS_PER_DAY
        cap = self._leak_max[i]
        m = np.maximum(slots - self._leak_start[i], 0).astype(np.float64)
        ramp = math.ceil(cap / g)  # slots spent below the plateau
        below = g * m * (m - 1) / 2.0
        after = g * ramp * (ramp - 1) / 2.0 + cap * (m - ramp)
        return np.where(m <= ramp, below, after) / SLOTS_PER_HOUR

    def _flow_arrays(self, i: int, first: int, end: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(slots, flow m³/h, pressure bar) for UTC slots [first, end), unrounded."""
        # Work on whole hours so the zero-sum-per-hour noise is the same whatever range is asked.
        h0 = first // SLOTS_PER_HOUR * SLOTS_PER_HOUR
        h1 = _ceil_div(end, SLOTS_PER_HOUR) * SLOTS_PER_HOUR
        slots = np.arange(h0, h1, dtype=np.int64)
        units, _ = self._demand_units(slots)
        q = self._night[i] + self._var[i] * units + self._background[i] + self._leak(i, slots)
        z = _normal(self._seed, _S_FLOW, i + 1, slots).reshape(-1, SLOTS_PER_HOUR)
        z -= z.mean(axis=1, keepdims=True)
        amp = 0.02 * q.reshape(-1, SLOTS_PER_HOUR).mean(axis=1, keepdims=True)
        flow = np.maximum(q + (amp * z).ravel(), 0.0)
        pressure = (
            self._target[i]
            - self._head_loss[i] * (q / self._q_ref[i]) ** 2
            + 0.01 * _normal(self._seed, _S_PRESSURE, i + 1, slots)
        )
        pressure = np.maximum(pressure, 0.2)
        cut = slice(first - h0, end - h0)
        return slots[cut], flow[cut], pressure[cut]

    def _dma_volume(self, i: int, slots: np.ndarray) -> np.ndarray:
        """Cumulative DMA inflow (m³) before each UTC slot, from 2000-01-01 local."""
        _, cumulative = self._demand_units(slots)
        hours = (slots - self._first_slot) / SLOTS_PER_HOUR
        flat = (self._night[i] + self._background[i]) * hours
        return flat + self._var[i] * cumulative + self._leak_volume(i, slots)

    def _slot_range(
        self, since: str | datetime, until: str | datetime, step_s: int, closes_after_s: int = 0
    ) -> tuple[int, int]:
        """[first, end) indices of `step_s` buckets whose start lies in [since, until), and that
        exist by now (a bucket exists ``closes_after_s`` after its start)."""
        a = _parse_time(since, "since")
        b = _parse_time(until, "until")
        if b <= a:
            raise _ApiError(400, "bad_request", f"until ({_iso(b)}) must be after since ({_iso(a)})")
        if b - a > MAX_RANGE:
            raise _ApiError(400, "bad_request", f"range {_iso(a)}..{_iso(b)} is longer than 31 days; split it")
        first = _ceil_div(math.ceil(a.timestamp()), step_s)
        end = _ceil_div(math.ceil(b.timestamp()), step_s)
        existing = math.floor((self._clock().timestamp() - closes_after_s) / step_s) + 1
        return first, max(first, min(end, existing))

    def _flow_columns(self, dma_id: str, since: str | datetime, until: str | datetime) -> tuple[list, list, list]:
        i = self._dma_index(dma_id)
        first, end = self._slot_range(since, until, SLOT_S, closes_after_s=SLOT_S)
        self._check_slots(first, end)
        slots, flow, pressure = self._flow_arrays(i, first, end)
        return _timestamps(slots * SLOT_S), np.round(flow, 3).tolist(), np.round(pressure, 3).tolist()

    def _meter_columns(self, meter_id: str, since: str | datetime, until: str | datetime) -> tuple[list, list]:
        i, j = self._meter_index(meter_id)
        first, end = self._slot_range(since, until, 3600)
        slots = np.arange(first, end, dtype=np.int64) * SLOTS_PER_HOUR
        self._check_slots(first * SLOTS_PER_HOUR, end * SLOTS_PER_HOUR)
        table = self._meter_table(i)
        if table.share[j] > 0:
            volume = table.share[j] * self._dma_volume(i, slots)
        else:
            _, cumulative = self._demand_units(slots)
            hours = (slots - self._first_slot) / SLOTS_PER_HOUR
            volume = table.night_m3h[j] * hours + table.var_m3h[j] * cumulative
        modulus = 10.0 ** int(table.digits[j])
        register = np.round(np.mod(table.offset_m3[j] + volume, modulus), 3)
        register = np.where(register >= modulus, 0.0, register)  # rounding up to 10^digits rolls over too
        return _timestamps(slots * SLOT_S), register.tolist()

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a ground-truth method, turning API errors into Python ones for direct callers."""
        try:
            return fn(*args)
        except _ApiError as exc:
            raise (KeyError if exc.status == 404 else ValueError)(exc.detail) from None

    def flow_readings(self, dma_id: str, since: str | datetime, until: str | datetime) -> list[dict[str, Any]]:
        """The readings rows `GET /api/dma/{id}/readings` serves for [since, until) without faults."""
        ts, flow, pressure = self._call(self._flow_columns, dma_id, since, until)
        return [{"timestamp": t, "flow_m3h": f, "pressure_bar": p} for t, f, p in zip(ts, flow, pressure, strict=True)]

    def meter_readings(self, meter_id: str, since: str | datetime, until: str | datetime) -> list[dict[str, Any]]:
        """The hourly register rows `GET /api/meters/{id}/readings` serves without faults."""
        ts, register = self._call(self._meter_columns, meter_id, since, until)
        return [{"timestamp": t, "register_m3": r} for t, r in zip(ts, register, strict=True)]

    def expected_flow_rows(self, since: str | datetime, until: str | datetime) -> int:
        """Number of flow rows all DMAs together have in [since, until)."""
        first, end = self._call(self._slot_range, since, until, SLOT_S, SLOT_S)
        return (end - first) * self.config.dmas

    def expected_meter_rows(self, since: str | datetime, until: str | datetime) -> int:
        """Number of hourly register rows all meters together have in [since, until)."""
        first, end = self._call(self._slot_range, since, until, 3600)
        return (end - first) * self.config.dmas * self.config.meters_per_dma

    # ------------------------------------------------------------------ faults, stats, tokens

    def inject(self, kind: str, path: str = "*", count: int = 1, **params: Any) -> None:
        """Arm a fault for the next `count` requests whose path matches the fnmatch glob `path`."""
        self._arm(kind, path, count, params)

    def _arm(self, kind: str, path: str, count: Any, params: dict[str, Any]) -> None:
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"fault count must be a positive integer, got {count!r}")
        if not isinstance(path, str) or not path:
            raise ValueError(f"fault path must be a non-empty glob such as '/api/dma/*/readings', got {path!r}")
        if kind == "status":
            status = params.get("status")
            if not isinstance(status, int) or not 400 <= status <= 599:
                raise ValueError(f"status fault needs 'status' between 400 and 599, got {status!r}")
            retry_after = params.get("retry_after")
            if retry_after is not None and not isinstance(retry_after, int | float | str):
                raise ValueError(f"retry_after must be seconds or an HTTP date, got {retry_after!r}")
        if kind == "clock_skew" and not isinstance(params.setdefault("skew_s", 3600), int | float):
            raise ValueError(f"clock_skew fault needs numeric 'skew_s' seconds, got {params['skew_s']!r}")
        if kind == "rate_limited":
            share = params.setdefault("share", 0.5)
            if not isinstance(share, int | float) or not 0 < share <= 1:
                raise ValueError(f"rate_limited fault needs 'share' in (0, 1], got {share!r}")
            params.setdefault("retry_after", 1)
        if kind == "drip":
            params.setdefault("chunk_bytes", 8)
            params.setdefault("interval_s", 0.2)
        if kind == "nested":
            params.setdefault("depth", 100_000)
        if kind == "gzip_bomb" and not isinstance(params.setdefault("size_mb", 2048), int):
            raise ValueError(f"gzip_bomb fault needs integer 'size_mb', got {params['size_mb']!r}")
        if kind == "gzip_bomb":
            # Compress it now, not on the request: on a loaded machine that takes seconds, and a client timing
            # out before the bomb arrives would retry and test the wrong thing.
            _gzip_bomb(int(params["size_mb"]))
        if kind == "bad_ids":
            params.setdefault("ids", [".", ".."])
        if kind == "echo_credentials":
            params.setdefault("status", 403)
        if kind == "slow":
            delay = params.get("delay_s")
            if not isinstance(delay, int | float) or delay <= 0:
                raise ValueError(f"slow fault needs a positive 'delay_s', got {delay!r}")
        with self._lock:
            self._faults.append(_Fault(kind, path, count, dict(params)))

    def clear_faults(self) -> int:
        """Disarm every fault; returns how many were still armed."""
        with self._lock:
            n = len(self._faults)
            self._faults.clear()
        return n

    def armed_faults(self) -> list[dict[str, Any]]:
        """Faults still armed, with their remaining counts."""
        with self._lock:
            return [{"kind": f.kind, "path": f.path, "count": f.remaining, **f.params} for f in self._faults]

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fnmatch.fnmatchcase(path, fault.path):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    @property
    def stats(self) -> dict[tuple[str, int], int]:
        """Requests served, by (path template, HTTP status)."""
        with self._lock:
            return dict(self._stats)

    def requests_to(self, template: str) -> int:
        """Requests served for one path template, whatever their status."""
        return sum(n for (t, _), n in self.stats.items() if t == template)

    def reset_stats(self) -> None:
        """Forget the request counts."""
        with self._lock:
            self._stats.clear()

    @property
    def issued_tokens(self) -> int:
        """Access tokens issued so far."""
        with self._lock:
            return self._issued_tokens

    def expire_tokens(self) -> None:
        """Make every token issued so far expired now (the next API call with one gets 401)."""
        with self._lock:
            for token in self._tokens:
                self._tokens[token] = 0.0

    # ------------------------------------------------------------------ HTTP

    def _build_app(self) -> Starlette:
        def endpoint(template: str, produce: Callable[[Request, _Fault | None], Awaitable[_Payload]]) -> Any:
            async def handle(request: Request) -> Response:
                return await self._serve(request, template, produce)

            return handle

        routes = [
            Route("/oauth/token", endpoint("/oauth/token", self._token), methods=["POST"]),
            Route("/api/dma/list", endpoint("/api/dma/list", self._list), methods=["GET"]),
            Route("/api/dma/{dma_id}", endpoint("/api/dma/{dma_id}", self._get_dma), methods=["GET"]),
            Route(
                "/api/dma/{dma_id}/readings",
                endpoint("/api/dma/{dma_id}/readings", self._dma_readings),
                methods=["GET"],
            ),
            Route(
                "/api/dma/{dma_id}/meters",
                endpoint("/api/dma/{dma_id}/meters", self._dma_meters),
                methods=["GET"],
            ),
            Route(
                "/api/meters/{meter_id}/readings",
                endpoint("/api/meters/{meter_id}/readings", self._meter_readings_ep),
                methods=["GET"],
            ),
            Route("/soap/readings", endpoint("/soap/readings", self._soap_readings), methods=["POST"]),
            Route("/_sim/faults", self._sim_faults, methods=["GET", "POST", "DELETE"]),
            Route("/_sim/stats", self._sim_stats, methods=["GET", "DELETE"]),
        ]
        return Starlette(routes=routes)

    async def _serve(
        self,
        request: Request,
        template: str,
        produce: Callable[[Request, _Fault | None], Awaitable[_Payload]],
    ) -> Response:
        soap = template.startswith("/soap/")
        fault = self._take_fault(request.url.path)
        if fault is not None and fault.kind == "rate_limited":
            fault.seen += 1
            share = float(fault.params["share"])
            # Deterministic: of every 1/share requests the first is refused (share 0.5: every other one).
            if math.ceil(fault.seen * share) > math.ceil((fault.seen - 1) * share):
                fault = _Fault("status", fault.path, 0, {"status": 429, "retry_after": fault.params["retry_after"]})
            else:
                fault = None
        if fault is not None and fault.kind == "slow":
            await asyncio.sleep(float(fault.params["delay_s"]))
        if fault is not None and fault.kind == "status":
            payload = self._status_fault(fault, soap)
        elif fault is not None and fault.kind == "echo_credentials":
            # A careless server quoting back what it was sent: the client must not pass it on.
            detail = (
                f"access denied for X-API-Key {request.headers.get('x-api-key', '')!r} "
                f"with {request.headers.get('authorization', '')!r}"
            )
            payload = self._error_payload(_ApiError(int(fault.params["status"]), "forbidden", detail), soap)
        else:
            try:
                if template != "/oauth/token":
                    self._authenticate(request)
                payload = await produce(request, fault)
            except _ApiError as exc:
                payload = self._error_payload(exc, soap)
            except Exception as exc:  # a simulator bug must still be counted and answered in-protocol
                payload = self._error_payload(_ApiError(500, "internal", f"{type(exc).__name__}: {exc}"), soap)
        body = payload.body
        if fault is not None and fault.kind == "truncated":
            body = body[: len(body) // 2]
        elif fault is not None and fault.kind == "malformed":
            body = _malform(body, soap)
        elif fault is not None and fault.kind == "nested" and payload.status == 200:
            depth = int(fault.params["depth"])
            body = b"<a>" * depth + b"</a>" * depth if soap else b"[" * depth + b"]" * depth
        elif fault is not None and fault.kind == "gzip_bomb" and payload.status == 200:
            body = _gzip_bomb(int(fault.params["size_mb"]))
            payload.headers["Content-Encoding"] = "gzip"
        with self._lock:
            self._stats[(template, payload.status)] += 1
        if fault is not None and fault.kind == "drip":
            return StreamingResponse(
                _drip(body, int(fault.params["chunk_bytes"]), float(fault.params["interval_s"])),
                status_code=payload.status,
                media_type=payload.media_type,
                headers=payload.headers,
            )
        return Response(body, status_code=payload.status, media_type=payload.media_type, headers=payload.headers)

    def _status_fault(self, fault: _Fault, soap: bool) -> _Payload:
        status = int(fault.params["status"])
        exc = _ApiError(status, "injected_fault", f"simulated HTTP {status}")
        payload = self._error_payload(exc, soap, code="soap:Server")
        retry_after = fault.params.get("retry_after")
        if retry_after is not None:
            is_whole = isinstance(retry_after, float) and retry_after.is_integer()
            payload.headers["Retry-After"] = str(int(retry_after)) if is_whole else str(retry_after)
        return payload

    def _error_payload(self, exc: _ApiError, soap: bool, code: str | None = None) -> _Payload:
        if soap:
            # SOAP 1.1 answers every fault with HTTP 500, except authentication (401, as the contract
            # says) and injected outages, which keep the status a gateway would have sent.
            status = exc.status if exc.status == 401 or exc.error == "injected_fault" else 500
            code = code or ("soap:Client" if exc.status < 500 else "soap:Server")
            body = _soap_fault(code, f"{exc.error}: {exc.detail}")
            return _Payload(body, "text/xml; charset=utf-8", status, dict(exc.headers))
        body = json.dumps({"error": exc.error, "detail": exc.detail}).encode()
        return _Payload(body, "application/json", exc.status, dict(exc.headers))

    def _authenticate(self, request: Request) -> None:
        key = request.headers.get("x-api-key", "")
        if not secrets.compare_digest(key.encode(), self.config.api_key.encode()):
            raise _ApiError(401, "invalid_api_key", "missing or wrong X-API-Key header")
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        challenge = {"WWW-Authenticate": 'Bearer realm="dmama", error="invalid_token"'}
        if scheme.lower() != "bearer" or not token:
            raise _ApiError(401, "invalid_token", "missing bearer token in Authorization header", challenge)
        with self._lock:
            expires = self._tokens.get(token.strip())
        if expires is None or expires <= time.monotonic():
            raise _ApiError(401, "invalid_token", "unknown or expired access token", challenge)

    async def _token(self, request: Request, fault: _Fault | None) -> _Payload:
        form = {k: v[0] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        if form.get("grant_type") != "client_credentials":
            raise _ApiError(400, "unsupported_grant_type", "grant_type must be client_credentials")
        client_id, client_secret = form.get("client_id", ""), form.get("client_secret", "")
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(encoded).decode().partition(":")
                client_id, client_secret = unquote(user), unquote(password)
            except ValueError:
                client_id = client_secret = ""
        good_id = secrets.compare_digest(client_id.encode(), self.config.client_id.encode())
        good_secret = secrets.compare_digest(client_secret.encode(), self.config.client_secret.encode())
        if not (good_id and good_secret):
            raise _ApiError(401, "invalid_client", "unknown client or wrong secret")
        token = secrets.token_urlsafe(24)
        now = time.monotonic()
        with self._lock:
            self._tokens = {t: e for t, e in self._tokens.items() if e > now}
            self._tokens[token] = now + self.config.token_ttl_s
            self._issued_tokens += 1
        body = {"access_token": token, "token_type": "Bearer", "expires_in": self.config.token_ttl_s}
        return _Payload(json.dumps(body).encode(), "application/json", headers={"Cache-Control": "no-store"})

    @staticmethod
    def _paging(request: Request) -> tuple[int, int]:
        def integer(name: str, default: int, low: int, high: int) -> int:
            raw = request.query_params.get(name)
            if raw is None:
                return default
            try:
                value = int(raw)
            except ValueError:
                value = low - 1
            if not low <= value <= high:
                raise _ApiError(400, "bad_request", f"{name} must be an integer between {low} and {high}, got {raw!r}")
            return value

        return integer("page", 1, 1, 10**9), integer("page_size", DEFAULT_PAGE_SIZE, 1, MAX_PAGE_SIZE)

    def _paged(self, request: Request, fault: _Fault | None, total: int, items: Callable[[int, int], list]) -> _Payload:
        page, size = self._paging(request)
        start = (page - 1) * size
        rows = items(start, min(start + size, total)) if start < total else []
        rows = _row_fault(rows, fault, self._seed)
        following = page + 1 if start + size < total else None
        if fault is not None and fault.kind == "endless_pages":
            # The first page again and again, or (fresh) a new page every time that only a page cap ends.
            following = page + 1
            rows = items(0, min(size, total))
            if fault.params.get("fresh"):
                rows = [{**row, "page_marker": page} for row in rows]
        if fault is not None and fault.kind == "bad_ids" and page == 1:
            rows = rows + [{"dma_id": bad, "name": "Ban Path", "zone": "North"} for bad in fault.params["ids"]]
        body = {"items": rows, "page": page, "page_size": size, "total": total, "next_page": following}
        return _json_payload(body)

    async def _list(self, request: Request, fault: _Fault | None) -> _Payload:
        return self._paged(request, fault, self.config.dmas, lambda a, b: [self._summary(i) for i in range(a, b)])

    async def _get_dma(self, request: Request, fault: _Fault | None) -> _Payload:
        details = self._details(self._dma_index(request.path_params["dma_id"]))
        return _json_payload(_row_fault([details], fault, self._seed)[0])

    async def _dma_meters(self, request: Request, fault: _Fault | None) -> _Payload:
        table = self._meter_table(self._dma_index(request.path_params["dma_id"]))
        return self._paged(request, fault, len(table.rows), lambda a, b: [dict(r) for r in table.rows[a:b]])

    def _range_params(self, request: Request) -> tuple[str, str]:
        since, until = request.query_params.get("since"), request.query_params.get("until")
        if not since or not until:
            raise _ApiError(400, "bad_request", "since and until are required (ISO 8601 UTC, half-open [since, until))")
        return since, until

    async def _dma_readings(self, request: Request, fault: _Fault | None) -> _Payload:
        dma_id = request.path_params["dma_id"]
        since, until = self._range_params(request)
        ts, flow, pressure = self._flow_columns(dma_id, since, until)
        head = f'{{"dma_id":{json.dumps(dma_id)},"interval_minutes":15,"readings":['
        if fault is None or fault.kind not in _ROW_FAULTS:
            # Hand-built JSON: twice as fast as json.dumps on dicts, and float repr is what json emits.
            rows = ",".join(
                [
                    f'{{"timestamp":"{t}","flow_m3h":{f!r},"pressure_bar":{p!r}}}'
                    for t, f, p in zip(ts, flow, pressure, strict=True)
                ]
            )
            return _Payload(f"{head}{rows}]}}".encode(), "application/json")
        rows = [{"timestamp": t, "flow_m3h": f, "pressure_bar": p} for t, f, p in zip(ts, flow, pressure, strict=True)]
        return _json_payload(
            {"dma_id": dma_id, "interval_minutes": 15, "readings": _row_fault(rows, fault, self._seed)}
        )

    async def _meter_readings_ep(self, request: Request, fault: _Fault | None) -> _Payload:
        meter_id = request.path_params["meter_id"]
        since, until = self._range_params(request)
        ts, register = self._meter_columns(meter_id, since, until)
        rows = [{"timestamp": t, "register_m3": r} for t, r in zip(ts, register, strict=True)]
        rows = _row_fault(rows, fault, self._seed)
        return _json_payload({"meter_id": meter_id, "interval_minutes": 60, "readings": rows})

    async def _soap_readings(self, request: Request, fault: _Fault | None) -> _Payload:
        action = request.headers.get("soapaction", "").strip().strip('"')
        if action != "GetReadings":
            raise _ApiError(400, "bad_request", f'SOAPAction must be "GetReadings", got {action!r}')
        try:
            root = ET.fromstring(await request.body())
        except ET.ParseError as exc:
            raise _ApiError(400, "bad_request", f"request is not well-formed XML: {exc}") from None
        call = root.find(f".//{{{DM_NS}}}GetReadings")
        values = {}
        for tag in ("DmaId", "Since", "Until"):
            element = call.find(f"{{{DM_NS}}}{tag}") if call is not None else None
            if element is None or not (element.text or "").strip():
                raise _ApiError(400, "bad_request", f"GetReadings needs dm:{tag} (namespace {DM_NS})")
            values[tag] = element.text.strip()
        ts, flow, pressure = self._flow_columns(values["DmaId"], values["Since"], values["Until"])
        rows = [{"timestamp": t, "flow_m3h": f, "pressure_bar": p} for t, f, p in zip(ts, flow, pressure, strict=True)]
        rows = _row_fault(rows, fault, self._seed)
        parts = [
            f'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{SOAP_NS}" xmlns:dm="{DM_NS}">'
            f"<soap:Body><dm:GetReadingsResponse><dm:DmaId>{xml_escape(values['DmaId'])}</dm:DmaId>"
        ]
        parts.extend(
            f"<dm:Reading><dm:Timestamp>{_xml_text(r.get('timestamp'))}</dm:Timestamp>"
            f"<dm:FlowM3h>{_xml_text(r.get('flow_m3h'))}</dm:FlowM3h>"
            f"<dm:PressureBar>{_xml_text(r.get('pressure_bar'))}</dm:PressureBar></dm:Reading>"
            for r in rows
        )
        parts.append("</dm:GetReadingsResponse></soap:Body></soap:Envelope>")
        return _Payload("".join(parts).encode(), "text/xml; charset=utf-8")

    @staticmethod
    def _loopback_only(request: Request) -> Response | None:
        host = request.client.host if request.client else ""
        if host not in ("127.0.0.1", "::1", "localhost", "testclient"):
            return JSONResponse({"error": "forbidden", "detail": "/_sim is served to loopback only"}, 403)
        return None

    async def _sim_faults(self, request: Request) -> Response:
        if (denied := self._loopback_only(request)) is not None:
            return denied
        if request.method == "DELETE":
            return JSONResponse({"cleared": self.clear_faults()})
        if request.method == "GET":
            return JSONResponse({"faults": self.armed_faults()})
        try:
            spec = json.loads(await request.body())
            if not isinstance(spec, dict):
                raise ValueError("body must be a JSON object")
            spec = dict(spec)
            kind, path, count = spec.pop("kind", None), spec.pop("path", "*"), spec.pop("count", 1)
            self._arm(kind, path, count, spec)
        except ValueError as exc:
            return JSONResponse({"error": "bad_request", "detail": str(exc)}, 400)
        return JSONResponse({"armed": self.armed_faults()}, 201)

    async def _sim_stats(self, request: Request) -> Response:
        if (denied := self._loopback_only(request)) is not None:
            return denied
        if request.method == "DELETE":
            self.reset_stats()
        counts = [{"path": p, "status": s, "count": n} for (p, s), n in sorted(self.stats.items())]
        return JSONResponse({"requests": counts, "total": sum(c["count"] for c in counts)})


async def _drip(body: bytes, chunk_bytes: int, interval_s: float) -> Any:
    """The body a few bytes at a time: every read arrives well within a read timeout, the whole never."""
    for start in range(0, len(body), chunk_bytes):
        yield body[start : start + chunk_bytes]
        await asyncio.sleep(interval_s)


def _json_payload(obj: Any) -> _Payload:
    return _Payload(json.dumps(obj, separators=(",", ":")).encode(), "application/json")


def _xml_text(value: Any) -> str:
    return "" if value is None else xml_escape(str(value))


def _soap_fault(code: str, message: str) -> bytes:
    return (
        f'<?xml version="1.0" encoding="utf-8"?><soap:Envelope xmlns:soap="{SOAP_NS}"><soap:Body>'
        f"<soap:Fault><faultcode>{code}</faultcode><faultstring>{xml_escape(message)}</faultstring>"
        "</soap:Fault></soap:Body></soap:Envelope>"
    ).encode()


def _malform(body: bytes, soap: bool) -> bytes:
    """A body that is not valid JSON (or XML) while still looking like the real thing at a glance."""
    if soap:
        # A mismatched closing tag: the start parses, the end does not.
        return body.replace(b"</soap:Envelope>", b"</soap:Envelop>") if body else b"<soap:Envelope>"
    if b":" in body:
        return body.replace(b":", b"=", 1)  # {"dma_id"="DMA-0001",...
    return b"{" + body


def _row_fault(rows: list[dict[str, Any]], fault: _Fault | None, seed: int) -> list[dict[str, Any]]:
    """Apply a row-level fault deterministically; the rows chosen depend on the row count only."""
    if fault is None or fault.kind not in _ROW_FAULTS or not rows:
        return rows
    n = len(rows)
    idx = np.arange(n)
    u = _uniform(seed, _S_FAULT, idx, sorted(_ROW_FAULTS).index(fault.kind))
    out = [dict(r) for r in rows]

    def numeric(row: dict[str, Any]) -> list[str]:
        return [k for k, v in row.items() if isinstance(v, int | float) and not isinstance(v, bool)]

    if fault.kind == "out_of_order":
        order = np.argsort(u, kind="stable")
        if n > 1 and (order == idx).all():
            order = order[::-1]
        return [out[k] for k in order.tolist()]
    if fault.kind == "duplicates":
        repeat = set(np.flatnonzero(u < 0.1).tolist()) | {n // 3}
        return [copy for k, row in enumerate(out) for copy in ([row, dict(row)] if k in repeat else [row])]
    if fault.kind == "gaps":
        missing = set(np.flatnonzero(u < 0.2).tolist()) | {n // 2}
        return [row for k, row in enumerate(out) if k not in missing]
    if fault.kind == "clock_skew":
        shift = timedelta(seconds=float(fault.params["skew_s"]))
        for row in out:
            with contextlib.suppress(AttributeError, ValueError):
                row["timestamp"] = _iso(datetime.fromisoformat(row["timestamp"]) + shift)
        return out
    if fault.kind == "flatline":
        # A stuck sensor: a run of rows repeats the first row's values.
        start = n // 4
        for row in out[start + 1 : start + max(3, n // 3)]:
            for key in numeric(out[start]):
                row[key] = out[start][key]
        return out
    # wrong_types and spikes damage a few rows; the j-th damaged row gets variant j % 3 (j % 2) so
    # every variant shows up once enough rows are damaged.
    damaged = sorted(set(np.flatnonzero(u < 0.15).tolist()) | {n // 4, n // 2, (3 * n) // 4})
    for j, k in enumerate(damaged):
        row = out[k]
        keys = numeric(row)
        if fault.kind == "spikes":
            # Far outside any physical range: a saturated transmitter or a decimal-point slip.
            if j % 2 == 0 and keys:
                row[keys[0]] = round(row[keys[0]] * 100 + 10_000, 3)
            elif keys:
                row[keys[-1]] = round(row[keys[-1]] * 10 + 20, 3)
        elif j % 3 == 2 and "timestamp" in row:
            row["timestamp"] = "31/02/2026 25:61"
        elif j % 3 == 1 and keys:
            row[keys[-1]] = str(row[keys[-1]])  # a number sent as a string
        elif keys:
            row[keys[0]] = "n/a"
    return out


def serve_dmama(
    config: DmamaConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> contextlib.AbstractContextManager[SimulatorServer]:
    """Serve a DMAMA simulator in a background thread for the duration of the ``with`` block."""
    return serve_simulator(DmamaSimulator(config or DmamaConfig()), host=host, port=port)


def credentials_env(url: str, config: DmamaConfig) -> dict[str, str]:
    """Environment variables a client needs to reach a simulator at `url`."""
    return {
        "DMAMA_BASE_URL": url,
        "DMAMA_API_KEY": config.api_key,
        "DMAMA_CLIENT_ID": config.client_id,
        "DMAMA_CLIENT_SECRET": config.client_secret,
    }


def main_serve(host: str, port: int, dmas: int, meters_per_dma: int, seed: int) -> None:
    """Serve a DMAMA simulator in the foreground until interrupted (for `ihub simulate`).

    Prints one line with the URL and the environment variables that point a client at it.
    """
    import uvicorn

    from simulators.http_server import bind_socket, quiet_config

    config = DmamaConfig(seed=seed, dmas=dmas, meters_per_dma=meters_per_dma)
    simulator = DmamaSimulator(config)
    sock = bind_socket(host, port)  # bound first, so port 0 prints the real port
    bound = sock.getsockname()[1]
    url = f"http://{f'[{host}]' if ':' in host else host}:{bound}"
    env = " ".join(f"{k}={v}" for k, v in credentials_env(url, config).items())
    print(f"DMAMA simulator ({dmas} DMAs x {meters_per_dma} meters, seed {seed}) on {url}  {env}", flush=True)
    uvicorn.Server(quiet_config(simulator.app)).run(sockets=[sock])
