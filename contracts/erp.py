"""The ERP data contract: the clinker network's plants, routes, demand, inventory, capacity and shutdowns.

The tables the supply-planning model reads directly. Quantities are tonnes (``_t``), money Indian rupees
(``_inr``, ``_inr_per_t``), distances km; times are UTC; decimals are exact (``Decimal``), as the ERP keeps
them. Plant ids are the ERP's (``IU01``, ``GU03``, ``HUB01``), shared by every table, and checked against
``erp_plants`` (``quality/erp.py``).

Each OData-fed table also says which property of the entity set each column comes from and how its value
is decoded (``ODataField``), and which unit fields the rows must carry (``BaseUnit`` ``TO`` = tonnes,
``Currency`` ``INR``): a row in other units is rejected, never converted by guess.
"""

from __future__ import annotations

from dataclasses import dataclass

import dagster as dg
import polars as pl

from resources.lake import Column, LakeTable

UTC_TIME = pl.Datetime("us", "UTC")
TONNES = pl.Decimal(14, 3)
RUPEES = pl.Decimal(14, 2)
PLANT_KINDS = ("IU", "GU", "HUB")
ROUTE_MODES = ("ROAD", "RAIL", "SEA")


def _changed_at(what: str) -> Column:
    return Column("changed_at", UTC_TIME, f"When the ERP last changed {what}, UTC.", nullable=False)


PLANTS = LakeTable(
    layer="raw",
    name="erp_plants",
    description=(
        "Every plant of the clinker network as the ERP's master data holds it: kind (IU integrated unit making "
        "clinker, GU grinding unit, HUB hub), location, clinker capacity and production cost (IUs), and stock "
        "bounds in tonnes."
    ),
    columns=(
        Column("plant_id", pl.String(), "ERP plant code, e.g. IU01.", nullable=False, identifier=True),
        Column("plant_kind", pl.String(), "IU (integrated unit), GU (grinding unit) or HUB.", nullable=False),
        Column("name", pl.String(), "Plant name."),
        Column("city", pl.String(), "City the plant is in."),
        Column("latitude_deg", pl.Float64(), "Latitude, WGS 84 degrees."),
        Column("longitude_deg", pl.Float64(), "Longitude, WGS 84 degrees."),
        Column(
            "clinker_capacity_t_per_month",
            TONNES,
            "Nameplate clinker capacity, tonnes per month (IU only; else empty).",
        ),
        Column("production_cost_inr_per_t", RUPEES, "Cost of making a tonne of clinker, INR/t (IU only)."),
        Column(
            "opening_stock_t", TONNES, "Clinker stock at the start of the planning horizon, tonnes.", nullable=False
        ),
        Column("safety_stock_t", TONNES, "Stock the plan must not go below, tonnes.", nullable=False),
        Column("max_stock_t", TONNES, "Storage capacity (silos, yard), tonnes.", nullable=False),
        _changed_at("the plant's master data"),
    ),
    key=("plant_id",),
)

ROUTES = LakeTable(
    layer="raw",
    name="erp_routes",
    description=(
        "Every route clinker can take from an integrated unit to another plant, by mode (ROAD, RAIL): distance, "
        "freight and handling cost per tonne, vehicle capacity (a truck 25–35 t, a rake about 3,800 t), fixed "
        "cost per trip and the minimum batch a route takes when it is used."
    ),
    columns=(
        Column("route_id", pl.String(), "ERP route code: origin-destination-mode.", nullable=False, identifier=True),
        Column("origin_plant_id", pl.String(), "Plant the clinker leaves (an IU).", nullable=False, identifier=True),
        Column("destination_plant_id", pl.String(), "Plant it arrives at.", nullable=False, identifier=True),
        Column("mode", pl.String(), "ROAD, RAIL or SEA.", nullable=False),
        Column("distance_km", pl.Decimal(8, 1), "Distance along the mode's way, km."),
        Column("freight_cost_inr_per_t", RUPEES, "Freight cost, INR per tonne carried.", nullable=False),
        Column("handling_cost_inr_per_t", RUPEES, "Loading and unloading cost, INR per tonne.", nullable=False),
        Column("vehicle_capacity_t", TONNES, "Load of one truck or rake, tonnes.", nullable=False),
        Column("cost_per_trip_inr", RUPEES, "Fixed cost of one trip (tolls, crew, rake hire), INR.", nullable=False),
        Column(
            "min_batch_t", TONNES, "Least tonnage per period when the route is used at all, tonnes.", nullable=False
        ),
        _changed_at("the route"),
    ),
    key=("route_id",),
)

DEMAND_FORECASTS = LakeTable(
    layer="raw",
    name="erp_demand_forecasts",
    description=(
        "Every revision of the monthly clinker demand forecast of each grinding unit and hub, filed by the day "
        "it was made. The forecast in force for a month is its highest revision changed by the planning date."
    ),
    columns=(
        Column("plant_id", pl.String(), "Plant whose demand this is (a GU or HUB).", nullable=False, identifier=True),
        Column("period_start", pl.Date(), "First day of the month forecast.", nullable=False),
        Column("revision", pl.Int64(), "Revision number, 1 for the first forecast of the month.", nullable=False),
        Column("demand_t", TONNES, "Clinker demand in the month, tonnes.", nullable=False),
        _changed_at("the forecast (the revision's time)"),
    ),
    key=("plant_id", "period_start", "revision"),
    time_column="changed_at",
)

INVENTORY = LakeTable(
    layer="raw",
    name="erp_inventory",
    description="Clinker stock of every plant at 00:00 UTC of each day, in tonnes, as the ERP posted it.",
    columns=(
        Column("plant_id", pl.String(), "Plant holding the stock.", nullable=False, identifier=True),
        Column("stock_date", pl.Date(), "Day of the stock (taken at 00:00 UTC).", nullable=False),
        Column("stock_t", TONNES, "Clinker on hand, tonnes.", nullable=False),
        _changed_at("the stock figure (its posting)"),
    ),
    key=("plant_id", "stock_date"),
    time_column="stock_date",
)

PRODUCTION_CAPACITY = LakeTable(
    layer="raw",
    name="erp_production_capacity",
    description=(
        "Clinker production capacity of each integrated unit per month, tonnes, from the ERP's planning "
        "database: the kiln's month less planned and known stops. Every version is kept, filed by the day it "
        "changed; the one in force is the latest changed_at per plant and month."
    ),
    columns=(
        Column("plant_id", pl.String(), "Integrated unit (IU).", nullable=False, identifier=True),
        Column("period_start", pl.Date(), "First day of the month.", nullable=False),
        Column("capacity_t", TONNES, "Clinker the unit can make in the month, tonnes.", nullable=False),
        _changed_at("the capacity row"),
    ),
    key=("plant_id", "period_start", "changed_at"),
    time_column="changed_at",
)

MAINTENANCE_SHUTDOWNS = LakeTable(
    layer="raw",
    name="erp_maintenance_shutdowns",
    description=(
        "Kiln shutdowns of the integrated units (planned relining, breakdowns), start and end in UTC, from the "
        "ERP's planning database, filed by the day the row changed."
    ),
    columns=(
        Column("plant_id", pl.String(), "Integrated unit (IU).", nullable=False, identifier=True),
        Column("starts_at", UTC_TIME, "Kiln stopped from, UTC.", nullable=False),
        Column("ends_at", UTC_TIME, "Kiln back in production at, UTC.", nullable=False),
        Column("reason", pl.String(), "Why the kiln stops.", nullable=False),
        _changed_at("the shutdown row"),
    ),
    key=("plant_id", "starts_at", "changed_at"),
    time_column="changed_at",
)

TABLES = (PLANTS, ROUTES, DEMAND_FORECASTS, INVENTORY, PRODUCTION_CAPACITY, MAINTENANCE_SHUTDOWNS)


@dataclass(frozen=True)
class ODataField:
    """Where a lake column comes from in an OData entity: the property and how its value is decoded
    (``text``: as sent, decimals included; ``datetime``: ``/Date(ms)/`` to UTC; ``date``: to a day)."""

    column: str
    prop: str
    decode: str = "text"


@dataclass(frozen=True)
class ODataMapping:
    entity_set: str
    fields: tuple[ODataField, ...]
    units: tuple[tuple[str, str], ...]  # (property, required value)


ODATA = {
    PLANTS.name: ODataMapping(
        "PlantSet",
        (
            ODataField("plant_id", "Plant"),
            ODataField("plant_kind", "PlantType"),
            ODataField("name", "Name"),
            ODataField("city", "City"),
            ODataField("latitude_deg", "Latitude"),
            ODataField("longitude_deg", "Longitude"),
            ODataField("clinker_capacity_t_per_month", "ClinkerCapacity"),
            ODataField("production_cost_inr_per_t", "ProductionCost"),
            ODataField("opening_stock_t", "OpeningStock"),
            ODataField("safety_stock_t", "SafetyStock"),
            ODataField("max_stock_t", "MaxStock"),
            ODataField("changed_at", "ChangedAt", "datetime"),
        ),
        (("BaseUnit", "TO"), ("Currency", "INR")),
    ),
    ROUTES.name: ODataMapping(
        "RouteSet",
        (
            ODataField("route_id", "RouteId"),
            ODataField("origin_plant_id", "Origin"),
            ODataField("destination_plant_id", "Destination"),
            ODataField("mode", "Mode"),
            ODataField("distance_km", "DistanceKm"),
            ODataField("freight_cost_inr_per_t", "FreightCost"),
            ODataField("handling_cost_inr_per_t", "HandlingCost"),
            ODataField("vehicle_capacity_t", "VehicleCapacity"),
            ODataField("cost_per_trip_inr", "CostPerTrip"),
            ODataField("min_batch_t", "MinBatch"),
            ODataField("changed_at", "ChangedAt", "datetime"),
        ),
        (("BaseUnit", "TO"), ("Currency", "INR")),
    ),
    DEMAND_FORECASTS.name: ODataMapping(
        "DemandForecastSet",
        (
            ODataField("plant_id", "Plant"),
            ODataField("period_start", "PeriodStart", "date"),
            ODataField("revision", "Revision"),
            ODataField("demand_t", "Demand"),
            ODataField("changed_at", "ChangedAt", "datetime"),
        ),
        (("BaseUnit", "TO"),),
    ),
    INVENTORY.name: ODataMapping(
        "InventorySet",
        (
            ODataField("plant_id", "Plant"),
            ODataField("stock_date", "StockDate", "date"),
            ODataField("stock_t", "Stock"),
            ODataField("changed_at", "ChangedAt", "datetime"),
        ),
        (("BaseUnit", "TO"),),
    ),
}

PLANTS_KEY = dg.AssetKey(["erp", "plants"])
ROUTES_KEY = dg.AssetKey(["erp", "routes"])
DEMAND_FORECASTS_KEY = dg.AssetKey(["erp", "demand_forecasts"])
INVENTORY_KEY = dg.AssetKey(["erp", "inventory"])
PRODUCTION_CAPACITY_KEY = dg.AssetKey(["erp", "production_capacity"])
MAINTENANCE_SHUTDOWNS_KEY = dg.AssetKey(["erp", "maintenance_shutdowns"])
