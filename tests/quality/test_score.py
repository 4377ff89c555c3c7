"""Quality scores: dimensions told by rule names, values from recorded loads and checks, the trend and the
one notification per source and day when a score falls below its threshold."""

import json
from datetime import UTC, date, datetime

import dagster as dg
import polars as pl
import pytest

from assets.quality_scores import QualityScoreConfig, quality_score_defs
from contracts.quality import PARTITION_SCORES, QUALITY_SCORES_KEY, SOURCE_SCORES
from quality.score import ScoreWeights, dimension_of, partition_scores, source_scores
from resources.lake import Lake
from resources.notifier import Notifier

AT = datetime(2026, 12, 1, 6, tzinfo=UTC)


@pytest.mark.parametrize(
    ("rule", "dimension"),
    [
        ("complete", "completeness"),
        ("row_count_in_range", "completeness"),
        ("fresh", "timeliness"),
        ("unique_dma_id_timestamp", "uniqueness"),
        ("values_in_physical_range", "validity"),
        ("known_dmas", "validity"),
    ],
)
def test_a_rule_counts_towards_the_dimension_its_name_says(rule, dimension):
    assert dimension_of(rule) == dimension


def loads(*rows):
    return pl.DataFrame(
        [
            {
                "source": "dmama",
                "asset": asset,
                "partition_key": key,
                "day": day,
                "rows_received": received,
                "rows_written": written,
                "materialized_at": AT,
            }
            for asset, key, day, received, written in rows
        ]
    )


def results(*rows):
    return pl.DataFrame(
        [{"asset": a, "partition_key": k, "rule": r, "passed": p} for a, k, r, p in rows],
        schema={"asset": pl.String, "partition_key": pl.String, "rule": pl.String, "passed": pl.Boolean},
    )


def test_dimensions_are_shares_of_rules_passed_and_validity_counts_rejected_rows():
    scored = partition_scores(
        loads(("dmama/flow", "2026-12-01-00:00", date(2026, 12, 1), 100, 90)),
        results(
            ("dmama/flow", "2026-12-01-00:00", "complete", False),
            ("dmama/flow", "2026-12-01-00:00", "values_in_physical_range", True),
            ("dmama/flow", "2026-12-01-00:00", "known_dmas", False),
            ("dmama/flow", "2026-12-01-00:00", "unique_dma_id_timestamp", True),
        ),
        ScoreWeights(),
    ).row(0, named=True)
    assert scored["completeness_pct"] == 0.0
    assert scored["validity_pct"] == pytest.approx(45.0)  # 90 % of rows kept × half the validity rules
    assert scored["uniqueness_pct"] == 100.0
    assert scored["timeliness_pct"] is None  # no freshness rule: not measured, not 100
    # Weights renormalised over the measured dimensions: (0.3·0 + 0.4·45 + 0.15·100) / 0.85
    assert scored["score_pct"] == pytest.approx((0.4 * 45 + 0.15 * 100) / 0.85)
    assert (scored["rules_evaluated"], scored["rules_failed"], scored["failed_rules"]) == (4, 2, "complete, known_dmas")


def test_source_days_average_their_partitions_and_flag_the_threshold():
    days = [date(2026, 12, d) for d in (1, 2, 3)]
    partitions = pl.DataFrame(
        {
            "source": ["weather"] * 3,
            "day": days,
            "completeness_pct": [100.0, 100.0, 50.0],
            "validity_pct": [100.0, 90.0, 60.0],
            "uniqueness_pct": [None, None, None],
            "timeliness_pct": [100.0, 100.0, 0.0],
            "score_pct": [0.0, 0.0, 0.0],
        }
    )
    daily = source_scores(partitions, ScoreWeights(thresholds_pct={"weather": 80.0}))
    assert daily["score_pct"].round(2).to_list() == [
        100.0,
        pytest.approx(95.29, abs=0.01),
        pytest.approx(45.88, abs=0.01),
    ]
    assert daily["below_threshold"].to_list() == [False, False, True]
    assert daily["threshold_pct"].to_list() == [80.0] * 3
    assert daily["score_7d_mean_pct"][-1] == pytest.approx(daily["score_pct"].mean())


DAYS = dg.DailyPartitionsDefinition(start_date="2026-11-01")


class Received(dg.Config):
    received: int = 100
    kept: int = 100


@dg.asset(key=["tanks", "levels"], group_name="tanks", partitions_def=DAYS)
def levels(config: Received) -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"rows_received": config.received, "rows_written": config.kept})


@dg.asset_check(asset=levels, blocking=True, partitions_def=DAYS)
def complete(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=context.partition_key != "2026-11-29")


@dg.asset_check(asset=levels, partitions_def=DAYS)
def level_in_range(context: dg.AssetCheckExecutionContext) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=True)


def test_the_score_asset_reads_the_event_log_and_tells_operators_once(tmp_path):
    sources = dg.Definitions(assets=[levels], asset_checks=[complete, level_in_range])
    (scores,) = quality_score_defs(sources).assets
    lake = Lake(root=str(tmp_path / "lake"))
    notifier = Notifier(record_dir=str(tmp_path / "notes"))
    with dg.instance_for_test() as instance:
        for day, kept in (("2026-11-28", 100), ("2026-11-29", 60)):
            config = {"ops": {"tanks__levels": {"config": {"received": 100, "kept": kept}}}}
            dg.materialize(
                [levels, complete, level_in_range],
                partition_key=day,
                instance=instance,
                run_config=config,
                raise_on_error=False,
            )

        def score() -> dg.ExecuteInProcessResult:
            return dg.materialize(
                [scores],
                instance=instance,
                resources={"lake": lake, "notifier": notifier},
                run_config={"ops": {"quality__scores": {"config": QualityScoreConfig(lookback_days=60).model_dump()}}},
            )

        first = score()
        daily = lake.read(SOURCE_SCORES).sort("day")
        assert daily.select("source", "day").rows() == [("tanks", date(2026, 11, 28)), ("tanks", date(2026, 11, 29))]
        assert daily["score_pct"].to_list()[0] == pytest.approx(100.0)
        # 29 Nov: completeness 0, validity 60 % of rows × all validity rules passed → (0.4·60) / 0.7
        assert daily["score_pct"].to_list()[1] == pytest.approx(0.4 * 60 / 0.7)
        assert daily["below_threshold"].to_list() == [False, True]
        partitions = lake.read(PARTITION_SCORES).sort("partition_key")
        assert partitions["failed_rules"].to_list() == [None, "complete"]
        metadata = first.asset_materializations_for_node("quality__scores")[0].metadata
        assert metadata["operators_told"].value == 1
        assert "![quality score per source and day](data:image/png;base64," in metadata["trend"].value
        assert lake.storage.exists("marts/quality_source_scores/trend.png")

        second = score()  # same day still below: not told again
        assert second.asset_materializations_for_node("quality__scores")[0].metadata["operators_told"].value == 0
        told = [json.loads(line) for line in notifier.record_path().read_text().splitlines()]
        assert len(told) == 1
        assert told[0]["title"] == "Data quality of tanks below 90 %"


def test_the_hub_scores_every_source_asset():
    from orchestration.definitions import defs

    job = defs.resolve_job_def("quality_scores_job")
    assert job.asset_layer.executable_asset_keys == {QUALITY_SCORES_KEY}
    assert defs.resolve_schedule_def("quality_scores_daily").cron_schedule == "30 6 * * *"
