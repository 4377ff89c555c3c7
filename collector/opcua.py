"""OPC UA reader: subscribes to a server's variables (or polls them) and emits them as SCADA points.

One reader per endpoint. It connects (security None or Basic256Sha256 Sign/SignAndEncrypt, anonymous or
username/password), resolves the node map (node ids, or browse paths translated by the server), and creates one
subscription with a monitored item per node (sampling interval, absolute deadband, queue size). Each publish
response becomes one batch of points handed to ``emit``; the next Publish request (which acknowledges it) leaves
only once ``emit`` has returned, so a slow spool slows the server's publishing, which queues ``queue_size``
samples per node meanwhile, instead of growing a queue in the collector's memory. When the server refuses
subscriptions, or ``mode: poll`` is configured, the reader reads every node each ``poll_interval_s`` and emits
the values that changed (by more than the deadband).

The OPC UA status code is kept as the quality (Good -> GOOD, Uncertain* -> UNCERTAIN, Bad* -> BAD), values are
converted with ``value * scale + offset`` (Kelvin to Celsius: scale 1, offset -273.15), and the timestamp is the
value's SourceTimestamp, else its ServerTimestamp, else the time of receipt. A lost connection marks every mapped
node COMM_FAIL once; the reader then reconnects with exponential backoff and creates the subscription again on a
fresh session (a restarted server has forgotten the old one).

asyncua is imported only inside the functions that talk to a server, so importing this module (to validate a
configuration) stays cheap.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import re
import sys
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from collector.points import BAD, COMM_FAIL, GOOD, UNCERTAIN, Emit, Point, now_micros
from resources.retry import RetryPolicy
from resources.yaml_files import load_model

if TYPE_CHECKING:
    from asyncua import Client

__all__ = [
    "DEFAULT_APPLICATION_URI",
    "NodeMapping",
    "OpcUaConnectionError",
    "OpcUaEndpointConfig",
    "OpcUaReader",
    "OpcUaSecurity",
    "ReconnectSettings",
    "SubscriptionSettings",
    "browse",
    "browse_main",
    "build_reader",
    "load_node_map",
]

logger = logging.getLogger(__name__)

SOURCE = "opcua"
# The application URI the collector presents; its client certificate must carry it as a SubjectAltName URI.
DEFAULT_APPLICATION_URI = "urn:ihub:collector:opcua"

_NODE_ID = re.compile(
    r"^(?:ns=\d+;|nsu=[^;]+;)?(?:i=\d+|s=.+|g=[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}|b=.+)$", re.S
)
_BROWSE_SEGMENT = re.compile(r"^\d+:[^/]+$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_FLOAT32: Any = None  # asyncua's VariantType.Float, set on first connection (asyncua is imported lazily)
# StatusCode severity, its two top bits: 00 Good, 01 Uncertain, 10 Bad, 11 reserved (to be treated as Bad).
_QUALITY_BY_SEVERITY = (GOOD, UNCERTAIN, BAD, BAD)


# ---------------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------------


def _base_dir(info: ValidationInfo) -> Path:
    """Relative paths in a configuration resolve against its file's directory (``context={"base_dir": ...}``)."""
    context = info.context or {}
    return Path(context.get("base_dir") or ".")


class NodeMapping(BaseModel):
    """One server variable and the SCADA point it becomes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    node_id: str | None = Field(None, description="``ns=2;s=PS01.Pump1.Flow``, ``i=2258``, ``nsu=<uri>;s=...``")
    browse_path: str | None = Field(None, description="from the Root folder: ``0:Objects/2:PS01/2:Pump1/2:Flow``")
    unit_id: str = Field(min_length=1)
    sensor_type: str = Field(min_length=1)
    unit: str = ""
    scale: float = 1.0
    offset: float = 0.0
    deadband: float | None = Field(None, ge=0, description="absolute, in server units; overrides the endpoint's")

    @field_validator("node_id")
    @classmethod
    def _node_id_syntax(cls, value: str | None) -> str | None:
        if value is not None and not _NODE_ID.match(value):
            raise ValueError(f"{value!r} is not an OPC UA node id (e.g. 'ns=2;s=PS01.Flow', 'ns=3;i=1001')")
        return value

    @field_validator("browse_path")
    @classmethod
    def _browse_path_syntax(cls, value: str | None) -> str | None:
        if value is None:
            return None
        segments = value.strip("/").split("/")
        bad = [s for s in segments if not _BROWSE_SEGMENT.match(s)]
        if bad:
            raise ValueError(
                f"browse path segment {bad[0]!r} needs a namespace index, as in '0:Objects/2:PumpStation/2:Flow'"
            )
        return "/".join(segments)

    @model_validator(mode="after")
    def _one_address(self) -> NodeMapping:
        if (self.node_id is None) == (self.browse_path is None):
            raise ValueError("give exactly one of node_id or browse_path")
        return self

    @property
    def address(self) -> str:
        """The node id or browse path, as configured (for messages)."""
        return self.node_id or self.browse_path or ""

    def convert(self, raw: float) -> float:
        return raw * self.scale + self.offset


class OpcUaSecurity(BaseModel):
    """Secure channel: ``None``, or Basic256Sha256 signing (``Sign``) or signing and encryption."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    policy: Literal["None", "Basic256Sha256"] = "None"
    mode: Literal["Sign", "SignAndEncrypt"] = "SignAndEncrypt"
    certificate: Path | None = Field(None, description="the collector's certificate (DER or PEM)")
    private_key: Path | None = Field(None, description="its private key (PEM or DER)")
    private_key_password: str | None = Field(None, repr=False)
    server_certificate: Path | None = Field(None, description="pin the server's certificate; else taken from it")

    @field_validator("certificate", "private_key", "server_certificate")
    @classmethod
    def _existing_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        path = value if value.is_absolute() else _base_dir(info) / value
        if not path.is_file():
            raise ValueError(f"no such file: {path}")
        return path

    @model_validator(mode="after")
    def _keys_for_security(self) -> OpcUaSecurity:
        if self.policy != "None" and (self.certificate is None or self.private_key is None):
            raise ValueError(f"policy {self.policy} needs the collector's certificate and private_key")
        return self

    @property
    def label(self) -> str:
        return "None" if self.policy == "None" else f"{self.policy} {self.mode}"


class SubscriptionSettings(BaseModel):
    """How the server reports changes: it samples each node every ``sampling_interval_ms``, queues up to
    ``queue_size`` samples per node, and sends what changed by more than ``deadband`` every
    ``publishing_interval_ms``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    publishing_interval_ms: float = Field(250.0, gt=0)
    sampling_interval_ms: float = Field(100.0, ge=0)
    deadband: float = Field(0.0, ge=0, description="absolute, in server units; 0 reports every change")
    queue_size: int = Field(10, ge=1)
    max_notifications_per_publish: int = Field(10_000, ge=0, description="0: no limit")


class ReconnectSettings(BaseModel):
    """Exponential backoff between connection attempts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    initial_s: float = Field(1.0, gt=0)
    max_s: float = Field(30.0, gt=0)
    factor: float = Field(2.0, ge=1)

    def policy(self) -> RetryPolicy:
        return RetryPolicy(initial_s=self.initial_s, factor=self.factor, max_delay_s=self.max_s)


class OpcUaEndpointConfig(BaseModel):
    """One OPC UA server and the variables read from it.

    ``node_map`` is a list of ``NodeMapping`` or the path of a YAML file holding one (see ``load_node_map``);
    relative paths resolve against ``base_dir`` from the validation context (the configuration file's directory),
    else the working directory. ``username``/``password`` arrive as plain strings: the collector's configuration
    loader has already substituted ``${VAR}`` from the environment.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    url: str
    security: OpcUaSecurity = OpcUaSecurity()
    username: str | None = None
    password: str | None = Field(None, repr=False)
    application_uri: str = DEFAULT_APPLICATION_URI
    mode: Literal["subscribe", "poll"] = "subscribe"
    poll_interval_s: float = Field(1.0, gt=0)
    subscription: SubscriptionSettings = SubscriptionSettings()
    reconnect: ReconnectSettings = ReconnectSettings()
    timeout_s: float = Field(5.0, gt=0, description="for each request, and for connecting")
    node_map: list[NodeMapping] = Field(min_length=1)

    @field_validator("url")
    @classmethod
    def _opc_tcp(cls, value: str) -> str:
        if not re.match(r"^opc\.tcp://[^/:]+(:\d+)?(/.*)?$", value):
            raise ValueError(f"{value!r} is not an opc.tcp:// URL (e.g. opc.tcp://127.0.0.1:4840/server)")
        return value

    @field_validator("node_map", mode="before")
    @classmethod
    def _node_map_file(cls, value: Any, info: ValidationInfo) -> Any:
        if isinstance(value, str | Path):
            path = Path(value)
            return load_node_map(path if path.is_absolute() else _base_dir(info) / path)
        return value

    @model_validator(mode="after")
    def _consistent(self) -> OpcUaEndpointConfig:
        if (self.username is None) != (self.password is None):
            raise ValueError("give both username and password, or neither")
        seen_address: dict[str, int] = {}
        seen_point: dict[tuple[str, str], int] = {}
        for index, node in enumerate(self.node_map):
            if node.address in seen_address:
                raise ValueError(f"node_map[{index}]: {node.address} is already node_map[{seen_address[node.address]}]")
            # Two nodes feeding one (unit, sensor) would collide on the downstream dedup key.
            key = (node.unit_id, node.sensor_type)
            if key in seen_point:
                raise ValueError(
                    f"node_map[{index}]: unit {key[0]} sensor {key[1]} is already node_map[{seen_point[key]}]"
                )
            seen_address[node.address] = index
            seen_point[key] = index
        return self


class NodeMapFile(BaseModel):
    """A node map file: ``nodes`` (a bare list is read as such) and ``defaults`` that fill each node."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    defaults: dict[str, Any] = Field(default_factory=dict)
    nodes: list[NodeMapping]

    @model_validator(mode="before")
    @classmethod
    def _fill_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("defaults"), dict) and isinstance(data.get("nodes"), list):
            defaults = data["defaults"]
            nodes = [{**defaults, **node} if isinstance(node, dict) else node for node in data["nodes"]]
            return {**data, "nodes": nodes}
        return data


def load_node_map(path: Path | str) -> list[NodeMapping]:
    """Read a node map file: a list of nodes, or ``{defaults: {...}, nodes: [...]}`` (defaults fill each node).

    Errors (``ConfigError``) name the file, the line and the field: ``maps/ps.yaml:14: nodes[3].unit_id: …``.
    """
    return list(load_model(path, NodeMapFile, substitute_env=False, bare_list_key="nodes").nodes)


# ---------------------------------------------------------------------------------------------------------------
# Connecting
# ---------------------------------------------------------------------------------------------------------------


class OpcUaConnectionError(ConnectionError):
    """Connecting or opening a session failed; the message names the endpoint and says why."""


def _explain(exc: BaseException, *, endpoint: str, url: str, security: OpcUaSecurity, username: str | None) -> str:
    """One line an operator can act on, naming the endpoint, for whatever a connection attempt raised."""
    from asyncua import ua

    where = f"OPC UA endpoint {endpoint!r} ({url})" if endpoint != url else f"OPC UA server {url}"
    if isinstance(exc, OpcUaConnectionError):
        return str(exc)
    if isinstance(exc, ua.UaStatusCodeError):
        name = ua.StatusCode(exc.code).name
        if name == "BadUserAccessDenied":
            who = f"user {username!r}" if username else "anonymous access"
            hint = "wrong username or password" if username else "it needs a username and password"
            return f"{where}: the server refused {who}: {hint} ({name})"
        if name in ("BadIdentityTokenInvalid", "BadIdentityTokenRejected"):
            kind = "username/password" if username else "anonymous"
            return f"{where}: the server does not accept {kind} sessions ({name})"
        if name.startswith("BadCertificate") or name in ("BadSecurityChecksFailed", "BadSecurityPolicyRejected"):
            return (
                f"{where}: the server rejected the secure channel ({security.label}, client certificate "
                f"{security.certificate}): is the certificate trusted by the server? ({name})"
            )
        return f"{where}: {exc} ({name})"
    if isinstance(exc, ua.UaError) and "No matching endpoints" in str(exc):
        return f"{where}: the server offers no {security.label} endpoint"
    if isinstance(exc, TimeoutError | asyncio.TimeoutError):
        return f"{where}: no answer in time"
    if isinstance(exc, OSError):
        return f"{where}: cannot connect: {exc.strerror or exc}"
    return f"{where}: {type(exc).__name__}: {exc}"


async def _open_client(
    url: str,
    *,
    endpoint: str,
    security: OpcUaSecurity,
    username: str | None,
    password: str | None,
    timeout_s: float,
    application_uri: str,
    on_lost: Callable[[Exception], Awaitable[None]] | None = None,
) -> Client:
    """A connected asyncua client with an activated session; ``OpcUaConnectionError`` when that fails."""
    from asyncua import Client, ua
    from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

    global _FLOAT32
    _FLOAT32 = ua.VariantType.Float
    _demote_asyncua_loss_noise()
    # The supervisor probes the server every watchdog interval and gives the probe as long to answer: a busy
    # server may take more than asyncua's 1 s default, and a closed socket is noticed at once in any case.
    client = Client(url, timeout=timeout_s, watchdog_intervall=timeout_s)
    client.application_uri = application_uri
    client.name = client.description = f"ihub collector ({endpoint})"
    # A collector that vanishes should not hold a session on the server for the default hour.
    client.session_timeout = 60_000
    client.connection_lost_callback = on_lost
    if username is not None:
        client.set_user(username)
        client.set_password(password or "")
    try:
        async with asyncio.timeout(timeout_s * 3):
            if security.policy != "None":
                await client.set_security(
                    SecurityPolicyBasic256Sha256,
                    certificate=str(security.certificate),
                    private_key=str(security.private_key),
                    private_key_password=security.private_key_password,
                    server_certificate=str(security.server_certificate) if security.server_certificate else None,
                    mode=getattr(ua.MessageSecurityMode, security.mode),
                )
            await client.connect()
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        message = _explain(exc, endpoint=endpoint, url=url, security=security, username=username)
        # A failed connect has already closed its session and channel; only a timed-out one leaves a socket.
        with contextlib.suppress(Exception):
            client.disconnect_socket()
        raise OpcUaConnectionError(message) from exc
    return client


class _LossNoise(logging.Filter):
    """Demotes to DEBUG what asyncua logs, with tracebacks, each time a connection drops: the reader reports
    the loss itself, once, naming the endpoint."""

    _MESSAGES = (
        "Publish iteration crashed",
        "close_session was called but connection is closed",
        "close_secure_channel was called but connection is closed",
    )

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.DEBUG and isinstance(record.msg, str) and record.msg.startswith(self._MESSAGES):
            exc = record.exc_info[1] if record.exc_info else None
            if exc is None or isinstance(exc, ConnectionError):
                record.levelno, record.levelname = logging.DEBUG, "DEBUG"
                record.exc_info = record.exc_text = None
        return True


@functools.cache
def _demote_asyncua_loss_noise() -> None:
    for name in ("asyncua.client.ua_session.UaSession", "asyncua.client.ua_client.UaClient"):
        logging.getLogger(name).addFilter(_LossNoise())


async def _close_client(client: Client, timeout_s: float) -> None:
    """Close the session if the server is still there; never raise (the reader is already leaving)."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(client.disconnect(), timeout_s)


# ---------------------------------------------------------------------------------------------------------------
# The reader
# ---------------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Item:
    """A resolved node: its mapping, server node id and client handle, and what polling last emitted."""

    mapping: NodeMapping
    node_id: Any  # asyncua NodeId
    handle: int
    last: tuple[int, Any] | None = None


class _Rate:
    """Events per second over the last ``window_s`` seconds (per-second buckets, cheap to update)."""

    def __init__(self, window_s: int = 10) -> None:
        self._window = window_s
        self._buckets: deque[list[int]] = deque()
        self._started = time.monotonic()

    def add(self, count: int) -> None:
        second = int(time.monotonic())
        if self._buckets and self._buckets[-1][0] == second:
            self._buckets[-1][1] += count
        else:
            self._buckets.append([second, count])
            self._trim(second)

    def _trim(self, second: int) -> None:
        while self._buckets and self._buckets[0][0] <= second - self._window:
            self._buckets.popleft()

    def per_s(self) -> float:
        now = time.monotonic()
        self._trim(int(now))
        span = min(float(self._window), max(now - self._started, 1.0))
        return sum(count for _, count in self._buckets) / span


class _ConnectionLost(Exception):
    """The session ended under the reader (transport lost, subscription gone stale)."""


@functools.cache
def _batch_subscription_class() -> type:
    """An asyncua Subscription that hands each publish response to a coroutine as a whole.

    The stock class dispatches each data change on its own (a task per change, or an in-memory queue that drops
    on overflow); a publish response is a natural batch, and awaiting its delivery inside the publish loop
    means the next Publish request, which carries the acknowledgement, leaves only once the batch is durable.
    The server keeps queueing (``queue_size`` per node) meanwhile: OPC UA's own flow control.
    """
    from asyncua.common.subscription import Subscription

    class BatchSubscription(Subscription):
        def __init__(self, session: Any, params: Any, on_publish: Callable[[list[Any]], Awaitable[None]]) -> None:
            super().__init__(session, params, handler=None, queue_maxsize=1)
            self._on_publish = on_publish

        async def publish_callback(self, publish_result: Any) -> None:
            self.last_publish_at = time.monotonic()
            message = publish_result.NotificationMessage
            if message.NotificationData:
                self.last_sequence_number = int(message.SequenceNumber)
                await self._on_publish(message.NotificationData)

    return BatchSubscription


def _micros(moment: datetime | None) -> int | None:
    """Exact UTC microseconds; None for a missing timestamp (absent, or OPC UA's 1601 'minimum' value)."""
    if moment is None or moment.year < 1971:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)  # asyncua decodes UTC; guard against a naive one all the same
    return (moment - _EPOCH) // _ONE_US


class OpcUaReader:
    """Reads one OPC UA endpoint until cancelled (see the module docstring); implements ``collector.Reader``."""

    def __init__(self, config: OpcUaEndpointConfig) -> None:
        self.config = config
        self.name = config.name
        self._connected = False
        self._mode: str | None = None
        self._subscriptions = 0
        self._monitored = 0
        self._unresolved: dict[str, str] = {}
        self._non_numeric_logged: set[str] = set()
        self._comm_fail_sent = False
        self._sessions = 0
        self._connect_failures = 0
        self._errors = 0
        self._last_error: str | None = None
        self._last_error_at: str | None = None
        self._values = 0
        self._notifications = _Rate()
        self._points = _Rate()

    # -- the Reader protocol -----------------------------------------------------------------------------------

    async def run(self, emit: Emit) -> None:
        """Connect, read, and on any failure mark the points COMM_FAIL once and reconnect with backoff."""
        backoff = self.config.reconnect.policy().backoff()
        while True:
            sessions_before = self._sessions
            try:
                await self._session(emit)
            except asyncio.CancelledError:
                raise
            except OpcUaConnectionError as exc:
                self._connect_failures += 1
                self._error(str(exc))
            except _ConnectionLost as exc:
                self._error(f"OPC UA endpoint {self.name!r} ({self.config.url}): connection lost: {exc}")
            except Exception as exc:
                self._error(f"OPC UA endpoint {self.name!r} ({self.config.url}): {_describe(exc)}")
            if self._sessions > sessions_before:
                backoff.reset()  # it worked for a while: retry soon
            await self._comm_fail(emit)
            delay = backoff.next()
            logger.info("OPC UA endpoint %r: reconnecting in %.1f s", self.name, delay)
            await asyncio.sleep(delay)

    def health(self) -> dict[str, Any]:
        return {
            "protocol": SOURCE,
            "name": self.name,
            "url": self.config.url,
            "security": self.config.security.label,
            "connected": self._connected,
            "mode": self._mode,
            "subscriptions": self._subscriptions,
            "monitored_items": self._monitored,
            "nodes": len(self.config.node_map),
            "unresolved_nodes": dict(self._unresolved),
            "notifications_per_s": round(self._notifications.per_s(), 1),
            "points_per_s": round(self._points.per_s(), 1),
            "values_received": self._values,
            "errors": self._errors,
            "connect_failures": self._connect_failures,
            "reconnects": max(self._sessions - 1, 0),
            "last_error": self._last_error,
            "last_error_at": self._last_error_at,
        }

    # -- one session -------------------------------------------------------------------------------------------

    async def _session(self, emit: Emit) -> None:
        """One connection, from connect to loss; always ends by raising (or by cancellation)."""
        config = self.config
        lost = asyncio.Event()
        reason: list[str] = []

        async def on_lost(exc: Exception) -> None:
            reason.append(_describe(exc))
            lost.set()

        client = await _open_client(
            config.url,
            endpoint=self.name,
            security=config.security,
            username=config.username,
            password=config.password,
            timeout_s=config.timeout_s,
            application_uri=config.application_uri,
            on_lost=on_lost,
        )
        try:
            items = await self._resolve(client)
            if not items:
                raise RuntimeError(f"none of the {len(config.node_map)} mapped nodes exist on the server")
            self._connected = True
            self._sessions += 1
            self._comm_fail_sent = False
            logger.info(
                "OPC UA endpoint %r: connected to %s (%s), %d of %d nodes",
                self.name,
                config.url,
                config.security.label,
                len(items),
                len(config.node_map),
            )
            if config.mode == "subscribe":
                subscription = await self._subscribe(client, items, emit, lost, reason)
                if subscription is not None:
                    await self._watch(subscription, lost)
                    raise _ConnectionLost(reason[0] if reason else "the session ended")
            await self._poll(client, items, emit, lost)
            raise _ConnectionLost(reason[0] if reason else "the session ended")
        finally:
            self._connected = False
            self._mode = None
            self._subscriptions = 0
            self._monitored = 0
            await _close_client(client, config.timeout_s)

    async def _resolve(self, client: Client) -> list[_Item]:
        """Node ids parsed (``nsu=`` through the namespace array), browse paths translated, all checked to be
        variables that exist; one error per node that is not, naming it, and the rest go on."""
        from asyncua import ua

        self._unresolved = {}
        resolved: dict[int, Any] = {}
        mappings = self.config.node_map
        namespaces: list[str] | None = None
        for index, mapping in enumerate(mappings):
            if mapping.node_id is None:
                continue
            try:
                parsed = ua.NodeId.from_string(mapping.node_id)
                if getattr(parsed, "NamespaceUri", None):
                    namespaces = namespaces or await client.get_namespace_array()
                    if parsed.NamespaceUri not in namespaces:
                        raise ValueError(f"the server has no namespace {parsed.NamespaceUri!r}")
                    parsed = ua.NodeId(parsed.Identifier, namespaces.index(parsed.NamespaceUri), parsed.NodeIdType)
                resolved[index] = parsed
            except Exception as exc:
                self._node_error(mapping, str(exc))
        by_path = [(i, m) for i, m in enumerate(mappings) if m.browse_path is not None]
        if by_path:
            results = await client.translate_browsepaths(
                ua.NodeId(ua.ObjectIds.RootFolder), [_relative_path(m.browse_path or "") for _, m in by_path]
            )
            for (index, mapping), result in zip(by_path, results, strict=True):
                if result.StatusCode.is_good() and result.Targets:
                    target = result.Targets[0].TargetId
                    resolved[index] = ua.NodeId(target.Identifier, target.NamespaceIndex, target.NodeIdType)
                else:
                    self._node_error(mapping, f"browse path not found ({result.StatusCode.name})")
        order = sorted(resolved)
        if not order:
            return []
        classes = await client.read_attributes([client.get_node(resolved[i]) for i in order], ua.AttributeIds.NodeClass)
        items = []
        for index, datavalue in zip(order, classes, strict=True):
            mapping = mappings[index]
            if not datavalue.StatusCode.is_good():
                self._node_error(mapping, f"no such node ({datavalue.StatusCode.name})")
            elif datavalue.Value.Value != ua.NodeClass.Variable:
                self._node_error(
                    mapping, f"is of node class {ua.NodeClass(datavalue.Value.Value).name}, not a Variable"
                )
            else:
                items.append(_Item(mapping, resolved[index], handle=len(items) + 1))
        return items

    def _node_error(self, mapping: NodeMapping, reason: str) -> None:
        self._unresolved[mapping.address] = reason
        self._error(
            f"OPC UA endpoint {self.name!r}: node {mapping.address} ({mapping.unit_id}/{mapping.sensor_type}): "
            f"{reason}; skipped"
        )

    # -- subscriptions -----------------------------------------------------------------------------------------

    async def _subscribe(
        self, client: Client, items: list[_Item], emit: Emit, lost: asyncio.Event, reason: list[str]
    ) -> Any | None:
        """The subscription with one monitored item per node, or None when the server refuses subscriptions."""
        from asyncua import ua

        settings = self.config.subscription
        by_handle = {item.handle: item for item in items}

        async def on_publish(notifications: list[Any]) -> None:
            received = now_micros()
            points = []
            for notification in notifications:
                if isinstance(notification, ua.DataChangeNotification):
                    for change in notification.MonitoredItems:
                        item = by_handle.get(change.ClientHandle)
                        if item is not None:
                            points.append(self._point(item, change.Value, received))
                elif isinstance(notification, ua.StatusChangeNotification) and not notification.Status.is_good():
                    # The server closed the subscription (timeout, shutdown): start over on a new session.
                    reason.append(f"subscription ended by the server ({notification.Status.name})")
                    lost.set()
            if points:
                self._notifications.add(len(points))
                await self._emit(emit, points)

        params = ua.CreateSubscriptionParameters(
            RequestedPublishingInterval=settings.publishing_interval_ms,
            RequestedLifetimeCount=10_000,
            # A keep-alive every ~5 s when nothing changes, so a server that stops publishing is noticed in ~15 s
            # (asyncua's default waits 75 % of the session timeout).
            RequestedMaxKeepAliveCount=max(1, math.ceil(5000 / settings.publishing_interval_ms)),
            MaxNotificationsPerPublish=settings.max_notifications_per_publish,
            PublishingEnabled=True,
            Priority=0,
        )
        subscription = _batch_subscription_class()(client.uaclient.session, params, on_publish)
        try:
            revised = await subscription.init()
        except ua.UaStatusCodeError as exc:
            logger.warning(
                "OPC UA endpoint %r: the server refused a subscription (%s); polling every %.1f s instead",
                self.name,
                ua.StatusCode(exc.code).name,
                self.config.poll_interval_s,
            )
            return None
        # The server may revise the interval and keep-alive count: the stale check must use its figures.
        keepalive_s = revised.RevisedPublishingInterval / 1000 * max(int(revised.RevisedMaxKeepAliveCount), 1)
        subscription.stale_after_s = max(3 * keepalive_s, 10.0)
        created = await self._monitor(subscription, items)
        if not created:
            logger.warning(
                "OPC UA endpoint %r: the server refused every monitored item; polling every %.1f s instead",
                self.name,
                self.config.poll_interval_s,
            )
            with contextlib.suppress(Exception):
                await subscription.delete()
            return None
        self._mode = "subscribe"
        self._subscriptions = 1
        self._monitored = created
        return subscription

    async def _monitor(self, subscription: Any, items: list[_Item]) -> int:
        """Create the monitored items (in chunks); retry without the deadband filter where the server rejects
        it (non-analog nodes); one error per node that fails otherwise. Returns how many were created."""
        from asyncua import ua

        settings = self.config.subscription
        filter_refused = {"BadFilterNotAllowed", "BadMonitoredItemFilterUnsupported", "BadDeadbandFilterInvalid"}

        def request(item: _Item, with_filter: bool) -> Any:
            deadband = item.mapping.deadband if item.mapping.deadband is not None else settings.deadband
            data_filter = None
            if with_filter and deadband > 0:
                data_filter = ua.DataChangeFilter(
                    Trigger=ua.DataChangeTrigger.StatusValue,
                    DeadbandType=ua.DeadbandType.Absolute,
                    DeadbandValue=deadband,
                )
            return ua.MonitoredItemCreateRequest(
                ItemToMonitor=ua.ReadValueId(NodeId=item.node_id, AttributeId=ua.AttributeIds.Value),
                MonitoringMode=ua.MonitoringMode.Reporting,
                RequestedParameters=ua.MonitoringParameters(
                    ClientHandle=item.handle,
                    SamplingInterval=settings.sampling_interval_ms,
                    Filter=data_filter,
                    QueueSize=settings.queue_size,
                    DiscardOldest=True,
                ),
            )

        created = 0
        retry: list[_Item] = []
        for start in range(0, len(items), 1000):  # servers cap the items per request; 1000 is widely accepted
            chunk = items[start : start + 1000]
            results = await subscription.create_monitored_items([request(item, True) for item in chunk])
            for item, result in zip(chunk, results, strict=True):
                if not isinstance(result, ua.StatusCode):
                    created += 1
                elif result.name in filter_refused:
                    retry.append(item)
                else:
                    self._node_error(item.mapping, f"cannot be monitored ({result.name})")
        if retry:
            results = await subscription.create_monitored_items([request(item, False) for item in retry])
            for item, result in zip(retry, results, strict=True):
                if isinstance(result, ua.StatusCode):
                    self._node_error(item.mapping, f"cannot be monitored ({result.name})")
                else:
                    created += 1
        return created

    async def _watch(self, subscription: Any, lost: asyncio.Event) -> None:
        """Wait for the connection to go; also leave when the server stops publishing (not even keep-alives)."""
        stale_after = subscription.stale_after_s
        since = time.monotonic()
        while not lost.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), timeout=1.0)
            last = subscription.last_publish_at or since
            if time.monotonic() - last > stale_after:
                raise _ConnectionLost(f"no publish response for {stale_after:.0f} s")

    # -- polling -----------------------------------------------------------------------------------------------

    async def _poll(self, client: Client, items: list[_Item], emit: Emit, lost: asyncio.Event) -> None:
        """Read every node each ``poll_interval_s``; emit the values whose status changed or whose value moved
        by more than the deadband (as a subscription would report them)."""
        from asyncua import ua

        self._mode = "poll"
        default_deadband = self.config.subscription.deadband
        chunks = [items[start : start + 500] for start in range(0, len(items), 500)]
        requests = [
            ua.ReadParameters(
                MaxAge=0,
                TimestampsToReturn=ua.TimestampsToReturn.Both,
                NodesToRead=[ua.ReadValueId(NodeId=item.node_id, AttributeId=ua.AttributeIds.Value) for item in chunk],
            )
            for chunk in chunks
        ]
        for item in items:
            item.last = None
        loop = asyncio.get_running_loop()
        period = self.config.poll_interval_s
        next_at = loop.time()
        while not lost.is_set():
            received = now_micros()
            points = []
            for chunk, params in zip(chunks, requests, strict=True):
                results = await client.uaclient.read(params)
                for item, datavalue in zip(chunk, results, strict=True):
                    status = datavalue.StatusCode.value if datavalue.StatusCode is not None else 0
                    raw = datavalue.Value.Value if datavalue.Value is not None else None
                    if item.last is not None and item.last[0] == status:
                        before = item.last[1]
                        deadband = item.mapping.deadband if item.mapping.deadband is not None else default_deadband
                        if raw == before or (_is_number(raw) and _is_number(before) and abs(raw - before) <= deadband):
                            continue
                    item.last = (status, raw)
                    points.append(self._point(item, datavalue, received))
            if points:
                await self._emit(emit, points)
            next_at += period
            if next_at < loop.time():
                next_at = loop.time()  # a slow read: do not fire a burst to catch up
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(lost.wait(), timeout=next_at - loop.time())

    # -- points ------------------------------------------------------------------------------------------------

    def _point(self, item: _Item, datavalue: Any, received_us: int) -> Point:
        """The point for one DataValue: status code as quality, scale/offset applied, source timestamp kept."""
        mapping = item.mapping
        status = datavalue.StatusCode.value if datavalue.StatusCode is not None else 0
        quality = _QUALITY_BY_SEVERITY[status >> 30]
        variant = datavalue.Value
        raw = variant.Value if variant is not None else None
        value: float | None = None
        if _is_number(raw):
            if variant.VariantType is _FLOAT32:
                # A Float carries 7 significant digits; without this 2.745 arrives as 2.744999885559082.
                raw = float(f"{raw:.7g}")
            value = mapping.convert(float(raw))
        elif raw is not None:
            quality = BAD  # a string, array or structure cannot be a SCADA point's value
            if mapping.address not in self._non_numeric_logged:
                self._non_numeric_logged.add(mapping.address)
                self._error(
                    f"OPC UA endpoint {self.name!r}: node {mapping.address} sent a {type(raw).__name__}, "
                    "not a number; kept as BAD with no value"
                )
        source_us = _micros(datavalue.SourceTimestamp) or _micros(datavalue.ServerTimestamp) or received_us
        return Point(
            SOURCE,
            self.name,
            mapping.unit_id,
            mapping.sensor_type,
            value,
            mapping.unit,
            quality,
            source_us,
            received_us,
        )

    async def _emit(self, emit: Emit, points: list[Point]) -> None:
        self._values += len(points)
        self._points.add(len(points))
        try:
            await emit(points)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # The spool's failure is the service's to report; the reader counts it and goes on reading.
            self._error(f"OPC UA endpoint {self.name!r}: emit failed for {len(points)} points: {_describe(exc)}")

    async def _comm_fail(self, emit: Emit) -> None:
        """COMM_FAIL for every mapped node, once per outage (not again on each failed retry)."""
        if self._comm_fail_sent:
            return
        self._comm_fail_sent = True
        now = now_micros()
        points = [
            Point(SOURCE, self.name, m.unit_id, m.sensor_type, None, m.unit, COMM_FAIL, now, now)
            for m in self.config.node_map
        ]
        try:
            await emit(points)
            self._points.add(len(points))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._error(f"OPC UA endpoint {self.name!r}: emit failed for COMM_FAIL points: {_describe(exc)}")

    def _error(self, message: str) -> None:
        self._errors += 1
        self._last_error = message
        self._last_error_at = datetime.now(UTC).isoformat(timespec="seconds")
        logger.error(message)


def _relative_path(browse_path: str) -> Any:
    """``0:Objects/2:PS01/2:Flow`` as a RelativePath over hierarchical references.

    Built element by element rather than parsed from OPC UA's text syntax, where ``.``, ``#`` and ``!`` in a
    browse name (``Flow.PV``) would be read as reference types."""
    from asyncua import ua

    elements = []
    for segment in browse_path.split("/"):
        namespace, name = segment.split(":", 1)
        elements.append(
            ua.RelativePathElement(
                ReferenceTypeId=ua.NodeId(ua.ObjectIds.HierarchicalReferences),
                IsInverse=False,
                IncludeSubtypes=True,
                TargetName=ua.QualifiedName(name, int(namespace)),
            )
        )
    return ua.RelativePath(Elements=elements)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float)  # bool is an int: a status becomes 0.0 or 1.0


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def build_reader(config: OpcUaEndpointConfig | Mapping[str, Any], *, base_dir: Path | None = None) -> OpcUaReader:
    """An ``OpcUaReader`` for one endpoint (a mapping is validated first, relative paths against ``base_dir``)."""
    if not isinstance(config, OpcUaEndpointConfig):
        config = OpcUaEndpointConfig.model_validate(config, context={"base_dir": base_dir} if base_dir else None)
    return OpcUaReader(config)


# ---------------------------------------------------------------------------------------------------------------
# Browsing
# ---------------------------------------------------------------------------------------------------------------


async def browse(
    url: str,
    *,
    depth: int = 6,
    security: OpcUaSecurity | Mapping[str, Any] | None = None,
    username: str | None = None,
    password: str | None = None,
    timeout_s: float = 10.0,
    application_uri: str = DEFAULT_APPLICATION_URI,
    include_standard: bool = False,
) -> list[dict[str, Any]]:
    """Every variable under ``Objects`` down to ``depth`` levels, in browse order.

    Each is ``{"node_id", "browse_path", "data_type", "value", "status", "unit"}``; ``unit`` is the variable's
    ``EngineeringUnits`` display name when the server publishes one, else None. The server's own namespace 0
    (the ``Server`` object's diagnostics) is left out unless ``include_standard``.
    """
    from asyncua import ua

    if not isinstance(security, OpcUaSecurity):
        security = OpcUaSecurity.model_validate(security or {})
    client = await _open_client(
        url,
        endpoint=url,
        security=security,
        username=username,
        password=password,
        timeout_s=timeout_s,
        application_uri=application_uri,
    )
    try:
        variables: list[tuple[Any, str]] = []
        units: dict[Any, Any] = {}  # variable node id -> its EngineeringUnits property node id
        frontier: list[tuple[Any, str]] = [(ua.NodeId(ua.ObjectIds.ObjectsFolder), "0:Objects")]
        for _ in range(depth):
            if not frontier:
                break
            references = await _browse_children(client, [node for node, _ in frontier])
            next_frontier = []
            for (parent, parent_path), refs in zip(frontier, references, strict=True):
                for ref in refs:
                    node_id = ua.NodeId(ref.NodeId.Identifier, ref.NodeId.NamespaceIndex, ref.NodeId.NodeIdType)
                    name = ref.BrowseName
                    if ref.ReferenceTypeId == ua.NodeId(ua.ObjectIds.HasProperty):
                        if name.Name == "EngineeringUnits":
                            units[parent] = node_id
                        continue
                    if node_id.NamespaceIndex == 0 and not include_standard:
                        continue
                    path = f"{parent_path}/{name.NamespaceIndex}:{name.Name}"
                    if ref.NodeClass == ua.NodeClass.Variable:
                        variables.append((node_id, path))
                    next_frontier.append((node_id, path))  # variables may have components too
            frontier = next_frontier
        nodes = [client.get_node(node_id) for node_id, _ in variables]
        data_types = await client.read_attributes(nodes, ua.AttributeIds.DataType) if nodes else []
        values = await client.read_attributes(nodes, ua.AttributeIds.Value) if nodes else []
        unit_ids = [units[node_id] for node_id, _ in variables if node_id in units]
        unit_values = await client.read_values([client.get_node(n) for n in unit_ids]) if unit_ids else []
        unit_by_node = dict(zip(unit_ids, unit_values, strict=True))
        listing = []
        for (node_id, path), data_type, value in zip(variables, data_types, values, strict=True):
            unit = unit_by_node.get(units.get(node_id))
            listing.append(
                {
                    "node_id": node_id.to_string(),
                    "browse_path": path,
                    "data_type": _type_name(data_type.Value.Value if data_type.Value is not None else None),
                    "value": _browsed_value(value),
                    "status": value.StatusCode.name if value.StatusCode is not None else "Good",
                    "unit": getattr(getattr(unit, "DisplayName", None), "Text", None),
                }
            )
        return listing
    finally:
        await _close_client(client, timeout_s)


def _browsed_value(datavalue: Any) -> Any:
    variant = datavalue.Value
    if variant is None:
        return None
    if variant.VariantType is _FLOAT32 and isinstance(variant.Value, float):
        return float(f"{variant.Value:.7g}")
    return variant.Value


async def _browse_children(client: Client, nodes: list[Any]) -> list[list[Any]]:
    """Forward hierarchical references of many nodes in one Browse request (following continuation points)."""
    from asyncua import ua

    results: list[list[Any]] = []
    for start in range(0, len(nodes), 500):
        params = ua.BrowseParameters(
            View=ua.ViewDescription(),
            RequestedMaxReferencesPerNode=0,
            NodesToBrowse=[
                ua.BrowseDescription(
                    NodeId=node,
                    BrowseDirection=ua.BrowseDirection.Forward,
                    ReferenceTypeId=ua.NodeId(ua.ObjectIds.HierarchicalReferences),
                    IncludeSubtypes=True,
                    NodeClassMask=ua.NodeClass.Object | ua.NodeClass.Variable,
                    ResultMask=ua.BrowseResultMask.All,
                )
                for node in nodes[start : start + 500]
            ],
        )
        for result in await client.uaclient.browse(params):
            references = list(result.References)
            point = result.ContinuationPoint
            while point:
                more = await client.uaclient.browse_next(
                    ua.BrowseNextParameters(ReleaseContinuationPoints=False, ContinuationPoints=[point])
                )
                references += more[0].References
                point = more[0].ContinuationPoint
            results.append(references)
    return results


def _type_name(data_type: Any) -> str:
    from asyncua import ua

    if data_type is None:
        return "Unknown"
    if data_type.NamespaceIndex == 0 and isinstance(data_type.Identifier, int):
        return ua.ObjectIdNames.get(data_type.Identifier, data_type.to_string())
    return data_type.to_string()


# What a browse suggests for a variable's sensor type, from words in its name.
_SENSOR_WORDS = (
    ("motortemp", "motor_temperature"),
    ("temperature", "temperature"),
    ("temp", "temperature"),
    ("pressure", "pressure"),
    ("flow", "flow"),
    ("level", "level"),
    ("power", "power"),
    ("running", "pump_status"),
    ("status", "status"),
)
_UNIT_ALIASES = {"m3/h": "m³/h", "degC": "°C", "℃": "°C"}


def _suggest(entry: dict[str, Any]) -> dict[str, Any]:
    """A first guess at the mapping of a browsed variable: the objects above it name the unit, its name the
    sensor type; Kelvin is converted to °C."""
    segments = [segment.split(":", 1)[1] for segment in entry["browse_path"].split("/")[1:]]
    leaf = segments[-1]
    words = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", leaf).lower()
    sensor = next((sensor for word, sensor in _SENSOR_WORDS if word in words.replace("_", "")), words)
    suggestion: dict[str, Any] = {"unit_id": "-".join(segments[:-1]) or leaf, "sensor_type": sensor}
    unit = entry.get("unit")
    if unit in ("K", "kelvin"):
        suggestion.update(unit="°C", offset=-273.15)
    elif unit:
        suggestion["unit"] = _UNIT_ALIASES.get(unit, unit)
    return suggestion


def node_map_snippet(url: str, listing: Sequence[dict[str, Any]]) -> str:
    """YAML for a node map from a browse listing; unit ids and sensor types are guesses to check."""
    lines = [
        f"# Node map for {url}: {len(listing)} variables, browsed {datetime.now(UTC):%Y-%m-%dT%H:%MZ}.",
        "# unit_id and sensor_type are guessed from the browse path: check them, and the unit, scale and offset.",
        "nodes:",
    ]
    for entry in listing:
        value = entry["value"]
        shown = f"{value!r}" if not isinstance(value, str) else repr(value[:40])
        lines.append(f"  # {entry['browse_path']}  {entry['data_type']} = {shown} {entry.get('unit') or ''}".rstrip())
        lines.append(f"  - node_id: {_yaml_string(entry['node_id'])}")
        for key, item in _suggest(entry).items():
            lines.append(f"    {key}: {_yaml_string(item) if isinstance(item, str) else item}")
    return "\n".join(lines) + "\n"


def _yaml_string(text: str) -> str:
    return yaml.safe_dump(text, default_style='"', width=10_000).strip().removesuffix("...").strip()


def browse_main(
    url: str,
    *,
    depth: int = 6,
    username: str | None = None,
    password: str | None = None,
    policy: Literal["None", "Basic256Sha256"] = "None",
    mode: Literal["Sign", "SignAndEncrypt"] = "SignAndEncrypt",
    certificate: str | None = None,
    private_key: str | None = None,
    server_certificate: str | None = None,
    timeout_s: float = 10.0,
    out: IO[str] | None = None,
) -> int:
    """Print a node map snippet for a server's variables (for ``ihub browse``); 0 on success, 1 with a message."""
    out = out or sys.stdout
    try:
        security = OpcUaSecurity(
            policy=policy,
            mode=mode,
            certificate=certificate,
            private_key=private_key,
            server_certificate=server_certificate,
        )
        listing = asyncio.run(
            browse(url, depth=depth, security=security, username=username, password=password, timeout_s=timeout_s)
        )
    except (OpcUaConnectionError, ValidationError, ValueError) as exc:
        print(f"browse: {exc}", file=sys.stderr)
        return 1
    out.write(node_map_snippet(url, listing))
    return 0
