"""The SCADA time-series rules on hand-made series whose answers are known."""

from datetime import UTC, datetime, timedelta

import polars as pl
import pytest

from quality import timeseries

T0 = datetime(2026, 3, 1, tzinfo=UTC)
LIMITS = timeseries.load_limits()


def series(values, *, source="mqtt", unit_id="UNIT001", sensor="temperature", eng="°C", every_s=5, skip=()):
    rows = [
        (source, "dev", unit_id, sensor, v, eng, "GOOD", T0 + timedelta(seconds=every_s * i))
        for i, v in enumerate(values)
        if i not in skip
    ]
    frame = pl.DataFrame(
        rows,
        schema=["source", "device", "unit_id", "sensor_type", "value", "unit", "quality", "source_ts"],
        orient="row",
    )
    return frame.with_columns(pl.col("source_ts").dt.replace_time_zone("UTC"), received_ts=pl.col("source_ts"))


def test_a_lone_spike_is_found_and_a_step_is_not():
    values = [20.0] * 10 + [60.0] + [20.0] * 10 + [30.0] * 10
    found = timeseries.spikes(series(values), LIMITS)
    assert found["value"].to_list() == [60.0]


def test_a_stuck_sensor_is_a_flatline_and_noise_is_not():
    stuck = timeseries.flatlines(series([3.25] * 60, sensor="pressure", eng="bar"), LIMITS)
    assert stuck.select("unit_id", "duration_s").rows() == [("UNIT001", 295.0)]
    noisy = timeseries.flatlines(
        series([3.0 + (i % 3) * 0.01 for i in range(60)], sensor="pressure", eng="bar"), LIMITS
    )
    assert noisy.height == 0


def test_gaps_count_only_periodic_sources_and_the_silence_up_to_the_window_end():
    end = T0 + timedelta(minutes=5)
    dropped = series([180.0] * 60, sensor="flow", eng="L/min", skip=range(20, 32))
    assert timeseries.gaps(dropped, LIMITS, T0, end)["gap_s"].to_list() == [65.0]
    stopped = series([180.0] * 30, sensor="flow", eng="L/min")  # nothing after 02:25
    assert timeseries.gaps(stopped, LIMITS, T0, end)["gap_s"].to_list() == [155.0]
    by_exception = series([180.0] * 60, source="opcua", sensor="flow", eng="L/min", skip=range(20, 32))
    assert timeseries.gaps(by_exception, LIMITS, T0, end).height == 0


def test_a_breach_must_hold_for_the_window_and_respect_the_alarm_units():
    end = T0 + timedelta(minutes=5)
    hot = series([39.0] * 60)
    assert timeseries.breaches_held(hot, LIMITS, T0, end)["unit_id"].to_list() == ["UNIT001"]
    blip = series([39.0] * 30 + [30.0] * 30)
    assert timeseries.breaches_held(blip, LIMITS, T0, end).height == 0
    station_flow = series([20.0] * 60, unit_id="PS01", sensor="flow", eng="m³/h")  # m³/h: L/min limits do not apply
    assert timeseries.breaches_held(station_flow, LIMITS, T0, end).height == 0


def test_redelivered_copies_and_clocks_running_ahead():
    frame = series([1.0, 2.0, 3.0], sensor="power", eng="kW")
    assert timeseries.duplicated(pl.concat([frame, frame.head(1)])).height == 2
    ahead = frame.with_columns(source_ts=pl.col("received_ts") + pl.duration(minutes=10))
    assert timeseries.future_timestamps(ahead).height == 3


def test_the_collector_and_the_window_checks_read_one_limits_file():
    """The inline rules and the window limits come from the same file and agree on limits and units."""
    from collector.alerts import load_rules
    from collector.config import DEFAULT_RULES_PATH
    from resources.sensor_limits import default_limits_path, load_sensor_limits

    assert default_limits_path() == DEFAULT_RULES_PATH
    assert load_sensor_limits(DEFAULT_RULES_PATH).sensor_types["flow"].alarm_units == LIMITS["flow"].alert_units
    rules = {rule.name: rule for rule in load_rules(DEFAULT_RULES_PATH)}
    flow = LIMITS["flow"]
    assert rules["flow_out_of_band"].units == frozenset(flow.alert_units) == {"L/min", "l/min", "lpm", "LPM"}
    assert (rules["flow_out_of_band"].outside.low, rules["flow_out_of_band"].outside.high) == (
        flow.alert_below,
        flow.alert_above,
    )
    # A window is judged by the most severe limit: the inline critical, not the warning below it.
    assert LIMITS["temperature"].alert_above == rules["temperature_critical"].greater_than == 38
    # An alarm marked inline: false is the window job's alone.
    assert "power_high" not in rules and LIMITS["power"].alert_above == 115


def test_a_copy_named_by_the_environment_changes_both_sides(tmp_path, monkeypatch):
    from collector.alerts import load_rules
    from collector.config import load_config
    from resources.sensor_limits import SHIPPED_LIMITS

    copy = tmp_path / "limits.yaml"
    copy.write_text(SHIPPED_LIMITS.read_text().replace("greater_than: 38", "greater_than: 41"))
    monkeypatch.setenv("IHUB_SENSOR_LIMITS", str(copy))
    assert timeseries.load_limits()["temperature"].alert_above == 41
    (tmp_path / "collector.yaml").write_text("# alerts.rules not set: the limits the environment names\n")
    config = load_config(tmp_path / "collector.yaml")
    assert config.alerts.rules == copy
    assert {r.name: r.greater_than for r in load_rules(config.alerts.rules)}["temperature_critical"] == 41


def test_a_bad_limits_file_names_the_file_line_and_field(tmp_path):
    from resources.yaml_files import ConfigError

    bad = tmp_path / "limits.yaml"
    bad.write_text(
        "sensor_types:\n"
        "  flow:\n"
        "    gross_min: 0\n"
        "    gross_max: lots\n"
        "    max_step: 120\n"
        "    max_rate_per_s: 25\n"
        "    flatline_s: 120\n"
        "    sample_interval_s: 5\n"
    )
    with pytest.raises(ConfigError) as caught:
        timeseries.load_limits(bad)
    assert caught.value.problems == [
        f"{bad}:4: sensor_types.flow.gross_max: input should be a valid number, unable to parse string as a number, "
        "got 'lots'"
    ]
