"""The single Definitions of the integration hub: every asset, check, job, schedule, sensor and resource.

Loading this module must stay cheap (every run and sensor tick re-imports it): heavy libraries are
imported inside the functions that use them.
"""

import dagster as dg

from assets import catalog, dmama, scada
from assets.partitions import daily, hourly
from collector.spool import window_start
from orchestration.jobs import JOBS, scada_window_job
from orchestration.schedules import SCHEDULES
from orchestration.settings import catalog_path, lake_dir, local_timezone, notifier_channels, spool_dir, spool_window_s
from quality.dmama import dmama_checks
from quality.scada import historian_checks, scada_point_checks
from resources.catalog import AnalystCatalog
from resources.dmama import DmamaClient
from resources.historian import HistorianClient
from resources.lake import Lake
from resources.notifier import Notifier
from resources.scada_spool import ScadaSpool
from sensors.scada_window import scada_window_sensor


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
        "scada_spool": ScadaSpool(root=str(spool_dir()), window_s=spool_window_s()),
        "historian": HistorianClient(base_url=dg.EnvVar("HISTORIAN_BASE_URL"), api_key=dg.EnvVar("HISTORIAN_API_KEY")),
        "notifier": Notifier(channels=notifier_channels()),
    }


def build_definitions(resources_override: dict | None = None) -> dg.Definitions:
    """The hub's Definitions; ``resources_override`` swaps resources (tests point them elsewhere)."""
    return dg.Definitions(
        assets=[
            dmama.dmas,
            dmama.meters,
            dmama.flow_readings,
            dmama.meter_readings,
            scada.points,
            scada.point_aggregates,
            scada.window_alerts,
            scada.historian_points,
            catalog.analyst_catalog,
        ],
        asset_checks=[*dmama_checks(hourly, daily), scada_point_checks(window_start), historian_checks(hourly)],
        jobs=JOBS,
        schedules=SCHEDULES,
        sensors=[scada_window_sensor(scada_window_job)],
        resources={**resources(), **(resources_override or {})},
    )


defs = build_definitions()
