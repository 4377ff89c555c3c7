"""Resilient HTTP for the REST and SOAP sources: retries, Retry-After, a circuit breaker, OAuth2.

Generic on purpose: nothing here knows Dagster or any one source. A source client (for example
`resources/dmama.py`) builds one `ResilientClient` per source and calls `get_json`, `post_form` or
`post_xml`; every failure comes back as a `SourceError` that names the source, the method and the
endpoint path (never the query string, headers or credentials) and says what went wrong.

Retry policy: transport errors (timeouts, refused or reset connections), statuses in
`retry_statuses` and bodies that cannot be decoded (truncated, malformed) are retried up to
`max_retries` times, sleeping `backoff_base_s * backoff_factor ** n` (n = 0, 1, ...) or the server's
`Retry-After` (capped at `max_retry_after_s`). Every attempt also feeds a circuit breaker shared by
all threads using the client, so a source that is down is not hammered by a backfill's workers.
"""

from __future__ import annotations

import email.utils
import json
import logging
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Collection, Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

import httpx

__all__ = [
    "DEFAULT_RETRY_STATUSES",
    "CircuitBreaker",
    "CircuitOpenError",
    "OAuth2ClientCredentials",
    "PayloadError",
    "ResilientClient",
    "SourceError",
]

DEFAULT_RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
_DETAIL_CHARS = 200

log = logging.getLogger(__name__)


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
    """The source answered, but the body could not be decoded (truncated, malformed, wrong shape)."""


class CircuitOpenError(SourceError):
    """Not attempted: the source failed too often in a row and the circuit breaker is open."""

    def _message(self) -> str:
        if self.attempts:  # the circuit opened while this call was retrying
            return super()._message()
        return f"{self.source}: {self.method} {self.endpoint} not attempted: {self.reason}"


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


def _error_detail(response: httpx.Response) -> str:
    """The server's own explanation from an error body (JSON detail/error or a SOAP faultstring)."""
    content = response.content[:65536]
    detail: Any = None
    try:
        body = json.loads(content)
        if isinstance(body, dict):
            detail = body.get("detail") or body.get("error_description") or body.get("message") or body.get("error")
    except (ValueError, UnicodeDecodeError):
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
    """A body that did not decode; the message says where."""


def _decode_json(response: httpx.Response) -> Any:
    content = response.content
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


def _decode_xml(response: httpx.Response) -> ET.Element:
    content = response.content
    if not content:
        raise _DecodeError("empty body, expected XML")
    try:
        # ElementTree resolves no external entities and expat caps entity expansion, so an
        # untrusted body cannot make us fetch files or blow up memory.
        return ET.fromstring(content)
    except ET.ParseError as exc:
        # str(exc) already reads "mismatched tag: line 1, column 345".
        raise _DecodeError(f"body is not well-formed XML: {exc} ({len(content)} bytes)") from None


_DECODERS: dict[str, Callable[[httpx.Response], Any]] = {
    "json": _decode_json,
    "xml": _decode_xml,
    "none": lambda response: response,
}


class ResilientClient:
    """One pooled `httpx.Client` for one source, with retries, backoff, Retry-After and a breaker.

    `auth_headers` is called before every attempt (so a refreshed token is picked up);
    `on_unauthorized(response)` is called once per request on a 401 and returns True when it fixed
    something worth one repeat (an OAuth client invalidating its token). Header values are never
    logged, raised or shown in `repr`.
    """

    def __init__(
        self,
        source: str,
        base_url: str,
        *,
        timeout_s: float = 10.0,
        max_retries: int = 3,
        backoff_base_s: float = 0.5,
        backoff_factor: float = 2.0,
        retry_statuses: Collection[int] = DEFAULT_RETRY_STATUSES,
        max_retry_after_s: float = 60.0,
        verify: bool | str = True,
        max_connections: int = 8,
        headers: Mapping[str, str] | None = None,
        auth_headers: Callable[[], Mapping[str, str]] | None = None,
        on_unauthorized: Callable[[httpx.Response], bool] | None = None,
        breaker: CircuitBreaker | None = None,
        sleep: Callable[[float], None] = time.sleep,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if max_retries < 0:
            raise ValueError(f"{source}: max_retries must be 0 or more, got {max_retries}")
        if timeout_s <= 0:
            raise ValueError(f"{source}: timeout_s must be positive, got {timeout_s}")
        self.source = source
        self.base_url = base_url
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_factor = backoff_factor
        self.retry_statuses = frozenset(retry_statuses)
        self.max_retry_after_s = max_retry_after_s
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self.auth_headers = auth_headers
        self.on_unauthorized = on_unauthorized
        self._sleep = sleep
        self._last_failure = ""
        pool = max(1, max_connections)
        self._http = httpx.Client(
            base_url=base_url,
            headers=dict(headers or {}),
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=pool, max_keepalive_connections=pool),
            verify=verify,
            transport=transport,
            follow_redirects=False,
        )

    def __repr__(self) -> str:
        return f"ResilientClient(source={self.source!r}, base_url={_redact_url(self.base_url)!r})"

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

        `authenticate=False` skips the `auth_headers` and `on_unauthorized` hooks (the token call itself).
        """
        return self.request("POST", path, data=data, headers=headers, decode="json", authenticate=authenticate)

    def post_xml(self, path: str, body: str | bytes, *, headers: Mapping[str, str] | None = None) -> ET.Element:
        """POST an XML document (a SOAP envelope) and return the root element of the answer."""
        content = body.encode("utf-8") if isinstance(body, str) else body
        merged = {"Content-Type": "text/xml; charset=utf-8", **(headers or {})}
        return self.request("POST", path, content=content, headers=merged, decode="xml")

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
    ) -> Any:
        """Send a request with the retry policy and return the decoded body.

        Raises `SourceError` (or `PayloadError`, `CircuitOpenError`) naming source and endpoint.
        """
        decoder = _DECODERS[decode]
        endpoint = urlsplit(path).path or path
        attempts = 0  # requests sent
        failures = 0  # retryable failures, the retry budget
        repeated_unauthorized = False
        while True:
            extra = dict(self.auth_headers()) if authenticate and self.auth_headers is not None else {}
            # Asked after the auth hook: a token fetch is itself a request and may be the half-open trial.
            if not self.breaker.allow():
                raise self._circuit_open(method, endpoint, attempts)
            attempts += 1
            status: int | None = None
            retry_after: float | None = None
            payload_failure = False
            try:
                response = self._http.request(
                    method,
                    path,
                    params=params,
                    data=data,
                    content=content,
                    headers={**extra, **(headers or {})},
                )
            except httpx.TimeoutException as exc:
                reason = f"no answer within {self.timeout_s:g} s ({type(exc).__name__})"
            except httpx.HTTPError as exc:  # refused, reset, protocol or content-decoding errors
                reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            except BaseException:
                # Not a source failure (a bug, an interrupt), but a half-open trial must not stay in flight.
                self.breaker.record_failure()
                raise
            else:
                status = response.status_code
                if status == 401 and authenticate and self.on_unauthorized is not None and not repeated_unauthorized:
                    repeated_unauthorized = True
                    self.breaker.record_success()  # the source is up; our credentials were stale
                    if self.on_unauthorized(response):
                        continue
                if 200 <= status < 300:
                    try:
                        value = decoder(response)
                    except _DecodeError as exc:
                        reason, payload_failure = str(exc), True
                    else:
                        self.breaker.record_success()
                        return value
                elif status in self.retry_statuses and not self._is_client_fault(response, decode):
                    reason = _status_text(status)
                    retry_after = _parse_retry_after(response.headers.get("retry-after"))
                else:
                    # The source answered and said no: retrying cannot change that.
                    self.breaker.record_success()
                    reason = _status_text(status) + _error_detail(response)
                    raise SourceError(self.source, endpoint, reason, status=status, method=method, attempts=attempts)
            self.breaker.record_failure()
            self._last_failure = reason
            failures += 1
            error_type = PayloadError if payload_failure else SourceError
            if failures > self.max_retries:
                raise error_type(self.source, endpoint, reason, status=status, method=method, attempts=attempts)
            if self.breaker.state == CircuitBreaker.OPEN:
                raise self._circuit_open(method, endpoint, attempts)
            if retry_after is not None:
                wait = min(retry_after, self.max_retry_after_s)
            else:
                wait = self.backoff_base_s * self.backoff_factor ** (failures - 1)
            log.warning(
                "%s: %s %s attempt %d of %d failed (%s); retrying in %.2f s",
                self.source,
                method,
                endpoint,
                failures,
                self.max_retries + 1,
                reason,
                wait,
            )
            self._sleep(wait)

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _is_client_fault(response: httpx.Response, decode: str) -> bool:
        """A SOAP 1.1 Client fault rides on HTTP 500 but is the request's fault: do not retry it."""
        if decode != "xml" or response.status_code != 500:
            return False
        fault = _soap_fault(response.content)
        return fault is not None and fault[0].rpartition(":")[2] == "Client"

    def _circuit_open(self, method: str, endpoint: str, attempts: int) -> CircuitOpenError:
        last = f" (last failure: {self._last_failure})" if self._last_failure else ""
        reason = (
            f"circuit open after {self.breaker.failure_threshold} consecutive failures{last}; "
            f"next trial in {self.breaker.retry_in_s():.0f} s"
        )
        return CircuitOpenError(self.source, endpoint, reason, method=method, attempts=attempts)


class OAuth2ClientCredentials:
    """OAuth2 client-credentials tokens, fetched once and cached until `expires_in` minus a skew.

    Thread-safe: concurrent callers wait for one fetch instead of each asking for a token.
    Neither the secret nor the token is ever logged, raised or shown in `repr`.
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
        self.token_url = token_url
        self.client_id = client_id
        self._client_secret = client_secret
        self.scope = scope
        self.skew_s = skew_s
        self._clock = clock
        self._own_client = client is None
        # Without a shared client the token URL must be absolute.
        self._client = client if client is not None else ResilientClient(source, "")
        self._lock = threading.Lock()
        self._token: str | None = None
        self._expires_at = 0.0
        self.tokens_fetched = 0

    def __repr__(self) -> str:
        url = _redact_url(self.token_url)
        return f"OAuth2ClientCredentials(token_url={url!r}, client_id={self.client_id!r})"

    def token(self) -> str:
        """A valid access token, from the cache or freshly fetched."""
        with self._lock:
            if self._token is not None and self._clock() < self._expires_at:
                return self._token
            return self._fetch()

    def headers(self) -> dict[str, str]:
        """The Authorization header carrying the current token."""
        return {"Authorization": f"Bearer {self.token()}"}

    def invalidate(self, token: str | None = None) -> None:
        """Forget the cached token (only if it is still `token`, when given: others may have refreshed)."""
        with self._lock:
            if token is None or token == self._token:
                self._token = None
                self._expires_at = 0.0

    def close(self) -> None:
        """Close the HTTP client if this object created it."""
        if self._own_client:
            self._client.close()

    def _fetch(self) -> str:
        form = {
            "grant_type": "client_credentials",
            "client_id": self.client_id,
            "client_secret": self._client_secret,
        }
        if self.scope:
            form["scope"] = self.scope
        body = self._client.post_form(self.token_url, form, authenticate=False)
        endpoint = urlsplit(self.token_url).path or self.token_url
        source = self._client.source
        if not isinstance(body, dict) or not isinstance(body.get("access_token"), str) or not body["access_token"]:
            keys = sorted(body) if isinstance(body, dict) else type(body).__name__
            raise PayloadError(source, endpoint, f"token answer has no access_token (got {keys})", method="POST")
        token_type = str(body.get("token_type", "Bearer"))
        if token_type.lower() != "bearer":
            raise PayloadError(source, endpoint, f"token_type is {token_type!r}, expected 'Bearer'", method="POST")
        try:
            lifetime = float(body.get("expires_in", 300))
        except (TypeError, ValueError):
            lifetime = 300.0  # RFC 6749 makes expires_in optional; refresh soon rather than never
        # Refresh `skew_s` early so a token never expires in flight; short-lived tokens at half-life.
        usable = lifetime - self.skew_s if lifetime > 2 * self.skew_s else lifetime / 2
        self._token = body["access_token"]
        self._expires_at = self._clock() + usable
        self.tokens_fetched += 1
        log.info("%s: fetched an access token from %s valid for %.0f s", source, endpoint, lifetime)
        return self._token
