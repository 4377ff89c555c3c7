"""``ihub demo``: the DMAMA pipeline end to end on embedded defaults, with progress and a summary."""

from __future__ import annotations

import os
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

EXAMPLE_QUERY = """
SELECT dma_id, night_of, round(min_night_flow_m3h, 1) AS min_night_flow_m3h,
       round(min_night_flow_l_per_connection_h, 2) AS l_per_connection_h
FROM marts.dma_night_flow
ORDER BY min_night_flow_l_per_connection_h DESC
LIMIT 5
""".strip()


# The demo prints its own progress; Dagster's step-by-step log stays in the instance (and the UI).
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def run_demo(hours: int = 24, dmas: int = 5, meters_per_dma: int = 10, live_minutes: float = 0) -> int:
    from ihub.environment import prepare_dagster_home

    home = prepare_dagster_home()
    _say(f"Dagster instance: {home} (SQLite unless DAGSTER_PG_* is set)")
    from simulators.dmama import DmamaConfig, serve_dmama

    config = DmamaConfig(dmas=dmas, meters_per_dma=meters_per_dma)
    with serve_dmama(config) as simulator:
        _say(f"DMAMA simulator on {simulator.url} ({dmas} DMAs, {dmas * meters_per_dma} meters)")
        os.environ.update(
            {
                "DMAMA_BASE_URL": simulator.url,
                "DMAMA_API_KEY": config.api_key,
                "DMAMA_CLIENT_ID": config.client_id,
                "DMAMA_CLIENT_SECRET": config.client_secret,
            }
        )
        outcome = _run_pipeline(hours)
    if outcome == 0 and live_minutes > 0:
        from ihub.live_demo import run_live
        from orchestration.settings import data_dir

        _say("")
        _say("Live SCADA path")
        outcome = run_live(live_minutes, data_dir(), _say)
    return outcome


def _run_pipeline(hours: int) -> int:
    import dagster as dg

    from assets.partitions import daily, hourly
    from orchestration.definitions import defs

    instance = dg.DagsterInstance.get()
    now = datetime.now(UTC)
    last_hour = hourly.get_partition_key_for_timestamp(now.timestamp())
    hour_keys = hourly.get_partition_keys(current_time=now)[-hours:]
    first_day = daily.get_partition_key_for_timestamp((now - timedelta(hours=hours)).timestamp())
    last_day = daily.get_partition_key_for_timestamp(now.timestamp())
    steps = [
        ("DMA catalogue and meter list", "dmama_catalogue_job", None),
        (
            f"DMA readings, {hour_keys[0]} … {last_hour} UTC ({len(hour_keys)} hourly partitions)",
            "dmama_readings_job",
            (hour_keys[0], last_hour),
        ),
        (f"meter readings, {first_day} … {last_day} UTC", "dmama_meter_readings_job", (first_day, last_day)),
        ("analyst catalog", "analyst_catalog_job", None),
    ]
    checks: Counter[str] = Counter()
    failures: list[str] = []
    for number, (what, job_name, keys) in enumerate(steps, start=1):
        _say(f"[{number}/{len(steps)}] {what} …")
        started = time.monotonic()
        tags = {}
        if keys:
            tags = {
                "dagster/asset_partition_range_start": keys[0],
                "dagster/asset_partition_range_end": keys[1],
            }
        result = defs.resolve_job_def(job_name).execute_in_process(
            instance=instance, tags=tags, run_config=QUIET, raise_on_error=False
        )
        for event in result.get_asset_check_evaluations():
            outcome = "passed" if event.passed else f"failed ({event.severity.value})"
            checks[outcome] += 1
            if not event.passed:
                failures.append(f"{event.asset_key.to_user_string()}:{event.check_name} {outcome}")
        status = "done" if result.success else "FAILED"
        _say(f"      {status} in {time.monotonic() - started:.1f}s (run {result.run_id[:8]})")
        if not result.success:
            for event in result.all_events:
                if event.is_step_failure and event.step_failure_data and event.step_failure_data.error:
                    _say(f"      {event.step_key}: {event.step_failure_data.error.message.strip()}")
            return 1
    _summary(checks, failures)
    return 0 if not failures else 1


def _summary(checks: Counter[str], failures: list[str]) -> None:
    import duckdb

    from orchestration.settings import catalog_path

    path = catalog_path()
    _say("")
    _say("Summary")
    with duckdb.connect(str(path), read_only=True) as con:
        views = con.execute(
            "SELECT schema_name, view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1, 2"
        ).fetchall()
        width = max(len(f"{s}.{v}") for s, v in views)
        for schema, view in views:
            rows = con.execute(f'SELECT count(*) FROM {schema}."{view}"').fetchall()[0][0]
            _say(f"  {schema + '.' + view:<{width}}  {rows:>9,} rows")
        passed = checks.get("passed", 0)
        _say(f"  checks: {passed} passed, {sum(checks.values()) - passed} failed")
        for failure in failures:
            _say(f"    {failure}")
        _say(f"  analyst catalog: {path}")
        _say(f'    open it read-only: duckdb.connect({str(path)!r}, read_only=True)  or  ihub query "…"')
        _say("  example query (highest night flow per connection, a leak indicator):")
        for line in EXAMPLE_QUERY.splitlines():
            _say(f"    {line}")
        _say("")
        for line in str(con.sql(EXAMPLE_QUERY)).splitlines():
            _say(f"    {line}")


def _say(text: str) -> None:
    print(text, flush=True)
