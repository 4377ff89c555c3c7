"""The marts, loaded into PostgreSQL for BI tools that speak nothing else (resources/bi_postgres.py).

Its inputs are whatever the sources declare in the ``marts`` layer, found the way the analyst catalog
finds its tables, so a new mart reaches the BI schema without touching this module.
"""

import os

import dagster as dg

from assets.lake_tables import lake_tables_by_asset
from resources.bi_postgres import BiPostgres
from resources.lake import Lake

BI_EXPORT_KEY = dg.AssetKey(["exports", "bi_postgres"])


def bi_postgres_from_env() -> BiPostgres:
    """From ``IHUB_BI_PG_URL`` and ``IHUB_BI_READER_PASSWORD``, kept as ``EnvVar``s so their values never show
    in the UI or the run config; unconfigured (the asset says what to set) when the URL is absent."""
    return BiPostgres(
        url=dg.EnvVar("IHUB_BI_PG_URL") if os.environ.get("IHUB_BI_PG_URL") else "",
        reader_password=dg.EnvVar("IHUB_BI_READER_PASSWORD") if os.environ.get("IHUB_BI_READER_PASSWORD") else "",
        schema_name=os.environ.get("IHUB_BI_SCHEMA", "ihub_marts"),
        reader_role=os.environ.get("IHUB_BI_READER_ROLE", "ihub_bi_reader"),
    )


def bi_export_defs(sources: dg.Definitions) -> dg.Definitions:
    """The BI export asset over every marts-layer table of ``sources``, and its job."""
    by_asset = {
        key: tuple(t for t in tables if t.layer == "marts")
        for key, tables in lake_tables_by_asset(sources.assets or []).items()
    }
    by_asset = {key: tables for key, tables in by_asset.items() if tables}
    tables = tuple(t for declared in by_asset.values() for t in declared)

    @dg.asset(
        key=BI_EXPORT_KEY,
        group_name="exports",
        kinds={"postgres"},
        deps=list(by_asset),
        owners=["team:data-platform"],
        tags={"consumer": "bi"},
        metadata={"marts": ", ".join(f"{t.layer}.{t.name}" for t in tables)},
    )
    def bi_postgres(context: dg.AssetExecutionContext, lake: Lake, bi_postgres: BiPostgres) -> dg.MaterializeResult:
        """The marts as tables in one PostgreSQL schema, with their comments, readable by a read-only role
        that can select and nothing else. Each table is replaced in one transaction."""
        if not bi_postgres.configured:
            raise dg.Failure(
                description=(
                    "exports/bi_postgres: no PostgreSQL configured for BI; set IHUB_BI_PG_URL (an admin "
                    "connection URL) and optionally IHUB_BI_READER_PASSWORD, then run again."
                )
            )
        present = [(table, lake.read(table)) for table in tables if lake.files(table)]
        loaded = bi_postgres.load(present)
        missing = sorted(f"{t.layer}.{t.name}" for t in tables if not lake.files(t))
        context.log.info(f"loaded {len(loaded)} marts into {bi_postgres.where()} schema {bi_postgres.schema_name}")
        return dg.MaterializeResult(
            metadata={
                "database": bi_postgres.where(),
                "schema": bi_postgres.schema_name,
                "reader_role": bi_postgres.reader_role,
                "tables": dg.MetadataValue.json({item.table: item.rows for item in loaded}),
                "marts_without_data": ", ".join(missing) or "none",
            }
        )

    job = dg.define_asset_job(
        "bi_export_job",
        selection=dg.AssetSelection.assets(BI_EXPORT_KEY),
        description="Load the marts into the BI PostgreSQL schema.",
    )
    return dg.Definitions(
        assets=[bi_postgres],
        jobs=[job],
        resources={"bi_postgres": bi_postgres_from_env()},
    )
