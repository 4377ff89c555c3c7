"""The quality score mart: how good each source's data has been, partition by partition and day by day.

Nothing is re-checked here. The checks already ran with every materialization and the loads already
counted what they kept and rejected; this asset reads those results from Dagster's event log (the latest
materialization and the latest result of each rule per partition), scores them (``quality/score.py``),
keeps the history in the lake, shows the trend as a plot, and tells operators when a source's day falls
below its threshold (once per source and day, not on every refresh).
"""

import base64
import io
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import dagster as dg
import polars as pl
from pydantic import Field

from assets.lake_tables import lake_metadata
from contracts.quality import PARTITION_SCORES, QUALITY_SCORES_KEY, SOURCE_SCORES
from quality.score import DIMENSIONS, ScoreWeights, partition_scores, source_scores
from resources.lake import Lake
from resources.notifier import Notification, Notifier

SNAPSHOT = "snapshot"
TREND_PLOT = f"{SOURCE_SCORES.layer}/{SOURCE_SCORES.name}/trend.png"


class QualityScoreConfig(dg.Config):
    """Weights of the dimensions, thresholds, and how far back the event log is read."""

    lookback_days: int = Field(default=30, ge=1, le=400, description="Days of partitions (re)scored per run.")
    completeness_weight: float = Field(default=0.3, ge=0)
    validity_weight: float = Field(default=0.4, ge=0)
    uniqueness_weight: float = Field(default=0.15, ge=0)
    timeliness_weight: float = Field(default=0.15, ge=0)
    threshold_pct: float = Field(default=90.0, ge=0, le=100, description="Score below which operators are told.")
    source_thresholds_pct: dict[str, float] = Field(
        default_factory=dict, description="Per-source thresholds, e.g. {'weather': 80} for a noisy provider."
    )

    def weights(self) -> ScoreWeights:
        return ScoreWeights(
            completeness=self.completeness_weight,
            validity=self.validity_weight,
            uniqueness=self.uniqueness_weight,
            timeliness=self.timeliness_weight,
            thresholds_pct=dict(self.source_thresholds_pct),
            default_threshold_pct=self.threshold_pct,
        )


@dataclass(frozen=True)
class Watched:
    """An asset whose quality is scored: its source, partitions and the checks on it."""

    key: dg.AssetKey
    source: str
    partitions_def: dg.PartitionsDefinition | None
    check_keys: tuple[dg.AssetCheckKey, ...]


def watched_assets(sources: dg.Definitions) -> list[Watched]:
    """Every materializable asset of ``sources``, with the checks declared on it (in the asset or apart)."""
    checks: dict[dg.AssetKey, set[dg.AssetCheckKey]] = {}
    for definition in [
        *(sources.asset_checks or []),
        *(a for a in sources.assets or [] if isinstance(a, dg.AssetsDefinition)),
    ]:
        for spec in definition.check_specs:
            checks.setdefault(spec.asset_key, set()).add(spec.key)
    watched = []
    for definition in sources.assets or []:
        if not isinstance(definition, dg.AssetsDefinition) or not definition.is_materializable:
            continue
        for spec in definition.specs:
            watched.append(
                Watched(
                    key=spec.key,
                    source=spec.group_name or "default",
                    partitions_def=definition.partitions_def,
                    check_keys=tuple(sorted(checks.get(spec.key, ()), key=lambda k: k.name)),
                )
            )
    return sorted(watched, key=lambda w: w.key.to_user_string())


def observed(
    instance: dg.DagsterInstance, watched: Iterable[Watched], since: datetime
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(loads, results) since ``since``: the latest materialization and rule results of each partition."""
    loads: list[dict] = []
    results: list[dict] = []
    for asset in watched:
        latest: dict[str, dict] = {}
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=asset.key, after_timestamp=since.timestamp()), limit=10_000
        ).records
        for record in records:  # newest first: the first one seen per partition is the latest
            partition = record.partition_key or SNAPSHOT
            if partition in latest:
                continue
            metadata = record.asset_materialization.metadata if record.asset_materialization else {}
            at = datetime.fromtimestamp(record.timestamp, UTC)
            latest[partition] = {
                "source": asset.source,
                "asset": asset.key.to_user_string(),
                "partition_key": partition,
                "day": _day(asset.partitions_def, partition, at),
                "rows_received": _int(metadata.get("rows_received")),
                "rows_written": _int(metadata.get("rows_written")),
                "materialized_at": at,
            }
        loads.extend(latest.values())
        for check_key in asset.check_keys:
            results.extend(_latest_results(instance, asset, check_key, since, set(latest)))
    load_schema = {
        "source": pl.String,
        "asset": pl.String,
        "partition_key": pl.String,
        "day": pl.Date,
        "rows_received": pl.Int64,
        "rows_written": pl.Int64,
        "materialized_at": pl.Datetime("us", "UTC"),
    }
    result_schema = {"asset": pl.String, "partition_key": pl.String, "rule": pl.String, "passed": pl.Boolean}
    return pl.DataFrame(loads, schema=load_schema), pl.DataFrame(results, schema=result_schema)


def _latest_results(
    instance: dg.DagsterInstance, asset: Watched, check_key: dg.AssetCheckKey, since: datetime, partitions: set[str]
) -> list[dict]:
    from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus as Status

    history = instance.event_log_storage.get_asset_check_execution_history(check_key, limit=20_000)
    history = [r for r in history if r.create_timestamp >= since.timestamp()]
    # A run over a range plans the check per partition and records one evaluation without a partition.
    evaluated = {r.run_id: r for r in history if r.status != Status.PLANNED and r.evaluation is not None}
    planned_by_run: dict[str, list[str]] = {}
    for record in history:
        if record.partition is not None:
            planned_by_run.setdefault(record.run_id, []).append(record.partition)
    found: dict[str, bool] = {}
    for record in history:  # newest first
        outcome = evaluated.get(record.run_id)
        if outcome is None:
            continue
        covered = [record.partition] if record.partition is not None else planned_by_run.get(record.run_id, [SNAPSHOT])
        for partition in covered:
            if partition in partitions and partition not in found:
                found[partition] = outcome.evaluation.passed
    return [
        {"asset": asset.key.to_user_string(), "partition_key": p, "rule": check_key.name, "passed": passed}
        for p, passed in found.items()
    ]


def _day(partitions_def: dg.PartitionsDefinition | None, partition: str, at: datetime) -> date:
    if isinstance(partitions_def, dg.TimeWindowPartitionsDefinition) and partition != SNAPSHOT:
        return partitions_def.time_window_for_partition_key(partition).start.astimezone(UTC).date()
    return at.date()


def _int(value: object) -> int | None:
    raw = getattr(value, "value", value)
    return int(raw) if isinstance(raw, int | float) else None


def trend_png(scores: pl.DataFrame, default_threshold: float) -> bytes:
    """Score per source and day, with the threshold, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 4), dpi=100)
    for source, frame in scores.sort("day").group_by("source", maintain_order=True):
        axes.plot(frame["day"].to_list(), frame["score_pct"].to_list(), marker="o", markersize=3, label=source[0])
    axes.axhline(default_threshold, color="firebrick", linestyle="--", linewidth=1, label="threshold")
    axes.set_ylim(0, 102)
    axes.set_ylabel("quality score, %")
    axes.set_title("Data quality per source and day")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left", fontsize=8, ncols=4)
    figure.autofmt_xdate()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def quality_score_defs(sources: dg.Definitions) -> dg.Definitions:
    """The quality score asset over every asset of ``sources``, its job and a daily schedule."""
    watched = watched_assets(sources)

    @dg.asset(
        key=QUALITY_SCORES_KEY,
        group_name="quality",
        kinds={"parquet"},
        owners=["team:data-platform"],
        metadata=lake_metadata(SOURCE_SCORES, PARTITION_SCORES),
        description=(
            "Data quality per source and day (completeness, validity, uniqueness, timeliness and one weighted "
            "score, with its 7-day trend), and per asset partition, from the checks and loads already "
            "recorded. Operators are told when a source's day falls below its threshold."
        ),
    )
    def scores(
        context: dg.AssetExecutionContext, config: QualityScoreConfig, lake: Lake, notifier: Notifier
    ) -> dg.MaterializeResult:
        weights = config.weights()
        since = datetime.now(UTC) - timedelta(days=config.lookback_days)
        loads, results = observed(context.instance, watched, since)
        fresh = partition_scores(loads, results, weights)
        previous = lake.read(PARTITION_SCORES)
        # History older than the lookback is kept as it was scored; the lookback is scored again.
        kept = previous.join(fresh.select("asset", "partition_key"), on=["asset", "partition_key"], how="anti")
        partitions = pl.concat([kept, fresh.select(kept.columns)], how="vertical_relaxed").sort(
            "source", "asset", "partition_key"
        )
        daily = source_scores(partitions, weights)
        before = lake.read(SOURCE_SCORES)
        lake.replace_snapshot(PARTITION_SCORES, partitions)
        lake.replace_snapshot(SOURCE_SCORES, daily.select([c.name for c in SOURCE_SCORES.columns]))

        newly_below = _newly_below(daily, before)
        for row in newly_below.iter_rows(named=True):
            notifier.send(
                Notification(
                    severity="warning",
                    title=f"Data quality of {row['source']} below {row['threshold_pct']:.0f} %",
                    message=(
                        f"{row['source']} scored {row['score_pct']:.1f} % on {row['day']} (threshold "
                        f"{row['threshold_pct']:.0f} %): {_weakest(row)}. See quality/scores in the UI."
                    ),
                    source="quality",
                    value=round(row["score_pct"], 1),
                )
            )
        latest = daily.sort("day").group_by("source", maintain_order=True).last().sort("source")
        metadata: dict = {
            "partitions_scored": fresh.height,
            "sources": latest.height,
            "sources_below_threshold": int(latest["below_threshold"].sum()) if latest.height else 0,
            "operators_told": newly_below.height,
            "latest_by_source": dg.MetadataValue.md(_table(latest)),
            "dagster/row_count": daily.height,
        }
        if daily.height:
            png = trend_png(daily, weights.default_threshold_pct)
            where = lake.storage.write(TREND_PLOT, png)
            metadata["trend_plot_file"] = dg.MetadataValue.path(str(where))
            encoded = base64.b64encode(png).decode("ascii")
            metadata["trend"] = dg.MetadataValue.md(
                f"![quality score per source and day](data:image/png;base64,{encoded})"
            )
        return dg.MaterializeResult(metadata=metadata)

    job = dg.define_asset_job(
        "quality_scores_job",
        selection=dg.AssetSelection.assets(QUALITY_SCORES_KEY),
        description="Score every source's data quality from the recorded checks and loads.",
    )
    schedule = dg.ScheduleDefinition(
        name="quality_scores_daily",
        job=job,
        cron_schedule="30 6 * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Every morning, after the night's loads: the quality scores and their trend.",
    )
    return dg.Definitions(assets=[scores], jobs=[job], schedules=[schedule])


def _newly_below(daily: pl.DataFrame, before: pl.DataFrame) -> pl.DataFrame:
    """Each source's latest day, when it is below threshold and was not already reported below for that day."""
    latest = daily.sort("day").group_by("source", maintain_order=True).last()
    below = latest.filter(pl.col("below_threshold"))
    if before.height == 0:
        return below
    told = before.filter(pl.col("below_threshold")).select("source", "day")
    return below.join(told, on=["source", "day"], how="anti").sort("source")


def _weakest(row: dict) -> str:
    measured = {d: row[f"{d}_pct"] for d in DIMENSIONS if row.get(f"{d}_pct") is not None}
    if not measured:
        return "no dimension measured"
    dimension, value = min(measured.items(), key=lambda item: item[1])
    return f"weakest {dimension} at {value:.1f} %"


def _table(latest: pl.DataFrame) -> str:
    if latest.height == 0:
        return "No scored partitions yet."
    header = "| source | day | score % | completeness | validity | uniqueness | timeliness | threshold |"
    lines = [header, "|---|---|---|---|---|---|---|---|"]
    for row in latest.iter_rows(named=True):
        cells = [f"{row[f'{d}_pct']:.1f}" if row[f"{d}_pct"] is not None else "–" for d in DIMENSIONS]
        flag = " ⚠" if row["below_threshold"] else ""
        lines.append(
            f"| {row['source']} | {row['day']} | {row['score_pct']:.1f}{flag} | {' | '.join(cells)} | "
            f"{row['threshold_pct']:.0f} |"
        )
    return "\n".join(lines)
