"""Backfill the ERP's daily tables from 1 January 2026 to yesterday through Dagster, as one single-run backfill.

Run: ``python -m bench.erp_backfill [--days 0]`` (``--days N``: only the last N days instead of the year)

What is measured: the ERP simulator (``ihub simulate erp``: the OData service, and a seeded SQLite file
for the SQL side) runs in its own process, as the ERP would be another machine. This process then runs
``erp_reference_job`` (plants, routes) and ``erp_daily_job`` over the whole range (one daily partition a
day, one run: one incremental OData read per entity set, following ``__next`` pages of 100 rows, and one
SQL query per table) on a temporary instance and an empty lake, GX and integrity checks included. The
figures are one run's: wall time measured around ``execute_in_process``, and this process's CPU time (the
simulator's is not in it), steadier when the machine is shared. The load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from bench.common import free_port, print_table, wait_for_port, write_results

FIRST_DAY = date(2026, 1, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--days", type=int, default=0, help="backfill only the last N days (0: since 2026-01-01)")
    args = parser.parse_args()
    yesterday = datetime.now(UTC).date() - timedelta(days=1)
    first = max(FIRST_DAY, yesterday - timedelta(days=args.days - 1)) if args.days else FIRST_DAY
    with tempfile.TemporaryDirectory(prefix="bench-erp-") as scratch:
        root = Path(scratch)
        port = free_port()
        sql_file = root / "erp.sqlite"
        simulator = subprocess.Popen(
            [sys.executable, "-m", "ihub.cli", "simulate", "erp", "--port", str(port), "--sql-file", str(sql_file)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for_port(port, "the ERP simulator", 60)
            os.environ.update(
                {
                    "IHUB_DATA_DIR": str(root / "data"),
                    "ERP_ODATA_BASE_URL": f"http://127.0.0.1:{port}/sap/opu/odata/sap/ZSCM_SRV",
                    "ERP_ODATA_USER": "PLANNER",
                    "ERP_ODATA_PASSWORD": "sim-erp-password",
                    "ERP_SQL_URL": f"sqlite:///{sql_file}",
                }
            )
            figures = _backfill(first, yesterday)
        finally:
            simulator.terminate()
            simulator.wait(10)
    days = (yesterday - first).days + 1
    figures["load_average_1m"] = os.getloadavg()[0]
    print_table(
        f"ERP backfill, {first} … {yesterday} ({days} daily partitions, one run)",
        [
            ("reference (plants, routes) s", f"{figures['reference_s']:.2f}"),
            ("daily backfill wall s", f"{figures['backfill_s']:.2f}"),
            ("daily backfill CPU s (this process)", f"{figures['backfill_cpu_s']:.2f}"),
            ("  of which loads s", f"{figures['loads_s']:.2f}"),
            ("  of which checks s", f"{figures['checks_s']:.2f}"),
            *((f"rows {name}", f"{int(figures[f'rows_{name}']):,}") for name in _TABLES),
            ("rows per second (backfill)", f"{figures['rows_per_s']:,.0f}"),
            ("load average (1 min) after", f"{figures['load_average_1m']:.1f}"),
        ],
    )
    path = write_results("erp_backfill", {"partitions": days, **figures})
    print(f"\nwritten to {path}")


_TABLES = ("demand_forecasts", "inventory", "production_capacity", "maintenance_shutdowns")


def _backfill(first: date, last: date) -> dict[str, float]:
    import dagster as dg

    from orchestration.definitions import defs

    with dg.instance_for_test() as instance:
        started = time.perf_counter()
        defs.resolve_job_def("erp_reference_job").execute_in_process(instance=instance)
        reference = time.perf_counter() - started
        tags = {
            "dagster/asset_partition_range_start": first.isoformat(),
            "dagster/asset_partition_range_end": last.isoformat(),
        }
        started, cpu_started = time.perf_counter(), time.process_time()
        result = defs.resolve_job_def("erp_daily_job").execute_in_process(instance=instance, tags=tags)
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    steps = {
        e.step_key: e.event_specific_data.duration_ms / 1000
        for e in result.all_events
        if e.is_step_success and e.step_key and e.event_specific_data is not None
    }
    rows: dict[str, int] = {}
    for event in result.get_asset_materialization_events():
        name = event.asset_key.path[-1]
        rows.setdefault(name, int(event.materialization.metadata["rows_written"].value))
    figures: dict[str, float] = {
        "reference_s": reference,
        "backfill_s": wall,
        # CPU time of this process: steadier than wall time on a machine shared with other work.
        "backfill_cpu_s": cpu,
        "loads_s": sum(v for k, v in steps.items() if k.startswith("erp__") and "suite" not in k and "known" not in k),
        "checks_s": sum(v for k, v in steps.items() if "suite" in k or "known" in k),
    }
    for name in _TABLES:
        figures[f"rows_{name}"] = rows.get(name, 0)
    figures["rows_per_s"] = sum(rows.values()) / wall if wall else 0.0
    return figures


if __name__ == "__main__":
    main()
