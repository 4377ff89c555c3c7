"""Outbound: what the hub found, sent back to the systems that act on it, exactly once.

- ``outbound/billing_anomaly_alerts`` (daily): leak suspicions per DMA (minimum night flow rising above the
  DMA's recent nights) and meter anomalies from billing's own readings (a meter stopped for days, a register
  running backwards, a register rollover), posted to billing as work items.
- ``outbound/erp_pump_downtime`` (daily): the intervals a pump signalled a fault in SCADA, posted to the ERP
  (OData, CSRF) for plant maintenance.
- ``outbound/erp_plan_confirmations`` (on approval): the production and shipment lines of a supply plan,
  posted to the ERP once a planner approves it (run config ``approve: true`` and an ``approver``).

The assets find the facts and build the messages; ``resources/outbound.py`` sends them with their
idempotency keys and keeps the ledger (``outbound.deliveries``) and dead letters (``outbound.dead_letters``),
one scope per asset partition (or plan). Re-running a partition sends nothing already delivered and resends
what is dead.
"""

import hashlib
import io
import json
import os
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import dagster as dg
import polars as pl
from pydantic import Field

from assets.billing import reading_days
from assets.lake_tables import lake_metadata
from contracts.billing import METER_READINGS, METER_READINGS_KEY
from contracts.dmama import FLOW_READINGS, FLOW_READINGS_KEY
from contracts.outbound import DEAD_LETTERS, DELIVERIES
from contracts.scada import SCADA_POINTS, SCADA_POINTS_KEY
from contracts.supply_plan import PLAN_PRODUCTION as SUPPLY_PLAN_PRODUCTION
from contracts.supply_plan import PLAN_SHIPMENTS as SUPPLY_PLAN_SHIPMENTS
from quality.conform import rejects_table
from resources.billing import BillingClient
from resources.erp import ErpODataClient, odata_date_value
from resources.lake import Lake, time_windows
from resources.outbound import BillingAlerts, DeliveryReport, ErpEntities, Message, deliver

GROUP = "outbound"
# The supply plan asset's tables (contracts/supply_plan.py), as lake key prefixes.
PLAN_PRODUCTION = f"{SUPPLY_PLAN_PRODUCTION.layer}/{SUPPLY_PLAN_PRODUCTION.name}"
PLAN_SHIPMENTS = f"{SUPPLY_PLAN_SHIPMENTS.layer}/{SUPPLY_PLAN_SHIPMENTS.name}"


def _common(name: str, owner: str, kinds: set[str]) -> dict[str, Any]:
    return {
        "name": name,
        "check_specs": [
            dg.AssetCheckSpec(
                "no_dead_letters",
                asset=dg.AssetKey([GROUP, name]),
                description="Every message of the run was delivered; a dead letter is resent by re-running.",
            )
        ],
        "key_prefix": GROUP,
        "group_name": GROUP,
        "owners": [owner],
        "kinds": kinds,
        "metadata": lake_metadata(DELIVERIES, DEAD_LETTERS),
        "tags": {"source": GROUP},
    }


def _run_day_windows(context: dg.AssetExecutionContext) -> list[dg.TimeWindow]:
    window = context.partition_time_window
    return time_windows(reading_days, window.start, window.end)


def _result(reports: list[DeliveryReport], facts: dict[str, Any]) -> dg.MaterializeResult:
    totals: dict[str, Any] = {}
    for report in reports:
        for name, value in report.metadata().items():
            if isinstance(value, int):
                totals[name] = totals.get(name, 0) + value
    lines = [line for report in reports for line in report.lines]
    dead = [reason for report in reports for reason in report.dead_letters["dead_reason"].to_list()]
    return dg.MaterializeResult(
        metadata={
            **totals,
            **facts,
            "ledger_scopes": ", ".join(r.scope for r in reports),
            "deliveries": dg.MetadataValue.md(_listed(lines, 50)),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name="no_dead_letters",
                passed=not dead,
                severity=dg.AssetCheckSeverity.WARN,
                metadata={
                    "dead_letters": len(dead),
                    "reasons": ", ".join(sorted(set(dead))) or "none",
                    "resend": "re-run the partition (or plan) once the cause is fixed",
                },
            )
        ],
    )


def _listed(lines: list[str], most: int) -> str:
    shown = [f"- {line}" for line in lines[:most]]
    if len(lines) > most:
        shown.append(f"- … and {len(lines) - most} more (outbound.deliveries has them all)")
    return "\n".join(shown) or "nothing sent"


def _check_dead(context: dg.AssetExecutionContext, reports: list[DeliveryReport]) -> None:
    dead = sum(r.dead for r in reports)
    if dead:
        context.log.warning(
            f"outbound: {dead} messages undeliverable, kept in outbound.dead_letters "
            f"({', '.join(r.scope for r in reports if r.dead)}); re-run the partition to resend them"
        )


# ---------------------------------------------------------------------------------------------- alerts to billing


class AlertsConfig(dg.Config):
    local_timezone: str = Field(
        default="",
        description="The utility's time zone, in which the night is 02:00-04:00; empty: IHUB_LOCAL_TZ "
        "(Asia/Bangkok), as the catalog's night-flow view.",
    )
    baseline_nights: int = Field(default=7, ge=3, description="Earlier nights the night flow is compared with.")
    leak_rise_share: float = Field(
        default=0.25, gt=0, description="Night flow above the baseline nights' median by this share is a suspicion."
    )
    leak_min_rise_m3h: float = Field(
        default=2.0, ge=0, description="…and by at least this much, m³/h (small DMAs wobble by a few percent)."
    )
    stopped_days: int = Field(default=3, ge=2, description="Days in a row with zero consumption: a stopped meter.")


def leak_suspicions(
    flow: pl.DataFrame, night_of: date, timezone: str, baseline_nights: int, rise_share: float, min_rise_m3h: float
) -> list[Message]:
    """A message per DMA whose minimum night flow (02:00-04:00 local) of ``night_of`` is above the median of
    its ``baseline_nights`` earlier nights by ``rise_share`` and ``min_rise_m3h``; a DMA needs at least three
    earlier nights to be judged."""
    if flow.height == 0:
        return []
    local = pl.col("timestamp").dt.convert_time_zone(timezone)
    nights = (
        flow.filter(local.dt.hour().is_between(2, 3))
        .with_columns(night_of=local.dt.date())
        .group_by("dma_id", "night_of")
        .agg(min_night_flow_m3h=pl.col("flow_m3h").min())
    )
    first = night_of - timedelta(days=baseline_nights)
    tonight = nights.filter(pl.col("night_of") == night_of)
    baseline = (
        nights.filter(pl.col("night_of").is_between(first, night_of - timedelta(days=1)))
        .group_by("dma_id")
        .agg(baseline_m3h=pl.col("min_night_flow_m3h").median(), nights=pl.len())
        .filter(pl.col("nights") >= 3)
    )
    judged = tonight.join(baseline, on="dma_id").filter(
        (pl.col("min_night_flow_m3h") > pl.col("baseline_m3h") * (1 + rise_share))
        & (pl.col("min_night_flow_m3h") - pl.col("baseline_m3h") >= min_rise_m3h)
    )
    messages = []
    for row in judged.sort("dma_id").iter_rows(named=True):
        now, base = round(row["min_night_flow_m3h"], 2), round(row["baseline_m3h"], 2)
        rise = round(100 * (now - base) / base, 1) if base else None
        messages.append(
            Message(
                "billing",
                "leak_suspicion",
                f"{row['dma_id']} night of {night_of}",
                {
                    "kind": "leak_suspicion",
                    "dma_id": row["dma_id"],
                    "detected_on": night_of.isoformat(),
                    "summary": f"minimum night flow {now} m³/h, {rise}% above the {row['nights']} nights before "
                    f"({base} m³/h)",
                    "evidence": {"min_night_flow_m3h": now, "baseline_m3h": base, "baseline_nights": row["nights"]},
                    "source": "ihub",
                },
            )
        )
    return messages


def meter_anomalies(readings: pl.DataFrame, rejects: pl.DataFrame, day: date, stopped_days: int) -> list[Message]:
    """Messages for the meters of ``day``: a register rollover (flagged by the readings asset), a register that
    went backwards (a rejected decrease: reverse flow or a misread), and a meter whose consumption has been 0
    for exactly ``stopped_days`` days in a row up to ``day`` (told once, on the day the run reaches it)."""

    def message(kind: str, meter: str, dma: str | None, key: str, summary: str, evidence: dict) -> Message:
        payload = {
            "kind": kind,
            "meter_id": meter,
            "dma_id": dma,
            "detected_on": day.isoformat(),
            "summary": summary,
            "evidence": evidence,
            "source": "ihub",
        }
        return Message("billing", kind, key, payload)

    messages: list[Message] = []
    today = readings.filter(pl.col("reading_date") == day)
    for row in today.filter(pl.col("register_rollover")).sort("meter_id").iter_rows(named=True):
        messages.append(
            message(
                "meter_rollover",
                row["meter_id"],
                row["dma_id"],
                f"{row['meter_id']} {day}",
                f"register rolled over: {row['previous_register_m3']} → {row['register_m3']} m³ "
                f"({row['consumption_m3']} m³ consumed)",
                {k: row[k] for k in ("previous_register_m3", "register_m3", "consumption_m3", "register_digits")},
            )
        )
    for row in rejects.filter(pl.col("field") == "register_m3").sort("row_number").iter_rows(named=True):
        sent = json.loads(row["raw_payload"])
        if sent.get("reading_date") != day.isoformat():
            continue
        messages.append(
            message(
                "reverse_flow",
                sent["meter_id"],
                sent.get("dma_id"),
                f"{sent['meter_id']} {day}",
                f"register went backwards: {row['reason']}",
                {"register_m3": sent.get("register_m3")},
            )
        )
    first = day - timedelta(days=stopped_days - 1)
    recent = readings.filter(pl.col("reading_date").is_between(first - timedelta(days=1), day))
    by_meter = (
        recent.sort("reading_date")
        .group_by("meter_id", maintain_order=True)
        .agg("reading_date", "consumption_m3", "dma_id")
    )
    for meter, days, used, dmas in by_meter.sort("meter_id").iter_rows():
        run = [d for d, c in zip(days, used, strict=True) if d >= first and c == 0]
        before = [c for d, c in zip(days, used, strict=True) if d == first - timedelta(days=1)]
        if len(run) == stopped_days and not (before and before[0] == 0):
            messages.append(
                message(
                    "stopped_meter",
                    meter,
                    dmas[-1],
                    f"{meter} stopped since {first}",
                    f"no consumption for {stopped_days} days ({first} to {day})",
                    {"zero_days": stopped_days, "since": first.isoformat()},
                )
            )
    return messages


@dg.asset(
    partitions_def=reading_days,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[METER_READINGS_KEY, FLOW_READINGS_KEY],
    pool="billing",
    **_common("billing_anomaly_alerts", "team:revenue", {"http", "parquet"}),
)
def billing_anomaly_alerts(
    context: dg.AssetExecutionContext, config: AlertsConfig, billing: BillingClient, lake: Lake
) -> dg.MaterializeResult:
    """Anomalies sent to billing as work items, once each: leak suspicions per DMA (the minimum night flow
    rising well above the DMA's recent nights) and meter anomalies from the day's billed readings (a meter
    stopped for days, a register that went backwards, a register rollover). Each alert carries an
    idempotency key made from what it is about, so billing stores it once however often it is sent; the
    ledger says what went out, and what could not is kept as a dead letter and resent by re-running."""
    reports, facts = [], {"leak_suspicions": 0, "meter_anomalies": 0}
    destination = BillingAlerts(billing)
    timezone = config.local_timezone or os.environ.get("IHUB_LOCAL_TZ") or "Asia/Bangkok"
    for window in _run_day_windows(context):
        day = window.start.date()
        start = window.start
        flow = lake.read(
            FLOW_READINGS, start - timedelta(days=config.baseline_nights + 1), window.end + timedelta(days=1)
        )
        leaks = leak_suspicions(
            flow, day, timezone, config.baseline_nights, config.leak_rise_share, config.leak_min_rise_m3h
        )
        readings = lake.read(METER_READINGS, start - timedelta(days=config.stopped_days), window.end)
        rejects = lake.read(rejects_table(METER_READINGS), start, window.end)
        meters = meter_anomalies(readings, rejects, day, config.stopped_days)
        facts["leak_suspicions"] += len(leaks)
        facts["meter_anomalies"] += len(meters)
        reports.append(
            deliver(
                [*leaks, *meters],
                destination,
                lake,
                f"billing_anomaly_alerts.{day}",
                run_id=context.run.run_id,
                say=context.log.info,
            )
        )
    _check_dead(context, reports)
    return _result(reports, facts)


# ---------------------------------------------------------------------------------------------- pump downtime


class DowntimeConfig(dg.Config):
    min_minutes: float = Field(default=1.0, ge=0, description="Shorter fault blips are not reported.")


def pump_downtime(points: pl.DataFrame, start: datetime, end: datetime, min_minutes: float) -> list[Message]:
    """A message per interval a pump's fault signal (``pump_fault`` = 1) was on within ``[start, end)``: from
    the first fault reading to the first clear one; still on at ``end`` is reported up to ``end`` as ongoing
    (the next day reports its own part). Readings the link lost (COMM_FAIL) say nothing either way."""
    faults = points.filter((pl.col("sensor_type") == "pump_fault") & pl.col("value").is_not_null()).sort(
        "unit_id", "source_ts"
    )
    messages = []
    for (unit,), rows in faults.group_by("unit_id", maintain_order=True):
        since: datetime | None = None
        intervals: list[tuple[datetime, datetime, bool]] = []
        for stamp, value in rows.select("source_ts", "value").iter_rows():
            if value >= 0.5 and since is None:
                since = max(stamp, start)
            elif value < 0.5 and since is not None:
                if stamp > start:
                    intervals.append((since, min(stamp, end), stamp >= end))
                since = None
        if since is not None and since < end:
            intervals.append((since, end, True))
        for began, ended, ongoing in intervals:
            minutes = (ended - began).total_seconds() / 60
            if began >= end or minutes < min_minutes:
                continue
            payload = {
                "Equipment": unit,
                "Station": unit.rsplit("-", 1)[0],
                "StartedAt": odata_date_value(began),
                "EndedAt": None if ongoing else odata_date_value(ended),
                "DurationMin": str(Decimal(str(round(minutes, 1)))),
                "Ongoing": ongoing,
                "Reason": "pump fault signal (SCADA)",
            }
            messages.append(Message("erp", "pump_downtime", f"{unit} from {began:%Y-%m-%dT%H:%M:%S}Z", payload))
    return messages


@dg.asset(
    partitions_def=reading_days,
    backfill_policy=dg.BackfillPolicy.single_run(),
    deps=[SCADA_POINTS_KEY],
    pool="erp",
    **_common("erp_pump_downtime", "team:operations", {"odata", "parquet"}),
)
def erp_pump_downtime(
    context: dg.AssetExecutionContext, config: DowntimeConfig, erp: ErpODataClient, lake: Lake
) -> dg.MaterializeResult:
    """Pump downtime sent to the ERP for plant maintenance: every interval of the UTC day in which a pump's
    SCADA fault signal was on, with its start, end (or ongoing at midnight) and duration, posted once each
    to the ERP's EquipmentDowntimeSet (CSRF token, repeatable-request id). The ledger says what went out;
    what could not is kept as a dead letter and resent by re-running."""
    reports, found = [], 0
    destination = ErpEntities(erp, "EquipmentDowntimeSet", "DowntimeId")
    for window in _run_day_windows(context):
        # An hour before the day gives each pump its state at midnight (statuses heartbeat every minute).
        points = lake.read(SCADA_POINTS, window.start - timedelta(hours=1), window.end)
        messages = pump_downtime(points, window.start, window.end, config.min_minutes)
        found += len(messages)
        scope = f"erp_pump_downtime.{window.start.date()}"
        reports.append(deliver(messages, destination, lake, scope, run_id=context.run.run_id, say=context.log.info))
    _check_dead(context, reports)
    return _result(reports, {"downtime_intervals": found})


# ---------------------------------------------------------------------------------------------- plan confirmations


class PlanApproval(dg.Config):
    approve: bool = Field(default=False, description="The planner approves the plan: only then is it sent.")
    approver: str = Field(default="", description="Who approved it (recorded in the ERP as ApprovedBy).")
    scenario: str = Field(default="base", description="Scenario of the supply plan to confirm.")
    plan_start: str = Field(
        default="",
        description="First month of the plan to confirm, YYYY-MM (its partition); empty: the scenario's latest plan.",
    )


def read_supply_plan(lake: Lake, scenario: str, plan_start: str = "") -> tuple[pl.DataFrame, pl.DataFrame]:
    """The production and shipment lines of a scenario's supply plan, as (production, shipments) with columns
    ``plant_id, period_start, quantity_t`` and ``route_id, period_start, quantity_t``.

    The one place that knows the supply plan's lake tables (written by the supply plan asset): adapt names here.
    """
    frames = []
    for key in (PLAN_PRODUCTION, PLAN_SHIPMENTS):
        files = lake.storage.find(key, ".parquet")
        if not files:
            raise dg.Failure(
                f"outbound/erp_plan_confirmations: no supply plan in the lake at {lake.storage.location(key)}; "
                f"materialize the supply plan (scenario {scenario!r}) before approving it"
            )
        frame = pl.concat([pl.read_parquet(io.BytesIO(lake.storage.read(f))) for f in files], how="diagonal_relaxed")
        if "scenario" in frame.columns:
            frame = frame.filter(pl.col("scenario") == scenario)
        if "plan_start" in frame.columns and frame.height:
            # Plans of several months overlap (each covers months ahead): confirm one plan, never a mix.
            chosen = (
                datetime.strptime(plan_start, "%Y-%m").date() if plan_start else frame["plan_start"].cast(pl.Date).max()
            )
            frame = frame.filter(pl.col("plan_start").cast(pl.Date) == chosen)
        renames = {
            "plant": "plant_id",
            "tonnes": "quantity_t",
            "production_t": "quantity_t",
            "shipped_t": "quantity_t",
            "period": "period_start",
        }
        frame = frame.rename({k: v for k, v in renames.items() if k in frame.columns and v not in frame.columns})
        wanted = ["plant_id" if key == PLAN_PRODUCTION else "route_id", "period_start", "quantity_t"]
        missing = [c for c in wanted if c not in frame.columns]
        if missing:
            raise dg.Failure(
                f"outbound/erp_plan_confirmations: {key} lacks {', '.join(missing)} (has {', '.join(frame.columns)})"
            )
        frames.append(frame.select(wanted).with_columns(pl.col("period_start").cast(pl.Date)))
    if plan_start and all(frame.height == 0 for frame in frames):
        raise dg.Failure(
            f"outbound/erp_plan_confirmations: no supply plan starting {plan_start} for scenario {scenario!r}; "
            "materialize that month's plan first"
        )
    return frames[0], frames[1]


def plan_lines(production: pl.DataFrame, shipments: pl.DataFrame, scenario: str, approver: str) -> list[Message]:
    """One ERP confirmation per production and shipment line with a positive quantity. The plan id is a digest
    of the lines: re-solving to the same plan confirms nothing twice, a different plan is a new plan."""
    kept = [
        ("PRODUCTION", production.filter(pl.col("quantity_t") > 0).sort("plant_id", "period_start"), "plant_id"),
        ("SHIPMENT", shipments.filter(pl.col("quantity_t") > 0).sort("route_id", "period_start"), "route_id"),
    ]
    content = json.dumps([[t, f.rows()] for t, f, _ in kept], default=str)
    plan_id = f"{scenario}-{hashlib.sha256(content.encode()).hexdigest()[:12]}"
    messages = []
    for line_type, frame, where in kept:
        for place, period, quantity in frame.iter_rows():
            payload = {
                "PlanId": plan_id,
                "Scenario": scenario,
                "LineType": line_type,
                "Plant": place if where == "plant_id" else None,
                "RouteId": place if where == "route_id" else None,
                "PeriodStart": odata_date_value(period),
                "Quantity": str(Decimal(str(quantity)).quantize(Decimal("0.001"))),
                "BaseUnit": "TO",
                "ApprovedBy": approver,
            }
            kind = f"plan_{line_type.lower()}"
            messages.append(Message("erp", kind, f"{plan_id} {place} {period}", payload))
    return messages


@dg.asset(pool="erp", **_common("erp_plan_confirmations", "team:planning", {"odata", "parquet"}))
def erp_plan_confirmations(
    context: dg.AssetExecutionContext, config: PlanApproval, erp: ErpODataClient, lake: Lake
) -> dg.MaterializeResult:
    """The supply plan confirmed to the ERP once a planner approves it: each production line (plant, month,
    tonnes) and shipment line (route, month, tonnes) posted once to the ERP's PlanConfirmationSet. Launch it
    with ``approve: true`` and the ``approver``'s name; without them nothing is sent. The plan id is a digest
    of its lines, so approving the same plan again sends nothing new."""
    if not config.approve or not config.approver.strip():
        raise dg.Failure(
            "outbound/erp_plan_confirmations: the plan is not approved; launch with run config "
            "{ops: {outbound__erp_plan_confirmations: {config: {approve: true, approver: <name>}}}}"
        )
    production, shipments = read_supply_plan(lake, config.scenario, config.plan_start)
    messages = plan_lines(production, shipments, config.scenario, config.approver.strip())
    if not messages:
        raise dg.Failure(f"outbound/erp_plan_confirmations: scenario {config.scenario!r} has no line to confirm")
    plan_id = messages[0].payload["PlanId"]
    destination = ErpEntities(erp, "PlanConfirmationSet", "ConfirmationId")
    scope = f"erp_plan_confirmations.{plan_id}"
    report = deliver(messages, destination, lake, scope, run_id=context.run.run_id, say=context.log.info)
    _check_dead(context, [report])
    return _result(
        [report],
        {
            "plan_id": plan_id,
            "approved_by": config.approver.strip(),
            "approved_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "production_lines": production.filter(pl.col("quantity_t") > 0).height,
            "shipment_lines": shipments.filter(pl.col("quantity_t") > 0).height,
        },
    )


ASSETS = (billing_anomaly_alerts, erp_pump_downtime, erp_plan_confirmations)
