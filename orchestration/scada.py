"""SCADA's contribution to the hub: window and historian assets, their checks, jobs, sensor and clients.

The window assets, their checks and ``scada_window_job`` share the hourly partitions: the sensor's run
for one window materializes that window's hour, so the UI shows which hours are in. No window length is
configured here: every step takes it from the manifest of the window it processes.
"""

import dagster as dg

from assets import scada
from assets.partitions import hourly
from orchestration.settings import spool_dir
from quality.scada import historian_checks, scada_point_checks
from resources.historian import HistorianClient
from resources.scada_spool import ScadaWindows
from sensors.scada_window import scada_window_sensor

scada_window_job = dg.define_asset_job(
    "scada_window_job",
    selection=dg.AssetSelection.assets(scada.points, scada.point_aggregates, scada.window_alerts),
    partitions_def=hourly,
    description="Load SCADA receive windows into the lake, check, aggregate and alert: the one window its "
    "scada/window tag names (the sensor's runs), or every window of the hour (a run launched for an hour).",
    tags={"source": "scada"},
    # Small and latency-bound (window close → run done within seconds): one process, no per-step spawn.
    executor_def=dg.in_process_executor,
)

scada_historian_job = dg.define_asset_job(
    "scada_historian_job",
    selection=dg.AssetSelection.assets(scada.historian_points),
    description="Backfill or repair SCADA history from the historian for the chosen hours, with checks.",
    tags={"source": "scada_historian"},
)

defs = dg.Definitions(
    assets=[scada.points, scada.point_aggregates, scada.window_alerts, scada.historian_points],
    asset_checks=[scada_point_checks(hourly), historian_checks(hourly)],
    jobs=[scada_window_job, scada_historian_job],
    sensors=[scada_window_sensor(scada_window_job)],
    resources={
        # Where the collector publishes its windows; the name stays, the contract replaced the spool's internals.
        "scada_spool": ScadaWindows(root=str(spool_dir())),
        "historian": HistorianClient(base_url=dg.EnvVar("HISTORIAN_BASE_URL"), api_key=dg.EnvVar("HISTORIAN_API_KEY")),
    },
)
