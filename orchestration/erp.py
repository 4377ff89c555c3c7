"""The ERP's contribution to the hub: the clinker network's tables, their checks, jobs, schedules and the
two clients (the OData service and the SQL database), as one Definitions."""

import os
from datetime import UTC, timedelta

import dagster as dg

from assets import erp
from assets.partitions import daily
from contracts.erp import (
    DEMAND_FORECASTS_KEY,
    INVENTORY_KEY,
    MAINTENANCE_SHUTDOWNS_KEY,
    PLANTS_KEY,
    PRODUCTION_CAPACITY_KEY,
    ROUTES_KEY,
)
from orchestration.settings import local_timezone
from quality.erp import erp_checks
from resources.erp import ErpODataClient
from resources.erp_sql import ErpSqlReader

SOURCE_TAGS = {"source": "erp"}
# A change back-dated by the ERP (a posting corrected the next morning) still lands: every morning the
# daily job reads yesterday again as well as today.
LOOKBACK_DAYS = 1

erp_reference_job = dg.define_asset_job(
    "erp_reference_job",
    selection=dg.AssetSelection.assets(PLANTS_KEY, ROUTES_KEY),
    description="Refresh the plants and routes of the clinker network from the ERP, with their checks.",
    tags=SOURCE_TAGS,
)

erp_daily_job = dg.define_asset_job(
    "erp_daily_job",
    selection=dg.AssetSelection.assets(
        DEMAND_FORECASTS_KEY, INVENTORY_KEY, PRODUCTION_CAPACITY_KEY, MAINTENANCE_SHUTDOWNS_KEY
    ),
    partitions_def=daily,
    description="Load the chosen UTC days' demand forecast revisions, stock, capacity and kiln shutdowns.",
    tags=SOURCE_TAGS,
)

erp_reference_daily = dg.ScheduleDefinition(
    name="erp_reference_daily",
    job=erp_reference_job,
    cron_schedule="0 5 * * *",
    execution_timezone=local_timezone(),
    description="Refresh plants and routes every morning, local time.",
)


@dg.schedule(
    name="erp_daily",
    job=erp_daily_job,
    cron_schedule="30 5 * * *",
    execution_timezone=local_timezone(),
    description="After the reference refresh, load yesterday again (late postings) and today so far, as one run.",
)
def erp_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    today = context.scheduled_execution_time.astimezone(UTC).date()
    first = (today - timedelta(days=LOOKBACK_DAYS)).isoformat()
    return dg.RunRequest(
        run_key=f"{first}…{today.isoformat()}@{context.scheduled_execution_time.isoformat()}",
        tags={
            "dagster/asset_partition_range_start": first,
            "dagster/asset_partition_range_end": today.isoformat(),
        },
    )


def _optional(**fields: str) -> dict[str, dg.EnvVar]:
    """Resource fields bound to the environment variables that are set (their values stay in the
    environment: Dagster resolves an EnvVar when a run starts, and the UI shows only its name)."""
    return {name: dg.EnvVar(variable) for name, variable in fields.items() if os.environ.get(variable)}


defs = dg.Definitions(
    assets=list(erp.ASSETS),
    asset_checks=erp_checks(daily),
    jobs=[erp_reference_job, erp_daily_job],
    schedules=[erp_reference_daily, erp_daily],
    resources={
        # Basic auth (user and password) or a bearer token, whichever the environment provides.
        "erp": ErpODataClient(
            base_url=dg.EnvVar("ERP_ODATA_BASE_URL"),
            **_optional(user="ERP_ODATA_USER", password="ERP_ODATA_PASSWORD", token="ERP_ODATA_TOKEN"),
        ),
        "erp_sql": ErpSqlReader(url=dg.EnvVar("ERP_SQL_URL"), **_optional(db_schema="ERP_SQL_SCHEMA")),
    },
)
