"""Partition grains shared by every time-partitioned asset.

The data grain (15-minute readings) is finer than the Dagster partition grain: an hourly partition
holds four readings per DMA and keeps an asset at 87,600 partitions over ten years, under the 100,000
that keeps the UI and the instance fast. ``end_offset=1`` makes the hour (or day) in progress a
partition too, so the 15-minute schedule can refresh it as readings arrive.
"""

import dagster as dg

# Readings before this date are not expected from any source; backfills start here.
HISTORY_START = "2026-01-01"

hourly = dg.HourlyPartitionsDefinition(start_date=f"{HISTORY_START}-00:00", end_offset=1)
daily = dg.DailyPartitionsDefinition(start_date=HISTORY_START, end_offset=1)
