"""QARTOD flags per point on hand-made series: each test flags the points it should, and only those."""

from datetime import timedelta

import polars as pl

from quality import timeseries
from quality.qartod import FAIL, MISSING, NOT_EVALUATED, PASS, QC_TESTS, SUSPECT, flag_points
from tests.quality.test_timeseries import series

LIMITS = timeseries.load_limits()


def flags(frame: pl.DataFrame, column: str = "qc_flag") -> list[int]:
    return flag_points(frame, LIMITS)[column].to_list()


def test_a_steady_noisy_series_passes_every_test():
    frame = series([20.0 + (i % 3) * 0.1 for i in range(30)])
    flagged = flag_points(frame, LIMITS)
    assert flagged.height == 30
    assert set(flagged["qc_flag"]) == {PASS}
    # The first value has no predecessor: spike and rate of change could not run on it.
    assert flagged.row(0, named=True)["qc_rate_of_change"] == NOT_EVALUATED
    assert {flagged.row(0, named=True)[t] for t in ("qc_gross_range", "qc_timing", "qc_flat_line")} == {PASS}


def test_gross_range_fails_the_impossible_value_only():
    values = [20.0] * 5 + [120.0] + [20.0] * 5  # 120 °C: outside -40..85
    got = flags(series(values), "qc_gross_range")
    assert got == [PASS] * 5 + [FAIL] + [PASS] * 5
    assert flags(series(values))[5] == FAIL


def test_a_lone_spike_is_suspect_and_a_lasting_step_is_not_a_spike():
    values = [20.0] * 10 + [60.0] + [20.0] * 10 + [30.0] * 10
    spike = flags(series(values), "qc_spike")
    assert [i for i, f in enumerate(spike) if f == SUSPECT] == [10]
    assert spike[-1] == NOT_EVALUATED  # the last value has no follower


def test_rate_of_change_is_judged_per_second():
    # temperature may move 1 °C/s: +4 °C in 5 s passes, +4 °C in 1 s does not.
    slow = flags(series([20.0, 24.0, 24.0], every_s=5), "qc_rate_of_change")
    fast = flags(series([20.0, 24.0, 24.0], every_s=1), "qc_rate_of_change")
    assert slow == [NOT_EVALUATED, PASS, PASS]
    assert fast == [NOT_EVALUATED, SUSPECT, PASS]


def test_a_stuck_sensor_is_a_flat_line_over_its_whole_run():
    stuck = flags(series([3.25] * 60, sensor="pressure", eng="bar"), "qc_flat_line")  # 295 s of 3.25 bar
    assert set(stuck) == {SUSPECT}
    short = flags(series([3.25] * 5, sensor="pressure", eng="bar"), "qc_flat_line")
    assert set(short) == {PASS}


def test_future_timestamps_fail_and_duplicates_are_suspect():
    frame = series([20.0, 20.5, 21.0])
    ahead = frame.with_columns(
        source_ts=pl.when(pl.int_range(pl.len()) == 2)
        .then(pl.col("source_ts") + timedelta(minutes=10))
        .otherwise(pl.col("source_ts"))
    )
    assert flags(ahead, "qc_timing") == [PASS, PASS, FAIL]
    doubled = pl.concat([frame, frame.head(1).with_columns(received_ts=pl.col("received_ts") + timedelta(seconds=1))])
    assert flags(doubled, "qc_duplicate") == [SUSPECT, PASS, PASS, SUSPECT]  # rows keep their own order


def test_missing_values_and_unknown_sensors_are_not_judged():
    frame = series([20.0, 20.5, 21.0]).with_columns(
        value=pl.when(pl.int_range(pl.len()) == 1).then(None).otherwise(pl.col("value")),
        quality=pl.when(pl.int_range(pl.len()) == 1).then(pl.lit("COMM_FAIL")).otherwise(pl.col("quality")),
    )
    assert flags(frame) == [PASS, MISSING, PASS]
    # The failed read between two values is not a step: the third value's neighbour is the first.
    assert flags(frame, "qc_rate_of_change")[2] == PASS
    unknown = series([1.0, 2.0], sensor="vibration", eng="mm/s")
    assert flags(unknown) == [NOT_EVALUATED, NOT_EVALUATED]


def test_points_are_judged_apart_even_when_interleaved():
    a = series([20.0] * 10, unit_id="UNIT001")
    b = series([60.0] * 10, unit_id="UNIT002")  # a different pump: its level is no spike of UNIT001's
    mixed = pl.concat([a, b]).sort("source_ts", descending=True)
    flagged = flag_points(mixed, LIMITS)
    assert flagged.drop(*QC_TESTS, "qc_flag").equals(mixed)  # the caller's rows, in the caller's order
    assert set(flagged.filter(pl.col("qc_spike") == SUSPECT)["unit_id"]) == set()
    assert set(QC_TESTS) | {"qc_flag"} <= set(flagged.columns)
    assert "point_hash" not in flagged.columns and "gross_min" not in flagged.columns
