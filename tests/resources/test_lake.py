import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from contracts.dmama import FLOW_READINGS
from resources.lake import time_windows

T0 = datetime(2026, 3, 1, tzinfo=UTC)
HOURLY = dg.HourlyPartitionsDefinition(start_date="2026-01-01-00:00")


def hours(start: datetime, count: int) -> list[dg.TimeWindow]:
    return time_windows(HOURLY, start, start + timedelta(hours=count))


def readings(hours: int, dmas: tuple[str, ...] = ("DMA-0001", "DMA-0002")) -> pl.DataFrame:
    stamps = [T0 + timedelta(minutes=15 * i) for i in range(hours * 4)]
    return pl.DataFrame(
        {
            "dma_id": [d for d in dmas for _ in stamps],
            "timestamp": stamps * len(dmas),
            "flow_m3h": [float(i) for i in range(len(stamps) * len(dmas))],
            "pressure_bar": [2.5] * (len(stamps) * len(dmas)),
        }
    )


def test_writes_one_file_per_hour_under_its_date(lake):
    written = lake.replace_partitions(FLOW_READINGS, readings(3), hours(T0, 3))
    names = [Path(p).relative_to(lake.table_dir(FLOW_READINGS)).as_posix() for p in written.paths]
    assert names == [
        "date=2026-03-01/part-0000-PT1H.parquet",
        "date=2026-03-01/part-0100-PT1H.parquet",
        "date=2026-03-01/part-0200-PT1H.parquet",
    ]
    assert written.rows == 24
    assert lake.read(FLOW_READINGS).height == 24
    assert lake.read(FLOW_READINGS, T0 + timedelta(hours=1), T0 + timedelta(hours=2)).height == 8


def test_rewriting_a_partition_replaces_it_with_identical_bytes(lake):
    starts = hours(T0, 2)
    first = lake.replace_partitions(FLOW_READINGS, readings(2), starts)
    before = [Path(p).read_bytes() for p in first.paths]
    # Same rows in another order: the files must not change by a byte.
    again = lake.replace_partitions(FLOW_READINGS, readings(2).reverse(), starts)
    assert [Path(p).read_bytes() for p in again.paths] == before
    assert lake.read(FLOW_READINGS).height == 16


def test_an_hour_with_no_rows_becomes_an_empty_file_replacing_old_rows(lake):
    starts = hours(T0, 2)
    lake.replace_partitions(FLOW_READINGS, readings(2), starts)
    lake.replace_partitions(FLOW_READINGS, readings(1), starts)
    assert lake.read(FLOW_READINGS).height == 8
    assert len(lake.files(FLOW_READINGS)) == 2


def test_rows_outside_the_partitions_written_are_refused(lake):
    with pytest.raises(ValueError, match="outside the partitions"):
        lake.replace_partitions(FLOW_READINGS, readings(2), hours(T0, 1))
    assert lake.files(FLOW_READINGS) == []


def test_a_failed_write_leaves_neither_temporary_nor_partial_files(lake, monkeypatch):
    starts = hours(T0, 1)
    lake.replace_partitions(FLOW_READINGS, readings(1), starts)
    original = Path(lake.files(FLOW_READINGS)[0]).read_bytes()
    real_fsync = os.fsync

    def explode(fd):
        # The temporary file holds half a partition when the disk fills before it is durable.
        if os.fstat(fd).st_size:
            raise OSError("disk full")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", explode)
    with pytest.raises(OSError, match="disk full"):
        lake.replace_partitions(FLOW_READINGS, readings(1).head(3), starts)
    directory = lake.table_dir(FLOW_READINGS) / "date=2026-03-01"
    assert [p.name for p in directory.iterdir()] == ["part-0000-PT1H.parquet"]
    assert (directory / "part-0000-PT1H.parquet").read_bytes() == original


def test_reading_a_table_never_written_gives_an_empty_typed_frame(lake):
    frame = lake.read(FLOW_READINGS)
    assert frame.height == 0
    assert frame.schema == FLOW_READINGS.schema
