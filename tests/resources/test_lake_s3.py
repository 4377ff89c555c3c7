"""The same lake on the local disk and in an S3-compatible bucket (moto's server on loopback)."""

from __future__ import annotations

import os
import socket
import uuid
from datetime import UTC, datetime, timedelta

import dagster as dg
import polars as pl
import pytest

from contracts.dmama import FLOW_READINGS, METER_READINGS
from contracts.scada import SCADA_POINTS
from quality.qartod import flag_points
from quality.timeseries import load_limits
from resources.catalog import open_catalog
from resources.lake import Lake, time_windows
from tests.resources.test_catalog import night_readings, publish

T0 = datetime(2026, 3, 1, 17, tzinfo=UTC)
HOURLY = dg.HourlyPartitionsDefinition(start_date="2026-01-01-00:00")
SECRET = "s3cr3t-never-shown"


@pytest.fixture(scope="module")
def s3_server():
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3_lake(s3_server, monkeypatch) -> Lake:
    import boto3

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "hub")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    bucket = f"lake-{uuid.uuid4().hex[:12]}"
    boto3.client("s3").create_bucket(Bucket=bucket)
    return Lake(root=f"s3://{bucket}/hub/lake")


@pytest.fixture(params=["local", "s3"])
def any_lake(request, lake) -> Lake:
    return lake if request.param == "local" else request.getfixturevalue("s3_lake")


def put_requests(lake: Lake) -> list[str]:
    """Every S3 operation the lake's client sends from now on."""
    operations: list[str] = []
    lake.storage.filesystem().s3.meta.events.register(
        "before-call.s3", lambda model, **_: operations.append(model.name)
    )
    return operations


def test_partitions_replace_read_and_rewrite_identically_on_both(any_lake):
    windows = time_windows(HOURLY, T0, T0 + timedelta(hours=4))
    written = any_lake.replace_partitions(FLOW_READINGS, night_readings(50.0), windows)
    assert [p.rsplit("/", 2)[-2:] for p in written.paths] == [
        ["date=2026-03-01", "part-1700-PT1H.parquet"],
        ["date=2026-03-01", "part-1800-PT1H.parquet"],
        ["date=2026-03-01", "part-1900-PT1H.parquet"],
        ["date=2026-03-01", "part-2000-PT1H.parquet"],
    ]
    assert any_lake.files(FLOW_READINGS) == list(written.paths)
    before = [any_lake.storage.read(any_lake.partition_key(FLOW_READINGS, w)) for w in windows]
    again = any_lake.replace_partitions(FLOW_READINGS, night_readings(50.0).reverse(), windows)
    assert [any_lake.storage.read(any_lake.partition_key(FLOW_READINGS, w)) for w in windows] == before
    assert again.paths == written.paths
    assert any_lake.read(FLOW_READINGS).height == 16
    assert any_lake.read(FLOW_READINGS, T0 + timedelta(hours=1), T0 + timedelta(hours=2)).height == 4
    # An hour with no rows becomes an empty file, replacing what was there.
    any_lake.replace_partitions(FLOW_READINGS, night_readings(50.0).head(4), windows)
    assert any_lake.read(FLOW_READINGS).height == 4
    assert len(any_lake.files(FLOW_READINGS)) == 4
    with pytest.raises(ValueError, match="outside the partitions"):
        any_lake.replace_partitions(FLOW_READINGS, night_readings(50.0), windows[:1])
    assert any_lake.read(FLOW_READINGS).height == 4


def test_processing_windows_on_both(any_lake):
    frame = pl.DataFrame(
        {
            "source": ["mqtt"],
            "device": ["broker"],
            "unit_id": ["PS-1"],
            "sensor_type": ["flow"],
            "value": [12.5],
            "unit": ["m³/h"],
            "quality": ["GOOD"],
            "source_ts": [T0],
            "received_ts": [T0 + timedelta(seconds=2)],
        },
        schema={name: dtype for name, dtype in SCADA_POINTS.schema.items() if not name.startswith("qc_")},
    )
    frame = SCADA_POINTS.conform(flag_points(frame, load_limits()))
    any_lake.replace_window(SCADA_POINTS, T0, frame)
    assert any_lake.read_windows(SCADA_POINTS, [T0, T0 + timedelta(minutes=5)]).rows() == frame.rows()
    assert any_lake.files(SCADA_POINTS) == [any_lake.window_location(SCADA_POINTS, T0)]
    assert any_lake.window_location(SCADA_POINTS, T0).endswith("/raw/scada_points/date=2026-03-01/part-1700.parquet")


def test_a_partition_is_one_put_and_locations_carry_no_secret(s3_lake):
    s3_lake.replace_partitions(
        FLOW_READINGS, night_readings(50.0).head(4), time_windows(HOURLY, T0, T0 + timedelta(hours=1))
    )
    operations = put_requests(s3_lake)
    windows = time_windows(HOURLY, T0, T0 + timedelta(hours=3))
    written = s3_lake.replace_partitions(FLOW_READINGS, night_readings(50.0).head(12), windows)
    writes = [op for op in operations if op in {"PutObject", "CreateMultipartUpload", "UploadPart", "CopyObject"}]
    assert writes == ["PutObject"] * 3
    assert all(p.startswith(s3_lake.root + "/raw/dmama_flow_readings/") for p in written.paths)
    assert not any(SECRET in p for p in (*written.paths, s3_lake.root, repr(s3_lake)))
    with pytest.raises(ValueError, match=r"not on a local disk; use Lake\.location"):
        s3_lake.partition_path(FLOW_READINGS, windows[0])


def test_the_catalog_reads_a_lake_in_a_bucket(s3_lake, analyst_catalog, tmp_path):
    s3_lake.replace_partitions(FLOW_READINGS, night_readings(50.0), time_windows(HOURLY, T0, T0 + timedelta(hours=4)))
    published = publish(s3_lake, analyst_catalog)
    assert f"{METER_READINGS.layer}.{METER_READINGS.name}" in published.empty_tables
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cwd = os.getcwd()
    os.chdir(elsewhere)
    try:
        with open_catalog(published.path, s3_lake) as con:
            assert con.execute("SELECT count(*) FROM raw.dmama_flow_readings").fetchone() == (16,)
            assert con.execute("SELECT count(*) FROM raw.dmama_meter_readings").fetchone() == (0,)
            night = con.execute("SELECT min_night_flow_m3h, readings FROM marts.dma_night_flow").fetchall()
            sql = con.execute("SELECT sql FROM duckdb_views() WHERE view_name = 'dmama_flow_readings'").fetchall()
    finally:
        os.chdir(cwd)
    assert night == [(58.0, 8)]
    assert all(f"'{s3_lake.root}/raw/dmama_flow_readings/**/*.parquet'" in s for (s,) in sql[:1])
    assert not any(SECRET in s for (s,) in sql)


def test_a_lake_root_is_a_path_a_file_url_or_a_bucket(tmp_path):
    by_url = Lake(root=f"file://{tmp_path}/lake")
    windows = time_windows(HOURLY, T0, T0 + timedelta(hours=1))
    written = by_url.replace_partitions(FLOW_READINGS, night_readings(50.0).head(4), windows)
    assert written.paths == (str(tmp_path / "lake/raw/dmama_flow_readings/date=2026-03-01/part-1700-PT1H.parquet"),)
    assert Lake(root=str(tmp_path / "lake")).read(FLOW_READINGS).height == 4
    with pytest.raises(ValueError, match="unsupported storage scheme 'gs'"):
        Lake(root="gs://bucket/lake").files(FLOW_READINGS)
