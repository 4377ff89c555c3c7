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

The YAML helpers (``load_yaml``, ``validate_model``, ``ConfigError``) also serve the alert rule files.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ByteSize, ConfigDict, Field, ValidationError, field_validator
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from collector.spool import DEFAULT_MAX_BYTES, DEFAULT_WINDOW_S, check_window_s

__all__ = [
    "DEFAULT_RULES_PATH",
    "PROTOCOLS",
    "AlertSettings",
    "CollectorConfig",
    "ConfigError",
    "HealthSettings",
    "NotifierSettings",
    "SpoolSettings",
    "YamlDocument",
    "load_config",
    "load_yaml",
    "protocol_module",
    "validate_model",
]

DEFAULT_RULES_PATH = Path(__file__).resolve().parent / "default_alerts.yaml"

# Section name -> (module, config model). The module also exposes ``build_reader(config) -> Reader``.
PROTOCOLS: dict[str, tuple[str, str]] = {
    "modbus": ("collector.modbus", "ModbusDeviceConfig"),
    "opcua": ("collector.opcua", "OpcUaEndpointConfig"),
    "mqtt": ("collector.mqtt", "MqttBrokerConfig"),
}

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MAX_SHOWN_INPUT = 60


class ConfigError(ValueError):
    """An invalid configuration; ``problems`` holds one ``file:line: field: reason`` string each."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


# ---------------------------------------------------------------------------------------- YAML


@dataclass
class YamlDocument:
    """A YAML file as plain Python data, with the line of every mapping key and list item."""

    path: Path
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return str(self.path)

    def line_of(self, loc: Loc) -> int:
        """The line of ``loc`` or of its nearest ancestor that exists in the file (1 for the root)."""
        for end in range(len(loc), 0, -1):
            line = self.lines.get(loc[:end])
            if line is not None:
                return line
        return 1

    def problem(self, loc: Loc, message: str) -> str:
        """``file:line: field: message``."""
        where = format_loc(loc)
        return f"{self.label}:{self.line_of(loc)}: {where + ': ' if where else ''}{message}"


def load_yaml(path: str | os.PathLike[str], *, substitute_env: bool = True) -> YamlDocument:
    """Read ``path`` keeping line numbers; ``${VAR}`` in strings replaced from the environment.

    Raises ``ConfigError`` for a missing file, a YAML syntax error, a duplicated key or an unset
    environment variable, each naming the file and the line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([f"{path}: cannot read: {error.strerror or error}"]) from None
    yaml = YAML(typ="rt")
    try:
        node = yaml.load(text)
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else 1
        reason = error.problem or error.context or "invalid YAML"
        raise ConfigError([f"{path}:{line}: YAML syntax error: {reason}"]) from None
    document = YamlDocument(path=path, data=None, lines={(): 1})
    problems: list[str] = []
    document.data = _plain(node, (), document, problems, substitute_env)
    if problems:
        raise ConfigError(problems)
    return document


def _plain(node: Any, loc: Loc, document: YamlDocument, problems: list[str], substitute_env: bool) -> Any:
    """ruamel's round-trip nodes as dicts, lists and plain scalars, recording each key's line."""
    if isinstance(node, CommentedMap):
        result: dict[Any, Any] = {}
        for key in node:
            child = (*loc, key)
            try:
                document.lines[child] = node.lc.key(key)[0] + 1
            except KeyError:  # merged in from an anchor (<<: *defaults): the mapping's own line
                document.lines[child] = node.lc.line + 1
            result[_scalar(key)] = _plain(node[key], child, document, problems, substitute_env)
        return result
    if isinstance(node, CommentedSeq):
        items = []
        for index, item in enumerate(node):
            child = (*loc, index)
            document.lines[child] = node.lc.item(index)[0] + 1
            items.append(_plain(item, child, document, problems, substitute_env))
        return items
    value = _scalar(node)
    if substitute_env and isinstance(value, str) and "${" in value:
        return _substitute(value, loc, document, problems)
    return value


def _scalar(value: Any) -> Any:
    # ruamel hands back str/int/float subclasses that carry formatting; models want the plain types.
    if isinstance(value, bool) or value is None:
        return value
    for kind in (str, int, float):
        if isinstance(value, kind):
            return kind(value)
    return value


def _substitute(value: str, loc: Loc, document: YamlDocument, problems: list[str]) -> str:
    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = os.environ.get(name)
        if found is not None:
            return found
        if default is not None:
            return default
        problems.append(document.problem(loc, f"environment variable {name} is not set"))
        return ""

    return _ENV_RE.sub(replace, value)


# ---------------------------------------------------------------------------------------- validation


def format_loc(loc: Loc) -> str:
    """``("modbus", 0, "registers", 3, "data_type")`` -> ``modbus[0].registers[3].data_type``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def validate_model(
    model: type[M],
    data: Any,
    document: YamlDocument,
    loc: Loc = (),
    problems: list[str] | None = None,
    context: dict[str, Any] | None = None,
) -> M | None:
    """``model`` validated from ``data`` found at ``loc`` in ``document``.

    With ``problems`` given, errors are appended there (as ``file:line: field: reason``) and None is
    returned; without, a ``ConfigError`` is raised.
    """
    try:
        return model.model_validate(data, context=context)
    except ValidationError as error:
        found = [document.problem(_error_loc(loc, err["loc"], document), _describe(err)) for err in error.errors()]
    if problems is None:
        raise ConfigError(found)
    problems.extend(found)
    return None


def _error_loc(prefix: Loc, error_loc: tuple[str | int, ...], document: YamlDocument) -> Loc:
    """Pydantic's location under ``prefix``, without the union tags and validator names it inserts."""
    loc: Loc = prefix
    value = _at(document.data, prefix)
    for position, part in enumerate(error_loc):
        found = (isinstance(value, dict) and part in value) or (
            isinstance(value, list) and isinstance(part, int) and 0 <= part < len(value)
        )
        if found:
            loc, value = (*loc, part), value[part]
        elif position == len(error_loc) - 1 and isinstance(value, dict):
            # A missing field: name it; its parent gives the line.
            loc = (*loc, part)
        # Otherwise a union member or validator name pydantic inserted, not in the file: skipped.
    return loc


def _at(data: Any, loc: Loc) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _describe(err: Any) -> str:
    kind = err["type"]
    shown = _shown(err.get("input"))
    ctx = err.get("ctx") or {}
    if kind == "missing":
        return "required field is missing"
    if kind == "extra_forbidden":
        return "unknown field"
    if kind in {"literal_error", "enum"} and "expected" in ctx:
        expected = str(ctx["expected"])
        names = re.findall(r"'([^']*)'", expected) or re.split(r", | or ", expected)
        return f"expected one of {', '.join(names)}, got {shown}"
    message = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    message = message[:1].lower() + message[1:]
    if isinstance(err.get("input"), dict | list) or kind.startswith("value_error") or kind == "assertion_error":
        return message
    return f"{message}, got {shown}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _MAX_SHOWN_INPUT else text[: _MAX_SHOWN_INPUT - 1] + "…"


def resolve_paths(model: M, base_dir: Path) -> M:
    """A copy of ``model`` with every relative ``Path`` value (also in nested models and lists) made absolute."""
    updates: dict[str, Any] = {}
    for name in type(model).model_fields:
        value = getattr(model, name)
        resolved = _resolve_value(value, base_dir)
        if resolved is not value:
            updates[name] = resolved
    return model.model_copy(update=updates) if updates else model


def _resolve_value(value: Any, base_dir: Path) -> Any:
    if isinstance(value, Path):
        return value if value.is_absolute() else (base_dir / value).resolve()
    if isinstance(value, BaseModel):
        return resolve_paths(value, base_dir)
    if isinstance(value, list | tuple):
        items = [_resolve_value(item, base_dir) for item in value]
        changed = any(new is not old for new, old in zip(items, value, strict=True))
        return type(value)(items) if changed else value
    if isinstance(value, dict):
        resolved = {key: _resolve_value(item, base_dir) for key, item in value.items()}
        return resolved if any(resolved[k] is not value[k] for k in value) else value
    return value


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
    rules: Path = Field(default=DEFAULT_RULES_PATH, description="Rule file (YAML); defaults to the shipped rules.")
    queue_size: int = Field(default=10_000, ge=1, description="Alerts waiting for the notifier before dropping.")
    concurrency: int = Field(default=32, ge=1, description="Notifications sent at once.")


class HealthSettings(_Section):
    """The HTTP status endpoint (GET /health)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = Field(default=8790, ge=0, le=65535, description="0 picks a free port (tests).")


class NotifierSettings(_Section):
    """Where alerts go: the fields of ``resources.notifier.Notifier``; channels are validated by it."""

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
        raise ConfigError([document.problem((), "expected a mapping of sections (spool, alerts, notifier, …)")])

    problems: list[str] = []
    known = [*_CORE_SECTIONS, *PROTOCOLS]
    for key in data:
        # x-… keys hold YAML anchors for the sections to merge (<<: *defaults), as in docker compose.
        if key not in known and not str(key).startswith("x-"):
            problems.append(document.problem((key,), f"unknown section; expected one of {', '.join(known)}"))

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
            problems.append(document.problem((section,), f"expected a list of {section} entries"))
            continue
        try:
            model = getattr(protocol_module(section), PROTOCOLS[section][1])
        except (ImportError, AttributeError) as error:
            problems.append(document.problem((section,), f"protocol support is not available: {error}"))
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
            problems.extend(error.problems)

    if problems:
        raise ConfigError(sorted(problems, key=_position))
    return CollectorConfig(path=document.path, protocols=protocols, alert_rules=rules, **core)


def _position(problem: str) -> tuple[str, int]:
    """(file, line) of a ``file:line: …`` problem, to list problems in the order of the files."""
    match = re.match(r"^(.*?):(\d+):", problem)
    return (match.group(1), int(match.group(2))) if match else (problem, 0)


def _check_channels(settings: NotifierSettings, document: YamlDocument, problems: list[str]) -> None:
    from resources.notifier import NotifierChannel

    for index, channel in enumerate(settings.channels):
        validate_model(NotifierChannel, channel, document, ("notifier", "channels", index), problems)
