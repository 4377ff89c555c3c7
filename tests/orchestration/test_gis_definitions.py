"""The GIS part of the hub's definitions: loads without geopandas, the weekly job and schedule."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime

import dagster as dg

from orchestration import gis as gis_defs
from orchestration.definitions import defs


def test_definitions_load_without_geopandas_shapely_or_pyogrio():
    code = (
        "import sys, orchestration.definitions as d; "
        "d.defs.resolve_job_def('gis_weekly_job'); "
        "print(sorted(m for m in ('geopandas', 'shapely', 'pyogrio', 'pyproj') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_the_weekly_job_covers_the_whole_gis_group():
    job = defs.resolve_job_def("gis_weekly_job")
    keys = {key.to_user_string() for key in job.asset_layer.selected_asset_keys}
    assert keys == {
        "gis/dma_boundaries",
        "gis/pipes",
        "gis/meters",
        "gis/valves",
        "gis/facilities",
        "gis/meter_dma",
        "gis/dma_overlaps",
        "gis/dma_network",
        "gis/geojson_export",
    }
    assert len(gis_defs.gis.weekly.get_partition_keys(current_time=datetime(2036, 1, 1, tzinfo=UTC))) < 100_000


def test_the_monday_schedule_asks_for_the_week_it_runs_in():
    tick = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)  # a Monday
    context = dg.build_schedule_context(scheduled_execution_time=tick, repository_def=defs.get_repository_def())
    request = gis_defs.gis_weekly.evaluate_tick(context).run_requests[0]
    assert request.partition_key == "2026-12-07"
    window = gis_defs.gis.weekly.time_window_for_partition_key(request.partition_key)
    assert window.start <= tick < window.end
