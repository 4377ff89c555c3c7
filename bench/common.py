"""What every benchmark shares: the results file format and a readable table."""

from __future__ import annotations

import json
import os
import statistics
from datetime import UTC, datetime
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def write_results(name: str, figures: dict[str, float]) -> Path:
    """``bench/results/<name>.json``: a flat object of ``metric_unit: number`` plus machine and date."""
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    payload = {
        **{key: round(value, 3) if isinstance(value, float) else value for key, value in figures.items()},
        "cpu_cores": os.cpu_count() or 0,
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
    }
    path = RESULTS_DIR / f"{name}.json"
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    return path


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(label) for label, _ in rows)
    print(f"\n{title}")
    print("-" * (width + 20))
    for label, value in rows:
        print(f"{label:<{width}}  {value:>16}")


def median(values: list[float]) -> float:
    return statistics.median(values)
