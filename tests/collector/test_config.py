"""The collector's YAML: validation with file, line and field; ${VAR}; relative paths; lazy protocol imports."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict

from collector import config as config_module
from collector.config import DEFAULT_RULES_PATH, ConfigError, load_config

REPO = Path(__file__).resolve().parents[2]


class FakeRegister(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    data_type: Literal["int16", "uint16", "float32"]


class FakeDeviceConfig(BaseModel):
    """A protocol section model as collector/modbus.py and friends provide one."""

    model_config = ConfigDict(extra="forbid")

    name: str
    host: str
    registers: list[FakeRegister]
    certificate: Path | None = None


@pytest.fixture
def fake_protocol(monkeypatch):
    monkeypatch.setitem(config_module.PROTOCOLS, "fake", ("tests.collector.test_config", "FakeDeviceConfig"))


def write(tmp_path: Path, text: str, name: str = "collector.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value.problems


def test_an_empty_file_gives_the_defaults_with_paths_beside_it(tmp_path, monkeypatch):
    path = write(tmp_path, "# nothing configured\n")
    monkeypatch.chdir("/")
    config = load_config(path)
    assert config.spool.dir == tmp_path / "spool"
    assert config.spool.window_s == 300
    assert config.spool.max_bytes == 2 * 1024**3
    assert config.notifier.record_dir == tmp_path / "notifications"
    assert config.alerts.rules == DEFAULT_RULES_PATH
    assert {rule.name for rule in config.alert_rules} >= {"temperature_high", "pressure_out_of_band"}
    assert config.protocols == {}
    assert config.health.port == 8790


def test_relative_paths_resolve_against_the_config_file_not_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "plant.yaml").write_text(
        "rules:\n  - {name: hot, sensor_type: temperature, greater_than: 50}\n"
    )
    path = write(
        tmp_path,
        """
        spool: {dir: data/spool, max_bytes: 512MiB}
        alerts: {rules: rules/plant.yaml}
        notifier: {record_dir: data/notifications}
        """,
    )
    monkeypatch.chdir("/")
    config = load_config(path)
    assert config.spool.dir == tmp_path / "data" / "spool"
    assert config.spool.max_bytes == 512 * 1024**2
    assert config.notifier.record_dir == tmp_path / "data" / "notifications"
    assert [rule.name for rule in config.alert_rules] == ["hot"]


def test_every_problem_is_reported_with_its_line_and_field(tmp_path):
    path = write(
        tmp_path,
        """
        spool:
          dir: spool
          window_s: 420
          max_bytes: lots
        health:
          port: 99999
          colour: green
        notifier:
          channels:
            - kind: webhook
              name: ops
            - kind: pager
        telemetry: {}
        """,
    )
    assert problems(path) == [
        f"{path}:3: spool.window_s: window_s must be a whole number of minutes that divides 3600 "
        "(60, 120, 300, 600, 900, 1800, 3600), got 420",
        f"{path}:4: spool.max_bytes: could not parse value and unit from byte string, got 'lots'",
        f"{path}:6: health.port: input should be less than or equal to 65535, got 99999",
        f"{path}:7: health.colour: unknown field",
        f"{path}:10: notifier.channels[0]: url: required for a webhook channel 'ops'",
        f"{path}:12: notifier.channels[1].kind: expected one of webhook, line, smtp, sms, got 'pager'",
        f"{path}:13: telemetry: unknown section; expected one of spool, alerts, notifier, health, modbus, opcua, mqtt",
    ]


def test_environment_variables_fill_strings_and_a_missing_one_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("OPS_TOKEN", "s3cret")
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    good = write(
        tmp_path,
        """
        notifier:
          channels:
            - {kind: webhook, url: "http://${HOOK_HOST:-127.0.0.1}:9000/hook", token: "${OPS_TOKEN}"}
        """,
    )
    (channel,) = load_config(good).notifier.channels
    assert channel == {"kind": "webhook", "url": "http://127.0.0.1:9000/hook", "token": "s3cret"}

    bad = write(
        tmp_path,
        """
        notifier:
          channels:
            - kind: webhook
              url: http://127.0.0.1:9000/hook
              token: ${NOT_SET_ANYWHERE}
        """,
        name="bad.yaml",
    )
    assert problems(bad) == [f"{bad}:5: notifier.channels[0].token: environment variable NOT_SET_ANYWHERE is not set"]


def test_anchors_under_x_keys_merge_into_sections(tmp_path):
    path = write(
        tmp_path,
        """
        x-quick: &quick {window_s: 60, seal_delay_s: 0.5}
        spool:
          <<: *quick
          dir: spool
          window_s: 120
          colour: red
        """,
    )
    assert problems(path) == [f"{path}:6: spool.colour: unknown field"]
    path.write_text(path.read_text().replace("  colour: red\n", ""))
    spool = load_config(path).spool
    assert (spool.window_s, spool.seal_delay_s) == (120, 0.5)


def test_a_yaml_syntax_error_names_its_line(tmp_path):
    path = write(tmp_path, "spool:\n  dir: spool\n  window_s: [300\nhealth: {}\n")
    (problem,) = problems(path)
    assert problem.startswith(f"{path}:4: YAML syntax error")


def test_a_duplicated_key_is_an_error(tmp_path):
    path = write(tmp_path, "spool:\n  dir: a\n  dir: b\n")
    (problem,) = problems(path)
    assert problem.startswith(f"{path}:3: YAML syntax error") and "duplicate" in problem


def test_a_bad_rule_file_stops_the_start_naming_the_rule_file(tmp_path):
    rules = write(
        tmp_path,
        """
        rules:
          - name: hot
            sensor_type: temperature
            greater_than: 35
            severity: urgent
        """,
        name="rules.yaml",
    )
    path = write(tmp_path, f"alerts: {{rules: {rules.name}}}\n")
    assert problems(path) == [f"{rules}:5: rules[0].severity: expected one of info, warning, critical, got 'urgent'"]


def test_protocol_items_are_validated_by_their_module_with_lines(tmp_path, fake_protocol):
    (tmp_path / "certs").mkdir()
    path = write(
        tmp_path,
        """
        fake:
          - name: plc1
            host: 127.0.0.1
            certificate: certs/plc1.pem
            registers:
              - {name: flow, data_type: float32}
              - {name: pressure, data_type: float33}
          - name: plc2
            registers: []
        """,
    )
    assert problems(path) == [
        f"{path}:7: fake[0].registers[1].data_type: expected one of int16, uint16, float32, got 'float33'",
        f"{path}:8: fake[1].host: required field is missing",
    ]
    path = write(tmp_path, "fake:\n  - {name: plc1, host: h, certificate: certs/plc1.pem, registers: []}\n")
    (device,) = load_config(path).protocols["fake"]
    assert isinstance(device, FakeDeviceConfig)
    assert device.certificate == tmp_path / "certs" / "plc1.pem"


def test_a_protocol_section_must_be_a_list(tmp_path, fake_protocol):
    path = write(tmp_path, "fake:\n  name: plc1\n")
    assert problems(path) == [f"{path}:1: fake: expected a list of fake entries"]


@pytest.mark.skipif(importlib.util.find_spec("collector.modbus") is None, reason="collector/modbus.py not there yet")
def test_a_modbus_register_error_reads_as_the_operator_needs_it(tmp_path):
    path = write(
        tmp_path,
        """
        modbus:
          - name: ps01
            host: 127.0.0.1
            plant_unit_id: PS01
            registers:
              - {name: flow, address: 0, data_type: float32}
              - {name: pressure, address: 2, data_type: float33}
        """,
    )
    (problem,) = problems(path)
    assert problem.startswith(f"{path}:7: modbus[0].registers[1].data_type: expected one of int16, uint16,")
    assert problem.endswith(", got 'float33'")


@pytest.mark.skipif(importlib.util.find_spec("collector.modbus") is None, reason="collector/modbus.py not there yet")
def test_only_the_protocols_a_config_names_are_imported(tmp_path):
    path = write(
        tmp_path,
        """
        modbus:
          - {name: ps01, host: 127.0.0.1, plant_unit_id: PS01, registers: [{name: flow, address: 0, data_type: uint16}]}
        """,
    )
    probe = (
        "import sys; from collector.config import load_config; "
        f"load_config({str(path)!r}); "
        "print(sorted(m for m in ('asyncua', 'collector.opcua', 'collector.mqtt', 'paho', 'collector.modbus') "
        "if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['collector.modbus']"


def test_the_example_configuration_is_valid(monkeypatch):
    missing = [
        name for name, (module, _) in config_module.PROTOCOLS.items() if importlib.util.find_spec(module) is None
    ]
    if missing:
        pytest.skip(f"protocol modules not there yet: {', '.join(missing)}")
    for name in ("OPS_WEBHOOK_URL", "LINE_ENABLED", "SMTP_ENABLED"):
        monkeypatch.delenv(name, raising=False)
    config = load_config(REPO / "collector.example.yaml")
    assert set(config.protocols) == {"modbus", "opcua", "mqtt"}
    assert config.spool.dir == REPO / ".data" / "spool"
    assert [c["kind"] for c in config.notifier.channels] == ["webhook", "line", "smtp"]
    assert config.protocols["mqtt"][0].subscriptions == ["scada/+/+", "fleet/+/telemetry"]
