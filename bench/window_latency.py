"""Latency from a SCADA window closing to its window run succeeding, with the real Dagster daemon.

Run: ``python -m bench.window_latency [--windows 5] [--window-s 60]``

What is measured: a feeder appends points (10 units × 4 sensors, one sample a second each) through the
real spool and seals (publishes, with its manifest) each window as soon as it is due; ``dagster-daemon``
runs with this repository's ``dagster.yaml`` (queued run coordinator, 1 s dequeue) and ``workspace.yaml``; the
``scada_window_sensor`` requests the window run, the daemon launches it in a subprocess. For every
window: run end − window end (the figure the issue targets) and run end − seal. Medians and p95 over
the windows; the first window is left out (it includes the daemon's own start-up).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from bench.common import print_table, write_results

REPO = Path(__file__).resolve().parents[1]


async def feed(root: Path, window_s: int, windows: int, sealed_at: dict[str, float]) -> None:
    from collector.points import Point
    from collector.spool import Spool

    start = time.time()
    first_end = (int(start) // window_s + 1) * window_s
    stop_at = first_end + windows * window_s + 1
    async with Spool(root, window_s=window_s, seal_delay_s=0.5) as spool:
        tick = 0
        while time.time() < stop_at:
            now_us = int(time.time() * 1_000_000)
            batch = [
                Point("mqtt", "bench", f"UNIT{u:03d}", sensor, 20.0 + (tick % 7) * 0.1 + u, eng, "GOOD", now_us, now_us)
                for u in range(1, 11)
                for sensor, eng in (("temperature", "°C"), ("pressure", "bar"), ("flow", "L/min"), ("power", "kW"))
            ]
            await spool.append(batch)
            for name in spool.seal_due():
                sealed_at[name] = time.time()
            tick += 1
            await asyncio.sleep(0.5)
        await spool.flush()
        for name in spool.seal_due():
            sealed_at[name] = time.time()


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=5, help="windows measured (after a warm-up window)")
    parser.add_argument("--window-s", type=int, default=60)
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="ihub-window-bench-"))
    home = scratch / "dagster"
    home.mkdir()
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "IHUB_DATA_DIR": str(scratch),
        "IHUB_SPOOL_DIR": str(scratch / "spool"),
    }
    # The window length reaches the Dagster side only through each window's manifest.
    for key in ("DAGSTER_PG_URL", "DAGSTER_PG_HOST", "IHUB_ALERT_WEBHOOK_URL", "IHUB_SPOOL_WINDOW_S"):
        env.pop(key, None)
    daemon = subprocess.Popen(
        [str(Path(sys.executable).with_name("dagster-daemon")), "run", "-w", str(REPO / "workspace.yaml")],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    sealed_at: dict[str, float] = {}
    try:
        asyncio.run(feed(scratch / "spool", args.window_s, args.windows + 1, sealed_at))
        deadline = time.time() + 120
        latencies = _collect(home, sealed_at, args.window_s, deadline)
    finally:
        daemon.terminate()
        daemon.wait(timeout=30)
    measured = sorted(latencies)[1:]  # the first window waits for the daemon to start
    after_close = [latencies[w][0] for w in measured]
    after_seal = [latencies[w][1] for w in measured]
    results = {
        "window_latency_p50_s": statistics.median(after_close),
        "window_latency_p95_s": percentile(after_close, 0.95),
        "window_latency_after_seal_p50_s": statistics.median(after_seal),
        "window_latency_windows": len(measured),
        "window_length_s": args.window_s,
    }
    path = write_results("window_latency", results)
    print_table(
        f"SCADA window close → window run succeeded, {len(measured)} windows of {args.window_s} s, dagster-daemon",
        [
            ("p50, from window end", f"{results['window_latency_p50_s']:.1f} s"),
            ("p95, from window end", f"{results['window_latency_p95_s']:.1f} s"),
            ("p50, from seal", f"{results['window_latency_after_seal_p50_s']:.1f} s"),
        ],
    )
    print(f"\nresults: {path}")
    shutil.rmtree(scratch, ignore_errors=True)


def _collect(home: Path, sealed_at: dict[str, float], window_s: int, deadline: float) -> dict[str, tuple[float, float]]:
    import dagster as dg

    from collector.spool import window_start

    os.environ["DAGSTER_HOME"] = str(home)
    latencies: dict[str, tuple[float, float]] = {}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        while time.time() < deadline and len(latencies) < len(sealed_at):
            for record in instance.get_run_records(filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.SUCCESS])):
                window = record.dagster_run.tags.get("scada/window")
                if window in sealed_at and window not in latencies and record.end_time:
                    end = window_start(window) + timedelta(seconds=window_s)
                    latencies[window] = (record.end_time - end.timestamp(), record.end_time - sealed_at[window])
            time.sleep(1)
    missing = sorted(set(sealed_at) - set(latencies))
    if missing:
        print(f"windows without a successful run within the wait: {missing}", file=sys.stderr)
    return latencies


if __name__ == "__main__":
    main()
