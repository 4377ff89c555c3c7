"""Weather at every DMA: met-office observations and OWM forecasts, landed raw in °C.

Locations are the DMAs of ``raw.dmama_dmas`` (their latitude and longitude), so a location id is a DMA
id. The client (``resources/weather.py``) fetches; this module flattens each provider's shape into the
contract's columns, converts Kelvin to °C, sets the met feed's -999 hours aside as rejects with their
reason, and writes through the lake. Rows are never dropped: ``rows_received = rows_written +
rows_rejected`` for every materialization.
"""

from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg
import polars as pl

from assets import source_assets as common
from assets.partitions import hourly
from contracts.dmama import DMAS, DMAS_KEY
from contracts.gis import DMA_NETWORK as GIS_DMA_NETWORK
from contracts.weather import FORECASTS, FORECASTS_KEY, OBSERVATIONS
from quality.conform import Conformed, conform, rejects_table
from resources.lake import Lake, LakeTable, time_windows
from resources.weather import WeatherClient

SOURCE = "weather"
SENTINEL = -999
KELVIN = 273.15
# Beyond this the two providers disagree about the same hour, and the materialization says so.
DISAGREEMENT_TOLERANCE_C = 2.0
_MET_FIELDS = {
    "air_temp_c": "temperature_c",
    "rh_pct": "humidity_pct",
    "rain_mm": "rainfall_mm",
    "wind_ms": "wind_speed_ms",
}


def _common(table: LakeTable) -> dict:
    # Both land every hour; two hours without a materialization means the source or the schedule stopped.
    return {
        **common.source_asset(SOURCE, table, owner="team:network", fresh_within=timedelta(hours=2)),
        "partitions_def": hourly,
        "kinds": {"http", "parquet"},
    }


@dg.asset(name="forecasts", deps=[DMAS_KEY], **_common(FORECASTS))
def forecasts(context: dg.AssetExecutionContext, weather: WeatherClient, lake: Lake) -> dg.MaterializeResult:
    """OWM's hourly forecast for the next 7 days at every DMA, one file per issue hour, with OWM's
    current conditions as the row valid at the issue hour. A forecast can only be fetched as issued
    now: a run for a past issue hour fails and leaves that hour's file untouched."""
    window = context.partition_time_window
    rows: list[dict[str, Any]] = []
    for location_id, lat, lon in _locations(context, lake):

        def fetch(lat: float = lat, lon: float = lon) -> tuple[dict, list[dict]]:
            return weather.owm_current(lat, lon), weather.owm_forecast(lat, lon)

        current, items = common.fetch(context, SOURCE, f"OWM forecast for {location_id}", fetch)
        issued = _hour_iso(current.get("dt"))
        rows.extend(_owm_row(location_id, issued, item) for item in [current, *items])
        when = _parse(issued)
        if when is None or not window.start <= when < window.end:
            raise dg.Failure(
                description=(
                    f"weather/forecasts for partition {common.partition_label(context)}: OWM issues its forecast "
                    "for now "
                    f"({issued}), outside this partition; a past issue cannot be fetched again, so the "
                    "partition is left as it was."
                )
            )
    windows = time_windows(hourly, window.start, window.end)
    loaded = conform(rows, FORECASTS, source=SOURCE, partition_key=common.partition_label(context), partitions=windows)
    written = lake.replace_partitions(FORECASTS, loaded.frame, windows)
    lake.replace_partitions(rejects_table(FORECASTS), loaded.rejects, windows)
    frame = written.frame
    return dg.MaterializeResult(
        metadata={
            **common.reconciliation(loaded),
            "locations": written.distinct("location_id"),
            "issued_at": ", ".join(sorted({f"{t:%Y-%m-%dT%H:%M}Z" for t in frame["issued_at"]})) or "none",
            "last_valid_at": f"{frame['valid_at'].max():%Y-%m-%dT%H:%M}Z" if frame.height else "none",
            **_reject_reasons(loaded.rejects),
        }
    )


@dg.asset(
    name="observations",
    deps=[DMAS_KEY, FORECASTS_KEY],
    backfill_policy=dg.BackfillPolicy.single_run(),
    **_common(OBSERVATIONS),
)
def observations(context: dg.AssetExecutionContext, weather: WeatherClient, lake: Lake) -> dg.MaterializeResult:
    """Hourly temperature (°C), humidity, rainfall and wind observed by the national met office at every
    DMA, one file per hour. Hours the feed marks -999 (missing) are rejects with that reason, never
    zeros. Compares each hour with OWM's current conditions for it (from weather/forecasts) and reports
    disagreement beyond 2 °C instead of averaging it away."""
    window = context.partition_time_window
    rows: list[dict[str, Any]] = []
    for location_id, lat, lon in _locations(context, lake):
        sent = common.fetch(
            context,
            SOURCE,
            f"met observations for {location_id}",
            lambda lat=lat, lon=lon: weather.met_observations(lat, lon, window.start, window.end),
        )
        rows.extend({"location_id": location_id, "provider": "met", **_met_row(row)} for row in sent)
    windows = time_windows(hourly, window.start, window.end)
    label = common.partition_label(context)
    loaded = _conform_without_sentinels(rows, OBSERVATIONS, label, windows)
    written = lake.replace_partitions(OBSERVATIONS, loaded.frame, windows)
    lake.replace_partitions(rejects_table(OBSERVATIONS), loaded.rejects, windows)
    disagreement = _disagreement(written.frame, lake.read(FORECASTS, window.start, window.end))
    if disagreement["provider_disagreements"]:
        context.log.warning(
            f"weather: met and OWM disagree by more than {DISAGREEMENT_TOLERANCE_C} °C for "
            f"{disagreement['provider_disagreements']} location-hours"
        )
    frame = written.frame
    return dg.MaterializeResult(
        metadata={
            **common.reconciliation(loaded),
            "locations": written.distinct("location_id"),
            "mean_temperature_c": round(float(frame["temperature_c"].mean()), 2) if frame.height else "none",
            **_reject_reasons(loaded.rejects),
            **disagreement,
        }
    )


# ---------------------------------------------------------------------------------------------- helpers


def _locations(context: dg.AssetExecutionContext, lake: Lake) -> list[tuple[str, float, float]]:
    """(location_id, latitude, longitude) for every DMA: the centroid of its GIS boundary (the latest weekly
    snapshot of marts.gis_dma_network) when the map has the DMA, else DMAMA's coordinates; fails if none."""
    dmas = (
        lake.read(DMAS)
        .filter(pl.col("latitude").is_not_null() & pl.col("longitude").is_not_null())
        .select("dma_id", "latitude", "longitude")
    )
    network = lake.read(GIS_DMA_NETWORK)
    if network.height:
        centroids = network.filter(pl.col("snapshot_week") == pl.col("snapshot_week").max()).select(
            "dma_id", latitude="centroid_latitude", longitude="centroid_longitude"
        )
        dmas = pl.concat([centroids, dmas.join(centroids, on="dma_id", how="anti")]).sort("dma_id")
    if dmas.height == 0:
        raise dg.Failure(
            description=(
                f"weather for partition {common.partition_label(context)}: no DMA with a location in "
                f"{DMAS.layer}.{DMAS.name} or {GIS_DMA_NETWORK.layer}.{GIS_DMA_NETWORK.name}; materialize "
                "dmama/dmas (or the GIS map) first."
            )
        )
    return list(dmas.iter_rows())


def _owm_row(location_id: str, issued: Any, item: Any) -> dict[str, Any]:
    """One OWM item (current or forecast) as a contract row, Kelvin converted to °C."""
    item = item if isinstance(item, dict) else {}
    main = item.get("main") if isinstance(item.get("main"), dict) else {}
    rain = item.get("rain") if isinstance(item.get("rain"), dict) else {}
    wind = item.get("wind") if isinstance(item.get("wind"), dict) else {}
    return {
        "location_id": location_id,
        "issued_at": issued,
        "valid_at": _hour_iso(item.get("dt")),
        "provider": "owm",
        "temperature_c": _kelvin_to_c(main.get("temp")),
        "humidity_pct": main.get("humidity"),
        "rainfall_mm": rain.get("1h", 0.0),  # OWM leaves "rain" out of dry hours
        "wind_speed_ms": wind.get("speed"),
    }


def _kelvin_to_c(value: Any) -> Any:
    """°C from Kelvin; anything not a number goes through as sent, so conform rejects it with its reason."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return round(value - KELVIN, 2)
    return value


def _met_row(row: Any) -> dict[str, Any]:
    row = row if isinstance(row, dict) else {}
    return {"observed_at": row.get("obs_time"), **{ours: row.get(theirs) for theirs, ours in _MET_FIELDS.items()}}


def _hour_iso(unix_s: Any) -> Any:
    """An OWM ``dt`` (unix seconds) as the ISO start of its UTC hour; anything else as sent."""
    if isinstance(unix_s, (int, float)) and not isinstance(unix_s, bool):
        return datetime.fromtimestamp(int(unix_s) // 3600 * 3600, UTC).isoformat()
    return unix_s


def _conform_without_sentinels(
    rows: list[dict[str, Any]], table: LakeTable, label: str, windows: list[dg.TimeWindow]
) -> Conformed:
    """Conform the rows; rows carrying the -999 sentinel become rejects naming the field and the sentinel."""
    sentinel: dict[int, str] = {}
    for index, row in enumerate(rows):
        fields = _sentinel_fields(row)
        if fields:
            sentinel[index] = fields[0]
    kept = [i for i in range(len(rows)) if i not in sentinel]
    loaded = conform([rows[i] for i in kept], table, source=SOURCE, partition_key=label, partitions=windows)
    # conform numbered the rows it saw; number its rejects by their place in what the source sent.
    renumbered = loaded.rejects.with_columns(
        pl.col("row_number").replace_strict(dict(enumerate(kept)), return_dtype=pl.Int64)
    )
    flagged = pl.DataFrame(
        {
            "source": [SOURCE] * len(sentinel),
            "table_name": [table.name] * len(sentinel),
            "partition_key": [label] * len(sentinel),
            "row_number": list(sentinel),
            "field": [sentinel[i] for i in sentinel],
            "reason": [
                f"missing hour: the met feed sent the sentinel {SENTINEL} for {', '.join(_sentinel_fields(rows[i]))}"
                for i in sentinel
            ],
            "raw_payload": [_json(rows[i]) for i in sentinel],
            "partition_start": [_filed_under(rows[i].get(table.time_column), windows) for i in sentinel],
        },
        schema=rejects_table(table).schema,
    )
    rejects = pl.concat([renumbered, flagged]).sort("row_number")
    return Conformed(frame=loaded.frame, rejects=rejects, received=len(rows))


def _sentinel_fields(row: dict[str, Any]) -> list[str]:
    return [ours for ours in _MET_FIELDS.values() if row.get(ours) == SENTINEL]


def _parse(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def _filed_under(value: Any, windows: list[dg.TimeWindow]) -> datetime | None:
    """Start of the partition holding the row's own hour, else of the first partition loaded."""
    when = _parse(value)
    for window in windows:
        if when is not None and window.start <= when < window.end:
            return window.start
    return windows[0].start if windows else None


def _json(row: dict[str, Any]) -> str:
    import json

    return json.dumps(row, default=str, sort_keys=True)


def _disagreement(met: pl.DataFrame, forecasts: pl.DataFrame) -> dict[str, Any]:
    """Met observations against OWM's current conditions for the same location and hour."""
    current = forecasts.filter(pl.col("valid_at") == pl.col("issued_at")).select(
        "location_id", pl.col("valid_at").alias("observed_at"), pl.col("temperature_c").alias("owm_temperature_c")
    )
    pairs = met.join(current, on=["location_id", "observed_at"], how="inner").with_columns(
        (pl.col("owm_temperature_c") - pl.col("temperature_c")).round(2).alias("delta_c")
    )
    beyond = pairs.filter(pl.col("delta_c").abs() > DISAGREEMENT_TOLERANCE_C).sort("location_id", "observed_at")
    result: dict[str, Any] = {
        "provider_pairs_compared": pairs.height,
        "provider_disagreements": beyond.height,
        "disagreement_tolerance_c": DISAGREEMENT_TOLERANCE_C,
        "max_abs_delta_c": float(pairs["delta_c"].abs().max()) if pairs.height else 0.0,
    }
    if beyond.height:
        result["disagreeing"] = dg.MetadataValue.json(
            [
                {"location_id": loc, "hour": f"{at:%Y-%m-%dT%H:%M}Z", "met_c": met_c, "owm_c": owm_c, "delta_c": d}
                for loc, at, met_c, owm_c, d in beyond.select(
                    "location_id", "observed_at", "temperature_c", "owm_temperature_c", "delta_c"
                ).iter_rows()
            ][:50]
        )
    return result


def _reject_reasons(rejects: pl.DataFrame) -> dict[str, Any]:
    if rejects.height == 0:
        return {}
    counts = rejects.group_by("field").len().sort("field")
    return {"rejects_by_field": {str(f): int(n) for f, n in counts.iter_rows()}}
