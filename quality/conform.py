"""Typing raw source rows into a lake table, with every row that cannot be typed kept as a reject.

A source answers with JSON or XML whose values are whatever it chose to send. This module turns those
rows into a typed frame for one ``LakeTable`` and sets aside, with the reason and the raw payload, each
row that is missing a required field, carries a value of the wrong type, falls outside the requested
window or repeats a key. Nothing is dropped silently: ``received == written + rejected`` always holds.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import polars as pl

from resources.lake import Column, LakeTable

REJECT_COLUMNS = (
    Column("source", pl.String(), "External system the row came from, e.g. dmama.", nullable=False),
    Column("table_name", pl.String(), "Lake table the row was meant for.", nullable=False),
    Column("partition_key", pl.String(), "Dagster partition (or range) being loaded.", nullable=False),
    Column("row_number", pl.Int64(), "Position of the row in what the source sent (0-based).", nullable=False),
    Column("field", pl.String(), "The field that failed, or the key columns for a duplicate."),
    Column("reason", pl.String(), "Why the row was rejected, in words.", nullable=False),
    Column("raw_payload", pl.String(), "The row exactly as received, as JSON.", nullable=False),
    Column(
        "partition_start",
        pl.Datetime("us", "UTC"),
        "Hour (UTC) the rejected row belongs to (its own, or the start of the window asked for); "
        "empty for whole-table loads.",
    ),
)


def rejects_table(table: LakeTable) -> LakeTable:
    """The rejects table kept beside ``table``: same name, in the ``rejects`` layer."""
    return LakeTable(
        layer="rejects",
        name=table.name,
        description=f"Rows sent for {table.layer}.{table.name} that could not be typed, with the reason.",
        columns=REJECT_COLUMNS,
        key=("partition_start", "partition_key", "row_number"),
        time_column="partition_start" if table.time_column else None,
    )


_OFFSET = re.compile(r"(Z|z|[+-]\d{2}:?\d{2})$")


class _Bad:
    """A value that failed to parse, carrying why."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


@dataclass(frozen=True)
class Conformed:
    """The typed rows and the rejects of one load, with the counts that reconcile them."""

    frame: pl.DataFrame
    rejects: pl.DataFrame
    received: int

    @property
    def written(self) -> int:
        return self.frame.height

    @property
    def rejected(self) -> int:
        return self.rejects.height

    def reasons(self) -> dict[str, int]:
        """Reject counts by field and reason class, for the materialization's metadata."""
        if self.rejected == 0:
            return {}
        counts = self.rejects.group_by("field").len().sort("field")
        return {str(f): int(n) for f, n in counts.iter_rows()}


def conform(
    rows: Sequence[dict[str, Any]],
    table: LakeTable,
    *,
    source: str,
    partition_key: str,
    window: tuple[datetime, datetime] | None = None,
) -> Conformed:
    """Type ``rows`` into ``table``; return the typed frame and the rejects.

    ``window`` (half-open, UTC) rejects rows whose time column falls outside what was asked for, which
    catches a source answering for the wrong range or with a skewed clock.
    """
    received = len(rows)
    bad: dict[int, tuple[str, str]] = {}
    columns: dict[str, pl.Series] = {}
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            bad.setdefault(index, ("", f"expected an object, got {type(row).__name__}"))
    for column in table.columns:
        raw = [row.get(column.name) if isinstance(row, dict) else None for row in rows]
        series, failures = _parse_column(column, raw)
        columns[column.name] = series
        for index, reason in failures:
            bad.setdefault(index, (column.name, reason))

    frame = pl.DataFrame(columns).with_row_index("_row")
    if window is not None and table.time_column is not None:
        start, end = window
        outside = frame.filter(
            pl.col(table.time_column).is_not_null()
            & ((pl.col(table.time_column) < start) | (pl.col(table.time_column) >= end))
        )
        for index, value in zip(outside["_row"], outside[table.time_column], strict=True):
            bad.setdefault(
                index,
                (
                    table.time_column,
                    f"{value:%Y-%m-%dT%H:%M:%S}Z is outside the requested window "
                    f"[{start:%Y-%m-%dT%H:%M}Z, {end:%Y-%m-%dT%H:%M}Z)",
                ),
            )

    good = frame.filter(~pl.col("_row").is_in(list(bad))) if bad else frame
    if table.key:
        # Keep one row per key, the same one whatever order the source sent them in, so a re-run
        # of a partition writes the same bytes.
        ordered = good.sort([*table.key, *[c for c in table.column_names if c not in table.key], "_row"])
        repeated = ordered.filter(pl.struct(list(table.key)).is_first_distinct().not_())
        key_name = ",".join(table.key)
        for index in repeated["_row"]:
            bad[index] = (key_name, f"duplicate of another row with the same ({key_name})")
        good = ordered.filter(pl.struct(list(table.key)).is_first_distinct())

    rejects = pl.DataFrame(
        {
            "source": [source] * len(bad),
            "table_name": [table.name] * len(bad),
            "partition_key": [partition_key] * len(bad),
            "row_number": sorted(bad),
            "field": [bad[i][0] for i in sorted(bad)],
            "reason": [bad[i][1] for i in sorted(bad)],
            "raw_payload": [_as_json(rows[i]) for i in sorted(bad)],
            "partition_start": [_filed_under(rows[i], table, window) for i in sorted(bad)],
        },
        schema=rejects_table(table).schema,
    )
    return Conformed(frame=table.conform(good.drop("_row")), rejects=rejects, received=received)


def _parse_column(column: Column, raw: list[Any]) -> tuple[pl.Series, list[tuple[int, str]]]:
    dtype = column.dtype
    if isinstance(dtype, pl.Datetime):
        return _parse_timestamps(column, raw)
    parse = _PARSERS.get(type(dtype))
    if parse is None:
        if isinstance(dtype, pl.List):
            parse = _parse_string_list
        else:
            raise TypeError(f"no parser for column {column.name} of type {dtype}")
    values: list[Any] = []
    failures: list[tuple[int, str]] = []
    for index, value in enumerate(raw):
        if value is None:
            if not column.nullable:
                failures.append((index, "required field is missing or null"))
            values.append(None)
            continue
        parsed = parse(value)
        if isinstance(parsed, _Bad):
            failures.append((index, parsed.reason))
            values.append(None)
        else:
            values.append(parsed)
    return pl.Series(column.name, values, dtype=dtype), failures


def _parse_timestamps(column: Column, raw: list[Any]) -> tuple[pl.Series, list[tuple[int, str]]]:
    dtype = column.dtype
    text = pl.Series(column.name, [v if isinstance(v, str) else None for v in raw], dtype=pl.String)
    parsed = text.str.to_datetime(time_unit="us", time_zone="UTC", strict=False)
    has_offset = text.str.contains(_OFFSET.pattern)
    failures = []
    for index in (parsed.is_null() | ~has_offset.fill_null(True)).arg_true():
        value = raw[index]
        if value is None:
            if not column.nullable:
                failures.append((index, "required field is missing or null"))
        elif not isinstance(value, str):
            failures.append((index, f"expected an ISO 8601 timestamp, got {type(value).__name__} {value!r}"))
        elif not _OFFSET.search(value) and parsed[index] is None and _looks_like_timestamp(value):
            failures.append((index, f"timestamp {_clip(value)!r} has no UTC offset; expected e.g. ...Z"))
        elif parsed[index] is None:
            failures.append((index, f"expected an ISO 8601 timestamp, got {_clip(value)!r}"))
        else:
            failures.append((index, f"timestamp {_clip(value)!r} has no UTC offset; expected e.g. ...Z"))
    if failures:
        failed = [i for i, _ in failures]
        parsed = parsed.scatter(failed, None)
    return parsed.cast(dtype).alias(column.name), failures


def _looks_like_timestamp(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _parse_float(value: Any) -> float | _Bad:
    kind = type(value)
    if kind is float:
        return value if math.isfinite(value) else _Bad(f"expected a finite number, got {value!r}")
    if kind is int:
        return float(value)
    if kind is str:
        try:
            number = float(value)
        except ValueError:
            return _Bad(f"expected a number, got {_clip(value)!r}")
        return number if math.isfinite(number) else _Bad(f"expected a finite number, got {_clip(value)!r}")
    return _Bad(f"expected a number, got {kind.__name__} {_clip(repr(value))}")


def _parse_int(value: Any) -> int | _Bad:
    kind = type(value)
    if kind is int:
        return value
    if kind is float and value.is_integer():
        return int(value)
    if kind is str and re.fullmatch(r"[+-]?\d+", value.strip()):
        return int(value)
    return _Bad(f"expected a whole number, got {_clip(repr(value))}")


def _parse_string(value: Any) -> str | _Bad:
    if type(value) is str:
        return value
    return _Bad(f"expected text, got {type(value).__name__} {_clip(repr(value))}")


def _parse_bool(value: Any) -> bool | _Bad:
    if type(value) is bool:
        return value
    if isinstance(value, str) and value.lower() in {"true", "false"}:
        return value.lower() == "true"
    return _Bad(f"expected true or false, got {_clip(repr(value))}")


def _parse_date(value: Any) -> date | _Bad:
    if isinstance(value, str):
        try:
            return date.fromisoformat(value)
        except ValueError:
            pass
    return _Bad(f"expected a date YYYY-MM-DD, got {_clip(repr(value))}")


def _parse_string_list(value: Any) -> list[str] | _Bad:
    if isinstance(value, list) and all(type(v) is str for v in value):
        return value
    return _Bad(f"expected a list of text, got {_clip(repr(value))}")


_PARSERS: dict[type, Callable[[Any], Any]] = {
    pl.Float64: _parse_float,
    pl.Float32: _parse_float,
    pl.Int64: _parse_int,
    pl.Int32: _parse_int,
    pl.String: _parse_string,
    pl.Boolean: _parse_bool,
    pl.Date: _parse_date,
}


def _filed_under(row: Any, table: LakeTable, window: tuple[datetime, datetime] | None) -> datetime | None:
    """The hour a reject belongs to: its own timestamp's hour when readable and in the window, else
    the window's start, so re-running that partition replaces it."""
    if window is None or table.time_column is None:
        return None
    start, end = window
    raw = row.get(table.time_column) if isinstance(row, dict) else None
    if isinstance(raw, str):
        try:
            stamp = datetime.fromisoformat(raw.replace("z", "Z"))
        except ValueError:
            stamp = None
        if stamp is not None and stamp.tzinfo is not None:
            hour = stamp.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
            if start <= hour < end:
                return hour
    return start


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _as_json(row: Any) -> str:
    return json.dumps(row, sort_keys=True, default=str, ensure_ascii=False)
