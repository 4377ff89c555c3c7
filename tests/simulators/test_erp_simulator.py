"""The ERP simulator speaks OData V2 as SAP Gateway does, and its network is deterministic and plausible."""

from __future__ import annotations

from datetime import UTC, date, datetime

import httpx
import pytest

from simulators.erp import SERVICE_PATH, ErpConfig, odata_date, serve_erp
from simulators.erp_data import ErpNetwork
from simulators.plant_network import PLANTS, ROAD_LEGS

NOW = datetime(2026, 12, 4, 6, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def erp():
    with serve_erp(ErpConfig(now=lambda: NOW)) as running:
        yield running


def get(erp, entity_set: str, **params) -> httpx.Response:
    auth = (erp.config.user, erp.config.password)
    return httpx.get(f"{erp.url}{SERVICE_PATH}/{entity_set}", params=params, auth=auth)


def test_rows_come_in_the_v2_envelope_with_sap_value_conventions(erp):
    answer = get(erp, "PlantSet", **{"$inlinecount": "allpages"})
    assert answer.status_code == 200
    d = answer.json()["d"]
    assert d["__count"] == str(len(PLANTS)) and "__next" not in d
    first = d["results"][0]
    assert first["__metadata"] == {
        "id": f"{erp.url}{SERVICE_PATH}/PlantSet('IU01')",
        "uri": f"{erp.url}{SERVICE_PATH}/PlantSet('IU01')",
        "type": "ZSCM_SRV.Plant",
    }
    master = erp.simulator.network.master("IU01")
    assert first["ClinkerCapacity"] == str(master.clinker_capacity_t_per_month)  # a decimal string, 3 places
    assert first["ClinkerCapacity"].endswith(".000") and isinstance(first["ProductionCost"], str)
    assert first["ChangedAt"] == odata_date(master.changed_at)
    assert odata_date(datetime(2023, 11, 14, 22, 13, 20, tzinfo=UTC)) == "/Date(1700000000000)/"
    assert first["BaseUnit"] == "TO" and first["Currency"] == "INR"


def test_server_paging_hands_out_skiptokens_of_page_size(erp):
    erp.simulator.reset_stats()
    params = {"$filter": "StockDate ge datetime'2026-11-01T00:00:00' and StockDate lt datetime'2026-12-01T00:00:00'"}
    first = get(erp, "InventorySet", **params).json()["d"]
    assert len(first["results"]) == 100
    assert first["__next"].endswith("$skiptoken=100")
    last = httpx.get(
        first["__next"].replace("$skiptoken=100", "$skiptoken=200"), auth=(erp.config.user, erp.config.password)
    )
    assert len(last.json()["d"]["results"]) == 10 * 30 - 200 and "__next" not in last.json()["d"]
    assert erp.simulator.pages_served == [("InventorySet", 0), ("InventorySet", 200)]


def test_filter_on_change_time_and_top_skip(erp):
    params = {
        "$filter": "ChangedAt ge datetime'2026-12-01T00:00:00' and ChangedAt lt datetime'2026-12-02T00:00:00'",
        "$inlinecount": "allpages",
    }
    d = get(erp, "DemandForecastSet", **params).json()["d"]
    expected = erp.simulator.network.demand_revisions(
        datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC)
    )
    assert [(r["Plant"], r["Revision"]) for r in d["results"]] == [(r.plant_id, r.revision) for r in expected]
    assert int(d["__count"]) == len(expected) > 0
    window = get(erp, "RouteSet", **{"$skip": "2", "$top": "3"}).json()["d"]["results"]
    every = get(erp, "RouteSet").json()["d"]["results"]
    assert [r["RouteId"] for r in window] == [r["RouteId"] for r in every[2:5]]


def test_future_rows_are_not_served(erp):
    since = "StockDate ge datetime'2026-12-01T00:00:00'"
    stock = get(erp, "InventorySet", **{"$filter": f"Plant eq 'GU01' and {since}"}).json()["d"]
    days = {r["StockDate"] for r in stock["results"]}
    assert odata_date(date(2026, 12, 4)) in days and odata_date(date(2026, 12, 5)) not in days


def test_bad_requests_answer_odata_errors(erp):
    answer = get(erp, "PlantSet", **{"$filter": "Colour eq 'red'"})
    assert answer.status_code == 400
    assert answer.json()["error"]["message"]["value"] == "Property 'Colour' not found"
    assert get(erp, "NoSuchSet").status_code == 404
    refused = httpx.get(f"{erp.url}{SERVICE_PATH}/PlantSet", auth=("PLANNER", "wrong"))
    assert refused.status_code == 401 and "Basic" in refused.headers["www-authenticate"]
    bearer = httpx.get(f"{erp.url}{SERVICE_PATH}/PlantSet", headers={"Authorization": f"Bearer {erp.config.token}"})
    assert bearer.status_code == 200


def test_a_post_without_the_csrf_token_is_refused_and_with_it_accepted(erp):
    auth = (erp.config.user, erp.config.password)
    line = {
        "PlanId": "SIM-1",
        "RouteId": "IU01-GU01-ROAD",
        "PeriodStart": odata_date(date(2027, 1, 1)),
        "Quantity": "700.000",
        "Trips": 20,
        "BaseUnit": "TO",
    }
    with httpx.Client(base_url=erp.url + SERVICE_PATH, auth=auth) as session:
        refused = session.post("/SupplyPlanSet", json=line)
        assert refused.status_code == 403 and refused.headers["x-csrf-token"] == "Required"
        assert refused.text == "CSRF token validation failed"
        token = session.get("/", headers={"X-CSRF-Token": "Fetch"}).headers["x-csrf-token"]
        created = session.post("/SupplyPlanSet", json=line, headers={"X-CSRF-Token": token})
    assert created.status_code == 201
    assert created.json()["d"]["Quantity"] == "700.000"
    assert [p["PlanId"] for p in erp.simulator.supply_plans] == ["SIM-1"]


def test_the_network_is_deterministic_and_plausible():
    a, b, other = ErpNetwork(7), ErpNetwork(7), ErpNetwork(8)
    assert a.plants == b.plants and a.routes == b.routes
    assert a.plants != other.plants
    ids = {p.plant_id: p.kind for p in PLANTS}
    assert {r.route_id for r in a.routes if r.mode == "ROAD"} == {
        f"{leg.origin}-{leg.destination}-ROAD" for leg in ROAD_LEGS
    }
    for route in a.routes:
        assert ids[route.origin] == "IU" and route.destination in ids
        if route.mode == "ROAD":
            assert 25 <= route.vehicle_capacity_t <= 35
        else:
            assert 3_700 <= route.vehicle_capacity_t <= 4_000 and route.min_batch_t == route.vehicle_capacity_t
    assert any(r.mode == "RAIL" for r in a.routes)
    capacity = sum(m.clinker_capacity_t_per_month for m in a.plants if m.plant.kind == "IU")
    demand = sum(m.monthly_demand_t for m in a.plants if m.plant.kind != "IU")
    assert demand < capacity  # the network can be supplied
    for master in a.plants:
        assert master.safety_stock_t <= master.opening_stock_t <= master.max_stock_t


def test_repeated_page_fault_serves_the_previous_page_again():
    with serve_erp(ErpConfig(now=lambda: NOW, page_size=4)) as small:
        small.simulator.inject("repeated_page", f"{SERVICE_PATH}/PlantSet")
        first = get(small, "PlantSet").json()["d"]
        second = httpx.get(first["__next"], auth=(small.config.user, small.config.password)).json()["d"]
        assert small.simulator.pages_served == [("PlantSet", 0), ("PlantSet", 0)]
    assert [r["Plant"] for r in second["results"]] == [r["Plant"] for r in first["results"]]
    assert second["__next"].endswith("$skiptoken=8")  # the paging goes on as if page 2 had been served


def test_faults_are_armed_over_http_from_loopback(erp):
    erp.simulator.clear_faults()
    armed = httpx.post(f"{erp.url}/_sim/faults", json={"kind": "orphan_route", "path": "*/RouteSet"})
    assert armed.status_code == 201
    routes = get(erp, "RouteSet").json()["d"]["results"]
    assert [r["Destination"] for r in routes if r["RouteId"] == "IU01-GU99-ROAD"] == ["GU99"]
    assert len(get(erp, "RouteSet").json()["d"]["results"]) == len(routes) - 1  # the fault took one request
    refused = httpx.post(f"{erp.url}/_sim/faults", json={"kind": "flood"})
    assert refused.status_code == 400 and "repeated_page" in refused.json()["detail"]
