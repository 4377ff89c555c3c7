"""The live half of ``ihub demo``: SCADA simulators → collector → spool → sensor → window runs, for a few minutes.

Everything runs on loopback: an MQTT broker (Mosquitto with the shipped configuration if installed, else
an embedded one), the protocol gateway publishing five units (with a high-temperature scenario on
UNIT001), the Modbus pump station, the OPC UA pump station, the collector (``ihub collect``) and the
Dagster daemon, which runs ``scada_window_sensor`` and the window runs it requests. Windows are one
minute long here so a short demo sees several; the collector's configuration says so, and every
window's manifest carries it to the Dagster side (nothing else is told the length).

What the demo reports must be true, so it ends on a window boundary: the simulators keep publishing
through the end of the last window it reports and until the collector has stopped, so no window it
processes has a silence that is only the demo shutting down. The window in progress when the
collector stops stays open, is marked as stopped, and is not reported; the summary covers only the
windows of this demo (a data directory may hold earlier demos' windows too).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import yaml

from ihub.environment import REPO_ROOT

WINDOW_S = 60


def run_live(minutes: float, data_dir: Path, say) -> int:
    import dagster as dg
    import httpx

    from resources.scada_manifest import window_name
    from simulators.modbus import serve_modbus
    from simulators.mqtt_broker import start_local_broker
    from simulators.opcua import serve_opcua
    from simulators.scada_gateway import GatewayConfig, GatewaySimulator, Scenario

    spool = data_dir / "spool"
    env = {**os.environ, "IHUB_SPOOL_DIR": str(spool)}
    env.pop("IHUB_SPOOL_WINDOW_S", None)  # no longer read by anything; the manifest carries the length
    bin_dir = Path(sys.executable).parent
    broker = start_local_broker()
    say(f"MQTT broker on {broker.host}:{broker.port} ({type(broker).__name__})")
    processes: list[subprocess.Popen] = []
    gateway = None
    runs: list[tuple[str, str]] = []
    health: dict = {}
    first_start = int(time.time()) // WINDOW_S * WINDOW_S
    try:
        with serve_modbus({1: "pump_station"}) as modbus, serve_opcua() as opcua:
            say(f"Modbus TCP pump station on {modbus.host}:{modbus.port}; OPC UA pump station on {opcua.url}")
            health_port = _free_port()
            config_path = _write_collector_config(data_dir, broker, modbus, opcua, health_port)
            processes.append(
                subprocess.Popen(
                    [str(bin_dir / "ihub"), "collect", "--config", str(config_path)],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=open(data_dir / "collector.log", "w"),  # noqa: SIM115 — closed with the process
                )
            )
            processes.append(
                subprocess.Popen(
                    [str(bin_dir / "dagster-daemon"), "run", "-w", str(REPO_ROOT / "workspace.yaml")],
                    cwd=REPO_ROOT,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=open(data_dir / "dagster-daemon.log", "w"),  # noqa: SIM115
                )
            )
            gateway = GatewaySimulator(
                GatewayConfig(
                    host=broker.host,
                    port=broker.port,
                    scenarios=[Scenario("high_temperature", unit="UNIT001", start_s=20, duration_s=3600)],
                )
            )
            gateway.record = False
            # The demo's windows: from the one in progress now to the last one ending after `minutes`.
            began = time.time()
            first_start = int(began) // WINDOW_S * WINDOW_S
            last_end = -(-int(began + minutes * 60) // WINDOW_S) * WINDOW_S
            # Publishing stops only after the collector has (stop() below), never inside a reported window.
            publisher = threading.Thread(target=gateway.run, kwargs={"duration_s": 24 * 3600}, daemon=True)
            publisher.start()
            say(
                f"collector, Dagster daemon and gateway running; live data until {_clock(last_end)} "
                f"(the end of a {WINDOW_S} s window)"
            )
            deadline = time.monotonic() + (last_end - began)
            health = {}
            while time.monotonic() < deadline:
                time.sleep(min(15, max(0.0, deadline - time.monotonic())))
                health = _health(httpx, health_port)
                runs = _window_runs(dg, since=window_name(datetime.fromtimestamp(first_start, UTC)))
                elapsed = time.time() - began
                say(
                    f"  {elapsed:4.0f} s: {gateway.published:,} points published, "
                    f"spool backlog {health.get('spool', {}).get('backlog_bytes', 0) / 1024:,.0f} KiB, "
                    f"windows processed {sum(1 for r in runs if r[1] == 'SUCCESS')}"
                )
            # Every window of the demo is over now; wait until each is sealed and has had its run.
            say(f"  waiting for the windows up to {_clock(last_end)} to be sealed and processed …")
            ours = {window_name(datetime.fromtimestamp(t, UTC)) for t in range(first_start, last_end, WINDOW_S)}
            settle = time.monotonic() + 90
            while time.monotonic() < settle:
                time.sleep(3)
                runs = _window_runs(dg, ours)
                finished = {w for w, status in runs if status in ("SUCCESS", "FAILURE", "CANCELED")}
                if ours <= _sealed_or_archived(spool) and ours <= finished:
                    break
            health = _health(httpx, health_port) or health
            runs = _window_runs(dg, ours)
            # The collector first, the simulators after: the window in progress is marked as a shutdown,
            # and holds no silence the devices did not have.
            _stop(processes)
    finally:
        _stop(processes)
        if gateway is not None:
            gateway.stop()
        broker.close()
    return _summary(say, runs, health, data_dir, datetime.fromtimestamp(first_start, UTC))


def _write_collector_config(data_dir: Path, broker, modbus, opcua, health_port: int) -> Path:
    maps = REPO_ROOT / "collector" / "maps"
    config = {
        "spool": {"dir": str(data_dir / "spool"), "window_s": WINDOW_S},
        "alerts": {"enabled": True},
        "notifier": {"record_dir": str(data_dir / "notifications"), "channels": []},
        "health": {"enabled": True, "host": "127.0.0.1", "port": health_port},
        "mqtt": [
            {
                "name": "gateway",
                "host": broker.host,
                "port": broker.port,
                "client_id": "ihub-demo-collector",
                "topics": ["scada/+/+"],
                "qos": 1,
            }
        ],
        "modbus": [
            {
                "name": "ps01-plc",
                "host": modbus.host,
                "port": modbus.port,
                "unit_id": 1,
                "plant_unit_id": "PS01",
                "poll_interval_s": 1.0,
                "register_map": str(maps / "pump_station.yaml"),
            }
        ],
        "opcua": [
            {
                "name": "ps01-opcua",
                "url": opcua.url,
                "security": {"policy": "None"},
                "mode": "subscribe",
                "node_map": str(maps / "pump_station_opcua.yaml"),
            }
        ],
    }
    path = data_dir / "collector.demo.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))
    return path


def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _health(httpx, port: int) -> dict:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).json()
    except (httpx.HTTPError, json.JSONDecodeError):
        return {}


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def _clock(epoch_s: float) -> str:
    return f"{datetime.fromtimestamp(epoch_s, UTC):%H:%M:%S}Z"


def _sealed_or_archived(spool: Path) -> set[str]:
    """Windows the collector has published (sealed, acknowledged or archived), through the contract."""
    from resources.scada_manifest import WindowDirectory

    windows = WindowDirectory(spool)
    return {m.window for m in windows.available(datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC))}


def _window_runs(dg, windows: set[str] | None = None, since: str = "") -> list[tuple[str, str]]:
    """(window, status) of the window runs for ``windows``, or for every window from ``since`` on."""
    with dg.DagsterInstance.get() as instance:
        records = instance.get_run_records(filters=dg.RunsFilter(job_name="scada_window_job"))
        runs = [(r.dagster_run.tags.get("scada/window", "?"), r.dagster_run.status.value) for r in records]
        return sorted(run for run in runs if (run[0] in windows if windows is not None else run[0] >= since))


def _summary(say, runs: list[tuple[str, str]], health: dict, data_dir: Path, since: datetime) -> int:
    from contracts.scada import SCADA_POINTS, SCADA_WINDOW_ALERTS
    from resources.lake import Lake

    lake = Lake(root=str(data_dir / "lake"))
    say("")
    say("Live SCADA summary (this demo's windows)")
    succeeded = [w for w, status in runs if status == "SUCCESS"]
    say(f"  windows processed: {len(succeeded)} of {len(runs)} requested ({', '.join(w for w, _ in runs) or 'none'})")
    points = lake.read(SCADA_POINTS, since)
    if points.height:
        by_source = dict(points.group_by("source").len().sort("source").iter_rows())
        say(f"  points in the lake: {points.height:,} ({', '.join(f'{k} {v:,}' for k, v in by_source.items())})")
    inline = health.get("alerts", {})
    say(f"  inline threshold alerts raised by the collector: {inline.get('raised', 0)}")
    record = sorted((data_dir / "notifications").glob("*.jsonl"))
    if record:
        lines = [json.loads(x) for f in record for x in f.read_text().splitlines() if x.strip()]
        # The record holds every notification, the collector's inline ones and the window job's alike.
        say(f"  notifications sent to operators (inline and window-level): {len(lines)}, the last ones:")
        for entry in lines[-3:]:
            say(f"    {entry.get('severity', '?')}: {entry.get('title', '')}")
    alerts = lake.read(SCADA_WINDOW_ALERTS, since)
    say(f"  window-level alerts: {alerts.height}")
    for row in alerts.sort("window_start").tail(5).iter_rows(named=True):
        say(f"    {row['window_start']:%H:%M}Z {row['kind']}: {row['message']}")
    return 0 if succeeded else 1
