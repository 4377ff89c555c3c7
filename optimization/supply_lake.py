"""The supply plan's instance from the lake: what the ERP and markets assets landed, as a `SupplyInstance`.

- plants (erp_plants): kind, stock bounds, production cost; nameplate capacity when no monthly capacity
  is known;
- capacity (erp_production_capacity): the latest version per IU and month (kiln stops already taken off);
- demand (erp_demand_forecasts): the highest revision per plant and month made before the plan is drawn
  up (``as_of``); a GU or hub without a forecast for a month of the horizon stops the plan (a missing
  forecast is not zero demand);
- opening stock (erp_inventory): each plant's latest stock before the first month, else the master
  data's opening stock;
- routes (erp_routes): freight, handling, vehicle, trip cost, minimum batch. Road freight follows fuel:
  for each month, distance × markets' road freight per tonne-km of the latest week starting before the
  month (the last known week for months beyond the data); without market figures the ERP's figure.

Quantities come as exact decimals from the ERP and go to the model as floats (tonnes to 1 g).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime
from typing import Any

import polars as pl

from contracts.erp import DEMAND_FORECASTS, INVENTORY, PLANTS, PRODUCTION_CAPACITY, ROUTES
from contracts.markets import ROAD_FREIGHT_COSTS
from optimization.supply import Bound, InstanceError, Plant, Route, SupplyInstance
from resources.lake import Lake

__all__ = ["DEFAULT_HOLDING_COST_INR_PER_T", "instance_from_lake", "month_starts"]

# The ERP keeps no holding cost; this is the cost of capital and storage of a tonne of clinker for a month
# (~1.5 % of ₹3,500/t), a planning parameter overridable per run.
DEFAULT_HOLDING_COST_INR_PER_T = 50.0


def month_starts(first: date, count: int) -> list[date]:
    out = []
    year, month = first.year, first.month
    for _ in range(count):
        out.append(date(year, month, 1))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


def _f(value: Any) -> float:
    return 0.0 if value is None else float(value)


def instance_from_lake(
    lake: Lake,
    first_month: date,
    horizon: int = 3,
    *,
    as_of: datetime | None = None,
    holding_cost_per_t: float = DEFAULT_HOLDING_COST_INR_PER_T,
    shortage_penalty_per_t: float = 20_000.0,
    safety_stock: str = "soft",
    bounds: Sequence[Bound] = (),
    name: str | None = None,
) -> tuple[SupplyInstance, dict[str, Any]]:
    """The instance for ``horizon`` months from ``first_month`` and figures saying where inputs came from."""
    if not 1 <= horizon <= 12:
        raise InstanceError("lake", [f"horizon of {horizon} months: a supply plan covers 1 to 12 monthly periods"])
    months = month_starts(first_month.replace(day=1), horizon)
    labels = [f"{m:%Y-%m}" for m in months]
    as_of = as_of or datetime.now(UTC)
    problems: list[str] = []

    plants = lake.read(PLANTS).sort("plant_id")
    routes = lake.read(ROUTES).sort("route_id")
    if plants.height == 0:
        raise InstanceError("lake", ["erp_plants is empty: materialize erp/plants first"])
    if routes.height == 0:
        raise InstanceError("lake", ["erp_routes is empty: materialize erp/routes first"])

    demand = lake.read(DEMAND_FORECASTS).filter(pl.col("period_start").is_in(months) & (pl.col("changed_at") < as_of))
    in_force = demand.sort("revision").group_by("plant_id", "period_start").agg(pl.col("demand_t").last())
    demand_of = {(p, d): float(v) for p, d, v in in_force.iter_rows()}

    capacity = lake.read(PRODUCTION_CAPACITY).filter(
        pl.col("period_start").is_in(months) & (pl.col("changed_at") < as_of)
    )
    latest_cap = capacity.sort("changed_at").group_by("plant_id", "period_start").agg(pl.col("capacity_t").last())
    capacity_of = {(p, d): float(v) for p, d, v in latest_cap.iter_rows()}

    stock = lake.read(INVENTORY).filter(pl.col("stock_date") < months[0])
    latest_stock = (
        stock.sort("stock_date").group_by("plant_id").agg(pl.col("stock_t").last(), pl.col("stock_date").last())
    )
    stock_of = {p: (float(v), d) for p, v, d in latest_stock.iter_rows()}

    capacity_from_nameplate = 0
    built: list[Plant] = []
    for row in plants.iter_rows(named=True):
        pid, kind = row["plant_id"], row["plant_kind"]
        opening = stock_of.get(pid, (_f(row["opening_stock_t"]), None))[0]
        cap: tuple[float, ...] = ()
        dem: tuple[float, ...] = ()
        if kind == "IU":
            figures = []
            for m in months:
                if (pid, m) in capacity_of:
                    figures.append(capacity_of[(pid, m)])
                elif row["clinker_capacity_t_per_month"] is not None:
                    capacity_from_nameplate += 1
                    figures.append(_f(row["clinker_capacity_t_per_month"]))
                else:
                    problems.append(f"plant {pid}: no production capacity for {m:%Y-%m} and no nameplate capacity")
                    figures.append(0.0)
            cap = tuple(figures)
        else:
            figures = []
            for m in months:
                if (pid, m) not in demand_of:
                    problems.append(
                        f"plant {pid}: no demand forecast for {m:%Y-%m} made before {as_of:%Y-%m-%d %H:%M} UTC "
                        "(materialize erp/demand_forecasts for the days it was issued)"
                    )
                figures.append(demand_of.get((pid, m), 0.0))
            dem = tuple(figures)
        built.append(
            Plant(
                plant_id=pid,
                kind=kind,
                opening_stock_t=opening,
                safety_stock_t=_f(row["safety_stock_t"]),
                max_stock_t=_f(row["max_stock_t"]),
                holding_cost_per_t=holding_cost_per_t,
                capacity_t=cap,
                production_cost_per_t=_f(row["production_cost_inr_per_t"]),
                demand_t=dem,
            )
        )
    if problems:
        raise InstanceError(name or f"lake plan from {labels[0]}", problems)

    freight = lake.read(ROAD_FREIGHT_COSTS).sort("week_start")
    weeks = freight["week_start"].to_list()
    rates = freight["freight_inr_per_tonne_km"].to_list()
    road_rate: list[float | None] = []
    for m in months:
        before = [r for w, r in zip(weeks, rates, strict=True) if w < m]
        road_rate.append(before[-1] if before else (rates[0] if rates else None))

    built_routes: list[Route] = []
    road_from_markets = 0
    for row in routes.iter_rows(named=True):
        cost: float | tuple[float, ...] = _f(row["freight_cost_inr_per_t"])
        if row["mode"] == "ROAD" and row["distance_km"] is not None and all(r is not None for r in road_rate):
            cost = tuple(round(float(row["distance_km"]) * float(r), 2) for r in road_rate)
            road_from_markets += 1
        built_routes.append(
            Route(
                route_id=row["route_id"],
                origin=row["origin_plant_id"],
                destination=row["destination_plant_id"],
                mode=row["mode"],
                freight_cost_per_t=cost,
                handling_cost_per_t=_f(row["handling_cost_inr_per_t"]),
                vehicle_capacity_t=_f(row["vehicle_capacity_t"]),
                cost_per_trip=_f(row["cost_per_trip_inr"]),
                min_batch_t=_f(row["min_batch_t"]),
            )
        )
    instance = SupplyInstance(
        name=name or f"clinker plan {labels[0]}…{labels[-1]}",
        periods=tuple(labels),
        plants=tuple(built),
        routes=tuple(built_routes),
        bounds=tuple(bounds),
        shortage_penalty_per_t=shortage_penalty_per_t,
        safety_stock=safety_stock,
    )
    inputs = {
        "plants": len(built),
        "routes": len(built_routes),
        "periods": ", ".join(labels),
        "demand_t": round(sum(sum(p.demand_t) for p in built), 3),
        "capacity_t": round(sum(sum(p.capacity_t) for p in built), 3),
        "capacity_months_from_nameplate": capacity_from_nameplate,
        "opening_stock_from_inventory": sum(1 for p in built if p.plant_id in stock_of),
        "road_routes_costed_from_markets": road_from_markets,
        "road_freight_inr_per_tonne_km": ", ".join("-" if r is None else f"{r:.4f}" for r in road_rate),
        "as_of": as_of.isoformat(),
    }
    return instance, inputs
