"""The DMAMA data contract: the tables it lands, their columns, keys and asset keys.

One declaration per table types incoming rows (``quality/conform.py``), writes the lake files, documents
the asset in the Dagster UI and comments the analyst catalog. Assets and checks both import it from here,
so ``quality/`` never imports ``assets/``.
"""

import dagster as dg
import polars as pl

from resources.lake import Column, LakeTable

UTC_TIME = pl.Datetime("us", "UTC")

DMAS = LakeTable(
    layer="raw",
    name="dmama_dmas",
    description="District metered areas as DMAMA describes them today: size, network length, pressure target.",
    columns=(
        Column("dma_id", pl.String(), "DMAMA identifier of the district metered area.", nullable=False),
        Column("name", pl.String(), "Name of the DMA."),
        Column("zone", pl.String(), "Supply zone the DMA belongs to."),
        Column("connections", pl.Int64(), "Number of service connections (customers) in the DMA."),
        Column("mains_length_km", pl.Float64(), "Length of mains in the DMA, km (for UARL and ILI)."),
        Column("target_pressure_bar", pl.Float64(), "Pressure the DMA is managed to, bar."),
        Column("inflow_meter_ids", pl.List(pl.String()), "Meters that measure the DMA's system input volume."),
        Column("latitude", pl.Float64(), "Latitude of the DMA centre, EPSG:4326."),
        Column("longitude", pl.Float64(), "Longitude of the DMA centre, EPSG:4326."),
        Column("commissioned_on", pl.Date(), "Date the DMA boundary was closed and metered."),
    ),
    key=("dma_id",),
)

METERS = LakeTable(
    layer="raw",
    name="dmama_meters",
    description="Customer and inflow meters of every DMA, as DMAMA lists them today.",
    columns=(
        Column("meter_id", pl.String(), "DMAMA identifier of the meter.", nullable=False),
        Column("dma_id", pl.String(), "DMA the meter belongs to.", nullable=False),
        Column("kind", pl.String(), "customer (billing) or inflow (measures DMA input)."),
        Column("customer_class", pl.String(), "residential, commercial or industrial; empty for inflow meters."),
        Column("register_digits", pl.Int64(), "Digits of the register; it rolls over at 10^digits m³."),
        Column("installed_on", pl.Date(), "Date the meter was installed."),
    ),
    key=("meter_id",),
)

FLOW_READINGS = LakeTable(
    layer="raw",
    name="dmama_flow_readings",
    description="Flow and pressure of each DMA's inflow every 15 minutes, as DMAMA reported them.",
    columns=(
        Column("dma_id", pl.String(), "DMA the reading is for.", nullable=False),
        Column("timestamp", UTC_TIME, "Start of the 15-minute interval, UTC.", nullable=False),
        Column("flow_m3h", pl.Float64(), "Mean inflow over the interval, m³/h.", nullable=False),
        Column("pressure_bar", pl.Float64(), "Mean pressure at the DMA inlet over the interval, bar."),
    ),
    key=("dma_id", "timestamp"),
    time_column="timestamp",
)

METER_READINGS = LakeTable(
    layer="raw",
    name="dmama_meter_readings",
    description="Hourly register (index) readings of every meter, m³, as DMAMA reported them.",
    columns=(
        Column("meter_id", pl.String(), "Meter the reading is for.", nullable=False),
        Column("timestamp", UTC_TIME, "Time of the reading, UTC.", nullable=False),
        Column(
            "register_m3",
            pl.Float64(),
            "Register value, m³; rolls over at 10^register_digits.",
            nullable=False,
        ),
    ),
    key=("meter_id", "timestamp"),
    time_column="timestamp",
)

TABLES = (DMAS, METERS, FLOW_READINGS, METER_READINGS)


FLOW_READINGS_KEY = dg.AssetKey(["dmama", "flow_readings"])
METER_READINGS_KEY = dg.AssetKey(["dmama", "meter_readings"])
DMAS_KEY = dg.AssetKey(["dmama", "dmas"])
METERS_KEY = dg.AssetKey(["dmama", "meters"])
