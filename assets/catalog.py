"""The analyst catalog asset: the DuckDB file analysts open, with a documented view per lake table."""

import dagster as dg

from assets import dmama
from quality.conform import rejects_table
from quality.dmama import TABLES as DMAMA_TABLES
from quality.scada import HISTORIAN_POINTS
from quality.scada import TABLES as SCADA_TABLES
from resources.catalog import AnalystCatalog, SqlView
from resources.lake import Lake

LAKE_TABLES = (*DMAMA_TABLES, *(rejects_table(t) for t in DMAMA_TABLES), *SCADA_TABLES, rejects_table(HISTORIAN_POINTS))


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


@dg.asset(
    key_prefix="exports",
    group_name="exports",
    kinds={"duckdb"},
    deps=[dmama.dmas, dmama.meters, dmama.flow_readings, dmama.meter_readings],
    owners=["team:data-platform"],
    tags={"consumer": "analysts"},
)
def analyst_catalog(catalog: AnalystCatalog, lake: Lake) -> dg.MaterializeResult:
    """The DuckDB file analysts open read-only: a commented view over every lake table (raw and
    rejects) plus derived marts such as night flow. Views read the lake directly, so new partitions
    show up without republishing; republish when a table is added or first receives data."""
    published = catalog.publish(lake, LAKE_TABLES, derived_views(catalog.local_timezone))
    return dg.MaterializeResult(
        metadata={
            "path": dg.MetadataValue.path(published.path),
            "views": published.views,
            "tables_without_data": ", ".join(published.empty_tables) or "none",
            "size_kb": round(published.bytes / 1024, 1),
            "open_with": f"duckdb.connect({published.path!r}, read_only=True)",
        }
    )
