"""Marts: what analysts and network engineers read, computed from the checked sources."""

import dagster as dg

from assets.leaks import dma_leak_indicators
from assets.pressure import dma_pressure_compliance
from contracts.marts import LEAK_INDICATORS_KEY, PRESSURE_COMPLIANCE_KEY
from orchestration.settings import local_timezone

network_marts_job = dg.define_asset_job(
    "dma_network_marts_job",
    selection=dg.AssetSelection.assets(LEAK_INDICATORS_KEY, PRESSURE_COMPLIANCE_KEY),
    description="Judge every DMA's night flow against its own history and its pressure against the band.",
)

defs = dg.Definitions(
    assets=[dma_leak_indicators, dma_pressure_compliance],
    jobs=[network_marts_job],
    schedules=[
        dg.ScheduleDefinition(
            name="dma_network_marts_morning",
            job=network_marts_job,
            cron_schedule="0 6 * * *",  # the quiet hours end at 04:00 local and land within the hour
            execution_timezone=local_timezone(),
            default_status=dg.DefaultScheduleStatus.RUNNING,
            description="Every morning: DMAs whose night flow rose beyond their own history; pressure compliance.",
        )
    ],
)
