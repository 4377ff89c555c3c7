"""The markets simulator on loopback: tariffs and holidays with the API key, faults on request."""

from __future__ import annotations

import httpx
import pytest

from simulators.markets import OVERLAPPING_TARIFF, MarketsConfig, serve_markets


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
