"""Quality scores from what the checks and the loads already recorded: per partition, then per source and day.

Every rule counts towards one dimension, told by its name, so a new rule is scored without being
registered anywhere:

- **completeness**: ``complete…``, ``…coverage…``, ``…row_count…``, ``…gaps…`` (rows or slots that should be
  there are);
- **timeliness**: ``fresh…``, ``…late…`` (the source is still sending);
- **uniqueness**: ``unique…``, ``…duplicate…`` (no row twice);
- **validity**: every other rule (types, ranges, allowed sets, references), together with the share of
  received rows the load kept (rows it rejected lower it).

A dimension is the share of its rules that passed on the partition's latest results (validity times the
kept-row share); the score is the weighted mean of the dimensions that were measured, weights renormalised,
so a table without a freshness rule is judged on what it has rather than given 100 for timeliness.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl

DIMENSIONS = ("completeness", "validity", "uniqueness", "timeliness")

_PATTERNS = {
    "completeness": ("complete", "coverage", "row_count", "gaps"),
    "timeliness": ("fresh", "late", "timely"),
    "uniqueness": ("unique", "duplicate"),
}


def dimension_of(rule: str) -> str:
    """The dimension a rule measures, from its name (see the module docstring)."""
    name = rule.lower()
    for dimension, patterns in _PATTERNS.items():
        if any(pattern in name for pattern in patterns):
            return dimension
    return "validity"


@dataclass(frozen=True)
class ScoreWeights:
    """How much each dimension counts in the score; any non-negative numbers (they are normalised)."""

    completeness: float = 0.3
    validity: float = 0.4
    uniqueness: float = 0.15
    timeliness: float = 0.15
    thresholds_pct: dict[str, float] = field(default_factory=dict)  # per source; else default_threshold_pct
    default_threshold_pct: float = 90.0

    def __post_init__(self) -> None:
        weights = [getattr(self, d) for d in DIMENSIONS]
        if any(w < 0 for w in weights) or sum(weights) <= 0:
            raise ValueError(
                f"quality score weights must be ≥ 0 and not all 0, got {dict(zip(DIMENSIONS, weights, strict=True))}"
            )

    def threshold(self, source: str) -> float:
        return float(self.thresholds_pct.get(source, self.default_threshold_pct))


def weighted_score(weights: ScoreWeights) -> pl.Expr:
    """The weighted mean of the ``<dimension>_pct`` columns that are not null."""
    numerator = pl.sum_horizontal((pl.col(f"{d}_pct") * getattr(weights, d)).fill_null(0.0) for d in DIMENSIONS)
    denominator = pl.sum_horizontal(
        pl.when(pl.col(f"{d}_pct").is_not_null()).then(getattr(weights, d)).otherwise(0.0) for d in DIMENSIONS
    )
    return pl.when(denominator > 0).then(numerator / denominator).otherwise(None)


def partition_scores(loads: pl.DataFrame, results: pl.DataFrame, weights: ScoreWeights) -> pl.DataFrame:
    """One row per asset partition with its dimension scores.

    ``loads``: source, asset, partition_key, day, rows_received, rows_written, materialized_at (the latest
    materialization of each partition). ``results``: asset, partition_key, rule, passed (the latest result of
    each rule on each partition). A partition with neither rows figures nor rule results scores empty (and
    is left out: there is nothing to judge).
    """
    judged = results.with_columns(dimension=pl.col("rule").map_elements(dimension_of, return_dtype=pl.String))
    by_dimension = (
        judged.group_by("asset", "partition_key", "dimension")
        .agg(share=pl.col("passed").cast(pl.Float64).mean())
        .pivot(on="dimension", index=["asset", "partition_key"], values="share")
    )
    for dimension in DIMENSIONS:
        if dimension not in by_dimension.columns:
            by_dimension = by_dimension.with_columns(pl.lit(None, dtype=pl.Float64).alias(dimension))
    tallies = (
        judged.group_by("asset", "partition_key")
        .agg(
            rules_evaluated=pl.len().cast(pl.Int64),
            rules_failed=(~pl.col("passed")).sum().cast(pl.Int64),
            failed_rules=pl.col("rule").filter(~pl.col("passed")).sort().str.join(", "),
        )
        .with_columns(failed_rules=pl.when(pl.col("failed_rules") != "").then(pl.col("failed_rules")))
    )
    kept = (
        pl.when(pl.col("rows_received") > 0)
        .then(pl.col("rows_written").cast(pl.Float64) / pl.col("rows_received"))
        .otherwise(None)
    )
    frame = (
        loads.join(by_dimension, on=["asset", "partition_key"], how="left")
        .join(tallies, on=["asset", "partition_key"], how="left")
        .with_columns(
            rules_evaluated=pl.col("rules_evaluated").fill_null(0),
            rules_failed=pl.col("rules_failed").fill_null(0),
            completeness_pct=pl.col("completeness") * 100,
            uniqueness_pct=pl.col("uniqueness") * 100,
            timeliness_pct=pl.col("timeliness") * 100,
            validity_pct=pl.when(pl.col("validity").is_null() & kept.is_null())
            .then(None)
            .otherwise(pl.col("validity").fill_null(1.0) * kept.fill_null(1.0) * 100),
        )
        .with_columns(score_pct=weighted_score(weights))
        .filter(pl.col("score_pct").is_not_null())
    )
    columns = [
        "source", "asset", "partition_key", "day", "rows_received", "rows_written", "rules_evaluated",
        "rules_failed", "failed_rules", *(f"{d}_pct" for d in DIMENSIONS), "score_pct", "materialized_at",
    ]  # fmt: skip
    return frame.select(columns).sort("source", "asset", "partition_key")


def source_scores(partitions: pl.DataFrame, weights: ScoreWeights) -> pl.DataFrame:
    """One row per source and day: mean dimension scores of its partitions, the score, its 7-day trend
    and whether it is below the source's threshold."""
    daily = (
        partitions.group_by("source", "day")
        .agg(partitions=pl.len().cast(pl.Int64), **{f"{d}_pct": pl.col(f"{d}_pct").mean() for d in DIMENSIONS})
        .with_columns(score_pct=weighted_score(weights))
        .sort("source", "day")
    )
    thresholds = pl.DataFrame(
        {
            "source": daily["source"].unique().to_list(),
        },
        schema={"source": pl.String},
    ).with_columns(threshold_pct=pl.col("source").map_elements(weights.threshold, return_dtype=pl.Float64))
    return (
        daily.with_columns(
            score_7d_mean_pct=pl.col("score_pct")
            .rolling_mean_by("day", window_size="7d", closed="right")
            .over("source")
        )
        .join(thresholds, on="source", how="left")
        .with_columns(below_threshold=pl.col("score_pct") < pl.col("threshold_pct"))
        .sort("source", "day")
    )
