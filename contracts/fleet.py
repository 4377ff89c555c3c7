"""The fleet data contract: truck positions as the trucks reported them, and the trips derived from them.

Positions come from the trucks' telematics units over MQTT, through the SCADA collector's spool
(``collector.points.FLEET_FIELDS``); trips are derived from positions and the plants' geofences
(``assets/fleet.py``). Coordinates are WGS 84 degrees (EPSG:4326), as GPS reports them.
"""

import dagster as dg
import polars as pl

from resources.lake import Column, LakeTable

UTC_TIME = pl.Datetime("us", "UTC")

POSITIONS = LakeTable(
    layer="raw",
    name="fleet_positions",
    description=(
        "Every GPS fix of every truck, one row per truck and fix time (UTC), with speed, load and fuel as "
        "its telematics unit reported them; duplicates and GPS jumps (teleports) are in rejects.fleet_positions."
    ),
    columns=(
        Column("truck_id", pl.String(), "Truck, as its telematics unit names itself.", nullable=False, identifier=True),
        Column("ts", UTC_TIME, "When the fix was taken, UTC.", nullable=False),
        Column("lat", pl.Float64(), "Latitude, WGS 84 degrees (EPSG:4326).", nullable=False),
        Column("lon", pl.Float64(), "Longitude, WGS 84 degrees (EPSG:4326).", nullable=False),
        Column("speed_kmh", pl.Float64(), "Ground speed, km/h."),
        Column("load_t", pl.Float64(), "Payload on the truck's load cells, tonnes."),
        Column("fuel_pct", pl.Float64(), "Fuel in the tank, % of its capacity."),
        Column("received_at", UTC_TIME, "When the collector received the fix, UTC.", nullable=False),
        Column("broker", pl.String(), "MQTT broker (collector configuration name) the fix came through."),
    ),
    key=("truck_id", "ts"),
    time_column="ts",
)

TRIPS = LakeTable(
    layer="raw",
    name="fleet_trips",
    description=(
        "Deliveries: a truck leaving a plant's geofence loaded and unloading inside another plant's geofence, "
        "filed under the UTC day it arrived."
    ),
    columns=(
        Column("truck_id", pl.String(), "Truck that drove the trip.", nullable=False, identifier=True),
        Column("origin_plant_id", pl.String(), "Plant it left loaded (ERP plant id).", nullable=False),
        Column("destination_plant_id", pl.String(), "Plant it unloaded at (ERP plant id).", nullable=False),
        Column("departed_at", UTC_TIME, "Last fix inside the origin's geofence, UTC.", nullable=False),
        Column("arrived_at", UTC_TIME, "First fix inside the destination's geofence, UTC.", nullable=False),
        Column(
            "load_t", pl.Float64(), "Payload carried, tonnes (median of the load cells on the road).", nullable=False
        ),
        Column("distance_km", pl.Float64(), "Distance driven between the two fixes, km (along the GPS track)."),
        Column("duration_h", pl.Float64(), "Hours between departure and arrival."),
        Column("fixes", pl.Int64(), "GPS fixes between departure and arrival, both included."),
    ),
    key=("truck_id", "departed_at"),
    time_column="arrived_at",
)

TABLES = (POSITIONS, TRIPS)

POSITIONS_KEY = dg.AssetKey(["fleet", "positions"])
TRIPS_KEY = dg.AssetKey(["fleet", "trips"])
