"""The supply plan's tables in the lake (layer ``plans``): what the plan decided, per scenario.

Every table is filed by scenario (static partition ``scenario=<name>``) and by the plan's first month
(``plan_start``, a monthly partition), so scenarios of the same month sit side by side and a re-run of a
scenario replaces only its own files. Tonnes are ``_t``, money INR.
"""

from __future__ import annotations

import dagster as dg
import polars as pl

from resources.lake import Column, LakeTable

SUPPLY_PLAN_KEY = dg.AssetKey(["plans", "supply_plan"])


def _keys(what: str) -> tuple[Column, ...]:
    return (
        Column(
            "scenario",
            pl.String(),
            "Scenario name (base = the ERP's figures as they are).",
            nullable=False,
            identifier=True,
        ),
        Column("plan_start", pl.Date(), "First month of the plan (the Dagster partition).", nullable=False),
        Column("period_start", pl.Date(), f"Month {what}.", nullable=False),
    )


PLAN_PRODUCTION = LakeTable(
    layer="plans",
    name="supply_plan_production",
    description="Clinker each integrated unit is planned to make per month, against its capacity.",
    columns=(
        *_keys("of production"),
        Column("plant_id", pl.String(), "Integrated unit (IU).", nullable=False, identifier=True),
        Column("production_t", pl.Float64(), "Clinker to make in the month, tonnes.", nullable=False),
        Column("capacity_t", pl.Float64(), "Capacity in the month, tonnes.", nullable=False),
        Column("cost_inr", pl.Float64(), "Production cost, INR.", nullable=False),
    ),
    key=("scenario", "plan_start", "period_start", "plant_id"),
    time_column="plan_start",
    static_column="scenario",
)

PLAN_STOCK = LakeTable(
    layer="plans",
    name="supply_plan_stock",
    description="Planned closing stock of every plant per month, with its safety and maximum stock.",
    columns=(
        *_keys("whose end the stock is"),
        Column("plant_id", pl.String(), "Plant.", nullable=False, identifier=True),
        Column("closing_stock_t", pl.Float64(), "Stock at the end of the month, tonnes.", nullable=False),
        Column("safety_stock_t", pl.Float64(), "Safety stock, tonnes.", nullable=False),
        Column("max_stock_t", pl.Float64(), "Storage capacity, tonnes.", nullable=False),
        Column("below_safety_t", pl.Float64(), "How far the stock ends below safety stock, tonnes.", nullable=False),
        Column("holding_cost_inr", pl.Float64(), "Cost of holding the closing stock a month, INR.", nullable=False),
    ),
    key=("scenario", "plan_start", "period_start", "plant_id"),
    time_column="plan_start",
    static_column="scenario",
)

PLAN_SHIPMENTS = LakeTable(
    layer="plans",
    name="supply_plan_shipments",
    description="Planned clinker shipments per route and month: tonnes, trips and their cost (routes used only).",
    columns=(
        *_keys("of the shipment"),
        Column("route_id", pl.String(), "ERP route code.", nullable=False, identifier=True),
        Column("origin_plant_id", pl.String(), "Integrated unit it leaves.", nullable=False),
        Column("destination_plant_id", pl.String(), "Plant it goes to.", nullable=False),
        Column("mode", pl.String(), "ROAD, RAIL or SEA.", nullable=False),
        Column("shipped_t", pl.Float64(), "Tonnes shipped in the month.", nullable=False),
        Column("trips", pl.Int64(), "Trucks or rakes dispatched in the month.", nullable=False),
        Column("transport_cost_inr", pl.Float64(), "Freight and handling, INR.", nullable=False),
        Column("trip_cost_inr", pl.Float64(), "Fixed cost of the trips, INR.", nullable=False),
    ),
    key=("scenario", "plan_start", "period_start", "route_id"),
    time_column="plan_start",
    static_column="scenario",
)

PLAN_SHORTAGES = LakeTable(
    layer="plans",
    name="supply_plan_shortages",
    description="Demand the plan cannot meet, per plant and month (only months with a shortage).",
    columns=(
        *_keys("of the shortage"),
        Column("plant_id", pl.String(), "Grinding unit or hub.", nullable=False, identifier=True),
        Column("demand_t", pl.Float64(), "Demand in the month, tonnes.", nullable=False),
        Column("shortage_t", pl.Float64(), "Demand left unmet, tonnes.", nullable=False),
    ),
    key=("scenario", "plan_start", "period_start", "plant_id"),
    time_column="plan_start",
    static_column="scenario",
)

PLAN_COSTS = LakeTable(
    layer="plans",
    name="supply_plan_costs",
    description=(
        "The plan's cost by component (production, holding, transport, trips, shortage and safety penalties) "
        "with the solver's status and gap: one row per component, to compare scenarios side by side."
    ),
    columns=(
        Column("scenario", pl.String(), "Scenario name.", nullable=False, identifier=True),
        Column("plan_start", pl.Date(), "First month of the plan.", nullable=False),
        Column("component", pl.String(), "Cost component.", nullable=False, identifier=True),
        Column("cost_inr", pl.Float64(), "Amount, INR.", nullable=False),
        Column("solver", pl.String(), "highs or cbc.", nullable=False),
        Column("solver_status", pl.String(), "optimal, or feasible when stopped by the time limit.", nullable=False),
        Column("gap_pct", pl.Float64(), "Relative gap to the best bound, percent (null when unknown)."),
        Column("demand_uplift_pct", pl.Float64(), "Scenario: demand scaled by this percentage.", nullable=False),
        Column("closed_routes", pl.String(), "Scenario: routes closed, comma-separated.", nullable=False),
    ),
    key=("scenario", "plan_start", "component"),
    time_column="plan_start",
    static_column="scenario",
)

TABLES = (PLAN_PRODUCTION, PLAN_STOCK, PLAN_SHIPMENTS, PLAN_SHORTAGES, PLAN_COSTS)
