"""Typing raw source rows into a lake table, with every row that cannot be typed kept as a reject.

A source answers with JSON or XML whose values are whatever it chose to send. This module turns those
rows into a typed frame for one ``LakeTable`` and sets aside, with the reason and the raw payload, each
row that is missing a required field, carries a value of the wrong type, falls outside the requested
window or repeats a key. Nothing is dropped silently: ``received == written + rejected`` always holds.

Every value is parsed by the type registry in ``resources/tables.py`` (decimals exactly, binary from hex
or base64, lists of any registered type, integers and timestamps range-checked), so a value the lake
cannot represent becomes a reject naming the field, the value and the range rather than a crash, and a
column declared ``identifier=True`` rejects ids that could not safely go into a URL or a file name.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import polars as pl

from resources.identifiers import IDENTIFIER_MAX, UNSAFE_IDENTIFIER_PATTERN
from resources.tables import TIMESTAMP_MAX, TIMESTAMP_MIN, Bad, Column, LakeTable, lake_type, timestamp_range_reason

if TYPE_CHECKING:
    import dagster as dg

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
        "Start (UTC) of the partition the rejected row is filed under: the partition holding its own "
        "time when readable and inside the load, else the start of what was asked for; empty for "
        "whole-table loads.",
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
    partitions: Sequence[dg.TimeWindow] | None = None,
) -> Conformed:
    """Type ``rows`` into ``table``; return the typed frame and the rejects.

    ``window`` (half-open, UTC) rejects rows whose time column falls outside what was asked for, which
    catches a source answering for the wrong range or with a skewed clock. ``partitions`` are the time
    windows being loaded (any length); each reject is filed under the one holding its own time, so it is
    replaced when that partition is re-run. Without them a reject is filed under its hour, as the first
    hourly lake did.
    """
    if window is None and partitions:
        window = (min(p.start for p in partitions), max(p.end for p in partitions))
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
            "partition_start": [_filed_under(rows[i], table, window, partitions) for i in sorted(bad)],
        },
        schema=rejects_table(table).schema,
    )
    return Conformed(frame=table.conform(good.drop("_row")), rejects=rejects, received=received)


def _parse_column(column: Column, raw: list[Any]) -> tuple[pl.Series, list[tuple[int, str]]]:
    dtype = column.dtype
    if isinstance(dtype, pl.Datetime):
        return _parse_timestamps(column, raw)
    fast = _clean_column(column, raw)
    if fast is not None:
        return fast, []
    parse = lake_type(dtype).parse
    values: list[Any] = []
    failures: list[tuple[int, str]] = []
    for index, value in enumerate(raw):
        if value is None:
            if not column.nullable:
                failures.append((index, "required field is missing or null"))
            values.append(None)
            continue
        parsed = parse(value, column)
        if isinstance(parsed, Bad):
            failures.append((index, parsed.reason))
            values.append(None)
        else:
            values.append(parsed)
    return pl.Series(column.name, values, dtype=dtype), failures


# Python types whose values polars takes as they are, for the columns the fast path handles.
_CLEAN_TYPES = {
    pl.Float64: frozenset({float, int, type(None)}),
    pl.Float32: frozenset({float, int, type(None)}),
    pl.Int64: frozenset({int, type(None)}),
    pl.Int32: frozenset({int, type(None)}),
    pl.String: frozenset({str, type(None)}),
}
_INT_LIMITS = {pl.Int64: 2**63, pl.Int32: 2**31}
_FLOAT_LIMITS = {pl.Float64: 1.7976931348623157e308, pl.Float32: 3.4028234663852886e38}


def _clean_column(column: Column, raw: list[Any]) -> pl.Series | None:
    """The column typed in one vectorized step when every value is already clean, else None.

    Most answers are clean: JSON numbers for numbers, text for text. Only when a value needs a look of its
    own (a string for a number, a bool, null in a required field, a non-finite or out-of-range number, an
    unsafe identifier) does the caller fall back to the per-value parsers, which also word the reasons.
    The two agree on every value the fast path accepts.
    """
    dtype = column.dtype
    allowed = _CLEAN_TYPES.get(type(dtype))
    if allowed is None or not set(map(type, raw)) <= allowed:
        return None
    if dtype in _INT_LIMITS:
        limit = _INT_LIMITS[type(dtype)]
        if any(not -limit <= v < limit for v in raw if v is not None):
            return None
    try:
        series = pl.Series(column.name, raw, dtype=dtype, strict=True)
    except (TypeError, OverflowError, pl.exceptions.PolarsError):
        return None
    if not column.nullable and series.null_count():
        return None
    if dtype in _FLOAT_LIMITS and series.len() > series.null_count():
        finite = series.drop_nulls()
        if not finite.is_finite().all() or finite.abs().max() > _FLOAT_LIMITS[type(dtype)]:
            return None
    if column.identifier:
        text = series.drop_nulls()
        unsafe = (
            text.str.contains(UNSAFE_IDENTIFIER_PATTERN)
            | text.is_in([".", ".."])
            | (text.str.len_chars() > IDENTIFIER_MAX)
            | (text.str.len_chars() == 0)
        )
        if unsafe.any():
            return None
    return series


def _parse_timestamps(column: Column, raw: list[Any]) -> tuple[pl.Series, list[tuple[int, str]]]:
    dtype = column.dtype
    text = pl.Series(column.name, [v if isinstance(v, str) else None for v in raw], dtype=pl.String)
    parsed = text.str.to_datetime(time_unit="us", time_zone="UTC", strict=False)
    has_offset = text.str.contains(_OFFSET.pattern)
    # Polars reads years past 9999; Python, which every later step hands values to, cannot.
    out_of_range = ((parsed < TIMESTAMP_MIN) | (parsed > TIMESTAMP_MAX)).fill_null(False)
    # Looked at as booleans only: turning such a value into a Python datetime is the crash avoided here.
    unparsed = parsed.is_null().to_list()
    failures = []
    for index in (parsed.is_null() | ~has_offset.fill_null(True) | out_of_range).arg_true():
        value = raw[index]
        if value is None:
            if not column.nullable:
                failures.append((index, "required field is missing or null"))
        elif not isinstance(value, str):
            failures.append((index, f"expected an ISO 8601 timestamp, got {type(value).__name__} {_clip(repr(value))}"))
        elif unparsed[index] and _OFFSET.search(value) and _beyond_year_9999(value):
            failures.append((index, timestamp_range_reason(value)))
        elif not _OFFSET.search(value) and unparsed[index] and _looks_like_timestamp(value):
            failures.append((index, f"timestamp {_clip(value)!r} has no UTC offset; expected e.g. ...Z"))
        elif unparsed[index]:
            failures.append((index, f"expected an ISO 8601 timestamp, got {_clip(value)!r}"))
        elif out_of_range[index]:
            failures.append((index, timestamp_range_reason(value)))
        else:
            failures.append((index, f"timestamp {_clip(value)!r} has no UTC offset; expected e.g. ...Z"))
    if failures:
        failed = [i for i, _ in failures]
        parsed = parsed.scatter(failed, None)
    return parsed.cast(dtype).alias(column.name), failures


def _beyond_year_9999(value: str) -> bool:
    return re.match(r"^[+-]?\d{5,}-\d{2}-\d{2}", value.strip()) is not None or value.strip().startswith("-")


def _looks_like_timestamp(value: str) -> bool:
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return False
    return True


def _filed_under(
    row: Any,
    table: LakeTable,
    window: tuple[datetime, datetime] | None,
    partitions: Sequence[dg.TimeWindow] | None,
) -> datetime | None:
    """The partition a reject belongs to: the one holding its own timestamp when readable and inside the
    load, else the start of what was asked for, so re-running that partition replaces it."""
    if table.time_column is None or (window is None and not partitions):
        return None
    spans = sorted((p.start.astimezone(UTC), p.end.astimezone(UTC)) for p in partitions or ())
    start, end = window if window is not None else (spans[0][0], spans[-1][1])
    stamp = _own_time(row, table)
    if stamp is not None and not spans:
        hour = stamp.replace(minute=0, second=0, microsecond=0)
        return hour if start <= hour < end else start
    if stamp is not None and start <= stamp < end:
        for span_start, span_end in spans:
            if span_start <= stamp < span_end:
                return span_start
    return spans[0][0] if spans else start


def _own_time(row: Any, table: LakeTable) -> datetime | None:
    raw = row.get(table.time_column) if isinstance(row, dict) else None
    if not isinstance(raw, str):
        return None
    try:
        stamp = datetime.fromisoformat(raw.replace("z", "Z"))
        return stamp.astimezone(UTC) if stamp.tzinfo is not None else None
    except (ValueError, OverflowError):
        return None


def _clip(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _as_json(row: Any) -> str:
    return json.dumps(row, sort_keys=True, default=str, ensure_ascii=False)
