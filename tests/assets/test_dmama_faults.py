"""Hostile DMAMA answers: each ends as a complete run or a clean failure within its deadline, never a hang,
a crash deep in the stack, a secret in the instance's storage, or readings stored under the wrong id."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import pytest

from assets import dmama
from contracts.dmama import FLOW_READINGS
from quality.dmama import dmama_checks
from resources.http import CredentialError, PayloadError, SourceError
from simulators.dmama import DmamaConfig, serve_dmama
from tests.conftest import dmama_client

SINCE = datetime(2026, 3, 4, tzinfo=UTC)
UNTIL = SINCE + timedelta(hours=6)
HOUR = "2026-03-02-19:00"
READINGS = "/api/dma/{dma_id}/readings"
CHECKS = dmama_checks(dmama.hourly, dmama.daily)


class Sleeps(list):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


@pytest.fixture
def make_client(server, sim):
    clients = []

    def make(**overrides):
        client = dmama_client(server, **overrides)
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


def run_flow_readings(resources, instance, partition_key=HOUR, **kwargs):
    return dg.materialize(
        [dmama.flow_readings, *CHECKS],
        selection=dg.AssetSelection.assets(dmama.flow_readings),
        partition_key=partition_key,
        resources=resources,
        instance=instance,
        raise_on_error=False,
        **kwargs,
    )


def failure_message(result) -> str:
    failure = next(e for e in result.all_events if e.is_step_failure)
    error = failure.step_failure_data.error
    messages = []
    while error is not None:
        messages.append(error.message)
        error = error.cause
    return "\n".join(messages)


def metadata_of(result) -> dict:
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == "flow_readings")
    return {k: v.value for k, v in event.materialization.metadata.items()}


def storage_text(instance: dg.DagsterInstance) -> bytes:
    """Every byte the instance stored: event log and run databases, compute logs, anything else."""
    return b"\n".join(p.read_bytes() for p in Path(instance.root_directory).rglob("*") if p.is_file())


# ---------------------------------------------------------------------- rate limits


def test_a_source_refusing_four_in_five_requests_slows_the_call_but_never_fails_it(make_client, sim):
    sleeps = Sleeps()
    client = make_client(max_retries=1).use_timing(sleep=sleeps)
    sim.inject("rate_limited", path="/api/dma/*/readings", count=5, share=0.8, retry_after=1)
    rows = client.flow_readings("DMA-0001", SINCE, UNTIL)
    assert len(rows) == 24
    assert sleeps == [1.0, 1.0, 1.0, 1.0]  # four 429s waited out; none counted against the one retry
    assert sim.stats[(READINGS, 429)] == 4 and client.rate_limit_waits == 4


def test_one_threads_retry_after_holds_back_the_clients_other_requests(make_client, sim):
    sleeps = Sleeps()
    client = make_client().use_timing(sleep=sleeps)
    sim.inject("status", path="/api/dma/DMA-0001/readings", status=429, retry_after=2)
    client.flow_readings("DMA-0001", SINCE, UNTIL)
    client.flow_readings("DMA-0002", SINCE, UNTIL)  # never refused, yet waits out what DMA-0001 was told
    assert sleeps[0] == 2.0 and len(sleeps) == 2 and 1.5 < sleeps[1] <= 2.0


def test_a_rate_limit_past_the_time_budget_fails_cleanly_naming_the_status(make_client, sim):
    sim.inject("status", path="/api/dma/*/readings", count=100, status=429, retry_after=1)
    started = time.monotonic()
    with pytest.raises(SourceError) as caught:
        make_client(rate_limit_budget_s=2.5).flow_readings("DMA-0001", SINCE, UNTIL)
    assert time.monotonic() - started < 4
    assert caught.value.status == 429 and caught.value.attempts == 3
    assert str(caught.value) == (
        "dmama: GET /api/dma/DMA-0001/readings failed after 3 attempts: HTTP 429 Too Many Requests"
    )


def test_half_the_requests_rate_limited_the_run_succeeds_with_every_row(dmama_server, lake, analyst_catalog, instance):
    sim = dmama_server.simulator
    sim.inject("rate_limited", path="/api/*", count=10_000, share=0.5, retry_after=1)
    resources = {"dmama": dmama_client(dmama_server), "lake": lake, "catalog": analyst_catalog}
    result = run_flow_readings(resources, instance)
    assert result.success
    assert lake.read(FLOW_READINGS).height == 20
    assert sim.stats[(READINGS, 429)] >= 2 and sim.stats[(READINGS, 200)] == 5


# ---------------------------------------------------------------------- hangs


def test_a_body_dripped_a_few_bytes_at_a_time_fails_at_the_deadline(make_client, sim):
    sim.inject("drip", path="/api/dma/DMA-0001/readings", count=10, chunk_bytes=16, interval_s=0.1)
    started = time.monotonic()
    with pytest.raises(PayloadError) as caught:
        make_client(deadline_s=1.0, timeout_s=0.5, max_retries=1).flow_readings("DMA-0001", SINCE, UNTIL)
    elapsed = time.monotonic() - started
    assert elapsed < 3.5  # two attempts of 1 s each, plus one read at most
    assert caught.value.attempts == 2
    assert "answer not complete within the 1 s deadline" in str(caught.value)
    assert caught.value.endpoint == "/api/dma/DMA-0001/readings"


def test_a_dripping_source_fails_the_run_within_its_deadline(dmama_server, lake, analyst_catalog, instance):
    dmama_server.simulator.inject("drip", path="/api/dma/DMA-0003/readings", count=10, chunk_bytes=8, interval_s=0.1)
    client = dmama_client(dmama_server, deadline_s=1.0, timeout_s=0.5, max_retries=0)
    started = time.monotonic()
    result = run_flow_readings({"dmama": client, "lake": lake, "catalog": analyst_catalog}, instance)
    assert time.monotonic() - started < 30
    assert not result.success
    message = failure_message(result)
    assert "deadline" in message and HOUR in message and "/api/dma/DMA-0003/readings" in message
    assert lake.files(FLOW_READINGS) == []


def test_paging_that_repeats_a_page_fails_at_the_repeat(make_client, sim):
    sim.inject("endless_pages", path="/api/dma/list", count=10_000)
    with pytest.raises(PayloadError, match=r"page 2 repeats page 1 \(5 items\); the paging would never end"):
        make_client().dma_list()
    assert sim.stats[("/api/dma/list", 200)] == 2


def test_paging_with_ever_new_pages_stops_at_the_page_cap(make_client, sim):
    sim.inject("endless_pages", path="/api/dma/*/meters", count=10_000, fresh=True)
    with pytest.raises(PayloadError) as caught:
        make_client(max_pages=7).meters("DMA-0001")
    assert str(caught.value) == (
        "dmama: GET /api/dma/DMA-0001/meters failed: more than 7 pages (max_pages); the paging never ended"
    )
    assert sim.stats[("/api/dma/{dma_id}/meters", 200)] == 7


# ---------------------------------------------------------------------- crashes and floods


@pytest.mark.parametrize("payload_format", ["json", "soap"])
def test_deeply_nested_answers_are_a_payload_error_not_a_crash(make_client, sim, payload_format):
    sim.inject("nested", path="/*/readings", count=10, depth=200_000)
    client = make_client(payload_format=payload_format)
    if payload_format == "json":
        with pytest.raises(PayloadError) as caught:
            client.flow_readings("DMA-0001", SINCE, UNTIL)
        assert caught.value.attempts == 1 and caught.value.endpoint == "/api/dma/DMA-0001/readings"
        assert "JSON nested too deeply to decode" in str(caught.value)
    else:  # expat builds deep XML without recursion; the answer then lacks its envelope
        with pytest.raises(PayloadError, match="SOAP answer has no dm:GetReadingsResponse"):
            client.flow_readings("DMA-0001", SINCE, UNTIL)


def test_a_gzip_bomb_stops_at_the_size_cap(make_client, sim):
    import resource

    sim.inject("gzip_bomb", path="/api/dma/DMA-0002/readings", count=10, size_mb=512)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(PayloadError) as caught:
        make_client(max_body_mb=4).flow_readings("DMA-0002", SINCE, UNTIL)
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert "decoded body exceeds 4.0 MiB (max_body_bytes" in str(caught.value)
    assert caught.value.attempts == 1  # a bomb is not worth a second try
    assert grown_mb < 100  # 512 MiB were on offer


# ---------------------------------------------------------------------- identifiers


def test_ids_that_are_paths_never_reach_a_url_and_are_counted(dmama_server, lake, analyst_catalog, instance):
    sim = dmama_server.simulator
    sim.inject("bad_ids", path="/api/dma/list", count=1, ids=[".", "..", "DMA-0001/../DMA-0002"])
    client = dmama_client(dmama_server)
    result = run_flow_readings({"dmama": client, "lake": lake, "catalog": analyst_catalog}, instance)
    assert result.success
    meta = metadata_of(result)
    assert meta["skipped_dma_ids"] == 3 and meta["rows_written"] == 20
    frame = lake.read(FLOW_READINGS)
    assert sorted(set(frame["dma_id"])) == sim.dma_ids()
    assert sim.requests_to(READINGS) == 5  # one per real DMA, none for the bad ids
    assert sum(sim.stats.values()) == sim.requests_to(READINGS) + 2  # plus the list and the token


def test_the_catalogue_keeps_bad_ids_as_list_rows_for_conform_to_reject(make_client, sim):
    sim.inject("bad_ids", path="/api/dma/list", count=1)
    client = make_client()
    catalogue = client.dma_catalogue()
    assert [row["dma_id"] for row in catalogue] == [*sim.dma_ids(), ".", ".."]
    assert catalogue[:5] == sim.dmas() and "connections" not in catalogue[5]
    usable, refused = client.checked_ids(["DMA-0001", ".", "..", "a b", "x/y", 7])
    assert usable == ["DMA-0001"]
    assert refused == {
        ".": "is '.', a relative path segment",
        "..": "is '..', a relative path segment",
        "a b": "contains whitespace or a control character",
        "x/y": "contains a path separator",
        "7": "is a int, expected a string",
    }
    with pytest.raises(PayloadError, match=r"identifier '\.\.' is '\.\.', a relative path segment"):
        client.flow_readings("..", SINCE, UNTIL)


# ---------------------------------------------------------------------- clock skew


def test_a_day_stored_an_hour_late_is_flagged_in_the_metadata(dmama_server, lake, analyst_catalog, instance):
    dmama_server.simulator.inject("clock_skew", path="/api/dma/DMA-0004/readings", count=1, skew_s=3600)
    resources = {"dmama": dmama_client(dmama_server), "lake": lake, "catalog": analyst_catalog}
    tags = {
        "dagster/asset_partition_range_start": "2026-03-02-00:00",
        "dagster/asset_partition_range_end": "2026-03-02-23:00",
    }
    result = run_flow_readings(resources, instance, partition_key=None, tags=tags)
    assert result.success
    meta = metadata_of(result)
    assert (meta["rows_received"], meta["rows_rejected"]) == (5 * 96, 4)  # only the last hour left the window
    assert (meta["clock_skewed"], meta["max_clock_skew_s"]) == (1, 3600.0)
    assert meta["clock_skew_s_by_dma_id"] == {"DMA-0004": 3600.0}
    skew_checks = [e for e in result.get_asset_check_evaluations() if e.check_name == "clock_on_slot_grid"]
    assert skew_checks and not any(e.passed for e in skew_checks)
    assert {e.severity for e in skew_checks} == {dg.AssetCheckSeverity.WARN}
    assert skew_checks[0].metadata["skew_s_by_dma"].value == "DMA-0004: +3600"


def test_a_clean_run_reports_no_skew(dmama_server, lake, analyst_catalog, instance):
    resources = {"dmama": dmama_client(dmama_server), "lake": lake, "catalog": analyst_catalog}
    meta = metadata_of(run_flow_readings(resources, instance))
    assert (meta["clock_skewed"], meta["max_clock_skew_s"], meta["skipped_dma_ids"]) == (0, 0.0, 0)
    assert "clock_skew_s_by_dma_id" not in meta


# ---------------------------------------------------------------------- secrets


@pytest.fixture
def secret_server():
    config = DmamaConfig(api_key="k3y-Distinctive-7731", client_secret="s3cret-Distinctive-4410")
    with serve_dmama(config) as running:
        yield running


def test_a_key_with_a_trailing_newline_is_refused_naming_the_variable_not_the_value(
    secret_server, lake, analyst_catalog, instance
):
    key = secret_server.config.api_key
    client = dmama_client(secret_server, api_key=key + "\n")
    with pytest.raises(CredentialError, match=r"^DMAMA_API_KEY has a trailing newline; remove it$"):
        client.dma_list()
    result = run_flow_readings({"dmama": client, "lake": lake, "catalog": analyst_catalog}, instance)
    assert not result.success
    logged = "\n".join(str(e) for e in instance.all_logs(result.run_id))
    assert "DMAMA_API_KEY has a trailing newline; remove it" in logged
    assert key.encode() not in storage_text(instance)
    assert secret_server.simulator.stats == {}  # refused before anything was sent


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("client_secret", " s3cret", "DMAMA_CLIENT_SECRET has leading whitespace; remove it"),
        ("client_secret", "s3cret \t", "DMAMA_CLIENT_SECRET has trailing whitespace; remove it"),
        ("api_key", "k3y\x00tail", "DMAMA_API_KEY contains a control character at position 3; remove it"),
        ("client_id", "", "DMAMA_CLIENT_ID is empty or not set; set it to the credential the source issued"),
    ],
)
def test_credentials_are_validated_at_load(secret_server, field, value, message):
    with pytest.raises(CredentialError) as caught:
        dmama_client(secret_server, **{field: value}).dma_list()
    assert str(caught.value) == message


def test_a_source_echoing_our_credentials_leaves_no_trace_in_storage(secret_server, lake, analyst_catalog, instance):
    sim = secret_server.simulator
    sim.inject("echo_credentials", path="/api/dma/*/readings", count=100, status=403)
    client = dmama_client(secret_server)
    result = run_flow_readings({"dmama": client, "lake": lake, "catalog": analyst_catalog}, instance)
    assert not result.success
    message = failure_message(result)
    assert "HTTP 403 Forbidden: access denied for X-API-Key '***' with 'Bearer ***'" in message
    token = client._connection().oauth.token()
    stored = storage_text(instance)
    for secret in (sim.config.api_key, sim.config.client_secret, token):
        assert secret.encode() not in stored
    assert b"access denied for X-API-Key" in stored  # the search did read the event log
