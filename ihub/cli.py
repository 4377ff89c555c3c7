"""``ihub``: the integration hub's one command line."""

from __future__ import annotations

import argparse
import sys
import warnings

from optimization import pump_cli

# Every simulator but DMAMA's: name -> (module under simulators/ with a main(argv), what it serves).
SIMULATORS: dict[str, tuple[str, str]] = {
    "billing": ("billing", "the billing system (JWT, DMAMA's customers and meters)"),
    "gis": ("gis", "the network map as files and a WFS-like endpoint"),
    "historian": ("historian", "the SCADA historian"),
    "markets": ("markets", "tariffs, holidays, fuel, exchange rates and cement prices"),
    "modbus": ("modbus", "pump stations and machines on Modbus TCP"),
    "opcua": ("opcua", "the pump station on OPC UA"),
    "scada": ("scada_gateway", "the MQTT protocol gateway publishing 5 units"),
    "weather": ("weather", "the OWM-like and met-office providers"),
    "erp": ("erp", "the ERP's OData service and its SQL database (seeded as a SQLite file)"),
    "fleet": ("fleet", "clinker trucks publishing GPS, speed, load and fuel on fleet/{truck_id}/telemetry"),
}


def build_parser() -> argparse.ArgumentParser:
    """The whole command line (the docs' commands are tested against it: tests/ihub/test_cli_docs.py)."""
    parser = argparse.ArgumentParser(
        prog="ihub",
        description="Integration hub: Dagster-orchestrated ingestion, checks and analytics for a water utility.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    simulate = commands.add_parser(
        "simulate",
        help="serve an external-system simulator on loopback",
        description=(
            "Serve a simulator of an external system on loopback until interrupted, printing where it listens "
            "and the environment variables that point the hub at it. dmama: the DMA management API; "
            + "; ".join(f"{name}: {what}" for name, (_, what) in SIMULATORS.items())
            + ". Options after the name go to that simulator (try: ihub simulate modbus --help)."
        ),
    )
    simulate.add_argument("source", choices=["dmama", *SIMULATORS])
    simulate.add_argument("options", nargs=argparse.REMAINDER, help="options of that simulator")

    collect = commands.add_parser(
        "collect",
        help="run the SCADA edge collector, or ask a running one for its health",
        description=(
            "ihub collect --config collector.yaml runs the collector (Modbus TCP, OPC UA, MQTT → durable spool, "
            "inline threshold alerts) until SIGTERM. ihub collect status [--url | --config] prints a running "
            "collector's health: per protocol connected or not, points/s, errors, spool backlog, and a warning "
            "when the MQTT broker reports dropped messages. The YAML is validated at start; see "
            "collector.example.yaml."
        ),
    )
    collect.add_argument("action", nargs="?", choices=["run", "status"], default="run")
    collect.add_argument("--config", help="collector YAML (run: required; status: ask the health endpoint it sets)")
    collect.add_argument(
        "--url", help="health endpoint (status); default: --config's, else the collector's default health.port"
    )

    browse = commands.add_parser(
        "browse",
        help="list an OPC UA server's variables as a node-map snippet",
        description="Browse an OPC UA server and print its variables as YAML ready to paste into a node map.",
    )
    browse.add_argument("url", help="opc.tcp://host:port/path")
    browse.add_argument("--depth", type=int, default=6)
    browse.add_argument("--username")
    browse.add_argument("--password")

    demo = commands.add_parser(
        "demo",
        help="run every source's pipeline end to end on embedded defaults",
        description=(
            "Start every source's simulator in-process (DMAMA, markets, weather, …), materialize their assets "
            "through Dagster with their checks (for DMAMA the last 24 hours of readings), publish the analyst "
            "catalog and print a summary with a line per source. Reads IHUB_DATA_DIR (default ./.data) and "
            "DAGSTER_HOME "
            "(default <data dir>/dagster); needs no running service."
        ),
    )
    demo.add_argument("--hours", type=int, default=24, help="hours of readings to load, ending now")
    demo.add_argument("--dmas", type=int, default=5)
    demo.add_argument("--meters-per-dma", type=int, default=10)
    demo.add_argument(
        "--live-minutes",
        type=float,
        default=0,
        help="then run the live SCADA path (simulators, collector, Dagster daemon) this long; make demo uses 2",
    )

    optimize = commands.add_parser(
        "optimize",
        help="run an optimization model (pump schedule, supply plan) or list the solvers",
        description=(
            "Planners' entry to the optimization models. ihub optimize solvers lists the solvers this "
            "installation can run; the model subcommands solve on the lake's data or on a self-contained "
            "instance file (--instance) and print the status, objective, gap and the plan."
        ),
    )
    optimize_commands = optimize.add_subparsers(dest="model", required=True, metavar="MODEL")
    optimize_commands.add_parser("solvers", help="list the solvers available (HiGHS, CBC) with their versions")
    from optimization import supply_cli

    supply_cli.add_parser(optimize_commands)
    pump_cli.add_parser(optimize_commands)

    query = commands.add_parser(
        "query",
        help="run SQL against the analyst catalog, read-only",
        description="Open the analyst catalog (IHUB_CATALOG_PATH, default <data dir>/catalog/ihub.duckdb) "
        "read-only and print the answer to one SQL statement.",
    )
    query.add_argument("sql", help='e.g. "SELECT * FROM marts.dma_night_flow ORDER BY night_of DESC LIMIT 5"')
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # Dagster flags BackfillPolicy as beta on every import; a user of the CLI cannot act on that.
    warnings.filterwarnings("ignore", message=".*currently in beta.*")
    # Likewise partition-aware asset checks, flagged as preview: nothing a user of the CLI can act on.
    warnings.filterwarnings("ignore", message=".*currently in preview.*")
    if args.command == "simulate":
        return _simulate(args.source, args.options)
    if args.command == "collect":
        from collector import service

        if args.action == "status":
            return service.status(args.url, config_path=args.config)
        if not args.config:
            parser.error("ihub collect needs --config collector.yaml")
        return service.main(args.config)
    if args.command == "browse":
        from collector.opcua import browse_main

        return browse_main(args.url, depth=args.depth, username=args.username, password=args.password)
    if args.command == "demo":
        from ihub.demo import run_demo

        return run_demo(
            hours=args.hours, dmas=args.dmas, meters_per_dma=args.meters_per_dma, live_minutes=args.live_minutes
        )
    if args.command == "optimize" and args.model == "solvers":
        from optimization.solver import available_solvers

        found = available_solvers()
        for name in ("highs", "cbc"):
            print(f"{name:<6} {found.get(name, 'not available')}")
        return 0 if found else 1
    if args.command == "optimize" and args.model == "supply":
        from optimization import supply_cli

        return supply_cli.run(args)
    if args.command == "optimize" and args.model == "pump":
        return pump_cli.run(args)
    if args.command == "query":
        import duckdb

        from orchestration.settings import catalog_path

        with duckdb.connect(str(catalog_path()), read_only=True) as con:
            print(con.sql(args.sql))
        return 0
    return 2


def _simulate(source: str, options: list[str]) -> int:
    if source == "dmama":
        parser = argparse.ArgumentParser(prog="ihub simulate dmama", description="The DMAMA API simulator.")
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8701)
        parser.add_argument("--dmas", type=int, default=5, help="number of DMAs (500 for benchmarks)")
        parser.add_argument("--meters-per-dma", type=int, default=10)
        parser.add_argument("--seed", type=int, default=42)
        args = parser.parse_args(options)
        from simulators.dmama import main_serve

        main_serve(host=args.host, port=args.port, dmas=args.dmas, meters_per_dma=args.meters_per_dma, seed=args.seed)
        return 0
    import importlib

    importlib.import_module(f"simulators.{SIMULATORS[source][0]}").main(options)
    return 0


if __name__ == "__main__":
    sys.exit(main())
