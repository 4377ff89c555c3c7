"""YAML files as validated pydantic models, with errors that point into the file.

Every YAML the project reads (the collector's config, Modbus register maps, OPC UA node maps, alert
rules, sensor limits, and whatever later sources add: pump stations, tariffs…) goes through here, so
every problem reads the same way, ``<file>:<line>: <field path>: <what is wrong>``, e.g.
``collector.yaml:42: modbus[1].registers[3].address: input should be greater than or equal to 0, got -4``.

- ``load_model(path, Model)`` is the usual entry: read, substitute, validate; ``ConfigError`` lists every
  problem at once. ``ConfigError.issues`` holds them structured (file, line, column, field, message).
- ``load_yaml`` + ``validate_model`` serve files that validate in parts (the collector's sections).
- ``${VAR}`` (or ``${VAR:-default}``) in any string value is replaced from the environment, so
  passwords and tokens stay out of the file (an unset variable is an error naming its line).
- Duplicate keys are errors (a YAML library would silently keep the last); ``<<: *anchor`` merges work.

Nothing here imports Dagster: the edge collector loads its files with it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

__all__ = [
    "ConfigError",
    "Issue",
    "YamlDocument",
    "format_loc",
    "load_model",
    "load_yaml",
    "resolve_paths",
    "validate_model",
]

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)
_ENV_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_MAX_SHOWN_INPUT = 60
_PROBLEM_RE = re.compile(r"^(?P<file>.*?):(?P<line>\d+):(?: (?P<field>[^:]+?):)? (?P<message>.*)$", re.S)


@dataclass(frozen=True)
class Issue:
    """One problem in a file, structured: where (file, 1-based line and column, field path) and what."""

    file: str
    line: int
    column: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file  # line 0: the file as a whole
        return f"{where}: {self.field + ': ' if self.field else ''}{self.message}"


class ConfigError(ValueError):
    """An invalid file; ``problems`` holds one ``file:line: field: reason`` string each, ``issues`` the
    same problems structured (with the column where the file gives one)."""

    def __init__(self, problems: list[str | Issue]) -> None:
        self.issues = [item if isinstance(item, Issue) else _parse_problem(item) for item in problems]
        self.problems = [str(item) for item in problems]
        super().__init__("\n".join(self.problems))


def _parse_problem(text: str) -> Issue:
    match = _PROBLEM_RE.match(text)
    if match is None:
        file, _, message = text.partition(": ")
        return Issue(file=file, line=0, column=0, field="", message=message)
    return Issue(match["file"], int(match["line"]), 0, match["field"] or "", match["message"])


# ---------------------------------------------------------------------------------------- YAML


@dataclass
class YamlDocument:
    """A YAML file as plain Python data, with the (line, column) of every mapping key and list item."""

    path: Path
    data: Any
    positions: dict[Loc, tuple[int, int]] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return str(self.path)

    def position_of(self, loc: Loc) -> tuple[int, int]:
        """1-based (line, column) of ``loc`` or of its nearest ancestor in the file ((1, 1) for the root)."""
        for end in range(len(loc), 0, -1):
            found = self.positions.get(loc[:end])
            if found is not None:
                return found
        return (1, 1)

    def line_of(self, loc: Loc) -> int:
        return self.position_of(loc)[0]

    def issue(self, loc: Loc, message: str) -> Issue:
        line, column = self.position_of(loc)
        return Issue(self.label, line, column, format_loc(loc), message)

    def problem(self, loc: Loc, message: str) -> str:
        """``file:line: field: message``."""
        return str(self.issue(loc, message))

    def nested(self, key: str) -> YamlDocument:
        """The same file seen as ``{key: <its data>}``: a bare list accepted where a mapping is the form."""
        positions = {(key, *loc): where for loc, where in self.positions.items() if loc}
        return YamlDocument(self.path, {key: self.data}, {(): (1, 1), (key,): (1, 1), **positions})


def load_yaml(path: str | os.PathLike[str], *, substitute_env: bool = True) -> YamlDocument:
    """Read ``path`` keeping line numbers; ``${VAR}`` in strings replaced from the environment.

    Raises ``ConfigError`` for a missing file, a YAML syntax error, a duplicated key or an unset
    environment variable, each naming the file and the line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError([Issue(str(path), 0, 0, "", f"cannot read: {error.strerror or error}")]) from None
    # Imported here: Dagster re-imports the definitions for every run, and most never read a YAML file.
    from ruamel.yaml import YAML
    from ruamel.yaml.error import MarkedYAMLError

    yaml = YAML(typ="rt")  # round-trip: keeps the line and column of every key and item
    try:
        node = yaml.load(text)
    except MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        line = mark.line + 1 if mark is not None else 1
        reason = error.problem or error.context or "invalid YAML"
        column = mark.column + 1 if mark is not None else 1
        raise ConfigError([Issue(str(path), line, column, "", f"YAML syntax error: {reason}")]) from None
    document = YamlDocument(path=path, data=None, positions={(): (1, 1)})
    problems: list[Issue] = []
    document.data = _plain(node, (), document, problems, substitute_env)
    if problems:
        raise ConfigError(problems)
    return document


def _plain(node: Any, loc: Loc, document: YamlDocument, problems: list[Issue], substitute_env: bool) -> Any:
    """ruamel's round-trip nodes as dicts, lists and plain scalars, recording each key's line."""
    # ruamel's round-trip CommentedMap and CommentedSeq: a dict and a list that carry their positions (lc).
    if isinstance(node, dict) and hasattr(node, "lc"):
        result: dict[Any, Any] = {}
        for key in node:
            child = (*loc, key)
            try:
                line, column = node.lc.key(key)
            except KeyError:  # merged in from an anchor (<<: *defaults): the mapping's own place
                line, column = node.lc.line, node.lc.col
            document.positions[child] = (line + 1, column + 1)
            result[_scalar(key)] = _plain(node[key], child, document, problems, substitute_env)
        return result
    if isinstance(node, list) and hasattr(node, "lc"):
        items = []
        for index, item in enumerate(node):
            child = (*loc, index)
            line, column = node.lc.item(index)
            document.positions[child] = (line + 1, column + 1)
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


def _substitute(value: str, loc: Loc, document: YamlDocument, problems: list[Issue]) -> str:
    def replace(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        found = os.environ.get(name)
        if found is not None:
            return found
        if default is not None:
            return default
        problems.append(document.issue(loc, f"environment variable {name} is not set"))
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
    problems: list[Issue] | list[Issue | str] | None = None,
    context: dict[str, Any] | None = None,
) -> M | None:
    """``model`` validated from ``data`` found at ``loc`` in ``document``.

    With ``problems`` given, errors are appended there (as ``file:line: field: reason``) and None is
    returned; without, a ``ConfigError`` is raised.
    """
    try:
        return model.model_validate(data, context=context)
    except ValidationError as error:
        found = [document.issue(_error_loc(loc, err["loc"], document), _describe(err)) for err in error.errors()]
    if problems is None:
        raise ConfigError(found)
    problems.extend(found)  # type: ignore[arg-type]
    return None


def load_model(
    path: str | os.PathLike[str],
    model: type[M],
    *,
    context: dict[str, Any] | None = None,
    substitute_env: bool = True,
    bare_list_key: str | None = None,
) -> M:
    """``path`` read and validated as ``model``; ``ConfigError`` lists every problem as ``file:line: field: why``.

    ``bare_list_key``: a file that is just a list is read as ``{bare_list_key: <the list>}`` (node maps).
    An empty file validates as ``{}``.
    """
    document = load_yaml(path, substitute_env=substitute_env)
    if bare_list_key is not None and isinstance(document.data, list):
        document = document.nested(bare_list_key)
    if document.data is None:
        document.data = {}
    validated = validate_model(model, document.data, document, context=context)
    assert validated is not None  # validate_model raises when no problem list is given
    return validated


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
