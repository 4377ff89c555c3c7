"""Leak indicators from night flow: the simulator's leaking DMAs are flagged, from about when their leak
began, and no others; a step in night flow is told apart from a growing leak."""

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import polars as pl
import pytest

from assets.leaks import LeakIndicatorConfig, dma_leak_indicators, leak_indicators, nightly_minimum
from contracts.dmama import FLOW_READINGS
from contracts.marts import LEAK_INDICATORS
from resources.lake import time_windows
from simulators.dmama import DmamaConfig, DmamaSimulator

TZ = "Asia/Bangkok"
DAYS = 60


def readings(simulator: DmamaSimulator, start: datetime, days: int) -> pl.DataFrame:
    frames = []
    for dma_id in simulator.dma_ids():
        for first in range(0, days, 30):  # the source serves at most 31 days a request
            until = start + timedelta(days=min(first + 30, days))
            rows = simulator.flow_readings(dma_id, start + timedelta(days=first), until)
            frames.append(pl.DataFrame(rows).with_columns(dma_id=pl.lit(dma_id)))
    return pl.concat(frames).with_columns(
        timestamp=pl.col("timestamp").str.to_datetime(time_unit="us", time_zone="UTC")
    )


@pytest.fixture(scope="module")
def network():
    """Twenty DMAs over sixty nights whose leaks start within the period (the simulator's ground truth)."""
    start = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=DAYS)
    epoch = start - timedelta(days=2)  # leaks start 5–40 days after the epoch: inside the period
    simulator = DmamaSimulator(DmamaConfig(dmas=20, seed=7, epoch=epoch.strftime("%Y-%m-%dT%H:%M:%SZ")))
    return simulator, readings(simulator, start, DAYS), start


def test_the_leaking_dmas_are_flagged_from_about_when_they_began_and_no_others(network):
    simulator, frame, _ = network
    nights = nightly_minimum(frame, TZ)
    assert nights.group_by("dma_id").len()["len"].min() >= DAYS - 2
    found = leak_indicators(nights, LeakIndicatorConfig())
    truth = simulator.leaks()
    assert truth, "the simulated network should have leaking DMAs"
    flagged = set(found.filter(pl.col("leak_suspected"))["dma_id"])
    assert flagged == set(truth)
    for dma_id, leak in truth.items():
        row = found.filter(pl.col("dma_id") == dma_id).row(0, named=True)
        began = leak["start"].astimezone(UTC).date()
        # A leak growing ~1 % of mean flow a day needs a few nights to leave the night-to-night noise.
        assert began - timedelta(days=1) <= row["rise_began_on"] <= began + timedelta(days=7), (dma_id, row, began)
        assert row["kind"] == "growing_leak"
        assert row["rise_m3h"] > 0


def test_a_step_in_night_flow_is_a_burst(network):
    _, frame, _ = network
    nights = nightly_minimum(frame, TZ)
    quiet = nights.filter(pl.col("dma_id") == nights["dma_id"][0])
    burst_on = quiet["night_of"][40]
    stepped = quiet.with_columns(
        min_night_flow_m3h=pl.when(pl.col("night_of") >= burst_on)
        .then(pl.col("min_night_flow_m3h") + 0.5 * pl.col("min_night_flow_m3h").median())
        .otherwise(pl.col("min_night_flow_m3h"))
    )
    (row,) = leak_indicators(stepped, LeakIndicatorConfig()).filter(pl.col("leak_suspected")).iter_rows(named=True)
    assert row["kind"] == "burst"
    assert row["rise_began_on"] == burst_on


def test_a_partial_night_is_not_judged():
    stamps = [datetime(2026, 3, 1, 19, tzinfo=UTC) + timedelta(minutes=15 * i) for i in range(6)]  # 02:00–03:30
    frame = pl.DataFrame({"dma_id": ["D1"] * 6, "timestamp": stamps, "flow_m3h": [5.0] * 6})
    assert nightly_minimum(frame, TZ).height == 0
    full = pl.DataFrame(
        {
            "dma_id": ["D1"] * 8,
            "timestamp": stamps + [stamps[-1] + timedelta(minutes=15 * k) for k in (1, 2)],
            "flow_m3h": [5.0] * 7 + [4.0],
        }
    )
    assert nightly_minimum(full, TZ).rows() == [("D1", date(2026, 3, 2), 4.0, 4.875, 8)]


def test_the_asset_writes_the_indicators_from_the_lake(network, lake):
    _, frame, start = network
    hourly = dg.HourlyPartitionsDefinition(start_date="2026-01-01-00:00")
    lake.replace_partitions(
        FLOW_READINGS,
        frame.with_columns(pressure_bar=pl.lit(3.0)),
        time_windows(hourly, start, start + timedelta(days=DAYS)),
    )
    result = dg.materialize([dma_leak_indicators], resources={"lake": lake})
    written = lake.read(LEAK_INDICATORS)
    assert written.height == 20
    metadata = result.asset_materializations_for_node("marts__dma_leak_indicators")[0].metadata
    assert metadata["leaks_suspected"].value == written["leak_suspected"].sum() > 0
