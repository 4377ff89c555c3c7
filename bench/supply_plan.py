"""The supply plan at the size of a real clinker network: 20 integrated units, 60 grinding units, road and
rail, 12 monthly periods, solved by HiGHS to a 1 % gap.

Run: ``python -m bench.supply_plan [--runs 3] [--gap 0.01] [--time-limit 120] [--threads 1]``

What is measured, per run (the figures are medians over the runs):

- ``supply_build_s``: validating the instance and building the model from whole arrays (ModelBuilder);
- ``supply_pulp_build_s``: building the same model in PuLP, one variable and one constraint at a time
  (optimization.solver.to_pulp, the path CBC is solved through), for ``supply_build_speedup_vs_pulp``;
- ``supply_solve_s`` and ``supply_gap``: HiGHS's wall time to the requested gap (or the time limit) and the
  gap it reached, in percent;
- ``supply_peak_rss_mb``: this process's peak resident memory after all runs (ru_maxrss).

The instance is `optimization.supply.generated_instance()` (seed 7): each GU reached by road from its three
nearest IUs and by rail from the fourth (3,800 t rakes, a rake minimum batch), a 45 % rail share cap,
demand about 85 % of capacity: 3,600 integer trip counts and 720 route-used binaries.
"""

from __future__ import annotations

import argparse
import resource
import time

from bench.common import median, print_table, write_results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--gap", type=float, default=0.01, help="relative MIP gap (0.01 = 1 %%)")
    parser.add_argument("--time-limit", type=float, default=120.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()

    from optimization.solver import SolverOptions, solve, to_pulp
    from optimization.supply import build_model, generated_instance

    instance = generated_instance(20, 60, 12, seed=args.seed)
    builds, pulp_builds, solves, gaps, statuses = [], [], [], [], []
    stats: dict[str, int] = {}
    for _ in range(args.runs):
        started = time.perf_counter()
        built = build_model(instance)
        builds.append(time.perf_counter() - started)
        stats = built.model.stats()
        started = time.perf_counter()
        to_pulp(built.model)
        pulp_builds.append(time.perf_counter() - started)
        solution = solve(
            built.model, SolverOptions(mip_rel_gap=args.gap, time_limit_s=args.time_limit, threads=args.threads)
        )
        solves.append(solution.solve_s)
        gaps.append(100 * solution.gap if solution.gap is not None else float("nan"))
        statuses.append(str(solution.status))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    figures = {
        "supply_build_s": median(builds),
        "supply_pulp_build_s": median(pulp_builds),
        "supply_build_speedup_vs_pulp": median(pulp_builds) / median(builds),
        "supply_solve_s": median(solves),
        "supply_gap": median(gaps),
        "supply_peak_rss_mb": peak_mb,
        "supply_rows": stats["rows"],
        "supply_columns": stats["columns"],
        "supply_integer_columns": stats["integer_columns"],
        "supply_nonzeros": stats["nonzeros"],
        "supply_runs": args.runs,
    }
    path = write_results("supply_plan", figures)
    print_table(
        f"supply plan: 20 IU × 60 GU × 2 modes × 12 periods, HiGHS to {100 * args.gap:g} % "
        f"({args.runs} runs, statuses {', '.join(statuses)})",
        [
            ("model", f"{stats['rows']}×{stats['columns']}"),
            ("integer columns", f"{stats['integer_columns']}"),
            ("nonzeros", f"{stats['nonzeros']}"),
            ("build with arrays (s)", f"{figures['supply_build_s']:.4f}"),
            ("build with PuLP (s)", f"{figures['supply_pulp_build_s']:.3f}"),
            ("speed-up of arrays", f"{figures['supply_build_speedup_vs_pulp']:.1f}×"),
            ("solve (s)", f"{figures['supply_solve_s']:.2f}"),
            ("gap (%)", f"{figures['supply_gap']:.3f}"),
            ("peak RSS (MB)", f"{peak_mb:.0f}"),
        ],
    )
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
