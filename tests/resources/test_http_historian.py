"""The historian client on the shared HTTP layer: paging guards and credential checks, against its simulator."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from resources.historian import HistorianClient
from resources.http import CredentialError, PayloadError
from simulators.historian import serve_historian

SINCE = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def historian():
    with serve_historian(clock=lambda: SINCE + timedelta(days=1)) as server:
        yield server


def client(server, **overrides) -> HistorianClient:
    return HistorianClient(base_url=server.url, api_key=server.simulator.config.api_key, **overrides)


def test_points_follow_every_page(historian):
    rows = client(historian, page_size=100).points(SINCE, SINCE + timedelta(minutes=30))
    assert rows == historian.simulator.samples(SINCE, SINCE + timedelta(minutes=30))
    assert len(rows) == 20 * 30


def test_paging_that_never_ends_fails_naming_the_endpoint(historian):
    historian.simulator.inject_endless_paging(1000)
    try:
        with pytest.raises(PayloadError) as caught:
            client(historian, page_size=100).points(SINCE, SINCE + timedelta(minutes=10))
    finally:
        historian.simulator.inject_endless_paging(0)
    assert str(caught.value) == (
        "historian: GET /api/v1/points failed: page 4 repeats page 3 (0 items); the paging would never end"
    )


def test_a_key_with_a_trailing_newline_names_the_variable(historian):
    key = historian.simulator.config.api_key
    with pytest.raises(CredentialError) as caught:
        HistorianClient(base_url=historian.url, api_key=key + "\n").points(SINCE, SINCE + timedelta(minutes=1))
    assert str(caught.value) == "HISTORIAN_API_KEY has a trailing newline; remove it"
    assert key not in str(caught.value)
