"""The collector service: readers feed the alert rules and the durable spool; a health endpoint reports.

``ihub collect --config collector.yaml`` runs ``main``; ``ihub collect status`` runs ``status``.

Every reader gets an ``emit`` callback that first evaluates the inline alert rules (synchronous, no
waiting) and then awaits ``Spool.append``; it returns once the points are durable, so a reader that
acknowledges its source (MQTT QoS 1) acknowledges only what is safe. Windows are sealed every second.
GET ``/health`` on ``health.host:health.port`` answers JSON: per reader and per protocol connected or
not, points per second and errors; the spool backlog; alerts raised; notifier failures. SIGTERM or
SIGINT stops the readers, commits what they handed over, seals the windows that are due, lets queued
alerts go out (up to 5 s) and exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from collector.alerts import AlertEngine
from collector.config import CollectorConfig, ConfigError, health_url, load_config, protocol_module
from collector.points import Emit, Point, Reader
from collector.spool import Spool, SpoolError, SpoolFullError
from resources.notifications import ChannelSettings, NotificationSender, notifier_retry_policy
from resources.retry import RetryPolicy

__all__ = ["Collector", "main", "run_collector", "status"]

SEAL_INTERVAL_S = 1.0
RATE_WINDOW_S = 10  # points per second are averaged over this many seal ticks
SHUTDOWN_ALERT_DRAIN_S = 5.0
READER_STOP_TIMEOUT_S = 10.0
# A reader that crashes is started again after 1 s, 2 s, 4 s … up to a minute, for as long as it takes
# (only the policy's backoff schedule is used: a supervisor never gives up on a reader).
RESTART_POLICY = RetryPolicy(initial_s=1.0, factor=2.0, max_delay_s=60.0)

log = logging.getLogger(__name__)


@dataclass
class _ReaderState:
    """What the service itself observes of a reader, whatever the reader reports."""

    reader: Reader
    protocol: str
    points: int = 0
    batches: int = 0
    refused: int = 0
    emit_errors: int = 0
    restarts: int = 0
    running: bool = False
    last_emit: float | None = None
    last_error: str | None = None
    samples: deque[tuple[float, int]] = field(default_factory=lambda: deque(maxlen=RATE_WINDOW_S + 1))

    def rate(self) -> float:
        if len(self.samples) < 2:
            return 0.0
        (t0, c0), (t1, c1) = self.samples[0], self.samples[-1]
        return round((c1 - c0) / (t1 - t0), 1) if t1 > t0 else 0.0


class Collector:
    """The running service; ``run_collector`` wraps ``start`` / wait / ``stop``.

    ``readers`` are added to those the config describes (tests pass their own). ``clock`` (seconds
    since the epoch) drives the spool's windows and the alert cooldowns.
    """

    def __init__(
        self,
        config: CollectorConfig,
        *,
        readers: Sequence[Reader] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self._clock = clock
        self._extra_readers = list(readers)
        self.spool: Spool | None = None
        self.notifier: NotificationSender | None = None
        self.alerts: AlertEngine | None = None
        self._states: dict[str, _ReaderState] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._reader_tasks: list[asyncio.Task[Any]] = []
        self._server: Any = None
        self._server_task: asyncio.Task[Any] | None = None
        self.health_url: str | None = None
        self.started_at: datetime | None = None
        self._stopped = False

    # ------------------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Open the spool (recovering it), build the readers, start everything; returns when serving."""
        settings = self.config.spool
        self.spool = Spool(
            settings.dir,
            window_s=settings.window_s,
            writer=settings.writer,
            max_bytes=int(settings.max_bytes),
            fsync=settings.fsync,
            seal_delay_s=settings.seal_delay_s,
            clock=self._clock,
        )
        try:
            await self._start_rest()
        except BaseException:
            await self.stop()
            raise

    async def _start_rest(self) -> None:
        assert self.spool is not None
        notifier_settings = self.config.notifier
        self.notifier = NotificationSender(
            [ChannelSettings(**channel) for channel in notifier_settings.channels],
            record_dir=notifier_settings.record_dir,
            retry=notifier_retry_policy(notifier_settings.retries, notifier_settings.backoff_base_s),
        )
        alert_settings = self.config.alerts
        rules = self.config.alert_rules if alert_settings.enabled else []
        self.alerts = AlertEngine(
            rules,
            self.notifier,
            self._clock,
            queue_size=alert_settings.queue_size,
            concurrency=alert_settings.concurrency,
        )
        readers: list[tuple[str, Reader]] = []
        for section, item in self.config.readers_config():
            readers.append((section, protocol_module(section).build_reader(item)))
        readers.extend((str(getattr(reader, "protocol", "custom")), reader) for reader in self._extra_readers)
        for protocol, reader in readers:
            if reader.name in self._states:
                raise ConfigError([f"{self.config.path}: two readers are both named {reader.name!r}"])
            self._states[reader.name] = _ReaderState(reader=reader, protocol=protocol)

        self.started_at = datetime.now(UTC)
        self._tasks.append(asyncio.create_task(self.alerts.run(), name="alert-dispatch"))
        self._tasks.append(asyncio.create_task(self._tick(), name="seal-windows"))
        if self.config.health.enabled:
            await self._serve_health()
        for state in self._states.values():
            task = asyncio.create_task(self._supervise(state), name=f"reader-{state.reader.name}")
            self._reader_tasks.append(task)
        log.info(
            "collector started: %d reader(s), %d alert rule(s), spool %s%s",
            len(self._states),
            len(rules),
            self.spool.root,
            f", health {self.health_url}" if self.health_url else "",
        )

    async def stop(self) -> None:
        """Stop the readers, commit and seal what is due, send queued alerts, close everything."""
        if self._stopped:
            return
        self._stopped = True
        for task in self._reader_tasks:
            task.cancel()
        if self._reader_tasks:
            _, pending = await asyncio.wait(self._reader_tasks, timeout=READER_STOP_TIMEOUT_S)
            for task in pending:
                log.error(
                    "collector: reader task %s did not stop within %.0f s", task.get_name(), READER_STOP_TIMEOUT_S
                )
        self._reader_tasks.clear()
        if self.spool is not None:
            await self.spool.flush()
            with contextlib.suppress(Exception):
                self.spool.seal_due()
        if self.alerts is not None and not await self.alerts.drain(SHUTDOWN_ALERT_DRAIN_S):
            log.warning("collector: stopping with alerts not yet sent (see the notification record)")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()
        if self.alerts is not None:
            await self.alerts.aclose()
        if self._server is not None:
            self._server.should_exit = True
            if self._server_task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._server_task
            self._server = self._server_task = None
        if self.notifier is not None:
            await self.notifier.aclose()
        if self.spool is not None:
            await self.spool.aclose()
        log.info("collector stopped")

    # ------------------------------------------------------------------------------ readers

    def _emit_for(self, state: _ReaderState) -> Emit:
        alerts, spool = self.alerts, self.spool
        assert alerts is not None and spool is not None

        async def emit(points: Sequence[Point]) -> None:
            if not points:
                return
            try:
                alerts.evaluate(points)
            except Exception:  # a rule bug must never stop points from being stored
                log.exception("collector: alert evaluation failed for a batch from %s", state.reader.name)
            try:
                await spool.append(points)
            except SpoolFullError:
                state.refused += len(points)
                raise
            except Exception as error:
                state.emit_errors += 1
                state.last_error = str(error)
                raise
            state.points += len(points)
            state.batches += 1
            state.last_emit = time.time()

        return emit

    async def _supervise(self, state: _ReaderState) -> None:
        """Run a reader; if it raises (it should not), log it and start it again with backoff."""
        backoff = RESTART_POLICY.backoff()
        emit = self._emit_for(state)
        while True:
            state.running = True
            try:
                await state.reader.run(emit)
            except asyncio.CancelledError:
                state.running = False
                raise
            except Exception as error:
                state.running = False
                state.restarts += 1
                state.last_error = f"{type(error).__name__}: {error}"
                wait_s = backoff.next()
                log.exception("collector: reader %s crashed; restarting in %.0f s", state.reader.name, wait_s)
                await asyncio.sleep(wait_s)
                continue
            state.running = False
            log.info("collector: reader %s finished", state.reader.name)
            return

    async def _tick(self) -> None:
        assert self.spool is not None
        while True:
            try:
                self.spool.seal_due()
            except Exception:
                log.exception("collector: sealing windows in %s failed; retrying in a second", self.spool.root)
            now = time.monotonic()
            for state in self._states.values():
                state.samples.append((now, state.points))
            await asyncio.sleep(SEAL_INTERVAL_S)

    # ------------------------------------------------------------------------------ health

    def health(self) -> dict[str, Any]:
        """The status document served on /health."""
        readers: dict[str, dict[str, Any]] = {}
        protocols: dict[str, dict[str, Any]] = {}
        for name, state in self._states.items():
            try:
                reported = dict(state.reader.health())
            except Exception as error:
                reported = {"health_error": f"{type(error).__name__}: {error}"}
            entry = {
                "protocol": state.protocol,
                "running": state.running,
                "points_total": state.points,
                "points_per_s": state.rate(),
                "refused_points": state.refused,
                "emit_errors": state.emit_errors,
                "restarts": state.restarts,
                "last_emit": _iso(state.last_emit),
                "last_error": state.last_error,
                **{f"reader_{k}" if k in _SERVICE_KEYS else k: v for k, v in reported.items()},
            }
            readers[name] = entry
            summary = protocols.setdefault(
                state.protocol, {"readers": 0, "connected": 0, "points_per_s": 0.0, "errors": 0}
            )
            summary["readers"] += 1
            summary["connected"] += 1 if reported.get("connected", state.running) else 0
            summary["points_per_s"] = round(summary["points_per_s"] + state.rate(), 1)
            summary["errors"] += _count(reported.get("errors")) + state.emit_errors + state.restarts
        spool = self.spool.health() if self.spool is not None else {}
        alerts = self.alerts.health() if self.alerts is not None else {}
        notifier = self.notifier.stats() if self.notifier is not None else {}
        if spool.get("state") == "full":
            overall = "failing"
        elif spool.get("state") == "warning" or any(p["connected"] < p["readers"] for p in protocols.values()):
            overall = "degraded"
        else:
            overall = "ok"
        uptime = (datetime.now(UTC) - self.started_at).total_seconds() if self.started_at else 0.0
        return {
            "status": overall,
            "started_at": self.started_at.isoformat(timespec="seconds") if self.started_at else None,
            "uptime_s": round(uptime, 1),
            "protocols": protocols,
            "readers": readers,
            "spool": spool,
            "alerts": alerts,
            "notifier": notifier,
        }

    async def _serve_health(self) -> None:
        async def health(request: Request) -> JSONResponse:
            document = self.health()
            return JSONResponse(document, status_code=503 if document["status"] == "failing" else 200)

        app = Starlette(routes=[Route("/health", health), Route("/", health)])
        settings = self.config.health
        # Binding here, not in uvicorn, gives the real port at once (port 0 in tests) and a clear error.
        sock = socket.socket(socket.AF_INET6 if ":" in settings.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((settings.host, settings.port))
        except OSError as error:
            sock.close()
            raise OSError(
                f"{self.config.path}: health.port: cannot listen on {settings.host}:{settings.port}: {error.strerror}"
            ) from None
        port = sock.getsockname()[1]
        server = _QuietServer(uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False))
        self._server = server
        self._server_task = asyncio.create_task(server.serve(sockets=[sock]), name="health-endpoint")
        self.health_url = settings.url(port)
        for _ in range(500):
            if server.started or self._server_task.done():
                break
            await asyncio.sleep(0.01)
        if self._server_task.done():
            self._server_task.result()


_SERVICE_KEYS = frozenset({"protocol", "running", "points_total", "points_per_s", "refused_points", "restarts"})


def _count(errors: Any) -> int:
    if isinstance(errors, bool):
        return int(errors)
    if isinstance(errors, int | float):
        return int(errors)
    if isinstance(errors, dict):
        return sum(_count(v) for v in errors.values())
    return 0


def _iso(moment: float | None) -> str | None:
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds") if moment is not None else None


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the collector owns SIGTERM and SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


# ---------------------------------------------------------------------------------------- entry points


async def run_collector(
    config: CollectorConfig | str | Path,
    stop: asyncio.Event | None = None,
    *,
    readers: Sequence[Reader] = (),
) -> None:
    """Run the collector until ``stop`` is set (or, without one, until SIGTERM or SIGINT)."""
    if not isinstance(config, CollectorConfig):
        config = load_config(config)
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
            installed.append(signum)
        except (NotImplementedError, RuntimeError, ValueError):
            pass  # not the main thread: the caller stops us through ``stop``
    collector = Collector(config, readers=readers)
    try:
        await collector.start()
        await stop.wait()
        log.info("collector: stopping")
    finally:
        await collector.stop()
        for signum in installed:
            loop.remove_signal_handler(signum)


def main(config_path: str) -> int:
    """``ihub collect --config``: validate the config, run until SIGTERM/SIGINT; 0 on a clean stop."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # The collector's own story at INFO; libraries (asyncua, pymodbus, httpx) only when something is wrong.
    for name in ("collector", "resources"):
        logging.getLogger(name).setLevel(logging.INFO)
    try:
        config = load_config(config_path)
    except ConfigError as error:
        print(f"collector: invalid configuration:\n{error}", file=sys.stderr)
        return 2
    try:
        asyncio.run(run_collector(config))
    except (OSError, SpoolError) as error:  # a port in use, a spool another collector holds
        print(f"collector: {error}", file=sys.stderr)
        return 1
    return 0


def status(url: str | None = None, config_path: str | None = None) -> int:
    """``ihub collect status``: print the health of a running collector as tables.

    Asks ``url``, else the health endpoint ``config_path`` configures, else the collector's default.
    Returns 0 when it is ok, 1 when degraded, failing or losing messages at the broker, 2 when it does
    not answer (or the configuration is invalid).
    """
    import httpx

    if url is None:
        if config_path is None:
            url = health_url()
        else:
            try:
                url = load_config(config_path).health.url()
            except ConfigError as error:
                print(f"collector: invalid configuration:\n{error}", file=sys.stderr)
                return 2
    if not url.rstrip("/").endswith("/health"):
        url = url.rstrip("/") + "/health"
    try:
        response = httpx.get(url, timeout=5.0)
        document = response.json()
    except (httpx.HTTPError, json.JSONDecodeError) as error:
        print(f"collector at {url} does not answer: {error}", file=sys.stderr)
        return 2
    print(format_status(document))
    if broker_drops(document):
        return 1
    return 0 if document.get("status") == "ok" else 1


def broker_drops(document: dict[str, Any]) -> dict[str, int]:
    """Readers whose broker reports messages it dropped (Mosquitto's ``$SYS`` counters), and how many.

    The broker's counter covers its whole life and every client; the reader's count since it connected,
    where it reports one, is what this collector may have lost, so it is preferred.
    """
    drops = {}
    for name, entry in (document.get("readers") or {}).items():
        if not isinstance(entry, dict):
            continue
        count = entry.get("broker_dropped_since_connect", entry.get("broker_dropped_messages"))
        if isinstance(count, int | float) and not isinstance(count, bool) and count > 0:
            drops[name] = int(count)
    return drops


def format_status(document: dict[str, Any]) -> str:
    """The health document as a few readable tables."""
    lines = [
        f"collector: {str(document.get('status', '?')).upper()}   up {_duration(document.get('uptime_s', 0))}"
        f"   since {document.get('started_at')}"
    ]
    for name, count in broker_drops(document).items():
        lines.append(
            f"WARNING: the MQTT broker of reader {name} dropped {count:,} message(s) before the collector received"
            " them (Mosquitto $SYS); raise its max_queued_messages / max_inflight_messages (deploy/mosquitto.conf,"
            " docs/protocols/mqtt.md)"
        )
    readers = document.get("readers") or {}
    rows = [
        [
            name,
            str(entry.get("protocol", "")),
            _yes_no(entry.get("connected", entry.get("running"))),
            f"{entry.get('points_per_s', 0):,.1f}",
            f"{entry.get('points_total', 0):,}",
            str(_count(entry.get("errors")) + int(entry.get("emit_errors", 0)) + int(entry.get("restarts", 0))),
            _subscriptions(entry.get("subscriptions")),
            str(entry.get("last_error") or ""),
        ]
        for name, entry in readers.items()
    ]
    lines += ["", "readers"]
    lines += _table(["name", "protocol", "connected", "points/s", "points", "errors", "subs", "last error"], rows)

    spool = document.get("spool") or {}
    lines += ["", "spool"]
    lines += _table(
        ["state", "backlog", "limit", "used", "open windows", "sealed windows", "oldest sealed", "late points"],
        [
            [
                str(spool.get("state", "")),
                _bytes(spool.get("backlog_bytes", 0)),
                _bytes(spool.get("max_bytes", 0)),
                f"{spool.get('used_pct', 0)} %",
                str(len(spool.get("open_windows", []))),
                str(spool.get("sealed_windows", 0)),
                str(spool.get("oldest_sealed") or "-"),
                str(spool.get("late_points", 0)),
            ]
        ],
    )
    alerts = document.get("alerts") or {}
    severities = alerts.get("by_severity") or {}
    lines += ["", "alerts"]
    lines += _table(
        ["rules", "raised", "critical", "warning", "info", "suppressed", "dropped", "send failed", "p99 ms"],
        [
            [
                str(alerts.get("rules", 0)),
                str(alerts.get("raised", 0)),
                str(severities.get("critical", 0)),
                str(severities.get("warning", 0)),
                str(severities.get("info", 0)),
                str(alerts.get("suppressed", 0)),
                str(alerts.get("dropped", 0)),
                str(alerts.get("send_failed", 0)),
                str(alerts.get("latency_ms_p99") if alerts.get("latency_ms_p99") is not None else "-"),
            ]
        ],
    )
    notifier = document.get("notifier") or {}
    channels = notifier.get("channels") or {}
    lines += ["", f"notifier: {notifier.get('sent', 0)} sent, {notifier.get('failed', 0)} with a failed channel"]
    if channels:
        lines += _table(
            ["channel", "ok", "failed"],
            [[name, str(c.get("ok", 0)), str(c.get("failed", 0))] for name, c in channels.items()],
        )
    return "\n".join(lines)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    if not rows:
        return ["  (none)"]
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    out = ["  " + "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    out.append("  " + "  ".join("-" * w for w in widths))
    out += ["  " + "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return out


def _subscriptions(value: Any) -> str:
    if isinstance(value, dict | list | tuple | set):
        return ", ".join(str(item) for item in value) or "-"
    return "" if value is None else str(value)


def _yes_no(value: Any) -> str:
    return "-" if value is None else ("yes" if value else "NO")


def _bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:,.0f} {unit}" if unit == "B" else f"{count:,.1f} {unit}"
        count /= 1024
    return f"{count} B"


def _duration(seconds: float) -> str:
    seconds = int(seconds or 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"
