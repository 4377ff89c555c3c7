"""The hub's one Definitions: every source contributes its own, merged here.

Adding a source is its own files (simulator, client, contract, assets, rules, and an
``orchestration/<source>.py`` whose ``defs`` holds its assets, checks, jobs, schedules, sensors and
resources) plus one line in ``SOURCES`` below. The analyst catalog finds the new tables by itself, from
the lake tables each asset declares.

Loading this module must stay cheap (every run and sensor tick re-imports it): heavy libraries are
imported inside the functions that use them.
"""

import dagster as dg

from assets import catalog
from assets.bi_export import bi_export_defs
from assets.quality_scores import quality_score_defs
from orchestration import (
    billing,
    dmama,
    erp,
    fleet,
    gis,
    markets,
    marts,
    operations,
    outbound,
    pump,
    scada,
    supply,
    weather,
)
from orchestration.settings import catalog_path, lake_dir, local_timezone, notifier_channels
from resources.catalog import AnalystCatalog
from resources.lake import Lake
from resources.notifier import Notifier

# One line per source. (A tuple, not a merged Definitions: Dagster allows one Definitions per module.)
SOURCES = (
    dmama.defs,
    scada.defs,
    weather.defs,
    markets.defs,
    erp.defs,
    billing.defs,
    gis.defs,
    fleet.defs,
    outbound.defs,
    marts.defs,
    supply.defs,
    pump.defs,
)


def platform_defs() -> dg.Definitions:
    """What every source shares: the lake, the operator notifier and the analysts' catalog."""
    return dg.Definitions(
        # Declarative automation (the catalog follows its sources) runs without anyone switching it on;
        # it can be paused from the UI like any sensor.
        sensors=[
            dg.AutomationConditionSensorDefinition(
                "automation_condition_sensor",
                target=dg.AssetSelection.all(),
                default_status=dg.DefaultSensorStatus.RUNNING,
                minimum_interval_seconds=30,
                description="Requests every asset whose AutomationCondition is true (e.g. the analyst catalog).",
            )
        ],
        resources={
            "lake": Lake(root=str(lake_dir())),
            "notifier": Notifier(channels=notifier_channels()),
            "catalog": AnalystCatalog(path=str(catalog_path()), local_timezone=local_timezone()),
        },
    )


def build_definitions(resources_override: dict | None = None) -> dg.Definitions:
    """The hub's Definitions; ``resources_override`` swaps resources (tests point them elsewhere)."""
    sources = dg.Definitions.merge(*SOURCES)
    # The quality scores read every source's checks; the catalog shows every table, the scores' too.
    scored = dg.Definitions.merge(sources, quality_score_defs(sources))
    merged = dg.Definitions.merge(
        platform_defs(), operations.defs, scored, catalog.catalog_defs(scored), bi_export_defs(scored)
    )
    if not resources_override:
        return merged
    return dg.Definitions(
        assets=merged.assets,
        asset_checks=merged.asset_checks,
        jobs=merged.jobs,
        schedules=merged.schedules,
        sensors=merged.sensors,
        resources={**(merged.resources or {}), **resources_override},
    )


defs = build_definitions()
