import os
from datetime import UTC, datetime, timedelta

import duckdb
import polars as pl

from assets.catalog import catalog_tables, derived_views
from contracts.dmama import DMAS, FLOW_READINGS, METER_READINGS
from resources.lake import partition_starts

T0 = datetime(2026, 3, 1, 17, tzinfo=UTC)  # 00:00 local on 2 March: the night window is 19:00–21:00 UTC


def night_readings(flow: float) -> pl.DataFrame:
    stamps = [T0 + timedelta(minutes=15 * i) for i in range(16)]
    return pl.DataFrame(
        {
            "dma_id": ["DMA-0001"] * 16,
            "timestamp": stamps,
            "flow_m3h": [flow + i for i in range(16)],
            "pressure_bar": [2.0] * 16,
        }
    )


def publish(lake, analyst_catalog):
    from orchestration.definitions import SOURCES

    return analyst_catalog.publish(
        lake, catalog_tables([a for source in SOURCES for a in source.assets]), derived_views("Asia/Bangkok")
    )


def test_every_view_and_column_is_commented_and_empty_tables_still_answer(lake, analyst_catalog):
    lake.replace_partitions(
        FLOW_READINGS, night_readings(50.0), partition_starts(T0, T0 + timedelta(hours=4), "hour"), "hour"
    )
    published = publish(lake, analyst_catalog)
    assert f"{METER_READINGS.layer}.{METER_READINGS.name}" in published.empty_tables
    with duckdb.connect(published.path, read_only=True) as con:
        views = con.execute("SELECT schema_name, view_name, comment FROM duckdb_views() WHERE NOT internal").fetchall()
        assert {(s, v) for s, v, _ in views} >= {
            ("raw", "dmama_flow_readings"),
            ("rejects", "dmama_flow_readings"),
            ("marts", "dma_night_flow"),
        }
        assert all(comment for _, _, comment in views)
        uncommented = con.execute(
            "SELECT schema_name, table_name, column_name FROM duckdb_columns() "
            "WHERE NOT internal AND (comment IS NULL OR comment = '')"
        ).fetchall()
        assert uncommented == []
        assert con.execute("SELECT count(*) FROM raw.dmama_meter_readings").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM raw.dmama_flow_readings").fetchone() == (16,)


def test_night_flow_reads_02_to_04_local_time(lake, analyst_catalog):
    lake.replace_partitions(
        FLOW_READINGS, night_readings(50.0), partition_starts(T0, T0 + timedelta(hours=4), "hour"), "hour"
    )
    lake.replace_snapshot(
        DMAS,
        pl.DataFrame({"dma_id": ["DMA-0001"], "connections": [1000]}).with_columns(
            [pl.lit(None).cast(c.dtype).alias(c.name) for c in DMAS.columns if c.name not in ("dma_id", "connections")]
        ),
    )
    published = publish(lake, analyst_catalog)
    with duckdb.connect(published.path, read_only=True) as con:
        row = con.execute(
            "SELECT night_of, min_night_flow_m3h, min_night_flow_l_per_connection_h, readings FROM marts.dma_night_flow"
        ).fetchall()
    # 02:00 local = 19:00 UTC = the 9th reading (index 8) after 17:00 UTC.
    assert row == [(datetime(2026, 3, 2).date(), 58.0, 58.0, 8)]


def test_views_work_from_any_directory_and_across_added_columns(lake, analyst_catalog, tmp_path):
    old = night_readings(10.0).drop("pressure_bar").head(4)  # written before pressure was collected
    path = lake.partition_path(FLOW_READINGS, T0, "hour")
    path.parent.mkdir(parents=True)
    old.write_parquet(path)
    lake.replace_partitions(FLOW_READINGS, night_readings(50.0).slice(4, 4), [T0 + timedelta(hours=1)], "hour")
    published = publish(lake, analyst_catalog)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    cwd = os.getcwd()
    os.chdir(elsewhere)
    try:
        with duckdb.connect(published.path, read_only=True) as con:
            rows = con.execute("SELECT count(*), count(pressure_bar) FROM raw.dmama_flow_readings").fetchone()
    finally:
        os.chdir(cwd)
    assert rows == (8, 4)


def test_an_open_reader_keeps_answering_while_the_catalog_is_republished(lake, analyst_catalog):
    starts = partition_starts(T0, T0 + timedelta(hours=4), "hour")
    lake.replace_partitions(FLOW_READINGS, night_readings(50.0), starts, "hour")
    first = publish(lake, analyst_catalog)
    reader = duckdb.connect(first.path, read_only=True)
    try:
        lake.replace_partitions(FLOW_READINGS, night_readings(50.0).head(4), starts, "hour")
        publish(lake, analyst_catalog)
        # The open connection still reads its own (old) catalog file; the lake beneath it changed.
        assert reader.execute("SELECT count(*) FROM raw.dmama_flow_readings").fetchone() == (4,)
    finally:
        reader.close()
    assert sorted(p.name for p in (lake.table_dir(FLOW_READINGS).parents[2] / "catalog").iterdir()) == ["ihub.duckdb"]
