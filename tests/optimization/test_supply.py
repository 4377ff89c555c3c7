"""The supply plan: optimum proven by exhaustive search, solvers agreeing, shortages priced, inputs validated
with their names, infeasible plans explained in the planner's words, time limits reported honestly."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import numpy as np
import pytest

from ihub.cli import main
from optimization.solver import SolverOptions, SolveStatus
from optimization.supply import (
    Bound,
    InstanceError,
    Plant,
    Route,
    SupplyInstance,
    build_model,
    generated_instance,
    load_instance,
    plan,
    save_instance,
    validate,
)

PENALTY = 100.0


def tiny() -> SupplyInstance:
    """Two IUs, two GUs, one month; four road lanes and a rail lane with a 50 t minimum batch."""
    return SupplyInstance(
        name="tiny",
        periods=("2027-03",),
        plants=(
            Plant(
                "IU01",
                "IU",
                opening_stock_t=0,
                max_stock_t=50,
                holding_cost_per_t=1,
                capacity_t=(100,),
                production_cost_per_t=10,
            ),
            Plant(
                "IU02",
                "IU",
                opening_stock_t=10,
                max_stock_t=50,
                holding_cost_per_t=1,
                capacity_t=(80,),
                production_cost_per_t=14,
            ),
            Plant("GU01", "GU", opening_stock_t=0, max_stock_t=40, holding_cost_per_t=2, demand_t=(90,)),
            Plant("GU02", "GU", opening_stock_t=10, max_stock_t=40, holding_cost_per_t=2, demand_t=(60,)),
        ),
        routes=(
            Route("IU01-GU01-ROAD", "IU01", "GU01", "ROAD", 5, vehicle_capacity_t=30, cost_per_trip=20),
            Route("IU01-GU02-ROAD", "IU01", "GU02", "ROAD", 8, vehicle_capacity_t=30, cost_per_trip=20),
            Route("IU02-GU01-ROAD", "IU02", "GU01", "ROAD", 6, vehicle_capacity_t=30, cost_per_trip=20),
            Route("IU02-GU02-ROAD", "IU02", "GU02", "ROAD", 3, vehicle_capacity_t=30, cost_per_trip=20),
            Route(
                "IU01-GU02-RAIL", "IU01", "GU02", "RAIL", 2, vehicle_capacity_t=100, cost_per_trip=150, min_batch_t=50
            ),
        ),
        shortage_penalty_per_t=PENALTY,
        safety_penalty_per_t=PENALTY / 2,
    )


def exhaustive_optimum(inst: SupplyInstance, step: float = 10.0, most: float = 130.0) -> tuple[float, np.ndarray]:
    """The cheapest plan by trying every shipment vector on a 10 t grid, costed in plain numpy.

    Why a grid is exhaustive: once trips and route use are fixed, what is left is a network flow whose
    capacities and demands are all multiples of 10 t; network matrices are totally unimodular, so an optimal
    flow lies on the 10 t grid. Every trip count and route use is implied by the shipments (the cheapest
    trips are ⌈shipped / vehicle⌉), so enumerating shipments enumerates every integer decision.
    """
    plants = {p.plant_id: i for i, p in enumerate(inst.plants)}
    grid = np.arange(0.0, most + step, step)
    ships = np.array(list(itertools.product(grid, repeat=len(inst.routes))))  # (N, R)
    cost = np.zeros(len(ships))
    ok = np.ones(len(ships), dtype=bool)
    for r, route in enumerate(inst.routes):
        s = ships[:, r]
        ok &= (s == 0) | (s >= route.min_batch_t)
        cost += s * (route.freight_cost_per_t + route.handling_cost_per_t)
        cost += np.ceil(s / route.vehicle_capacity_t) * route.cost_per_trip
    for p in inst.plants:
        i = plants[p.plant_id]
        out = sum(ships[:, r] for r, rt in enumerate(inst.routes) if plants[rt.origin] == i)
        inflow = sum(ships[:, r] for r, rt in enumerate(inst.routes) if plants[rt.destination] == i)
        out = np.asarray(out, dtype=float) + 0 * cost
        inflow = np.asarray(inflow, dtype=float) + 0 * cost
        produce = np.maximum(0.0, out - p.opening_stock_t) if p.kind == "IU" else 0 * cost
        if p.kind == "IU":
            ok &= produce <= p.capacity_t[0]
        demand = p.demand_t[0] if p.demand_t else 0.0
        available = p.opening_stock_t + produce + inflow - out
        short = np.maximum(0.0, demand - available)
        closing = available - demand + short
        ok &= closing <= p.max_stock_t
        cost += produce * p.production_cost_per_t + closing * p.holding_cost_per_t + short * inst.shortage_penalty_per_t
    best = int(np.argmin(np.where(ok, cost, np.inf)))
    return float(cost[best]), ships[best]


@pytest.mark.parametrize("solver", ["highs", "cbc"])
def test_tiny_plan_is_the_exhaustive_optimum(solver):
    inst = tiny()
    best, ships = exhaustive_optimum(inst)
    result = plan(inst, SolverOptions(solver=solver, mip_rel_gap=0.0))
    assert result.solution.status is SolveStatus.OPTIMAL
    assert result.solution.objective == pytest.approx(best, abs=1e-6)
    assert result.solution.values("shipped_t")[:, 0] @ np.ones(5) == pytest.approx(ships.sum())
    costs = result.cost_by_component()
    assert sum(costs.values()) == pytest.approx(best, abs=1e-6)
    assert costs["shortage_penalty"] == 0  # 150 t demand − 10 t at GU02 is within 180 t of capacity
    shipments = result.tables()["shipments"]
    for row in shipments.iter_rows(named=True):
        route = next(r for r in inst.routes if r.route_id == row["route_id"])
        assert row["trips"] == int(np.ceil(row["shipped_t"] / route.vehicle_capacity_t - 1e-9))
        assert row["shipped_t"] >= route.min_batch_t


def test_highs_and_cbc_agree_within_the_gap():
    inst = generated_instance(3, 6, 2, seed=3)
    gap = 1e-4
    highs = plan(inst, SolverOptions(solver="highs", mip_rel_gap=gap))
    cbc = plan(inst, SolverOptions(solver="cbc", mip_rel_gap=gap, time_limit_s=120))
    assert highs.solution.status is cbc.solution.status is SolveStatus.OPTIMAL
    assert abs(highs.solution.objective - cbc.solution.objective) <= 2 * gap * abs(highs.solution.objective)


def test_demand_beyond_capacity_shows_as_priced_shortage():
    inst = SupplyInstance(
        name="short",
        periods=("2027-01", "2027-02"),
        plants=(
            Plant("IU01", "IU", max_stock_t=500, capacity_t=(100, 100), production_cost_per_t=10),
            Plant("GU01", "GU", opening_stock_t=20, max_stock_t=500, demand_t=(150, 50)),
        ),
        routes=(Route("IU01-GU01-ROAD", "IU01", "GU01", "ROAD", 5, vehicle_capacity_t=25, cost_per_trip=10),),
        shortage_penalty_per_t=1000,
        safety_penalty_per_t=100,
    )
    result = plan(inst, SolverOptions(mip_rel_gap=0.0))
    assert result.solution.status is SolveStatus.OPTIMAL  # never infeasible for lack of clinker
    shortages = result.tables()["shortages"]
    assert shortages.rows() == [("GU01", "2027-01", 150.0, 30.0)]  # 150 − 20 opening − 100 made
    costs = result.cost_by_component()
    assert costs["shortage_penalty"] == pytest.approx(30 * 1000)
    # February: 50 t made and shipped in two trucks; January: 100 t in four.
    ships = result.tables()["shipments"].select("period", "shipped_t", "trips").rows()
    assert ships == [("2027-01", 100.0, 4), ("2027-02", 50.0, 2)]
    assert costs["production"] == pytest.approx(150 * 10) and costs["trips"] == pytest.approx(6 * 10)
    assert "Unmet demand: 30 t" in result.summary_markdown()


def test_validation_names_plant_route_period_and_range():
    good = tiny()
    bad = replace(
        good,
        plants=(
            replace(good.plants[0], capacity_t=(100, 90)),  # two capacities for one period
            good.plants[1],
            replace(good.plants[2], demand_t=(-5,)),
            replace(good.plants[3], safety_stock_t=60),  # above max 40
        ),
        routes=(*good.routes, Route("IU01-GU99-ROAD", "IU01", "GU99", "ROAD", 5)),
        bounds=(Bound("mode", "SEA", upper=10), Bound("route", "IU01-GU01-ROAD", lower=50, upper=10)),
    )
    problems = validate(bad)
    text = "\n".join(problems)
    assert "plant IU01: 2 production capacities for 1 periods (2027-03); expected one per period" in text
    assert "plant GU01: demand -5 t in 2027-03 is negative or not a number, expected ≥ 0" in text
    assert "plant GU02: stock bounds inverted: safety stock 60 t is above the maximum stock 40 t" in text
    assert "route IU01-GU99-ROAD: destination 'GU99' is not a plant of the instance" in text
    assert "bound 1: mode 'SEA' has no route (modes: RAIL, ROAD)" in text
    assert "bound 2: lower 50 is above upper 10" in text
    with pytest.raises(InstanceError, match="6 problem"):
        build_model(bad)
    with pytest.raises(InstanceError, match="2027-05 does not follow"):
        build_model(replace(good, periods=("2027-03", "2027-05")))


def test_infeasible_hard_bound_is_explained_in_planner_words():
    inst = tiny()
    inst = replace(inst, bounds=(Bound("route", "IU02-GU02-ROAD", lower=500, periods=("2027-03",), name="contract"),))
    result = plan(inst, SolverOptions(mip_rel_gap=0.0))
    assert result.solution.status is SolveStatus.INFEASIBLE
    first = result.violations[0]
    assert first.family == "route_bounds"
    assert first.description == (
        "route IU02→GU02 by ROAD (IU02-GU02-ROAD) carries at least 500 t in 2027-03 [contract]"
    )
    # IU02 can send at most 80 t made + 10 t in stock = 90 t; GU02 can take at most 40 t stock + 60 t demand.
    assert first.amount == pytest.approx(500 - 90)
    assert "why_no_plan" in result.metadata()


def test_hard_safety_stock_that_cannot_be_met_is_named():
    inst = tiny()
    plants = (*inst.plants[:3], replace(inst.plants[3], safety_stock_t=35))
    inst = replace(inst, plants=plants, safety_stock="hard", routes=inst.routes[:1])  # nothing reaches GU02
    result = plan(inst, SolverOptions(mip_rel_gap=0.0))
    assert result.solution.status is SolveStatus.INFEASIBLE
    assert [v.family for v in result.violations] == ["safety_stock"]
    assert result.violations[0].description == "GU02 keeps at least 35 t of safety stock at the end of 2027-03"
    # Soft (the default) it is a priced shortfall instead: 35 t below safety, and GU02's 50 t short.
    soft = plan(replace(inst, safety_stock="soft"), SolverOptions(mip_rel_gap=0.0))
    assert soft.solution.status is SolveStatus.OPTIMAL
    stock = soft.tables()["stock"].filter(plant_id="GU02").row(0, named=True)
    assert stock["below_safety_t"] == 35 and stock["closing_stock_t"] == 0
    assert soft.tables()["shortages"].filter(plant_id="GU02")["shortage_t"].to_list() == [50.0]


def test_a_time_limit_that_stops_early_is_not_reported_optimal():
    inst = generated_instance(20, 60, 12)
    result = plan(inst, SolverOptions(time_limit_s=1.0, mip_rel_gap=0.0))
    assert result.solution.status in (SolveStatus.FEASIBLE, SolveStatus.NO_SOLUTION)
    meta = result.metadata()
    assert meta["solver_status"] in ("feasible", "no_solution")
    if result.solution.status is SolveStatus.FEASIBLE:
        assert result.solution.gap > 0 and result.solution.bound <= result.solution.objective


def test_scenario_overrides_change_the_plan():
    inst = tiny()
    base = plan(inst, SolverOptions(mip_rel_gap=0.0))
    closed = plan(inst.with_overrides(closed_routes=["IU01-GU02-RAIL"]), SolverOptions(mip_rel_gap=0.0))
    rail = closed.tables()["shipments"].filter(mode="RAIL")
    assert rail.height == 0 and closed.solution.objective >= base.solution.objective
    more = plan(inst.with_overrides(demand_uplift_pct=50), SolverOptions(mip_rel_gap=0.0))
    assert more.tables()["shortages"]["shortage_t"].sum() > 0  # 225 t demand − 10 t stock > 180 t capacity
    with pytest.raises(InstanceError, match="closes route 'NOPE'"):
        inst.with_overrides(closed_routes=["NOPE"])


def test_instance_file_round_trips_and_names_unknown_fields(tmp_path):
    inst = generated_instance(2, 4, 3, seed=5)
    path = save_instance(inst, tmp_path / "net.json")
    again = load_instance(path)
    assert again == inst
    data = json.loads(path.read_text())
    data["routes"][0]["speed"] = 3
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(InstanceError, match=r"route 1 \(IU.*\) has unknown field\(s\) \['speed'\]"):
        load_instance(tmp_path / "bad.json")


def test_command_line_solves_an_instance_file(tmp_path, capsys):
    path = save_instance(tiny(), tmp_path / "tiny.json")
    best, _ = exhaustive_optimum(tiny())
    mps = tmp_path / "tiny.mps"
    code = main(["optimize", "supply", "--instance", str(path), "--solver", "cbc", "--gap", "0", "--mps", str(mps)])
    out = capsys.readouterr().out
    assert code == 0
    assert "status:    optimal" in out
    assert f"objective: {best:,.2f} INR" in out
    assert "IU01-GU02-RAIL" in out or "IU01-GU01-ROAD" in out
    assert "shortages: none, all demand met" in out
    assert "ROWS" in mps.read_text()  # the model as MPS, on request
    bad = replace(tiny(), routes=(Route("X", "GU01", "GU02", "ROAD", 1),))
    save_instance(bad, tmp_path / "bad.json")
    assert main(["optimize", "supply", "--instance", str(tmp_path / "bad.json")]) == 2
    assert "route X: origin GU01 is a GU; routes leave an IU" in capsys.readouterr().err


def test_an_iu_passes_clinker_on_beyond_its_own_storage():
    """IU02 has 10 t of storage and no kiln of its own running, but forwards IU01's clinker within the month:
    the route bounds (big-M) must not cap the transfer at IU02's storage."""
    inst = SupplyInstance(
        name="transshipment",
        periods=("2027-01",),
        plants=(
            Plant("IU01", "IU", max_stock_t=20, capacity_t=(100,), production_cost_per_t=10),
            Plant("IU02", "IU", max_stock_t=10, capacity_t=(0,), production_cost_per_t=10),
            Plant("GU01", "GU", max_stock_t=10, demand_t=(80,)),
        ),
        routes=(
            Route(
                "IU01-IU02-RAIL", "IU01", "IU02", "RAIL", 1, vehicle_capacity_t=100, cost_per_trip=50, min_batch_t=50
            ),
            Route("IU02-GU01-ROAD", "IU02", "GU01", "ROAD", 2, vehicle_capacity_t=20, cost_per_trip=5),
        ),
        shortage_penalty_per_t=1000,
        safety_penalty_per_t=100,
    )
    result = plan(inst, SolverOptions(mip_rel_gap=0.0))
    assert result.tables()["shortages"].height == 0
    ships = dict(result.tables()["shipments"].select("route_id", "shipped_t").iter_rows())
    assert ships == {"IU01-IU02-RAIL": 80.0, "IU02-GU01-ROAD": 80.0}
    assert result.solution.objective == pytest.approx(80 * 10 + 80 * 1 + 50 + 80 * 2 + 4 * 5)


def test_a_whole_rake_against_a_rail_cap_is_explained():
    """Rail may carry at most 80 t in the month, and the contract wants at least 10 t on the rail lane, whose
    rakes go whole at 100 t (minimum batch): fine with fractional rakes, impossible with whole ones."""
    inst = replace(
        tiny(),
        bounds=(
            Bound("mode", "RAIL", upper=80, name="rail cap"),
            Bound("route", "IU01-GU02-RAIL", lower=10, name="contract"),
        ),
        routes=(*tiny().routes[:4], replace(tiny().routes[4], min_batch_t=100)),
    )
    result = plan(inst, SolverOptions(mip_rel_gap=0.0))
    assert result.solution.status is SolveStatus.INFEASIBLE
    # The cheaper way out is to give up the 10 t contract rather than run a rake 20 t over the rail cap.
    [violation] = result.violations
    assert violation.family == "route_bounds" and violation.amount == pytest.approx(10)
    assert (
        violation.description == "route IU01→GU02 by RAIL (IU01-GU02-RAIL) carries at least 10 t in 2027-03 [contract]"
    )
