"""Inline threshold alerts: rule files, conditions, escalation, cooldowns, and delivery to a real webhook."""

from __future__ import annotations

import asyncio
import textwrap
import time
from pathlib import Path

import pytest

from collector.alerts import AlertEngine, load_rules
from collector.config import DEFAULT_RULES_PATH, ConfigError
from collector.points import BAD, COMM_FAIL, GOOD, UNCERTAIN, Point
from resources.notifier import Notifier, NotifierChannel
from tests.collector.test_notifier import Receiver

T0 = 1_772_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def reading(
    sensor: str,
    value: float | None,
    unit_id: str = "UNIT001",
    unit: str = "",
    quality: str = GOOD,
    at_s: float = T0,
) -> Point:
    at = int(at_s * 1_000_000)
    return Point("mqtt", "gateway", unit_id, sensor, value, unit, quality, at, at)


def rules_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


@pytest.fixture
def defaults() -> AlertEngine:
    return AlertEngine(load_rules(DEFAULT_RULES_PATH), notifier=None, clock=Clock())


def fired(engine: AlertEngine, *points: Point) -> list[tuple[str, str]]:
    return [(a.rule, a.severity) for a in engine.evaluate(points)]


def test_default_temperature_escalates_instead_of_alerting_twice(defaults):
    assert fired(defaults, reading("temperature", 34.9, unit="°C")) == []
    assert fired(defaults, reading("temperature", 36.2, unit="°C")) == [("temperature_high", "warning")]
    assert fired(defaults, reading("temperature", 39.4, unit="°C", unit_id="UNIT002")) == [
        ("temperature_critical", "critical")
    ]


def test_default_pressure_and_flow_bands(defaults):
    assert fired(defaults, reading("pressure", 0.8, unit="bar")) == [("pressure_out_of_band", "warning")]
    assert fired(defaults, reading("pressure", 7.9, unit="bar", unit_id="UNIT002")) == [
        ("pressure_out_of_band", "warning")
    ]
    assert fired(defaults, reading("pressure", 3.0, unit="bar", unit_id="UNIT003")) == []
    assert fired(defaults, reading("flow", 55, unit="L/min")) == [("flow_out_of_band", "warning")]
    assert fired(defaults, reading("flow", 295, unit="L/min", unit_id="UNIT002")) == [("flow_out_of_band", "warning")]
    # A pump station's flow in m³/h is not judged by limits in L/min.
    assert fired(defaults, reading("flow", 420, unit="m³/h", unit_id="PS01")) == []
    assert fired(defaults, reading("power", 119, unit="kW")) == []


def test_the_message_names_the_value_the_unit_and_the_threshold(defaults):
    (alert,) = defaults.evaluate([reading("temperature", 36.24, unit="°C")])
    assert alert.message == "High temperature alert: 36.2°C on UNIT001 (warning above 35°C)"
    assert alert.title == "High temperature on UNIT001"
    (alert,) = defaults.evaluate([reading("pressure", 0.8, unit="bar")])
    assert alert.message == "Pressure alert: 0.80 bar on UNIT001, outside 1..7.5 bar"
    assert alert.point_key == ("UNIT001", "pressure")
    assert alert.received_ts.timestamp() == T0
    notification = alert.notification()
    assert (notification.unit_id, notification.sensor_type, notification.value) == ("UNIT001", "pressure", 0.8)


def test_only_good_and_uncertain_values_are_judged(defaults):
    assert fired(defaults, reading("temperature", 39, quality=BAD)) == []
    assert fired(defaults, reading("temperature", None, quality=COMM_FAIL)) == []
    assert fired(defaults, reading("temperature", float("nan"))) == []
    assert fired(defaults, reading("temperature", 39, quality=UNCERTAIN)) == [("temperature_critical", "critical")]


def test_cooldown_is_per_rule_and_point(tmp_path):
    clock = Clock()
    rules = load_rules(
        rules_file(
            tmp_path,
            """
            rules:
              - {name: hot, sensor_type: temperature, greater_than: 35, cooldown_s: 60}
            """,
        )
    )
    engine = AlertEngine(rules, notifier=None, clock=clock)
    assert fired(engine, reading("temperature", 36)) == [("hot", "warning")]
    clock.now += 30
    assert fired(engine, reading("temperature", 37)) == []  # the same point, within the cooldown
    assert fired(engine, reading("temperature", 37, unit_id="UNIT002")) == [("hot", "warning")]
    clock.now += 31
    assert fired(engine, reading("temperature", 36)) == [("hot", "warning")]
    assert engine.health()["suppressed"] == 1


def test_a_rule_for_one_point_replaces_the_sensor_type_rules_of_its_group(tmp_path):
    path = rules_file(
        tmp_path,
        """
        rules:
          - {name: hot, sensor_type: temperature, greater_than: 35, group: heat, cooldown_s: 0}
          - {name: kiln_hot, unit_id: KILN1, sensor_type: temperature, greater_than: 80, group: heat, cooldown_s: 0}
        """,
    )
    engine = AlertEngine(load_rules(path), notifier=None, clock=Clock())
    assert fired(engine, reading("temperature", 60, unit_id="KILN1")) == []
    assert fired(engine, reading("temperature", 81, unit_id="KILN1")) == [("kiln_hot", "warning")]
    assert fired(engine, reading("temperature", 60, unit_id="UNIT001")) == [("hot", "warning")]


def test_rate_of_change_is_per_second_over_the_previous_value_of_the_point(tmp_path):
    path = rules_file(
        tmp_path,
        """
        rules:
          - name: level_jump
            sensor_type: level
            rate_of_change: 0.05
            severity: critical
            cooldown_s: 0
            message: "{unit_id} level moved faster than {threshold}: now {value} {unit}"
        """,
    )
    engine = AlertEngine(load_rules(path), notifier=None, clock=Clock())
    assert fired(engine, reading("level", 2.00, at_s=T0)) == []  # nothing to compare with yet
    assert fired(engine, reading("level", 2.20, at_s=T0 + 10)) == []  # 0.02 m/s
    assert fired(engine, reading("level", 2.20, at_s=T0 + 10)) == []  # a redelivered copy
    (alert,) = engine.evaluate([reading("level", 3.00, unit="m", at_s=T0 + 20)])  # 0.08 m/s
    assert alert.message == "UNIT001 level moved faster than 0.05/s: now 3.0 m"
    assert fired(engine, reading("level", 1.0, unit_id="UNIT002", at_s=T0 + 21)) == []  # another point


def test_equals_catches_a_status_code(tmp_path):
    path = rules_file(
        tmp_path,
        """
        rules:
          - {name: pump_tripped, sensor_type: pump_status, equals: 3, severity: critical, cooldown_s: 0}
        """,
    )
    engine = AlertEngine(load_rules(path), notifier=None, clock=Clock())
    assert fired(engine, reading("pump_status", 1), reading("pump_status", 3, unit_id="P2")) == [
        ("pump_tripped", "critical")
    ]


def test_rule_file_errors_name_the_file_line_and_field(tmp_path):
    path = rules_file(
        tmp_path,
        """
        rules:
          - name: hot
            sensor_type: temperature
            greater_than: 35
            severity: urgent
          - name: band
            sensor_type: pressure
            outside: {low: 7.5, high: 1.0}
          - name: both
            sensor_type: flow
            less_than: 60
            greater_than: 280
          - name: hot
            sensor_type: level
            less_than: 0.5
            message: "level {valeur} on {unit_id}"
            cooldown: 60
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_rules(path)
    assert caught.value.problems == [
        f"{path}:5: rules[0].severity: expected one of info, warning, critical, got 'urgent'",
        f"{path}:8: rules[1].outside: low (7.5) must be below high (1)",
        f"{path}:9: rules[2]: a rule needs exactly one condition of greater_than, less_than, equals, outside, "
        "rate_of_change (found greater_than, less_than)",
        f"{path}:16: rules[3].message: unknown placeholder {{valeur}}; use device, rule, sensor_type, severity, "
        "source, threshold, unit, unit_id, value",
        f"{path}:17: rules[3].cooldown: unknown field",
    ]


def test_a_rule_name_used_twice_is_refused(tmp_path):
    path = rules_file(
        tmp_path,
        """
        rules:
          - {name: hot, sensor_type: temperature, greater_than: 35}
          - {name: hot, sensor_type: temperature, greater_than: 38}
        """,
    )
    with pytest.raises(ConfigError, match=r"rules.yaml:3: rules\[1\]\.name: rule name 'hot' is already used on line 2"):
        load_rules(path)


def test_alerts_reach_a_real_webhook_in_the_background(tmp_path):
    async def scenario(receiver: Receiver) -> None:
        notifier = Notifier(
            channels=[NotifierChannel(kind="webhook", url=f"{receiver.url}/hook")], record_dir=str(tmp_path)
        )
        engine = AlertEngine(load_rules(DEFAULT_RULES_PATH), notifier)
        dispatcher = asyncio.create_task(engine.run())
        try:
            now = time.time()
            raised = engine.evaluate(
                [reading("temperature", 20.0, at_s=now), reading("temperature", 39.5, unit="°C", at_s=now)]
            )
            # evaluate() only queues: nothing has been sent yet (latency is measured by bench/alert_latency).
            assert receiver.accepted() == []
            assert [a.rule for a in raised] == ["temperature_critical"]
            assert await engine.drain(5.0)
        finally:
            dispatcher.cancel()
            await notifier.aclose()
        (request,) = receiver.wait_for(1)
        assert request["json"]["severity"] == "critical"
        assert request["json"]["message"] == "Critical temperature alert: 39.5°C on UNIT001 (critical above 38°C)"
        assert request["json"]["value"] == 39.5
        assert request["at"] >= now
        health = engine.health()
        assert (health["raised"], health["sent"], health["send_failed"]) == (1, 1, 0)
        assert health["recent"][0]["rule"] == "temperature_critical"

    with Receiver() as receiver:
        asyncio.run(scenario(receiver))
