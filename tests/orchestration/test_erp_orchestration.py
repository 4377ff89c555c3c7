"""The ERP's wiring in the hub: jobs through the merged Definitions, the morning schedule's range, and
credentials bound by name, never by value."""

from __future__ import annotations

import importlib
from datetime import UTC, datetime

import dagster as dg
import pytest

from resources.erp import ErpODataClient
from resources.erp_sql import ErpSqlReader
from simulators.erp import ErpConfig, credentials_env, serve_erp
from simulators.erp_sql import seed_database

NOW = datetime(2026, 12, 4, 6, 0, tzinfo=UTC)


@pytest.fixture
def hub(lake, analyst_catalog, tmp_path):
    from orchestration.definitions import build_definitions

    url = f"sqlite:///{tmp_path / 'erp.sqlite'}"
    seed_database(url, now=NOW)
    with serve_erp(ErpConfig(now=lambda: NOW)) as server:
        env = credentials_env(server.url, server.config, url)
        client = ErpODataClient(
            base_url=env["ERP_ODATA_BASE_URL"], user=env["ERP_ODATA_USER"], password=env["ERP_ODATA_PASSWORD"]
        )
        yield build_definitions(
            {"erp": client, "erp_sql": ErpSqlReader(url=url), "lake": lake, "catalog": analyst_catalog}
        )


def test_the_jobs_run_through_the_hub_definitions(hub, instance, lake):
    reference = hub.resolve_job_def("erp_reference_job").execute_in_process(instance=instance)
    assert reference.success
    assert {e.asset_key.to_user_string() for e in reference.get_asset_materialization_events()} == {
        "erp/plants",
        "erp/routes",
    }
    tags = {"dagster/asset_partition_range_start": "2026-12-02", "dagster/asset_partition_range_end": "2026-12-03"}
    daily = hub.resolve_job_def("erp_daily_job").execute_in_process(instance=instance, tags=tags)
    assert daily.success
    landed = {(e.asset_key.path[-1], e.partition) for e in daily.get_asset_materialization_events()}
    assert ("inventory", "2026-12-02") in landed and ("production_capacity", "2026-12-03") in landed
    assert all(e.passed for e in daily.get_asset_check_evaluations())


def test_the_morning_schedule_reads_yesterday_and_today_in_one_run(hub):
    schedule = hub.resolve_schedule_def("erp_daily")
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 12, 4, 5, 30, tzinfo=UTC))
    (request,) = schedule.evaluate_tick(context).run_requests
    assert request.tags["dagster/asset_partition_range_start"] == "2026-12-03"
    assert request.tags["dagster/asset_partition_range_end"] == "2026-12-04"


def test_credentials_are_bound_by_name_when_set(monkeypatch):
    import orchestration.erp as wiring

    monkeypatch.setenv("ERP_ODATA_TOKEN", "token-value-never-in-definitions")
    monkeypatch.delenv("ERP_ODATA_USER", raising=False)
    monkeypatch.delenv("ERP_ODATA_PASSWORD", raising=False)
    try:
        reloaded = importlib.reload(wiring)
        client = reloaded.defs.resources["erp"]
        assert isinstance(client.token, dg.EnvVar) and client.token.env_var_name == "ERP_ODATA_TOKEN"
        assert client.user == "" and client.password == ""
        assert "token-value-never-in-definitions" not in repr(client)
    finally:
        monkeypatch.undo()
        importlib.reload(wiring)
