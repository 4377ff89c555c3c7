"""Modbus registers decoded per second across 100 simulated pump stations, against bare pymodbus reads.

Run: ``python -m bench.modbus_decode [--devices 100] [--seconds 2] [--rounds 5]``

What is measured: the simulator serves 100 pump stations (Modbus unit ids 1-100, ``pump_station.yaml``:
4 requests, 72 registers and 34 points a poll) on one loopback port from its own process, as field
devices would be other machines. In this process, one event loop drives 100 devices at once, in
alternating phases of ``--seconds`` each, ``--rounds`` times:

- **raw** — one bare ``AsyncModbusTcpClient`` per device reading the same four ranges back to back,
  nothing decoded: the ceiling for pymodbus on this machine.
- **reader** — one ``ModbusReader`` per device calling ``poll_once()`` back to back: the same four
  requests plus decoding every point (every data type and byte order in the map), scale/offset, and
  a ``Point`` for each; the map's deadbands are off, so every point is emitted (the most work a poll
  can do). ``reader_deadband`` runs the map as shipped, deadbands on.

Figures are medians over the rounds. ``modbus_vs_raw_ratio`` is the median over rounds of reader
registers/s ÷ raw registers/s in the same round (adjacent phases, so load from other processes on a
shared machine weighs on both alike).
CPU per register is this process's CPU time (``time.process_time``) over the registers it read, so it
shows the reader's own cost even when the simulator's process or a busy machine sets the pace;
``modbus_cpu_cost_ratio`` (bare ÷ reader CPU per register) is the throughput ratio the reader would
reach where the collector's core is the bottleneck. A last phase runs
every reader's ``run()`` loop at 10 Hz for ``--seconds`` and reports the polls achieved (1,000/s asked)
and the overruns. The benchmark stops by itself and never fails on a time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psutil

from bench.common import median, print_table, write_results
from collector.modbus import MAPS_DIR, ModbusDeviceConfig, ModbusReader, build_reader, load_register_map, plan_requests
from collector.points import Point

ROOT = Path(__file__).resolve().parent.parent
MAP = MAPS_DIR / "pump_station.yaml"


def start_simulator(devices: int) -> tuple[subprocess.Popen[str], int]:
    """The simulator in its own process; returns it and the port it printed."""
    command = [sys.executable, "-m", "simulators.modbus", "--port", "0", "--pump-stations", str(devices)]
    command += ["--machines", "0"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()  # "Modbus simulator (...) on 127.0.0.1:PORT", once listening
    if " on " not in line:
        process.kill()
        raise RuntimeError(f"simulator did not start: {line!r}")
    return process, int(line.rsplit(":", 1)[1])


def configs(port: int, devices: int, *, deadbands: bool) -> list[ModbusDeviceConfig]:
    result = []
    for unit in range(1, devices + 1):
        config = ModbusDeviceConfig(
            name=f"ps{unit:03d}",
            host="127.0.0.1",
            port=port,
            unit_id=unit,
            plant_unit_id=f"PS{unit:02d}",
            register_map=MAP,
            poll_interval_s=0.1,
            timeout_s=5.0,
        )
        if not deadbands:
            config.registers = [p.model_copy(update={"deadband": None}) for p in config.registers]
        result.append(config)
    return result


async def raw_clients(port: int, devices: int) -> list[Any]:
    """One connected bare pymodbus client per device."""
    from pymodbus.client import AsyncModbusTcpClient

    clients = [
        AsyncModbusTcpClient("127.0.0.1", port=port, timeout=5, retries=0, reconnect_delay=0) for _ in range(devices)
    ]
    for client in clients:
        if not await client.connect():
            raise RuntimeError("raw client could not connect")
    return clients


async def phase_raw(clients: Sequence[Any], seconds: float) -> dict[str, float]:
    """Bare pymodbus: the same ranges the reader asks for, read back to back, nothing decoded."""
    requests = plan_requests(load_register_map(MAP).registers)
    method = {"coil": "read_coils", "discrete_input": "read_discrete_inputs", "holding": "read_holding_registers"}
    registers = [0] * len(clients)

    async def loop(index: int, client: Any, deadline: float) -> None:
        unit = index + 1
        reads = [(getattr(client, method.get(r.function, "read_input_registers")), r) for r in requests]
        while time.perf_counter() < deadline:
            for read, request in reads:
                response = await read(request.address, count=request.count, device_id=unit)
                if response.isError():
                    raise RuntimeError(f"raw read failed: {response}")
                registers[index] += request.count

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(loop(i, c, started + seconds) for i, c in enumerate(clients)))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    total = sum(registers)
    return {"registers_per_s": total / wall, "cpu_us_per_register": cpu / total * 1e6}


async def phase_reader(readers: Sequence[ModbusReader], seconds: float) -> dict[str, float]:
    """Every reader's ``poll_once`` back to back: requests, decoding, scaling, deadband, Points."""
    before = [r.health() for r in readers]
    points = [0] * len(readers)

    async def loop(index: int, reader: ModbusReader, deadline: float) -> None:
        while time.perf_counter() < deadline:
            points[index] += len(await reader.poll_once())

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(loop(i, r, started + seconds) for i, r in enumerate(readers)))
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    after = [r.health() for r in readers]
    registers = sum(a["registers"] - b["registers"] for a, b in zip(after, before, strict=True))
    errors = sum(sum(a["errors"].values()) for a in after)
    if errors:
        raise RuntimeError(f"reader errors during the benchmark: {[a['errors'] for a in after if a['errors']]}")
    return {
        "registers_per_s": registers / wall,
        "points_per_s": sum(points) / wall,
        "cpu_us_per_register": cpu / registers * 1e6,
    }


async def phase_10hz(readers: Sequence[ModbusReader], seconds: float) -> dict[str, float]:
    """Every reader's own ``run()`` loop at its 10 Hz poll interval: can the collector keep up?"""
    before = [r.health() for r in readers]
    emitted = 0

    async def emit(points: Sequence[Point]) -> None:
        nonlocal emitted
        emitted += len(points)

    tasks = [asyncio.create_task(r.run(emit)) for r in readers]
    started = time.perf_counter()
    await asyncio.sleep(seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    wall = time.perf_counter() - started
    after = [r.health() for r in readers]
    return {
        "polls_per_s": sum(a["polls"] - b["polls"] for a, b in zip(after, before, strict=True)) / wall,
        "overruns": sum(a["overruns"] - b["overruns"] for a, b in zip(after, before, strict=True)),
        "points_per_s": emitted / wall,
    }


async def measure(port: int, devices: int, seconds: float, rounds: int, server: psutil.Process) -> dict[str, Any]:
    """Alternate raw, reader and reader-with-deadbands phases; medians over rounds, ratios per round.

    The ratio is taken within each round (adjacent phases), so load from other processes on a shared
    machine, which drifts over tens of seconds, weighs on both sides of it alike.
    """
    clients = await raw_clients(port, devices)
    plain = [build_reader(c) for c in configs(port, devices, deadbands=False)]
    banded = [build_reader(c) for c in configs(port, devices, deadbands=True)]
    phases = {
        "raw": lambda: phase_raw(clients, seconds),
        "reader": lambda: phase_reader(plain, seconds),
        "reader_deadband": lambda: phase_reader(banded, seconds),
    }
    await phase_raw(clients, 0.5)  # connect and warm up every side
    await phase_reader(plain, 0.5)
    await phase_reader(banded, 0.5)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in phases}
    for _ in range(rounds):
        for name, phase in phases.items():
            cpu, started = server.cpu_times(), time.perf_counter()
            figures = await phase()
            used = server.cpu_times()
            figures["server_cpu_share"] = (used.user + used.system - cpu.user - cpu.system) / (
                time.perf_counter() - started
            )
            runs[name].append(figures)
    for client in clients:
        client.close()
    for reader in banded:
        await reader.close()
    summary: dict[str, Any] = {"10hz": await phase_10hz(plain, seconds)}
    for name, figures in runs.items():
        summary[name] = {key: median([f[key] for f in figures]) for key in figures[0]}
    for name in ("reader", "reader_deadband"):
        ratios = [r["registers_per_s"] / w["registers_per_s"] for r, w in zip(runs[name], runs["raw"], strict=True)]
        summary[name]["ratio"] = median(ratios)
        summary[name]["ratio_min"] = min(ratios)
        summary[name]["ratio_max"] = max(ratios)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.modbus_decode", description=__doc__.split("\n")[0])
    parser.add_argument("--devices", type=int, default=100)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each measured phase")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    process, port = start_simulator(args.devices)
    try:
        summary = asyncio.run(measure(port, args.devices, args.seconds, args.rounds, psutil.Process(process.pid)))
    finally:
        process.terminate()
        process.wait(10)
    raw, reader, banded, tenhz = summary["raw"], summary["reader"], summary["reader_deadband"], summary["10hz"]
    figures = {
        "modbus_registers_per_s": reader["registers_per_s"],
        "modbus_raw_registers_per_s": raw["registers_per_s"],
        "modbus_vs_raw_ratio": reader["ratio"],
        "modbus_vs_raw_ratio_min": reader["ratio_min"],
        "modbus_vs_raw_ratio_max": reader["ratio_max"],
        "modbus_points_per_s": reader["points_per_s"],
        "modbus_deadband_registers_per_s": banded["registers_per_s"],
        "modbus_deadband_vs_raw_ratio": banded["ratio"],
        "modbus_reader_cpu_us_per_register": reader["cpu_us_per_register"],
        "modbus_cpu_cost_ratio": raw["cpu_us_per_register"] / reader["cpu_us_per_register"],
        "modbus_raw_cpu_us_per_register": raw["cpu_us_per_register"],
        "modbus_server_cpu_share_raw": raw["server_cpu_share"],
        "modbus_server_cpu_share_reader": reader["server_cpu_share"],
        "modbus_10hz_polls_per_s": tenhz["polls_per_s"],
        "modbus_10hz_overruns": tenhz["overruns"],
        "modbus_devices": args.devices,
        "modbus_phase_s": args.seconds,
        "modbus_rounds": args.rounds,
    }
    print_table(
        f"Modbus TCP, {args.devices} pump stations (4 requests, 72 registers, 34 points a poll), "
        f"median of {args.rounds} × {args.seconds:g} s",
        [
            ("reader registers/s (every point emitted)", f"{reader['registers_per_s']:,.0f}"),
            ("bare pymodbus registers/s (ceiling)", f"{raw['registers_per_s']:,.0f}"),
            (
                "reader / bare pymodbus (median; min-max)",
                f"{reader['ratio']:.2f}; {reader['ratio_min']:.2f}-{reader['ratio_max']:.2f}",
            ),
            ("reader points/s", f"{reader['points_per_s']:,.0f}"),
            ("reader registers/s, map deadbands on", f"{banded['registers_per_s']:,.0f}"),
            ("  ... / bare pymodbus", f"{banded['ratio']:.2f}"),
            ("client CPU µs/register, reader", f"{reader['cpu_us_per_register']:.2f}"),
            ("client CPU µs/register, bare pymodbus", f"{raw['cpu_us_per_register']:.2f}"),
            ("  bare ÷ reader CPU per register", f"{figures['modbus_cpu_cost_ratio']:.2f}"),
            ("simulator CPU share (cores), raw phase", f"{raw['server_cpu_share']:.2f}"),
            ("simulator CPU share (cores), reader phase", f"{reader['server_cpu_share']:.2f}"),
            (f"10 Hz run(): polls/s (asked {args.devices * 10:,})", f"{tenhz['polls_per_s']:,.0f}"),
            ("10 Hz run(): overruns", f"{tenhz['overruns']:,}"),
        ],
    )
    print(f"\ncores: {os.cpu_count()}; results: {write_results('modbus_decode', figures)}")


if __name__ == "__main__":
    main()
