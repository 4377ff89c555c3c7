"""The markets client against the simulator: rows as sent, retries, rate limits, secrets kept."""

from __future__ import annotations

import time

import pytest

from resources.http import SourceError
from resources.markets import MarketsClient
from simulators.markets import MarketsConfig, serve_markets


@pytest.fixture(scope="module")
def markets():
    with serve_markets(MarketsConfig()) as running:
        yield running


@pytest.fixture
def sim(markets):
    markets.simulator.clear_faults()
    markets.simulator.reset_stats()
    yield markets.simulator
    markets.simulator.clear_faults()


def client(markets, **overrides) -> MarketsClient:
    return MarketsClient(
        **{"base_url": markets.url, "api_key": markets.config.api_key, "backoff_base_s": 0.01, **overrides}
    )


def test_tariffs_and_holidays_as_sent(markets, sim):
    c = client(markets)
    assert c.tariffs() == sim.tariffs()
    assert c.holidays(2027) == sim.holidays(2027)
    assert c.holidays() == sim.holidays()


def test_a_429_is_waited_out_as_retry_after_says(markets, sim):
    c = client(markets)
    sim.inject("status", "/api/v1/tariffs", status=429, retry_after=1)
    assert c.tariffs() == sim.tariffs()
    assert c.rate_limit_waits == 1
    assert sim.stats == {("/api/v1/tariffs", 429): 1, ("/api/v1/tariffs", 200): 1}


def test_5xx_is_retried_then_reported_with_the_endpoint(markets, sim):
    sim.inject("status", "/api/v1/holidays", count=2, status=503)
    assert client(markets).holidays(2026) == sim.holidays(2026)
    sim.inject("status", "/api/v1/holidays", count=10, status=502)
    with pytest.raises(SourceError) as failure:
        client(markets, max_retries=1).holidays()
    assert "/api/v1/holidays" in str(failure.value)
    assert sim.requests_to("/api/v1/holidays") == 3 + 2


def test_a_wrong_key_fails_without_showing_it(markets, sim):
    with pytest.raises(SourceError) as failure:
        client(markets, api_key="not-the-key-123").tariffs()
    assert failure.value.status == 401
    assert "not-the-key-123" not in str(failure.value)
    assert "not-the-key-123" not in repr(client(markets, api_key="not-the-key-123"))


@pytest.mark.parametrize("kind", ["truncated", "malformed"])
def test_a_broken_body_is_retried(markets, sim, kind):
    sim.inject(kind, "/api/v1/tariffs")
    assert client(markets).tariffs() == sim.tariffs()
    assert sim.requests_to("/api/v1/tariffs") == 2


def test_a_slow_answer_times_out_and_is_retried(markets, sim):
    sim.inject("slow", "/api/v1/holidays", delay_s=1.0)
    assert client(markets, timeout_s=0.3).holidays(2026) == sim.holidays(2026)
    time.sleep(1.0)  # the abandoned first request is counted when the server finishes it
    assert sim.requests_to("/api/v1/holidays") == 2
