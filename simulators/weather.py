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
"""

from __future__ import annotations

import contextlib
import math
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from simulators.dmama import _normal, _uniform
from simulators.http_server import SimulatorServer, serve_simulator

__all__ = ["SENTINEL", "WeatherConfig", "WeatherSimulator", "credentials_env", "serve_weather"]

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
        self._lock = threading.Lock()
        self._throttle = 0
        self._throttle_after_s = 1
        self._window: tuple[int, int] = (0, 0)  # (minute, calls in it)
        self.stats: dict[str, int] = {}
        self.app = Starlette(
            routes=[
                Route("/data/2.5/weather", self._current),
                Route("/data/2.5/forecast/hourly", self._forecast),
                Route("/met/v1/hourly", self._history),
            ]
        )

    # ------------------------------------------------------------------ control (tests)

    def throttle(self, times: int, retry_after_s: int = 1) -> None:
        """Answer the next `times` OWM calls with 429 and ``Retry-After: retry_after_s``."""
        with self._lock:
            self._throttle, self._throttle_after_s = times, retry_after_s

    def reset(self) -> None:
        with self._lock:
            self._throttle, self._window, self.stats, self.now = 0, (0, 0), {}, None

    def _count(self, name: str) -> None:
        self.stats[name] = self.stats.get(name, 0) + 1

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
            if self._throttle > 0:
                self._throttle -= 1
                self._count("429")
                raise _Refused(
                    429, {"cod": 429, "message": "rate limited"}, {"Retry-After": str(self._throttle_after_s)}
                )
            minute = int(datetime.now(UTC).timestamp()) // 60
            start, calls = self._window
            calls = calls + 1 if start == minute else 1
            self._window = (minute, calls)
            if calls > self.config.calls_per_minute:
                self._count("429")
                raise _Refused(
                    429,
                    {"cod": 429, "message": "rate limited"},
                    {"Retry-After": str(60 - int(datetime.now(UTC).timestamp()) % 60)},
                )
        return _lat_lon(request)

    async def _current(self, request: Request) -> JSONResponse:
        try:
            lat, lon = self._owm_gate(request)
        except _Refused as refused:
            return JSONResponse(refused.body, refused.status, headers=refused.headers)
        self._count("current")
        hour = self.current_hour()
        body = {
            "coord": {"lat": lat, "lon": lon},
            **self._owm_item(hour, self.owm_current_c(lat, lon, hour)),
            "cod": 200,
        }
        return JSONResponse(body)

    async def _forecast(self, request: Request) -> JSONResponse:
        try:
            lat, lon = self._owm_gate(request)
            cnt = int(request.query_params.get("cnt", MAX_FORECAST_HOURS))
            if not 1 <= cnt <= MAX_FORECAST_HOURS:
                raise _Refused(400, {"cod": "400", "message": f"cnt must be 1-{MAX_FORECAST_HOURS}"})
        except ValueError:
            return JSONResponse({"cod": "400", "message": "cnt must be an integer"}, 400)
        except _Refused as refused:
            return JSONResponse(refused.body, refused.status, headers=refused.headers)
        self._count("forecast")
        issued = self.current_hour()
        items = [
            self._owm_item(v, self.owm_forecast_c(lat, lon, issued, v)) for v in range(issued + 1, issued + 1 + cnt)
        ]
        # OWM's hourly forecast starts at the hour after the current one; the current is the issue time.
        return JSONResponse({"cod": "200", "cnt": cnt, "list": items, "city": {"coord": {"lat": lat, "lon": lon}}})

    async def _history(self, request: Request) -> JSONResponse:
        try:
            lat, lon = _lat_lon(request)
            start = _hour_of(datetime.fromisoformat(request.query_params["from"]))
            end = _hour_of(datetime.fromisoformat(request.query_params["to"]))
        except (KeyError, ValueError) as exc:
            return JSONResponse({"error": f"lat, lon, from and to (ISO 8601 UTC) are required: {exc}"}, 400)
        except _Refused as refused:
            return JSONResponse(refused.body, refused.status)
        if end - start > 31 * 24 or end < start:
            return JSONResponse({"error": "from..to must span 0-31 days"}, 400)
        self._count("history")
        # The hour in progress (and the future) has not been observed yet.
        rows = [self.met_observation(lat, lon, h) for h in range(start, min(end, self.current_hour()))]
        return JSONResponse({"location": {"lat": lat, "lon": lon}, "units": "metric", "observations": rows})


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
