"""Temporary files of writers that died (kill -9 mid-write) are removed by the next writer in that place."""

import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb

from contracts.dmama import FLOW_READINGS
from resources.lake import time_windows
from resources.storage import DEBRIS_AGE_S, temporary_name, writer_identity
from tests.resources.test_catalog import night_readings, publish

T0 = datetime(2026, 3, 1, 17, tzinfo=UTC)
HOURLY = dg.HourlyPartitionsDefinition(start_date="2026-01-01-00:00")


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def leftover(directory: Path, final: str, pid: int, kind: str = "tmp", host: str | None = None) -> Path:
    host = host or writer_identity()[0]
    name = temporary_name(final, kind).replace(f"~{writer_identity()[0]}~{os.getpid()}~", f"~{host}~{pid}~")
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"half a partition")
    return path


def test_a_write_removes_dead_writers_temporary_files_and_keeps_live_ones(lake):
    windows = time_windows(HOURLY, T0, T0 + timedelta(hours=1))
    folder = lake.partition_path(FLOW_READINGS, windows[0]).parent
    dead = leftover(folder, "part-1700-PT1H.parquet", dead_pid())
    alive = leftover(folder, "part-1700-PT1H.parquet", os.getppid())  # a live writer, e.g. another run
    elsewhere = leftover(folder, "part-1700-PT1H.parquet", dead_pid(), host="other-host")
    ancient = leftover(folder, "part-1800-PT1H.parquet", 1, host="other-host")
    old = time.time() - DEBRIS_AGE_S - 60
    os.utime(ancient, (old, old))

    lake.replace_partitions(FLOW_READINGS, night_readings(50.0).head(4), windows)

    names = sorted(p.name for p in folder.iterdir())
    assert not dead.exists() and not ancient.exists()
    # Another host's pid says nothing here, so only age removes its files; a live pid is never touched.
    assert names == sorted(["part-1700-PT1H.parquet", alive.name, elsewhere.name])
    assert lake.read(FLOW_READINGS).height == 4


def test_temporary_names_say_who_writes_and_are_never_read(lake):
    host, pid = writer_identity()
    name = temporary_name("part-0000-PT1H.parquet")
    assert name.startswith(f".part-0000-PT1H.parquet~{host}~{pid}~") and name.endswith(".tmp")
    windows = time_windows(HOURLY, T0, T0 + timedelta(hours=1))
    lake.replace_partitions(FLOW_READINGS, night_readings(50.0).head(4), windows)
    leftover(lake.partition_path(FLOW_READINGS, windows[0]).parent, "part-1700-PT1H.parquet", os.getppid())
    assert len(lake.files(FLOW_READINGS)) == 1
    assert lake.read(FLOW_READINGS, T0, T0 + timedelta(hours=1)).height == 4


def test_publishing_removes_half_built_catalogs_of_dead_publishers(lake, analyst_catalog):
    lake.replace_partitions(FLOW_READINGS, night_readings(50.0), time_windows(HOURLY, T0, T0 + timedelta(hours=4)))
    folder = Path(analyst_catalog.path).parent
    pid = dead_pid()
    building = leftover(folder, "ihub.duckdb", pid, "building")
    wal = Path(f"{building}.wal")
    wal.write_bytes(b"log")
    live = leftover(folder, "ihub.duckdb", os.getppid(), "building")
    publish(lake, analyst_catalog)
    assert sorted(p.name for p in folder.iterdir()) == sorted(["ihub.duckdb", live.name])
    with duckdb.connect(analyst_catalog.path, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM raw.dmama_flow_readings").fetchone() == (16,)
