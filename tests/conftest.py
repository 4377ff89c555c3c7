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
