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
