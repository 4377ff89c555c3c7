"""`ihub optimize pump`: a pump schedule from an instance file, or from the lake's data for a station and day.

    ihub optimize pump --instance plan.json [--solver cbc] [--time-limit 30] [--gap 0.001] [--plots DIR]
    ihub optimize pump --station PS01 --date 2026-12-05 [--scenario overrides.json]
    ihub optimize pump --write-example PS01 plan.json   # a self-contained instance to start from

Prints the status (optimal, or feasible at the time limit with its gap, infeasible with the reason in the
planner's words), the objective, gap and bound, the baseline's cost and the saving, and the schedule: one
line per pump, one character per 15-minute step (█ on, · off), with the tanks' levels under it.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

__all__ = ["add_parser", "run"]


def add_parser(optimize_commands) -> argparse.ArgumentParser:
    parser = optimize_commands.add_parser(
        "pump",
        help="plan a pump station's schedule (instance file or the lake's data)",
        description=(
            "Solve the pump scheduling MILP (docs/optimization/pump.md) and print status, objective, gap, "
            "the baseline's cost, the saving and the schedule."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--instance", type=Path, help="a self-contained instance file (JSON), no lake needed")
    source.add_argument("--station", help="a station of optimization/stations.yaml, planned on the lake's data")
    source.add_argument(
        "--write-example", nargs=2, metavar=("STATION", "FILE"), help="write an example instance file and stop"
    )
    parser.add_argument("--date", type=date.fromisoformat, help="schedule day (UTC) with --station, e.g. 2026-12-05")
    parser.add_argument("--scenario", type=Path, help="JSON overrides with --station (as the asset's run config)")
    parser.add_argument("--solver", choices=("highs", "cbc"), default="highs")
    parser.add_argument("--time-limit", type=float, default=60.0, help="seconds (default 60)")
    parser.add_argument("--gap", type=float, default=1e-3, help="relative MIP gap to stop at (default 0.001 = 0.1 %%)")
    parser.add_argument("--mps", type=Path, help="also write the model as MPS here")
    parser.add_argument("--plots", type=Path, help="render the planner's plots (PNG) into this directory")
    parser.add_argument("--table", action="store_true", help="print the full schedule table (pump, step, …)")
    return parser


def run(args: argparse.Namespace) -> int:
    from optimization.pump import PumpInputError, example_instance, instance_from_json, instance_to_json, plan
    from optimization.solver import SolverOptions

    if args.write_example:
        station_id, path = args.write_example
        Path(path).write_text(json.dumps(instance_to_json(example_instance(station_id)), indent=1) + "\n")
        print(f"wrote an example instance of station {station_id} to {path}")
        return 0
    try:
        if args.instance:
            instance = instance_from_json(args.instance)
        else:
            if args.date is None:
                print("ihub optimize pump --station needs --date YYYY-MM-DD (the schedule day, UTC)", file=sys.stderr)
                return 2
            from assets.pump_schedule import PumpScenario, instance_from_lake
            from orchestration.settings import lake_dir
            from resources.lake import Lake

            overrides = json.loads(args.scenario.read_text()) if args.scenario else {}
            scenario = PumpScenario(**{"station": args.station, **overrides})
            instance = instance_from_lake(Lake(root=lake_dir()), args.station, args.date, scenario)
        options = SolverOptions(
            solver=scenario.solver if args.station and args.scenario else args.solver,
            time_limit_s=args.time_limit,
            mip_rel_gap=args.gap,
            mps_path=str(args.mps) if args.mps else None,
        )
        result = plan(instance, options)
    except (PumpInputError, KeyError, ValueError, FileNotFoundError) as exc:
        print(f"ihub optimize pump: {exc}", file=sys.stderr)
        return 2
    print(report(result))
    if args.table and result.has_plan:
        import polars as pl

        with pl.Config(tbl_rows=-1, tbl_cols=-1):
            print(result.schedule().drop("station_id", "scenario"))
    if args.plots and result.has_plan:
        from optimization.pump_plots import render_plots

        for name, path in render_plots(result, args.plots).items():
            print(f"plot {name}: {path}")
    return 0 if result.has_plan else 1


def report(result) -> str:
    """The plan as a planner reads it in a terminal."""
    inst, sol = result.instance, result.solution
    lines = [
        f"station {inst.station.id}  scenario {inst.name}  from {inst.start:%Y-%m-%d %H:%M} UTC  "
        f"{inst.steps} steps of {inst.step_minutes} min",
        f"status     {sol.status}" + (f" ({sol.message})" if sol.message else ""),
    ]
    costs = result.costs()
    if result.has_plan:
        gap = f"{100 * sol.gap:.3f} %" if sol.gap is not None else "unknown"
        bound = f"{sol.bound:,.2f}" if sol.bound is not None else "unknown"
        lines += [
            f"objective  {sol.objective:,.2f} THB   gap {gap}   bound {bound}   "
            f"solve {sol.solve_s:.2f} s   build {result.build_s:.3f} s",
            f"plan       {costs['plan_cost_thb']:,.2f} THB  (energy {costs['plan_energy_thb']:,.2f} + "
            f"demand charge {costs['plan_demand_charge_thb']:,.2f})",
        ]
    lines.append(
        f"baseline   {costs['baseline_cost_thb']:,.2f} THB  (energy {costs['baseline_energy_thb']:,.2f} + "
        f"demand charge {costs['baseline_demand_charge_thb']:,.2f}; level rule, "
        f"{result.baseline.band_violations} steps outside a band)"
    )
    if result.has_plan:
        lines.append(
            f"saving     {costs['saving_thb']:,.2f} THB  ({costs['saving_pct']:.1f} %; the baseline charged "
            f"{costs['baseline_end_water_thb']:,.2f} THB to end with the plan's water)"
        )
        ruler = [" "] * inst.steps
        every = 3 * 60 // inst.step_minutes  # a clock label every three hours
        for t in range(0, inst.steps, every):
            ruler[t : t + 2] = inst.step_label(t)[-5:-3]
        lines.append(f"{'local h':<8}{''.join(ruler)[: inst.steps]}")
        tariff = "".join("^" if peak else " " for peak in inst.on_peak)
        lines.append(f"{'on-peak':<8}{tariff}")
        for p, pump in enumerate(inst.station.pumps):
            row = "".join("█" if v else "·" for v in result.on[p])
            lines.append(f"{pump.id:<8}{row}")
        level = result.level_m
        for k, tank in enumerate(inst.station.tanks):
            lines.append(
                f"tank {tank.id}: {level[k, 0]:.2f} m → {level[k, -1]:.2f} m, between {level[k].min():.2f} and "
                f"{level[k].max():.2f} m (band {tank.min_level_m:.2f}–{tank.max_level_m:.2f} m)"
            )
    for violation in result.violations:
        lines.append(f"why: {violation.description} (short by {violation.amount:.2f})")
    return "\n".join(lines)
