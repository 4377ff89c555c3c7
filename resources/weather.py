"""Weather client: an OpenWeatherMap-like API and a met-office hourly feed, as one Dagster resource.

Returns rows as the providers sent them (OWM's nested items, the met feed's flat rows), plus the
location they were asked for; converting units and rejecting sentinels is the assets' job. Every
failure is a ``resources.http.SourceError`` naming the endpoint, with the API key scrubbed: OWM takes
the key as the ``appid`` query parameter, so it would otherwise ride along in any URL or echoed error.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from resources.http import PayloadError, ResilientClient, Secrets, check_secret

__all__ = ["WeatherClient"]

SOURCE = "weather"
MAX_FORECAST_HOURS = 168
MAX_MET_RANGE = timedelta(days=31)


class WeatherClient(dg.ConfigurableResource):
    """Two weather providers: OWM-like current conditions and hourly forecasts (Kelvin), and the
    national met office's hourly observations (Celsius). Retries transient failures, waits out 429 /
    Retry-After, and never shows the API key in an error or log."""

    owm_base_url: str = Field(description="Base URL of the OWM-like API (WEATHER_OWM_BASE_URL).")
    owm_api_key: str = Field(description="OWM API key, sent as the appid query parameter (WEATHER_OWM_API_KEY).")
    met_base_url: str = Field(description="Base URL of the met-office hourly feed (WEATHER_MET_BASE_URL).")
    forecast_hours: int = Field(default=MAX_FORECAST_HOURS, ge=1, le=MAX_FORECAST_HOURS, description="Hours ahead.")
    timeout_s: float = Field(default=10.0, description="Timeout per network read, seconds.")
    max_retries: int = Field(default=3, description="Retries after the first attempt for transient failures.")
    backoff_base_s: float = Field(default=0.5, description="First retry wait; doubles on each further retry.")
    rate_limit_budget_s: float = Field(default=300.0, description="How long one call may wait out 429 answers.")

    _owm: ResilientClient | None = PrivateAttr(default=None)
    _met: ResilientClient | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _sleep: Callable[[float], None] = PrivateAttr(default=time.sleep)

    def __repr__(self) -> str:
        return f"WeatherClient(owm_base_url={self.owm_base_url!r}, met_base_url={self.met_base_url!r})"

    __str__ = __repr__

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            clients, self._owm, self._met = (self._owm, self._met), None, None
        for client in clients:
            if client is not None:
                client.close()

    @property
    def rate_limit_waits(self) -> int:
        """How often OWM asked this client to slow down (429 / Retry-After) so far."""
        return self._clients()[0].limiter.deferrals

    def _clients(self) -> tuple[ResilientClient, ResilientClient]:
        with self._lock:
            if self._owm is None or self._met is None:
                key = check_secret(self.owm_api_key, "WEATHER_OWM_API_KEY")
                common = {
                    "timeout_s": self.timeout_s,
                    "max_retries": self.max_retries,
                    "backoff_base_s": self.backoff_base_s,
                    "rate_limit_budget_s": self.rate_limit_budget_s,
                    "sleep": self._sleep,
                }
                self._owm = ResilientClient(f"{SOURCE}/owm", self.owm_base_url, secrets=[key], **common)
                self._met = ResilientClient(f"{SOURCE}/met", self.met_base_url, **common)
            return self._owm, self._met

    def _call(self, client: ResilientClient, path: str, params: dict[str, Any]) -> Any:
        try:
            return client.get_json(path, params)
        except BaseException as exc:
            cleaned = Secrets([self.owm_api_key]).clean(exc)
            if cleaned is None:
                raise
        raise cleaned

    def owm_current(self, lat: float, lon: float) -> dict[str, Any]:
        """OWM's current conditions at a location: ``dt`` (unix s), ``main.temp`` (K), ``main.humidity``..."""
        owm, _ = self._clients()
        path = "/data/2.5/weather"
        body = self._call(owm, path, {"lat": lat, "lon": lon, "appid": self.owm_api_key})
        if not isinstance(body, dict) or "dt" not in body:
            raise PayloadError(f"{SOURCE}/owm", path, f"expected an object with dt, got {type(body).__name__}")
        return body

    def owm_forecast(self, lat: float, lon: float) -> list[dict[str, Any]]:
        """OWM's hourly forecast items (``dt`` = valid hour) from the hour after now, `forecast_hours` long."""
        owm, _ = self._clients()
        path = "/data/2.5/forecast/hourly"
        body = self._call(owm, path, {"lat": lat, "lon": lon, "cnt": self.forecast_hours, "appid": self.owm_api_key})
        items = body.get("list") if isinstance(body, dict) else None
        if not isinstance(items, list):
            raise PayloadError(f"{SOURCE}/owm", path, "expected an object with a 'list' of forecast items")
        return items

    def met_observations(self, lat: float, lon: float, start: datetime, end: datetime) -> list[dict[str, Any]]:
        """The met feed's hourly rows in ``[start, end)``: obs_time, air_temp_c, rh_pct, rain_mm, wind_ms."""
        _, met = self._clients()
        path = "/met/v1/hourly"
        rows: list[dict[str, Any]] = []
        while start < end:  # the feed answers at most 31 days per request
            until = min(end, start + MAX_MET_RANGE)
            body = self._call(met, path, {"lat": lat, "lon": lon, "from": _iso(start), "to": _iso(until)})
            part = body.get("observations") if isinstance(body, dict) else None
            if not isinstance(part, list):
                raise PayloadError(f"{SOURCE}/met", path, "expected an object with an 'observations' list")
            rows.extend(part)
            start = until
        return rows


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
