"""ERP: the clinker network the supply planner reads, from the ERP's OData service and its SQL database.

Reference data (plants, routes) is small and read whole: a snapshot replaced on every run, so the planner
always sees the network as the ERP has it now. Changing data is read incrementally into daily UTC
partitions: demand forecast revisions by the day they were made (``ChangedAt``), stock by its day
(``StockDate``), capacity and shutdowns by the day their row changed (``changed_at``). The watermark is
the partition's window, so a re-run of a day replaces exactly that day and a backfill is one read.

Every row either lands typed or is rejected with its reason, including rows that name a plant the ERP has
no master data for (or one of the wrong kind): ``rows_received = rows_written + rows_rejected``.
"""

from collections import Counter
from datetime import timedelta

import dagster as dg
import polars as pl

from assets import source_assets as common
from assets.partitions import daily
from contracts.erp import (
    DEMAND_FORECASTS,
    INVENTORY,
    MAINTENANCE_SHUTDOWNS,
    ODATA,
    PLANTS,
    PRODUCTION_CAPACITY,
    ROUTES,
)
from quality.conform import Conformed, rejects_table
from quality.erp import land, plant_kinds, plant_reference_rules
from resources.erp import ErpODataClient
from resources.erp_sql import ErpSqlReader
from resources.lake import Lake, LakeTable, time_windows

SOURCE = "erp"
OWNER = "team:supply-chain"


def _common(table: LakeTable, fresh_within: timedelta) -> dict:
    return common.source_asset(SOURCE, table, owner=OWNER, fresh_within=fresh_within)


def _daily(table: LakeTable) -> dict:
    return {
        "partitions_def": daily,
        "backfill_policy": dg.BackfillPolicy.single_run(),
        **_common(table, timedelta(days=2)),
    }


def _known_plants(context: dg.AssetExecutionContext, lake: Lake, what: str) -> dict[str, str]:
    kinds = plant_kinds(lake.read(PLANTS))
    if not kinds:
        raise dg.Failure(
            f"erp/{what} {common.partition_label(context)}: no plants in the lake to check plant ids against; "
            "materialize erp/plants first."
        )
    return kinds


def _rejected_by(loaded: Conformed) -> str:
    return ", ".join(f"{field}: {n}" for field, n in loaded.reasons().items()) or "none"


def _summary(loaded: Conformed, frame: pl.DataFrame) -> dict:
    return {
        **common.reconciliation(loaded),
        "rejected_by_field": _rejected_by(loaded),
        "first_rejection": loaded.rejects["reason"][0] if loaded.rejected else "none",
        "preview": common.preview(frame),
    }


def _warn_rejects(context: dg.AssetExecutionContext, table: LakeTable, loaded: Conformed) -> None:
    if loaded.rejected:
        context.log.warning(
            f"erp: {loaded.rejected} of {loaded.received} rows for {table.name} rejected, "
            f"e.g. {loaded.rejects['reason'][0]}"
        )


# ---------------------------------------------------------------------------------------------- reference data


@dg.asset(name="plants", kinds={"odata", "parquet"}, **_common(PLANTS, timedelta(days=2)))
def plants(context: dg.AssetExecutionContext, erp: ErpODataClient, lake: Lake) -> dg.MaterializeResult:
    """Every plant of the clinker network from the ERP's master data: kind (IU integrated unit, GU grinding
    unit, HUB hub), location, clinker capacity (t/month) and production cost (INR/t) of the IUs, and the
    opening, safety and maximum stock (t) of every plant. Replaced whole on each run."""
    rows = common.fetch(context, SOURCE, "PlantSet", erp.plants)
    loaded = land(rows, PLANTS, partition_key="snapshot", mapping=ODATA[PLANTS.name])
    written = lake.replace_snapshot(PLANTS, loaded.frame)
    lake.replace_snapshot(rejects_table(PLANTS), loaded.rejects)
    _warn_rejects(context, PLANTS, loaded)
    kinds = Counter(written.frame["plant_kind"].to_list())
    return dg.MaterializeResult(
        metadata={
            **_summary(loaded, written.frame),
            "integrated_units": kinds.get("IU", 0),
            "grinding_units": kinds.get("GU", 0),
            "hubs": kinds.get("HUB", 0),
            "clinker_capacity_t_per_month": float(written.frame["clinker_capacity_t_per_month"].sum() or 0),
        }
    )


@dg.asset(name="routes", kinds={"odata", "parquet"}, deps=[plants], **_common(ROUTES, timedelta(days=2)))
def routes(context: dg.AssetExecutionContext, erp: ErpODataClient, lake: Lake) -> dg.MaterializeResult:
    """Every route clinker can take from an integrated unit, by mode (road on every road leg, rail on the
    long legs between rail sidings): freight and handling cost (INR/t), vehicle capacity (t), cost per trip
    (INR) and minimum batch (t). A route to or from a plant missing from erp/plants is rejected with the
    reason. Replaced whole on each run."""
    kinds = _known_plants(context, lake, "routes")
    rows = common.fetch(context, SOURCE, "RouteSet", erp.routes)
    loaded = land(
        rows,
        ROUTES,
        partition_key="snapshot",
        mapping=ODATA[ROUTES.name],
        rules=plant_reference_rules(ROUTES, kinds),
    )
    written = lake.replace_snapshot(ROUTES, loaded.frame)
    lake.replace_snapshot(rejects_table(ROUTES), loaded.rejects)
    _warn_rejects(context, ROUTES, loaded)
    modes = Counter(written.frame["mode"].to_list())
    return dg.MaterializeResult(
        metadata={
            **_summary(loaded, written.frame),
            "road_routes": modes.get("ROAD", 0),
            "rail_routes": modes.get("RAIL", 0),
            "origins": written.distinct("origin_plant_id"),
            "destinations": written.distinct("destination_plant_id"),
        }
    )


# ---------------------------------------------------------------------------------------------- daily changes


def _load_daily(
    context: dg.AssetExecutionContext,
    lake: Lake,
    table: LakeTable,
    what: str,
    read,
    *,
    odata: bool,
) -> dg.MaterializeResult:
    window = context.partition_time_window
    label = common.partition_label(context)
    kinds = _known_plants(context, lake, what)
    rows = common.fetch(context, SOURCE, what, lambda: read(window.start, window.end))
    windows = time_windows(daily, window.start, window.end)
    loaded = land(
        rows,
        table,
        partition_key=label,
        mapping=ODATA[table.name] if odata else None,
        rules=plant_reference_rules(table, kinds),
        partitions=windows,
    )
    written = lake.replace_partitions(table, loaded.frame, windows)
    lake.replace_partitions(rejects_table(table), loaded.rejects, windows)
    _warn_rejects(context, table, loaded)
    return dg.MaterializeResult(
        metadata={**_summary(loaded, written.frame), "plants": written.distinct("plant_id"), "days": len(windows)}
    )


@dg.asset(name="demand_forecasts", kinds={"odata", "parquet"}, deps=[plants], **_daily(DEMAND_FORECASTS))
def demand_forecasts(context: dg.AssetExecutionContext, erp: ErpODataClient, lake: Lake) -> dg.MaterializeResult:
    """Every revision of the monthly clinker demand forecast (t) of each grinding unit and hub, filed by the
    UTC day it was made (read incrementally: ChangedAt in the partition's day). The forecast in force for a
    month is its highest revision."""
    return _load_daily(context, lake, DEMAND_FORECASTS, "DemandForecastSet", erp.demand_revisions, odata=True)


@dg.asset(name="inventory", kinds={"odata", "parquet"}, deps=[plants], **_daily(INVENTORY))
def inventory(context: dg.AssetExecutionContext, erp: ErpODataClient, lake: Lake) -> dg.MaterializeResult:
    """Clinker stock (t) of every plant at 00:00 UTC of each day, as the ERP's night stock job posted it."""
    return _load_daily(context, lake, INVENTORY, "InventorySet", erp.inventory, odata=True)


@dg.asset(name="production_capacity", kinds={"sql", "parquet"}, deps=[plants], **_daily(PRODUCTION_CAPACITY))
def production_capacity(context: dg.AssetExecutionContext, erp_sql: ErpSqlReader, lake: Lake) -> dg.MaterializeResult:
    """Clinker production capacity (t/month) of each integrated unit, from the ERP's planning database: every
    version, filed by the UTC day its row changed. The capacity in force for a month is its latest version."""
    return _load_daily(
        context, lake, PRODUCTION_CAPACITY, "production_capacity", erp_sql.production_capacity, odata=False
    )


@dg.asset(name="maintenance_shutdowns", kinds={"sql", "parquet"}, deps=[plants], **_daily(MAINTENANCE_SHUTDOWNS))
def maintenance_shutdowns(context: dg.AssetExecutionContext, erp_sql: ErpSqlReader, lake: Lake) -> dg.MaterializeResult:
    """Kiln shutdowns of the integrated units (planned relinings, breakdowns) with start and end (UTC) and
    the reason, from the ERP's planning database, filed by the UTC day the row changed."""
    return _load_daily(
        context, lake, MAINTENANCE_SHUTDOWNS, "maintenance_shutdowns", erp_sql.maintenance_shutdowns, odata=False
    )


ASSETS = (plants, routes, demand_forecasts, inventory, production_capacity, maintenance_shutdowns)
