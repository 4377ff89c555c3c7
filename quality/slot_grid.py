"""Source time against the slot grid: are a series' readings where its slots are, or shifted by a clock?

A window's request returns, per entity (a DMA), the readings of the 15-minute slots in ``[start, end)``.
A source whose clock runs an hour late sends the same readings an hour late: the first reading sits an
hour after the window opens *and* the last an hour after its last slot (past the window, where conform
rejects it). A wide request hides that: most shifted rows still fall inside the window and would be
stored an hour late, unflagged. Gaps look different: a missing first slot moves only the first reading,
a missing last slot only the last, in the other direction.

So the rule: a series is **skewed** by ``d`` when its first reading is offset from the window's first
slot by the same ``d`` as its last reading from the window's last slot (within ``tolerance_s``), and ``d``
is not zero. It needs every timestamp the source sent for the window, including those conform set aside
as outside it: pass the raw rows (or the stored rows together with their rejects).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import polars as pl

__all__ = ["SLOT", "received_times", "skew_summary", "slot_offsets"]

SLOT = timedelta(minutes=15)


def slot_offsets(
    frame: pl.DataFrame,
    start: datetime,
    end: datetime,
    *,
    entity: str = "dma_id",
    timestamp: str = "timestamp",
    slot: timedelta = SLOT,
    tolerance_s: float = 1.0,
) -> pl.DataFrame:
    """Per entity: the slots ``[start, end)`` should hold against those it got, and the skew found.

    `timestamp` may be a UTC datetime column or ISO 8601 text (unparseable values are ignored).
    Columns: entity, ``expected_slots``, ``received``, ``on_grid_slots`` (distinct grid slots inside the
    window), ``missing_slots``, ``first_offset_s``, ``last_offset_s``, ``skew_s`` (null unless skewed)
    and ``skewed``. One row per entity that sent anything, sorted by entity.
    """
    slot_s = slot.total_seconds()
    expected = int((end - start) / slot)
    times = pl.col(timestamp)
    if frame.schema.get(timestamp) == pl.String:
        times = times.str.to_datetime(strict=False, time_zone="UTC")
    elif frame.schema.get(timestamp) is not None and getattr(frame.schema[timestamp], "time_zone", None) is None:
        times = times.dt.replace_time_zone("UTC")
    since_start = (pl.col("_t") - pl.lit(start)).dt.total_seconds(fractional=True)
    in_window = (pl.col("_t") >= pl.lit(start)) & (pl.col("_t") < pl.lit(end))
    on_grid = in_window & ((since_start % slot_s) == 0)
    grouped = (
        frame.lazy()
        .select(pl.col(entity), times.alias("_t"))
        .drop_nulls()
        .group_by(entity)
        .agg(
            pl.len().alias("received"),
            pl.col("_t").filter(on_grid).n_unique().alias("on_grid_slots"),
            since_start.min().alias("first_offset_s"),
            (since_start.max() - (expected - 1) * slot_s).alias("last_offset_s"),
        )
    )
    first, last = pl.col("first_offset_s"), pl.col("last_offset_s")
    skewed = (pl.col("received") >= 2) & ((first - last).abs() <= tolerance_s) & (first.abs() > tolerance_s)
    return (
        grouped.with_columns(
            pl.lit(expected, dtype=pl.Int64).alias("expected_slots"),
            (pl.lit(expected) - pl.col("on_grid_slots").cast(pl.Int64)).clip(lower_bound=0).alias("missing_slots"),
            skewed.alias("skewed"),
            pl.when(skewed).then((first + last) / 2).otherwise(None).alias("skew_s"),
        )
        .select(
            entity,
            "expected_slots",
            "received",
            pl.col("on_grid_slots").cast(pl.Int64),
            "missing_slots",
            "first_offset_s",
            "last_offset_s",
            "skew_s",
            "skewed",
        )
        .sort(entity)
        .collect()
    )


def skew_summary(offsets: pl.DataFrame, *, entity: str = "dma_id") -> dict:
    """Figures for materialization metadata: how many entities are skewed, by how much at most, and each."""
    skewed = offsets.filter(pl.col("skewed"))
    by_entity = dict(zip(skewed[entity].to_list(), skewed["skew_s"].to_list(), strict=True))
    return {
        "clock_skewed": len(by_entity),
        "max_clock_skew_s": max((abs(v) for v in by_entity.values()), default=0.0),
        "clock_skew_s_by_entity": by_entity,
    }


def received_times(
    stored: pl.DataFrame,
    rejects: pl.DataFrame | None = None,
    *,
    entity: str = "dma_id",
    timestamp: str = "timestamp",
) -> pl.DataFrame:
    """(entity, timestamp) of every row the source sent for a load: the stored rows plus the rows conform
    set aside (read back from their ``raw_payload`` JSON), so `slot_offsets` sees the shifted rows that
    fell outside the window. Timestamps as UTC datetimes; unparseable ones are dropped by `slot_offsets`.
    """
    kept = stored.select(pl.col(entity).cast(pl.String), pl.col(timestamp).cast(pl.Datetime("us", "UTC")))
    if rejects is None or rejects.height == 0:
        return kept
    raw = pl.col("raw_payload")
    set_aside = rejects.select(
        raw.str.json_path_match(f"$.{entity}").alias(entity),
        raw.str.json_path_match(f"$.{timestamp}").str.to_datetime(strict=False, time_zone="UTC").alias(timestamp),
    )
    return pl.concat([kept, set_aside.cast({timestamp: pl.Datetime("us", "UTC")})])
