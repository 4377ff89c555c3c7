"""The collector service end to end: readers -> alerts + spool -> sealed windows, webhook, health, shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import BaseModel

from collector import config as config_module
from collector.config import load_config
from collector.points import GOOD, Emit, Point
from collector.service import Collector, format_status, run_collector, status
from collector.spool import Spool, SpoolFullError, read_window, sealed_windows
from tests.collector.test_notifier import Receiver

REPO = Path(__file__).resolve().parents[2]
WINDOW_START = 1_772_366_400.0  # 2026-03-01T12:00Z, a window boundary


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class ScriptedReader:
    """A real Reader: emits the batches it is given (stamped with the clock), then stays connected."""

    protocol = "synthetic"

    def __init__(self, name: str, batches: list[list[tuple[str, str, float]]], clock: Callable[[], float]) -> None:
        self.name = name
        self.batches = batches
        self.clock = clock
        self.emitted: list[Point] = []
        self.refused = 0
        self.done = asyncio.Event()
        self.runs = 0

    async def run(self, emit: Emit) -> None:
        self.runs += 1
        for batch in self.batches:
            now = int(self.clock() * 1_000_000)
            points = [
                Point("synthetic", self.name, unit_id, sensor, value, _UNITS[sensor], GOOD, now - 500_000, now)
                for unit_id, sensor, value in batch
            ]
            try:
                await emit(points)
            except SpoolFullError:
                self.refused += len(points)  # as MQTT would: not acknowledged, redelivered later
                continue
            self.emitted.extend(points)
        self.done.set()
        await asyncio.Event().wait()  # connected until the service stops it

    def health(self) -> dict[str, Any]:
        return {"connected": True, "subscriptions": 1, "errors": 0}


_UNITS = {"temperature": "°C", "pressure": "bar", "flow": "L/min", "power": "kW"}


def write_config(tmp_path: Path, receiver_url: str, extra: str = "", spool: str = "") -> Path:
    path = tmp_path / "collector.yaml"
    path.write_text(
        textwrap.dedent(
            f"""
            spool:
              dir: spool
              window_s: 60
              seal_delay_s: 2
              {spool}
            notifier:
              record_dir: notifications
              channels:
                - {{kind: webhook, url: "{receiver_url}/hooks/scada"}}
            health: {{host: 127.0.0.1, port: 0}}
            """
        ).lstrip("\n")
        + extra
    )
    return path


async def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


def test_points_reach_sealed_windows_alerts_reach_the_webhook_and_health_answers(tmp_path, capsys):
    clock = Clock(WINDOW_START + 5)
    batches = [
        [("UNIT001", "temperature", 24.5), ("UNIT001", "pressure", 3.2), ("UNIT001", "flow", 150.0)],
        [("UNIT002", "temperature", 39.1), ("UNIT002", "power", 80.0)],  # a critical breach
        [("UNIT003", "pressure", 0.7)],  # a warning
    ]

    async def scenario(receiver: Receiver) -> None:
        reader = ScriptedReader("gateway-sim", batches, clock)
        collector = Collector(load_config(write_config(tmp_path, receiver.url)), readers=[reader], clock=clock)
        await collector.start()
        try:
            await asyncio.wait_for(reader.done.wait(), 5)
            alerts = await asyncio.to_thread(receiver.wait_for, 2, 5.0)
            assert sorted((a["json"]["unit_id"], a["json"]["severity"]) for a in alerts) == [
                ("UNIT002", "critical"),
                ("UNIT003", "warning"),
            ]
            assert all(a["path"] == "/hooks/scada" for a in alerts)

            assert collector.health_url is not None
            async with httpx.AsyncClient() as client:
                response = await client.get(collector.health_url)
            assert response.status_code == 200
            health = response.json()
            assert health["status"] == "ok"
            entry = health["readers"]["gateway-sim"]
            assert (entry["protocol"], entry["connected"], entry["points_total"]) == ("synthetic", True, 6)
            assert health["protocols"]["synthetic"] == {
                "readers": 1,
                "connected": 1,
                "points_per_s": health["protocols"]["synthetic"]["points_per_s"],
                "errors": 0,
            }
            assert health["spool"]["open_windows"] == ["20260301T1200Z"]
            assert health["alerts"]["raised"] == 2
            await eventually(lambda: collector.health()["notifier"].get("sent") == 2)

            clock.now = WINDOW_START + 60 + 2.5  # the window is over and the seal delay passed
            await eventually(lambda: sealed_windows(tmp_path / "spool") == ["20260301T1200Z"], 3.0)
            assert read_window(tmp_path / "spool", "20260301T1200Z") == reader.emitted

            assert await asyncio.to_thread(status, collector.health_url) == 0
        finally:
            await collector.stop()

    with Receiver() as receiver:
        asyncio.run(scenario(receiver))
    printed = capsys.readouterr().out
    assert "collector: OK" in printed
    assert "gateway-sim" in printed and "synthetic" in printed
    assert (tmp_path / "notifications").is_dir()  # relative to the config file


class SyntheticConfig(BaseModel):
    """The config model of the 'synthetic' protocol registered by the test below."""

    name: str
    unit_id: str
    temperature: float


def build_reader(config: SyntheticConfig) -> ScriptedReader:
    return ScriptedReader(config.name, [[(config.unit_id, "temperature", config.temperature)]], time.time)


def test_readers_are_built_from_their_config_section(tmp_path, monkeypatch):
    monkeypatch.setitem(config_module.PROTOCOLS, "synthetic", ("tests.collector.test_service", "SyntheticConfig"))
    extra = (
        "synthetic:\n"
        "  - {name: sim-a, unit_id: UNIT004, temperature: 21.5}\n"
        "  - {name: sim-b, unit_id: UNIT005, temperature: 22}\n"
    )

    async def scenario(receiver: Receiver) -> None:
        stop = asyncio.Event()
        runner = asyncio.create_task(run_collector(write_config(tmp_path, receiver.url, extra), stop))
        try:
            await eventually(lambda: len(_spooled(tmp_path / "spool")) == 2)
        finally:
            stop.set()
            await asyncio.wait_for(runner, 15)

    with Receiver() as receiver:
        asyncio.run(scenario(receiver))
    assert sorted((p.device, p.unit_id, p.value) for p in _spooled(tmp_path / "spool")) == [
        ("sim-a", "UNIT004", 21.5),
        ("sim-b", "UNIT005", 22.0),
    ]


def _spooled(root: Path) -> list[Point]:
    return [
        Point.from_json(line)
        for area in ("open", "sealed")
        for segment in sorted((root / area).glob("*/*.jsonl"))
        for line in segment.read_text().splitlines()
    ]


def test_a_full_spool_refuses_points_and_the_health_says_failing(tmp_path):
    clock = Clock(WINDOW_START + 5)
    batches = [[("UNIT001", "pressure", 3.0 + i / 100)] * 5 for i in range(20)]

    async def scenario(receiver: Receiver) -> None:
        config = load_config(write_config(tmp_path, receiver.url, spool="max_bytes: 1KiB"))
        reader = ScriptedReader("gateway-sim", batches, clock)
        collector = Collector(config, readers=[reader], clock=clock)
        await collector.start()
        try:
            await asyncio.wait_for(reader.done.wait(), 5)
            assert reader.refused > 0
            async with httpx.AsyncClient() as client:
                response = await client.get(collector.health_url or "")
            assert response.status_code == 503
            health = response.json()
            assert health["status"] == "failing"
            assert health["spool"]["state"] == "full"
            assert health["readers"]["gateway-sim"]["refused_points"] == reader.refused
            assert "collector: FAILING" in format_status(health)
        finally:
            await collector.stop()

    with Receiver() as receiver:
        asyncio.run(scenario(receiver))


class CrashingReader(ScriptedReader):
    """Raises on its first run (a reader bug); the service must restart it."""

    async def run(self, emit: Emit) -> None:
        if self.runs == 0:
            self.runs += 1
            raise RuntimeError("decoder bug")
        await super().run(emit)


def test_a_reader_that_crashes_is_restarted_and_reported(tmp_path):
    async def scenario(receiver: Receiver) -> None:
        reader = CrashingReader("flaky", [[("UNIT001", "flow", 120.0)]], time.time)
        collector = Collector(load_config(write_config(tmp_path, receiver.url)), readers=[reader])
        await collector.start()
        try:
            await asyncio.wait_for(reader.done.wait(), 5)
            entry = collector.health()["readers"]["flaky"]
            assert entry["restarts"] == 1
            assert entry["last_error"] == "RuntimeError: decoder bug"
            assert entry["points_total"] == 1
        finally:
            await collector.stop()

    with Receiver() as receiver:
        asyncio.run(scenario(receiver))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_main_stops_cleanly_on_sigterm(tmp_path):
    port = free_port()
    path = tmp_path / "collector.yaml"
    path.write_text(f"spool: {{dir: spool}}\nhealth: {{port: {port}}}\nnotifier: {{record_dir: notifications}}\n")
    process = subprocess.Popen(
        [sys.executable, "-c", f"import sys; from collector.service import main; sys.exit(main({str(path)!r}))"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, process.communicate()[1].decode()
            assert time.monotonic() < deadline, "the collector did not serve /health"
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        _, errors = process.communicate(timeout=20)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 0, errors.decode()
    assert "collector stopped" in errors.decode()
    Spool(tmp_path / "spool").close()  # SpoolLockedError if the stopped process still held the root


def test_a_bad_config_exits_with_the_problem_named(tmp_path, capsys):
    from collector.service import main

    path = tmp_path / "collector.yaml"
    path.write_text("spool:\n  window_s: 7\n")
    assert main(str(path)) == 2
    assert f"{path}:2: spool.window_s:" in capsys.readouterr().err
