"""What every batch source's assets share: how they are declared, how a source failure reaches Dagster,
and the figures every materialization carries.

One place, so a new source gets the same UI shape (group, owner, pool, freshness, lake-table metadata) and
the same errors (naming the source, the partition and the endpoint) without copying them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar

import dagster as dg
import polars as pl

from assets.lake_tables import lake_metadata
from quality.conform import Conformed, rejects_table
from resources.http import SourceError
from resources.lake import LakeTable

T = TypeVar("T")


def source_asset(
    source: str, table: LakeTable, *, owner: str, fresh_within: timedelta | None = None, rejects: bool = True
) -> dict[str, Any]:
    """``@dg.asset`` arguments for an asset of ``source`` that writes ``table`` (and its rejects table).

    Every asset of a source shares the source's concurrency pool, so its rate limit holds however a run was
    launched (schedule, job, or a backfill from the asset graph); the pool's limit is set on the instance.
    """
    arguments: dict[str, Any] = {
        "key_prefix": source,
        "group_name": source,
        "owners": [owner],
        "metadata": lake_metadata(table, rejects_table(table)) if rejects else lake_metadata(table),
        "tags": {"source": source},
        "pool": source,
    }
    if fresh_within is not None:
        # The UI marks the asset late when no materialization has landed within this window.
        arguments["freshness_policy"] = dg.FreshnessPolicy.time_window(
            fail_window=fresh_within, warn_window=fresh_within / 2
        )
    return arguments


def partition_label(context: dg.AssetExecutionContext) -> str:
    """The partition (or range) a run loads, as a person reads it; ``snapshot`` for whole tables."""
    if context.assets_def.partitions_def is None:
        return "snapshot"
    keys = context.partition_key_range
    return keys.start if keys.start == keys.end else f"{keys.start}…{keys.end}"


def fetch(context: dg.AssetExecutionContext, source: str, what: str, call: Callable[[], T]) -> T:
    """Run a client call; turn a source failure into a Dagster failure naming source and partition."""
    try:
        return call()
    except SourceError as error:
        raise dg.Failure(
            description=f"{source}: could not load {what} for partition {partition_label(context)}: {error}",
            metadata={"source": source, "endpoint": error.endpoint or "", "status": error.status or 0},
        ) from error


def reconciliation(loaded: Conformed) -> dict[str, int]:
    """``rows_received = rows_written + rows_rejected``, as every materialization reports it."""
    return {
        "rows_received": loaded.received,
        "rows_written": loaded.written,
        "rows_rejected": loaded.rejected,
        "dagster/row_count": loaded.written,
    }


def preview(frame: pl.DataFrame) -> dg.MetadataValue:
    """The first ten rows, as the UI shows them."""
    return dg.MetadataValue.md(frame.head(10).to_pandas().to_markdown(index=False))
