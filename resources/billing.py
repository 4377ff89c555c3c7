"""Billing client: the customer billing system over REST JSON with JWT sessions, as Dagster resources.

`BillingClient` logs in with a user and password (``JwtLogin``: access and refresh tokens, renewed before
they expire, a refresh and then a new login when the source answers 401), pages through the daily meter
readings and the monthly consumption (``iter_pages``) and through the customers changed since an instant
(an opaque page cursor). It returns rows as the source sent them; typing and rejecting is
``quality/conform.py``'s job. Every failure is a ``resources.http.SourceError`` naming the endpoint, with
the password and the tokens scrubbed out.

`CustomerPseudonymizer` is where personal data stops: customer rows lose their name and address, and
their phone number becomes a keyed hash (HMAC-SHA256 with ``BILLING_PII_HASH_KEY``), before anything else
sees them, so no raw personal value reaches the lake, its rejects, a log line or run metadata.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from resources.http import JwtLogin, PayloadError, ResilientClient, Secrets, check_secret

__all__ = ["PII_DROPPED", "PII_HASHED", "BillingClient", "CustomerChanges", "CustomerPseudonymizer"]

SOURCE = "billing"
READINGS_PATH = "/api/v1/meter-readings"
MONTHLY_PATH = "/api/v1/consumption/monthly"
CUSTOMERS_PATH = "/api/v1/customers"
ALERTS_PATH = "/api/v1/anomaly-alerts"
MAX_DAYS_PER_REQUEST = 92  # the API refuses longer ranges; longer asks are split
# Personal fields of a customer record: dropped at ingestion, or kept only as a keyed hash.
PII_DROPPED = ("name", "address")
PII_HASHED = {"phone": "phone_hash"}
MIN_HASH_KEY_CHARS = 16

Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class CustomerChanges:
    """One incremental listing: the records, the instant it is complete up to, and how many pages it took."""

    rows: Rows
    as_of: datetime
    pages: int


class BillingClient(dg.ConfigurableResource):
    """The billing system: daily meter readings, monthly billed consumption, customer records.

    Logs in for a JWT and keeps it fresh; retries transient failures with backoff, waits out 429 answers
    as their ``Retry-After`` says within a budget, and bounds each answer in time and size.
    """

    base_url: str = Field(description="Base URL of the billing API (BILLING_BASE_URL).")
    username: str = Field(description="Integration user of the billing API (BILLING_USERNAME).")
    password: str = Field(description="Its password (BILLING_PASSWORD); never logged or shown.")
    timeout_s: float = Field(default=10.0, description="Timeout per network read, seconds.")
    deadline_s: float = Field(default=120.0, description="Total time one request may take, seconds.")
    max_body_mb: int = Field(default=32, description="Largest answer accepted, MiB.")
    max_retries: int = Field(default=3, description="Retries after the first attempt for transient failures.")
    backoff_base_s: float = Field(default=0.5, description="First retry wait; doubles on each further retry.")
    rate_limit_budget_s: float = Field(
        default=300.0, description="How long one request may keep waiting out 429 / Retry-After answers."
    )
    page_size: int = Field(default=500, ge=1, le=1000, description="Rows asked for per page.")
    days_per_request: int = Field(
        default=31, ge=1, le=MAX_DAYS_PER_REQUEST, description="Days of readings asked for in one paged listing."
    )

    _http: ResilientClient | None = PrivateAttr(default=None)
    _jwt: JwtLogin | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _sleep: Callable[[float], None] = PrivateAttr(default=time.sleep)
    _clock: Callable[[], float] = PrivateAttr(default=time.monotonic)  # the token lifetimes' clock (tests move it)

    def __repr__(self) -> str:
        return f"BillingClient(base_url={self.base_url!r}, username={self.username!r})"  # never the password

    __str__ = __repr__

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            http, self._http, self._jwt = self._http, None, None
        if http is not None:
            http.close()

    @property
    def session(self) -> JwtLogin:
        """The JWT session (its ``logins`` and ``refreshes`` counts show how often it had to renew)."""
        self._client()
        assert self._jwt is not None
        return self._jwt

    @property
    def rate_limit_waits(self) -> int:
        """How often the source asked this client to slow down (429 or Retry-After) so far."""
        return self._client().limiter.deferrals

    def _client(self) -> ResilientClient:
        with self._lock:
            if self._http is None:
                check_secret(self.password, "BILLING_PASSWORD")
                if not self.base_url.startswith(("http://", "https://")):
                    raise ValueError(f"BillingClient.base_url must be an http(s) URL, got {self.base_url!r}")
                self._jwt = JwtLogin(self.username, self.password, clock=self._clock)
                self._http = ResilientClient(
                    SOURCE,
                    self.base_url,
                    timeout_s=self.timeout_s,
                    deadline_s=self.deadline_s,
                    max_body_bytes=self.max_body_mb * 1024 * 1024,
                    max_retries=self.max_retries,
                    backoff_base_s=self.backoff_base_s,
                    rate_limit_budget_s=self.rate_limit_budget_s,
                    max_connections=2,
                    auth=self._jwt,
                    secrets=[self.password],
                    sleep=self._sleep,
                )
            return self._http

    def _scrubbed(self, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except BaseException as exc:
            cleaned = Secrets([self.password]).clean(exc)
            if cleaned is None:
                raise
        raise cleaned

    def _pages(self, path: str, params: dict[str, Any]) -> Rows:
        rows: Rows = []
        http = self._client()
        for items in http.iter_pages(path, {**params, "page_size": self.page_size}, page_param="page"):
            rows.extend(items)
        return rows

    def meter_readings(self, day_from: date, day_to: date) -> Rows:
        """The closing register of every billed meter for each UTC day in ``[day_from, day_to)``, as sent;
        asked for ``days_per_request`` days at a time."""

        def fetch() -> Rows:
            rows: Rows = []
            start = day_from
            while start < day_to:
                end = min(day_to, start + timedelta(days=self.days_per_request))
                rows.extend(self._pages(READINGS_PATH, {"date_from": start.isoformat(), "date_to": end.isoformat()}))
                start = end
            return rows

        return self._scrubbed(fetch)

    def monthly_consumption(self, month: str, level: str) -> Rows:
        """Billed consumption of the UTC month ``YYYY-MM`` per ``customer`` or per ``dma``, as sent."""
        if level not in ("dma", "customer"):
            raise ValueError(f"level must be 'dma' or 'customer', got {level!r}")
        return self._scrubbed(lambda: self._pages(MONTHLY_PATH, {"month": month, "level": level}))

    def customers_changed(self, changed_since: datetime | None, *, max_pages: int = 10_000) -> CustomerChanges:
        """Customer records changed after ``changed_since`` (every customer when None), personal data still
        in them, with the ``as_of`` instant the listing is complete up to (the next call's ``changed_since``)."""

        def fetch() -> CustomerChanges:
            http = self._client()
            params: dict[str, Any] = {"limit": self.page_size}
            if changed_since is not None:
                params["changed_since"] = changed_since.astimezone(UTC).isoformat().replace("+00:00", "Z")
            rows: Rows = []
            seen: set[str] = set()
            as_of: datetime | None = None
            for page in range(1, max_pages + 1):
                body = http.get_json(CUSTOMERS_PATH, params)
                if not isinstance(body, dict) or not isinstance(body.get("items"), list):
                    raise PayloadError(SOURCE, CUSTOMERS_PATH, f"page {page}: expected an object with an 'items' list")
                stamp = _instant(body.get("as_of"))
                if stamp is None:
                    raise PayloadError(
                        SOURCE, CUSTOMERS_PATH, f"page {page}: 'as_of' is {body.get('as_of')!r}, expected an instant"
                    )
                if as_of is not None and stamp != as_of:
                    raise PayloadError(
                        SOURCE, CUSTOMERS_PATH, f"page {page}: as_of moved from {as_of:%Y-%m-%dT%H:%M:%S}Z mid-listing"
                    )
                as_of = stamp
                rows.extend(body["items"])
                following = body.get("next_cursor")
                if following is None:
                    return CustomerChanges(rows, as_of, page)
                if not isinstance(following, str) or not following or following in seen:
                    raise PayloadError(
                        SOURCE,
                        CUSTOMERS_PATH,
                        f"page {page}: next_cursor repeats or is not a cursor; paging would loop",
                    )
                seen.add(following)
                params = {"limit": self.page_size, "cursor": following}
            raise PayloadError(SOURCE, CUSTOMERS_PATH, f"more than {max_pages} pages; the paging never ended")

        return self._scrubbed(fetch)

    def post_alert(
        self,
        alert: Mapping[str, Any],
        idempotency_key: str,
        *,
        response_info: dict[str, Any] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """POST an anomaly alert with its ``Idempotency-Key`` (retried with the same key, so a retry after
        billing committed returns the alert first stored); returns the stored alert. ``response_info``
        receives the answer's status and the attempts it took."""

        def send() -> dict[str, Any]:
            body = self._client().post_json(
                ALERTS_PATH,
                dict(alert),
                headers={"Idempotency-Key": idempotency_key},
                response_info=response_info,
                response_headers=response_headers,
            )
            if not isinstance(body, dict) or not isinstance(body.get("alert_id"), str):
                raise PayloadError(SOURCE, ALERTS_PATH, "the answer to an alert has no alert_id", method="POST")
            return body

        return self._scrubbed(send)


def _instant(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed.astimezone(UTC) if parsed.tzinfo is not None else None


class CustomerPseudonymizer(dg.ConfigurableResource):
    """Drops the personal fields of customer records (name, address) and replaces the phone number by
    HMAC-SHA256 of its E.164 form, keyed with ``BILLING_PII_HASH_KEY``: the same number always gives the
    same hash under one key (customers can still be matched), and without the key it cannot be guessed
    back from the hash by trying every Thai phone number."""

    hash_key: str = Field(description="Secret key of the phone hash (BILLING_PII_HASH_KEY); never logged.")

    def __repr__(self) -> str:
        return "CustomerPseudonymizer()"

    __str__ = __repr__

    def _key(self) -> bytes:
        check_secret(self.hash_key, "BILLING_PII_HASH_KEY")
        if len(self.hash_key) < MIN_HASH_KEY_CHARS:
            raise ValueError(
                f"BILLING_PII_HASH_KEY must be at least {MIN_HASH_KEY_CHARS} characters (a random secret), "
                f"got {len(self.hash_key)}"
            )
        return self.hash_key.encode()

    @property
    def key_id(self) -> str:
        """A fingerprint of the key (not the key): when it changes, stored hashes no longer match new ones."""
        return hmac.new(self._key(), b"ihub billing pii key id", hashlib.sha256).hexdigest()[:12]

    def hash_phone(self, phone: Any) -> str | None:
        """HMAC-SHA256 (hex) of the number in E.164 form (``081-234-5678`` and ``+66812345678`` agree)."""
        normal = normalize_phone(phone)
        return None if normal is None else hmac.new(self._key(), normal.encode(), hashlib.sha256).hexdigest()

    def pseudonymize(self, rows: Iterable[Any]) -> Rows:
        """The rows without name and address, with ``phone_hash`` instead of ``phone``; other fields as sent."""
        key = self._key()
        out: Rows = []
        for row in rows:
            if not isinstance(row, dict):
                out.append({"_not_an_object": type(row).__name__})  # never the value itself: it may be personal
                continue
            kept = {k: v for k, v in row.items() if k not in PII_DROPPED and k not in PII_HASHED}
            for field, hashed in PII_HASHED.items():
                normal = normalize_phone(row.get(field))
                kept[hashed] = None if normal is None else hmac.new(key, normal.encode(), hashlib.sha256).hexdigest()
            out.append(kept)
        return out


_NOT_DIGITS = re.compile(r"[^0-9]")


def normalize_phone(phone: Any) -> str | None:
    """A Thai phone number in E.164 (``+66…``); None for no number."""
    if phone is None:
        return None
    digits = _NOT_DIGITS.sub("", str(phone))
    if not digits:
        return None
    if digits.startswith("66"):
        return "+" + digits
    return "+66" + digits.removeprefix("0")
