"""A SCADA historian on loopback: the plant's points at one-minute resolution, for backfills and gap repair.

``GET /api/v1/tags`` lists the recorded points; ``GET /api/v1/points?since=&until=&page=&page_size=``
returns samples of every tag in ``[since, until)`` (UTC, ISO 8601 with ``Z``), paged. Requests carry
``X-API-Key``. Values are a pure function of (seed, tag, minute), so any range answers the same rows
however it is cut, and the series follow the shapes the MQTT gateway publishes: a daily cycle, drift and
noise within each sensor type's operating range. Like a real historian it has nothing from the future.
``inject_outage(count)`` answers the next requests with 503, for retry tests;
``inject_endless_paging(count)`` makes the next point pages say there is always one more page.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

INTERVAL_S = 60
MAX_RANGE = timedelta(days=7)
# (sensor type, unit, low, high): the operating ranges of the gateway units (issue 3).
SENSORS = (
    ("temperature", "°C", -10.0, 40.0),
    ("pressure", "bar", 0.5, 8.0),
    ("flow", "L/min", 50.0, 300.0),
    ("power", "kW", 30.0, 120.0),
)


@dataclass(frozen=True)
class HistorianConfig:
    seed: int = 7
    units: int = 5
    api_key: str = "sim-historian-key"


def _noise(seed: int, tag: int, minutes: np.ndarray) -> np.ndarray:
    """Counter-based noise in [-1, 1): the same (seed, tag, minute) always gives the same number."""
    x = (minutes.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)) ^ np.uint64((seed * 1_000_003 + tag) & 0xFFFFFFFF)
    x ^= x >> np.uint64(33)
    x *= np.uint64(0xFF51AFD7ED558CCD)
    x ^= x >> np.uint64(33)
    return (x >> np.uint64(11)).astype(np.float64) / float(1 << 53) * 2 - 1


class HistorianSimulator:
    def __init__(self, config: HistorianConfig | None = None, clock: Callable[[], datetime] | None = None) -> None:
        self.config = config or HistorianConfig()
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.Lock()
        self._outages = 0
        self._endless = 0
        self.requests = 0
        self.app = Starlette(
            routes=[Route("/api/v1/tags", self._tags), Route("/api/v1/points", self._points)],
        )

    def tags(self) -> list[dict[str, Any]]:
        return [
            {"unit_id": f"UNIT{u:03d}", "sensor_type": sensor, "unit": eng, "interval_s": INTERVAL_S}
            for u in range(1, self.config.units + 1)
            for sensor, eng, _, _ in SENSORS
        ]

    def samples(self, since: datetime, until: datetime) -> list[dict[str, Any]]:
        """Every tag's samples in [since, until) that exist by now, ordered by tag then time."""
        first = math.ceil(since.timestamp() / INTERVAL_S)
        end = min(math.ceil(until.timestamp() / INTERVAL_S), math.floor(self._clock().timestamp() / INTERVAL_S) + 1)
        if end <= first:
            return []
        minutes = np.arange(first, end, dtype=np.int64)
        stamps = [datetime.fromtimestamp(m * INTERVAL_S, UTC).strftime("%Y-%m-%dT%H:%M:%SZ") for m in minutes]
        local_hour = ((minutes * INTERVAL_S / 3600) + 7) % 24  # the plant keeps Asia/Bangkok time
        rows = []
        for tag, info in enumerate(self.tags()):
            _, _, low, high = next(s for s in SENSORS if s[0] == info["sensor_type"])
            middle, half = (low + high) / 2, (high - low) / 2
            daily = np.sin((local_hour - 9) / 24 * 2 * np.pi)
            drift = 0.1 * np.sin(minutes / (1440 * 3) + tag)
            values = middle + half * (0.45 * daily + drift + 0.05 * _noise(self.config.seed, tag, minutes))
            for stamp, value in zip(stamps, np.round(values, 3).tolist(), strict=True):
                rows.append(
                    {
                        "unit_id": info["unit_id"],
                        "sensor_type": info["sensor_type"],
                        "unit": info["unit"],
                        "timestamp": stamp,
                        "value": value,
                        "quality": "GOOD",
                    }
                )
        return rows

    def inject_outage(self, count: int) -> None:
        with self._lock:
            self._outages = count

    def inject_endless_paging(self, count: int) -> None:
        with self._lock:
            self._endless = count

    def _refuse(self, request: Request) -> JSONResponse | None:
        with self._lock:
            self.requests += 1
            if self._outages > 0:
                self._outages -= 1
                return JSONResponse({"error": "unavailable"}, status_code=503)
        if request.headers.get("x-api-key") != self.config.api_key:
            return JSONResponse({"error": "invalid_api_key"}, status_code=401)
        return None

    async def _tags(self, request: Request) -> JSONResponse:
        return self._refuse(request) or JSONResponse({"items": self.tags()})

    async def _points(self, request: Request) -> JSONResponse:
        refused = self._refuse(request)
        if refused:
            return refused
        try:
            since = datetime.fromisoformat(request.query_params["since"].replace("Z", "+00:00"))
            until = datetime.fromisoformat(request.query_params["until"].replace("Z", "+00:00"))
            page = int(request.query_params.get("page", "1"))
            page_size = min(int(request.query_params.get("page_size", "5000")), 20_000)
        except (KeyError, ValueError) as error:
            return JSONResponse({"error": "bad_request", "detail": f"since, until (ISO UTC), page: {error}"}, 400)
        if since.tzinfo is None or until.tzinfo is None or until <= since or until - since > MAX_RANGE:
            return JSONResponse({"error": "bad_request", "detail": "since < until, UTC, at most 7 days"}, 400)
        rows = self.samples(since, until)
        chunk = rows[(page - 1) * page_size : page * page_size]
        more = page * page_size < len(rows)
        with self._lock:
            if self._endless > 0:
                self._endless -= 1
                more = True
        return JSONResponse({"items": chunk, "page": page, "total": len(rows), "next_page": page + 1 if more else None})


@contextlib.contextmanager
def serve_historian(config: HistorianConfig | None = None, clock=None, port: int = 0) -> Iterator[Any]:
    """Serve the historian in a background thread; yields the running server with ``.simulator``."""
    from simulators.http_server import serve_in_thread

    simulator = HistorianSimulator(config, clock)
    running = serve_in_thread(simulator.app, port=port)
    running.simulator = simulator
    try:
        yield running
    finally:
        running.stop()


def main(argv: list[str] | None = None) -> None:
    """``ihub simulate historian``: serve the historian in the foreground until interrupted."""
    import argparse

    import uvicorn

    parser = argparse.ArgumentParser(prog="ihub simulate historian", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8702)
    parser.add_argument("--units", type=int, default=5)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    config = HistorianConfig(seed=args.seed, units=args.units)
    url = f"http://{args.host}:{args.port}"
    print(f"SCADA historian on {url}  HISTORIAN_BASE_URL={url} HISTORIAN_API_KEY={config.api_key}", flush=True)
    uvicorn.run(HistorianSimulator(config).app, host=args.host, port=args.port, log_level="warning", access_log=False)
