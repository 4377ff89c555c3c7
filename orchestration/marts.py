"""Marts: what analysts and network engineers read, computed from the checked sources."""

import dagster as dg

from assets.leaks import dma_leak_indicators
from contracts.marts import LEAK_INDICATORS_KEY
from orchestration.settings import local_timezone

leak_indicators_job = dg.define_asset_job(
    "dma_leak_indicators_job",
    selection=dg.AssetSelection.assets(LEAK_INDICATORS_KEY),
    description="Judge every DMA's night flow against its own history.",
)

defs = dg.Definitions(
    assets=[dma_leak_indicators],
    jobs=[leak_indicators_job],
    schedules=[
        dg.ScheduleDefinition(
            name="dma_leak_indicators_morning",
            job=leak_indicators_job,
            cron_schedule="0 6 * * *",  # the quiet hours end at 04:00 local and land within the hour
            execution_timezone=local_timezone(),
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description="Every morning: which DMAs' night flow rose beyond their own history.",
        )
    ],
)
