"""Fault injection every HTTP simulator shares.

A simulator owns a `FaultBook` and a `RequestStats`. Tests (or ``POST /_sim/faults``) arm a fault for the
next ``count`` requests whose path matches a glob; the simulator's request handler takes at most one fault
per request and applies it with the helpers here:

- ``status``: any 4xx/5xx answer, with ``retry_after`` seconds for a 429 or 503 (`status_response`);
- ``rate_limited``: a 429 with Retry-After on a share of the matching requests (``share`` 0.5 refuses every
  other one, deterministically), the way a provider's quota behaves under a backfill;
- ``slow``: the answer waits ``delay_s`` seconds (`delay`);
- ``truncated`` and ``malformed`` bodies (`mangle_body`);
- the row faults ``wrong_types``, ``duplicates`` and ``out_of_order`` (`row_fault`), applied by the
  simulator to the list of records in its answer.

A source adds its own kinds of bad data by passing ``own_kinds`` (the weather feed's sentinels, the ERP's
repeated page); the book validates and counts them like the common ones and the simulator decides what
they do. DMAMA, the first source, keeps its richer set (SOAP faults, gzip bombs, drips) in its own module.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import math
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

__all__ = [
    "COMMON_FAULTS",
    "ROW_FAULTS",
    "Fault",
    "FaultBook",
    "RequestStats",
    "delay",
    "faults_endpoint",
    "loopback_only",
    "mangle_body",
    "row_fault",
    "status_response",
]

ROW_FAULTS = frozenset({"wrong_types", "duplicates", "out_of_order"})
COMMON_FAULTS = frozenset({"status", "rate_limited", "slow", "truncated", "malformed"}) | ROW_FAULTS

# What a broken proxy in front of the API answers instead of JSON.
MALFORMED_PREFIX = b"<html><body>502 Bad Gateway</body></html>"


@dataclass
class Fault:
    """One armed fault: its kind, the path glob it matches, how many more requests it takes, its parameters."""

    kind: str
    path: str
    remaining: int
    params: dict[str, Any] = field(default_factory=dict)
    seen: int = 0  # matching requests so far (rate_limited refuses a share of them)


class FaultBook:
    """The faults armed on one simulator, thread-safe: `inject`, `take`, `clear`, `armed`."""

    def __init__(self, own_kinds: Iterable[str] = ()) -> None:
        self.kinds = COMMON_FAULTS | frozenset(own_kinds)
        self._lock = threading.Lock()
        self._faults: list[Fault] = []

    def inject(self, kind: str, path: str = "*", count: int = 1, **params: Any) -> None:
        """Arm a fault for the next `count` requests whose path matches the fnmatch glob `path`."""
        if kind not in self.kinds:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {sorted(self.kinds)}")
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"fault count must be a positive integer, got {count!r}")
        if not isinstance(path, str) or not path:
            raise ValueError(f"fault path must be a non-empty glob such as '/api/v1/*', got {path!r}")
        params = dict(params)
        if kind == "status":
            status = params.get("status")
            if not isinstance(status, int) or not 400 <= status <= 599:
                raise ValueError(f"status fault needs 'status' between 400 and 599, got {status!r}")
        if kind == "rate_limited":
            share = params.setdefault("share", 0.5)
            if not isinstance(share, int | float) or not 0 < share <= 1:
                raise ValueError(f"rate_limited fault needs 'share' in (0, 1], got {share!r}")
            params.setdefault("retry_after", 1)
        if kind == "slow":
            delay_s = params.get("delay_s")
            if not isinstance(delay_s, int | float) or isinstance(delay_s, bool) or delay_s <= 0:
                raise ValueError(f"slow fault needs a positive 'delay_s', got {delay_s!r}")
        retry_after = params.get("retry_after")
        if retry_after is not None and (not isinstance(retry_after, int | float) or retry_after < 0):
            raise ValueError(f"'retry_after' must be seconds (a number ≥ 0), got {retry_after!r}")
        with self._lock:
            self._faults.append(Fault(kind, path, count, params))

    def clear(self) -> int:
        """Disarm every fault; returns how many were still armed."""
        with self._lock:
            n = len(self._faults)
            self._faults.clear()
        return n

    def armed(self) -> list[dict[str, Any]]:
        """Faults still armed, with their remaining counts."""
        with self._lock:
            return [{"kind": f.kind, "path": f.path, "count": f.remaining, **f.params} for f in self._faults]

    def take(self, path: str) -> Fault | None:
        """The fault that applies to this request, counted down; None if the request is served normally.

        A ``rate_limited`` fault comes back as a ``status`` 429 on the refused share and as None otherwise;
        its count is the number of requests it watches, refused or not.
        """
        with self._lock:
            fault = next((f for f in self._faults if fnmatch.fnmatchcase(path, f.path)), None)
            if fault is None:
                return None
            fault.remaining -= 1
            if fault.remaining <= 0:
                self._faults.remove(fault)
            if fault.kind != "rate_limited":
                return fault
            fault.seen += 1
            share = float(fault.params["share"])
            # Of every 1/share requests the first is refused (share 0.5: every other one).
            if math.ceil(fault.seen * share) > math.ceil((fault.seen - 1) * share):
                return Fault("status", fault.path, 0, {"status": 429, "retry_after": fault.params["retry_after"]})
            return None


class RequestStats:
    """Requests served, by (path or route template, HTTP status)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, int]] = Counter()

    def record(self, path: str, status: int) -> None:
        with self._lock:
            self._counts[(path, status)] += 1

    def snapshot(self) -> dict[tuple[str, int], int]:
        with self._lock:
            return dict(self._counts)

    def requests_to(self, path: str) -> int:
        """Requests served for one path, whatever their status."""
        return sum(n for (p, _), n in self.snapshot().items() if p == path)

    def reset(self) -> None:
        with self._lock:
            self._counts.clear()


def status_response(fault: Fault) -> JSONResponse:
    """The JSON error answer of a ``status`` fault, with Retry-After when the fault gives one."""
    status = int(fault.params["status"])
    headers: dict[str, str] = {}
    retry_after = fault.params.get("retry_after")
    if retry_after is not None:
        whole = float(retry_after).is_integer()
        headers["Retry-After"] = str(int(retry_after)) if whole else str(retry_after)
    return JSONResponse({"error": "injected_fault", "detail": f"simulated HTTP {status}"}, status, headers=headers)


async def delay(fault: Fault | None) -> None:
    """Hold the answer back for a ``slow`` fault (a no-op otherwise)."""
    if fault is not None and fault.kind == "slow":
        await asyncio.sleep(float(fault.params["delay_s"]))


def mangle_body(content: bytes, fault: Fault | None) -> bytes:
    """The body as a ``truncated`` (cut in half) or ``malformed`` (an HTML error page) fault sends it."""
    if fault is None:
        return content
    if fault.kind == "truncated":
        return content[: len(content) // 2]
    if fault.kind == "malformed":
        return MALFORMED_PREFIX + content[:20]
    return content


def row_fault(
    rows: list[dict[str, Any]],
    kind: str,
    wrong_value: Callable[[str, Any], Any] | None = None,
) -> list[dict[str, Any]]:
    """The records as a row fault sends them: the first row twice, the rows reversed, or the first row's
    numbers (and, through `wrong_value`, any other field) turned into text a typed reader must reject."""
    rows = [dict(r) for r in rows]
    if not rows or kind not in ROW_FAULTS:
        return rows
    if kind == "duplicates":
        return [rows[0], *rows]
    if kind == "out_of_order":
        return rows[::-1]
    first = rows[0]
    for name, value in first.items():
        replaced = wrong_value(name, value) if wrong_value is not None else None
        if replaced is not None:
            first[name] = replaced
        elif isinstance(value, float | int) and not isinstance(value, bool):
            first[name] = "n/a"
    return rows


def loopback_only(request: Request) -> Response | None:
    """A 403 for a ``/_sim`` request from anywhere but loopback (None when it may proceed)."""
    host = request.client.host if request.client else ""
    if host in ("127.0.0.1", "::1", "testclient"):
        return None
    return JSONResponse({"error": "forbidden", "detail": "/_sim is served to loopback only"}, 403)


def faults_endpoint(book: FaultBook) -> Callable[[Request], Any]:
    """A Starlette endpoint for ``/_sim/faults``: GET lists, POST arms (a JSON object with ``kind``,
    ``path``, ``count`` and the kind's parameters), DELETE disarms everything."""

    async def endpoint(request: Request) -> Response:
        if (denied := loopback_only(request)) is not None:
            return denied
        if request.method == "DELETE":
            return JSONResponse({"cleared": book.clear()})
        if request.method == "GET":
            return JSONResponse({"faults": book.armed()})
        try:
            spec = json.loads(await request.body())
            if not isinstance(spec, dict):
                raise ValueError('body must be a JSON object such as {"kind": "status", "status": 503}')
            spec = dict(spec)
            book.inject(spec.pop("kind", None), spec.pop("path", "*"), spec.pop("count", 1), **spec)
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": "bad_request", "detail": str(exc)}, 400)
        return JSONResponse({"armed": True}, 201)

    return endpoint
