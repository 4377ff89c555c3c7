"""Pump scheduling: optimum proven by exhaustive search, honest statuses, explanations, validation, baseline."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from optimization.pump import (
    PumpInputError,
    PumpInstance,
    build_model,
    example_instance,
    instance_from_json,
    instance_to_json,
    plan,
    simulate_baseline,
    validate,
)
from optimization.solver import SolverOptions, SolveStatus
from optimization.stations import Station, load_stations, station
from resources.yaml_files import ConfigError

START = datetime(2026, 12, 7, 10, 0, tzinfo=UTC)  # 17:00 Asia/Bangkok


def tiny_station(**pump_overrides) -> Station:
    """One tank, two pumps of different size lifting from outside the station."""
    point = {"unit_id": "X", "sensor_type": "level"}
    pumps = [
        {
            "id": "A",
            "flow_m3h": 40.0,
            "power_kw": 5.0,
            "to_tank": "T",
            "min_run_min": 30,
            "min_rest_min": 30,
            "max_starts_per_day": 2,
            "state_point": point,
        },
        {
            "id": "B",
            "flow_m3h": 60.0,
            "power_kw": 9.0,
            "to_tank": "T",
            "min_run_min": 15,
            "min_rest_min": 15,
            "max_starts_per_day": 2,
            "state_point": point,
        },
    ]
    for pump in pumps:
        pump.update(pump_overrides)
    return Station.model_validate(
        {
            "id": "TINY",
            "scada_unit": "TINY",
            "tanks": [
                {
                    "id": "T",
                    "area_m2": 10.0,
                    "min_level_m": 1.0,
                    "max_level_m": 4.0,
                    "target_end_level_m": 2.0,
                    "level_point": point,
                }
            ],
            "pumps": pumps,
            "baseline": [{"tank": "T", "start_below_m": 2.0, "stop_above_m": 3.0}],
        }
    )


def tiny_instance(**changes) -> PumpInstance:
    fields = dict(
        station=tiny_station(),
        start=START,
        demand_m3h=np.array([[50.0, 70.0, 90.0, 30.0, 20.0, 60.0]]),
        price_thb_per_kwh=np.array([2.6, 4.2, 4.2, 4.2, 2.6, 2.6]),
        on_peak=np.array([False, True, True, True, False, False]),
        initial_level_m=np.array([2.5]),
        initial_on=np.array([True, False]),
        initial_steps_in_state=np.array([1, 4]),  # A has run one step: it must run one more
        demand_charge_thb_per_kw=3.0,
    )
    fields.update(changes)
    return PumpInstance(**fields)


def feasible_cost(inst: PumpInstance, on: np.ndarray) -> float | None:
    """Cost of an on/off pattern by the rules written out directly, or None when it breaks one."""
    s, dt = inst.station, inst.step_h
    flow = np.array([p.flow_m3h for p in s.pumps])
    kw = np.array([p.power_kw for p in s.pumps])
    tank = s.tanks[0]
    level = inst.initial_level_m[0] + np.cumsum((flow @ on - inst.demand_m3h[0]) * dt / tank.area_m2)
    if np.any(level < tank.min_level_m - 1e-9) or np.any(level > tank.max_level_m + 1e-9):
        return None
    if level[-1] < tank.target_end_level_m - 1e-9:
        return None
    for p, pump in enumerate(s.pumps):
        run, rest = -(-pump.min_run_min // 15), -(-pump.min_rest_min // 15)
        history = [bool(inst.initial_on[p])] * int(inst.initial_steps_in_state[p])
        states = history + [bool(v) for v in on[p]]
        # Every run or rest that ends inside the horizon must have lasted its minimum (one the horizon cuts
        # off may be shorter); the steps spent in the initial state before the horizon count toward the first.
        for value, group in itertools.groupby(enumerate(states), key=lambda item: item[1]):
            group = list(group)
            if group[-1][0] == len(states) - 1:
                continue
            if len(group) < (run if value else rest):
                return None
        starts = sum(1 for t in range(inst.steps) if on[p, t] and not (on[p, t - 1] if t else inst.initial_on[p]))
        if starts > pump.max_starts_per_day:
            return None
    step_kw = kw @ on
    return float(
        np.sum(step_kw * dt * inst.price_thb_per_kwh) + inst.demand_charge_thb_per_kw * step_kw[inst.on_peak].max()
    )


def exhaustive(inst: PumpInstance) -> tuple[float, np.ndarray]:
    best, best_on = np.inf, None
    for bits in itertools.product((0, 1), repeat=2 * inst.steps):
        on = np.array(bits, dtype=float).reshape(2, inst.steps)
        cost = feasible_cost(inst, on)
        if cost is not None and cost < best:
            best, best_on = cost, on
    return best, best_on


@pytest.mark.parametrize("solver", ["highs", "cbc"])
def test_tiny_schedule_is_the_exhaustive_optimum(solver):
    inst = tiny_instance()
    best, _ = exhaustive(inst)
    result = plan(inst, SolverOptions(solver=solver, mip_rel_gap=0.0))
    assert result.solution.status is SolveStatus.OPTIMAL
    assert result.solution.objective == pytest.approx(best, abs=1e-6)
    # The schedule the solver returns obeys every rule when checked independently, at the same cost.
    assert feasible_cost(inst, result.on.astype(float)) == pytest.approx(best, abs=1e-6)
    costs = result.costs()
    assert costs["plan_cost_thb"] == pytest.approx(round(best, 2), abs=0.01)
    schedule = result.schedule()
    assert schedule.height == 12 and schedule["cost_thb"].sum() == pytest.approx(costs["plan_energy_thb"], abs=0.01)
    levels = result.trajectories()["level_end_m"].to_numpy()
    expected = inst.initial_level_m[0] + np.cumsum(
        (np.array([40.0, 60.0]) @ result.on - inst.demand_m3h[0]) * 0.25 / 10
    )
    np.testing.assert_allclose(levels, expected, atol=1e-6)


def test_min_run_history_and_starts_are_respected():
    # A has run one of its two minimum steps: it runs in step 0 whatever the prices say.
    inst = tiny_instance(price_thb_per_kwh=np.array([90.0, 2.6, 2.6, 2.6, 2.6, 2.6]), demand_charge_thb_per_kw=0.0)
    result = plan(inst, SolverOptions(mip_rel_gap=0.0))
    assert result.on[0, 0]
    best, _ = exhaustive(inst)
    assert result.solution.objective == pytest.approx(best, abs=1e-6)


@pytest.mark.slow
def test_two_day_plan_of_the_simulated_station_obeys_run_rest_and_starts():
    inst = example_instance("PS01", steps=192)
    result = plan(inst, SolverOptions(time_limit_s=20, mip_rel_gap=0.01))
    assert result.solution.status in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE)
    on = result.on
    for p, pump in enumerate(inst.station.pumps):
        states = np.concatenate([[inst.initial_on[p]], on[p]]).astype(int)
        change = np.diff(states)
        starts, stops = np.flatnonzero(change == 1), np.flatnonzero(change == -1)
        for t in starts:  # a run started at t lasts the minimum or reaches the horizon's end
            assert on[p, t : t + 2].all() or t + 2 > inst.steps, (pump.id, t)
        for t in stops:
            assert not on[p, t : t + 2].any() or t + 2 > inst.steps, (pump.id, t)
        for day in range(2):
            assert ((starts >= 96 * day) & (starts < 96 * (day + 1))).sum() <= pump.max_starts_per_day
    level = result.level_m
    t2 = inst.station.tank_index("T2")
    assert level[t2, 1:].min() >= 1.0 - 1e-6 and level[t2, 1:].max() <= 5.5 + 1e-6
    assert level[t2, -1] >= 3.5 - 1e-6
    # Never dearer than the operators' rule on the same inputs (which here stays in its band too).
    assert result.baseline.band_violations == 0
    assert result.costs()["saving_thb"] > 0


def test_highs_and_cbc_agree_on_the_simulated_station():
    # Six hours from 07:00 local (the morning peak and the start of on-peak) with P3 out of service: CBC
    # proves it within a second too (three identical pumps in service make CBC's proof take minutes).
    inst = replace(example_instance("PS01", steps=24, seed=3), out_of_service=frozenset({"P3"}))
    highs = plan(inst, SolverOptions(solver="highs", mip_rel_gap=0.0, time_limit_s=60))
    cbc = plan(inst, SolverOptions(solver="cbc", mip_rel_gap=0.0, time_limit_s=60))
    assert highs.solution.status is SolveStatus.OPTIMAL and cbc.solution.status is SolveStatus.OPTIMAL
    assert cbc.solution.objective == pytest.approx(highs.solution.objective, rel=1e-9)
    assert not highs.on[2].any() and not cbc.on[2].any()


def test_infeasible_plan_names_the_tank_the_level_and_the_time():
    ps01 = station("PS01")
    steps = 96
    demand = np.zeros((2, steps))
    demand[1] = 30.0
    demand[1, :4] = 400.0  # 17:00–18:00 local: far more than one pump lifts
    inst = PumpInstance(
        station=ps01,
        start=START,
        demand_m3h=demand,
        price_thb_per_kwh=np.full(steps, 3.0),
        on_peak=np.zeros(steps, dtype=bool),
        initial_level_m=np.array([4.0, 3.0]),
        initial_on=np.array([True, False, False]),
        initial_steps_in_state=np.full(3, 8),
        out_of_service=frozenset({"P2", "P3"}),
    )
    result = plan(inst, SolverOptions(time_limit_s=30))
    assert result.solution.status is SolveStatus.INFEASIBLE
    first = result.violations[0]
    assert first.family == "tank_min_level"
    assert first.description == "tank T2 cannot stay above 1.00 m at 18:00 with P2, P3 out of service"
    # 3.0 m, then four steps of (95 − 400) m³/h over 40 m² for 15 minutes: 3.0 − 4 × 1.906 = −4.625 m.
    assert first.amount == pytest.approx(1.0 - (3.0 - 4 * 305 * 0.25 / 40), abs=1e-6)
    assert "tank T2 cannot stay above 1.00 m" in result.metadata()["why_no_plan"]


def test_time_limit_is_reported_as_such_never_as_optimal():
    inst = example_instance("BENCH", steps=672)
    result = plan(inst, SolverOptions(time_limit_s=1.0, mip_rel_gap=0.0))
    assert result.solution.status in (SolveStatus.FEASIBLE, SolveStatus.NO_SOLUTION)
    assert result.solution.solve_s < 10
    if result.solution.status is SolveStatus.FEASIBLE:
        assert result.solution.gap is not None and result.solution.gap > 0
        assert result.metadata()["solver_status"] == "feasible"


def test_validation_names_station_pump_tank_step_and_range():
    inst = tiny_instance()
    price = inst.price_thb_per_kwh.copy()
    price[3] = np.nan
    demand = inst.demand_m3h.copy()
    demand[0, 2] = -5.0
    with pytest.raises(PumpInputError) as caught:
        validate(replace(inst, price_thb_per_kwh=price, demand_m3h=demand, initial_steps_in_state=np.array([1, -2])))
    problems = caught.value.problems
    assert (
        "station TINY: tariff missing or out of range at step(s) 3 (got nan at step 3), "
        "expected 0..100 THB/kWh at every step" in problems
    )
    assert "station TINY, tank T: demand -5.0 m³/h at step 2 (2), expected 0..100000 m³/h" in problems
    assert "station TINY, pump B: steps in its initial state is negative, expected ≥ 0" in problems
    with pytest.raises(PumpInputError, match=r"station TINY: horizon is 700 steps, expected 1\.\.672"):
        validate(
            replace(
                inst, price_thb_per_kwh=np.full(700, 3.0), on_peak=np.zeros(700, bool), demand_m3h=np.zeros((1, 700))
            )
        )
    with pytest.raises(PumpInputError, match=r"pumps out of service \['P9'\] are not pumps of the station"):
        build_model(replace(inst, out_of_service=frozenset({"P9"})))
    inverted = inst.station.tanks[0].model_construct(**{**inst.station.tanks[0].__dict__, "min_level_m": 5.0})
    with pytest.raises(PumpInputError, match=r"tank T: bounds inverted \(min 5.0 m ≥ max 4.0 m\)"):
        validate(replace(inst, station=inst.station.model_construct(**{**inst.station.__dict__, "tanks": (inverted,)})))


def test_stations_file_errors_point_at_the_line(tmp_path):
    bad = tmp_path / "stations.yaml"
    bad.write_text(
        "stations:\n"
        "  - id: S\n"
        "    scada_unit: S\n"
        "    tanks:\n"
        "      - {id: T, area_m2: 10, min_level_m: 3.0, max_level_m: 2.0,\n"
        "         level_point: {unit_id: S-T, sensor_type: level}}\n"
        "    pumps:\n"
        "      - {id: P, flow_m3h: 10, power_kw: 2, to_tank: U,\n"
        "         state_point: {unit_id: S-P, sensor_type: pump_status}}\n"
    )
    with pytest.raises(ConfigError) as caught:
        load_stations(bad)
    text = str(caught.value)
    assert "tank T: min_level_m 3.0 must be below max_level_m 2.0" in text
    assert "stations.yaml:5:" in text  # the tank's line


def test_baseline_is_the_level_rule_simulated_step_by_step():
    inst = tiny_instance(
        demand_m3h=np.array([[50.0, 50.0, 50.0, 50.0, 50.0, 50.0]]),
        initial_level_m=np.array([1.9]),
        initial_on=np.array([False, False]),
        initial_steps_in_state=np.array([3, 5]),
    )
    base = simulate_baseline(inst)
    # 1.9 < 2.0: the pump rested longest (B, 5 steps) starts: (60 − 50) m³/h × 0.25 h / 10 m² = +0.25 m a step.
    # Between 2.0 and 3.0 nothing changes; at the start of step 5 the level is 3.15 > 3.0, so B stops and
    # the tank falls by 50 × 0.25 / 10 = 1.25 m to 1.9 m (still above its 1.0 m floor).
    np.testing.assert_array_equal(base.on[1], [1, 1, 1, 1, 1, 0])
    np.testing.assert_array_equal(base.on[0], [0, 0, 0, 0, 0, 0])
    np.testing.assert_allclose(base.level_m[0], [1.9, 2.15, 2.4, 2.65, 2.9, 3.15, 1.9])
    assert base.energy_thb == pytest.approx(9.0 * 0.25 * (2.6 + 4.2 * 3 + 2.6))
    assert base.demand_charge_thb == pytest.approx(3.0 * 9.0)
    assert base.band_violations == 0


def test_stations_file_matches_the_simulated_station_and_its_scada_points():
    from collector.modbus import load_register_map
    from simulators.modbus import RHO_G, PumpStationModel, map_path

    ps01 = station("PS01")
    m = PumpStationModel
    t1, t2 = ps01.tanks
    assert (t1.id, t1.area_m2, t1.supply_max_m3h) == ("T1", m.T1_AREA_M2, m.SUPPLY_M3H)
    assert (t2.id, t2.area_m2) == ("T2", m.T2_AREA_M2)
    assert [p.id for p in ps01.pumps] == ["P1", "P2", "P3"]
    assert all(p.flow_m3h == m.PUMP_FLOW_M3H and (p.from_tank, p.to_tank) == ("T1", "T2") for p in ps01.pumps)
    rule = ps01.baseline[0]
    assert (rule.tank, rule.start_below_m, rule.stop_above_m) == ("T2", m.T2_START_BELOW_M, m.T2_STOP_ABOVE_M)
    # Power at the duty point, mid levels, the simulator's mean efficiency: within 6 % of the file's figure.
    q = m.PUMP_FLOW_M3H
    head = m.STATIC_HEAD_M + 4.0 + m.FRICTION_M_PER_M3H2 * q**2 - (3.0 + 0.5 - 0.4 * (q / 250.0) ** 2)
    kw = RHO_G * q / 3600 * head / 0.72 / 1000
    assert all(p.power_kw == pytest.approx(kw, rel=0.06) for p in ps01.pumps)
    # Every SCADA point the file names is a point the station's register map publishes.
    published = {
        (r.plant_unit_id.replace("{unit}", ps01.scada_unit) if r.plant_unit_id else ps01.scada_unit, r.sensor_type)
        for r in load_register_map(map_path("pump_station")).registers
        if r.sensor_type
    }
    for point in [t.level_point for t in ps01.tanks] + [p.state_point for p in ps01.pumps]:
        assert (point.unit_id, point.sensor_type) in published
    # And the collector's example configuration serves that map under the station's unit id.
    import yaml

    config = yaml.safe_load(Path("collector.example.yaml").read_text())
    devices = [d for d in config["modbus"] if d.get("register_map", "").endswith("pump_station.yaml")]
    assert ps01.scada_unit in {d["plant_unit_id"] for d in devices}


def test_instance_file_round_trip():
    inst = example_instance("PS01", steps=8)
    again = instance_from_json(instance_to_json(inst))
    assert again.station == inst.station and again.start == inst.start
    np.testing.assert_allclose(again.demand_m3h, inst.demand_m3h)
    np.testing.assert_array_equal(again.on_peak, inst.on_peak)
    with pytest.raises(PumpInputError, match=r"no initial level for tank\(s\) \['T1'\]"):
        data = instance_to_json(inst)
        del data["initial_level_m"]["T1"]
        instance_from_json(data)
