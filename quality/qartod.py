"""A QARTOD flag on every SCADA point, computed in one vectorized pass and kept with the data.

The rules of ``quality/timeseries.py`` answer "which points broke rule X" for checks and alerts. An analyst
reading a series needs the other view: each point carrying its verdict, so a chart can grey out what is
suspect and a mart can leave out what failed without re-running any rule. QARTOD (the US IOOS manual for
real-time quality control) gives the vocabulary used here, per test and overall:

====  ================  ==========================================================================
code  name              meaning
====  ================  ==========================================================================
1     pass              every test that applies passed
2     not_evaluated     no test could run: unknown sensor type, or the device did not report GOOD/UNCERTAIN
3     suspect           a test says look before trusting it (spike, rate of change, flat line, duplicate)
4     fail              physically impossible or unusable (gross range, a timestamp from the future)
9     missing           no value (the read failed)
====  ================  ==========================================================================

The overall flag is the worst flag of the tests that could run (missing before fail before suspect before
pass); a test that could not run (the first value has no step) does not lower a pass. Thresholds are
the sensor limits the collector and the window checks read (``resources/sensor_limits.yaml``), so a point
flagged here is the same point the checks count.

Speed: one sort by (point, time) on a 64-bit hash of the point's identity; then every test is a pass over
whole columns (shifts and fills masked where the point changes) instead of a window function per point
(``over``), which hashes the groups again for every expression. Duplicates are adjacent in that order.
"""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import polars as pl

from quality.timeseries import POINT, SensorLimits, _limits_frame

__all__ = ["FLAG_NAMES", "QC_TESTS", "flag_points"]

PASS, NOT_EVALUATED, SUSPECT, FAIL, MISSING = 1, 2, 3, 4, 9
FLAG_NAMES = {PASS: "pass", NOT_EVALUATED: "not_evaluated", SUSPECT: "suspect", FAIL: "fail", MISSING: "missing"}
# Test columns added to the points, in the order QARTOD's manuals list them.
QC_TESTS = ("qc_timing", "qc_gross_range", "qc_spike", "qc_rate_of_change", "qc_flat_line", "qc_duplicate")
# Severity order for the overall flag: a larger rank wins, so one test that ran outranks those that could not.
_RANK = {NOT_EVALUATED: 0, PASS: 1, SUSPECT: 2, FAIL: 3, MISSING: 4}


def flag_points(
    points: pl.DataFrame,
    limits: dict[str, SensorLimits],
    clock_tolerance: timedelta = timedelta(seconds=5),
) -> pl.DataFrame:
    """The points, in their own order, with one ``qc_*`` column per test (QARTOD codes, Int8) and ``qc_flag``.

    Input columns: those of the ``scada/points`` table (``source``, ``device``, ``unit_id``, ``sensor_type``,
    ``value``, ``quality``, ``source_ts``, ``received_ts``).
    """
    if points.height == 0:
        return points.with_columns(pl.lit(None, dtype=pl.Int8).alias(name) for name in (*QC_TESTS, "qc_flag"))
    point_hash = points.select(pl.struct(POINT).hash(seed=0).alias("point_hash"))
    catalogue = (
        pl.concat([points.select(POINT), point_hash], how="horizontal")
        .unique(subset="point_hash", keep="first")
        .with_row_index("point")
        .join(_limits_frame(limits).with_columns(known=pl.lit(True)), on="sensor_type", how="left")
    )
    point_index = point_hash.join(
        catalogue.select("point_hash", "point"), on="point_hash", how="left", maintain_order="left"
    )
    work = pl.DataFrame(
        {
            "point": point_index["point"],
            "value": points["value"],
            "quality_ok": points["quality"].is_in(["GOOD", "UNCERTAIN"]),
            "source_ts": points["source_ts"],
            "received_ts": points["received_ts"],
            "input_row": pl.int_range(points.height, dtype=pl.Int64, eager=True),
        }
    )
    work = work.gather(_point_time_order(work))
    limit_columns = [c for c in catalogue.columns if c not in (*POINT, "point", "point_hash")]
    work = pl.concat([work, catalogue.select(limit_columns).gather(work["point"])], how="horizontal")
    flags = _tests(work.lazy(), clock_tolerance).collect()
    # Back to the caller's row order: one scatter of each flag column.
    order = flags["input_row"].to_numpy()
    columns = {}
    for name in (*QC_TESTS, "qc_flag"):
        values = np.empty(points.height, dtype=np.int8)
        values[order] = flags[name].to_numpy()
        columns[name] = pl.Series(name, values, dtype=pl.Int8)
    return points.with_columns(**columns)


def _point_time_order(work: pl.DataFrame) -> pl.Series:
    """Row order by (point, time) from one 64-bit key when the window's span allows it (a sort on one
    integer column is several times faster than a two-column sort), else by both columns."""
    points = int(work["point"].max()) + 1
    point_bits = max(1, points.bit_length())
    offset = (work["source_ts"] - work["source_ts"].min()).dt.total_microseconds()
    if int(offset.max()) < 1 << (63 - point_bits):
        key = work["point"].cast(pl.Int64) * (1 << (63 - point_bits)) + offset
        return key.arg_sort()
    return work.select(pl.arg_sort_by(["point", "source_ts"])).to_series()


def _tests(frame: pl.LazyFrame, clock_tolerance: timedelta) -> pl.LazyFrame:
    """Every test over rows sorted by point and time (columns of ``flag_points``'s working frame)."""
    point = pl.col("point")
    frame = frame.with_columns(
        usable=pl.col("known").fill_null(False) & pl.col("quality_ok") & pl.col("value").is_not_null()
    )
    # Neighbours among the point's usable values only (a COMM_FAIL between two readings is not a step):
    # carry the last usable value forward over the whole column, then keep it only where it came from the
    # same point. Filling a column costs one pass; a window per point would hash the groups each time.
    usable_value = pl.when(pl.col("usable")).then(pl.col("value"))
    usable_ts = pl.when(pl.col("usable")).then(pl.col("source_ts"))
    usable_point = pl.when(pl.col("usable")).then(point)
    frame = frame.with_columns(
        previous=pl.when(usable_point.shift(1).forward_fill() == point).then(usable_value.shift(1).forward_fill()),
        previous_ts=pl.when(usable_point.shift(1).forward_fill() == point).then(usable_ts.shift(1).forward_fill()),
        following=pl.when(usable_point.shift(-1).backward_fill() == point).then(usable_value.shift(-1).backward_fill()),
    )
    step_up = (pl.col("value") - pl.col("previous")).abs()
    step_back = (pl.col("value") - pl.col("following")).abs()
    seconds = (pl.col("source_ts") - pl.col("previous_ts")).dt.total_microseconds() / 1e6
    # A flat line is a run of usable values that stay within the tolerance; runs are contiguous in this
    # order, so a run's first and last time are filled from its edges rather than grouped.
    starts_run = pl.col("usable") & (pl.col("previous").is_null() | (step_up > pl.col("flatline_tolerance")))
    frame = frame.with_columns(starts_run=starts_run.fill_null(False), row=pl.int_range(pl.len(), dtype=pl.Int64))
    # A usable row ends its run when the point's next usable row starts one, or when it has none.
    frame = frame.with_columns(
        ends_run=pl.col("usable")
        & (
            pl.when(pl.col("usable")).then(pl.col("starts_run")).shift(-1).backward_fill().fill_null(True)
            | (usable_point.shift(-1).backward_fill() != point).fill_null(True)
        )
    )
    run_first_ts = pl.when(pl.col("starts_run")).then(pl.col("source_ts")).forward_fill()
    run_last_ts = pl.when(pl.col("ends_run")).then(pl.col("source_ts")).backward_fill()
    run_first_row = pl.when(pl.col("starts_run")).then(pl.col("row")).forward_fill()
    run_last_row = pl.when(pl.col("ends_run")).then(pl.col("row")).backward_fill()
    run_s = (run_last_ts - run_first_ts).dt.total_microseconds() / 1e6
    run_samples = run_last_row - run_first_row + 1

    same_instant = (point == point.shift(1)) & (pl.col("source_ts") == pl.col("source_ts").shift(1))
    same_instant_next = (point == point.shift(-1)) & (pl.col("source_ts") == pl.col("source_ts").shift(-1))
    judged = pl.col("usable")
    frame = frame.with_columns(
        qc_timing=pl.when(pl.col("source_ts") > pl.col("received_ts") + clock_tolerance)
        .then(pl.lit(FAIL, dtype=pl.Int8))
        .otherwise(pl.lit(PASS, dtype=pl.Int8)),
        qc_gross_range=_code(
            judged, (pl.col("value") < pl.col("gross_min")) | (pl.col("value") > pl.col("gross_max")), FAIL
        ),
        qc_spike=_code(
            judged & pl.col("previous").is_not_null() & pl.col("following").is_not_null(),
            (step_up > pl.col("max_step")) & (step_back > pl.col("max_step")),
            SUSPECT,
        ),
        qc_rate_of_change=_code(
            judged & pl.col("previous").is_not_null(),
            (seconds > 0) & (step_up / seconds > pl.col("max_rate_per_s")),
            SUSPECT,
        ),
        qc_flat_line=_code(judged, (run_s >= pl.col("flatline_s")) & (run_samples >= 3), SUSPECT),
        qc_duplicate=pl.when(same_instant.fill_null(False) | same_instant_next.fill_null(False))
        .then(pl.lit(SUSPECT, dtype=pl.Int8))
        .otherwise(pl.lit(PASS, dtype=pl.Int8)),
    )
    tests = [pl.col(name) for name in QC_TESTS]
    overall = (
        pl.when(pl.col("value").is_null())
        .then(pl.lit(MISSING, dtype=pl.Int8))
        .when(~pl.col("usable"))
        .then(pl.lit(NOT_EVALUATED, dtype=pl.Int8))
        .when(pl.any_horizontal(t == FAIL for t in tests))
        .then(pl.lit(FAIL, dtype=pl.Int8))
        .when(pl.any_horizontal(t == SUSPECT for t in tests))
        .then(pl.lit(SUSPECT, dtype=pl.Int8))
        .when(pl.any_horizontal(t == PASS for t in tests))
        .then(pl.lit(PASS, dtype=pl.Int8))
        .otherwise(pl.lit(NOT_EVALUATED, dtype=pl.Int8))
    )
    return frame.with_columns(qc_flag=overall).select("input_row", *QC_TESTS, "qc_flag")


def _code(can_run: pl.Expr, failed: pl.Expr, code: int) -> pl.Expr:
    """``code`` where the test failed, pass where it ran and passed; where it could not run, missing for a
    point without a value and not evaluated otherwise (the first value of a point has no step)."""
    return (
        pl.when(pl.col("value").is_null())
        .then(pl.lit(MISSING, dtype=pl.Int8))
        .when(~can_run.fill_null(False))
        .then(pl.lit(NOT_EVALUATED, dtype=pl.Int8))
        .when(failed.fill_null(False))
        .then(pl.lit(code, dtype=pl.Int8))
        .otherwise(pl.lit(PASS, dtype=pl.Int8))
    )
