"""OPC UA simulator: the pump station as an asyncua server, for the collector's tests, the demo and the benchmark.

Each station ``PSnn`` is an object under ``Objects`` (namespace ``urn:ihub:simulator:pumpstation``, index 2)::

    PSnn/Outlet/Flow                m³/h   Double   network demand leaving the station
    PSnn/Outlet/Pressure            bar    Float    network pressure at the outlet (dips at peak demand)
    PSnn/Tank1/Level, Tank2/Level   m      Double   two interconnected ground tanks the pumps fill
    PSnn/Tank1/WaterTemperature     K      Double   published in Kelvin, as some PLCs do
    PSnn/PumpK/Running              -      Boolean  K = 1..3, started and stopped on tank level
    PSnn/PumpK/Flow                 m³/h   Double
    PSnn/PumpK/DischargePressure    bar    Float
    PSnn/PumpK/Power                kW     Float    ρ·g·Q·H / η
    PSnn/PumpK/MotorTemperature     K      Double   first-order lag toward ambient + 45 K while running

Node ids are strings: ``ns=2;s=PS01.Pump1.Flow``; browse paths ``0:Objects/2:PS01/2:Pump1/2:Flow``. Every
variable carries an ``EngineeringUnits`` property (EUInformation), so a browse can suggest the unit.

The model (DOMAIN.md facts): demand follows a residential diurnal shape in Asia/Bangkok time (peaks 06-08 and
18-21, lowest 02-04, later morning peak at weekends); pumps fill the tanks and the network draws from them, so
the tank level rises when pumping exceeds outflow; a level controller starts a pump below 2.2 m and stops one
above 4.6 m; outlet pressure falls with demand² (head loss). Noise comes from ``random.Random`` seeded per
station, so a run is deterministic from the seed and the start time: the same ticks give the same values.

Endpoints: security None, and Basic256Sha256 Sign and SignAndEncrypt with a self-signed server certificate
generated into a temporary directory (with a client certificate for the collector, the only one the server
trusts). With ``username``/``password`` set, anonymous sessions are refused.

Use ``serve_opcua()`` in tests (a background thread with its own event loop); ``python -m simulators.opcua``
serves in the foreground (the benchmark runs it in its own process).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import logging
import math
import random
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

__all__ = [
    "CLIENT_APPLICATION_URI",
    "NAMESPACE_URI",
    "OpcUaSimConfig",
    "OpcUaSimServer",
    "PumpStationModel",
    "SimCertificates",
    "generate_certificates",
    "main_serve",
    "serve_opcua",
    "station_variables",
]

NAMESPACE_URI = "urn:ihub:simulator:pumpstation"
SERVER_APPLICATION_URI = "urn:ihub:simulator:opcua"
# The collector's default application URI: its certificate must name it, or servers warn or refuse.
CLIENT_APPLICATION_URI = "urn:ihub:collector:opcua"
ENDPOINT_PATH = "/ihub/pumpstation"

_LOCAL_OFFSET = timedelta(hours=7)  # Asia/Bangkok, no daylight saving
_RHO_G = 1000 * 9.81
_BAR_TO_M = 10.197  # metres of water per bar
_TANK_AREA_M2 = 350.0  # each of the two tanks
_TANK_FLOOR_M = 25.0  # elevation of the tank floor above the outlet, for the static outlet pressure
_PUMP_RATED_M3H = 260.0
_PUMP_EFFICIENCY = 0.72
_LEVEL_START_M = 2.2
_LEVEL_STOP_M = 4.6
_MIN_SWITCH_S = 120.0  # the controller never switches pumps more often than this (motor starts are costly)


@dataclass(frozen=True)
class _Var:
    """One variable of a station: its path under the station, OPC UA type, engineering unit."""

    path: tuple[str, ...]
    variant: str  # asyncua VariantType name
    unit: str
    unit_description: str


def _station_layout() -> tuple[_Var, ...]:
    layout = [
        _Var(("Outlet", "Flow"), "Double", "m³/h", "cubic metre per hour"),
        _Var(("Outlet", "Pressure"), "Float", "bar", "bar"),
        _Var(("Tank1", "Level"), "Double", "m", "metre"),
        _Var(("Tank1", "WaterTemperature"), "Double", "K", "kelvin"),
        _Var(("Tank2", "Level"), "Double", "m", "metre"),
    ]
    for pump in ("Pump1", "Pump2", "Pump3"):
        layout += [
            _Var((pump, "Running"), "Boolean", "", "running (true) or stopped"),
            _Var((pump, "Flow"), "Double", "m³/h", "cubic metre per hour"),
            _Var((pump, "DischargePressure"), "Float", "bar", "bar"),
            _Var((pump, "Power"), "Float", "kW", "kilowatt"),
            _Var((pump, "MotorTemperature"), "Double", "K", "kelvin"),
        ]
    return tuple(layout)


_LAYOUT = _station_layout()


def station_name(index: int) -> str:
    """``PS01`` for station 0."""
    return f"PS{index + 1:02d}"


def station_variables(stations: int = 1) -> list[str]:
    """Every variable's string identifier, ``PS01.Pump1.Flow`` …, in server order."""
    return [".".join((station_name(s), *var.path)) for s in range(stations) for var in _LAYOUT]


# ---------------------------------------------------------------------------------------------------------------
# The process model
# ---------------------------------------------------------------------------------------------------------------


def _bump(hour: float, centre: float, width: float) -> float:
    distance = min(abs(hour - centre), 24 - abs(hour - centre))  # the day wraps around midnight
    return math.exp(-0.5 * (distance / width) ** 2)


def _diurnal(local: datetime) -> float:
    """Residential demand multiplier at a local time: ~0.35 at 03:00, ~1.6-1.8 at the peaks."""
    hour = local.hour + local.minute / 60 + local.second / 3600
    weekend = local.weekday() >= 5
    morning = 8.5 if weekend else 7.0
    return 0.35 + 1.25 * _bump(hour, morning, 1.3) + 0.45 * _bump(hour, 13.0, 2.5) + 1.35 * _bump(hour, 19.5, 1.5)


class PumpStationModel:
    """One pump station's physics, stepped in simulated time; values as the PLC would publish them."""

    def __init__(self, seed: int, index: int, start: datetime) -> None:
        self.name = station_name(index)
        self._rng = random.Random(seed * 1_000_003 + index)
        self.clock = start
        # Station size varies a little so that stations in a benchmark do not move in lockstep.
        self._base_demand = 430.0 * (0.85 + 0.3 * self._rng.random())
        self._level = 3.0 + self._rng.uniform(-0.6, 0.6)
        self._running = [True, False, False]
        self._since_switch = _MIN_SWITCH_S
        ambient = self._ambient_k()
        self._motor_k = [ambient + 30.0, ambient, ambient]

    def _ambient_k(self) -> float:
        local = self.clock + _LOCAL_OFFSET
        hour = local.hour + local.minute / 60
        return 303.15 + 3.0 * math.sin((hour - 9.0) / 24 * 2 * math.pi)  # ~30 °C, warmest mid-afternoon

    def step(self, dt_s: float) -> dict[str, float | bool]:
        """Advance by ``dt_s`` simulated seconds; return every variable by its path (``Pump1.Flow``)."""
        rng = self._rng
        self.clock += timedelta(seconds=dt_s)
        local = self.clock + _LOCAL_OFFSET
        demand = max(0.0, self._base_demand * _diurnal(local) * (1 + 0.02 * rng.gauss(0, 1)))

        # Level control with hysteresis, one switch at a time.
        self._since_switch += dt_s
        running = sum(self._running)
        if self._since_switch >= _MIN_SWITCH_S:
            if self._level < _LEVEL_START_M and running < 3:
                self._running[self._running.index(False)] = True
                self._since_switch = 0.0
            elif self._level > _LEVEL_STOP_M and running > 0:
                self._running[len(self._running) - 1 - self._running[::-1].index(True)] = False
                self._since_switch = 0.0
        running = sum(self._running)

        # Pumps in parallel into one main each deliver a little less than alone.
        per_pump = _PUMP_RATED_M3H * (1 - 0.07 * max(running - 1, 0))
        flows = [per_pump * (1 + 0.01 * rng.gauss(0, 1)) if on else 0.0 for on in self._running]
        inflow = sum(flows)
        self._level += (inflow - demand) * dt_s / 3600 / (2 * _TANK_AREA_M2)
        self._level = min(max(self._level, 0.3), 6.0)

        static_bar = (_TANK_FLOOR_M + self._level) / _BAR_TO_M
        values: dict[str, float | bool] = {
            "Outlet.Flow": round(demand, 2),
            "Outlet.Pressure": round(static_bar - 1.25e-6 * demand**2 + 0.01 * rng.gauss(0, 1), 3),
            "Tank1.Level": round(self._level + 0.003 * rng.gauss(0, 1), 3),
            "Tank2.Level": round(self._level - 0.02 + 0.003 * rng.gauss(0, 1), 3),
            "Tank1.WaterTemperature": round(self._ambient_k() - 2.0 + 0.02 * rng.gauss(0, 1), 2),
        }
        ambient = self._ambient_k()
        lag = 1 - math.exp(-dt_s / 600)  # motor thermal time constant ~10 min
        for k, (on, flow) in enumerate(zip(self._running, flows, strict=True)):
            pump = f"Pump{k + 1}"
            suction_bar = self._level / _BAR_TO_M
            if on:
                head_bar = 5.2 - 1.2 * (flow / _PUMP_RATED_M3H) ** 2  # pump curve: head falls with flow
                discharge = suction_bar + head_bar + 0.01 * rng.gauss(0, 1)
                power = _RHO_G * (flow / 3600) * (head_bar * _BAR_TO_M) / _PUMP_EFFICIENCY / 1000
            else:
                discharge = static_bar + 0.005 * rng.gauss(0, 1)  # the check valve holds network pressure
                power = 0.0
            self._motor_k[k] += ((ambient + (45.0 if on else 0.0)) - self._motor_k[k]) * lag
            values[f"{pump}.Running"] = on
            values[f"{pump}.Flow"] = round(flow, 2)
            values[f"{pump}.DischargePressure"] = round(discharge, 3)
            values[f"{pump}.Power"] = round(power, 2)
            values[f"{pump}.MotorTemperature"] = round(self._motor_k[k] + 0.05 * rng.gauss(0, 1), 2)
        return values


# ---------------------------------------------------------------------------------------------------------------
# Certificates
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimCertificates:
    """Paths of the generated self-signed certificates (DER) and private keys (PEM)."""

    server_certificate: Path
    server_private_key: Path
    client_certificate: Path
    client_private_key: Path


def _self_signed(directory: Path, stem: str, application_uri: str, server: bool) -> tuple[Path, Path]:
    from asyncua.crypto import cert_gen
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding
    from cryptography.x509.oid import ExtendedKeyUsageOID

    key = cert_gen.generate_private_key()
    names: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(application_uri),
        x509.DNSName(socket.gethostname()),  # asyncua warns when the host name is missing
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
    ]
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    certificate = cert_gen.generate_self_signed_app_certificate(
        key, f"ihub {stem}", {"organizationName": "ihub simulators"}, names, [usage], days=30
    )
    cert_path, key_path = directory / f"{stem}_cert.der", directory / f"{stem}_key.pem"
    cert_path.write_bytes(certificate.public_bytes(Encoding.DER))
    key_path.write_bytes(cert_gen.dump_private_key_as_pem(key))
    return cert_path, key_path


def generate_certificates(directory: Path, client_application_uri: str = CLIENT_APPLICATION_URI) -> SimCertificates:
    """A server and a client certificate with their keys, self-signed, written into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    server_cert, server_key = _self_signed(directory, "server", SERVER_APPLICATION_URI, server=True)
    client_cert, client_key = _self_signed(directory, "client", client_application_uri, server=False)
    return SimCertificates(server_cert, server_key, client_cert, client_key)


# ---------------------------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class OpcUaSimConfig:
    """What the simulator serves.

    ``tick_s`` is the update period (0: values change only when a test sets them); ``time_scale`` runs the
    model faster than the wall clock (60: a simulated minute per second) so tank cycles show in a short demo.
    ``security`` adds the Basic256Sha256 endpoints (and generates certificates); ``allow_subscriptions=False``
    makes the server refuse CreateSubscription (BadTooManySubscriptions), to exercise the polling fallback.
    """

    seed: int = 7
    stations: int = 1
    tick_s: float = 1.0
    time_scale: float = 1.0
    start: datetime | None = None
    security: bool = True
    username: str | None = None
    password: str | None = None
    allow_subscriptions: bool = True
    certificate_dir: Path | None = None
    client_application_uri: str = CLIENT_APPLICATION_URI
    engineering_units: bool = True


@dataclass
class _Pin:
    value: Any
    status: str


class _Simulator:
    """The asyncua server and the update loop; lives on one event loop (the simulator's thread)."""

    def __init__(self, config: OpcUaSimConfig, host: str, port: int, certificates: SimCertificates | None) -> None:
        self.config = config
        self.host = host
        self.port = port
        self.certificates = certificates
        start = config.start or datetime.now(UTC).replace(microsecond=0)
        self.models = [PumpStationModel(config.seed, s, start) for s in range(config.stations)]
        self.values: dict[str, Any] = {}  # string identifier -> last value written
        self.statuses: dict[str, str] = {}
        self.pins: dict[str, _Pin] = {}
        self.server: Any = None
        self.namespace = 2
        self._variants: dict[str, Any] = {}
        self._task: asyncio.Task[None] | None = None
        self.writes = 0
        self.changes = 0
        self.ticks = 0
        # First values, so a freshly started server never serves its zero defaults.
        self._step_models(0.0)

    @property
    def running(self) -> bool:
        return self.server is not None

    def _step_models(self, dt_s: float) -> None:
        for model in self.models:
            for path, value in model.step(dt_s).items():
                self.values[f"{model.name}.{path}"] = value
                self.statuses.setdefault(f"{model.name}.{path}", "Good")

    async def start(self) -> None:
        """Build a fresh server (a restart loses sessions and subscriptions, as a real one does) and listen."""
        from asyncua import Server, ua

        config = self.config
        server = Server(user_manager=_PasswordUsers(config.username, config.password) if config.username else None)
        await server.init()
        server.set_server_name("ihub pump station simulator")
        server.set_endpoint(f"opc.tcp://{self.host}:{self.port}{ENDPOINT_PATH}")
        policies = [ua.SecurityPolicyType.NoSecurity]
        if self.certificates is not None:
            await server.set_application_uri(SERVER_APPLICATION_URI)
            await server.load_certificate(str(self.certificates.server_certificate))
            await server.load_private_key(str(self.certificates.server_private_key))
            policies += [
                ua.SecurityPolicyType.Basic256Sha256_Sign,
                ua.SecurityPolicyType.Basic256Sha256_SignAndEncrypt,
            ]
            server.set_certificate_validator(_trust_only(self.certificates.client_certificate))
        server.set_security_policy(policies)
        if config.username:
            server.set_identity_tokens([ua.UserNameIdentityToken])
        if not config.allow_subscriptions:
            server.iserver.max_subscriptions = 0
        self.namespace = await server.register_namespace(NAMESPACE_URI)
        await self._build_address_space(server)
        await server.start()
        if self.port == 0 and server.bserver is not None:
            self.port = server.bserver.port  # keep it: a restart listens on the same port
        self.server = server
        await self._write_all()
        if config.tick_s > 0:
            self._task = asyncio.create_task(self._update_loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self.server is not None:
            server, self.server = self.server, None
            await server.stop()

    async def _build_address_space(self, server: Any) -> None:
        from asyncua import ua

        ns = self.namespace
        for model in self.models:
            station = await server.nodes.objects.add_object(ua.NodeId(model.name, ns), ua.QualifiedName(model.name, ns))
            groups: dict[str, Any] = {}
            for var in _LAYOUT:
                group_name, leaf = var.path
                group = groups.get(group_name)
                if group is None:
                    group = await station.add_object(
                        ua.NodeId(f"{model.name}.{group_name}", ns), ua.QualifiedName(group_name, ns)
                    )
                    groups[group_name] = group
                ident = f"{model.name}.{group_name}.{leaf}"
                variant = getattr(ua.VariantType, var.variant)
                self._variants[ident] = variant
                node = await group.add_variable(
                    ua.NodeId(ident, ns), ua.QualifiedName(leaf, ns), self.values[ident], varianttype=variant
                )
                if self.config.engineering_units and var.unit:
                    units = ua.EUInformation(
                        NamespaceUri="http://www.opcfoundation.org/UA/units/un/cefact",
                        DisplayName=ua.LocalizedText(var.unit),
                        Description=ua.LocalizedText(var.unit_description),
                    )
                    await node.add_property(
                        ua.NodeId(f"{ident}.EngineeringUnits", ns), ua.QualifiedName("EngineeringUnits", 0), units
                    )

    def datavalue(self, ident: str, value: Any, status: str, when: datetime) -> Any:
        from asyncua import ua

        return ua.DataValue(
            Value=ua.Variant(value, self._variants[ident]),
            StatusCode=ua.StatusCode(getattr(ua.StatusCodes, status)),
            SourceTimestamp=when,
            ServerTimestamp=when,
        )

    async def write(self, ident: str, value: Any, status: str, when: datetime | None = None) -> None:
        from asyncua import ua

        if self.server is None:
            return
        when = when or datetime.now(UTC)
        await self.server.write_attribute_value(
            ua.NodeId(ident, self.namespace), self.datavalue(ident, value, status, when)
        )
        self.writes += 1

    async def _write_all(self) -> None:
        now = datetime.now(UTC)
        for ident, value in self.values.items():
            pin = self.pins.get(ident)
            if pin is not None:
                await self.write(ident, pin.value, pin.status, now)
            else:
                await self.write(ident, value, self.statuses[ident], now)

    async def _update_loop(self) -> None:
        loop = asyncio.get_running_loop()
        period = self.config.tick_s
        next_at = loop.time()
        while True:
            next_at += period
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            if loop.time() - next_at > 5 * period:
                next_at = loop.time()  # fell far behind (a paused process): skip rather than burst
            before = dict(self.values)
            self._step_models(period * self.config.time_scale)
            self.ticks += 1
            now = datetime.now(UTC)
            for ident, value in self.values.items():
                if ident in self.pins:
                    continue
                if value != before.get(ident):
                    self.changes += 1
                await self.write(ident, value, self.statuses[ident], now)

    async def pin(self, ident: str, value: Any, status: str) -> None:
        self._check(ident, status)
        self.pins[ident] = _Pin(value, status)
        await self.write(ident, value, status)

    async def release(self, ident: str) -> None:
        self.pins.pop(ident, None)
        await self.write(ident, self.values[ident], self.statuses[ident])

    def _check(self, ident: str, status: str) -> None:
        from asyncua import ua

        if ident not in self.values:
            raise KeyError(f"no variable {ident!r} on the simulator (try one of {next(iter(self.values))!r} ...)")
        if not hasattr(ua.StatusCodes, status):
            raise ValueError(f"unknown OPC UA status code {status!r} (e.g. Good, BadSensorFailure)")


class _PasswordUsers:
    """Accepts exactly one username and password; anything else is refused (BadUserAccessDenied)."""

    def __init__(self, username: str | None, password: str | None) -> None:
        self._username = username
        self._password = password

    def get_user(self, iserver: Any, username: str | None = None, password: str | None = None, certificate=None):
        from asyncua.crypto.permission_rules import User, UserRole

        if username == self._username and password == self._password:
            return User(role=UserRole.User, name=username)
        return None


def _trust_only(client_certificate: Path):
    """A certificate validator that trusts the one client certificate the simulator generated."""
    from asyncua import ua
    from asyncua.common.utils import ServiceError
    from cryptography import x509

    trusted = x509.load_der_x509_certificate(client_certificate.read_bytes())

    async def validate(certificate: Any, app_description: Any) -> None:
        if certificate != trusted:
            raise ServiceError(ua.StatusCodes.BadCertificateUntrusted)

    return validate


def _ident(node: str) -> str:
    """``ns=2;s=PS01.Pump1.Flow`` or ``PS01.Pump1.Flow`` -> ``PS01.Pump1.Flow``."""
    return node.split(";s=", 1)[1] if ";s=" in node else node


class OpcUaSimServer:
    """Handle on a simulator running in a background thread; every method is safe to call from any thread."""

    def __init__(self, simulator: _Simulator, loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
        self._sim = simulator
        self._loop = loop
        self._thread = thread

    def _call(self, coro: Any, timeout_s: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout_s)

    @property
    def config(self) -> OpcUaSimConfig:
        return self._sim.config

    @property
    def host(self) -> str:
        return self._sim.host

    @property
    def port(self) -> int:
        return self._sim.port

    @property
    def url(self) -> str:
        """``opc.tcp://127.0.0.1:<port>/ihub/pumpstation``."""
        return f"opc.tcp://{self._sim.host}:{self._sim.port}{ENDPOINT_PATH}"

    @property
    def certificates(self) -> SimCertificates | None:
        return self._sim.certificates

    @property
    def namespace(self) -> int:
        return self._sim.namespace

    @property
    def running(self) -> bool:
        return self._sim.running

    @property
    def writes(self) -> int:
        """Values written to the address space so far (each a potential data-change notification)."""
        return self._sim.writes

    def node_id(self, ident: str) -> str:
        """``PS01.Pump1.Flow`` -> ``ns=2;s=PS01.Pump1.Flow``."""
        return f"ns={self._sim.namespace};s={_ident(ident)}"

    def node_ids(self) -> list[str]:
        return [self.node_id(ident) for ident in self._sim.values]

    def value(self, node: str) -> Any:
        """What the server currently serves for a node (its pinned value if a test set one)."""
        ident = _ident(node)
        pin = self._sim.pins.get(ident)
        return pin.value if pin is not None else self._sim.values[ident]

    def set_value(self, node: str, value: Any, status: str = "Good") -> None:
        """Serve ``value`` with ``status`` and hold it there (the model no longer moves it) until ``release``."""
        self._call(self._sim.pin(_ident(node), value, status))

    def set_status(self, node: str, status: str) -> None:
        """Keep the node's current value but give it a status code by name (``BadSensorFailure`` …)."""
        self.set_value(node, self.value(node), status)

    def release(self, node: str) -> None:
        """Hand a node back to the model."""
        self._call(self._sim.release(_ident(node)))

    def release_all(self) -> None:
        """Hand every node a test pinned back to the model."""
        for ident in list(self._sim.pins):
            self.release(ident)

    def stop(self) -> None:
        """Stop listening and drop every session (the values and model state stay)."""
        self._call(self._sim.stop())

    def start(self) -> None:
        """Listen again on the same port, with a new server instance."""
        self._call(self._sim.start())

    def restart(self, down_s: float = 0.0) -> None:
        self.stop()
        time.sleep(down_s)
        self.start()

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop the server and the thread's event loop."""
        if not self._thread.is_alive():
            return
        try:
            self._call(self._sim.stop(), timeout_s)
            self._call(_cancel_remaining_tasks(), timeout_s)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout_s)


async def _cancel_remaining_tasks() -> None:
    """Sessions of stopped server instances keep timers running until their timeout; end them with the loop."""
    tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _quiet_asyncua_server_logs() -> None:
    """The server side logs warnings about every client quirk; a simulator does not need them."""
    for name in ("asyncua.server", "asyncua.crypto.uacrypto"):
        logger = logging.getLogger(name)
        if logger.level == logging.NOTSET:
            logger.setLevel(logging.ERROR)


@contextlib.contextmanager
def serve_opcua(
    port: int = 0, *, host: str = "127.0.0.1", config: OpcUaSimConfig | None = None, **overrides: Any
) -> Iterator[OpcUaSimServer]:
    """Serve the pump station in a background thread for the duration of the ``with`` block.

    Yields a handle with ``url``, ``certificates`` (paths, when ``security`` is on) and control methods
    (``set_value``, ``set_status``, ``release``, ``stop``, ``start``, ``restart``). Port 0 picks a free port.
    Keyword overrides are ``OpcUaSimConfig`` fields: ``serve_opcua(tick_s=0.1, username="op", password="pw")``.
    """
    config = config or OpcUaSimConfig()
    for key, value in overrides.items():
        if not hasattr(config, key):
            raise TypeError(f"serve_opcua() got an unknown option {key!r}")
        setattr(config, key, value)
    _quiet_asyncua_server_logs()
    with contextlib.ExitStack() as stack:
        certificates = None
        if config.security:
            directory = config.certificate_dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
            certificates = generate_certificates(directory, config.client_application_uri)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="opcua-simulator", daemon=True)
        thread.start()
        simulator = _Simulator(config, host, port, certificates)
        handle = OpcUaSimServer(simulator, loop, thread)
        try:
            handle.start()
            yield handle
        finally:
            try:
                handle.close()
            finally:
                if not thread.is_alive():
                    loop.close()


# ---------------------------------------------------------------------------------------------------------------
# Foreground serving (ihub simulate, the benchmark)
# ---------------------------------------------------------------------------------------------------------------


async def _serve_forever(simulator: _Simulator, stop: asyncio.Event, report_s: float = 0.0) -> None:
    await simulator.start()
    host = simulator.host
    print(
        f"OPC UA simulator ({simulator.config.stations} station(s), {len(simulator.values)} variables, "
        f"seed {simulator.config.seed}) on opc.tcp://{host}:{simulator.port}{ENDPOINT_PATH}",
        flush=True,
    )
    if simulator.certificates is not None:
        c = simulator.certificates
        print(
            f"certificates: server {c.server_certificate}  client {c.client_certificate} key {c.client_private_key}",
            flush=True,
        )
    started = time.perf_counter()

    async def report() -> None:
        # For a benchmark to count what was offered during its own measurement window.
        while report_s > 0:
            await asyncio.sleep(report_s)
            print(f"changes {simulator.changes} writes {simulator.writes}", flush=True)

    reporter = asyncio.create_task(report())
    try:
        await stop.wait()
    finally:
        reporter.cancel()
        elapsed = time.perf_counter() - started
        await simulator.stop()
        print(f"served {simulator.writes} writes ({simulator.changes} changed values) in {elapsed:.1f} s", flush=True)


def main_serve(
    host: str = "127.0.0.1",
    port: int = 4840,
    *,
    stations: int = 1,
    seed: int = 7,
    tick_s: float = 1.0,
    time_scale: float = 1.0,
    security: bool = True,
    username: str | None = None,
    password: str | None = None,
    certificate_dir: Path | None = None,
    report_s: float = 0.0,
) -> None:
    """Serve in the foreground until SIGINT or SIGTERM; prints the URL, then the write count at exit (and the
    running count every ``report_s`` seconds when that is set)."""
    _quiet_asyncua_server_logs()
    config = OpcUaSimConfig(
        seed=seed,
        stations=stations,
        tick_s=tick_s,
        time_scale=time_scale,
        security=security,
        username=username,
        password=password,
        certificate_dir=certificate_dir,
    )
    with contextlib.ExitStack() as stack:
        certificates = None
        if security:
            directory = certificate_dir or Path(stack.enter_context(tempfile.TemporaryDirectory()))
            certificates = generate_certificates(directory)

        async def run() -> None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, stop.set)
            await _serve_forever(_Simulator(config, host, port, certificates), stop, report_s)

        asyncio.run(run())


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m simulators.opcua", description=main_serve.__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4840, help="0 picks a free port (printed)")
    parser.add_argument("--stations", type=int, default=1, help="pump stations, 20 variables each")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--tick-s", type=float, default=1.0, help="update period in seconds")
    parser.add_argument("--time-scale", type=float, default=1.0, help="simulated seconds per real second")
    parser.add_argument("--no-security", action="store_true", help="serve only the security-None endpoint")
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument("--certificate-dir", type=Path, help="keep the generated certificates here")
    parser.add_argument("--report-s", type=float, default=0.0, help="print the change count this often")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    """``python -m simulators.opcua`` / ``ihub simulate opcua``: the pump station as an OPC UA server."""
    args = _parse(argv)
    main_serve(
        args.host,
        args.port,
        stations=args.stations,
        seed=args.seed,
        tick_s=args.tick_s,
        time_scale=args.time_scale,
        security=not args.no_security,
        username=args.username,
        password=args.password,
        certificate_dir=args.certificate_dir,
        report_s=args.report_s,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
