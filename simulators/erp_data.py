"""What the simulated ERP knows about the clinker network, deterministic from a seed.

The plants and road legs come from `simulators/plant_network.py` (shared with the fleet simulator); this
module adds what an ERP holds about them:

- per integrated unit (IU): clinker capacity in tonnes per month and production cost in INR per tonne;
- per plant: opening, safety and maximum stock in tonnes; per grinding unit and hub: clinker demand per
  month, revised now and then (every revision is a row with its own change time);
- per route (an IU to an IU, GU or hub) and mode: road on every road leg, rail on the long legs between
  rail-served plants, with freight and handling cost in INR per tonne, vehicle capacity in tonnes (a
  truck 25–35 t, a rake about 3,800 t), a fixed cost per trip in INR and a minimum batch in tonnes;
- stock per plant per day (the opening stock of the UTC day);
- monthly production capacity per IU and the kiln shutdowns that reduce it (served from the SQL side).

Figures are plausible for an Indian cement company in 2026: clinker costs ₹3,200–4,200/t to make, road
freight about ₹2.4 per tonne-km plus loading, rail about ₹1.1 per tonne-km plus terminal charges.
Everything is a pure function of the seed and the date asked about: no clock, no state.
"""

from __future__ import annotations

import calendar
import math
import random
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from functools import lru_cache

from simulators.plant_network import PLANTS, ROAD_LEGS, Plant, haversine_km

__all__ = [
    "DEMAND_HORIZON_MONTHS",
    "HISTORY_START",
    "CapacityPlan",
    "DemandRevision",
    "ErpNetwork",
    "PlantMaster",
    "Route",
    "Shutdown",
    "StockLevel",
    "month_start",
]

HISTORY_START = date(2026, 1, 1)  # the ERP went live then: no record changed before it
DEMAND_HORIZON_MONTHS = 6  # a period's demand is first forecast six months ahead
CAPACITY_PUBLISHED_DAYS_AHEAD = 180
# Rail sidings: the integrated units and the large consuming plants have one; Udaipur and Ajmer do not.
RAIL_SERVED = frozenset({"IU01", "IU02", "IU03", "GU01", "GU02", "GU03", "GU04", "HUB01"})
RAIL_MIN_KM = 350.0  # below this, a rake's terminal costs outweigh the cheaper haul
RAIL_CIRCUITY = 1.15  # track is straighter than road
SHUTDOWN_REASONS = (
    "annual kiln refractory relining",
    "raw mill gearbox overhaul",
    "preheater cyclone cleaning",
    "clinker cooler grate repair",
    "kiln main drive inspection",
)

Q3 = Decimal("0.001")
Q2 = Decimal("0.01")


def _t(value: float) -> Decimal:
    """Tonnes to three decimals (the ERP's quantity precision)."""
    return Decimal(str(round(value, 3))).quantize(Q3)


def _inr(value: float) -> Decimal:
    return Decimal(str(round(value, 2))).quantize(Q2)


def month_start(day: date) -> date:
    return day.replace(day=1)


def add_months(day: date, months: int) -> date:
    year, month = divmod(day.month - 1 + months, 12)
    return date(day.year + year, month + 1, 1)


def _at(day: date, minutes: float) -> datetime:
    return datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(minutes=int(minutes))


@dataclass(frozen=True)
class PlantMaster:
    plant: Plant
    clinker_capacity_t_per_month: Decimal | None  # IU only
    production_cost_inr_per_t: Decimal | None  # IU only
    monthly_demand_t: Decimal | None  # GU and HUB only: the base monthly demand before seasonality
    opening_stock_t: Decimal
    safety_stock_t: Decimal
    max_stock_t: Decimal
    changed_at: datetime


@dataclass(frozen=True)
class Route:
    route_id: str
    origin: str
    destination: str
    mode: str  # ROAD or RAIL
    distance_km: Decimal
    freight_cost_inr_per_t: Decimal
    handling_cost_inr_per_t: Decimal
    vehicle_capacity_t: Decimal
    cost_per_trip_inr: Decimal
    min_batch_t: Decimal
    changed_at: datetime


@dataclass(frozen=True)
class DemandRevision:
    plant_id: str
    period_start: date
    revision: int
    demand_t: Decimal
    changed_at: datetime


@dataclass(frozen=True)
class StockLevel:
    plant_id: str
    stock_date: date
    stock_t: Decimal
    changed_at: datetime


@dataclass(frozen=True)
class CapacityPlan:
    plant_id: str
    period_start: date
    capacity_t: Decimal
    changed_at: datetime


@dataclass(frozen=True)
class Shutdown:
    plant_id: str
    starts_at: datetime
    ends_at: datetime
    reason: str
    changed_at: datetime


class ErpNetwork:
    """The ERP's view of the plant network for one seed."""

    def __init__(self, seed: int = 7) -> None:
        self.seed = seed
        self.plants: tuple[PlantMaster, ...] = tuple(self._plant(p) for p in PLANTS)
        self.routes: tuple[Route, ...] = self._routes()
        self._by_id = {m.plant.plant_id: m for m in self.plants}

    def _rng(self, *parts: object) -> random.Random:
        return random.Random(":".join(map(str, (self.seed, *parts))))

    def master(self, plant_id: str) -> PlantMaster:
        return self._by_id[plant_id]

    # ------------------------------------------------------------------ master data

    def _plant(self, plant: Plant) -> PlantMaster:
        rng = self._rng("plant", plant.plant_id)
        capacity = cost = demand = None
        if plant.kind == "IU":
            capacity = _t(round(rng.uniform(190_000, 320_000) / 500) * 500)
            cost = _inr(rng.uniform(3_200, 4_200))
            max_stock = rng.uniform(120_000, 180_000)
            safety = rng.uniform(15_000, 25_000)
        elif plant.kind == "GU":
            demand = _t(round(rng.uniform(60_000, 130_000) / 100) * 100)
            max_stock = rng.uniform(30_000, 60_000)
            safety = rng.uniform(5_000, 10_000)
        else:
            demand = _t(round(rng.uniform(20_000, 45_000) / 100) * 100)
            max_stock = rng.uniform(15_000, 25_000)
            safety = rng.uniform(2_000, 4_000)
        opening = safety + (max_stock - safety) * rng.uniform(0.3, 0.7)
        changed = _at(HISTORY_START, rng.uniform(6 * 60, 8 * 60))
        return PlantMaster(
            plant, capacity, cost, demand, _t(round(opening)), _t(round(safety)), _t(round(max_stock)), changed
        )

    def _routes(self) -> tuple[Route, ...]:
        routes = []
        for leg in ROAD_LEGS:
            rng = self._rng("road", leg.origin, leg.destination)
            truck = rng.choice((25, 30, 35))
            routes.append(
                Route(
                    f"{leg.origin}-{leg.destination}-ROAD",
                    leg.origin,
                    leg.destination,
                    "ROAD",
                    Decimal(str(leg.distance_km)).quantize(Decimal("0.1")),
                    _inr(120 + 2.4 * leg.distance_km * rng.uniform(0.92, 1.08)),
                    _inr(rng.uniform(60, 110)),
                    _t(truck),
                    _inr(rng.uniform(1_500, 4_000)),
                    _t(truck * 10),  # a carrier takes a lane for at least ten loads a month
                    _at(HISTORY_START, rng.uniform(8 * 60, 9 * 60)),
                )
            )
            if leg.origin in RAIL_SERVED and leg.destination in RAIL_SERVED and leg.distance_km >= RAIL_MIN_KM:
                a, b = (next(p for p in PLANTS if p.plant_id == i) for i in (leg.origin, leg.destination))
                km = haversine_km(a.latitude, a.longitude, b.latitude, b.longitude) * RAIL_CIRCUITY
                rake = round(rng.uniform(3_700, 4_000) / 50) * 50
                routes.append(
                    Route(
                        f"{leg.origin}-{leg.destination}-RAIL",
                        leg.origin,
                        leg.destination,
                        "RAIL",
                        Decimal(str(round(km, 1))).quantize(Decimal("0.1")),
                        _inr(250 + 1.1 * km * rng.uniform(0.95, 1.05)),
                        _inr(rng.uniform(140, 200)),  # handled twice: siding to wagon, wagon to silo
                        _t(rake),
                        _inr(rng.uniform(45_000, 80_000)),
                        _t(rake),  # a rake moves whole
                        _at(HISTORY_START, rng.uniform(9 * 60, 10 * 60)),
                    )
                )
        return tuple(routes)

    # ------------------------------------------------------------------ demand

    @property
    def demand_plants(self) -> tuple[str, ...]:
        return tuple(m.plant.plant_id for m in self.plants if m.plant.kind in ("GU", "HUB"))

    @lru_cache(maxsize=4096)  # noqa: B019 - one network per simulator; the cache lives as long as it
    def demand_revisions_of(self, plant_id: str, period: date) -> tuple[DemandRevision, ...]:
        """Every forecast revision of one plant's demand for one month: first issued six months ahead
        (or when the ERP went live), then revised on about one day in twelve until the month starts."""
        master = self._by_id[plant_id]
        rng = self._rng("demand", plant_id, period.isoformat())
        # Monsoon months (July–September) slow construction; the dry season peaks.
        season = {7: 0.82, 8: 0.80, 9: 0.88, 10: 1.02, 11: 1.06, 12: 1.08, 1: 1.08, 2: 1.06, 3: 1.10}
        base = float(master.monthly_demand_t or 0) * season.get(period.month, 1.0)
        first = max(add_months(period, -DEMAND_HORIZON_MONTHS), HISTORY_START)
        if first >= period:
            first = HISTORY_START
        revisions: list[DemandRevision] = []
        day = first
        while day < period:
            if day == first or rng.random() < 1 / 12:
                months_ahead = (period - day).days / 30.4
                error = rng.gauss(0, 0.015 * months_ahead + 0.01)  # forecasts firm up as the month nears
                revisions.append(
                    DemandRevision(
                        plant_id,
                        period,
                        len(revisions) + 1,
                        _t(round(base * (1 + error) * 2) / 2),
                        _at(day, rng.uniform(5 * 60, 11 * 60)),
                    )
                )
            day += timedelta(days=1)
        return tuple(revisions)

    def demand_revisions(self, start: datetime, end: datetime) -> list[DemandRevision]:
        """Forecast revisions changed in ``[start, end)``, ordered by plant, period and revision."""
        first_month = add_months(month_start(start.date()), -1)
        last_month = add_months(month_start(end.date()), DEMAND_HORIZON_MONTHS + 1)
        found = []
        for plant_id in self.demand_plants:
            period = first_month
            while period <= last_month:
                found.extend(r for r in self.demand_revisions_of(plant_id, period) if start <= r.changed_at < end)
                period = add_months(period, 1)
        return sorted(found, key=lambda r: (r.plant_id, r.period_start, r.revision))

    # ------------------------------------------------------------------ stock

    @lru_cache(maxsize=65536)  # noqa: B019 - every page of a paged read asks for the same days again
    def stock(self, plant_id: str, day: date) -> StockLevel:
        """The plant's stock at 00:00 UTC of ``day``: between safety and maximum stock, cycling over a
        few weeks as shipments arrive and kilns or mills draw it down, with day-to-day noise."""
        master = self._by_id[plant_id]
        rng = self._rng("stock", plant_id, day.isoformat())
        phase = self._rng("phase", plant_id).uniform(0, 2 * math.pi)
        span = float(master.max_stock_t - master.safety_stock_t)
        level = 0.5 + 0.3 * math.sin(2 * math.pi * day.toordinal() / 27 + phase) + rng.uniform(-0.08, 0.08)
        value = float(master.safety_stock_t) + span * min(0.98, max(0.05, level))
        # Posted by the night's stock job a few minutes after midnight.
        return StockLevel(plant_id, day, _t(round(value, 1)), _at(day, 5 + rng.uniform(0, 20)))

    def stock_levels(self, first: date, last: date) -> list[StockLevel]:
        """Stock of every plant for every day in ``[first, last)``, by plant then day."""
        days = [first + timedelta(days=n) for n in range((last - first).days)]
        return [self.stock(m.plant.plant_id, d) for m in self.plants for d in days]

    # ------------------------------------------------------------------ capacity and shutdowns (SQL side)

    def shutdowns(self, year: int) -> list[Shutdown]:
        """Kiln shutdowns of every IU in a year: one planned annual relining (10–18 days, announced six
        weeks ahead) and one or two short unplanned stops (1–3 days, recorded a few hours in)."""
        found = []
        for master in self.plants:
            if master.plant.kind != "IU":
                continue
            rng = self._rng("shutdown", master.plant.plant_id, year)
            start = datetime(year, rng.choice((4, 5, 6)), rng.randint(1, 28), 6, tzinfo=UTC)
            end = start + timedelta(days=rng.randint(10, 18))
            found.append(Shutdown(master.plant.plant_id, start, end, SHUTDOWN_REASONS[0], start - timedelta(days=42)))
            for _ in range(rng.randint(1, 2)):
                month = rng.choice((1, 2, 3, 8, 9, 10, 11))
                start = datetime(year, month, rng.randint(1, 28), rng.randint(0, 23), tzinfo=UTC)
                end = start + timedelta(hours=rng.randint(24, 72))
                changed = start + timedelta(hours=rng.randint(1, 6))
                found.append(Shutdown(master.plant.plant_id, start, end, rng.choice(SHUTDOWN_REASONS[1:]), changed))
        return sorted(found, key=lambda s: (s.plant_id, s.starts_at))

    def capacity_plans(self, first: date, last: date) -> list[CapacityPlan]:
        """Clinker capacity of each IU for each month in ``[first, last)``: the nameplate month less the
        days its kiln is shut down, published six months ahead and revised a month ahead when a stop
        falls in it."""
        plans = []
        shutdowns = [s for y in range(first.year - 1, last.year + 2) for s in self.shutdowns(y)]
        for master in self.plants:
            if master.plant.kind != "IU":
                continue
            period = month_start(first)
            while period < last:
                days = calendar.monthrange(period.year, period.month)[1]
                month_begin = datetime(period.year, period.month, 1, tzinfo=UTC)
                month_end = month_begin + timedelta(days=days)
                down = sum(
                    (min(s.ends_at, month_end) - max(s.starts_at, month_begin)).total_seconds() / 86400
                    for s in shutdowns
                    if s.plant_id == master.plant.plant_id and s.starts_at < month_end and s.ends_at > month_begin
                )
                rng = self._rng("capacity", master.plant.plant_id, period.isoformat())
                available = float(master.clinker_capacity_t_per_month) * rng.uniform(0.94, 1.0) * (1 - down / days)
                published = max(
                    _at(period - timedelta(days=CAPACITY_PUBLISHED_DAYS_AHEAD), rng.uniform(9 * 60, 17 * 60)),
                    _at(HISTORY_START, rng.uniform(9 * 60, 17 * 60)),
                )
                changed = published
                if down > 0:  # revised when the stop is known, a month ahead, or when it happened
                    changed = max(published, _at(period - timedelta(days=30), rng.uniform(9 * 60, 17 * 60)))
                    stops = [s for s in shutdowns if s.plant_id == master.plant.plant_id and s.starts_at < month_end]
                    changed = max([changed, *(s.changed_at for s in stops if s.ends_at > month_begin)])
                plans.append(CapacityPlan(master.plant.plant_id, period, _t(round(available)), changed))
                period = add_months(period, 1)
        return plans
