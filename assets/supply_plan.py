"""The clinker supply plan as a Dagster asset: checked ERP and markets data in, a plan per scenario out.

One partition per plan start month. The run first refuses to plan if a blocking check on any input failed
(assets/upstream_checks.py), then builds the instance from the lake (optimization/supply_lake.py), applies
the scenario of the run config (demand uplift, closed routes, solver), solves it and writes the plan
tables under the scenario's name, so scenarios of one month sit side by side in the lake and the catalog.
The run's metadata carries the model's size and solve figures, cost by component, a Markdown summary of
shipments, the chart (also written as a PNG next to the plan) and the scenarios of the month compared.
"""

import base64
import re
from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl
from pydantic import Field

from assets.lake_tables import lake_metadata
from assets.partitions import HISTORY_START
from assets.upstream_checks import require_upstream_checks
from contracts.erp import DEMAND_FORECASTS_KEY, INVENTORY_KEY, PLANTS_KEY, PRODUCTION_CAPACITY_KEY, ROUTES_KEY
from contracts.markets import ROAD_FREIGHT_COSTS_KEY
from contracts.supply_plan import (
    PLAN_COSTS,
    PLAN_PRODUCTION,
    PLAN_SHIPMENTS,
    PLAN_SHORTAGES,
    PLAN_STOCK,
    SUPPLY_PLAN_KEY,
)
from resources.lake import Lake, time_windows

OWNER = "team:supply-chain"
UPSTREAM = (
    PLANTS_KEY,
    ROUTES_KEY,
    DEMAND_FORECASTS_KEY,
    INVENTORY_KEY,
    PRODUCTION_CAPACITY_KEY,
    ROAD_FREIGHT_COSTS_KEY,
)
# A plan is drawn up for next month at the latest: the partition of the month after the current one exists.
plan_months = dg.MonthlyPartitionsDefinition(start_date=HISTORY_START, end_offset=2)
_SCENARIO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$")


class SupplyPlanConfig(dg.Config):
    """A scenario: what to change from the ERP's figures and how to solve. Defaults give the base plan."""

    scenario: str = "base"
    demand_uplift_pct: float = 0.0
    closed_routes: list[str] = Field(default_factory=list)
    solver: str = "highs"
    time_limit_s: float = 60.0
    mip_rel_gap: float = 0.01
    horizon_months: int = 3
    max_rail_share: float | None = None  # e.g. 0.4: rail carries at most 40 % of the tonnes each month
    safety_stock: str = "soft"
    holding_cost_inr_per_t: float = 50.0
    shortage_penalty_inr_per_t: float = 20_000.0


@dg.asset(
    key=SUPPLY_PLAN_KEY,
    group_name="plans",
    owners=[OWNER],
    kinds={"highs", "parquet"},
    partitions_def=plan_months,
    deps=list(UPSTREAM),
    metadata=lake_metadata(PLAN_SHIPMENTS, PLAN_PRODUCTION, PLAN_STOCK, PLAN_SHORTAGES, PLAN_COSTS),
    tags={"layer": "plans"},
    pool="optimization",
)
def supply_plan(context: dg.AssetExecutionContext, config: SupplyPlanConfig, lake: Lake) -> dg.MaterializeResult:
    """The clinker supply plan for the months from this partition's: how much each integrated unit makes,
    what is shipped on which route by road or rail in how many trucks and rakes, the stock each plant ends
    the month with, and the demand that cannot be met, at least cost (production, holding, freight and
    handling, trips, and a price on every tonne short). Read from the ERP's plants, routes, demand forecast,
    stock and capacity, with road freight following the fuel price. Not computed if a blocking check on any
    of those inputs failed. Run config makes a scenario (demand uplift, closed routes, rail share cap,
    solver), kept side by side with the others under its name."""
    from optimization.solver import SolverOptions
    from optimization.supply import Bound, InstanceError, plan
    from optimization.supply_lake import instance_from_lake
    from optimization.supply_report import shipments_png

    if not _SCENARIO.match(config.scenario):
        raise dg.Failure(f"scenario name {config.scenario!r}: letters, digits, - and _ only (it names lake folders)")
    check_report = require_upstream_checks(context, UPSTREAM, None)
    window = context.partition_time_window
    first = window.start.astimezone(UTC).date()
    bounds = (
        [Bound("mode_share", "RAIL", upper=config.max_rail_share, name="rail share cap")]
        if config.max_rail_share is not None
        else []
    )
    try:
        instance, inputs = instance_from_lake(
            lake,
            first,
            config.horizon_months,
            # The plan uses what the ERP knew before its first month began (a re-run gives the same plan).
            as_of=min(window.start, datetime.now(UTC)),
            holding_cost_per_t=config.holding_cost_inr_per_t,
            shortage_penalty_per_t=config.shortage_penalty_inr_per_t,
            safety_stock=config.safety_stock,
            bounds=bounds,
            name=f"{first:%Y-%m} {config.scenario}",
        )
        instance = instance.with_overrides(
            demand_uplift_pct=config.demand_uplift_pct, closed_routes=config.closed_routes
        )
        options = SolverOptions(solver=config.solver, time_limit_s=config.time_limit_s, mip_rel_gap=config.mip_rel_gap)
        result = plan(instance, options)
    except (InstanceError, ValueError) as exc:
        raise dg.Failure(f"plans/supply_plan {context.partition_key} [{config.scenario}]: {exc}") from exc
    if not result.solution.status.has_solution:
        raise dg.Failure(
            description=f"plans/supply_plan {context.partition_key} [{config.scenario}]: no plan "
            f"({result.solution.status}). " + (result.metadata().get("why_no_plan") or result.solution.message),
            metadata=result.metadata(),
        )

    keys = {"scenario": config.scenario, "plan_start": first}
    tables = result.tables()

    def framed(frame: pl.DataFrame, renames: dict[str, str]) -> pl.DataFrame:
        return frame.rename(renames).with_columns(
            pl.lit(config.scenario).alias("scenario"),
            pl.lit(first).alias("plan_start"),
            pl.col("period").str.to_date("%Y-%m").alias("period_start"),
        )

    windows = time_windows(plan_months, window.start, window.end)
    frames = {
        PLAN_PRODUCTION: framed(tables["production"], {"cost": "cost_inr"}),
        PLAN_STOCK: framed(tables["stock"], {"holding_cost": "holding_cost_inr"}),
        PLAN_SHIPMENTS: framed(
            tables["shipments"],
            {
                "origin": "origin_plant_id",
                "destination": "destination_plant_id",
                "transport_cost": "transport_cost_inr",
                "trip_cost": "trip_cost_inr",
            },
        ),
        PLAN_SHORTAGES: framed(tables["shortages"], {}),
    }
    costs = result.cost_by_component()
    frames[PLAN_COSTS] = pl.DataFrame(
        {
            "component": list(costs),
            "cost_inr": list(costs.values()),
            "solver": result.solution.solver,
            "solver_status": str(result.solution.status),
            "gap_pct": None if result.solution.gap is None else 100 * result.solution.gap,
            "demand_uplift_pct": config.demand_uplift_pct,
            "closed_routes": ",".join(config.closed_routes),
        },
        schema_overrides={"gap_pct": pl.Float64},
    ).with_columns(**{k: pl.lit(v) for k, v in keys.items()})
    for table, frame in frames.items():
        lake.replace_partitions(table, frame, windows, static_key=config.scenario)

    png = shipments_png(result)
    summary = result.summary_markdown()
    report_dir = f"plans/supply_plan_reports/scenario={config.scenario}/date={first:%Y-%m-%d}"
    png_at = lake.storage.write(f"{report_dir}/shipments.png", png)
    lake.storage.write(f"{report_dir}/summary.md", summary.encode())

    return dg.MaterializeResult(
        metadata={
            **result.metadata(),
            **{f"input_{k}": v for k, v in inputs.items()},
            **check_report.metadata(),
            "scenario": config.scenario,
            "demand_uplift_pct": config.demand_uplift_pct,
            "closed_routes": ", ".join(config.closed_routes) or "none",
            "shipped_t": round(float(tables["shipments"]["shipped_t"].sum()), 3),
            "dagster/row_count": tables["shipments"].height,
            "shipments_summary": dg.MetadataValue.md(summary),
            "shipments_chart": dg.MetadataValue.md(
                f"![shipments by mode](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"
            ),
            "shipments_chart_file": dg.MetadataValue.path(str(png_at)),
            "scenarios_side_by_side": dg.MetadataValue.md(_side_by_side(lake, windows)),
        }
    )


def _side_by_side(lake: Lake, windows) -> str:
    """Every scenario planned for this month so far, cost by component in columns."""
    start = windows[0].start
    costs = lake.read(PLAN_COSTS, start, start + timedelta(days=1))
    if costs.height == 0:
        return "no scenarios"
    wide = costs.pivot(on="scenario", index="component", values="cost_inr", aggregate_function="sum").fill_null(0)
    scenarios = sorted(c for c in wide.columns if c != "component")
    lines = ["| component | " + " | ".join(scenarios) + " |", "|---|" + "---:|" * len(scenarios)]
    for row in wide.iter_rows(named=True):
        lines.append(f"| {row['component']} | " + " | ".join(f"{row[s]:,.0f}" for s in scenarios) + " |")
    totals = [sum(r[s] for r in wide.iter_rows(named=True)) for s in scenarios]
    lines.append("| **total** | " + " | ".join(f"**{t:,.0f}**" for t in totals) + " |")
    return "\n".join(lines)


ASSETS = (supply_plan,)
