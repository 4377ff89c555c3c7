"""DMAMA client: the district-metered-area system over REST JSON or SOAP, as a Dagster resource.

Speaks the contract in ``docs/sources/dmama-api.md``. Returns raw rows exactly as the source sent
them (values untouched, plus the DMA or meter id the request was for); typing and rejecting bad rows is
``quality/conform.py``'s job. Every failure is a ``resources.http.SourceError`` naming the endpoint.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from datetime import UTC, datetime, timedelta
from typing import Any
from xml.sax.saxutils import escape

import dagster as dg
from pydantic import Field, PrivateAttr

from resources.http import (
    ApiKeyAuth,
    AuthChain,
    CircuitBreaker,
    OAuth2ClientCredentials,
    PayloadError,
    ResilientClient,
    Secrets,
    check_secret,
    path_segment,
)
from resources.identifiers import identifier_problem

__all__ = ["DmamaClient"]

log = logging.getLogger(__name__)

SOURCE = "dmama"
SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
DM_NS = "urn:dmama:readings:1"
MAX_RANGE = timedelta(days=31)  # the API refuses longer ranges; longer asks are split
PAYLOAD_FORMATS = ("json", "soap")
# The environment variables the credentials come from (orchestration/definitions.py), so an error can
# name the variable to fix without ever showing its value.
_ENV = {
    "api_key": "DMAMA_API_KEY",
    "client_id": "DMAMA_CLIENT_ID",
    "client_secret": "DMAMA_CLIENT_SECRET",
}

Rows = list[dict[str, Any]]


class _Connection:
    """The live parts of a client: HTTP pool, auth flows, breaker and rate limiter, built on first use."""

    def __init__(self, resource: DmamaClient, sleep: Callable[[float], None], clock: Callable[[], float]) -> None:
        self.oauth = OAuth2ClientCredentials(
            resource.token_path, resource.client_id, resource.client_secret, clock=clock
        )
        self.http = ResilientClient(
            SOURCE,
            resource.base_url,
            timeout_s=resource.timeout_s,
            deadline_s=resource.deadline_s,
            max_body_bytes=resource.max_body_mb * 1024 * 1024,
            max_retries=resource.max_retries,
            backoff_base_s=resource.backoff_base_s,
            rate_limit_budget_s=resource.rate_limit_budget_s,
            verify=resource.verify_tls,
            max_connections=resource.concurrency,
            auth=AuthChain(ApiKeyAuth(resource.api_key, "X-API-Key", name=_ENV["api_key"]), self.oauth),
            sleep=sleep,
            clock=clock,
        )
        self.breaker = self.http.breaker

    def close(self) -> None:
        self.http.close()


def _scrubbed(method: Callable) -> Callable:
    """Whatever leaves a public call (or the iterator it returns) carries none of the client's secrets."""

    @functools.wraps(method)
    def call(self: DmamaClient, *args: Any, **kwargs: Any) -> Any:
        try:
            result = method(self, *args, **kwargs)
        except BaseException as exc:
            cleaned = self._clean(exc)
            if cleaned is None:
                raise
        else:
            return _scrubbed_iter(self, result) if isinstance(result, Iterator) else result
        raise cleaned

    return call


def _scrubbed_iter(client: DmamaClient, items: Iterator) -> Iterator:
    try:
        yield from items
    except BaseException as exc:
        cleaned = client._clean(exc)
        if cleaned is None:
            raise
    else:
        return
    raise cleaned


class DmamaClient(dg.ConfigurableResource):
    """DMAMA, the district metered area management system: DMAs, meters, flow/pressure and registers.

    Authenticates with an API key and OAuth2 client credentials at once; retries transient failures
    with backoff, slows every worker down when the source rate-limits (Retry-After), bounds each answer
    in time and size, and stops calling a source that keeps failing (circuit breaker). Identifiers the
    source sends are checked before they go into a URL: `checked_ids` says which cannot.
    """

    base_url: str = Field(description="Base URL of the DMAMA API, e.g. https://dmama.example/ (DMAMA_BASE_URL).")
    api_key: str = Field(description="Value of the X-API-Key header (DMAMA_API_KEY).")
    client_id: str = Field(description="OAuth2 client id (DMAMA_CLIENT_ID).")
    client_secret: str = Field(description="OAuth2 client secret (DMAMA_CLIENT_SECRET).")
    token_path: str = Field(default="/oauth/token", description="OAuth2 token endpoint, relative to base_url.")
    timeout_s: float = Field(default=10.0, description="Timeout per network read (connect, each body chunk), seconds.")
    deadline_s: float = Field(
        default=120.0, description="Total time one request may take, body included, however the server paces it."
    )
    max_body_mb: int = Field(default=64, description="Largest decoded answer accepted, MiB (gzip inflated).")
    max_pages: int = Field(default=1000, description="Most pages a DMA or meter list may have.")
    max_retries: int = Field(default=3, description="Retries after the first attempt for transient failures.")
    rate_limit_budget_s: float = Field(
        default=300.0,
        description="How long one request may keep waiting out 429 / Retry-After answers before it fails.",
    )
    backoff_base_s: float = Field(default=0.5, description="First retry wait; doubles on each further retry.")
    verify_tls: bool = Field(default=True, description="Verify the server's TLS certificate.")
    payload_format: str = Field(default="json", description="'json' (REST) or 'soap' for DMA readings.")
    concurrency: int = Field(default=8, description="Parallel requests in *_many calls; also the pool size.")
    page_size: int = Field(default=500, description="Items per page for the DMA and meter lists (max 1000).")

    _conn: _Connection | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _sleep: Callable[[float], None] = PrivateAttr(default=time.sleep)
    _clock: Callable[[], float] = PrivateAttr(default=time.monotonic)

    def __repr__(self) -> str:
        # The pydantic repr would print api_key and client_secret.
        return f"DmamaClient(base_url={self.base_url!r}, payload_format={self.payload_format!r})"

    __str__ = __repr__

    # ------------------------------------------------------------------ lifecycle

    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        """Open the connection pool for a run (it is also opened lazily outside Dagster)."""
        self._connection()

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        """Close the connection pool at the end of a run."""
        self.close()

    def close(self) -> None:
        """Close pooled connections; the next call opens new ones."""
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def use_timing(
        self, *, sleep: Callable[[float], None] | None = None, clock: Callable[[], float] | None = None
    ) -> DmamaClient:
        """Replace the sleep used between retries and the clock of the breaker and token cache (tests)."""
        self.close()
        if sleep is not None:
            self._sleep = sleep
        if clock is not None:
            self._clock = clock
        return self

    @property
    def breaker(self) -> CircuitBreaker:
        """The circuit breaker shared by every call of this client."""
        return self._connection().breaker

    @property
    def tokens_fetched(self) -> int:
        """Access tokens fetched so far by this client (its connection)."""
        return self._connection().oauth.tokens_fetched

    @property
    def rate_limit_waits(self) -> int:
        """How often the source asked this client to slow down (429 or Retry-After) so far."""
        return self._connection().http.limiter.deferrals

    def _clean(self, error: BaseException) -> BaseException | None:
        secrets = Secrets([self.api_key, self.client_secret])
        with self._lock:
            if self._conn is not None:
                secrets.add(*self._conn.http.secrets.values())
        return secrets.clean(error)

    def _connection(self) -> _Connection:
        with self._lock:
            if self._conn is None:
                self._validate()
                self._conn = _Connection(self, self._sleep, self._clock)
            return self._conn

    def _validate(self) -> None:
        for field, variable in _ENV.items():
            check_secret(getattr(self, field), variable)
        if self.payload_format not in PAYLOAD_FORMATS:
            raise ValueError(f"DmamaClient.payload_format must be 'json' or 'soap', got {self.payload_format!r}")
        if self.concurrency < 1:
            raise ValueError(f"DmamaClient.concurrency must be at least 1, got {self.concurrency}")
        if not 1 <= self.page_size <= 1000:
            raise ValueError(f"DmamaClient.page_size must be between 1 and 1000, got {self.page_size}")
        if not self.base_url.startswith(("http://", "https://")):
            raise ValueError(f"DmamaClient.base_url must be an http(s) URL, got {self.base_url!r}")
        for name in ("timeout_s", "deadline_s", "max_body_mb", "max_pages", "rate_limit_budget_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"DmamaClient.{name} must be positive, got {getattr(self, name)}")

    @staticmethod
    def checked_ids(ids: Iterable[Any]) -> tuple[list[str], dict[str, str]]:
        """(usable ids in order, {unusable id: why}) for identifiers the source sent.

        An id of ``.`` or ``..``, with a separator or a control character would change which endpoint a
        request reaches; such ids are never put into a URL (the *_many calls skip them too).
        """
        usable: list[str] = []
        refused: dict[str, str] = {}
        for value in ids:
            problem = identifier_problem(value)
            if problem is None:
                usable.append(value)
            else:
                refused[str(value)] = problem
        return usable, refused

    # ------------------------------------------------------------------ catalogue

    @_scrubbed
    def dma_list(self) -> Rows:
        """Summaries (dma_id, name, zone) of every DMA, all pages."""
        return self._all_pages("/api/dma/list")

    @_scrubbed
    def dma_details(self, dma_id: str) -> dict[str, Any]:
        """Details of one DMA: connections, mains length, target pressure, inflow meters, location."""
        path = f"/api/dma/{_segment(dma_id, '/api/dma/{dma_id}')}"
        body = self._connection().http.get_json(path)
        if not isinstance(body, dict):
            raise PayloadError(SOURCE, path, f"expected a JSON object of DMA details, got {type(body).__name__}")
        return body

    @_scrubbed
    def dma_catalogue(self) -> Rows:
        """Details of every DMA, fetched concurrently, in list order.

        A DMA whose id cannot go into a URL keeps its list row as the source sent it (no details are
        asked for it), so conform can set it aside with its reason.
        """
        summaries = self.dma_list()
        ids = [self._key(row, "dma_id", "/api/dma/list") for row in summaries]
        usable, _ = self.checked_ids(ids)
        if not usable:
            return list(summaries)
        with ThreadPoolExecutor(min(self.concurrency, len(usable)), thread_name_prefix="dmama") as pool:
            details = dict(zip(usable, pool.map(self.dma_details, usable), strict=True))
        return [details.get(dma_id, summary) for dma_id, summary in zip(ids, summaries, strict=True)]

    @_scrubbed
    def meters(self, dma_id: str) -> Rows:
        """Meters of one DMA (customer and inflow meters), all pages."""
        return self._all_pages(f"/api/dma/{_segment(dma_id, '/api/dma/{dma_id}/meters')}/meters")

    # ------------------------------------------------------------------ readings

    @_scrubbed
    def flow_readings(self, dma_id: str, since: datetime, until: datetime) -> Rows:
        """15-minute flow and pressure rows of one DMA in [since, until), each with `dma_id` added.

        JSON values come as the source typed them; SOAP values are the XML text, as strings.
        """
        fetch = self._soap_readings if self.payload_format == "soap" else self._json_flow_readings
        return [row for a, b in _windows(since, until) for row in fetch(dma_id, a, b)]

    @_scrubbed
    def flow_readings_many(
        self, dma_ids: Iterable[str], since: datetime, until: datetime
    ) -> Iterator[tuple[str, Rows]]:
        """(dma_id, rows) for each DMA as its fetch completes, `concurrency` at a time.

        The first SourceError stops the rest (not-yet-started fetches are cancelled) and propagates.
        Ids that cannot go into a URL are skipped with a warning; `checked_ids` counts them.
        """
        return self._many(self.flow_readings, dma_ids, since, until)

    @_scrubbed
    def meter_readings(self, meter_id: str, since: datetime, until: datetime) -> Rows:
        """Hourly register rows (timestamp, register_m3) of one meter in [since, until), with `meter_id`."""
        path = f"/api/meters/{_segment(meter_id, '/api/meters/{meter_id}/readings')}/readings"
        rows: Rows = []
        for a, b in _windows(since, until):
            body = self._connection().http.get_json(path, {"since": _iso(a), "until": _iso(b)})
            rows.extend(_tagged(_readings(body, path), "meter_id", meter_id, path))
        return rows

    @_scrubbed
    def meter_readings_many(
        self, meter_ids: Iterable[str], since: datetime, until: datetime
    ) -> Iterator[tuple[str, Rows]]:
        """(meter_id, rows) for each meter as its fetch completes, `concurrency` at a time."""
        return self._many(self.meter_readings, meter_ids, since, until)

    # ------------------------------------------------------------------ helpers

    def _json_flow_readings(self, dma_id: str, since: datetime, until: datetime) -> Rows:
        path = f"/api/dma/{_segment(dma_id, '/api/dma/{dma_id}/readings')}/readings"
        body = self._connection().http.get_json(path, {"since": _iso(since), "until": _iso(until)})
        return _tagged(_readings(body, path), "dma_id", dma_id, path)

    def _soap_readings(self, dma_id: str, since: datetime, until: datetime) -> Rows:
        path = "/soap/readings"
        envelope = (
            f'<soap:Envelope xmlns:soap="{SOAP_NS}" xmlns:dm="{DM_NS}"><soap:Body><dm:GetReadings>'
            f"<dm:DmaId>{escape(_checked(dma_id, path))}</dm:DmaId><dm:Since>{_iso(since)}</dm:Since>"
            f"<dm:Until>{_iso(until)}</dm:Until></dm:GetReadings></soap:Body></soap:Envelope>"
        )
        root = self._connection().http.post_xml(path, envelope, headers={"SOAPAction": '"GetReadings"'})
        answer = root.find(f"{{{SOAP_NS}}}Body/{{{DM_NS}}}GetReadingsResponse")
        if answer is None:
            raise PayloadError(SOURCE, path, "SOAP answer has no dm:GetReadingsResponse in soap:Body", method="POST")

        def text(reading: ET.Element, tag: str) -> str | None:
            element = reading.find(f"{{{DM_NS}}}{tag}")
            return None if element is None else (element.text or "")

        return [
            {
                "timestamp": text(reading, "Timestamp"),
                "flow_m3h": text(reading, "FlowM3h"),
                "pressure_bar": text(reading, "PressureBar"),
                "dma_id": dma_id,
            }
            for reading in answer.iterfind(f"{{{DM_NS}}}Reading")
        ]

    def _all_pages(self, path: str) -> Rows:
        http = self._connection().http
        pages = http.iter_pages(path, {"page_size": self.page_size}, max_pages=self.max_pages)
        return [item for items in pages for item in items]

    def _many(
        self,
        fetch: Callable[[str, datetime, datetime], Rows],
        keys: Iterable[str],
        since: datetime,
        until: datetime,
    ) -> Iterator[tuple[str, Rows]]:
        keys, refused = self.checked_ids(keys)
        if refused:
            log.warning("dmama: skipped %d ids that cannot go into a URL: %s", len(refused), _describe(refused))
        _windows(since, until)  # fail on a bad range before starting threads
        if not keys:
            return
        self._connection()  # build once here rather than racing in the workers
        pool = ThreadPoolExecutor(min(self.concurrency, len(keys)), thread_name_prefix="dmama")
        try:
            futures = {pool.submit(fetch, key, since, until): key for key in keys}
            for future in as_completed(futures):
                yield futures[future], future.result()
        finally:
            # Also runs when the caller stops iterating early: queued fetches are dropped, not run.
            pool.shutdown(wait=True, cancel_futures=True)

    @staticmethod
    def _key(row: Any, key: str, path: str) -> str:
        if not isinstance(row, dict) or not isinstance(row.get(key), str):
            raise PayloadError(SOURCE, path, f"an item has no string {key!r}: {str(row)[:120]}")
        return row[key]


def _segment(value: Any, template: str) -> str:
    """`value` as a path segment, or a PayloadError naming the endpoint it was meant for."""
    _checked(value, template)
    return path_segment(value)


def _checked(value: Any, template: str) -> str:
    problem = identifier_problem(value)
    if problem is not None:
        raise PayloadError(SOURCE, template, f"identifier {str(value)[:40]!r} {problem}; not put into a request")
    return value


def _describe(refused: dict[str, str], limit: int = 5) -> str:
    shown = "; ".join(f"{k[:40]!r} {why}" for k, why in list(refused.items())[:limit])
    return shown + (f"; and {len(refused) - limit} more" if len(refused) > limit else "")


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _windows(since: datetime, until: datetime) -> list[tuple[datetime, datetime]]:
    """[since, until) cut into pieces the API accepts (at most 31 days), in UTC."""
    if since.tzinfo is None or until.tzinfo is None:
        raise ValueError(f"DMAMA ranges must be timezone-aware UTC datetimes, got {since!r} .. {until!r}")
    since, until = since.astimezone(UTC), until.astimezone(UTC)
    if until <= since:
        raise ValueError(f"DMAMA range is empty: until {until.isoformat()} is not after since {since.isoformat()}")
    windows = []
    cursor = since
    while cursor < until:
        end = min(cursor + MAX_RANGE, until)
        windows.append((cursor, end))
        cursor = end
    return windows


def _readings(body: Any, path: str) -> list[Any]:
    if not isinstance(body, dict) or not isinstance(body.get("readings"), list):
        got = sorted(body) if isinstance(body, dict) else type(body).__name__
        raise PayloadError(SOURCE, path, f"expected an object with a 'readings' list, got {got}")
    return body["readings"]


def _tagged(rows: list[Any], key: str, value: str, path: str) -> Rows:
    """Each row with the id it belongs to added; a non-object row makes the answer unusable."""
    out = []
    for n, row in enumerate(rows):
        if not isinstance(row, dict):
            raise PayloadError(SOURCE, path, f"readings[{n}] is a {type(row).__name__}, expected an object")
        out.append({**row, key: value})
    return out
