"""Client of the SCADA historian's REST API, for backfilling past windows and repairing gaps."""

from datetime import datetime

import dagster as dg
from pydantic import Field, PrivateAttr

from resources.http import ApiKeyAuth, ResilientClient


class HistorianClient(dg.ConfigurableResource):
    """The historian at ``base_url`` (``HISTORIAN_BASE_URL``), authenticated by ``X-API-Key``
    (``HISTORIAN_API_KEY``, from the environment only). Retries, backoff and the circuit breaker come
    from the shared HTTP layer."""

    base_url: str
    api_key: str = Field(repr=False)
    timeout_s: float = 30.0
    deadline_s: float = 300.0
    max_body_mb: int = 256
    max_pages: int = 10_000
    max_retries: int = 3
    backoff_base_s: float = 0.5
    rate_limit_budget_s: float = 300.0
    verify_tls: bool = True
    page_size: int = 5000

    _http: ResilientClient | None = PrivateAttr(default=None)

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def _client(self) -> ResilientClient:
        if self._http is None:
            self._http = ResilientClient(
                "historian",
                self.base_url,
                timeout_s=self.timeout_s,
                deadline_s=self.deadline_s,
                max_body_bytes=self.max_body_mb * 1024 * 1024,
                max_retries=self.max_retries,
                backoff_base_s=self.backoff_base_s,
                rate_limit_budget_s=self.rate_limit_budget_s,
                verify=self.verify_tls,
                auth=ApiKeyAuth(self.api_key, "X-API-Key", name="HISTORIAN_API_KEY"),
            )
        return self._http

    def points(self, since: datetime, until: datetime) -> list[dict]:
        """Every tag's raw samples in [since, until), all pages, as the historian sent them.

        Paging that never ends (a page repeated, or more than `max_pages`) fails with a PayloadError.
        """
        params = {
            "since": since.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "until": until.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "page_size": self.page_size,
        }
        pages = self._client().iter_pages("/api/v1/points", params, max_pages=self.max_pages)
        return [row for items in pages for row in items]
