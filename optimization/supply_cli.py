"""``ihub optimize supply``: the supply plan from an instance file or from the lake's ERP and markets tables.

    ihub optimize supply --instance network.json [--solver cbc] [--time-limit 60] [--gap 0.01]
    ihub optimize supply --period-start 2027-01 [--horizon 3] [--scenario scenario.json]

Prints the status, objective, gap, cost by component, the plan (production, shipments, shortages) and, when
the plan is infeasible, which bounds conflict. Exit code 0 when there is a plan (optimal or feasible at
the time limit), 1 when there is none, 2 for an unreadable or invalid instance.

Heavy imports (numpy, HiGHS, polars) happen in ``run``: the CLI's parser is built on every ``ihub`` call.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_parser(optimize_commands: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = optimize_commands.add_parser(
        "supply",
        help="plan clinker production and shipments (an instance file, or the lake's ERP data)",
        description=(
            "Solve the clinker supply plan. With --instance, a self-contained instance file "
            "(docs/optimization/supply.md); with --period-start, the plants, routes, demand forecast, stock "
            "and capacity the ERP assets landed in the lake, road freight from markets/road_freight_costs."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--instance", type=Path, help="instance file (JSON)")
    source.add_argument("--period-start", help="first month of the plan from the lake, YYYY-MM")
    parser.add_argument("--horizon", type=int, default=3, help="months planned from --period-start (default 3)")
    parser.add_argument(
        "--scenario",
        type=Path,
        help='scenario file (JSON): {"name": ..., "demand_uplift_pct": ..., "closed_routes": [...]}',
    )
    parser.add_argument("--solver", choices=("highs", "cbc"), default="highs")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--gap", type=float, default=0.01, help="relative MIP gap, 0.01 = 1 %% (default)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--mps", type=Path, help="also write the model as MPS here")
    parser.add_argument("--rows", type=int, default=30, help="plan rows shown per table (default 30)")
    return parser


def _scenario(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    data = json.loads(path.read_text())
    known = {"name", "demand_uplift_pct", "closed_routes"}
    if not isinstance(data, dict) or set(data) - known:
        unknown = sorted(set(data) - known) if isinstance(data, dict) else data
        raise ValueError(f"scenario {path}: unknown field(s) {unknown}; known: {sorted(known)}")
    return data


def run(args: argparse.Namespace) -> int:
    from optimization.solver import SolverOptions
    from optimization.supply import InstanceError, load_instance, plan

    try:
        scenario = _scenario(args.scenario)
        if args.instance is not None:
            instance = load_instance(args.instance)
        else:
            from datetime import date

            from optimization.supply_lake import instance_from_lake
            from orchestration.settings import lake_dir
            from resources.lake import Lake

            year, month = (int(x) for x in args.period_start.split("-"))
            instance, _ = instance_from_lake(Lake(root=str(lake_dir())), date(year, month, 1), args.horizon)
        if scenario:
            instance = instance.with_overrides(
                demand_uplift_pct=float(scenario.get("demand_uplift_pct", 0.0)),
                closed_routes=scenario.get("closed_routes", ()),
                name=f"{instance.name} [{scenario.get('name', 'scenario')}]",
            )
        options = SolverOptions(
            solver=args.solver,
            time_limit_s=args.time_limit,
            mip_rel_gap=args.gap,
            threads=args.threads,
            mps_path=str(args.mps) if args.mps else None,
        )
        result = plan(instance, options)
    except (InstanceError, ValueError, OSError) as exc:
        print(f"ihub optimize supply: {exc}", file=sys.stderr)
        return 2
    solution = result.solution
    print(f"plan:      {instance.name}")
    print(f"status:    {solution.status}")
    print(f"objective: {'-' if solution.objective is None else f'{solution.objective:,.2f} {instance.currency}'}")
    print(f"gap:       {'-' if solution.gap is None else f'{100 * solution.gap:.3f} %'}")
    print(f"bound:     {'-' if solution.bound is None else f'{solution.bound:,.2f}'}")
    stats = result.built.model.stats()
    print(
        f"model:     {stats['rows']} rows, {stats['columns']} columns ({stats['integer_columns']} integer), "
        f"{stats['nonzeros']} nonzeros; built in {result.built.build_s:.3f} s, solved in {solution.solve_s:.3f} s"
    )
    if not solution.status.has_solution:
        if result.violations:
            print("\nwhy there is no plan (what has to give):")
            for v in result.violations:
                print(f"  - {v.description} (off by {v.amount:,.1f})")
        return 1
    print("\ncost by component:")
    for name, value in result.cost_by_component().items():
        print(f"  {name:<17} {value:>20,.2f}")
    import polars as pl

    tables = result.tables()
    with pl.Config(tbl_rows=args.rows, tbl_cols=12, tbl_width_chars=140, tbl_hide_dataframe_shape=False):
        print("\nproduction:")
        print(tables["production"].select("plant_id", "period", "production_t", "capacity_t").head(args.rows))
        print("\nshipments:")
        print(tables["shipments"].select("route_id", "mode", "period", "shipped_t", "trips").head(args.rows))
        shortages = tables["shortages"]
        print("\nshortages:" if shortages.height else "\nshortages: none, all demand met")
        if shortages.height:
            print(shortages.head(args.rows))
    return 0
