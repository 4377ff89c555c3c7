"""The rules weather rows must meet, as Great Expectations suites run as Dagster asset checks.

Physical ranges are for a tropical lowland climate (the reference utility is in Thailand) with room to
spare: a value outside them is a broken feed or a unit left unconverted (a Kelvin temperature reads
~300 "°C" and fails here), not weather.
"""

import dagster as dg

from contracts.dmama import DMAS
from contracts.weather import FORECASTS, FORECASTS_KEY, OBSERVATIONS, OBSERVATIONS_KEY
from quality.gx import CheckInput, Rule, build_gx_checks

MIN_TEMPERATURE_C = -10.0
MAX_TEMPERATURE_C = 50.0
MAX_RAINFALL_MM_PER_HOUR = 200.0  # above the world record for an hour (~305 mm) is impossible; 200 is Thai-extreme
MAX_WIND_SPEED_MS = 70.0


def _known_locations(check: CheckInput) -> list[str]:
    return check.lake.read(DMAS)["dma_id"].to_list()


def _keys(*columns: str) -> Rule:
    return Rule(
        name="keys_present",
        description=f"Every row names its {', '.join(columns)}.",
        expectations=lambda gxe, _: [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in columns],
    )


def _unique(*columns: str) -> Rule:
    return Rule(
        name="unique_key",
        description=f"No two rows share ({', '.join(columns)}): a re-run never doubles a value.",
        expectations=lambda gxe, _: [gxe.ExpectCompoundColumnsToBeUnique(column_list=list(columns))],
    )


PHYSICAL_RANGES = Rule(
    name="values_in_physical_range",
    description=(
        f"Temperature {MIN_TEMPERATURE_C:.0f}–{MAX_TEMPERATURE_C:.0f} °C, humidity 0–100 %, rainfall "
        f"0–{MAX_RAINFALL_MM_PER_HOUR:.0f} mm/h, wind 0–{MAX_WIND_SPEED_MS:.0f} m/s."
    ),
    expectations=lambda gxe, _: [
        gxe.ExpectColumnValuesToBeBetween(
            column="temperature_c", min_value=MIN_TEMPERATURE_C, max_value=MAX_TEMPERATURE_C
        ),
        gxe.ExpectColumnValuesToBeBetween(column="humidity_pct", min_value=0, max_value=100),
        gxe.ExpectColumnValuesToBeBetween(column="rainfall_mm", min_value=0, max_value=MAX_RAINFALL_MM_PER_HOUR),
        gxe.ExpectColumnValuesToBeBetween(column="wind_speed_ms", min_value=0, max_value=MAX_WIND_SPEED_MS),
    ],
)

KNOWN_LOCATIONS = Rule(
    name="known_locations",
    description="Every location is a DMA of the DMA catalogue (dmama/dmas).",
    expectations=lambda gxe, check: [
        gxe.ExpectColumnValuesToBeInSet(column="location_id", value_set=_known_locations(check))
    ],
    severity=dg.AssetCheckSeverity.WARN,
    blocking=False,
)

OBSERVATION_RULES = (
    _keys("location_id", "observed_at", "provider"),
    _unique("location_id", "observed_at", "provider"),
    PHYSICAL_RANGES,
    KNOWN_LOCATIONS,
)

FORECAST_RULES = (
    _keys("location_id", "issued_at", "valid_at", "provider"),
    _unique("location_id", "issued_at", "valid_at", "provider"),
    PHYSICAL_RANGES,
    KNOWN_LOCATIONS,
    Rule(
        name="valid_after_issue",
        description="A forecast is valid at or after the hour it was issued, never before.",
        expectations=lambda gxe, _: [
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="valid_at", column_B="issued_at", or_equal=True)
        ],
    ),
)


def weather_checks(hourly: dg.TimeWindowPartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    """One GX suite per weather table, each rule its own check, per partition."""
    return [
        build_gx_checks(OBSERVATIONS_KEY, OBSERVATIONS, OBSERVATION_RULES, hourly),
        build_gx_checks(FORECASTS_KEY, FORECASTS, FORECAST_RULES, hourly),
    ]
