"""Concurrency pools: a source's limit holds for runs launched from the asset graph, not only named jobs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import dagster as dg
import pytest

from ihub.environment import REPO_ROOT, write_instance_config

STEP = "dmama__flow_readings"


def _step_span(instance: dg.DagsterInstance, run_id: str) -> tuple[float, float]:
    """From the step's start to its materialization: both happen while the step holds its pool slot.

    Not to STEP_SUCCESS: the slot is freed as the step's work ends, and on a loaded machine the other run
    can claim it and start before this run has written its success event (seen: 0.6 s of apparent overlap).
    """
    started = ended = None
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None or entry.step_key != STEP:
            continue
        if event.event_type_value == "STEP_START":
            started = entry.timestamp
        if event.event_type_value == "ASSET_MATERIALIZATION":
            ended = entry.timestamp
    assert started is not None and ended is not None, f"run {run_id} has no {STEP} step that started and materialized"
    return started, ended


@pytest.mark.slow
def test_the_source_pool_holds_for_materializations_launched_from_the_asset_graph(dmama_env, data_dir):
    """`dagster asset materialize` runs the asset graph's own job, as the UI's Materialize button and asset
    backfills do: no named job, no source tag. Two such runs of dmama/flow_readings with the dmama pool
    set to one step (`dagster instance concurrency set dmama 1`) load one after the other."""
    home = data_dir / "dagster"
    home.mkdir(parents=True)
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    env.pop("DAGSTER_PG_URL", None)
    env.pop("DAGSTER_PG_HOST", None)
    write_instance_config(home, env)
    dagster = str(Path(sys.executable).with_name("dagster"))
    materialize = [dagster, "asset", "materialize", "-m", "orchestration.definitions", "--select"]
    limit = subprocess.run(
        [dagster, "instance", "concurrency", "set", "dmama", "1"], env=env, capture_output=True, text=True
    )
    assert limit.returncode == 0, limit.stderr[-2000:]
    catalogue = subprocess.run(
        [*materialize, "dmama/dmas,dmama/meters"], env=env, capture_output=True, text=True, cwd=REPO_ROOT
    )
    assert catalogue.returncode == 0, catalogue.stderr[-2000:]
    # Every reading request waits, so without the pool the two runs would certainly load at the same time.
    dmama_env.simulator.inject("slow", path="/api/dma/*/readings", count=1000, delay_s=0.4)
    runs = [
        subprocess.Popen(
            [*materialize, "dmama/flow_readings", "--partition", key],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
        )
        for key in ("2026-03-02-19:00", "2026-03-02-20:00")
    ]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-2000:]
    os.environ["DAGSTER_HOME"], saved = str(home), os.environ.get("DAGSTER_HOME")
    try:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            records = instance.fetch_materializations(dg.AssetKey(["dmama", "flow_readings"]), limit=10).records
            assert sorted(r.partition_key for r in records) == ["2026-03-02-19:00", "2026-03-02-20:00"]
            spans = sorted(_step_span(instance, r.run_id) for r in records)
            assert instance.event_log_storage.get_concurrency_info("dmama").slot_count == 1
    finally:
        if saved is None:
            os.environ.pop("DAGSTER_HOME")
        else:
            os.environ["DAGSTER_HOME"] = saved
    (_, first_end), (second_start, _) = spans
    assert second_start >= first_end, spans  # the second run waits for the first one's slot
