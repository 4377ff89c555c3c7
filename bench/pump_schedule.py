"""Pump scheduling: build and solve times, gap and saving for the 4-pump, 2-tank station over a day and a week.

Run: ``python -m bench.pump_schedule [--runs 3] [--week-runs 1] [--time-limit-day 10] [--time-limit-week 60]``

What is measured, on the ``BENCH`` station of optimization/stations.yaml (pumps of 180, 120, 110 and
70 m³/h into two tanks, minimum run 30–45 min, rest 30 min, six starts a day) with the simulator's diurnal
demand and the Thai time-of-use tariff with its on-peak demand charge (`optimization.pump.example_instance`):

- **96 steps** (24 h) and **672 steps** (7 days) solved by HiGHS to a 0.1 % relative gap or the time limit,
  one thread: solve time and the gap reached (0 when proven within the gap). Medians over ``--runs``
  (``--week-runs`` for 672 steps); a different demand noise seed each run.
- **build**: the array build (`build_model`) against building the same model coefficient by coefficient in
  PuLP (`optimization.solver.to_pulp`, which is what CBC gets): ``build_speedup_vs_pulp`` is the median
  ratio at 672 steps.
- **saving**: the plan against the operators' level rule on the same inputs (day runs), median percent.
- **memory**: the peak resident set of this process (``optimization_peak_rss_mb``).

Targets (issue 9): 96 steps to 0.1 % in ≤ 2 s, 672 steps in ≤ 60 s, build ≥ 10× faster than PuLP,
peak memory ≤ 1 GB. The benchmark reports what it measures; it never fails on a time.
"""

from __future__ import annotations

import argparse
import resource
import time

from bench.common import median, print_table, write_results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.pump_schedule", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--week-runs", type=int, default=1)
    parser.add_argument("--time-limit-day", type=float, default=10.0)
    parser.add_argument("--time-limit-week", type=float, default=60.0)
    args = parser.parse_args(argv)

    from optimization.pump import build_model, example_instance, plan
    from optimization.solver import SolverOptions, new_highs, to_pulp

    new_highs()  # the banner and the wheel's first load are not part of any figure
    figures: dict[str, float] = {}
    rows: list[tuple[str, str]] = []
    for steps, runs, limit in ((96, args.runs, args.time_limit_day), (672, args.week_runs, args.time_limit_week)):
        solve_s, gaps, savings, statuses = [], [], [], []
        build_s, pulp_s = [], []
        for seed in range(runs):
            instance = example_instance("BENCH", steps=steps, seed=seed)
            started = time.perf_counter()
            model = build_model(instance)
            build_s.append(time.perf_counter() - started)
            started = time.perf_counter()
            to_pulp(model)
            pulp_s.append(time.perf_counter() - started)
            result = plan(instance, SolverOptions(time_limit_s=limit, mip_rel_gap=1e-3, threads=1))
            # The first plan of a multi-day horizon (day by day) is part of what a planner waits for.
            solve_s.append(time.perf_counter() - started - pulp_s[-1])
            statuses.append(str(result.solution.status))
            gap = result.solution.gap
            gaps.append(100 * gap if gap is not None else float("nan"))
            if result.has_plan:
                savings.append(result.costs()["saving_pct"])
        figures[f"pump_{steps}_solve_s"] = median(solve_s)
        figures[f"pump_{steps}_gap"] = median(gaps)  # percent
        figures[f"pump_{steps}_build_s"] = median(build_s)
        figures[f"pump_{steps}_pulp_build_s"] = median(pulp_s)
        if steps == 96 and savings:
            figures["pump_saving_pct"] = median(savings)
        if steps == 672:
            figures["build_speedup_vs_pulp"] = median([p / b for p, b in zip(pulp_s, build_s, strict=True)])
        rows += [
            (f"{steps} steps: status", ", ".join(statuses)),
            (f"{steps} steps: solve (incl. first plan), s", f"{figures[f'pump_{steps}_solve_s']:.2f}"),
            (f"{steps} steps: gap reached, %", f"{figures[f'pump_{steps}_gap']:.3f}"),
            (f"{steps} steps: build with arrays, s", f"{figures[f'pump_{steps}_build_s']:.4f}"),
            (f"{steps} steps: build with PuLP, s", f"{figures[f'pump_{steps}_pulp_build_s']:.3f}"),
        ]
    figures["optimization_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows += [
        ("saving against the level rule (96 steps), %", f"{figures.get('pump_saving_pct', float('nan')):.1f}"),
        ("build speed-up, arrays vs PuLP (672 steps)", f"{figures['build_speedup_vs_pulp']:.0f}x"),
        ("peak RSS, MB", f"{figures['optimization_peak_rss_mb']:.0f}"),
    ]
    print_table("Pump scheduling, BENCH station (4 pumps, 2 tanks), HiGHS, 1 thread", rows)
    print(f"\nresults: {write_results('pump_schedule', figures)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
