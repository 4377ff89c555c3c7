"""One solver runner for every model: HiGHS through highspy in bulk, or CBC through PuLP for cross-checks.

`solve(model, options)` takes a `LinearModel` (optimization.model) and returns a `Solution` whose status
is honest: a MIP stopped by its time limit with an incumbent is ``feasible`` with its gap and bound, never
``optimal``; no incumbent at the limit is ``no_solution``; infeasible, unbounded and solver errors are
their own statuses. `Solution.metadata()` gives what a Dagster run records (model size, build and solve
time, objective, bound, gap, status).

`explain_infeasibility(model, options)` answers the planner's question "why is there no plan?": it solves
an elastic copy of the model, where every row may be violated at a price, and returns the rows that had
to give, in the words their family's ``describe`` gives them, largest violation first.

HiGHS is imported on first use, not at import: Dagster definitions import this module and must stay fast.
"""

from __future__ import annotations

import contextlib
import enum
import math
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from optimization.model import LinearModel

__all__ = [
    "SOLVERS",
    "Solution",
    "SolveStatus",
    "SolverError",
    "SolverOptions",
    "Violation",
    "available_solvers",
    "explain_infeasibility",
    "solve",
]

SOLVERS = ("highs", "cbc")
SolverName = Literal["highs", "cbc"]


class SolveStatus(enum.StrEnum):
    OPTIMAL = "optimal"  # proven optimal within the requested relative gap
    FEASIBLE = "feasible"  # stopped (time limit) with an incumbent: see gap and bound
    NO_SOLUTION = "no_solution"  # stopped (time limit) before any feasible point was found
    INFEASIBLE = "infeasible"
    UNBOUNDED = "unbounded"
    ERROR = "error"

    @property
    def has_solution(self) -> bool:
        return self in (SolveStatus.OPTIMAL, SolveStatus.FEASIBLE)


class SolverError(RuntimeError):
    """The solver could not be run (missing, bad option): not a statement about the model."""


@dataclass(frozen=True)
class SolverOptions:
    """How to solve: which solver, how long, how close to optimal, on how many threads, with which seed."""

    solver: SolverName = "highs"
    time_limit_s: float = 60.0
    mip_rel_gap: float = 1e-3
    threads: int = 1
    seed: int = 0
    mps_path: str | None = None  # write the model as MPS here before solving

    def __post_init__(self) -> None:
        if self.solver not in SOLVERS:
            raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}")
        if not self.time_limit_s > 0:
            raise ValueError(f"time_limit_s must be positive, got {self.time_limit_s!r}")
        if not 0 <= self.mip_rel_gap < 1:
            raise ValueError(f"mip_rel_gap is a fraction in [0, 1) (0.001 = 0.1 %), got {self.mip_rel_gap!r}")
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads!r}")


@dataclass(frozen=True)
class Solution:
    """What a solve gave: status, objective (with the model's constant), bound, gap, the solution vector."""

    model: LinearModel = field(repr=False)
    status: SolveStatus
    solver: str
    objective: float | None
    bound: float | None  # best proven lower bound (minimisation); None where the solver does not say
    gap: float | None  # relative: |objective - bound| / max(|objective|, 1e-9); 0 for a proven LP optimum
    solve_s: float
    x: np.ndarray | None = field(default=None, repr=False)
    message: str = ""

    def values(self, family: str) -> np.ndarray:
        """A variable family's values in its shape (integers rounded: solvers return 0.9999999)."""
        if self.x is None:
            raise ValueError(f"model {self.model.name!r} has no solution ({self.status}): {self.message}")
        values = self.model.values(self.x, family)
        if self.model.column_families[family].kind != "continuous":
            values = np.rint(values)
        return values

    def metadata(self, build_s: float | None = None) -> dict[str, Any]:
        """Flat figures for a run's metadata: model size, times, status, objective, bound and gap."""
        meta: dict[str, Any] = {f"model_{k}": v for k, v in self.model.stats().items()}
        meta.update(
            solver=self.solver,
            solver_status=str(self.status),
            solve_s=round(self.solve_s, 4),
        )
        if build_s is not None:
            meta["build_s"] = round(build_s, 4)
        if self.objective is not None:
            meta["objective"] = round(self.objective, 6)
        if self.bound is not None:
            meta["bound"] = round(self.bound, 6)
        if self.gap is not None:
            meta["gap_pct"] = round(100 * self.gap, 4)
        if self.message:
            meta["solver_message"] = self.message
        return meta


@dataclass(frozen=True)
class Violation:
    """One row the elastic model had to violate to find any plan."""

    family: str
    row: int  # index within the family
    description: str
    amount: float  # how far outside its bounds, in the row's units


_banner_lock = threading.Lock()
_banner_shown = False


def new_highs():
    """A silent `highspy.Highs`. HiGHS prints its banner to the process's stdout on the first construction,
    before any option can be set; a CLI printing a schedule or a Dagster log has no use for it."""
    import highspy

    global _banner_shown
    with _banner_lock:
        if _banner_shown:
            highs = highspy.Highs()
        else:
            sys.stdout.flush()
            saved = os.dup(1)
            try:
                with open(os.devnull, "wb") as devnull:
                    os.dup2(devnull.fileno(), 1)
                    highs = highspy.Highs()
            finally:
                os.dup2(saved, 1)
                os.close(saved)
            _banner_shown = True
    highs.setOptionValue("output_flag", False)
    return highs


def available_solvers() -> dict[str, str]:
    """Solvers this installation can run, with their version."""
    found: dict[str, str] = {}
    with contextlib.suppress(Exception):  # an absent or broken wheel: not available
        found["highs"] = f"HiGHS {new_highs().version()} (highspy)"
    try:
        import pulp

        if pulp.PULP_CBC_CMD(msg=False).available():
            found["cbc"] = f"CBC (bundled with PuLP {pulp.__version__})"
    except Exception:
        pass
    return found


def solve(
    model: LinearModel, options: SolverOptions | None = None, start: dict[str, np.ndarray] | None = None
) -> Solution:
    """Solve `model` with the chosen solver and return an honest `Solution`.

    `start` gives values for some variable families (by family name, in the family's shape), a known
    plan the solver may begin from: HiGHS completes the other columns and keeps the plan as its first
    incumbent if it is feasible. CBC through PuLP ignores it.
    """
    options = options or SolverOptions()
    if options.solver == "highs":
        return _solve_highs(model, options, start)
    return _solve_cbc(model, options)


# ---------------------------------------------------------------------------------------------- HiGHS


def _highs_lp(model: LinearModel):
    import highspy

    csc = model.matrix.tocsc()
    lp = highspy.HighsLp()
    lp.model_name_ = model.name
    lp.num_col_ = model.num_columns
    lp.num_row_ = model.num_rows
    lp.col_cost_ = model.cost
    lp.col_lower_ = model.col_lower
    lp.col_upper_ = model.col_upper
    lp.row_lower_ = model.row_lower
    lp.row_upper_ = model.row_upper
    lp.offset_ = model.offset
    lp.a_matrix_.format_ = highspy.MatrixFormat.kColwise
    lp.a_matrix_.num_col_ = model.num_columns
    lp.a_matrix_.num_row_ = model.num_rows
    lp.a_matrix_.start_ = csc.indptr.astype(np.int32)
    lp.a_matrix_.index_ = csc.indices.astype(np.int32)
    lp.a_matrix_.value_ = csc.data
    if model.is_mip:
        kinds = np.where(model.integrality, highspy.HighsVarType.kInteger, highspy.HighsVarType.kContinuous)
        lp.integrality_ = list(kinds)
    return lp


def _solve_highs(model: LinearModel, options: SolverOptions, start: dict[str, np.ndarray] | None = None) -> Solution:
    try:
        import highspy
    except ImportError as exc:
        raise SolverError("HiGHS is not installed: pip install 'highspy>=1.15'") from exc
    highs = new_highs()
    for name, value in (
        ("time_limit", float(options.time_limit_s)),
        ("mip_rel_gap", float(options.mip_rel_gap)),
        ("threads", int(options.threads)),
        ("random_seed", int(options.seed)),
    ):
        if highs.setOptionValue(name, value) != highspy.HighsStatus.kOk:
            raise SolverError(f"HiGHS refused option {name}={value!r}")
    started = time.perf_counter()
    status = highs.passModel(_highs_lp(model))
    if status == highspy.HighsStatus.kError:
        raise SolverError(f"HiGHS could not load model {model.name!r} ({model.stats()})")
    if options.mps_path:
        Path(options.mps_path).parent.mkdir(parents=True, exist_ok=True)
        highs.writeModel(str(options.mps_path))
    if start:
        index = np.concatenate([model.column_families[name].columns.ravel() for name in start])
        value = np.concatenate([np.asarray(v, dtype=float).ravel() for v in start.values()])
        highs.setSolution(int(index.size), index.astype(np.int32), value)
    highs.run()
    solve_s = time.perf_counter() - started
    model_status = highs.getModelStatus()
    info = highs.getInfo()
    has_point = info.primal_solution_status == 2  # kSolutionStatusFeasible
    x = np.asarray(highs.getSolution().col_value, dtype=float) if has_point else None
    objective = float(info.objective_function_value) if has_point else None
    ms = highspy.HighsModelStatus
    text = highs.modelStatusToString(model_status)
    bound: float | None
    gap: float | None
    if model.is_mip:
        bound = _finite(info.mip_dual_bound)
        gap = _finite(info.mip_gap) if has_point else None
    else:
        bound, gap = (objective, 0.0) if model_status == ms.kOptimal else (None, None)
    if model_status == ms.kOptimal:
        result = SolveStatus.OPTIMAL
    elif model_status == ms.kInfeasible:
        result = SolveStatus.INFEASIBLE
    elif model_status in (ms.kUnbounded, ms.kUnboundedOrInfeasible):
        result = SolveStatus.UNBOUNDED if model_status == ms.kUnbounded else _infeasible_or_unbounded(model, options)
    elif model_status in (ms.kTimeLimit, ms.kIterationLimit, ms.kSolutionLimit, ms.kInterrupt):
        result = SolveStatus.FEASIBLE if has_point else SolveStatus.NO_SOLUTION
    else:
        result = SolveStatus.ERROR
    if not result.has_solution:
        x, objective = None, None
    return Solution(model, result, "highs", objective, bound, gap, solve_s, x, "" if result.has_solution else text)


def _infeasible_or_unbounded(model: LinearModel, options: SolverOptions) -> SolveStatus:
    """HiGHS's presolve may only know "infeasible or unbounded": a zero objective settles which."""
    zero = replace(model, cost=np.zeros_like(model.cost), offset=0.0)
    feasibility = _solve_highs(zero, replace(options, mps_path=None))
    return SolveStatus.UNBOUNDED if feasibility.status.has_solution else SolveStatus.INFEASIBLE


def _finite(value: float) -> float | None:
    value = float(value)
    return value if math.isfinite(value) and abs(value) < 1e29 else None


# ---------------------------------------------------------------------------------------------- CBC


def to_pulp(model: LinearModel):
    """The same model as a PuLP problem: one LpVariable per column, one constraint per row.

    This is the coefficient-at-a-time way of building that the array builder replaces; it exists to solve
    with CBC, to cross-check HiGHS, and to measure how much the arrays save (bench.optimization).
    """
    import pulp

    problem = pulp.LpProblem(model.name.replace(" ", "_") or "model", pulp.LpMinimize)
    columns = []
    for j in range(model.num_columns):
        lo, hi = model.col_lower[j], model.col_upper[j]
        columns.append(
            pulp.LpVariable(
                f"x{j}",
                lowBound=None if np.isneginf(lo) else float(lo),
                upBound=None if np.isposinf(hi) else float(hi),
                cat=pulp.LpInteger if model.integrality[j] else pulp.LpContinuous,
            )
        )
    problem += pulp.LpAffineExpression(
        [(columns[j], float(c)) for j, c in enumerate(model.cost) if c != 0.0], constant=model.offset
    )
    csr = model.matrix
    for i in range(model.num_rows):
        lo, hi = model.row_lower[i], model.row_upper[i]
        start, stop = csr.indptr[i], csr.indptr[i + 1]
        expression = pulp.LpAffineExpression(
            [(columns[j], float(v)) for j, v in zip(csr.indices[start:stop], csr.data[start:stop], strict=True)]
        )
        if lo == hi:
            problem += pulp.LpConstraint(expression, pulp.LpConstraintEQ, f"r{i}", float(lo))
            continue
        if not np.isneginf(lo):
            problem += pulp.LpConstraint(expression, pulp.LpConstraintGE, f"r{i}_lo", float(lo))
        if not np.isposinf(hi):
            problem += pulp.LpConstraint(expression, pulp.LpConstraintLE, f"r{i}_hi", float(hi))
    return problem, columns


def _solve_cbc(model: LinearModel, options: SolverOptions) -> Solution:
    try:
        import pulp
    except ImportError as exc:
        raise SolverError("CBC needs PuLP: pip install 'pulp>=3'") from exc
    problem, columns = to_pulp(model)
    if options.mps_path:
        Path(options.mps_path).parent.mkdir(parents=True, exist_ok=True)
        problem.writeMPS(str(options.mps_path))
    solver = pulp.PULP_CBC_CMD(
        msg=False,
        timeLimit=options.time_limit_s,
        gapRel=options.mip_rel_gap,
        threads=options.threads,
        options=[f"randomSeed {options.seed}", f"randomCbcSeed {max(options.seed, 1)}"],
    )
    if not solver.available():
        raise SolverError("CBC is not available in this PuLP installation")
    started = time.perf_counter()
    try:
        problem.solve(solver)
    except pulp.PulpSolverError as exc:
        # CBC exits without a solution file on some degenerate models (no rows, an unbounded column).
        elapsed = time.perf_counter() - started
        return Solution(model, SolveStatus.ERROR, "cbc", None, None, None, elapsed, None, str(exc))
    solve_s = time.perf_counter() - started
    # PuLP's status says what CBC claimed; sol_status tells a proven optimum from an incumbent at a limit.
    status, sol_status = problem.status, problem.sol_status
    if status == pulp.LpStatusOptimal and sol_status == pulp.LpSolutionOptimal:
        result = SolveStatus.OPTIMAL
    elif sol_status == pulp.LpSolutionIntegerFeasible:
        result = SolveStatus.FEASIBLE
    elif status == pulp.LpStatusInfeasible or sol_status == pulp.LpSolutionInfeasible:
        result = SolveStatus.INFEASIBLE
    elif status == pulp.LpStatusUnbounded or sol_status == pulp.LpSolutionUnbounded:
        result = SolveStatus.UNBOUNDED
    elif status == pulp.LpStatusNotSolved or sol_status == pulp.LpSolutionNoSolutionFound:
        result = SolveStatus.NO_SOLUTION
    else:
        result = SolveStatus.ERROR
    if not result.has_solution:
        return Solution(model, result, "cbc", None, None, None, solve_s, None, pulp.LpStatus.get(status, "?"))
    x = np.array([v.varValue if v.varValue is not None else 0.0 for v in columns], dtype=float)
    objective = float(model.cost @ x + model.offset)
    # PuLP does not hand back CBC's bound: a proven optimum is its own bound; an incumbent's is unknown.
    bound, gap = (objective, 0.0) if result is SolveStatus.OPTIMAL else (None, None)
    return Solution(model, result, "cbc", objective, bound, gap, solve_s, x)


# ---------------------------------------------------------------------------------------------- why infeasible


def explain_infeasibility(
    model: LinearModel,
    options: SolverOptions | None = None,
    penalty: float = 1e4,
    limit: int = 10,
    family_weights: Mapping[str, float] | None = None,
    families: Sequence[str] | None = None,
) -> list[Violation]:
    """The rows that must give for the model to have any solution, in their families' words.

    Every row gets a slack column on each finite side, priced at `penalty` per unit (the original costs
    are dropped: the question is feasibility, not cost), so the elastic model always has a solution and
    its positive slacks point at the conflicting constraints. Returns at most `limit` violations, largest
    first; an empty list means the model is feasible after all.

    ``family_weights`` multiplies the price of violating a family's rows: a model can make the rows that
    state physics (a mass balance) dearer than the bounds a planner set, so the answer names the bound.
    ``families`` goes further and limits the slack to those constraint families: physics (a mass balance,
    a pump's switching identity) stays exact, so the answer names the requirement that cannot be met (a
    tank's level band) rather than water appearing from nowhere.
    """
    options = options or SolverOptions()
    m, n = model.num_rows, model.num_columns
    lower_finite = np.isfinite(model.row_lower)
    upper_finite = np.isfinite(model.row_upper)
    if families is not None:
        unknown = sorted(set(families) - set(model.row_families))
        if unknown:
            raise KeyError(
                f"model {model.name!r} has no constraint families {unknown}; it has {sorted(model.row_families)}"
            )
        elastic_rows = np.zeros(m, dtype=bool)
        for name in families:
            fam = model.row_families[name]
            elastic_rows[fam.start : fam.start + fam.count] = True
        lower_finite &= elastic_rows
        upper_finite &= elastic_rows
    below = np.flatnonzero(lower_finite)  # rows that may fall short of their lower bound: + s
    above = np.flatnonzero(upper_finite)  # rows that may exceed their upper bound: - s
    import scipy.sparse as sp

    slack = sp.hstack(
        [
            sp.csr_array((np.ones(below.size), (below, np.arange(below.size))), shape=(m, below.size)),
            sp.csr_array((-np.ones(above.size), (above, np.arange(above.size))), shape=(m, above.size)),
        ]
    )
    k = below.size + above.size
    row_price = np.full(m, penalty)
    for name, weight in (family_weights or {}).items():
        if name in model.row_families:
            fam = model.row_families[name]
            row_price[fam.start : fam.start + fam.count] *= weight
    elastic = replace(
        model,
        name=f"{model.name} (elastic)",
        cost=np.concatenate([np.zeros(n), row_price[below], row_price[above]]),
        col_lower=np.concatenate([model.col_lower, np.zeros(k)]),
        col_upper=np.concatenate([model.col_upper, np.full(k, np.inf)]),
        integrality=np.concatenate([model.integrality, np.zeros(k, dtype=bool)]),
        matrix=sp.csr_array(sp.hstack([model.matrix, slack])),
        offset=0.0,
    )
    solution = solve(elastic, replace(options, mps_path=None))
    if not solution.status.has_solution or solution.x is None:
        # Even the elastic model failed: the conflict is in variable bounds (an inverted bound) or integrality.
        inverted = np.flatnonzero(model.col_lower > model.col_upper)
        return [
            Violation(fam.name, int(j - fam.start), f"{fam.name}[{j - fam.start}] has lower bound above upper", 0.0)
            for j in inverted[:limit]
            for fam in [next(f for f in model.column_families.values() if f.start <= j < f.start + f.size)]
        ]
    s = solution.x[n:]
    amounts = np.zeros(m)
    np.add.at(amounts, below, s[: below.size])
    np.add.at(amounts, above, s[below.size :])
    rows = np.flatnonzero(amounts > 1e-6)
    rows = rows[np.argsort(-amounts[rows], kind="stable")][:limit]
    violations = []
    for row in rows:
        family = model.row_family_of(int(row))
        i = int(row) - family.start
        violations.append(Violation(family.name, i, family.description(i), float(amounts[row])))
    return violations
