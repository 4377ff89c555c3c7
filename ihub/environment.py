"""Setting up the process environment the way `make demo`, `make ui` and the tests expect it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
INSTANCE_TEMPLATE = REPO_ROOT / "dagster.yaml"


class InstanceConfigError(ValueError):
    """The environment asks for an instance that cannot be configured as it stands."""


def instance_config(environ: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """``dagster.yaml`` as this environment wants it: SQLite, or PostgreSQL through dagster-postgres.

    Only Dagster's documented ``storage: postgres`` forms are used, with ``env:`` references, so the
    password never lands in a file. The driver is named explicitly (``postgresql+psycopg2``): SQLAlchemy
    2.1 maps a bare ``postgresql://`` to psycopg 3, while dagster-postgres ships with psycopg2.
    """
    config = yaml.safe_load(INSTANCE_TEMPLATE.read_text())
    if environ.get("DAGSTER_PG_URL"):
        if not environ["DAGSTER_PG_URL"].startswith("postgresql+psycopg2://"):
            raise InstanceConfigError(
                "DAGSTER_PG_URL must start with postgresql+psycopg2:// (dagster-postgres uses psycopg2; "
                "a bare postgresql:// would pick psycopg 3); or set DAGSTER_PG_HOST and its companions instead"
            )
        config["storage"] = {"postgres": {"postgres_url": {"env": "DAGSTER_PG_URL"}}}
    elif environ.get("DAGSTER_PG_HOST"):
        database: dict[str, Any] = {
            "hostname": {"env": "DAGSTER_PG_HOST"},
            "username": {"env": "DAGSTER_PG_USERNAME"} if environ.get("DAGSTER_PG_USERNAME") else "postgres",
            "db_name": {"env": "DAGSTER_PG_DB"} if environ.get("DAGSTER_PG_DB") else "dagster",
            "port": {"env": "DAGSTER_PG_PORT"} if environ.get("DAGSTER_PG_PORT") else 5432,
            "scheme": "postgresql+psycopg2",
        }
        if environ.get("DAGSTER_PG_PASSWORD"):
            database["password"] = {"env": "DAGSTER_PG_PASSWORD"}
        config["storage"] = {"postgres": {"postgres_db": database}}
    return config


def write_instance_config(home: Path, environ: Mapping[str, str] = os.environ) -> Path:
    """Write ``home/dagster.yaml`` for this environment (only when it changed, so a running daemon's
    file is not touched for nothing)."""
    text = "# Written by ihub from dagster.yaml in the repository; edit that one.\n" + yaml.safe_dump(
        instance_config(environ), sort_keys=False
    )
    target = home / "dagster.yaml"
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    return target


def prepare_dagster_home(data_dir: Path | None = None) -> Path:
    """Point ``DAGSTER_HOME`` at ``<data dir>/dagster`` (unless set) and put the instance's dagster.yaml there."""
    data_dir = (data_dir or Path(os.environ.get("IHUB_DATA_DIR", ".data"))).resolve()
    os.environ.setdefault("IHUB_DATA_DIR", str(data_dir))
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(data_dir / "dagster"))).resolve()
    os.environ["DAGSTER_HOME"] = str(home)
    home.mkdir(parents=True, exist_ok=True)
    write_instance_config(home)
    return home
