"""Outbound's contribution to the hub: anomaly alerts to billing, pump downtime and approved supply plans to the
ERP, their jobs and schedules, as one Definitions. The clients are billing's and the ERP's own resources
(``billing``, ``erp``), defined by those sources, so outbound messages share their sessions and policies."""

import dagster as dg

from assets import outbound
from assets.billing import reading_days
from contracts.outbound import BILLING_ALERTS_KEY, ERP_PLAN_CONFIRMATIONS_KEY, ERP_PUMP_DOWNTIME_KEY

SOURCE_TAGS = {"source": "outbound"}

billing_alerts_job = dg.define_asset_job(
    "outbound_billing_alerts_job",
    selection=dg.AssetSelection.assets(BILLING_ALERTS_KEY),
    partitions_def=reading_days,
    description="Send the chosen days' leak suspicions and meter anomalies to billing (once each; a re-run "
    "resends only the dead letters).",
    tags=SOURCE_TAGS,
)

erp_downtime_job = dg.define_asset_job(
    "outbound_erp_downtime_job",
    selection=dg.AssetSelection.assets(ERP_PUMP_DOWNTIME_KEY),
    partitions_def=reading_days,
    description="Send the chosen days' pump downtime from SCADA to the ERP (once each).",
    tags=SOURCE_TAGS,
)

plan_confirmation_job = dg.define_asset_job(
    "outbound_plan_confirmation_job",
    selection=dg.AssetSelection.assets(ERP_PLAN_CONFIRMATIONS_KEY),
    description="Confirm an approved supply plan to the ERP: launch with approve: true and the approver's name.",
    tags=SOURCE_TAGS,
)

# After the billing readings of the day are in (01:30 UTC) and SCADA's last hour of the day has closed.
billing_alerts_daily = dg.build_schedule_from_partitioned_job(
    billing_alerts_job, name="outbound_billing_alerts_daily", hour_of_day=2, minute_of_hour=30
)
erp_downtime_daily = dg.build_schedule_from_partitioned_job(
    erp_downtime_job, name="outbound_erp_downtime_daily", hour_of_day=1, minute_of_hour=15
)

defs = dg.Definitions(
    assets=list(outbound.ASSETS),
    jobs=[billing_alerts_job, erp_downtime_job, plan_confirmation_job],
    schedules=[billing_alerts_daily, erp_downtime_daily],
)
