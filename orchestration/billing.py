"""Billing's contribution to the hub: meter readings, monthly consumption and customers, their checks,
jobs, schedules and clients, as one Definitions."""

import dagster as dg

from assets import billing
from contracts.billing import CONSUMPTION_MONTHLY_KEY, CUSTOMERS_KEY, METER_READINGS_KEY
from quality.billing import billing_checks
from resources.billing import BillingClient, CustomerPseudonymizer

SOURCE_TAGS = {"source": "billing"}

billing_readings_job = dg.define_asset_job(
    "billing_readings_job",
    selection=dg.AssetSelection.assets(METER_READINGS_KEY),
    partitions_def=billing.reading_days,
    description="Load the closing registers of the chosen UTC days, compute consumption (rollovers counted, "
    "implausible decreases rejected) and check them.",
    tags=SOURCE_TAGS,
)

billing_monthly_job = dg.define_asset_job(
    "billing_monthly_job",
    selection=dg.AssetSelection.assets(CONSUMPTION_MONTHLY_KEY),
    partitions_def=billing.billing_months,
    description="Load the billed consumption of the chosen UTC months per customer and per DMA, with checks.",
    tags=SOURCE_TAGS,
)

billing_customers_job = dg.define_asset_job(
    "billing_customers_job",
    selection=dg.AssetSelection.assets(CUSTOMERS_KEY),
    description="Sync the customers changed since the last sync (personal data dropped or hashed), with checks.",
    tags=SOURCE_TAGS,
)

# Partitions are UTC days and months, so the schedules run on UTC: the day closed at 00:00 UTC is loaded
# at 01:30, the month closed at 00:00 UTC on the 1st is loaded on the 2nd (bills are cut meanwhile).
billing_readings_daily = dg.build_schedule_from_partitioned_job(
    billing_readings_job, name="billing_readings_daily", hour_of_day=1, minute_of_hour=30
)
billing_monthly_schedule = dg.build_schedule_from_partitioned_job(
    billing_monthly_job, name="billing_monthly", day_of_month=2, hour_of_day=2, minute_of_hour=0
)
billing_customers_daily = dg.ScheduleDefinition(
    name="billing_customers_daily",
    job=billing_customers_job,
    cron_schedule="0 1 * * *",
    execution_timezone="UTC",
    description="Every night, fetch the customer records changed since the last sync.",
)

defs = dg.Definitions(
    assets=[billing.meter_readings, billing.consumption_monthly, billing.customers],
    asset_checks=billing_checks(billing.reading_days, billing.billing_months),
    jobs=[billing_readings_job, billing_monthly_job, billing_customers_job],
    schedules=[billing_readings_daily, billing_monthly_schedule, billing_customers_daily],
    resources={
        "billing": BillingClient(
            base_url=dg.EnvVar("BILLING_BASE_URL"),
            username=dg.EnvVar("BILLING_USERNAME"),
            password=dg.EnvVar("BILLING_PASSWORD"),
        ),
        "billing_pii": CustomerPseudonymizer(hash_key=dg.EnvVar("BILLING_PII_HASH_KEY")),
    },
)
