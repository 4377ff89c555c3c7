"""The rules fleet positions and trips must meet: GX suites as asset checks, and the GPS-jump rule.

Ranges: a coordinate outside WGS 84's range or a negative load is a broken unit, a speed over 120 km/h
is beyond what a loaded clinker truck does on an Indian highway (and beyond its governor), and fuel is a
share of the tank. A fix that implies a move faster than ``teleport_speed_kmh`` from the truck's
previous good fix is a GPS jump: ``teleports`` finds those, and the positions asset rejects them.
"""

from __future__ import annotations

import math

import dagster as dg
import polars as pl

from contracts.fleet import POSITIONS, POSITIONS_KEY, TRIPS, TRIPS_KEY
from quality.gx import Rule, build_gx_checks
from quality.rules import keys_present, unique

MAX_SPEED_KMH = 120.0
MAX_LOAD_T = 60.0  # a 6x4 tipper's payload is 25-40 t; past 60 t the load cell is broken, not the truck overloaded
_EARTH_KM = 6371.0088
# Fixes in a row, consistent with each other but not with the last good fix, that move the anchor.
REANCHOR_AFTER = 5


def _keys(*columns: str) -> Rule:
    return keys_present(*columns)


def _unique(*columns: str) -> Rule:
    return unique(*columns, why="a re-run or a resent message never doubles a row")


POSITION_RULES = (
    _keys("truck_id", "ts", "lat", "lon"),
    _unique("truck_id", "ts"),
    Rule(
        name="coordinates_in_range",
        description="Latitude −90…90 and longitude −180…180 degrees (WGS 84).",
        expectations=lambda gxe, _: [
            gxe.ExpectColumnValuesToBeBetween(column="lat", min_value=-90, max_value=90),
            gxe.ExpectColumnValuesToBeBetween(column="lon", min_value=-180, max_value=180),
        ],
    ),
    Rule(
        name="values_in_physical_range",
        description=f"Speed 0–{MAX_SPEED_KMH:.0f} km/h, load 0–{MAX_LOAD_T:.0f} t, fuel 0–100 %.",
        expectations=lambda gxe, _: [
            gxe.ExpectColumnValuesToBeBetween(column="speed_kmh", min_value=0, max_value=MAX_SPEED_KMH),
            gxe.ExpectColumnValuesToBeBetween(column="load_t", min_value=0, max_value=MAX_LOAD_T),
            gxe.ExpectColumnValuesToBeBetween(column="fuel_pct", min_value=0, max_value=100),
        ],
    ),
)

TRIP_RULES = (
    _keys("truck_id", "origin_plant_id", "destination_plant_id", "departed_at", "arrived_at"),
    _unique("truck_id", "departed_at"),
    Rule(
        name="arrives_after_departing",
        description="A trip arrives after it departs.",
        expectations=lambda gxe, _: [
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="arrived_at", column_B="departed_at"),
        ],
    ),
    Rule(
        name="load_and_distance_plausible",
        description=f"A trip carries 0–{MAX_LOAD_T:.0f} t over a positive distance.",
        expectations=lambda gxe, _: [
            gxe.ExpectColumnValuesToBeBetween(column="load_t", min_value=0, max_value=MAX_LOAD_T),
            gxe.ExpectColumnValuesToBeBetween(column="distance_km", min_value=0, strict_min=True),
        ],
    ),
)


def fleet_checks(daily: dg.TimeWindowPartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    """One GX suite per fleet table, each rule its own check, per daily partition."""
    return [
        build_gx_checks(POSITIONS_KEY, POSITIONS, POSITION_RULES, daily),
        build_gx_checks(TRIPS_KEY, TRIPS, TRIP_RULES, daily),
    ]


def haversine_km(lat1: pl.Expr, lon1: pl.Expr, lat2: pl.Expr, lon2: pl.Expr) -> pl.Expr:
    """Great-circle distance in km between WGS 84 points, as a polars expression."""
    p1, p2 = lat1.radians(), lat2.radians()
    a = ((p2 - p1) / 2).sin() ** 2 + p1.cos() * p2.cos() * ((lon2.radians() - lon1.radians()) / 2).sin() ** 2
    return 2 * _EARTH_KM * a.sqrt().arcsin()


def teleports(positions: pl.DataFrame, max_speed_kmh: float) -> pl.DataFrame:
    """Fixes that imply a move faster than ``max_speed_kmh`` from the truck's previous good fix.

    Walked in time order per truck: a jump is judged against the last fix that was *not* a jump, so the
    fix after a one-off glitch (which is back where the truck is) is kept. Returns ``truck_id``, ``ts``,
    ``implied_kmh``, ``jump_km`` and ``reason`` for each jump. The first fix of a truck is trusted (a
    jump needs a fix to jump from; callers put the truck's last good fix before the rows they judge) unless
    it was the glitch: when ``REANCHOR_AFTER`` fixes in a row are consistent with each other but not with
    the last good fix, they are where the truck is, and are kept.
    """
    found: dict[str, list] = {"truck_id": [], "ts": [], "implied_kmh": [], "jump_km": [], "reason": []}
    ordered = positions.select("truck_id", "ts", "lat", "lon").sort("truck_id", "ts")
    for (truck,), fixes in ordered.group_by(["truck_id"], maintain_order=True):
        times = fixes["ts"].to_list()
        lats, lons = fixes["lat"].to_list(), fixes["lon"].to_list()
        good = 0
        jumps: list[tuple[int, float, float, str]] = []  # the run of jumps since the last good fix
        for i in range(1, len(times)):
            speed, km, hours = _implied(times, lats, lons, good, i)
            if speed <= max_speed_kmh:
                good, jumps = i, _flush(found, truck, times, jumps)
                continue
            if jumps and _implied(times, lats, lons, jumps[-1][0], i)[0] > max_speed_kmh:
                jumps = _flush(found, truck, times, jumps)  # not a track of its own: each one a glitch
            reason = (
                f"GPS jump: {km:,.1f} km in {hours * 3600:,.0f} s from the fix at {times[good]:%H:%M:%S}Z "
                f"implies {speed:,.0f} km/h, over the {max_speed_kmh:g} km/h a truck can do"
            )
            jumps.append((i, speed, km, reason))
            if len(jumps) >= REANCHOR_AFTER:
                good, jumps = i, []  # the truck is where these say: the old anchor was the outlier
        _flush(found, truck, times, jumps)
    return pl.DataFrame(
        found,
        schema={
            "truck_id": pl.String,
            "ts": POSITIONS.schema["ts"],
            "implied_kmh": pl.Float64,
            "jump_km": pl.Float64,
            "reason": pl.String,
        },
    )


def _implied(times: list, lats: list, lons: list, a: int, b: int) -> tuple[float, float, float]:
    """(km/h, km, hours) of the move from fix ``a`` to fix ``b``."""
    hours = (times[b] - times[a]).total_seconds() / 3600
    km = _haversine(lats[a], lons[a], lats[b], lons[b])
    return (km / hours if hours > 0 else math.inf), km, hours


def _flush(found: dict[str, list], truck: str, times: list, jumps: list[tuple[int, float, float, str]]) -> list:
    for i, speed, km, reason in jumps:
        found["truck_id"].append(truck)
        found["ts"].append(times[i])
        found["implied_kmh"].append(speed)
        found["jump_km"].append(km)
        found["reason"].append(reason)
    return []


def _haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * _EARTH_KM * math.asin(math.sqrt(min(1.0, a)))
