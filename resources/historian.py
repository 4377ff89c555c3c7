"""Client of the SCADA historian's REST API, for backfilling past windows and repairing gaps."""

from datetime import datetime

import dagster as dg
from pydantic import Field, PrivateAttr

from resources.http import ResilientClient


class HistorianClient(dg.ConfigurableResource):
    """The historian at ``base_url`` (``HISTORIAN_BASE_URL``), authenticated by ``X-API-Key``
    (``HISTORIAN_API_KEY``, from the environment only). Retries, backoff and the circuit breaker come
    from the shared HTTP layer."""

    base_url: str
    api_key: str = Field(repr=False)
    timeout_s: float = 30.0
    max_retries: int = 3
    backoff_base_s: float = 0.5
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
                max_retries=self.max_retries,
                backoff_base_s=self.backoff_base_s,
                verify=self.verify_tls,
                headers={"X-API-Key": self.api_key},
            )
        return self._http

    def points(self, since: datetime, until: datetime) -> list[dict]:
        """Every tag's raw samples in [since, until), all pages, as the historian sent them."""
        rows: list[dict] = []
        page: int | None = 1
        while page is not None:
            body = self._client().get_json(
                "/api/v1/points",
                params={
                    "since": since.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "until": until.strftime("%Y-%m-%dT%H:%M:%SZ"),
                    "page": page,
                    "page_size": self.page_size,
                },
            )
            rows.extend(body["items"])
            page = body.get("next_page")
        return rows
