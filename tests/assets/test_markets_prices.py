"""Fuel prices, exchange rates, cement prices (as sent and converted) and road freight costs, materialized
through Dagster against the markets simulator on loopback, with their checks."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import dagster as dg
import duckdb
import polars as pl
import pytest

from assets import markets
from assets.catalog import catalog_tables
from contracts.markets import (
    CEMENT_MARKET_PRICES,
    CEMENT_PRICES,
    EXCHANGE_RATES,
    FUEL_PRICES,
    ROAD_FREIGHT_COSTS,
)
from quality.conform import rejects_table
from quality.markets import markets_checks
from resources.markets import SHIPPED_FREIGHT_MODEL, FreightModelResource, MarketsClient, load_freight_model
from simulators.markets import CITIES, MarketsConfig, serve_markets

CHECKS = markets_checks(markets.price_days, markets.days, markets.weeks)
ASSETS = [
    markets.fuel_prices,
    markets.exchange_rates,
    markets.cement_prices,
    markets.cement_market_prices,
    markets.road_freight_costs,
]
MODEL = load_freight_model()


@pytest.fixture(scope="module")
def server():
    with serve_markets(MarketsConfig()) as running:
        yield running


@pytest.fixture
def sim(server):
    server.simulator.clear_faults()
    server.simulator.reset_stats()
    yield server.simulator
    server.simulator.clear_faults()


@pytest.fixture
def resources(server, lake):
    client = MarketsClient(base_url=server.url, api_key=server.config.api_key, backoff_base_s=0.01)
    return {"markets": client, "lake": lake, "freight_model": FreightModelResource()}


def run(assets, resources, instance, first: str, last: str | None = None, raise_on_error=True, checks=True):
    """Materialize ``assets`` (with their checks unless ``checks=False``) for one partition or, as one run,
    a range of them."""
    last = last or first
    tags = {"dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last}
    selection = dg.AssetSelection.assets(*assets)
    return dg.materialize(
        [*ASSETS, *CHECKS],
        selection=selection if checks else selection.without_checks(),
        partition_key=first if first == last else None,
        tags={} if first == last else tags,
        resources=resources,
        instance=instance,
        raise_on_error=raise_on_error,
    )


def checks_of(result) -> dict[str, bool]:
    return {f"{e.asset_key.path[-1]}:{e.check_name}": e.passed for e in result.get_asset_check_evaluations()}


def metadata_of(result, name: str) -> dict:
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == name)
    return {k: v.value for k, v in event.materialization.metadata.items()}


def materialized(result) -> set[str]:
    return {e.asset_key.path[-1] for e in result.get_asset_materialization_events()}


def inr_rate(sim, day: date) -> float:
    return next(r["rate"] for r in sim.fx_rates(day, day + timedelta(days=1)) if r["quote"] == "INR")


# ------------------------------------------------------------------------------------------ fuel


def test_weekly_partitions_key_on_monday():
    keys = markets.weeks.get_partition_keys(current_time=datetime(2026, 3, 4, 12, tzinfo=UTC))  # a Wednesday
    assert keys[0] == "2025-12-29" and keys[-1] == "2026-03-02"  # the week in progress is a partition
    assert all(date.fromisoformat(k).weekday() == 0 for k in keys)
    window = markets.weeks.time_window_for_partition_key("2026-03-02")
    assert (window.start, window.end) == (datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 9, tzinfo=UTC))
    sunday_night = datetime(2026, 3, 8, 23, 59, tzinfo=UTC).timestamp()
    assert markets.weeks.get_partition_key_for_timestamp(sunday_night) == "2026-03-02"


def test_fuel_prices_land_one_row_per_week(resources, instance, lake, sim):
    result = run([markets.fuel_prices], resources, instance, "2026-02-09", "2026-03-02")  # four weeks, one run
    frame = lake.read(FUEL_PRICES)
    sent = sim.fuel_prices(date(2026, 2, 9), date(2026, 3, 9))
    assert frame["week_start"].to_list() == [date(2026, 2, 9) + timedelta(weeks=n) for n in range(4)]
    assert frame["diesel_usd_per_l"].to_list() == [p["diesel_usd_per_l"] for p in sent]
    assert frame["brent_usd_per_bbl"].to_list() == [p["brent_usd_per_bbl"] for p in sent]
    assert frame["published_at"][0] == datetime(2026, 2, 9, 3, tzinfo=UTC)  # 10:00 local
    meta = metadata_of(result, "fuel_prices")
    assert (meta["rows_received"], meta["rows_written"], meta["rows_rejected"]) == (4, 4, 0)
    assert len(lake.files(FUEL_PRICES)) == 4  # a file per week
    assert all(checks_of(result).values()), checks_of(result)


def test_a_negative_diesel_price_fails_the_blocking_check_and_is_never_costed(resources, instance, lake, sim):
    run([markets.exchange_rates], resources, instance, "2026-02-23", "2026-03-01", checks=False)
    sim.inject("negative_price", "/api/v1/fuel-prices")
    result = run([markets.fuel_prices], resources, instance, "2026-03-02", raise_on_error=False)
    assert checks_of(result)["fuel_prices:prices_plausible"] is False
    diesel = lake.read(FUEL_PRICES)["diesel_usd_per_l"].item()
    assert diesel < 0  # kept as sent, flagged
    costed = run([markets.road_freight_costs], resources, instance, "2026-03-02", checks=False)
    assert lake.read(ROAD_FREIGHT_COSTS).height == 0
    reject = lake.read(rejects_table(ROAD_FREIGHT_COSTS)).row(0, named=True)
    assert reject["field"] == "diesel_usd_per_l"
    assert reject["reason"] == f"not costed: diesel price {diesel:g} USD/l is outside the plausible 0.3–3 USD/l"
    meta = metadata_of(costed, "road_freight_costs")
    assert (meta["rows_received"], meta["rows_written"], meta["rows_rejected"]) == (1, 0, 1)


# ---------------------------------------------------------------------------- rates and cement


def test_no_rate_on_a_holiday_and_its_prices_take_the_last_rate_fixed(resources, instance, lake, sim):
    # Friday 27 Feb to Tuesday 3 Mar (Makha Bucha): rates on Friday and Monday only.
    result = run(
        [markets.exchange_rates, markets.cement_prices, markets.cement_market_prices],
        resources,
        instance,
        "2026-02-27",
        "2026-03-03",
    )
    assert all(checks_of(result).values()), checks_of(result)
    rates = lake.read(EXCHANGE_RATES)
    assert sorted(set(rates["rate_date"])) == [date(2026, 2, 27), date(2026, 3, 2)]
    assert lake.read(EXCHANGE_RATES, datetime(2026, 3, 3, tzinfo=UTC), datetime(2026, 3, 4, tzinfo=UTC)).height == 0

    converted = lake.read(CEMENT_MARKET_PRICES)
    assert converted.height == 5 * len(CITIES) * 2  # every day's prices, weekends and the holiday included
    rate_used = dict(converted.select("price_date", "fx_rate_date").unique().iter_rows())
    assert rate_used == {
        date(2026, 2, 27): date(2026, 2, 27),
        date(2026, 2, 28): date(2026, 2, 27),  # Saturday
        date(2026, 3, 1): date(2026, 2, 27),  # Sunday
        date(2026, 3, 2): date(2026, 3, 2),
        date(2026, 3, 3): date(2026, 3, 2),  # the holiday takes Monday's rate
    }
    holiday = {(p["city"], p["grade"]): p for p in sim.cement_prices(date(2026, 3, 3), date(2026, 3, 4))}
    monday_rate = inr_rate(sim, date(2026, 3, 2))
    for row in converted.filter(pl.col("price_date") == date(2026, 3, 3)).iter_rows(named=True):
        sent = holiday[(row["city"], row["grade"])]
        assert (row["source_price_per_bag"], row["source_currency"], row["bag_kg"]) == (
            sent["price_per_bag"],
            "INR",
            50.0,
        )
        assert row["source_price_per_tonne"] == pytest.approx(sent["price_per_bag"] * 20)
        assert row["fx_rate_per_usd"] == monday_rate
        assert row["price_usd_per_tonne"] == round(sent["price_per_bag"] * 20 / monday_rate, 2)
    meta = metadata_of(result, "cement_market_prices")
    assert (meta["rows_received"], meta["rows_written"], meta["rows_rejected"]) == (100, 100, 0)
    assert meta["rate_dates_used"] == "2026-02-27, 2026-03-02"


def test_an_fx_outlier_fails_the_blocking_check_and_its_prices_are_rejected(resources, instance, lake, sim):
    sim.inject("fx_outlier", "/api/v1/fx-rates", quote="INR")
    daily = [markets.exchange_rates, markets.cement_prices, markets.cement_market_prices]
    result = run(daily, resources, instance, "2026-03-02", raise_on_error=False)
    assert checks_of(result)["exchange_rates:usd_inr_plausible"] is False
    assert checks_of(result)["exchange_rates:usd_thb_plausible"] is True
    assert checks_of(result)["exchange_rates:known_pairs"] is True
    # The blocking check stops the conversion in the same run: nothing is converted with the bad rate.
    assert "cement_market_prices" not in materialized(result)
    outlier = lake.read(EXCHANGE_RATES).filter(pl.col("quote") == "INR")["rate"].item()
    assert outlier == pytest.approx(inr_rate(sim, date(2026, 3, 2)) * 100)

    # Run on its own later, the conversion still refuses the rate, row by row, with the reason.
    alone = run([markets.cement_market_prices], resources, instance, "2026-03-02", checks=False)
    assert lake.read(CEMENT_MARKET_PRICES).height == 0
    rejects = lake.read(rejects_table(CEMENT_MARKET_PRICES))
    assert rejects.height == len(CITIES) * 2
    assert set(rejects["field"]) == {"fx_rate"}
    assert rejects["reason"][0] == (
        f"not converted: the rate fixed on 2026-03-02: USD/INR rate {outlier:g} is outside the plausible "
        "60–110 INR per USD"
    )
    assert set(rejects["partition_start"]) == {datetime(2026, 3, 2, tzinfo=UTC)}
    meta = metadata_of(alone, "cement_market_prices")
    assert (meta["rows_received"], meta["rows_written"], meta["rows_rejected"]) == (20, 0, 20)

    # The publisher corrects the rate: re-running the day replaces the outlier and converts every price.
    fixed = run(daily, resources, instance, "2026-03-02")
    assert all(checks_of(fixed).values()), checks_of(fixed)
    assert lake.read(CEMENT_MARKET_PRICES).height == 20
    assert lake.read(rejects_table(CEMENT_MARKET_PRICES)).height == 0


def test_prices_without_a_recent_rate_are_rejected_with_the_fix(resources, instance, lake, sim):
    result = run([markets.cement_prices, markets.cement_market_prices], resources, instance, "2026-03-04", checks=False)
    meta = metadata_of(result, "cement_market_prices")
    assert (meta["rows_received"], meta["rows_written"], meta["rows_rejected"]) == (20, 0, 20)
    assert lake.read(rejects_table(CEMENT_MARKET_PRICES))["reason"][0] == (
        "no USD/INR rate fixed in the 7 days up to 2026-03-04"
    )


def test_wrong_types_and_duplicates_become_rejects_with_their_field(resources, instance, lake, sim):
    sim.inject("wrong_types", "/api/v1/cement-prices")
    sim.inject("duplicates", "/api/v1/fx-rates")
    result = run([markets.exchange_rates, markets.cement_prices], resources, instance, "2026-03-02", checks=False)
    cement = metadata_of(result, "cement_prices")
    assert (cement["rows_received"], cement["rows_written"], cement["rows_rejected"]) == (20, 19, 1)
    reject = lake.read(rejects_table(CEMENT_PRICES)).row(0, named=True)
    assert (reject["field"], reject["row_number"]) == ("price_date", 0)
    assert '"price_date": "tomorrow"' in reject["raw_payload"]
    rates = metadata_of(result, "exchange_rates")
    assert (rates["rows_received"], rates["rows_written"], rates["rows_rejected"]) == (3, 2, 1)
    assert lake.read(rejects_table(EXCHANGE_RATES))["reason"].to_list() == [
        "duplicate of another row with the same (rate_date,base,quote)"
    ]


# ----------------------------------------------------------------------------------------- freight


def expected_freight(model, diesel_usd_per_l: float, usd_inr: float) -> float:
    fixed = model.fixed.total_inr_per_km / model.payload_t
    return round(fixed + model.fuel_l_per_km * diesel_usd_per_l * usd_inr / model.payload_t, 4)


def test_freight_cost_follows_the_diesel_price_by_the_model(resources, instance, lake, sim, tmp_path):
    run([markets.exchange_rates], resources, instance, "2026-02-20", "2026-03-08", checks=False)
    run([markets.fuel_prices], resources, instance, "2026-02-23", "2026-03-02", checks=False)
    result = run([markets.road_freight_costs], resources, instance, "2026-02-23", "2026-03-02")
    assert all(checks_of(result).values()), checks_of(result)
    costs = lake.read(ROAD_FREIGHT_COSTS)
    fuel = {p["week_start"]: p["diesel_usd_per_l"] for p in sim.fuel_prices(date(2026, 2, 23), date(2026, 3, 9))}
    # Each week uses the rate fixed last before its Monday: the Friday before.
    fridays = {date(2026, 2, 23): date(2026, 2, 20), date(2026, 3, 2): date(2026, 2, 27)}
    for row in costs.iter_rows(named=True):
        week = row["week_start"]
        diesel, rate = fuel[week.isoformat()], inr_rate(sim, fridays[week])
        assert (row["diesel_usd_per_l"], row["usd_inr_rate"], row["usd_inr_rate_date"]) == (diesel, rate, fridays[week])
        assert row["freight_inr_per_tonne_km"] == expected_freight(MODEL, diesel, rate)
        assert row["fixed_inr_per_tonne_km"] == pytest.approx(24.0 / 25)
        assert row["diesel_inr_per_l"] == pytest.approx(diesel * rate, abs=1e-4)
        assert 1.5 < row["freight_inr_per_tonne_km"] < 3.0  # the going rate for full-truckload cement
    first, second = costs.sort("week_start").iter_rows(named=True)
    # The fuel part moves in proportion to diesel in INR; the fixed part does not move.
    assert (second["fuel_inr_per_tonne_km"] / first["fuel_inr_per_tonne_km"]) == pytest.approx(
        (second["diesel_usd_per_l"] * second["usd_inr_rate"]) / (first["diesel_usd_per_l"] * first["usd_inr_rate"]),
        rel=1e-3,
    )
    meta = metadata_of(result, "road_freight_costs")
    assert (meta["rows_received"], meta["rows_written"], meta["rows_rejected"], meta["model"]) == (
        2,
        2,
        0,
        "bulker-25t-v1",
    )

    # Another model file (a thirstier, smaller truck) costs the same weeks by its own parameters.
    thirsty = tmp_path / "freight.yaml"
    thirsty.write_text(
        SHIPPED_FREIGHT_MODEL.read_text()
        .replace("fuel_l_per_km: 0.35", "fuel_l_per_km: 0.5")
        .replace("payload_t: 25", "payload_t: 20")
        .replace("name: bulker-25t-v1", "name: tipper-20t")
    )
    other = {**resources, "freight_model": FreightModelResource(path=str(thirsty))}
    run([markets.road_freight_costs], other, instance, "2026-03-02", checks=False)
    row = lake.read(ROAD_FREIGHT_COSTS).filter(pl.col("week_start") == date(2026, 3, 2)).row(0, named=True)
    model = FreightModelResource(path=str(thirsty)).model()
    assert (row["model"], row["payload_t"], row["fuel_l_per_km"]) == ("tipper-20t", 20.0, 0.5)
    assert row["freight_inr_per_tonne_km"] == expected_freight(
        model, second["diesel_usd_per_l"], second["usd_inr_rate"]
    )


def test_a_week_without_its_inputs_is_rejected_naming_what_to_run(resources, instance, lake, sim):
    run([markets.fuel_prices], resources, instance, "2026-03-02", checks=False)
    result = run([markets.road_freight_costs], resources, instance, "2026-03-02", "2026-03-09", checks=False)
    meta = metadata_of(result, "road_freight_costs")
    assert (meta["rows_received"], meta["rows_written"], meta["rows_rejected"]) == (2, 0, 2)
    reasons = lake.read(rejects_table(ROAD_FREIGHT_COSTS)).sort("partition_start")["reason"].to_list()
    assert reasons == [
        "no USD/INR rate fixed in the 7 days before the week starting 2026-03-02; "
        "materialize markets/exchange_rates for them",
        "no diesel price for the week starting 2026-03-09; materialize markets/fuel_prices for it",
    ]


# ----------------------------------------------------------------------------------------- catalog


def test_the_new_tables_appear_in_the_analyst_catalog(resources, instance, lake, sim, analyst_catalog):
    run(
        [markets.exchange_rates, markets.cement_prices, markets.cement_market_prices], resources, instance, "2026-03-02"
    )
    from orchestration.markets import defs

    published = analyst_catalog.publish(lake, catalog_tables(defs.assets))
    with duckdb.connect(published.path, read_only=True) as con:
        views = {f"{s}.{v}" for s, v in con.execute("SELECT schema_name, view_name FROM duckdb_views()").fetchall()}
        for table in (FUEL_PRICES, EXCHANGE_RATES, CEMENT_PRICES, CEMENT_MARKET_PRICES, ROAD_FREIGHT_COSTS):
            assert f"{table.layer}.{table.name}" in views
            assert f"rejects.{table.name}" in views
        assert con.execute("SELECT count(*) FROM marts.cement_market_prices").fetchone()[0] == 20
        comment = con.execute(
            "SELECT comment FROM duckdb_columns() WHERE table_name = 'cement_market_prices' "
            "AND column_name = 'price_usd_per_tonne'"
        ).fetchone()[0]
        assert "source_price_per_tonne / fx_rate_per_usd" in comment
