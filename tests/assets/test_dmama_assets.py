"""DMAMA assets and checks, materialized through Dagster against the real simulator on loopback."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from assets import catalog, dmama
from assets.lake_tables import lake_tables_by_asset
from assets.partitions import daily, hourly
from contracts.dmama import DMAS, FLOW_READINGS, METER_READINGS, METERS
from quality.conform import rejects_table
from quality.dmama import dmama_checks
from resources.catalog import AnalystCatalog
from resources.lake import Lake
from tests.conftest import dmama_client

HOUR = "2026-03-02-19:00"  # 02:00 local: night flow
HOUR_START = datetime(2026, 3, 2, 19, tzinfo=UTC)
CHECKS = dmama_checks(hourly, daily)


def materialize(assets, resources, instance, partition_key=None, tags=None, raise_on_error=True):
    return dg.materialize(
        [*assets, *CHECKS],
        selection=dg.AssetSelection.assets(*assets),
        partition_key=partition_key,
        resources=resources,
        instance=instance,
        tags=tags,
        raise_on_error=raise_on_error,
    )


def range_tags(first: str, last: str) -> dict[str, str]:
    return {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}


def checks_of(result) -> dict[str, bool]:
    return {f"{e.asset_key.path[-1]}:{e.check_name}": e.passed for e in result.get_asset_check_evaluations()}


def metadata_of(result, asset_name: str) -> dict:
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == asset_name)
    return {k: v.value for k, v in event.materialization.metadata.items()}


@pytest.fixture(scope="module")
def catalogue_template(server, tmp_path_factory):
    """The DMA catalogue and meter list materialized once per module (with their GX checks)."""
    root = tmp_path_factory.mktemp("catalogue")
    resources = {
        "dmama": dmama_client(server),
        "lake": Lake(root=str(root / "lake")),
        "catalog": AnalystCatalog(path=str(root / "catalog.duckdb")),
    }
    with dg.instance_for_test() as instance:
        return materialize([dmama.dmas, dmama.meters], resources, instance), root / "lake"


@pytest.fixture
def catalogue(catalogue_template, lake):
    """The test's lake holding the catalogue, copied from the module's one materialization of it."""
    result, root = catalogue_template
    shutil.copytree(root, lake.root, dirs_exist_ok=True)
    return result


def test_catalogue_lands_every_dma_and_meter(catalogue, lake, dmama_server):
    sim = dmama_server.simulator
    dmas = lake.read(DMAS)
    assert dmas["dma_id"].to_list() == sim.dma_ids()
    expected = {d["dma_id"]: d["connections"] for d in sim.dmas()}
    assert dict(zip(dmas["dma_id"], dmas["connections"], strict=True)) == expected
    assert lake.read(METERS).height == 5 * 10
    assert all(checks_of(catalogue).values()), checks_of(catalogue)


def test_one_hour_matches_the_source_and_passes_every_check(catalogue, hub_resources, instance, lake, dmama_server):
    result = materialize([dmama.flow_readings], hub_resources, instance, partition_key=HOUR)
    sim = dmama_server.simulator
    end = HOUR_START + timedelta(hours=1)
    frame = lake.read(FLOW_READINGS)
    assert frame.height == sim.expected_flow_rows(HOUR_START, end) == 5 * 4
    truth = sim.flow_readings("DMA-0002", HOUR_START, end)
    mine = frame.filter(frame["dma_id"] == "DMA-0002")
    assert mine["flow_m3h"].to_list() == [r["flow_m3h"] for r in truth]
    assert mine["pressure_bar"].to_list() == [r["pressure_bar"] for r in truth]
    meta = metadata_of(result, "flow_readings")
    assert (meta["rows_received"], meta["rows_written"], meta["rows_rejected"]) == (20, 20, 0)
    assert checks_of(result) == {
        "flow_readings:keys_present": True,
        "flow_readings:clock_on_slot_grid": True,
        "flow_readings:unique_dma_id_timestamp": True,
        "flow_readings:values_in_physical_range": True,
        "flow_readings:known_dmas": True,
        "flow_readings:complete": True,
        "flow_readings:fresh": True,
    }


def test_rerunning_a_partition_rewrites_identical_bytes(catalogue, hub_resources, instance, lake):
    materialize([dmama.flow_readings], hub_resources, instance, partition_key=HOUR)
    path = lake.partition_path(FLOW_READINGS, hourly.time_window_for_partition_key(HOUR))
    before = path.read_bytes()
    materialize([dmama.flow_readings], hub_resources, instance, partition_key=HOUR)
    assert path.read_bytes() == before
    assert lake.read(FLOW_READINGS).height == 20


def test_a_range_runs_as_one_run_and_writes_every_hour(catalogue, hub_resources, instance, lake, dmama_server):
    result = materialize(
        [dmama.flow_readings],
        hub_resources,
        instance,
        tags=range_tags("2026-03-01-00:00", "2026-03-02-23:00"),
    )
    assert len(lake.files(FLOW_READINGS)) == 48
    start = datetime(2026, 3, 1, tzinfo=UTC)
    assert lake.read(FLOW_READINGS).height == dmama_server.simulator.expected_flow_rows(
        start, start + timedelta(days=2)
    )
    materialized = {e.partition for e in result.get_asset_materialization_events()}
    assert len(materialized) == 48
    assert all(checks_of(result).values())


def test_meter_readings_for_a_day(catalogue, hub_resources, instance, lake, dmama_server):
    result = materialize([dmama.meter_readings], hub_resources, instance, partition_key="2026-03-02")
    start = datetime(2026, 3, 2, tzinfo=UTC)
    frame = lake.read(METER_READINGS)
    assert frame.height == dmama_server.simulator.expected_meter_rows(start, start + timedelta(days=1)) == 50 * 24
    truth = dmama_server.simulator.meter_readings("M-0003-0004", start, start + timedelta(days=1))
    mine = frame.filter(frame["meter_id"] == "M-0003-0004")["register_m3"].to_list()
    assert mine == [r["register_m3"] for r in truth]
    assert all(checks_of(result).values())
    assert lake.partition_path(METER_READINGS, daily.time_window_for_partition_key("2026-03-02")).exists()


def test_meter_readings_without_a_meter_list_fail_saying_what_to_do(hub_resources, instance):
    result = materialize(
        [dmama.meter_readings], hub_resources, instance, partition_key="2026-03-02", raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.error.message
    assert "2026-03-02" in message and "materialize dmama/meters first" in message


# -- faults ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_transient_server_errors_are_retried_to_a_complete_partition(
    status, catalogue, hub_resources, instance, lake, dmama_server
):
    dmama_server.simulator.inject("status", path="/api/dma/*/readings", count=2, status=status)
    result = materialize([dmama.flow_readings], hub_resources, instance, partition_key=HOUR)
    assert result.success
    assert lake.read(FLOW_READINGS).height == 20


def test_429_with_retry_after_is_waited_out(catalogue, hub_resources, instance, lake, dmama_server):
    dmama_server.simulator.inject("status", path="/api/dma/DMA-0001/readings", count=1, status=429, retry_after=1)
    result = materialize([dmama.flow_readings], hub_resources, instance, partition_key=HOUR)
    assert result.success
    assert lake.read(FLOW_READINGS).height == 20


def test_a_slow_answer_past_the_timeout_is_retried(catalogue, dmama_server, lake, analyst_catalog, instance):
    resources = {"dmama": dmama_client(dmama_server, timeout_s=0.5), "lake": lake, "catalog": analyst_catalog}
    dmama_server.simulator.inject("slow", path="/api/dma/DMA-0003/readings", count=1, delay_s=1.5)
    result = materialize([dmama.flow_readings], resources, instance, partition_key=HOUR)
    assert result.success
    assert lake.read(FLOW_READINGS).height == 20


@pytest.mark.parametrize("kind", ["truncated", "malformed"])
def test_a_broken_body_once_is_retried(kind, catalogue, hub_resources, instance, lake, dmama_server):
    dmama_server.simulator.inject(kind, path="/api/dma/DMA-0002/readings", count=1)
    assert materialize([dmama.flow_readings], hub_resources, instance, partition_key=HOUR).success
    assert lake.read(FLOW_READINGS).height == 20


@pytest.mark.parametrize(("kind", "params"), [("status", {"status": 503}), ("malformed", {})])
def test_a_persistent_fault_fails_naming_source_and_partition_and_writes_nothing(
    kind, params, catalogue, hub_resources, instance, lake, dmama_server
):
    dmama_server.simulator.inject(kind, path="/api/dma/DMA-0004/readings", count=100, **params)
    result = materialize([dmama.flow_readings], hub_resources, instance, partition_key=HOUR, raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure)
    message = failure.step_failure_data.error.message
    assert "dmama" in message and HOUR in message and "/api/dma/DMA-0004/readings" in message
    assert lake.files(FLOW_READINGS) == []
    assert not any(p.name.endswith(".tmp") for p in Path(lake.root).rglob("*"))


def test_wrong_types_are_rejected_and_reconciled(catalogue, hub_resources, instance, lake, dmama_server):
    dmama_server.simulator.inject("wrong_types", path="/api/dma/DMA-0001/readings", count=1)
    result = materialize([dmama.flow_readings], hub_resources, instance, partition_key=HOUR)
    meta = metadata_of(result, "flow_readings")
    assert meta["rows_rejected"] > 0
    assert meta["rows_received"] == meta["rows_written"] + meta["rows_rejected"]
    rejects = lake.read(rejects_table(FLOW_READINGS))
    assert rejects.height == meta["rows_rejected"]
    assert set(rejects["source"]) == {"dmama"} and set(rejects["partition_key"]) == {HOUR}
    assert all(rejects["reason"].str.starts_with("expected"))
    assert all(rejects["raw_payload"].str.contains("DMA-0001"))


def test_duplicated_and_shuffled_rows_land_exactly_once_in_order(
    catalogue, hub_resources, instance, lake, dmama_server
):
    materialize([dmama.flow_readings], hub_resources, instance, partition_key=HOUR)
    clean = lake.partition_path(FLOW_READINGS, hourly.time_window_for_partition_key(HOUR)).read_bytes()
    dmama_server.simulator.inject("duplicates", path="/api/dma/*/readings", count=5)
    dmama_server.simulator.inject("out_of_order", path="/api/dma/*/readings", count=5)
    result = materialize([dmama.flow_readings], hub_resources, instance, partition_key=HOUR)
    meta = metadata_of(result, "flow_readings")
    assert meta["rows_written"] == 20
    assert meta["rows_received"] == 20 + meta["rows_rejected"]
    assert lake.partition_path(FLOW_READINGS, hourly.time_window_for_partition_key(HOUR)).read_bytes() == clean
    assert checks_of(result)["flow_readings:unique_dma_id_timestamp"]


def test_secrets_never_reach_the_event_log(dmama_server, lake, analyst_catalog, instance):
    resources = {
        "dmama": dmama_client(dmama_server, client_secret="wrong-secret-value-123"),
        "lake": lake,
        "catalog": analyst_catalog,
    }
    result = materialize([dmama.flow_readings], resources, instance, partition_key=HOUR, raise_on_error=False)
    assert not result.success
    logged = "\n".join(str(e) for e in instance.all_logs(result.run_id))
    assert "wrong-secret-value-123" not in logged
    assert dmama_server.config.api_key not in logged
    assert "dmama" in logged


def test_a_failing_blocking_check_stops_downstream_assets_in_the_same_run(
    catalogue, hub_resources, instance, analyst_catalog, dmama_server
):
    sources = [dmama.dmas, dmama.meters, dmama.flow_readings, dmama.meter_readings]
    analyst_catalog_asset = catalog.analyst_catalog_asset(lake_tables_by_asset(sources))
    job = dg.define_asset_job("readings_then_catalog", selection=[dmama.flow_readings.key, analyst_catalog_asset.key])
    defs = dg.Definitions(
        assets=[*sources, analyst_catalog_asset],
        asset_checks=CHECKS,
        jobs=[job],
        resources=hub_resources,
    )
    dmama_server.simulator.inject("spikes", path="/api/dma/DMA-0002/readings", count=1)
    spiked = defs.resolve_job_def(job.name).execute_in_process(
        instance=instance, partition_key=HOUR, raise_on_error=False
    )
    assert checks_of(spiked)["flow_readings:values_in_physical_range"] is False
    assert not Path(analyst_catalog.path).exists()

    clean = defs.resolve_job_def(job.name).execute_in_process(instance=instance, partition_key=HOUR)
    assert checks_of(clean)["flow_readings:values_in_physical_range"] is True
    assert Path(analyst_catalog.path).exists()


def test_a_gap_in_the_source_lands_what_came_and_fails_completeness_as_a_warning(
    catalogue, hub_resources, instance, lake, dmama_server
):
    dmama_server.simulator.inject("gaps", path="/api/dma/DMA-0001/readings", count=1)
    result = materialize([dmama.flow_readings], hub_resources, instance, partition_key=HOUR)
    assert result.success
    assert lake.read(FLOW_READINGS).height < 20
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "complete")
    assert evaluation.passed is False
    assert evaluation.severity == dg.AssetCheckSeverity.WARN


def test_a_skewed_clock_sends_rows_outside_the_window_to_rejects(
    catalogue, hub_resources, instance, lake, dmama_server
):
    dmama_server.simulator.inject("clock_skew", path="/api/dma/DMA-0005/readings", count=1, skew_s=3600)
    result = materialize([dmama.flow_readings], hub_resources, instance, partition_key=HOUR)
    meta = metadata_of(result, "flow_readings")
    assert (meta["rows_received"], meta["rows_written"], meta["rows_rejected"]) == (20, 16, 4)
    rejects = lake.read(rejects_table(FLOW_READINGS))
    assert all(rejects["reason"].str.contains("outside the requested window"))
    assert set(lake.read(FLOW_READINGS)["dma_id"]) == {"DMA-0001", "DMA-0002", "DMA-0003", "DMA-0004"}
