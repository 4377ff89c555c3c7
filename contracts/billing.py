"""The billing data contract: daily meter readings with consumption, monthly billed consumption, customers.

Volumes are m³; days and months are UTC calendar periods (the lake's partitions). Customer records keep
only what analysis needs: personal fields are dropped (name, address) or hashed (phone) at ingestion, and
the descriptions below say so, because they become the analyst catalog's comments. Assets and checks both
import it from here, so ``quality/`` never imports ``assets/``.
"""

import dagster as dg
import polars as pl

from resources.lake import Column, LakeTable

UTC_TIME = pl.Datetime("us", "UTC")
TARIFF_CLASSES = ("residential", "commercial", "industrial")
CUSTOMER_STATUSES = ("active", "suspended")
LEVELS = ("dma", "customer")

_METER = Column("meter_id", pl.String(), "Meter, as DMAMA names it (M-dddd-jjjj).", nullable=False, identifier=True)
_DMA = Column("dma_id", pl.String(), "DMA the meter is in, as DMAMA names it.", nullable=False, identifier=True)
_CUSTOMER = Column("customer_id", pl.String(), "Billing account of the customer.", identifier=True)

# What the readings endpoint sends, typed: the first columns of the readings table.
READINGS_AS_SENT = LakeTable(
    layer="raw",
    name="billing_meter_readings",
    description="Daily closing registers as billing sent them (before consumption is computed).",
    columns=(
        _METER,
        _CUSTOMER,
        _DMA,
        Column("reading_date", pl.Date(), "UTC day the reading closes.", nullable=False),
        Column("register_m3", pl.Float64(), "Register at 24:00 UTC that day, m³.", nullable=False),
        Column("register_digits", pl.Int64(), "Digits of the register; it rolls over at 10^digits m³.", nullable=False),
    ),
    key=("meter_id", "reading_date"),
    time_column="reading_date",
)

METER_READINGS = LakeTable(
    layer="raw",
    name="billing_meter_readings",
    description=(
        "Closing register of every billed customer meter for each UTC day, with the consumption since the "
        "meter's previous kept reading. A register that rolled over is counted across 10^digits and flagged "
        "(register_rollover); a decrease that is not a plausible rollover is in rejects.billing_meter_readings "
        "with its reason, never here."
    ),
    columns=(
        *READINGS_AS_SENT.columns,
        Column("previous_reading_date", pl.Date(), "Day of the previous kept reading of the meter; empty: none."),
        Column("previous_register_m3", pl.Float64(), "Register of that previous reading, m³."),
        Column(
            "consumption_m3",
            pl.Float64(),
            "Volume through the meter since the previous kept reading, m³: current − previous, or "
            "(10^digits − previous) + current across a rollover; empty for a meter's first reading.",
        ),
        Column(
            "register_rollover",
            pl.Boolean(),
            "The register passed 10^digits − 1 and started again from 0 since the previous reading.",
            nullable=False,
        ),
    ),
    key=("meter_id", "reading_date"),
    time_column="reading_date",
)

CONSUMPTION_MONTHLY = LakeTable(
    layer="raw",
    name="billing_consumption_monthly",
    description=(
        "Billed consumption per UTC calendar month, per customer (level customer) and per DMA (level dma, the "
        "sum of its customers), m³, as billing cut the bills. Set against DMA inflow for non-revenue water."
    ),
    columns=(
        Column("month", pl.Date(), "First day of the billed UTC month.", nullable=False),
        Column("level", pl.String(), "customer: one customer's bill; dma: the DMA's total.", nullable=False),
        _DMA,
        Column("customer_id", pl.String(), "Billing account (level customer); empty for DMA totals.", identifier=True),
        Column("tariff_class", pl.String(), "residential, commercial or industrial (level customer)."),
        Column("billed_m3", pl.Float64(), "Billed (metered) consumption in the month, m³.", nullable=False),
        Column("customers", pl.Int64(), "Customers billed in the row (1 for a customer row).", nullable=False),
    ),
    key=("month", "level", "dma_id", "customer_id"),
    time_column="month",
)

CUSTOMERS = LakeTable(
    layer="raw",
    name="billing_customers",
    description=(
        "Billing customers as they are now, one row per account, kept up to date incrementally (only records "
        "changed since the last sync are fetched). Personal data is not stored: the customer's name and "
        "address are dropped at ingestion and the phone number is kept only as a keyed hash (phone_hash); "
        "what remains is what analysis needs: account, meter, DMA, tariff class, status."
    ),
    columns=(
        Column("customer_id", pl.String(), "Billing account of the customer.", nullable=False, identifier=True),
        _METER,
        _DMA,
        Column("tariff_class", pl.String(), "residential, commercial or industrial: the tariff billed."),
        Column("status", pl.String(), "active, or suspended (supply cut, e.g. for non-payment)."),
        Column("connected_on", pl.Date(), "Date the service connection was made."),
        Column(
            "phone_hash",
            pl.String(),
            "HMAC-SHA256 (hex) of the phone number in E.164 form, keyed with BILLING_PII_HASH_KEY: matches "
            "equal numbers without storing any. The raw number, the name and the address are dropped at "
            "ingestion and exist nowhere in the lake.",
        ),
        Column("updated_at", UTC_TIME, "When billing last changed the record, UTC.", nullable=False),
    ),
    key=("customer_id",),
)

TABLES = (METER_READINGS, CONSUMPTION_MONTHLY, CUSTOMERS)

METER_READINGS_KEY = dg.AssetKey(["billing", "meter_readings"])
CONSUMPTION_MONTHLY_KEY = dg.AssetKey(["billing", "consumption_monthly"])
CUSTOMERS_KEY = dg.AssetKey(["billing", "customers"])
