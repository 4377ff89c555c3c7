"""Billing simulator: the utility's customer billing system over REST JSON, with JWT sessions.

Serves, from a Starlette app on loopback:

- ``POST /auth/login`` (``{"username", "password"}``) and ``POST /auth/refresh`` (``{"refresh_token"}``):
  an HS256 JWT access token and a refresh token, with ``expires_in`` seconds. A refresh rotates the pair
  (the old refresh token is spent). Every API call needs ``Authorization: Bearer <access token>``; an
  expired, revoked or forged token gets a 401 with ``WWW-Authenticate: Bearer error="invalid_token"``.
- ``GET /api/v1/meter-readings?date_from=YYYY-MM-DD&date_to=YYYY-MM-DD&page=&page_size=``: the closing
  register of every customer meter for each UTC day in ``[date_from, date_to)`` (at most 92 days), paged.
  A day is served once it has closed.
- ``GET /api/v1/consumption/monthly?month=YYYY-MM&level=dma|customer&page=&page_size=``: billed consumption
  of a closed UTC month per customer, or per DMA (the sum of its customers), paged.
- ``GET /api/v1/customers?changed_since=<ISO instant>&cursor=&limit=``: customer records (with personal
  data: name, address, phone) changed after ``changed_since`` (all of them without it), ordered by change
  time, paged by an opaque ``cursor``; every answer carries ``as_of``, the instant the listing is complete
  up to, which is the ``changed_since`` of the next incremental call.
- ``POST /api/v1/anomaly-alerts`` with an ``Idempotency-Key`` header: an anomaly the hub found (a leak
  suspicion on a DMA, a stopped meter, reverse flow, a register rollover) becomes a billing work item. The
  key is stored with the alert: the same key again answers 200 with the alert first stored (header
  ``Idempotent-Replayed: true``) and stores nothing; the same key with another body is a 422; a new key is
  a 201 with a new ``alert_id``. ``GET`` lists the stored alerts. ``truncated`` and ``malformed`` break the
  answer after the alert is stored. Every POST that reached the handler is
  recorded (``alert_posts``) so tests can count what was sent and what was stored.

The customers and meters are DMAMA's (``simulators/dmama.py``, same seed and size): one customer per DMAMA
customer meter, inflow meters are not billed, and the closing register of a day is DMAMA's register of that
meter at 00:00 UTC the next day, so billed consumption can be set against DMA inflow. Customer records
change over time (a new phone, a new occupant, an address correction, a suspension), each at a
deterministic instant; a listing shows each customer as it is at the simulator's clock.

Faults come from the shared fault book (``simulators/faults.py``: ``status``, ``rate_limited``, ``slow``,
``truncated``, ``malformed``, ``wrong_types``, ``duplicates``, ``out_of_order``) plus this source's own:
``commit_then_500`` (an anomaly alert is stored, then the answer is a 500, as when a proxy times out after the
server committed), ``rollover`` (a 5-digit meter's register reads 99,678 one day and 00,123 the next: 445 m³
across the rollover), ``implausible_decrease`` (one day's register reads lower than the day before, mid-dial:
a misread, not a rollover), ``token_expired`` and ``token_revoked`` (the request's access token expires early,
or the whole session, refresh token included, is revoked). ``expire_tokens_after`` and
``revoke_sessions_after`` do the same after a number of further API requests, to hit a long backfill in the
middle.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import json
import math
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.dmama import DmamaConfig, DmamaSimulator, _uniform
from simulators.faults import (
    ROW_FAULTS,
    Fault,
    FaultBook,
    RequestStats,
    delay,
    faults_endpoint,
    loopback_only,
    mangle_body,
    row_fault,
    status_response,
)
from simulators.http_server import SimulatorServer, serve_simulator

__all__ = [
    "OWN_FAULTS",
    "BillingConfig",
    "BillingSimulator",
    "credentials_env",
    "main",
    "serve_billing",
]

OWN_FAULTS = frozenset({"rollover", "implausible_decrease", "token_expired", "token_revoked", "commit_then_500"})
READINGS_PATH = "/api/v1/meter-readings"
ALERTS_PATH = "/api/v1/anomaly-alerts"
ALERT_KINDS = frozenset({"leak_suspicion", "stopped_meter", "reverse_flow", "meter_rollover"})
MONTHLY_PATH = "/api/v1/consumption/monthly"
CUSTOMERS_PATH = "/api/v1/customers"
MAX_READING_DAYS = 92
MAX_PAGE_SIZE = 1000
DEFAULT_PAGE_SIZE = 500

# The bad register pair of the rollover fault: a 5-digit register turning over, 445 m³ consumed.
ROLLOVER_PREVIOUS_M3 = 99_678.0
ROLLOVER_CURRENT_M3 = 123.0
# How far the implausible decrease reads below the day before (a misread digit), m³.
DECREASE_M3 = 230.0

_S_CUSTOMER = 41  # hash streams of this simulator, clear of DMAMA's
_S_CHANGE = 42
_MAX_CHANGES = 64  # change events generated per customer (the first lands 20-200 days after the epoch)

_FIRST = (
    "Somchai", "Somsak", "Malee", "Suda", "Niran", "Pranee", "Anan", "Kanya", "Wichai", "Ratana",
    "Prasert", "Siriporn", "Kittisak", "Nittaya", "Chaiwat", "Wanida", "Surachai", "Porntip",
)  # fmt: skip
_LAST = (
    "Jaidee", "Srisuk", "Wongsawat", "Charoenporn", "Boonmee", "Saetang", "Thongdee", "Kaewmanee",
    "Rattanakorn", "Suwannarat", "Chaiyaporn", "Phromma", "Inthasorn", "Yodsuwan",
)  # fmt: skip
_STREETS = ("Moo", "Soi", "Thanon")
# What a change event changes, with its share of events.
_CHANGE_KINDS = ("phone", "occupant", "address", "status")
_CHANGE_SHARES = (0.4, 0.3, 0.2, 0.1)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _iso(dt: datetime) -> str:
    return dt.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class _ApiError(Exception):
    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.error, self.detail, self.headers = status, error, detail, headers or {}


def _invalid_token(detail: str, code: str) -> _ApiError:
    challenge = f'Bearer error="invalid_token", error_description="{detail}"'
    return _ApiError(401, code, detail, {"WWW-Authenticate": challenge})


@dataclass(frozen=True)
class BillingConfig:
    """Size, seed and credentials of a simulated billing system (size and seed as DMAMA's, so they agree)."""

    seed: int = 42
    dmas: int = 5
    meters_per_dma: int = 10
    username: str = "ihub-integration"
    password: str = "sim-billing-password"
    access_ttl_s: int = 900
    refresh_ttl_s: int = 86_400
    epoch: str = "2026-01-01T00:00:00Z"  # customer records change from here on

    def __post_init__(self) -> None:
        if self.access_ttl_s <= 0 or self.refresh_ttl_s <= 0:
            raise ValueError("BillingConfig token lifetimes must be positive seconds")

    def dmama(self) -> DmamaConfig:
        """The DMAMA whose customers and meters this billing system bills."""
        return DmamaConfig(seed=self.seed, dmas=self.dmas, meters_per_dma=self.meters_per_dma, epoch=self.epoch)

    def __repr__(self) -> str:
        # The password stays out of logs and test reports even though it is a simulator default.
        return f"BillingConfig(seed={self.seed}, dmas={self.dmas}, meters_per_dma={self.meters_per_dma})"


class BillingSimulator:
    """A deterministic billing system: ground truth as Python methods, the same data over HTTP via `.app`."""

    def __init__(self, config: BillingConfig | None = None, clock: Callable[[], datetime] | None = None) -> None:
        self.config = config or BillingConfig()
        self._clock = clock or (lambda: datetime.now(UTC))
        self.dmama = DmamaSimulator(self.config.dmama(), clock=self._now)
        self.faults = FaultBook(OWN_FAULTS)
        self.stats = RequestStats()
        self._lock = threading.Lock()
        self._signing_key = secrets.token_bytes(32)
        self._sessions: dict[str, dict[str, Any]] = {}  # session id -> {"refresh": jti, "revoked": bool}
        self._expired: set[str] = set()  # access-token ids expired early
        self._pending: list[list[Any]] = []  # [action, requests left] for expire/revoke after N requests
        self.logins = 0
        self.refreshes = 0
        self.last_changed_since: str | None = None  # what the last customers call asked for (tests read it)
        self._alerts: dict[str, dict[str, Any]] = {}  # idempotency key -> {"digest", "alert"}
        self.alert_posts: list[dict[str, Any]] = []  # every POST the alerts handler saw: key, outcome, id, body
        self._epoch = datetime.fromisoformat(self.config.epoch.replace("Z", "+00:00"))
        self._records: dict[tuple[int, int], dict[str, Any]] = {}
        self._build_customers()
        self.app = self._build_app()

    def _now(self) -> datetime:
        return self._clock().astimezone(UTC)

    # ------------------------------------------------------------------ customers and meters (DMAMA's)

    def _build_customers(self) -> None:
        rows = [m for dma_id in self.dmama.dma_ids() for m in self.dmama.meters(dma_id) if m["kind"] == "customer"]
        self._meters = rows
        n = len(rows)
        self._index = {m["meter_id"]: k for k, m in enumerate(rows)}
        keys = np.arange(n, dtype=np.int64)
        seed = self.config.seed
        # Change events: gaps of 20-200 days, each at a time of day of its own, kinds by share.
        gaps = 20.0 + 180.0 * _uniform(seed, _S_CHANGE, keys[:, None], np.arange(_MAX_CHANGES)[None, :], 1)
        # Whole seconds after the epoch: a change time is exactly what `updated_at` says.
        self._change_s = np.floor(np.cumsum(gaps, axis=1) * 86_400.0).astype(np.int64)
        kind_u = _uniform(seed, _S_CHANGE, keys[:, None], np.arange(_MAX_CHANGES)[None, :], 2)
        self._change_kind = np.searchsorted(np.cumsum(_CHANGE_SHARES), kind_u, side="right").clip(0, 3)

    def customer_id(self, meter_id: str) -> str:
        """The billing account of a customer meter: ``C-dddd-jjjj`` for meter ``M-dddd-jjjj``."""
        return "C-" + meter_id.removeprefix("M-")

    def meters(self) -> list[dict[str, Any]]:
        """The billed meters (DMAMA's customer meters), with their DMA, class and register size."""
        return [dict(m) for m in self._meters]

    def first_meter_with_digits(self, digits: int) -> str:
        """The first billed meter whose register has ``digits`` digits (KeyError if none)."""
        for m in self._meters:
            if m["register_digits"] == digits:
                return m["meter_id"]
        raise KeyError(f"no billed meter has a {digits}-digit register")

    def _versions_at(self, when: datetime) -> np.ndarray:
        """How many change events each customer has had by ``when``."""
        seconds = math.floor((when - self._epoch).total_seconds())
        return (self._change_s <= seconds).sum(axis=1)

    def _change_time(self, k: int, version: int) -> datetime:
        return self._epoch + timedelta(seconds=int(self._change_s[k, version - 1]))

    def customer(self, meter_id: str, when: datetime | None = None) -> dict[str, Any]:
        """A customer record as billing holds it at ``when`` (default: now), personal data included."""
        k = self._index[meter_id]
        version = int(self._versions_at(when or self._now())[k])
        return self._record(k, version)

    def _record(self, k: int, version: int) -> dict[str, Any]:
        """Customer ``k`` after ``version`` change events (built once, then served from the cache)."""
        cached = self._records.get((k, version))
        if cached is None:
            cached = self._records[(k, version)] = self._build_record(k, version)
        return dict(cached)

    def _build_record(self, k: int, version: int) -> dict[str, Any]:
        meter = self._meters[k]
        kinds = self._change_kind[k, :version].tolist()
        counts = {kind: sum(1 for x in kinds if _CHANGE_KINDS[x] == kind) for kind in _CHANGE_KINDS}
        occupant = counts["occupant"]
        phone_version = counts["phone"] + occupant
        address_version = counts["address"]
        seed = self.config.seed

        def pick(options: tuple[str, ...], *keys: int) -> str:
            return options[int(_uniform(seed, _S_CUSTOMER, k, *keys)[0] * len(options))]

        digits = int(_uniform(seed, _S_CUSTOMER, k, 10, phone_version)[0] * 1e8)
        phone = f"08{digits // 10_000_000 % 10 or 1}-{digits // 10_000 % 1000:03d}-{digits % 10_000:04d}"
        house = 1 + int(_uniform(seed, _S_CUSTOMER, k, 20, address_version)[0] * 250)
        moo = 1 + int(_uniform(seed, _S_CUSTOMER, k, 21, address_version)[0] * 12)
        dma = self.dmama.dma_details(meter["dma_id"])
        updated = (
            self._change_time(k, version)
            if version
            else datetime.combine(date.fromisoformat(meter["installed_on"]), datetime.min.time(), UTC)
        )
        return {
            "customer_id": self.customer_id(meter["meter_id"]),
            "meter_id": meter["meter_id"],
            "dma_id": meter["dma_id"],
            "name": f"{pick(_FIRST, 1, occupant)} {pick(_LAST, 2, occupant)}",
            "address": f"{house}/{moo % 7 + 1} {pick(_STREETS, 3, address_version)} {moo}, {dma['name']}",
            "phone": phone,
            "tariff_class": meter["customer_class"],
            "status": "suspended" if counts["status"] % 2 else "active",
            "connected_on": meter["installed_on"],
            "updated_at": _iso(updated),
        }

    def customers(self, changed_since: datetime | None = None, as_of: datetime | None = None) -> list[dict[str, Any]]:
        """Customers changed in ``(changed_since, as_of]`` (all customers without ``changed_since``), as the
        listing orders them: by change time, then customer id."""
        as_of = as_of or self._now()
        versions = self._versions_at(as_of)
        records = [self._record(k, int(v)) for k, v in enumerate(versions.tolist())]
        if changed_since is not None:
            since = _iso(changed_since)
            records = [r for r in records if r["updated_at"] > since]
        return sorted(records, key=lambda r: (r["updated_at"], r["customer_id"]))

    def changed_between(self, since: datetime, until: datetime) -> set[str]:
        """Customer ids with at least one change in ``(since, until]`` (ground truth for tests)."""
        return {r["customer_id"] for r in self.customers(since, until)}

    # ------------------------------------------------------------------ registers and consumption

    def closing_registers(self, day_from: date, day_to: date) -> list[dict[str, Any]]:
        """The closing register (at 24:00 UTC) of every billed meter for each day in ``[day_from, day_to)``
        that has closed, ordered by day then meter; DMAMA's register of the meter at that instant."""
        # Day D closes at 00:00 UTC on D + 1: the last closed day is always yesterday (UTC).
        day_to = min(day_to, self._now().date())
        if day_to <= day_from:
            return []
        by_meter: dict[str, list[float]] = {}
        start = datetime.combine(day_from + timedelta(days=1), datetime.min.time(), UTC)
        days = (day_to - day_from).days
        for meter in self._meters:
            values: list[float] = []
            chunk_start = start
            left = days
            while left > 0:
                span = min(left, 30)
                rows = self.dmama.meter_readings(
                    meter["meter_id"], chunk_start, chunk_start + timedelta(days=span - 1, hours=1)
                )
                values.extend(r["register_m3"] for r in rows if r["timestamp"].endswith("T00:00:00Z"))
                chunk_start += timedelta(days=span)
                left -= span
            by_meter[meter["meter_id"]] = values
        out = []
        for d in range(days):
            day = (day_from + timedelta(days=d)).isoformat()
            for meter in self._meters:
                out.append(
                    {
                        "meter_id": meter["meter_id"],
                        "customer_id": self.customer_id(meter["meter_id"]),
                        "dma_id": meter["dma_id"],
                        "reading_date": day,
                        "register_m3": by_meter[meter["meter_id"]][d],
                        "register_digits": meter["register_digits"],
                    }
                )
        return out

    def monthly(self, month: str, level: str) -> list[dict[str, Any]]:
        """Billed consumption of a closed UTC month (``YYYY-MM``) per customer or per DMA, in m³."""
        first = _month_start(month)
        following = (first.replace(day=28) + timedelta(days=4)).replace(day=1)
        if datetime.combine(following, datetime.min.time(), UTC) > self._now():
            raise _ApiError(409, "month_open", f"month {month} has not closed yet; bills are cut after it ends")
        if level not in ("dma", "customer"):
            raise _ApiError(400, "bad_request", f"level must be 'dma' or 'customer', got {level!r}")
        starts = self.dmama_registers_at(datetime.combine(first, datetime.min.time(), UTC))
        ends = self.dmama_registers_at(datetime.combine(following, datetime.min.time(), UTC))
        per_customer = []
        for meter in self._meters:
            modulus = 10.0 ** meter["register_digits"]
            used = round((ends[meter["meter_id"]] - starts[meter["meter_id"]]) % modulus, 3)
            per_customer.append(
                {
                    "month": month,
                    "level": "customer",
                    "dma_id": meter["dma_id"],
                    "customer_id": self.customer_id(meter["meter_id"]),
                    "tariff_class": meter["customer_class"],
                    "billed_m3": used,
                    "customers": 1,
                }
            )
        if level == "customer":
            return per_customer
        totals: dict[str, list[float]] = {}
        for row in per_customer:
            totals.setdefault(row["dma_id"], []).append(row["billed_m3"])
        return [
            {
                "month": month,
                "level": "dma",
                "dma_id": dma_id,
                "customer_id": None,
                "tariff_class": None,
                "billed_m3": round(math.fsum(values), 3),
                "customers": len(values),
            }
            for dma_id, values in sorted(totals.items())
        ]

    def dmama_registers_at(self, when: datetime) -> dict[str, float]:
        """DMAMA's register of every billed meter at a whole UTC hour."""
        return {
            m["meter_id"]: self.dmama.meter_readings(m["meter_id"], when, when + timedelta(seconds=1))[0]["register_m3"]
            for m in self._meters
        }

    # ------------------------------------------------------------------ faults, tokens, stats

    def inject(self, kind: str, path: str = "*", count: int = 1, **params: Any) -> None:
        """Arm a fault for the next ``count`` requests whose path matches the glob ``path``."""
        if kind in ("rollover", "implausible_decrease") and "date" in params:
            date.fromisoformat(str(params["date"]))  # refuse a bad date now, not in the middle of a request
        self.faults.inject(kind, path, count, **params)

    def clear_faults(self) -> int:
        with self._lock:
            self._pending.clear()
        return self.faults.clear()

    def reset_stats(self) -> None:
        """Forget request counts, logins and refreshes (tokens issued stay valid)."""
        self.stats.reset()
        with self._lock:
            self.logins = self.refreshes = 0

    def requests_to(self, path: str) -> int:
        return self.stats.requests_to(path)

    def expire_tokens_after(self, requests: int) -> None:
        """Every access token issued so far expires once ``requests`` more API calls have been served."""
        with self._lock:
            self._pending.append(["expire", requests])

    def revoke_sessions_after(self, requests: int) -> None:
        """Every session (access and refresh token) is revoked once ``requests`` more API calls were served."""
        with self._lock:
            self._pending.append(["revoke", requests])

    def _tick(self) -> None:
        """Count one served API call towards the pending expiries and revocations."""
        with self._lock:
            due = []
            for item in self._pending:
                if item[1] <= 0:
                    due.append(item)
                item[1] -= 1
            for item in due:
                self._pending.remove(item)
        for action, _ in due:
            if action == "expire":
                self._expire_all()
            else:
                self._revoke_all()

    def _expire_all(self) -> None:
        with self._lock:
            for session in self._sessions.values():
                self._expired.update(session["access"])

    def _revoke_all(self) -> None:
        with self._lock:
            for session in self._sessions.values():
                session["revoked"] = True

    def _sign(self, claims: dict[str, Any]) -> str:
        header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}, separators=(",", ":")).encode())
        payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
        signature = hmac.new(self._signing_key, f"{header}.{payload}".encode(), hashlib.sha256).digest()
        return f"{header}.{payload}.{_b64(signature)}"

    def _verify(self, token: str, kind: str) -> dict[str, Any]:
        parts = token.split(".")
        if len(parts) != 3:
            raise _invalid_token("malformed token", "invalid_token")
        expected = hmac.new(self._signing_key, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest()
        try:
            valid = hmac.compare_digest(expected, _unb64(parts[2]))
            claims = json.loads(_unb64(parts[1]))
        except (ValueError, TypeError):
            raise _invalid_token("malformed token", "invalid_token") from None
        if not valid or not isinstance(claims, dict) or claims.get("typ") != kind:
            raise _invalid_token("token signature or type is wrong", "invalid_token")
        with self._lock:
            session = self._sessions.get(claims.get("sid", ""))
            revoked = session is None or session["revoked"]
            early = claims.get("jti") in self._expired
            spent = kind == "refresh" and (session is None or session["refresh"] != claims.get("jti"))
        if revoked:
            raise _invalid_token("the session was revoked; log in again", "token_revoked")
        if spent:
            raise _invalid_token("refresh token already used", "invalid_token")
        if early or claims.get("exp", 0) <= self._now().timestamp():
            raise _invalid_token("the token expired", "token_expired")
        return claims

    def _issue(self, session_id: str) -> dict[str, Any]:
        now = int(self._now().timestamp())
        cfg = self.config
        access_id, refresh_id = secrets.token_hex(8), secrets.token_hex(8)
        with self._lock:
            session = self._sessions.setdefault(session_id, {"revoked": False, "access": set()})
            session["refresh"] = refresh_id
            session["access"].add(access_id)
        common = {"sub": cfg.username, "sid": session_id, "iat": now}
        return {
            "access_token": self._sign({**common, "typ": "access", "jti": access_id, "exp": now + cfg.access_ttl_s}),
            "refresh_token": self._sign(
                {**common, "typ": "refresh", "jti": refresh_id, "exp": now + cfg.refresh_ttl_s}
            ),
            "token_type": "Bearer",
            "expires_in": cfg.access_ttl_s,
            "refresh_expires_in": cfg.refresh_ttl_s,
        }

    def _bearer(self, request: Request, fault: Fault | None) -> dict[str, Any]:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise _ApiError(
                401, "unauthorized", "missing Authorization: Bearer <token>", {"WWW-Authenticate": "Bearer"}
            )
        claims = self._verify(token, "access")
        if fault is not None and fault.kind == "token_expired":
            with self._lock:
                self._expired.add(claims["jti"])
            raise _invalid_token("the token expired", "token_expired")
        if fault is not None and fault.kind == "token_revoked":
            with self._lock:
                self._sessions[claims["sid"]]["revoked"] = True
            raise _invalid_token("the session was revoked; log in again", "token_revoked")
        return claims

    # ------------------------------------------------------------------ HTTP

    def _build_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/auth/login", self._endpoint(self._login), methods=["POST"]),
                Route("/auth/refresh", self._endpoint(self._refresh), methods=["POST"]),
                Route(READINGS_PATH, self._endpoint(self._readings, api=True), methods=["GET"]),
                Route(MONTHLY_PATH, self._endpoint(self._monthly_ep, api=True), methods=["GET"]),
                Route(CUSTOMERS_PATH, self._endpoint(self._customers_ep, api=True), methods=["GET"]),
                Route(ALERTS_PATH, self._alerts_endpoint, methods=["GET", "POST"]),
                Route("/_sim/faults", faults_endpoint(self.faults), methods=["GET", "POST", "DELETE"]),
                Route("/_sim/tokens", self._sim_tokens, methods=["POST"]),
            ]
        )

    def _endpoint(self, produce: Callable[[Request, Fault | None], Any], api: bool = False) -> Callable:
        async def handle(request: Request) -> Response:
            path = request.url.path
            fault = self.faults.take(path)
            await delay(fault)
            if api:
                self._tick()
            try:
                if fault is not None and fault.kind == "status":
                    response: Response = status_response(fault)
                else:
                    body = await produce(request, fault)
                    if fault is not None and fault.kind in ROW_FAULTS and isinstance(body.get("items"), list):
                        body["items"] = row_fault(body["items"], fault.kind, _wrong_value)
                    content = mangle_body(json.dumps(body, separators=(",", ":")).encode(), fault)
                    response = Response(content, media_type="application/json")
            except _ApiError as exc:
                response = JSONResponse({"error": exc.error, "detail": exc.detail}, exc.status, headers=exc.headers)
            self.stats.record(path, response.status_code)
            return response

        return handle

    async def _json_body(self, request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body())
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise _ApiError(400, "bad_request", "expected a JSON object")
        return body

    async def _login(self, request: Request, fault: Fault | None) -> dict[str, Any]:
        body = await self._json_body(request)
        cfg = self.config
        user_ok = secrets.compare_digest(str(body.get("username", "")).encode(), cfg.username.encode())
        password_ok = secrets.compare_digest(str(body.get("password", "")).encode(), cfg.password.encode())
        if not (user_ok and password_ok):
            raise _ApiError(401, "invalid_credentials", "wrong username or password")
        with self._lock:
            self.logins += 1
        return self._issue(secrets.token_hex(8))

    async def _refresh(self, request: Request, fault: Fault | None) -> dict[str, Any]:
        body = await self._json_body(request)
        claims = self._verify(str(body.get("refresh_token", "")), "refresh")
        with self._lock:
            self.refreshes += 1
        return self._issue(claims["sid"])

    @staticmethod
    def _paging(request: Request) -> tuple[int, int]:
        try:
            page = int(request.query_params.get("page", "1"))
            size = int(request.query_params.get("page_size", str(DEFAULT_PAGE_SIZE)))
        except ValueError:
            raise _ApiError(400, "bad_request", "page and page_size must be whole numbers") from None
        if page < 1 or not 1 <= size <= MAX_PAGE_SIZE:
            raise _ApiError(400, "bad_request", f"page must be ≥ 1 and page_size 1..{MAX_PAGE_SIZE}")
        return page, size

    @staticmethod
    def _page(rows: list[dict[str, Any]], page: int, size: int) -> dict[str, Any]:
        items = rows[(page - 1) * size : page * size]
        more = page * size < len(rows)
        return {
            "items": items,
            "page": page,
            "page_size": size,
            "total": len(rows),
            "next_page": page + 1 if more else None,
        }

    async def _readings(self, request: Request, fault: Fault | None) -> dict[str, Any]:
        self._bearer(request, fault)
        page, size = self._paging(request)
        try:
            day_from = date.fromisoformat(request.query_params["date_from"])
            day_to = date.fromisoformat(request.query_params["date_to"])
        except (KeyError, ValueError):
            raise _ApiError(400, "bad_request", "date_from and date_to are required, as YYYY-MM-DD") from None
        if not 0 < (day_to - day_from).days <= MAX_READING_DAYS:
            raise _ApiError(400, "bad_request", f"date_to must be 1..{MAX_READING_DAYS} days after date_from")
        rows = self.closing_registers(day_from, day_to)
        if fault is not None and fault.kind in ("rollover", "implausible_decrease"):
            rows = _bad_registers(rows, fault, self)
        return self._page(rows, page, size)

    async def _monthly_ep(self, request: Request, fault: Fault | None) -> dict[str, Any]:
        self._bearer(request, fault)
        page, size = self._paging(request)
        month = request.query_params.get("month", "")
        try:
            _month_start(month)
        except ValueError:
            raise _ApiError(400, "bad_request", f"month must be YYYY-MM, got {month!r}") from None
        return self._page(self.monthly(month, request.query_params.get("level", "customer")), page, size)

    async def _customers_ep(self, request: Request, fault: Fault | None) -> dict[str, Any]:
        self._bearer(request, fault)
        try:
            limit = int(request.query_params.get("limit", str(DEFAULT_PAGE_SIZE)))
        except ValueError:
            raise _ApiError(400, "bad_request", "limit must be a whole number") from None
        if not 1 <= limit <= MAX_PAGE_SIZE:
            raise _ApiError(400, "bad_request", f"limit must be 1..{MAX_PAGE_SIZE}")
        cursor = request.query_params.get("cursor")
        if cursor:
            try:
                state = json.loads(_unb64(cursor))
                since = state["since"]
                as_of = datetime.fromisoformat(state["as_of"].replace("Z", "+00:00"))
                after = tuple(state["after"])
            except (ValueError, KeyError, TypeError):
                raise _ApiError(400, "bad_request", "cursor is not one this API issued") from None
        else:
            since = request.query_params.get("changed_since")
            as_of, after = self._now().replace(microsecond=0), ("", "")
            with self._lock:
                self.last_changed_since = since
        since_dt = None
        if since:
            try:
                since_dt = datetime.fromisoformat(since.replace("Z", "+00:00"))
            except ValueError:
                raise _ApiError(
                    400, "bad_request", f"changed_since must be an ISO 8601 instant, got {since!r}"
                ) from None
            if since_dt.tzinfo is None:
                raise _ApiError(400, "bad_request", "changed_since must carry a time zone (UTC, 'Z')")
        rows = [r for r in self.customers(since_dt, as_of) if (r["updated_at"], r["customer_id"]) > after]
        items = rows[:limit]
        following = None
        if len(rows) > limit:
            last = items[-1]
            state = {"since": since, "as_of": _iso(as_of), "after": [last["updated_at"], last["customer_id"]]}
            following = _b64(json.dumps(state, separators=(",", ":")).encode())
        return {"items": items, "next_cursor": following, "as_of": _iso(as_of)}

    # ------------------------------------------------------------------ anomaly alerts (outbound, idempotent)

    @property
    def alerts(self) -> list[dict[str, Any]]:
        """The alerts stored, in the order they were first stored."""
        with self._lock:
            return [dict(entry["alert"]) for entry in self._alerts.values()]

    def posts_with_key(self, key: str) -> list[dict[str, Any]]:
        """Every POST the alerts handler saw with this idempotency key (replays included)."""
        with self._lock:
            return [dict(p) for p in self.alert_posts if p["key"] == key]

    async def _alerts_endpoint(self, request: Request) -> Response:
        path = request.url.path
        fault = self.faults.take(path)
        await delay(fault)
        self._tick()
        try:
            if fault is not None and fault.kind == "status":
                response: Response = status_response(fault)
            else:
                self._bearer(request, fault)
                if request.method == "GET":
                    response = JSONResponse({"items": self.alerts})
                else:
                    response = self._post_alert(request, await request.body(), fault)
                    if fault is not None and fault.kind in ("truncated", "malformed") and response.status_code < 300:
                        # Stored, but the answer is broken on its way back: the client cannot tell it was.
                        content = mangle_body(bytes(response.body), fault)
                        response = Response(content, response.status_code, media_type="application/json")
        except _ApiError as exc:
            response = JSONResponse({"error": exc.error, "detail": exc.detail}, exc.status, headers=exc.headers)
        self.stats.record(path, response.status_code)
        return response

    def _post_alert(self, request: Request, body: bytes, fault: Fault | None) -> Response:
        key = request.headers.get("idempotency-key", "")
        if not 16 <= len(key) <= 255:
            raise _ApiError(
                400, "idempotency_key_required", "an Idempotency-Key header of 16-255 characters is required"
            )
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise _ApiError(400, "bad_request", "expected a JSON object")
        if payload.get("kind") not in ALERT_KINDS:
            raise _ApiError(
                422, "unknown_kind", f"kind must be one of {sorted(ALERT_KINDS)}, got {payload.get('kind')!r}"
            )
        subject = payload.get("meter_id") if payload["kind"] != "leak_suspicion" else payload.get("dma_id")
        if not isinstance(subject, str) or not subject:
            field_name = "dma_id" if payload["kind"] == "leak_suspicion" else "meter_id"
            raise _ApiError(422, "missing_subject", f"a {payload['kind']} alert needs {field_name}")
        digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
        with self._lock:
            known = self._alerts.get(key)
            if known is None:
                alert = {
                    "alert_id": f"ALR-{len(self._alerts) + 1:06d}",
                    **payload,
                    "received_at": _iso(self._now()),
                    "status": "open",
                }
                self._alerts[key] = {"digest": digest, "alert": alert}
                outcome, status = "stored", 201
            elif known["digest"] != digest:
                outcome, status, alert = "refused", 422, known["alert"]
            else:
                outcome, status, alert = "replayed", 200, known["alert"]
            self.alert_posts.append({"key": key, "outcome": outcome, "alert_id": alert["alert_id"], "body": payload})
        if status == 422:
            raise _ApiError(422, "idempotency_key_reused", "this Idempotency-Key was used with another body")
        if fault is not None and fault.kind == "commit_then_500":
            return JSONResponse({"error": "internal_error", "detail": "simulated 500 after commit"}, 500)
        headers = {"Idempotent-Replayed": "true"} if outcome == "replayed" else {}
        return JSONResponse(alert, status, headers=headers)

    async def _sim_tokens(self, request: Request) -> Response:
        if (denied := loopback_only(request)) is not None:
            return denied
        try:
            spec = await self._json_body(request)
            action, after = spec.get("action"), int(spec.get("after_requests", 0))
            if action not in ("expire", "revoke"):
                raise _ApiError(400, "bad_request", "action must be 'expire' or 'revoke'")
        except (_ApiError, ValueError, TypeError) as exc:
            return JSONResponse({"error": "bad_request", "detail": str(exc)}, 400)
        (self.expire_tokens_after if action == "expire" else self.revoke_sessions_after)(after)
        return JSONResponse({"armed": True}, 201)


def _month_start(month: str) -> date:
    if len(month) != 7 or month[4] != "-":
        raise ValueError(month)
    return date(int(month[:4]), int(month[5:]), 1)


def _wrong_value(name: str, value: Any) -> Any:
    """How the wrong_types fault spoils non-numeric fields: dates and instants become words."""
    if name in ("reading_date", "updated_at", "connected_on"):
        return "yesterday"
    return None


def _bad_registers(rows: list[dict[str, Any]], fault: Fault, sim: BillingSimulator) -> list[dict[str, Any]]:
    """The answer's rows with one meter's registers spoilt as the fault says (the meter's other days follow
    on from the spoilt ones, as a real register would)."""
    rows = [dict(r) for r in rows]
    meter_id = fault.params.get("meter_id") or sim.first_meter_with_digits(5)
    mine = sorted((r for r in rows if r["meter_id"] == meter_id), key=lambda r: r["reading_date"])
    if len(mine) < 2:
        return rows
    day = str(fault.params.get("date") or mine[1]["reading_date"])
    at = next((i for i, r in enumerate(mine) if r["reading_date"] == day), None)
    if at is None or at == 0:
        return rows
    true = [r["register_m3"] for r in mine]
    modulus = 10.0 ** mine[at]["register_digits"]
    if fault.kind == "rollover":
        previous = float(fault.params.get("previous_m3", ROLLOVER_PREVIOUS_M3))
        current = float(fault.params.get("current_m3", ROLLOVER_CURRENT_M3))
        for i, row in enumerate(mine):
            if i < at:  # the days before run up to `previous` with their real increments
                row["register_m3"] = round((previous - (true[at - 1] - true[i])) % modulus, 3)
            else:  # from the rollover day on, the register continues from `current`
                row["register_m3"] = round((current + (true[i] - true[at])) % modulus, 3)
    else:
        drop = float(fault.params.get("drop_m3", DECREASE_M3))
        previous = true[at - 1]
        mine[at]["register_m3"] = round(previous - drop if previous >= drop else previous / 2, 3)
    return rows


def serve_billing(
    config: BillingConfig | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    clock: Callable[[], datetime] | None = None,
) -> contextlib.AbstractContextManager[SimulatorServer]:
    """Serve a billing simulator in a background thread for the duration of the ``with`` block."""
    return serve_simulator(BillingSimulator(config or BillingConfig(), clock=clock), host=host, port=port)


def credentials_env(url: str, config: BillingConfig) -> dict[str, str]:
    """Environment variables a client needs to reach a simulator at ``url``."""
    return {"BILLING_BASE_URL": url, "BILLING_USERNAME": config.username, "BILLING_PASSWORD": config.password}


def main(argv: list[str] | None = None) -> None:
    """``ihub simulate billing``: serve the billing simulator in the foreground until interrupted."""
    import argparse

    import uvicorn

    from simulators.http_server import bind_socket, quiet_config

    parser = argparse.ArgumentParser(prog="ihub simulate billing", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8705)
    parser.add_argument("--dmas", type=int, default=5, help="as DMAMA's --dmas, so both bill the same meters")
    parser.add_argument("--meters-per-dma", type=int, default=10)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    config = BillingConfig(seed=args.seed, dmas=args.dmas, meters_per_dma=args.meters_per_dma)
    simulator = BillingSimulator(config)
    sock = bind_socket(args.host, args.port)
    url = f"http://{args.host}:{sock.getsockname()[1]}"
    env = " ".join(f"{k}={v}" for k, v in credentials_env(url, config).items())
    print(f"Billing simulator ({len(simulator.meters())} billed meters, seed {args.seed}) on {url}  {env}", flush=True)
    uvicorn.Server(quiet_config(simulator.app)).run(sockets=[sock])
