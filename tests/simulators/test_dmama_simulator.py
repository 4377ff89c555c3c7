"""The DMAMA simulator: deterministic, realistic data, and the HTTP contract of docs/sources/dmama-api.md."""

from __future__ import annotations

import json
import socket
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from itertools import pairwise
from statistics import mean

import httpx
import pytest

from simulators.dmama import DmamaConfig, DmamaSimulator, serve_dmama
from simulators.http_server import serve_in_thread

DAY = datetime(2026, 3, 4, tzinfo=UTC)  # a Wednesday
SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
DM_NS = "urn:dmama:readings:1"


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def local_hours(rows: list[dict], first: int, last: int) -> list[dict]:
    """Rows whose Bangkok (UTC+7) hour is in [first, last)."""
    out = []
    for row in rows:
        hour = (int(row["timestamp"][11:13]) + 7) % 24
        if first <= hour < last:
            out.append(row)
    return out


@pytest.fixture(scope="module")
def http(server):
    """A raw HTTP client that already holds a token: tests here speak the wire protocol directly."""
    with httpx.Client(base_url=server.url, timeout=10) as client:
        yield client


def auth_headers(http: httpx.Client, config: DmamaConfig) -> dict[str, str]:
    form = {
        "grant_type": "client_credentials",
        "client_id": config.client_id,
        "client_secret": config.client_secret,
    }
    token = http.post("/oauth/token", data=form).json()["access_token"]
    return {"X-API-Key": config.api_key, "Authorization": f"Bearer {token}"}


@pytest.fixture
def headers(http, sim):
    return auth_headers(http, sim.config)


# ---------------------------------------------------------------------- determinism


def test_the_same_seed_gives_the_same_data_and_another_seed_other_data():
    a, b, other = DmamaSimulator(), DmamaSimulator(), DmamaSimulator(DmamaConfig(seed=7))
    since, until = DAY, DAY + timedelta(days=1)
    assert a.dmas() == b.dmas()
    assert a.flow_readings("DMA-0003", since, until) == b.flow_readings("DMA-0003", since, until)
    assert a.meter_readings("M-0002-0005", since, until) == b.meter_readings("M-0002-0005", since, until)
    assert a.flow_readings("DMA-0003", since, until) != other.flow_readings("DMA-0003", since, until)
    assert a.dmas() != other.dmas()


@pytest.mark.parametrize("cut", [timedelta(hours=5, minutes=15), timedelta(days=3, hours=11), timedelta(minutes=1)])
def test_rows_do_not_depend_on_the_range_asked(cut):
    sim = DmamaSimulator()
    a, c = DAY, DAY + timedelta(days=9)
    b = a + cut
    for dma in sim.dma_ids():
        assert sim.flow_readings(dma, a, c) == sim.flow_readings(dma, a, b) + sim.flow_readings(dma, b, c)
    meter = "M-0004-0007"
    assert sim.meter_readings(meter, a, c) == sim.meter_readings(meter, a, b) + sim.meter_readings(meter, b, c)


def test_ranges_are_half_open_on_15_minute_slots():
    sim = DmamaSimulator()
    rows = sim.flow_readings("DMA-0001", "2026-03-04T00:05:00Z", "2026-03-04T01:00:00Z")
    assert [r["timestamp"] for r in rows] == [
        "2026-03-04T00:15:00Z",
        "2026-03-04T00:30:00Z",
        "2026-03-04T00:45:00Z",
    ]
    assert sim.expected_flow_rows(DAY, DAY + timedelta(hours=1)) == 5 * 4
    assert sim.expected_meter_rows(DAY, DAY + timedelta(days=1)) == 5 * 10 * 24
    hourly = sim.meter_readings("M-0001-0004", DAY, DAY + timedelta(hours=3))
    assert [r["timestamp"] for r in hourly] == [
        "2026-03-04T00:00:00Z",
        "2026-03-04T01:00:00Z",
        "2026-03-04T02:00:00Z",
    ]


def test_a_large_utility_builds_quickly_and_lazily():
    started = time.perf_counter()
    sim = DmamaSimulator(DmamaConfig(dmas=500, meters_per_dma=100))
    built = time.perf_counter() - started
    assert len(sim.dma_ids()) == 500 and sim.dma_ids()[-1] == "DMA-0500"
    assert not sim._meter_cache  # meters are computed per DMA when first asked for
    assert len(sim.meters("DMA-0500")) == 100
    assert built < 1.0, f"building 500 DMAs took {built:.2f} s"


# ---------------------------------------------------------------------- realism


def test_catalogue_values_are_plausible():
    sim = DmamaSimulator(DmamaConfig(dmas=50, meters_per_dma=10))
    for dma in sim.dmas():
        assert 500 <= dma["connections"] <= 3000
        assert 1.5 <= dma["target_pressure_bar"] <= 3.0
        assert 13 <= dma["latitude"] <= 14.5 and 99.8 <= dma["longitude"] <= 101.2
        meters = sim.meters(dma["dma_id"])
        inflow = [m["meter_id"] for m in meters if m["kind"] == "inflow"]
        assert inflow == dma["inflow_meter_ids"] and 1 <= len(inflow) <= 2
        assert all(m["customer_class"] is None for m in meters if m["kind"] == "inflow")
        assert all(4 <= m["register_digits"] <= 6 for m in meters)
    leaking = sim.leaks()
    assert len(leaking) == 10  # 20 % of 50
    assert all(DmamaConfig().epoch[:10] < iso(leak["start"]) for leak in leaking.values())


def test_daily_volume_per_connection_is_plausible():
    sim = DmamaSimulator(DmamaConfig(dmas=20))
    for dma in sim.dmas():
        rows = sim.flow_readings(dma["dma_id"], DAY, DAY + timedelta(days=1))
        per_connection = sum(r["flow_m3h"] for r in rows) * 0.25 / dma["connections"]
        # 0.6-1.0 m³/day of consumption plus background leakage (and a growing leak for some).
        assert 0.6 <= per_connection <= 2.0, dma["dma_id"]


def test_night_minimum_is_far_below_the_peaks_which_fall_morning_and_evening():
    sim = DmamaSimulator()
    for dma in sim.dma_ids():
        rows = sim.flow_readings(dma, DAY - timedelta(hours=7), DAY + timedelta(hours=17))  # one local day
        night = min(r["flow_m3h"] for r in local_hours(rows, 2, 4))
        peak = max(rows, key=lambda r: r["flow_m3h"])
        assert night < 0.3 * peak["flow_m3h"]
        assert (int(peak["timestamp"][11:13]) + 7) % 24 in (6, 7, 18, 19, 20)
        assert min(rows, key=lambda r: r["flow_m3h"]) in local_hours(rows, 0, 5)


def test_the_weekend_morning_peak_comes_later():
    sim = DmamaSimulator()
    wednesday = DAY - timedelta(hours=7)
    saturday = wednesday + timedelta(days=3)

    def morning_peak_hour(start: datetime) -> float:
        rows = local_hours(sim.flow_readings("DMA-0001", start, start + timedelta(days=1)), 5, 12)
        peak = max(rows, key=lambda r: r["flow_m3h"])
        return (int(peak["timestamp"][11:13]) + 7) % 24 + int(peak["timestamp"][14:16]) / 60

    assert morning_peak_hour(saturday) >= morning_peak_hour(wednesday) + 1


def test_pressure_dips_when_demand_peaks():
    sim = DmamaSimulator()
    for dma in sim.dma_ids():
        rows = sim.flow_readings(dma, DAY - timedelta(hours=7), DAY + timedelta(hours=17))
        night = mean(r["pressure_bar"] for r in local_hours(rows, 2, 4))
        evening = mean(r["pressure_bar"] for r in local_hours(rows, 18, 21))
        assert evening < night - 0.05
        assert night <= sim.dma_details(dma)["target_pressure_bar"] + 0.05


def night_flows(sim: DmamaSimulator, dma: str, first: datetime, days: int) -> list[float]:
    """Mean flow in 02:00-04:00 Bangkok time (19:00-21:00 UTC) on consecutive nights."""
    out = []
    for day in range(days):
        start = first.replace(hour=19, minute=0) + timedelta(days=day)
        out.append(mean(r["flow_m3h"] for r in sim.flow_readings(dma, start, start + timedelta(hours=2))))
    return out


def test_a_leak_raises_night_flow_day_by_day_while_other_nights_stay_flat():
    sim = DmamaSimulator()
    (leaking, leak), *_ = sim.leaks().items()
    quiet = next(d for d in sim.dma_ids() if d not in sim.leaks())
    start = leak["start"] + timedelta(days=1)
    rising = night_flows(sim, leaking, start, 10)
    flat = night_flows(sim, quiet, start, 10)
    assert all(b > a for a, b in pairwise(rising)), rising
    assert rising[-1] - rising[0] > 8 * leak["growth_m3h_per_day"] * 0.9
    assert max(flat) - min(flat) < 0.05 * mean(flat), flat
    # Day demand is the same: the leak adds the same few m³/h to the peak as to the night.
    before = night_flows(sim, leaking, leak["start"] - timedelta(days=3), 1)[0]
    assert rising[0] > before


def test_inflow_meters_add_up_to_the_dma_flow():
    sim = DmamaSimulator()
    for dma in sim.dmas():
        flow = sim.flow_readings(dma["dma_id"], DAY, DAY + timedelta(days=1))
        volume = sum(r["flow_m3h"] for r in flow) * 0.25
        metered = 0.0
        for meter in dma["inflow_meter_ids"]:
            digits = next(m["register_digits"] for m in sim.meters(dma["dma_id"]) if m["meter_id"] == meter)
            rows = sim.meter_readings(meter, DAY, DAY + timedelta(days=1, hours=1))
            metered += (rows[-1]["register_m3"] - rows[0]["register_m3"]) % 10**digits
        assert metered == pytest.approx(volume, abs=0.05)


def test_registers_increase_and_some_roll_over_within_a_year():
    far_future = datetime(2030, 1, 1, tzinfo=UTC)
    sim = DmamaSimulator(DmamaConfig(dmas=20, meters_per_dma=20), clock=lambda: far_future)
    rollovers = 0
    for dma in sim.dma_ids():
        for meter in sim.meters(dma):
            modulus = 10 ** meter["register_digits"]
            day = sim.meter_readings(meter["meter_id"], DAY, DAY + timedelta(days=1))
            values = [r["register_m3"] for r in day]
            assert all(0 <= v < modulus for v in values)
            assert all((b - a) % modulus < modulus / 2 for a, b in pairwise(values))
            later = sim.meter_readings(meter["meter_id"], DAY + timedelta(days=365), DAY + timedelta(days=365, hours=1))
            rollovers += later[0]["register_m3"] < values[0]
    assert rollovers >= 1


# ---------------------------------------------------------------------- HTTP: catalogue and readings


def test_dma_list_pages_as_the_contract_says(http, headers, sim):
    pages, page = [], 1
    while page is not None:
        body = http.get("/api/dma/list", params={"page": page, "page_size": 2}, headers=headers).json()
        assert body["total"] == 5 and body["page"] == page and body["page_size"] == 2
        pages.append([item["dma_id"] for item in body["items"]])
        page = body["next_page"]
    assert pages == [["DMA-0001", "DMA-0002"], ["DMA-0003", "DMA-0004"], ["DMA-0005"]]
    beyond = http.get("/api/dma/list", params={"page": 9, "page_size": 2}, headers=headers).json()
    assert beyond["items"] == [] and beyond["next_page"] is None
    default = http.get("/api/dma/list", headers=headers).json()
    assert default["page_size"] == 100 and set(default["items"][0]) == {"dma_id", "name", "zone"}
    too_big = http.get("/api/dma/list", params={"page_size": 1001}, headers=headers)
    assert too_big.status_code == 400 and "page_size" in too_big.json()["detail"]


def test_meters_page_and_details_match_the_ground_truth(http, headers, sim):
    items, page = [], 1
    while page is not None:
        body = http.get("/api/dma/DMA-0002/meters", params={"page": page, "page_size": 4}, headers=headers).json()
        items += body["items"]
        page = body["next_page"]
    assert items == sim.meters("DMA-0002")
    assert http.get("/api/dma/DMA-0002", headers=headers).json() == sim.dma_details("DMA-0002")


def test_readings_match_the_ground_truth_in_json_and_soap(http, headers, sim):
    since, until = "2026-03-04T00:00:00Z", "2026-03-04T06:00:00Z"
    truth = sim.flow_readings("DMA-0004", since, until)
    body = http.get("/api/dma/DMA-0004/readings", params={"since": since, "until": until}, headers=headers).json()
    assert body == {"dma_id": "DMA-0004", "interval_minutes": 15, "readings": truth}

    root = soap_call(http, headers, "DMA-0004", since, until)
    readings = root.findall(f".//{{{DM_NS}}}Reading")
    assert root.findtext(f".//{{{DM_NS}}}DmaId") == "DMA-0004"
    assert [
        {
            "timestamp": r.findtext(f"{{{DM_NS}}}Timestamp"),
            "flow_m3h": float(r.findtext(f"{{{DM_NS}}}FlowM3h")),
            "pressure_bar": float(r.findtext(f"{{{DM_NS}}}PressureBar")),
        }
        for r in readings
    ] == truth

    meter = http.get(
        "/api/meters/M-0004-0002/readings", params={"since": since, "until": until}, headers=headers
    ).json()
    assert meter == {
        "meter_id": "M-0004-0002",
        "interval_minutes": 60,
        "readings": sim.meter_readings("M-0004-0002", since, until),
    }


def soap_call(http, headers, dma_id, since, until, action='"GetReadings"') -> ET.Element:
    envelope = (
        f'<soap:Envelope xmlns:soap="{SOAP_NS}" xmlns:dm="{DM_NS}"><soap:Body><dm:GetReadings>'
        f"<dm:DmaId>{dma_id}</dm:DmaId><dm:Since>{since}</dm:Since><dm:Until>{until}</dm:Until>"
        "</dm:GetReadings></soap:Body></soap:Envelope>"
    )
    response = http.post(
        "/soap/readings",
        content=envelope,
        headers={**headers, "SOAPAction": action, "Content-Type": "text/xml"},
    )
    root = ET.fromstring(response.content)
    root.set("http_status", str(response.status_code))
    return root


@pytest.mark.parametrize(
    ("params", "fragment"),
    [
        ({"since": "2026-03-01T00:00:00Z", "until": "2026-04-02T00:00:00Z"}, "31 days"),
        ({"since": "2026-03-02T00:00:00Z", "until": "2026-03-01T00:00:00Z"}, "after since"),
        ({"since": "2026-03-01T00:00:00", "until": "2026-03-02T00:00:00Z"}, "time zone"),
        ({"since": "yesterday", "until": "2026-03-02T00:00:00Z"}, "ISO 8601"),
        ({"until": "2026-03-02T00:00:00Z"}, "required"),
    ],
)
def test_bad_reading_parameters_get_400_with_a_detail(http, headers, params, fragment):
    response = http.get("/api/dma/DMA-0001/readings", params=params, headers=headers)
    assert response.status_code == 400 and fragment in response.json()["detail"]


def test_unknown_ids_get_404_and_soap_faults_are_500(http, headers):
    for path in ("/api/dma/DMA-0099", "/api/dma/DMA-0099/meters", "/api/meters/M-0001-0011/readings"):
        response = http.get(
            path, params={"since": "2026-03-01T00:00:00Z", "until": "2026-03-01T01:00:00Z"}, headers=headers
        )
        assert response.status_code == 404 and response.json()["error"] == "not_found", path
    fault = soap_call(http, headers, "DMA-0099", "2026-03-01T00:00:00Z", "2026-03-01T01:00:00Z")
    assert fault.get("http_status") == "500"
    assert fault.findtext(".//faultcode") == "soap:Client" and "DMA-0099" in fault.findtext(".//faultstring")
    wrong_action = soap_call(http, headers, "DMA-0001", "2026-03-01T00:00:00Z", "2026-03-01T01:00:00Z", '"Nope"')
    assert "SOAPAction" in wrong_action.findtext(".//faultstring")


# ---------------------------------------------------------------------- HTTP: authentication


def test_every_api_call_needs_the_key_and_a_valid_token(http, headers, sim):
    config = sim.config
    no_key = http.get("/api/dma/list", headers={"Authorization": headers["Authorization"]})
    assert no_key.status_code == 401 and no_key.json()["error"] == "invalid_api_key"
    no_token = http.get("/api/dma/list", headers={"X-API-Key": config.api_key})
    assert no_token.status_code == 401 and 'error="invalid_token"' in no_token.headers["www-authenticate"]
    bad_token = http.get("/api/dma/list", headers={**headers, "Authorization": "Bearer forged"})
    assert bad_token.status_code == 401 and "invalid_token" in bad_token.headers["www-authenticate"]
    soap = soap_call(http, {"X-API-Key": "wrong"}, "DMA-0001", "2026-03-01T00:00:00Z", "2026-03-01T01:00:00Z")
    assert soap.get("http_status") == "401" and soap.find(f".//{{{SOAP_NS}}}Fault") is not None
    assert http.get("/api/dma/list", headers=headers).status_code == 200


def test_tokens_come_from_client_credentials_in_the_form_or_basic_auth_and_expire(http, sim):
    config = sim.config
    issued = sim.issued_tokens
    wrong = http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": config.client_id, "client_secret": "nope"},
    )
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
    basic = http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(config.client_id, config.client_secret),
    )
    body = basic.json()
    assert basic.status_code == 200 and body["token_type"] == "Bearer" and body["expires_in"] == config.token_ttl_s
    assert sim.issued_tokens == issued + 1
    good = {"X-API-Key": config.api_key, "Authorization": f"Bearer {body['access_token']}"}
    assert http.get("/api/dma/list", headers=good).status_code == 200
    sim.expire_tokens()
    assert http.get("/api/dma/list", headers=good).status_code == 401
    grant = http.post("/oauth/token", data={"grant_type": "password"}, auth=(config.client_id, config.client_secret))
    assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"


def test_short_lived_tokens_expire_on_their_own():
    with serve_dmama(DmamaConfig(token_ttl_s=1)) as running, httpx.Client(base_url=running.url) as http:
        headers = auth_headers(http, running.config)
        assert http.get("/api/dma/list", headers=headers).status_code == 200
        time.sleep(1.1)
        assert http.get("/api/dma/list", headers=headers).status_code == 401


# ---------------------------------------------------------------------- HTTP: faults and stats


READINGS = {"since": "2026-03-04T00:00:00Z", "until": "2026-03-04T03:00:00Z"}


def readings(http, headers, dma="DMA-0002") -> httpx.Response:
    return http.get(f"/api/dma/{dma}/readings", params=READINGS, headers=headers)


def test_status_faults_hit_the_next_matching_requests_only(http, headers, sim):
    armed = http.post(
        "/_sim/faults",
        json={"kind": "status", "status": 503, "retry_after": 2, "path": "/api/dma/*/readings", "count": 2},
    )
    assert armed.status_code == 201
    assert http.get("/api/dma/list", headers=headers).status_code == 200  # path does not match
    first, second, third = (readings(http, headers) for _ in range(3))
    assert (first.status_code, second.status_code, third.status_code) == (503, 503, 200)
    assert first.headers["retry-after"] == "2"
    stats = http.get("/_sim/stats").json()["requests"]
    assert {"path": "/api/dma/{dma_id}/readings", "status": 503, "count": 2} in stats
    assert sim.stats[("/api/dma/{dma_id}/readings", 200)] == 1
    assert sim.stats[("/api/dma/list", 200)] == 1


def test_faults_are_cleared_by_delete_and_validated(http, headers, sim):
    sim.inject("status", path="*", count=50, status=500)
    assert http.get("/_sim/faults").json()["faults"][0]["count"] == 50
    assert http.delete("/_sim/faults").json() == {"cleared": 1}
    assert readings(http, headers).status_code == 200
    bad = http.post("/_sim/faults", json={"kind": "earthquake"})
    assert bad.status_code == 400 and "unknown fault kind" in bad.json()["detail"]
    with pytest.raises(ValueError, match="delay_s"):
        sim.inject("slow", delay_s=-1)


def test_faults_reach_the_token_endpoint_when_the_glob_matches_it(http, sim):
    sim.inject("status", path="/oauth/*", status=502)
    form = {
        "grant_type": "client_credentials",
        "client_id": "ihub",
        "client_secret": sim.config.client_secret,
    }
    assert http.post("/oauth/token", data=form).status_code == 502
    assert http.post("/oauth/token", data=form).status_code == 200


def test_an_http_date_retry_after_passes_through(http, headers, sim):
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    sim.inject("status", path="/api/dma/list", status=429, retry_after=when)
    response = http.get("/api/dma/list", headers=headers)
    assert response.status_code == 429 and response.headers["retry-after"] == when


def test_slow_answers_wait_before_answering(http, headers, sim):
    sim.inject("slow", path="/api/dma/DMA-0005/readings", delay_s=0.3)
    started = time.perf_counter()
    assert readings(http, headers, "DMA-0005").status_code == 200
    assert time.perf_counter() - started >= 0.3


def test_truncated_and_malformed_bodies_do_not_decode(http, headers, sim):
    whole = readings(http, headers).content
    sim.inject("truncated", path="/api/dma/*/readings")
    cut = readings(http, headers).content
    assert cut == whole[: len(whole) // 2]
    sim.inject("malformed", path="/api/dma/*/readings")
    with pytest.raises(json.JSONDecodeError):
        json.loads(readings(http, headers).content)
    sim.inject("malformed", path="/soap/readings")
    envelope = soap_envelope("DMA-0001")
    broken = http.post("/soap/readings", content=envelope, headers={**headers, "SOAPAction": "GetReadings"})
    with pytest.raises(ET.ParseError):
        ET.fromstring(broken.content)


def soap_envelope(dma_id: str) -> str:
    return (
        f'<soap:Envelope xmlns:soap="{SOAP_NS}" xmlns:dm="{DM_NS}"><soap:Body><dm:GetReadings>'
        f"<dm:DmaId>{dma_id}</dm:DmaId><dm:Since>{READINGS['since']}</dm:Since><dm:Until>{READINGS['until']}</dm:Until>"
        "</dm:GetReadings></soap:Body></soap:Envelope>"
    )


def test_row_faults_damage_rows_the_way_real_feeds_do(http, headers, sim):
    truth = sim.flow_readings("DMA-0002", READINGS["since"], READINGS["until"])

    def faulted(kind: str, **params) -> list[dict]:
        sim.inject(kind, path="/api/dma/DMA-0002/readings", **params)
        return readings(http, headers).json()["readings"]

    wrong = faulted("wrong_types")
    values = [v for row in wrong for v in row.values()]
    assert "n/a" in values and "31/02/2026 25:61" in values
    assert any(isinstance(row["pressure_bar"], str) and row["pressure_bar"] != "n/a" for row in wrong)

    duplicated = faulted("duplicates")
    assert len(duplicated) > len(truth) and {json.dumps(r) for r in duplicated} == {json.dumps(r) for r in truth}

    shuffled = faulted("out_of_order")
    assert shuffled != truth and sorted(shuffled, key=lambda r: r["timestamp"]) == truth

    spiked = faulted("spikes")
    assert max(r["flow_m3h"] for r in spiked) > 10_000 or max(r["pressure_bar"] for r in spiked) > 16

    gaps = faulted("gaps")
    assert 0 < len(gaps) < len(truth) and all(r in truth for r in gaps)

    flat = faulted("flatline")
    assert max(sum(1 for r in flat if r["flow_m3h"] == v["flow_m3h"]) for v in flat) >= 3

    skewed = faulted("clock_skew", skew_s=7 * 3600)
    assert skewed[0]["timestamp"] == "2026-03-04T07:00:00Z"

    assert readings(http, headers).json()["readings"] == truth  # every fault used up


def test_row_faults_also_apply_to_soap_and_meter_readings(http, headers, sim):
    sim.inject("wrong_types", path="/soap/readings")
    root = ET.fromstring(
        http.post(
            "/soap/readings",
            content=soap_envelope("DMA-0003"),
            headers={**headers, "SOAPAction": '"GetReadings"'},
        ).content
    )
    assert "n/a" in [e.text for e in root.iter(f"{{{DM_NS}}}FlowM3h")]
    sim.inject("duplicates", path="/api/meters/*")
    rows = http.get("/api/meters/M-0001-0001/readings", params=READINGS, headers=headers).json()["readings"]
    assert len(rows) > 3


# ---------------------------------------------------------------------- the thread server


def test_a_thread_server_listens_on_a_free_port_and_stops():
    app = DmamaSimulator().app
    with serve_in_thread(app) as running:
        assert running.port > 0 and running.url == f"http://127.0.0.1:{running.port}"
        assert httpx.get(f"{running.url}/_sim/stats").status_code == 200
    assert not running.running
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", running.port), timeout=1):
        pass


def test_nothing_is_served_from_the_future():
    now = datetime(2026, 3, 2, 10, 20, tzinfo=UTC)
    sim = DmamaSimulator(DmamaConfig(), clock=lambda: now)
    flow = sim.flow_readings("DMA-0001", datetime(2026, 3, 2, 9, tzinfo=UTC), datetime(2026, 3, 2, 12, tzinfo=UTC))
    # 09:00 … 10:00 have closed by 10:20; the 10:15 interval has not.
    assert [r["timestamp"] for r in flow][-1] == "2026-03-02T10:00:00Z"
    assert len(flow) == 5
    meters = sim.meter_readings("M-0001-0001", datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 3, tzinfo=UTC))
    assert [r["timestamp"] for r in meters][-1] == "2026-03-02T10:00:00Z"
    assert sim.flow_readings("DMA-0001", datetime(2026, 3, 3, tzinfo=UTC), datetime(2026, 3, 4, tzinfo=UTC)) == []


# ---------------------------------------------------------------------- hostile faults (issue 7)


def test_rate_limited_refuses_its_share_deterministically(http, headers, sim):
    sim.inject("rate_limited", path="/api/dma/*/readings", count=6, share=0.5, retry_after=1)
    statuses = [readings(http, headers).status_code for _ in range(7)]
    assert statuses == [429, 200, 429, 200, 429, 200, 200]  # the seventh is past the fault's count
    sim.inject("rate_limited", path="/api/dma/list", count=5, share=0.8, retry_after=2)
    answers = [http.get("/api/dma/list", headers=headers) for _ in range(5)]
    assert [a.status_code for a in answers] == [429, 429, 429, 429, 200]
    assert answers[0].headers["retry-after"] == "2"


def test_drip_streams_the_same_body_slowly(http, headers, sim):
    whole = readings(http, headers).content
    sim.inject("drip", path="/api/dma/*/readings", chunk_bytes=256, interval_s=0.05)
    started = time.perf_counter()
    dripped = readings(http, headers).content
    assert dripped == whole
    assert time.perf_counter() - started >= 0.05 * (len(whole) // 256)


def test_endless_pages_never_say_last_page(http, headers, sim):
    sim.inject("endless_pages", path="/api/dma/list", count=3)
    pages = [http.get("/api/dma/list", params={"page": p}, headers=headers).json() for p in (1, 2, 9)]
    assert [p["next_page"] for p in pages] == [2, 3, 10]
    assert pages[0]["items"] == pages[1]["items"] == pages[2]["items"] and len(pages[0]["items"]) == 5
    sim.inject("endless_pages", path="/api/dma/list", count=2, fresh=True)
    fresh = [http.get("/api/dma/list", params={"page": p}, headers=headers).json()["items"] for p in (1, 2)]
    assert fresh[0] != fresh[1] and [r["page_marker"] for r in fresh[1]] == [2] * 5


def test_nested_and_gzip_bomb_bodies(http, headers, sim):
    sim.inject("nested", path="/api/dma/*/readings", depth=1000)
    assert readings(http, headers).content == b"[" * 1000 + b"]" * 1000
    sim.inject("gzip_bomb", path="/api/dma/*/readings", size_mb=64)
    with http.stream("GET", "/api/dma/DMA-0001/readings", params=READINGS, headers=headers) as bomb:
        wire = b"".join(bomb.iter_raw())
        assert bomb.headers["content-encoding"] == "gzip"
    assert len(wire) < 200_000  # 64 MiB inflated from under 200 kB on the wire
    assert wire[:2] == b"\x1f\x8b"


def test_bad_ids_and_echoed_credentials(http, headers, sim):
    sim.inject("bad_ids", path="/api/dma/list", ids=[".", ".."])
    ids = [item["dma_id"] for item in http.get("/api/dma/list", headers=headers).json()["items"]]
    assert ids == [*sim.dma_ids(), ".", ".."]
    sim.inject("echo_credentials", path="/api/dma/*/readings", status=403)
    echoed = readings(http, headers)
    assert echoed.status_code == 403 and sim.config.api_key in echoed.json()["detail"]
    assert headers["Authorization"] in echoed.json()["detail"]
