"""Markets simulator: tariffs, holidays, fuel prices, exchange rates and cement prices over REST JSON, API key.

Serves, from a Starlette app on loopback:

- ``GET /api/v1/tariffs``: every published version of the time-of-use tariff for a 12–24 kV customer
  (shared/DOMAIN.md): energy rates on-peak and off-peak, the fuel adjustment (Ft) on every unit, the
  demand charge per kW of maximum 15-minute demand, the on-peak hours in local time (Asia/Bangkok), and
  the validity period each version applies to (``valid_to`` empty: until further notice). Times carry
  the local offset (+07:00), as a Thai publisher would write them.
- ``GET /api/v1/holidays``: public holidays per year (local calendar dates); ``?year=`` narrows it.
- ``GET /api/v1/fuel-prices?from=YYYY-MM-DD&to=YYYY-MM-DD``: one row per week (the Monday it starts) with
  the week's diesel price (USD per litre) and Brent crude (USD per barrel), published on the Monday.
- ``GET /api/v1/fx-rates?from=&to=``: reference rates USD→THB and USD→INR, fixed in Bangkok on business
  days only (no rate on Saturdays, Sundays or the public holidays above), each with the publisher's date.
- ``GET /api/v1/cement-prices?from=&to=``: the dealer price of a 50 kg bag of cement (OPC 53 and PPC) in
  every city of the plant network (``simulators/plant_network.py``), in INR, surveyed every day.

``from`` is inclusive and ``to`` exclusive (local calendar dates). Prices are a deterministic walk from
the seed (Brent mean-reverting around 75 USD/bbl within 60–90, diesel following it within 0.90–1.20
USD/l, USD/THB within 32–37, USD/INR within 82–88), so the same request always gets the same answer.
Nothing is served before it is published: ``MarketsSimulator.now`` (real time unless set) is the clock.

Every request needs the ``X-API-Key`` header. Faults come from the shared fault book
(``simulators/faults.py``, armed with ``inject()`` or ``POST /_sim/faults``): ``status`` (any 4xx/5xx,
``retry_after`` for a 429), ``rate_limited`` (429 with Retry-After on a share of requests), ``slow``,
``truncated`` and ``malformed`` bodies, the row faults ``wrong_types`` (the first row's numbers and dates
become text), ``duplicates`` and ``out_of_order``, and this source's own bad data:

- ``overlapping_tariff``: the tariff list gains a revision whose validity overlaps the current version's,
  as a publisher correcting a tariff without closing the old one would send;
- ``fx_outlier``: the first exchange rate of the answer (or of the ``quote`` currency given) is 100 times
  too large (a rate quoted per 100 units slipped into a per-unit feed);
- ``negative_price``: the first row's prices (diesel and Brent, or a cement bag) are sent negative.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cached_property
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.faults import (
    Fault,
    FaultBook,
    RequestStats,
    delay,
    faults_endpoint,
    mangle_body,
    row_fault,
    status_response,
)
from simulators.http_server import SimulatorServer, serve_simulator
from simulators.plant_network import PLANTS

__all__ = [
    "CEMENT_GRADES",
    "CITIES",
    "FAULT_KINDS",
    "FX_QUOTES",
    "HOLIDAYS",
    "OVERLAPPING_TARIFF",
    "OWN_FAULTS",
    "TARIFFS",
    "MarketsConfig",
    "MarketsSimulator",
    "credentials_env",
    "main",
    "serve_markets",
]

OWN_FAULTS = frozenset({"overlapping_tariff", "fx_outlier", "negative_price"})
FAULT_KINDS = FaultBook(OWN_FAULTS).kinds

TARIFFS_PATH = "/api/v1/tariffs"
HOLIDAYS_PATH = "/api/v1/holidays"
FUEL_PATH = "/api/v1/fuel-prices"
FX_PATH = "/api/v1/fx-rates"
CEMENT_PATH = "/api/v1/cement-prices"

LOCAL_OFFSET = "+07:00"  # the publisher writes Bangkok times
# The walk starts here (a Monday); nothing is published before it.
SERIES_START = date(2024, 1, 1)
SERIES_DAYS = 366 * 13
# Longest range one request may ask for, days: a backfill pages through longer ones.
MAX_RANGE_DAYS = {FUEL_PATH: 731, FX_PATH: 366, CEMENT_PATH: 92}

FX_QUOTES = ("THB", "INR")
CEMENT_GRADES = ("OPC 53", "PPC")
BAG_KG = 50
# Every city of the plant network, in the network's order.
CITIES: tuple[str, ...] = tuple(dict.fromkeys(p.city for p in PLANTS))
# Dealer price of a 50 kg bag of PPC around which each city's price moves, INR (OPC 53 costs more).
_CITY_BASE_INR_PER_BAG = {
    "Chittorgarh": 345,
    "Kota": 350,
    "Rajkot": 362,
    "Ahmedabad": 370,
    "Jaipur": 366,
    "Indore": 376,
    "Surat": 381,
    "Udaipur": 355,
    "Vadodara": 372,
    "Ajmer": 358,
}
_OPC_PREMIUM_INR_PER_BAG = 25

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
    """Seed and credentials of a simulated markets API."""

    seed: int = 7
    api_key: str = "sim-markets-key"

    def __repr__(self) -> str:
        return f"MarketsConfig(seed={self.seed})"  # the key stays out of logs and test reports


class _Walks:
    """The price series, one value per day from ``SERIES_START``: deterministic from the seed."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def _rng(self, stream: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, stream])

    @staticmethod
    def _ar1(
        noise: np.ndarray, mean: float, phi: float, sigma: float, low: float, high: float, start: float
    ) -> np.ndarray:
        """A mean-reverting walk (AR(1)) held inside [low, high]."""
        out = np.empty(len(noise))
        value = start
        for i, eps in enumerate(noise):
            value = min(max(mean + phi * (value - mean) + sigma * eps, low), high)
            out[i] = value
        return out

    @cached_property
    def brent_weekly(self) -> np.ndarray:
        weeks = SERIES_DAYS // 7 + 1
        return self._ar1(self._rng(1).standard_normal(weeks), 75.0, 0.95, 2.0, 60.0, 90.0, 74.0)

    @cached_property
    def diesel_weekly(self) -> np.ndarray:
        # Retail diesel follows crude with a lag-free pass-through plus its own margin noise.
        margin = 0.012 * self._rng(2).standard_normal(len(self.brent_weekly))
        return np.clip(0.55 + 0.0068 * self.brent_weekly + margin, 0.90, 1.20)

    @cached_property
    def fx_daily(self) -> dict[str, np.ndarray]:
        return {
            "THB": self._ar1(self._rng(3).standard_normal(SERIES_DAYS), 34.5, 0.99, 0.07, 32.0, 37.0, 34.4),
            "INR": self._ar1(self._rng(4).standard_normal(SERIES_DAYS), 85.0, 0.99, 0.10, 82.0, 88.0, 84.8),
        }

    @cached_property
    def cement_daily(self) -> dict[str, np.ndarray]:
        """Each city's offset from its base price, INR per bag: dealers revise in whole rupees."""
        return {
            city: np.round(self._ar1(self._rng(10 + i).standard_normal(SERIES_DAYS), 0.0, 0.97, 3.0, -40, 40, 0.0))
            for i, city in enumerate(CITIES)
        }


class MarketsSimulator:
    """The markets API: tariffs, holidays, fuel, exchange rates and cement prices, with faults."""

    def __init__(self, config: MarketsConfig | None = None) -> None:
        self.config = config or MarketsConfig()
        self.now: datetime | None = None  # None: real time
        self.faults = FaultBook(OWN_FAULTS)
        self.requests = RequestStats()
        self._walks = _Walks(self.config.seed)
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

    def _clock(self) -> datetime:
        return (self.now or datetime.now(UTC)).astimezone(UTC)

    @staticmethod
    def _published(day: date, local_time: str) -> str:
        return f"{day.isoformat()}T{local_time}{LOCAL_OFFSET}"

    def _is_out(self, published: str) -> bool:
        return datetime.fromisoformat(published) <= self._clock()

    def fuel_prices(self, start: date, end: date) -> list[dict[str, Any]]:
        """One row per week starting (Monday) in ``[start, end)`` and published by now (Monday 10:00 local)."""
        first = start + timedelta(days=(7 - start.weekday()) % 7)
        rows = []
        for week_start in _days(first, end, step=7):
            index = (week_start - SERIES_START).days // 7
            if index < 0 or index >= len(self._walks.brent_weekly):
                continue
            published = self._published(week_start, "10:00:00")
            if not self._is_out(published):
                continue
            rows.append(
                {
                    "week_start": week_start.isoformat(),
                    "diesel_usd_per_l": round(float(self._walks.diesel_weekly[index]), 3),
                    "brent_usd_per_bbl": round(float(self._walks.brent_weekly[index]), 2),
                    "published_at": published,
                }
            )
        return rows

    def is_business_day(self, day: date) -> bool:
        """Whether the reference rates are fixed on this local date (Monday–Friday, not a public holiday)."""
        return day.weekday() < 5 and day.isoformat() not in _HOLIDAY_DATES

    def fx_rates(self, start: date, end: date) -> list[dict[str, Any]]:
        """USD→THB and USD→INR for every business day in ``[start, end)`` fixed by now (16:30 local)."""
        rows = []
        for day in _days(start, end):
            index = (day - SERIES_START).days
            if index < 0 or index >= SERIES_DAYS or not self.is_business_day(day):
                continue
            published = self._published(day, "16:30:00")
            if not self._is_out(published):
                continue
            for quote in FX_QUOTES:
                rate = round(float(self._walks.fx_daily[quote][index]), 4)
                row = {"rate_date": day.isoformat(), "base": "USD", "quote": quote, "rate": rate}
                rows.append({**row, "published_at": published})
        return rows

    def cement_prices(self, start: date, end: date) -> list[dict[str, Any]]:
        """Dealer price of a 50 kg bag per city and grade, INR, for every day in ``[start, end)`` surveyed by
        now (18:00 local)."""
        rows = []
        for day in _days(start, end):
            index = (day - SERIES_START).days
            if index < 0 or index >= SERIES_DAYS or not self._is_out(self._published(day, "18:00:00")):
                continue
            for city in CITIES:
                ppc = _CITY_BASE_INR_PER_BAG[city] + float(self._walks.cement_daily[city][index])
                for grade in CEMENT_GRADES:
                    price = ppc + (_OPC_PREMIUM_INR_PER_BAG if grade == "OPC 53" else 0)
                    rows.append(
                        {
                            "price_date": day.isoformat(),
                            "city": city,
                            "grade": grade,
                            "price_per_bag": round(price, 2),
                            "bag_kg": BAG_KG,
                            "currency": "INR",
                        }
                    )
        return rows

    # ------------------------------------------------------------------ faults and stats

    def inject(self, kind: str, path: str = "*", count: int = 1, **params: Any) -> None:
        """Arm a fault for the next ``count`` requests whose path matches the fnmatch glob ``path``."""
        self.faults.inject(kind, path, count, **params)

    def clear_faults(self) -> int:
        """Disarm every fault; returns how many were still armed."""
        return self.faults.clear()

    @property
    def stats(self) -> dict[tuple[str, int], int]:
        """Requests served, by (path, HTTP status)."""
        return self.requests.snapshot()

    def requests_to(self, path: str) -> int:
        """Requests served for one path, whatever their status."""
        return self.requests.requests_to(path)

    def reset_stats(self) -> None:
        self.requests.reset()

    # ------------------------------------------------------------------ HTTP

    def _build_app(self) -> Starlette:
        return Starlette(
            routes=[
                Route(TARIFFS_PATH, self._tariffs_ep, methods=["GET"]),
                Route(HOLIDAYS_PATH, self._holidays_ep, methods=["GET"]),
                Route(FUEL_PATH, self._range_ep(self.fuel_prices, "prices"), methods=["GET"]),
                Route(FX_PATH, self._range_ep(self.fx_rates, "rates"), methods=["GET"]),
                Route(CEMENT_PATH, self._range_ep(self.cement_prices, "prices"), methods=["GET"]),
                Route("/_sim/faults", faults_endpoint(self.faults), methods=["GET", "POST", "DELETE"]),
            ]
        )

    async def _serve(self, request: Request, produce: Callable[[Request, Fault | None], dict[str, Any]]) -> Response:
        path = request.url.path
        fault = self.faults.take(path)
        await delay(fault)
        key = request.headers.get("x-api-key", "")
        if fault is not None and fault.kind == "status":
            response: Response = status_response(fault)
        elif not secrets.compare_digest(key.encode(), self.config.api_key.encode()):
            response = JSONResponse({"error": "invalid_api_key", "detail": "missing or wrong X-API-Key header"}, 401)
        else:
            try:
                body = produce(request, fault)
            except ValueError as exc:
                response = JSONResponse({"error": "bad_request", "detail": str(exc)}, 400)
            else:
                if fault is not None:
                    body = {name: _bad_rows(rows, fault) for name, rows in body.items()}
                content = mangle_body(json.dumps(body, separators=(",", ":")).encode(), fault)
                response = Response(content, media_type="application/json")
        self.requests.record(path, response.status_code)
        return response

    async def _tariffs_ep(self, request: Request) -> Response:
        def produce(_: Request, fault: Fault | None) -> dict[str, Any]:
            tariffs = self.tariffs()
            if fault is not None and fault.kind == "overlapping_tariff":
                tariffs.append(dict(OVERLAPPING_TARIFF))
            return {"tariffs": tariffs}

        return await self._serve(request, produce)

    async def _holidays_ep(self, request: Request) -> Response:
        def produce(req: Request, _: Fault | None) -> dict[str, Any]:
            year = req.query_params.get("year")
            if year is not None and not year.isdigit():
                raise ValueError(f"year must be a number such as 2026, got {year!r}")
            return {"holidays": self.holidays(int(year) if year else None)}

        return await self._serve(request, produce)

    def _range_ep(self, rows_of: Callable[[date, date], list[dict[str, Any]]], field: str):
        async def endpoint(request: Request) -> Response:
            def produce(req: Request, _: Fault | None) -> dict[str, Any]:
                start, end = _date_range(req)
                return {field: rows_of(start, end)}

            return await self._serve(request, produce)

        return endpoint


_HOLIDAY_DATES = frozenset(d for year in HOLIDAYS.values() for d, _ in year)
_DATE_FIELDS = frozenset({"date", "rate_date", "week_start", "price_date"})
_PRICE_FIELDS = ("diesel_usd_per_l", "brent_usd_per_bbl", "price_per_bag")


def _days(start: date, end: date, step: int = 1):
    day = start
    while day < end:
        yield day
        day += timedelta(days=step)


def _date_range(request: Request) -> tuple[date, date]:
    try:
        start = date.fromisoformat(request.query_params["from"])
        end = date.fromisoformat(request.query_params["to"])
    except (KeyError, ValueError):
        raise ValueError("from and to are required local dates written YYYY-MM-DD (to exclusive)") from None
    longest = MAX_RANGE_DAYS[request.url.path]
    if not 0 <= (end - start).days <= longest:
        raise ValueError(f"from..to must span 0-{longest} days, got {start.isoformat()}..{end.isoformat()}")
    return start, end


def _bad_rows(rows: list[dict[str, Any]], fault: Fault) -> list[dict[str, Any]]:
    """The rows as a row fault or one of this source's bad-data faults sends them."""
    kind = fault.kind
    if kind == "fx_outlier":
        rows = [dict(r) for r in rows]
        # The first rate of the answer, or the first one to the quote currency the fault names.
        quote = fault.params.get("quote")
        target = next((r for r in rows if quote in (None, r.get("quote")) and isinstance(r.get("rate"), float)), None)
        if target is not None:
            target["rate"] = round(target["rate"] * 100, 4)
        return rows
    if kind == "negative_price":
        rows = [dict(r) for r in rows]
        for name in _PRICE_FIELDS:
            if rows and isinstance(rows[0].get(name), float | int):
                rows[0][name] = -rows[0][name]
        return rows
    return row_fault(rows, kind, lambda name, _: "tomorrow" if name in _DATE_FIELDS else None)


def serve_markets(
    config: MarketsConfig | None = None, host: str = "127.0.0.1", port: int = 0
) -> contextlib.AbstractContextManager[SimulatorServer]:
    """Serve a markets simulator in a background thread for the duration of the ``with`` block."""
    return serve_simulator(MarketsSimulator(config or MarketsConfig()), host=host, port=port)


def credentials_env(url: str, config: MarketsConfig) -> dict[str, str]:
    """Environment variables a client needs to reach a simulator at ``url``."""
    return {"MARKETS_BASE_URL": url, "MARKETS_API_KEY": config.api_key}


def main(argv: list[str] | None = None) -> None:
    """``ihub simulate markets``: serve the markets API in the foreground until interrupted."""
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(prog="ihub simulate markets", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8703)
    parser.add_argument("--seed", type=int, default=7, help="seed of the price walks")
    args = parser.parse_args(argv)
    config = MarketsConfig(seed=args.seed)
    url = f"http://{args.host}:{args.port}"
    exports = " ".join(f"{k}={v}" for k, v in credentials_env(url, config).items())
    print(f"markets API on {url}  {exports}", flush=True)
    uvicorn.run(MarketsSimulator(config).app, host=args.host, port=args.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
