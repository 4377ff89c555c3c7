"""Markets assets and checks, materialized through Dagster against the simulator on loopback."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import polars as pl
import pytest

from assets import markets
from contracts.markets import ENERGY_PRICE_STEPS, HOLIDAYS, TARIFFS
from quality.conform import rejects_table
from quality.markets import markets_checks
from resources.markets import MarketsClient
from simulators.markets import MarketsConfig, serve_markets

CHECKS = markets_checks(markets.price_days, markets.days, markets.weeks)
OLD, NEW, BAD = "PEA-TOU-4.2-2025-09", "PEA-TOU-4.2-2026-05", "PEA-TOU-4.2-2026-06"


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
    return {"markets": client, "lake": lake}


def run(assets, resources, instance, partition_key=None, raise_on_error=True):
    return dg.materialize(
        [markets.tariffs, markets.holidays, markets.energy_price_steps, *CHECKS],
        selection=dg.AssetSelection.assets(*assets),
        partition_key=partition_key,
        resources=resources,
        instance=instance,
        raise_on_error=raise_on_error,
    )


def checks_of(result) -> dict[str, bool]:
    return {f"{e.asset_key.path[-1]}:{e.check_name}": e.passed for e in result.get_asset_check_evaluations()}


def metadata_of(result, name: str) -> dict:
    event = next(e for e in result.get_asset_materialization_events() if e.asset_key.path[-1] == name)
    return {k: v.value for k, v in event.materialization.metadata.items()}


def step(lake, when: datetime) -> dict:
    rows = lake.read(ENERGY_PRICE_STEPS).filter(pl.col("step_start") == when).to_dicts()
    assert len(rows) == 1, f"no single price step at {when}"
    return rows[0]


@pytest.fixture
def reference(resources, instance, sim):
    result = run([markets.tariffs, markets.holidays], resources, instance)
    assert all(checks_of(result).values()), checks_of(result)
    return result


def test_reference_tables_land_as_published(reference, lake, sim):
    tariffs = lake.read(TARIFFS)
    assert tariffs["tariff_id"].to_list() == [OLD, NEW]
    effective = datetime(2026, 4, 30, 17, tzinfo=UTC)  # 00:00 local on 1 May
    assert tariffs.filter(pl.col("tariff_id") == NEW)["valid_from"].item() == effective
    assert tariffs.filter(pl.col("tariff_id") == OLD)["valid_to"].item() == effective
    assert lake.read(HOLIDAYS).height == len(sim.holidays())
    assert metadata_of(reference, "tariffs")["overlapping_pairs"] == 0


def test_weekday_steps_on_and_off_peak(reference, resources, instance, lake):
    result = run([markets.energy_price_steps], resources, instance, partition_key="2026-03-02")  # a Monday
    assert all(checks_of(result).values()), checks_of(result)
    on_peak = step(lake, datetime(2026, 3, 2, 3, tzinfo=UTC))  # 10:00 local
    assert (on_peak["tariff_id"], on_peak["period"], on_peak["demand_charge_applies"]) == (OLD, "on_peak", True)
    assert on_peak["energy_thb_per_kwh"] == pytest.approx(4.1025 + 0.1972)
    assert on_peak["demand_charge_thb_per_kw"] == pytest.approx(132.93)
    before_nine = step(lake, datetime(2026, 3, 2, 1, 45, tzinfo=UTC))  # 08:45 local
    first_on_peak = step(lake, datetime(2026, 3, 2, 2, tzinfo=UTC))  # 09:00 local
    assert (before_nine["period"], first_on_peak["period"]) == ("off_peak", "on_peak")
    evening = step(lake, datetime(2026, 3, 2, 15, tzinfo=UTC))  # 22:00 local
    assert (evening["period"], evening["demand_charge_applies"]) == ("off_peak", False)
    assert evening["energy_thb_per_kwh"] == pytest.approx(2.5849 + 0.1972)
    meta = metadata_of(result, "energy_price_steps")
    assert (meta["rows_written"], meta["rows_rejected"]) == (96, 0)
    assert meta["on_peak_steps"] == 13 * 4  # 09:00–22:00 local Monday; the UTC day ends 07:00 local Tuesday
    assert lake.read(rejects_table(ENERGY_PRICE_STEPS)).height == 0


def test_a_public_holiday_is_off_peak_all_day(reference, resources, instance, lake):
    # Makha Bucha, a Tuesday: the UTC day runs 07:00 local Tuesday to 07:00 local Wednesday.
    result = run([markets.energy_price_steps], resources, instance, partition_key="2026-03-03")
    noon = step(lake, datetime(2026, 3, 3, 5, tzinfo=UTC))  # 12:00 local
    assert (noon["period"], noon["holiday"], noon["demand_charge_applies"]) == ("off_peak", "Makha Bucha Day", False)
    assert noon["energy_thb_per_kwh"] == pytest.approx(2.5849 + 0.1972)
    meta = metadata_of(result, "energy_price_steps")
    assert (meta["rows_written"], meta["on_peak_steps"], meta["off_peak_steps"]) == (96, 0, 96)


def test_the_new_tariff_prices_steps_from_its_effective_date(reference, resources, instance, lake):
    run([markets.energy_price_steps], resources, instance, partition_key="2026-04-30")
    last_old = step(lake, datetime(2026, 4, 30, 16, 45, tzinfo=UTC))  # 23:45 local on Thursday 30 April
    first_new = step(lake, datetime(2026, 4, 30, 17, tzinfo=UTC))  # 00:00 local on 1 May
    assert (last_old["tariff_id"], last_old["energy_thb_per_kwh"]) == (OLD, pytest.approx(2.5849 + 0.1972))
    assert (first_new["tariff_id"], first_new["energy_thb_per_kwh"]) == (NEW, pytest.approx(2.6037 + 0.16))
    run([markets.energy_price_steps], resources, instance, partition_key="2026-05-05")  # a Tuesday
    on_peak = step(lake, datetime(2026, 5, 5, 3, tzinfo=UTC))
    assert (on_peak["tariff_id"], on_peak["period"]) == (NEW, "on_peak")
    assert on_peak["energy_thb_per_kwh"] == pytest.approx(4.1839 + 0.16)


def test_a_429_on_the_tariffs_is_retried_within_the_run(resources, instance, lake, sim):
    sim.inject("status", "/api/v1/tariffs", status=429, retry_after=1)
    result = run([markets.tariffs], resources, instance)
    assert result.success
    assert sim.stats[("/api/v1/tariffs", 429)] == 1
    assert sim.stats[("/api/v1/tariffs", 200)] == 1
    assert lake.read(TARIFFS)["tariff_id"].to_list() == [OLD, NEW]


def test_overlapping_validity_is_rejected_not_picked(reference, resources, instance, lake, sim):
    sim.inject("overlapping_tariff", "/api/v1/tariffs")
    refreshed = run([markets.tariffs], resources, instance, raise_on_error=False)
    assert checks_of(refreshed)["tariffs:validity_periods_do_not_overlap"] is False
    assert metadata_of(refreshed, "tariffs")["overlaps"] == f"{NEW} & {BAD}"
    # 31 May UTC: local 07:00 on 31 May to 07:00 on 1 June; the overlap starts at 00:00 local on 1 June.
    result = run([markets.energy_price_steps], resources, instance, partition_key="2026-05-31")
    meta = metadata_of(result, "energy_price_steps")
    assert (meta["rows_written"], meta["rows_rejected"]) == (68, 28)
    assert checks_of(result)["energy_price_steps:complete"] is False
    priced = lake.read(ENERGY_PRICE_STEPS)
    assert priced["tariff_id"].unique().to_list() == [NEW]
    assert priced["step_start"].max() == datetime(2026, 5, 31, 16, 45, tzinfo=UTC)
    rejects = lake.read(rejects_table(ENERGY_PRICE_STEPS))
    assert rejects.height == 28
    assert rejects["reason"][0] == (
        f"tariff versions {NEW}, {BAD} have overlapping validity at 2026-05-31T17:00Z; the publisher must close one"
    )


def test_pricing_a_year_without_published_holidays_fails_with_the_fix(reference, resources, instance, lake, sim):
    # A calendar holding only 2027: pricing a 2026 day would call every 2026 holiday on-peak.
    only_2027 = pl.DataFrame(sim.holidays(2027)).with_columns(pl.col("date").str.to_date())
    lake.replace_snapshot(HOLIDAYS, only_2027)
    result = run([markets.energy_price_steps], resources, instance, partition_key="2026-03-02", raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "no public holidays known for [2026]" in failure.step_failure_data.user_failure_data.description
    assert lake.read(ENERGY_PRICE_STEPS).height == 0


def test_a_tariff_with_wrong_types_is_rejected_and_its_steps_are_not_priced(resources, instance, lake, sim):
    run([markets.holidays], resources, instance)
    sim.inject("wrong_types", "/api/v1/tariffs")
    loaded = run([markets.tariffs], resources, instance, raise_on_error=False)
    assert (metadata_of(loaded, "tariffs")["rows_received"], metadata_of(loaded, "tariffs")["rows_rejected"]) == (2, 1)
    assert lake.read(TARIFFS)["tariff_id"].to_list() == [NEW]
    rejected = lake.read(rejects_table(TARIFFS))
    assert rejected["field"].to_list() == ["energy_on_peak_thb_per_kwh"]
    assert OLD in rejected["raw_payload"][0]
    result = run([markets.energy_price_steps], resources, instance, partition_key="2026-03-02")
    assert metadata_of(result, "energy_price_steps")["rows_rejected"] == 96
    reasons = lake.read(rejects_table(ENERGY_PRICE_STEPS))["reason"]
    assert reasons[0] == "no tariff version is valid at 2026-03-02T00:00Z"


def test_duplicated_and_reordered_answers_land_the_same_tables(reference, resources, instance, lake, sim):
    clean = (lake.read(TARIFFS), lake.read(HOLIDAYS))
    sim.inject("out_of_order", "/api/v1/tariffs")
    sim.inject("duplicates", "/api/v1/holidays")
    result = run([markets.tariffs, markets.holidays], resources, instance)
    assert metadata_of(result, "holidays")["rows_rejected"] == 1
    assert lake.read(TARIFFS).equals(clean[0])
    assert lake.read(HOLIDAYS).equals(clean[1])
    assert lake.read(rejects_table(HOLIDAYS))["reason"].to_list() == ["duplicate of another row with the same (date)"]


def test_an_outage_fails_the_run_naming_the_endpoint(resources, instance, sim):
    sim.inject("status", "/api/v1/holidays", count=10, status=503)
    resources = {**resources, "markets": resources["markets"].model_copy(update={"max_retries": 1})}
    result = run([markets.holidays], resources, instance, raise_on_error=False)
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    description = failure.step_failure_data.user_failure_data.description
    assert description.startswith("markets: could not load holidays for partition ")
    assert "/api/v1/holidays" in description and "503" in description
