"""``ihub collect status``: which endpoint it asks by default, and what it says about the broker."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from collector.config import DEFAULT_HEALTH_PORT, HealthSettings, health_url, load_config
from ihub.cli import main as ihub

REPO = Path(__file__).resolve().parents[2]


def health_document(**reader: Any) -> dict[str, Any]:
    return {
        "status": "ok",
        "started_at": "2026-03-01T12:00:00+00:00",
        "uptime_s": 75.0,
        "protocols": {"mqtt": {"readers": 1, "connected": 1, "points_per_s": 950.0, "errors": 0}},
        "readers": {"gateway": {"protocol": "mqtt", "connected": True, "points_total": 10_000, **reader}},
        "spool": {"state": "ok"},
        "alerts": {},
        "notifier": {},
    }


@contextmanager
def serving(document: dict[str, Any], port: int = 0) -> Iterator[tuple[str, list[str]]]:
    """A real HTTP server on loopback answering every GET with ``document``; yields its URL and the paths asked."""
    asked: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            asked.append(self.path)
            body = json.dumps(document).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", asked
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_status_and_the_collector_share_one_default_endpoint():
    assert HealthSettings().url() == health_url() == f"http://127.0.0.1:{DEFAULT_HEALTH_PORT}/health"
    assert HealthSettings(host="0.0.0.0", port=9100).url() == "http://127.0.0.1:9100/health"


def test_status_without_url_asks_the_port_the_collector_listens_on_by_default(capsys):
    try:
        context = serving(health_document(), port=DEFAULT_HEALTH_PORT)
        _, asked = context.__enter__()
    except OSError:
        pytest.skip(f"port {DEFAULT_HEALTH_PORT} is in use on this machine")
    try:
        assert ihub(["collect", "status"]) == 0
    finally:
        context.__exit__(None, None, None)
    assert asked == ["/health"]
    assert "collector: OK" in capsys.readouterr().out


def test_status_with_config_asks_the_endpoint_that_config_sets(tmp_path, capsys):
    port = free_port()
    path = tmp_path / "collector.yaml"
    path.write_text(f"health: {{port: {port}}}\n")
    assert load_config(path).health.url() == f"http://127.0.0.1:{port}/health"
    with serving(health_document(), port=port) as (_, asked):
        assert ihub(["collect", "status", "--config", str(path)]) == 0
    assert asked == ["/health"]
    assert "gateway" in capsys.readouterr().out


def test_status_warns_when_the_broker_dropped_messages(capsys):
    with serving(health_document(broker_dropped_messages=4_812)) as (url, _):
        assert ihub(["collect", "status", "--url", url]) == 1
    out = capsys.readouterr().out
    warnings = [line for line in out.splitlines() if line.startswith("WARNING")]
    assert len(warnings) == 1
    assert "reader gateway dropped 4,812 message(s)" in warnings[0]
    assert "max_queued_messages" in warnings[0]


def test_status_stays_quiet_while_the_broker_drops_nothing(capsys):
    with serving(health_document(broker_dropped_messages=0)) as (url, _):
        assert ihub(["collect", "status", "--url", url]) == 0
    assert "WARNING" not in capsys.readouterr().out


def test_the_collector_runs_without_dagster():
    """The collector is an edge service: it must import (with every protocol it may load) and validate its
    configuration with Dagster not installed (``sys.modules["dagster"] = None`` makes importing it fail)."""
    code = textwrap.dedent(
        """
        import sys
        sys.modules["dagster"] = None
        import collector.service, collector.modbus, collector.opcua, collector.mqtt, collector.alerts
        from collector.config import load_config
        load_config("collector.example.yaml")
        loaded = [n for n, m in sys.modules.items() if m is not None and (n == "dagster" or n.startswith("dagster"))]
        print(sorted(loaded))
        """
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
