"""Markets client (tariffs, holidays, fuel prices, exchange rates, cement prices over REST JSON with an API
key) and the road freight cost model, as resources.

The client returns the rows exactly as the source sent them; typing and rejecting is
``quality/conform.py``'s job. Every failure is a ``resources.http.SourceError`` naming the endpoint, with
the API key scrubbed out. The freight model's parameters live in a validated YAML file
(``resources/markets_freight_model.yaml`` unless ``IHUB_FREIGHT_MODEL`` names another), never in code.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from resources.http import ApiKeyAuth, PayloadError, ResilientClient, Secrets, check_secret
from resources.yaml_files import load_model

__all__ = [
    "SHIPPED_FREIGHT_MODEL",
    "FreightModel",
    "FreightModelFile",
    "FreightModelResource",
    "MarketsClient",
    "load_freight_model",
]

SOURCE = "markets"
TARIFFS_PATH = "/api/v1/tariffs"
HOLIDAYS_PATH = "/api/v1/holidays"
FUEL_PATH = "/api/v1/fuel-prices"
FX_PATH = "/api/v1/fx-rates"
CEMENT_PATH = "/api/v1/cement-prices"
# Longest range the API answers in one request, days; longer ranges are asked for in pieces.
RANGE_DAYS = {FUEL_PATH: 728, FX_PATH: 366, CEMENT_PATH: 92}
SHIPPED_FREIGHT_MODEL = Path(__file__).with_name("markets_freight_model.yaml")

Rows = list[dict[str, Any]]


class MarketsClient(dg.ConfigurableResource):
    """The markets API: published electricity tariff versions and public holidays.

    Sends the API key in ``X-API-Key``; retries transient failures with backoff and waits out 429
    answers as their ``Retry-After`` says, within a budget; bounds each answer in time and size.
    """

    base_url: str = Field(description="Base URL of the markets API (MARKETS_BASE_URL).")
    api_key: str = Field(description="Value of the X-API-Key header (MARKETS_API_KEY).")
    timeout_s: float = Field(default=10.0, description="Timeout per network read, seconds.")
    deadline_s: float = Field(default=60.0, description="Total time one request may take, seconds.")
    max_body_mb: int = Field(default=8, description="Largest answer accepted, MiB.")
    max_retries: int = Field(default=3, description="Retries after the first attempt for transient failures.")
    backoff_base_s: float = Field(default=0.5, description="First retry wait; doubles on each further retry.")
    rate_limit_budget_s: float = Field(
        default=120.0, description="How long one request may keep waiting out 429 / Retry-After answers."
    )

    _http: ResilientClient | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _sleep: Callable[[float], None] = PrivateAttr(default=time.sleep)

    def __repr__(self) -> str:
        return f"MarketsClient(base_url={self.base_url!r})"  # never the key

    __str__ = __repr__

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            http, self._http = self._http, None
        if http is not None:
            http.close()

    @property
    def rate_limit_waits(self) -> int:
        """How often the source asked this client to slow down (429 or Retry-After) so far."""
        return self._client().limiter.deferrals

    def _client(self) -> ResilientClient:
        with self._lock:
            if self._http is None:
                check_secret(self.api_key, "MARKETS_API_KEY")
                if not self.base_url.startswith(("http://", "https://")):
                    raise ValueError(f"MarketsClient.base_url must be an http(s) URL, got {self.base_url!r}")
                self._http = ResilientClient(
                    SOURCE,
                    self.base_url,
                    timeout_s=self.timeout_s,
                    deadline_s=self.deadline_s,
                    max_body_bytes=self.max_body_mb * 1024 * 1024,
                    max_retries=self.max_retries,
                    backoff_base_s=self.backoff_base_s,
                    rate_limit_budget_s=self.rate_limit_budget_s,
                    max_connections=2,
                    auth=ApiKeyAuth(self.api_key, "X-API-Key", name="MARKETS_API_KEY"),
                    sleep=self._sleep,
                )
            return self._http

    def _list(self, path: str, field: str, params: dict[str, Any] | None = None) -> Rows:
        try:
            body = self._client().get_json(path, params=params)
            if not isinstance(body, dict) or not isinstance(body.get(field), list):
                raise PayloadError(SOURCE, path, f"expected a JSON object with a list {field!r}")
            return body[field]
        except BaseException as exc:
            cleaned = Secrets([self.api_key]).clean(exc)
            if cleaned is None:
                raise
        raise cleaned

    def tariffs(self) -> Rows:
        """Every published tariff version with its validity period, as sent."""
        return self._list(TARIFFS_PATH, "tariffs")

    def holidays(self, year: int | None = None) -> Rows:
        """Public holidays (date, name) of every published year, or of one."""
        return self._list(HOLIDAYS_PATH, "holidays", {"year": year} if year is not None else None)

    def _range(self, path: str, field: str, start: date, end: date) -> Rows:
        rows: Rows = []
        step = timedelta(days=RANGE_DAYS[path])
        while start < end:
            until = min(end, start + step)
            rows.extend(self._list(path, field, {"from": start.isoformat(), "to": until.isoformat()}))
            start = until
        return rows

    def fuel_prices(self, start: date, end: date) -> Rows:
        """Weekly diesel (USD/l) and Brent (USD/bbl) prices of the weeks starting (Monday) in ``[start, end)``."""
        return self._range(FUEL_PATH, "prices", start, end)

    def exchange_rates(self, start: date, end: date) -> Rows:
        """Reference rates USD→THB and USD→INR of the business days in ``[start, end)``, with their dates."""
        return self._range(FX_PATH, "rates", start, end)

    def cement_prices(self, start: date, end: date) -> Rows:
        """Dealer prices of cement per city and grade (per bag, in the currency sent) in ``[start, end)``."""
        return self._range(CEMENT_PATH, "prices", start, end)


class FixedCosts(BaseModel):
    """What a truck costs per kilometre driven loaded whatever the fuel price, INR per vehicle-km."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    driver_inr_per_km: float = Field(ge=0, description="Driver and helper wages and allowances.")
    tolls_inr_per_km: float = Field(ge=0, description="Highway tolls for a multi-axle truck.")
    maintenance_inr_per_km: float = Field(ge=0, description="Tyres, servicing, wear and insurance per km.")

    @property
    def total_inr_per_km(self) -> float:
        return self.driver_inr_per_km + self.tolls_inr_per_km + self.maintenance_inr_per_km


class FreightModel(BaseModel):
    """Road freight cost per tonne-km of a bulk clinker or cement truck:

    ``freight_inr_per_tonne_km = (fixed INR per km + fuel_l_per_km × diesel INR per l) / payload_t``,
    with ``diesel INR per l = diesel USD per l × USD/INR rate``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, description="Which model this is, stored with every row it costs.")
    payload_t: float = Field(gt=0, le=60, description="Tonnes carried per loaded trip.")
    fuel_l_per_km: float = Field(gt=0, le=2, description="Diesel burned per km loaded, litres.")
    fixed: FixedCosts
    max_fx_age_days: int = Field(
        default=7, ge=0, le=31, description="Oldest USD/INR rate (days before the week starts) the model may use."
    )

    def fuel_inr_per_tonne_km(self, diesel_inr_per_l: float) -> float:
        return self.fuel_l_per_km * diesel_inr_per_l / self.payload_t

    @property
    def fixed_inr_per_tonne_km(self) -> float:
        return self.fixed.total_inr_per_km / self.payload_t


class FreightModelFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    road_truck: FreightModel


def default_freight_model_path() -> Path:
    """``IHUB_FREIGHT_MODEL``, or the shipped file."""
    return Path(os.environ.get("IHUB_FREIGHT_MODEL") or SHIPPED_FREIGHT_MODEL)


def load_freight_model(path: str | os.PathLike[str] | None = None) -> FreightModel:
    """The road freight model from its YAML; ``ConfigError`` names the file, line and field of a problem."""
    return load_model(path or default_freight_model_path(), FreightModelFile).road_truck


class FreightModelResource(dg.ConfigurableResource):
    """The road freight cost model's parameters, from a validated YAML file."""

    path: str = Field(
        default="",
        description="YAML file with the model (empty: IHUB_FREIGHT_MODEL, else resources/markets_freight_model.yaml).",
    )

    def model(self) -> FreightModel:
        return load_freight_model(self.path or None)
