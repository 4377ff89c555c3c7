"""Fleet telemetry as the Dagster side reads it: truck fixes out of the collector's published windows, and
the plants' geofences that turn fixes into trips.

The collector spools each truck fix as one ``fleet`` point per field (``collector.points.FLEET_FIELDS``) in
the same receive windows as the SCADA points. ``read_fixes`` reads the windows that can hold a span's
fixes through the hand-off contract (``resources.scada_manifest``, checksums verified) and puts each
received message back together: one row per truck, fix time and receipt. It never acknowledges a window:
the SCADA window job is the windows' one consumer, and reading a window works whether it is still sealed
or already archived.

Geofences: the plants' coordinates come from the ERP's plant master once it is in the lake
(``raw.erp_plants``: ``plant_id``, ``plant_kind``, ``latitude_deg``, ``longitude_deg``), else from the validated YAML
``resources/fleet_geofences.yaml`` (or the file ``IHUB_FLEET_GEOFENCES`` names); the radius always comes
from the file (a default, and per plant where a plant needs its own).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import dagster as dg
import polars as pl
from pydantic import BaseModel, ConfigDict, Field, model_validator

from collector.points import FLEET_FIELDS, FLEET_SOURCE
from resources.lake import Column, Lake, LakeTable
from resources.yaml_files import load_model

if TYPE_CHECKING:
    from resources.scada_spool import ScadaWindows

SHIPPED_GEOFENCES = Path(__file__).with_name("fleet_geofences.yaml")

# The ERP's plant master (contracts/erp.py PLANTS), as far as the fleet needs it. Declared here because
# resources sit below contracts; tests/assets/test_fleet_assets.py writes it through the ERP's own contract,
# so the two cannot drift apart unnoticed.
ERP_PLANTS = LakeTable(
    layer="raw",
    name="erp_plants",
    description="The ERP's plants (only the columns the fleet reads).",
    columns=(
        Column("plant_id", pl.String(), "ERP plant id.", nullable=False),
        Column("plant_kind", pl.String(), "IU, GU or HUB."),
        Column("latitude_deg", pl.Float64(), "WGS 84 degrees."),
        Column("longitude_deg", pl.Float64(), "WGS 84 degrees."),
    ),
)


def default_geofences_path() -> Path:
    """``IHUB_FLEET_GEOFENCES``, else the shipped ``resources/fleet_geofences.yaml``."""
    return Path(os.environ.get("IHUB_FLEET_GEOFENCES", SHIPPED_GEOFENCES))


# ---------------------------------------------------------------------------------------- geofences


class PlantFence(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    plant_id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: Literal["IU", "GU", "HUB"]
    name: str = ""
    latitude: float = Field(ge=-90, le=90, description="WGS 84 degrees")
    longitude: float = Field(ge=-180, le=180, description="WGS 84 degrees")
    radius_km: float | None = Field(default=None, gt=0, le=50, description="this plant's own radius")


class GeofenceFile(BaseModel):
    """``resources/fleet_geofences.yaml``: a default radius and the plants."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    radius_km: float = Field(default=2.0, gt=0, le=50, description="geofence radius around a plant, km")
    plants: list[PlantFence] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> GeofenceFile:
        seen: set[str] = set()
        for fence in self.plants:
            if fence.plant_id in seen:
                raise ValueError(f"plant {fence.plant_id} is listed twice")
            seen.add(fence.plant_id)
        return self


def load_geofences(path: str | os.PathLike[str] | None = None) -> GeofenceFile:
    """The geofence file, validated; ``ConfigError`` names the file, line and field of every problem."""
    return load_model(path or default_geofences_path(), GeofenceFile)


@dataclass(frozen=True)
class Geofences:
    """The plants' geofences a derivation used, and where their coordinates came from."""

    frame: pl.DataFrame  # plant_id, kind, latitude, longitude, radius_km
    source: str  # "raw.erp_plants" or the geofence file's path


# ---------------------------------------------------------------------------------------- the resource


class FleetSettings(dg.ConfigurableResource):
    """How fleet telemetry becomes positions and trips: geofences, the teleport limit, what counts as unloaded."""

    geofences_file: str = Field(
        default_factory=lambda: str(default_geofences_path()),
        description="YAML of plant geofences (IHUB_FLEET_GEOFENCES; default resources/fleet_geofences.yaml)",
    )
    teleport_speed_kmh: float = Field(
        default=150.0, gt=0, description="a fix implying a faster move from the previous good fix is a GPS jump, km/h"
    )
    unloaded_below_t: float = Field(default=5.0, gt=0, description="a truck carrying less is unloaded, tonnes")
    late_hours: int = Field(
        default=6,
        ge=0,
        description="hours after a day's end during which fixes of that day still arrive (units buffering "
        "through a coverage gap): the receive windows read for a day",
    )

    def geofences(self, lake: Lake) -> Geofences:
        """The ERP's plants (``raw.erp_plants``) if the lake holds them, else the file's; radii from the file."""
        fences = load_geofences(self.geofences_file)
        radius = {fence.plant_id: fence.radius_km or fences.radius_km for fence in fences.plants}
        if lake.files(ERP_PLANTS):
            try:
                plants = lake.read(ERP_PLANTS).rename(
                    {"plant_kind": "kind", "latitude_deg": "latitude", "longitude_deg": "longitude"}
                )
            except (ValueError, pl.exceptions.PolarsError) as error:
                raise ValueError(
                    "raw.erp_plants is in the lake but cannot be read as plant_id, plant_kind, latitude_deg, "
                    f"longitude_deg: {error}"
                ) from error
            plants = plants.filter(pl.col("latitude").is_not_null() & pl.col("longitude").is_not_null()).unique(
                "plant_id", keep="last", maintain_order=True
            )
            if plants.height:
                frame = plants.with_columns(
                    radius_km=pl.col("plant_id").replace_strict(
                        radius, default=fences.radius_km, return_dtype=pl.Float64
                    )
                )
                return Geofences(frame.sort("plant_id"), "raw.erp_plants")
        frame = pl.DataFrame(
            {
                "plant_id": [f.plant_id for f in fences.plants],
                "kind": [f.kind for f in fences.plants],
                "latitude": [f.latitude for f in fences.plants],
                "longitude": [f.longitude for f in fences.plants],
                "radius_km": [radius[f.plant_id] for f in fences.plants],
            }
        )
        return Geofences(frame.sort("plant_id"), str(self.geofences_file))


# ---------------------------------------------------------------------------------------- the spool


@dataclass(frozen=True)
class Fixes:
    """The fixes received in a span's receive windows, one dict per received message, and what was read."""

    rows: list[dict]
    windows: list[str]
    points: int  # fleet points read (a fix is several)


def read_fixes(windows: ScadaWindows, start: datetime, end: datetime, late: timedelta) -> Fixes:
    """Every fleet fix received in the receive windows of ``[start, end + late)``, whatever its own time.

    One row per received message: ``truck_id``, ``ts`` and ``received_at`` (ISO 8601 UTC), ``broker`` and
    the fields it carried (absent ones None). A message redelivered by the broker, or resent by the unit,
    is two rows with the same truck and time: the load rejects the second as a duplicate, with the reason.
    """
    names: list[str] = []
    rows: dict[tuple[str, str, int, int], dict] = {}
    points = 0
    cursor, stop = start, end + late
    while cursor < stop:
        # A day at a time: the contract probes each minute's name instead of listing an archive of years.
        chunk = min(cursor + timedelta(days=1), stop)
        for manifest in windows.available(cursor, chunk):
            _, received = windows.read(manifest.window)
            names.append(manifest.window)
            for point in received:
                if point.source != FLEET_SOURCE or point.sensor_type not in FLEET_FIELDS:
                    continue
                points += 1
                key = (point.device, point.unit_id, point.source_ts_us, point.received_ts_us)
                row = rows.get(key)
                if row is None:
                    row = rows[key] = {
                        "truck_id": point.unit_id,
                        "ts": _iso(point.source_ts_us),
                        "received_at": _iso(point.received_ts_us),
                        "broker": point.device,
                        **dict.fromkeys(FLEET_FIELDS),
                        "_ts_us": point.source_ts_us,
                    }
                row[point.sensor_type] = point.value
        cursor = chunk
    return Fixes(rows=list(rows.values()), windows=names, points=points)


def _iso(micros: int) -> str:
    return datetime.fromtimestamp(micros / 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
