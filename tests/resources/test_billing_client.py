"""The billing client against the simulator: JWT sessions renewed as they should, paging, retries, secrets."""

from __future__ import annotations

import hashlib
import hmac
from datetime import UTC, date, datetime, timedelta

import pytest

from resources.billing import BillingClient, CustomerPseudonymizer, normalize_phone
from resources.http import SourceError
from simulators.billing import CUSTOMERS_PATH, READINGS_PATH, BillingConfig, serve_billing

NOW = datetime(2026, 3, 15, 6, tzinfo=UTC)
KEY = "test-pii-key-0123456789abcdef"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def clock():
    return Clock(NOW)


@pytest.fixture(scope="module")
def server(clock):
    with serve_billing(BillingConfig(), clock=clock) as running:
        yield running


@pytest.fixture
def sim(server, clock):
    clock.now = NOW
    server.simulator.clear_faults()
    server.simulator.reset_stats()
    yield server.simulator
    server.simulator.clear_faults()


def client(server, **overrides) -> BillingClient:
    settings = {
        "base_url": server.url,
        "username": server.config.username,
        "password": server.config.password,
        "backoff_base_s": 0.01,
        **overrides,
    }
    return BillingClient(**settings)


def test_readings_come_back_as_sent_across_pages_and_chunks(server, sim):
    c = client(server, page_size=100, days_per_request=3)
    rows = c.meter_readings(date(2026, 3, 1), date(2026, 3, 8))
    assert rows == sim.closing_registers(date(2026, 3, 1), date(2026, 3, 8))
    # 7 days in chunks of 3, 3 and 1 day; 41 meters a day at 100 rows a page: 2 + 2 + 1 pages.
    assert sim.requests_to(READINGS_PATH) == 5
    assert (c.session.logins, c.session.refreshes) == (1, 0)


def test_a_token_expiring_mid_backfill_is_refreshed_once(server, sim):
    c = client(server, page_size=50, days_per_request=5)
    sim.expire_tokens_after(3)  # the 4th page finds its token expired
    rows = c.meter_readings(date(2026, 2, 1), date(2026, 3, 1))
    assert len(rows) == 28 * len(sim.meters())
    assert (c.session.logins, c.session.refreshes) == (1, 1)
    assert (sim.logins, sim.refreshes) == (1, 1)
    assert sim.stats.snapshot()[(READINGS_PATH, 401)] == 1


def test_a_revoked_session_logs_in_again_once(server, sim):
    c = client(server, page_size=50, days_per_request=5)
    sim.revoke_sessions_after(2)
    rows = c.meter_readings(date(2026, 2, 1), date(2026, 2, 15))
    assert len(rows) == 14 * len(sim.meters())
    assert (c.session.logins, c.session.refreshes) == (2, 0)  # the refresh token was refused with the session
    assert sim.stats.snapshot()[("/auth/refresh", 401)] == 1
    assert sim.stats.snapshot()[(READINGS_PATH, 401)] == 1


def test_the_token_is_refreshed_before_it_expires(server, sim, clock):
    c = client(server)
    ticks = [0.0]
    c._clock = lambda: ticks[0]
    c.monthly_consumption("2026-02", "dma")
    # 880 s later (TTL 900 s, renewed 30 s early) both clocks agree the token is nearly spent.
    ticks[0] += 880.0
    clock.now += timedelta(seconds=880)
    c.monthly_consumption("2026-02", "dma")
    assert (c.session.logins, c.session.refreshes) == (1, 1)
    assert not any(status == 401 for (_, status) in sim.stats.snapshot())


def test_rate_limits_and_broken_answers_are_retried(server, sim):
    c = client(server)
    sim.inject("status", READINGS_PATH, status=429, retry_after=1)
    sim.inject("truncated", READINGS_PATH)
    sim.inject("malformed", READINGS_PATH)
    sim.inject("status", READINGS_PATH, status=503)
    rows = c.meter_readings(date(2026, 3, 1), date(2026, 3, 2))
    assert rows == sim.closing_registers(date(2026, 3, 1), date(2026, 3, 2))
    assert c.rate_limit_waits == 1
    assert sim.stats.snapshot()[(READINGS_PATH, 200)] == 3  # truncated, malformed, then the good answer


def test_a_source_that_hangs_fails_within_the_deadline(server, sim):
    c = client(server, deadline_s=0.5, max_retries=0)
    sim.inject("slow", READINGS_PATH, delay_s=3)
    with pytest.raises(SourceError) as caught:
        c.meter_readings(date(2026, 3, 1), date(2026, 3, 2))
    assert READINGS_PATH in str(caught.value)


def test_a_wrong_password_fails_naming_the_login_never_the_password(server, sim):
    c = client(server, password="Wrong-Password-Never-Shown")
    with pytest.raises(SourceError) as caught:
        c.monthly_consumption("2026-02", "customer")
    assert caught.value.status == 401 and "/auth/login" in str(caught.value)
    assert "Wrong-Password-Never-Shown" not in str(caught.value) and "Never-Shown" not in repr(c)


def test_customers_changed_pages_by_cursor_and_reports_as_of(server, sim, clock):
    c = client(server, page_size=10)
    everyone = c.customers_changed(None)
    assert (len(everyone.rows), everyone.pages, everyone.as_of) == (len(sim.meters()), 5, NOW)
    clock.now = NOW + timedelta(days=30)
    changed = c.customers_changed(everyone.as_of)
    assert {r["customer_id"] for r in changed.rows} == sim.changed_between(NOW, clock.now)
    assert sim.last_changed_since == "2026-03-15T06:00:00Z"
    # Thirty days on the server's clock, a moment on the client's: the token is refused once; the refresh
    # token (valid a day) is refused too, so the client logs in again, once.
    stats = sim.stats.snapshot()
    assert (stats[(CUSTOMERS_PATH, 401)], stats[("/auth/refresh", 401)], c.session.logins) == (1, 1, 2)
    assert stats[(CUSTOMERS_PATH, 200)] == 5 + changed.pages


def test_pseudonymizer_drops_name_and_address_and_hashes_the_phone(server, sim):
    pii = CustomerPseudonymizer(hash_key=KEY)
    record = sim.customers()[0]
    (row,) = pii.pseudonymize([record])
    assert set(row) == set(record) - {"name", "address", "phone"} | {"phone_hash"}
    expected = hmac.new(KEY.encode(), normalize_phone(record["phone"]).encode(), hashlib.sha256).hexdigest()
    assert row["phone_hash"] == expected
    assert pii.hash_phone("081-234-5678") == pii.hash_phone("+66 81 234 5678")
    assert CustomerPseudonymizer(hash_key=KEY + "x").hash_phone("081-234-5678") != pii.hash_phone("081-234-5678")
    assert pii.pseudonymize([["not", "a", "record"]]) == [{"_not_an_object": "list"}]
    with pytest.raises(ValueError, match="BILLING_PII_HASH_KEY must be at least 16"):
        _ = CustomerPseudonymizer(hash_key="short").key_id
