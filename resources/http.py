"""Resilient HTTP for the REST and SOAP sources: one retry policy, a shared rate limit, bounded answers.

Generic on purpose: nothing here knows Dagster or any one source. A source client (for example
`resources/dmama.py`) builds one `ResilientClient` per source, gives it an `httpx.Auth` flow
(`ApiKeyAuth`, `OAuth2ClientCredentials`, `JwtLogin`, `CsrfToken`, or several in `AuthChain`) and calls
`get_json`, `post_form`, `post_xml` or `iter_pages`. Every failure comes back as a `SourceError` that
names the source, the method and the endpoint path (never the query string, headers or credentials).

What a hostile or struggling source can do to a run, and what stops it:

- **Fails now and then**: transport errors, statuses in `retry_statuses` and bodies that do not decode
  (truncated, malformed) are retried by the project's one `RetryPolicy` (`resources/retry.py`):
  exponential backoff, at most `max_retries` retries counted.
- **Rate-limits us**: a 429 (or any retried status with `Retry-After`) is the source asking us to slow
  down, not a fault. The wait it asks for is honoured and shared: the client's `RateLimiter` holds back
  every request of every thread until it has passed, and such answers are bounded by time
  (`rate_limit_budget_s`), not by the retry count.
- **Hangs**: every exchange has a total `deadline_s` on top of httpx's per-read timeout, checked while the
  body streams in, so a server that drips its body a few bytes at a time fails the attempt. `iter_pages`
  caps pages (`max_pages`) and refuses a page it has already seen.
- **Floods**: the decoded size of every body is capped (`max_body_bytes`) while it is inflated, so a
  small gzip bomb never reaches memory whole; JSON nested deeper than the decoder can follow is a
  `PayloadError`, not a `RecursionError` from deep in the stack.
- **Leaks our secrets back**: header values of the client and its auth flow (keys, secrets, tokens) are
  replaced by ``***`` in every reason, log line and exception leaving the client (`Secrets`), and
  `check_secret` refuses at load a credential an HTTP library would echo in its own error.
- **Sends identifiers that are paths**: `path_segment` refuses ``.``, ``..``, separators and control
  characters and percent-encodes the rest, so an id never changes which endpoint a request reaches.

Every attempt also feeds a circuit breaker shared by all threads using the client, so a source that is
down is not hammered by a backfill's workers.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import logging
import threading
import time
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Callable, Collection, Generator, Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal
from urllib.parse import quote, urlsplit, urlunsplit

import httpx

from resources.identifiers import identifier_problem
from resources.retry import RetryPolicy

__all__ = [
    "DEFAULT_RETRY_STATUSES",
    "ApiKeyAuth",
    "AuthChain",
    "CircuitBreaker",
    "CircuitOpenError",
    "CredentialError",
    "CsrfToken",
    "JwtLogin",
    "OAuth2ClientCredentials",
    "PayloadError",
    "RateLimiter",
    "ResilientClient",
    "Secrets",
    "SourceError",
    "TokenAuth",
    "check_secret",
    "path_segment",
]

DEFAULT_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
_DETAIL_CHARS = 200
_ERROR_BODY_BYTES = 65_536  # enough for any explanation a source gives; the rest is not read
_MiB = 1024 * 1024

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- errors


class SourceError(Exception):
    """A request to an external source failed; says which source, which endpoint and why.

    Attributes: `source`, `method`, `endpoint` (path only), `status` (HTTP status or None when no
    answer came back), `reason`, `attempts` (requests sent).
    """

    def __init__(
        self,
        source: str,
        endpoint: str,
        reason: str,
        *,
        status: int | None = None,
        method: str = "GET",
        attempts: int = 1,
    ) -> None:
        self.source = source
        self.endpoint = endpoint
        self.reason = reason
        self.status = status
        self.method = method
        self.attempts = attempts
        super().__init__(self._message())

    def _message(self) -> str:
        tries = f" after {self.attempts} attempts" if self.attempts > 1 else ""
        return f"{self.source}: {self.method} {self.endpoint} failed{tries}: {self.reason}"

    def __reduce__(self) -> tuple[Any, ...]:
        # Keyword-only arguments need help to survive pickling (multiprocess executors).
        return (_rebuild_error, (type(self), dict(self.__dict__)))


def _rebuild_error(cls: type[SourceError], state: dict[str, Any]) -> SourceError:
    error = cls.__new__(cls)
    error.__dict__.update(state)
    Exception.__init__(error, error._message())
    return error


class PayloadError(SourceError):
    """The source answered, but the body could not be used (truncated, malformed, too big, too deep)."""


class CircuitOpenError(SourceError):
    """Not attempted: the source failed too often in a row and the circuit breaker is open."""

    def _message(self) -> str:
        if self.attempts:  # the circuit opened while this call was retrying
            return super()._message()
        return f"{self.source}: {self.method} {self.endpoint} not attempted: {self.reason}"


class CredentialError(ValueError):
    """A configured credential is unusable; the message names its variable, never its value."""


# ---------------------------------------------------------------------------------------------- secrets


def check_secret(value: Any, name: str) -> str:
    """Return `value` if it can go into an HTTP header; else raise `CredentialError` naming `name`.

    A key pasted with its trailing newline would otherwise be refused by the HTTP library with an
    error that quotes the key, straight into the run's event log.
    """
    if not isinstance(value, str) or not value:
        raise CredentialError(f"{name} is empty or not set; set it to the credential the source issued")
    if value != value.rstrip():
        kind = "a trailing newline" if value.rstrip(" \t") != value.rstrip() else "trailing whitespace"
        raise CredentialError(f"{name} has {kind}; remove it")
    if value != value.lstrip():
        raise CredentialError(f"{name} has leading whitespace; remove it")
    for n, char in enumerate(value):
        if ord(char) < 0x20 or ord(char) == 0x7F:
            raise CredentialError(f"{name} contains a control character at position {n}; remove it")
        if ord(char) > 0x7E:
            raise CredentialError(f"{name} contains a non-ASCII character at position {n}; HTTP headers need ASCII")
    return value


class Secrets:
    """The secret values one client knows, and how to take them out of text and exceptions.

    Values come from fixed strings and from providers asked at scrub time (an auth flow's current
    token). Each value is also matched without surrounding whitespace and as Python would quote it,
    because libraries echo a bad header as ``b'key\\n'``.
    """

    def __init__(self, values: Iterable[str] = (), providers: Iterable[Callable[[], Iterable[str]]] = ()) -> None:
        self._values = [v for v in values if v]
        self._providers = list(providers)

    def add(self, *values: str) -> None:
        self._values.extend(v for v in values if v)

    def add_provider(self, provider: Callable[[], Iterable[str]]) -> None:
        self._providers.append(provider)

    def values(self) -> list[str]:
        found = list(self._values)
        for provider in self._providers:
            found.extend(v for v in provider() if v)
        forms: set[str] = set()
        for value in found:
            for form in (value, value.strip(), repr(value)[1:-1]):
                if len(form) >= 4:  # shorter strings would mangle messages without protecting anything
                    forms.add(form)
        return sorted(forms, key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for value in self.values():
            text = text.replace(value, "***")
        return text

    def leaks(self, text: str) -> bool:
        return any(value in text for value in self.values())

    def clean(self, error: BaseException) -> BaseException | None:
        """A copy of `error` with secrets replaced and no chained exceptions, or None if it is clean."""
        chain: list[BaseException] = []
        current: BaseException | None = error
        while current is not None and current not in chain:
            chain.append(current)
            current = current.__cause__ or current.__context__
        values = self.values()
        if not values:
            return None

        def texts(e: BaseException) -> Iterator[str]:
            yield str(e)
            yield repr(e.args)
            yield from (v for v in vars(e).values() if isinstance(v, str))

        if not any(value in text for e in chain for text in texts(e) for value in values):
            return None
        if isinstance(error, SourceError):
            state = {k: self.scrub(v) if isinstance(v, str) else v for k, v in vars(error).items()}
            return _rebuild_error(type(error), state)
        args = tuple(self.scrub(a) if isinstance(a, str) else "***" for a in error.args)
        try:
            copy = type(error)(*args)
            if not self.leaks(str(copy)):
                return copy
        except Exception:  # a constructor that does not take its own args back
            pass
        return RuntimeError(f"{type(error).__name__}: {self.scrub(str(error))}")


# ---------------------------------------------------------------------------------------------- identifiers


def path_segment(value: Any) -> str:
    """`value` percent-encoded for one URL path segment; `ValueError` if it is not a usable identifier."""
    problem = identifier_problem(value)
    if problem is not None:
        raise ValueError(f"identifier {str(value)[:40]!r} {problem}")
    return quote(value, safe="")


# ---------------------------------------------------------------------------------------------- breaker


class CircuitBreaker:
    """Closed → open after `failure_threshold` consecutive failures → half-open after `reset_after_s`.

    Half-open lets exactly one trial request through: its success closes the circuit, its failure
    opens it again for another `reset_after_s`. Thread-safe; `clock` is injectable for tests.
    """

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"

    def __init__(
        self,
        failure_threshold: int = 5,
        reset_after_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold}")
        self.failure_threshold = failure_threshold
        self.reset_after_s = reset_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = self.CLOSED
        self._failures = 0
        self._opened_at = 0.0
        self._trial_in_flight = False

    @property
    def state(self) -> str:
        """'closed', 'open' or 'half_open' (an open circuit whose reset time has passed reads half-open)."""
        with self._lock:
            if self._state == self.OPEN and self._clock() - self._opened_at >= self.reset_after_s:
                return self.HALF_OPEN
            return self._state

    @property
    def consecutive_failures(self) -> int:
        """Failures since the last success."""
        with self._lock:
            return self._failures

    def retry_in_s(self) -> float:
        """Seconds until an open circuit lets a trial through (0 when not open)."""
        with self._lock:
            if self._state != self.OPEN:
                return 0.0
            return max(0.0, self.reset_after_s - (self._clock() - self._opened_at))

    def allow(self) -> bool:
        """Whether a request may go out now; in half-open state only the one trial may."""
        with self._lock:
            if self._state == self.CLOSED:
                return True
            if self._state == self.OPEN:
                if self._clock() - self._opened_at < self.reset_after_s:
                    return False
                self._state = self.HALF_OPEN
                self._trial_in_flight = False
            if self._trial_in_flight:
                return False
            self._trial_in_flight = True
            return True

    def record_success(self) -> None:
        """The source answered properly: close the circuit."""
        with self._lock:
            self._state = self.CLOSED
            self._failures = 0
            self._trial_in_flight = False

    def record_failure(self) -> None:
        """The source failed: count it, and open the circuit at the threshold or after a failed trial."""
        with self._lock:
            self._failures += 1
            if self._state == self.HALF_OPEN or self._failures >= self.failure_threshold:
                self._state = self.OPEN
                self._opened_at = self._clock()
                self._trial_in_flight = False

    def __repr__(self) -> str:
        return f"CircuitBreaker(state={self.state!r}, failures={self.consecutive_failures})"


# ---------------------------------------------------------------------------------------------- rate limit


class RateLimiter:
    """The source's "slow down", shared by every thread of one client.

    `defer(s)` (after a 429 with Retry-After) holds back every request until `s` seconds from now;
    `wait()` before each request sleeps until then. A thread that already slept out its own deferral
    passes the deadline it slept for, so it does not wait twice.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, sleep: Callable[[float], None] = time.sleep):
        self._clock = clock
        self._sleep = sleep
        self._lock = threading.Lock()
        self._not_before = float("-inf")
        self.deferrals = 0
        self.waited_s = 0.0

    def defer(self, seconds: float) -> float:
        """Hold every request back for `seconds`; returns the moment they may go again."""
        with self._lock:
            self._not_before = max(self._not_before, self._clock() + seconds)
            self.deferrals += 1
            return self._not_before

    def wait(self, covered_until: float = float("-inf")) -> float:
        """Sleep until the source lets requests go again, unless the caller already slept that long."""
        with self._lock:
            target = self._not_before
            if target <= covered_until:
                return 0.0
            delay = target - self._clock()
        if delay <= 0:
            return 0.0
        self._sleep(delay)
        with self._lock:
            self.waited_s += delay
        return delay


# ---------------------------------------------------------------------------------------------- decoding


def _redact_url(url: str) -> str:
    """A URL without user info, query or fragment, fit for logs and reprs."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _status_text(status: int) -> str:
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


def _parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date), or None if absent or garbled."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())


def _error_detail(content: bytes) -> str:
    """The server's own explanation from an error body (JSON detail/error or a SOAP faultstring)."""
    detail: Any = None
    try:
        body = json.loads(content)
        if isinstance(body, dict):
            detail = body.get("detail") or body.get("error_description") or body.get("message") or body.get("error")
    except (ValueError, UnicodeDecodeError, RecursionError):
        fault = _soap_fault(content)
        detail = fault[1] if fault else None
    if not detail:
        return ""
    text = " ".join(str(detail).split())
    return ": " + (text[:_DETAIL_CHARS] + "…" if len(text) > _DETAIL_CHARS else text)


def _soap_fault(content: bytes) -> tuple[str, str] | None:
    """(faultcode, faultstring) if `content` is a SOAP 1.1 Fault envelope."""
    try:
        root = ET.fromstring(content)
    except ET.ParseError:
        return None
    fault = root.find(f".//{{{_SOAP_NS}}}Fault")
    if fault is None:
        return None
    return (fault.findtext("faultcode") or "").strip(), (fault.findtext("faultstring") or "").strip()


class _DecodeError(Exception):
    """A body that did not decode; the message says where. `retryable`: a resend may fix it."""

    def __init__(self, message: str, retryable: bool = True) -> None:
        super().__init__(message)
        self.retryable = retryable


def _decode_json(content: bytes) -> Any:
    if not content:
        raise _DecodeError("empty body, expected JSON")
    try:
        return json.loads(content)
    except json.JSONDecodeError as exc:
        raise _DecodeError(
            f"body is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno} "
            f"(char {exc.pos} of {len(content)} bytes)"
        ) from None
    except UnicodeDecodeError as exc:
        raise _DecodeError(f"body is not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except RecursionError:
        # The C decoder gives up cleanly at the interpreter's recursion limit; say so instead of crashing.
        raise _DecodeError(
            f"JSON nested too deeply to decode ({len(content)} bytes); no real answer nests that far",
            retryable=False,
        ) from None


_CONTAINERS = frozenset({dict, list})


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether decoded JSON nests more than `limit` containers deep (iterative: no recursion to blow).

    Rows of scalars are cleared with C-speed type checks: about 40 ms per 100,000 readings rows.
    """
    if type(value) not in _CONTAINERS:
        return False
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return True
        if _CONTAINERS.isdisjoint(map(type, node.values() if type(node) is dict else node)):
            continue
        for child in node.values() if type(node) is dict else node:
            kind = type(child)
            if kind is dict and _CONTAINERS.isdisjoint(map(type, child.values())):
                if depth + 1 > limit:
                    return True
            elif kind in _CONTAINERS:
                stack.append((child, depth + 1))
    return False


def _decode_xml(content: bytes) -> ET.Element:
    if not content:
        raise _DecodeError("empty body, expected XML")
    try:
        # ElementTree resolves no external entities and expat caps entity expansion, so an
        # untrusted body cannot make us fetch files or blow up memory.
        return ET.fromstring(content)
    except ET.ParseError as exc:
        # str(exc) already reads "mismatched tag: line 1, column 345".
        raise _DecodeError(f"body is not well-formed XML: {exc} ({len(content)} bytes)") from None


_DECODERS: dict[str, Callable[[bytes], Any]] = {
    "json": _decode_json,
    "xml": _decode_xml,
    "none": lambda content: content,
}


class _BodyError(Exception):
    """The body broke a bound while it was read (deadline, size, encoding)."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


class _Inflater:
    """Content-Encoding decoding that never produces more than the caller has room for.

    httpx's own decoders inflate a whole network chunk at once, which for a gzip bomb is hundreds of
    megabytes per chunk; zlib's `max_length` stops at the cap instead.
    """

    def __init__(self, encoding: str) -> None:
        encoding = encoding.strip().lower()
        if encoding in ("", "identity"):
            self._z = None
        elif encoding in ("gzip", "x-gzip"):
            self._z = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._z = zlib.decompressobj()
        else:
            raise _BodyError(f"unsupported Content-Encoding {encoding!r} (asked for gzip or deflate)", False)
        self._raw_deflate_tried = encoding != "deflate"

    def feed(self, data: bytes, room: int) -> bytes:
        if self._z is None:
            return data
        try:
            return self._z.decompress(data, max(1, room))
        except zlib.error as exc:
            if not self._raw_deflate_tried:  # "deflate" is sent both zlib-wrapped and raw in the wild
                self._raw_deflate_tried = True
                self._z = zlib.decompressobj(-zlib.MAX_WBITS)
                return self.feed(data, room)
            raise _BodyError(f"body does not inflate ({exc})", True) from None

    def pending(self) -> bool:
        return self._z is not None and bool(self._z.unconsumed_tail)

    def more(self, room: int) -> bytes:
        """Output still held back by an earlier `room` limit."""
        return self.feed(self._z.unconsumed_tail, room) if self.pending() else b""

    def flush(self) -> bytes:
        return self._z.flush() if self._z is not None else b""


@dataclass
class _Answer:
    status: int
    headers: httpx.Headers
    content: bytes


@dataclass
class _Call:
    """What one `request` call has done so far, across its attempts."""

    attempts: int = 0
    counted: int = 0
    covered_until: float = float("-inf")


class _Retry(Exception):
    """A failed attempt the retry policy may repeat; `retry_after_s` when the source asked us to wait."""

    def __init__(self, error: SourceError, retry_after_s: float | None = None) -> None:
        super().__init__(error.reason)
        self.error = error
        self.retry_after_s = retry_after_s


# ---------------------------------------------------------------------------------------------- the client


class ResilientClient:
    """One pooled `httpx.Client` for one source: retries, a shared rate limit, a breaker, bounds.

    `auth` is an `httpx.Auth` flow run for every request (`authenticate=False` skips it, for the token
    call itself); a flow with a `bind(client)` method gets this client to fetch its tokens with, and
    one with a `secrets()` method has those values scrubbed too. Header values are never logged,
    raised or shown in `repr`.
    """

    def __init__(
        self,
        source: str,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        deadline_s: float = 120.0,
        max_body_bytes: int = 64 * _MiB,
        max_json_depth: int = 64,
        max_retries: int = 3,
        backoff_base_s: float = 0.5,
        backoff_factor: float = 2.0,
        rate_limit_budget_s: float = 300.0,
        retry_statuses: Collection[int] = DEFAULT_RETRY_STATUSES,
        max_retry_after_s: float = 60.0,
        verify: bool | str = True,
        max_connections: int = 8,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
        secrets: Iterable[str] = (),
        breaker: CircuitBreaker | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"{source}: max_retries must be 0 or more, got {max_retries}")
        for name, value in (("timeout_s", timeout_s), ("deadline_s", deadline_s), ("max_body_bytes", max_body_bytes)):
            if value <= 0:
                raise ValueError(f"{source}: {name} must be positive, got {value}")
        self.source = source
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.deadline_s = deadline_s
        self.max_body_bytes = max_body_bytes
        # Decoding stops at the interpreter's recursion limit anyway; a lower cap keeps what is decoded
        # safe for everything downstream that recurses (json.dumps of a raw row, polars, pydantic).
        self.max_json_depth = max_json_depth
        self.max_retries = max_retries
        self.retry_statuses = frozenset(retry_statuses)
        self.policy = RetryPolicy(
            max_attempts=max_retries + 1,
            budget_s=rate_limit_budget_s,
            initial_s=backoff_base_s,
            factor=backoff_factor,
            max_delay_s=max(30.0, backoff_base_s),
            max_retry_after_s=max_retry_after_s,
        )
        self.breaker = breaker if breaker is not None else CircuitBreaker(clock=clock)
        self.limiter = RateLimiter(clock=clock, sleep=sleep)
        self.secrets = Secrets(list(secrets) + [v for v in (headers or {}).values() if isinstance(v, str)])
        self._auth: httpx.Auth | None = None
        self._sleep = sleep
        self._clock = clock
        self._local = threading.local()
        self._last_failure = ""
        pool = max(1, max_connections)
        self._http = httpx.Client(
            base_url=base_url,
            # Only encodings _Inflater can bound; httpx would also offer br and zstd when installed.
            headers={"Accept-Encoding": "gzip, deflate", **dict(headers or {})},
            timeout=httpx.Timeout(min(timeout_s, deadline_s)),
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
            verify=verify,
            transport=transport,
            follow_redirects=False,
        )
        self.auth = auth

    @property
    def auth(self) -> httpx.Auth | None:
        """The authentication flow every request runs through (None: no authentication)."""
        return self._auth

    @auth.setter
    def auth(self, flow: httpx.Auth | None) -> None:
        self._auth = flow
        if flow is None:
            return
        bind = getattr(flow, "bind", None)
        if callable(bind):
            bind(self)
        provider = getattr(flow, "secrets", None)
        if callable(provider):
            self.secrets.add_provider(provider)

    def __repr__(self) -> str:
        return f"ResilientClient(source={self.source!r}, base_url={_redact_url(self.base_url)!r})"

    def add_cookies(self, request: httpx.Request) -> None:
        """Give `request` the Cookie header of every cookie the source has set on this client so far."""
        request.headers.pop("Cookie", None)
        self._http.cookies.set_cookie_header(request)

    def close(self) -> None:
        """Close the pooled connections."""
        self._http.close()

    def __enter__(self) -> ResilientClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ public calls

    def get_json(
        self, path: str, params: Mapping[str, Any] | None = None, *, headers: Mapping[str, str] | None = None
    ) -> Any:
        """GET `path` and return the decoded JSON body."""
        return self.request("GET", path, params=params, headers=headers, decode="json")

    def post_form(
        self,
        path: str,
        data: Mapping[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
        authenticate: bool = True,
    ) -> Any:
        """POST a form (application/x-www-form-urlencoded) and return the decoded JSON answer.

        `authenticate=False` skips the auth flow (the token call itself).
        """
        return self.request("POST", path, data=data, headers=headers, decode="json", authenticate=authenticate)

    def post_json(
        self,
        path: str,
        body: Any,
        *,
        headers: Mapping[str, str] | None = None,
        authenticate: bool = True,
        response_headers: dict[str, str] | None = None,
        response_info: dict[str, Any] | None = None,
    ) -> Any:
        """POST a JSON document and return the decoded JSON answer (`request` says what the dicts receive)."""
        content = json.dumps(body).encode()
        merged = {"Content-Type": "application/json", **(headers or {})}
        return self.request(
            "POST",
            path,
            content=content,
            headers=merged,
            decode="json",
            authenticate=authenticate,
            response_headers=response_headers,
            response_info=response_info,
        )

    def post_xml(self, path: str, body: str | bytes, *, headers: Mapping[str, str] | None = None) -> ET.Element:
        """POST an XML document (a SOAP envelope) and return the root element of the answer."""
        content = body.encode("utf-8") if isinstance(body, str) else body
        merged = {"Content-Type": "text/xml; charset=utf-8", **(headers or {})}
        return self.request("POST", path, content=content, headers=merged, decode="xml")

    def iter_pages(
        self,
        path: str,
        params: Mapping[str, Any] | None = None,
        *,
        max_pages: int = 1000,
        items_key: str = "items",
        next_key: str = "next_page",
        page_param: str = "page",
    ) -> Iterator[list[Any]]:
        """The `items_key` list of each page of a paged JSON list, following `next_key` page numbers.

        Paging that never ends fails with a `PayloadError`: a page already seen (same items) or more
        than `max_pages` pages. A next page must be a later page number, or null on the last page.
        """
        seen: dict[bytes, int] = {}
        page = 1
        for _ in range(max_pages):
            body = self.get_json(path, {**(params or {}), page_param: page})
            if not isinstance(body, dict) or not isinstance(body.get(items_key), list):
                got = sorted(body) if isinstance(body, dict) else type(body).__name__
                raise PayloadError(
                    self.source, path, f"page {page}: expected an object with an {items_key!r} list, got {got}"
                )
            items = body[items_key]
            digest = hashlib.blake2b(json.dumps(items, sort_keys=True, default=str).encode(), digest_size=16).digest()
            if digest in seen:
                raise PayloadError(
                    self.source,
                    path,
                    f"page {page} repeats page {seen[digest]} ({len(items)} items); the paging would never end",
                )
            seen[digest] = page
            yield items
            following = body.get(next_key)
            if following is None:
                return
            if not isinstance(following, int) or isinstance(following, bool) or following <= page:
                raise PayloadError(
                    self.source, path, f"page {page}: {next_key} is {following!r}, expected a later page number or null"
                )
            page = following
        raise PayloadError(self.source, path, f"more than {max_pages} pages (max_pages); the paging never ended")

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        data: Mapping[str, Any] | None = None,
        content: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        decode: Literal["json", "xml", "none"] = "json",
        authenticate: bool = True,
        response_headers: dict[str, str] | None = None,
        response_info: dict[str, Any] | None = None,
    ) -> Any:
        """Send a request under the retry policy and return the decoded body (`decode="none"`: bytes).

        `response_headers`, when given, receives the successful answer's headers (lower-case names);
        `response_info` its ``status`` and the ``attempts`` it took (what a delivery ledger records).
        Raises `SourceError` (or `PayloadError`, `CircuitOpenError`) naming source and endpoint, with
        every secret of this client replaced by ``***``.
        """
        options = (params, data, content, headers, decode, authenticate, response_headers, response_info)
        try:
            return self._request(method, path, options)
        except BaseException as exc:
            cleaned = self.secrets.clean(exc)
            if cleaned is None:
                raise
        # Raised outside the except block, so the original (secret-bearing) error is not its context.
        raise cleaned

    # ------------------------------------------------------------------ the retry loop

    def _request(self, method: str, path: str, options: tuple) -> Any:
        endpoint = urlsplit(path).path or path
        call = _Call()

        def retry_if(error: BaseException) -> bool:
            return isinstance(error, _Retry) and self.breaker.state != CircuitBreaker.OPEN

        def announce(error: BaseException, counted: int, wait_s: float) -> None:
            assert isinstance(error, _Retry)
            if error.retry_after_s is not None:
                log.warning(
                    "%s: %s %s answered %s; waiting %.2f s as the source asks (attempt %d, rate-limit budget %.0f s)",
                    self.source,
                    method,
                    endpoint,
                    error.error.reason,
                    wait_s,
                    call.attempts,
                    self.policy.budget_s,
                )
            else:
                log.warning(
                    "%s: %s %s attempt %d of %d failed (%s); retrying in %.2f s",
                    self.source,
                    method,
                    endpoint,
                    counted,
                    self.policy.max_attempts,
                    error.error.reason,
                    wait_s,
                )

        retrying = self.policy.retrying(
            retry_if=retry_if,
            sleep=lambda seconds: self._sleep(seconds) if seconds > 0 else None,
            before_sleep=announce,
            clock=self._clock,
        )
        try:
            for attempt in retrying:
                with attempt:
                    return self._attempt(call, method, path, endpoint, *options)
        except _Retry as failed:
            error = failed.error
            counted_out = self.policy.max_attempts is not None and call.counted >= self.policy.max_attempts
            if self.breaker.state == CircuitBreaker.OPEN and not counted_out:
                raise self._circuit_open(method, endpoint, call.attempts) from None
            raise error from None
        raise AssertionError("unreachable: the retry loop returns or raises")

    def _attempt(
        self,
        call: _Call,
        method,
        path,
        endpoint,
        params,
        data,
        content,
        headers,
        decode,
        authenticate,
        response_headers,
        response_info=None,
    ):
        self.limiter.wait(call.covered_until)
        # A request made inside another one (an auth flow fetching its token) rides on its parent's
        # permission: asking again would refuse the token call of a half-open trial.
        nested = getattr(self._local, "depth", 0) > 0
        if not nested and not self.breaker.allow():
            raise self._circuit_open(method, endpoint, call.attempts)
        call.attempts += 1

        def fail(reason: str, *, status: int | None = None, payload: bool = False) -> SourceError:
            kind = PayloadError if payload else SourceError
            return kind(
                self.source, endpoint, self.secrets.scrub(reason), status=status, method=method, attempts=call.attempts
            )

        def transient(error: SourceError, retry_after_s: float | None = None) -> _Retry:
            if retry_after_s is None:
                call.counted += 1
            self._last_failure = error.reason
            return _Retry(error, retry_after_s)

        self._local.depth = getattr(self._local, "depth", 0) + 1
        try:
            answer = self._exchange(method, path, params, data, content, headers, decode, authenticate)
        except httpx.TimeoutException as exc:
            self.breaker.record_failure()
            raise transient(fail(f"no answer within {self.timeout_s:g} s ({type(exc).__name__})")) from None
        except httpx.LocalProtocolError as exc:
            # Our own request is malformed (a header value the protocol forbids): resending cannot help.
            self.breaker.record_success()
            raise fail(f"request refused by the HTTP library: {type(exc).__name__}: {exc}") from None
        except httpx.HTTPError as exc:  # refused, reset, protocol errors
            self.breaker.record_failure()
            raise transient(fail(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)) from None
        except _BodyError as exc:
            if not exc.retryable:
                self.breaker.record_success()  # the source is up; its answer is unusable
                raise fail(str(exc), status=200, payload=True) from None
            self.breaker.record_failure()
            raise transient(fail(str(exc), payload=True)) from None
        except SourceError:
            raise  # from a nested request (a token fetch), which already told the breaker
        except BaseException:
            # Not a source failure (a bug, an interrupt), but a half-open trial must not stay in flight.
            self.breaker.record_failure()
            raise
        finally:
            self._local.depth -= 1

        status = answer.status
        if 200 <= status < 300:
            try:
                value = _DECODERS[decode](answer.content)
                if decode == "json" and _deeper_than(value, self.max_json_depth):
                    raise _DecodeError(
                        f"JSON nested deeper than {self.max_json_depth} levels (max_json_depth)", retryable=False
                    )
            except _DecodeError as exc:
                if not exc.retryable:
                    self.breaker.record_success()
                    raise fail(str(exc), status=status, payload=True) from None
                self.breaker.record_failure()
                raise transient(fail(str(exc), status=status, payload=True)) from None
            self.breaker.record_success()
            if response_headers is not None:
                response_headers.update((k.lower(), v) for k, v in answer.headers.items())
            if response_info is not None:
                response_info.update(status=status, attempts=call.attempts)
            return value
        if status in self.retry_statuses and not self._is_client_fault(answer, decode):
            retry_after = _parse_retry_after(answer.headers.get("retry-after"))
            if status == 429:
                # The source is up and answering; it wants fewer requests, which the limiter gives it.
                self.breaker.record_success()
                if retry_after is None:
                    retry_after = self.policy.delay(1)
            else:
                self.breaker.record_failure()
            if retry_after is not None:
                call.covered_until = self.limiter.defer(min(retry_after, self.policy.max_retry_after_s))
            raise transient(fail(_status_text(status), status=status), retry_after)
        # The source answered and said no: retrying cannot change that.
        self.breaker.record_success()
        raise fail(_status_text(status) + _error_detail(answer.content), status=status)

    def _exchange(self, method, path, params, data, content, headers, decode, authenticate) -> _Answer:
        """One request and its whole body, within the deadline and the size cap."""
        deadline = time.monotonic() + self.deadline_s  # real time: a drip-feed is real whatever tests inject
        with self._http.stream(
            method,
            path,
            params=params,
            data=data,
            content=content,
            headers=dict(headers or {}),
            auth=self._auth if authenticate and self._auth is not None else None,
        ) as response:
            success = 200 <= response.status_code < 300
            limit = self.max_body_bytes if success else _ERROR_BODY_BYTES
            inflater = _Inflater(response.headers.get("content-encoding", ""))
            parts: list[bytes] = []
            size = received = 0
            for raw in response.iter_raw():
                received += len(raw)
                chunk = inflater.feed(raw, limit - size + 1)
                while True:
                    size += len(chunk)
                    if size > limit:
                        if not success:
                            break  # an error body is only read for its explanation
                        raise _BodyError(
                            f"decoded body exceeds {_size(limit)} (max_body_bytes; {_size(received)} received "
                            f"{response.headers.get('content-encoding') or 'unencoded'})",
                            retryable=False,
                        )
                    parts.append(chunk)
                    if not inflater.pending():
                        break
                    chunk = inflater.more(limit - size + 1)
                if size > limit:
                    break
                if time.monotonic() > deadline:
                    raise _BodyError(
                        f"answer not complete within the {self.deadline_s:g} s deadline "
                        f"({_size(received)} received so far)",
                        retryable=True,
                    )
            if size <= limit:
                parts.append(inflater.flush())
            return _Answer(response.status_code, response.headers, b"".join(parts)[: limit if not success else None])

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _is_client_fault(answer: _Answer, decode: str) -> bool:
        """A SOAP 1.1 Client fault rides on HTTP 500 but is the request's fault: do not retry it."""
        if decode != "xml" or answer.status != 500:
            return False
        fault = _soap_fault(answer.content)
        return fault is not None and fault[0].rpartition(":")[2] == "Client"

    def _circuit_open(self, method: str, endpoint: str, attempts: int) -> CircuitOpenError:
        last = f" (last failure: {self._last_failure})" if self._last_failure else ""
        reason = (
            f"circuit open after {self.breaker.failure_threshold} consecutive failures{last}; "
            f"next trial in {self.breaker.retry_in_s():.0f} s"
        )
        return CircuitOpenError(self.source, endpoint, self.secrets.scrub(reason), method=method, attempts=attempts)


def _size(n: int) -> str:
    return f"{n / _MiB:.1f} MiB" if n >= _MiB else f"{n:,} bytes"


# ---------------------------------------------------------------------------------------------- auth flows


class ApiKeyAuth(httpx.Auth):
    """A fixed key in a header (``X-API-Key`` by default), checked at construction."""

    def __init__(self, key: str, header: str = "X-API-Key", *, name: str = "the API key") -> None:
        self.header = header
        self._key = check_secret(key, name)

    def __repr__(self) -> str:
        return f"ApiKeyAuth(header={self.header!r})"

    def secrets(self) -> tuple[str, ...]:
        return (self._key,)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.headers[self.header] = self._key
        yield request


class AuthChain(httpx.Auth):
    """Several flows on one request, in order (an API key and an OAuth token, as DMAMA asks)."""

    def __init__(self, *flows: httpx.Auth) -> None:
        self.flows = flows

    def __repr__(self) -> str:
        return f"AuthChain{self.flows!r}"

    def bind(self, client: ResilientClient) -> None:
        for flow in self.flows:
            if callable(getattr(flow, "bind", None)):
                flow.bind(client)

    def secrets(self) -> list[str]:
        return [s for flow in self.flows if callable(getattr(flow, "secrets", None)) for s in flow.secrets()]

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        # Run each flow to its first request; the last one sees responses (its 401 may mean a stale token).
        *outer, last = self.flows
        for flow in outer:
            request = next(flow.sync_auth_flow(request))
        flow = last.sync_auth_flow(request)
        request = next(flow)
        while True:
            response = yield request
            try:
                request = flow.send(response)
            except StopIteration:
                return


class TokenAuth(httpx.Auth):
    """A token fetched through the source's own `ResilientClient`, cached, renewed `skew_s` before it
    expires, and fetched anew (once per request) when the source answers that it is stale.

    Subclasses say how to get a token (`fetch`), where it goes (`apply`) and how the source says it is
    stale (`is_stale`). Thread-safe: concurrent requests wait for one fetch instead of each asking.
    Neither credentials nor tokens are ever logged, raised or shown in `repr`.
    """

    def __init__(self, *, skew_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.skew_s = skew_s
        self._clock = clock
        self._lock = threading.RLock()
        self._token: str | None = None
        self._expires_at = 0.0
        self._client: ResilientClient | None = None
        self.tokens_fetched = 0

    # -- what a subclass says --------------------------------------------------------------------------

    def fetch(self, client: ResilientClient) -> tuple[str, float]:
        """A new token and its lifetime in seconds."""
        raise NotImplementedError

    def apply(self, request: httpx.Request, token: str) -> None:
        request.headers["Authorization"] = f"Bearer {token}"

    def is_stale(self, response: httpx.Response) -> bool:
        return response.status_code == 401

    def credentials(self) -> tuple[str, ...]:
        """The fixed secrets this flow holds (scrubbed alongside the current token)."""
        return ()

    # -- the machinery ---------------------------------------------------------------------------------

    def bind(self, client: ResilientClient) -> None:
        if self._client is None:
            self._client = client

    def secrets(self) -> tuple[str, ...]:
        return (*self.credentials(), *([self._token] if self._token else []))

    def token(self) -> str:
        """A valid token, from the cache or freshly fetched."""
        with self._lock:
            if self._token is not None and self._clock() < self._expires_at:
                return self._token
            if self._client is None:
                raise RuntimeError(f"{type(self).__name__} is not bound to a ResilientClient (pass it as auth=)")
            token, lifetime = self.fetch(self._client)
            # Renew `skew_s` early so a token never expires in flight; short-lived tokens at half-life.
            usable = lifetime - self.skew_s if lifetime > 2 * self.skew_s else lifetime / 2
            self._token, self._expires_at = token, self._clock() + usable
            self.tokens_fetched += 1
            return token

    def invalidate(self, token: str | None = None) -> None:
        """Forget the cached token (only if it is still `token`, when given: others may have refreshed)."""
        with self._lock:
            if token is None or token == self._token:
                self._token = None
                self._expires_at = 0.0

    def headers(self) -> dict[str, str]:
        """The headers `apply` would set, for callers outside httpx."""
        request = httpx.Request("GET", "http://localhost/")
        self.apply(request, self.token())
        return {k: v for k, v in request.headers.items() if k.lower() != "host"}

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.token()
        self.apply(request, token)
        response = yield request
        if self.is_stale(response):
            self.invalidate(token)
            self.apply(request, self.token())
            yield request

    @staticmethod
    def _answer(body: Any, client: ResilientClient, endpoint: str, key: str) -> str:
        value = body.get(key) if isinstance(body, dict) else None
        if not isinstance(value, str) or not value:
            keys = sorted(body) if isinstance(body, dict) else type(body).__name__
            raise PayloadError(client.source, endpoint, f"token answer has no {key} (got {keys})", method="POST")
        return value


def _lifetime(body: Any, key: str = "expires_in", default: float = 300.0) -> float:
    try:
        return float(body.get(key, default))
    except (TypeError, ValueError, AttributeError):
        return default  # RFC 6749 makes expires_in optional; refresh soon rather than never


class OAuth2ClientCredentials(TokenAuth):
    """OAuth2 client-credentials tokens (RFC 6749 §4.4) as an `httpx.Auth` flow.

    A 401 is worth a new token only when its challenge says the token is invalid (RFC 6750
    ``error="invalid_token"``); a 401 for a wrong API key is not.
    """

    def __init__(
        self,
        token_url: str,
        client_id: str,
        client_secret: str,
        *,
        client: ResilientClient | None = None,
        scope: str | None = None,
        skew_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
        source: str = "oauth",
    ) -> None:
        super().__init__(skew_s=skew_s, clock=clock)
        self.token_url = token_url
        self.client_id = client_id
        self._client_secret = client_secret
        self.scope = scope
        self._own_client = client is None and urlsplit(token_url).scheme in ("http", "https")
        if client is not None:
            self.bind(client)
        elif self._own_client:
            self.bind(ResilientClient(source, ""))

    def __repr__(self) -> str:
        url = _redact_url(self.token_url)
        return f"OAuth2ClientCredentials(token_url={url!r}, client_id={self.client_id!r})"

    def credentials(self) -> tuple[str, ...]:
        return (self._client_secret,)

    def close(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._own_client and self._client is not None:
            self._client.close()

    def is_stale(self, response: httpx.Response) -> bool:
        return response.status_code == 401 and "invalid_token" in response.headers.get("www-authenticate", "")

    def fetch(self, client: ResilientClient) -> tuple[str, float]:
        form = {"grant_type": "client_credentials", "client_id": self.client_id, "client_secret": self._client_secret}
        if self.scope:
            form["scope"] = self.scope
        body = client.post_form(self.token_url, form, authenticate=False)
        endpoint = urlsplit(self.token_url).path or self.token_url
        token = self._answer(body, client, endpoint, "access_token")
        token_type = str(body.get("token_type", "Bearer"))
        if token_type.lower() != "bearer":
            raise PayloadError(
                client.source, endpoint, f"token_type is {token_type!r}, expected 'Bearer'", method="POST"
            )
        lifetime = _lifetime(body)
        log.info("%s: fetched an access token from %s valid for %.0f s", client.source, endpoint, lifetime)
        return token, lifetime


class JwtLogin(TokenAuth):
    """JWT sessions as billing systems hand them out: log in with a user and password for an access
    and a refresh token, refresh the access token when it runs out, and log in again when the refresh
    token is refused. A 401 to a token it issued (revoked, or expired early) first tries the refresh
    token, then a new login, once per request.

    The login posts ``{"username", "password"}`` as JSON to `login_path` and the refresh
    ``{"refresh_token"}`` to `refresh_path`; both answer ``{"access_token", "refresh_token",
    "expires_in"}`` (field names configurable).
    """

    def __init__(
        self,
        username: str,
        password: str,
        *,
        login_path: str = "/auth/login",
        refresh_path: str = "/auth/refresh",
        access_key: str = "access_token",
        refresh_key: str = "refresh_token",
        skew_s: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(skew_s=skew_s, clock=clock)
        self.username = username
        self._password = password
        self.login_path = login_path
        self.refresh_path = refresh_path
        self.access_key = access_key
        self.refresh_key = refresh_key
        self._refresh: str | None = None
        self.logins = 0
        self.refreshes = 0

    def __repr__(self) -> str:
        return f"JwtLogin(username={self.username!r}, login_path={self.login_path!r})"

    def credentials(self) -> tuple[str, ...]:
        return (self._password, *([self._refresh] if self._refresh else []))

    def fetch(self, client: ResilientClient) -> tuple[str, float]:
        if self._refresh is not None:
            try:
                body = client.post_json(self.refresh_path, {self.refresh_key: self._refresh}, authenticate=False)
                self.refreshes += 1
                return self._take(body, client, self.refresh_path)
            except SourceError as error:
                if error.status not in (400, 401, 403):
                    raise
                log.info("%s: refresh token refused (%s); logging in again", client.source, _status_text(error.status))
        body = client.post_json(
            self.login_path, {"username": self.username, "password": self._password}, authenticate=False
        )
        self.logins += 1
        return self._take(body, client, self.login_path)

    def _take(self, body: Any, client: ResilientClient, endpoint: str) -> tuple[str, float]:
        token = self._answer(body, client, endpoint, self.access_key)
        refresh = body.get(self.refresh_key)
        self._refresh = refresh if isinstance(refresh, str) and refresh else None
        return token, _lifetime(body)


class CsrfToken(TokenAuth):
    """The CSRF handshake of SAP-style OData services: a GET with ``X-CSRF-Token: Fetch`` returns a token
    (and a session cookie, which the client's cookie jar keeps) that every modifying request must carry;
    a 403 with ``X-CSRF-Token: Required`` means the token expired and is fetched again once.

    Reads (GET, HEAD, OPTIONS) need no token and are sent as they are.
    """

    SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

    def __init__(
        self,
        fetch_path: str = "/",
        *,
        header: str = "X-CSRF-Token",
        lifetime_s: float = 1800.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(skew_s=0.0, clock=clock)
        self.fetch_path = fetch_path
        self.header = header
        self.lifetime_s = lifetime_s

    def __repr__(self) -> str:
        return f"CsrfToken(fetch_path={self.fetch_path!r})"

    def apply(self, request: httpx.Request, token: str) -> None:
        request.headers[self.header] = token
        if self._client is not None:
            # The request was built before the handshake set the session cookie the token belongs to.
            self._client.add_cookies(request)

    def is_stale(self, response: httpx.Response) -> bool:
        return response.status_code == 403 and response.headers.get(self.header, "").lower() == "required"

    def fetch(self, client: ResilientClient) -> tuple[str, float]:
        # A GET, so this very flow lets it through without a token; other flows of a chain still apply.
        got: dict[str, str] = {}
        client.request("GET", self.fetch_path, headers={self.header: "Fetch"}, decode="none", response_headers=got)
        token = got.get(self.header.lower(), "")
        if not token or token.lower() in ("fetch", "required"):
            raise PayloadError(client.source, self.fetch_path, f"answer carries no {self.header} header to use")
        return token, self.lifetime_s

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if request.method.upper() in self.SAFE_METHODS:
            yield request
            return
        yield from super().auth_flow(request)
