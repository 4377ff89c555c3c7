"""What every benchmark shares: the results file format and a readable table."""

from __future__ import annotations

import json
import os
import socket
import statistics
import time
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


def free_port() -> int:
    """A free TCP port on loopback (benchmarks only ever serve on 127.0.0.1)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for_port(port: int, what: str, seconds: float = 30.0) -> None:
    """Wait until something listens on 127.0.0.1:port; name it in the error if it never does."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {seconds} s")
