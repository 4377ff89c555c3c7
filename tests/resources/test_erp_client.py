"""The ERP OData client against the simulator: paging, values, CSRF, incremental reads, faults, secrets."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from urllib.parse import urlsplit

import pytest

from resources.erp import ErpODataClient, _checked_next, decode_date, decode_datetime, odata_datetime_literal
from resources.http import PayloadError, SourceError
from simulators.erp import SERVICE_PATH, ErpConfig, credentials_env, serve_erp

NOW = datetime(2026, 12, 4, 6, 0, tzinfo=UTC)
NOVEMBER = (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 12, 1, tzinfo=UTC))
INVENTORY_PATH = f"{SERVICE_PATH}/InventorySet"


@pytest.fixture(scope="module")
def erp():
    with serve_erp(ErpConfig(now=lambda: NOW)) as running:
        yield running


@pytest.fixture
def sim(erp):
    erp.simulator.clear_faults()
    erp.simulator.reset_stats()
    yield erp.simulator
    erp.simulator.clear_faults()


def client(erp, **overrides) -> ErpODataClient:
    env = credentials_env(erp.url, erp.config)
    settings = {
        "base_url": env["ERP_ODATA_BASE_URL"],
        "user": env["ERP_ODATA_USER"],
        "password": env["ERP_ODATA_PASSWORD"],
        "backoff_base_s": 0.01,
    }
    return ErpODataClient(**{**settings, **overrides})


def test_paging_follows_next_through_every_skiptoken(erp, sim):
    rows = client(erp).inventory(*NOVEMBER)
    assert len(rows) == 10 * 30  # ten plants, thirty days
    assert sim.pages_served == [("InventorySet", 0), ("InventorySet", 100), ("InventorySet", 200)]
    assert len({(r["Plant"], r["StockDate"]) for r in rows}) == 300
    assert "__metadata" not in rows[0]


def test_dates_become_the_right_utc_instant_and_decimals_stay_exact(erp, sim):
    assert decode_datetime("/Date(1700000000000)/") == "2023-11-14T22:13:20Z"
    assert decode_datetime("/Date(1700000000123+0330)/") == "2023-11-14T22:13:20.123Z"  # offset is informational
    assert decode_date("/Date(1798761600000)/") == "2027-01-01"
    assert decode_date("/Date(1798765200000)/") == "2027-01-01T01:00:00Z"  # not a calendar date: left to reject
    assert decode_datetime("/Date(yesterday)/") == "/Date(yesterday)/"
    assert odata_datetime_literal(datetime(2026, 12, 1, tzinfo=UTC)) == "datetime'2026-12-01T00:00:00'"
    plants = {r["Plant"]: r for r in client(erp).plants()}
    master = sim.network.master("IU02")
    assert plants["IU02"]["ClinkerCapacity"] == "299500.000"
    assert Decimal(plants["IU02"]["ClinkerCapacity"]) == master.clinker_capacity_t_per_month
    assert decode_datetime(plants["IU02"]["ChangedAt"]) == master.changed_at.isoformat().replace("+00:00", "Z")


def test_incremental_filter_returns_only_the_rows_changed_in_the_window(erp, sim):
    day = (datetime(2026, 12, 2, tzinfo=UTC), datetime(2026, 12, 3, tzinfo=UTC))
    rows = client(erp).demand_revisions(*day)
    expected = sim.network.demand_revisions(*day)
    assert [(r["Plant"], decode_date(r["PeriodStart"]), r["Revision"]) for r in rows] == [
        (r.plant_id, r.period_start.isoformat(), r.revision) for r in expected
    ]
    changed = [datetime.fromisoformat(decode_datetime(r["ChangedAt"])) for r in rows]
    assert changed and all(day[0] <= c < day[1] for c in changed)
    everything = client(erp).entities("DemandForecastSet")
    assert len(everything) > 10 * len(rows)  # the year's revisions, of which the day's are a few


def test_csrf_token_is_fetched_before_the_post_and_refetched_when_refused(erp, sim):
    erp_client = client(erp)
    line = {"route_id": "IU02-GU02-ROAD", "period_start": date(2027, 1, 1), "quantity_t": "1234.5", "trips": 41}
    created = erp_client.upload_supply_plan("PLAN-A", [line])
    assert created[0]["Quantity"] == "1234.500" and created[0]["PeriodStart"] == "/Date(1798761600000)/"
    assert erp_client.csrf_tokens_fetched == 1
    fetches = sim.requests_to(f"{SERVICE_PATH}/")
    assert fetches == 1  # the token came from the service document, once
    erp_client.upload_supply_plan("PLAN-B", [line])
    assert erp_client.csrf_tokens_fetched == 1  # the session's token is reused
    sim.inject("csrf_expired", f"{SERVICE_PATH}/SupplyPlanSet")
    erp_client.upload_supply_plan("PLAN-C", [line])
    assert erp_client.csrf_tokens_fetched == 2
    assert sim.stats.snapshot()[(f"{SERVICE_PATH}/SupplyPlanSet", 403)] == 1
    assert [p["PlanId"] for p in sim.supply_plans][-3:] == ["PLAN-A", "PLAN-B", "PLAN-C"]


def test_bearer_token_works_instead_of_a_password(erp, sim):
    rows = client(erp, user="", password="", token=erp.config.token).routes()
    assert len(rows) == len(sim.network.routes)


def test_a_repeated_page_stops_the_read_with_what_to_do(erp, sim):
    sim.inject("repeated_page", INVENTORY_PATH)
    with pytest.raises(PayloadError) as stale:
        client(erp).inventory(*NOVEMBER)
    assert "page 2 of InventorySet repeats 100 rows already read on page(s) 1" in str(stale.value)
    assert "Re-run the partition" in str(stale.value)
    sim.inject("repeated_page", INVENTORY_PATH, mode="loop")
    with pytest.raises(PayloadError) as loop:
        client(erp).inventory(*NOVEMBER)
    assert "__next points back at a page already read ($skiptoken=100)" in str(loop.value)
    with pytest.raises(PayloadError, match="more than 2 pages"):
        client(erp, max_pages=2).inventory(*NOVEMBER)


def test_rate_limits_are_waited_out_and_server_errors_retried(erp, sim):
    erp_client = client(erp)
    waits: list[float] = []
    erp_client._sleep = waits.append
    sim.inject("status", "*/PlantSet", status=429, retry_after=2)
    sim.inject("status", "*/RouteSet", count=2, status=503)
    assert len(erp_client.plants()) == 10
    assert erp_client.rate_limit_waits == 1 and waits[0] == pytest.approx(2.0, abs=0.05)
    assert len(erp_client.routes()) == len(sim.network.routes)
    assert sim.stats.snapshot()[(f"{SERVICE_PATH}/RouteSet", 503)] == 2
    sim.inject("truncated", "*/PlantSet")
    sim.inject("malformed", "*/PlantSet")
    assert len(erp_client.plants()) == 10  # both bodies were retried
    sim.inject("status", "*/PlantSet", count=10, status=500)
    with pytest.raises(SourceError, match=r"erp: GET /PlantSet failed after 2 attempts: HTTP 500"):
        client(erp, max_retries=1).plants()


def test_slow_answers_hit_the_deadline(erp, sim):
    sim.inject("slow", "*/PlantSet", count=3, delay_s=1.5)
    with pytest.raises(SourceError, match=r"no answer within 0\.5 s"):
        client(erp, timeout_s=0.5, max_retries=0).plants()


def test_next_outside_the_service_is_not_followed(erp):
    service = urlsplit(f"{erp.url}{SERVICE_PATH}")
    elsewhere = "https://evil.example/sap/opu/odata/sap/ZSCM_SRV/PlantSet?$skiptoken=5"
    with pytest.raises(PayloadError, match="outside the service"):
        _checked_next(elsewhere, service, "PlantSet", "/PlantSet", 1)
    relative = f"{SERVICE_PATH}/PlantSet?$skiptoken=5"
    assert _checked_next(relative, service, "PlantSet", "/PlantSet", 1) == f"{erp.url}{relative}"


def test_wrong_password_fails_without_showing_it(erp, sim):
    with pytest.raises(SourceError) as failure:
        client(erp, password="not-the-password-123").plants()
    assert failure.value.status == 401
    assert "not-the-password-123" not in str(failure.value)
    assert "Logon failed" in str(failure.value)
    with pytest.raises(ValueError, match="ERP_ODATA_USER and ERP_ODATA_PASSWORD, or ERP_ODATA_TOKEN"):
        client(erp, user="", password="").plants()
