"""The live half of ``ihub demo``: SCADA simulators → collector → spool → sensor → window runs, for a few minutes.

Everything runs on loopback: an MQTT broker (Mosquitto with the shipped configuration if installed, else
an embedded one), the protocol gateway publishing five units (with a high-temperature scenario on
UNIT001), the Modbus pump station, the OPC UA pump station, the collector (``ihub collect``) and the
Dagster daemon, which runs ``scada_window_sensor`` and the window runs it requests. Windows are one
minute long here so a short demo sees several.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from ihub.environment import REPO_ROOT

WINDOW_S = 60


def run_live(minutes: float, data_dir: Path, say) -> int:
    import dagster as dg
    import httpx

    from collector.embedded_broker import start_local_broker
    from simulators.modbus import serve_modbus
    from simulators.opcua import serve_opcua
    from simulators.scada_gateway import GatewayConfig, GatewaySimulator, Scenario

    spool = data_dir / "spool"
    env = {**os.environ, "IHUB_SPOOL_DIR": str(spool), "IHUB_SPOOL_WINDOW_S": str(WINDOW_S)}
    bin_dir = Path(sys.executable).parent
    broker = start_local_broker()
    say(f"MQTT broker on {broker.host}:{broker.port} ({type(broker).__name__})")
    processes: list[subprocess.Popen] = []
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
            publisher = threading.Thread(target=gateway.run, kwargs={"duration_s": minutes * 60}, daemon=True)
            publisher.start()
            say(
                f"collector, Dagster daemon and gateway running; {minutes:g} minutes of live data, {WINDOW_S} s windows"
            )
            deadline = time.monotonic() + minutes * 60
            health = {}
            while time.monotonic() < deadline:
                time.sleep(min(15, max(0.0, deadline - time.monotonic())))
                health = _health(httpx, health_port)
                runs = _window_runs(dg)
                elapsed = minutes * 60 - max(0, deadline - time.monotonic())
                say(
                    f"  {elapsed:4.0f} s: {gateway.published:,} points published, "
                    f"spool backlog {health.get('spool', {}).get('backlog_bytes', 0) / 1024:,.0f} KiB, "
                    f"windows processed {sum(1 for r in runs if r[1] == 'SUCCESS')}"
                )
            # The last window closes within a minute; wait until every sealed window has had its run.
            say("  waiting for the last window to be sealed and processed …")
            last_window_end = (int(time.time()) // WINDOW_S + 1) * WINDOW_S
            settle = time.monotonic() + WINDOW_S + 45
            while time.monotonic() < settle:
                time.sleep(3)
                runs = _window_runs(dg)
                finished = {w for w, status in runs if status in ("SUCCESS", "FAILURE", "CANCELED")}
                sealed = _sealed_or_archived(spool)
                if sealed and sealed <= finished and time.time() > last_window_end + 5:
                    break
            health = _health(httpx, health_port) or health
            runs = _window_runs(dg)
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        broker.close()
    return _summary(say, runs, health, data_dir)


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


def _sealed_or_archived(spool: Path) -> set[str]:
    return {p.name for sub in ("sealed", "archive") if (spool / sub).is_dir() for p in (spool / sub).iterdir()}


def _window_runs(dg) -> list[tuple[str, str]]:
    with dg.DagsterInstance.get() as instance:
        records = instance.get_run_records(filters=dg.RunsFilter(job_name="scada_window_job"))
        return sorted((r.dagster_run.tags.get("scada/window", "?"), r.dagster_run.status.value) for r in records)


def _summary(say, runs: list[tuple[str, str]], health: dict, data_dir: Path) -> int:
    from quality.scada import SCADA_POINTS, SCADA_WINDOW_ALERTS
    from resources.lake import Lake

    lake = Lake(root=str(data_dir / "lake"))
    say("")
    say("Live SCADA summary")
    succeeded = [w for w, status in runs if status == "SUCCESS"]
    say(f"  windows processed: {len(succeeded)} of {len(runs)} requested ({', '.join(w for w, _ in runs) or 'none'})")
    points = lake.read(SCADA_POINTS)
    if points.height:
        by_source = dict(points.group_by("source").len().sort("source").iter_rows())
        say(f"  points in the lake: {points.height:,} ({', '.join(f'{k} {v:,}' for k, v in by_source.items())})")
    inline = health.get("alerts", {})
    say(f"  inline threshold alerts raised by the collector: {inline.get('raised', 0)}")
    record = sorted((data_dir / "notifications").glob("*.jsonl"))
    if record:
        lines = [json.loads(x) for f in record for x in f.read_text().splitlines() if x.strip()]
        for entry in lines[-3:]:
            say(f"    {entry.get('severity', '?')}: {entry.get('title', '')}")
    alerts = lake.read(SCADA_WINDOW_ALERTS)
    say(f"  window-level alerts: {alerts.height}")
    for row in alerts.sort("window_start").tail(5).iter_rows(named=True):
        say(f"    {row['window_start']:%H:%M}Z {row['kind']}: {row['message']}")
    return 0 if succeeded else 1
