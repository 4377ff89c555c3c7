"""Outbound delivery: messages the hub sends to other systems, exactly once in effect, with a ledger.

A `Message` is what the hub has to say (an anomaly alert to billing, a pump downtime or a plan line to the
ERP). Its **idempotency key** is derived from its identity only — sha256 of target, kind and business key
(the DMA and night, the meter and day, the pump and start, the plan line), never of its payload or of the
time it is sent — so every run that finds the same fact builds the same key.

`deliver` sends a batch to a `Destination` through the source's own client (`BillingClient`,
`ErpODataClient`: the shared `RetryPolicy`, JWT or CSRF, secrets scrubbed) with the key in the header the
target honours (``Idempotency-Key`` for billing, ``Repeatability-Request-ID`` for the ERP). The receiver
stores a key once and answers a repeat with what it first stored. Exactly once follows from the two:

- the hub sends at least once: a message is sent until the ledger says it was delivered (retries within a
  run, re-runs across runs; a crash between the target's commit and the ledger write only means it is sent
  again on the next run);
- the target stores at most once per key: a retry after a commit (an answer lost, a 500 after commit)
  comes back as the original (``replayed``), not a second record.

The **ledger** (``outbound.deliveries``) has one row per message: what, to whom, when, attempts, runs,
result, HTTP status, the id the target gave it. A run reads its scope's ledger first and skips what was
delivered; it resends what is dead. **Dead letters** (``outbound.dead_letters``) are the messages whose last
delivery failed: a 4xx the target will not change its mind about (``rejected``), or a transient failure
that outlasted the retries (``retries_exhausted``, ``circuit_open``). They are resent, from the payload
kept in the table, whenever the scope runs again, and leave the table once delivered.

Both tables are written once per run, in a ``finally``, so an interrupted run still records what it
delivered. No header value (token, CSRF token, password) is ever recorded; error texts come from the
clients, which scrub them.
"""

from __future__ import annotations

import email.utils
import hashlib
import io
import json
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

import polars as pl

from contracts.outbound import DEAD_LETTERS, DELIVERIES
from resources.billing import ALERTS_PATH, BillingClient
from resources.erp import ErpODataClient
from resources.http import CircuitOpenError, PayloadError, SourceError
from resources.identifiers import identifier_problem
from resources.lake import Lake

__all__ = [
    "BillingAlerts",
    "DeliveryReport",
    "Destination",
    "ErpEntities",
    "Message",
    "Receipt",
    "deliver",
    "idempotency_key",
    "read_ledger",
]

KEY_VERSION = "ihub-outbound/v1"  # part of every key: a change of the key recipe must change every key
REPEATABILITY_HEADER = "Repeatability-Request-ID"
log = logging.getLogger(__name__)


def idempotency_key(target: str, kind: str, business_key: str) -> str:
    """The message's key: sha256 (hex) of what identifies it, so every run derives the same one."""
    return hashlib.sha256(f"{KEY_VERSION}\n{target}\n{kind}\n{business_key}".encode()).hexdigest()


@dataclass(frozen=True)
class Message:
    """One thing to tell another system: ``kind`` and ``business_key`` say what it is about, ``payload``
    is the JSON body (business data only)."""

    target: str
    kind: str
    business_key: str
    payload: Mapping[str, Any]

    @property
    def key(self) -> str:
        return idempotency_key(self.target, self.kind, self.business_key)

    @property
    def body(self) -> str:
        return json.dumps(self.payload, sort_keys=True, separators=(",", ":"), default=str)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.body.encode()).hexdigest()


@dataclass(frozen=True)
class Receipt:
    """What the target answered to a delivered message."""

    status: int
    response_id: str
    attempts: int
    replayed: bool


class Destination(Protocol):
    """Where messages go: a target name, the path a message is POSTed to, and how to send one."""

    target: str

    def endpoint(self, message: Message) -> str: ...

    def send(self, message: Message, first_sent: datetime) -> Receipt: ...


class BillingAlerts:
    """Anomaly alerts to billing: ``POST /api/v1/anomaly-alerts`` with ``Idempotency-Key`` (JWT session)."""

    target = "billing"

    def __init__(self, billing: BillingClient) -> None:
        self.billing = billing

    def endpoint(self, message: Message) -> str:
        return ALERTS_PATH

    def send(self, message: Message, first_sent: datetime) -> Receipt:
        info: dict[str, Any] = {}
        headers: dict[str, str] = {}
        body = self.billing.post_alert(message.payload, message.key, response_info=info, response_headers=headers)
        replayed = headers.get("idempotent-replayed", "").lower() == "true"
        return Receipt(int(info["status"]), str(body["alert_id"]), int(info["attempts"]), replayed)


class ErpEntities:
    """Creates in one ERP OData entity set (CSRF handshake), repeatable by ``Repeatability-Request-ID``."""

    target = "erp"

    def __init__(self, erp: ErpODataClient, entity_set: str, id_property: str) -> None:
        self.erp = erp
        self.entity_set = entity_set
        self.id_property = id_property

    def endpoint(self, message: Message) -> str:
        return f"/{self.entity_set}"

    def send(self, message: Message, first_sent: datetime) -> Receipt:
        info: dict[str, Any] = {}
        got: dict[str, str] = {}
        headers = {
            REPEATABILITY_HEADER: message.key,
            # OData repeatable requests: when the first copy went out, so the service can tell a late retry.
            "Repeatability-First-Sent": email.utils.format_datetime(first_sent.astimezone(UTC), usegmt=True),
        }
        created = self.erp.create(
            self.entity_set, message.payload, headers=headers, response_info=info, response_headers=got
        )
        status = int(info["status"])
        return Receipt(status, str(created.get(self.id_property, "")), int(info["attempts"]), status == 200)


@dataclass
class DeliveryReport:
    """What one run did with its messages, and the ledger and dead letters of its scope after it."""

    scope: str
    messages: int = 0
    delivered: int = 0  # stored by the target in this run (new, or a dead letter finally through)
    replayed: int = 0  # the target already held the key and returned the original
    skipped: int = 0  # delivered by an earlier run: not sent again
    dead: int = 0  # undeliverable after this run
    resent_dead: int = 0  # dead letters of earlier runs sent again in this run (delivered or not)
    changed_after_delivery: int = 0  # delivered earlier, but this run computed another payload for the key
    attempts: int = 0  # HTTP requests this run sent
    lines: list[str] = field(default_factory=list)  # one per message sent, for logs and the demo
    ledger: pl.DataFrame = field(default_factory=DELIVERIES.empty, repr=False)
    dead_letters: pl.DataFrame = field(default_factory=DEAD_LETTERS.empty, repr=False)

    def metadata(self) -> dict[str, Any]:
        """Figures for the asset's materialization."""
        return {
            "ledger_scope": self.scope,
            "messages": self.messages,
            "delivered": self.delivered,
            "replayed_by_target": self.replayed,
            "skipped_already_delivered": self.skipped,
            "dead_letters": self.dead,
            "dead_letters_resent": self.resent_dead,
            "changed_after_delivery": self.changed_after_delivery,
            "http_attempts": self.attempts,
            "dagster/row_count": self.ledger.height,
        }


def read_ledger(lake: Lake, scope: str) -> pl.DataFrame:
    """The ledger rows of one scope (empty before its first run)."""
    key = f"{lake.table_key(DELIVERIES, scope)}/snapshot.parquet"
    if not lake.storage.exists(key):
        return DELIVERIES.empty()
    # Only the scope's own file: a year of daily scopes is a thousand files nobody needs to open here.
    return DELIVERIES.conform(pl.read_parquet(io.BytesIO(lake.storage.read(key))))


def deliver(
    messages: Iterable[Message],
    destination: Destination,
    lake: Lake,
    scope: str,
    *,
    run_id: str,
    clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    say: Callable[[str], None] | None = None,
) -> DeliveryReport:
    """Send what the ledger of ``scope`` does not hold as delivered (and every dead letter of the scope),
    record each outcome, and return the report. Raises only what is not a delivery failure (a bug, an
    interrupt), after the ledger is written."""
    problem = identifier_problem(scope)
    if problem is not None:
        raise ValueError(f"outbound: ledger scope {scope!r} {problem}")
    say = say or log.info
    report = DeliveryReport(scope)
    before = read_ledger(lake, scope)
    rows: dict[str, dict[str, Any]] = {row["idempotency_key"]: row for row in before.iter_rows(named=True)}
    batch: dict[str, Message] = {}
    for message in messages:
        if message.target != destination.target:
            raise ValueError(f"outbound: a {message.target} message cannot go to {destination.target}")
        batch.setdefault(message.key, message)  # the same fact found twice is one message
    # A dead letter is resent from the payload it was kept with, even if this run no longer finds its fact.
    for key, row in rows.items():
        if row["result"] == "dead" and key not in batch:
            batch[key] = Message(row["target"], row["kind"], row["business_key"], json.loads(row["payload"]))
    report.messages = len(batch)
    try:
        for key, message in batch.items():
            prior = rows.get(key)
            if prior is not None and prior["result"] == "delivered":
                report.skipped += 1
                if prior["payload_sha256"] != message.digest:
                    report.changed_after_delivery += 1
                continue
            if prior is not None:
                report.resent_dead += 1
            rows[key] = _send(message, destination, prior, scope, run_id, clock, report, say)
    finally:
        _write(lake, scope, rows, report)
    return report


def _send(
    message: Message,
    destination: Destination,
    prior: dict[str, Any] | None,
    scope: str,
    run_id: str,
    clock: Callable[[], datetime],
    report: DeliveryReport,
    say: Callable[[str], None],
) -> dict[str, Any]:
    now = clock()
    first = prior["first_attempt_at"] if prior is not None else now
    row: dict[str, Any] = {
        "ledger_scope": scope,
        "idempotency_key": message.key,
        "target": message.target,
        "kind": message.kind,
        "business_key": message.business_key,
        "endpoint": destination.endpoint(message),
        "payload": message.body,
        "payload_sha256": message.digest,
        "first_attempt_at": first,
        "last_attempt_at": now,
        "runs": (prior["runs"] if prior is not None else 0) + 1,
        "last_run_id": run_id,
    }
    earlier = prior["attempts"] if prior is not None else 0
    what = f"{message.target} ← {message.kind} {message.business_key}"
    try:
        receipt = destination.send(message, first)
    except SourceError as error:
        status = error.status
        if isinstance(error, CircuitOpenError):
            reason = "circuit_open"
        elif isinstance(error, PayloadError):
            reason = "bad_answer"  # it may have been stored: resending with the key returns the original
        else:
            reason = _reason_of(status)
        attempts = 0 if isinstance(error, CircuitOpenError) else max(1, error.attempts)
        report.attempts += attempts
        report.dead += 1
        row.update(
            delivered_at=None,
            attempts=earlier + attempts,
            result="dead",
            http_status=status,
            response_id=None,
            replayed=False,
            error=str(error),
            dead_reason=reason,
        )
        report.lines.append(f"{what}: DEAD ({reason}, HTTP {status or '-'}, {attempts} attempts) {error.reason}")
        say(report.lines[-1])
        return row
    report.attempts += receipt.attempts
    report.delivered += 1
    report.replayed += receipt.replayed
    row.update(
        delivered_at=clock(),
        attempts=earlier + receipt.attempts,
        result="delivered",
        http_status=receipt.status,
        response_id=receipt.response_id,
        replayed=receipt.replayed,
        error=None,
        dead_reason=None,
    )
    again = ", the target already had it" if receipt.replayed else ""
    tries = "attempt" if receipt.attempts == 1 else "attempts"
    report.lines.append(
        f"{what}: delivered, HTTP {receipt.status}, id {receipt.response_id} ({receipt.attempts} {tries}{again})"
    )
    say(report.lines[-1])
    return row


def _write(lake: Lake, scope: str, rows: dict[str, dict[str, Any]], report: DeliveryReport) -> None:
    ordered = sorted(rows.values(), key=lambda r: (r["first_attempt_at"], r["kind"], r["business_key"]))
    ledger = pl.DataFrame([{c: r.get(c) for c in DELIVERIES.column_names} for r in ordered], schema=DELIVERIES.schema)
    dead = [r for r in ordered if r["result"] == "dead"]
    letters = pl.DataFrame(
        [
            {
                **{c: r.get(c) for c in DEAD_LETTERS.column_names},
                # A dead letter read back from the ledger carries no reason column: say why from its status.
                "dead_reason": r.get("dead_reason") or _reason_of(r.get("http_status")),
                "dead_at": r["last_attempt_at"],
            }
            for r in dead
        ],
        schema=DEAD_LETTERS.schema,
    )
    report.ledger = lake.replace_snapshot(DELIVERIES, ledger, static_key=scope).frame
    report.dead_letters = lake.replace_snapshot(DEAD_LETTERS, letters, static_key=scope).frame
    report.dead = letters.height


def _reason_of(status: int | None) -> str:
    """A 4xx other than 408 and 429 is the target refusing the message: resending it unchanged cannot help."""
    refused = status is not None and 400 <= status < 500 and status not in (408, 429)
    return "rejected" if refused else "retries_exhausted"
