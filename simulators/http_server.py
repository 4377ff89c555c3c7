"""Run an ASGI app with uvicorn in a background thread, for tests, benchmarks and the demo.

The socket is bound here, before uvicorn starts, so that port 0 resolves to a real free port the
caller can read at once and no other process can take it between "find a port" and "listen".
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from types import TracebackType
from typing import Any

import uvicorn

__all__ = ["RunningServer", "SimulatorServer", "bind_socket", "serve_in_thread", "serve_simulator"]


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """Bind a listening TCP socket on `host:port` (port 0 lets the kernel pick a free one)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    sock.set_inheritable(True)
    return sock


def quiet_config(app: Any, **kwargs: Any) -> uvicorn.Config:
    """A uvicorn config that logs only warnings, no access log, and leaves the logging setup alone."""
    return uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        # None keeps uvicorn from replacing the process's logging configuration (pytest's caplog,
        # Dagster's handlers) with its own dictConfig.
        log_config=None,
        lifespan="off",
        # A request held open by a "slow" fault must not keep stop() waiting for long.
        timeout_graceful_shutdown=1,
        **kwargs,
    )


class RunningServer:
    """A uvicorn server running in a daemon thread; `stop()` shuts it down and joins the thread."""

    def __init__(self, server: uvicorn.Server, thread: threading.Thread, host: str, port: int) -> None:
        self._server = server
        self._thread = thread
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        """Base URL such as ``http://127.0.0.1:54321`` (no trailing slash)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server thread is still alive."""
        return self._thread.is_alive()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Ask uvicorn to exit, wait for the thread, and raise if it did not stop in `timeout_s`."""
        self._server.should_exit = True
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            # Second request: stop waiting for open connections and background tasks.
            self._server.force_exit = True
            self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise RuntimeError(f"HTTP server on {self.url} did not stop within {2 * timeout_s:.0f} s")

    def __enter__(self) -> RunningServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"RunningServer(url={self.url!r}, running={self.running})"


def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0, startup_timeout_s: float = 10.0) -> RunningServer:
    """Serve `app` on `host:port` in a daemon thread and return once it accepts connections.

    Port 0 picks a free port; read it from the returned `RunningServer.port` / `.url`.
    """
    sock = bind_socket(host, port)
    bound_port = sock.getsockname()[1]
    server = uvicorn.Server(quiet_config(app))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # reported to the starting thread below
            failure.append(exc)
        finally:
            sock.close()

    thread = threading.Thread(target=run, name=f"uvicorn-{host}:{bound_port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + startup_timeout_s
    while not server.started:
        if not thread.is_alive():
            reason = repr(failure[0]) if failure else "the server thread exited"
            raise RuntimeError(f"HTTP server on {host}:{bound_port} failed to start: {reason}")
        if time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"HTTP server on {host}:{bound_port} not started after {startup_timeout_s} s")
        time.sleep(0.005)
    return RunningServer(server, thread, host, bound_port)


class SimulatorServer:
    """A simulator served on loopback: ``.url``, ``.port``, ``.simulator``, ``.config``; ``stop()``."""

    def __init__(self, simulator: Any, running: RunningServer) -> None:
        self.simulator = simulator
        self.config = simulator.config
        self._running = running

    @property
    def url(self) -> str:
        return self._running.url

    @property
    def port(self) -> int:
        return self._running.port

    def stop(self) -> None:
        self._running.stop()

    def __repr__(self) -> str:
        return f"{type(self.simulator).__name__}Server(url={self.url!r}, config={self.config!r})"


@contextlib.contextmanager
def serve_simulator(simulator: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[SimulatorServer]:
    """Serve a simulator (anything with an ASGI ``.app`` and a ``.config``) in a background thread for the
    duration of the ``with`` block."""
    server = SimulatorServer(simulator, serve_in_thread(simulator.app, host=host, port=port))
    try:
        yield server
    finally:
        server.stop()
