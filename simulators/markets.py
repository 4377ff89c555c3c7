"""Markets simulator: electricity time-of-use tariffs and public holidays over REST JSON, API key.

Serves, from a Starlette app on loopback:

- ``GET /api/v1/tariffs``: every published version of the time-of-use tariff for a 12–24 kV customer
  (shared/DOMAIN.md): energy rates on-peak and off-peak, the fuel adjustment (Ft) on every unit, the
  demand charge per kW of maximum 15-minute demand, the on-peak hours in local time (Asia/Bangkok), and
  the validity period each version applies to (``valid_to`` empty: until further notice). Times carry
  the local offset (+07:00), as a Thai publisher would write them.
- ``GET /api/v1/holidays``: public holidays per year (local calendar dates); ``?year=`` narrows it.

Every request needs the ``X-API-Key`` header. The data are fixed (a deterministic catalogue, no clock):
the same request always gets the same answer. Faults are armed with ``inject()`` (or ``POST /_sim/faults``):
``status`` (any 4xx/5xx, with ``retry_after`` seconds for a 429), ``slow``, ``truncated`` and
``malformed`` bodies, the row faults ``wrong_types`` (the first row's numbers and dates become text),
``duplicates`` (the first row sent twice) and ``out_of_order`` (rows reversed), and this source's own
bad data, ``overlapping_tariff``: the tariff list gains a revision whose validity overlaps the current
version's, as a publisher correcting a tariff without closing the old one would send.
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import json
import secrets
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.http_server import SimulatorServer, serve_simulator

__all__ = [
    "FAULT_KINDS",
    "HOLIDAYS",
    "OVERLAPPING_TARIFF",
    "TARIFFS",
    "MarketsConfig",
    "MarketsSimulator",
    "credentials_env",
    "serve_markets",
]

# Row faults act on the list in the answer (tariffs or holidays); overlapping_tariff is this source's own.
ROW_FAULTS = frozenset({"wrong_types", "duplicates", "out_of_order"})
FAULT_KINDS = frozenset({"status", "slow", "truncated", "malformed", "overlapping_tariff"}) | ROW_FAULTS

# Two published versions: the newer takes effect at 00:00 local on 1 May 2026 (17:00 UTC on 30 April).
TARIFFS: tuple[dict[str, Any], ...] = (
    {
        "tariff_id": "PEA-TOU-4.2-2025-09",
        "name": "TOU 12-24 kV, September 2025 revision",
        "published_on": "2025-08-15",
        "valid_from": "2025-09-01T00:00:00+07:00",
        "valid_to": "2026-05-01T00:00:00+07:00",
        "on_peak_start_local": "09:00",
        "on_peak_end_local": "22:00",
        "energy_on_peak_thb_per_kwh": 4.1025,
        "energy_off_peak_thb_per_kwh": 2.5849,
        "ft_thb_per_kwh": 0.1972,
        "demand_charge_thb_per_kw": 132.93,
    },
    {
        "tariff_id": "PEA-TOU-4.2-2026-05",
        "name": "TOU 12-24 kV, May 2026 revision",
        "published_on": "2026-04-10",
        "valid_from": "2026-05-01T00:00:00+07:00",
        "valid_to": None,
        "on_peak_start_local": "09:00",
        "on_peak_end_local": "22:00",
        "energy_on_peak_thb_per_kwh": 4.1839,
        "energy_off_peak_thb_per_kwh": 2.6037,
        "ft_thb_per_kwh": 0.1600,
        "demand_charge_thb_per_kw": 133.00,
    },
)

# The bad revision ``overlapping_tariff`` adds: valid from 1 June 2026 while the May version is still open.
OVERLAPPING_TARIFF: dict[str, Any] = {
    "tariff_id": "PEA-TOU-4.2-2026-06",
    "name": "TOU 12-24 kV, June 2026 correction",
    "published_on": "2026-05-20",
    "valid_from": "2026-06-01T00:00:00+07:00",
    "valid_to": None,
    "on_peak_start_local": "09:00",
    "on_peak_end_local": "22:00",
    "energy_on_peak_thb_per_kwh": 4.2500,
    "energy_off_peak_thb_per_kwh": 2.6500,
    "ft_thb_per_kwh": 0.1600,
    "demand_charge_thb_per_kw": 133.00,
}

# Thai public holidays as the simulated publisher lists them (local dates; lunar ones as announced).
HOLIDAYS: dict[int, tuple[tuple[str, str], ...]] = {
    2026: (
        ("2026-01-01", "New Year's Day"),
        ("2026-03-03", "Makha Bucha Day"),
        ("2026-04-06", "Chakri Memorial Day"),
        ("2026-04-13", "Songkran Festival"),
        ("2026-04-14", "Songkran Festival"),
        ("2026-04-15", "Songkran Festival"),
        ("2026-05-01", "National Labour Day"),
        ("2026-05-04", "Coronation Day"),
        ("2026-06-01", "Visakha Bucha Day (substitution)"),
        ("2026-06-03", "Queen Suthida's Birthday"),
        ("2026-07-28", "King Vajiralongkorn's Birthday"),
        ("2026-07-29", "Asarnha Bucha Day"),
        ("2026-08-12", "Mother's Day"),
        ("2026-10-13", "King Bhumibol Memorial Day"),
        ("2026-10-23", "Chulalongkorn Day"),
        ("2026-12-07", "Father's Day (substitution)"),
        ("2026-12-10", "Constitution Day"),
        ("2026-12-31", "New Year's Eve"),
    ),
    2027: (
        ("2027-01-01", "New Year's Day"),
        ("2027-04-06", "Chakri Memorial Day"),
        ("2027-04-13", "Songkran Festival"),
        ("2027-04-14", "Songkran Festival"),
        ("2027-04-15", "Songkran Festival"),
        ("2027-05-01", "National Labour Day"),
        ("2027-05-04", "Coronation Day"),
        ("2027-06-03", "Queen Suthida's Birthday"),
        ("2027-07-28", "King Vajiralongkorn's Birthday"),
        ("2027-08-12", "Mother's Day"),
        ("2027-10-13", "King Bhumibol Memorial Day"),
        ("2027-10-23", "Chulalongkorn Day"),
        ("2027-12-05", "Father's Day"),
        ("2027-12-10", "Constitution Day"),
        ("2027-12-31", "New Year's Eve"),
    ),
}


@dataclass(frozen=True)
class MarketsConfig:
    """Credentials of a simulated markets API."""

    api_key: str = "sim-markets-key"

    def __repr__(self) -> str:
        return "MarketsConfig()"  # the key stays out of logs and test reports


@dataclass
class _Fault:
    kind: str
    path: str
    remaining: int
    params: dict[str, Any] = field(default_factory=dict)


class MarketsSimulator:
    """The markets API: tariffs and holidays, with faults armed by ``inject``."""

    def __init__(self, config: MarketsConfig | None = None) -> None:
        self.config = config or MarketsConfig()
        self._lock = threading.Lock()
        self._faults: list[_Fault] = []
        self._stats: Counter[tuple[str, int]] = Counter()
        self.app = self._build_app()

    # ------------------------------------------------------------------ data

    @staticmethod
    def tariffs() -> list[dict[str, Any]]:
        """The published tariff versions, as served (without faults)."""
        return [dict(t) for t in TARIFFS]

    @staticmethod
    def holidays(year: int | None = None) -> list[dict[str, Any]]:
        """Public holidays (date, name), all published years or one."""
        years = sorted(HOLIDAYS) if year is None else [year]
        return [{"date": d, "name": n} for y in years for d, n in HOLIDAYS.get(y, ())]

    # ------------------------------------------------------------------ faults and stats

    def inject(self, kind: str, path: str = "*", count: int = 1, **params: Any) -> None:
        """Arm a fault for the next ``count`` requests whose path matches the fnmatch glob ``path``."""
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(FAULT_KINDS)}")
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"fault count must be a positive integer, got {count!r}")
        if kind == "status":
            status = params.get("status")
            if not isinstance(status, int) or not 400 <= status <= 599:
                raise ValueError(f"status fault needs 'status' between 400 and 599, got {status!r}")
        if kind == "slow" and not (isinstance(params.get("delay_s"), int | float) and params["delay_s"] > 0):
            raise ValueError(f"slow fault needs a positive 'delay_s', got {params.get('delay_s')!r}")
        with self._lock:
            self._faults.append(_Fault(kind, path, count, dict(params)))

    def clear_faults(self) -> int:
        """Disarm every fault; returns how many were still armed."""
        with self._lock:
            n = len(self._faults)
            self._faults.clear()
        return n

    def _take_fault(self, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fnmatch.fnmatchcase(path, fault.path):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    @property
    def stats(self) -> dict[tuple[str, int], int]:
        """Requests served, by (path, HTTP status)."""
        with self._lock:
            return dict(self._stats)

    def requests_to(self, path: str) -> int:
        """Requests served for one path, whatever their status."""
        return sum(n for (p, _), n in self.stats.items() if p == path)

    def reset_stats(self) -> None:
        with self._lock:
            self._stats.clear()

    # ------------------------------------------------------------------ HTTP

    def _build_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/api/v1/tariffs", self._tariffs_ep, methods=["GET"]),
                Route("/api/v1/holidays", self._holidays_ep, methods=["GET"]),
                Route("/_sim/faults", self._sim_faults, methods=["POST", "DELETE"]),
            ]
        )

    async def _serve(self, request: Request, produce) -> Response:
        path = request.url.path
        fault = self._take_fault(path)
        if fault is not None and fault.kind == "slow":
            await asyncio.sleep(float(fault.params["delay_s"]))
        key = request.headers.get("x-api-key", "")
        if fault is not None and fault.kind == "status":
            status = int(fault.params["status"])
            headers = {}
            if fault.params.get("retry_after") is not None:
                headers["Retry-After"] = str(fault.params["retry_after"])
            response: Response = JSONResponse(
                {"error": "injected_fault", "detail": f"simulated HTTP {status}"}, status, headers=headers
            )
        elif not secrets.compare_digest(key.encode(), self.config.api_key.encode()):
            response = JSONResponse({"error": "invalid_api_key", "detail": "missing or wrong X-API-Key header"}, 401)
        else:
            try:
                body = produce(request, fault)
            except ValueError as exc:
                response = JSONResponse({"error": "bad_request", "detail": str(exc)}, 400)
            else:
                if fault is not None and fault.kind in ROW_FAULTS:
                    body = {name: _row_fault(rows, fault.kind) for name, rows in body.items()}
                content = json.dumps(body, separators=(",", ":")).encode()
                if fault is not None and fault.kind == "truncated":
                    content = content[: len(content) // 2]
                elif fault is not None and fault.kind == "malformed":
                    content = b"<html><body>502 Bad Gateway</body></html>" + content[:20]
                response = Response(content, media_type="application/json")
        with self._lock:
            self._stats[(path, response.status_code)] += 1
        return response

    async def _tariffs_ep(self, request: Request) -> Response:
        def produce(_: Request, fault: _Fault | None) -> dict[str, Any]:
            tariffs = self.tariffs()
            if fault is not None and fault.kind == "overlapping_tariff":
                tariffs.append(dict(OVERLAPPING_TARIFF))
            return {"tariffs": tariffs}

        return await self._serve(request, produce)

    async def _holidays_ep(self, request: Request) -> Response:
        def produce(req: Request, _: _Fault | None) -> dict[str, Any]:
            year = req.query_params.get("year")
            if year is not None and not year.isdigit():
                raise ValueError(f"year must be a number such as 2026, got {year!r}")
            return {"holidays": self.holidays(int(year) if year else None)}

        return await self._serve(request, produce)

    async def _sim_faults(self, request: Request) -> Response:
        host = request.client.host if request.client else ""
        if host not in ("127.0.0.1", "::1", "testclient"):
            return JSONResponse({"error": "forbidden", "detail": "/_sim is served to loopback only"}, 403)
        if request.method == "DELETE":
            return JSONResponse({"cleared": self.clear_faults()})
        try:
            spec = dict(json.loads(await request.body()))
            self.inject(spec.pop("kind", None), spec.pop("path", "*"), spec.pop("count", 1), **spec)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": "bad_request", "detail": str(exc)}, 400)
        return JSONResponse({"armed": True}, 201)


def _row_fault(rows: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    rows = [dict(r) for r in rows]
    if not rows:
        return rows
    if kind == "duplicates":
        return [rows[0], *rows]
    if kind == "out_of_order":
        return rows[::-1]
    first = rows[0]  # wrong_types
    for name, value in first.items():
        if isinstance(value, float):
            first[name] = "n/a"
        elif name == "date":
            first[name] = "tomorrow"
    return rows


def serve_markets(
    config: MarketsConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> contextlib.AbstractContextManager[SimulatorServer]:
    """Serve a markets simulator in a background thread for the duration of the ``with`` block."""
    return serve_simulator(MarketsSimulator(config or MarketsConfig()), host=host, port=port)


def credentials_env(url: str, config: MarketsConfig) -> dict[str, str]:
    """Environment variables a client needs to reach a simulator at ``url``."""
    return {"MARKETS_BASE_URL": url, "MARKETS_API_KEY": config.api_key}
