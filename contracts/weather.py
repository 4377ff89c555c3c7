"""The weather data contract: observations and forecasts per location (one location per DMA), in °C.

Both providers land in the same units whatever they send (OWM Kelvin, the met office Celsius); the
``provider`` column says who said it, so disagreement stays visible instead of being averaged away.
"""

import dagster as dg
import polars as pl

from resources.lake import Column, LakeTable

UTC_TIME = pl.Datetime("us", "UTC")


def _measures() -> tuple[Column, ...]:
    return (
        Column("temperature_c", pl.Float64(), "Air temperature, °C (OWM's Kelvin converted).", nullable=False),
        Column("humidity_pct", pl.Float64(), "Relative humidity, %."),
        Column("rainfall_mm", pl.Float64(), "Rainfall in the hour, mm (0 when the provider reports none)."),
        Column("wind_speed_ms", pl.Float64(), "Mean wind speed, m/s."),
    )


OBSERVATIONS = LakeTable(
    layer="raw",
    name="weather_observations",
    description="Hourly weather observed at each DMA's location, in °C, from the national met office feed.",
    columns=(
        Column("location_id", pl.String(), "Location: the DMA id it stands for.", nullable=False, identifier=True),
        Column("observed_at", UTC_TIME, "Start of the observed hour, UTC.", nullable=False),
        Column("provider", pl.String(), "Who observed it: met (national met office).", nullable=False),
        *_measures(),
    ),
    key=("location_id", "observed_at", "provider"),
    time_column="observed_at",
)

FORECASTS = LakeTable(
    layer="raw",
    name="weather_forecasts",
    description=(
        "Hourly weather forecasts for each DMA's location, kept by issue time so a model run can be "
        "reproduced with the forecast it used. The row with valid_at = issued_at is the provider's "
        "current conditions at issue."
    ),
    columns=(
        Column("location_id", pl.String(), "Location: the DMA id it stands for.", nullable=False, identifier=True),
        Column("issued_at", UTC_TIME, "Hour the forecast was fetched (issued), UTC.", nullable=False),
        Column("valid_at", UTC_TIME, "Start of the hour forecast, UTC.", nullable=False),
        Column("provider", pl.String(), "Who forecast it: owm.", nullable=False),
        *_measures(),
    ),
    key=("location_id", "issued_at", "valid_at", "provider"),
    time_column="issued_at",
)

TABLES = (OBSERVATIONS, FORECASTS)

OBSERVATIONS_KEY = dg.AssetKey(["weather", "observations"])
FORECASTS_KEY = dg.AssetKey(["weather", "forecasts"])
