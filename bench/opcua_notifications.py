"""OPC UA data-change notifications per second received by the collector's reader.

Run: ``python -m bench.opcua_notifications [--servers 1] [--stations 50] [--tick-s 0.05] [--seconds 15]``

What is measured: each simulator (``simulators/opcua.py``) runs in its own process, as a real server would be
another machine, serving ``stations`` pump stations of 20 variables each and writing every variable every
``tick-s`` (all but the pump states change on every tick). In this process one ``OpcUaReader`` per server
subscribes to every variable (publishing interval 100 ms, sampling 0, no deadband, queue 10) and hands each
publish response, as the collector would, to an emit that only counts. After a warm-up (initial values
delivered), values are counted for ``seconds``; the figure is values received per second of wall time.

For context the table also shows what the simulators offered in the same window (changed values per second,
from the count each prints every 0.5 s) and the CPU the reader process used: received ≈ offered with the
reader's CPU well below 100 % means the server side was the limit, not the reader. The run stops by itself;
nothing asserts on time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import resource
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from bench.common import print_table, write_results

PUBLISHING_INTERVAL_MS = 100


class _Simulator:
    """A simulator process and its latest reported change count (read from its stdout by a thread)."""

    def __init__(self, stations: int, tick_s: float, seed: int) -> None:
        self.process, self.url = _start_simulator(stations, tick_s, seed)
        self.changes = 0
        self.summary = ""
        self._reader = threading.Thread(target=self._follow, daemon=True)
        self._reader.start()

    def _follow(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            match = re.match(r"changes (\d+)", line)
            if match:
                self.changes = int(match.group(1))
            elif line.startswith("served"):
                self.summary = line.strip()

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._reader.join(5)


def _start_simulator(stations: int, tick_s: float, seed: int) -> tuple[subprocess.Popen[str], str]:
    command = [
        sys.executable,
        "-m",
        "simulators.opcua",
        "--port",
        "0",
        "--no-security",
        "--stations",
        str(stations),
        "--tick-s",
        str(tick_s),
        "--seed",
        str(seed),
        "--report-s",
        "0.5",
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, bufsize=1)
    deadline = time.monotonic() + 120
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        match = re.search(r"(opc\.tcp://\S+)", line)
        if match:
            return process, match.group(1)
    process.kill()
    raise RuntimeError(f"the OPC UA simulator did not start (exit code {process.poll()})")


def _node_map(stations: int) -> list[dict[str, Any]]:
    from simulators.opcua import station_variables

    nodes = []
    for ident in station_variables(stations):
        station, group, leaf = ident.split(".")
        nodes.append(
            {
                "node_id": f"ns=2;s={ident}",
                "unit_id": f"{station}-{group}",
                "sensor_type": re.sub(r"(?<=[a-z])(?=[A-Z])", "_", leaf).lower(),
            }
        )
    return nodes


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _measure(simulators: list[_Simulator], stations: int, warmup_s: float, seconds: float) -> dict[str, float]:
    from collector.opcua import build_reader
    from collector.points import COMM_FAIL

    counted = 0
    batches = 0

    async def emit(points) -> None:
        nonlocal counted, batches
        batches += 1
        counted += sum(1 for point in points if point.quality != COMM_FAIL)

    readers = [
        build_reader(
            {
                "name": f"bench{index}",
                "url": url,
                "node_map": _node_map(stations),
                "subscription": {
                    "publishing_interval_ms": PUBLISHING_INTERVAL_MS,
                    "sampling_interval_ms": 0,
                    "deadband": 0,
                    "queue_size": 10,
                },
                "reconnect": {"initial_s": 0.5, "max_s": 2},
            }
        )
        for index, url in enumerate(simulator.url for simulator in simulators)
    ]
    tasks = [asyncio.create_task(reader.run(emit)) for reader in readers]
    try:
        expected = 20 * stations
        deadline = time.monotonic() + 60
        while any(reader.health()["monitored_items"] < expected for reader in readers):
            if time.monotonic() > deadline:
                raise RuntimeError(f"readers did not subscribe: {[r.health()['last_error'] for r in readers]}")
            await asyncio.sleep(0.1)
        await asyncio.sleep(warmup_s)
        counted = batches = 0
        offered_before = sum(simulator.changes for simulator in simulators)
        cpu_before, started = _cpu_s(), time.perf_counter()
        await asyncio.sleep(seconds)
        elapsed = time.perf_counter() - started
        cpu = _cpu_s() - cpu_before
        received, publishes = counted, batches
        offered = sum(simulator.changes for simulator in simulators) - offered_before
        errors = sum(reader.health()["errors"] for reader in readers)
        reconnects = sum(reader.health()["reconnects"] for reader in readers)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return {
        "opcua_values_per_s": received / elapsed,
        # Counted by the simulators every 0.5 s, so this window is the reader's within half a second.
        "opcua_offered_changes_per_s": offered / elapsed,
        "opcua_batches_per_s": publishes / elapsed,
        "opcua_reader_cpu_percent": 100 * cpu / elapsed,
        "opcua_reader_cpu_us_per_value": 1e6 * cpu / received if received else 0.0,
        "opcua_reader_errors": errors,
        "opcua_reader_reconnects": reconnects,
    }


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(prog="python -m bench.opcua_notifications", description=__doc__)
    parser.add_argument("--servers", type=int, default=1, help="simulator processes (one reader each)")
    parser.add_argument("--stations", type=int, default=50, help="pump stations per server, 20 variables each")
    parser.add_argument("--tick-s", type=float, default=0.05, help="simulator update period")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured time")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds after subscribing before measuring")
    args = parser.parse_args(argv)

    simulators: list[_Simulator] = []
    try:
        for index in range(args.servers):
            simulators.append(_Simulator(args.stations, args.tick_s, seed=7 + index))
        figures = asyncio.run(_measure(simulators, args.stations, args.warmup, args.seconds))
    finally:
        for simulator in simulators:
            simulator.stop()
    nodes = args.servers * args.stations * 20
    figures.update(
        {
            "opcua_monitored_items": nodes,
            "opcua_servers": args.servers,
            "opcua_tick_s": args.tick_s,
            "opcua_measured_s": args.seconds,
        }
    )
    path = write_results("opcua_notifications", figures)
    print_table(
        f"OPC UA notifications: {args.servers} server(s) x {args.stations} stations = {nodes} monitored items, "
        f"updated every {args.tick_s * 1000:.0f} ms, measured {args.seconds:.0f} s on {os.cpu_count()} cores",
        [
            ("values received / s (reader)", f"{figures['opcua_values_per_s']:,.0f}"),
            ("changed values offered / s (simulators)", f"{figures['opcua_offered_changes_per_s']:,.0f}"),
            ("publish responses / s", f"{figures['opcua_batches_per_s']:,.1f}"),
            ("reader process CPU", f"{figures['opcua_reader_cpu_percent']:.0f} %"),
            ("reader CPU per value", f"{figures['opcua_reader_cpu_us_per_value']:.1f} µs"),
            ("reader errors / reconnects", f"{figures['opcua_reader_errors']} / {figures['opcua_reader_reconnects']}"),
        ],
    )
    print(f"\nwrote {path}")
    return figures


if __name__ == "__main__":
    main()
