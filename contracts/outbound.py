"""The outbound contract: what the hub sent to other systems, and what it could not deliver.

Two lake tables, written by ``resources/outbound.py`` for every outbound asset:

- ``outbound.deliveries``: the ledger, one row per message (its idempotency key), with what was sent, to
  whom, when, how many HTTP attempts it took over how many runs, the result, the HTTP status and the id the
  receiving system gave it. A re-run reads it to skip what was delivered.
- ``outbound.dead_letters``: the messages whose last delivery failed (a refusal that resending cannot
  change, or a transient failure that outlasted the retries), with the reason. A re-run sends them again;
  once delivered they leave this table (the ledger keeps their history).

Both are cut by ``ledger_scope`` (one file per asset partition, or per plan), so runs of different
partitions never write the same file. Secrets never reach either table: errors are scrubbed by the HTTP
client, and headers (tokens, CSRF) are not recorded at all.
"""

import dagster as dg
import polars as pl

from resources.lake import Column, LakeTable

UTC_TIME = pl.Datetime("us", "UTC")

BILLING_ALERTS_KEY = dg.AssetKey(["outbound", "billing_anomaly_alerts"])
ERP_PUMP_DOWNTIME_KEY = dg.AssetKey(["outbound", "erp_pump_downtime"])
ERP_PLAN_CONFIRMATIONS_KEY = dg.AssetKey(["outbound", "erp_plan_confirmations"])

RESULTS = ("delivered", "dead")
DEAD_REASONS = ("rejected", "retries_exhausted", "circuit_open", "bad_answer")

_SCOPE = Column(
    "ledger_scope",
    pl.String(),
    "Which run's messages the row belongs to: the asset and its partition (or plan), e.g. "
    "billing_anomaly_alerts.2026-03-01; one lake file per scope.",
    nullable=False,
    identifier=True,
)
_IDENTITY = (
    Column(
        "idempotency_key",
        pl.String(),
        "sha256 of target, kind and business key: the same message always has the same key, and the receiver "
        "stores a key once (sent as the Idempotency-Key or Repeatability-Request-ID header).",
        nullable=False,
    ),
    Column("target", pl.String(), "System the message goes to: billing or erp.", nullable=False),
    Column(
        "kind",
        pl.String(),
        "What the message says: leak_suspicion, stopped_meter, reverse_flow, meter_rollover, pump_downtime, "
        "plan_production, plan_shipment.",
        nullable=False,
    ),
    Column(
        "business_key",
        pl.String(),
        "What the message is about, in domain words (DMA and night, meter and day, pump and start, plan line).",
        nullable=False,
    ),
    Column("endpoint", pl.String(), "Path the message is POSTed to on the target.", nullable=False),
    Column("payload", pl.String(), "The JSON body sent (business data only; never credentials).", nullable=False),
    Column(
        "payload_sha256",
        pl.String(),
        "sha256 of the payload as first delivered; a later run computing another payload for a delivered "
        "key does not resend it (the receiver keeps the first) and counts it as changed_after_delivery.",
        nullable=False,
    ),
)

DELIVERIES = LakeTable(
    layer="outbound",
    name="deliveries",
    description=(
        "Ledger of every message the hub sent to another system (anomaly alerts to billing, pump downtime and "
        "supply plan confirmations to the ERP): one row per message and idempotency key, with its latest result. "
        "A re-run skips the delivered rows and resends the dead ones, with the same key."
    ),
    columns=(
        _SCOPE,
        *_IDENTITY,
        Column("first_attempt_at", UTC_TIME, "When the message was first sent, UTC.", nullable=False),
        Column("last_attempt_at", UTC_TIME, "When it was last sent, UTC.", nullable=False),
        Column("delivered_at", UTC_TIME, "When the target accepted it, UTC; empty while undelivered."),
        Column(
            "attempts",
            pl.Int64(),
            "HTTP requests sent for it over every run (retries included).",
            nullable=False,
        ),
        Column("runs", pl.Int64(), "Runs that tried to send it.", nullable=False),
        Column("result", pl.String(), "delivered or dead (see outbound.dead_letters).", nullable=False),
        Column("http_status", pl.Int64(), "HTTP status of the last answer; empty when none came back."),
        Column(
            "response_id",
            pl.String(),
            "Id the target gave the message (billing's alert id, the ERP entity's key); the same on a replay.",
        ),
        Column(
            "replayed",
            pl.Boolean(),
            "The target answered that it already held this key (a retry after it had committed) and returned "
            "the original, storing nothing new.",
            nullable=False,
        ),
        Column("error", pl.String(), "Why the last attempt failed (secrets scrubbed); empty when delivered."),
        Column("last_run_id", pl.String(), "Dagster run that sent it last.", nullable=False),
    ),
    key=("idempotency_key",),
    static_column="ledger_scope",
)

DEAD_LETTERS = LakeTable(
    layer="outbound",
    name="dead_letters",
    description=(
        "Messages the hub could not deliver: refused by the target (a 4xx that resending cannot change, until "
        "someone fixes the cause) or still failing after every retry. Re-running the asset partition resends "
        "them with their idempotency key; a delivered message leaves this table."
    ),
    columns=(
        _SCOPE,
        *_IDENTITY,
        Column(
            "dead_reason",
            pl.String(),
            "rejected (the target refused it), retries_exhausted, circuit_open (the target was down), or "
            "bad_answer (an answer that could not be read; the target may hold it, and a resend returns it).",
            nullable=False,
        ),
        Column("http_status", pl.Int64(), "HTTP status of the last answer; empty when none came back."),
        Column("error", pl.String(), "What the target or the connection said (secrets scrubbed).", nullable=False),
        Column("attempts", pl.Int64(), "HTTP requests sent for it over every run.", nullable=False),
        Column("first_attempt_at", UTC_TIME, "When it was first sent, UTC.", nullable=False),
        Column("dead_at", UTC_TIME, "When its last attempt failed, UTC.", nullable=False),
        Column("last_run_id", pl.String(), "Dagster run of that attempt.", nullable=False),
    ),
    key=("idempotency_key",),
    static_column="ledger_scope",
)

TABLES = (DELIVERIES, DEAD_LETTERS)
