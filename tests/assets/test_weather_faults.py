"""Hostile weather answers, from the shared fault book and the source's own: each is retried to the same
values, or ends in rejects naming the field and the reason, or fails a blocking check, or fails the run
naming the endpoint; never a silent wrong value."""

from __future__ import annotations

import shutil
import time
from datetime import timedelta

import dagster as dg
import polars as pl
import pytest

from assets import dmama, weather
from contracts.dmama import DMAS
from contracts.weather import FORECASTS, OBSERVATIONS
from quality.conform import rejects_table
from resources.lake import Lake
from simulators.weather import CURRENT_PATH, FORECAST_PATH, MET_PATH, SENTINEL, WeatherConfig, serve_weather
from tests.assets.test_weather_assets import DAY, _hour_with, checks_of, client, hour_number, metadata_of, run
from tests.conftest import dmama_client


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


def failure_message(result) -> str:
    failure = next(e for e in result.all_events if e.is_step_failure)
    return failure.step_failure_data.user_failure_data.description or failure.step_failure_data.error.message


@pytest.fixture
def clean_hour(wsim, locations):
    """An observed hour with no -999 at any location, the providers' clock set to 20 minutes after it."""
    hour = _hour_with(lambda h: not any(wsim.met_missing(la, lo, hour_number(h)) for _, la, lo in locations), DAY)
    wsim.now = hour + timedelta(hours=1, minutes=20)
    return hour


def observed(lake) -> dict[str, float]:
    return dict(lake.read(OBSERVATIONS).select("location_id", "temperature_c").iter_rows())


def truth(wsim, locations, hour) -> dict[str, float]:
    return {d: wsim.truth(la, lo, hour_number(hour))["temp_c"] for d, la, lo in locations}


# ------------------------------------------------------------------------------ retried to the same values


@pytest.mark.parametrize(
    ("kind", "count", "params"),
    [
        ("status", 1, {"status": 429, "retry_after": 1}),
        ("status", 2, {"status": 503}),
        ("truncated", 2, {}),
        ("malformed", 2, {}),
    ],
)
def test_a_transient_met_fault_is_retried_and_lands_the_truth(
    weather_server, wsim, locations, lake, instance, clean_hour, kind, count, params
):
    wsim.inject(kind, MET_PATH, count=count, **params)
    began = time.monotonic()
    result = run(weather.observations, weather_server, lake, instance, clean_hour, checks=False)
    assert result.success
    assert observed(lake) == truth(wsim, locations, clean_hour)
    assert wsim.requests_to(MET_PATH) == len(locations) + count  # each faulty answer was asked for again
    assert wsim.requests_to(MET_PATH, 200) == len(locations) + (count if kind in ("truncated", "malformed") else 0)
    if params.get("status") == 429:
        assert time.monotonic() - began >= 1.0  # Retry-After was waited out
        assert wsim.requests_to(MET_PATH, 429) == 1


def test_a_rate_limited_provider_is_waited_out_as_retry_after_says(weather_server, wsim, locations, lake, instance):
    issue = DAY + timedelta(hours=10)
    wsim.now = issue + timedelta(minutes=5)
    # Half of the next four OWM requests are refused with Retry-After: 1.
    wsim.inject("rate_limited", "/data/2.5/*", count=4, share=0.5, retry_after=1)
    weather_client = client(weather_server)
    result = run(weather.forecasts, weather_server, lake, instance, issue, checks=False, weather=weather_client)
    assert result.success
    refused = wsim.requests_to(CURRENT_PATH, 429) + wsim.requests_to(FORECAST_PATH, 429)
    assert refused == 2
    assert wsim.requests_to(CURRENT_PATH, 200) == wsim.requests_to(FORECAST_PATH, 200) == len(locations)
    assert lake.read(FORECASTS).height == len(locations) * 169


def test_a_slow_forecast_times_out_and_is_fetched_again(weather_server, wsim, locations, lake, instance):
    issue = DAY + timedelta(hours=11)
    wsim.now = issue + timedelta(minutes=5)
    wsim.inject("slow", FORECAST_PATH, delay_s=1.5)
    quick = client(weather_server, timeout_s=0.5)
    result = run(weather.forecasts, weather_server, lake, instance, issue, checks=False, weather=quick)
    assert result.success
    dma_id, lat, lon = locations[0]
    valid = issue + timedelta(hours=5)
    landed = lake.read(FORECASTS).filter((pl.col("location_id") == dma_id) & (pl.col("valid_at") == valid))
    expected = wsim.owm_forecast_c(lat, lon, hour_number(issue), hour_number(valid))["temp_c"]
    assert landed["temperature_c"].item() == pytest.approx(expected, abs=0.011)
    time.sleep(1.2)  # the abandoned request is counted when the server finishes it
    assert wsim.requests_to(FORECAST_PATH) == len(locations) + 1


def test_an_outage_fails_the_run_naming_the_endpoint_and_leaves_the_hour_alone(
    weather_server, wsim, locations, lake, instance, clean_hour
):
    run(weather.observations, weather_server, lake, instance, clean_hour, checks=False)
    before = observed(lake)
    wsim.inject("status", MET_PATH, count=20, status=502)
    failed = run(
        weather.observations,
        weather_server,
        lake,
        instance,
        clean_hour,
        checks=False,
        raise_on_error=False,
        weather=client(weather_server, max_retries=1),
    )
    assert not failed.success
    message = failure_message(failed)
    assert message.startswith("weather: could not load met observations for DMA")
    assert MET_PATH in message and "502" in message
    assert observed(lake) == before


# ------------------------------------------------------------------------------------ rejects with reasons


def test_wrong_types_in_the_met_feed_are_rejected_naming_the_field(
    weather_server, wsim, locations, lake, instance, clean_hour
):
    wsim.inject("wrong_types", MET_PATH)  # the first location's answer
    result = run(weather.observations, weather_server, lake, instance, clean_hour, checks=False)
    first = locations[0][0]
    meta = metadata_of(result)
    assert (meta["rows_received"], meta["rows_written"], meta["rows_rejected"]) == (5, 4, 1)
    reject = lake.read(rejects_table(OBSERVATIONS)).row(0, named=True)
    assert (reject["field"], reject["reason"]) == ("observed_at", "expected an ISO 8601 timestamp, got 'yesterday'")
    assert f'"location_id": "{first}"' in reject["raw_payload"] and '"temperature_c": "n/a"' in reject["raw_payload"]
    assert reject["partition_start"] == clean_hour
    assert first not in observed(lake)


def test_wrong_types_in_a_forecast_item_reject_that_item_only(weather_server, wsim, locations, lake, instance):
    issue = DAY + timedelta(hours=12)
    wsim.now = issue + timedelta(minutes=5)
    wsim.inject("wrong_types", FORECAST_PATH)
    result = run(weather.forecasts, weather_server, lake, instance, issue, checks=False)
    meta = metadata_of(result)
    assert (meta["rows_received"], meta["rows_written"], meta["rows_rejected"]) == (845, 844, 1)
    reject = lake.read(rejects_table(FORECASTS)).row(0, named=True)
    assert (reject["field"], reject["reason"]) == ("valid_at", "expected an ISO 8601 timestamp, got 'n/a'")
    assert '"temperature_c": "n/a"' in reject["raw_payload"]  # the Kelvin text went through unconverted


def test_a_duplicated_met_row_is_rejected_as_a_duplicate(weather_server, wsim, locations, lake, instance, clean_hour):
    wsim.inject("duplicates", MET_PATH)
    result = run(weather.observations, weather_server, lake, instance, clean_hour, checks=False)
    meta = metadata_of(result)
    assert (meta["rows_received"], meta["rows_written"], meta["rows_rejected"]) == (6, 5, 1)
    assert lake.read(rejects_table(OBSERVATIONS))["reason"].to_list() == [
        "duplicate of another row with the same (location_id,observed_at,provider)"
    ]
    assert observed(lake) == truth(wsim, locations, clean_hour)


def test_rows_out_of_order_land_the_same_file(weather_server, wsim, locations, lake, instance):
    first = DAY + timedelta(hours=3)
    wsim.now = first + timedelta(hours=4)

    def backfill() -> bytes:
        tags = {
            "dagster/asset_partition_range_start": f"{first:%Y-%m-%d-%H:00}",
            "dagster/asset_partition_range_end": f"{first + timedelta(hours=2):%Y-%m-%d-%H:00}",
        }
        dg.materialize(
            [weather.observations],
            tags=tags,
            resources={"weather": client(weather_server), "lake": lake},
            instance=instance,
        )
        return b"".join(open(path, "rb").read() for path in lake.files(OBSERVATIONS))

    clean = backfill()
    wsim.inject("out_of_order", MET_PATH, count=len(locations))
    assert backfill() == clean


def test_a_station_outage_sends_every_hour_as_sentinels_and_each_is_rejected(
    weather_server, wsim, locations, lake, instance, clean_hour
):
    wsim.inject("sentinel_burst", MET_PATH, count=len(locations))
    result = run(weather.observations, weather_server, lake, instance, clean_hour, checks=False)
    assert lake.read(OBSERVATIONS).height == 0  # never a -999 °C, never a zero
    rejects = lake.read(rejects_table(OBSERVATIONS))
    assert rejects.height == len(locations)
    assert set(rejects["reason"]) == {
        f"missing hour: the met feed sent the sentinel {SENTINEL} for temperature_c, humidity_pct, rainfall_mm, "
        "wind_speed_ms"
    }
    meta = metadata_of(result)
    assert (meta["rows_received"], meta["rows_written"], meta["rows_rejected"]) == (5, 0, 5)


def test_kelvin_in_the_celsius_field_fails_the_blocking_range_check(
    weather_server, wsim, locations, lake, instance, clean_hour
):
    wsim.inject("unit_slip", MET_PATH, count=len(locations))
    result = run(weather.observations, weather_server, lake, instance, clean_hour, raise_on_error=False)
    landed = observed(lake)
    expected = truth(wsim, locations, clean_hour)
    assert landed == {d: pytest.approx(t + 273.15, abs=0.011) for d, t in expected.items()}
    assert checks_of(result)["observations:values_in_physical_range"] is False
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "values_in_physical_range")
    assert evaluation.metadata["column_values_to_be_between(temperature_c) unexpected"].value == len(locations)
