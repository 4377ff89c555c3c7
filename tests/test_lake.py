from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from contracts.dmama import FLOW_READINGS
from resources.lake import partition_starts

T0 = datetime(2026, 3, 1, tzinfo=UTC)


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
    written = lake.replace_partitions(
        FLOW_READINGS, readings(3), partition_starts(T0, T0 + timedelta(hours=3), "hour"), "hour"
    )
    names = [Path(p).relative_to(lake.table_dir(FLOW_READINGS)).as_posix() for p in written.paths]
    assert names == [
        "date=2026-03-01/part-0000.parquet",
        "date=2026-03-01/part-0100.parquet",
        "date=2026-03-01/part-0200.parquet",
    ]
    assert written.rows == 24
    assert lake.read(FLOW_READINGS).height == 24
    assert lake.read(FLOW_READINGS, T0 + timedelta(hours=1), T0 + timedelta(hours=2)).height == 8


def test_rewriting_a_partition_replaces_it_with_identical_bytes(lake):
    starts = partition_starts(T0, T0 + timedelta(hours=2), "hour")
    first = lake.replace_partitions(FLOW_READINGS, readings(2), starts, "hour")
    before = [Path(p).read_bytes() for p in first.paths]
    # Same rows in another order: the files must not change by a byte.
    again = lake.replace_partitions(FLOW_READINGS, readings(2).reverse(), starts, "hour")
    assert [Path(p).read_bytes() for p in again.paths] == before
    assert lake.read(FLOW_READINGS).height == 16


def test_an_hour_with_no_rows_becomes_an_empty_file_replacing_old_rows(lake):
    starts = partition_starts(T0, T0 + timedelta(hours=2), "hour")
    lake.replace_partitions(FLOW_READINGS, readings(2), starts, "hour")
    lake.replace_partitions(FLOW_READINGS, readings(1), starts, "hour")
    assert lake.read(FLOW_READINGS).height == 8
    assert len(lake.files(FLOW_READINGS)) == 2


def test_rows_outside_the_partitions_written_are_refused(lake):
    with pytest.raises(ValueError, match="outside the partitions"):
        lake.replace_partitions(FLOW_READINGS, readings(2), [T0], "hour")
    assert lake.files(FLOW_READINGS) == []


def test_a_failed_write_leaves_neither_temporary_nor_partial_files(lake, monkeypatch):
    starts = [T0]
    lake.replace_partitions(FLOW_READINGS, readings(1), starts, "hour")
    original = Path(lake.files(FLOW_READINGS)[0]).read_bytes()

    def explode(self, *args, **kwargs):
        Path(args[0]).write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pl.DataFrame, "write_parquet", explode)
    with pytest.raises(OSError, match="disk full"):
        lake.replace_partitions(FLOW_READINGS, readings(1).head(3), starts, "hour")
    directory = lake.table_dir(FLOW_READINGS) / "date=2026-03-01"
    assert [p.name for p in directory.iterdir()] == ["part-0000.parquet"]
    assert (directory / "part-0000.parquet").read_bytes() == original


def test_reading_a_table_never_written_gives_an_empty_typed_frame(lake):
    frame = lake.read(FLOW_READINGS)
    assert frame.height == 0
    assert frame.schema == FLOW_READINGS.schema
