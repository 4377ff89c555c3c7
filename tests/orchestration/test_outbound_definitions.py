"""Outbound in the hub's definitions: its assets, jobs and schedules load with billing's and the ERP's clients."""

import dagster as dg

from contracts.outbound import BILLING_ALERTS_KEY, ERP_PLAN_CONFIRMATIONS_KEY, ERP_PUMP_DOWNTIME_KEY
from orchestration.definitions import defs


def test_outbound_assets_jobs_and_schedules_are_in_the_hub():
    graph = defs.resolve_asset_graph()
    for key in (BILLING_ALERTS_KEY, ERP_PUMP_DOWNTIME_KEY, ERP_PLAN_CONFIRMATIONS_KEY):
        assert graph.has(key)
        assert graph.get(key).group_name == "outbound"
    # The catalog lists the ledger once, though every outbound asset writes it.
    catalog = graph.get(dg.AssetKey(["exports", "analyst_catalog"]))
    tables = catalog.metadata["lake_tables"].split(", ")
    assert tables.count("outbound.deliveries") == 1 and tables.count("outbound.dead_letters") == 1
    assert {BILLING_ALERTS_KEY, ERP_PUMP_DOWNTIME_KEY, ERP_PLAN_CONFIRMATIONS_KEY} <= set(catalog.parent_keys)
    jobs = {"outbound_billing_alerts_job", "outbound_erp_downtime_job", "outbound_plan_confirmation_job"}
    assert jobs <= {job.name for job in defs.resolve_all_job_defs()}
    schedules = {s.name: s for s in defs.schedules}
    assert schedules["outbound_billing_alerts_daily"].cron_schedule == "30 2 * * *"
    assert schedules["outbound_erp_downtime_daily"].cron_schedule == "15 1 * * *"
    # The plan confirmations are never scheduled: a planner approves them.
    assert all(s.job_name != "outbound_plan_confirmation_job" for s in schedules.values())
