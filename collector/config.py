"""The collector's one YAML file: spool, alert rules, notifier, health endpoint and the protocol sections.

Loaded and validated entirely at start; every problem is reported at once, each as
``<file>:<line>: <field>: <what is wrong>``, e.g.
``collector.yaml:14: modbus[0].registers[3].data_type: expected one of int16, uint16, …, got 'float33'``.

- ``${VAR}`` (or ``${VAR:-default}``) in any string value is replaced from the environment, so
  passwords and tokens stay out of the file.
- Relative paths resolve against the directory of the config file: every ``pathlib.Path`` field of a
  validated model is made absolute, and protocol models also receive ``{"base_dir": <dir>,
  "config_file": <path>, "spool_dir": <absolute spool dir>}`` as pydantic validation context, for
  paths they open while validating and for readers that write dead letters.
- Protocol sections (``modbus``, ``opcua``, ``mqtt``) are lists; each item is validated by the model its
  module exposes, imported only when the section is present (see ``PROTOCOLS``), so a config with only
  MQTT never imports asyncua.

The YAML helpers (``load_yaml``, ``validate_model``, ``ConfigError``) live in ``resources.yaml_files``,
shared by every YAML the project reads; they are re-exported here for the collector's modules.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ByteSize, ConfigDict, Field, field_validator

from collector.spool import DEFAULT_MAX_BYTES, DEFAULT_WINDOW_S, check_window_s
from resources.sensor_limits import SHIPPED_LIMITS, default_limits_path
from resources.yaml_files import (
    ConfigError,
    Issue,
    YamlDocument,
    format_loc,
    load_yaml,
    resolve_paths,
    validate_model,
)

__all__ = [
    "DEFAULT_HEALTH_PORT",
    "DEFAULT_RULES_PATH",
    "PROTOCOLS",
    "AlertSettings",
    "CollectorConfig",
    "ConfigError",
    "HealthSettings",
    "NotifierSettings",
    "SpoolSettings",
    "YamlDocument",
    "format_loc",
    "health_url",
    "load_config",
    "load_yaml",
    "protocol_module",
    "resolve_paths",
    "validate_model",
]

# The shipped alert rules are the inline alarms of the sensor limits the window checks read too.
DEFAULT_RULES_PATH = SHIPPED_LIMITS

# The health endpoint's default, for the collector and for ``ihub collect status`` alike.
DEFAULT_HEALTH_HOST = "127.0.0.1"
DEFAULT_HEALTH_PORT = 8790

# Section name -> (module, config model). The module also exposes ``build_reader(config) -> Reader``.
PROTOCOLS: dict[str, tuple[str, str]] = {
    "modbus": ("collector.modbus", "ModbusDeviceConfig"),
    "opcua": ("collector.opcua", "OpcUaEndpointConfig"),
    "mqtt": ("collector.mqtt", "MqttBrokerConfig"),
}

# ---------------------------------------------------------------------------------------- sections


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SpoolSettings(_Section):
    """Where points are spooled and how windows are cut."""

    dir: Path = Field(default=Path("spool"), description="Spool root; the Dagster side reads the same directory.")
    window_s: int = Field(default=DEFAULT_WINDOW_S, description="Window length in seconds; must divide 3600.")
    max_bytes: ByteSize = Field(
        default=ByteSize(DEFAULT_MAX_BYTES), description="Un-archived backlog allowed before refusing points."
    )
    seal_delay_s: float = Field(default=2.0, ge=0, description="Wait after a window's end before sealing it.")
    fsync: bool = Field(default=True, description="fsync before acknowledging; turn off only for throwaway runs.")
    writer: str = Field(default="collector", pattern=r"^[A-Za-z0-9_.-]+$", description="Segment file prefix.")

    @field_validator("window_s")
    @classmethod
    def _window(cls, value: int) -> int:
        return check_window_s(value)

    @field_validator("max_bytes")
    @classmethod
    def _positive(cls, value: ByteSize) -> ByteSize:
        if value <= 0:
            raise ValueError("must be positive")
        return value


class AlertSettings(_Section):
    """Inline threshold alerts."""

    enabled: bool = True
    rules: Path = Field(
        default_factory=default_limits_path,
        description="A rule file, or a sensor limits file whose alarms become rules; defaults to the sensor "
        "limits the window checks read (IHUB_SENSOR_LIMITS, else the shipped resources/sensor_limits.yaml).",
    )
    queue_size: int = Field(default=10_000, ge=1, description="Alerts waiting for the notifier before dropping.")
    concurrency: int = Field(default=32, ge=1, description="Notifications sent at once.")


class HealthSettings(_Section):
    """The HTTP status endpoint (GET /health); ``ihub collect status`` asks the same default."""

    enabled: bool = True
    host: str = DEFAULT_HEALTH_HOST
    port: int = Field(default=DEFAULT_HEALTH_PORT, ge=0, le=65535, description="0 picks a free port (tests).")

    def url(self, port: int | None = None) -> str:
        """Where a client on this machine reaches the endpoint (a wildcard bind is asked on loopback)."""
        return health_url(self.host, self.port if port is None else port)


def health_url(host: str = "", port: int = 0) -> str:
    """``http://<host>:<port>/health``; the collector's defaults when not given, loopback for a wildcard."""
    host = {"": DEFAULT_HEALTH_HOST, "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port or DEFAULT_HEALTH_PORT}/health"


class NotifierSettings(_Section):
    """Where alerts go: ``resources.notifications.NotificationSender``; channels are its ``ChannelSettings``."""

    channels: list[dict[str, Any]] = Field(default_factory=list)
    record_dir: Path = Field(default=Path("notifications"), description="JSON-lines record of every notification.")
    retries: int = Field(default=3, ge=0)
    backoff_base_s: float = Field(default=0.5, ge=0)


_CORE_SECTIONS: dict[str, type[_Section]] = {
    "spool": SpoolSettings,
    "alerts": AlertSettings,
    "notifier": NotifierSettings,
    "health": HealthSettings,
}


@dataclass(frozen=True)
class CollectorConfig:
    """A validated collector configuration. ``protocols`` maps a section name to its validated items."""

    path: Path
    spool: SpoolSettings = field(default_factory=SpoolSettings)
    alerts: AlertSettings = field(default_factory=AlertSettings)
    notifier: NotifierSettings = field(default_factory=NotifierSettings)
    health: HealthSettings = field(default_factory=HealthSettings)
    protocols: dict[str, list[Any]] = field(default_factory=dict)
    # Parsed from ``alerts.rules`` at load, so a bad rule file stops the start like a bad config.
    alert_rules: list[Any] = field(default_factory=list)

    def readers_config(self) -> Iterator[tuple[str, Any]]:
        """(section name, item config) for every configured device, endpoint and broker."""
        for section, items in self.protocols.items():
            for item in items:
                yield section, item


def protocol_module(section: str) -> Any:
    """Import the module serving protocol ``section`` (only when a config names it)."""
    module_name, _ = PROTOCOLS[section]
    return importlib.import_module(module_name)


def load_config(path: str | os.PathLike[str]) -> CollectorConfig:
    """Read, substitute, validate and resolve ``path``; ``ConfigError`` lists every problem found."""
    document = load_yaml(path)
    base_dir = document.path.resolve().parent
    data = document.data if document.data is not None else {}
    if not isinstance(data, dict):
        raise ConfigError([document.issue((), "expected a mapping of sections (spool, alerts, notifier, …)")])

    problems: list[Issue] = []
    known = [*_CORE_SECTIONS, *PROTOCOLS]
    for key in data:
        # x-… keys hold YAML anchors for the sections to merge (<<: *defaults), as in docker compose.
        if key not in known and not str(key).startswith("x-"):
            problems.append(document.issue((key,), f"unknown section; expected one of {', '.join(known)}"))

    core: dict[str, Any] = {}
    for name, model in _CORE_SECTIONS.items():
        section = data.get(name)
        if section is None:
            core[name] = resolve_paths(model(), base_dir)
            continue
        validated = validate_model(model, section, document, (name,), problems)
        if validated is not None:
            core[name] = resolve_paths(validated, base_dir)

    notifier = core.get("notifier")
    if notifier is not None:
        _check_channels(notifier, document, problems)

    protocols: dict[str, list[Any]] = {}
    spool = core.get("spool")
    context = {
        "base_dir": base_dir,
        "config_file": document.path.resolve(),
        # Where readers that dead-letter (MQTT) find the spool's dead-letter/ directory.
        "spool_dir": spool.dir if spool is not None else None,
    }
    for section in PROTOCOLS:
        if section not in data or data[section] is None:
            continue
        items = data[section]
        if not isinstance(items, list):
            problems.append(document.issue((section,), f"expected a list of {section} entries"))
            continue
        try:
            model = getattr(protocol_module(section), PROTOCOLS[section][1])
        except (ImportError, AttributeError) as error:
            problems.append(document.issue((section,), f"protocol support is not available: {error}"))
            continue
        validated_items = []
        for index, item in enumerate(items):
            validated = validate_model(model, item, document, (section, index), problems, context)
            if validated is not None:
                validated_items.append(resolve_paths(validated, base_dir))
        protocols[section] = validated_items

    rules: list[Any] = []
    alerts = core.get("alerts")
    if alerts is not None and alerts.enabled:
        from collector.alerts import load_rules  # alerts imports this module's YAML helpers

        try:
            rules = load_rules(alerts.rules)
        except ConfigError as error:
            problems.extend(error.issues)

    if problems:
        raise ConfigError(sorted(problems, key=_position))
    return CollectorConfig(path=document.path, protocols=protocols, alert_rules=rules, **core)


def _position(issue: Issue) -> tuple[str, int, int]:
    """To list problems in the order of the files."""
    return (issue.file, issue.line, issue.column)


def _check_channels(settings: NotifierSettings, document: YamlDocument, problems: list[Issue]) -> None:
    from resources.notifications import ChannelSettings

    for index, channel in enumerate(settings.channels):
        validate_model(ChannelSettings, channel, document, ("notifier", "channels", index), problems)
