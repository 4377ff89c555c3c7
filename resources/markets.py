"""Markets client: electricity tariffs and public holidays over REST JSON with an API key, as a resource.

Returns the rows exactly as the source sent them; typing and rejecting is ``quality/conform.py``'s job.
Every failure is a ``resources.http.SourceError`` naming the endpoint, with the API key scrubbed out.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from resources.http import ApiKeyAuth, PayloadError, ResilientClient, Secrets, check_secret

__all__ = ["MarketsClient"]

SOURCE = "markets"
TARIFFS_PATH = "/api/v1/tariffs"
HOLIDAYS_PATH = "/api/v1/holidays"

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
