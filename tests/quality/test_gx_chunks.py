"""A long check window is validated a day at a time, and the merged result says what one run would."""

import itertools
from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl

from contracts.dmama import FLOW_READINGS_KEY
from quality.dmama import FLOW_RULES
from quality.gx import CheckInput, chunk_windows, merge_chunk_results, validate

HOURLY = dg.HourlyPartitionsDefinition(start_date="2026-01-01-00:00")
START = datetime(2026, 3, 1, tzinfo=UTC)
ROW_RULES = [rule for rule in FLOW_RULES if rule.name in ("keys_present", "values_in_physical_range")]


def readings(day: int, flows: list[float]) -> pl.DataFrame:
    first = START + timedelta(days=day)
    return pl.DataFrame(
        {
            "dma_id": ["DMA-001"] * len(flows),
            "timestamp": [first + timedelta(minutes=15 * i) for i in range(len(flows))],
            "flow_m3h": flows,
            "pressure_bar": [3.0] * len(flows),
        }
    )


def test_a_month_of_hourly_partitions_is_cut_into_whole_days():
    chunks = chunk_windows((START, START + timedelta(days=30, hours=5)), HOURLY)
    assert len(chunks) == 31
    assert chunks[0] == (START, START + timedelta(days=1))
    assert chunks[-1] == (START + timedelta(days=30), START + timedelta(days=30, hours=5))
    assert all(a[1] == b[0] for a, b in itertools.pairwise(chunks))  # no gap, no overlap
    assert chunk_windows((START, START + timedelta(hours=3)), HOURLY) == [(START, START + timedelta(hours=3))]


def test_merged_chunks_fail_where_a_day_failed_and_add_up_its_figures():
    days = [readings(0, [100.0, 120.0]), readings(1, [100.0, -5.0, -7.0]), readings(2, [90.0])]
    chunks = [(START + timedelta(days=d), START + timedelta(days=d + 1)) for d in range(3)]
    per_chunk = [
        list(validate(frame, ROW_RULES, CheckInput(lake=None, window=chunk, now=START), FLOW_READINGS_KEY, "flow"))
        for frame, chunk in zip(days, chunks, strict=True)
    ]
    merged = {r.check_name: r for r in merge_chunk_results(per_chunk, chunks, (chunks[0][0], chunks[-1][1]))}
    in_range = merged["values_in_physical_range"]
    assert not in_range.passed
    assert in_range.metadata["rows_checked"].value == 6
    assert in_range.metadata["column_values_to_be_between(flow_m3h) unexpected"].value == 2
    assert in_range.metadata["failed_chunks"].value == "2026-03-02T00:00Z"
    assert in_range.metadata["chunks"].value == 3
    assert merged["keys_present"].passed

    whole = {
        r.check_name: r
        for r in validate(
            pl.concat(days),
            ROW_RULES,
            CheckInput(lake=None, window=(chunks[0][0], chunks[-1][1]), now=START),
            FLOW_READINGS_KEY,
            "flow",
        )
    }
    assert whole["values_in_physical_range"].passed == in_range.passed
    assert whole["values_in_physical_range"].metadata["column_values_to_be_between(flow_m3h) unexpected"].value == 2
