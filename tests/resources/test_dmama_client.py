"""The DMAMA client and the resilient HTTP layer, against the simulator on loopback (no HTTP mocks)."""

from __future__ import annotations

import logging
import pickle
import re
import threading
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from resources.dmama import DmamaClient
from resources.http import (
    CircuitBreaker,
    CircuitOpenError,
    OAuth2ClientCredentials,
    PayloadError,
    ResilientClient,
    SourceError,
)

SINCE = datetime(2026, 3, 4, tzinfo=UTC)
UNTIL = SINCE + timedelta(hours=6)
READINGS = "/api/dma/{dma_id}/readings"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Sleeps(list):
    """An injected sleep: records how long the client wanted to wait, and does not wait."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def make_client(server, sim):
    clients: list[DmamaClient] = []

    def make(**overrides) -> DmamaClient:
        config = server.config
        settings = {
            "base_url": server.url,
            "api_key": config.api_key,
            "client_id": config.client_id,
            "client_secret": config.client_secret,
            "backoff_base_s": 0.01,
            "timeout_s": 5.0,
        }
        client = DmamaClient(**{**settings, **overrides})
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client):
    return make_client()


def with_ids(rows: list[dict], key: str, value: str) -> list[dict]:
    return [{**row, key: value} for row in rows]


# ---------------------------------------------------------------------- catalogue and readings


def test_lists_follow_every_page(make_client, sim):
    client = make_client(page_size=2)
    assert client.dma_list() == [{k: d[k] for k in ("dma_id", "name", "zone")} for d in sim.dmas()]
    assert sim.stats[("/api/dma/list", 200)] == 3
    assert client.meters("DMA-0003") == sim.meters("DMA-0003")
    assert sim.stats[("/api/dma/{dma_id}/meters", 200)] == 5


def test_catalogue_fetches_every_dma_in_order(client, sim):
    assert client.dma_catalogue() == sim.dmas()


def test_flow_readings_are_the_source_rows_with_the_dma_id(client, sim):
    rows = client.flow_readings("DMA-0002", SINCE, UNTIL)
    assert rows == with_ids(sim.flow_readings("DMA-0002", SINCE, UNTIL), "dma_id", "DMA-0002")


def test_ranges_longer_than_the_api_allows_are_split(client, sim):
    until = SINCE + timedelta(days=40)
    rows = client.flow_readings("DMA-0001", SINCE, until)
    middle = SINCE + timedelta(days=31)
    truth = sim.flow_readings("DMA-0001", SINCE, middle) + sim.flow_readings("DMA-0001", middle, until)
    assert rows == with_ids(truth, "dma_id", "DMA-0001")
    assert sim.stats[(READINGS, 200)] == 2


def test_soap_gives_the_same_values_as_json_as_text(make_client):
    json_rows = make_client().flow_readings("DMA-0005", SINCE, UNTIL)
    soap_rows = make_client(payload_format="soap").flow_readings("DMA-0005", SINCE, UNTIL)
    assert all(isinstance(row["flow_m3h"], str) for row in soap_rows)
    assert [
        {**row, "flow_m3h": float(row["flow_m3h"]), "pressure_bar": float(row["pressure_bar"])} for row in soap_rows
    ] == json_rows


def test_many_dmas_concurrently_with_one_token(make_client, sim):
    issued = sim.issued_tokens
    client = make_client(concurrency=4)
    got = dict(client.flow_readings_many(sim.dma_ids(), SINCE, UNTIL))
    assert got == {dma: with_ids(sim.flow_readings(dma, SINCE, UNTIL), "dma_id", dma) for dma in sim.dma_ids()}
    meters = [m["meter_id"] for m in sim.meters("DMA-0004")]
    readings = dict(client.meter_readings_many(meters, SINCE, UNTIL))
    assert readings == {m: with_ids(sim.meter_readings(m, SINCE, UNTIL), "meter_id", m) for m in meters}
    assert sim.issued_tokens == issued + 1 and client.tokens_fetched == 1


def test_a_failure_in_one_of_many_propagates_naming_its_endpoint(make_client, sim):
    sim.inject("status", path="/api/dma/DMA-0003/readings", count=100, status=503)
    client = make_client(max_retries=1, concurrency=2)
    with pytest.raises(SourceError) as caught:
        list(client.flow_readings_many(sim.dma_ids(), SINCE, UNTIL))
    assert caught.value.endpoint == "/api/dma/DMA-0003/readings"


def test_bad_ranges_fail_before_any_request(client, sim):
    with pytest.raises(ValueError, match="timezone-aware"):
        client.flow_readings("DMA-0001", datetime(2026, 3, 1), datetime(2026, 3, 2))
    with pytest.raises(ValueError, match="not after"):
        list(client.flow_readings_many(["DMA-0001"], UNTIL, SINCE))
    assert sim.stats == {}


def test_unknown_ids_fail_at_once_with_the_source_detail(make_client, sim):
    with pytest.raises(SourceError) as caught:
        make_client().dma_details("DMA-0099")
    error = caught.value
    assert (error.status, error.attempts, error.endpoint) == (404, 1, "/api/dma/DMA-0099")
    assert str(error) == (
        "dmama: GET /api/dma/DMA-0099 failed: HTTP 404 Not Found: no DMA 'DMA-0099' (ids run DMA-0001..DMA-0005)"
    )
    with pytest.raises(SourceError) as soap:
        make_client(payload_format="soap").flow_readings("DMA-0099", SINCE, UNTIL)
    assert soap.value.attempts == 1 and "DMA-0099" in str(soap.value)  # a SOAP Client fault is not retried


# ---------------------------------------------------------------------- authentication


def test_an_expired_token_is_refreshed_once_transparently(client, sim):
    client.dma_list()
    issued = sim.issued_tokens
    sim.expire_tokens()
    assert client.flow_readings("DMA-0001", SINCE, UNTIL)
    assert sim.issued_tokens == issued + 1
    assert sim.stats[(READINGS, 401)] == 1 and sim.stats[(READINGS, 200)] == 1


def test_the_token_is_renewed_before_it_expires(make_client, sim):
    clock = FakeClock()
    client = make_client().use_timing(clock=clock)
    client.dma_list()
    clock.now += 3600 - 31
    client.dma_list()
    assert client.tokens_fetched == 1
    clock.now += 2  # inside the 30 s skew before expiry
    client.dma_list()
    assert client.tokens_fetched == 2 and sim.stats.get(("/api/dma/list", 401)) is None


def test_a_wrong_api_key_fails_without_fetching_new_tokens(make_client, sim):
    client = make_client(api_key="wrong-key-abc")
    with pytest.raises(SourceError) as caught:
        client.dma_list()
    assert caught.value.status == 401 and "X-API-Key" in str(caught.value)
    assert client.tokens_fetched == 1


def test_a_wrong_client_secret_names_the_token_endpoint(make_client):
    with pytest.raises(SourceError) as caught:
        make_client(client_secret="wrong-secret-xyz").dma_list()
    assert str(caught.value) == "dmama: POST /oauth/token failed: HTTP 401 Unauthorized: unknown client or wrong secret"


def test_secrets_never_appear_in_errors_reprs_or_logs(make_client, sim, caplog):
    caplog.set_level(logging.DEBUG)
    secret, key = "s3cret-value-never-shown", "k3y-value-never-shown"
    texts = []
    for overrides in ({"client_secret": secret}, {"api_key": key}):
        client = make_client(**overrides)
        texts.append(repr(client) + str(client))
        with pytest.raises(SourceError) as caught:
            client.dma_list()
        texts.append(str(caught.value) + repr(caught.value))
    sim.inject("status", path="/api/*", count=2, status=503)
    sim.expire_tokens()
    good = make_client()
    good.dma_list()
    texts.append(repr(good._connection().http) + repr(good._connection().oauth))
    token = good._connection().oauth.token()
    everything = "\n".join(texts) + caplog.text
    assert "retrying" in caplog.text
    for value in (secret, key, sim.config.api_key, sim.config.client_secret, token):
        assert value not in everything


# ---------------------------------------------------------------------- retries


def test_429_waits_what_retry_after_says(make_client, sim):
    sleeps = Sleeps()
    client = make_client().use_timing(sleep=sleeps)
    sim.inject("status", path="/api/dma/*/readings", status=429, retry_after=7)
    assert client.flow_readings("DMA-0001", SINCE, UNTIL)
    assert sleeps == [7.0]


def test_retry_after_as_an_http_date_and_capped(make_client, sim):
    sleeps = Sleeps()
    client = make_client().use_timing(sleep=sleeps)
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=20), usegmt=True)
    sim.inject("status", path="/api/dma/list", status=503, retry_after=when)
    sim.inject("status", path="/api/dma/list", status=503, retry_after=3600)
    client.dma_list()
    assert 15 < sleeps[0] <= 20 and sleeps[1] == 60.0


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_transient_statuses_are_retried_with_exponential_backoff(make_client, sim, status):
    sleeps = Sleeps()
    client = make_client().use_timing(sleep=sleeps)
    sim.inject("status", path="/api/dma/*/readings", count=2, status=status)
    assert client.flow_readings("DMA-0002", SINCE, UNTIL) == with_ids(
        sim.flow_readings("DMA-0002", SINCE, UNTIL), "dma_id", "DMA-0002"
    )
    assert sleeps == [0.01, 0.02]
    assert sim.stats[(READINGS, status)] == 2 and sim.stats[(READINGS, 200)] == 1


def test_a_persistent_outage_fails_after_exactly_four_attempts(make_client, sim, caplog):
    sim.inject("status", path="/api/dma/*/readings", count=100, status=503)
    with pytest.raises(SourceError) as caught:
        make_client().flow_readings("DMA-0001", SINCE, UNTIL)
    error = caught.value
    assert str(error) == "dmama: GET /api/dma/DMA-0001/readings failed after 4 attempts: HTTP 503 Service Unavailable"
    assert (error.source, error.endpoint, error.status, error.attempts) == (
        "dmama",
        "/api/dma/DMA-0001/readings",
        503,
        4,
    )
    assert sim.stats[(READINGS, 503)] == 4
    retries = [r for r in caplog.records if r.levelno == logging.WARNING and "retrying" in r.getMessage()]
    assert len(retries) == 3 and "/api/dma/DMA-0001/readings attempt 1 of 4" in retries[0].getMessage()


def test_an_answer_slower_than_the_timeout_is_retried(make_client, sim, caplog):
    sim.inject("slow", path="/api/dma/DMA-0004/readings", delay_s=0.6)
    rows = make_client(timeout_s=0.2).flow_readings("DMA-0004", SINCE, UNTIL)
    assert len(rows) == 24
    assert "no answer within 0.2 s" in caplog.text


@pytest.mark.parametrize("kind", ["truncated", "malformed"])
def test_a_broken_body_is_retried(make_client, sim, kind):
    sim.inject(kind, path="/api/dma/*/readings")
    assert len(make_client().flow_readings("DMA-0001", SINCE, UNTIL)) == 24
    # The broken answer, then the good one; a loaded machine can time out one more attempt on the way.
    assert sim.stats[(READINGS, 200)] >= 2


@pytest.mark.parametrize(
    ("kind", "payload_format", "expected"),
    [
        (
            "truncated",
            "json",
            r"body is not valid JSON: .+ at line 1, column \d+ \(char (\d+) of \1 bytes\)$",
        ),
        (
            "malformed",
            "json",
            r"body is not valid JSON: Expecting ':' delimiter at line 1, column 10 \(char 9 of",
        ),
        ("malformed", "soap", r"body is not well-formed XML: mismatched tag: line 1, column \d+"),
    ],
)
def test_a_body_that_never_decodes_is_a_payload_error(make_client, sim, kind, payload_format, expected):
    sim.inject(kind, path="/*/readings", count=100)
    with pytest.raises(PayloadError) as caught:
        make_client(payload_format=payload_format).flow_readings("DMA-0001", SINCE, UNTIL)
    assert caught.value.attempts == 4 and re.search(expected, str(caught.value))
    assert caught.value.endpoint in ("/api/dma/DMA-0001/readings", "/soap/readings")


def test_damaged_rows_come_through_raw(client, sim):
    truth = with_ids(sim.flow_readings("DMA-0003", SINCE, UNTIL), "dma_id", "DMA-0003")
    sim.inject("wrong_types", path="/api/dma/DMA-0003/readings")
    wrong = client.flow_readings("DMA-0003", SINCE, UNTIL)
    assert len(wrong) == len(truth) and "n/a" in [row["flow_m3h"] for row in wrong]
    assert "31/02/2026 25:61" in [row["timestamp"] for row in wrong]
    sim.inject("duplicates", path="/api/dma/DMA-0003/readings")
    assert len(client.flow_readings("DMA-0003", SINCE, UNTIL)) > len(truth)
    sim.inject("out_of_order", path="/api/dma/DMA-0003/readings")
    shuffled = client.flow_readings("DMA-0003", SINCE, UNTIL)
    assert shuffled != truth and sorted(shuffled, key=lambda r: r["timestamp"]) == truth


# ---------------------------------------------------------------------- circuit breaker


def test_the_breaker_opens_after_five_failures_and_fails_fast(make_client, sim):
    clock = FakeClock()
    client = make_client(max_retries=0).use_timing(clock=clock)
    client.dma_list()  # the token is cached before the outage
    sim.inject("status", path="/api/dma/*/readings", count=100, status=503)
    for _ in range(5):
        with pytest.raises(SourceError) as caught:
            client.flow_readings("DMA-0001", SINCE, UNTIL)
        assert not isinstance(caught.value, CircuitOpenError)
    for _ in range(3):
        with pytest.raises(CircuitOpenError, match="circuit open after 5 consecutive failures"):
            client.flow_readings("DMA-0001", SINCE, UNTIL)
    assert sim.stats[(READINGS, 503)] == 5 and sim.requests_to(READINGS) == 5
    assert client.breaker.state == CircuitBreaker.OPEN

    clock.now += 60  # half-open: one trial goes out; it fails and the circuit opens again
    with pytest.raises(SourceError):
        client.flow_readings("DMA-0001", SINCE, UNTIL)
    assert sim.requests_to(READINGS) == 6 and client.breaker.state == CircuitBreaker.OPEN
    with pytest.raises(CircuitOpenError):
        client.flow_readings("DMA-0001", SINCE, UNTIL)

    sim.clear_faults()
    clock.now += 60  # the next trial succeeds and closes the circuit
    assert client.flow_readings("DMA-0001", SINCE, UNTIL)
    assert client.breaker.state == CircuitBreaker.CLOSED
    assert client.flow_readings("DMA-0002", SINCE, UNTIL)


def test_retries_stop_as_soon_as_the_breaker_opens(make_client, sim):
    client = make_client()
    client.dma_list()
    sim.inject("status", path="/api/dma/*/readings", count=100, status=503)
    with pytest.raises(SourceError):
        client.flow_readings("DMA-0001", SINCE, UNTIL)  # 4 attempts
    with pytest.raises(CircuitOpenError) as opened:
        client.flow_readings("DMA-0001", SINCE, UNTIL)  # the 5th attempt opens the circuit
    assert str(opened.value) == (
        "dmama: GET /api/dma/DMA-0001/readings failed: circuit open after 5 consecutive failures "
        "(last failure: HTTP 503 Service Unavailable); next trial in 60 s"
    )
    with pytest.raises(CircuitOpenError, match="readings not attempted: circuit open"):
        client.flow_readings("DMA-0001", SINCE, UNTIL)
    assert sim.stats[(READINGS, 503)] == 5


def test_breaker_states_with_a_fake_clock():
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=5, reset_after_s=60, clock=clock)
    for _ in range(4):
        assert breaker.allow()
        breaker.record_failure()
    breaker.record_success()  # a success resets the count
    for _ in range(5):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state == "open" and not breaker.allow() and breaker.retry_in_s() == 60
    clock.now += 59.9
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.state == "half_open"
    assert breaker.allow() and not breaker.allow()  # exactly one trial
    breaker.record_success()
    assert breaker.state == "closed" and breaker.allow()


def test_breaker_allows_one_trial_among_threads():
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, reset_after_s=1, clock=clock)
    breaker.record_failure()
    clock.now += 1
    allowed = []
    threads = [threading.Thread(target=lambda: allowed.append(breaker.allow())) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert allowed.count(True) == 1


# ---------------------------------------------------------------------- the generic layer on its own


def test_resilient_client_and_oauth_on_their_own(server, sim):
    config = server.config
    sleeps = Sleeps()
    with ResilientClient("dmama", server.url, headers={"X-API-Key": config.api_key}, sleep=sleeps) as http:
        oauth = OAuth2ClientCredentials("/oauth/token", config.client_id, config.client_secret, client=http)
        http.auth = oauth
        sim.inject("status", path="/oauth/token", status=503, retry_after=1)
        assert http.get_json("/api/dma/list", {"page_size": 1})["total"] == 5
        assert sleeps == [1.0] and oauth.tokens_fetched == 1
        assert "secret" not in repr(oauth) and config.client_secret not in repr(oauth)
        token = oauth.token()
        oauth.invalidate("some-other-token")
        assert oauth.token() == token  # someone else's stale token does not discard ours
        oauth.invalidate(token)
        assert oauth.token() != token


def test_source_errors_survive_pickling():
    error = SourceError("dmama", "/api/dma/list", "HTTP 503 Service Unavailable", status=503, attempts=4)
    copy = pickle.loads(pickle.dumps(error))
    assert str(copy) == str(error) and copy.status == 503 and copy.attempts == 4
    opened = pickle.loads(pickle.dumps(CircuitOpenError("dmama", "/x", "circuit open", attempts=0)))
    assert str(opened) == "dmama: GET /x not attempted: circuit open"


def test_tls_is_verified_by_default(server):
    assert DmamaClient.model_fields["verify_tls"].default is True
    assert ResilientClient.__init__.__kwdefaults__["verify"] is True
