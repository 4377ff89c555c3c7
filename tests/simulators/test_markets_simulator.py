"""The markets simulator on loopback: tariffs, holidays, fuel, exchange rates and cement prices with the API
key, and the shared faults plus its own on request."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from itertools import pairwise

import httpx
import pytest

from simulators.markets import CITIES, OVERLAPPING_TARIFF, MarketsConfig, MarketsSimulator, serve_markets
from simulators.plant_network import PLANTS


@pytest.fixture(scope="module")
def markets():
    with serve_markets(MarketsConfig()) as running:
        yield running


@pytest.fixture
def api(markets):
    markets.simulator.clear_faults()
    markets.simulator.reset_stats()
    with httpx.Client(base_url=markets.url, headers={"X-API-Key": markets.config.api_key}) as client:
        yield client
    markets.simulator.clear_faults()


def test_tariffs_are_versions_with_validity_periods(api):
    tariffs = api.get("/api/v1/tariffs").json()["tariffs"]
    assert [t["tariff_id"] for t in tariffs] == ["PEA-TOU-4.2-2025-09", "PEA-TOU-4.2-2026-05"]
    old, new = tariffs
    assert old["valid_to"] == new["valid_from"] == "2026-05-01T00:00:00+07:00"
    assert new["valid_to"] is None
    assert (new["energy_on_peak_thb_per_kwh"], new["energy_off_peak_thb_per_kwh"]) == (4.1839, 2.6037)
    assert new["ft_thb_per_kwh"] == 0.16
    assert (new["on_peak_start_local"], new["on_peak_end_local"]) == ("09:00", "22:00")


def test_holidays_per_year(api):
    only_2026 = api.get("/api/v1/holidays", params={"year": 2026}).json()["holidays"]
    assert {"date": "2026-03-03", "name": "Makha Bucha Day"} in only_2026
    assert all(h["date"].startswith("2026-") for h in only_2026)
    every_year = api.get("/api/v1/holidays").json()["holidays"]
    assert len(every_year) > len(only_2026)
    assert api.get("/api/v1/holidays", params={"year": "next"}).status_code == 400


def test_the_api_key_is_required(markets, api):
    assert httpx.get(f"{markets.url}/api/v1/tariffs").status_code == 401
    assert httpx.get(f"{markets.url}/api/v1/tariffs", headers={"X-API-Key": "wrong"}).status_code == 401


def test_injected_429_carries_retry_after_then_clears(markets, api):
    markets.simulator.inject("status", "/api/v1/tariffs", status=429, retry_after=2)
    refused = api.get("/api/v1/tariffs")
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "2"
    assert api.get("/api/v1/tariffs").status_code == 200
    assert markets.simulator.stats == {("/api/v1/tariffs", 429): 1, ("/api/v1/tariffs", 200): 1}


@pytest.mark.parametrize("kind", ["truncated", "malformed"])
def test_injected_5xx_and_broken_bodies(markets, api, kind):
    markets.simulator.inject("status", "/api/v1/holidays", status=503)
    assert api.get("/api/v1/holidays").status_code == 503
    markets.simulator.inject(kind, "/api/v1/holidays")
    with pytest.raises(ValueError):
        api.get("/api/v1/holidays").json()


def test_row_faults(markets, api):
    clean = api.get("/api/v1/tariffs").json()["tariffs"]
    markets.simulator.inject("duplicates", "/api/v1/tariffs")
    assert api.get("/api/v1/tariffs").json()["tariffs"] == [clean[0], *clean]
    markets.simulator.inject("out_of_order", "/api/v1/tariffs")
    assert api.get("/api/v1/tariffs").json()["tariffs"] == clean[::-1]
    markets.simulator.inject("wrong_types", "/api/v1/tariffs")
    broken = api.get("/api/v1/tariffs").json()["tariffs"]
    assert broken[0]["energy_on_peak_thb_per_kwh"] == "n/a"
    assert broken[1:] == clean[1:]
    markets.simulator.inject("wrong_types", "/api/v1/holidays")
    assert api.get("/api/v1/holidays").json()["holidays"][0]["date"] == "tomorrow"


def test_overlapping_tariff_fault_adds_a_revision_that_overlaps(markets, api):
    markets.simulator.inject("overlapping_tariff", "/api/v1/tariffs")
    tariffs = api.get("/api/v1/tariffs").json()["tariffs"]
    assert tariffs[-1] == OVERLAPPING_TARIFF
    assert len(api.get("/api/v1/tariffs").json()["tariffs"]) == 2  # one request only


def test_faults_can_be_armed_over_http(markets, api):
    assert (
        api.post("/_sim/faults", json={"kind": "status", "status": 500, "path": "/api/v1/tariffs"}).status_code == 201
    )
    assert api.get("/api/v1/tariffs").status_code == 500
    assert api.post("/_sim/faults", json={"kind": "nonsense"}).status_code == 400


def test_fuel_prices_are_weekly_on_mondays_within_realistic_bands(markets, api):
    prices = api.get("/api/v1/fuel-prices", params={"from": "2026-01-01", "to": "2026-07-01"}).json()["prices"]
    weeks = [date.fromisoformat(p["week_start"]) for p in prices]
    assert weeks[0] == date(2026, 1, 5) and all(w.weekday() == 0 for w in weeks)
    assert [b - a for a, b in pairwise(weeks)] == [timedelta(days=7)] * (len(weeks) - 1)
    assert all(0.9 <= p["diesel_usd_per_l"] <= 1.2 and 60 <= p["brent_usd_per_bbl"] <= 90 for p in prices)
    assert len({p["brent_usd_per_bbl"] for p in prices}) > 10  # a walk, not a constant
    assert prices[0]["published_at"] == "2026-01-05T10:00:00+07:00"
    # Deterministic from the seed: the same answer again, and from a second simulator with that seed.
    assert prices == MarketsSimulator(MarketsConfig()).fuel_prices(date(2026, 1, 1), date(2026, 7, 1))
    assert prices != MarketsSimulator(MarketsConfig(seed=8)).fuel_prices(date(2026, 1, 1), date(2026, 7, 1))


def test_exchange_rates_only_on_business_days(markets, api):
    # Friday 27 Feb, weekend, Monday 2 Mar, Makha Bucha on Tuesday 3 Mar, Wednesday 4 Mar.
    rates = api.get("/api/v1/fx-rates", params={"from": "2026-02-27", "to": "2026-03-05"}).json()["rates"]
    assert sorted({r["rate_date"] for r in rates}) == ["2026-02-27", "2026-03-02", "2026-03-04"]
    assert {(r["base"], r["quote"]) for r in rates} == {("USD", "THB"), ("USD", "INR")}
    assert all(32 <= r["rate"] <= 37 for r in rates if r["quote"] == "THB")
    assert all(82 <= r["rate"] <= 88 for r in rates if r["quote"] == "INR")


def test_cement_prices_per_city_of_the_plant_network(markets, api):
    prices = api.get("/api/v1/cement-prices", params={"from": "2026-03-02", "to": "2026-03-03"}).json()["prices"]
    assert {p["city"] for p in prices} == set(CITIES) == {p.city for p in PLANTS}
    assert len(prices) == len(CITIES) * 2
    assert all(p["currency"] == "INR" and p["bag_kg"] == 50 and 250 < p["price_per_bag"] < 500 for p in prices)
    opc = {p["city"]: p["price_per_bag"] for p in prices if p["grade"] == "OPC 53"}
    ppc = {p["city"]: p["price_per_bag"] for p in prices if p["grade"] == "PPC"}
    assert all(opc[c] - ppc[c] == 25 for c in CITIES)


def test_nothing_is_served_before_it_is_published(markets, api):
    markets.simulator.now = datetime(2026, 3, 2, 3, tzinfo=UTC)  # 10:00 local on Monday 2 March
    try:
        params = {"from": "2026-03-02", "to": "2026-03-03"}
        assert [p["week_start"] for p in api.get("/api/v1/fuel-prices", params=params).json()["prices"]] == [
            "2026-03-02"
        ]
        assert api.get("/api/v1/fx-rates", params=params).json()["rates"] == []  # fixed at 16:30 local
        assert api.get("/api/v1/cement-prices", params=params).json()["prices"] == []  # out at 18:00 local
    finally:
        markets.simulator.now = None


def test_ranges_must_be_dates_and_bounded(markets, api):
    assert api.get("/api/v1/fx-rates", params={"from": "2026-03-02"}).status_code == 400
    assert api.get("/api/v1/fx-rates", params={"from": "2026-03-02", "to": "2028-03-02"}).status_code == 400
    assert api.get("/api/v1/cement-prices", params={"from": "yesterday", "to": "2026-03-02"}).status_code == 400


def test_rate_limited_refuses_every_other_request_with_retry_after(markets, api):
    markets.simulator.inject("rate_limited", "/api/v1/fx-rates", count=4, share=0.5, retry_after=3)
    params = {"from": "2026-03-02", "to": "2026-03-03"}
    answers = [api.get("/api/v1/fx-rates", params=params) for _ in range(5)]
    assert [a.status_code for a in answers] == [429, 200, 429, 200, 200]
    assert answers[0].headers["Retry-After"] == "3"


def test_fx_outlier_and_negative_price_faults(markets, api):
    params = {"from": "2026-03-02", "to": "2026-03-03"}
    clean = api.get("/api/v1/fx-rates", params=params).json()["rates"]
    markets.simulator.inject("fx_outlier", "/api/v1/fx-rates")
    bad = api.get("/api/v1/fx-rates", params=params).json()["rates"]
    assert bad[0]["rate"] == pytest.approx(clean[0]["rate"] * 100) and bad[1:] == clean[1:]
    fuel = api.get("/api/v1/fuel-prices", params=params).json()["prices"]
    markets.simulator.inject("negative_price", "/api/v1/fuel-prices")
    negative = api.get("/api/v1/fuel-prices", params=params).json()["prices"][0]
    assert (negative["diesel_usd_per_l"], negative["brent_usd_per_bbl"]) == (
        -fuel[0]["diesel_usd_per_l"],
        -fuel[0]["brent_usd_per_bbl"],
    )
    markets.simulator.inject("wrong_types", "/api/v1/fx-rates")
    typed_wrong = api.get("/api/v1/fx-rates", params=params).json()["rates"][0]
    assert (typed_wrong["rate_date"], typed_wrong["rate"]) == ("tomorrow", "n/a")


def test_armed_faults_are_listed_over_http(markets, api):
    markets.simulator.inject("slow", "/api/v1/fx-rates", count=2, delay_s=0.1)
    assert api.get("/_sim/faults").json()["faults"] == [
        {"kind": "slow", "path": "/api/v1/fx-rates", "count": 2, "delay_s": 0.1}
    ]
    assert api.delete("/_sim/faults").json() == {"cleared": 1}
