"""Rules between points: two instruments on the same plant must tell the same story.

A single sensor can look plausible on its own and still be wrong; its neighbours say so. These rules pair
points by plant unit (the collector's maps name a pump ``PS01-P1``, a tank ``PS01-T1``, an inlet
``PS01-IN``) and by time (each status sample meets the nearest value of the other point within a
tolerance, ``join_asof``), all column-wise:

- **pump off ⇒ no power**: a pump reported stopped while its motor draws power (a stuck status contact, or
  a meter on the wrong feeder);
- **valve closed ⇒ no flow**: an inlet reported closed while its meter measures flow;
- **station mass balance**: over a window, what came in minus what went out equals what the tanks gained
  (Σ area × level change); a residual beyond the tolerance means a meter or a level transmitter drifts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

PUMP_OFF_MAX_KW = 2.0  # a stopped pump's feeder still shows a few hundred watts of controls and noise
VALVE_CLOSED_MAX_FLOW = 5.0  # m³/h: a closed valve's meter reads at most its zero drift
PAIR_TOLERANCE = timedelta(seconds=10)


def _series(points: pl.DataFrame, sensor_type: str, name: str) -> pl.DataFrame:
    return (
        points.filter(
            (pl.col("sensor_type") == sensor_type)
            & pl.col("quality").is_in(["GOOD", "UNCERTAIN"])
            & pl.col("value").is_not_null()
        )
        .select("unit_id", "source_ts", pl.col("value").alias(name))
        .sort("source_ts")
    )


def _paired(points: pl.DataFrame, left: str, right: str, tolerance: timedelta) -> pl.DataFrame:
    """Each ``left`` sample with the nearest ``right`` sample of the same unit within ``tolerance``."""
    return (
        _series(points, left, left)
        .join_asof(_series(points, right, right), on="source_ts", by="unit_id", strategy="nearest", tolerance=tolerance)
        .filter(pl.col(right).is_not_null())
    )


def pumps_off_drawing_power(
    points: pl.DataFrame, max_kw: float = PUMP_OFF_MAX_KW, tolerance: timedelta = PAIR_TOLERANCE
) -> pl.DataFrame:
    """Samples where a pump's status says stopped (0) and its power says it runs (above ``max_kw``)."""
    paired = _paired(points, "pump_status", "power", tolerance)
    return paired.filter((pl.col("pump_status") < 0.5) & (pl.col("power") > max_kw)).with_columns(
        sensor_type=pl.lit("pump_status")
    )


def closed_valves_passing_flow(
    points: pl.DataFrame, max_flow: float = VALVE_CLOSED_MAX_FLOW, tolerance: timedelta = PAIR_TOLERANCE
) -> pl.DataFrame:
    """Samples where a valve's status says closed (0) and the flow meter of the same unit measures flow."""
    paired = _paired(points, "valve_status", "flow", tolerance)
    return paired.filter((pl.col("valve_status") < 0.5) & (pl.col("flow") > max_flow)).with_columns(
        sensor_type=pl.lit("valve_status")
    )


@dataclass(frozen=True)
class StationBalance:
    """Which points close a station's water balance: inflow and outflow meters (m³/h) and the tanks
    (unit → plan area, m²) between them."""

    station: str
    inflow_unit: str
    outflow_unit: str
    tank_areas_m2: Mapping[str, float]
    tolerance_pct: float = 10.0  # of the larger of inflow and outflow volume
    tolerance_m3: float = 2.0  # below this the meters' resolution dominates


def station_balance(points: pl.DataFrame, station: StationBalance, start: datetime, end: datetime) -> dict:
    """The window's balance: volumes in and out (trapezoidal integration of m³/h) over the span the tank
    levels cover, the tanks' storage change over that span, the residual and whether it is within tolerance
    (None when a series is missing). Levels report less often than flows, so the flows are integrated only
    between the first and last level readings they are compared with."""
    window = points.filter((pl.col("source_ts") >= start) & (pl.col("source_ts") < end))
    figures = {
        "station": station.station,
        "inflow_m3": None,
        "outflow_m3": None,
        "storage_change_m3": None,
        "residual_m3": None,
        "allowed_m3": None,
        "balanced": None,
    }
    levels = {}
    for tank in station.tank_areas_m2:
        series = _series(window.filter(pl.col("unit_id") == tank), "level", "level")
        if series.height < 2:
            return figures
        levels[tank] = series
    span_start = max(series["source_ts"][0] for series in levels.values())
    span_end = min(series["source_ts"][-1] for series in levels.values())
    if span_end <= span_start:
        return figures

    def level_at(series: pl.DataFrame, at: datetime) -> float:
        return float(series.filter(pl.col("source_ts") <= at)["level"][-1])

    storage = sum(
        area * (level_at(levels[tank], span_end) - level_at(levels[tank], span_start))
        for tank, area in station.tank_areas_m2.items()
    )

    def volume_m3(unit: str) -> float | None:
        series = _series(window.filter(pl.col("unit_id") == unit), "flow", "flow").filter(
            pl.col("source_ts").is_between(span_start, span_end)
        )
        if series.height < 2:
            return None
        hours = series["source_ts"].diff().dt.total_microseconds().cast(pl.Float64) / 3.6e9
        mean_flow = (series["flow"] + series["flow"].shift(1)) / 2
        return float((hours * mean_flow).sum())

    inflow = volume_m3(station.inflow_unit)
    outflow = volume_m3(station.outflow_unit)
    figures.update(inflow_m3=inflow, outflow_m3=outflow, storage_change_m3=storage)
    if inflow is None or outflow is None:
        return figures
    residual = inflow - outflow - storage
    allowed = max(station.tolerance_m3, station.tolerance_pct / 100 * max(inflow, outflow))
    figures.update(residual_m3=residual, allowed_m3=allowed, balanced=abs(residual) <= allowed)
    return figures


def balances_of_stations() -> list[StationBalance]:
    """The stations of ``optimization/stations.yaml`` whose boundary meters are declared."""
    from optimization.stations import load_stations

    found = []
    for station in load_stations().stations:
        if station.balance is None:
            continue
        found.append(
            StationBalance(
                station=station.id,
                inflow_unit=station.balance.inflow_point.unit_id,
                outflow_unit=station.balance.outflow_point.unit_id,
                tank_areas_m2={tank.level_point.unit_id: tank.area_m2 for tank in station.tanks},
                tolerance_pct=station.balance.tolerance_pct,
                tolerance_m3=station.balance.tolerance_m3,
            )
        )
    return found
