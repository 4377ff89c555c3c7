"""ERP simulator: a SAP Gateway-like OData V2 service (``ZSCM_SRV``) for the clinker supply chain.

Serves, under ``/sap/opu/odata/sap/ZSCM_SRV``, the entity sets the supply planner reads, as SAP serves
them in JSON:

- ``PlantSet``: every plant with its kind, coordinates, clinker capacity and production cost (IUs) and
  stock bounds; ``RouteSet``: every route by mode with its costs, vehicle capacity and minimum batch;
  ``DemandForecastSet``: every revision of each grinding unit's and hub's monthly clinker demand;
  ``InventorySet``: the stock of each plant at 00:00 UTC of each day. ``SupplyPlanSet`` takes a POST (a
  planned shipment uploaded by the planner) and lists what was uploaded.
- The V2 JSON envelope ``{"d": {"results": [...], "__count": "312", "__next": "…$skiptoken=100"}}``,
  server-side paging (``page_size`` rows a page; ``$skiptoken`` is the offset), ``$top``/``$skip``,
  ``$inlinecount=allpages``, ``$filter`` with ``and`` of comparisons (``ChangedAt ge
  datetime'2026-12-01T00:00:00'``, ``Plant eq 'IU01'``), ``__metadata`` on every row, Edm.DateTime as
  ``/Date(<ms since 1970 UTC>)/``, Edm.Decimal as strings (``"1234.500"``), quantities in ``TO`` (tonnes)
  and money in ``INR`` named by ``BaseUnit``/``Currency`` fields, errors as ``{"error": {"code",
  "message": {"lang", "value"}}}``.
- Basic authentication or a bearer token; the CSRF handshake: a GET with ``X-CSRF-Token: Fetch`` answers
  with a token and a session cookie, and a POST without both is refused with 403 ``X-CSRF-Token:
  Required`` and "CSRF token validation failed".

Rows changed after the simulator's clock (``now``, the wall clock by default) are not served: the ERP does
not know the future. Faults come from the shared `FaultBook` (``status``, ``rate_limited``, ``slow``,
``truncated``, ``malformed``, ``wrong_types``, ``duplicates``, ``out_of_order``) plus this source's own:
``repeated_page`` (a page after the first repeats the rows of the one before, or with ``mode="loop"``
its ``__next`` points back at itself), ``orphan_route`` (a route to a plant the ERP has no master data
for), ``csrf_expired`` (the session's CSRF token is forgotten before a POST is checked) and
``commit_then_500`` (a POST is stored, then answered with a 500, as when the Gateway times out after the
backend committed).

What the hub sends back (``resources/outbound.py``): ``EquipmentDowntimeSet`` (a pump out of service from
SCADA, for plant maintenance) and ``PlanConfirmationSet`` (the production and shipment lines of an
approved supply plan). Both require the CSRF token and a ``Repeatability-Request-ID`` header (OData's
repeatable requests): the first POST with an id is stored and answered 201 with ``Repeatability-Result:
accepted``; the same id again answers 200 with the entity first stored (nothing new is stored), the same
id with another body a 422. Every POST that passed the CSRF check is recorded (``posts``).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import dataclasses
import hashlib
import json
import re
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators import faults
from simulators.erp_data import HISTORY_START, ErpNetwork
from simulators.http_server import SimulatorServer, serve_simulator

__all__ = [
    "FAULT_KINDS",
    "SERVICE_PATH",
    "ErpConfig",
    "ErpSimulator",
    "credentials_env",
    "main",
    "odata_date",
    "serve_erp",
]

SERVICE_PATH = "/sap/opu/odata/sap/ZSCM_SRV"
SESSION_COOKIE = "SAP_SESSIONID_ERP_100"
OWN_FAULTS = frozenset({"repeated_page", "orphan_route", "csrf_expired", "commit_then_500"})
REPEATABILITY_HEADER = "Repeatability-Request-ID"
FAULT_KINDS = faults.COMMON_FAULTS | OWN_FAULTS
ORPHAN_PLANT = "GU99"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def odata_date(value: datetime | date) -> str:
    """Edm.DateTime as SAP's JSON writes it: ``/Date(<milliseconds since 1970-01-01 UTC>)/``."""
    if not isinstance(value, datetime):
        value = datetime.combine(value, time(), tzinfo=UTC)
    return f"/Date({int((value - _EPOCH) / timedelta(milliseconds=1))})/"


@dataclass(frozen=True)
class ErpConfig:
    """A simulated ERP: its seed, page size and credentials (basic auth and a bearer token both work)."""

    seed: int = 7
    page_size: int = 100
    user: str = "PLANNER"
    password: str = "sim-erp-password"
    token: str = "sim-erp-bearer-token"
    now: Callable[[], datetime] | None = field(default=None, compare=False)

    def __repr__(self) -> str:
        return f"ErpConfig(seed={self.seed}, page_size={self.page_size}, user={self.user!r})"  # no secrets


class ODataError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


# ---------------------------------------------------------------------------------------------- $filter

_COMPARISON = re.compile(
    r"^\s*(?P<prop>[A-Za-z][A-Za-z0-9_]*)\s+(?P<op>eq|ne|ge|gt|le|lt)\s+"
    r"(?:datetime'(?P<dt>[0-9T:.\-]+)'|'(?P<text>(?:[^']|'')*)'|(?P<number>-?\d+(?:\.\d+)?)[mMdD]?)\s*$"
)
_OPS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "ge": lambda a, b: a >= b,
    "gt": lambda a, b: a > b,
    "le": lambda a, b: a <= b,
    "lt": lambda a, b: a < b,
}


def parse_filter(text: str, properties: dict[str, str]) -> Callable[[dict[str, Any]], bool]:
    """A predicate for ``$filter`` (comparisons joined by ``and``); properties maps name → Edm type."""
    tests = []
    for part in re.split(r"\s+and\s+", text.strip()):
        match = _COMPARISON.match(part)
        if match is None:
            raise ODataError(400, "/IWBEP/CM_MGW_RT/022", f"Invalid filter expression: '{part.strip()}'")
        prop, op = match["prop"], match["op"]
        kind = properties.get(prop)
        if kind is None:
            raise ODataError(400, "/IWBEP/CM_MGW_RT/021", f"Property '{prop}' not found")
        if match["dt"] is not None:
            if kind not in ("Edm.DateTime", "Edm.Date"):
                raise ODataError(400, "/IWBEP/CM_MGW_RT/022", f"Property '{prop}' is {kind}, not Edm.DateTime")
            try:
                literal: Any = datetime.fromisoformat(match["dt"]).replace(tzinfo=UTC)
            except ValueError:
                raise ODataError(400, "/IWBEP/CM_MGW_RT/022", f"Invalid datetime literal '{match['dt']}'") from None
        elif match["text"] is not None:
            literal = match["text"].replace("''", "'")
        else:
            literal = Decimal(match["number"])
        tests.append((prop, _OPS[op], literal))

    def predicate(row: dict[str, Any]) -> bool:
        for prop, compare, literal in tests:
            value = row[prop]
            if isinstance(value, date) and not isinstance(value, datetime):
                value = datetime.combine(value, time(), tzinfo=UTC)
            if value is None or not compare(value, literal):
                return False
        return True

    return predicate


# ---------------------------------------------------------------------------------------------- entity sets


@dataclass(frozen=True)
class EntitySet:
    name: str
    entity_type: str
    key: tuple[str, ...]
    properties: dict[str, str]  # name → Edm type


PLANT_SET = EntitySet(
    "PlantSet",
    "Plant",
    ("Plant",),
    {
        "Plant": "Edm.String",
        "PlantType": "Edm.String",
        "Name": "Edm.String",
        "City": "Edm.String",
        "Latitude": "Edm.Decimal",
        "Longitude": "Edm.Decimal",
        "ClinkerCapacity": "Edm.Decimal",
        "ProductionCost": "Edm.Decimal",
        "OpeningStock": "Edm.Decimal",
        "SafetyStock": "Edm.Decimal",
        "MaxStock": "Edm.Decimal",
        "BaseUnit": "Edm.String",
        "Currency": "Edm.String",
        "ChangedAt": "Edm.DateTime",
    },
)
ROUTE_SET = EntitySet(
    "RouteSet",
    "Route",
    ("RouteId",),
    {
        "RouteId": "Edm.String",
        "Origin": "Edm.String",
        "Destination": "Edm.String",
        "Mode": "Edm.String",
        "DistanceKm": "Edm.Decimal",
        "FreightCost": "Edm.Decimal",
        "HandlingCost": "Edm.Decimal",
        "VehicleCapacity": "Edm.Decimal",
        "CostPerTrip": "Edm.Decimal",
        "MinBatch": "Edm.Decimal",
        "BaseUnit": "Edm.String",
        "Currency": "Edm.String",
        "ChangedAt": "Edm.DateTime",
    },
)
DEMAND_SET = EntitySet(
    "DemandForecastSet",
    "DemandForecast",
    ("Plant", "PeriodStart", "Revision"),
    {
        "Plant": "Edm.String",
        "PeriodStart": "Edm.DateTime",
        "Revision": "Edm.Int32",
        "Demand": "Edm.Decimal",
        "BaseUnit": "Edm.String",
        "ChangedAt": "Edm.DateTime",
    },
)
INVENTORY_SET = EntitySet(
    "InventorySet",
    "Inventory",
    ("Plant", "StockDate"),
    {
        "Plant": "Edm.String",
        "StockDate": "Edm.DateTime",
        "Stock": "Edm.Decimal",
        "BaseUnit": "Edm.String",
        "ChangedAt": "Edm.DateTime",
    },
)
SUPPLY_PLAN_SET = EntitySet(
    "SupplyPlanSet",
    "SupplyPlan",
    ("PlanId", "RouteId", "PeriodStart"),
    {
        "PlanId": "Edm.String",
        "RouteId": "Edm.String",
        "PeriodStart": "Edm.DateTime",
        "Quantity": "Edm.Decimal",
        "Trips": "Edm.Int32",
        "BaseUnit": "Edm.String",
        "CreatedAt": "Edm.DateTime",
    },
)
EQUIPMENT_DOWNTIME_SET = EntitySet(
    "EquipmentDowntimeSet",
    "EquipmentDowntime",
    ("DowntimeId",),
    {
        "DowntimeId": "Edm.String",
        "Equipment": "Edm.String",
        "Station": "Edm.String",
        "StartedAt": "Edm.DateTime",
        "EndedAt": "Edm.DateTime",
        "DurationMin": "Edm.Decimal",
        "Ongoing": "Edm.Boolean",
        "Reason": "Edm.String",
        "CreatedAt": "Edm.DateTime",
    },
)
PLAN_CONFIRMATION_SET = EntitySet(
    "PlanConfirmationSet",
    "PlanConfirmation",
    ("ConfirmationId",),
    {
        "ConfirmationId": "Edm.String",
        "PlanId": "Edm.String",
        "Scenario": "Edm.String",
        "LineType": "Edm.String",
        "Plant": "Edm.String",
        "RouteId": "Edm.String",
        "PeriodStart": "Edm.DateTime",
        "Quantity": "Edm.Decimal",
        "BaseUnit": "Edm.String",
        "ApprovedBy": "Edm.String",
        "CreatedAt": "Edm.DateTime",
    },
)
OUTBOUND_SETS = {s.name: s for s in (EQUIPMENT_DOWNTIME_SET, PLAN_CONFIRMATION_SET)}
ENTITY_SETS = {
    s.name: s
    for s in (
        PLANT_SET,
        ROUTE_SET,
        DEMAND_SET,
        INVENTORY_SET,
        SUPPLY_PLAN_SET,
        EQUIPMENT_DOWNTIME_SET,
        PLAN_CONFIRMATION_SET,
    )
}


def _key_predicate(entity: EntitySet, row: dict[str, Any]) -> str:
    parts = []
    for name in entity.key:
        value = row[name]
        if isinstance(value, datetime | date):
            stamp = value if isinstance(value, datetime) else datetime.combine(value, time())
            shown = f"datetime'{stamp:%Y-%m-%dT%H:%M:%S}'"
        elif isinstance(value, int):
            shown = str(value)
        else:
            shown = "'" + str(value).replace("'", "''") + "'"
        parts.append(shown if len(entity.key) == 1 else f"{name}={shown}")
    return ",".join(parts)


def _render(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return odata_date(value)
    if isinstance(value, Decimal):
        return str(value)
    return value


# ---------------------------------------------------------------------------------------------- the service


class ErpSimulator:
    """The ZSCM_SRV OData service: entity sets from an `ErpNetwork`, CSRF sessions, faults."""

    def __init__(self, config: ErpConfig | None = None) -> None:
        self.config = config or ErpConfig()
        if self.config.page_size < 1:
            raise ValueError(f"page_size must be at least 1, got {self.config.page_size}")
        self.network = ErpNetwork(self.config.seed)
        self.faults = faults.FaultBook(OWN_FAULTS)
        self.stats = faults.RequestStats()
        self._lock = threading.Lock()
        self._sessions: dict[str, str] = {}  # session cookie → CSRF token
        self._plans: list[dict[str, Any]] = []
        self._created: dict[str, list[dict[str, Any]]] = {name: [] for name in OUTBOUND_SETS}
        self._repeatable: dict[str, dict[str, Any]] = {}  # Repeatability-Request-ID -> {"digest", "set", "row"}
        self.posts: list[dict[str, Any]] = []  # every POST past the CSRF check: set, request id, outcome, body
        self.pages_served: list[tuple[str, int]] = []  # (entity set, offset) of every page answered
        self.app = Starlette(
            routes=[
                Route(SERVICE_PATH + "/", self._service_document, methods=["GET"]),
                Route(SERVICE_PATH + "/{entity_set}", self._entity_set, methods=["GET", "POST"]),
                Route("/_sim/faults", faults.faults_endpoint(self.faults), methods=["GET", "POST", "DELETE"]),
            ]
        )

    # ------------------------------------------------------------------ test hooks

    def inject(self, kind: str, path: str = "*", count: int = 1, **params: Any) -> None:
        """Arm a fault for the next ``count`` requests whose path matches the glob ``path``."""
        self.faults.inject(kind, path, count, **params)

    def clear_faults(self) -> int:
        return self.faults.clear()

    def reset_stats(self) -> None:
        self.stats.reset()
        with self._lock:
            self.pages_served.clear()

    def requests_to(self, path: str) -> int:
        return self.stats.requests_to(path)

    def expire_csrf_tokens(self) -> None:
        """Forget every session's token, as a Gateway does when the session times out."""
        with self._lock:
            self._sessions.clear()

    @property
    def supply_plans(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(p) for p in self._plans]

    def created(self, entity_set: str) -> list[dict[str, Any]]:
        """The entities stored in an outbound entity set (typed rows), in the order they were stored."""
        with self._lock:
            return [dict(row) for row in self._created[entity_set]]

    def posts_with_id(self, request_id: str) -> list[dict[str, Any]]:
        """Every POST that carried this Repeatability-Request-ID (replays included)."""
        with self._lock:
            return [dict(p) for p in self.posts if p["request_id"] == request_id]

    def now(self) -> datetime:
        return (self.config.now or (lambda: datetime.now(UTC)))()

    # ------------------------------------------------------------------ the data, as typed rows

    def rows(self, entity_set: str, fault: faults.Fault | None = None) -> list[dict[str, Any]]:
        """Every entity of a set known at the simulator's clock, typed (datetime, Decimal), in key order."""
        now = self.now()
        if entity_set == "PlantSet":
            rows = [
                {
                    "Plant": m.plant.plant_id,
                    "PlantType": m.plant.kind,
                    "Name": m.plant.name,
                    "City": m.plant.city,
                    "Latitude": Decimal(str(m.plant.latitude)).quantize(Decimal("0.000001")),
                    "Longitude": Decimal(str(m.plant.longitude)).quantize(Decimal("0.000001")),
                    "ClinkerCapacity": m.clinker_capacity_t_per_month,
                    "ProductionCost": m.production_cost_inr_per_t,
                    "OpeningStock": m.opening_stock_t,
                    "SafetyStock": m.safety_stock_t,
                    "MaxStock": m.max_stock_t,
                    "BaseUnit": "TO",
                    "Currency": "INR",
                    "ChangedAt": m.changed_at,
                }
                for m in self.network.plants
            ]
        elif entity_set == "RouteSet":
            routes = list(self.network.routes)
            if fault is not None and fault.kind == "orphan_route":
                orphan = dataclasses.replace(routes[0], route_id=f"IU01-{ORPHAN_PLANT}-ROAD", destination=ORPHAN_PLANT)
                routes.append(orphan)
            rows = [
                {
                    "RouteId": r.route_id,
                    "Origin": r.origin,
                    "Destination": r.destination,
                    "Mode": r.mode,
                    "DistanceKm": r.distance_km,
                    "FreightCost": r.freight_cost_inr_per_t,
                    "HandlingCost": r.handling_cost_inr_per_t,
                    "VehicleCapacity": r.vehicle_capacity_t,
                    "CostPerTrip": r.cost_per_trip_inr,
                    "MinBatch": r.min_batch_t,
                    "BaseUnit": "TO",
                    "Currency": "INR",
                    "ChangedAt": r.changed_at,
                }
                for r in routes
            ]
            rows.sort(key=lambda r: r["RouteId"])
        elif entity_set in OUTBOUND_SETS:
            with self._lock:
                rows = [dict(row) for row in self._created[entity_set]]
        elif entity_set == "DemandForecastSet":
            rows = [
                {
                    "Plant": r.plant_id,
                    "PeriodStart": r.period_start,
                    "Revision": r.revision,
                    "Demand": r.demand_t,
                    "BaseUnit": "TO",
                    "ChangedAt": r.changed_at,
                }
                for r in self.network.demand_revisions(datetime.combine(HISTORY_START, time(), tzinfo=UTC), now)
            ]
        elif entity_set == "InventorySet":
            last = now.date() + timedelta(days=1)
            rows = [
                {
                    "Plant": s.plant_id,
                    "StockDate": s.stock_date,
                    "Stock": s.stock_t,
                    "BaseUnit": "TO",
                    "ChangedAt": s.changed_at,
                }
                for s in self.network.stock_levels(HISTORY_START, last)
                if s.changed_at <= now
            ]
        elif entity_set == "SupplyPlanSet":
            rows = self.supply_plans
        else:
            raise ODataError(404, "/IWBEP/CM_MGW_RT/020", f"Resource not found for the segment '{entity_set}'")
        return [r for r in rows if r.get("ChangedAt") is None or r["ChangedAt"] <= now]

    def _filtered(self, entity: EntitySet, params: dict[str, str], fault: faults.Fault | None) -> list[dict]:
        """The typed rows a query selects, before paging. Only the window of rows a filter can touch is
        built for the long sets (inventory per day), so a day's query does not build a year."""
        text = params.get("$filter")
        long_set = entity.name == "InventorySet" and text
        rows = self._inventory_window(text) if long_set else self.rows(entity.name, fault)
        if text:
            predicate = parse_filter(text, entity.properties)
            rows = [r for r in rows if predicate(r)]
        return rows

    def _inventory_window(self, text: str) -> list[dict[str, Any]]:
        # The day range the comparisons on StockDate or ChangedAt allow (stock is posted on its own day).
        low, high = HISTORY_START, self.now().date() + timedelta(days=1)
        for _prop, op, literal in re.findall(
            r"(StockDate|ChangedAt)\s+(ge|gt|eq|le|lt)\s+datetime'([0-9T:.\-]+)'", text
        ):
            try:
                day = datetime.fromisoformat(literal).date()
            except ValueError:
                continue
            if op in ("ge", "gt", "eq"):
                low = max(low, day)
            if op in ("le", "lt", "eq"):
                high = min(high, day + timedelta(days=1))
        now = self.now()
        return [
            {
                "Plant": s.plant_id,
                "StockDate": s.stock_date,
                "Stock": s.stock_t,
                "BaseUnit": "TO",
                "ChangedAt": s.changed_at,
            }
            for s in self.network.stock_levels(low, max(low, high))
            if s.changed_at <= now
        ]

    # ------------------------------------------------------------------ HTTP

    def _authorized(self, request: Request) -> bool:
        header = request.headers.get("authorization", "")
        scheme, _, credential = header.partition(" ")
        if scheme.lower() == "bearer":
            return secrets.compare_digest(credential.encode(), self.config.token.encode())
        if scheme.lower() == "basic":
            try:
                user, _, password = base64.b64decode(credential, validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            return secrets.compare_digest(user.encode(), self.config.user.encode()) and secrets.compare_digest(
                password.encode(), self.config.password.encode()
            )
        return False

    @staticmethod
    def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
        body = {"error": {"code": code, "message": {"lang": "en", "value": message}}}
        return JSONResponse(body, status, headers=headers)

    async def _handle(self, request: Request, produce: Callable[[faults.Fault | None], Response]) -> Response:
        path = request.url.path
        fault = self.faults.take(path)
        await faults.delay(fault)
        if fault is not None and fault.kind == "status":
            response: Response = faults.status_response(fault)
        elif not self._authorized(request):
            response = self._error(
                401, "/IWFND/CM_CONSUMER/101", "Logon failed: user, password or token not accepted",
                {"WWW-Authenticate": 'Basic realm="SAP NetWeaver Application Server [ERP/100]"'},
            )  # fmt: skip
        else:
            try:
                response = produce(fault)
            except ODataError as error:
                response = self._error(error.status, error.code, error.message)
            if request.method == "GET" and request.headers.get("x-csrf-token", "").lower() == "fetch":
                session = request.cookies.get(SESSION_COOKIE) or secrets.token_urlsafe(18)
                with self._lock:
                    token = self._sessions.setdefault(session, secrets.token_urlsafe(24))
                response.headers["x-csrf-token"] = token
                response.set_cookie(SESSION_COOKIE, session, path="/", httponly=True)
        self.stats.record(path, response.status_code)
        return response

    def _json(self, body: Any, fault: faults.Fault | None, status: int = 200) -> Response:
        content = faults.mangle_body(json.dumps(body, separators=(",", ":")).encode(), fault)
        return Response(content, status, media_type="application/json")

    async def _service_document(self, request: Request) -> Response:
        def produce(fault: faults.Fault | None) -> Response:
            return self._json({"d": {"EntitySets": sorted(ENTITY_SETS)}}, fault)

        return await self._handle(request, produce)

    async def _entity_set(self, request: Request) -> Response:
        name = request.path_params["entity_set"]
        if request.method == "POST":
            body = await request.body()
            return await self._handle(request, lambda fault: self._post(request, name, body, fault))
        return await self._handle(request, lambda fault: self._get(request, name, fault))

    def _get(self, request: Request, name: str, fault: faults.Fault | None) -> Response:
        entity = ENTITY_SETS.get(name)
        if entity is None:
            raise ODataError(404, "/IWBEP/CM_MGW_RT/020", f"Resource not found for the segment '{name}'")
        params = dict(request.query_params)
        if params.get("$format", "json") != "json":
            raise ODataError(400, "/IWBEP/CM_MGW_RT/004", "Only $format=json is served")
        rows = self._filtered(entity, params, fault)
        try:
            skip = int(params.get("$skip", 0))
            top = int(params["$top"]) if "$top" in params else None
            offset = int(params.get("$skiptoken", 0))
        except ValueError:
            raise ODataError(400, "/IWBEP/CM_MGW_RT/004", "$skip, $top and $skiptoken must be whole numbers") from None
        if min(skip, offset, top if top is not None else 0) < 0:
            raise ODataError(400, "/IWBEP/CM_MGW_RT/004", "$skip, $top and $skiptoken must not be negative")
        selected = rows[skip:] if top is None else rows[skip : skip + top]
        size = self.config.page_size
        served_offset = offset
        next_offset: int | None = offset + size if offset + size < len(selected) else None
        if fault is not None and fault.kind == "repeated_page" and offset == 0:
            # The first page has no page before it to repeat: the fault waits for the next request.
            self.faults.inject("repeated_page", fault.path, 1, **fault.params)
        elif fault is not None and fault.kind == "repeated_page":
            if fault.params.get("mode") == "loop":
                next_offset = offset  # __next points back at the page just served
            else:
                served_offset = max(0, offset - size)  # a stale page: the previous page's rows again
        page = selected[served_offset : served_offset + size]
        with self._lock:
            self.pages_served.append((name, served_offset))
        results = [self._entity(entity, request, row) for row in page]
        if fault is not None and fault.kind in faults.ROW_FAULTS:
            results = faults.row_fault(results, fault.kind, _wrong_value)
        envelope: dict[str, Any] = {"results": results}
        if params.get("$inlinecount") == "allpages":
            envelope["__count"] = str(len(selected))
        if next_offset is not None:
            query = {k: v for k, v in params.items() if k != "$skiptoken"}
            query["$skiptoken"] = str(next_offset)
            envelope["__next"] = f"{self._base(request)}/{name}?" + urlencode(query, safe="$',:")
        return self._json({"d": envelope}, fault)

    @staticmethod
    def _base(request: Request) -> str:
        return f"{request.url.scheme}://{request.url.netloc}{SERVICE_PATH}"

    def _entity(self, entity: EntitySet, request: Request, row: dict[str, Any]) -> dict[str, Any]:
        uri = f"{self._base(request)}/{entity.name}({_key_predicate(entity, row)})"
        rendered = {"__metadata": {"id": uri, "uri": uri, "type": f"ZSCM_SRV.{entity.entity_type}"}}
        rendered.update({name: _render(value) for name, value in row.items()})
        return rendered

    def _post(self, request: Request, name: str, body: bytes, fault: faults.Fault | None) -> Response:
        if fault is not None and fault.kind == "csrf_expired":
            self.expire_csrf_tokens()
        session = request.cookies.get(SESSION_COOKIE, "")
        sent = request.headers.get("x-csrf-token", "")
        with self._lock:
            expected = self._sessions.get(session)
        if expected is None or not secrets.compare_digest(sent.encode(), expected.encode()):
            return Response(
                b"CSRF token validation failed", 403, headers={"x-csrf-token": "Required"}, media_type="text/plain"
            )
        if name in OUTBOUND_SETS:
            return self._post_repeatable(request, OUTBOUND_SETS[name], body, fault)
        if name != "SupplyPlanSet":
            raise ODataError(405, "/IWBEP/CM_MGW_RT/051", f"Entity set '{name}' does not support creation")
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise ODataError(400, "/IWBEP/CM_MGW_RT/009", "Request body is not JSON") from None
        plan = self._plan(payload)
        with self._lock:
            if any(all(p[k] == plan[k] for k in SUPPLY_PLAN_SET.key) for p in self._plans):
                raise ODataError(409, "/IWBEP/CM_MGW_RT/025", "Supply plan line already exists")
            self._plans.append(plan)
        return self._json({"d": self._entity(SUPPLY_PLAN_SET, request, plan)}, fault, status=201)

    def _post_repeatable(
        self, request: Request, entity: EntitySet, body: bytes, fault: faults.Fault | None
    ) -> Response:
        """A create that is stored once per Repeatability-Request-ID, whatever the number of retries."""
        request_id = request.headers.get(REPEATABILITY_HEADER.lower(), "")
        if not 16 <= len(request_id) <= 255:
            raise ODataError(400, "ZSCM/010", f"Header {REPEATABILITY_HEADER} (16-255 characters) is required")
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise ODataError(400, "/IWBEP/CM_MGW_RT/009", "Request body is not JSON") from None
        row = self._outbound_row(entity, payload)
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        with self._lock:
            known = self._repeatable.get(request_id)
            if known is None:
                prefix = "DT" if entity is EQUIPMENT_DOWNTIME_SET else "PC"
                row[entity.key[0]] = f"{prefix}{len(self._created[entity.name]) + 1:08d}"
                self._created[entity.name].append(row)
                self._repeatable[request_id] = {"digest": digest, "set": entity.name, "row": row}
                outcome, status = "stored", 201
            elif known["digest"] != digest or known["set"] != entity.name:
                outcome, status, row = "refused", 422, known["row"]
            else:
                outcome, status, row = "replayed", 200, known["row"]
            self.posts.append(
                {
                    "set": entity.name,
                    "request_id": request_id,
                    "outcome": outcome,
                    "id": row[entity.key[0]],
                    "body": payload,
                }
            )
        if status == 422:
            raise ODataError(422, "ZSCM/011", f"{REPEATABILITY_HEADER} was already used with another request body")
        if fault is not None and fault.kind == "commit_then_500":
            raise ODataError(
                500, "/IWFND/CM_BEC/026", "Timeout while waiting for the backend (simulated, after commit)"
            )
        response = self._json({"d": self._entity(entity, request, row)}, fault, status=status)
        response.headers["Repeatability-Result"] = "accepted"
        return response

    def _outbound_row(self, entity: EntitySet, payload: Any) -> dict[str, Any]:
        """A typed row of an outbound entity set from a POST body, checked as the Gateway's DPC would."""
        if not isinstance(payload, dict):
            raise ODataError(400, "/IWBEP/CM_MGW_RT/009", "Request body must be one entity (a JSON object)")
        row: dict[str, Any] = {}
        for name, kind in entity.properties.items():
            if name in entity.key or name == "CreatedAt":
                continue
            value = payload.get(name)
            if value is None:
                if name in ("EndedAt", "RouteId", "Plant", "Reason"):
                    row[name] = None
                    continue
                raise ODataError(400, "/IWBEP/CM_MGW_RT/009", f"Property '{name}' is required ({kind})")
            if kind == "Edm.DateTime":
                match = re.fullmatch(r"/Date\((-?\d+)\)/", str(value))
                if match is None:
                    raise ODataError(400, "/IWBEP/CM_MGW_RT/009", f"Property '{name}' must be /Date(<ms>)/")
                row[name] = _EPOCH + timedelta(milliseconds=int(match[1]))
            elif kind == "Edm.Decimal":
                try:
                    row[name] = Decimal(str(value)) if isinstance(value, str) else None
                except InvalidOperation:
                    row[name] = None
                if row[name] is None or not row[name].is_finite():
                    raise ODataError(400, "/IWBEP/CM_MGW_RT/009", f"Property '{name}' must be an Edm.Decimal string")
            elif kind == "Edm.Boolean":
                if not isinstance(value, bool):
                    raise ODataError(400, "/IWBEP/CM_MGW_RT/009", f"Property '{name}' must be true or false")
                row[name] = value
            else:
                if not isinstance(value, str) or not value:
                    raise ODataError(400, "/IWBEP/CM_MGW_RT/009", f"Property '{name}' must be a non-empty Edm.String")
                row[name] = value
        if entity is PLAN_CONFIRMATION_SET:
            if row["LineType"] not in ("PRODUCTION", "SHIPMENT"):
                raise ODataError(400, "ZSCM/012", "LineType must be PRODUCTION or SHIPMENT")
            if row["BaseUnit"] != "TO":
                raise ODataError(400, "ZSCM/003", "Quantities are accepted in TO (tonnes) only")
            if row["LineType"] == "SHIPMENT" and row["RouteId"] not in {r.route_id for r in self.network.routes}:
                raise ODataError(400, "ZSCM/001", f"Route '{row['RouteId']}' does not exist")
        row["CreatedAt"] = self.now().replace(microsecond=0)
        return row

    def _plan(self, payload: Any) -> dict[str, Any]:
        """A supply plan line from a POST body, checked as the Gateway's DPC would."""
        if not isinstance(payload, dict):
            raise ODataError(400, "/IWBEP/CM_MGW_RT/009", "Request body must be one entity (a JSON object)")
        routes = {r.route_id for r in self.network.routes}

        def text(field_name: str) -> str:
            value = payload.get(field_name)
            if not isinstance(value, str) or not value:
                raise ODataError(400, "/IWBEP/CM_MGW_RT/009", f"Property '{field_name}' is required (Edm.String)")
            return value

        route_id = text("RouteId")
        if route_id not in routes:
            raise ODataError(400, "ZSCM/001", f"Route '{route_id}' does not exist")
        match = re.fullmatch(r"/Date\((-?\d+)\)/", str(payload.get("PeriodStart", "")))
        if match is None:
            raise ODataError(400, "/IWBEP/CM_MGW_RT/009", "Property 'PeriodStart' must be /Date(<ms>)/")
        period = _EPOCH + timedelta(milliseconds=int(match[1]))
        try:
            quantity = Decimal(text("Quantity"))
        except InvalidOperation:
            raise ODataError(400, "/IWBEP/CM_MGW_RT/009", "Property 'Quantity' must be an Edm.Decimal string") from None
        if not quantity.is_finite() or quantity <= 0:
            raise ODataError(400, "ZSCM/002", "Quantity must be positive")
        if text("BaseUnit") != "TO":
            raise ODataError(400, "ZSCM/003", "Quantities are accepted in TO (tonnes) only")
        trips = payload.get("Trips")
        if not isinstance(trips, int) or isinstance(trips, bool) or trips < 0:
            raise ODataError(400, "/IWBEP/CM_MGW_RT/009", "Property 'Trips' must be a whole number ≥ 0")
        return {
            "PlanId": text("PlanId"),
            "RouteId": route_id,
            "PeriodStart": period,
            "Quantity": quantity.quantize(Decimal("0.001")),
            "Trips": trips,
            "BaseUnit": "TO",
            "CreatedAt": self.now().replace(microsecond=0),
        }


def _wrong_value(name: str, value: Any) -> Any:
    """What ``wrong_types`` makes of a field: decimals and dates become text no reader can type."""
    if isinstance(value, str) and re.fullmatch(r"-?\d+\.\d+", value):
        return "n/a"
    if isinstance(value, str) and value.startswith("/Date("):
        return "/Date(yesterday)/"
    return None


# ---------------------------------------------------------------------------------------------- serving


def serve_erp(
    config: ErpConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> contextlib.AbstractContextManager[SimulatorServer]:
    """Serve an ERP simulator in a background thread for the duration of the ``with`` block."""
    return serve_simulator(ErpSimulator(config or ErpConfig()), host=host, port=port)


def credentials_env(url: str, config: ErpConfig, sql_url: str | None = None) -> dict[str, str]:
    """Environment variables the hub's ERP resources read to reach a simulator at ``url``."""
    env = {
        "ERP_ODATA_BASE_URL": url + SERVICE_PATH,
        "ERP_ODATA_USER": config.user,
        "ERP_ODATA_PASSWORD": config.password,
    }
    if sql_url is not None:
        env["ERP_SQL_URL"] = sql_url
    return env


@contextlib.contextmanager
def _serving(args: argparse.Namespace) -> Iterator[tuple[SimulatorServer, str]]:
    from simulators.erp_sql import seed_database

    path = Path(args.sql_file).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    sql_url = f"sqlite:///{path}"
    seeded = seed_database(sql_url, seed=args.seed, replace=True)
    config = ErpConfig(seed=args.seed, page_size=args.page_size)
    with serve_erp(config, host=args.host, port=args.port) as server:
        print(f"ERP SQL database: {path} ({', '.join(f'{n} {t}' for t, n in seeded.items())})", flush=True)
        yield server, sql_url


def main(argv: list[str] | None = None) -> int:
    """``ihub simulate erp``: serve the OData service and seed the SQL database until interrupted."""
    import time

    from orchestration.settings import data_dir

    parser = argparse.ArgumentParser(
        prog="ihub simulate erp",
        description="The ERP: an OData V2 service (ZSCM_SRV: plants, routes, demand, inventory, supply plan "
        "upload) and a SQL database (production capacity, maintenance shutdowns) seeded as a SQLite file.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8711)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--page-size", type=int, default=100, help="rows per OData page (server-side paging)")
    parser.add_argument("--sql-file", default=str(data_dir() / "erp" / "erp.sqlite"), help="SQLite file to seed")
    args = parser.parse_args(argv)
    with _serving(args) as (server, sql_url):
        print(f"ERP OData service on {server.url}{SERVICE_PATH}/", flush=True)
        print("Export these for the hub (basic auth; ERP_ODATA_TOKEN works instead of user and password):")
        for key, value in credentials_env(server.url, server.config, sql_url).items():
            print(f"  export {key}={value}", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0
