"""Marts analysts come for, materialized as tables: the leak indicator per DMA (night flow per night is
the catalog's live view ``marts.dma_night_flow``, which the indicator reads the same way).

Volumes in m³, rates in m³/h unless the column says L per connection per hour; nights are local dates in
the utility's time zone (the quiet hours are local hours), timestamps UTC.
"""

import dagster as dg
import polars as pl

from resources.lake import Column, LakeTable

LEAK_INDICATORS_KEY = dg.AssetKey(["marts", "dma_leak_indicators"])

LEAK_INDICATORS = LakeTable(
    layer="marts",
    name="dma_leak_indicators",
    description=(
        "Per DMA: whether its night flow has risen beyond what its own history explains, since when, by how "
        "much, and whether the rise was a step (a burst) or gradual (a growing leak)."
    ),
    columns=(
        Column("dma_id", pl.String(), "DMA.", nullable=False),
        Column("nights", pl.Int64(), "Nights with complete quiet hours in the look-back.", nullable=False),
        Column("baseline_m3h", pl.Float64(), "Median minimum night flow of the first baseline nights, m³/h."),
        Column("spread_m3h", pl.Float64(), "Night-to-night spread of the baseline (scaled MAD, floored), m³/h."),
        Column("latest_night", pl.Date(), "Last night judged."),
        Column("latest_m3h", pl.Float64(), "Minimum night flow of the latest nights (median of the last 3), m³/h."),
        Column("rise_m3h", pl.Float64(), "Latest minus baseline, m³/h."),
        Column("rise_pct", pl.Float64(), "Rise as a share of the baseline, %."),
        Column(
            "leak_suspected",
            pl.Boolean(),
            "True when the last nights all stand above the baseline band.",
            nullable=False,
        ),
        Column("rise_began_on", pl.Date(), "First night of the rise (after the last night inside the band)."),
        Column("kind", pl.String(), "burst (one step carries most of the rise), growing_leak, or empty."),
        Column("largest_step_m3h", pl.Float64(), "Largest rise from one night to the next within the rise, m³/h."),
    ),
    key=("dma_id",),
)

PRESSURE_COMPLIANCE_KEY = dg.AssetKey(["marts", "dma_pressure_compliance"])
BAR_PER_METRE = 0.0980665  # 1 m of water column

PRESSURE_COMPLIANCE = LakeTable(
    layer="marts",
    name="dma_pressure_compliance",
    description=(
        "Per DMA and local day: the share of 15-minute readings inside the service pressure band (10–30 m by "
        "default, shared/DOMAIN.md), below it and above it, and the day's lowest and mean pressure."
    ),
    columns=(
        Column("dma_id", pl.String(), "DMA.", nullable=False),
        Column("day", pl.Date(), "Local date.", nullable=False),
        Column("readings", pl.Int64(), "15-minute pressure readings that day.", nullable=False),
        Column("within_band_pct", pl.Float64(), "Share of readings inside the band, %.", nullable=False),
        Column("below_band_pct", pl.Float64(), "Share below the band's minimum, %.", nullable=False),
        Column("above_band_pct", pl.Float64(), "Share above the band's maximum, %.", nullable=False),
        Column("min_pressure_m", pl.Float64(), "Lowest pressure of the day, m of water column."),
        Column("mean_pressure_m", pl.Float64(), "Mean pressure of the day, m of water column."),
        Column("band_min_m", pl.Float64(), "Band minimum used, m.", nullable=False),
        Column("band_max_m", pl.Float64(), "Band maximum used, m.", nullable=False),
    ),
    key=("dma_id", "day"),
)

LOW_PRESSURE_EVENTS = LakeTable(
    layer="marts",
    name="dma_low_pressure_events",
    description=(
        "Each spell of consecutive 15-minute readings below the service band's minimum in a DMA: when it "
        "began and ended, how long it lasted and how low it went."
    ),
    columns=(
        Column("dma_id", pl.String(), "DMA.", nullable=False),
        Column("started_at", pl.Datetime("us", "UTC"), "First reading below the band, UTC.", nullable=False),
        Column("ended_at", pl.Datetime("us", "UTC"), "Last reading below the band, UTC.", nullable=False),
        Column(
            "duration_min",
            pl.Float64(),
            "From the first to 15 minutes after the last reading, minutes.",
            nullable=False,
        ),
        Column("readings", pl.Int64(), "Readings below the band in the spell.", nullable=False),
        Column("lowest_pressure_m", pl.Float64(), "Lowest pressure in the spell, m of water column.", nullable=False),
    ),
    key=("dma_id", "started_at"),
)
