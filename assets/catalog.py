"""The analyst catalog: the DuckDB file analysts open, with a documented view per lake table.

Its tables and its lineage come from the assets themselves: every asset declares the lake tables it writes
(``assets/lake_tables.py``), and ``catalog_defs`` turns whatever the sources contribute into one asset that
depends on all of them. A new source shows up in the catalog without touching this module.
"""

from collections.abc import Sequence

import dagster as dg

from assets.lake_tables import lake_tables_by_asset
from resources.catalog import AnalystCatalog, SqlView
from resources.lake import Lake, LakeTable

ANALYST_CATALOG_KEY = dg.AssetKey(["exports", "analyst_catalog"])

# Publish when the catalog is missing, republish when a source lands new data; never while a source is still
# loading, and not while any upstream partition's latest blocking check failed (re-running that partition
# clean releases it). Views read the lake directly, so this is about new tables, new columns and tables
# that first get data. Neither ``eager()`` nor ``all_deps_blocking_checks_passed()``: both ask every
# upstream partition to exist or to have passed, which hourly history never will.
CATALOG_AUTOMATION = (
    (dg.AutomationCondition.missing() | dg.AutomationCondition.any_deps_updated().since_last_handled())
    & ~dg.AutomationCondition.any_deps_in_progress()
    & ~dg.AutomationCondition.in_progress()
    & ~dg.AutomationCondition.any_deps_match(
        dg.AutomationCondition.any_checks_match(dg.AutomationCondition.check_failed(), blocking_only=True)
    )
).with_label("republish when a source lands data")


def derived_views(local_timezone: str) -> list[SqlView]:
    """Views computed in DuckDB at query time, so they are never staler than the lake."""
    local = f"(r.timestamp AT TIME ZONE '{local_timezone}')"
    return [
        SqlView(
            schema="marts",
            name="dma_night_flow",
            description=(
                "Minimum night flow per DMA and night: the 02:00–04:00 local-time window, when legitimate "
                "use is lowest and leakage shows. A leak appears as night flow rising over days."
            ),
            sql=f"""
                SELECT r.dma_id,
                       CAST({local} AS DATE) AS night_of,
                       min(r.flow_m3h) AS min_night_flow_m3h,
                       avg(r.flow_m3h) AS mean_night_flow_m3h,
                       min(r.flow_m3h) * 1000 / nullif(any_value(d.connections), 0)
                           AS min_night_flow_l_per_connection_h,
                       count(*) AS readings
                FROM raw.dmama_flow_readings AS r
                LEFT JOIN raw.dmama_dmas AS d USING (dma_id)
                WHERE hour({local}) >= 2 AND hour({local}) < 4
                GROUP BY r.dma_id, CAST({local} AS DATE)
            """,
            columns={
                "dma_id": "DMA the night flow is for.",
                "night_of": f"Local date ({local_timezone}) of the night.",
                "min_night_flow_m3h": "Lowest 15-minute inflow between 02:00 and 04:00 local, m³/h.",
                "mean_night_flow_m3h": "Mean inflow between 02:00 and 04:00 local, m³/h.",
                "min_night_flow_l_per_connection_h": "Minimum night flow per service connection, L/h.",
                "readings": "15-minute readings in the window (8 when complete).",
            },
        )
    ]


def analyst_catalog_asset(tables_by_asset: dict[dg.AssetKey, tuple[LakeTable, ...]]) -> dg.AssetsDefinition:
    """The catalog asset over the given lake tables, depending on the assets that write them."""
    tables = _distinct(table for declared in tables_by_asset.values() for table in declared)

    @dg.asset(
        key=ANALYST_CATALOG_KEY,
        group_name="exports",
        kinds={"duckdb"},
        deps=list(tables_by_asset),
        owners=["team:data-platform"],
        tags={"consumer": "analysts"},
        automation_condition=CATALOG_AUTOMATION,
        metadata={"lake_tables": ", ".join(f"{t.layer}.{t.name}" for t in tables)},
    )
    def analyst_catalog(catalog: AnalystCatalog, lake: Lake) -> dg.MaterializeResult:
        """The DuckDB file analysts open read-only: a commented view over every lake table (raw, staging,
        marts and rejects) plus derived marts such as night flow. Views read the lake directly, so new
        partitions show up without republishing; it is republished by itself when a source lands data."""
        published = catalog.publish(lake, tables, derived_views(catalog.local_timezone))
        return dg.MaterializeResult(
            metadata={
                "path": dg.MetadataValue.path(published.path),
                "views": published.views,
                "tables_without_data": ", ".join(published.empty_tables) or "none",
                "size_kb": round(published.bytes / 1024, 1),
                # GEOMETRY views need DuckDB spatial at publish time; WKB columns are there either way.
                "spatial_views": published.spatial,
                "open_with": (
                    f"resources.catalog.open_catalog({published.path!r}, lake)  # the lake is in a bucket"
                    if "://" in lake.root
                    else f"duckdb.connect({published.path!r}, read_only=True)"
                ),
            }
        )

    return analyst_catalog


def catalog_tables(assets: Sequence) -> tuple[LakeTable, ...]:
    """Every lake table the given assets declare, in asset-key order."""
    return _distinct(table for declared in lake_tables_by_asset(assets).values() for table in declared)


def _distinct(tables) -> tuple[LakeTable, ...]:
    """Each table once: several assets may write one table (every outbound asset writes the delivery ledger)."""
    return tuple({(t.layer, t.name): t for t in tables}.values())


def catalog_defs(sources: dg.Definitions) -> dg.Definitions:
    """The catalog asset and its job, over every lake table the ``sources`` declare."""
    asset = analyst_catalog_asset(lake_tables_by_asset(sources.assets or []))
    job = dg.define_asset_job(
        "analyst_catalog_job",
        selection=dg.AssetSelection.assets(ANALYST_CATALOG_KEY),
        description="Publish the analysts' DuckDB catalog over the lake (it also republishes by itself).",
    )
    return dg.Definitions(assets=[asset], jobs=[job])
