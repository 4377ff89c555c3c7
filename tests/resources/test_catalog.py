import os
from datetime import UTC, datetime, timedelta

import dagster as dg
import duckdb
import polars as pl

from assets.catalog import catalog_tables, derived_views, quarantine_views
from contracts.dmama import DMAS, FLOW_READINGS, METER_READINGS
from quality.conform import conform
from resources.lake import time_windows
from resources.tables import Column, LakeTable

T0 = datetime(2026, 3, 1, 17, tzinfo=UTC)  # 00:00 local on 2 March: the night window is 19:00–21:00 UTC
HOURLY = dg.HourlyPartitionsDefinition(start_date="2026-01-01-00:00")


def hours(start: datetime, count: int) -> list[dg.TimeWindow]:
    return time_windows(HOURLY, start, start + timedelta(hours=count))


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

    tables = catalog_tables([a for source in SOURCES for a in source.assets])
    return analyst_catalog.publish(lake, tables, [*derived_views("Asia/Bangkok"), *quarantine_views(tables)])


def test_every_view_and_column_is_commented_and_empty_tables_still_answer(lake, analyst_catalog):
    lake.replace_partitions(FLOW_READINGS, night_readings(50.0), hours(T0, 4))
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
    lake.replace_partitions(FLOW_READINGS, night_readings(50.0), hours(T0, 4))
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
    path = lake.partition_path(FLOW_READINGS, hours(T0, 1)[0])
    path.parent.mkdir(parents=True)
    old.write_parquet(path)
    lake.replace_partitions(FLOW_READINGS, night_readings(50.0).slice(4, 4), hours(T0 + timedelta(hours=1), 1))
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
    starts = hours(T0, 4)
    lake.replace_partitions(FLOW_READINGS, night_readings(50.0), starts)
    first = publish(lake, analyst_catalog)
    reader = duckdb.connect(first.path, read_only=True)
    try:
        lake.replace_partitions(FLOW_READINGS, night_readings(50.0).head(4), starts)
        publish(lake, analyst_catalog)
        # The open connection still reads its own (old) catalog file; the lake beneath it changed.
        assert reader.execute("SELECT count(*) FROM raw.dmama_flow_readings").fetchone() == (4,)
    finally:
        reader.close()
    assert sorted(p.name for p in (lake.table_dir(FLOW_READINGS).parents[2] / "catalog").iterdir()) == ["ihub.duckdb"]


ASSETS = LakeTable(
    layer="raw",
    name="gis_assets",
    description="Network assets with their geometry.",
    columns=(
        Column("asset_id", pl.String(), "Asset.", nullable=False, identifier=True),
        Column("cost_thb", pl.Decimal(14, 2), "Book value, THB."),
        Column("geom", pl.Binary(), "Location.", geometry=True, crs="EPSG:32647"),
        Column("inspected_on", pl.List(pl.Date()), "Inspection days."),
        Column("valves", pl.Int32(), "Valves."),
        Column("installed_on", pl.Date(), "Installed."),
        Column("seen_at", pl.Datetime("us", "UTC"), "Last seen, UTC."),
    ),
    key=("asset_id",),
)
TYPES = {
    "asset_id": "VARCHAR",
    "cost_thb": "DECIMAL(14,2)",
    "geom": "BLOB",
    "inspected_on": "DATE[]",
    "valves": "INTEGER",
    "installed_on": "DATE",
    "seen_at": "TIMESTAMP WITH TIME ZONE",
}


def test_views_carry_the_registry_types_with_or_without_data(lake, analyst_catalog):
    empty = analyst_catalog.publish(lake, [ASSETS])
    assert empty.empty_tables == ("raw.gis_assets",)
    loaded = conform(
        [
            {
                "asset_id": "V-1",
                "cost_thb": "1234567890.25",
                "geom": "0101000000000000000000f03f0000000000000040",
                "inspected_on": ["2026-01-05"],
                "valves": 3,
                "installed_on": "2019-04-01",
                "seen_at": "2026-03-01T00:00:00+07:00",
            }
        ],
        ASSETS,
        source="gis",
        partition_key="snapshot",
    )
    for published in (empty, None):
        if published is None:
            lake.replace_snapshot(ASSETS, loaded.frame)
            published = analyst_catalog.publish(lake, [ASSETS])
        with duckdb.connect(published.path, read_only=True) as con:
            types = dict(
                con.execute(
                    "SELECT column_name, data_type FROM duckdb_columns() WHERE table_name = 'gis_assets'"
                ).fetchall()
            )
            comment = con.execute(
                "SELECT comment FROM duckdb_columns() WHERE table_name = 'gis_assets' AND column_name = 'geom'"
            ).fetchone()
            rows = con.execute("SELECT cost_thb::VARCHAR, hex(geom), inspected_on FROM raw.gis_assets").fetchall()
        assert types == TYPES
        assert comment[0].startswith("Location. (geometry as WKB in EPSG:32647")
    assert rows == [("1234567890.25", "0101000000000000000000F03F0000000000000040", [datetime(2026, 1, 5).date()])]
    shown = {c.name: c.type for c in ASSETS.dagster_column_schema().columns}
    assert shown == {
        "asset_id": "string",
        "cost_thb": "decimal(14, 2)",
        "geom": "geometry(WKB, EPSG:32647)",
        "inspected_on": "list<date>",
        "valves": "int32",
        "installed_on": "date",
        "seen_at": "timestamp[us, UTC]",
    }


def test_the_quarantine_shows_every_refused_row_and_a_clean_reload_readmits(lake, analyst_catalog):
    from quality.conform import rejects_table

    window = (T0, T0 + timedelta(hours=1))
    sent = [
        {"dma_id": "DMA-0001", "timestamp": T0.isoformat(), "flow_m3h": 12.5, "pressure_bar": 2.1},
        {"dma_id": "DMA-0001", "timestamp": (T0 + timedelta(minutes=15)).isoformat(), "flow_m3h": "n/a"},
    ]
    loaded = conform(
        sent, FLOW_READINGS, source="dmama", partition_key="2026-03-01-17:00", window=window, partitions=hours(T0, 1)
    )
    lake.replace_partitions(FLOW_READINGS, loaded.frame, hours(T0, 1))
    lake.replace_partitions(rejects_table(FLOW_READINGS), loaded.rejects, hours(T0, 1))
    published = publish(lake, analyst_catalog)
    with duckdb.connect(published.path, read_only=True) as con:
        rows = con.execute("SELECT source, table_name, partition_key, field, reason FROM quality.quarantine").fetchall()
    assert len(rows) == 1
    source, table, partition, field, reason = rows[0]
    assert (source, table, partition, field) == ("dmama", "dmama_flow_readings", "2026-03-01-17:00", "flow_m3h")
    assert "n/a" in reason

    fixed = [sent[0], {**sent[1], "flow_m3h": 13.0}]  # the source resent the hour, now typed right
    again = conform(
        fixed, FLOW_READINGS, source="dmama", partition_key="2026-03-01-17:00", window=window, partitions=hours(T0, 1)
    )
    lake.replace_partitions(FLOW_READINGS, again.frame, hours(T0, 1))
    lake.replace_partitions(rejects_table(FLOW_READINGS), again.rejects, hours(T0, 1))
    with duckdb.connect(published.path, read_only=True) as con:  # views read the lake: no republish needed
        assert con.execute("SELECT count(*) FROM quality.quarantine").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM raw.dmama_flow_readings").fetchone() == (2,)
