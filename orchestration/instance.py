"""Dagster instance storage chosen by the environment: PostgreSQL when configured, SQLite otherwise.

``dagster.yaml`` names this class as its storage, so one file serves a laptop (nothing to set: SQLite
under ``DAGSTER_HOME``) and production (``DAGSTER_PG_URL``, or ``DAGSTER_PG_HOST`` with
``DAGSTER_PG_USERNAME``, ``DAGSTER_PG_PASSWORD``, ``DAGSTER_PG_DB`` and ``DAGSTER_PG_PORT``, as
dagster-postgres names them). The password is read from the environment and never logged.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import quote

from dagster import Field, StringSource
from dagster._core.storage.base_storage import DagsterStorage
from dagster._serdes import ConfigurableClass, ConfigurableClassData


def postgres_url_from_env(environ: dict[str, str] | os._Environ = os.environ) -> str | None:
    """The PostgreSQL URL the environment asks for, or None when it asks for none.

    The driver is named explicitly: SQLAlchemy 2.1 maps a bare ``postgresql://`` to psycopg 3, while
    dagster-postgres ships with psycopg2.
    """
    if environ.get("DAGSTER_PG_URL"):
        return _with_psycopg2(environ["DAGSTER_PG_URL"])
    host = environ.get("DAGSTER_PG_HOST")
    if not host:
        return None
    user = quote(environ.get("DAGSTER_PG_USERNAME", "postgres"), safe="")
    password = environ.get("DAGSTER_PG_PASSWORD", "")
    credentials = f"{user}:{quote(password, safe='')}" if password else user
    port = environ.get("DAGSTER_PG_PORT", "5432")
    database = environ.get("DAGSTER_PG_DB", "dagster")
    return _with_psycopg2(f"postgresql://{credentials}@{host}:{port}/{database}")


def _with_psycopg2(url: str) -> str:
    for bare in ("postgresql://", "postgres://"):
        if url.startswith(bare):
            return "postgresql+psycopg2://" + url.removeprefix(bare)
    return url


class EnvironmentSelectedStorage(DagsterStorage, ConfigurableClass):
    """Delegates to ``DagsterPostgresStorage`` or ``DagsterSqliteStorage`` as the environment says."""

    def __init__(self, delegate: DagsterStorage, inst_data: ConfigurableClassData | None = None) -> None:
        self._delegate = delegate
        self._inst_data = inst_data
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Any]:
        return {"sqlite_base_dir": Field(StringSource, is_required=True)}

    @classmethod
    def from_config_value(cls, inst_data: ConfigurableClassData | None, config_value: dict[str, Any]):
        url = postgres_url_from_env()
        if url:
            from dagster_postgres.storage import DagsterPostgresStorage

            delegate: DagsterStorage = DagsterPostgresStorage(postgres_url=url)
        else:
            from dagster._core.storage.sqlite_storage import DagsterSqliteStorage

            delegate = DagsterSqliteStorage.from_local(config_value["sqlite_base_dir"])
        return cls(delegate, inst_data=inst_data)

    @property
    def event_log_storage(self):
        return self._delegate.event_log_storage

    @property
    def run_storage(self):
        return self._delegate.run_storage

    @property
    def schedule_storage(self):
        return self._delegate.schedule_storage

    def register_instance(self, instance) -> None:
        super().register_instance(instance)
        if not self._delegate.has_instance:
            self._delegate.register_instance(instance)

    def dispose(self) -> None:
        self._delegate.dispose()
