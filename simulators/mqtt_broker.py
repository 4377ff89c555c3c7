"""Local MQTT brokers for the demo, the tests and the benchmarks: Mosquitto when installed, else amqtt.

Nothing at runtime imports this module: the collector talks to whatever broker its configuration
names. ``MosquittoProcess`` runs the ``mosquitto`` binary with the shipped ``deploy/mosquitto.conf``,
changing only the listener port and the persistence directory, so what is tested is what is deployed;
the handle can stop it (SIGTERM: it saves its sessions and queues), kill it (SIGKILL) and start it
again on the same port. ``MosquittoProcess(config=None)`` runs it with Mosquitto's stock settings
instead (only a loopback listener and anonymous access), to show what a site that never tuned its
broker gets. ``start_embedded_broker`` runs amqtt inside the process for a machine without
Mosquitto (``pip install -e ".[demo]"``); ``start_local_broker`` picks whichever is available.

The embedded broker is a convenience, not a substitute for ``deploy/mosquitto.conf``: amqtt keeps
sessions and queued messages in memory only (a restart loses them), has no inflight or queue limits to
tune, speaks MQTT 3.1.1 only and is far slower than Mosquitto. The collector, the gateway simulator
and the tests talk to it exactly as they talk to Mosquitto (QoS 1, persistent sessions; the reader's
default ``protocol: auto`` falls back to 3.1.1 when amqtt refuses MQTT 5).

    handle = start_embedded_broker()          # a free loopback port
    ... MqttBrokerConfig(name="demo", port=handle.port) ...
    handle.stop()

The broker runs its own event loop in a daemon thread, so it serves whatever the caller's thread
does (a blocking paho publisher, another event loop, a subprocess).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DEPLOY_CONFIG",
    "STOCK_CONFIG",
    "EmbeddedBroker",
    "MosquittoProcess",
    "start_embedded_broker",
    "start_local_broker",
    "start_mosquitto",
]

DEPLOY_CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "mosquitto.conf"
# Mosquitto 2.0 as installed, before anyone tuned it: 20 messages in flight and 1,000 queued per client
# (MQTT 3.1.1), no persistence, $SYS counters every 10 s.
STOCK_CONFIG = "listener 1883 127.0.0.1\nallow_anonymous true\n"

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 10.0


@dataclass
class EmbeddedBroker:
    """A running embedded broker: where it listens, and ``stop()``."""

    host: str
    port: int
    _loop: asyncio.AbstractEventLoop = field(repr=False)
    _thread: threading.Thread = field(repr=False)
    _broker: Any = field(repr=False)
    _stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def stop(self) -> None:
        """Close every session and the listener, then end the broker's thread (idempotent)."""
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop).result(_STOP_TIMEOUT_S)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(_STOP_TIMEOUT_S)

    def close(self) -> None:
        """The same as ``stop``: the embedded broker keeps nothing on disk."""
        self.stop()

    def __enter__(self) -> EmbeddedBroker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _config(host: str, port: int) -> dict[str, Any]:
    return {
        "listeners": {"default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": 0}},
        # Anonymous loopback access only; the packet and event loggers and $SYS are left out because
        # they cost more than the brokering itself.
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }


def start_embedded_broker(host: str = "127.0.0.1", port: int = 0) -> EmbeddedBroker:
    """Start amqtt on ``host:port`` (port 0: a free one) in a background thread; returns once it listens."""
    from amqtt.broker import Broker  # imported here: only the demo without Mosquitto needs it

    # amqtt logs every connection at INFO; keep the demo's output for the collector's own lines.
    for name in ("amqtt", "transitions"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.WARNING)

    chosen = port or _free_port(host)
    loop = asyncio.new_event_loop()
    started: Future[Any] = Future()

    async def serve() -> None:
        try:
            broker = Broker(_config(host, chosen), loop=loop)
            await broker.start()
        except BaseException as error:  # reported to the caller, which re-raises it
            started.set_exception(error)
            return
        started.set_result(broker)

    def main() -> None:
        asyncio.set_event_loop(loop)
        starter = loop.create_task(serve())  # referenced so it is not collected before it runs
        try:
            loop.run_forever()
        finally:
            # Let cancelled connection handlers finish before the loop closes.
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            with contextlib.suppress(Exception):
                loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.close()
            del starter

    thread = threading.Thread(target=main, name=f"embedded-mqtt-{chosen}", daemon=True)
    thread.start()
    try:
        broker = started.result(_START_TIMEOUT_S)
    except BaseException:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_STOP_TIMEOUT_S)
        raise
    return EmbeddedBroker(host=host, port=chosen, _loop=loop, _thread=thread, _broker=broker)


# ---------------------------------------------------------------------------------------- mosquitto


class MosquittoProcess:
    """``mosquitto`` on 127.0.0.1 with the shipped configuration; ``port`` and the data stay across restarts.

    ``data_dir`` holds the rewritten configuration, the persistence file and the broker's log
    (``mosquitto.log``); a temporary directory is made (and removed by ``close``) when none is given.
    ``config=None`` runs the stock settings (``STOCK_CONFIG``) rather than ``deploy/mosquitto.conf``.
    ``extra`` lines are appended to the configuration (a TLS listener, a password file, a small
    ``max_queued_messages``).
    """

    def __init__(
        self,
        port: int = 0,
        data_dir: str | os.PathLike[str] | None = None,
        config: str | os.PathLike[str] | None = DEPLOY_CONFIG,
        extra: tuple[str, ...] = (),
        binary: str = "mosquitto",
    ) -> None:
        found = shutil.which(binary)
        if found is None:
            raise FileNotFoundError(f"{binary} is not installed (apt-get install mosquitto)")
        self.binary = found
        self.host = "127.0.0.1"
        self.port = port or _free_port(self.host)
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir is not None else Path(tempfile.mkdtemp(prefix="ihub-mosquitto-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.data_dir / "mosquitto.conf"
        self.log_path = self.data_dir / "mosquitto.log"
        text = STOCK_CONFIG if config is None else Path(config).read_text()
        self.config_path.write_text(self._rewrite(text, extra, stock=config is None))
        self._process: subprocess.Popen[bytes] | None = None

    def _rewrite(self, text: str, extra: tuple[str, ...], stock: bool = False) -> str:
        lines = []
        for line in text.splitlines():
            word = line.split(" ", 1)[0]
            if word == "listener":
                line = f"listener {self.port} {self.host}"
            elif word == "persistence_location":
                line = f"persistence_location {self.data_dir}/"
            lines.append(line)
        if os.geteuid() == 0 and not stock:
            # Run as root, mosquitto drops to the "mosquitto" user, which cannot write a private temp dir
            # (the stock settings keep nothing on disk, so they stay exactly as shipped).
            lines.append("user root")
        lines.extend(extra)
        return "\n".join(lines) + "\n"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, timeout_s: float = 10.0) -> MosquittoProcess:
        """Start the broker and return once it accepts connections."""
        if self.running:
            return self
        with self.log_path.open("ab") as log_file:
            self._process = subprocess.Popen(
                [self.binary, "-c", str(self.config_path)],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self._process.returncode}: {self.log_tail()}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.2):
                return self
            time.sleep(0.02)
        self.kill()
        raise TimeoutError(f"mosquitto did not listen on {self.host}:{self.port} within {timeout_s} s")

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM: mosquitto writes its sessions and queued messages to disk, then exits."""
        self._end(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """SIGKILL: what arrived since the last autosave is lost, as in a power cut."""
        self._end(signal.SIGKILL, 10.0)

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def close(self) -> None:
        """Stop the broker and remove the data directory if this handle made it."""
        self.stop()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def _end(self, sig: signal.Signals, timeout_s: float) -> None:
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(sig)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout_s)

    def __enter__(self) -> MosquittoProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


def start_mosquitto(port: int = 0, data_dir: str | os.PathLike[str] | None = None) -> MosquittoProcess:
    """Mosquitto with ``deploy/mosquitto.conf`` on 127.0.0.1:``port`` (0: a free one), started."""
    return MosquittoProcess(port=port, data_dir=data_dir).start()


def start_local_broker(port: int = 0) -> MosquittoProcess | EmbeddedBroker:
    """Mosquitto if it is installed (the real thing), else the embedded amqtt broker.

    Both handles have ``host``, ``port`` and ``close()`` (which stops the broker and removes its files).
    """
    if shutil.which("mosquitto"):
        return start_mosquitto(port)
    return start_embedded_broker(port=port)
