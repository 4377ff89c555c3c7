"""The clinker supply plan: which integrated unit makes how much, what goes where by which mode, in how many
trips, and what demand cannot be met — as one mixed-integer model built from whole arrays.

An instance (`SupplyInstance`) is the network of shared/DOMAIN.md: integrated units (IU) with production
capacity and cost per period, grinding units (GU) and hubs (HUB) with demand, every plant with opening,
safety and maximum stock, routes from an IU to another plant by mode with freight and handling cost per
tonne, vehicle capacity, cost per trip and a minimum batch when used, and bounds on shipped tonnes at
global, mode or route level (or a mode's share of all shipments). `validate` names every problem of an
instance before anything is built; `build_model` turns it into a `LinearModel`; `plan` solves it and reads
the result back as tables (production, stock, shipments, shortages) and cost by component.

Demand that the network cannot meet is a **priced shortage**, never an infeasible model: only hard bounds
a planner set (a route's minimum tonnage above what its origin can make, a hard safety stock) can make a
plan impossible, and `explain` says which, in the planner's words.

Formulation, instance file format and how to read the outputs: docs/optimization/supply.md.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from optimization.model import LinearModel, ModelBuilder
from optimization.solver import Solution, SolverOptions, Violation, explain_infeasibility, solve

__all__ = [
    "PLANT_KINDS",
    "Bound",
    "InstanceError",
    "Plant",
    "Route",
    "SupplyInstance",
    "SupplyModel",
    "SupplyPlan",
    "build_model",
    "explain",
    "generated_instance",
    "instance_from_dict",
    "instance_to_dict",
    "load_instance",
    "plan",
    "save_instance",
    "validate",
]

PLANT_KINDS = ("IU", "GU", "HUB")
BOUND_SCOPES = ("global", "mode", "route", "mode_share")
SAFETY_MODES = ("soft", "hard")
_PERIOD = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
FORMAT = "ihub-supply-instance/1"

# Rows that state physics or definitions (a stock balance, trips carrying the load): when explaining an
# infeasible plan these are far dearer to violate than the bounds a planner set, so the explanation points
# at the bound or policy that has to give, not at "clinker appearing from nowhere".
_DEFINITIONAL = ("stock_balance", "trip_capacity", "route_batch", "route_used")
_DEFINITIONAL_WEIGHT = 1000.0


class InstanceError(ValueError):
    """An instance that cannot be planned, with every problem found (``problems``), each naming what is wrong."""

    def __init__(self, name: str, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        shown = "\n".join(f"  - {p}" for p in self.problems[:50])
        more = f"\n  … and {len(self.problems) - 50} more" if len(self.problems) > 50 else ""
        super().__init__(f"supply instance {name!r} has {len(self.problems)} problem(s):\n{shown}{more}")


@dataclass(frozen=True)
class Plant:
    """A node of the network. Tonnes per period; costs in the instance's currency (INR) per tonne."""

    plant_id: str
    kind: str  # IU, GU or HUB
    opening_stock_t: float = 0.0
    safety_stock_t: float = 0.0
    max_stock_t: float = math.inf
    holding_cost_per_t: float = 0.0  # per tonne of closing stock per period
    capacity_t: tuple[float, ...] = ()  # IU: clinker it can make in each period
    production_cost_per_t: float = 0.0  # IU
    demand_t: tuple[float, ...] = ()  # clinker consumed in each period (GU, HUB; empty = none)


@dataclass(frozen=True)
class Route:
    """A way clinker can go from an IU to another plant by one mode.

    ``freight_cost_per_t`` is one figure for every period or one per period (road freight follows fuel).
    ``capacity_t`` caps the tonnes per period (a siding's rakes, a road permit); None = the network's own
    limits. ``min_batch_t`` is the least tonnage the route carries in a period when it is used at all.
    """

    route_id: str
    origin: str
    destination: str
    mode: str
    freight_cost_per_t: float | tuple[float, ...]
    handling_cost_per_t: float = 0.0
    vehicle_capacity_t: float = 30.0
    cost_per_trip: float = 0.0
    min_batch_t: float = 0.0
    capacity_t: float | None = None
    closed: bool = False  # a scenario's closed route: nothing may use it


@dataclass(frozen=True)
class Bound:
    """A lower and/or upper bound on shipped tonnes per period.

    scope ``global``: all routes; ``mode``: the routes of mode ``target``; ``route``: route ``target``;
    ``mode_share``: mode ``target``'s share of all tonnes shipped (``lower``/``upper`` are fractions 0–1).
    ``periods`` limits the bound to some periods (labels); empty = every period.
    """

    scope: str
    target: str | None = None
    lower: float | None = None
    upper: float | None = None
    periods: tuple[str, ...] = ()
    name: str = ""  # how the planner calls it ("rail share cap"); shown in explanations


@dataclass(frozen=True)
class SupplyInstance:
    """A self-contained supply planning problem (what the instance file holds)."""

    name: str
    periods: tuple[str, ...]  # YYYY-MM, consecutive months
    plants: tuple[Plant, ...]
    routes: tuple[Route, ...]
    bounds: tuple[Bound, ...] = ()
    shortage_penalty_per_t: float = 20_000.0  # what a tonne of unmet demand costs the business
    safety_stock: str = "soft"  # soft: going below safety stock is priced; hard: it is a constraint
    # Per tonne below safety stock per period (soft). Above what a tonne costs to make and deliver (~5,000
    # INR), so the plan keeps safety stock whenever it can (also in the last month, where nothing after
    # the horizon would otherwise pay for it); below the shortage price, so demand comes first.
    safety_penalty_per_t: float = 10_000.0
    currency: str = "INR"

    @property
    def plant_ids(self) -> list[str]:
        return [p.plant_id for p in self.plants]

    def with_overrides(
        self,
        *,
        demand_uplift_pct: float = 0.0,
        closed_routes: Sequence[str] = (),
        name: str | None = None,
    ) -> SupplyInstance:
        """A scenario of this instance: every demand scaled by (1 + uplift/100), the named routes closed."""
        unknown = sorted(set(closed_routes) - {r.route_id for r in self.routes})
        if unknown:
            raise InstanceError(
                self.name, [f"scenario closes route {r!r}, which is not in the instance" for r in unknown]
            )
        factor = 1.0 + demand_uplift_pct / 100.0
        if factor < 0:
            raise InstanceError(self.name, [f"demand uplift {demand_uplift_pct} % is below -100 %"])
        plants = tuple(replace(p, demand_t=tuple(d * factor for d in p.demand_t)) for p in self.plants)
        closed = set(closed_routes)
        routes = tuple(replace(r, closed=r.closed or r.route_id in closed) for r in self.routes)
        return replace(self, name=name or self.name, plants=plants, routes=routes)


# ---------------------------------------------------------------------------------------------- validation


def validate(instance: SupplyInstance) -> list[str]:
    """Every problem of the instance, each naming the plant, route, bound or period and the expected range."""
    problems: list[str] = []
    periods = list(instance.periods)
    n = len(periods)
    if n == 0:
        problems.append("periods: the plan needs at least one period (YYYY-MM)")
    for i, label in enumerate(periods):
        if not isinstance(label, str) or not _PERIOD.match(label):
            problems.append(f"period {i + 1}: {label!r} is not a month YYYY-MM")
    if len(set(periods)) != n:
        problems.append(f"periods: {sorted({p for p in periods if periods.count(p) > 1})} appear more than once")
    elif n and all(isinstance(p, str) and _PERIOD.match(p) for p in periods):
        months = [int(p[:4]) * 12 + int(p[5:7]) for p in periods]
        for a, b, label in zip(months, months[1:], periods[1:], strict=False):
            if b != a + 1:
                problems.append(f"periods: {label} does not follow the month before it; periods are consecutive months")
    for what, value in (
        ("shortage_penalty_per_t", instance.shortage_penalty_per_t),
        ("safety_penalty_per_t", instance.safety_penalty_per_t),
    ):
        if not (math.isfinite(value) and value >= 0):
            problems.append(f"{what} is {value!r}, expected a finite figure ≥ 0")
    if instance.safety_stock == "soft" and instance.safety_penalty_per_t >= instance.shortage_penalty_per_t > 0:
        problems.append(
            f"safety_penalty_per_t {instance.safety_penalty_per_t:,} is not below shortage_penalty_per_t "
            f"{instance.shortage_penalty_per_t:,}: the plan would leave demand unmet to keep safety stock"
        )
    if instance.safety_stock not in SAFETY_MODES:
        problems.append(f"safety_stock is {instance.safety_stock!r}, expected one of {', '.join(SAFETY_MODES)}")

    kinds: dict[str, str] = {}
    for plant in instance.plants:
        pid = plant.plant_id
        if pid in kinds:
            problems.append(f"plant {pid}: appears more than once")
        kinds[pid] = plant.kind
        if plant.kind not in PLANT_KINDS:
            problems.append(f"plant {pid}: kind {plant.kind!r}, expected one of {', '.join(PLANT_KINDS)}")
        for what, value in (
            ("opening_stock_t", plant.opening_stock_t),
            ("safety_stock_t", plant.safety_stock_t),
            ("holding_cost_per_t", plant.holding_cost_per_t),
            ("production_cost_per_t", plant.production_cost_per_t),
        ):
            if not (math.isfinite(value) and value >= 0):
                problems.append(f"plant {pid}: {what} is {value!r}, expected a finite figure ≥ 0")
        if not plant.max_stock_t >= 0:
            problems.append(f"plant {pid}: max_stock_t is {plant.max_stock_t!r}, expected ≥ 0")
        if plant.safety_stock_t > plant.max_stock_t:
            problems.append(
                f"plant {pid}: stock bounds inverted: safety stock {plant.safety_stock_t:,.0f} t is above the "
                f"maximum stock {plant.max_stock_t:,.0f} t (expected 0 ≤ safety ≤ maximum)"
            )
        if plant.opening_stock_t > plant.max_stock_t:
            problems.append(
                f"plant {pid}: opening stock {plant.opening_stock_t:,.0f} t is above the maximum stock "
                f"{plant.max_stock_t:,.0f} t"
            )
        if plant.kind == "IU":
            if len(plant.capacity_t) != n:
                problems.append(
                    f"plant {pid}: {len(plant.capacity_t)} production capacities for {n} periods "
                    f"({', '.join(periods)}); expected one per period"
                )
        elif plant.capacity_t and any(c != 0 for c in plant.capacity_t):
            problems.append(f"plant {pid}: a {plant.kind} makes no clinker, but has production capacity")
        for t, value in enumerate(plant.capacity_t):
            if not (math.isfinite(value) and value >= 0):
                label = periods[t] if t < n else f"period {t + 1}"
                problems.append(f"plant {pid}: production capacity {value!r} t in {label}, expected a figure ≥ 0")
        if plant.demand_t and len(plant.demand_t) != n:
            problems.append(
                f"plant {pid}: {len(plant.demand_t)} demand figures for {n} periods ({', '.join(periods)}); "
                "expected one per period (or none)"
            )
        for t, value in enumerate(plant.demand_t):
            if not (math.isfinite(value) and value >= 0):
                label = periods[t] if t < n else f"period {t + 1}"
                problems.append(f"plant {pid}: demand {value!r} t in {label} is negative or not a number, expected ≥ 0")

    seen: set[str] = set()
    modes = {r.mode for r in instance.routes}
    for route in instance.routes:
        rid = route.route_id
        if rid in seen:
            problems.append(f"route {rid}: appears more than once")
        seen.add(rid)
        if route.origin not in kinds:
            problems.append(f"route {rid}: origin {route.origin!r} is not a plant of the instance")
        elif kinds[route.origin] != "IU":
            problems.append(f"route {rid}: origin {route.origin} is a {kinds[route.origin]}; routes leave an IU")
        if route.destination not in kinds:
            problems.append(f"route {rid}: destination {route.destination!r} is not a plant of the instance")
        if route.origin == route.destination:
            problems.append(f"route {rid}: origin and destination are both {route.origin}")
        if not route.mode:
            problems.append(f"route {rid}: has no mode (e.g. road, rail)")
        freight = route.freight_cost_per_t
        figures = list(freight) if isinstance(freight, tuple | list) else [freight]
        if isinstance(freight, tuple | list) and len(figures) != n:
            problems.append(
                f"route {rid}: {len(figures)} freight costs for {n} periods; expected one or one per period"
            )
        for what, value in (
            *((f"freight_cost_per_t[{i}]", v) for i, v in enumerate(figures)),
            ("handling_cost_per_t", route.handling_cost_per_t),
            ("cost_per_trip", route.cost_per_trip),
            ("min_batch_t", route.min_batch_t),
        ):
            if not (isinstance(value, int | float) and math.isfinite(value) and value >= 0):
                problems.append(f"route {rid}: {what} is {value!r}, expected a finite figure ≥ 0")
        if not (math.isfinite(route.vehicle_capacity_t) and route.vehicle_capacity_t > 0):
            problems.append(f"route {rid}: vehicle_capacity_t is {route.vehicle_capacity_t!r}, expected > 0 t")
        if route.capacity_t is not None:
            if not route.capacity_t >= 0:
                problems.append(f"route {rid}: capacity_t is {route.capacity_t!r}, expected ≥ 0 t per period")
            elif route.min_batch_t > route.capacity_t:
                problems.append(
                    f"route {rid}: minimum batch {route.min_batch_t:,.0f} t is above its capacity "
                    f"{route.capacity_t:,.0f} t per period"
                )

    for i, bound in enumerate(instance.bounds):
        label = f"bound {i + 1}" + (f" ({bound.name})" if bound.name else "")
        if bound.scope not in BOUND_SCOPES:
            problems.append(f"{label}: scope {bound.scope!r}, expected one of {', '.join(BOUND_SCOPES)}")
        elif bound.scope in ("mode", "mode_share") and bound.target not in modes:
            problems.append(f"{label}: mode {bound.target!r} has no route (modes: {', '.join(sorted(modes))})")
        elif bound.scope == "route" and bound.target not in seen:
            problems.append(f"{label}: route {bound.target!r} is not in the instance")
        if bound.lower is None and bound.upper is None:
            problems.append(f"{label}: gives neither a lower nor an upper figure")
        if bound.lower is not None and bound.upper is not None and bound.lower > bound.upper:
            problems.append(f"{label}: lower {bound.lower:,} is above upper {bound.upper:,}")
        for value in (bound.lower, bound.upper):
            if value is not None and not value >= 0:
                problems.append(f"{label}: {value!r} is negative; bounds are ≥ 0")
            if bound.scope == "mode_share" and value is not None and value > 1:
                problems.append(f"{label}: share {value!r} is above 1; shares are fractions 0–1")
        for p in bound.periods:
            if p not in periods:
                problems.append(f"{label}: period {p!r} is not one of the plan's periods ({', '.join(periods)})")
    return problems


# ---------------------------------------------------------------------------------------------- arrays


@dataclass(frozen=True)
class _Arrays:
    """The instance as numpy arrays (P plants, R routes, T periods)."""

    periods: list[str]
    plants: list[str]
    kinds: np.ndarray  # (P,)
    iu: np.ndarray  # plant index of each IU (U,)
    opening: np.ndarray  # (P,)
    safety: np.ndarray
    max_stock: np.ndarray
    holding: np.ndarray
    capacity: np.ndarray  # (U, T)
    production_cost: np.ndarray  # (U,)
    demand: np.ndarray  # (P, T)
    route_ids: list[str]
    origin: np.ndarray  # plant index (R,)
    destination: np.ndarray
    modes: np.ndarray  # (R,) str
    unit_cost: np.ndarray  # freight + handling per t (R, T)
    vehicle: np.ndarray  # (R,)
    trip_cost: np.ndarray
    min_batch: np.ndarray
    big_m: np.ndarray  # (R, T): most a route can carry in a period

    @classmethod
    def of(cls, inst: SupplyInstance) -> _Arrays:
        periods = list(inst.periods)
        n_t = len(periods)
        plants = inst.plant_ids
        index = {p: i for i, p in enumerate(plants)}
        kinds = np.array([p.kind for p in inst.plants])
        iu = np.flatnonzero(kinds == "IU")
        demand = np.array([p.demand_t if p.demand_t else (0.0,) * n_t for p in inst.plants], dtype=float).reshape(
            len(plants), n_t
        )
        capacity = np.array([inst.plants[i].capacity_t for i in iu], dtype=float).reshape(iu.size, n_t)
        opening = np.array([p.opening_stock_t for p in inst.plants], dtype=float)
        max_stock = np.array([p.max_stock_t for p in inst.plants], dtype=float)
        routes = inst.routes
        origin = np.array([index[r.origin] for r in routes], dtype=np.int64)
        destination = np.array([index[r.destination] for r in routes], dtype=np.int64)
        freight = np.array(
            [np.broadcast_to(np.asarray(r.freight_cost_per_t, dtype=float), (n_t,)) for r in routes], dtype=float
        ).reshape(len(routes), n_t)
        handling = np.array([r.handling_cost_per_t for r in routes], dtype=float)
        # Big-M: the least of what the route may carry, what its origin could ever send in a period
        # (production capacity plus all the stock it may hold) and what its destination could take
        # (its storage plus the period's demand). An IU that receives clinker from another IU can pass it
        # on in the same month, so neither of its own figures bounds it; what bounds every route is all
        # the clinker that can exist by then (opening stock plus capacity so far), which a tonne crosses a
        # route at most once in an optimal plan (a cycle only adds cost).
        cap_full = np.zeros((len(plants), n_t))
        cap_full[iu] = capacity
        receives = np.bincount(destination, minlength=len(plants)) > 0
        origin_most = (
            cap_full[origin] + np.minimum(max_stock[origin], opening[origin] + cap_full[origin].sum(1))[:, None]
        )
        origin_most[receives[origin]] = np.inf
        destination_most = max_stock[destination][:, None] + demand[destination]
        destination_most[kinds[destination] == "IU"] = np.inf
        network_most = np.minimum(opening, max_stock).sum() + np.cumsum(cap_full.sum(axis=0))
        route_cap = np.array([np.inf if r.capacity_t is None else r.capacity_t for r in routes], dtype=float)
        big_m = np.minimum(np.minimum(origin_most, destination_most), route_cap[:, None])
        big_m = np.minimum(big_m, network_most[None, :]).reshape(len(routes), n_t)
        closed = np.array([r.closed for r in routes], dtype=bool)
        big_m[closed] = 0.0
        return cls(
            periods=periods,
            plants=plants,
            kinds=kinds,
            iu=iu,
            opening=opening,
            safety=np.array([p.safety_stock_t for p in inst.plants], dtype=float),
            max_stock=max_stock,
            holding=np.array([p.holding_cost_per_t for p in inst.plants], dtype=float),
            capacity=capacity,
            production_cost=np.array([inst.plants[i].production_cost_per_t for i in iu], dtype=float),
            demand=demand,
            route_ids=[r.route_id for r in routes],
            origin=origin,
            destination=destination,
            modes=np.array([r.mode for r in routes]) if routes else np.zeros(0, dtype=str),
            unit_cost=freight + handling[:, None],
            vehicle=np.array([r.vehicle_capacity_t for r in routes], dtype=float),
            trip_cost=np.array([r.cost_per_trip for r in routes], dtype=float),
            min_batch=np.array([r.min_batch_t for r in routes], dtype=float),
            big_m=big_m,
        )

    def route_label(self, r: int) -> str:
        return f"route {self.plants[self.origin[r]]}→{self.plants[self.destination[r]]} by {self.modes[r]}"


def _padded(groups: np.ndarray, members: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray]:
    """Members grouped into a rectangle: (n_groups, k) member indices and a 0/1 mask (padding is masked).

    Constraint terms are rectangular (row, k); a plant's routes in or out vary in number, so each row's
    list is padded with member 0 at coefficient 0, which the builder drops.
    """
    if members.size == 0:
        return np.zeros((n_groups, 1), dtype=np.int64), np.zeros((n_groups, 1))
    order = np.argsort(groups, kind="stable")
    g = groups[order]
    counts = np.bincount(g, minlength=n_groups)
    k = max(int(counts.max()), 1)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    rank = np.arange(g.size) - starts[g]
    index = np.zeros((n_groups, k), dtype=np.int64)
    mask = np.zeros((n_groups, k))
    index[g, rank] = members[order]
    mask[g, rank] = 1.0
    return index, mask


# ---------------------------------------------------------------------------------------------- model


@dataclass(frozen=True)
class SupplyModel:
    """The built model with what is needed to read its solution back."""

    instance: SupplyInstance
    model: LinearModel
    arrays: _Arrays = field(repr=False)
    batched: np.ndarray = field(repr=False)  # route indices that have a minimum batch (and a used binary)
    build_s: float = 0.0


def build_model(instance: SupplyInstance, *, check: bool = True) -> SupplyModel:
    """The MILP of the instance, from whole arrays (validated first unless ``check`` is False)."""
    if check and (problems := validate(instance)):
        raise InstanceError(instance.name, problems)
    started = time.perf_counter()
    a = _Arrays.of(instance)
    n_p, n_t, n_r = len(a.plants), len(a.periods), len(a.route_ids)
    periods = a.periods
    b = ModelBuilder(f"supply plan {instance.name}")

    # -- variables
    produce = b.variables("production_t", (a.iu.size, n_t), upper=a.capacity, cost=a.production_cost[:, None])
    hard = instance.safety_stock == "hard"
    stock = b.variables("stock_t", (n_p, n_t), upper=a.max_stock[:, None], cost=a.holding[:, None])
    ship = b.variables("shipped_t", (n_r, n_t), upper=a.big_m, cost=a.unit_cost)
    trips = b.variables(
        "trips",
        (n_r, n_t),
        upper=np.ceil(a.big_m / np.maximum(a.vehicle, 1e-9)[:, None] - 1e-9),
        cost=a.trip_cost[:, None],
        kind="integer",
    )
    batched = np.flatnonzero(a.min_batch > 0)
    used = b.variables("route_used", (batched.size, n_t), kind="binary", upper=(a.big_m[batched] > 0).astype(float))
    shortage = b.variables("shortage_t", (n_p, n_t), upper=a.demand, cost=instance.shortage_penalty_per_t)
    below_safety = b.variables(
        "below_safety_t",
        (n_p, n_t),
        upper=0.0 if hard else a.safety[:, None],
        cost=0.0 if hard else instance.safety_penalty_per_t,
    )

    t_of_row = np.tile(np.arange(n_t), n_p)
    p_of_row = np.repeat(np.arange(n_p), n_t)

    # -- stock balance: stock[p,t] − stock[p,t−1] − production − in + out − shortage = −demand (+ opening at t=0)
    previous = stock[:, np.maximum(np.arange(n_t) - 1, 0)]
    iu_of_plant = np.full(n_p, -1, dtype=np.int64)
    iu_of_plant[a.iu] = np.arange(a.iu.size)
    produce_cols = produce[np.maximum(iu_of_plant, 0)] if a.iu.size else stock  # (P, T); masked for non-IU
    produce_coef = np.where(iu_of_plant >= 0, -1.0, 0.0)[:, None] * np.ones(n_t)
    inflow, in_mask = _padded(a.destination, np.arange(n_r), n_p)
    outflow, out_mask = _padded(a.origin, np.arange(n_r), n_p)
    ship_safe = ship if n_r else stock[:1]
    # (P, k) route index → (P, T, k) ship column, as rows (P·T, k)
    in_cols = ship_safe[inflow][:, :, :].transpose(0, 2, 1).reshape(n_p * n_t, -1) if n_r else None
    out_cols = ship_safe[outflow].transpose(0, 2, 1).reshape(n_p * n_t, -1) if n_r else None
    rhs = -a.demand.copy()
    rhs[:, 0] += a.opening

    def balance_words(i: int) -> str:
        p, t = int(p_of_row[i]), int(t_of_row[i])
        parts = [f"opening {a.opening[p]:,.0f} t" if t == 0 else "stock carried over"]
        if a.demand[p, t]:
            parts.append(f"demand {a.demand[p, t]:,.0f} t")
        if iu_of_plant[p] >= 0:
            parts.append(f"capacity {a.capacity[iu_of_plant[p], t]:,.0f} t")
        return f"stock balance of {a.plants[p]} in {periods[t]} ({', '.join(parts)}, max stock {a.max_stock[p]:,.0f} t)"

    terms: list[tuple[np.ndarray, Any]] = [
        (stock.ravel(), 1.0),
        (previous.ravel(), np.where(t_of_row > 0, -1.0, 0.0)),
        (produce_cols.ravel(), produce_coef.ravel()),
        (shortage.ravel(), -1.0),
    ]
    if n_r:
        terms += [
            (in_cols, -np.repeat(in_mask, n_t, axis=0)),
            (out_cols, np.repeat(out_mask, n_t, axis=0)),
        ]
    b.constraints("stock_balance", terms, lower=rhs.ravel(), upper=rhs.ravel(), describe=balance_words)

    # -- safety stock: stock + below_safety ≥ safety (below_safety is fixed at 0 when hard)
    b.constraints(
        "safety_stock",
        [(stock.ravel(), 1.0), (below_safety.ravel(), 1.0)],
        lower=np.repeat(a.safety, n_t),
        describe=lambda i: (
            f"{a.plants[p_of_row[i]]} keeps at least {a.safety[p_of_row[i]]:,.0f} t of safety stock at the end of "
            f"{periods[t_of_row[i]]}"
        ),
    )

    if n_r:
        r_of_row = np.repeat(np.arange(n_r), n_t)
        tr_of_row = np.tile(np.arange(n_t), n_r)
        # -- trips: shipped ≤ trips · vehicle capacity
        b.constraints(
            "trip_capacity",
            [(ship.ravel(), 1.0), (trips.ravel(), -np.repeat(a.vehicle, n_t))],
            upper=0.0,
            describe=lambda i: (
                f"{a.route_label(r_of_row[i])} in {periods[tr_of_row[i]]}: the tonnes shipped fit in its trips of "
                f"{a.vehicle[r_of_row[i]]:,.0f} t"
            ),
        )
        # -- minimum batch when used, and nothing when not: min_batch·used ≤ shipped ≤ M·used
        if batched.size:
            rb = np.repeat(batched, n_t)
            tb = np.tile(np.arange(n_t), batched.size)
            b.constraints(
                "route_batch",
                [(ship[batched].ravel(), 1.0), (used.ravel(), -np.repeat(a.min_batch[batched], n_t))],
                lower=0.0,
                describe=lambda i: (
                    f"{a.route_label(rb[i])} carries at least {a.min_batch[rb[i]]:,.0f} t in {periods[tb[i]]} when used"
                ),
            )
            b.constraints(
                "route_used",
                [(ship[batched].ravel(), 1.0), (used.ravel(), -a.big_m[batched].ravel())],
                upper=0.0,
                describe=lambda i: (
                    f"{a.route_label(rb[i])} carries at most {a.big_m[rb[i], tb[i]]:,.0f} t in {periods[tb[i]]}, "
                    "and only when used"
                ),
            )
        _bounds(b, instance, a, ship)

    model = b.build()
    return SupplyModel(instance, model, a, batched, time.perf_counter() - started)


def _bounds(b: ModelBuilder, instance: SupplyInstance, a: _Arrays, ship: np.ndarray) -> None:
    """Global, mode and route bounds as rows over (bound, period), and mode shares, one family per scope.

    The loop is over the planner's bounds (a handful), never over coefficients: each row's routes come
    from one padded index array.
    """
    n_t = len(a.periods)
    for scope in BOUND_SCOPES:
        rows_route: list[np.ndarray] = []  # per row, the routes it sums
        rows_t: list[int] = []
        lower: list[float] = []
        upper: list[float] = []
        words: list[str] = []
        for number, bound in enumerate(instance.bounds, start=1):
            if bound.scope != scope:
                continue
            if scope == "global":
                members = np.arange(len(a.route_ids))
                what = "all routes together carry"
            elif scope == "route":
                members = np.array([a.route_ids.index(bound.target)])
                what = f"{a.route_label(int(members[0]))} ({bound.target}) carries"
            else:
                members = np.flatnonzero(a.modes == bound.target)
                what = f"{bound.target} carries" if scope == "mode" else f"{bound.target}'s share of all tonnes is"
            label = f" [{bound.name or f'bound {number}'}]"
            for t in [a.periods.index(p) for p in bound.periods] if bound.periods else range(n_t):
                rows_route.append(members)
                rows_t.append(t)
                lower.append(-np.inf if bound.lower is None else float(bound.lower))
                upper.append(np.inf if bound.upper is None else float(bound.upper))
                if scope == "mode_share":
                    span = " and ".join(
                        s
                        for s in (
                            f"at least {bound.lower:.0%}" if bound.lower is not None else "",
                            f"at most {bound.upper:.0%}" if bound.upper is not None else "",
                        )
                        if s
                    )
                else:
                    span = " and ".join(
                        s
                        for s in (
                            f"at least {bound.lower:,.0f} t" if bound.lower is not None else "",
                            f"at most {bound.upper:,.0f} t" if bound.upper is not None else "",
                        )
                        if s
                    )
                words.append(f"{what} {span} in {a.periods[t]}{label}")
        if not rows_route:
            continue
        m = len(rows_route)
        groups = np.concatenate([np.full(r.size, i) for i, r in enumerate(rows_route)])
        members_all = np.concatenate(rows_route)
        index, mask = _padded(groups, members_all, m)
        t_arr = np.array(rows_t)
        cols = ship[index, t_arr[:, None]]
        family = {"global": "global_bounds", "mode": "mode_bounds", "route": "route_bounds"}.get(scope, "mode_shares")
        if scope != "mode_share":
            b.constraints(
                family, [(cols, mask)], lower=np.array(lower), upper=np.array(upper), describe=lambda i, w=words: w[i]
            )
            continue
        # share: lo·Σall ≤ Σmode ≤ hi·Σall  →  Σmode − lo·Σall ≥ 0 and Σmode − hi·Σall ≤ 0
        all_cols = ship[:, t_arr].T  # (m, R)
        lo = np.nan_to_num(np.array(lower), neginf=0.0)
        hi = np.array(upper)
        b.constraints(
            family + "_min",
            [(cols, mask), (all_cols, -lo[:, None])],
            lower=np.where(np.isfinite(np.array(lower)), 0.0, -np.inf),
            describe=lambda i, w=words: w[i],
        )
        b.constraints(
            family + "_max",
            [(cols, mask), (all_cols, -np.nan_to_num(hi, posinf=1.0)[:, None])],
            upper=np.where(np.isfinite(hi), 0.0, np.inf),
            describe=lambda i, w=words: w[i],
        )


# ---------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class SupplyPlan:
    """A solved plan: the solution, its tables (polars) and its cost by component."""

    built: SupplyModel
    solution: Solution
    violations: tuple[Violation, ...] = ()  # why there is no plan (infeasible), in the planner's words

    @property
    def instance(self) -> SupplyInstance:
        return self.built.instance

    @property
    def status(self) -> str:
        return str(self.solution.status)

    def metadata(self) -> dict[str, Any]:
        meta = self.solution.metadata(self.built.build_s)
        if self.solution.status.has_solution:
            meta.update({f"cost_{k}": round(v, 2) for k, v in self.cost_by_component().items()})
            meta["shortage_t"] = round(float(self.solution.values("shortage_t").sum()), 3)
        if self.violations:
            meta["why_no_plan"] = "; ".join(v.description for v in self.violations)
        return meta

    def cost_by_component(self) -> dict[str, float]:
        """production, holding, transport (freight + handling), trips, shortage and safety penalties."""
        a, s, inst = self.built.arrays, self.solution, self.instance
        shortage = s.values("shortage_t")
        return {
            "production": float((s.values("production_t") * a.production_cost[:, None]).sum()),
            "holding": float((s.values("stock_t") * a.holding[:, None]).sum()),
            "transport": float((s.values("shipped_t") * a.unit_cost).sum()),
            "trips": float((s.values("trips") * a.trip_cost[:, None]).sum()),
            "shortage_penalty": float(shortage.sum() * inst.shortage_penalty_per_t),
            "safety_penalty": float(s.values("below_safety_t").sum() * inst.safety_penalty_per_t),
        }

    def tables(self) -> dict[str, Any]:
        """production, stock, shipments (with trips), shortages as polars frames; periods as YYYY-MM."""
        import polars as pl

        a, s = self.built.arrays, self.solution
        n_t = len(a.periods)
        periods = np.array(a.periods)
        prod = s.values("production_t")
        production = pl.DataFrame(
            {
                "plant_id": np.repeat(np.array(a.plants)[a.iu], n_t),
                "period": np.tile(periods, a.iu.size),
                "production_t": _clean(prod).ravel(),
                "capacity_t": a.capacity.ravel(),
                "cost": (prod * a.production_cost[:, None]).ravel(),
            },
            schema={
                "plant_id": pl.String,
                "period": pl.String,
                "production_t": pl.Float64,
                "capacity_t": pl.Float64,
                "cost": pl.Float64,
            },
        )
        stock = s.values("stock_t")
        n_p = len(a.plants)
        stock_frame = pl.DataFrame(
            {
                "plant_id": np.repeat(np.array(a.plants), n_t),
                "period": np.tile(periods, n_p),
                "closing_stock_t": _clean(stock).ravel(),
                "safety_stock_t": np.repeat(a.safety, n_t),
                "max_stock_t": np.repeat(a.max_stock, n_t),
                "below_safety_t": _clean(s.values("below_safety_t")).ravel(),
                "holding_cost": (stock * a.holding[:, None]).ravel(),
            },
            schema={
                "plant_id": pl.String,
                "period": pl.String,
                "closing_stock_t": pl.Float64,
                "safety_stock_t": pl.Float64,
                "max_stock_t": pl.Float64,
                "below_safety_t": pl.Float64,
                "holding_cost": pl.Float64,
            },
        )
        n_r = len(a.route_ids)
        shipped = s.values("shipped_t")
        trips = s.values("trips")
        shipments = pl.DataFrame(
            {
                "route_id": np.repeat(np.array(a.route_ids, dtype=object), n_t).astype(str),
                "origin": np.repeat(np.array(a.plants, dtype=object)[a.origin], n_t).astype(str),
                "destination": np.repeat(np.array(a.plants, dtype=object)[a.destination], n_t).astype(str),
                "mode": np.repeat(a.modes, n_t).astype(str),
                "period": np.tile(periods, n_r).astype(str),
                "shipped_t": _clean(shipped).ravel(),
                "trips": trips.ravel().astype(np.int64),
                "transport_cost": (shipped * a.unit_cost).ravel(),
                "trip_cost": (trips * a.trip_cost[:, None]).ravel(),
            },
            schema={
                "route_id": pl.String,
                "origin": pl.String,
                "destination": pl.String,
                "mode": pl.String,
                "period": pl.String,
                "shipped_t": pl.Float64,
                "trips": pl.Int64,
                "transport_cost": pl.Float64,
                "trip_cost": pl.Float64,
            },
        ).filter(pl.col("shipped_t") > 0)
        short = s.values("shortage_t")
        shortages = pl.DataFrame(
            {
                "plant_id": np.repeat(np.array(a.plants), n_t),
                "period": np.tile(periods, n_p),
                "demand_t": a.demand.ravel(),
                "shortage_t": _clean(short).ravel(),
            },
            schema={"plant_id": pl.String, "period": pl.String, "demand_t": pl.Float64, "shortage_t": pl.Float64},
        ).filter(pl.col("shortage_t") > 0)
        return {"production": production, "stock": stock_frame, "shipments": shipments, "shortages": shortages}

    def summary_markdown(self, top: int = 15) -> str:
        """What a planner reads first: status, cost by component, tonnes by mode and period, the largest
        lanes and every shortage."""
        s = self.solution
        lines = [f"**Supply plan {self.instance.name}**: {s.status}"]
        if s.objective is not None:
            gap = f", gap {100 * s.gap:.2f} %" if s.gap is not None else ""
            lines[0] += f", total cost {s.objective:,.0f} {self.instance.currency}{gap}"
        if not s.status.has_solution:
            lines += ["", "No plan: " + (s.message or str(s.status))]
            lines += [f"- {v.description} (off by {v.amount:,.0f})" for v in self.violations]
            return "\n".join(lines)
        import polars as pl

        tables = self.tables()
        lines += ["", "| cost component | amount |", "|---|---:|"]
        lines += [f"| {k} | {v:,.0f} |" for k, v in self.cost_by_component().items()]
        ships = tables["shipments"]
        if ships.height:
            by_mode = ships.pivot(on="period", index="mode", values="shipped_t", aggregate_function="sum").fill_null(0)
            periods = [c for c in by_mode.columns if c != "mode"]
            lines += ["", "Tonnes shipped by mode:", "", "| mode | " + " | ".join(periods) + " |"]
            lines += ["|---|" + "---:|" * len(periods)]
            for row in by_mode.sort("mode").iter_rows(named=True):
                lines.append(f"| {row['mode']} | " + " | ".join(f"{row[p]:,.0f}" for p in periods) + " |")
            lanes = (
                ships.group_by("origin", "destination", "mode")
                .agg(pl.col("shipped_t").sum(), pl.col("trips").sum())
                .sort("shipped_t", descending=True)
                .head(top)
            )
            lines += [
                "",
                f"Largest lanes (top {top}):",
                "",
                "| from | to | mode | tonnes | trips |",
                "|---|---|---|---:|---:|",
            ]
            lines += [
                f"| {r['origin']} | {r['destination']} | {r['mode']} | {r['shipped_t']:,.0f} | {r['trips']:,} |"
                for r in lanes.iter_rows(named=True)
            ]
        short = tables["shortages"]
        if short.height:
            lines += [
                "",
                f"Unmet demand: {short['shortage_t'].sum():,.0f} t",
                "",
                "| plant | period | demand t | short t |",
                "|---|---|---:|---:|",
            ]
            lines += [
                f"| {r['plant_id']} | {r['period']} | {r['demand_t']:,.0f} | {r['shortage_t']:,.0f} |"
                for r in short.sort("shortage_t", descending=True).head(top).iter_rows(named=True)
            ]
        else:
            lines += ["", "All demand met."]
        return "\n".join(lines)


def _clean(values: np.ndarray) -> np.ndarray:
    """Solver noise (1e-10 t, −0.0) reads as zero in a plan table."""
    out = np.where(np.abs(values) < 1e-6, 0.0, values)
    return np.round(out, 6)


def plan(instance: SupplyInstance, options: SolverOptions | None = None) -> SupplyPlan:
    """Validate, build and solve; an infeasible plan comes back with its explanation (``violations``)."""
    options = options or SolverOptions(mip_rel_gap=0.01)
    built = build_model(instance)
    solution = solve(built.model, options)
    violations: tuple[Violation, ...] = ()
    if solution.status.value == "infeasible":
        violations = tuple(explain(built, options))
    return SupplyPlan(built, solution, violations)


def explain(built: SupplyModel, options: SolverOptions | None = None, limit: int = 10) -> list[Violation]:
    """Why the plan is infeasible: the bounds and policies that must give, in the planner's words.

    Stock balances and the trip/batch linking rows state how the network works; they are made far dearer to
    violate than the planner's bounds, so the answer names the bound that conflicts, not a balance.
    """
    model = built.model
    weights = {name: _DEFINITIONAL_WEIGHT for name in _DEFINITIONAL}
    # The elastic model is an LP relaxation question: integrality is kept off so that it solves fast and the
    # slack reflects the bounds, not trip rounding.
    relaxed = replace(model, integrality=np.zeros_like(model.integrality))
    found = explain_infeasibility(relaxed, options, limit=limit, family_weights=weights)
    if found:
        return found
    # Feasible once trips and batches may be fractional: the conflict is a whole rake or truck (a minimum
    # batch above what a bound allows), which only the integer elastic model shows.
    return explain_infeasibility(model, options, limit=limit, family_weights=weights)


# ---------------------------------------------------------------------------------------------- files


def instance_to_dict(instance: SupplyInstance) -> dict[str, Any]:
    def plain(obj: Any) -> Any:
        if isinstance(obj, float) and math.isinf(obj):
            return None
        if isinstance(obj, tuple | list):
            return [plain(v) for v in obj]
        return obj

    data = {"format": FORMAT}
    for f in dataclasses.fields(instance):
        value = getattr(instance, f.name)
        if f.name in ("plants", "routes", "bounds"):
            data[f.name] = [{k: plain(v) for k, v in dataclasses.asdict(item).items()} for item in value]
        else:
            data[f.name] = plain(value)
    return data


def instance_from_dict(data: Mapping[str, Any], source: str = "instance") -> SupplyInstance:
    """An instance from its JSON form; unknown or missing fields are errors that name the item."""
    problems: list[str] = []
    if data.get("format", FORMAT) != FORMAT:
        problems.append(f"{source}: format {data.get('format')!r}, expected {FORMAT!r}")

    def build(cls: type, item: Any, where: str) -> Any:
        if not isinstance(item, Mapping):
            problems.append(f"{source}: {where} is not an object")
            return None
        names = {f.name for f in dataclasses.fields(cls)}
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        unknown = sorted(set(item) - names)
        missing = sorted(required - set(item))
        if unknown:
            problems.append(f"{source}: {where} has unknown field(s) {unknown}; known: {sorted(names)}")
        if missing:
            problems.append(f"{source}: {where} lacks required field(s) {missing}")
        if unknown or missing:
            return None
        values = {}
        for k, v in item.items():
            if isinstance(v, list):
                v = tuple(v)
            if k == "max_stock_t" and v is None:
                v = math.inf
            values[k] = v
        return cls(**values)

    top = {f.name for f in dataclasses.fields(SupplyInstance)} | {"format"}
    unknown = sorted(set(data) - top)
    if unknown:
        problems.append(f"{source}: unknown top-level field(s) {unknown}; known: {sorted(top)}")
    for key in ("name", "periods", "plants", "routes"):
        if key not in data:
            problems.append(f"{source}: lacks {key!r}")
    if problems:
        raise InstanceError(str(data.get("name", source)), problems)
    plants = tuple(
        build(Plant, p, f"plant {i + 1} ({p.get('plant_id', '?') if isinstance(p, Mapping) else '?'})")
        for i, p in enumerate(data["plants"])
    )
    routes = tuple(
        build(Route, r, f"route {i + 1} ({r.get('route_id', '?') if isinstance(r, Mapping) else '?'})")
        for i, r in enumerate(data["routes"])
    )
    bounds = tuple(build(Bound, b, f"bound {i + 1}") for i, b in enumerate(data.get("bounds", ())))
    if problems:
        raise InstanceError(str(data["name"]), problems)
    settings = {
        k: data[k] for k in ("shortage_penalty_per_t", "safety_stock", "safety_penalty_per_t", "currency") if k in data
    }
    return SupplyInstance(
        name=str(data["name"]),
        periods=tuple(data["periods"]),
        plants=plants,
        routes=routes,
        bounds=bounds,
        **settings,
    )


def load_instance(path: str | Path) -> SupplyInstance:
    """Read an instance file (docs/optimization/supply.md describes the format); validated when built."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InstanceError(path.name, [f"{path}: not JSON: {exc}"]) from None
    if not isinstance(data, Mapping):
        raise InstanceError(path.name, [f"{path}: the file holds a {type(data).__name__}, expected an object"])
    return instance_from_dict(data, str(path))


def save_instance(instance: SupplyInstance, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(instance_to_dict(instance), indent=2) + "\n")
    return path


# ---------------------------------------------------------------------------------------------- generated


def generated_instance(
    integrated: int = 20,
    grinding: int = 60,
    periods: int = 12,
    *,
    seed: int = 7,
    road_per_gu: int = 3,
    rail_per_gu: int = 1,
    start: str = "2027-01",
) -> SupplyInstance:
    """A random but plausible network (for the benchmark and the time-limit test): each GU reached by road
    from its nearest IUs and by rail from one more; a rail share cap; demand ≈ 85 % of capacity."""
    rng = np.random.default_rng(seed)
    year, month = int(start[:4]), int(start[5:7])
    labels = tuple(f"{year + (month - 1 + t) // 12:04d}-{(month - 1 + t) % 12 + 1:02d}" for t in range(periods))
    iu_xy = rng.uniform(0, 1000, (integrated, 2))
    gu_xy = rng.uniform(0, 1000, (grinding, 2))
    base = rng.uniform(60_000, 120_000, grinding) / 4  # demand t per month
    season = 1 + 0.15 * np.sin(2 * np.pi * (np.arange(periods) + month - 1) / 12)
    demand = np.round(base[:, None] * season[None, :] * rng.uniform(0.9, 1.1, (grinding, periods)), -1)
    total = demand.sum(axis=0).max()
    share = rng.dirichlet(np.full(integrated, 4.0))
    capacity = np.round(share[:, None] * total / 0.85 * rng.uniform(0.9, 1.0, (integrated, periods)), -1)
    plants = [
        Plant(
            f"IU{i + 1:02d}",
            "IU",
            opening_stock_t=float(np.round(capacity[i, 0] * 0.2, -1)),
            safety_stock_t=float(np.round(capacity[i, 0] * 0.05, -1)),
            max_stock_t=float(np.round(capacity[i, 0] * 0.6, -1)),
            holding_cost_per_t=40.0,
            capacity_t=tuple(float(c) for c in capacity[i]),
            production_cost_per_t=float(np.round(rng.uniform(2600, 3400), 0)),
        )
        for i in range(integrated)
    ] + [
        Plant(
            f"GU{g + 1:02d}",
            "GU",
            opening_stock_t=float(np.round(demand[g, 0] * 0.3, -1)),
            safety_stock_t=float(np.round(demand[g, 0] * 0.15, -1)),
            max_stock_t=float(np.round(demand[g, 0] * 0.8, -1)),
            holding_cost_per_t=60.0,
            demand_t=tuple(float(d) for d in demand[g]),
        )
        for g in range(grinding)
    ]
    routes: list[Route] = []
    # Small networks still get rail: fewer road lanes per GU than there are IUs.
    road_per_gu = min(road_per_gu, max(integrated - rail_per_gu, 1))
    for g in range(grinding):
        distance = np.hypot(*(iu_xy - gu_xy[g]).T) + 20
        order = np.argsort(distance)
        for i in order[:road_per_gu]:
            routes.append(
                Route(
                    f"IU{i + 1:02d}-GU{g + 1:02d}-ROAD",
                    f"IU{i + 1:02d}",
                    f"GU{g + 1:02d}",
                    "ROAD",
                    freight_cost_per_t=float(np.round(distance[i] * 3.2, 2)),
                    handling_cost_per_t=60.0,
                    vehicle_capacity_t=32.0,
                    cost_per_trip=1500.0,
                )
            )
        for i in order[road_per_gu : road_per_gu + rail_per_gu]:
            routes.append(
                Route(
                    f"IU{i + 1:02d}-GU{g + 1:02d}-RAIL",
                    f"IU{i + 1:02d}",
                    f"GU{g + 1:02d}",
                    "RAIL",
                    freight_cost_per_t=float(np.round(distance[i] * 1.4, 2)),
                    handling_cost_per_t=120.0,
                    vehicle_capacity_t=3800.0,
                    cost_per_trip=90_000.0,
                    min_batch_t=3800.0,
                )
            )
    bounds = (Bound("mode_share", "RAIL", upper=0.45, name="rail share cap"),)
    return SupplyInstance(
        name=f"generated {integrated} IU × {grinding} GU × {periods} periods (seed {seed})",
        periods=labels,
        plants=tuple(plants),
        routes=tuple(routes),
        bounds=bounds,
    )
