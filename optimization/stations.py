"""Pumping stations as data: `optimization/stations.yaml`, validated, with errors that point into the file.

A station is tanks (area, the level band to keep, the DMAs each feeds, the SCADA point of its level) and
pumps (flow and electrical power at the duty point, the tank each lifts from and into, minimum run and
rest times, starts allowed per day, the SCADA point of its run status), plus the level rule operators
follow without a plan (the baseline the schedule is compared with). Cross-references are checked when the
file loads: a pump into an unknown tank, two tanks with one id or a baseline rule whose start level is not
below its stop level is an error naming the station and the field, never a surprise in the solver.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from resources.yaml_files import load_model

__all__ = [
    "STATIONS_FILE",
    "BaselineRule",
    "Pump",
    "ScadaPoint",
    "Station",
    "StationsFile",
    "Tank",
    "load_stations",
    "station",
]

STATIONS_FILE = Path(__file__).with_name("stations.yaml")


class ScadaPoint(BaseModel):
    """A SCADA point as the lake keys it: the unit (``PS01-T2``) and the sensor type (``level``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    unit_id: str = Field(min_length=1)
    sensor_type: str = Field(min_length=1)


class Tank(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    description: str = ""
    area_m2: float = Field(gt=0, description="Plan area of the tank, m² (a prismatic tank: volume = area × level).")
    min_level_m: float = Field(ge=0)
    max_level_m: float = Field(gt=0)
    target_end_level_m: float | None = Field(default=None, ge=0)
    supply_max_m3h: float = Field(default=0.0, ge=0, description="Inflow from outside the station (a bulk main).")
    dmas: tuple[str, ...] = ()
    level_point: ScadaPoint

    @model_validator(mode="after")
    def _band(self) -> Self:
        if self.min_level_m >= self.max_level_m:
            raise ValueError(
                f"tank {self.id}: min_level_m {self.min_level_m} must be below max_level_m {self.max_level_m}"
            )
        target = self.target_end_level_m
        if target is not None and not self.min_level_m <= target <= self.max_level_m:
            raise ValueError(
                f"tank {self.id}: target_end_level_m {target} must lie in "
                f"[{self.min_level_m}, {self.max_level_m}] (its level band)"
            )
        return self


class Pump(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    flow_m3h: float = Field(gt=0, le=10_000)
    power_kw: float = Field(gt=0, le=10_000)
    from_tank: str | None = None  # None: lifts from outside the station (a reservoir the plan does not model)
    to_tank: str
    in_service: bool = True
    min_run_min: int = Field(default=15, ge=0, le=24 * 60)
    min_rest_min: int = Field(default=15, ge=0, le=24 * 60)
    max_starts_per_day: int = Field(default=96, ge=1, le=96)
    state_point: ScadaPoint


class BaselineRule(BaseModel):
    """Level control as operators run it: start another pump into ``tank`` below one level, stop one above another."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tank: str
    start_below_m: float = Field(ge=0)
    stop_above_m: float = Field(gt=0)

    @model_validator(mode="after")
    def _order(self) -> Self:
        if self.start_below_m >= self.stop_above_m:
            raise ValueError(
                f"baseline for tank {self.tank}: start_below_m {self.start_below_m} must be below "
                f"stop_above_m {self.stop_above_m}"
            )
        return self


class BalanceMeters(BaseModel):
    """The flow meters (m³/h) at the station's boundary: what comes in and what leaves for the network.
    With the tanks' levels they close the station's water balance (quality/consistency.py)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    inflow_point: ScadaPoint
    outflow_point: ScadaPoint
    tolerance_pct: float = Field(default=10.0, gt=0, le=100)
    tolerance_m3: float = Field(default=2.0, ge=0)


class Station(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    name: str = ""
    scada_unit: str = Field(min_length=1, description="The station's plant_unit_id in SCADA (PS01).")
    tanks: tuple[Tank, ...] = Field(min_length=1)
    pumps: tuple[Pump, ...] = Field(min_length=1)
    baseline: tuple[BaselineRule, ...] = ()
    balance: BalanceMeters | None = None

    @model_validator(mode="after")
    def _references(self) -> Self:
        problems: list[str] = []
        for kind, ids in (("tank", [t.id for t in self.tanks]), ("pump", [p.id for p in self.pumps])):
            duplicated = sorted({i for i in ids if ids.count(i) > 1})
            if duplicated:
                problems.append(f"station {self.id}: {kind} ids {duplicated} appear more than once")
        tanks = {t.id for t in self.tanks}
        for pump in self.pumps:
            for field in ("from_tank", "to_tank"):
                ref = getattr(pump, field)
                if ref is not None and ref not in tanks:
                    problems.append(f"station {self.id}, pump {pump.id}: {field} {ref!r} is not one of {sorted(tanks)}")
            if pump.from_tank is not None and pump.from_tank == pump.to_tank:
                problems.append(f"station {self.id}, pump {pump.id}: lifts from and into the same tank {pump.to_tank}")
        for rule in self.baseline:
            if rule.tank not in tanks:
                problems.append(f"station {self.id}: baseline tank {rule.tank!r} is not one of {sorted(tanks)}")
            elif not any(p.to_tank == rule.tank for p in self.pumps):
                problems.append(f"station {self.id}: baseline tank {rule.tank} has no pump filling it")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def tank_index(self, tank_id: str) -> int:
        for i, tank in enumerate(self.tanks):
            if tank.id == tank_id:
                return i
        raise KeyError(f"station {self.id} has no tank {tank_id!r}; it has {[t.id for t in self.tanks]}")

    def pump_index(self, pump_id: str) -> int:
        for i, pump in enumerate(self.pumps):
            if pump.id == pump_id:
                return i
        raise KeyError(f"station {self.id} has no pump {pump_id!r}; it has {[p.id for p in self.pumps]}")


class StationsFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    stations: tuple[Station, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> Self:
        ids = [s.id for s in self.stations]
        duplicated = sorted({i for i in ids if ids.count(i) > 1})
        if duplicated:
            raise ValueError(f"station ids {duplicated} appear more than once")
        return self

    def get(self, station_id: str) -> Station:
        for item in self.stations:
            if item.id == station_id:
                return item
        raise KeyError(f"no station {station_id!r} in the stations file; it has {[s.id for s in self.stations]}")


def load_stations(path: str | Path = STATIONS_FILE) -> StationsFile:
    """Read and validate a stations file; `resources.yaml_files.ConfigError` lists every problem with its line."""
    return load_model(path, StationsFile)


@cache
def _shipped() -> StationsFile:
    return load_stations(STATIONS_FILE)


def station(station_id: str) -> Station:
    """A station of the shipped `optimization/stations.yaml` by id."""
    return _shipped().get(station_id)
