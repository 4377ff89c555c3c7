"""Modbus TCP simulator: pump stations and production machines behind one pymodbus server.

Each simulated device (a Modbus unit id) serves a register map from ``collector/maps/`` — the very
file the reader is configured with, so the two can never disagree about addresses, data types, byte
orders or scales. What the registers hold comes from a small physical model stepped once a second of
simulated time, deterministic from the seed, the unit id and the start time:

- **pump station** (``pump_station.yaml``): network demand follows the residential diurnal shape in
  Asia/Bangkok time (peaks 06-08 and 18-21, lowest 02-04); three pumps lift from a ground tank (T1,
  fed by a float valve on the bulk main) into an elevated tank (T2) that feeds the network. Pumps
  start and stop on T2's level (lead pump rotating, a minute between changes), so T2 rises while
  pumping exceeds outflow and falls otherwise; pump power = ρ·g·Q·H/η with η ≈ 0.72, discharge
  pressure = static head + T2 level + friction ∝ Q²; run hours, starts, energy and volume totalisers
  accumulate; a pump occasionally trips and stays faulted for ten minutes.
- **machine** (``machine.yaml``): a lathe cutting parts in ~42 s cycles (cut at high spindle load,
  then load/unload), with occasional short stops and rare faults; motor current and power follow the
  load, temperatures follow it with first-order lags, vibration grows with speed and load and drifts
  up with wear, counters count parts, cycles, energy and hours.

The server is pymodbus 3.16's ``ModbusTcpServer`` over ``SimDevice``/``SimData`` blocks (one block per
function, holes readable as zeros, as most PLCs allow). A device's ``action`` hook refreshes the block
a request reads from the model before pymodbus answers, and injects faults: a Modbus exception for an
address range, or no answer at all. ``serve_modbus`` runs it in a background thread for tests;
``ModbusSimulator.stop()``/``start()`` take it down and bring it back on the same port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from collector.modbus import (
    BIT_FUNCTIONS,
    MAPS_DIR,
    ModbusDeviceConfig,
    RegisterMap,
    RegisterPoint,
    decode,
    encode,
    load_register_map,
    scaled,
)

__all__ = [
    "MachineModel",
    "ModbusSimulator",
    "PumpStationModel",
    "main",
    "main_serve",
    "map_path",
    "serve_modbus",
]

STEP_S = 1.0  # simulated seconds per model step
LOCAL_OFFSET = timedelta(hours=7)  # Asia/Bangkok, no daylight saving
RHO_G = 1000.0 * 9.81  # water density × gravity, N/m³
BAR_PER_M = RHO_G / 1e5  # bar per metre of water column

# Function codes pymodbus hands the action hook, by the block they address.
_BLOCK_OF_CODE = {1: "coil", 5: "coil", 15: "coil", 2: "discrete_input", 4: "input"}
_BLOCK_OF_CODE.update({code: "holding" for code in (3, 6, 16, 22, 23)})
_FUNCTIONS = ("coil", "discrete_input", "holding", "input")
_INT_RANGE = {
    "int16": (-(2**15), 2**15 - 1),
    "uint16": (0, 2**16 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint32": (0, 2**32 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "uint64": (0, 2**64 - 1),
}
_PLACES = ("Ban Bueng", "Nong Khae", "Bang Phli", "Sam Khok", "Wang Noi", "Lat Lum", "Tha Luang", "Don Mueang")


def map_path(name_or_path: str | Path) -> Path:
    """A shipped map by name (``pump_station``) or any YAML file by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.is_absolute() or len(path.parts) > 1:
        return path
    return MAPS_DIR / f"{name_or_path}.yaml"


def _diurnal(local_hour: float) -> float:
    """Residential demand multiplier (mean ≈ 1): low 02-04, peaks around 07:00 and 19:30."""
    h = local_hour
    return (
        0.42
        + 0.95 * math.exp(-(((h - 7.0) / 1.4) ** 2))
        + 0.80 * math.exp(-(((h - 19.5) / 1.7) ** 2))
        + 0.35 * math.exp(-(((h - 12.5) / 2.8) ** 2))
        - 0.20 * math.exp(-(((h - 3.0) / 1.2) ** 2))
    )


class PumpStationModel:
    """Ground tank → three pumps → elevated tank → network, stepped once a simulated second."""

    T1_AREA_M2 = 120.0
    T2_AREA_M2 = 40.0
    T2_START_BELOW_M = 3.0  # another pump starts below this level in the elevated tank
    T2_STOP_ABOVE_M = 4.6  # one pump stops above it
    STATIC_HEAD_M = 32.0  # pump centreline to the elevated tank's floor
    PUMP_FLOW_M3H = 95.0  # one pump at its duty point
    FRICTION_M_PER_M3H2 = 6.0 / 250.0**2  # 6 m of friction at 250 m³/h
    SUPPLY_M3H = 260.0  # bulk main through a fully open inlet valve
    BASE_DEMAND_M3H = 150.0

    def __init__(self, seed: int, plant_unit_id: str, start: datetime) -> None:
        self.rng = random.Random(f"pump_station/{seed}/{plant_unit_id}")
        rng = self.rng
        self.start = start
        self.t = 0.0
        self.name = f"{plant_unit_id} {rng.choice(_PLACES)}"[:20]
        self.demand_scale = rng.uniform(0.85, 1.15)
        self.efficiency = [rng.uniform(0.68, 0.76) for _ in range(3)]
        self.level1 = rng.uniform(2.5, 4.0)
        self.level2 = rng.uniform(3.2, 4.2)
        self.running = [False, False, False]
        self.lead = rng.randrange(3)
        self.running[self.lead] = True
        self.fault_until = [-1.0, -1.0, -1.0]
        self.last_change = -120.0
        self.run_hours = [rng.uniform(2_000, 20_000) for _ in range(3)]
        self.starts = [rng.randrange(300, 5_000) for _ in range(3)]
        self.energy_kwh = rng.uniform(1e5, 2e6)
        self.volume_out_l = rng.randrange(10**9, 10**11)
        self.volume_in_l = self.volume_out_l + rng.randrange(10**6, 10**8)
        self.values: dict[str, Any] = {}
        self._update(0.0)

    def _local_hour(self) -> float:
        moment = self.start + timedelta(seconds=self.t) + LOCAL_OFFSET
        return moment.hour + moment.minute / 60 + moment.second / 3600

    def step(self) -> None:
        """Advance one simulated second."""
        self._update(STEP_S)

    def _update(self, dt: float) -> None:
        rng = self.rng
        self.t += dt
        # Trips: rare, and a tripped pump stays out for ten minutes.
        for i in range(3):
            if self.running[i] and rng.random() < 2e-5:
                self.fault_until[i] = self.t + 600.0
                self.running[i] = False
                self.last_change = self.t
        available = [i for i in range(3) if self.fault_until[i] < self.t]
        n = sum(self.running)
        if self.t - self.last_change >= 60.0:
            if self.level2 < self.T2_START_BELOW_M and n < len(available):
                for k in range(3):
                    i = (self.lead + k) % 3
                    if i in available and not self.running[i]:
                        self.running[i] = True
                        self.starts[i] += 1
                        break
                self.last_change = self.t
            elif self.level2 > self.T2_STOP_ABOVE_M and n > 0:
                # The pump that started last stops first; the lead duty rotates when all stop.
                for k in reversed(range(3)):
                    i = (self.lead + k) % 3
                    if self.running[i]:
                        self.running[i] = False
                        break
                if not any(self.running):
                    self.lead = (self.lead + 1) % 3
                self.last_change = self.t
        if self.level1 < 0.3:  # dry-run protection
            self.running = [False, False, False]
        n = sum(self.running)
        per_pump = self.PUMP_FLOW_M3H * (1.0 - 0.07 * max(n - 1, 0)) * (1.0 + rng.gauss(0, 0.01)) if n else 0.0
        pumped = per_pump * n
        demand = self.BASE_DEMAND_M3H * self.demand_scale * _diurnal(self._local_hour()) * (1 + rng.gauss(0, 0.02))
        outflow = max(0.0, demand if self.level2 > 0.05 else min(demand, pumped))
        opening = min(1.0, max(0.0, (5.0 - self.level1) / 1.0))
        inflow = self.SUPPLY_M3H * opening * (1.0 + rng.gauss(0, 0.01)) if opening > 0 else 0.0
        self.level1 = min(5.5, max(0.0, self.level1 + (inflow - pumped) / 3600 * dt / self.T1_AREA_M2))
        self.level2 = min(6.0, max(0.0, self.level2 + (pumped - outflow) / 3600 * dt / self.T2_AREA_M2))
        self._compute(dt, inflow, outflow, pumped, per_pump)

    def _compute(self, dt: float, inflow: float, outflow: float, pumped: float, per_pump: float) -> None:
        rng = self.rng
        suction_head = self.level1 + 0.5 - 0.4 * (pumped / 250.0) ** 2
        discharge_head = self.STATIC_HEAD_M + self.level2 + self.FRICTION_M_PER_M3H2 * pumped**2
        head = discharge_head - suction_head
        voltage = 400.0 * (1 + rng.gauss(0, 0.005))
        values: dict[str, Any] = {}
        station_kw = 1.5  # controls, lighting, ventilation
        for i in range(3):
            p = i + 1
            kw = RHO_G * (per_pump / 3600) * head / self.efficiency[i] / 1000 if self.running[i] else 0.0
            station_kw += kw
            values[f"pump{p}_power"] = kw
            values[f"pump{p}_current"] = kw * 1000 / (math.sqrt(3) * voltage * 0.86) if kw else 0.0
            values[f"pump{p}_status"] = self.running[i]
            values[f"pump{p}_fault"] = self.fault_until[i] >= self.t
            if self.running[i]:
                self.run_hours[i] += dt / 3600
            values[f"pump{p}_run_hours"] = self.run_hours[i]
            values[f"pump{p}_starts"] = self.starts[i]
        self.energy_kwh += station_kw * dt / 3600
        self.volume_out_l += round(outflow / 3.6 * dt)
        self.volume_in_l += round(inflow / 3.6 * dt)
        hour = self._local_hour()
        values.update(
            inflow=inflow,
            outflow=outflow,
            suction_pressure=max(0.0, suction_head * BAR_PER_M),
            discharge_pressure=discharge_head * BAR_PER_M,
            tank1_level=self.level1,
            tank2_level=self.level2,
            water_temperature=29.0 + 1.5 * math.sin((hour - 9.0) / 24 * 2 * math.pi),
            tank1_low_alarm=self.level1 < 0.5,
            tank2_high_alarm=self.level2 > 5.6,
            station_power=station_kw,
            energy_total=self.energy_kwh,
            volume_out_total=self.volume_out_l / 1000,
            volume_in_total=self.volume_in_l / 1000,
            station_name=self.name,
            mains_voltage=voltage,
            mains_frequency=50.0 + rng.gauss(0, 0.02),
            inlet_valve_open=inflow > 1.0,
        )
        self.values = values


class MachineModel:
    """A lathe in production: cycles, short stops, rare faults, lagging temperatures, wear."""

    RATED_RPM = 1450.0

    def __init__(self, seed: int, plant_unit_id: str, start: datetime) -> None:
        self.rng = random.Random(f"machine/{seed}/{plant_unit_id}")
        rng = self.rng
        self.start = start
        self.t = 0.0
        self.name = f"{plant_unit_id} LATHE CNC"[:20]
        self.state = 1  # 0 stopped, 1 running, 2 fault, 3 maintenance
        self.state_until = 0.0
        self.cycle_pos = rng.uniform(0, 40)
        self.cycle_len = rng.uniform(39, 45)
        self.last_cycle = self.cycle_len
        self.wear = rng.uniform(0.0, 0.5)
        ambient = self._ambient()
        self.motor_temp = ambient + 35
        self.bearing_de = ambient + 18
        self.bearing_nde = ambient + 14
        self.coolant_temp = ambient + 8
        self.oil_temp = ambient + 15
        self.parts = rng.randrange(10_000, 500_000)
        self.rejected = int(self.parts * rng.uniform(0.01, 0.03))
        self.cycles = self.parts + self.rejected // 3
        self.hours = rng.uniform(1_000, 30_000)
        self.energy_kwh = rng.uniform(1e4, 5e5)
        self.faults = rng.randrange(0, 200)
        self.tool_changes = self.parts // 250 % 65536
        self.values: dict[str, Any] = {}
        self._update(0.0)

    def _ambient(self) -> float:
        moment = self.start + timedelta(seconds=self.t) + LOCAL_OFFSET
        hour = moment.hour + moment.minute / 60
        return 30.0 + 3.5 * math.sin((hour - 9.0) / 24 * 2 * math.pi)

    def step(self) -> None:
        """Advance one simulated second."""
        self._update(STEP_S)

    def _update(self, dt: float) -> None:
        rng = self.rng
        self.t += dt
        load = 0.0
        if self.state == 1:
            if rng.random() < 1 / 1800:
                self.state, self.state_until = 0, self.t + rng.uniform(60, 300)  # short stop
            elif rng.random() < 1 / 20000:
                self.state, self.state_until = 2, self.t + 300  # fault, reset by the operator
                self.faults += 1
            else:
                self.cycle_pos += dt
                if self.cycle_pos >= self.cycle_len:
                    self.cycle_pos = 0.0
                    self.last_cycle = self.cycle_len
                    self.cycle_len = rng.uniform(39, 45)
                    self.cycles += 1
                    if rng.random() < 0.02:
                        self.rejected += 1
                    else:
                        self.parts += 1
                    if self.parts % 250 == 0:
                        self.tool_changes = (self.tool_changes + 1) % 65536
                cutting = self.cycle_pos < 0.7 * self.cycle_len
                load = (0.78 if cutting else 0.15) + rng.gauss(0, 0.03)
        elif self.t >= self.state_until:
            self.state = 1
        load = min(1.0, max(0.0, load))
        if self.state == 1:
            self.hours += dt / 3600
            self.wear += dt / 3600 * 1e-4
        ambient = self._ambient()
        # First-order lags towards the load's steady temperature: motor τ 10 min, bearings 15, oil 20.
        self.motor_temp += (ambient + 10 + 45 * load - self.motor_temp) * dt / 600
        self.bearing_de += (ambient + 6 + 22 * load - self.bearing_de) * dt / 900
        self.bearing_nde += (ambient + 4 + 17 * load - self.bearing_nde) * dt / 900
        self.coolant_temp += (ambient + 3 + 9 * load - self.coolant_temp) * dt / 300
        self.oil_temp += (ambient + 5 + 20 * load - self.oil_temp) * dt / 1200
        self._compute(dt, load)

    def _compute(self, dt: float, load: float) -> None:
        rng = self.rng
        running = self.state == 1
        ambient = self._ambient()
        speed = self.RATED_RPM * (1 - 0.02 * load) + rng.gauss(0, 2) if running else 0.0
        voltage = 400.0 * (1 + rng.gauss(0, 0.004))
        pf = 0.74 + 0.12 * load if running else 0.0
        current = 8.0 + 30.0 * load + rng.gauss(0, 0.3) if running else 0.0
        power = math.sqrt(3) * voltage * current * pf / 1000
        torque = power * 1000 / (2 * math.pi * speed / 60) if speed > 1 else 0.0
        self.energy_kwh += power * dt / 3600
        base = (1.6 * speed / self.RATED_RPM + 0.9 * load) * (1 + self.wear) if running else 0.05
        vib = [max(0.0, base * k + rng.gauss(0, 0.08)) for k in (1.0, 0.85, 0.6)]
        moment = self.start + timedelta(seconds=self.t) + LOCAL_OFFSET
        hour = moment.hour + moment.minute / 60
        humidity = 72.0 - 14.0 * math.sin((hour - 9.0) / 24 * 2 * math.pi)
        gamma = math.log(humidity / 100) + 17.62 * ambient / (243.12 + ambient)  # Magnus formula
        self.values = {
            "machine_state": self.state,
            "running": running,
            "fault": self.state == 2,
            "overload": load > 0.95,
            "motor_speed": speed,
            "motor_current": current,
            "motor_voltage": voltage,
            "motor_frequency": 50.0 + rng.gauss(0, 0.02),
            "motor_power": power,
            "power_factor": pf,
            "motor_torque": torque,
            "motor_temperature": self.motor_temp,
            "bearing_de_temperature": self.bearing_de,
            "bearing_nde_temperature": self.bearing_nde,
            "spindle_load": load * 100,
            "feed_rate": 180.0 * (1 + rng.gauss(0, 0.01)) if running and load > 0.5 else 0.0,
            "speed_setpoint": self.RATED_RPM,
            "ambient_temperature": ambient,
            "humidity": humidity,
            "dew_point": 243.12 * gamma / (17.62 - gamma),
            "air_pressure": 1010.0 + 1.5 * math.cos((hour - 10.0) / 12 * 2 * math.pi),
            "coolant_temperature": self.coolant_temp,
            "coolant_flow": 12.0 + rng.gauss(0, 0.2) if running else 0.0,
            "oil_temperature": self.oil_temp,
            "oil_pressure": 2.5 + rng.gauss(0, 0.03) if running else 0.0,
            "cabinet_temperature": ambient + 6.0,
            "machine_name": self.name,
            "vibration_x": vib[0],
            "vibration_y": vib[1],
            "vibration_z": vib[2],
            "acceleration_peak": 0.4 + 1.6 * load + abs(rng.gauss(0, 0.05)) if running else 0.02,
            "crest_factor": 3.0 + rng.gauss(0, 0.15),
            "vibration_alarm": max(vib) > 7.1,  # ISO 10816 class II zone C/D boundary
            "parts_total": self.parts,
            "parts_rejected": self.rejected,
            "operating_hours": self.hours,
            "energy_total": self.energy_kwh,
            "cycle_count": self.cycles,
            "cycle_time": self.last_cycle,
            "fault_count": self.faults % 65536,
            "tool_changes": self.tool_changes,
            "uptime": int(self.t),
        }


_MODELS = {"pump_station": PumpStationModel, "machine": MachineModel}


@dataclass(frozen=True)
class _Fault:
    function: str
    first: int
    last: int
    code: int | None  # a Modbus exception code; None: no answer at all

    def hits(self, function: str, first: int, last: int) -> bool:
        return function == self.function and first <= self.last and self.first <= last


class _Device:
    """One unit id: its map, its model, and the registers encoded from the model's values."""

    def __init__(self, sim: ModbusSimulator, unit_id: int, path: Path, plant_unit_id: str | None, seed: int) -> None:
        self.sim = sim
        self.unit_id = unit_id
        self.path = path
        self.map: RegisterMap = load_register_map(path)
        kind = self.map.model or path.stem
        if kind not in _MODELS:
            raise ValueError(f"{path}: no simulator model {kind!r}; known: {', '.join(_MODELS)}")
        self.plant_unit_id = plant_unit_id or f"{'PS' if kind == 'pump_station' else 'M'}{unit_id:02d}"
        self.model = _MODELS[kind](seed, self.plant_unit_id, sim.start_time)
        self.steps = 0
        self.points: dict[str, list[RegisterPoint]] = {f: [] for f in _FUNCTIONS}
        for point in self.map.registers:
            self.points[point.function].append(point)
        self.spans = {
            f: (min(p.address for p in pts), max(p.end for p in pts)) if pts else (0, 1)
            for f, pts in self.points.items()
        }
        self.served: dict[str, Any] = {}
        self._encoded: dict[str, tuple[Any, ...]] = {}

    def sim_device(self) -> Any:
        """pymodbus' description of this unit: one block per function, holes included."""
        from pymodbus.simulator import DataType, SimData, SimDevice

        blocks = []
        for function in _FUNCTIONS:
            start, end = self.spans[function]
            if function in BIT_FUNCTIONS:
                blocks.append([SimData(start, count=end - start, values=False, datatype=DataType.BITS)])
            else:
                blocks.append([SimData(start, count=end - start, values=0, datatype=DataType.REGISTERS)])
        return SimDevice(id=self.unit_id, simdata=tuple(blocks), action=self._action)

    def advance(self) -> None:
        target = int(self.sim.model_time() // STEP_S)
        while self.steps < target:
            self.model.step()
            self.steps += 1

    def current(self) -> dict[str, Any]:
        return {**self.model.values, **self.sim.overrides.get(self.unit_id, {})}

    def _raw(self, point: RegisterPoint, value: Any) -> Any:
        """The raw register value a device would hold for an engineering value."""
        data_type = point.data_type
        if data_type == "string":
            return str(value)
        if data_type == "bool":
            return bool(value)
        raw = (float(value) - point.offset) / point.scale
        if data_type in _INT_RANGE:
            low, high = _INT_RANGE[data_type]
            return min(high, max(low, round(raw)))  # a transmitter saturates at its range
        return raw

    async def _action(
        self, function_code: int, start: int, address: int, count: int, registers: list[int], _written: Any
    ) -> Any:
        """pymodbus calls this before answering: inject faults, then refresh the block being read."""
        from pymodbus.constants import ExcCodes
        from pymodbus.exceptions import NoSuchIdException

        function = _BLOCK_OF_CODE.get(function_code, "holding")
        # For coils and discrete inputs pymodbus passes the bit address and a count of 16-bit words.
        last = address + (count * 16 if function in BIT_FUNCTIONS else count) - 1
        self.sim.requests += 1
        for fault in self.sim.faults.get(self.unit_id, ()):
            if fault.hits(function, address, last):
                if fault.code is None:
                    raise NoSuchIdException("simulated silence")  # the server is told to drop it
                return ExcCodes(fault.code)
        self.advance()
        version = (self.steps, self.sim.overrides_version, id(registers))
        if self._encoded.get(function) != version:
            self._refresh(function, start, registers)
            self._encoded[function] = version
        return None

    def snapshot(self) -> dict[str, Any]:
        """Encode every point into scratch registers and return what they decode to."""
        self.advance()
        for function in _FUNCTIONS:
            first, end = self.spans[function]
            if function in BIT_FUNCTIONS:
                self._refresh(function, first // 16, [0] * ((end + 15) // 16 - first // 16 + 1))
            else:
                self._refresh(function, first, [0] * (end - first))
        return dict(self.served)

    def _refresh(self, function: str, start: int, registers: list[int]) -> None:
        values = self.current()
        first, end = self.spans[function]
        if function in BIT_FUNCTIONS:
            # Bit blocks are 16-bit words, bit 0 first; ``start`` is the first word's index.
            words = registers
            for point in self.points[function]:
                state = bool(values.get(point.name, False))
                self.served[point.name] = 1.0 if state else 0.0
                word, bit = divmod(point.address, 16)
                if state:
                    words[word - start] |= 1 << bit
                else:
                    words[word - start] &= ~(1 << bit) & 0xFFFF
            return
        block = [0] * (end - first)
        for point in self.points[function]:
            raw = self._raw(point, values.get(point.name, 0))
            encoded = encode(raw, point.data_type, point.byte_order, length=point.length, bit=point.bit)
            o = point.address - first
            if point.bit is not None:
                block[o] |= encoded[0]
            else:
                block[o : o + len(encoded)] = encoded
            # What a correct reader must decode: the raw value after its trip through the registers.
            back = decode(
                block[o : o + len(encoded)], point.data_type, point.byte_order, length=point.length, bit=point.bit
            )
            if isinstance(back, bool):
                self.served[point.name] = 1.0 if back else 0.0
            elif isinstance(back, str):
                self.served[point.name] = back
            else:
                self.served[point.name] = scaled(back, point.scale, point.offset)
        registers[first - start : end - start] = block


class ModbusSimulator:
    """A running simulator: where it listens, and the handles tests pull (values, faults, outages).

    Thread-safe: every method may be called from the test's thread while the server runs in its own.
    """

    def __init__(
        self,
        maps: Mapping[int, str | Path],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seed: int = 7,
        start_time: datetime | None = None,
        speed: float = 1.0,
        plant_units: Mapping[int, str] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.seed = seed
        self.start_time = start_time or datetime.now(UTC).replace(microsecond=0)
        self.speed = speed
        self.requests = 0
        self.overrides: dict[int, dict[str, Any]] = {}
        self.overrides_version = 0
        self.faults: dict[int, tuple[_Fault, ...]] = {}
        self._t0 = time.monotonic()
        self._paused_at: float | None = None
        self.devices: dict[int, _Device] = {}
        for unit_id, name in maps.items():
            self.devices[unit_id] = _Device(self, unit_id, map_path(name), (plant_units or {}).get(unit_id), seed)
        self._server: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ simulated time

    def model_time(self) -> float:
        """Simulated seconds since the start (frozen while paused)."""
        now = self._paused_at if self._paused_at is not None else time.monotonic()
        return (now - self._t0) * self.speed

    def pause(self) -> None:
        """Freeze the model: registers keep their values until ``resume``."""
        if self._paused_at is None:
            self._paused_at = time.monotonic()

    def resume(self) -> None:
        if self._paused_at is not None:
            self._t0 += time.monotonic() - self._paused_at
            self._paused_at = None

    # ------------------------------------------------------------ values and faults

    def set_value(self, unit_id: int, name: str, value: float | bool | str) -> None:
        """Pin a point to an engineering value (before scale and offset are undone) until cleared."""
        device = self.devices[unit_id]
        if name not in {p.name for p in device.map.registers}:
            raise KeyError(f"unit {unit_id} ({device.path.name}) has no point {name!r}")
        self.overrides = {**self.overrides, unit_id: {**self.overrides.get(unit_id, {}), name: value}}
        self.overrides_version += 1

    def clear_values(self, unit_id: int | None = None) -> None:
        self.overrides = {} if unit_id is None else {k: v for k, v in self.overrides.items() if k != unit_id}
        self.overrides_version += 1

    def served(self, unit_id: int) -> dict[str, Any]:
        """What the unit's registers hold now, as a correct reader decodes them (scale/offset applied).

        Strings come back as text, bools as 1.0/0.0. With the model paused this is exactly what the
        next poll reads.
        """
        device = self.devices[unit_id]
        if self._loop is not None:
            # The model only ever steps on the server's loop; take the snapshot there too.
            async def snapshot() -> dict[str, Any]:
                return device.snapshot()

            return asyncio.run_coroutine_threadsafe(snapshot(), self._loop).result(timeout=10)
        return device.snapshot()

    def fault(self, unit_id: int, function: str, first: int, last: int | None = None, *, code: int | None = 2) -> None:
        """Answer reads overlapping ``first..last`` with Modbus exception ``code`` (None: no answer)."""
        if function not in _FUNCTIONS:
            raise ValueError(f"function must be one of {_FUNCTIONS}")
        fault = _Fault(function, first, first if last is None else last, code)
        self.faults = {**self.faults, unit_id: (*self.faults.get(unit_id, ()), fault)}

    def clear_faults(self) -> None:
        self.faults = {}

    def device_config(self, unit_id: int, **overrides: Any) -> ModbusDeviceConfig:
        """A reader configuration pointing at this simulator's unit (tests, benchmark, demo)."""
        device = self.devices[unit_id]
        settings: dict[str, Any] = {
            "name": f"sim-{device.plant_unit_id}",
            "host": self.host,
            "port": self.port,
            "unit_id": unit_id,
            "plant_unit_id": device.plant_unit_id,
            "register_map": str(device.path.resolve()),
        }
        return ModbusDeviceConfig.model_validate({**settings, **overrides})

    # ------------------------------------------------------------ serving

    async def serve(self) -> None:
        """Start listening (in the running loop); port 0 picks a free port, kept across restarts."""
        from pymodbus.server import ModbusTcpServer

        devices = [device.sim_device() for device in self.devices.values()]
        server = ModbusTcpServer(devices, address=(self.host, self.port), ignore_missing_devices=True)
        await server.serve_forever(background=True)
        if server.transport is None:
            raise OSError(f"Modbus simulator could not listen on {self.host}:{self.port}")
        self.port = server.transport.sockets[0].getsockname()[1]
        for device in self.devices.values():
            device._encoded.clear()
        self._server = server

    async def shutdown(self) -> None:
        """Close the listener and every client connection (clients see the link drop)."""
        if self._server is not None:
            server, self._server = self._server, None
            await server.shutdown()
            await asyncio.sleep(0)

    def _call(self, coroutine: Any) -> None:
        if self._loop is None:
            raise RuntimeError("the simulator is not running in a background thread (use serve_modbus)")
        asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=10)

    def start(self) -> None:
        """Listen again (on the same port as before)."""
        self._call(self.serve())

    def stop(self) -> None:
        """Go down: the port closes and connected clients are cut off."""
        self._call(self.shutdown())

    def restart(self, down_s: float = 0.0) -> None:
        """Go down for ``down_s`` seconds and come back on the same port."""
        self.stop()
        time.sleep(down_s)
        self.start()

    @property
    def running(self) -> bool:
        return self._server is not None

    def run_in_thread(self) -> None:
        """Start an event loop in a daemon thread and serve from it."""
        ready = threading.Event()

        def target() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._loop.call_soon(ready.set)
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=target, name="modbus-simulator", daemon=True)
        self._thread.start()
        ready.wait(10)
        self.start()

    def close(self) -> None:
        """Stop serving and end the background thread."""
        if self._loop is None:
            return
        with contextlib.suppress(Exception):
            self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"


@contextlib.contextmanager
def serve_modbus(
    maps: Mapping[int, str | Path] | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    seed: int = 7,
    start_time: datetime | None = None,
    speed: float = 1.0,
    plant_units: Mapping[int, str] | None = None,
) -> Iterator[ModbusSimulator]:
    """Serve simulated devices from a background thread for the duration of the ``with`` block.

    ``maps`` maps Modbus unit ids to a shipped map name or a YAML path; the default is a pump station
    on unit 1 (plant unit PS01) and a machine on unit 2 (M02).
    """
    simulator = ModbusSimulator(
        maps or {1: "pump_station", 2: "machine"},
        host=host,
        port=port,
        seed=seed,
        start_time=start_time,
        speed=speed,
        plant_units=plant_units,
    )
    simulator.run_in_thread()
    try:
        yield simulator
    finally:
        simulator.close()


def main_serve(host: str, port: int, maps: Mapping[int, str | Path], seed: int = 7, speed: float = 1.0) -> None:
    """Serve in the foreground until interrupted; prints one line with the endpoint once listening."""

    async def serve() -> None:
        simulator = ModbusSimulator(maps, host=host, port=port, seed=seed, speed=speed)
        await simulator.serve()
        groups: dict[str, list[_Device]] = {}
        for device in simulator.devices.values():
            groups.setdefault(device.path.stem, []).append(device)
        described = "; ".join(
            f"{kind}: units {units[0].unit_id}-{units[-1].unit_id} ({units[0].plant_unit_id}-{units[-1].plant_unit_id})"
            if len(units) > 1
            else f"{kind}: unit {units[0].unit_id} ({units[0].plant_unit_id})"
            for kind, units in groups.items()
        )
        print(f"Modbus simulator ({described}; seed {seed}) on {simulator.endpoint}", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())


def main(argv: list[str] | None = None) -> None:
    """Pump stations and machines on one Modbus TCP port, each a Modbus unit id (``ihub simulate modbus``)."""
    parser = argparse.ArgumentParser(
        prog="ihub simulate modbus",
        description="Pump stations (collector/maps/pump_station.yaml) and machines (machine.yaml) as Modbus "
        "units on one TCP port, values from a model deterministic from the seed. Also: python -m simulators.modbus",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5020, help="0 picks a free port (printed)")
    parser.add_argument("--pump-stations", type=int, default=1, help="units 1..N serve pump_station.yaml")
    parser.add_argument("--machines", type=int, default=1, help="the next units serve machine.yaml")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--speed", type=float, default=1.0, help="simulated seconds per real second")
    args = parser.parse_args(argv)
    if not 1 <= args.pump_stations + args.machines <= 247:
        parser.error("between 1 and 247 units in all (Modbus unit ids 1-247)")
    maps: dict[int, str | Path] = {i: "pump_station" for i in range(1, args.pump_stations + 1)}
    maps.update({args.pump_stations + i: "machine" for i in range(1, args.machines + 1)})
    main_serve(args.host, args.port, maps, seed=args.seed, speed=args.speed)


if __name__ == "__main__":
    main()
