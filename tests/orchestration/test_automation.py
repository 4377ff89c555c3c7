"""Declarative automation: the analyst catalog republishes itself when a source lands data, never after a
failed blocking check, and never while a source is still loading."""

from __future__ import annotations

import dagster as dg

from assets import catalog, dmama
from assets.lake_tables import lake_tables_by_asset
from assets.partitions import daily, hourly
from quality.dmama import dmama_checks

HOUR = "2026-03-02-19:00"


def _catalog_requested(defs: dg.Definitions, instance, cursor=None):
    result = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
    return result.get_num_requested(catalog.ANALYST_CATALOG_KEY) > 0, result.cursor


def test_the_catalog_republishes_after_new_data_and_not_after_a_failed_blocking_check(
    hub_resources, instance, dmama_server
):
    sources = [dmama.dmas, dmama.meters, dmama.flow_readings, dmama.meter_readings]
    analyst_catalog = catalog.analyst_catalog_asset(lake_tables_by_asset(sources))
    checks = dmama_checks(hourly, daily)
    defs = dg.Definitions(assets=[*sources, analyst_catalog], asset_checks=checks, resources=hub_resources)

    # Never published: requested at once, so a fresh deployment gets its catalog.
    requested, cursor = _catalog_requested(defs, instance)
    assert requested
    dg.materialize([analyst_catalog], resources=hub_resources, instance=instance)
    requested, cursor = _catalog_requested(defs, instance, cursor)
    assert not requested  # nothing new upstream

    dg.materialize(
        [dmama.dmas, dmama.meters, *checks],
        selection=[dmama.dmas, dmama.meters],
        resources=hub_resources,
        instance=instance,
    )
    requested, cursor = _catalog_requested(defs, instance, cursor)
    assert requested  # the catalogue landed: republish
    dg.materialize([analyst_catalog], resources=hub_resources, instance=instance)
    requested, cursor = _catalog_requested(defs, instance, cursor)
    assert not requested

    # A spike fails the blocking range check: the catalog must not be republished over bad data.
    dmama_server.simulator.inject("spikes", path="/api/dma/DMA-0002/readings", count=1)
    spiked = dg.materialize(
        [dmama.flow_readings, *checks],
        selection=[dmama.flow_readings],
        partition_key=HOUR,
        resources=hub_resources,
        instance=instance,
        raise_on_error=False,
    )
    assert any(not e.passed for e in spiked.get_asset_check_evaluations())
    requested, cursor = _catalog_requested(defs, instance, cursor)
    assert not requested

    # The same hour re-loaded clean passes its checks: now the catalog follows.
    clean = dg.materialize(
        [dmama.flow_readings, *checks],
        selection=[dmama.flow_readings],
        partition_key=HOUR,
        resources=hub_resources,
        instance=instance,
    )
    assert all(e.passed for e in clean.get_asset_check_evaluations() if e.severity == dg.AssetCheckSeverity.ERROR)
    requested, cursor = _catalog_requested(defs, instance, cursor)
    assert requested


def test_the_hub_keeps_schedules_only_where_a_clock_is_the_trigger():
    from orchestration.definitions import defs

    names = {schedule.name for schedule in defs.schedules or []}
    assert "analyst_catalog_daily" not in names  # the catalog follows its inputs instead
    assert {"dmama_readings_every_15_minutes", "dmama_meter_readings_hourly", "dmama_catalogue_daily"} <= names
    sensors = {sensor.name: sensor for sensor in defs.get_repository_def().sensor_defs}
    assert sensors["automation_condition_sensor"].default_status == dg.DefaultSensorStatus.RUNNING
    catalog_asset = defs.resolve_assets_def(catalog.ANALYST_CATALOG_KEY)
    assert catalog_asset.automation_conditions_by_key[catalog.ANALYST_CATALOG_KEY] is not None
