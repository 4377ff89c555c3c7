"""The SCADA data contract: the tables the window job and the historian write, their columns and keys.

Assets and checks both import these declarations; the rules a window's points must pass are in
``quality/scada.py`` and ``quality/timeseries.py``.
"""

import dagster as dg
import polars as pl

from resources.lake import Column, LakeTable

UTC_TIME = pl.Datetime("us", "UTC")

SCADA_POINTS_KEY = dg.AssetKey(["scada", "points"])

_POINT_COLUMNS = (
    Column("source", pl.String(), "Protocol the point came in by: modbus, opcua, mqtt or historian.", nullable=False),
    Column("device", pl.String(), "Configured device, endpoint or broker the point was read from.", nullable=False),
    Column("unit_id", pl.String(), "Plant unit (pump station, machine) the sensor belongs to.", nullable=False),
    Column("sensor_type", pl.String(), "What is measured: flow, pressure, level, temperature, power …", nullable=False),
)

_QC = "QARTOD code (1 pass, 2 not evaluated, 3 suspect, 4 fail, 9 missing; quality/qartod.py)"
# Judged per receive window: the last value of a window has no follower, so its spike test is not evaluated.
QC_COLUMNS = (
    Column("qc_timing", pl.Int32(), f"Timestamp test: fail when measured after it was received. {_QC}."),
    Column("qc_gross_range", pl.Int32(), f"Gross range test against the sensor type's limits. {_QC}."),
    Column("qc_spike", pl.Int32(), f"Spike test: a lone jump away from both neighbours. {_QC}."),
    Column("qc_rate_of_change", pl.Int32(), f"Rate of change test, per second. {_QC}."),
    Column("qc_flat_line", pl.Int32(), f"Flat line test: the same value for longer than the sensor allows. {_QC}."),
    Column("qc_duplicate", pl.Int32(), f"Duplicate test: the same point at the same instant twice. {_QC}."),
    Column("qc_flag", pl.Int32(), f"Overall flag, the worst of the tests that could run. {_QC}."),
)

SCADA_POINTS = LakeTable(
    layer="raw",
    name="scada_points",
    description="Every SCADA point the collector received, one file per 5-minute receive window, duplicates removed.",
    columns=(
        *_POINT_COLUMNS,
        Column("value", pl.Float64(), "Value in the unit below; empty when the read failed (COMM_FAIL)."),
        Column("unit", pl.String(), "Engineering unit of the value (°C, bar, L/min, m³/h, kW, m)."),
        Column(
            "quality", pl.String(), "GOOD, UNCERTAIN, BAD or COMM_FAIL, as the source or the link said.", nullable=False
        ),
        Column("source_ts", UTC_TIME, "When the device measured the value, UTC.", nullable=False),
        Column("received_ts", UTC_TIME, "When the collector received it, UTC.", nullable=False),
        *QC_COLUMNS,
    ),
    key=("source", "unit_id", "sensor_type", "source_ts"),
    time_column="source_ts",
)

SCADA_AGGREGATES = LakeTable(
    layer="staging",
    name="scada_point_aggregates",
    description="Per point and 5-minute window (by measurement time): min, max, mean, last, count, availability.",
    columns=(
        Column(
            "window_start",
            UTC_TIME,
            "Start of the 5-minute window, UTC (by the values' own timestamps).",
            nullable=False,
        ),
        *_POINT_COLUMNS,
        Column("unit", pl.String(), "Engineering unit."),
        Column(
            "min", pl.Float64(), "Lowest usable value (GOOD or UNCERTAIN, within the physical range, not a lone spike)."
        ),
        Column("max", pl.Float64(), "Highest usable value."),
        Column("mean", pl.Float64(), "Mean of usable values."),
        Column("last", pl.Float64(), "Last usable value in the window."),
        Column("count", pl.Int64(), "Points received in the window, any quality."),
        Column(
            "usable_count", pl.Int64(), "Points that were GOOD or UNCERTAIN, physically plausible and not lone spikes."
        ),
        Column(
            "availability_pct",
            pl.Float64(),
            "Usable points as a share of the samples a periodic sensor should send, %; "
            "empty for report-by-exception sources (OPC UA).",
        ),
    ),
    key=("window_start", "source", "unit_id", "sensor_type", "device"),
    time_column="window_start",
)

SCADA_WINDOW_ALERTS = LakeTable(
    layer="marts",
    name="scada_window_alerts",
    description="Window-level alerts raised to operators: flatlines, gaps and breaches held for a whole window.",
    columns=(
        Column("window_start", UTC_TIME, "Receive window the alert was raised for, UTC.", nullable=False),
        *_POINT_COLUMNS,
        Column("kind", pl.String(), "flatline, gap or breach_held.", nullable=False),
        Column("severity", pl.String(), "warning or critical.", nullable=False),
        Column("message", pl.String(), "What the operator was told.", nullable=False),
    ),
    key=("window_start", "kind", "source", "unit_id", "sensor_type", "device"),
    time_column="window_start",
)

HISTORIAN_POINTS_KEY = dg.AssetKey(["scada", "historian_points"])

HISTORIAN_POINTS = LakeTable(
    layer="raw",
    name="scada_historian_points",
    description="The SCADA historian's one-minute samples, for backfilling past windows and repairing gaps.",
    columns=(
        Column("unit_id", pl.String(), "Plant unit the sensor belongs to.", nullable=False),
        Column("sensor_type", pl.String(), "What is measured: flow, pressure, temperature, power …", nullable=False),
        Column("unit", pl.String(), "Engineering unit of the value."),
        Column("timestamp", UTC_TIME, "When the historian recorded the sample, UTC.", nullable=False),
        Column("value", pl.Float64(), "Recorded value; empty when the historian has none."),
        Column("quality", pl.String(), "GOOD, UNCERTAIN or BAD as the historian recorded it.", nullable=False),
    ),
    key=("unit_id", "sensor_type", "timestamp"),
    time_column="timestamp",
)

TABLES = (SCADA_POINTS, SCADA_AGGREGATES, SCADA_WINDOW_ALERTS, HISTORIAN_POINTS)
