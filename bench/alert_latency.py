"""Threshold-alert latency: from a point's receipt to the operator's webhook receiving the POST.

Run: ``python -m bench.alert_latency [--normal 100000] [--breaches 2000] [--rate 10000] [--batch 20]``

What is measured: the real collector service (``collector.service.Collector``: alert engine, notifier,
durable spool with fsync, health endpoint) runs in this process with one in-bench reader that emits
``--normal`` in-band points and ``--breaches`` temperature breaches shuffled among them, in batches of
``--batch`` points paced at ``--rate`` points per second, each batch stamped ``received_ts`` = now just
before it is handed to ``emit``, as a protocol reader does. The breach rule has cooldown 0, so every
breach is one notification. The webhook receiver is a separate process (uvicorn + starlette on
loopback), as the operator's endpoint is another machine; it notes ``time.time()`` when each POST
arrives. Latency = arrival - received_ts, both on this machine's wall clock. Also measured alone:
``AlertEngine.evaluate`` per point over the normal points (the cost every point pays on the ingestion
path).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import random
import socket
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import print_table, wait_for_port, write_results

RULES = """
rules:
  - {name: bench_high_temperature, sensor_type: temperature, greater_than: 35, severity: warning, cooldown_s: 0,
     message: "High temperature alert: {value}°C on {unit_id}"}
  - {name: pressure_out_of_band, sensor_type: pressure, outside: {low: 1.0, high: 7.5}, cooldown_s: 0}
  - {name: flow_out_of_band, sensor_type: flow, outside: {low: 60, high: 280}, cooldown_s: 0}
"""
UNITS = [f"UNIT{n:03d}" for n in range(1, 6)]
NORMAL = {"temperature": ("°C", 18.0, 30.0), "pressure": ("bar", 2.0, 5.0), "flow": ("L/min", 90.0, 250.0)}


# ---------------------------------------------------------------------------------------- receiver process


def _receiver(port_out: Any, ready: Any) -> None:
    """The operator's webhook endpoint: records (arrival time, value) of every POST; GET /results."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    arrivals: list[tuple[float, float]] = []

    async def hook(request: Request) -> JSONResponse:
        arrived = time.time()
        body = await request.json()
        arrivals.append((arrived, body["value"]))
        return JSONResponse({"ok": True})

    async def results(request: Request) -> JSONResponse:
        return JSONResponse(arrivals)

    app = Starlette(routes=[Route("/hook", hook, methods=["POST"]), Route("/results", results)])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port_out.put(sock.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off"))
    ready.set()
    server.run(sockets=[sock])


# ---------------------------------------------------------------------------------------- collector side


class BenchReader:
    """Emits the planned points at a steady rate, stamping each batch at the moment it is handed over."""

    protocol = "bench"

    def __init__(self, plan: list[tuple[str, str, float, bool]], rate: float, batch: int) -> None:
        self.name = "bench-gateway"
        self.plan = plan
        self.rate = rate
        self.batch = batch
        self.breach_received: dict[float, int] = {}
        self.done = asyncio.Event()
        self.elapsed_s = 0.0

    async def run(self, emit: Any) -> None:
        from collector.points import GOOD, Point

        interval = self.batch / self.rate
        started = next_at = time.perf_counter()
        for offset in range(0, len(self.plan), self.batch):
            received = int(time.time() * 1_000_000)
            points = []
            for unit_id, sensor, value, breach in self.plan[offset : offset + self.batch]:
                points.append(
                    Point("bench", self.name, unit_id, sensor, value, NORMAL[sensor][0], GOOD, received, received)
                )
                if breach:
                    self.breach_received[value] = received
            await emit(points)
            next_at += interval
            delay = next_at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
        self.elapsed_s = time.perf_counter() - started
        self.done.set()
        await asyncio.Event().wait()

    def health(self) -> dict[str, Any]:
        return {"connected": True}


def _plan(normal: int, breaches: int, seed: int) -> list[tuple[str, str, float, bool]]:
    rng = random.Random(seed)
    sensors = list(NORMAL)
    plan = []
    for i in range(normal):
        sensor = sensors[i % len(sensors)]
        _, low, high = NORMAL[sensor]
        plan.append((rng.choice(UNITS), sensor, round(rng.uniform(low, high), 3), False))
    for i in range(breaches):
        # A distinct value per breach identifies its POST at the receiver.
        plan.append((rng.choice(UNITS), "temperature", 36.0 + i / 1024, True))
    rng.shuffle(plan)
    return plan


async def _run(args: argparse.Namespace, receiver_url: str, workdir: Path) -> dict[str, Any]:
    import httpx

    from collector.config import load_config
    from collector.service import Collector

    (workdir / "rules.yaml").write_text(RULES)
    (workdir / "collector.yaml").write_text(
        "spool: {dir: spool}\n"
        "alerts: {rules: rules.yaml}\n"
        f"notifier: {{record_dir: notifications, channels: [{{kind: webhook, url: '{receiver_url}/hook'}}]}}\n"
        "health: {port: 0}\n"
    )
    reader = BenchReader(_plan(args.normal, args.breaches, args.seed), args.rate, args.batch)
    collector = Collector(load_config(workdir / "collector.yaml"), readers=[reader])
    await collector.start()
    try:
        await reader.done.wait()
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient() as client:
            while True:
                arrivals = (await client.get(f"{receiver_url}/results")).json()
                if len(arrivals) >= args.breaches or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
        health = collector.health()
    finally:
        await collector.stop()
    latencies = sorted((arrived - reader.breach_received[value] / 1_000_000) * 1000 for arrived, value in arrivals)
    return {
        "latencies": latencies,
        "elapsed_s": reader.elapsed_s,
        "points": len(reader.plan),
        "spool_commits": health["spool"]["commits"],
        "alerts_raised": health["alerts"]["raised"],
    }


def _evaluate_cost(normal: int, seed: int) -> float:
    """Microseconds per point of ``AlertEngine.evaluate`` on in-band points, batches of 100."""
    from collector.alerts import AlertEngine, load_rules
    from collector.config import DEFAULT_RULES_PATH
    from collector.points import GOOD, Point

    engine = AlertEngine(load_rules(DEFAULT_RULES_PATH), notifier=None)
    now = int(time.time() * 1_000_000)
    points = [Point("bench", "gw", u, s, v, NORMAL[s][0], GOOD, now, now) for u, s, v, _ in _plan(normal, 0, seed)]
    batches = [points[i : i + 100] for i in range(0, len(points), 100)]
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        for batch in batches:
            engine.evaluate(batch)
        best = min(best, time.perf_counter() - started)
    return best / len(points) * 1_000_000


def _percentile(ordered: list[float], fraction: float) -> float:
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--normal", type=int, default=100_000, help="in-band points")
    parser.add_argument("--breaches", type=int, default=2_000, help="temperature breaches (one alert each)")
    parser.add_argument("--rate", type=float, default=10_000, help="points per second offered")
    parser.add_argument("--batch", type=int, default=20, help="points per emit")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    context = multiprocessing.get_context("spawn")
    port_queue, ready = context.Queue(), context.Event()
    receiver = context.Process(target=_receiver, args=(port_queue, ready), daemon=True)
    receiver.start()
    try:
        port = port_queue.get(timeout=30)
        ready.wait(30)
        wait_for_port(port, "the webhook receiver")
        with tempfile.TemporaryDirectory(prefix="alert-latency-") as workdir:
            run = asyncio.run(_run(args, f"http://127.0.0.1:{port}", Path(workdir)))
    finally:
        receiver.terminate()
        receiver.join(10)

    latencies = run["latencies"]
    evaluate_us = _evaluate_cost(args.normal, args.seed)
    delivered = len(latencies)
    figures: dict[str, float] = {
        "alert_latency_p50_ms": _percentile(latencies, 0.50) if latencies else float("nan"),
        "alert_latency_p99_ms": _percentile(latencies, 0.99) if latencies else float("nan"),
        "alert_latency_max_ms": latencies[-1] if latencies else float("nan"),
        "alert_latency_mean_ms": statistics.fmean(latencies) if latencies else float("nan"),
        "alerts_delivered": delivered,
        "alerts_lost": args.breaches - delivered,
        "alert_points_per_s": run["points"] / run["elapsed_s"],
        "alert_evaluate_us_per_point": evaluate_us,
    }
    print_table(
        f"Threshold alert latency, receipt -> webhook POST received ({args.breaches:,} breaches among "
        f"{args.normal:,} points, {args.rate:,.0f} points/s offered in batches of {args.batch})",
        [
            ("p50", f"{figures['alert_latency_p50_ms']:.2f} ms"),
            ("p99", f"{figures['alert_latency_p99_ms']:.2f} ms"),
            ("max", f"{figures['alert_latency_max_ms']:.2f} ms"),
            ("mean", f"{figures['alert_latency_mean_ms']:.2f} ms"),
            ("alerts delivered", f"{delivered:,} of {args.breaches:,}"),
            ("points/s achieved (fsynced)", f"{figures['alert_points_per_s']:,.0f}"),
            ("spool commits", f"{run['spool_commits']:,}"),
            ("evaluate cost per point", f"{evaluate_us:.2f} µs"),
        ],
    )
    path = write_results("alert_latency", figures)
    print(f"\nwritten: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
