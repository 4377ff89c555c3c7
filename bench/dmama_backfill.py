"""Backfill one month of DMA readings for 500 DMAs through Dagster, as one single-run backfill.

Run: ``python -m bench.dmama_backfill [--repeats 3] [--days 30] [--dmas 500]``

What is measured: the DMAMA simulator serves on loopback in its own process (as a real source would be
another machine); each repeat runs in a fresh Python process that executes ``dmama_readings_job`` over
the whole range (720 hourly partitions) on a new SQLite instance and an empty lake, so the figures
include Dagster, HTTP, JSON decoding, typing, Parquet writes and the GX checks over the month. Peak
memory is that process's maximum resident set. Figures are medians over the repeats.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench.common import free_port, median, print_table, wait_for_port, write_results

MONTH_START = datetime(2026, 3, 1, tzinfo=UTC)


def child(days: int) -> dict[str, float]:
    """One backfill in this process; prints and returns its figures."""
    import dagster as dg

    from ihub.environment import prepare_dagster_home

    prepare_dagster_home()
    from orchestration.definitions import defs

    end = MONTH_START + timedelta(days=days)
    first = MONTH_START.strftime("%Y-%m-%d-%H:%M")
    last = (end - timedelta(hours=1)).strftime("%Y-%m-%d-%H:%M")
    with dg.DagsterInstance.get() as instance:
        started = time.perf_counter()
        result = defs.resolve_job_def("dmama_readings_job").execute_in_process(
            instance=instance,
            tags={"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last},
            raise_on_error=True,
        )
        wall = time.perf_counter() - started
    step_seconds: dict[str, float] = {}
    for event in result.all_events:
        if event.is_step_success and event.step_key and event.event_specific_data is not None:
            step_seconds[event.step_key] = event.event_specific_data.duration_ms / 1000
    materialization = next(
        e.event_specific_data.materialization
        for e in result.all_events
        if e.event_type_value == "ASSET_MATERIALIZATION"
    )
    rows = int(materialization.metadata["rows_written"].value)
    load_seconds = next(v for k, v in step_seconds.items() if "flow_readings" in k and "suite" not in k)
    check_seconds = sum(v for k, v in step_seconds.items() if "suite" in k)
    figures = {
        "rows": rows,
        "wall_s": wall,
        "load_s": load_seconds,
        "checks_s": check_seconds,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    print(json.dumps(figures))
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--dmas", type=int, default=500)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.days)
        return

    port = free_port()
    simulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "ihub.cli",
            "simulate",
            "dmama",
            "--port",
            str(port),
            "--dmas",
            str(args.dmas),
            "--meters-per-dma",
            "100",
        ],
        stdout=subprocess.DEVNULL,
    )
    runs: list[dict[str, float]] = []
    try:
        wait_for_port(port, "the DMAMA simulator")
        from simulators.dmama import DmamaConfig

        credentials = DmamaConfig()
        for repeat in range(1, args.repeats + 1):
            with tempfile.TemporaryDirectory(prefix="ihub-bench-") as scratch:
                env = {
                    **os.environ,
                    "IHUB_DATA_DIR": str(Path(scratch) / "data"),
                    "DAGSTER_HOME": str(Path(scratch) / "data" / "dagster"),
                    "DMAMA_BASE_URL": f"http://127.0.0.1:{port}",
                    "DMAMA_API_KEY": credentials.api_key,
                    "DMAMA_CLIENT_ID": credentials.client_id,
                    "DMAMA_CLIENT_SECRET": credentials.client_secret,
                }
                env.pop("DAGSTER_PG_URL", None)
                env.pop("DAGSTER_PG_HOST", None)
                out = subprocess.run(
                    [sys.executable, "-m", "bench.dmama_backfill", "--child", "--days", str(args.days)],
                    env=env,
                    capture_output=True,
                    text=True,
                )
                if out.returncode != 0:
                    raise SystemExit(f"backfill run {repeat} failed:\n{out.stderr[-4000:]}")
                figures = json.loads(out.stdout.strip().splitlines()[-1])
                runs.append(figures)
                print(
                    f"run {repeat}/{args.repeats}: {figures['rows']:,} rows in {figures['wall_s']:.1f}s "
                    f"(load {figures['load_s']:.1f}s, checks {figures['checks_s']:.1f}s), "
                    f"peak RSS {figures['peak_rss_mb']:.0f} MB",
                    flush=True,
                )
    finally:
        simulator.terminate()
        simulator.wait(timeout=10)

    rows = runs[0]["rows"]
    wall = median([r["wall_s"] for r in runs])
    load = median([r["load_s"] for r in runs])
    checks = median([r["checks_s"] for r in runs])
    rss = max(r["peak_rss_mb"] for r in runs)
    results = {
        "dmama_backfill_rows": rows,
        "dmama_backfill_partitions": args.days * 24,
        "dmama_backfill_dmas": args.dmas,
        "dmama_backfill_wall_s": wall,
        "dmama_backfill_rows_per_s": rows / wall,
        "dmama_backfill_load_s": load,
        "dmama_backfill_load_rows_per_s": rows / load,
        "dmama_backfill_checks_s": checks,
        "dmama_backfill_peak_rss_mb": rss,
        "dmama_backfill_repeats": len(runs),
    }
    path = write_results("dmama_backfill", results)
    print_table(
        f"DMAMA backfill: {args.days} days × {args.dmas} DMAs, one Dagster run, median of {len(runs)}",
        [
            ("rows written", f"{rows:,}"),
            ("partitions (hourly)", f"{args.days * 24}"),
            ("wall time, whole run", f"{wall:.1f} s"),
            ("rows/s, whole run", f"{rows / wall:,.0f}"),
            ("load step (fetch+type+write)", f"{load:.1f} s"),
            ("rows/s, load step", f"{rows / load:,.0f}"),
            ("GX check step", f"{checks:.1f} s"),
            ("peak RSS (max of runs)", f"{rss:,.0f} MB"),
        ],
    )
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
