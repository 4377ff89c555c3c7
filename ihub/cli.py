"""``ihub``: the integration hub's one command line."""

from __future__ import annotations

import argparse
import sys
import warnings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ihub",
        description="Integration hub: Dagster-orchestrated ingestion, checks and analytics for a water utility.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    simulate = commands.add_parser(
        "simulate",
        help="serve the external-system simulators on loopback",
        description=(
            "Serve a simulator of an external system on loopback until interrupted. Prints the URL and the "
            "environment variables (DMAMA_BASE_URL, DMAMA_API_KEY, DMAMA_CLIENT_ID, DMAMA_CLIENT_SECRET) "
            "that point the hub at it."
        ),
    )
    simulate.add_argument("source", choices=["dmama"], help="which external system to simulate")
    simulate.add_argument("--host", default="127.0.0.1")
    simulate.add_argument("--port", type=int, default=8701)
    simulate.add_argument("--dmas", type=int, default=5, help="number of DMAs (500 for benchmarks)")
    simulate.add_argument("--meters-per-dma", type=int, default=10)
    simulate.add_argument("--seed", type=int, default=42)

    demo = commands.add_parser(
        "demo",
        help="run the DMAMA pipeline end to end on embedded defaults",
        description=(
            "Start the DMAMA simulator in-process, materialize the DMA catalogue, the last 24 hours of "
            "readings and the meter readings through Dagster with their checks, publish the analyst "
            "catalog and print a summary. Reads IHUB_DATA_DIR (default ./.data) and DAGSTER_HOME "
            "(default <data dir>/dagster); needs no running service."
        ),
    )
    demo.add_argument("--hours", type=int, default=24, help="hours of readings to load, ending now")
    demo.add_argument("--dmas", type=int, default=5)
    demo.add_argument("--meters-per-dma", type=int, default=10)

    query = commands.add_parser(
        "query",
        help="run SQL against the analyst catalog, read-only",
        description="Open the analyst catalog (IHUB_CATALOG_PATH, default <data dir>/catalog/ihub.duckdb) "
        "read-only and print the answer to one SQL statement.",
    )
    query.add_argument("sql", help='e.g. "SELECT * FROM marts.dma_night_flow ORDER BY night_of DESC LIMIT 5"')

    args = parser.parse_args(argv)
    # Dagster flags BackfillPolicy as beta on every import; a user of the CLI cannot act on that.
    warnings.filterwarnings("ignore", message=".*currently in beta.*")
    if args.command == "simulate":
        from simulators.dmama import main_serve

        main_serve(host=args.host, port=args.port, dmas=args.dmas, meters_per_dma=args.meters_per_dma, seed=args.seed)
        return 0
    if args.command == "demo":
        from ihub.demo import run_demo

        return run_demo(hours=args.hours, dmas=args.dmas, meters_per_dma=args.meters_per_dma)
    if args.command == "query":
        import duckdb

        from orchestration.settings import catalog_path

        with duckdb.connect(str(catalog_path()), read_only=True) as con:
            print(con.sql(args.sql))
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
