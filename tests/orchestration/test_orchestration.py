"""The Definitions, schedules, instance storage and the command line, as a user meets them."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from ihub.environment import REPO_ROOT, InstanceConfigError, instance_config, write_instance_config
from tests.conftest import require_service


def test_definitions_load_without_heavy_libraries():
    code = (
        "import sys, orchestration.definitions as d; "
        "heavy = ('great_expectations', 'duckdb', 'pandas', 'pyarrow', 'simulators.dmama'); "
        "heavy = [m for m in heavy if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO_ROOT)
    assert out.stdout.strip() == ""


def test_every_asset_is_documented_owned_and_typed():
    from orchestration.definitions import defs

    graph = defs.resolve_asset_graph()
    for key in graph.get_all_asset_keys():
        spec = graph.get(key)
        assert spec.description, f"{key.to_user_string()} has no description"
        assert spec.owners, f"{key.to_user_string()} has no owner"
        assert spec.kinds, f"{key.to_user_string()} has no kinds"
    checks = {k.name for k in graph.asset_check_keys}
    assert {"keys_present", "unique_dma_id_timestamp", "values_in_physical_range", "known_dmas"} <= checks


def test_partitions_stay_under_100000_over_ten_years():
    from assets.partitions import daily, hourly

    ten_years_on = datetime(2036, 1, 1, tzinfo=UTC)
    assert len(hourly.get_partition_keys(current_time=ten_years_on)) < 100_000
    assert len(daily.get_partition_keys(current_time=ten_years_on)) < 100_000


@pytest.mark.parametrize(
    ("tick", "expected"),
    [
        (datetime(2026, 3, 2, 10, 30, tzinfo=UTC), ["2026-03-02-10:00"]),
        (datetime(2026, 3, 2, 11, 0, tzinfo=UTC), ["2026-03-02-10:00", "2026-03-02-11:00"]),
    ],
)
def test_the_15_minute_schedule_refreshes_the_open_hour(tick, expected):
    from orchestration.definitions import defs

    schedule = defs.resolve_schedule_def("dmama_readings_every_15_minutes")
    context = dg.build_schedule_context(scheduled_execution_time=tick, repository_def=defs.get_repository_def())
    requests = list(schedule.evaluate_tick(context).run_requests)
    assert [r.partition_key for r in requests] == expected
    assert len({r.run_key for r in requests}) == len(requests)


@pytest.mark.service
def test_a_materialization_on_the_postgres_backed_instance(dmama_env, tmp_path):
    require_service("PostgreSQL", 5432)
    import psycopg2

    database = f"ihub_test_{uuid.uuid4().hex[:8]}"
    admin = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="test")
    admin.autocommit = True
    admin.cursor().execute(f'CREATE DATABASE "{database}"')
    home = tmp_path / "dagster_home"
    home.mkdir()
    try:
        env = {
            "DAGSTER_HOME": str(home),
            "DAGSTER_PG_URL": None,
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_USERNAME": "postgres",
            "DAGSTER_PG_DB": database,
        }
        with _environ(env):
            config = write_instance_config(home).read_text()
            # Dagster's documented postgres block, with environment references rather than values.
            assert "postgres_db:" in config and "env: DAGSTER_PG_HOST" in config and database not in config
        with _environ(env), dg.DagsterInstance.from_config(str(home)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
            from orchestration.definitions import build_definitions

            result = build_definitions().resolve_job_def("dmama_catalogue_job").execute_in_process(instance=instance)
            assert result.success
            run_id = result.run_id
        with psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname=database) as con:
            cur = con.cursor()
            cur.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,))
            assert cur.fetchone() == ("SUCCESS",)
            cur.execute(
                "SELECT count(*) FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
                (run_id,),
            )
            assert cur.fetchone() == (2,)
    finally:
        admin.cursor().execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.close()


def test_without_postgres_settings_the_instance_is_sqlite_under_dagster_home(tmp_path):
    home = tmp_path / "dagster_home"
    home.mkdir()
    unset = {"DAGSTER_HOME": str(home), "DAGSTER_PG_URL": None, "DAGSTER_PG_HOST": None}
    with _environ(unset):
        write_instance_config(home)
    with _environ(unset), dg.DagsterInstance.from_config(str(home)) as instance:
        assert type(instance.run_storage).__name__ == "SqliteRunStorage"
        assert instance.run_coordinator.__class__.__name__ == "QueuedRunCoordinator"
        # Dead or stuck runs are marked failed by the daemon; every source pool allows two steps.
        assert instance.run_monitoring_enabled
        assert instance.get_concurrency_config().pool_config.default_pool_limit == 2
    assert (home / "history").exists() or (home / "storage").exists()


def test_a_postgres_url_without_the_driver_is_refused_with_the_fix():
    with pytest.raises(InstanceConfigError, match=r"postgresql\+psycopg2://"):
        instance_config({"DAGSTER_PG_URL": "postgresql://ops:s3cret@db:5432/dagster"})
    url_form = instance_config({"DAGSTER_PG_URL": "postgresql+psycopg2://ops:s3cret@db:5432/dagster"})
    assert url_form["storage"] == {"postgres": {"postgres_url": {"env": "DAGSTER_PG_URL"}}}
    assert "s3cret" not in str(url_form)


@pytest.mark.slow
def test_two_partitions_materialized_concurrently_from_the_cli(dmama_env, data_dir):
    home = data_dir / "dagster"
    home.mkdir(parents=True)
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    env.pop("DAGSTER_PG_URL", None)
    env.pop("DAGSTER_PG_HOST", None)
    write_instance_config(home, env)
    dagster = str(Path(sys.executable).with_name("dagster"))
    catalogue = subprocess.run(
        [
            dagster,
            "asset",
            "materialize",
            "-m",
            "orchestration.definitions",
            "--select",
            "dmama/dmas,dmama/meters",
        ],
        env=env,
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
    )
    assert catalogue.returncode == 0, catalogue.stderr[-2000:]
    runs = [
        subprocess.Popen(
            [
                dagster,
                "asset",
                "materialize",
                "-m",
                "orchestration.definitions",
                "--select",
                "dmama/flow_readings",
                "--partition",
                key,
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=REPO_ROOT,
        )
        for key in ("2026-03-02-19:00", "2026-03-02-20:00")
    ]
    for run in runs:
        _, err = run.communicate(timeout=300)
        assert run.returncode == 0, err[-2000:]
    files = sorted(p.name for p in (data_dir / "lake" / "raw" / "dmama_flow_readings" / "date=2026-03-02").iterdir())
    assert files == ["part-1900-PT1H.parquet", "part-2000-PT1H.parquet"]
    with _environ({"DAGSTER_HOME": str(home)}), dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.fetch_materializations(dg.AssetKey(["dmama", "flow_readings"]), limit=10).records
        assert sorted(r.partition_key for r in records) == ["2026-03-02-19:00", "2026-03-02-20:00"]


@pytest.mark.slow
def test_the_catalog_answers_read_only_while_a_backfill_writes(dmama_env, data_dir):
    from ihub.environment import prepare_dagster_home

    prepare_dagster_home(data_dir)
    from orchestration.definitions import build_definitions

    defs = build_definitions()
    with dg.instance_for_test() as instance:
        assert defs.resolve_job_def("dmama_catalogue_job").execute_in_process(instance=instance).success
        assert (
            defs.resolve_job_def("dmama_readings_job")
            .execute_in_process(instance=instance, partition_key="2026-03-01-00:00")
            .success
        )
        assert defs.resolve_job_def("analyst_catalog_job").execute_in_process(instance=instance).success
        catalog_file = data_dir / "catalog" / "ihub.duckdb"
        outcome: dict = {}

        def backfill():
            outcome["result"] = defs.resolve_job_def("dmama_readings_job").execute_in_process(
                instance=instance,
                tags={
                    "dagster/asset_partition_range_start": "2026-03-01-01:00",
                    "dagster/asset_partition_range_end": "2026-03-03-00:00",
                },
                run_config={"ops": {"dmama__flow_readings": {"config": {"chunk_hours": 6}}}},
            )

        writer = threading.Thread(target=backfill)
        writer.start()
        counts = []
        while writer.is_alive():
            with duckdb.connect(str(catalog_file), read_only=True) as con:
                counts.append(con.execute("SELECT count(*) FROM raw.dmama_flow_readings").fetchone()[0])
            time.sleep(0.05)
        writer.join()
        assert outcome["result"].success
        with duckdb.connect(str(catalog_file), read_only=True) as con:
            final = con.execute("SELECT count(*) FROM raw.dmama_flow_readings").fetchone()[0]
    assert len(counts) >= 3
    assert counts == sorted(counts)  # readers only ever see whole partitions arrive
    assert final == 5 * 4 * 49  # 00:00 first, then 01:00 on 1 March through 00:00 on 3 March


@pytest.mark.slow
def test_ihub_demo_runs_end_to_end(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAGSTER_", "DMAMA_", "IHUB_"))}
    env["IHUB_DATA_DIR"] = str(tmp_path / "data")
    out = subprocess.run(
        [str(Path(sys.executable).with_name("ihub")), "demo", "--hours", "3", "--live-minutes", "1.2"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # The catalog is the last step, after every source's jobs; each source gets its summary line.
    assert re.search(r"\[(\d+)/\1\] analyst catalog", out.stdout), out.stdout[-3000:]
    # Rejects are expected where a simulator sends bad data on purpose (met sentinels, a collapsed polygon).
    for source in ("dmama", "billing", "gis", "markets", "weather", "erp", "fleet"):
        line = next(line for line in out.stdout.splitlines() if re.match(rf"\s+{source}\s+\d+ assets", line))
        written = re.search(r"([\d,]+) rows written\s+[\d,]+ rejected\s+checks (\d+)/(\d+) passed", line)
        assert written and int(written[1].replace(",", "")) > 0 and written[2] == written[3], line
    assert " 0 failed" in out.stdout
    catalog_file = tmp_path / "data" / "catalog" / "ihub.duckdb"
    assert str(catalog_file) in out.stdout
    with duckdb.connect(str(catalog_file), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw.dmama_dmas").fetchall() == [(5,)]
        assert con.execute("SELECT count(*) FROM raw.dmama_flow_readings").fetchall()[0][0] > 0
    # The live half: simulators → collector → spool → sensor → window runs through the Dagster daemon.
    assert "Live SCADA summary" in out.stdout
    processed = next(line for line in out.stdout.splitlines() if "windows processed:" in line)
    assert not processed.strip().startswith("windows processed: 0 ")
    sources = next(line for line in out.stdout.splitlines() if "points in the lake:" in line)
    assert all(protocol in sources for protocol in ("modbus", "mqtt", "opcua"))


def test_ihub_help_says_what_each_command_does():
    ihub = str(Path(sys.executable).with_name("ihub"))
    for command in ("simulate", "collect", "browse", "demo", "query"):
        out = subprocess.run([ihub, command, "--help"], capture_output=True, text=True, check=True)
        assert "usage: ihub" in out.stdout and len(out.stdout.splitlines()) > 4


class _environ:
    """Set (or with None, remove) environment variables for a block."""

    def __init__(self, values: dict[str, str | None]) -> None:
        self.values = values
        self.saved: dict[str, str | None] = {}

    def __enter__(self):
        for key, value in self.values.items():
            self.saved[key] = os.environ.get(key)
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def __exit__(self, *exc):
        for key, value in self.saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
