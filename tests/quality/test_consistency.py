"""Rules between points, on an hour of the simulator's pump station physics (the Modbus simulator's model)."""

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from quality.consistency import (
    StationBalance,
    closed_valves_passing_flow,
    pumps_off_drawing_power,
    station_balance,
)
from simulators.modbus import PumpStationModel

START = datetime(2026, 3, 2, 0, tzinfo=UTC)
SAMPLE_S = 5
STATION = StationBalance(
    station="PS01",
    inflow_unit="PS01-IN",
    outflow_unit="PS01",
    tank_areas_m2={"PS01-T1": PumpStationModel.T1_AREA_M2, "PS01-T2": PumpStationModel.T2_AREA_M2},
)


def station_points(seconds: int = 3600, seed: int = 4) -> pl.DataFrame:
    """The points the collector would read off PS01 every five seconds, as the maps name them."""
    model = PumpStationModel(seed, "PS01", START)
    rows = []
    for t in range(seconds):
        model.step()
        if t % SAMPLE_S:
            continue
        at = START + timedelta(seconds=t + 1)
        v = model.values
        readings = [
            ("PS01-IN", "flow", v["inflow"]),
            ("PS01", "flow", v["outflow"]),
            ("PS01-T1", "level", v["tank1_level"]),
            ("PS01-T2", "level", v["tank2_level"]),
            ("PS01-IN", "valve_status", float(v["inlet_valve_open"])),
            *((f"PS01-P{p}", "pump_status", float(v[f"pump{p}_status"])) for p in (1, 2, 3)),
            *((f"PS01-P{p}", "power", v[f"pump{p}_power"]) for p in (1, 2, 3)),
        ]
        rows.extend(("modbus", "plc", unit, sensor, value, "GOOD", at) for unit, sensor, value in readings)
    return pl.DataFrame(
        rows,
        schema={
            "source": pl.String,
            "device": pl.String,
            "unit_id": pl.String,
            "sensor_type": pl.String,
            "value": pl.Float64,
            "quality": pl.String,
            "source_ts": pl.Datetime("us", "UTC"),
        },
        orient="row",
    )


@pytest.fixture(scope="module")
def hour() -> pl.DataFrame:
    return station_points()


def test_a_healthy_station_is_consistent(hour):
    assert pumps_off_drawing_power(hour).height == 0
    assert closed_valves_passing_flow(hour).height == 0
    balance = station_balance(hour, STATION, START, START + timedelta(hours=1))
    assert balance["balanced"] is True
    assert balance["inflow_m3"] > 50  # the hour moved real water
    assert abs(balance["residual_m3"]) < 0.02 * balance["inflow_m3"]


def test_a_stuck_pump_status_contact_is_caught(hour):
    running = hour.filter(
        (pl.col("unit_id") == "PS01-P1") & (pl.col("sensor_type") == "power") & (pl.col("value") > 10)
    )
    if running.height == 0:  # the seed decides which pump leads; take the one that ran
        running = hour.filter((pl.col("sensor_type") == "power") & (pl.col("value") > 10))
    pump = running["unit_id"][0]
    stuck = hour.with_columns(
        value=pl.when((pl.col("unit_id") == pump) & (pl.col("sensor_type") == "pump_status"))
        .then(0.0)
        .otherwise(pl.col("value"))
    )
    found = pumps_off_drawing_power(stuck)
    assert set(found["unit_id"]) == {pump}
    assert (
        found.height
        == hour.filter((pl.col("unit_id") == pump) & (pl.col("sensor_type") == "power") & (pl.col("value") > 2)).height
    )


def test_a_closed_valve_passing_flow_is_caught(hour):
    closed = hour.with_columns(
        value=pl.when(pl.col("sensor_type") == "valve_status").then(0.0).otherwise(pl.col("value"))
    )
    found = closed_valves_passing_flow(closed)
    flowing = hour.filter((pl.col("unit_id") == "PS01-IN") & (pl.col("sensor_type") == "flow") & (pl.col("value") > 5))
    assert found.height == flowing.height > 0


def test_an_inflow_meter_reading_high_breaks_the_balance(hour):
    drifting = hour.with_columns(
        value=pl.when((pl.col("unit_id") == "PS01-IN") & (pl.col("sensor_type") == "flow"))
        .then(pl.col("value") * 1.25)
        .otherwise(pl.col("value"))
    )
    balance = station_balance(drifting, STATION, START, START + timedelta(hours=1))
    assert balance["balanced"] is False
    assert balance["residual_m3"] == pytest.approx(
        0.25 * station_balance(hour, STATION, START, START + timedelta(hours=1))["inflow_m3"], rel=0.1
    )


def test_a_missing_series_is_not_judged(hour):
    no_levels = hour.filter(pl.col("unit_id") != "PS01-T2")
    assert station_balance(no_levels, STATION, START, START + timedelta(hours=1))["balanced"] is None


def test_the_shipped_stations_declare_ps01s_meters_and_its_five_minute_windows_balance():
    from quality.consistency import balances_of_stations

    (ps01,) = [s for s in balances_of_stations() if s.station == "PS01"]
    assert (ps01.inflow_unit, ps01.outflow_unit) == ("PS01-IN", "PS01")
    assert ps01.tank_areas_m2 == {"PS01-T1": 120.0, "PS01-T2": 40.0}
    # As the collector reads the station: flows every 5 s, levels every minute (collector/maps).
    points = station_points(seconds=1800).filter(
        (pl.col("sensor_type") != "level") | (pl.col("source_ts").dt.second() == 1)
    )
    for minute in range(0, 30, 5):
        start = START + timedelta(minutes=minute)
        balance = station_balance(points, ps01, start, start + timedelta(minutes=5))
        assert balance["balanced"] is True, balance
