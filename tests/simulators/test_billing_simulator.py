"""The billing simulator over HTTP: JWT sessions, DMAMA's meters and registers, paging, its own bad data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from simulators.billing import CUSTOMERS_PATH, MONTHLY_PATH, READINGS_PATH, BillingConfig, serve_billing
from simulators.dmama import DmamaConfig, DmamaSimulator


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(scope="module")
def clock():
    return Clock(datetime(2026, 3, 15, 6, tzinfo=UTC))


@pytest.fixture(scope="module")
def server(clock):
    with serve_billing(BillingConfig(), clock=clock) as running:
        yield running


@pytest.fixture
def sim(server, clock):
    clock.now = datetime(2026, 3, 15, 6, tzinfo=UTC)
    server.simulator.clear_faults()
    server.simulator.reset_stats()
    yield server.simulator
    server.simulator.clear_faults()


@pytest.fixture
def http(server):
    with httpx.Client(base_url=server.url) as client:
        yield client


def login(http, server) -> dict:
    answer = http.post("/auth/login", json={"username": server.config.username, "password": server.config.password})
    assert answer.status_code == 200, answer.text
    return answer.json()


def bearer(tokens: dict) -> dict:
    return {"Authorization": f"Bearer {tokens['access_token']}"}


def test_billed_meters_are_dmamas_customer_meters_with_its_registers(sim):
    dmama = DmamaSimulator(DmamaConfig(), clock=lambda: datetime(2026, 3, 15, 6, tzinfo=UTC))
    customer_meters = [m for d in dmama.dma_ids() for m in dmama.meters(d) if m["kind"] == "customer"]
    assert [m["meter_id"] for m in sim.meters()] == [m["meter_id"] for m in customer_meters]
    rows = sim.closing_registers(datetime(2026, 3, 1).date(), datetime(2026, 3, 3).date())
    assert len(rows) == 2 * len(customer_meters)
    first = rows[0]
    truth = dmama.meter_readings(first["meter_id"], "2026-03-02T00:00:00Z", "2026-03-02T01:00:00Z")
    assert first["reading_date"] == "2026-03-01" and first["register_m3"] == truth[0]["register_m3"]
    assert first["customer_id"] == "C-" + first["meter_id"][2:]


def test_no_api_call_without_a_valid_token(http, server, sim):
    assert http.get(READINGS_PATH, params={"date_from": "2026-03-01", "date_to": "2026-03-02"}).status_code == 401
    wrong = http.post("/auth/login", json={"username": server.config.username, "password": "guess"})
    assert (wrong.status_code, wrong.json()["error"]) == (401, "invalid_credentials")
    forged = {"Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2lnbmF0dXJl"}
    answer = http.get(READINGS_PATH, params={"date_from": "2026-03-01", "date_to": "2026-03-02"}, headers=forged)
    assert answer.status_code == 401 and 'error="invalid_token"' in answer.headers["www-authenticate"]


def test_refresh_rotates_the_pair_and_spends_the_old_refresh_token(http, server, sim):
    tokens = login(http, server)
    assert tokens["expires_in"] == server.config.access_ttl_s and tokens["token_type"] == "Bearer"
    renewed = http.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert renewed.status_code == 200
    again = http.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert again.status_code == 401
    params = {"date_from": "2026-03-01", "date_to": "2026-03-02"}
    assert http.get(READINGS_PATH, params=params, headers=bearer(renewed.json())).status_code == 200


def test_tokens_expire_by_the_clock_and_early_on_request(http, server, sim, clock):
    tokens = login(http, server)
    params = {"date_from": "2026-03-01", "date_to": "2026-03-02"}
    sim.inject("token_expired", READINGS_PATH)
    early = http.get(READINGS_PATH, params=params, headers=bearer(tokens))
    assert (early.status_code, early.json()["error"]) == (401, "token_expired")
    assert http.get(READINGS_PATH, params=params, headers=bearer(tokens)).status_code == 401  # stays expired
    fresh = http.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).json()
    assert http.get(READINGS_PATH, params=params, headers=bearer(fresh)).status_code == 200
    clock.now += timedelta(seconds=server.config.access_ttl_s)
    late = http.get(READINGS_PATH, params=params, headers=bearer(fresh))
    assert (late.status_code, late.json()["error"]) == (401, "token_expired")


def test_a_revoked_session_refuses_its_refresh_token_too(http, server, sim):
    tokens = login(http, server)
    params = {"date_from": "2026-03-01", "date_to": "2026-03-02"}
    sim.revoke_sessions_after(1)
    assert http.get(READINGS_PATH, params=params, headers=bearer(tokens)).status_code == 200
    revoked = http.get(READINGS_PATH, params=params, headers=bearer(tokens))
    assert (revoked.status_code, revoked.json()["error"]) == (401, "token_revoked")
    assert http.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]}).status_code == 401
    assert http.get(READINGS_PATH, params=params, headers=bearer(login(http, server))).status_code == 200


def test_readings_are_paged_and_only_closed_days_are_served(http, server, sim):
    headers = bearer(login(http, server))
    billed = len(sim.meters())
    params = {"date_from": "2026-03-10", "date_to": "2026-03-20", "page_size": 100}
    pages, page = [], 1
    while page:
        body = http.get(READINGS_PATH, params={**params, "page": page}, headers=headers).json()
        pages.append(body["items"])
        page = body["next_page"]
    rows = [r for p in pages for r in p]
    # Now is 06:00 UTC on 15 March: 10–14 March have closed, 15 March has not.
    assert len(rows) == 5 * billed and body["total"] == 5 * billed
    assert {r["reading_date"] for r in rows} == {f"2026-03-{d}" for d in range(10, 15)}
    assert len(pages) == -(-5 * billed // 100)


def test_the_rollover_fault_turns_a_5_digit_register_over(http, server, sim):
    meter = sim.first_meter_with_digits(5)
    sim.inject("rollover", READINGS_PATH, meter_id=meter, date="2026-03-05")
    body = http.get(
        READINGS_PATH,
        params={"date_from": "2026-03-03", "date_to": "2026-03-07", "page_size": 1000},
        headers=bearer(login(http, server)),
    ).json()
    mine = {r["reading_date"]: r["register_m3"] for r in body["items"] if r["meter_id"] == meter}
    assert (mine["2026-03-04"], mine["2026-03-05"]) == (99_678.0, 123.0)
    truth = {
        r["reading_date"]: r["register_m3"]
        for r in sim.closing_registers(*_days("2026-03-03", "2026-03-07"))
        if r["meter_id"] == meter
    }
    # The days around keep their true increments: the register runs on from the spoilt values.
    assert mine["2026-03-06"] - 123.0 == pytest.approx(truth["2026-03-06"] - truth["2026-03-05"], abs=1e-3)
    assert 99_678.0 - mine["2026-03-03"] == pytest.approx(truth["2026-03-04"] - truth["2026-03-03"], abs=1e-3)


def test_the_implausible_decrease_fault_reads_one_day_low(http, server, sim):
    meter = sim.meters()[3]["meter_id"]
    sim.inject("implausible_decrease", READINGS_PATH, meter_id=meter, date="2026-03-05")
    body = http.get(
        READINGS_PATH,
        params={"date_from": "2026-03-04", "date_to": "2026-03-07", "page_size": 1000},
        headers=bearer(login(http, server)),
    ).json()
    mine = {r["reading_date"]: r["register_m3"] for r in body["items"] if r["meter_id"] == meter}
    assert mine["2026-03-05"] < mine["2026-03-04"] < mine["2026-03-06"]


def test_monthly_dma_totals_are_the_sum_of_their_customers(http, server, sim):
    headers = bearer(login(http, server))
    per_customer = http.get(MONTHLY_PATH, params={"month": "2026-02", "level": "customer"}, headers=headers).json()
    per_dma = http.get(MONTHLY_PATH, params={"month": "2026-02", "level": "dma"}, headers=headers).json()
    assert per_customer["total"] == len(sim.meters())
    for total in per_dma["items"]:
        mine = [r["billed_m3"] for r in per_customer["items"] if r["dma_id"] == total["dma_id"]]
        assert total["billed_m3"] == pytest.approx(sum(mine), abs=1e-6) and total["customers"] == len(mine)
    still_open = http.get(MONTHLY_PATH, params={"month": "2026-03", "level": "dma"}, headers=headers)
    assert still_open.status_code == 409


def test_customers_listing_is_incremental_with_a_stable_cursor(http, server, sim, clock):
    headers = bearer(login(http, server))
    first = http.get(CUSTOMERS_PATH, params={"limit": 15}, headers=headers).json()
    everyone = list(first["items"])
    cursor = first["next_cursor"]
    clock.now += timedelta(days=20)  # changes after as_of must not leak into this listing's later pages
    headers = bearer(login(http, server))  # the old token expired meanwhile
    while cursor:
        page = http.get(CUSTOMERS_PATH, params={"limit": 15, "cursor": cursor}, headers=headers).json()
        assert page["as_of"] == first["as_of"]
        everyone.extend(page["items"])
        cursor = page["next_cursor"]
    assert len(everyone) == len({r["customer_id"] for r in everyone}) == len(sim.meters())
    assert {"name", "address", "phone"} <= set(everyone[0])
    as_of = datetime.fromisoformat(first["as_of"].replace("Z", "+00:00"))
    changed = http.get(CUSTOMERS_PATH, params={"changed_since": first["as_of"]}, headers=headers).json()
    expected = sim.changed_between(as_of, clock.now)
    assert expected and {r["customer_id"] for r in changed["items"]} == expected
    assert all(r["updated_at"] > first["as_of"] for r in changed["items"])


def test_shared_faults_apply_to_the_api(http, server, sim):
    headers = bearer(login(http, server))
    params = {"date_from": "2026-03-01", "date_to": "2026-03-02"}
    sim.inject("status", READINGS_PATH, status=429, retry_after=2)
    limited = http.get(READINGS_PATH, params=params, headers=headers)
    assert (limited.status_code, limited.headers["retry-after"]) == (429, "2")
    sim.inject("duplicates", READINGS_PATH)
    doubled = http.get(READINGS_PATH, params=params, headers=headers).json()["items"]
    assert doubled[0] == doubled[1]
    sim.inject("wrong_types", READINGS_PATH)
    spoilt = http.get(READINGS_PATH, params=params, headers=headers).json()["items"][0]
    assert spoilt["register_m3"] == "n/a" and spoilt["reading_date"] == "yesterday"
    sim.inject("truncated", READINGS_PATH)
    with pytest.raises(ValueError):
        http.get(READINGS_PATH, params=params, headers=headers).json()


def _days(a: str, b: str):
    return datetime.fromisoformat(a).date(), datetime.fromisoformat(b).date()
