"""Pressure compliance per DMA and day, and the spells below the service band, on the simulator's readings."""

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import polars as pl
import pytest

from assets.pressure import dma_pressure_compliance, low_pressure_events, pressure_compliance
from contracts.dmama import FLOW_READINGS
from contracts.marts import BAR_PER_METRE, LOW_PRESSURE_EVENTS, PRESSURE_COMPLIANCE
from resources.lake import time_windows
from simulators.dmama import DmamaConfig, DmamaSimulator

TZ = "Asia/Bangkok"


@pytest.fixture(scope="module")
def week():
    start = datetime.now(UTC).replace(hour=17, minute=0, second=0, microsecond=0) - timedelta(days=7)  # 00:00 local
    simulator = DmamaSimulator(DmamaConfig(dmas=3))
    frames = [
        pl.DataFrame(simulator.flow_readings(d, start, start + timedelta(days=7))).with_columns(dma_id=pl.lit(d))
        for d in simulator.dma_ids()
    ]
    frame = pl.concat(frames).with_columns(
        timestamp=pl.col("timestamp").str.to_datetime(time_unit="us", time_zone="UTC")
    )
    return frame, start


def with_spell(frame: pl.DataFrame, dma_id: str, first: datetime, readings: int, bar: float) -> pl.DataFrame:
    end = first + timedelta(minutes=15 * (readings - 1))
    inside = (pl.col("dma_id") == dma_id) & pl.col("timestamp").is_between(first, end)
    return frame.with_columns(pressure_bar=pl.when(inside).then(bar).otherwise(pl.col("pressure_bar")))


def test_a_day_kept_in_band_is_fully_compliant_and_a_spell_below_shows(week):
    frame, start = week
    assert pressure_compliance(frame, TZ, 10, 30)["within_band_pct"].min() == pytest.approx(100.0)
    first = start + timedelta(days=2, hours=3)  # 10:00 local on the third day
    drained = with_spell(frame, "DMA-0002", first, 6, 6 * BAR_PER_METRE)  # 90 minutes at 6 m
    days = pressure_compliance(drained, TZ, 10, 30).filter(pl.col("dma_id") == "DMA-0002")
    third = days.filter(pl.col("day") == (start + timedelta(days=2, hours=7)).date()).row(0, named=True)
    assert third["below_band_pct"] == pytest.approx(100 * 6 / 96)
    assert third["min_pressure_m"] == pytest.approx(6.0)
    assert set(days.filter(pl.col("day") != third["day"])["within_band_pct"]) == {100.0}
    (spell,) = low_pressure_events(drained, 10).iter_rows(named=True)
    assert (spell["dma_id"], spell["started_at"], spell["readings"], spell["duration_min"]) == (
        "DMA-0002",
        first,
        6,
        90.0,
    )
    assert spell["lowest_pressure_m"] == pytest.approx(6.0)


def test_two_spells_apart_are_two_events_and_an_inverted_band_is_refused(week):
    frame, start = week
    first = start + timedelta(hours=5)
    twice = with_spell(with_spell(frame, "DMA-0001", first, 2, 0.5), "DMA-0001", first + timedelta(hours=2), 3, 0.5)
    assert low_pressure_events(twice, 10)["readings"].to_list() == [2, 3]
    with pytest.raises(ValueError, match=r"minimum 30 m must be below maximum 10 m"):
        pressure_compliance(frame, TZ, 30, 10)


def test_the_asset_writes_both_tables_from_the_lake(week, lake):
    frame, start = week
    hourly = dg.HourlyPartitionsDefinition(start_date="2026-01-01-00:00")
    landed = with_spell(frame, "DMA-0003", start + timedelta(days=1), 4, 0.6)
    lake.replace_partitions(
        FLOW_READINGS,
        landed.with_columns(flow_m3h=pl.col("flow_m3h")),
        time_windows(hourly, start, start + timedelta(days=7)),
    )
    result = dg.materialize([dma_pressure_compliance], resources={"lake": lake})
    assert result.success
    assert lake.read(PRESSURE_COMPLIANCE).height >= 3 * 7
    (event,) = lake.read(LOW_PRESSURE_EVENTS).iter_rows(named=True)
    assert event["dma_id"] == "DMA-0003" and event["readings"] == 4
    assert isinstance(lake.read(PRESSURE_COMPLIANCE)["day"][0], date)
