"""Refuse to plan on data whose checks failed: the guard every decision asset calls first.

Dagster stops a downstream step when a blocking check fails *in the same run*. A plan is usually computed
in a run of its own (the morning schedule, a planner's scenario from the UI), long after the inputs landed,
so it must look up the inputs' checks itself: for each upstream asset, every blocking check's latest
execution (per partition the plan reads, or the latest of all), and stop if any of them failed at ERROR
severity. A check that never ran is reported, not treated as failed: data landed before a check existed
is not wrong data.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import dagster as dg

# Private in Dagster 1.13, but the only way the event log filters check executions by partition.
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from dagster_shared.check import CheckError

__all__ = ["UpstreamCheckReport", "require_upstream_checks", "upstream_check_report"]


@dataclass(frozen=True)
class UpstreamCheckReport:
    """What the latest executions of the upstream blocking checks say."""

    failed: tuple[str, ...]  # "markets/tariffs:tariff_rates_plausible (partition 2026-12-05): <why>"
    passed: int
    never_ran: tuple[str, ...]

    def metadata(self) -> dict[str, dg.MetadataValue]:
        return {
            "upstream_blocking_checks_passed": dg.MetadataValue.int(self.passed),
            "upstream_blocking_checks_never_ran": dg.MetadataValue.text(", ".join(self.never_ran) or "none"),
        }


def upstream_check_report(
    context: dg.AssetExecutionContext,
    upstream_keys: Sequence[dg.AssetKey],
    partition_keys: Sequence[str] | None = None,
    checks: Sequence[dg.AssetChecksDefinition] = (),
) -> UpstreamCheckReport:
    """The latest execution of every blocking check on ``upstream_keys``, per partition in ``partition_keys``.

    ``partition_keys`` are the upstream partitions the caller reads (keys of one partitions definition, as
    the upstream assets share it); ``None`` looks at each check's latest execution whatever its partition.
    ``checks`` adds check definitions to those the code location declares (see `_blocking_check_keys`).
    """
    specs = _blocking_checks(context, upstream_keys, checks)
    if not specs:
        return UpstreamCheckReport(failed=(), passed=0, never_ran=())
    storage = context.instance.event_log_storage
    failed: list[str] = []
    never_ran: list[str] = []
    passed = 0
    for key in sorted(specs, key=lambda key: key.to_user_string()):
        # A check without partitions of its own judges the asset as a whole: its latest execution counts.
        partitions = partition_keys if partition_keys is not None and specs[key].partitions_def else [None]
        for partition in partitions:
            latest = storage.get_latest_asset_check_execution_by_key(
                [key], partition_filter=PartitionKeyFilter(key=partition) if partition is not None else None
            )
            record = latest.get(key)
            if record is not None and record.status == AssetCheckExecutionRecordStatus.PLANNED:
                record = _evaluated_in_same_run(storage, key, record)
            name = f"{key.asset_key.to_user_string()}:{key.name}" + (
                f" (partition {partition})" if partition is not None else ""
            )
            if record is None or record.status == AssetCheckExecutionRecordStatus.PLANNED:
                never_ran.append(name)
                continue
            evaluation = record.evaluation
            if (
                record.status == AssetCheckExecutionRecordStatus.FAILED
                and evaluation is not None
                and evaluation.severity == dg.AssetCheckSeverity.ERROR
            ):
                failed.append(f"{name}: {evaluation.description}" if evaluation.description else name)
            else:
                passed += 1
    return UpstreamCheckReport(failed=tuple(failed), passed=passed, never_ran=tuple(never_ran))


def _evaluated_in_same_run(storage, key: dg.AssetCheckKey, planned):
    """The evaluation a range run recorded for a partition it planned, else the planned record itself.

    A run over a range of partitions (a single-run backfill) plans the check once per partition but
    records one evaluation for the whole range, without a partition: that evaluation judges this
    partition too.
    """
    for record in storage.get_asset_check_execution_history(key, limit=50):
        if record.run_id == planned.run_id and record.status != AssetCheckExecutionRecordStatus.PLANNED:
            return record
    return planned


def require_upstream_checks(
    context: dg.AssetExecutionContext,
    upstream_keys: Sequence[dg.AssetKey],
    partition_keys: Sequence[str] | None = None,
    checks: Sequence[dg.AssetChecksDefinition] = (),
) -> UpstreamCheckReport:
    """Stop the run, naming each failed check, if a blocking check on an input failed; else say what passed."""
    report = upstream_check_report(context, upstream_keys, partition_keys, checks)
    if report.failed:
        more = len(report.failed) - 10
        shown = "; ".join(report.failed[:10]) + (f"; and {more} more" if more > 0 else "")
        raise dg.Failure(
            description=(
                f"{context.asset_key.to_user_string()}: not computed, because blocking checks on its inputs "
                f"failed: {shown}. Fix the data and re-materialize those partitions (their checks run with "
                "them), then run this again."
            ),
            metadata={"failed_upstream_checks": dg.MetadataValue.json(list(report.failed))},
            allow_retries=False,
        )
    context.log.info(
        f"{report.passed} upstream blocking check execution(s) passed"
        + (f"; never ran: {', '.join(report.never_ran[:10])}" if report.never_ran else "")
    )
    return report


def _blocking_checks(
    context: dg.AssetExecutionContext, upstream_keys: Sequence[dg.AssetKey], checks: Sequence[dg.AssetChecksDefinition]
) -> dict[dg.AssetCheckKey, dg.AssetCheckSpec]:
    """Blocking checks on the upstream assets: from the code location's asset graph, plus ``checks``.

    A run launched in a code location (UI, schedule, CLI) knows every check of the repository. A run
    outside one (``execute_in_process`` of a hub job, ``dg.materialize`` of a selection) knows only its own
    steps, so the hub's own definitions are asked instead; ``checks`` adds checks of assets that are not
    the hub's (a test's own assets).
    """
    upstream = set(upstream_keys)
    found: dict[dg.AssetCheckKey, dg.AssetCheckSpec] = {}
    graphs = [context.job_def.asset_layer.asset_graph]
    try:
        graphs.insert(0, context.repository_def.asset_graph)
    except CheckError:  # no repository outside a code location
        hub = _hub_asset_graph()
        if upstream & set(hub.get_all_asset_keys()):
            graphs.insert(0, hub)
    for graph in graphs:
        for key in graph.get_check_keys_for_assets(upstream):
            spec = graph.get_check_spec(key)
            if spec.blocking:
                found.setdefault(key, spec)
    for definition in checks:
        for spec in definition.check_specs:
            if spec.blocking and spec.asset_key in upstream:
                found.setdefault(spec.key, spec)
    return found


@functools.cache
def _hub_asset_graph():
    """The hub's whole asset graph, checks included; imported on first use (definitions import this module)."""
    from orchestration.definitions import defs

    return defs.resolve_asset_graph()
