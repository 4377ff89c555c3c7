"""The single Definitions of the integration hub: every asset, check, job, schedule, sensor and resource.

Loading this module must stay cheap (every run and sensor tick re-imports it): heavy libraries are
imported inside the functions that use them.
"""

import dagster as dg

from assets import catalog, dmama
from assets.partitions import daily, hourly
from orchestration.jobs import JOBS
from orchestration.schedules import SCHEDULES
from orchestration.settings import catalog_path, lake_dir, local_timezone
from quality.dmama import dmama_checks
from resources.catalog import AnalystCatalog
from resources.dmama import DmamaClient
from resources.lake import Lake


def resources() -> dict[str, dg.ConfigurableResource]:
    """Resources configured from the environment; secrets only ever come from there."""
    return {
        "lake": Lake(root=str(lake_dir())),
        "catalog": AnalystCatalog(path=str(catalog_path()), local_timezone=local_timezone()),
        "dmama": DmamaClient(
            base_url=dg.EnvVar("DMAMA_BASE_URL"),
            api_key=dg.EnvVar("DMAMA_API_KEY"),
            client_id=dg.EnvVar("DMAMA_CLIENT_ID"),
            client_secret=dg.EnvVar("DMAMA_CLIENT_SECRET"),
        ),
    }


def build_definitions(resources_override: dict | None = None) -> dg.Definitions:
    """The hub's Definitions; ``resources_override`` swaps resources (tests point them elsewhere)."""
    return dg.Definitions(
        assets=[dmama.dmas, dmama.meters, dmama.flow_readings, dmama.meter_readings, catalog.analyst_catalog],
        asset_checks=dmama_checks(hourly, daily),
        jobs=JOBS,
        schedules=SCHEDULES,
        resources={**resources(), **(resources_override or {})},
    )


defs = build_definitions()
