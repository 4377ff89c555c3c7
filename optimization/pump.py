"""Pump scheduling: which pump runs in which 15-minute step so the tanks stay in their band at least cost.

`PumpInstance` holds everything a plan depends on (the station, the demand per tank and step, the tariff
per step, the starting levels and pump states); `validate` checks it before anything is built, naming the
station, pump, tank and step of each problem and the range expected; `build_model` makes the MILP from
whole arrays (optimization.model); `plan` solves it and runs the operators' level rule on the same inputs
(`simulate_baseline`), so every plan says what it saves. The formulation is in docs/optimization/pump.md.

Sets: pumps p, tanks k, steps t = 0..T-1 of Δ hours. Decisions: on[p,t] ∈ {0,1}, start/stop[p,t] ∈ [0,1]
(exact given binary on), level[k,t] for t = 0..T (level[k,0] is the measured start), supply[k,t] from the
bulk main, peak (kW drawn in the worst on-peak step). Objective: Σ price[t]·kW[p]·Δ·on[p,t] + charge·peak.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from optimization.model import LinearModel, ModelBuilder
from optimization.solver import Solution, SolverOptions, SolveStatus, Violation, explain_infeasibility, solve
from optimization.stations import Station
from optimization.stations import station as shipped_station

__all__ = [
    "MAX_STEPS",
    "BaselineResult",
    "PumpInputError",
    "PumpInstance",
    "PumpPlan",
    "build_model",
    "example_instance",
    "instance_from_json",
    "instance_to_json",
    "plan",
    "simulate_baseline",
    "validate",
]

MAX_STEPS = 672  # seven days of 15-minute steps
DEFAULT_STEPS = 96
LOCAL_OFFSET = timedelta(hours=7)
# What may give when there is no plan: the operating requirements. Water balances and switching are
# physics and stay exact, so an explanation names a tank, a level and a time, not water from nowhere.
ELASTIC_FAMILIES = (
    "tank_min_level",
    "tank_max_level",
    "end_level",
    "min_run",
    "min_rest",
    "starts_per_day",
)  # step labels in Asia/Bangkok time, as operators read the clock


class PumpInputError(ValueError):
    """The instance cannot be planned as given; ``problems`` lists every reason, each naming where."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


@dataclass(frozen=True)
class PumpInstance:
    """One planning problem. Arrays are per tank (station order) × step, per step, or per pump."""

    station: Station
    start: datetime  # UTC start of step 0
    demand_m3h: np.ndarray  # (tanks, steps): water drawn from each tank by its DMAs
    price_thb_per_kwh: np.ndarray  # (steps,)
    on_peak: np.ndarray  # (steps,) bool: the step counts toward the on-peak demand charge
    initial_level_m: np.ndarray  # (tanks,)
    initial_on: np.ndarray  # (pumps,) bool
    initial_steps_in_state: np.ndarray  # (pumps,) how many steps each pump has been on (or off) already
    demand_charge_thb_per_kw: float = 0.0
    step_minutes: int = 15
    out_of_service: frozenset[str] = frozenset()  # pumps unavailable beyond the station's own in_service flags
    name: str = "base"  # the scenario

    @property
    def steps(self) -> int:
        return int(np.asarray(self.price_thb_per_kwh).shape[0])

    @property
    def step_h(self) -> float:
        return self.step_minutes / 60.0

    def available(self) -> np.ndarray:
        return np.array([p.in_service and p.id not in self.out_of_service for p in self.station.pumps])

    def unavailable_ids(self) -> list[str]:
        return [p.id for p, ok in zip(self.station.pumps, self.available(), strict=True) if not ok]

    def step_start(self, t: int) -> datetime:
        return self.start + timedelta(minutes=self.step_minutes * t)

    def step_label(self, t: int) -> str:
        """The local clock time at the start of step t (the end of the horizon for t = T)."""
        moment = self.step_start(t) + LOCAL_OFFSET
        return moment.strftime("%H:%M") if self.steps <= DEFAULT_STEPS else moment.strftime("%a %H:%M")


# ---------------------------------------------------------------------------------------------- validation


def validate(instance: PumpInstance) -> None:
    """Raise `PumpInputError` listing every problem, each naming station, tank, pump or step and the range."""
    s, problems = instance.station, []
    where = f"station {s.id}"
    tanks, pumps = len(s.tanks), len(s.pumps)
    price = np.asarray(instance.price_thb_per_kwh, dtype=float)
    steps = price.shape[0] if price.ndim == 1 else 0
    if price.ndim != 1 or not 1 <= steps <= MAX_STEPS:
        problems.append(f"{where}: horizon is {price.shape[0] if price.ndim else 0} steps, expected 1..{MAX_STEPS}")
    if instance.step_minutes != 15:
        problems.append(f"{where}: step_minutes is {instance.step_minutes}, expected 15 (the tariff's step)")
    if instance.start.tzinfo is None:
        problems.append(f"{where}: start {instance.start} has no timezone, expected UTC")
    bad = np.flatnonzero(~np.isfinite(price) | (price < 0) | (price > 100))
    if bad.size:
        problems.append(
            f"{where}: tariff missing or out of range at step(s) {_steps(bad)} (got {float(price[bad[0]])!r} at step "
            f"{bad[0]}), expected 0..100 THB/kWh at every step"
        )
    on_peak = np.asarray(instance.on_peak)
    if on_peak.shape != (steps,):
        problems.append(f"{where}: on_peak has {on_peak.size} steps, expected {steps} like the tariff")
    if not 0 <= instance.demand_charge_thb_per_kw <= 10_000:
        problems.append(f"{where}: demand charge {instance.demand_charge_thb_per_kw} THB/kW, expected 0..10000 THB/kW")
    demand = np.asarray(instance.demand_m3h, dtype=float)
    if demand.shape != (tanks, steps):
        problems.append(
            f"{where}: demand has shape {demand.shape}, expected ({tanks} tanks, {steps} steps) "
            f"for tanks {[t.id for t in s.tanks]}"
        )
    else:
        for k, tank in enumerate(s.tanks):
            row = demand[k]
            bad = np.flatnonzero(~np.isfinite(row) | (row < 0) | (row > 100_000))
            if bad.size:
                problems.append(
                    f"{where}, tank {tank.id}: demand {float(row[bad[0]])!r} m³/h at step {bad[0]} "
                    f"({_steps(bad)}), expected 0..100000 m³/h"
                )
    level = np.asarray(instance.initial_level_m, dtype=float)
    if level.shape != (tanks,):
        problems.append(f"{where}: {level.size} initial levels, expected one per tank {[t.id for t in s.tanks]}")
    else:
        for k, tank in enumerate(s.tanks):
            if tank.min_level_m >= tank.max_level_m:  # a Station built in code, not through the file
                problems.append(
                    f"{where}, tank {tank.id}: bounds inverted (min {tank.min_level_m} m ≥ max {tank.max_level_m} m)"
                )
            if not np.isfinite(level[k]) or not 0 <= level[k] <= tank.max_level_m + 1.0:
                problems.append(
                    f"{where}, tank {tank.id}: initial level {float(level[k])!r} m, "
                    f"expected 0..{tank.max_level_m + 1.0} m"
                )
    for name, values in (
        ("initial_on", instance.initial_on),
        ("initial_steps_in_state", instance.initial_steps_in_state),
    ):
        if np.asarray(values).shape != (pumps,):
            problems.append(f"{where}: {name} has {np.asarray(values).size} values, expected one per pump")
    if np.asarray(instance.initial_steps_in_state).shape == (pumps,):
        for p, pump in enumerate(s.pumps):
            if int(instance.initial_steps_in_state[p]) < 0:
                problems.append(f"{where}, pump {pump.id}: steps in its initial state is negative, expected ≥ 0")
    unknown = sorted(set(instance.out_of_service) - {p.id for p in s.pumps})
    if unknown:
        problems.append(
            f"{where}: pumps out of service {unknown} are not pumps of the station {[p.id for p in s.pumps]}"
        )
    if problems:
        raise PumpInputError(problems)


def _steps(indices: np.ndarray) -> str:
    shown = ", ".join(str(int(i)) for i in indices[:8])
    return shown + (f" … ({indices.size} steps)" if indices.size > 8 else "")


# ---------------------------------------------------------------------------------------------- model


def _window(steps_min: Sequence[int], step_minutes: int) -> np.ndarray:
    """Minutes as whole steps, rounded up (30 min → 2 steps); at least one step."""
    return np.maximum(1, -(-np.asarray(steps_min, dtype=np.int64) // step_minutes))


def _window_terms(cols: np.ndarray, width: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each (p, t): the columns cols[p, t-w+1 .. t] and coefficient 1 where inside the window and ≥ 0.

    Returns (P·T, W) columns and coefficients; entries outside a pump's window point at a valid column
    with coefficient 0 (the builder drops zeros), so the whole family is one fancy-indexing operation.
    """
    pumps, steps = cols.shape
    w_max = int(width.max())
    lag = np.arange(w_max)  # τ = t - lag
    t = np.arange(steps)
    tau = t[None, :, None] - lag[None, None, :]  # (1, T, W)
    inside = (tau >= 0) & (lag[None, None, :] < width[:, None, None])  # (P, T, W)
    columns = cols[np.arange(pumps)[:, None, None], np.clip(tau, 0, None)]  # (P, T, W)
    return columns.reshape(pumps * steps, w_max), inside.reshape(pumps * steps, w_max).astype(float)


def build_model(instance: PumpInstance) -> LinearModel:
    """The pump scheduling MILP of `instance` (validated first), every family added as whole arrays."""
    validate(instance)
    s = instance.station
    steps, dt = instance.steps, instance.step_h
    tanks, pumps = s.tanks, s.pumps
    K, P = len(tanks), len(pumps)
    flow = np.array([p.flow_m3h for p in pumps])
    kw = np.array([p.power_kw for p in pumps])
    area = np.array([t.area_m2 for t in tanks])
    lo = np.array([t.min_level_m for t in tanks])
    hi = np.array([t.max_level_m for t in tanks])
    price = np.asarray(instance.price_thb_per_kwh, dtype=float)
    peak_steps = np.flatnonzero(np.asarray(instance.on_peak, dtype=bool))
    level0 = np.asarray(instance.initial_level_m, dtype=float)
    available = instance.available()
    out = instance.unavailable_ids()
    out_text = f" with {', '.join(out)} out of service" if out else ""
    label = instance.step_label

    b = ModelBuilder(f"pump schedule {s.id} {instance.start:%Y-%m-%d %H:%M}Z {instance.name}")
    # Pump states. A pump out of service has upper bound 0. A pump that has run (rested) less than its
    # minimum before the horizon keeps running (resting) until the minimum is served.
    run_w = _window([p.min_run_min for p in pumps], instance.step_minutes)
    rest_w = _window([p.min_rest_min for p in pumps], instance.step_minutes)
    on0 = np.asarray(instance.initial_on, dtype=bool)
    served = np.asarray(instance.initial_steps_in_state, dtype=np.int64)
    t_idx = np.arange(steps)[None, :]
    must_run = available[:, None] & on0[:, None] & (t_idx < (run_w - served)[:, None])
    must_rest = ~on0[:, None] & (t_idx < (rest_w - served)[:, None])
    on_upper = np.where(available[:, None] & ~must_rest, 1.0, 0.0) * np.ones((P, steps))
    on = b.variables(
        "pump_on",
        (P, steps),
        kind="binary",
        lower=must_run.astype(float),
        upper=on_upper,
        cost=price[None, :] * kw[:, None] * dt,
    )
    start = b.variables("pump_start", (P, steps), upper=1.0)
    stop = b.variables("pump_stop", (P, steps), upper=1.0)
    level = b.variables("tank_level_m", (K, steps + 1), lower=-np.inf)
    supply = b.variables("tank_supply_m3h", (K, steps), upper=np.array([t.supply_max_m3h for t in tanks])[:, None])
    # The on-peak peak as a staircase over the kW sums pumps can draw together (0 < c1 < c2 < …):
    # peak = Σ_j (c_j − c_{j−1})·w_j with w_1 ≥ w_2 ≥ … binary. The real peak is always one of those sums,
    # so this is exact; unlike one continuous peak it lets branching on a single w_j cap the on-peak
    # draw at a level and prove what that costs in the tanks (a continuous peak left gaps of 3–8 %).
    levels = _peak_levels(kw[available]) if peak_steps.size else np.zeros(1)
    steps_up = np.diff(levels)
    peak = b.variables("peak_level_on", steps_up.size, kind="binary", cost=instance.demand_charge_thb_per_kw * steps_up)

    # on[t] - on[t-1] = start[t] - stop[t]; on[-1] is the measured state.
    prev = np.concatenate([np.zeros((P, 1), dtype=np.int64), on[:, :-1]], axis=1)
    prev_coef = np.concatenate([np.zeros((P, 1)), -np.ones((P, steps - 1))], axis=1)
    initial = np.zeros((P, steps))
    initial[:, 0] = on0.astype(float)
    pump_ids = [p.id for p in pumps]
    b.constraints(
        "switching",
        [(on.ravel(), 1.0), (prev.ravel(), prev_coef.ravel()), (start.ravel(), -1.0), (stop.ravel(), 1.0)],
        lower=initial.ravel(),
        upper=initial.ravel(),
        describe=lambda i: f"pump {pump_ids[i // steps]} changes state at {label(i % steps)}",
    )
    # Minimum run: a start in the last run_w steps means the pump is on now (Rajan & Takriti, tight).
    cols, coef = _window_terms(start, run_w)
    b.constraints(
        "min_run",
        [(cols, coef), (on.ravel(), -1.0)],
        upper=0.0,
        describe=lambda i: (
            f"pump {pump_ids[i // steps]} must run {pumps[i // steps].min_run_min} min once started "
            f"(at {label(i % steps)}){out_text}"
        ),
    )
    cols, coef = _window_terms(stop, rest_w)
    b.constraints(
        "min_rest",
        [(cols, coef), (on.ravel(), 1.0)],
        upper=1.0,
        describe=lambda i: (
            f"pump {pump_ids[i // steps]} must rest {pumps[i // steps].min_rest_min} min once stopped "
            f"(at {label(i % steps)})"
        ),
    )
    # Starts per pump per day: days counted from the start of the horizon (the last one may be partial).
    per_day = 24 * 60 // instance.step_minutes
    days = -(-steps // per_day)
    day_of = np.arange(days * per_day).reshape(days, per_day)
    inside = (day_of < steps).astype(float)
    day_cols = start[:, np.clip(day_of, 0, steps - 1)]  # (P, days, per_day)
    limit = np.array([p.max_starts_per_day for p in pumps], dtype=float)
    b.constraints(
        "starts_per_day",
        [(day_cols.reshape(P * days, per_day), np.broadcast_to(inside, (P, days, per_day)).reshape(P * days, per_day))],
        upper=np.repeat(limit, days),
        describe=lambda i: (
            f"pump {pump_ids[i // days]} may start at most {pumps[i // days].max_starts_per_day} times "
            f"on day {i % days + 1} of the plan"
        ),
    )
    # Mass balance: level[k,t+1] = level[k,t] + Δ/area·(Σ in − Σ out + supply − demand).
    gain = np.zeros((K, P))
    for p, pump in enumerate(pumps):  # a loop over pumps (a handful), not coefficients
        gain[s.tank_index(pump.to_tank), p] += flow[p] * dt
        if pump.from_tank is not None:
            gain[s.tank_index(pump.from_tank), p] -= flow[p] * dt
    gain /= area[:, None]
    demand = np.asarray(instance.demand_m3h, dtype=float)
    tank_ids = [t.id for t in tanks]
    on_by_step = np.broadcast_to(on.T[None, :, :], (K, steps, P)).reshape(K * steps, P)
    b.constraints(
        "mass_balance",
        [
            (level[:, 1:].ravel(), 1.0),
            (level[:, :-1].ravel(), -1.0),
            (on_by_step, np.broadcast_to(-gain[:, None, :], (K, steps, P)).reshape(K * steps, P)),
            (supply.ravel(), np.repeat(-dt / area, steps)),
        ],
        lower=(-demand * dt / area[:, None]).ravel(),
        upper=(-demand * dt / area[:, None]).ravel(),
        describe=lambda i: f"tank {tank_ids[i // steps]} balances inflow and demand at {label(i % steps)}",
    )
    b.constraints(
        "initial_level",
        [(level[:, 0], 1.0)],
        lower=level0,
        upper=level0,
        describe=lambda i: f"tank {tank_ids[i]} starts at its measured {level0[i]:.2f} m",
    )
    # Level bands as rows (not column bounds), so an infeasible plan names the tank, the level and the time.
    b.constraints(
        "tank_min_level",
        [(level[:, 1:].ravel(), 1.0)],
        lower=np.repeat(lo, steps),
        describe=lambda i: (
            f"tank {tank_ids[i // steps]} cannot stay above {lo[i // steps]:.2f} m at {label(i % steps + 1)}{out_text}"
        ),
    )
    b.constraints(
        "tank_max_level",
        [(level[:, 1:].ravel(), 1.0)],
        upper=np.repeat(hi, steps),
        describe=lambda i: (
            f"tank {tank_ids[i // steps]} cannot stay below {hi[i // steps]:.2f} m at {label(i % steps + 1)}"
        ),
    )
    end = np.array(
        [t.target_end_level_m if t.target_end_level_m is not None else l0 for t, l0 in zip(tanks, level0, strict=True)]
    )
    end = np.minimum(end, hi)
    b.constraints(
        "end_level",
        [(level[:, steps], 1.0)],
        lower=end,
        describe=lambda i: f"tank {tank_ids[i]} cannot end the plan at {end[i]:.2f} m or above{out_text}",
    )
    if peak_steps.size and steps_up.size:
        if steps_up.size > 1:
            b.constraints("peak_staircase", [(peak[:-1], 1.0), (peak[1:], -1.0)], lower=0.0)
        b.constraints(
            "on_peak_demand",
            [
                (
                    np.broadcast_to(peak, (peak_steps.size, peak.size)),
                    np.broadcast_to(steps_up, (peak_steps.size, peak.size)),
                ),
                (on[:, peak_steps].T, -kw[None, :]),
            ],
            lower=0.0,
            describe=lambda i: f"peak on-peak kW covers the pumps running at {label(int(peak_steps[i]))}",
        )
    return b.build()


def _peak_levels(kw: np.ndarray) -> np.ndarray:
    """Every kW total a set of pumps can draw together, sorted, 0 first (2^P sums; P is a handful)."""
    if kw.size > 12:
        raise PumpInputError([f"{kw.size} pumps in service: the demand-charge staircase handles at most 12"])
    subsets = (
        np.array(np.meshgrid(*[[0, 1]] * kw.size, indexing="ij")).reshape(kw.size, -1) if kw.size else np.zeros((0, 1))
    )
    return np.unique(np.round(kw @ subsets, 6))


# ---------------------------------------------------------------------------------------------- baseline


@dataclass(frozen=True)
class BaselineResult:
    """The operators' level rule simulated step by step: pump states, levels, and what it costs."""

    on: np.ndarray  # (pumps, steps) bool
    level_m: np.ndarray  # (tanks, steps + 1)
    supply_m3h: np.ndarray  # (tanks, steps)
    energy_thb: float
    demand_charge_thb: float
    band_violations: int  # steps where a tank left its band (the rule does not look ahead)

    @property
    def cost_thb(self) -> float:
        return self.energy_thb + self.demand_charge_thb


def simulate_baseline(instance: PumpInstance) -> BaselineResult:
    """Level-controlled on/off as operators run pumps without a plan, on the same inputs as the plan.

    Each step, for every rule (tank, start below X, stop above Y): below X another available pump into
    the tank starts (the one rested longest); above Y the one running longest stops; one change per tank
    per step, as the simulator's controller does. A tank with a bulk-main supply refills like a float
    valve (up to its supply limit, never above its top level). Pumps of tanks without a rule keep their
    initial state. Levels are not clipped: a step outside the band is counted, not hidden.
    """
    validate(instance)
    s = instance.station
    steps, dt = instance.steps, instance.step_h
    P, K = len(s.pumps), len(s.tanks)
    flow = np.array([p.flow_m3h for p in s.pumps])
    area = np.array([t.area_m2 for t in s.tanks])
    supply_max = np.array([t.supply_max_m3h for t in s.tanks])
    demand = np.asarray(instance.demand_m3h, dtype=float)
    available = instance.available()
    into = np.array([s.tank_index(p.to_tank) for p in s.pumps])
    out_of = np.array([s.tank_index(p.from_tank) if p.from_tank else -1 for p in s.pumps])
    state = np.asarray(instance.initial_on, dtype=bool) & available
    since = np.asarray(instance.initial_steps_in_state, dtype=np.int64).copy()
    on = np.zeros((P, steps), dtype=bool)
    level = np.zeros((K, steps + 1))
    level[:, 0] = instance.initial_level_m
    supply = np.zeros((K, steps))
    for t in range(steps):
        for rule in s.baseline:
            k = s.tank_index(rule.tank)
            candidates = np.flatnonzero((into == k) & available)
            if level[k, t] < rule.start_below_m:
                idle = candidates[~state[candidates]]
                if idle.size:
                    chosen = idle[np.argmax(since[idle])]
                    state[chosen], since[chosen] = True, 0
            elif level[k, t] > rule.stop_above_m:
                running = candidates[state[candidates]]
                if running.size:
                    chosen = running[np.argmax(since[running])]
                    state[chosen], since[chosen] = False, 0
        on[:, t] = state
        net = np.zeros(K)
        np.add.at(net, into, flow * state)
        drawn = np.zeros(K)
        np.add.at(drawn, out_of[out_of >= 0], (flow * state)[out_of >= 0])
        net -= drawn
        net -= demand[:, t]
        # Float valve: fill what leaves plus the way back to the top level, within the main's capacity.
        room = (np.array([tk.max_level_m for tk in s.tanks]) - level[:, t]) * area / dt
        supply[:, t] = np.clip(room - net, 0.0, supply_max)
        level[:, t + 1] = level[:, t] + (net + supply[:, t]) * dt / area
        since += 1
    lo = np.array([t.min_level_m for t in s.tanks])[:, None]
    hi = np.array([t.max_level_m for t in s.tanks])[:, None]
    violations = int(np.sum((level[:, 1:] < lo - 1e-9) | (level[:, 1:] > hi + 1e-9)))
    energy, charge = _costs(instance, on)
    return BaselineResult(on, level, supply, energy, charge, violations)


def _costs(instance: PumpInstance, on: np.ndarray) -> tuple[float, float]:
    kw = np.array([p.power_kw for p in instance.station.pumps])
    step_kw = kw @ on.astype(float)
    energy = float(np.sum(step_kw * instance.step_h * np.asarray(instance.price_thb_per_kwh)))
    peak_steps = np.asarray(instance.on_peak, dtype=bool)
    peak = float(step_kw[peak_steps].max()) if peak_steps.any() else 0.0
    return energy, peak * instance.demand_charge_thb_per_kw


# ---------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class PumpPlan:
    """A solved (or explained) schedule with the baseline it is compared with."""

    instance: PumpInstance
    solution: Solution
    baseline: BaselineResult
    build_s: float
    violations: list[Violation] = field(default_factory=list)  # why there is no plan, when there is none

    @property
    def has_plan(self) -> bool:
        return self.solution.status.has_solution

    @property
    def on(self) -> np.ndarray:
        return self.solution.values("pump_on").astype(bool)

    @property
    def level_m(self) -> np.ndarray:
        return self.solution.values("tank_level_m")

    def costs(self) -> dict[str, float]:
        """Plan and baseline cost in THB by component, and the saving (THB and % of the baseline).

        The two need not end the horizon with the same water: the plan must reach its end levels, the level
        rule ends wherever it is. The difference is priced as the energy to pump it with the tank's most
        efficient pump at the horizon's cheapest price (``baseline_end_water_thb``, added to the baseline),
        so a plan never looks better (or worse) for leaving more (or less) water for the next day.
        """
        base = self.baseline
        out: dict[str, float] = {
            "baseline_energy_thb": round(base.energy_thb, 2),
            "baseline_demand_charge_thb": round(base.demand_charge_thb, 2),
            "baseline_cost_thb": round(base.cost_thb, 2),
        }
        if self.has_plan:
            energy, charge = _costs(self.instance, self.on)
            total = energy + charge
            water = self._end_water_thb()
            compared = base.cost_thb + water
            out.update(
                plan_energy_thb=round(energy, 2),
                plan_demand_charge_thb=round(charge, 2),
                plan_cost_thb=round(total, 2),
                baseline_end_water_thb=round(water, 2),
                saving_thb=round(compared - total, 2),
                saving_pct=round(100 * (compared - total) / compared, 2) if compared > 0 else 0.0,
            )
        return out

    def _end_water_thb(self) -> float:
        inst, s = self.instance, self.instance.station
        cheapest = float(np.min(inst.price_thb_per_kwh))
        value = 0.0
        for k, tank in enumerate(s.tanks):
            kwh_per_m3 = [p.power_kw / p.flow_m3h for p in s.pumps if p.to_tank == tank.id]
            if not kwh_per_m3 or tank.supply_max_m3h > 0:
                continue  # filled from the bulk main, which the plan does not pay for
            extra_m3 = (self.level_m[k, -1] - self.baseline.level_m[k, -1]) * tank.area_m2
            value += extra_m3 * min(kwh_per_m3) * cheapest
        return float(value)

    def metadata(self) -> dict[str, Any]:
        meta = {**self.solution.metadata(self.build_s), **self.costs()}
        meta.update(
            station=self.instance.station.id,
            scenario=self.instance.name,
            steps=self.instance.steps,
            baseline_band_violations=self.baseline.band_violations,
        )
        if self.violations:
            meta["why_no_plan"] = "; ".join(f"{v.description} (short by {v.amount:.3g})" for v in self.violations)
        return meta

    def schedule(self) -> pl.DataFrame:
        """One row per pump and step: on/off, flow, power, energy and its cost (empty without a plan)."""
        inst = self.instance
        pumps, steps = inst.station.pumps, inst.steps
        on = self.on if self.has_plan else np.zeros((len(pumps), steps), dtype=bool)
        if not self.has_plan:
            return _schedule_frame(inst, on).clear()
        return _schedule_frame(inst, on)

    def baseline_schedule(self) -> pl.DataFrame:
        return _schedule_frame(self.instance, self.baseline.on)

    def trajectories(self) -> pl.DataFrame:
        """One row per tank and step end: planned level, the baseline's level, the band, demand and supply."""
        inst = self.instance
        s, steps = inst.station, inst.steps
        K = len(s.tanks)
        planned = self.level_m[:, 1:] if self.has_plan else np.full((K, steps), np.nan)
        supply = self.solution.values("tank_supply_m3h") if self.has_plan else np.full((K, steps), np.nan)
        starts = [inst.step_start(t) for t in range(steps)]
        return pl.DataFrame(
            {
                "station_id": [s.id] * (K * steps),
                "scenario": [inst.name] * (K * steps),
                "tank_id": np.repeat([t.id for t in s.tanks], steps).tolist(),
                "step": np.tile(np.arange(steps), K).tolist(),
                "step_start": starts * K,
                "level_end_m": planned.ravel().tolist(),
                "baseline_level_end_m": self.baseline.level_m[:, 1:].ravel().tolist(),
                "min_level_m": np.repeat([t.min_level_m for t in s.tanks], steps).tolist(),
                "max_level_m": np.repeat([t.max_level_m for t in s.tanks], steps).tolist(),
                "demand_m3h": np.asarray(inst.demand_m3h, dtype=float).ravel().tolist(),
                "supply_m3h": supply.ravel().tolist(),
            },
            schema_overrides={"step_start": pl.Datetime("us", "UTC"), "step": pl.Int64},
        )

    def step_costs(self) -> pl.DataFrame:
        """Energy cost per step, plan against baseline, with the tariff (THB)."""
        inst = self.instance
        kw = np.array([p.power_kw for p in inst.station.pumps])
        price = np.asarray(inst.price_thb_per_kwh, dtype=float)
        plan_kw = kw @ self.on.astype(float) if self.has_plan else np.full(inst.steps, np.nan)
        base_kw = kw @ self.baseline.on.astype(float)
        return pl.DataFrame(
            {
                "station_id": [inst.station.id] * inst.steps,
                "scenario": [inst.name] * inst.steps,
                "step": np.arange(inst.steps).tolist(),
                "step_start": [inst.step_start(t) for t in range(inst.steps)],
                "energy_thb_per_kwh": price.tolist(),
                "on_peak": np.asarray(inst.on_peak, dtype=bool).tolist(),
                "plan_kw": plan_kw.tolist(),
                "baseline_kw": base_kw.tolist(),
                "plan_cost_thb": (plan_kw * inst.step_h * price).tolist(),
                "baseline_cost_thb": (base_kw * inst.step_h * price).tolist(),
            },
            schema_overrides={"step_start": pl.Datetime("us", "UTC"), "step": pl.Int64},
        )


def _schedule_frame(inst: PumpInstance, on: np.ndarray) -> pl.DataFrame:
    pumps, steps = inst.station.pumps, inst.steps
    P = len(pumps)
    flow = np.array([p.flow_m3h for p in pumps])[:, None] * on
    kw = np.array([p.power_kw for p in pumps])[:, None] * on
    price = np.asarray(inst.price_thb_per_kwh, dtype=float)[None, :]
    return pl.DataFrame(
        {
            "station_id": [inst.station.id] * (P * steps),
            "scenario": [inst.name] * (P * steps),
            "pump_id": np.repeat([p.id for p in pumps], steps).tolist(),
            "step": np.tile(np.arange(steps), P).tolist(),
            "step_start": [inst.step_start(t) for t in range(steps)] * P,
            "on": on.ravel().astype(bool).tolist(),
            "flow_m3h": flow.ravel().astype(float).tolist(),
            "power_kw": kw.ravel().astype(float).tolist(),
            "energy_kwh": (kw * inst.step_h).ravel().astype(float).tolist(),
            "cost_thb": (kw * inst.step_h * price).ravel().astype(float).tolist(),
        },
        schema_overrides={"step_start": pl.Datetime("us", "UTC"), "step": pl.Int64},
    )


def plan(instance: PumpInstance, options: SolverOptions | None = None, *, explain: bool = True) -> PumpPlan:
    """Validate, build, solve; run the baseline; when there is no plan, say why in the planner's words."""
    options = options or SolverOptions()
    started = time.perf_counter()
    model = build_model(instance)
    build_s = time.perf_counter() - started
    start = None
    per_day = 24 * 60 // instance.step_minutes
    solve_options = options
    if instance.steps > per_day and options.solver == "highs":
        # The day-by-day first plan comes out of the run's time limit, so the limit holds for the whole.
        started = time.perf_counter()
        start = _rolling_start(instance, options)
        spent = time.perf_counter() - started
        solve_options = replace(options, time_limit_s=max(1.0, options.time_limit_s - spent))
    solution = solve(model, solve_options, start=start)
    baseline = simulate_baseline(instance)
    violations: list[Violation] = []
    if explain and solution.status in (SolveStatus.INFEASIBLE, SolveStatus.UNBOUNDED):
        violations = explain_infeasibility(
            model, replace(options, time_limit_s=min(options.time_limit_s, 30.0)), families=ELASTIC_FAMILIES
        )
    return PumpPlan(instance, solution, baseline, build_s, violations)


def _rolling_start(instance: PumpInstance, options: SolverOptions) -> dict[str, np.ndarray] | None:
    """A first plan for a multi-day horizon, day by day: each day planned alone (ending at its target),
    its last levels and pump states starting the next. Feasible for the whole horizon (each day's rules
    are the horizon's, its end condition stricter), it gives HiGHS an incumbent at once, which the
    week-long model alone can take minutes to find. None if some day has no plan on its own."""
    per_day = 24 * 60 // instance.step_minutes
    days = -(-instance.steps // per_day)
    budget = replace(options, time_limit_s=max(1.0, 0.3 * options.time_limit_s / days), mip_rel_gap=0.01, mps_path=None)
    level, on0, served = instance.initial_level_m, instance.initial_on, instance.initial_steps_in_state
    pieces = []
    for day in range(days):
        window = slice(day * per_day, min((day + 1) * per_day, instance.steps))
        sub = replace(
            instance,
            start=instance.step_start(window.start),
            demand_m3h=np.asarray(instance.demand_m3h)[:, window],
            price_thb_per_kwh=np.asarray(instance.price_thb_per_kwh)[window],
            on_peak=np.asarray(instance.on_peak)[window],
            initial_level_m=level,
            initial_on=on0,
            initial_steps_in_state=served,
        )
        solution = solve(build_model(sub), budget)
        if not solution.status.has_solution:
            return None
        on = solution.values("pump_on").astype(bool)
        pieces.append(on)
        level = solution.values("tank_level_m")[:, -1]
        # Steps in the final state: the run (or rest) at the day's end, plus the history if it never changed.
        history = np.concatenate([np.repeat(on0[:, None], 1, axis=1), on], axis=1)
        same = history[:, ::-1] == history[:, -1:][:, :1]
        length = np.argmin(same, axis=1)
        length = np.where(same.all(axis=1), on.shape[1] + served, length)
        on0, served = on[:, -1], length
    return {"pump_on": np.concatenate(pieces, axis=1).astype(float)}


# ---------------------------------------------------------------------------------------------- instance files


def instance_from_json(data: Mapping[str, Any] | str | Path) -> PumpInstance:
    """An instance from its JSON form (docs/optimization/pump.md, "Instance file"); a path or a dict."""
    if isinstance(data, str | Path):
        data = json.loads(Path(data).read_text())
    from pydantic import ValidationError

    from optimization.stations import Station as StationModel

    if "station" in data:
        try:
            st = StationModel.model_validate(data["station"])
        except ValidationError as exc:
            raise PumpInputError(
                [f"instance station: {e['msg']} at {'.'.join(map(str, e['loc']))}" for e in exc.errors()]
            ) from exc
    else:
        st = shipped_station(data["station_id"])
    steps = len(data["price_thb_per_kwh"])
    tank_ids = [t.id for t in st.tanks]
    unknown = sorted(set(data.get("demand_m3h", {})) - set(tank_ids)) + sorted(
        set(data.get("initial_level_m", {})) - set(tank_ids)
    )
    if unknown:
        raise PumpInputError(
            [f"station {st.id}: tanks {unknown} in the instance are not tanks of the station {tank_ids}"]
        )
    missing = [t for t in tank_ids if t not in data.get("initial_level_m", {})]
    if missing:
        raise PumpInputError(
            [f"station {st.id}: no initial level for tank(s) {missing}, expected initial_level_m for each"]
        )
    demand = np.array([data.get("demand_m3h", {}).get(t, [0.0] * steps) for t in tank_ids], dtype=float)
    pumps = data.get("initial_pumps", {})
    start = datetime.fromisoformat(data["start"].replace("Z", "+00:00"))
    return PumpInstance(
        station=st,
        start=start.astimezone(UTC) if start.tzinfo else start,
        demand_m3h=demand,
        price_thb_per_kwh=np.array([np.nan if v is None else v for v in data["price_thb_per_kwh"]], dtype=float),
        on_peak=np.array(data.get("on_peak", [False] * steps), dtype=bool),
        initial_level_m=np.array([data["initial_level_m"][t] for t in tank_ids], dtype=float),
        initial_on=np.array([bool(pumps.get(p.id, {}).get("on", False)) for p in st.pumps]),
        initial_steps_in_state=np.array([int(pumps.get(p.id, {}).get("steps_in_state", 96)) for p in st.pumps]),
        demand_charge_thb_per_kw=float(data.get("demand_charge_thb_per_kw", 0.0)),
        step_minutes=int(data.get("step_minutes", 15)),
        out_of_service=frozenset(data.get("out_of_service", ())),
        name=str(data.get("scenario", "base")),
    )


def instance_to_json(instance: PumpInstance) -> dict[str, Any]:
    s = instance.station
    return {
        "station": s.model_dump(mode="json"),
        "scenario": instance.name,
        "start": instance.start.astimezone(UTC).isoformat().replace("+00:00", "Z"),
        "step_minutes": instance.step_minutes,
        "price_thb_per_kwh": [float(v) for v in instance.price_thb_per_kwh],
        "on_peak": [bool(v) for v in instance.on_peak],
        "demand_charge_thb_per_kw": float(instance.demand_charge_thb_per_kw),
        "demand_m3h": {t.id: [float(v) for v in row] for t, row in zip(s.tanks, instance.demand_m3h, strict=True)},
        "initial_level_m": {t.id: float(v) for t, v in zip(s.tanks, instance.initial_level_m, strict=True)},
        "initial_pumps": {
            p.id: {"on": bool(on), "steps_in_state": int(n)}
            for p, on, n in zip(s.pumps, instance.initial_on, instance.initial_steps_in_state, strict=True)
        },
        "out_of_service": sorted(instance.out_of_service),
    }


# ---------------------------------------------------------------------------------------------- examples


def example_instance(
    station_id: str = "PS01",
    *,
    steps: int = DEFAULT_STEPS,
    start: datetime = datetime(2026, 12, 7, tzinfo=UTC),
    seed: int = 0,
    demand_scale: float = 1.0,
) -> PumpInstance:
    """A self-contained instance of a shipped station: the simulator's residential diurnal demand, the
    Thai time-of-use tariff shape (on-peak 09:00–22:00 local on weekdays) and levels mid-band. For the
    bench, the demo without a lake and instance files; plans from the lake use assets/pump_schedule.py."""
    from simulators.modbus import PumpStationModel, _diurnal

    st = shipped_station(station_id)
    rng = np.random.default_rng(seed)
    moments = [start + timedelta(minutes=15 * t) for t in range(steps)]
    local = [m + LOCAL_OFFSET for m in moments]
    hours = np.array([m.hour + m.minute / 60 + 7.5 / 60 for m in local])
    shape = np.array([_diurnal(h) for h in hours])
    on_peak = np.array([m.weekday() < 5 and 9 <= m.hour < 22 for m in local])
    price = np.where(on_peak, 4.1839, 2.6037) + 0.3972  # energy + Ft, THB/kWh
    demand = np.zeros((len(st.tanks), steps))
    for k, tank in enumerate(st.tanks):
        if not tank.dmas:
            continue
        # About half the pumping capacity into the tank on average, the simulator's ratio (150 of 285 m³/h).
        capacity = sum(p.flow_m3h for p in st.pumps if p.to_tank == tank.id)
        mean = PumpStationModel.BASE_DEMAND_M3H if station_id == "PS01" else 0.5 * capacity
        demand[k] = mean * demand_scale * shape * (1 + rng.normal(0, 0.03, steps))
    levels = np.array([(t.target_end_level_m or (t.min_level_m + t.max_level_m) / 2) for t in st.tanks])
    return PumpInstance(
        station=st,
        start=start,
        demand_m3h=demand,
        price_thb_per_kwh=price,
        on_peak=on_peak,
        initial_level_m=levels,
        initial_on=np.array([i == 0 for i in range(len(st.pumps))]),
        initial_steps_in_state=np.full(len(st.pumps), 8),
        demand_charge_thb_per_kw=132.93,
    )
