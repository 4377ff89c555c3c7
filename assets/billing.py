"""Billing: daily meter readings with their consumption, monthly billed consumption, and customers.

The client (``resources/billing.py``) logs in and pages; this module types the rows (``quality/conform.py``),
computes consumption from consecutive registers with the rollover rule (``quality/registers.py``) and
writes through the lake. Rows are never dropped: ``rows_received = rows_written + rows_rejected`` for
every materialization, and a decrease that is not a rollover is a reject naming meter, day, previous and
current register.

Customers are synced incrementally: only records changed since the last sync are fetched, and merged
into the current table. The cursor (the instant the last complete listing was valid up to) is a small
JSON state file in the lake, ``state/billing/customers_cursor.json``, written atomically after the table,
so it survives restarts, moves with the data it describes (a new or wiped lake starts over with a full
sync) and never runs ahead of it (a crash between the two writes re-fetches the same changes, which
merge to the same rows).
"""

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from assets import source_assets as common
from assets.partitions import HISTORY_START
from contracts.billing import CONSUMPTION_MONTHLY, CUSTOMERS, METER_READINGS, READINGS_AS_SENT
from contracts.dmama import METERS_KEY
from quality.billing import dma_total_mismatches
from quality.conform import Conformed, conform, rejects_table
from quality.registers import DEFAULT_MAX_ROLLOVER_SHARE, consumption_from_registers
from resources.billing import BillingClient, CustomerPseudonymizer
from resources.lake import Lake, LakeTable, time_windows

SOURCE = "billing"
CURSOR_KEY = "state/billing/customers_cursor.json"

# Without end_offset the last partition is the last closed UTC day (month): billing has nothing for the
# day in progress, and bills for a month are cut after it ends.
reading_days = dg.DailyPartitionsDefinition(start_date=HISTORY_START)
billing_months = dg.MonthlyPartitionsDefinition(start_date=HISTORY_START)


class ReadingsConfig(dg.Config):
    max_rollover_share: float = Field(
        default=DEFAULT_MAX_ROLLOVER_SHARE,
        gt=0,
        lt=1,
        description="A decrease counts as a rollover only if the volume it implies is at most this share of "
        "the register's range (10^digits).",
    )


class CustomersConfig(dg.Config):
    full_refresh: bool = Field(
        default=False, description="Ignore the cursor: fetch every customer and replace the table."
    )


def _common(table: LakeTable, fresh_within: timedelta) -> dict:
    return {
        **common.source_asset(SOURCE, table, owner="team:revenue", fresh_within=fresh_within),
        "kinds": {"http", "parquet"},
    }


@dg.asset(
    name="meter_readings",
    partitions_def=reading_days,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[METERS_KEY],  # its checks compare the billed meters with DMAMA's
    # A day closes at 00:00 UTC and is loaded early the next morning; 30 hours without one is late.
    **_common(METER_READINGS, timedelta(hours=30)),
)
def meter_readings(
    context: dg.AssetExecutionContext, config: ReadingsConfig, billing: BillingClient, lake: Lake
) -> dg.MaterializeResult:
    """The closing register (m³) of every billed customer meter for each UTC day, and the volume consumed
    since the meter's previous reading. A register that rolled over (99,678 → 00,123 on a 5-digit dial is
    445 m³) is counted across the rollover and flagged; a decrease that is not a plausible rollover is
    rejected with its reason. The day before the range is fetched too, as every first day's baseline."""
    window = context.partition_time_window
    label = common.partition_label(context)
    windows = time_windows(reading_days, window.start, window.end)
    first, end = window.start.date(), window.end.date()
    baseline = first - timedelta(days=1)
    rows = common.fetch(context, SOURCE, "meter readings", lambda: billing.meter_readings(baseline, end))
    loaded, rule = _readings(rows, baseline, windows, label, config.max_rollover_share)
    written = lake.replace_partitions(METER_READINGS, loaded.frame, windows)
    lake.replace_partitions(rejects_table(METER_READINGS), loaded.rejects, windows)
    frame = written.frame
    if rule["implausible_decreases"]:
        context.log.warning(
            f"billing: {rule['implausible_decreases']} register decreases that are not rollovers rejected; "
            f"e.g. {loaded.rejects.filter(pl.col('field') == 'register_m3')['reason'][0]}"
        )
    return dg.MaterializeResult(
        metadata={
            **common.reconciliation(loaded),
            "meters": written.distinct("meter_id"),
            "days": len(windows),
            "consumption_m3": round(float(frame["consumption_m3"].sum() or 0.0), 3),
            **rule,
            "rejects_by_field": loaded.reasons(),
            "jwt_logins": billing.session.logins,
            "jwt_refreshes": billing.session.refreshes,
            "preview": common.preview(frame),
        }
    )


def _readings(
    rows: list[Any], baseline: date, windows: list[dg.TimeWindow], label: str, max_rollover_share: float
) -> tuple[Conformed, dict[str, Any]]:
    """Typed readings of the range with consumption, and the rejects: what could not be typed, and the
    readings the register rule refuses. Rows of the baseline day only serve as previous readings."""
    day = baseline.isoformat()
    is_baseline = [isinstance(r, dict) and r.get("reading_date") == day for r in rows]
    mine = [r for r, b in zip(rows, is_baseline, strict=True) if not b]
    start = datetime.combine(baseline, datetime.min.time(), UTC)
    base = conform(
        [r for r, b in zip(rows, is_baseline, strict=True) if b],
        READINGS_AS_SENT,
        source=SOURCE,
        partition_key=label,
        window=(start, start + timedelta(days=1)),
    )  # its rejects belong to the baseline day's own partition, which judges them when it runs
    typed = conform(mine, READINGS_AS_SENT, source=SOURCE, partition_key=label, partitions=windows)
    both = pl.concat(
        [base.frame.with_columns(_baseline=pl.lit(True)), typed.frame.with_columns(_baseline=pl.lit(False))]
    )
    judged = consumption_from_registers(both, max_rollover_share=max_rollover_share).filter(~pl.col("_baseline"))
    good = judged.filter(pl.col("problem").is_null())
    refused = judged.filter(pl.col("problem").is_not_null())
    # Each refused reading's place in what the source sent (its first copy, if it was sent twice).
    position: dict[tuple[Any, str], int] = {}
    for index, row in enumerate(mine):
        if isinstance(row, dict):
            position.setdefault((row.get("meter_id"), str(row.get("reading_date"))[:10]), index)
    numbers = [position[(m, d.isoformat())] for m, d in refused.select("meter_id", "reading_date").iter_rows()]
    rule_rejects = pl.DataFrame(
        {
            "source": [SOURCE] * refused.height,
            "table_name": [METER_READINGS.name] * refused.height,
            "partition_key": [label] * refused.height,
            "row_number": numbers,
            "field": ["register_m3"] * refused.height,
            "reason": refused["problem"].to_list(),
            "raw_payload": [json.dumps(mine[i], sort_keys=True, default=str) for i in numbers],
            "partition_start": [datetime.combine(d, datetime.min.time(), UTC) for d in refused["reading_date"]],
        },
        schema=rejects_table(METER_READINGS).schema,
    )
    rejects = pl.concat([typed.rejects, rule_rejects]).sort("row_number")
    rollovers = good.filter(pl.col("register_rollover"))
    figures = {
        "rollovers": rollovers.height,
        "implausible_decreases": refused.height,
        "rollover_readings": dg.MetadataValue.json(
            [
                {
                    "meter_id": m,
                    "day": d.isoformat(),
                    "previous_m3": p,
                    "current_m3": c,
                    "consumption_m3": u,
                }
                for m, d, p, c, u in rollovers.select(
                    "meter_id", "reading_date", "previous_register_m3", "register_m3", "consumption_m3"
                ).iter_rows()
            ][:50]
        ),
    }
    frame = METER_READINGS.conform(good.drop("problem", "_baseline"))
    return Conformed(frame=frame, rejects=rejects, received=len(mine)), figures


@dg.asset(
    name="consumption_monthly",
    partitions_def=billing_months,
    backfill_policy=dg.BackfillPolicy.single_run(),
    # Bills of a month are loaded early the next month: 33 days without a load means one was missed.
    **_common(CONSUMPTION_MONTHLY, timedelta(days=33)),
)
def consumption_monthly(context: dg.AssetExecutionContext, billing: BillingClient, lake: Lake) -> dg.MaterializeResult:
    """Billed consumption (m³) of each UTC calendar month, per customer and per DMA (the DMA rows are
    billing's own totals, checked against the sum of their customers), to set against DMA inflow."""
    window = context.partition_time_window
    label = common.partition_label(context)
    windows = time_windows(billing_months, window.start, window.end)
    rows: list[Any] = []
    for month in windows:
        key = f"{month.start:%Y-%m}"
        for level in ("customer", "dma"):
            sent = common.fetch(
                context,
                SOURCE,
                f"monthly consumption per {level} for {key}",
                lambda key=key, level=level: billing.monthly_consumption(key, level),
            )
            rows.extend(_month_as_date(row) for row in sent)
    loaded = conform(rows, CONSUMPTION_MONTHLY, source=SOURCE, partition_key=label, partitions=windows)
    written = lake.replace_partitions(CONSUMPTION_MONTHLY, loaded.frame, windows)
    lake.replace_partitions(rejects_table(CONSUMPTION_MONTHLY), loaded.rejects, windows)
    frame = written.frame
    mismatches = dma_total_mismatches(frame)
    if mismatches.height:
        context.log.warning(f"billing: {mismatches.height} DMA totals differ from the sum of their customers")
    dma_rows = frame.filter(pl.col("level") == "dma")
    return dg.MaterializeResult(
        metadata={
            **common.reconciliation(loaded),
            "months": len(windows),
            "customers_billed": frame.filter(pl.col("level") == "customer")["customer_id"].n_unique(),
            "dmas": dma_rows["dma_id"].n_unique(),
            "billed_m3": round(float(dma_rows["billed_m3"].sum() or 0.0), 3),
            "dma_totals_mismatched": mismatches.height,
            "rejects_by_field": loaded.reasons(),
            "preview": common.preview(dma_rows),
        }
    )


def _month_as_date(row: Any) -> Any:
    """Billing names a month ``YYYY-MM``; the lake files it by its first day."""
    if isinstance(row, dict) and isinstance(row.get("month"), str) and len(row["month"]) == 7:
        return {**row, "month": f"{row['month']}-01"}
    return row


@dg.asset(name="customers", deps=[METERS_KEY], **_common(CUSTOMERS, timedelta(hours=30)))
def customers(
    context: dg.AssetExecutionContext,
    config: CustomersConfig,
    billing: BillingClient,
    billing_pii: CustomerPseudonymizer,
    lake: Lake,
) -> dg.MaterializeResult:
    """Billing customers as they are now: account, meter, DMA, tariff class, status, and the phone only as
    a keyed hash; names and addresses never land. Synced incrementally from the cursor in the lake (only
    records changed since the last sync are fetched and merged); a full sync when there is no cursor, no
    table, the hash key changed, or ``full_refresh`` is set."""
    cursor = read_cursor(lake)
    key_id = billing_pii.key_id
    why_full = _full_sync_reason(config, cursor, key_id, lake)
    since = None if why_full else _parse_instant(cursor["changed_since"])  # type: ignore[index]
    changes = common.fetch(context, SOURCE, "customers", lambda: billing.customers_changed(since))
    loaded = conform(billing_pii.pseudonymize(changes.rows), CUSTOMERS, source=SOURCE, partition_key="snapshot")
    kept = CUSTOMERS.empty() if why_full else lake.read(CUSTOMERS)
    merged = pl.concat([kept.join(loaded.frame.select("customer_id"), on="customer_id", how="anti"), loaded.frame])
    written = lake.replace_snapshot(CUSTOMERS, merged)
    lake.replace_snapshot(rejects_table(CUSTOMERS), loaded.rejects)
    # A record billing could not send typed holds the cursor back, so its change is fetched again until
    # it lands, rather than skipped; the rejects table says which it is.
    advanced = loaded.rejected == 0
    next_since = changes.as_of if advanced else since
    state = {
        "changed_since": None if next_since is None else _iso(next_since),
        "synced_at": _iso(datetime.now(UTC)),
        "hash_key_id": key_id,
        "customers": written.rows,
    }
    lake.storage.write(CURSOR_KEY, json.dumps(state, indent=2, sort_keys=True).encode())
    if not advanced:
        context.log.warning(f"billing: {loaded.rejected} customer records rejected; the cursor stays where it was")
    return dg.MaterializeResult(
        metadata={
            **common.reconciliation(loaded),
            "sync": "full" if why_full else "incremental",
            "full_sync_reason": why_full or "none",
            "changed_since": _iso(since) if since else "beginning",
            "cursor_now": state["changed_since"] or "beginning",
            "pages": changes.pages,
            "customers_total": written.rows,
            "customers_changed": loaded.written,
            "rejects_by_field": loaded.reasons(),
            "pii_dropped": "name, address",
            "pii_hashed": "phone → phone_hash (HMAC-SHA256)",
            "preview": common.preview(written.frame),
        }
    )


def read_cursor(lake: Lake) -> dict[str, Any] | None:
    """The customers cursor state in the lake, or None before the first sync."""
    if not lake.storage.exists(CURSOR_KEY):
        return None
    try:
        state = json.loads(lake.storage.read(CURSOR_KEY))
    except ValueError as error:
        raise dg.Failure(
            f"billing/customers: the cursor {lake.storage.location(CURSOR_KEY)} is not JSON ({error}); "
            "delete it or run with full_refresh to sync every customer again"
        ) from error
    return state if isinstance(state, dict) else None


def _full_sync_reason(config: CustomersConfig, cursor: dict | None, key_id: str, lake: Lake) -> str | None:
    if config.full_refresh:
        return "full_refresh requested"
    if cursor is None or not cursor.get("changed_since"):
        return "no cursor yet"
    if not lake.storage.exists(f"{CUSTOMERS.layer}/{CUSTOMERS.name}/snapshot.parquet"):
        return "the customers table is missing"
    if cursor.get("hash_key_id") != key_id:
        return "BILLING_PII_HASH_KEY changed: every phone is hashed again with the new key"
    return None


def _parse_instant(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
