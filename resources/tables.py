"""Table contracts and the one type registry that conform, the lake and the catalog share.

A ``LakeTable`` declares its columns once; from that declaration the raw rows of a source are typed
(``quality/conform.py``), the Parquet files are written (``resources/lake.py``), the DuckDB views are
typed and commented (``resources/catalog.py``) and the asset's column list is shown in the Dagster UI.
Each of those asks the registry below for its view of a column's type, so a type added here (a decimal,
a geometry, a list of dates) works everywhere at once, and a type that is not here fails at declaration
time rather than in the middle of a run.

| polars type       | parsed from (conform)                                 | DuckDB          | Dagster UI         |
|-------------------|-------------------------------------------------------|-----------------|--------------------|
| String            | text                                                  | VARCHAR         | string             |
| Int32, Int64      | whole numbers or their text, range-checked            | INTEGER, BIGINT | int32, int64       |
| Float32, Float64  | finite numbers or their text, range-checked           | FLOAT, DOUBLE   | float32, float64   |
| Boolean           | true/false or their text                              | BOOLEAN         | boolean            |
| Date              | ``YYYY-MM-DD``                                        | DATE            | date               |
| Datetime(us, UTC) | ISO 8601 with an offset, years 0001–9999              | TIMESTAMPTZ     | timestamp[us, UTC] |
| Decimal(p, s)     | text or numbers, exactly (never via a float), p and s | DECIMAL(p, s)   | decimal(p, s)      |
| Binary            | hex (``0x``/``\\x`` optional) or base64, per column   | BLOB            | binary or geometry |
| List(inner)       | a JSON array of any of the above                      | inner[]         | list<inner>        |

``is_safe_identifier`` is the one rule for identifiers a source sends (DMA ids, meter ids, plant codes):
they end up in URLs and file names, so ``.``, ``..``, separators, URL syntax and blanks are refused.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Context, Decimal, InvalidOperation
from typing import Any, Literal

import dagster as dg
import polars as pl

from resources.identifiers import identifier_problem, is_safe_identifier


@dataclass(frozen=True)
class Column:
    """One column of a lake table: its name, type and what it means to a person reading it.

    ``identifier`` marks a value a source sends that later goes into a request or a file name (a DMA
    id): rows whose value fails ``is_safe_identifier`` are rejected. ``geometry`` marks a Binary column
    holding WKB, in ``crs``, for GeoParquet and DuckDB spatial (``ST_GeomFromWKB``) later.
    ``binary_encoding`` says how a Binary column arrives in JSON.
    """

    name: str
    dtype: pl.DataType
    description: str
    nullable: bool = True
    identifier: bool = False
    geometry: bool = False
    crs: str | None = None
    binary_encoding: Literal["hex", "base64"] = "hex"

    def __post_init__(self) -> None:
        lake_type(self.dtype)  # an unregistered type fails where the table is declared
        if self.geometry and self.dtype != pl.Binary:
            raise TypeError(f"column {self.name}: a geometry column holds WKB, so its type is Binary, not {self.dtype}")
        if self.identifier and self.dtype != pl.String:
            raise TypeError(f"column {self.name}: an identifier column is String, not {self.dtype}")

    @property
    def dagster_type(self) -> str:
        if self.geometry:
            return f"geometry(WKB{', ' + self.crs if self.crs else ''})"
        return lake_type(self.dtype).dagster

    @property
    def duckdb_type(self) -> str:
        return lake_type(self.dtype).duckdb


@dataclass(frozen=True)
class LakeTable:
    """A table of the lake: where it lives, its columns, its key and how it is cut into files.

    ``time_column`` is the column whose value says which time window (partition) a row belongs to;
    ``static_column`` is the column whose value names a static partition (a plant, a region), for tables
    keyed by something other than time (or by both). The same declaration types incoming rows, writes
    the files, documents the asset in the Dagster UI and comments the analyst catalog.
    """

    layer: str
    name: str
    description: str
    columns: tuple[Column, ...]
    key: tuple[str, ...] = ()
    time_column: str | None = None
    static_column: str | None = None

    def __post_init__(self) -> None:
        for part in (self.layer, self.name):
            if not is_safe_identifier(part) or "=" in part:
                raise ValueError(f"lake table {self.layer}.{self.name}: {part!r} cannot be a folder name")
        for name in (*self.key, self.time_column, self.static_column):
            if name is not None and name not in self.column_names:
                raise ValueError(f"lake table {self.layer}.{self.name} names {name!r}, which is not a column")

    @property
    def schema(self) -> pl.Schema:
        return pl.Schema({c.name: c.dtype for c in self.columns})

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    def column(self, name: str) -> Column:
        for candidate in self.columns:
            if candidate.name == name:
                return candidate
        raise KeyError(f"table {self.layer}.{self.name} has no column {name!r}; it has {self.column_names}")

    def empty(self) -> pl.DataFrame:
        return pl.DataFrame(schema=self.schema)

    def dagster_column_schema(self) -> dg.TableSchema:
        """The column list the Dagster UI shows on the asset's page."""
        return dg.TableSchema(
            columns=[
                dg.TableColumn(
                    name=c.name,
                    type=c.dagster_type,
                    description=c.description,
                    constraints=dg.TableColumnConstraints(nullable=c.nullable),
                )
                for c in self.columns
            ]
        )

    def with_added_columns(self, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` read from files written before a nullable column was added, with that column empty.

        Reads only: a writer that lacks a column is still refused by ``conform``.
        """
        added = [c for c in self.columns if c.name not in frame.columns and c.nullable]
        return frame.with_columns(pl.lit(None, dtype=c.dtype).alias(c.name) for c in added) if added else frame

    def conform(self, frame: pl.DataFrame) -> pl.DataFrame:
        """Columns in declared order and type, rows in key order, so equal data gives equal files."""
        missing = [c for c in self.column_names if c not in frame.columns]
        if missing:
            raise ValueError(
                f"frame for {self.layer}.{self.name} lacks columns {missing}; expected {self.column_names}"
            )
        conformed = frame.select([pl.col(c.name).cast(c.dtype) for c in self.columns])
        order = list(self.key) or self.column_names
        return conformed.sort(order, nulls_last=True, maintain_order=True)


# -- the registry ---------------------------------------------------------------------------------

Parse = Callable[[Any, Column], Any]
"""Turns one raw non-null value into the Python value polars stores, or returns ``Bad``."""


class Bad:
    """A value that failed to parse, carrying why."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


@dataclass(frozen=True)
class LakeType:
    """What one polars type is called in DuckDB and the Dagster UI, and how a raw value becomes one."""

    polars: pl.DataType
    duckdb: str
    dagster: str
    parse: Parse


_INT_RANGE = {pl.Int32: (-(2**31), 2**31 - 1), pl.Int64: (-(2**63), 2**63 - 1)}
_FLOAT32_MAX = 3.4028234663852886e38
# Python's datetime is what polars hands back to any code that looks at a value: beyond it, a step crashes.
# Wide enough that quantizing any text a source sends is exact; precision is checked separately.
_WIDE = Context(prec=200, Emax=10**6, Emin=-(10**6))
TIMESTAMP_MIN = datetime(1, 1, 1, tzinfo=UTC)
TIMESTAMP_MAX = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def lake_type(dtype: pl.DataType) -> LakeType:
    """The registry entry for ``dtype``; ``TypeError`` for a type the lake does not carry."""
    if isinstance(dtype, pl.Datetime):
        if dtype.time_zone != "UTC":
            raise TypeError(f"lake timestamps are stored in UTC; got {dtype}")
        return LakeType(dtype, "TIMESTAMPTZ", f"timestamp[{dtype.time_unit}, UTC]", _parse_timestamp)
    if isinstance(dtype, pl.Decimal):
        precision = dtype.precision if dtype.precision is not None else 38
        return LakeType(
            dtype,
            f"DECIMAL({precision}, {dtype.scale})",
            f"decimal({precision}, {dtype.scale})",
            _parse_decimal,
        )
    if isinstance(dtype, pl.List):
        inner = lake_type(dtype.inner)
        return LakeType(dtype, f"{inner.duckdb}[]", f"list<{inner.dagster}>", _parse_list)
    try:
        duckdb, dagster, parse = _SIMPLE[type(dtype)]
    except KeyError:
        raise TypeError(f"the lake has no type {dtype}; registered: {', '.join(_REGISTERED)}") from None
    return LakeType(dtype, duckdb, dagster, parse)


def parse_value(value: Any, column: Column, dtype: pl.DataType | None = None) -> Any:
    """One raw non-null value as the Python value ``dtype`` (default the column's) stores, or ``Bad``."""
    return lake_type(dtype if dtype is not None else column.dtype).parse(value, _as(column, dtype))


def _as(column: Column, dtype: pl.DataType | None) -> Column:
    if dtype is None or dtype == column.dtype:
        return column
    return Column(column.name, dtype, column.description, binary_encoding=column.binary_encoding)


def _parse_float(value: Any, column: Column) -> float | Bad:
    kind = type(value)
    if kind is float:
        number = value
    elif kind is int:
        number = float(value) if abs(value) < 2**1024 else math.inf
    elif kind is str:
        try:
            number = float(value)
        except ValueError:
            return Bad(f"expected a number, got {_clip(value)!r}")
    else:
        return Bad(f"expected a number, got {kind.__name__} {_clip(repr(value))}")
    if not math.isfinite(number):
        return Bad(
            f"expected a finite number, got {_clip(str(value))!r}"
            if kind is str
            else f"expected a finite number, got {value!r}"
        )
    if column.dtype == pl.Float32 and abs(number) > _FLOAT32_MAX:
        return Bad(f"{_clip(str(value))} is outside the Float32 range ±{_FLOAT32_MAX:.4g}")
    return number


def _parse_int(value: Any, column: Column) -> int | Bad:
    kind = type(value)
    if kind is int:
        number = value
    elif (kind is float and value.is_integer()) or (kind is str and re.fullmatch(r"[+-]?\d+", value.strip())):
        number = int(value)
    else:
        return Bad(f"expected a whole number, got {_clip(repr(value))}")
    low, high = _INT_RANGE[type(column.dtype)]
    if not low <= number <= high:
        return Bad(f"{_clip(str(number))} is outside the {column.dtype} range [{low}, {high}]")
    return number


def _parse_string(value: Any, column: Column) -> str | Bad:
    if type(value) is not str:
        return Bad(f"expected text, got {type(value).__name__} {_clip(repr(value))}")
    if column.identifier:
        problem = identifier_problem(value)
        if problem:
            return Bad(f"identifier {_clip(value)!r} {problem}")
    return value


def _parse_bool(value: Any, column: Column) -> bool | Bad:
    if type(value) is bool:
        return value
    if isinstance(value, str) and value.lower() in {"true", "false"}:
        return value.lower() == "true"
    return Bad(f"expected true or false, got {_clip(repr(value))}")


def _parse_date(value: Any, column: Column) -> date | Bad:
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    return Bad(f"expected a date YYYY-MM-DD, got {_clip(repr(value))}")


def _parse_timestamp(value: Any, column: Column) -> datetime | Bad:
    """One timestamp, for list elements; whole columns go through conform's vectorised path."""
    if not isinstance(value, str):
        return Bad(f"expected an ISO 8601 timestamp, got {type(value).__name__} {_clip(repr(value))}")
    try:
        stamp = datetime.fromisoformat(value)
    except ValueError:
        return Bad(f"expected an ISO 8601 timestamp, got {_clip(value)!r}")
    if stamp.tzinfo is None:
        return Bad(f"timestamp {_clip(value)!r} has no UTC offset; expected e.g. ...Z")
    try:
        return stamp.astimezone(UTC)
    except OverflowError:
        return Bad(timestamp_range_reason(value))


def timestamp_range_reason(value: str) -> str:
    return f"timestamp {_clip(value)!r} is outside the representable range [0001-01-01T00:00:00Z, 9999-12-31T23:59:59Z]"


def _parse_decimal(value: Any, column: Column) -> Decimal | Bad:
    dtype = column.dtype
    kind = type(value)
    if kind is bool or kind not in (str, int, float):
        return Bad(f"expected a decimal number, got {kind.__name__} {_clip(repr(value))}")
    # A float's repr is the shortest text that reads back as it, i.e. what the JSON said: no binary rounding.
    text = value.strip() if kind is str else repr(value)
    try:
        number = Decimal(text)
    except InvalidOperation:
        return Bad(f"expected a decimal number, got {_clip(text)!r}")
    if not number.is_finite():
        return Bad(f"expected a finite decimal number, got {_clip(text)!r}")
    precision = dtype.precision if dtype.precision is not None else 38
    scale = dtype.scale
    try:
        quantized = number.quantize(Decimal(1).scaleb(-scale), context=_WIDE)
    except InvalidOperation:
        return Bad(f"{_clip(text)} needs more than {precision} digits (decimal({precision}, {scale}))")
    if quantized != number:
        return Bad(f"{_clip(text)} has more than {scale} decimal places (decimal({precision}, {scale}))")
    if len(quantized.as_tuple().digits) > precision:
        return Bad(f"{_clip(text)} needs more than {precision} digits (decimal({precision}, {scale}))")
    return quantized


def _parse_binary(value: Any, column: Column) -> bytes | Bad:
    if isinstance(value, bytes):
        data = value
    elif not isinstance(value, str):
        return Bad(f"expected {column.binary_encoding} text, got {type(value).__name__} {_clip(repr(value))}")
    elif column.binary_encoding == "hex":
        text = value[2:] if value[:2] in ("0x", "0X", "\\x") else value
        try:
            data = bytes.fromhex(text)
        except ValueError:
            return Bad(f"expected hexadecimal bytes, got {_clip(value)!r}")
    else:
        try:
            data = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            return Bad(f"expected base64 bytes, got {_clip(value)!r}")
    if column.geometry and (len(data) < 5 or data[0] not in (0, 1)):
        return Bad(f"expected WKB geometry (byte order 0 or 1, then a type), got {_clip(data.hex())!r}")
    return data


def _parse_list(value: Any, column: Column) -> list[Any] | Bad:
    if not isinstance(value, list):
        return Bad(f"expected a list, got {type(value).__name__} {_clip(repr(value))}")
    inner = column.dtype.inner  # type: ignore[attr-defined]
    parsed = []
    for position, element in enumerate(value):
        if element is None:
            parsed.append(None)
            continue
        item = parse_value(element, column, inner)
        if isinstance(item, Bad):
            return Bad(f"element {position}: {item.reason}")
        parsed.append(item)
    return parsed


_SIMPLE: dict[type, tuple[str, str, Parse]] = {
    pl.String: ("VARCHAR", "string", _parse_string),
    pl.Int32: ("INTEGER", "int32", _parse_int),
    pl.Int64: ("BIGINT", "int64", _parse_int),
    pl.Float32: ("FLOAT", "float32", _parse_float),
    pl.Float64: ("DOUBLE", "float64", _parse_float),
    pl.Boolean: ("BOOLEAN", "boolean", _parse_bool),
    pl.Date: ("DATE", "date", _parse_date),
    pl.Binary: ("BLOB", "binary", _parse_binary),
}
_REGISTERED = [t.__name__ for t in _SIMPLE] + ["Datetime(UTC)", "Decimal(p, s)", "List(inner)"]


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
