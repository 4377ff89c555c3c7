"""Great Expectations suites run as Dagster asset checks.

dagster-ge does not support GX 1.x, so this module does the wiring itself: a check reads the run's
partitions of a lake table, validates them once against a suite of GX expectations grouped into named
rules, and reports one ``AssetCheckResult`` per rule with the figures GX computed.

GX costs about 3 s and 270 MB to import, so it is imported only when a check runs, never when the
definitions load.
"""

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
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
        frame = lake.read(table, *window) if window else lake.read(table)
        check_input = CheckInput(lake=lake, window=window, now=datetime.now(UTC))
        yield from validate(frame, rules, check_input, asset_key, table.name)

    return _suite


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
