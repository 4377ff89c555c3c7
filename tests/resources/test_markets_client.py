"""The markets client against the simulator: rows as sent, ranges in pieces, retries, rate limits, secrets
kept; and the freight model's validated YAML."""

from __future__ import annotations

import time
from datetime import date

import pytest

from resources.http import SourceError
from resources.markets import SHIPPED_FREIGHT_MODEL, FreightModelResource, MarketsClient, load_freight_model
from resources.yaml_files import ConfigError
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


def test_prices_and_rates_as_sent(markets, sim):
    c = client(markets)
    start, end = date(2026, 3, 2), date(2026, 3, 9)
    assert c.fuel_prices(start, end) == sim.fuel_prices(start, end) != []
    assert c.exchange_rates(start, end) == sim.fx_rates(start, end) != []
    assert c.cement_prices(start, end) == sim.cement_prices(start, end)
    assert len(c.cement_prices(start, end)) == 7 * 20


def test_a_long_range_is_asked_for_in_pieces_the_api_accepts(markets, sim):
    start, end = date(2026, 1, 1), date(2026, 7, 1)  # 181 days; the API answers at most 92 of cement prices
    rows = client(markets).cement_prices(start, end)
    assert rows == sim.cement_prices(start, end)
    assert sim.requests_to("/api/v1/cement-prices") == 2


def test_a_rate_limited_backfill_waits_and_gets_everything(markets, sim):
    sim.inject("rate_limited", "/api/v1/fx-rates", count=4, share=0.5, retry_after=0)
    c = client(markets)
    start = date(2025, 1, 1)
    rows = c.exchange_rates(start, date(2026, 6, 1))  # 516 days: two requests, each refused once
    assert rows == sim.fx_rates(start, date(2026, 6, 1))
    assert c.rate_limit_waits == 2
    assert sim.stats == {("/api/v1/fx-rates", 429): 2, ("/api/v1/fx-rates", 200): 2}


def test_the_freight_model_file_is_validated_with_the_line(tmp_path):
    model = load_freight_model()
    assert (model.payload_t, model.fuel_l_per_km, model.fixed.total_inr_per_km) == (25.0, 0.35, 24.0)
    broken = tmp_path / "freight.yaml"
    text = SHIPPED_FREIGHT_MODEL.read_text().replace("payload_t: 25", "payload_t: -25")
    broken.write_text(text)
    with pytest.raises(ConfigError) as error:
        FreightModelResource(path=str(broken)).model()
    line = next(i for i, row in enumerate(text.splitlines(), start=1) if "payload_t:" in row)
    assert f"freight.yaml:{line}: road_truck.payload_t: " in str(error.value)
    assert "greater than 0" in str(error.value)
