"""ERP client: a SAP Gateway OData V2 service (``ZSCM_SRV``) over `resources/http.py`, as a resource.

What it handles of OData V2 as SAP serves it:

- **Envelope and paging**: ``{"d": {"results": [...], "__count": "…", "__next": "…"}}``. Every read asks for
  ``$inlinecount=allpages`` and follows ``__next`` (server-side paging, ``$skiptoken``) up to `max_pages`
  pages. A ``__next`` must stay on the service's own origin and path (it is sent our credentials), must
  not point back at a page already read, and a page must not consist of rows already read: a paging that
  loops or repeats (the simulator's ``repeated_page``) stops the read with a `PayloadError` that names the
  entity set, the page and what to do, rather than landing an arbitrary subset. Fewer distinct rows than
  ``__count`` promised is the same error; more (a row sent twice) is left to the conform step, which
  rejects the duplicate with its reason.
- **Values**: Edm.DateTime comes as ``/Date(<ms since 1970 UTC>)/`` and is turned into ISO 8601 UTC text by
  `decode_datetime` (or a date by `decode_date`); Edm.Decimal comes as a string and is kept as that string,
  so ``quality/conform.py`` types it exactly, never through a float. ``__metadata`` is dropped from rows.
- **Auth**: basic (``ERP_ODATA_USER``/``ERP_ODATA_PASSWORD``) or a bearer token (``ERP_ODATA_TOKEN``); and
  the CSRF handshake for writes: `CsrfToken` fetches a token and session cookie with ``X-CSRF-Token:
  Fetch`` before the first POST and again once when a POST is refused with 403 ``X-CSRF-Token: Required``
  ("CSRF token validation failed").
- **Incremental reads**: `changed` asks for ``$filter=ChangedAt ge datetime'…' and ChangedAt lt
  datetime'…'`` (the half-open window of a partition, in UTC).

Every failure is a ``resources.http.SourceError`` naming the endpoint, with credentials scrubbed out.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

import dagster as dg
import httpx
from pydantic import Field, PrivateAttr

from resources.http import AuthChain, CsrfToken, PayloadError, ResilientClient, check_secret

__all__ = [
    "BasicAuth",
    "BearerAuth",
    "ErpODataClient",
    "decode_date",
    "decode_datetime",
    "odata_datetime_literal",
]

SOURCE = "erp"
_DATE = re.compile(r"^/Date\((-?\d{1,15})(?:[+-]\d{1,4})?\)/$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

Rows = list[dict[str, Any]]


# ---------------------------------------------------------------------------------------------- values


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    match = _DATE.match(value)
    if match is None:
        return None
    try:
        return _EPOCH + timedelta(milliseconds=int(match[1]))
    except OverflowError:
        return None


def decode_datetime(value: Any) -> Any:
    """``/Date(1700000000000)/`` as ISO 8601 UTC text (``2023-11-14T22:13:20Z``); any other value as it is,
    for the conform step to type or reject with its reason. The offset of a DateTimeOffset
    (``/Date(…+0330)/``) is informational: the milliseconds are UTC."""
    instant = _instant(value)
    if instant is None:
        return value
    return instant.isoformat(timespec="milliseconds" if instant.microsecond else "seconds").replace("+00:00", "Z")


def decode_date(value: Any) -> Any:
    """An Edm.DateTime that carries a calendar date (midnight UTC) as ``YYYY-MM-DD``; a time of day other than
    midnight stays a full timestamp, which a date column rejects rather than silently truncates."""
    instant = _instant(value)
    if instant is None:
        return value
    if instant.hour or instant.minute or instant.second or instant.microsecond:
        return decode_datetime(value)
    return instant.date().isoformat()


def odata_datetime_literal(moment: datetime | date) -> str:
    """A ``datetime'…'`` literal for ``$filter`` (UTC, seconds)."""
    if not isinstance(moment, datetime):
        moment = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    if moment.tzinfo is None:
        raise ValueError("filter times must be timezone-aware (UTC)")
    return f"datetime'{moment.astimezone(UTC):%Y-%m-%dT%H:%M:%S}'"


def odata_date_value(moment: datetime | date) -> str:
    """A value for an Edm.DateTime property in a POST body."""
    if not isinstance(moment, datetime):
        moment = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
    return f"/Date({int((moment.astimezone(UTC) - _EPOCH) / timedelta(milliseconds=1))})/"


# ---------------------------------------------------------------------------------------------- auth


class BasicAuth(httpx.Auth):
    """HTTP basic authentication whose password (and its encoded header) are scrubbed from errors."""

    def __init__(self, user: str, password: str) -> None:
        self.user = check_secret(user, "ERP_ODATA_USER")
        self._password = check_secret(password, "ERP_ODATA_PASSWORD")
        self._header = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()

    def __repr__(self) -> str:
        return f"BasicAuth(user={self.user!r})"

    def secrets(self) -> tuple[str, ...]:
        return (self._password, self._header, self._header.removeprefix("Basic "))

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = self._header
        yield request


class BearerAuth(httpx.Auth):
    """A fixed bearer token (an OAuth token issued to the hub's technical user)."""

    def __init__(self, token: str) -> None:
        self._token = check_secret(token, "ERP_ODATA_TOKEN")

    def __repr__(self) -> str:
        return "BearerAuth()"

    def secrets(self) -> tuple[str, ...]:
        return (self._token,)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers["Authorization"] = f"Bearer {self._token}"
        yield request


# ---------------------------------------------------------------------------------------------- the client


class ErpODataClient(dg.ConfigurableResource):
    """The ERP's OData service (plants, routes, demand forecasts, inventory; supply plan upload).

    Retries transient failures with backoff, waits out 429 answers as their ``Retry-After`` says within a
    budget, bounds each answer in time and size, follows ``__next`` paging up to ``max_pages``.
    """

    base_url: str = Field(
        description="Service root, e.g. https://erp.example/sap/opu/odata/sap/ZSCM_SRV (ERP_ODATA_BASE_URL)."
    )
    user: str = Field(default="", description="Technical user for basic authentication (ERP_ODATA_USER).")
    password: str = Field(default="", description="Its password (ERP_ODATA_PASSWORD).")
    token: str = Field(default="", description="Bearer token, instead of user and password (ERP_ODATA_TOKEN).")
    sap_client: str = Field(default="", description="SAP client (Mandant) sent as sap-client, when not default.")
    timeout_s: float = Field(default=15.0, description="Timeout per network read, seconds.")
    deadline_s: float = Field(default=120.0, description="Total time one request may take, seconds.")
    max_body_mb: int = Field(default=32, description="Largest answer accepted, MiB.")
    max_retries: int = Field(default=3, description="Retries after the first attempt for transient failures.")
    backoff_base_s: float = Field(default=0.5, description="First retry wait; doubles on each further retry.")
    rate_limit_budget_s: float = Field(
        default=300.0, description="How long one request may keep waiting out 429 / Retry-After answers."
    )
    max_pages: int = Field(default=1000, description="Most __next pages one read follows before it fails.")

    _http: ResilientClient | None = PrivateAttr(default=None)
    _csrf: CsrfToken | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _sleep: Callable[[float], None] = PrivateAttr(default=time.sleep)

    def __repr__(self) -> str:
        return f"ErpODataClient(base_url={self.base_url!r})"  # never the credentials

    __str__ = __repr__

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            http, self._http = self._http, None
        if http is not None:
            http.close()

    @property
    def csrf_tokens_fetched(self) -> int:
        """How many CSRF tokens this client has fetched (one per session, plus one per refusal)."""
        self._client()
        return self._csrf.tokens_fetched if self._csrf is not None else 0

    @property
    def rate_limit_waits(self) -> int:
        """How often the source asked this client to slow down (429 or Retry-After) so far."""
        return self._client().limiter.deferrals

    def _client(self) -> ResilientClient:
        with self._lock:
            if self._http is None:
                if not self.base_url.startswith(("http://", "https://")):
                    raise ValueError(f"ErpODataClient.base_url must be an http(s) URL, got {self.base_url!r}")
                if self.token:
                    identity: httpx.Auth = BearerAuth(self.token)
                elif self.user or self.password:
                    identity = BasicAuth(self.user, self.password)
                else:
                    raise ValueError(
                        "erp: no credentials; set ERP_ODATA_USER and ERP_ODATA_PASSWORD, or ERP_ODATA_TOKEN"
                    )
                self._csrf = CsrfToken("/")  # the service document, relative to the service root
                self._http = ResilientClient(
                    SOURCE,
                    self.base_url.rstrip("/"),
                    timeout_s=self.timeout_s,
                    deadline_s=self.deadline_s,
                    max_body_bytes=self.max_body_mb * 1024 * 1024,
                    max_retries=self.max_retries,
                    backoff_base_s=self.backoff_base_s,
                    rate_limit_budget_s=self.rate_limit_budget_s,
                    max_connections=2,
                    headers={"Accept": "application/json"},
                    auth=AuthChain(identity, self._csrf),
                    sleep=self._sleep,
                )
            return self._http

    # ------------------------------------------------------------------ reads

    def entities(self, entity_set: str, *, filter: str | None = None) -> Rows:
        """Every entity of ``entity_set`` that ``filter`` selects, across all pages, as sent (minus
        ``__metadata``)."""
        http = self._client()
        path = f"/{entity_set}"
        params: dict[str, Any] | None = {"$format": "json", "$inlinecount": "allpages"}
        if filter:
            params["$filter"] = filter
        if self.sap_client:
            params["sap-client"] = self.sap_client
        service = urlsplit(self.base_url.rstrip("/"))
        rows: Rows = []
        first_page_of: dict[str, int] = {}  # entity id → page it was first read on
        followed: set[str] = set()
        count: int | None = None
        url = path
        for page in range(1, self.max_pages + 1):
            body = http.get_json(url, params)
            results, total, following = _envelope(body, entity_set, page)
            if total is not None:
                count = total
            ids = [_entity_id(row) for row in results]
            if ids and all(i in first_page_of for i in ids):
                earlier = sorted({first_page_of[i] for i in ids})
                raise PayloadError(
                    SOURCE,
                    path,
                    f"page {page} of {entity_set} repeats {len(ids)} rows already read on page(s) "
                    f"{', '.join(map(str, earlier))}: the service's server-side paging ($skiptoken) is inconsistent, "
                    "so rows after this point would be missing. Re-run the partition; if it persists, ask the ERP "
                    f"team to check the paging of ZSCM_SRV/{entity_set}.",
                )
            for entity_id in ids:
                first_page_of.setdefault(entity_id, page)
            rows.extend({k: v for k, v in row.items() if k != "__metadata"} for row in results)
            if following is None:
                break
            next_url = _checked_next(following, service, entity_set, path, page)
            if next_url in followed:
                raise PayloadError(
                    SOURCE,
                    path,
                    f"page {page} of {entity_set}: __next points back at a page already read "
                    f"({_skiptoken(next_url)}); the paging would never end. Re-run the partition; if it persists, "
                    f"ask the ERP team to check the paging of ZSCM_SRV/{entity_set}.",
                )
            followed.add(next_url)
            url, params = next_url, None
        else:
            raise PayloadError(
                SOURCE,
                path,
                f"{entity_set}: more than {self.max_pages} pages (max_pages) and __next still set; the paging never "
                "ended. Narrow the read (a shorter partition range) or raise max_pages.",
            )
        distinct = len(first_page_of)
        if count is not None and distinct < count:
            raise PayloadError(
                SOURCE,
                path,
                f"{entity_set}: __count promised {count} rows but the pages held {distinct} distinct ones; rows were "
                "lost in paging. Re-run the partition.",
            )
        return rows

    def changed(self, entity_set: str, start: datetime, end: datetime, *, field: str = "ChangedAt") -> Rows:
        """Entities whose ``field`` (an Edm.DateTime) is in ``[start, end)`` UTC: the incremental read."""
        condition = f"{field} ge {odata_datetime_literal(start)} and {field} lt {odata_datetime_literal(end)}"
        return self.entities(entity_set, filter=condition)

    def plants(self) -> Rows:
        """Every plant with its kind, coordinates, capacity and cost (IUs) and stock bounds."""
        return self.entities("PlantSet")

    def routes(self) -> Rows:
        """Every route by mode with freight, handling and trip costs, vehicle capacity and minimum batch."""
        return self.entities("RouteSet")

    def demand_revisions(self, start: datetime, end: datetime) -> Rows:
        """Demand forecast revisions made in ``[start, end)``."""
        return self.changed("DemandForecastSet", start, end)

    def inventory(self, start: datetime, end: datetime) -> Rows:
        """Stock per plant for the days in ``[start, end)`` (by stock date)."""
        return self.changed("InventorySet", start, end, field="StockDate")

    # ------------------------------------------------------------------ writes

    def create(
        self,
        entity_set: str,
        entity: Mapping[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
        response_info: dict[str, Any] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """POST one entity (with the CSRF handshake); returns the entity the service created. ``headers`` go
        with the request (a ``Repeatability-Request-ID``); ``response_info`` receives status and attempts."""
        http = self._client()
        params = f"?sap-client={self.sap_client}" if self.sap_client else ""
        body = http.post_json(
            f"/{entity_set}{params}",
            dict(entity),
            headers=headers,
            response_info=response_info,
            response_headers=response_headers,
        )
        created = body.get("d") if isinstance(body, dict) else None
        if not isinstance(created, dict):
            raise PayloadError(
                SOURCE, f"/{entity_set}", "the answer to a create has no entity under 'd'", method="POST"
            )
        return {k: v for k, v in created.items() if k != "__metadata"}

    def upload_supply_plan(self, plan_id: str, lines: Sequence[Mapping[str, Any]]) -> Rows:
        """Upload a supply plan: one ``SupplyPlanSet`` entity per line (``route_id``, ``period_start``,
        ``quantity_t``, ``trips``). Quantities go as Edm.Decimal strings in tonnes."""
        created = []
        for line in lines:
            quantity = Decimal(str(line["quantity_t"])).quantize(Decimal("0.001"))
            created.append(
                self.create(
                    "SupplyPlanSet",
                    {
                        "PlanId": plan_id,
                        "RouteId": str(line["route_id"]),
                        "PeriodStart": odata_date_value(line["period_start"]),
                        "Quantity": str(quantity),
                        "Trips": int(line["trips"]),
                        "BaseUnit": "TO",
                    },
                )
            )
        return created


def _envelope(body: Any, entity_set: str, page: int) -> tuple[list[dict[str, Any]], int | None, str | None]:
    """(results, __count, __next) of one OData V2 answer; `PayloadError` when it is not one."""
    path = f"/{entity_set}"
    d = body.get("d") if isinstance(body, dict) else None
    if isinstance(d, list):  # OData V1 style: {"d": [...]}
        d = {"results": d}
    if not isinstance(d, dict) or not isinstance(d.get("results"), list):
        got = sorted(body) if isinstance(body, dict) else type(body).__name__
        raise PayloadError(
            SOURCE, path, f"page {page} of {entity_set}: expected {{'d': {{'results': [...]}}}}, got {got}"
        )
    results = d["results"]
    if not all(isinstance(row, dict) for row in results):
        raise PayloadError(SOURCE, path, f"page {page} of {entity_set}: results must be objects")
    total = d.get("__count")
    count = None
    if total is not None:
        try:
            count = int(total)
        except (TypeError, ValueError):
            raise PayloadError(
                SOURCE, path, f"page {page} of {entity_set}: __count is {total!r}, not a number"
            ) from None
    following = d.get("__next")
    if following is not None and (not isinstance(following, str) or not following):
        raise PayloadError(SOURCE, path, f"page {page} of {entity_set}: __next is {following!r}, expected a URL")
    return results, count, following


def _checked_next(following: str, service: Any, entity_set: str, path: str, page: int) -> str:
    """``__next`` as an absolute URL on the service's own origin and path; anything else is refused, since
    following it would send the hub's credentials wherever the answer points."""
    target = urlsplit(following)
    if not target.scheme and not target.netloc:
        base = f"{service.scheme}://{service.netloc}"
        following = base + (following if following.startswith("/") else f"{service.path}/{following}")
        target = urlsplit(following)
    same_origin = (target.scheme, target.netloc.lower()) == (service.scheme, service.netloc.lower())
    if not same_origin or not target.path.startswith(service.path.rstrip("/") + "/"):
        raise PayloadError(
            SOURCE,
            path,
            f"page {page} of {entity_set}: __next leads to {target.scheme}://{target.netloc}{target.path}, outside "
            f"the service {service.scheme}://{service.netloc}{service.path}; not followed (it would carry our "
            "credentials)",
        )
    return following


def _skiptoken(url: str) -> str:
    match = re.search(r"\$skiptoken=([^&]*)", url)
    return f"$skiptoken={match[1]}" if match else urlsplit(url).path


def _entity_id(row: dict[str, Any]) -> str:
    """The entity's identity: its ``__metadata`` uri (the key predicate), or a digest of the row."""
    meta = row.get("__metadata")
    if isinstance(meta, dict) and isinstance(meta.get("uri") or meta.get("id"), str):
        return meta.get("uri") or meta["id"]
    return hashlib.blake2b(json.dumps(row, sort_keys=True, default=str).encode(), digest_size=16).hexdigest()
