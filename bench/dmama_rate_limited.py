"""A DMAMA backfill against a source that rate-limits half its requests, against the same backfill clean.

Run: ``python -m bench.dmama_rate_limited [--days 2] [--dmas 40] [--chunk-hours 24]``

What is measured: the DMAMA simulator serves on loopback in its own process (as a real source would be
another machine). This process materializes ``dmama/flow_readings`` over the same hourly partitions
twice (after a one-partition warm-up run), as one single-run backfill each, on a fresh instance and an
empty lake: once clean, once with
the simulator answering every other request ``429 Too Many Requests`` with ``Retry-After: 1``. The
figure is the ratio of the two wall times: how much a rate-limited source slows a run down (before
issue 7 the second run failed after four attempts). Both runs must land every row.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench.common import free_port, print_table, wait_for_port, write_results

START = datetime(2026, 3, 1, tzinfo=UTC)


def backfill(url: str, hours: int, chunk_hours: int, concurrency: int) -> tuple[float, dict]:
    """Wall seconds and materialization metadata of one backfill over `hours` hourly partitions."""
    import dagster as dg

    from assets import dmama
    from resources.dmama import DmamaClient
    from resources.lake import Lake
    from simulators.dmama import DmamaConfig

    config = DmamaConfig()
    end = START + timedelta(hours=hours)
    tags = {
        "dagster/asset_partition_range_start": START.strftime("%Y-%m-%d-%H:%M"),
        "dagster/asset_partition_range_end": (end - timedelta(hours=1)).strftime("%Y-%m-%d-%H:%M"),
    }
    with tempfile.TemporaryDirectory(prefix="ihub-bench-") as scratch, dg.instance_for_test() as instance:
        client = DmamaClient(
            base_url=url,
            api_key=config.api_key,
            client_id=config.client_id,
            client_secret=config.client_secret,
            concurrency=concurrency,
        )
        resources = {"dmama": client, "lake": Lake(root=str(Path(scratch) / "lake"))}
        run_config = {
            "ops": {"dmama__flow_readings": {"config": {"chunk_hours": chunk_hours}}},
            "loggers": {"console": {"config": {"log_level": "WARNING"}}},
        }
        started = time.perf_counter()
        result = dg.materialize(
            [dmama.flow_readings], resources=resources, instance=instance, tags=tags, run_config=run_config
        )
        wall = time.perf_counter() - started
        event = result.get_asset_materialization_events()[0]
        metadata = {k: v.value for k, v in event.materialization.metadata.items()}
    return wall, metadata


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=2)
    parser.add_argument("--dmas", type=int, default=40)
    parser.add_argument("--chunk-hours", type=int, default=24)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "ihub.cli", "simulate", "dmama", "--port", str(port), "--dmas", str(args.dmas)]
    simulator = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        wait_for_port(port, "the DMAMA simulator")
        sim = httpx.Client(base_url=url)
        backfill(url, 1, args.chunk_hours, args.concurrency)  # warm-up: imports and first-use costs
        clean_wall, clean = backfill(url, args.days * 24, args.chunk_hours, args.concurrency)
        sim.delete("/_sim/stats")
        fault = {"kind": "rate_limited", "path": "/api/*", "count": 10_000_000, "share": 0.5, "retry_after": 1}
        sim.post("/_sim/faults", json=fault).raise_for_status()
        limited_wall, limited = backfill(url, args.days * 24, args.chunk_hours, args.concurrency)
        served = sim.get("/_sim/stats").json()["requests"]
        sim.delete("/_sim/faults")
    finally:
        simulator.terminate()
        simulator.wait(timeout=10)

    refused = sum(r["count"] for r in served if r["status"] == 429)
    answered = sum(r["count"] for r in served if r["status"] == 200)
    if limited["rows_written"] != clean["rows_written"]:
        raise SystemExit(f"rate-limited run wrote {limited['rows_written']} rows, clean run {clean['rows_written']}")
    ratio = limited_wall / clean_wall
    results = {
        "dmama_backfill_429_wall_ratio": ratio,
        "dmama_rate_limited_clean_wall_s": clean_wall,
        "dmama_rate_limited_wall_s": limited_wall,
        "dmama_rate_limited_rows": int(clean["rows_written"]),
        "dmama_rate_limited_partitions": args.days * 24,
        "dmama_rate_limited_dmas": args.dmas,
        "dmama_rate_limited_429_answers": refused,
        "dmama_rate_limited_200_answers": answered,
    }
    path = write_results("dmama_rate_limited", results)
    print_table(
        f"DMAMA backfill, {args.days} days × {args.dmas} DMAs ({args.chunk_hours} h per request, "
        f"{args.concurrency} workers): clean vs half the requests 429 with Retry-After: 1",
        [
            ("rows written, each run", f"{int(clean['rows_written']):,}"),
            ("wall time, clean", f"{clean_wall:.1f} s"),
            ("wall time, rate-limited", f"{limited_wall:.1f} s"),
            ("wall-time ratio", f"{ratio:.1f}×"),
            ("429 answers served", f"{refused}"),
            ("200 answers served", f"{answered}"),
        ],
    )
    print(f"\nresults: {path}")


if __name__ == "__main__":
    main()
