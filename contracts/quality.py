"""The quality layer's own tables: a score per asset partition and per source and day.

Scores are percentages (0–100) per dimension in the manner of DAMA's data quality dimensions:
completeness, validity, uniqueness and timeliness, and one weighted score. A dimension no rule of the
asset measures is empty, not 100: an unmeasured dimension is not a perfect one.
"""

import dagster as dg
import polars as pl

from resources.lake import Column, LakeTable

UTC_TIME = pl.Datetime("us", "UTC")
QUALITY_SCORES_KEY = dg.AssetKey(["quality", "scores"])

_DIMENSIONS = (
    Column("completeness_pct", pl.Float64(), "Share of completeness rules (row counts, coverage) that passed, %."),
    Column(
        "validity_pct",
        pl.Float64(),
        "Rows kept of rows received, times the share of validity rules (types, ranges, sets, references) "
        "that passed, %.",
    ),
    Column("uniqueness_pct", pl.Float64(), "Share of uniqueness rules that passed, %."),
    Column("timeliness_pct", pl.Float64(), "Share of freshness rules that passed, %."),
    Column("score_pct", pl.Float64(), "Weighted mean of the measured dimensions, %.", nullable=False),
)

PARTITION_SCORES = LakeTable(
    layer="marts",
    name="quality_partition_scores",
    description=(
        "Data quality per asset partition: the latest materialization's rows and the latest result of "
        "every rule on it, as scores per dimension and one weighted score."
    ),
    columns=(
        Column("source", pl.String(), "Source system (the asset's group), e.g. dmama.", nullable=False),
        Column("asset", pl.String(), "Asset key, e.g. dmama/flow_readings.", nullable=False),
        Column("partition_key", pl.String(), "Dagster partition; 'snapshot' for whole tables.", nullable=False),
        Column(
            "day", pl.Date(), "UTC day the partition starts on (snapshots: the day they were taken).", nullable=False
        ),
        Column("rows_received", pl.Int64(), "Rows the source sent in the run that wrote the partition."),
        Column("rows_written", pl.Int64(), "Rows kept in the lake by that run."),
        Column("rules_evaluated", pl.Int64(), "Rules with a result for the partition.", nullable=False),
        Column("rules_failed", pl.Int64(), "Of those, rules that failed.", nullable=False),
        Column("failed_rules", pl.String(), "Names of the failed rules, comma-separated."),
        *_DIMENSIONS,
        Column("materialized_at", UTC_TIME, "When the partition was last written, UTC.", nullable=False),
    ),
    key=("asset", "partition_key"),
    time_column=None,
)

SOURCE_SCORES = LakeTable(
    layer="marts",
    name="quality_source_scores",
    description=(
        "Data quality per source and UTC day: the mean of its partitions' dimension scores, the weighted "
        "score, its 7-day trend and whether it fell below the source's threshold."
    ),
    columns=(
        Column("source", pl.String(), "Source system, e.g. dmama.", nullable=False),
        Column("day", pl.Date(), "UTC day.", nullable=False),
        Column("partitions", pl.Int64(), "Asset partitions of the source starting that day.", nullable=False),
        *_DIMENSIONS,
        Column("score_7d_mean_pct", pl.Float64(), "Mean score over this day and the six before it, %."),
        Column("threshold_pct", pl.Float64(), "Score below which operators are told, %.", nullable=False),
        Column("below_threshold", pl.Boolean(), "True when the day's score is below the threshold.", nullable=False),
    ),
    key=("source", "day"),
    time_column=None,
)
