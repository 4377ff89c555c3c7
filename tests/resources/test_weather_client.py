"""The weather client against the simulated providers: the appid key never shows in an error."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from resources.http import SourceError
from resources.weather import WeatherClient
from simulators.weather import MET_PATH, WeatherConfig, serve_weather


@pytest.fixture(scope="module")
def weather_server():
    with serve_weather(WeatherConfig()) as running:
        yield running


def test_a_refused_key_is_scrubbed_from_the_error(weather_server):
    wrong = "wrong-key-0123456789"
    client = WeatherClient(owm_base_url=weather_server.url, owm_api_key=wrong, met_base_url=weather_server.url)
    with pytest.raises(SourceError) as raised:
        client.owm_current(13.75, 100.5)
    text = f"{raised.value} {raised.value!r} {raised.value.args}"
    assert raised.value.status == 401
    assert wrong not in text
    assert "Invalid API key" in text  # the source's words are kept, its echo of the key is not


def test_the_met_feed_sends_only_ended_hours(weather_server):
    sim = weather_server.simulator
    sim.now = datetime(2026, 3, 2, 10, 30, tzinfo=UTC)
    client = WeatherClient(owm_base_url=weather_server.url, owm_api_key="k" * 12, met_base_url=weather_server.url)
    rows = client.met_observations(13.75, 100.5, sim.now - timedelta(hours=3, minutes=30), sim.now + timedelta(hours=2))
    assert [r["obs_time"] for r in rows] == ["2026-03-02T07:00:00Z", "2026-03-02T08:00:00Z", "2026-03-02T09:00:00Z"]
    sim.reset()


def test_a_long_history_is_asked_for_in_31_day_pieces(weather_server):
    sim = weather_server.simulator
    sim.reset()
    sim.now = datetime(2026, 6, 1, tzinfo=UTC)
    client = WeatherClient(owm_base_url=weather_server.url, owm_api_key="k" * 12, met_base_url=weather_server.url)
    start = datetime(2026, 3, 1, tzinfo=UTC)
    rows = client.met_observations(13.75, 100.5, start, start + timedelta(days=40))
    assert len(rows) == 40 * 24
    assert rows[0]["obs_time"] == "2026-03-01T00:00:00Z" and rows[-1]["obs_time"] == "2026-04-09T23:00:00Z"
    assert sim.requests_to(MET_PATH) == 2
    sim.reset()
