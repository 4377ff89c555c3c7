"""The outbound delivery engine against the real billing and ERP simulators: idempotency keys, the shared retry
policy, the ledger and dead letters, exactly-once across retries, commits before a 500, and re-runs."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from contracts.outbound import DEAD_LETTERS, DELIVERIES
from resources.billing import BillingClient
from resources.erp import ErpODataClient
from resources.outbound import BillingAlerts, ErpEntities, Message, deliver, idempotency_key, read_ledger
from simulators.billing import ALERTS_PATH, BillingConfig, serve_billing
from simulators.erp import SERVICE_PATH, ErpConfig, credentials_env, serve_erp

NOW = datetime(2026, 3, 15, 6, tzinfo=UTC)
DOWNTIME_PATH = f"{SERVICE_PATH}/EquipmentDowntimeSet"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def billing_server():
    with serve_billing(BillingConfig(), clock=lambda: NOW) as running:
        yield running


@pytest.fixture(scope="module")
def erp_server():
    with serve_erp(ErpConfig(now=lambda: NOW)) as running:
        yield running


@pytest.fixture
def billing(billing_server):
    sim = billing_server.simulator
    sim.clear_faults()
    client = BillingClient(
        base_url=billing_server.url,
        username=billing_server.config.username,
        password=billing_server.config.password,
        backoff_base_s=0.01,
    )
    yield client, sim
    client.close()
    sim.clear_faults()


@pytest.fixture
def erp(erp_server):
    sim = erp_server.simulator
    sim.clear_faults()
    env = credentials_env(erp_server.url, erp_server.config)
    client = ErpODataClient(
        base_url=env["ERP_ODATA_BASE_URL"],
        user=env["ERP_ODATA_USER"],
        password=env["ERP_ODATA_PASSWORD"],
        backoff_base_s=0.01,
    )
    yield client, sim
    client.close()
    sim.clear_faults()


def alert(meter: str, day: str = "2026-03-14") -> Message:
    payload = {"kind": "meter_rollover", "meter_id": meter, "detected_on": day, "summary": "register rolled over"}
    return Message("billing", "meter_rollover", f"{meter} {day}", payload)


def downtime(pump: str, start_ms: int) -> Message:
    payload = {
        "Equipment": pump,
        "Station": pump.rsplit("-", 1)[0],
        "StartedAt": f"/Date({start_ms})/",
        "EndedAt": f"/Date({start_ms + 600_000})/",
        "DurationMin": "10.0",
        "Ongoing": False,
        "Reason": "pump fault signal",
    }
    return Message("erp", "pump_downtime", f"{pump} {start_ms}", payload)


def ledger_row(lake, scope: str, key: str) -> dict:
    rows = read_ledger(lake, scope).filter(pl.col("idempotency_key") == key).to_dicts()
    assert len(rows) == 1
    return rows[0]


def test_the_key_depends_on_identity_only():
    a = alert("M-0001-0001")
    changed = Message("billing", a.kind, a.business_key, {**a.payload, "summary": "other words"})
    assert a.key == changed.key == idempotency_key("billing", "meter_rollover", "M-0001-0001 2026-03-14")
    assert a.key != alert("M-0001-0002").key
    assert a.key != idempotency_key("erp", "meter_rollover", "M-0001-0001 2026-03-14")
    assert len(a.key) == 64


def test_happy_path_records_the_delivery_by_value(billing, lake):
    client, sim = billing
    message = alert("M-0001-0101")
    clock = Clock()
    report = deliver([message], BillingAlerts(client), lake, "test.happy", run_id="run-1", clock=clock)
    stored = [a for a in sim.alerts if a["meter_id"] == "M-0001-0101"]
    assert len(stored) == 1
    assert [p["body"] for p in sim.posts_with_key(message.key)] == [dict(message.payload)]
    row = ledger_row(lake, "test.happy", message.key)
    assert row == {
        "ledger_scope": "test.happy",
        "idempotency_key": message.key,
        "target": "billing",
        "kind": "meter_rollover",
        "business_key": "M-0001-0101 2026-03-14",
        "endpoint": ALERTS_PATH,
        "payload": message.body,
        "payload_sha256": message.digest,
        "first_attempt_at": NOW,
        "last_attempt_at": NOW,
        "delivered_at": NOW,
        "attempts": 1,
        "runs": 1,
        "result": "delivered",
        "http_status": 201,
        "response_id": stored[0]["alert_id"],
        "replayed": False,
        "error": None,
        "last_run_id": "run-1",
    }
    assert (report.delivered, report.dead, report.attempts) == (1, 0, 1)
    assert report.dead_letters.height == 0
    assert report.lines == [
        f"billing ← meter_rollover M-0001-0101 2026-03-14: delivered, HTTP 201, id {stored[0]['alert_id']} (1 attempt)"
    ]


def test_an_alert_is_posted_exactly_once_after_a_transient_503(billing, lake):
    client, sim = billing
    message = alert("M-0001-0102")
    sim.inject("status", ALERTS_PATH, count=1, status=503)
    report = deliver([message], BillingAlerts(client), lake, "test.503", run_id="run-1")
    posts = sim.posts_with_key(message.key)
    # The 503 came from in front of the handler: one POST reached it and stored the alert.
    assert [p["outcome"] for p in posts] == ["stored"]
    assert len([a for a in sim.alerts if a["meter_id"] == "M-0001-0102"]) == 1
    row = ledger_row(lake, "test.503", message.key)
    assert (row["result"], row["attempts"], row["http_status"], row["replayed"]) == ("delivered", 2, 201, False)
    assert report.attempts == 2


def test_a_500_after_commit_is_retried_with_the_same_key_and_stored_once(billing, lake):
    client, sim = billing
    message = alert("M-0001-0103")
    sim.inject("commit_then_500", ALERTS_PATH, count=1)
    deliver([message], BillingAlerts(client), lake, "test.commit", run_id="run-1")
    posts = sim.posts_with_key(message.key)
    assert [p["outcome"] for p in posts] == ["stored", "replayed"]
    assert posts[0]["alert_id"] == posts[1]["alert_id"]
    assert len([a for a in sim.alerts if a["meter_id"] == "M-0001-0103"]) == 1
    row = ledger_row(lake, "test.commit", message.key)
    assert (row["result"], row["attempts"], row["http_status"], row["replayed"]) == ("delivered", 2, 200, True)
    assert row["response_id"] == posts[0]["alert_id"]


def test_an_answer_broken_after_the_commit_is_retried_and_the_original_returned(billing, lake):
    client, sim = billing
    message = alert("M-0001-0110")
    sim.inject("truncated", ALERTS_PATH, count=1)
    deliver([message], BillingAlerts(client), lake, "test.truncated", run_id="run-1")
    assert [p["outcome"] for p in sim.posts_with_key(message.key)] == ["stored", "replayed"]
    row = ledger_row(lake, "test.truncated", message.key)
    assert (row["result"], row["attempts"], row["http_status"], row["replayed"]) == ("delivered", 2, 200, True)


def test_an_unreadable_answer_after_every_retry_is_a_bad_answer_dead_letter(billing, lake):
    client, sim = billing
    message = alert("M-0001-0111")
    sim.inject("malformed", ALERTS_PATH, count=4)
    deliver([message], BillingAlerts(client), lake, "test.malformed", run_id="run-1")
    letter = lake.read(DEAD_LETTERS).filter(pl.col("ledger_scope") == "test.malformed").row(0, named=True)
    assert (letter["dead_reason"], letter["attempts"]) == ("bad_answer", 4)
    # Billing stored it on the first attempt; the re-run gets that alert back, and billing holds one.
    deliver([message], BillingAlerts(client), lake, "test.malformed", run_id="run-2")
    assert [p["outcome"] for p in sim.posts_with_key(message.key)] == [
        "stored",
        "replayed",
        "replayed",
        "replayed",
        "replayed",
    ]
    assert (
        ledger_row(lake, "test.malformed", message.key)["response_id"] == sim.posts_with_key(message.key)[0]["alert_id"]
    )
    assert len([a for a in sim.alerts if a["meter_id"] == "M-0001-0111"]) == 1


def test_a_rerun_sends_nothing_already_delivered(billing, lake):
    client, sim = billing
    messages = [alert("M-0001-0104"), alert("M-0001-0105")]
    deliver(messages, BillingAlerts(client), lake, "test.rerun", run_id="run-1")
    before = len(sim.alert_posts)
    again = deliver(messages, BillingAlerts(client), lake, "test.rerun", run_id="run-2")
    assert len(sim.alert_posts) == before
    assert (again.skipped, again.delivered, again.attempts) == (2, 0, 0)
    assert read_ledger(lake, "test.rerun")["last_run_id"].to_list() == ["run-1", "run-1"]


def test_a_refused_alert_is_a_dead_letter_and_is_resent_by_rerunning(billing, lake):
    client, sim = billing
    message = alert("M-0001-0106")
    sim.inject("status", ALERTS_PATH, count=5, status=422)
    clock = Clock()
    first = deliver([message], BillingAlerts(client), lake, "test.dead", run_id="run-1", clock=clock)
    assert (first.delivered, first.dead) == (0, 1)
    letters = lake.read(DEAD_LETTERS).filter(pl.col("ledger_scope") == "test.dead").to_dicts()
    assert len(letters) == 1
    letter = letters[0]
    assert (letter["dead_reason"], letter["http_status"], letter["attempts"]) == ("rejected", 422, 1)
    assert "422" in letter["error"] and letter["dead_at"] == NOW
    assert sim.posts_with_key(message.key) == []  # refused in front of the handler: nothing stored
    sim.clear_faults()
    clock.now = NOW.replace(hour=7)
    # The re-run finds no fact at all here: the dead letter is resent from the payload it was kept with.
    second = deliver([], BillingAlerts(client), lake, "test.dead", run_id="run-2", clock=clock)
    assert (second.delivered, second.resent_dead, second.dead) == (1, 1, 0)
    row = ledger_row(lake, "test.dead", message.key)
    assert (row["result"], row["attempts"], row["runs"], row["first_attempt_at"], row["delivered_at"]) == (
        "delivered",
        2,
        2,
        NOW,
        NOW.replace(hour=7),
    )
    assert lake.read(DEAD_LETTERS).filter(pl.col("ledger_scope") == "test.dead").height == 0
    assert [p["outcome"] for p in sim.posts_with_key(message.key)] == ["stored"]


def test_transient_failures_past_the_retries_are_dead_letters_too(billing, lake):
    client, sim = billing
    message = alert("M-0001-0107")
    sim.inject("status", ALERTS_PATH, count=4, status=503)  # the first attempt and 3 retries
    report = deliver([message], BillingAlerts(client), lake, "test.exhausted", run_id="run-1")
    assert report.dead == 1
    row = ledger_row(lake, "test.exhausted", message.key)
    assert (row["result"], row["http_status"], row["attempts"]) == ("dead", 503, 4)
    letter = lake.read(DEAD_LETTERS).filter(pl.col("ledger_scope") == "test.exhausted").row(0, named=True)
    assert letter["dead_reason"] == "retries_exhausted"


def test_no_secret_reaches_the_ledger(billing, lake):
    client, sim = billing
    sim.inject("status", ALERTS_PATH, count=1, status=400)
    deliver([alert("M-0001-0108")], BillingAlerts(client), lake, "test.secrets", run_id="run-1")
    token = client.session.token()
    for table in (DELIVERIES, DEAD_LETTERS):
        for path in lake.files(table):
            data = Path(path).read_bytes()
            assert client.password.encode() not in data and token.encode() not in data


def test_erp_downtime_is_created_once_across_a_500_after_commit_and_an_expired_csrf_token(erp, lake):
    client, sim = erp
    first, second = downtime("PS01-P1", 1_773_500_000_000), downtime("PS01-P2", 1_773_500_000_000)
    destination = ErpEntities(client, "EquipmentDowntimeSet", "DowntimeId")
    sim.inject("commit_then_500", DOWNTIME_PATH, count=1)
    deliver([first], destination, lake, "test.erp", run_id="run-1")
    # The session's CSRF token expires before the next POST: 403 Required, one fetch, the POST again.
    fetched = client.csrf_tokens_fetched
    sim.inject("csrf_expired", DOWNTIME_PATH, count=1)
    report = deliver([first, second], destination, lake, "test.erp", run_id="run-2")
    assert (report.skipped, report.delivered) == (1, 1)
    assert client.csrf_tokens_fetched == fetched + 1
    stored = [r for r in sim.created("EquipmentDowntimeSet") if r["Equipment"] in ("PS01-P1", "PS01-P2")]
    assert [r["Equipment"] for r in stored] == ["PS01-P1", "PS01-P2"]
    assert [p["outcome"] for p in sim.posts_with_id(first.key)] == ["stored", "replayed"]
    row = ledger_row(lake, "test.erp", first.key)
    assert (row["result"], row["http_status"], row["replayed"], row["response_id"]) == (
        "delivered",
        200,
        True,
        stored[0]["DowntimeId"],
    )
    assert ledger_row(lake, "test.erp", second.key)["http_status"] == 201
    # What the ERP now lists, as any OData reader sees it.
    listed = client.entities("EquipmentDowntimeSet")
    assert [(r["Equipment"], r["StartedAt"], r["DurationMin"]) for r in listed] == [
        ("PS01-P1", "/Date(1773500000000)/", "10.0"),
        ("PS01-P2", "/Date(1773500000000)/", "10.0"),
    ]


def test_an_erp_post_without_the_csrf_handshake_is_refused(erp_server):
    import httpx

    env = credentials_env(erp_server.url, erp_server.config)
    answer = httpx.post(
        env["ERP_ODATA_BASE_URL"] + "/EquipmentDowntimeSet",
        json={},
        auth=(env["ERP_ODATA_USER"], env["ERP_ODATA_PASSWORD"]),
        headers={"Repeatability-Request-ID": "x" * 64},
    )
    assert (answer.status_code, answer.headers["x-csrf-token"]) == (403, "Required")


def test_the_same_key_with_another_body_is_refused_not_stored_twice(billing, lake):
    client, sim = billing
    message = alert("M-0001-0109")
    deliver([message], BillingAlerts(client), lake, "test.reuse", run_id="run-1")
    changed = Message("billing", message.kind, message.business_key, {**message.payload, "summary": "changed"})
    report = deliver([changed], BillingAlerts(client), lake, "test.reuse", run_id="run-2")
    assert (report.skipped, report.changed_after_delivery) == (1, 1)  # the ledger stops it before billing
    other = deliver([changed], BillingAlerts(client), lake, "test.reuse.elsewhere", run_id="run-3")
    assert other.dead == 1  # without the ledger, billing itself refuses a reused key with another body
    assert ledger_row(lake, "test.reuse.elsewhere", message.key)["http_status"] == 422
    assert len([a for a in sim.alerts if a["meter_id"] == "M-0001-0109"]) == 1
