"""Speed and memory of the quality layer: a GX suite on a million rows, QARTOD flags on ten million SCADA
points, and the peak memory of a month's DMAMA backfill with its checks.

Run: ``python -m bench.quality [--repeats 3] [--skip-backfill]``

- ``gx_suite_1m_rows_s``: DMAMA's flow-readings suite (keys, uniqueness, physical range, known DMAs,
  completeness, freshness) through ``quality.gx.validate`` on 1,000,000 readings of 500 DMAs; median of the
  repeats after one warm-up (GX builds its metric registry on first use).
- ``ts_rules_points_per_s``: ``quality.qartod.flag_points`` (six QARTOD tests and the overall flag) on
  10,000,000 points of 2,000 sensors in shuffled order, values in each sensor type's range with spikes,
  flat lines and failed reads mixed in; median of the repeats.
- ``dmama_month_checks_peak_rss_mb``: ``bench.dmama_backfill`` with one repeat (30 days × 500 DMAs in one
  Dagster run, load and GX checks), its process's peak resident set.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import polars as pl

from bench.common import RESULTS_DIR, median, print_table, write_results

START = datetime(2026, 3, 1, tzinfo=UTC)


def flow_readings(rows: int, dmas: int) -> pl.DataFrame:
    steps = rows // dmas
    rng = np.random.default_rng(7)
    times = pl.datetime_range(
        START, START + timedelta(minutes=15 * (steps - 1)), "15m", eager=True, time_unit="us", time_zone="UTC"
    )
    return pl.DataFrame({"dma_id": [f"DMA{i:04d}" for i in range(dmas)] * steps}).with_columns(
        timestamp=times.gather(np.repeat(np.arange(steps), dmas)),
        flow_m3h=pl.Series(rng.uniform(20, 400, steps * dmas)),
        pressure_bar=pl.Series(rng.uniform(1.5, 5.5, steps * dmas)),
    )


def gx_suite_seconds(repeats: int) -> tuple[float, int]:
    from contracts.dmama import DMAS, FLOW_READINGS_KEY
    from quality.dmama import FLOW_RULES
    from quality.gx import CheckInput, validate
    from resources.lake import Lake

    frame = flow_readings(1_000_000, 500)
    with tempfile.TemporaryDirectory(prefix="ihub-bench-") as root:
        lake = Lake(root=root)
        ids = frame["dma_id"].unique().sort()
        catalogue = pl.DataFrame({c.name: pl.Series([None] * ids.len(), dtype=c.dtype) for c in DMAS.columns})
        lake.replace_snapshot(DMAS, catalogue.with_columns(dma_id=ids))
        window = (START, START + timedelta(minutes=15 * (frame.height // 500)))
        check = CheckInput(lake=lake, window=window, now=datetime.now(UTC))
        times = []
        for attempt in range(repeats + 1):
            started = time.perf_counter()
            results = list(validate(frame, FLOW_RULES, check, FLOW_READINGS_KEY, "flow_readings"))
            if attempt:
                times.append(time.perf_counter() - started)
            failed = [r.check_name for r in results if not r.passed]
            if failed:
                raise SystemExit(f"the benchmark's readings should pass every rule; failed: {failed}")
    return median(times), frame.height


def scada_points(n: int, sensors: int) -> pl.DataFrame:
    from quality.timeseries import load_limits

    limits = load_limits()
    types = sorted(limits)
    rng = np.random.default_rng(11)
    per = n // sensors
    sensor = np.repeat(np.arange(sensors), per)
    kind = np.array(types)[sensor % len(types)]
    low = np.array([limits[t].gross_min for t in types])[sensor % len(types)]
    high = np.array([limits[t].gross_max for t in types])[sensor % len(types)]
    middle = (low + high) / 2
    value = middle + rng.normal(0, 1, n) * (high - low) / 50
    spikes = rng.random(n) < 0.001
    value[spikes] = high[spikes] * 2  # impossible values
    stuck = (sensor % 97 == 0) & (np.arange(n) % per > per // 2)
    value[stuck] = middle[stuck]  # a stuck sensor for half its series
    quality = np.where(rng.random(n) < 0.002, "COMM_FAIL", "GOOD")
    seconds = (np.arange(n) % per) * 5
    frame = pl.DataFrame(
        {
            "source": np.where(sensor % 2 == 0, "mqtt", "modbus"),
            "device": pl.Series([f"gw{s % 20}" for s in range(sensors)]).gather(sensor),
            "unit_id": pl.Series([f"UNIT{s:04d}" for s in range(sensors)]).gather(sensor),
            "sensor_type": kind,
            "value": np.where(quality == "GOOD", value, np.nan),
            "unit": "",
            "quality": quality,
        }
    ).with_columns(
        value=pl.col("value").fill_nan(None),
        source_ts=pl.lit(START).dt.cast_time_unit("us") + pl.duration(seconds=pl.Series(seconds)),
    )
    frame = frame.with_columns(received_ts=pl.col("source_ts") + pl.duration(milliseconds=40))
    return frame.sample(fraction=1.0, shuffle=True, seed=3)


def ts_rules_points_per_s(repeats: int) -> tuple[float, dict[str, int]]:
    from quality.qartod import FLAG_NAMES, flag_points
    from quality.timeseries import load_limits

    limits = load_limits()
    points = scada_points(10_000_000, 2_000)
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        flagged = flag_points(points, limits)
        rates.append(points.height / (time.perf_counter() - started))
    counts = {FLAG_NAMES[code]: n for code, n in flagged["qc_flag"].value_counts().rows()}
    return median(rates), counts


def month_backfill_peak_rss_mb() -> float:
    out = subprocess.run([sys.executable, "-m", "bench.dmama_backfill", "--repeats", "1"], text=True)
    if out.returncode != 0:
        raise SystemExit("bench.dmama_backfill failed")
    return float(json.loads((RESULTS_DIR / "dmama_backfill.json").read_text())["dmama_backfill_peak_rss_mb"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-backfill", action="store_true", help="leave out the month's backfill (minutes)")
    args = parser.parse_args()

    suite_s, suite_rows = gx_suite_seconds(args.repeats)
    print(f"GX suite on {suite_rows:,} rows: {suite_s:.2f} s (median of {args.repeats})", flush=True)
    rate, counts = ts_rules_points_per_s(args.repeats)
    print(f"QARTOD flags: {rate:,.0f} points/s (median of {args.repeats}); flags {counts}", flush=True)
    figures: dict[str, float] = {"gx_suite_1m_rows_s": suite_s, "ts_rules_points_per_s": rate}
    rows = [("GX suite, 1,000,000 rows", f"{suite_s:.2f} s"), ("QARTOD flags, points/s", f"{rate:,.0f}")]
    if not args.skip_backfill:
        peak = month_backfill_peak_rss_mb()
        figures["dmama_month_checks_peak_rss_mb"] = peak
        rows.append(("month's DMAMA backfill, peak RSS", f"{peak:,.0f} MB"))
    path = write_results("quality", figures)
    print_table(f"Quality layer, median of {args.repeats}", rows)
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
