"""Shared fixtures: a private data directory, a Dagster instance, and machine services."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import dagster as dg
import pytest

from resources.catalog import AnalystCatalog
from resources.lake import Lake


def service_available(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, port: int) -> None:
    """Skip with a reason when a machine service is down, except in CI, where it must be there."""
    if service_available(port):
        return
    message = f"{name} is not listening on 127.0.0.1:{port}"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}, and CI=true requires it (.ci/run starts it)")
    pytest.skip(message)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def lake(data_dir: Path) -> Lake:
    return Lake(root=str(data_dir / "lake"))


@pytest.fixture
def analyst_catalog(data_dir: Path) -> AnalystCatalog:
    return AnalystCatalog(path=str(data_dir / "catalog" / "ihub.duckdb"))


@pytest.fixture
def instance():
    with dg.instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture(scope="module")
def server():
    """One DMAMA simulator for a whole test module (starting one costs ~0.2 s); reset by ``sim``."""
    from simulators.dmama import DmamaConfig, serve_dmama

    with serve_dmama(DmamaConfig()) as running:
        yield running


@pytest.fixture
def sim(server):
    """The module's simulator with no armed faults and fresh request counts."""
    server.simulator.clear_faults()
    server.simulator.reset_stats()
    yield server.simulator
    server.simulator.clear_faults()


@pytest.fixture
def dmama_server(server):
    """The module's DMAMA simulator (5 DMAs, 10 meters each, on a free loopback port), with no armed faults
    and fresh request counts: the simulator is deterministic, so tests need not pay for a new one each."""
    server.simulator.clear_faults()
    server.simulator.reset_stats()
    yield server
    server.simulator.clear_faults()


@pytest.fixture
def dmama_env(dmama_server, monkeypatch, data_dir):
    """The environment the Definitions read, pointed at the simulator and the test's data directory."""
    from simulators.dmama import credentials_env

    for key, value in credentials_env(dmama_server.url, dmama_server.config).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("IHUB_DATA_DIR", str(data_dir))
    monkeypatch.delenv("IHUB_LAKE_DIR", raising=False)
    monkeypatch.delenv("IHUB_CATALOG_PATH", raising=False)
    return dmama_server


def dmama_client(server, **overrides):
    from resources.dmama import DmamaClient

    settings = {
        "base_url": server.url,
        "api_key": server.config.api_key,
        "client_id": server.config.client_id,
        "client_secret": server.config.client_secret,
        "backoff_base_s": 0.01,
        "timeout_s": 5.0,
    }
    return DmamaClient(**{**settings, **overrides})


@pytest.fixture
def hub_resources(dmama_server, lake, analyst_catalog):
    return {"dmama": dmama_client(dmama_server), "lake": lake, "catalog": analyst_catalog}
