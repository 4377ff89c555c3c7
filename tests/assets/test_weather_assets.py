"""Weather assets and checks, materialized through Dagster against both simulated providers on loopback."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime, timedelta

import dagster as dg
import httpx
import polars as pl
import pytest

from assets import dmama, weather
from assets.partitions import hourly
from contracts.dmama import DMAS
from contracts.weather import FORECASTS, OBSERVATIONS
from quality.conform import rejects_table
from quality.weather import weather_checks
from resources.lake import Lake
from resources.weather import WeatherClient
from simulators.weather import CURRENT_PATH, FORECAST_PATH, KELVIN, SENTINEL, WeatherConfig, serve_weather
from tests.conftest import dmama_client

CHECKS = weather_checks(hourly)
DAY = datetime(2026, 3, 2, tzinfo=UTC)


@pytest.fixture(scope="module")
def weather_server():
    with serve_weather(WeatherConfig()) as running:
        yield running


@pytest.fixture
def wsim(weather_server):
    weather_server.simulator.reset()
    yield weather_server.simulator
    weather_server.simulator.reset()


@pytest.fixture(scope="module")
def dmas_template(server, tmp_path_factory):
    """The DMA catalogue (the weather locations) landed once per module from the DMAMA simulator."""
    root = tmp_path_factory.mktemp("dmas") / "lake"
    with dg.instance_for_test() as instance:
        dg.materialize(
            [dmama.dmas], resources={"dmama": dmama_client(server), "lake": Lake(root=str(root))}, instance=instance
        )
    return root


@pytest.fixture
def locations(dmas_template, lake) -> list[tuple[str, float, float]]:
    shutil.copytree(dmas_template, lake.root, dirs_exist_ok=True)
    return list(lake.read(DMAS).select("dma_id", "latitude", "longitude").iter_rows())


def client(server, **overrides) -> WeatherClient:
    settings = {
        "owm_base_url": server.url,
        "owm_api_key": server.config.api_key,
        "met_base_url": server.url,
        "backoff_base_s": 0.01,
        "timeout_s": 5.0,
    }
    return WeatherClient(**{**settings, **overrides})


def run(asset, server, lake, instance, hour: datetime, *, checks: bool = True, raise_on_error: bool = True, **kw):
    return dg.materialize(
        [asset, *(CHECKS if checks else [])],
        selection=dg.AssetSelection.assets(asset),
        partition_key=f"{hour:%Y-%m-%d-%H:00}",
        resources={"weather": kw.get("weather") or client(server), "lake": lake},
        instance=instance,
        raise_on_error=raise_on_error,
    )


def metadata_of(result) -> dict:
    event = result.get_asset_materialization_events()[0]
    return {k: v.value for k, v in event.materialization.metadata.items()}


def checks_of(result) -> dict[str, bool]:
    return {f"{e.asset_key.path[-1]}:{e.check_name}": e.passed for e in result.get_asset_check_evaluations()}


def hour_number(dt: datetime) -> int:
    return int(dt.timestamp()) // 3600


def test_forecast_lands_in_celsius_by_issue_hour(weather_server, wsim, locations, lake, instance):
    issue = DAY + timedelta(hours=8)
    wsim.now = issue + timedelta(minutes=30)
    result = run(weather.forecasts, weather_server, lake, instance, issue)
    frame = lake.read(FORECASTS)
    assert frame.height == len(locations) * (1 + 168)
    assert set(frame["issued_at"]) == {issue}
    assert frame["valid_at"].min() == issue and frame["valid_at"].max() == issue + timedelta(hours=168)
    # The Kelvin value OWM sends for DMA-0001 at 12:00 UTC, and the °C value that landed for it.
    dma_id, lat, lon = locations[0]
    raw = httpx.get(
        f"{weather_server.url}/data/2.5/forecast/hourly",
        params={"lat": lat, "lon": lon, "appid": weather_server.config.api_key, "cnt": 4},
    ).json()
    valid = issue + timedelta(hours=4)
    kelvin = next(item["main"]["temp"] for item in raw["list"] if item["dt"] == int(valid.timestamp()))
    assert 290 < kelvin < 320
    landed = frame.filter((pl.col("location_id") == dma_id) & (pl.col("valid_at") == valid))["temperature_c"].item()
    assert landed == round(kelvin - KELVIN, 2)
    assert landed == pytest.approx(
        wsim.owm_forecast_c(lat, lon, hour_number(issue), hour_number(valid))["temp_c"], abs=0.011
    )
    meta = metadata_of(result)
    assert (meta["rows_received"], meta["rows_written"], meta["rows_rejected"]) == (845, 845, 0)
    assert all(checks_of(result).values()), checks_of(result)


def test_a_later_issue_is_kept_beside_the_earlier_one(weather_server, wsim, locations, lake, instance):
    first, second = DAY + timedelta(hours=8), DAY + timedelta(hours=9)
    wsim.now = first + timedelta(minutes=10)
    run(weather.forecasts, weather_server, lake, instance, first, checks=False)
    before = lake.partition_path(
        FORECASTS, hourly.time_window_for_partition_key(f"{first:%Y-%m-%d-%H:00}")
    ).read_bytes()
    wsim.now = second + timedelta(minutes=10)
    run(weather.forecasts, weather_server, lake, instance, second, checks=False)

    frame = lake.read(FORECASTS)
    assert sorted(set(frame["issued_at"])) == [first, second]
    dma_id, lat, lon = locations[1]
    target = DAY + timedelta(hours=30)
    both = frame.filter((pl.col("location_id") == dma_id) & (pl.col("valid_at") == target)).sort("issued_at")
    expected = [wsim.owm_forecast_c(lat, lon, hour_number(i), hour_number(target))["temp_c"] for i in (first, second)]
    assert both["temperature_c"].to_list() == pytest.approx(expected, abs=0.011)
    assert expected[0] != expected[1]  # two issues of one hour differ, and both are kept

    # Asking again for the earlier issue hour cannot fetch that issue any more: it fails, the file stays.
    failed = run(weather.forecasts, weather_server, lake, instance, first, checks=False, raise_on_error=False)
    assert not failed.success
    path = lake.partition_path(FORECASTS, hourly.time_window_for_partition_key(f"{first:%Y-%m-%d-%H:00}"))
    assert path.read_bytes() == before


def _hour_with(predicate, start: datetime, hours: int = 24 * 7) -> datetime:
    for h in range(hours):
        hour = start + timedelta(hours=h)
        if predicate(hour):
            return hour
    raise AssertionError("no such hour in the simulated week")


def test_sentinel_hours_become_rejects_with_their_reason(weather_server, wsim, locations, lake, instance):
    hour = _hour_with(lambda h: any(wsim.met_missing(lat, lon, hour_number(h)) for _, lat, lon in locations), DAY)
    missing = [d for d, lat, lon in locations if wsim.met_missing(lat, lon, hour_number(hour))]
    present = [(d, lat, lon) for d, lat, lon in locations if d not in missing]
    wsim.now = hour + timedelta(hours=1, minutes=20)
    result = run(weather.observations, weather_server, lake, instance, hour)

    frame = lake.read(OBSERVATIONS)
    assert sorted(frame["location_id"]) == sorted(d for d, _, _ in present)
    assert set(frame["provider"]) == {"met"}
    for dma_id, lat, lon in present:
        truth = wsim.truth(lat, lon, hour_number(hour))
        row = frame.filter(pl.col("location_id") == dma_id).row(0, named=True)
        assert (row["temperature_c"], row["humidity_pct"], row["rainfall_mm"], row["wind_speed_ms"]) == (
            truth["temp_c"],
            truth["humidity"],
            truth["rain_mm"],
            truth["wind_ms"],
        )
    rejects = lake.read(rejects_table(OBSERVATIONS))
    assert rejects.height == len(missing)
    assert set(rejects["field"]) == {"temperature_c"}
    assert all(f"sentinel {SENTINEL}" in reason and "temperature_c" in reason for reason in rejects["reason"])
    assert set(rejects["partition_start"]) == {hour}
    assert all(
        f'"location_id": "{d}"' in raw for d, raw in zip(sorted(missing), sorted(rejects["raw_payload"]), strict=True)
    )
    meta = metadata_of(result)
    assert (meta["rows_received"], meta["rows_written"], meta["rows_rejected"]) == (5, len(present), len(missing))
    assert meta["rejects_by_field"] == {"temperature_c": len(missing)}
    assert all(checks_of(result).values()), checks_of(result)


def test_provider_disagreement_is_reported_not_averaged(weather_server, wsim, locations, lake, instance):
    def disagreements(h: datetime) -> list[str]:
        n = hour_number(h)
        return [
            d
            for d, lat, lon in locations
            if not wsim.met_missing(lat, lon, n)
            and abs(wsim.owm_current_c(lat, lon, n)["temp_c"] - wsim.truth(lat, lon, n)["temp_c"]) > 2.0
        ]

    hour = _hour_with(lambda h: bool(disagreements(h)), DAY)
    expected = disagreements(hour)
    compared = sum(not wsim.met_missing(lat, lon, hour_number(hour)) for _, lat, lon in locations)
    wsim.now = hour + timedelta(minutes=5)
    run(weather.forecasts, weather_server, lake, instance, hour, checks=False)
    wsim.now = hour + timedelta(hours=1, minutes=20)
    result = run(weather.observations, weather_server, lake, instance, hour, checks=False)

    meta = metadata_of(result)
    assert meta["provider_pairs_compared"] == compared
    assert meta["provider_disagreements"] == len(expected)
    assert sorted(item["location_id"] for item in meta["disagreeing"]) == sorted(expected)
    assert all(abs(item["delta_c"]) > 2.0 for item in meta["disagreeing"])
    # The met value is stored as observed, not blended with OWM's.
    dma_id = expected[0]
    _, lat, lon = next(loc for loc in locations if loc[0] == dma_id)
    stored = lake.read(OBSERVATIONS).filter(pl.col("location_id") == dma_id)["temperature_c"].item()
    assert stored == wsim.truth(lat, lon, hour_number(hour))["temp_c"]


def test_rate_limited_calls_are_retried_after_retry_after(weather_server, wsim, locations, lake, instance):
    issue = DAY + timedelta(hours=14)
    wsim.now = issue + timedelta(minutes=5)
    wsim.inject("status", "/data/2.5/*", count=2, status=429, retry_after=1)
    began = time.monotonic()
    result = run(weather.forecasts, weather_server, lake, instance, issue, checks=False)
    assert result.success
    assert time.monotonic() - began >= 1.0  # Retry-After was waited out, not ignored
    assert sum(n for (_, status), n in wsim.stats.items() if status == 429) == 2
    assert wsim.requests_to(CURRENT_PATH, 200) == len(locations)
    assert wsim.requests_to(FORECAST_PATH, 200) == len(locations)
    assert lake.read(FORECASTS).height == len(locations) * 169
