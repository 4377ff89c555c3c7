"""The three plots a planner looks at, rendered to PNG next to the plan.

- ``levels``: each tank's planned level (and the baseline's, dashed) inside its band, over the tariff
  (on-peak steps shaded), so one sees the tanks filled before on-peak and drawn down through it.
- ``gantt``: one bar per pump and run, planned against the baseline.
- ``cost``: energy cost per step, plan against baseline, with the running totals.

matplotlib is imported here only (Agg backend, no display): Dagster definitions and the CLI stay fast, and
an installation without it still plans (the asset says the plots were skipped, and why).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["render_plots"]


def render_plots(result, directory: str | Path) -> dict[str, Path]:
    """Write levels.png, gantt.png and cost.png for a plan with a solution; returns their paths by name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    inst = result.instance
    steps, s = inst.steps, inst.station
    hours = np.arange(steps + 1) * inst.step_h
    on_peak = np.asarray(inst.on_peak, dtype=bool)
    title = f"{s.id} {inst.start:%Y-%m-%d} UTC, scenario {inst.name}"
    paths: dict[str, Path] = {}

    def shade(ax) -> None:
        for t in np.flatnonzero(on_peak):
            ax.axvspan(hours[t], hours[t + 1], color="#f4d6a0", alpha=0.35, lw=0)

    # Levels with bounds and the tariff.
    fig, axes = plt.subplots(len(s.tanks) + 1, 1, figsize=(10, 2.4 * (len(s.tanks) + 1)), sharex=True)
    level = result.level_m
    for k, tank in enumerate(s.tanks):
        ax = axes[k]
        shade(ax)
        ax.plot(hours, level[k], color="#1f5fa8", lw=2, label="plan")
        ax.plot(hours, result.baseline.level_m[k], color="#777777", lw=1, ls="--", label="baseline (level rule)")
        ax.axhline(tank.min_level_m, color="#b22222", lw=1)
        ax.axhline(tank.max_level_m, color="#b22222", lw=1)
        ax.set_ylabel(f"{tank.id} level, m")
        ax.legend(loc="upper right", fontsize=8)
    ax = axes[-1]
    shade(ax)
    ax.step(hours[:-1], inst.price_thb_per_kwh, where="post", color="#8a4b08")
    ax.set_ylabel("THB/kWh")
    ax.set_xlabel(f"hours from {inst.start:%H:%M} UTC (shaded: on-peak)")
    axes[0].set_title(f"Tank levels and tariff — {title}")
    fig.tight_layout()
    paths["levels"] = directory / "levels.png"
    fig.savefig(paths["levels"], dpi=90)
    plt.close(fig)

    # Pump Gantt: plan (solid) and baseline (hatched, thinner) per pump.
    fig, ax = plt.subplots(figsize=(10, 0.7 * len(s.pumps) + 1.2))
    shade(ax)
    for p in range(len(s.pumps)):
        for row, on, style in (
            (p, result.on[p], {"color": "#1f5fa8"}),
            (p + 0.35, result.baseline.on[p], {"color": "#aaaaaa"}),
        ):
            runs = _runs(on)
            ax.broken_barh(
                [(hours[a], hours[b] - hours[a]) for a, b in runs], (row - 0.15, 0.28 if row == p else 0.15), **style
            )
    ax.set_yticks(np.arange(len(s.pumps)) + 0.1, [p.id for p in s.pumps])
    ax.invert_yaxis()
    ax.set_xlabel("hours (blue: plan, grey: baseline; shaded: on-peak)")
    ax.set_title(f"Pump schedule — {title}")
    fig.tight_layout()
    paths["gantt"] = directory / "gantt.png"
    fig.savefig(paths["gantt"], dpi=90)
    plt.close(fig)

    # Cost per step against the baseline.
    costs = result.step_costs()
    fig, ax = plt.subplots(figsize=(10, 3.2))
    shade(ax)
    width = inst.step_h * 0.45
    ax.bar(hours[:-1], costs["plan_cost_thb"].to_numpy(), width=width, align="edge", color="#1f5fa8", label="plan")
    ax.bar(
        hours[:-1] + width,
        costs["baseline_cost_thb"].to_numpy(),
        width=width,
        align="edge",
        color="#aaaaaa",
        label="baseline",
    )
    ax.set_ylabel("energy cost per step, THB")
    ax.set_xlabel("hours (shaded: on-peak)")
    totals = result.costs()
    ax.set_title(
        f"Cost per step — plan {totals['plan_cost_thb']:,.0f} THB vs baseline {totals['baseline_cost_thb']:,.0f} THB "
        f"(saving {totals['saving_pct']:.1f} %, demand charge included)"
    )
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    paths["cost"] = directory / "cost.png"
    fig.savefig(paths["cost"], dpi=90)
    plt.close(fig)
    return paths


def _runs(on: np.ndarray) -> list[tuple[int, int]]:
    """(first step, step after the last) of each run of a pump."""
    padded = np.concatenate([[0], np.asarray(on, dtype=int), [0]])
    change = np.diff(padded)
    return list(zip(np.flatnonzero(change == 1), np.flatnonzero(change == -1), strict=True))
