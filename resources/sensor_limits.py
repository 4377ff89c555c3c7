"""Limits per SCADA sensor type, one file for the edge collector and the Dagster window job alike.

``resources/sensor_limits.yaml`` (or the file ``IHUB_SENSOR_LIMITS`` names) holds, per sensor type, the
physical range, the plausible step and rate of change, the flatline span, the sample interval and the
alarm limits. The collector turns the alarms into inline rules (``collector.alerts.load_rules``); the
window checks read the same file (``quality.timeseries.load_limits``), so the two can no longer disagree
on a limit or on the units it applies to.

It lives in ``resources/`` because both ``collector/`` and ``quality/`` import downwards into it, and
it imports nothing of Dagster's: the collector runs without the orchestrator.
"""

from __future__ import annotations

import os
import string
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from resources.yaml_files import load_model

__all__ = [
    "CONDITIONS",
    "SHIPPED_LIMITS",
    "TEMPLATE_FIELDS",
    "Alarm",
    "Band",
    "LimitsFile",
    "SensorAlarm",
    "SensorType",
    "default_limits_path",
    "load_sensor_limits",
]

SHIPPED_LIMITS = Path(__file__).with_name("sensor_limits.yaml")
SEVERITY_RANK = {"info": 0, "warning": 1, "critical": 2}
CONDITIONS = ("greater_than", "less_than", "equals", "outside", "rate_of_change")
TEMPLATE_FIELDS = frozenset(
    {"value", "unit", "unit_id", "sensor_type", "threshold", "device", "source", "severity", "rule"}
)


def default_limits_path() -> Path:
    """``IHUB_SENSOR_LIMITS``, or the shipped file."""
    return Path(os.environ.get("IHUB_SENSOR_LIMITS") or SHIPPED_LIMITS)


class Band(BaseModel):
    """The normal band of ``outside``: a value below ``low`` or above ``high`` breaches."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> Band:
        if not self.low < self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        return self


class Alarm(BaseModel):
    """An alarm limit: a name, exactly one condition, a severity, and what operators are told."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:-]+$")
    greater_than: float | None = None
    less_than: float | None = None
    equals: float | None = None
    outside: Band | None = None
    rate_of_change: float | None = Field(default=None, gt=0, description="Largest plausible change per second.")
    severity: Literal["info", "warning", "critical"] = "warning"
    group: str | None = Field(default=None, description="Alarms of one group escalate; defaults to the name.")
    message: str = "{rule}: {sensor_type} {value} {unit} on {unit_id} (threshold {threshold})"
    title: str = "{severity} {sensor_type} alert on {unit_id}"
    cooldown_s: float = Field(default=300.0, ge=0)

    @model_validator(mode="after")
    def _one_condition(self) -> Any:
        given = [name for name in CONDITIONS if getattr(self, name) is not None]
        if len(given) != 1:
            found = ", ".join(given) if given else "none"
            raise ValueError(f"a rule needs exactly one condition of {', '.join(CONDITIONS)} (found {found})")
        return self

    @field_validator("message", "title")
    @classmethod
    def _template(cls, template: str) -> str:
        try:
            names = {
                name.split(".")[0].split("[")[0]
                for _, name, _, _ in string.Formatter().parse(template)
                if name is not None
            }
        except ValueError as error:
            raise ValueError(f"not a valid template: {error}") from None
        unknown = sorted(names - TEMPLATE_FIELDS)
        if unknown or "" in names:
            bad = ", ".join("{" + name + "}" for name in unknown) or "{}"
            raise ValueError(f"unknown placeholder {bad}; use {', '.join(sorted(TEMPLATE_FIELDS))}")
        try:
            template.format_map(_SAMPLE_FIELDS)
        except (ValueError, TypeError, KeyError, IndexError) as error:
            raise ValueError(f"template does not format: {error}") from None
        return template

    @property
    def condition(self) -> str:
        return next(name for name in CONDITIONS if getattr(self, name) is not None)

    @property
    def group_key(self) -> str:
        return self.group or self.name

    @property
    def threshold_text(self) -> str:
        if self.outside is not None:
            return f"{self.outside.low:g}..{self.outside.high:g}"
        value = getattr(self, self.condition)
        return f"{value:g}/s" if self.rate_of_change is not None else f"{value:g}"

    @property
    def below(self) -> float | None:
        """The limit a value must stay above, if this alarm has one."""
        return self.less_than if self.less_than is not None else (self.outside.low if self.outside else None)

    @property
    def above(self) -> float | None:
        """The limit a value must stay below, if this alarm has one."""
        return self.greater_than if self.greater_than is not None else (self.outside.high if self.outside else None)


_SAMPLE_FIELDS: dict[str, Any] = {
    "value": 1.5,
    "unit": "bar",
    "unit_id": "UNIT001",
    "sensor_type": "pressure",
    "threshold": "1",
    "device": "device",
    "source": "mqtt",
    "severity": "warning",
    "rule": "rule",
}


class SensorAlarm(Alarm):
    """An alarm of the limits file; ``inline: false`` leaves it to the window job (a breach must hold)."""

    inline: bool = Field(default=True, description="The collector raises it on single readings.")


class SensorType(BaseModel):
    """What is physically plausible for one sensor type, how often it reports, and its alarm limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gross_min: float
    gross_max: float
    max_step: float = Field(gt=0)
    max_rate_per_s: float = Field(gt=0)
    flatline_s: float = Field(gt=0)
    flatline_tolerance: float = Field(default=0.0, ge=0)
    sample_interval_s: float = Field(gt=0)
    alarm_units: tuple[str, ...] = Field(default=(), description="The alarms judge points in these units only.")
    alarms: tuple[SensorAlarm, ...] = ()

    @model_validator(mode="after")
    def _range(self) -> SensorType:
        if self.gross_min >= self.gross_max:
            raise ValueError(f"gross_min ({self.gross_min:g}) must be below gross_max ({self.gross_max:g})")
        return self

    def window_limit(self, side: Literal["above", "below"]) -> float | None:
        """The limit a whole window is judged by on one side: that of the most severe alarm with one
        (the outermost among equals), so a window-level alert never fires below the inline critical."""
        found = [(SEVERITY_RANK[a.severity], getattr(a, side)) for a in self.alarms if getattr(a, side) is not None]
        if not found:
            return None
        top = max(rank for rank, _ in found)
        limits = [limit for rank, limit in found if rank == top]
        return max(limits) if side == "above" else min(limits)


class LimitsFile(BaseModel):
    """The limits file: ``periodic_sources`` and ``sensor_types``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    periodic_sources: tuple[str, ...] = ("mqtt", "modbus", "historian")
    sensor_types: dict[str, SensorType] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _unique_alarm_names(self) -> LimitsFile:
        seen: dict[str, str] = {}
        for sensor_type, limits in self.sensor_types.items():
            for alarm in limits.alarms:
                if alarm.name in seen:
                    raise ValueError(
                        f"alarm name {alarm.name!r} of {sensor_type} is already used by {seen[alarm.name]};"
                        " cooldowns and records go by name"
                    )
                seen[alarm.name] = sensor_type
        return self


def load_sensor_limits(path: str | os.PathLike[str] | None = None) -> LimitsFile:
    """The limits file at ``path`` (default ``default_limits_path()``), parsed once per version of the file.

    ``ConfigError`` names the file, the line and the field of every problem.
    """
    path = Path(path) if path is not None else default_limits_path()
    try:
        stat = path.stat()
    except OSError:
        stat = None  # let the loader report the unreadable file
    if stat is None:
        return load_model(path, LimitsFile, substitute_env=False)
    return _cached(str(path.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=8)
def _cached(path: str, _size: int, _mtime_ns: int) -> LimitsFile:
    return load_model(path, LimitsFile, substitute_env=False)
