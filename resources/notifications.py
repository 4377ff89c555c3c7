"""Operator notifications: a generic JSON webhook, a LINE Messaging API–style push, SMTP email and SMS
through a Thai bulk-SMS gateway (``resources.sms``: parts, numbers, the gateway's answer).

A plain module (no Dagster): the edge collector sends with it directly, and ``resources.notifier.Notifier``
is the thin Dagster resource around it. ``NotificationSender`` tries each configured channel on its
own, retrying transient failures with ``resources.retry.RetryPolicy``, so one channel being down never
stops another; every notification, with each channel's outcome, is appended to a JSON-lines record file
(``<record_dir>/notifications-YYYYMMDD.jsonl``, UTC date).

There is one implementation, asynchronous: ``send_async`` sends the channels concurrently on the caller's
loop (the collector), and ``send`` (a Dagster run) runs the same code to completion on a loop of its own.

Secrets (webhook and LINE tokens, the SMTP password) never appear in a repr, a log line, a record or an
error message: errors are built from status codes and exception types, and scrubbed of every secret
value and URL query string before they leave this module.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import os
import re
import smtplib
import ssl
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator

from resources.retry import RetryPolicy
from resources.sms import SENDER_PATTERN, mask_number, normalise_thai_mobile, parse_reply, sms_parts

__all__ = [
    "SEVERITIES",
    "ChannelOutcome",
    "ChannelSettings",
    "Notification",
    "NotificationOutcome",
    "NotificationSender",
    "notifier_retry_policy",
]

SEVERITIES = ("info", "warning", "critical")
Severity = Literal["info", "warning", "critical"]
_RANK = {name: rank for rank, name in enumerate(SEVERITIES)}
_RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
_LINE_TEXT_LIMIT = 5000  # LINE refuses longer text messages
_DETAIL_CHARS = 200
_QUERY_RE = re.compile(r"(https?://[^\s?#'\"]+)\?[^\s'\"]*")
T = TypeVar("T")

log = logging.getLogger(__name__)


def notifier_retry_policy(retries: int = 3, backoff_base_s: float = 0.5) -> RetryPolicy:
    """The notifier's configuration (``retries`` after the first attempt, the first wait doubling each
    time) as a retry policy."""
    return RetryPolicy(max_attempts=retries + 1, initial_s=backoff_base_s, factor=2.0, max_delay_s=60.0)


@dataclass(frozen=True)
class Notification:
    """What operators are told. ``at`` is when the condition was observed (UTC); ``source`` who saw it
    (``mqtt``, ``modbus``, ``scada_window`` …)."""

    severity: str
    title: str
    message: str
    source: str = "ihub"
    unit_id: str | None = None
    sensor_type: str | None = None
    value: float | None = None
    at: datetime = field(default_factory=lambda: datetime.now(UTC))

    def __post_init__(self) -> None:
        if self.severity not in _RANK:
            raise ValueError(f"notification severity must be one of {', '.join(SEVERITIES)}, got {self.severity!r}")
        if self.at.tzinfo is None:
            raise ValueError(f"notification time {self.at.isoformat()} has no time zone; use UTC")

    def payload(self) -> dict[str, Any]:
        """The webhook body: severity, title, message, source, unit_id, sensor_type, value, at (ISO UTC)."""
        return {
            "severity": self.severity,
            "title": self.title,
            "message": self.message,
            "source": self.source,
            "unit_id": self.unit_id,
            "sensor_type": self.sensor_type,
            "value": self.value,
            "at": self.at.astimezone(UTC).isoformat(timespec="milliseconds"),
        }

    def text(self) -> str:
        """Plain text for chat and email: ``[CRITICAL] title`` then the message."""
        return f"[{self.severity.upper()}] {self.title}\n{self.message}"


@dataclass(frozen=True)
class ChannelOutcome:
    """How one channel fared: delivered or not, after how many attempts, and the last error (scrubbed)."""

    channel: str
    kind: str
    ok: bool
    attempts: int
    status: int | None = None
    error: str | None = None
    elapsed_ms: float = 0.0
    skipped: bool = False


@dataclass(frozen=True)
class NotificationOutcome:
    """A notification and what every channel did with it; ``id`` is also in the record file."""

    id: str
    notification: Notification
    channels: tuple[ChannelOutcome, ...]

    @property
    def delivered(self) -> bool:
        """Every channel that was due (not skipped for severity) delivered it."""
        return all(outcome.ok for outcome in self.channels if not outcome.skipped)

    @property
    def failed(self) -> list[str]:
        return [outcome.channel for outcome in self.channels if not outcome.ok and not outcome.skipped]


class ChannelSettings(BaseModel):
    """One place notifications go. ``kind`` says which fields apply:

    - ``webhook``: ``url`` (POST JSON), optional ``token`` sent as ``Authorization: Bearer``.
    - ``line``: ``token`` (channel access token), ``to`` (user/group ids), ``base_url``.
    - ``smtp``: ``host``, ``port``, ``from_addr``, ``to``, optional ``username``/``password``,
      ``starttls`` (upgrade a plain connection) or ``ssl`` (implicit TLS, usually port 465).
    - ``sms``: ``url`` (the gateway's send endpoint), ``username``/``password`` (API key and secret, HTTP
      basic auth), ``sender`` (the registered sender name), ``to`` (Thai mobile numbers).
    """

    # hide_input_in_errors: a validation error would otherwise print the whole input, tokens and numbers too.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    kind: Literal["webhook", "line", "smtp", "sms"] = Field(description="webhook, line, smtp or sms.")
    name: str = Field(default="", description="Name in records and logs; defaults to the kind.")
    enabled: bool = Field(default=True, description="False keeps the channel configured but sends nothing to it.")
    min_severity: Severity = Field(default="info", description="Lower severities are not sent here.")
    timeout_s: float = Field(default=5.0, gt=0, description="Timeout of one attempt, seconds.")
    url: str | None = Field(default=None, description="webhook: the URL to POST to.")
    token: str | None = Field(
        default=None, repr=False, description="webhook: bearer token; line: channel access token. From the environment."
    )
    base_url: str = Field(default="https://api.line.me", description="line: API base URL.")
    to: list[str] = Field(
        default_factory=list,
        description="line: user or group ids; smtp: recipient addresses; sms: mobile numbers.",
    )
    sender: str | None = Field(default=None, description="sms: the sender name registered with the gateway.")
    host: str | None = Field(default=None, description="smtp: server host.")
    port: int = Field(default=587, description="smtp: server port.")
    starttls: bool = Field(default=True, description="smtp: upgrade the connection with STARTTLS.")
    ssl: bool = Field(default=False, description="smtp: connect with implicit TLS (SMTPS); starttls is then ignored.")
    username: str | None = Field(default=None, repr=False, description="smtp: login user; sms: API key.")
    password: str | None = Field(
        default=None, repr=False, description="smtp: login password; sms: API secret. From the environment."
    )
    from_addr: str | None = Field(default=None, description="smtp: sender address.")
    verify_tls: bool = Field(default=True, description="Verify the server's TLS certificate.")

    @model_validator(mode="after")
    def _fields_for_kind(self) -> Any:
        if not self.enabled:
            return self  # a switched-off channel may wait for its secrets
        label = f"{self.kind} channel" + (f" {self.name!r}" if self.name else "")
        required = {
            "webhook": ("url",),
            "line": ("token", "to"),
            "smtp": ("host", "from_addr", "to"),
            "sms": ("url", "username", "password", "sender", "to"),
        }[self.kind]
        for name in required:
            value = getattr(self, name)
            # A dg.EnvVar (a str subclass) must not be read here: it resolves when the resource starts.
            if value is None or (type(value) in (str, list) and not value):
                raise ValueError(f"{name}: required for a {label}")
        if self.kind == "sms":
            if not SENDER_PATTERN.match(str(self.sender)):
                raise ValueError(
                    f"sender: {self.sender!r} is not a sender name a gateway registers (up to 11 letters, digits "
                    f"or spaces, starting with a letter) for a {label}"
                )
            # Checked here, normalised when sent: the Dagster config form of these settings is frozen.
            for position, number in enumerate(self.to):
                try:
                    normalise_thai_mobile(number)
                except ValueError as exc:
                    raise ValueError(f"to[{position}]: {exc} for a {label}") from None
        for name in ("url", "base_url"):
            value = getattr(self, name)
            if value and not str(value).startswith(("http://", "https://")):
                raise ValueError(f"{name}: must be an http(s) URL for a {label}")
        return self

    @property
    def label(self) -> str:
        return self.name or self.kind

    def __repr__(self) -> str:
        # A webhook URL can carry its key in the query string; the pydantic repr would print it.
        target = _scrub(self.url or "", self.secrets()) if self.kind == "webhook" else self.base_url
        if self.kind == "smtp":
            target = f"{self.host}:{self.port}"
        if self.kind == "sms":
            target = _scrub(self.url or "", self.secrets())
        to = [mask_number(number) for number in self.to] if self.kind == "sms" else self.to
        return f"{type(self).__name__}(kind={self.kind!r}, name={self.label!r}, target={target!r}, to={to!r})"

    __str__ = __repr__

    def secrets(self) -> list[str]:
        # An SMS gateway's API key is half of its credentials; an SMTP user name is not a secret.
        values = (self.token, self.password, self.username if self.kind == "sms" else None)
        # An unresolved dg.EnvVar holds only a variable's name, and refuses to be read as a value.
        return [value for value in values if type(value) is str and value]


@dataclass
class _Attempt:
    ok: bool
    status: int | None = None
    error: str | None = None
    retryable: bool = True


class _RetryableFailure(Exception):
    """An attempt that failed in a way another attempt may fix (tenacity retries on it)."""

    def __init__(self, result: _Attempt) -> None:
        super().__init__(result.error)
        self.result = result


class NotificationSender:
    """Sends operator notifications to every configured channel, with retries, and records each one.

    A channel failing (after its retries) is logged and recorded; it never raises into the caller, so a
    run or the collector goes on. ``record_dir`` None: ``<IHUB_DATA_DIR or .data>/notifications``.
    """

    def __init__(
        self,
        channels: Sequence[ChannelSettings] = (),
        *,
        record_dir: str | os.PathLike[str] | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.channels = list(channels)
        self.record_dir = Path(record_dir) if record_dir else None
        self.retry = retry or notifier_retry_policy()
        self._lock = threading.Lock()
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._stats: dict[str, Any] = {"sent": 0, "delivered": 0, "failed": 0}
        self._channel_stats: dict[str, dict[str, int]] = {}

    def __repr__(self) -> str:
        kinds = ", ".join(channel.label for channel in self.channels)
        return f"NotificationSender(channels=[{kinds}], record_dir={str(self.record_dir or '')!r})"

    __str__ = __repr__

    # ------------------------------------------------------------------------------ sending

    def send(self, notification: Notification) -> NotificationOutcome:
        """Deliver to every channel (blocking the caller), record, and return what happened."""

        async def once() -> NotificationOutcome:
            async with self._new_client() as client:
                return await self._send(notification, client)

        return _run_to_completion(once)

    async def send_async(self, notification: Notification) -> NotificationOutcome:
        """Deliver to every channel concurrently, record, and return what happened."""
        return await self._send(notification, self._pooled_client())

    async def _send(self, notification: Notification, client: httpx.AsyncClient) -> NotificationOutcome:
        outcomes = await asyncio.gather(*(self._deliver(channel, notification, client) for channel in self.channels))
        return self._finish(notification, tuple(outcomes))

    def stats(self) -> dict[str, Any]:
        """Notifications sent, fully delivered and failed so far, and per channel ok/failed counts."""
        with self._lock:
            return {**self._stats, "channels": {name: dict(counts) for name, counts in self._channel_stats.items()}}

    def record_path(self, at: datetime | None = None) -> Path:
        """The record file for the UTC day of ``at`` (default now)."""
        moment = (at or datetime.now(UTC)).astimezone(UTC)
        base = self.record_dir or Path(os.environ.get("IHUB_DATA_DIR", ".data")) / "notifications"
        return base / f"notifications-{moment:%Y%m%d}.jsonl"

    async def aclose(self) -> None:
        """Close the pooled HTTP connections of ``send_async``."""
        client, self._client, self._client_loop = self._client, None, None
        if client is not None:
            await client.aclose()

    # ------------------------------------------------------------------------------ per channel

    async def _deliver(
        self, channel: ChannelSettings, notification: Notification, client: httpx.AsyncClient
    ) -> ChannelOutcome:
        if not channel.enabled or _RANK[notification.severity] < _RANK[channel.min_severity]:
            return ChannelOutcome(channel.label, channel.kind, ok=True, attempts=0, skipped=True)
        # What is still to send: LINE recipients, or SMS parts (a retry resends only the parts not yet accepted).
        pending = (
            [str(i) for i in range(len(sms_parts(notification.text())))] if channel.kind == "sms" else list(channel.to)
        )
        started = time.perf_counter()
        attempts = 0
        result = _Attempt(ok=False)
        try:
            async for attempt in self.retry.async_retrying(retry_if=lambda e: isinstance(e, _RetryableFailure)):
                with attempt:
                    attempts += 1
                    result = await self._attempt(channel, notification, pending, client)
                    if not result.ok and result.retryable:
                        raise _RetryableFailure(result)
        except _RetryableFailure as failure:
            result = failure.result
        return self._outcome(channel, result, attempts, started)

    def _outcome(self, channel: ChannelSettings, result: _Attempt, attempts: int, started: float) -> ChannelOutcome:
        error = _scrub(result.error, channel.secrets()) if result.error else None
        outcome = ChannelOutcome(
            channel=channel.label,
            kind=channel.kind,
            ok=result.ok,
            attempts=attempts,
            status=result.status,
            error=error,
            elapsed_ms=round((time.perf_counter() - started) * 1000, 2),
        )
        if not result.ok:
            log.warning(
                "notifier: %s channel %r failed after %d attempt(s): %s", channel.kind, channel.label, attempts, error
            )
        return outcome

    async def _attempt(
        self, channel: ChannelSettings, notification: Notification, pending: list[str], client: httpx.AsyncClient
    ) -> _Attempt:
        if channel.kind == "smtp":
            return await asyncio.to_thread(_smtp_attempt, channel, notification)
        if channel.kind == "sms":
            return await _sms_attempt_async(client, channel, notification, pending)

        def post(url: str, body: dict[str, Any], headers: dict[str, str]) -> Awaitable[httpx.Response]:
            return client.post(url, json=body, headers=headers, timeout=channel.timeout_s)

        return await _http_attempt_async(post, channel, notification, pending)

    def _new_client(self) -> httpx.AsyncClient:
        _scrub_httpx_logs()
        return httpx.AsyncClient(verify=all(c.verify_tls for c in self.channels))

    def _pooled_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        # A pool belongs to the loop that opened it.
        if self._client is None or self._client_loop is not loop:
            self._client, self._client_loop = self._new_client(), loop
        return self._client

    # ------------------------------------------------------------------------------ records

    def _finish(self, notification: Notification, outcomes: tuple[ChannelOutcome, ...]) -> NotificationOutcome:
        result = NotificationOutcome(id=uuid.uuid4().hex, notification=notification, channels=outcomes)
        with self._lock:
            self._stats["sent"] += 1
            self._stats["delivered" if result.delivered else "failed"] += 1
            for outcome in outcomes:
                if outcome.skipped:
                    continue
                counts = self._channel_stats.setdefault(outcome.channel, {"ok": 0, "failed": 0})
                counts["ok" if outcome.ok else "failed"] += 1
        self._record(result)
        return result

    def _record(self, result: NotificationOutcome) -> None:
        now = datetime.now(UTC)
        record = {
            "id": result.id,
            "recorded_at": now.isoformat(timespec="milliseconds"),
            **result.notification.payload(),
            "delivered": result.delivered,
            "channels": [asdict(outcome) for outcome in result.channels],
        }
        path = self.record_path(now)
        line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            # One O_APPEND write keeps lines whole when several runs record at once.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)
        except OSError as error:
            log.error("notifier: cannot append to the notification record %s: %s", path, error)


def _run_to_completion(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a coroutine to its end from blocking code, also when this thread already runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(lambda: asyncio.run(make())).result()


# ---------------------------------------------------------------------------------------- HTTP


_Request = tuple[str | None, str, dict[str, Any], dict[str, str]]


def _requests(channel: ChannelSettings, notification: Notification, pending: list[str]) -> list[_Request]:
    """(recipient or None, url, body, headers) for each request one attempt sends."""
    if channel.kind == "webhook":
        headers = {"Authorization": f"Bearer {channel.token}"} if channel.token else {}
        return [(None, str(channel.url), notification.payload(), headers)]
    url = f"{channel.base_url.rstrip('/')}/v2/bot/message/push"
    headers = {"Authorization": f"Bearer {channel.token}"}
    text = notification.text()[:_LINE_TEXT_LIMIT]
    return [(to, url, {"to": to, "messages": [{"type": "text", "text": text}]}, headers) for to in pending]


def _judge(response: httpx.Response) -> _Attempt:
    if response.is_success:
        return _Attempt(ok=True, status=response.status_code)
    detail = " ".join(response.text[:_DETAIL_CHARS].split())
    return _Attempt(
        ok=False,
        status=response.status_code,
        error=f"HTTP {response.status_code} from {_where(response.request.url)}" + (f": {detail}" if detail else ""),
        retryable=response.status_code in _RETRY_STATUSES,
    )


def _transport_error(error: Exception, url: str) -> _Attempt:
    return _Attempt(ok=False, error=f"{type(error).__name__} for {_where(httpx.URL(url))}: {error}")


def _merge(results: list[_Attempt]) -> _Attempt:
    failed = [r for r in results if not r.ok]
    if not failed:
        return _Attempt(ok=True, status=results[-1].status if results else None)
    worst = failed[-1]
    return _Attempt(
        ok=False,
        status=worst.status,
        error="; ".join(r.error or "failed" for r in failed),
        retryable=all(r.retryable for r in failed),
    )


async def _http_attempt_async(
    post: Callable[[str, dict[str, Any], dict[str, str]], Awaitable[httpx.Response]],
    channel: ChannelSettings,
    notification: Notification,
    pending: list[str],
) -> _Attempt:
    results = []
    for recipient, url, body, headers in _requests(channel, notification, pending):
        try:
            result = _judge(await post(url, body, headers))
        except httpx.HTTPError as error:
            result = _transport_error(error, url)
        if result.ok and recipient is not None:
            pending.remove(recipient)
        results.append(result)
    return _merge(results)


async def _sms_attempt_async(
    client: httpx.AsyncClient, channel: ChannelSettings, notification: Notification, pending: list[str]
) -> _Attempt:
    """Send the parts still pending, in order, each to every number; a part the gateway took is done."""
    parts = sms_parts(notification.text())
    numbers = ",".join(normalise_thai_mobile(number) for number in channel.to)
    url = str(channel.url)
    results = []
    for key in list(pending):
        form = {"msisdn": numbers, "message": parts[int(key)], "sender": str(channel.sender)}
        try:
            response = await client.post(
                url, data=form, auth=(str(channel.username), str(channel.password)), timeout=channel.timeout_s
            )
        except httpx.HTTPError as error:
            results.append(_transport_error(error, url))
            break  # later parts must not arrive before this one
        result = _judge(response)
        if result.ok:
            try:
                reply = parse_reply(response.json())
            except ValueError as error:
                result = _Attempt(
                    ok=False, status=response.status_code, error=f"SMS gateway {_where(response.request.url)}: {error}"
                )
            else:
                # Accepted for some numbers is sent: resending would give those phones the part twice.
                pending.remove(key)
                if reply.refused:
                    masked = ", ".join(mask_number(n) for n in reply.refused)
                    result = _Attempt(
                        ok=False,
                        status=response.status_code,
                        error=f"SMS gateway refused {len(reply.refused)} number(s) for part {int(key) + 1}: {masked}",
                        retryable=False,
                    )
        results.append(result)
        if not result.ok and result.retryable:
            break
    return _merge(results)


def _where(url: httpx.URL) -> str:
    """Scheme, host, port and path only: a query string or user info may carry a secret."""
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port}{url.path}"


# ---------------------------------------------------------------------------------------- SMTP


def _email(channel: ChannelSettings, notification: Notification) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = f"[{notification.severity.upper()}] {notification.title}"
    message["From"] = str(channel.from_addr)
    message["To"] = ", ".join(channel.to)
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=str(channel.from_addr).rpartition("@")[2] or None)
    details = "\n".join(
        f"{key}: {value}" for key, value in notification.payload().items() if key not in {"title", "message"}
    )
    message.set_content(f"{notification.message}\n\n{details}\n")
    return message


def _smtp_attempt(channel: ChannelSettings, notification: Notification) -> _Attempt:
    context = ssl.create_default_context()
    if not channel.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    host, port = str(channel.host), channel.port
    try:
        if channel.ssl:
            connection: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=channel.timeout_s, context=context)
        else:
            connection = smtplib.SMTP(host, port, timeout=channel.timeout_s)
        with connection:
            connection.ehlo()
            # Implicit TLS already encrypts; STARTTLS on top of it is refused by servers.
            if channel.starttls and not channel.ssl:
                connection.starttls(context=context)
                connection.ehlo()
            if channel.username:
                connection.login(channel.username, channel.password or "")
            refused = connection.send_message(_email(channel, notification))
    except smtplib.SMTPAuthenticationError as error:
        return _Attempt(ok=False, status=error.smtp_code, error=f"SMTP login refused by {host}:{port}", retryable=False)
    except smtplib.SMTPResponseException as error:
        reply = error.smtp_error.decode(errors="replace") if isinstance(error.smtp_error, bytes) else error.smtp_error
        return _Attempt(
            ok=False,
            status=error.smtp_code,
            error=f"SMTP {error.smtp_code} from {host}:{port}: {str(reply)[:_DETAIL_CHARS]}",
            retryable=400 <= error.smtp_code < 500,
        )
    except smtplib.SMTPRecipientsRefused as error:
        return _Attempt(
            ok=False, error=f"SMTP {host}:{port} refused every recipient: {sorted(error.recipients)}", retryable=False
        )
    except smtplib.SMTPNotSupportedError as error:
        return _Attempt(ok=False, error=f"SMTP {host}:{port}: {error}", retryable=False)
    except (smtplib.SMTPException, OSError) as error:
        return _Attempt(ok=False, error=f"{type(error).__name__} talking to SMTP {host}:{port}: {error}")
    if refused:
        return _Attempt(
            ok=False, error=f"SMTP {host}:{port} refused some recipients: {sorted(refused)}", retryable=False
        )
    return _Attempt(ok=True, status=250)


class _ScrubQueryStrings(logging.Filter):
    """httpx logs every request's full URL at INFO; a webhook URL may carry its key in the query."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "?" in message:
            record.msg, record.args = _QUERY_RE.sub(r"\1?…", message), None
        return True


def _scrub_httpx_logs() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _ScrubQueryStrings) for f in logger.filters):
        logger.addFilter(_ScrubQueryStrings())


def _scrub(text: str, secrets: list[str]) -> str:
    text = _QUERY_RE.sub(r"\1?…", text)
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
