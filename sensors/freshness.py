"""The sensor that evaluates freshness checks, so a late partition turns red without anyone looking."""

import dagster as dg

from quality.dmama import freshness_checks


def freshness_sensor() -> dg.SensorDefinition:
    """Evaluates every freshness check each minute (the checks themselves decide when a deadline passed)."""
    return dg.build_sensor_for_freshness_checks(
        freshness_checks=freshness_checks(),
        minimum_interval_seconds=60,
        name="freshness_checks_sensor",
    )
