"""SCADA's contribution to the hub: window and historian assets, their checks, jobs, sensor and clients."""

import dagster as dg

from assets import scada
from assets.partitions import hourly
from collector.spool import window_start
from orchestration.settings import spool_dir, spool_window_s
from quality.scada import historian_checks, scada_point_checks
from resources.historian import HistorianClient
from resources.scada_spool import ScadaSpool
from sensors.scada_window import scada_window_sensor

scada_window_job = dg.define_asset_job(
    "scada_window_job",
    selection=dg.AssetSelection.assets(scada.points, scada.point_aggregates, scada.window_alerts),
    description="Load one sealed SCADA spool window (tag scada/window) into the lake; check, aggregate, alert.",
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
    asset_checks=[scada_point_checks(window_start, spool_window_s()), historian_checks(hourly)],
    jobs=[scada_window_job, scada_historian_job],
    sensors=[scada_window_sensor(scada_window_job)],
    resources={
        "scada_spool": ScadaSpool(root=str(spool_dir()), window_s=spool_window_s()),
        "historian": HistorianClient(base_url=dg.EnvVar("HISTORIAN_BASE_URL"), api_key=dg.EnvVar("HISTORIAN_API_KEY")),
    },
)
