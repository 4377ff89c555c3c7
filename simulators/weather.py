"""Weather simulator: two providers on one loopback app, deterministic from a seed.

1. An OpenWeatherMap-like API (``/data/2.5/...``): API key in the ``appid`` query parameter, current
   conditions and an hourly forecast up to 7 days (168 h), temperatures in Kelvin, OWM's field names
   (``dt``, ``main.temp``, ``main.humidity``, ``rain.1h``, ``wind.speed``), and a per-key rate limit that
   answers 429 with ``Retry-After``.
2. A national met-office-like hourly history feed (``/met/v1/hourly``): Celsius, its own field names
   (``obs_time``, ``air_temp_c``, ``rh_pct``, ``rain_mm``, ``wind_ms``), missing hours marked -999.

The truth is a pure function of (seed, location, hour): a diurnal temperature in Asia/Bangkok local
time (coolest ~06:00, warmest ~15:00), humidity moving against it, afternoon showers, and wind. A
forecast is the truth plus an error that grows with lead time and is a function of (issue hour, valid
hour), so two issues of the same valid hour differ, as real forecasts do. OWM's "current" is the truth
plus a small provider bias, so the two providers disagree a little, and for flagged hours by several °C.

The OWM side needs a notion of "now": ``WeatherSimulator.now`` (real time unless set).

Faults come from the shared fault book (``simulators/faults.py``; ``inject()`` or ``POST /_sim/faults``),
on either provider's paths: ``status`` (429 with ``retry_after``, any 5xx), ``rate_limited`` (a share of
requests refused with 429 + Retry-After), ``slow``, ``truncated`` and ``malformed`` bodies, and the row
faults on the forecast items and the met rows: ``wrong_types`` (the first item's time and numbers become
text), ``duplicates`` (the first item twice), ``out_of_order`` (items reversed). Beside the -999 hours the
met feed always has, two faults of this source's own:

- ``sentinel_burst``: every row of the met answer is -999 (a station outage);
- ``unit_slip``: the met answer's temperatures are sent in Kelvin under ``air_temp_c`` (a feed
  misconfigured upstream), values ~300 that only a range check can catch.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.dmama import _normal, _uniform
from simulators.faults import (
    Fault,
    FaultBook,
    RequestStats,
    delay,
    faults_endpoint,
    mangle_body,
    row_fault,
    status_response,
)
from simulators.http_server import SimulatorServer, serve_simulator

__all__ = [
    "CURRENT_PATH",
    "FORECAST_PATH",
    "MET_PATH",
    "OWN_FAULTS",
    "SENTINEL",
    "WeatherConfig",
    "WeatherSimulator",
    "credentials_env",
    "main",
    "serve_weather",
]

CURRENT_PATH = "/data/2.5/weather"
FORECAST_PATH = "/data/2.5/forecast/hourly"
MET_PATH = "/met/v1/hourly"
OWN_FAULTS = frozenset({"sentinel_burst", "unit_slip"})

SENTINEL = -999
KELVIN = 273.15
MAX_FORECAST_HOURS = 168
LOCAL_OFFSET_H = 7  # Asia/Bangkok, no daylight saving

_S_DAY = 11
_S_HOUR = 12
_S_RAIN = 13
_S_WIND = 14
_S_MISSING = 15
_S_FORECAST = 16
_S_OWM_BIAS = 17


@dataclass(frozen=True)
class WeatherConfig:
    """Seed, credentials and limits of the simulated providers."""

    seed: int = 7
    api_key: str = "sim-owm-key"
    calls_per_minute: int = 600  # OWM's per-key limit; above it every call answers 429
    missing_share: float = 0.05  # share of met hours sent as -999
    disagree_share: float = 0.1  # share of hours where OWM's current is off by 3-5 °C

    def __repr__(self) -> str:
        return f"WeatherConfig(seed={self.seed}, calls_per_minute={self.calls_per_minute})"


def _location_key(lat: float, lon: float) -> int:
    """A stable integer for a location (to 1e-4 degrees, about 11 m)."""
    return round((lat + 90.0) * 10_000) * 4_000_000 + round((lon + 180.0) * 10_000)


def _hour_of(dt: datetime) -> int:
    return int(dt.astimezone(UTC).timestamp()) // 3600


def _iso(hour: int) -> str:
    return datetime.fromtimestamp(hour * 3600, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _Refused(Exception):
    def __init__(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
        super().__init__(str(body))
        self.status, self.body, self.headers = status, body, headers or {}


class WeatherSimulator:
    """The two providers' truth and their HTTP answers (``.app``)."""

    def __init__(self, config: WeatherConfig | None = None) -> None:
        self.config = config or WeatherConfig()
        self.now: datetime | None = None  # None: real time
        self.faults = FaultBook(OWN_FAULTS)
        self.requests = RequestStats()
        self._lock = threading.Lock()
        self._window: tuple[int, int] = (0, 0)  # (minute, calls in it)
        self.app = Starlette(
            routes=[
                Route(CURRENT_PATH, self._current),
                Route(FORECAST_PATH, self._forecast),
                Route(MET_PATH, self._history),
                Route("/_sim/faults", faults_endpoint(self.faults), methods=["GET", "POST", "DELETE"]),
            ]
        )

    # ------------------------------------------------------------------ control (tests)

    def inject(self, kind: str, path: str = "*", count: int = 1, **params: Any) -> None:
        """Arm a fault for the next ``count`` requests whose path matches the fnmatch glob ``path``."""
        self.faults.inject(kind, path, count, **params)

    @property
    def stats(self) -> dict[tuple[str, int], int]:
        """Requests served, by (path, HTTP status)."""
        return self.requests.snapshot()

    def requests_to(self, path: str, status: int | None = None) -> int:
        """Requests served for one path, with one status or whatever their status."""
        return sum(n for (p, s), n in self.stats.items() if p == path and status in (None, s))

    def reset(self) -> None:
        """No armed faults, no request counts, real time, a fresh per-minute quota."""
        self.faults.clear()
        self.requests.reset()
        with self._lock:
            self._window, self.now = (0, 0), None

    # ------------------------------------------------------------------ the truth, in °C

    def truth(self, lat: float, lon: float, hour: int) -> dict[str, float]:
        """Temperature °C, humidity %, rain mm and wind m/s at a location for the UTC hour `hour`."""
        seed, loc = self.config.seed, _location_key(lat, lon)
        local = (hour + LOCAL_OFFSET_H) % 24
        day = (hour + LOCAL_OFFSET_H) // 24
        base = 31.0 - 0.35 * (abs(lat) - 13.0) + 1.2 * float(_normal(seed, _S_DAY, loc, day)[0])
        # Coolest near 06:00 local, warmest near 15:00: a cosine peaking at 15:00 with amplitude 4.5 °C.
        temp = (
            base + 4.5 * math.cos(2 * math.pi * (local - 15) / 24) + 0.4 * float(_normal(seed, _S_HOUR, loc, hour)[0])
        )
        humidity = min(
            100.0, max(20.0, 75.0 - 3.0 * (temp - base) + 4.0 * float(_normal(seed, _S_HOUR, loc, hour, 3)[0]))
        )
        shower = float(_uniform(seed, _S_RAIN, loc, hour)[0])
        rain = round(12.0 * (shower - 0.9) / 0.1, 1) if shower > 0.9 and 13 <= local <= 20 else 0.0
        wind = 1.0 + 3.0 * float(_uniform(seed, _S_WIND, loc, hour)[0])
        return {"temp_c": round(temp, 2), "humidity": round(humidity, 1), "rain_mm": rain, "wind_ms": round(wind, 1)}

    def met_missing(self, lat: float, lon: float, hour: int) -> bool:
        """Whether the met feed sends this hour as -999 (a gap in the station record)."""
        return (
            float(_uniform(self.config.seed, _S_MISSING, _location_key(lat, lon), hour)[0]) < self.config.missing_share
        )

    def met_observation(self, lat: float, lon: float, hour: int) -> dict[str, Any]:
        """One row of the met feed, as sent."""
        if self.met_missing(lat, lon, hour):
            return {
                "obs_time": _iso(hour),
                "air_temp_c": SENTINEL,
                "rh_pct": SENTINEL,
                "rain_mm": SENTINEL,
                "wind_ms": SENTINEL,
            }
        t = self.truth(lat, lon, hour)
        return {
            "obs_time": _iso(hour),
            "air_temp_c": t["temp_c"],
            "rh_pct": t["humidity"],
            "rain_mm": t["rain_mm"],
            "wind_ms": t["wind_ms"],
        }

    def owm_current_c(self, lat: float, lon: float, hour: int) -> dict[str, float]:
        """OWM's current conditions in °C: the truth, a small bias, and for some hours a 3-5 °C miss."""
        loc = _location_key(lat, lon)
        t = dict(self.truth(lat, lon, hour))
        u = float(_uniform(self.config.seed, _S_OWM_BIAS, loc, hour)[0])
        miss = (3.0 + 2.0 * u / self.config.disagree_share) if u < self.config.disagree_share else 0.3 * (u - 0.5)
        t["temp_c"] = round(t["temp_c"] + miss, 2)
        return t

    def owm_forecast_c(self, lat: float, lon: float, issued: int, valid: int) -> dict[str, float]:
        """OWM's forecast in °C for `valid` as issued at `issued`: the truth plus an error growing with lead."""
        loc = _location_key(lat, lon)
        t = dict(self.truth(lat, lon, valid))
        lead = valid - issued
        error = 0.08 * math.sqrt(lead) * 3.0 * float(_normal(self.config.seed, _S_FORECAST, loc, issued, valid)[0])
        t["temp_c"] = round(t["temp_c"] + error, 2)
        return t

    @staticmethod
    def _owm_item(hour: int, t: dict[str, float]) -> dict[str, Any]:
        item: dict[str, Any] = {
            "dt": hour * 3600,
            "main": {"temp": round(t["temp_c"] + KELVIN, 2), "humidity": round(t["humidity"])},
            "wind": {"speed": t["wind_ms"]},
        }
        if t["rain_mm"] > 0:
            item["rain"] = {"1h": t["rain_mm"]}  # OWM leaves "rain" out of dry hours
        return item

    def current_hour(self) -> int:
        return _hour_of(self.now or datetime.now(UTC))

    # ------------------------------------------------------------------ HTTP

    def _owm_gate(self, request: Request) -> tuple[float, float]:
        key = request.query_params.get("appid", "")
        if key != self.config.api_key:
            # Like some real providers, the error text repeats what was sent: the client must scrub it.
            raise _Refused(
                401, {"cod": 401, "message": f"Invalid API key {key!r}. See https://openweathermap.org/faq#error401"}
            )
        with self._lock:
            minute = int(datetime.now(UTC).timestamp()) // 60
            start, calls = self._window
            calls = calls + 1 if start == minute else 1
            self._window = (minute, calls)
            if calls > self.config.calls_per_minute:
                raise _Refused(
                    429,
                    {"cod": 429, "message": "rate limited"},
                    {"Retry-After": str(60 - int(datetime.now(UTC).timestamp()) % 60)},
                )
        return _lat_lon(request)

    async def _answer(self, request: Request, produce: Callable[[Request, Fault | None], Any]) -> Response:
        """One answer: the armed fault (if any) taken, waited, refused or applied to the body."""
        path = request.url.path
        fault = self.faults.take(path)
        await delay(fault)
        if fault is not None and fault.kind == "status":
            response: Response = status_response(fault)
        else:
            try:
                body = produce(request, fault)
            except _Refused as refused:
                response = JSONResponse(refused.body, refused.status, headers=refused.headers)
            else:
                content = mangle_body(json.dumps(body, separators=(",", ":")).encode(), fault)
                response = Response(content, media_type="application/json")
        self.requests.record(path, response.status_code)
        return response

    async def _current(self, request: Request) -> Response:
        def produce(req: Request, _: Fault | None) -> dict[str, Any]:
            lat, lon = self._owm_gate(req)
            hour = self.current_hour()
            return {
                "coord": {"lat": lat, "lon": lon},
                **self._owm_item(hour, self.owm_current_c(lat, lon, hour)),
                "cod": 200,
            }

        return await self._answer(request, produce)

    async def _forecast(self, request: Request) -> Response:
        def produce(req: Request, fault: Fault | None) -> dict[str, Any]:
            lat, lon = self._owm_gate(req)
            try:
                cnt = int(req.query_params.get("cnt", MAX_FORECAST_HOURS))
            except ValueError:
                raise _Refused(400, {"cod": "400", "message": "cnt must be an integer"}) from None
            if not 1 <= cnt <= MAX_FORECAST_HOURS:
                raise _Refused(400, {"cod": "400", "message": f"cnt must be 1-{MAX_FORECAST_HOURS}"})
            issued = self.current_hour()
            # OWM's hourly forecast starts at the hour after the current one; the current is the issue time.
            items = [
                self._owm_item(v, self.owm_forecast_c(lat, lon, issued, v)) for v in range(issued + 1, issued + 1 + cnt)
            ]
            if fault is not None:
                items = row_fault(items, fault.kind, _owm_wrong_value)
            return {"cod": "200", "cnt": cnt, "list": items, "city": {"coord": {"lat": lat, "lon": lon}}}

        return await self._answer(request, produce)

    async def _history(self, request: Request) -> Response:
        def produce(req: Request, fault: Fault | None) -> dict[str, Any]:
            try:
                lat, lon = _lat_lon(req)
                start = _hour_of(datetime.fromisoformat(req.query_params["from"]))
                end = _hour_of(datetime.fromisoformat(req.query_params["to"]))
            except (KeyError, ValueError) as exc:
                raise _Refused(400, {"error": f"lat, lon, from and to (ISO 8601 UTC) are required: {exc}"}) from None
            if end - start > 31 * 24 or end < start:
                raise _Refused(400, {"error": "from..to must span 0-31 days"})
            # The hour in progress (and the future) has not been observed yet.
            rows = [self.met_observation(lat, lon, h) for h in range(start, min(end, self.current_hour()))]
            if fault is not None:
                rows = _met_fault(rows, fault.kind)
            return {"location": {"lat": lat, "lon": lon}, "units": "metric", "observations": rows}

        return await self._answer(request, produce)


def _owm_wrong_value(name: str, value: Any) -> Any:
    """wrong_types on an OWM item: its nested temperature becomes text too (``dt`` does by default)."""
    if name == "main" and isinstance(value, dict):
        return {**value, "temp": "n/a"}
    return None


def _met_fault(rows: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    measures = ("air_temp_c", "rh_pct", "rain_mm", "wind_ms")
    if kind == "sentinel_burst":
        return [{**row, **dict.fromkeys(measures, SENTINEL)} for row in rows]
    if kind == "unit_slip":
        return [
            {**row, "air_temp_c": round(row["air_temp_c"] + KELVIN, 2)} if row["air_temp_c"] != SENTINEL else row
            for row in rows
        ]
    return row_fault(rows, kind, lambda name, _: "yesterday" if name == "obs_time" else None)


def _lat_lon(request: Request) -> tuple[float, float]:
    try:
        lat, lon = float(request.query_params["lat"]), float(request.query_params["lon"])
    except (KeyError, ValueError):
        raise _Refused(400, {"cod": "400", "message": "lat and lon are required numbers"}) from None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180) or not np.isfinite([lat, lon]).all():
        raise _Refused(400, {"cod": "400", "message": "wrong latitude or longitude"})
    return lat, lon


def serve_weather(
    config: WeatherConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> contextlib.AbstractContextManager[SimulatorServer]:
    """Serve both weather providers in a background thread for the duration of the ``with`` block."""
    return serve_simulator(WeatherSimulator(config or WeatherConfig()), host=host, port=port)


def credentials_env(url: str, config: WeatherConfig) -> dict[str, str]:
    """Environment variables that point the client at a simulator at `url` (both providers on one app)."""
    return {"WEATHER_OWM_BASE_URL": url, "WEATHER_OWM_API_KEY": config.api_key, "WEATHER_MET_BASE_URL": url}


def main(argv: list[str] | None = None) -> None:
    """``ihub simulate weather``: serve both weather providers in the foreground until interrupted."""
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(prog="ihub simulate weather", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8704)
    parser.add_argument("--seed", type=int, default=7, help="seed of the simulated weather")
    parser.add_argument("--calls-per-minute", type=int, default=600, help="OWM's per-key limit; above it: 429")
    args = parser.parse_args(argv)
    config = WeatherConfig(seed=args.seed, calls_per_minute=args.calls_per_minute)
    url = f"http://{args.host}:{args.port}"
    exports = " ".join(f"{k}={v}" for k, v in credentials_env(url, config).items())
    print(f"weather providers (OWM-like and met office) on {url}  {exports}", flush=True)
    uvicorn.run(WeatherSimulator(config).app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
