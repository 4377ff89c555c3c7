"""The slot-grid rule: a shifted clock is told apart from gaps, on whole windows and on wide ones."""

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from quality.slot_grid import skew_summary, slot_offsets

START = datetime(2026, 3, 2, tzinfo=UTC)
DAY = START + timedelta(days=1)
SLOT = timedelta(minutes=15)


def series(dma: str, start: datetime, end: datetime, shift: timedelta = timedelta(0), drop=()) -> list[dict]:
    rows, t, n = [], start, 0
    while t < end:
        if n not in drop:
            rows.append({"dma_id": dma, "timestamp": (t + shift).strftime("%Y-%m-%dT%H:%M:%SZ")})
        t, n = t + SLOT, n + 1
    return rows


def offsets(rows: list[dict], start=START, end=DAY) -> dict[str, dict]:
    frame = slot_offsets(pl.DataFrame(rows, schema={"dma_id": pl.String, "timestamp": pl.String}), start, end)
    return {row["dma_id"]: row for row in frame.to_dicts()}


def test_a_day_an_hour_late_is_skewed_though_most_rows_fall_inside_the_window():
    got = offsets(series("DMA-0001", START, DAY) + series("DMA-0002", START, DAY, timedelta(hours=1)))
    clean, late = got["DMA-0001"], got["DMA-0002"]
    assert (clean["skewed"], clean["skew_s"], clean["missing_slots"], clean["on_grid_slots"]) == (False, None, 0, 96)
    assert (late["skewed"], late["skew_s"]) == (True, 3600.0)
    assert (late["first_offset_s"], late["last_offset_s"]) == (3600.0, 3600.0)
    assert (late["expected_slots"], late["on_grid_slots"], late["missing_slots"]) == (96, 92, 4)


def test_early_clocks_and_offsets_off_the_grid_are_skew_too():
    got = offsets(
        series("DMA-0003", START, DAY, -timedelta(minutes=30)) + series("DMA-0004", START, DAY, timedelta(minutes=7))
    )
    assert (got["DMA-0003"]["skewed"], got["DMA-0003"]["skew_s"]) == (True, -1800.0)
    assert (got["DMA-0004"]["skewed"], got["DMA-0004"]["skew_s"], got["DMA-0004"]["on_grid_slots"]) == (True, 420.0, 0)


@pytest.mark.parametrize(
    ("drop", "missing"),
    [((0, 1, 2, 3), 4), ((92, 93, 94, 95), 4), ((0, 95), 2), ((40, 41, 42), 3)],
)
def test_gaps_at_either_end_or_inside_are_not_skew(drop, missing):
    row = offsets(series("DMA-0005", START, DAY, drop=drop))["DMA-0005"]
    assert row["skewed"] is False and row["skew_s"] is None
    assert row["missing_slots"] == missing


def test_an_hour_window_shifted_wholly_outside_is_skewed():
    end = START + timedelta(hours=1)
    row = offsets(series("DMA-0001", START, end, timedelta(hours=1)), START, end)["DMA-0001"]
    assert (row["skewed"], row["skew_s"], row["on_grid_slots"], row["missing_slots"]) == (True, 3600.0, 0, 4)


def test_unparseable_timestamps_are_ignored_and_datetime_columns_work():
    broken = {"dma_id": "DMA-0001", "timestamp": "31/02/2026 25:61"}
    rows = [*series("DMA-0001", START, DAY, timedelta(hours=1)), broken]
    assert offsets(rows)["DMA-0001"]["skew_s"] == 3600.0
    typed = pl.DataFrame(
        {"dma_id": ["A", "A"], "timestamp": [START + timedelta(minutes=15), DAY]},
        schema={"dma_id": pl.String, "timestamp": pl.Datetime("us", "UTC")},
    )
    row = slot_offsets(typed, START, DAY).to_dicts()[0]
    assert (row["skewed"], row["skew_s"]) == (True, 900.0)


def test_summary_counts_skewed_series_and_the_largest_skew():
    frame = slot_offsets(
        pl.DataFrame(
            series("DMA-0001", START, DAY)
            + series("DMA-0002", START, DAY, timedelta(hours=1))
            + series("DMA-0003", START, DAY, -timedelta(hours=2))
        ),
        START,
        DAY,
    )
    assert skew_summary(frame) == {
        "clock_skewed": 2,
        "max_clock_skew_s": 7200.0,
        "clock_skew_s_by_entity": {"DMA-0002": 3600.0, "DMA-0003": -7200.0},
    }


def test_stored_rows_and_their_rejects_tell_the_skew_the_stored_rows_alone_hide():
    from contracts.dmama import FLOW_READINGS
    from quality.conform import conform
    from quality.slot_grid import received_times
    from simulators.dmama import DmamaSimulator

    sim = DmamaSimulator()
    truth = sim.flow_readings("DMA-0002", START, DAY)
    hour_late = [datetime.fromisoformat(row["timestamp"]) + timedelta(hours=1) for row in truth]
    late = [
        {**row, "dma_id": "DMA-0002", "timestamp": t.strftime("%Y-%m-%dT%H:%M:%SZ")}
        for row, t in zip(truth, hour_late, strict=True)
    ]
    loaded = conform(late, FLOW_READINGS, source="dmama", partition_key="2026-03-02", window=(START, DAY))
    assert (loaded.frame.height, loaded.rejects.height) == (92, 4)
    alone = slot_offsets(received_times(loaded.frame), START, DAY).to_dicts()[0]
    assert alone["skewed"] is False and alone["missing_slots"] == 4  # looks like a gap at the start
    both = slot_offsets(received_times(loaded.frame, loaded.rejects), START, DAY).to_dicts()[0]
    assert (both["skewed"], both["skew_s"], both["received"]) == (True, 3600.0, 96)
