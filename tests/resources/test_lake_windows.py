"""The lake at every partition length, with static partitions, snapshots and the first layout's files."""

from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from resources.lake import Lake, time_windows, window_file_name
from resources.tables import Column, LakeTable

STAMP = pl.Datetime("us", "UTC")
USAGE = LakeTable(
    layer="raw",
    name="billing_usage",
    description="Water billed per account and period.",
    columns=(
        Column("account_id", pl.String(), "Billing account.", nullable=False, identifier=True),
        Column("period_start", STAMP, "Start of the billed period, UTC.", nullable=False),
        Column("billed_m3", pl.Decimal(12, 3), "Billed volume, m³."),
    ),
    key=("account_id", "period_start"),
    time_column="period_start",
)
PLANT_STOCK = LakeTable(
    layer="raw",
    name="erp_stock",
    description="Stock per plant and day.",
    columns=(
        Column("plant_id", pl.String(), "Plant.", nullable=False, identifier=True),
        Column("day", STAMP, "Day, UTC.", nullable=False),
        Column("tonnes", pl.Float64(), "Stock, t."),
    ),
    key=("plant_id", "day"),
    time_column="day",
    static_column="plant_id",
)


def usage(stamps: list[datetime], account: str = "A-1") -> pl.DataFrame:
    return pl.DataFrame(
        {"account_id": [account] * len(stamps), "period_start": stamps, "billed_m3": ["1.250"] * len(stamps)},
        schema_overrides={"period_start": STAMP},
    ).with_columns(pl.col("billed_m3").str.to_decimal(scale=3))


def names(lake: Lake, table: LakeTable) -> list[str]:
    return [Path(p).relative_to(lake.table_dir(table)).as_posix() for p in lake.files(table)]


def test_file_names_say_the_window_for_every_length():
    t = datetime(2026, 3, 1, tzinfo=UTC)
    assert window_file_name(dg.TimeWindow(t, t + timedelta(minutes=15))) == "part-0000-PT15M.parquet"
    assert window_file_name(dg.TimeWindow(t, t + timedelta(hours=1))) == "part-0000-PT1H.parquet"
    assert window_file_name(dg.TimeWindow(t, t + timedelta(days=1))) == "part-0000-P1D.parquet"
    assert window_file_name(dg.TimeWindow(t, t + timedelta(days=7))) == "part-0000-P7D.parquet"
    assert window_file_name(dg.TimeWindow(t, datetime(2026, 4, 1, tzinfo=UTC))) == "part-0000-P1M.parquet"
    # A Bangkok month starts at 17:00 UTC: named by its exact length, which reads back without a calendar.
    bangkok = dg.MonthlyPartitionsDefinition(start_date="2026-01-01", timezone="Asia/Bangkok")
    march = bangkok.time_window_for_partition_key("2026-03-01")
    assert window_file_name(march) == "part-1700-P31D.parquet"


def test_monthly_partitions_are_found_from_the_middle_of_the_month(lake):
    monthly = dg.MonthlyPartitionsDefinition(start_date="2026-01-01")
    windows = time_windows(monthly, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    stamps = [datetime(2026, m, d, tzinfo=UTC) for m in (1, 2, 3) for d in (1, 15, 28)]
    written = lake.replace_partitions(USAGE, usage(stamps), windows)
    assert names(lake, USAGE) == [
        "date=2026-01-01/part-0000-P1M.parquet",
        "date=2026-02-01/part-0000-P1M.parquet",
        "date=2026-03-01/part-0000-P1M.parquet",
    ]
    assert written.rows == 9
    middle = lake.read(USAGE, datetime(2026, 2, 10, tzinfo=UTC), datetime(2026, 2, 20, tzinfo=UTC))
    assert middle["period_start"].to_list() == [datetime(2026, 2, 15, tzinfo=UTC)]
    assert str(middle["billed_m3"][0]) == "1.250"
    late = lake.read(USAGE, datetime(2026, 3, 20, tzinfo=UTC))
    assert late["period_start"].to_list() == [datetime(2026, 3, 28, tzinfo=UTC)]


def test_fifteen_minute_and_weekly_partitions(lake):
    quarter = dg.TimeWindowPartitionsDefinition(
        cron_schedule="*/15 * * * *", start="2026-03-01-00:00", fmt="%Y-%m-%d-%H:%M"
    )
    t = datetime(2026, 3, 1, 23, 30, tzinfo=UTC)
    windows = time_windows(quarter, t, t + timedelta(hours=1))
    lake.replace_partitions(USAGE, usage([t + timedelta(minutes=20)]), windows)
    assert names(lake, USAGE) == [
        "date=2026-03-01/part-2330-PT15M.parquet",
        "date=2026-03-01/part-2345-PT15M.parquet",
        "date=2026-03-02/part-0000-PT15M.parquet",
        "date=2026-03-02/part-0015-PT15M.parquet",
    ]
    assert lake.read(USAGE, t + timedelta(minutes=15), t + timedelta(minutes=30)).height == 1
    assert lake.read(USAGE, t + timedelta(minutes=30)).height == 0

    weekly = dg.WeeklyPartitionsDefinition(start_date="2026-03-02")  # Sundays, 00:00 UTC
    week = time_windows(weekly, datetime(2026, 3, 8, tzinfo=UTC), datetime(2026, 3, 15, tzinfo=UTC))
    snapshot = LakeTable("raw", "gis_pipes", "Pipes, weekly.", USAGE.columns, USAGE.key, USAGE.time_column)
    lake.replace_partitions(snapshot, usage([datetime(2026, 3, 11, tzinfo=UTC)]), week)
    assert names(lake, snapshot) == ["date=2026-03-08/part-0000-P7D.parquet"]
    assert lake.read(snapshot, datetime(2026, 3, 10, tzinfo=UTC), datetime(2026, 3, 12, tzinfo=UTC)).height == 1


def test_a_refused_write_changes_nothing_and_empty_months_are_kept(lake):
    monthly = dg.MonthlyPartitionsDefinition(start_date="2026-01-01")
    two = time_windows(monthly, datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))
    lake.replace_partitions(USAGE, usage([datetime(2026, 1, 5, tzinfo=UTC)]), two)
    before = {p: Path(p).read_bytes() for p in lake.files(USAGE)}
    assert len(before) == 2  # February had no rows: an empty file says so
    with pytest.raises(ValueError, match=r"rows at 2026-03-02T00:00Z fall outside the partitions being written"):
        lake.replace_partitions(USAGE, usage([datetime(2026, 1, 6, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC)]), two)
    assert {p: Path(p).read_bytes() for p in lake.files(USAGE)} == before


def test_static_partitions_and_their_snapshots(lake):
    daily = dg.DailyPartitionsDefinition(start_date="2026-03-01")
    days = time_windows(daily, datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))
    rows = pl.DataFrame(
        {"plant_id": ["P-01", "P-01"], "day": [d.start for d in days], "tonnes": [5.0, 6.0]},
        schema_overrides={"day": STAMP},
    )
    lake.replace_partitions(PLANT_STOCK, rows, days, static_key="P-01")
    lake.replace_partitions(
        PLANT_STOCK, rows.head(1).with_columns(plant_id=pl.lit("P-02")), days[:1], static_key="P-02"
    )
    assert names(lake, PLANT_STOCK) == [
        "plant_id=P-01/date=2026-03-01/part-0000-P1D.parquet",
        "plant_id=P-01/date=2026-03-02/part-0000-P1D.parquet",
        "plant_id=P-02/date=2026-03-01/part-0000-P1D.parquet",
    ]
    assert lake.read(PLANT_STOCK).height == 3
    second = lake.read(PLANT_STOCK, days[1].start, days[1].end)
    assert second.rows() == [("P-01", days[1].start, 6.0)]
    with pytest.raises(ValueError, match=r"plant_id='P-01'.*plant_id='P-03'"):
        lake.replace_partitions(PLANT_STOCK, rows, days, static_key="P-03")
    with pytest.raises(ValueError, match="cannot be a folder name"):
        lake.replace_snapshot(PLANT_STOCK, rows.head(0), static_key="..")
    lake.replace_snapshot(PLANT_STOCK, rows.head(1).with_columns(plant_id=pl.lit("P-09")), static_key="P-09")
    assert "plant_id=P-09/snapshot.parquet" in names(lake, PLANT_STOCK)


def test_an_hour_of_the_first_layout_is_replaced_not_duplicated(lake):
    hourly = dg.HourlyPartitionsDefinition(start_date="2026-03-01-00:00")
    t = datetime(2026, 3, 1, tzinfo=UTC)
    legacy = lake.table_dir(USAGE) / "date=2026-03-01" / "part-0000.parquet"
    legacy.parent.mkdir(parents=True)
    usage([t]).write_parquet(legacy)
    lake.replace_partitions(
        USAGE, usage([t, t + timedelta(minutes=30)], "A-2"), time_windows(hourly, t, t + timedelta(hours=1))
    )
    assert names(lake, USAGE) == ["date=2026-03-01/part-0000-PT1H.parquet"]
    assert lake.read(USAGE)["account_id"].to_list() == ["A-2", "A-2"]


def test_a_date_column_partitions_by_its_midnight(lake):
    readings = LakeTable(
        "raw",
        "billing_reads",
        "Daily register reads.",
        (
            Column("account_id", pl.String(), "Account.", nullable=False),
            Column("read_on", pl.Date(), "Day of the read.", nullable=False),
        ),
        ("account_id", "read_on"),
        "read_on",
    )
    daily = dg.DailyPartitionsDefinition(start_date="2026-03-01")
    days = time_windows(daily, datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 4, tzinfo=UTC))
    frame = pl.DataFrame({"account_id": ["A", "A", "A"], "read_on": [date(2026, 3, d) for d in (1, 2, 3)]})
    lake.replace_partitions(readings, frame, days)
    assert len(lake.files(readings)) == 3
    assert lake.read(readings, days[1].start, days[1].end)["read_on"].to_list() == [date(2026, 3, 2)]
