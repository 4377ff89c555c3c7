"""Great Expectations suites run as Dagster asset checks.

dagster-ge does not support GX 1.x, so this module does the wiring itself: a check reads the run's
partitions of a lake table, validates them once against a suite of GX expectations grouped into named
rules, and reports one ``AssetCheckResult`` per rule with the figures GX computed.

GX costs about 3 s and 270 MB to import, so it is imported only when a check runs, never when the
definitions load.

A backfill hands one check run a month of partitions at once. GX validates a pandas frame, and a month
of DMAMA readings as one frame (plus GX's own copies) cost about 500 MB on top of the import, so a long
window is validated in chunks of whole partitions (a day at least) and the results are merged per rule:
it passes only if every chunk passed, unexpected counts add up, and the chunks that failed are named.
Each chunk is judged as a window of its own, which is what a per-day run of the same check would say.
"""

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import polars as pl

from resources.lake import Lake, LakeTable

# Checks run offline: no usage statistics, no network calls from GX.
os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")


@dataclass(frozen=True)
class CheckInput:
    """What a rule may look at besides the rows: the window checked and the lake (for reference data)."""

    lake: Lake
    window: tuple[datetime, datetime] | None
    now: datetime


@dataclass(frozen=True)
class Rule:
    """A named group of GX expectations that passes only if all of them do.

    ``expectations`` builds the GX expectation objects (``gx.expectations.Expect...``) from the module
    ``gx.expectations`` and the check input, so rules can depend on reference data such as the list of
    known DMAs. ``blocking`` rules at ERROR severity stop downstream assets in the same run.
    """

    name: str
    description: str
    expectations: Callable[[Any, CheckInput], list]
    severity: dg.AssetCheckSeverity = dg.AssetCheckSeverity.ERROR
    blocking: bool = True


def build_gx_checks(
    asset_key: dg.AssetKey,
    table: LakeTable,
    rules: Sequence[Rule],
    partitions_def: dg.TimeWindowPartitionsDefinition | None = None,
) -> dg.AssetChecksDefinition:
    """One multi-check over ``table`` that validates the run's partitions once and reports per rule.

    The checks share the asset's partitions, so Dagster hands each check run exactly the partitions the
    asset run wrote (one, or a backfill's range) and the UI shows a check result per partition.
    """
    specs = [
        dg.AssetCheckSpec(
            name=rule.name,
            asset=asset_key,
            description=rule.description,
            blocking=rule.blocking,
            partitions_def=partitions_def,
            # Shown in the UI and in docs/quality.md (generated from these specs).
            metadata={"severity": rule.severity.value},
        )
        for rule in rules
    ]

    @dg.multi_asset_check(
        specs=specs,
        name=f"{asset_key.to_python_identifier()}_suite",
        description=f"Great Expectations suite for {table.layer}.{table.name}",
    )
    def _suite(context: dg.AssetCheckExecutionContext, lake: Lake) -> Iterator[dg.AssetCheckResult]:
        window = checked_window(context)
        now = datetime.now(UTC)
        if window is None:
            frame = lake.read(table)
            yield from validate(frame, rules, CheckInput(lake=lake, window=None, now=now), asset_key, table.name)
            return
        chunks = chunk_windows(window, partitions_def)
        results = []
        for start, end in chunks:
            frame = lake.read(table, start, end)
            check_input = CheckInput(lake=lake, window=(start, end), now=now)
            results.append(list(validate(frame, rules, check_input, asset_key, table.name)))
            del frame  # the next chunk's frame replaces it, rather than joining it in memory
        yield from merge_chunk_results(results, chunks, window)

    return _suite


CHUNK_AT_LEAST = timedelta(days=1)


def chunk_windows(
    window: tuple[datetime, datetime], partitions_def: dg.TimeWindowPartitionsDefinition | None
) -> list[tuple[datetime, datetime]]:
    """``window`` cut into chunks of whole partitions lasting at least a day (monthly: a month each)."""
    start, end = window
    if partitions_def is None:
        return [window]
    chunks: list[tuple[datetime, datetime]] = []
    chunk_start = start
    partition = partitions_def.time_window_for_partition_key(
        partitions_def.get_partition_key_for_timestamp(start.timestamp())
    )
    while partition is not None and partition.start < end:
        if partition.end - chunk_start >= CHUNK_AT_LEAST or partition.end >= end:
            chunks.append((chunk_start, min(partition.end, end)))
            chunk_start = partition.end
        partition = partitions_def.get_next_partition_window(partition.end, respect_bounds=False)
    if chunk_start < end:
        chunks.append((chunk_start, end))
    return chunks


def merge_chunk_results(
    results: list[list[dg.AssetCheckResult]],
    chunks: list[tuple[datetime, datetime]],
    window: tuple[datetime, datetime],
) -> Iterator[dg.AssetCheckResult]:
    """One result per rule over the whole window from the rule's result in each chunk."""
    if len(results) == 1:
        yield from results[0]
        return
    for per_chunk in zip(*results, strict=True):
        first = per_chunk[0]
        failed_chunks = [
            f"{start:%Y-%m-%dT%H:%M}Z"
            for (start, _), result in zip(chunks, per_chunk, strict=True)
            if not result.passed
        ]
        metadata: dict[str, Any] = {}
        for result in per_chunk:
            for key, value in result.metadata.items():
                plain = value.value if isinstance(value, dg.MetadataValue) else value
                if key.endswith(" unexpected") or key == "rows_checked":
                    metadata[key] = metadata.get(key, 0) + int(plain or 0)
                elif key.endswith(" examples") and key not in metadata:
                    metadata[key] = plain
                elif key.endswith(" observed"):
                    metadata.setdefault(key, []).append(plain)
        for key, values in list(metadata.items()):
            if key.endswith(" observed"):
                metadata[key] = _merge_observed(key, values)
        metadata["window"] = f"{window[0]:%Y-%m-%dT%H:%M}Z–{window[1]:%Y-%m-%dT%H:%M}Z"
        metadata["chunks"] = len(chunks)
        if failed_chunks:
            metadata["failed_chunks"] = ", ".join(failed_chunks[:20]) + (" …" if len(failed_chunks) > 20 else "")
            failed = sorted({r.metadata["failed"].value for r in per_chunk if "failed" in r.metadata})
            metadata["failed"] = ", ".join(failed)
        yield dg.AssetCheckResult(
            asset_key=first.asset_key,
            check_name=first.check_name,
            passed=not failed_chunks,
            severity=first.severity,
            metadata=metadata,
            description=first.description,
        )


def _merge_observed(key: str, values: list[Any]) -> Any:
    """What GX would have observed on the whole window: counts add up, a maximum is the largest …"""
    present = [v for v in values if v is not None]
    if not present:
        return None
    if key.startswith("table_row_count"):
        return sum(present)
    if key.startswith("column_max"):
        return max(present)
    if key.startswith("column_min"):
        return min(present)
    return present[-1]


def validate(
    frame: pl.DataFrame,
    rules: Sequence[Rule],
    check_input: CheckInput,
    asset_key: dg.AssetKey,
    suite_name: str,
) -> Iterator[dg.AssetCheckResult]:
    """Validate ``frame`` against every rule's expectations in one GX run; one result per rule."""
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    batch = (
        context.data_sources.add_pandas(f"{suite_name}_source")
        .add_dataframe_asset(suite_name)
        .add_batch_definition_whole_dataframe("run")
        .get_batch(batch_parameters={"dataframe": frame.to_pandas()})
    )
    suite = gx.ExpectationSuite(name=suite_name)
    for rule in rules:
        for expectation in rule.expectations(gx.expectations, check_input):
            # Unsaved suites give expectations no id, so the rule's name travels in ``meta``.
            expectation.meta = {**(expectation.meta or {}), "ihub_rule": rule.name}
            suite.add_expectation(expectation)
    outcome = batch.validate(suite, result_format="SUMMARY")
    by_rule: dict[str, list] = {rule.name: [] for rule in rules}
    for result in outcome.results:
        by_rule[result.expectation_config.meta["ihub_rule"]].append(result)

    window_text = (
        f"{check_input.window[0]:%Y-%m-%dT%H:%M}Z–{check_input.window[1]:%Y-%m-%dT%H:%M}Z"
        if check_input.window
        else "whole table"
    )
    for rule in rules:
        results = by_rule[rule.name]
        failed = [r for r in results if not r.success]
        metadata: dict[str, Any] = {"rows_checked": frame.height, "window": window_text}
        for r in results:
            label = _label(r.expectation_config)
            details = r.result or {}
            if "unexpected_count" in details:
                metadata[f"{label} unexpected"] = int(details.get("unexpected_count") or 0)
            if "observed_value" in details:
                metadata[f"{label} observed"] = _plain(details["observed_value"])
            if not r.success and details.get("partial_unexpected_list"):
                metadata[f"{label} examples"] = _plain(details["partial_unexpected_list"][:5])
        if failed:
            metadata["failed"] = ", ".join(_label(r.expectation_config) for r in failed)
        yield dg.AssetCheckResult(
            asset_key=asset_key,
            check_name=rule.name,
            passed=not failed,
            severity=rule.severity,
            metadata=metadata,
            description=rule.description,
        )


def checked_window(context: dg.AssetCheckExecutionContext) -> tuple[datetime, datetime] | None:
    """The time span of the partitions this check run judges (None for an unpartitioned table)."""
    if not context.has_partition_key and not context.has_partition_key_range:
        return None
    window = context.partition_time_window
    return window.start, window.end


def _label(config: Any) -> str:
    kwargs = config.kwargs
    target = kwargs.get("column") or ",".join(kwargs.get("column_list") or []) or "table"
    return f"{config.type.removeprefix('expect_')}({target})"


def _plain(value: Any) -> Any:
    """Metadata values must serialise; GX hands back numpy scalars and timestamps."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    if hasattr(value, "item"):
        return value.item()
    return str(value)
