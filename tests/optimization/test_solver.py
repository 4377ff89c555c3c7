"""The array model builder and the solver runner: matrices as intended, optima proven, statuses honest."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from optimization.model import ModelBuilder
from optimization.solver import SolverOptions, SolveStatus, explain_infeasibility, solve, to_pulp


def knapsack(n: int, m: int, seed: int, share: float = 0.5):
    """A multi-dimensional 0/1 knapsack (maximise value as a minimum of −value): hard enough to need branching."""
    rng = np.random.default_rng(seed)
    weights = rng.integers(10, 100, (m, n)).astype(float)
    values = rng.integers(10, 100, n).astype(float)
    capacity = weights.sum(axis=1) * share
    builder = ModelBuilder(f"knapsack {n}x{m}")
    x = builder.variables("take", n, kind="binary", cost=-values)
    builder.constraints(
        "capacity",
        [(np.broadcast_to(x, (m, n)), weights)],
        upper=capacity,
        describe=lambda i: f"knapsack dimension {i} holds at most {capacity[i]:.0f}",
    )
    return builder.build(), weights, values, capacity


def test_families_become_the_intended_sparse_matrix():
    builder = ModelBuilder("balance")
    level = builder.variables("level", (2, 3), lower=0.5, upper=[[4, 4, 4], [5, 5, 5]], cost=1.0)
    pump = builder.variables("pump", (2, 3), kind="binary", upper=np.array([[1, 1, 1], [0, 0, 0]]))
    # level[t] - level[t-1] - 2·pump[t] = 0 for t = 1, 2 per tank, as a mass balance family would be written.
    builder.constraints(
        "mass_balance",
        [(level[:, 1:].ravel(), 1.0), (level[:, :-1].ravel(), -1.0), (pump[:, 1:].ravel(), -2.0)],
        lower=0.0,
        upper=0.0,
    )
    # A term repeated on one column is summed, as a modeller adding two terms expects.
    builder.constraints("twice", [(level[:1, 0], 1.0), (level[:1, 0], 2.0)], upper=9.0)
    model = builder.build()

    dense = model.matrix.toarray()
    assert model.stats() == {"rows": 5, "columns": 12, "integer_columns": 6, "nonzeros": 13}
    first = np.zeros(12)
    first[[1, 0, 7]] = [1.0, -1.0, -2.0]  # level[0,1] - level[0,0] - 2·pump[0,1]
    np.testing.assert_array_equal(dense[0], first)
    np.testing.assert_array_equal(dense[4], np.eye(12)[0] * 3.0)
    assert model.col_upper[6:].tolist() == [1, 1, 1, 0, 0, 0]  # the out-of-service pump stays at 0
    assert model.col_upper[:6].tolist() == [4, 4, 4, 5, 5, 5]
    assert model.row_families["mass_balance"].count == 4 and model.row_families["twice"].start == 4


def test_builder_names_the_family_that_is_wrong():
    builder = ModelBuilder("station S1")
    x = builder.variables("flow", 4)
    with pytest.raises(ValueError, match="'balance': term 1 has 3 rows, expected 4"):
        builder.constraints("balance", [(x, 1.0), (x[:3], 1.0)], lower=0)
    with pytest.raises(ValueError, match="family 'flow' added twice"):
        builder.variables("flow", 2)
    with pytest.raises(ValueError, match="unknown column"):
        builder.constraints("bad", [(np.array([7]), 1.0)], upper=1)


@pytest.mark.parametrize("solver", ["highs", "cbc"])
def test_small_mip_optimum_is_the_exhaustive_optimum(solver):
    model, weights, values, capacity = knapsack(n=12, m=3, seed=11)
    best = max(
        values @ np.array(pick)
        for pick in itertools.product((0, 1), repeat=12)
        if np.all(weights @ np.array(pick) <= capacity)
    )
    solution = solve(model, SolverOptions(solver=solver, mip_rel_gap=0.0))
    assert solution.status is SolveStatus.OPTIMAL
    assert solution.objective == pytest.approx(-best)
    taken = solution.values("take")
    assert set(np.unique(taken)) <= {0.0, 1.0}
    assert values @ taken == pytest.approx(best)
    assert np.all(weights @ taken <= capacity + 1e-9)


def test_highs_and_cbc_agree_within_the_gap():
    model, *_ = knapsack(n=60, m=5, seed=5)
    options = {"mip_rel_gap": 1e-4, "time_limit_s": 60}
    highs = solve(model, SolverOptions(solver="highs", **options))
    cbc = solve(model, SolverOptions(solver="cbc", **options))
    assert highs.status is SolveStatus.OPTIMAL and cbc.status is SolveStatus.OPTIMAL
    assert abs(highs.objective - cbc.objective) <= 1e-4 * abs(highs.objective) + 1e-6
    assert highs.bound <= highs.objective + 1e-6  # minimisation: the bound is below the incumbent


def test_time_limit_gives_an_incumbent_with_its_gap_never_optimal():
    model, *_ = knapsack(n=400, m=15, seed=3)
    solution = solve(model, SolverOptions(time_limit_s=0.3, mip_rel_gap=0.0))
    assert solution.status in (SolveStatus.FEASIBLE, SolveStatus.NO_SOLUTION)
    if solution.status is SolveStatus.FEASIBLE:
        assert solution.gap is not None and solution.gap > 0
        assert solution.bound is not None and solution.bound < solution.objective
        assert solution.solve_s < 5
        meta = solution.metadata(build_s=0.01)
        assert meta["solver_status"] == "feasible" and meta["gap_pct"] > 0 and meta["model_integer_columns"] == 400


def test_lp_optimum_is_its_own_bound():
    builder = ModelBuilder("lp")
    x = builder.variables("x", 2, cost=[1.0, 2.0])
    builder.constraints("demand", [(x[None, :], [[1.0, 1.0]])], lower=3.0)
    builder.constraints("split", [(x[:1], 1.0)], upper=1.0)
    builder.add_objective_constant(10.0)
    solution = solve(builder.build())
    assert solution.status is SolveStatus.OPTIMAL
    assert solution.objective == pytest.approx(1 + 2 * 2 + 10)
    assert solution.bound == pytest.approx(solution.objective) and solution.gap == 0.0
    np.testing.assert_allclose(solution.values("x"), [1.0, 2.0])


@pytest.mark.parametrize("solver", ["highs", "cbc"])
def test_infeasible_and_unbounded_are_told_apart(solver):
    builder = ModelBuilder("need")
    x = builder.variables("supply", 2, upper=1.0)
    builder.constraints("demand", [(x[None, :], 1.0)], lower=3.0)
    assert solve(builder.build(), SolverOptions(solver=solver)).status is SolveStatus.INFEASIBLE

    builder = ModelBuilder("free")
    y = builder.variables("y", 2, lower=-np.inf, cost=[1.0, 0.0])
    builder.constraints("link", [(y[None, :], [[1.0, -1.0]])], upper=0.0)
    assert solve(builder.build(), SolverOptions(solver=solver)).status is SolveStatus.UNBOUNDED


def test_infeasibility_is_explained_by_the_rows_that_must_give():
    steps = ["17:30", "17:45", "18:00"]
    builder = ModelBuilder("tank")
    level = builder.variables("level", 3, lower=-np.inf)
    builder.constraints("start", [(level[:1], 1.0)], lower=2.0, upper=2.0, describe=lambda i: "start at 2.00 m")
    # The tank can fall at most 0.3 m a step, but must be below 1.0 m at 18:00.
    builder.constraints(
        "max_draw",
        [(level[1:], 1.0), (level[:-1], -1.0)],
        lower=-0.3,
        describe=lambda i: f"tank T1 cannot fall faster than 0.30 m per step at {steps[i + 1]}",
    )
    builder.constraints(
        "level_max",
        [(level[2:], 1.0)],
        upper=1.0,
        describe=lambda i: "tank T1 must be below 1.00 m at 18:00",
    )
    model = builder.build()
    assert solve(model).status is SolveStatus.INFEASIBLE
    violations = explain_infeasibility(model)
    assert sum(v.amount for v in violations) == pytest.approx(0.4)
    families = {v.family for v in violations}
    assert families <= {"start", "max_draw", "level_max"} and violations
    assert all(v.description.startswith(("tank T1", "start")) for v in violations)

    feasible, *_ = knapsack(n=5, m=1, seed=1)
    assert explain_infeasibility(feasible) == []


def test_model_written_as_mps_reads_back(tmp_path):
    model, *_ = knapsack(n=20, m=2, seed=2)
    path = tmp_path / "models" / "knapsack.mps"
    first = solve(model, SolverOptions(mps_path=str(path), mip_rel_gap=0.0))
    assert path.exists() and "ROWS" in path.read_text()

    from optimization.solver import new_highs

    highs = new_highs()
    highs.readModel(str(path))
    highs.setOptionValue("mip_rel_gap", 0.0)
    highs.run()
    assert highs.getInfo().objective_function_value == pytest.approx(first.objective)

    cbc_path = tmp_path / "cbc.mps"
    solve(model, SolverOptions(solver="cbc", mps_path=str(cbc_path)))
    assert "ROWS" in cbc_path.read_text()


def test_pulp_copy_is_the_same_model():
    model, *_ = knapsack(n=10, m=2, seed=4)
    problem, columns = to_pulp(model)
    assert len(columns) == model.num_columns
    assert len(problem.constraints) == model.num_rows
    assert sum(1 for v in columns if v.cat == "Integer") == 10


def test_options_are_validated():
    with pytest.raises(ValueError, match="solver must be one of highs, cbc"):
        SolverOptions(solver="gurobi")
    with pytest.raises(ValueError, match=r"0\.001 = 0\.1 %"):
        SolverOptions(mip_rel_gap=5)


def test_ihub_lists_the_solvers():
    ihub = str(Path(sys.executable).with_name("ihub"))
    out = subprocess.run([ihub, "optimize", "solvers"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(maxsplit=1) for line in out.stdout.splitlines())
    assert lines["highs"].startswith("HiGHS 1.") and "CBC" in lines["cbc"]
    assert "Running HiGHS" not in out.stdout  # the banner stays out of the planner's output
