"""Modbus TCP reader: polls a device's register map, groups reads, decodes explicit byte orders.

One ``ModbusReader`` per device (``build_reader(config)``). Each poll reads the device's points in as
few requests as the protocol allows (``plan_requests``: neighbouring addresses of one function merged,
at most 125 registers or 2000 bits a request, holes up to ``max_hole`` bridged), decodes every point
with its declared data type and byte/word order (``decode``, the inverse of ``encode``), applies
``value = raw × scale + offset`` and hands the points that passed the deadband to the collector.

Failures follow Telegraf's Modbus input: a request that fails marks only ITS points ``COMM_FAIL`` and
the rest of the poll goes on; one error line names the device, the function, the address range, the
points and the reason. Transient failures (timeouts, a busy device or gateway, a dropped connection)
are retried ``retries`` times ``retry_delay_s`` apart; an answer that can never change (illegal
function, address or value) is not, since retrying it only stalls the poll. When the connection is
gone the reader reconnects with exponential backoff and counts the reconnection.

Byte orders name the four bytes of a 32-bit value as the device sends them, most significant first
(``ABCD`` = big endian). ``CDAB`` swaps the 16-bit words, ``BADC`` the bytes inside each word, ``DCBA``
both. The same two swaps apply to every width: for 64-bit values ``CDAB`` means the four registers in
reverse order (``GHEFCDAB``), for 16-bit values only the byte swap matters, for strings the byte swap
acts inside each register.
"""

from __future__ import annotations

import asyncio
import logging
import math
import struct
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from collector.points import BAD, COMM_FAIL, GOOD, Emit, Point, now_micros
from resources.retry import RetryPolicy
from resources.yaml_files import ConfigError, load_model

__all__ = [
    "BIT_FUNCTIONS",
    "MAPS_DIR",
    "ByteOrder",
    "DataType",
    "Function",
    "ModbusDeviceConfig",
    "ModbusReader",
    "RegisterMap",
    "RegisterPoint",
    "Request",
    "build_reader",
    "decode",
    "encode",
    "load_register_map",
    "plan_requests",
    "register_count",
    "scaled",
]

log = logging.getLogger(__name__)

MAPS_DIR: Final = Path(__file__).resolve().parent / "maps"

Function = Literal["coil", "discrete_input", "holding", "input"]
DataType = Literal["int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "bool", "string"]
ByteOrder = Literal["ABCD", "CDAB", "BADC", "DCBA"]

BIT_FUNCTIONS: Final = frozenset({"coil", "discrete_input"})
# Protocol limits (Modbus application protocol v1.1b3, 6.1-6.4): registers and bits a read may ask for.
MAX_REGISTERS: Final = 125
MAX_BITS: Final = 2000

_FUNCTION_ORDER: Final = {"coil": 0, "discrete_input": 1, "holding": 2, "input": 3}
_FUNCTION_LABEL: Final = {
    "coil": "coils",
    "discrete_input": "discrete inputs",
    "holding": "holding registers",
    "input": "input registers",
}
_CLIENT_METHOD: Final = {
    "coil": "read_coils",
    "discrete_input": "read_discrete_inputs",
    "holding": "read_holding_registers",
    "input": "read_input_registers",
}
_STRUCT_FORMAT: Final = {
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "int64": "q",
    "uint64": "Q",
    "float32": "f",
    "float64": "d",
}
_WIDTH: Final = {"int16": 1, "uint16": 1, "bool": 1, "int32": 2, "uint32": 2, "float32": 2}
_WIDTH.update({"int64": 4, "uint64": 4, "float64": 4})
# Modbus exception codes: (error kind in health, what the code means).
_EXCEPTIONS: Final = {
    1: ("illegal_function", "illegal function"),
    2: ("illegal_address", "illegal data address"),
    3: ("illegal_value", "illegal data value"),
    4: ("device_failure", "server device failure"),
    5: ("acknowledge", "acknowledge (still processing)"),
    6: ("device_busy", "server device busy"),
    8: ("memory_parity", "memory parity error"),
    10: ("gateway_path", "gateway path unavailable"),
    11: ("gateway_no_response", "gateway target device failed to respond"),
}
# Answers that will be the same next time: retrying them only delays the rest of the poll.
_PERMANENT_EXCEPTIONS: Final = frozenset({1, 2, 3})
_RATE_WINDOW_S: Final = 10.0
_REPEAT_LOG_S: Final = 60.0


# --------------------------------------------------------------------------------------------------
# Decoding and encoding
# --------------------------------------------------------------------------------------------------


def register_count(data_type: str, length: int | None = None) -> int:
    """How many 16-bit registers one value of ``data_type`` occupies (strings: ``length``)."""
    if data_type == "string":
        if not length or length < 1:
            raise ValueError("a string needs length >= 1 (registers, two characters each)")
        return length
    try:
        return _WIDTH[data_type]
    except KeyError:
        raise ValueError(f"unknown data type {data_type!r}") from None


def _swaps(byte_order: str) -> tuple[bool, bool]:
    """(word swap, byte swap) for a byte order name."""
    if byte_order not in ("ABCD", "CDAB", "BADC", "DCBA"):
        raise ValueError(f"unknown byte order {byte_order!r}; expected ABCD, CDAB, BADC or DCBA")
    return byte_order in ("CDAB", "DCBA"), byte_order in ("BADC", "DCBA")


@lru_cache(maxsize=512)
def _decoder(
    data_type: str, byte_order: str, length: int | None, bit: int | None, encoding: str
) -> Callable[[Sequence[int], int], int | float | bool | str]:
    """A function (registers, offset) -> value, built once per point shape (the poll's hot path).

    Registers are reassembled into the value's big-endian bytes with at most one reversal of the
    register slice (word swap) and one ``struct`` pack whose endianness does the byte swap.
    """
    n = register_count(data_type, length)
    if data_type == "bool":
        if bit is None:
            return lambda regs, o: regs[o] != 0
        mask = 1 << bit
        return lambda regs, o: (regs[o] & mask) != 0
    word_swap, byte_swap = _swaps(byte_order)
    pack = struct.Struct(("<" if byte_swap else ">") + "H" * n).pack
    if data_type == "string":

        def decode_string(regs: Sequence[int], o: int) -> str:
            chunk = regs[o : o + n]
            raw = pack(*(chunk[::-1] if word_swap else chunk))
            # Devices pad fixed-length strings with NULs; what follows the first NUL is not text.
            return raw.split(b"\x00", 1)[0].decode(encoding, errors="replace")

        return decode_string
    unpack = struct.Struct(">" + _STRUCT_FORMAT[data_type]).unpack
    if n == 1:
        return lambda regs, o: unpack(pack(regs[o]))[0]
    if word_swap:
        return lambda regs, o: unpack(pack(*regs[o : o + n][::-1]))[0]
    return lambda regs, o: unpack(pack(*regs[o : o + n]))[0]


def decode(
    registers: Sequence[int],
    data_type: DataType,
    byte_order: ByteOrder = "ABCD",
    *,
    length: int | None = None,
    bit: int | None = None,
    encoding: str = "ascii",
) -> int | float | bool | str:
    """The raw value (before scale and offset) held in ``registers`` as the device sent them.

    ``registers`` are 16-bit values in the order read from the device; ``length`` is the register count
    of a string (default: all of ``registers``); ``bit`` picks one bit (0 = least significant) of a
    register for ``bool``, otherwise any non-zero register is true.
    """
    if data_type == "string" and length is None:
        length = len(registers)
    needed = register_count(data_type, length)
    if len(registers) < needed:
        raise ValueError(f"{data_type} needs {needed} registers, got {len(registers)}")
    if any(not 0 <= r <= 0xFFFF for r in registers[:needed]):
        raise ValueError(f"registers must be 16-bit unsigned values, got {list(registers[:needed])}")
    return _decoder(data_type, byte_order, length, bit, encoding)(registers, 0)


def encode(
    value: int | float | bool | str,
    data_type: DataType,
    byte_order: ByteOrder = "ABCD",
    *,
    length: int | None = None,
    bit: int | None = None,
    encoding: str = "ascii",
) -> list[int]:
    """The registers a device sends for ``value`` (raw, before scale and offset): ``decode``'s inverse.

    Integers must fit the type (a float is accepted only when it is integral); strings are padded with
    NULs to ``length`` registers and refused when longer.
    """
    n = register_count(data_type, length if data_type == "string" else None)
    if data_type == "bool":
        return [(1 << bit if bit is not None else 1) if value else 0]
    word_swap, byte_swap = _swaps(byte_order)
    if data_type == "string":
        if not isinstance(value, str):
            raise TypeError(f"string value expected, got {value!r}")
        data = value.encode(encoding)
        if len(data) > 2 * n:
            raise ValueError(f"{value!r} is {len(data)} bytes; {n} registers hold {2 * n}")
        data = data.ljust(2 * n, b"\x00")
    else:
        fmt = _STRUCT_FORMAT[data_type]
        if fmt not in "fd":
            if isinstance(value, float):
                if not value.is_integer():
                    raise ValueError(f"{data_type} cannot hold the fraction {value!r}")
                value = int(value)
            if not isinstance(value, int):
                raise TypeError(f"{data_type} needs an integer, got {value!r}")
        try:
            data = struct.pack(">" + fmt, value)
        except struct.error as error:
            raise ValueError(f"{value!r} does not fit {data_type}: {error}") from None
    registers = list(struct.unpack(("<" if byte_swap else ">") + "H" * n, data))
    return registers[::-1] if word_swap else registers


@lru_cache(maxsize=512)
def _scaler(scale: float, offset: float) -> Callable[[int | float], float]:
    """``raw × scale + offset`` as a function; a decimal scale (0.1, 0.01 …) divides by its inverse.

    3010 × 0.001 is 3.0100000000000002 in binary floating point, 3010 / 1000 is 3.01: dividing by an
    exact integer keeps the value the device meant.
    """
    inverse = 1.0 / scale
    divisor = round(inverse)
    if divisor > 1 and abs(inverse - divisor) < 1e-9 * divisor:
        if offset == 0:
            return lambda raw: raw / divisor
        return lambda raw: raw / divisor + offset
    if scale == 1 and offset == 0:
        return lambda raw: raw + 0.0
    return lambda raw: raw * scale + offset


def scaled(raw: int | float, scale: float = 1.0, offset: float = 0.0) -> float:
    """The engineering value of a raw register value: ``raw × scale + offset``."""
    return _scaler(scale, offset)(raw)


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


class RegisterPoint(BaseModel):
    """One value in a device's register map, and what it becomes as a SCADA point (immutable)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$", description="unique within the device; logs use it")
    sensor_type: str | None = Field(default=None, description="the point's sensor type; defaults to name")
    plant_unit_id: str | None = Field(
        default=None,
        description="plant unit the point belongs to; '{unit}' stands for the device's plant_unit_id (default)",
    )
    function: Function = "holding"
    address: int = Field(ge=0, le=0xFFFF, description="0-based protocol address (register 40001 is 0)")
    data_type: DataType | None = Field(default=None, description="default: bool for coils/discrete inputs")
    byte_order: ByteOrder = "ABCD"
    length: int | None = Field(default=None, ge=1, le=MAX_REGISTERS, description="registers of a string")
    bit: int | None = Field(default=None, ge=0, le=15, description="bit of a register read as bool")
    scale: float = 1.0
    offset: float = 0.0
    unit: str = ""
    deadband: float | None = Field(
        default=None, ge=0, description="emit only when the value moved more than this; None: every poll"
    )
    heartbeat_s: float | None = Field(default=None, gt=0, description="re-emit unchanged values this often")

    @model_validator(mode="before")
    @classmethod
    def _bits_are_bool(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("data_type") is None and data.get("function") in BIT_FUNCTIONS:
            return {**data, "data_type": "bool"}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> RegisterPoint:
        if self.data_type is None:
            raise ValueError(f"data_type is required for {_FUNCTION_LABEL[self.function]}")
        if self.function in BIT_FUNCTIONS and self.data_type != "bool":
            raise ValueError(f"data_type must be bool for {_FUNCTION_LABEL[self.function]}, not {self.data_type}")
        if self.data_type == "string" and self.length is None:
            raise ValueError("length (registers) is required for a string")
        if self.data_type != "string" and self.length is not None:
            raise ValueError("length applies to strings only")
        if self.bit is not None and (self.data_type != "bool" or self.function in BIT_FUNCTIONS):
            raise ValueError("bit applies to a bool read from a holding or input register")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        if self.address + self.register_count > 0x10000:
            raise ValueError(f"address {self.address} + {self.register_count} registers runs past 65535")
        return self

    @property
    def register_count(self) -> int:
        """Registers (or bits, for coils and discrete inputs) the point occupies."""
        if self.function in BIT_FUNCTIONS:
            return 1
        return register_count(self.data_type or "uint16", self.length)

    @property
    def end(self) -> int:
        """Exclusive end address."""
        return self.address + self.register_count


class RegisterMap(BaseModel):
    """A register map file: what a device model holds and where (``collector/maps/*.yaml``)."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    model: str | None = Field(default=None, description="which simulator model serves this map; readers ignore it")
    registers: list[RegisterPoint] = Field(min_length=1)


class ModbusDeviceConfig(BaseModel):
    """One Modbus TCP device (a PLC, RTU or gateway unit id) and how to poll it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, description="device name in points, logs and health")
    host: str
    port: int = Field(default=502, ge=1, le=65535)
    unit_id: int = Field(default=1, ge=0, le=255, description="Modbus unit identifier (slave id)")
    plant_unit_id: str = Field(min_length=1, description="the SCADA unit_id the points carry, e.g. PS01")
    poll_interval_s: float = Field(default=1.0, ge=0.1, description="0.1 s = 10 Hz, the fastest allowed")
    timeout_s: float = Field(default=1.0, gt=0)
    retries: int = Field(default=3, ge=0, le=10)
    retry_delay_s: float = Field(default=1.0, ge=0)
    reconnect_initial_s: float = Field(default=1.0, gt=0)
    reconnect_max_s: float = Field(default=60.0, gt=0)
    max_registers_per_request: int = Field(default=MAX_REGISTERS, ge=1, le=MAX_REGISTERS)
    max_bits_per_request: int = Field(default=MAX_BITS, ge=1, le=MAX_BITS)
    max_hole: int = Field(default=10, ge=0, description="unused registers (or bits) a request may read across")
    heartbeat_s: float = Field(default=60.0, gt=0, description="default heartbeat for points with a deadband")
    registers: list[RegisterPoint] = Field(default_factory=list)
    register_map: Path | None = Field(
        default=None, description="YAML register map; relative paths resolve against context['base_dir'] or cwd"
    )

    @field_validator("register_map")
    @classmethod
    def _resolve_map(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if path is None or path.is_absolute():
            return path
        base = (info.context or {}).get("base_dir")
        return (Path(base) if base else Path.cwd()) / path

    @model_validator(mode="after")
    def _points(self) -> ModbusDeviceConfig:
        if self.register_map is not None:
            if self.registers:
                raise ValueError("give either registers or register_map, not both")
            self.registers = list(load_register_map(self.register_map).registers)
        if not self.registers:
            raise ValueError("no points: give registers or register_map")
        if self.reconnect_max_s < self.reconnect_initial_s:
            raise ValueError("reconnect_max_s must be at least reconnect_initial_s")
        names: set[str] = set()
        keys: dict[tuple[str, str], str] = {}
        for point in self.registers:
            if point.name in names:
                raise ValueError(f"point name {point.name!r} appears twice")
            names.add(point.name)
            limit = self.max_bits_per_request if point.function in BIT_FUNCTIONS else self.max_registers_per_request
            if point.register_count > limit:
                raise ValueError(
                    f"point {point.name!r} needs {point.register_count} registers; a request holds {limit}"
                )
            if point.data_type == "string":
                continue  # strings are device labels, not emitted as points (see ModbusReader)
            key = (self.point_unit_id(point), point.sensor_type or point.name)
            if key in keys:
                raise ValueError(
                    f"points {keys[key]!r} and {point.name!r} both emit unit {key[0]!r} sensor {key[1]!r};"
                    " give one a different sensor_type or plant_unit_id"
                )
            keys[key] = point.name
        return self

    def point_unit_id(self, point: RegisterPoint) -> str:
        """The plant unit a point's values carry (its ``plant_unit_id`` with ``{unit}`` expanded)."""
        if point.plant_unit_id is None:
            return self.plant_unit_id
        return point.plant_unit_id.replace("{unit}", self.plant_unit_id)


def load_register_map(path: str | Path) -> RegisterMap:
    """Read and validate a register map; errors (``ConfigError``) name the file, the line and the field.

    Many devices usually share one map: a file is parsed once per version (path, size, mtime).
    """
    path = Path(path)
    try:
        stat = path.stat()
    except OSError as error:
        raise ConfigError([f"{path}: cannot read register map: {error.strerror or error}"]) from None
    cached = _load_register_map(str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    return cached.model_copy(update={"registers": list(cached.registers)})


@lru_cache(maxsize=64)
def _load_register_map(path: str, _size: int, _mtime_ns: int) -> RegisterMap:
    # Register maps name devices, not secrets: no ${VAR} substitution.
    return load_model(path, RegisterMap, substitute_env=False)


# --------------------------------------------------------------------------------------------------
# Request grouping
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """One read: a function, a start address and a count, covering the points it will decode."""

    function: Function
    address: int
    count: int
    points: tuple[RegisterPoint, ...]

    @property
    def last(self) -> int:
        return self.address + self.count - 1

    def describe(self) -> str:
        """``holding registers 0-37`` — how logs and health name the request."""
        return f"{_FUNCTION_LABEL[self.function]} {self.address}-{self.last}"


def plan_requests(
    points: Iterable[RegisterPoint],
    max_registers: int = MAX_REGISTERS,
    max_hole: int = 10,
    max_bits: int = MAX_BITS,
) -> list[Request]:
    """Group points into as few reads as the limits allow.

    Points of one function, sorted by address, join the current request while the unused registers
    before them are at most ``max_hole`` and the request stays within ``max_registers`` (``max_bits``
    for coils and discrete inputs). Functions are never merged. Greedy extension is optimal here: a
    run of points that fits one request has every shorter run fitting too.
    """
    by_function: dict[str, list[RegisterPoint]] = {}
    for point in points:
        by_function.setdefault(point.function, []).append(point)
    requests: list[Request] = []
    for function in sorted(by_function, key=_FUNCTION_ORDER.__getitem__):
        limit = max_bits if function in BIT_FUNCTIONS else max_registers
        group: list[RegisterPoint] = []
        start = end = 0
        for point in sorted(by_function[function], key=lambda p: (p.address, p.end)):
            if point.register_count > limit:
                raise ValueError(
                    f"point {point.name!r} needs {point.register_count} registers; a request holds {limit}"
                )
            if group and point.address - end <= max_hole and max(end, point.end) - start <= limit:
                group.append(point)
                end = max(end, point.end)
                continue
            if group:
                requests.append(Request(function, start, end - start, tuple(group)))  # type: ignore[arg-type]
            group, start, end = [point], point.address, point.end
        if group:
            requests.append(Request(function, start, end - start, tuple(group)))  # type: ignore[arg-type]
    return requests


# --------------------------------------------------------------------------------------------------
# The reader
# --------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Slot:
    """A point compiled for the hot path, with its deadband state."""

    point: RegisterPoint
    offset: int
    read: Callable[[Sequence[int], int], Any]
    scale: Callable[[int | float], float]
    unit_id: str
    sensor_type: str
    unit: str
    deadband: float | None
    heartbeat_s: float
    is_string: bool
    last_value: float | None = None
    last_quality: str | None = None
    last_emit: float = -math.inf


@dataclass(slots=True)
class _Plan:
    request: Request
    method: str
    slots: list[_Slot]
    label: str
    # Log rate limiting: the reason last logged, when, and failures not logged since.
    failing: str | None = None
    logged_at: float = -math.inf
    suppressed: int = 0


class _Failure(Exception):
    """Why one attempt at a request failed: ``kind`` for health, ``reason`` for the log line."""

    def __init__(self, kind: str, reason: str, *, connection_lost: bool = False, permanent: bool = False) -> None:
        super().__init__(reason)
        self.kind, self.reason = kind, reason
        self.connection_lost, self.permanent = connection_lost, permanent


def _transient(error: BaseException) -> bool:
    """Worth another attempt: a failure of this request that the device may not repeat."""
    return isinstance(error, _Failure) and not error.permanent


@dataclass
class _Stats:
    requests: int = 0
    registers: int = 0
    points: int = 0
    polls: int = 0
    overruns: int = 0
    reconnects: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    last_error: str | None = None
    last_error_at_us: int | None = None
    samples: deque[tuple[float, int, int, int]] = field(default_factory=lambda: deque(maxlen=64))


class ModbusReader:
    """Polls one Modbus TCP device (the collector's ``Reader`` protocol)."""

    def __init__(self, config: ModbusDeviceConfig) -> None:
        self.name = config.name
        self.config = config
        self.requests = plan_requests(
            config.registers, config.max_registers_per_request, config.max_hole, config.max_bits_per_request
        )
        self._plans = [self._compile(request) for request in self.requests]
        self._where = f'modbus device "{config.name}" ({config.host}:{config.port} unit {config.unit_id})'
        self._client: Any = None
        self._ever_connected = False
        self._reconnect = RetryPolicy(
            initial_s=config.reconnect_initial_s, factor=2.0, max_delay_s=config.reconnect_max_s
        ).backoff()
        # Transient failures of one request: ``retries`` more attempts, ``retry_delay_s`` apart.
        delay = config.retry_delay_s
        self._request_retry = RetryPolicy(
            max_attempts=max(1, config.retries), initial_s=delay, factor=1.0, max_delay_s=delay
        )
        self._backoff_s = 0.0
        self._next_connect_at = 0.0
        self._stats = _Stats()
        self.strings: dict[str, str] = {}
        _quiet_pymodbus()

    def _compile(self, request: Request) -> _Plan:
        slots = []
        for point in request.points:
            data_type = point.data_type or "uint16"
            slots.append(
                _Slot(
                    point=point,
                    offset=point.address - request.address,
                    read=_decoder(data_type, point.byte_order, point.length, point.bit, "ascii"),
                    scale=_scaler(point.scale, point.offset),
                    unit_id=self.config.point_unit_id(point),
                    sensor_type=point.sensor_type or point.name,
                    unit=point.unit,
                    deadband=point.deadband,
                    heartbeat_s=point.heartbeat_s or self.config.heartbeat_s,
                    is_string=data_type == "string",
                )
            )
        names = ", ".join(p.name for p in request.points[:4])
        more = f", … {len(request.points)} points" if len(request.points) > 4 else ""
        return _Plan(request, _CLIENT_METHOD[request.function], slots, f"{request.describe()} ({names}{more})")

    # ---------------------------------------------------------------- connection

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def _connect(self) -> bool:
        """One connection attempt; on failure schedules the next one with exponential backoff."""
        from pymodbus.client import AsyncModbusTcpClient

        cfg = self.config
        self._drop_client()
        # pymodbus' own retries and reconnect task are off: this reader owns both, so every failure is
        # counted, logged with its context, and the backoff follows the device's configuration.
        client = AsyncModbusTcpClient(
            cfg.host, port=cfg.port, timeout=cfg.timeout_s, retries=0, reconnect_delay=0, name=cfg.name
        )
        started = time.monotonic()
        ok = await client.connect()
        if ok and client.connected:
            self._client = client
            if self._ever_connected:
                self._stats.reconnects += 1
                log.info("%s: reconnected", self._where)
            self._ever_connected = True
            self._reconnect.reset()
            self._next_connect_at = 0.0
            return True
        client.close()
        self._backoff_s = self._reconnect.next()
        elapsed = time.monotonic() - started
        reason = f"timed out after {cfg.timeout_s:g} s" if elapsed >= cfg.timeout_s * 0.9 else "refused or unreachable"
        self._record("connect_failed", f"connect failed ({reason}); next attempt in {self._backoff_s:g} s")
        log.error("%s: connect failed (%s); next attempt in %g s", self._where, reason, self._backoff_s)
        self._next_connect_at = time.monotonic() + self._backoff_s
        return False

    def _schedule_reconnect(self) -> None:
        """Next connection attempt after the next backoff, which doubles up to reconnect_max_s."""
        self._next_connect_at = time.monotonic() + self._reconnect.next()

    def _drop_client(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def close(self) -> None:
        """Close the connection (the reader can poll again afterwards; it reconnects)."""
        self._drop_client()

    # ---------------------------------------------------------------- polling

    async def _read_once(self, plan: _Plan) -> list[int] | list[bool]:
        """One attempt at one request; raises ``_Failure`` naming the kind of failure."""
        from pymodbus.exceptions import ConnectionException, ModbusException

        request = plan.request
        client = self._client
        if client is None or not client.connected:
            raise _Failure("connection_lost", "connection lost", connection_lost=True)
        try:
            response = await getattr(client, plan.method)(
                request.address, count=request.count, device_id=self.config.unit_id
            )
        except ConnectionException as error:
            raise _Failure("connection_lost", f"connection lost ({error})", connection_lost=True) from None
        except ModbusException as error:
            lost = not client.connected
            kind = "connection_lost" if lost else "timeout"
            text = "no response" if "No response" in str(error) else str(error)
            raise _Failure(kind, f"{text} within {self.config.timeout_s:g} s", connection_lost=lost) from None
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            kind, meaning = _EXCEPTIONS.get(code, ("exception", "unknown exception code"))
            raise _Failure(kind, f"exception 0x{code:02X} {meaning}", permanent=code in _PERMANENT_EXCEPTIONS)
        values = response.bits if request.function in BIT_FUNCTIONS else response.registers
        if len(values) < request.count:
            raise _Failure("short_response", f"asked {request.count}, got {len(values)}")
        return values

    async def _read(self, plan: _Plan) -> list[int] | list[bool]:
        """A request with its retries: transient failures retried, a lost connection re-opened.

        The first attempt is made directly: a healthy poll sends thousands of requests a second, and the
        retry machinery is only worth building once one of them has failed.
        """
        try:
            return await self._read_once(plan)
        except _Failure as failure:
            if not _transient(failure) or self.config.retries == 0:
                raise
            reconnect = failure.connection_lost
        await asyncio.sleep(self.config.retry_delay_s)
        attempts = 1
        try:
            async for attempt in self._request_retry.async_retrying(retry_if=_transient):
                with attempt:
                    if attempts and (reconnect or not self.connected):
                        # A retry over a dropped connection starts with a fresh one (a restarted PLC
                        # comes back within the retries without waiting for the backoff).
                        await self._connect()
                    attempts += 1
                    try:
                        return await self._read_once(plan)
                    except _Failure as failure:
                        reconnect = failure.connection_lost
                        raise
        except _Failure as failure:
            if attempts > 1:
                failure.reason += f" (after {attempts} attempts)"
            raise
        raise AssertionError("unreachable: tenacity re-raises the last failure")

    async def poll_once(self) -> list[Point]:
        """Read every request once; the points that pass their deadband (COMM_FAIL for failed reads)."""
        stats = self._stats
        stats.polls += 1
        out: list[Point] = []
        now = time.monotonic()
        if self._client is not None and not self._client.connected:
            # The device closed the connection between polls (restart, idle timeout, cable).
            self._record("connection_lost", "connection lost between polls")
            log.error("%s: connection lost; reconnecting", self._where)
            self._drop_client()
        if not self.connected and (now < self._next_connect_at or not await self._connect()):
            ts = now_micros()
            for plan in self._plans:
                self._fail(plan, ts, time.monotonic(), out)
            self._sample()
            return out
        lost = False
        for plan in self._plans:
            if lost:
                self._fail(plan, now_micros(), time.monotonic(), out)
                self._log_failure(plan, "connection_lost", "not attempted: connection lost earlier in this poll")
                continue
            try:
                values = await self._read(plan)
            except _Failure as failure:
                self._record(failure.kind, f"{plan.request.describe()}: {failure.reason}")
                self._log_failure(plan, failure.kind, failure.reason)
                self._fail(plan, now_micros(), time.monotonic(), out)
                if failure.connection_lost or not self.connected:
                    lost = True
                    self._drop_client()
                    if self._next_connect_at <= time.monotonic():  # a failed reconnect in the retries set it
                        self._schedule_reconnect()
                continue
            ts = now_micros()  # the response's arrival: source and received time alike
            stats.requests += 1
            stats.registers += plan.request.count
            if plan.failing is not None:
                log.info("%s: %s readable again", self._where, plan.request.describe())
                plan.failing, plan.suppressed = None, 0
            self._decode(plan, values, ts, time.monotonic(), out)
        stats.points += len(out)
        self._sample()
        return out

    def _decode(self, plan: _Plan, values: Sequence[Any], ts: int, mono: float, out: list[Point]) -> None:
        device = self.name
        for slot in plan.slots:
            raw = slot.read(values, slot.offset)
            if slot.is_string:
                self.strings[slot.point.name] = raw
                continue
            quality = GOOD
            if raw is True or raw is False:
                value: float | None = 1.0 if raw else 0.0
            else:
                value = slot.scale(raw)
                if not math.isfinite(value):
                    # NaN/inf is how many devices flag a failed sensor: keep the point, mark it BAD.
                    value, quality = None, BAD
                    self._stats.errors["bad_value"] += 1
            if slot.deadband is not None and quality == slot.last_quality and mono - slot.last_emit < slot.heartbeat_s:
                last = slot.last_value
                if value is None or last is None or abs(value - last) <= slot.deadband:
                    continue
            slot.last_value, slot.last_quality, slot.last_emit = value, quality, mono
            out.append(Point("modbus", device, slot.unit_id, slot.sensor_type, value, slot.unit, quality, ts, ts))

    def _fail(self, plan: _Plan, ts: int, mono: float, out: list[Point]) -> None:
        """COMM_FAIL for a request's points: on entering the state, then once a heartbeat while it lasts."""
        device = self.name
        for slot in plan.slots:
            if slot.is_string:
                continue
            if slot.last_quality == COMM_FAIL and mono - slot.last_emit < slot.heartbeat_s:
                continue
            slot.last_value, slot.last_quality, slot.last_emit = None, COMM_FAIL, mono
            out.append(Point("modbus", device, slot.unit_id, slot.sensor_type, None, slot.unit, COMM_FAIL, ts, ts))

    def _record(self, kind: str, message: str) -> None:
        self._stats.errors[kind] += 1
        self._stats.last_error = message
        self._stats.last_error_at_us = now_micros()

    def _log_failure(self, plan: _Plan, kind: str, reason: str) -> None:
        """One error line per failed request; a request failing the same way repeats at most once a minute."""
        now = time.monotonic()
        if plan.failing == kind and now - plan.logged_at < _REPEAT_LOG_S:
            plan.suppressed += 1
            return
        again = f" ({plan.suppressed} more failures since last report)" if plan.suppressed else ""
        log.error("%s: %s: %s%s", self._where, plan.label, reason, again)
        plan.failing, plan.logged_at, plan.suppressed = kind, now, 0

    def _sample(self) -> None:
        """Keep about one counter sample a second for the rates in ``health``."""
        stats = self._stats
        now = time.monotonic()
        if not stats.samples or now - stats.samples[-1][0] >= 1.0:
            stats.samples.append((now, stats.requests, stats.registers, stats.points))
        while len(stats.samples) > 2 and now - stats.samples[1][0] >= _RATE_WINDOW_S:
            stats.samples.popleft()

    async def run(self, emit: Emit) -> None:
        """Poll every ``poll_interval_s`` until cancelled, handing each poll's points to ``emit``.

        A poll that takes longer than the interval starts the next one at once and counts an overrun
        (ticks are skipped, never queued up).
        """
        interval = self.config.poll_interval_s
        next_tick = time.monotonic()
        task = asyncio.current_task()
        try:
            while True:
                points = await self.poll_once()
                if points:
                    await emit(points)
                if task is not None and task.cancelling():
                    # pymodbus awaits each answer with asyncio.wait_for, which on Python 3.11 swallows a
                    # cancellation that lands as the answer arrives; the request stays on the task, so
                    # honour it here (after emitting what was read) or shutdown would wait forever.
                    raise asyncio.CancelledError
                next_tick += interval
                delay = next_tick - time.monotonic()
                if delay < 0:
                    self._stats.overruns += 1
                    next_tick = time.monotonic()
                    delay = 0.0
                await asyncio.sleep(delay)
        finally:
            self._drop_client()

    def health(self) -> dict[str, Any]:
        """Connected or not, request/register/point rates over the last ~10 s, errors by kind, reconnects."""
        stats = self._stats
        rates = {"requests_per_s": 0.0, "registers_per_s": 0.0, "points_per_s": 0.0}
        if stats.samples:
            t0, req0, reg0, pts0 = stats.samples[0]
            span = time.monotonic() - t0
            if span > 0:
                rates = {
                    "requests_per_s": round((stats.requests - req0) / span, 1),
                    "registers_per_s": round((stats.registers - reg0) / span, 1),
                    "points_per_s": round((stats.points - pts0) / span, 1),
                }
        return {
            "protocol": "modbus",
            "name": self.name,
            "endpoint": f"{self.config.host}:{self.config.port}",
            "unit_id": self.config.unit_id,
            "connected": self.connected,
            "points": sum(not s.is_string for p in self._plans for s in p.slots),
            "requests_per_poll": len(self._plans),
            **rates,
            "polls": stats.polls,
            "overruns": stats.overruns,
            "requests": stats.requests,
            "registers": stats.registers,
            "points_emitted": stats.points,
            "errors": dict(stats.errors),
            "reconnects": stats.reconnects,
            "last_error": stats.last_error,
            "last_error_at_us": stats.last_error_at_us,
            "failing_requests": [p.request.describe() for p in self._plans if p.failing],
            "strings": dict(self.strings),
        }


def _quiet_pymodbus() -> None:
    """Silence pymodbus' own log lines unless someone configured its logger on purpose.

    The reader reports every failure once, naming device, registers and reason; pymodbus' lines
    ("No response received after 0 retries") would repeat it without saying which device.
    """
    logger = logging.getLogger("pymodbus")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.CRITICAL)


def build_reader(config: ModbusDeviceConfig) -> ModbusReader:
    """The reader the collector service runs for one configured Modbus TCP device."""
    return ModbusReader(config)
