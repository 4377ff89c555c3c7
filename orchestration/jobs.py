"""Jobs: the units schedules, backfills and the demo launch."""

import dagster as dg

from quality.dmama import DMAS_KEY, FLOW_READINGS_KEY, METER_READINGS_KEY, METERS_KEY

ANALYST_CATALOG_KEY = dg.AssetKey(["exports", "analyst_catalog"])
SOURCE_TAGS = {"source": "dmama"}

dmama_catalogue_job = dg.define_asset_job(
    "dmama_catalogue_job",
    selection=dg.AssetSelection.assets(DMAS_KEY, METERS_KEY),
    description="Refresh the DMA catalogue and the meter list from DMAMA, with their checks.",
    tags=SOURCE_TAGS,
)

dmama_readings_job = dg.define_asset_job(
    "dmama_readings_job",
    selection=dg.AssetSelection.assets(FLOW_READINGS_KEY),
    description="Load DMA flow and pressure readings for the chosen hours, with their checks.",
    tags=SOURCE_TAGS,
)

dmama_meter_readings_job = dg.define_asset_job(
    "dmama_meter_readings_job",
    selection=dg.AssetSelection.assets(METER_READINGS_KEY),
    description="Load hourly meter register readings for the chosen days, with their checks.",
    tags=SOURCE_TAGS,
)

analyst_catalog_job = dg.define_asset_job(
    "analyst_catalog_job",
    selection=dg.AssetSelection.assets(ANALYST_CATALOG_KEY),
    description="Publish the analysts' DuckDB catalog over the lake.",
)

scada_window_job = dg.define_asset_job(
    "scada_window_job",
    selection=dg.AssetSelection.assets(
        dg.AssetKey(["scada", "points"]),
        dg.AssetKey(["scada", "point_aggregates"]),
        dg.AssetKey(["scada", "window_alerts"]),
    ),
    description="Load one sealed SCADA spool window (tag scada/window) into the lake; check, aggregate, alert.",
    tags={"source": "scada"},
    # Small and latency-bound (window close → run done within seconds): one process, no per-step spawn.
    executor_def=dg.in_process_executor,
)

scada_historian_job = dg.define_asset_job(
    "scada_historian_job",
    selection=dg.AssetSelection.assets(dg.AssetKey(["scada", "historian_points"])),
    description="Backfill or repair SCADA history from the historian for the chosen hours, with checks.",
    tags={"source": "scada_historian"},
)

JOBS = [
    dmama_catalogue_job,
    dmama_readings_job,
    dmama_meter_readings_job,
    analyst_catalog_job,
    scada_window_job,
    scada_historian_job,
]
