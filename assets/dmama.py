"""DMAMA, the district-metered-area management system: DMAs, meters and their readings, landed raw.

The client (``resources/dmama.py``) fetches and decodes, ``quality/conform.py`` types the rows and sets
aside what cannot be typed, and the lake writes one Parquet file per partition. Rows are never dropped:
every materialization reconciles ``rows_received = rows_written + rows_rejected``.
"""

from collections.abc import Iterator
from datetime import datetime, timedelta
from functools import partial

import dagster as dg
from pydantic import Field

from assets import source_assets as common
from assets.partitions import daily, hourly
from contracts.dmama import DMAS, FLOW_READINGS, METER_READINGS, METERS
from quality.conform import conform, rejects_table
from quality.slot_grid import received_times, skew_summary, slot_offsets
from resources.dmama import DmamaClient
from resources.lake import Lake, LakeTable, Written, time_windows

SOURCE = "dmama"


class ReadingsConfig(dg.Config):
    """How a range of partitions is fetched: in chunks, so a month's backfill never sits in memory whole."""

    chunk_hours: int = Field(
        default=24,
        ge=1,
        le=24 * 31,
        description="Hours asked of DMAMA per DMA or meter in one request; also the span written at once.",
    )


class FlowReadingsConfig(ReadingsConfig):
    # A week per DMA is 672 rows a request: few round trips, and 500 DMAs' week is ~340k rows in memory.
    chunk_hours: int = Field(
        default=24 * 7,
        ge=1,
        le=24 * 31,
        description="Hours asked of DMAMA per DMA in one request; also the span written at once.",
    )


def _common(table: LakeTable, fresh_within: timedelta) -> dict:
    return common.source_asset(SOURCE, table, owner="team:network", fresh_within=fresh_within)


@dg.asset(name="dmas", kinds={"http", "parquet"}, **_common(DMAS, timedelta(days=2)))
def dmas(context: dg.AssetExecutionContext, dmama: DmamaClient, lake: Lake) -> dg.MaterializeResult:
    """District metered areas: one row per DMA with its connections, mains length, pressure target
    and inflow meters. Replaced whole on every run; DMAs change slowly."""
    rows = common.fetch(context, SOURCE, "DMA catalogue", dmama.dma_catalogue)
    loaded = conform(rows, DMAS, source=SOURCE, partition_key="snapshot")
    written = lake.replace_snapshot(DMAS, loaded.frame)
    lake.replace_snapshot(rejects_table(DMAS), loaded.rejects)
    frame = written.frame
    return dg.MaterializeResult(
        metadata={
            **common.reconciliation(loaded),
            "dmas": written.rows,
            "connections": int(frame["connections"].sum() or 0),
            "zones": frame["zone"].n_unique(),
            "preview": common.preview(frame),
        }
    )


@dg.asset(name="meters", kinds={"http", "parquet"}, **_common(METERS, timedelta(days=2)))
def meters(context: dg.AssetExecutionContext, dmama: DmamaClient, lake: Lake) -> dg.MaterializeResult:
    """Every customer and inflow meter with its DMA, class and register size. Replaced whole."""

    def fetch() -> list[dict]:
        dma_ids, _ = dmama.checked_ids(dma["dma_id"] for dma in dmama.dma_list())  # a bad id never becomes a URL
        return [row for dma_id in dma_ids for row in dmama.meters(dma_id)]

    rows = common.fetch(context, SOURCE, "meter list", fetch)
    loaded = conform(rows, METERS, source=SOURCE, partition_key="snapshot")
    written = lake.replace_snapshot(METERS, loaded.frame)
    lake.replace_snapshot(rejects_table(METERS), loaded.rejects)
    frame = written.frame
    by_kind = dict(frame.group_by("kind").len().sort("kind").iter_rows())
    return dg.MaterializeResult(
        metadata={
            **common.reconciliation(loaded),
            "meters": written.rows,
            "dmas": written.distinct("dma_id"),
            "customer_meters": int(by_kind.get("customer", 0)),
            "inflow_meters": int(by_kind.get("inflow", 0)),
        }
    )


@dg.asset(
    name="flow_readings",
    kinds={"http", "parquet"},
    partitions_def=hourly,
    backfill_policy=dg.BackfillPolicy.single_run(),
    **_common(FLOW_READINGS, timedelta(minutes=30)),
)
def flow_readings(
    context: dg.AssetExecutionContext, config: FlowReadingsConfig, dmama: DmamaClient, lake: Lake
) -> dg.MaterializeResult:
    """Flow (m³/h) and pressure (bar) every 15 minutes at each DMA's inlet, as DMAMA reported them.
    One file per hour; a backfill asks for a week per DMA at a time and writes it hour by hour."""
    dma_ids, refused = dmama.checked_ids(
        row["dma_id"] for row in common.fetch(context, SOURCE, "DMA list", dmama.dma_list)
    )
    if refused:
        context.log.warning(f"dmama: skipped {len(refused)} DMA ids that cannot go into a URL: {sorted(refused)[:5]}")

    def fetch(start: datetime, end: datetime) -> list[dict]:
        return [row for _, rows in dmama.flow_readings_many(dma_ids, start, end) for row in rows]

    return _load_range(
        context, config, lake, FLOW_READINGS, hourly, fetch, entity="dma_id", slot_grid=True, skipped=len(refused)
    )


@dg.asset(
    name="meter_readings",
    kinds={"http", "parquet"},
    partitions_def=daily,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[meters],
    **_common(METER_READINGS, timedelta(hours=2)),
)
def meter_readings(
    context: dg.AssetExecutionContext, config: ReadingsConfig, dmama: DmamaClient, lake: Lake
) -> dg.MaterializeResult:
    """Hourly register readings (m³) of every meter in the meter list, one file per UTC day.
    Reads the meter list from the lake, so materialize dmama/meters first."""
    meter_ids = lake.read(METERS)["meter_id"].to_list()
    if not meter_ids:
        raise dg.Failure(
            description=(
                f"dmama/meter_readings for partition {common.partition_label(context)}: the meter list "
                f"{METERS.layer}.{METERS.name} is empty; materialize dmama/meters first."
            )
        )

    def fetch(start: datetime, end: datetime) -> list[dict]:
        return [row for _, rows in dmama.meter_readings_many(meter_ids, start, end) for row in rows]

    return _load_range(context, config, lake, METER_READINGS, daily, fetch, entity="meter_id")


def _load_range(
    context: dg.AssetExecutionContext,
    config: ReadingsConfig,
    lake: Lake,
    table: LakeTable,
    partitions_def: dg.TimeWindowPartitionsDefinition,
    fetch,
    *,
    entity: str,
    slot_grid: bool = False,
    skipped: int | None = None,
) -> dg.MaterializeResult:
    """Fetch, type and write the run's partitions chunk by chunk; return the reconciled figures."""
    window = context.partition_time_window
    label = common.partition_label(context)
    received = written = rejected = files = 0
    entities: set[str] = set()
    first: datetime | None = None
    last: datetime | None = None
    reasons: dict[str, int] = {}
    preview = table.empty()
    skew: dict[str, float] = {}
    for chunk in _chunks(time_windows(partitions_def, window.start, window.end), config.chunk_hours):
        start, end = chunk[0].start, chunk[-1].end
        what = f"{table.name} {start:%Y-%m-%dT%H:%M}Z–{end:%Y-%m-%dT%H:%M}Z"
        rows = common.fetch(context, SOURCE, what, partial(fetch, start, end))
        loaded = conform(rows, table, source=SOURCE, partition_key=label, window=(start, end), partitions=chunk)
        if slot_grid:  # on all the source sent: a shifted series' last slots were set aside as rejects
            stamps = received_times(loaded.frame, loaded.rejects, entity=entity)
            found = skew_summary(slot_offsets(stamps, start, end, entity=entity), entity=entity)
            skew.update(found["clock_skew_s_by_entity"])
        out: Written = lake.replace_partitions(table, loaded.frame, chunk)
        lake.replace_partitions(rejects_table(table), loaded.rejects, chunk)
        received += loaded.received
        written += out.rows
        rejected += loaded.rejected
        files += len(out.paths)
        entities.update(out.frame[entity].unique().to_list())
        for field, count in loaded.reasons().items():
            reasons[field] = reasons.get(field, 0) + count
        span = out.time_range()
        if span:
            first = span[0] if first is None else min(first, span[0])
            last = span[1] if last is None else max(last, span[1])
        if preview.height == 0:
            preview = out.frame.head(10)
        context.log.info(
            f"{table.name}: {start:%Y-%m-%dT%H:%M}Z–{end:%Y-%m-%dT%H:%M}Z received {loaded.received}, "
            f"wrote {out.rows} in {len(out.paths)} files, rejected {loaded.rejected}"
        )
    metadata: dict = {
        "rows_received": received,
        "rows_written": written,
        "rows_rejected": rejected,
        "dagster/row_count": written,
        "partitions_written": files,
        f"distinct_{entity}": len(entities),
        "first_timestamp": first.isoformat() if first else "none",
        "last_timestamp": last.isoformat() if last else "none",
        "preview": common.preview(preview),
    }
    if reasons:
        metadata["rejects_by_field"] = reasons
    if skipped is not None:
        metadata[f"skipped_{entity}s"] = skipped
    if slot_grid:
        metadata.update(clock_skewed=len(skew), max_clock_skew_s=max(map(abs, skew.values()), default=0.0))
        if skew:
            context.log.warning(f"{table.name}: source clock skew (s) by {entity}: {skew}")
            metadata[f"clock_skew_s_by_{entity}"] = skew
    return dg.MaterializeResult(metadata=metadata)


def _chunks(windows: list[dg.TimeWindow], hours: int) -> Iterator[list[dg.TimeWindow]]:
    # A chunk never splits a partition: a day (or month) is fetched whole whatever chunk_hours says.
    chunk: list[dg.TimeWindow] = []
    for window in windows:
        if chunk and window.end - chunk[0].start > timedelta(hours=hours):
            yield chunk
            chunk = []
        chunk.append(window)
    if chunk:
        yield chunk
