"""The supply plan's chart: what a planner looks at first, as a PNG next to the plan.

Top: tonnes shipped per month, stacked by mode, against the month's demand (line) and the demand left
unmet (red bars below the axis). Bottom: the plan's cost by component. matplotlib with the Agg backend,
imported here only (Dagster definitions never import it).
"""

from __future__ import annotations

import io

import numpy as np

from optimization.supply import SupplyPlan

MODE_COLOURS = {"ROAD": "#4C78A8", "RAIL": "#F58518", "SEA": "#54A24B"}


def shipments_png(result: SupplyPlan) -> bytes:
    """The chart as PNG bytes (for a plan with a solution)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tables = result.tables()
    periods = list(result.instance.periods)
    x = np.arange(len(periods))
    ships = tables["shipments"]
    demand = result.built.arrays.demand.sum(axis=0)
    shortage = np.zeros(len(periods))
    for row in tables["shortages"].iter_rows(named=True):
        shortage[periods.index(row["period"])] += row["shortage_t"]

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), height_ratios=(3, 2), constrained_layout=True)
    base = np.zeros(len(periods))
    modes = sorted(set(ships["mode"].to_list())) if ships.height else []
    for mode in modes:
        tonnes = np.zeros(len(periods))
        for row in ships.filter(mode=mode).iter_rows(named=True):
            tonnes[periods.index(row["period"])] += row["shipped_t"]
        top.bar(x, tonnes / 1000, bottom=base / 1000, label=f"{mode} shipped", color=MODE_COLOURS.get(mode))
        base += tonnes
    top.plot(x, demand / 1000, "k.-", label="demand")
    if shortage.any():
        top.bar(x, -shortage / 1000, color="#E45756", label="unmet demand")
    top.axhline(0, color="grey", linewidth=0.6)
    top.set_xticks(x, periods)
    top.set_ylabel("thousand tonnes")
    gap = f", gap {100 * result.solution.gap:.2f} %" if result.solution.gap is not None else ""
    top.set_title(f"{result.instance.name}: {result.solution.status}{gap}", fontsize=10)
    top.set_ylim(top=max(float(demand.max()), float(base.max()), 1.0) / 1000 * 1.25)  # room for the legend
    top.legend(fontsize=8, loc="upper center", ncol=4, framealpha=0.9)

    costs = result.cost_by_component()
    names = list(costs)
    values = np.array([costs[n] for n in names]) / 1e6
    bottom.barh(names, values, color="#72B7B2")
    for i, v in enumerate(values):
        bottom.text(v, i, f" {v:,.1f}", va="center", fontsize=8)
    bottom.set_xlim(right=max(float(values.max()), 1e-9) * 1.18)  # room for the labels
    bottom.invert_yaxis()
    bottom.set_xlabel(f"million {result.instance.currency}")
    total = sum(costs.values()) / 1e6
    bottom.set_title(f"cost by component, total {total:,.1f} M {result.instance.currency}", fontsize=10)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()
