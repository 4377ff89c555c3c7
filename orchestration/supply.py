"""The supply plan's contribution to the hub: the plan asset (group ``plans``) and a job that runs it for a
month, with a scenario from the run config, as one Definitions."""

import dagster as dg

from assets import supply_plan
from contracts.supply_plan import SUPPLY_PLAN_KEY

supply_plan_job = dg.define_asset_job(
    "supply_plan_job",
    selection=dg.AssetSelection.assets(SUPPLY_PLAN_KEY),
    partitions_def=supply_plan.plan_months,
    description=(
        "Plan clinker production and shipments from a month on, from the checked ERP and markets data. "
        "Launch with run config (ops.plans__supply_plan.config) to plan a scenario: demand_uplift_pct, "
        "closed_routes, max_rail_share, solver, scenario (its name in the lake)."
    ),
    tags={"layer": "plans"},
)

defs = dg.Definitions(assets=list(supply_plan.ASSETS), jobs=[supply_plan_job])
