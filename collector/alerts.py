"""Threshold alerts evaluated in line, on every batch a reader emits, before it is spooled.

The shipped rules are the inline alarms of the sensor limits file (``resources/sensor_limits.yaml``, the
one the window checks read too, see ``resources.sensor_limits``). A rule file (YAML) lists rules; each
matches a sensor type, or one exact point (``unit_id`` + ``sensor_type``), and has exactly one condition::

    rules:
      - name: temperature_high
        sensor_type: temperature
        greater_than: 35          # or less_than, equals, outside: {low, high}, rate_of_change (per second)
        severity: warning         # info, warning or critical
        group: temperature        # optional: rules of a group escalate instead of all firing
        message: "High temperature alert: {value:.1f}°C on {unit_id}"
        cooldown_s: 300           # per (rule, point): no repeat within this many seconds

Within a ``group`` only the most severe breached rule raises for a point (39 °C is critical, not also a
warning). A rule naming a ``unit_id`` replaces, for that point, the sensor-type rules of its group, so a
unit that normally runs hot gets its own limit; ``units`` restricts a rule to points in those units
(a flow limit in L/min must not judge a pump station's flow in m³/h). Only GOOD and UNCERTAIN points with a value are
evaluated. Message and title templates may use ``{value}``, ``{unit}``, ``{unit_id}``,
``{sensor_type}``, ``{threshold}``, ``{device}``, ``{source}``, ``{severity}`` and ``{rule}``.

``AlertEngine.evaluate`` is synchronous and cheap (one dict lookup per point, no I/O); alerts are
queued and sent by ``AlertEngine.run``, a background task, so ingestion never waits on the network.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from collector.points import GOOD, UNCERTAIN, Point
from resources.notifications import Notification, NotificationOutcome
from resources.sensor_limits import SEVERITY_RANK, Alarm, Band, LimitsFile
from resources.yaml_files import ConfigError, load_yaml, validate_model

__all__ = [
    "Alert",
    "AlertEngine",
    "Band",
    "Rule",
    "RuleFile",
    "load_rules",
    "rules_from_limits",
]

_EVALUATED = frozenset({GOOD, UNCERTAIN})
_LATENCY_SAMPLES = 1000
_RECENT_ALERTS = 20

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------- rules


class Rule(Alarm):
    """One alert rule: an alarm (exactly one condition) for a sensor type or for one exact point."""

    sensor_type: str = Field(min_length=1)
    unit_id: str | None = Field(default=None, description="Set to match one exact point instead of a sensor type.")
    units: frozenset[str] | None = Field(
        default=None, description="Match only points in one of these units (e.g. flow in L/min, not m³/h)."
    )


class RuleFile(BaseModel):
    """A rule file: ``rules:`` and the list."""

    model_config = ConfigDict(extra="forbid")

    rules: list[Rule] = Field(default_factory=list)


def load_rules(path: str | os.PathLike[str]) -> list[Rule]:
    """The rules in ``path``: a rule file (``rules:``) or a sensor limits file (``sensor_types:``, whose
    inline alarms become rules). ``ConfigError`` names the file, line and field of every problem."""
    document = load_yaml(path)
    data = document.data if document.data is not None else {"rules": []}
    if isinstance(data, dict) and "sensor_types" in data:
        limits = validate_model(LimitsFile, data, document)
        assert limits is not None  # validate_model raises when no problem list is given
        return rules_from_limits(limits)
    parsed = validate_model(RuleFile, data, document)
    assert parsed is not None
    first: dict[str, int] = {}
    problems = []
    for index, rule in enumerate(parsed.rules):
        if rule.name in first:
            line = document.line_of(("rules", first[rule.name]))
            message = f"rule name {rule.name!r} is already used on line {line}; cooldowns and records go by name"
            problems.append(document.problem(("rules", index, "name"), message))
        first.setdefault(rule.name, index)
    if problems:
        raise ConfigError(problems)
    return parsed.rules


def rules_from_limits(limits: LimitsFile) -> list[Rule]:
    """The inline rules of a sensor limits file: each alarm not marked ``inline: false``, for its sensor
    type and (when the type names them) its alarm units."""
    rules = []
    for sensor_type, limit in limits.sensor_types.items():
        units = frozenset(limit.alarm_units) if limit.alarm_units else None
        for alarm in limit.alarms:
            if alarm.inline:
                fields = alarm.model_dump(exclude={"inline"})
                rules.append(Rule(sensor_type=sensor_type, units=units, **fields))
    return rules


# ---------------------------------------------------------------------------------------- alerts


@dataclass(frozen=True, slots=True)
class Alert:
    """A raised alert: which rule, which point, the value that breached, and when."""

    rule: str
    severity: str
    point_key: tuple[str, str]  # (unit_id, sensor_type)
    value: float
    unit: str
    threshold: str
    title: str
    message: str
    source: str
    device: str
    received_ts: datetime
    raised_at: datetime

    def notification(self) -> Notification:
        return Notification(
            severity=self.severity,
            title=self.title,
            message=self.message,
            source=self.source,
            unit_id=self.point_key[0],
            sensor_type=self.point_key[1],
            value=self.value,
            at=self.received_ts,
        )


class SendsNotifications(Protocol):
    async def send_async(self, notification: Notification) -> NotificationOutcome: ...


@dataclass(frozen=True, slots=True)
class _Compiled:
    """The rules of one point, ready to run: groups of rules, most severe first."""

    groups: tuple[tuple[Rule, ...], ...]
    needs_previous: bool


_NO_RULES = _Compiled(groups=(), needs_previous=False)


class AlertEngine:
    """Evaluates points against rules and hands alerts to a notifier in the background.

    ``clock`` (seconds since the epoch) stamps ``raised_at`` and drives cooldowns. Call ``evaluate``
    from the event loop that runs ``run()``; alerts raised while ``run`` is not running wait in the
    queue (up to ``queue_size``; beyond, they are dropped and counted).
    """

    def __init__(
        self,
        rules: Sequence[Rule],
        notifier: SendsNotifications | None,
        clock: Callable[[], float] = time.time,
        *,
        queue_size: int = 10_000,
        concurrency: int = 32,
    ) -> None:
        self.rules = list(rules)
        self.notifier = notifier
        self._clock = clock
        self._concurrency = concurrency
        self._by_type: dict[str, list[Rule]] = {}
        self._by_point: dict[tuple[str, str], list[Rule]] = {}
        for rule in self.rules:
            if rule.unit_id is None:
                self._by_type.setdefault(rule.sensor_type, []).append(rule)
            else:
                self._by_point.setdefault((rule.unit_id, rule.sensor_type), []).append(rule)
        self._compiled: dict[tuple[str, str], _Compiled] = {}
        self._previous: dict[tuple[str, str], tuple[int, float]] = {}
        self._last_raised: dict[tuple[str, str, str], float] = {}
        self._queue: asyncio.Queue[Alert] = asyncio.Queue(maxsize=queue_size)
        self._inflight: set[asyncio.Task[None]] = set()
        self._counts = {"evaluated": 0, "raised": 0, "suppressed": 0, "dropped": 0, "sent": 0, "send_failed": 0}
        self._by_severity = dict.fromkeys(SEVERITY_RANK, 0)
        self._latencies_ms: deque[float] = deque(maxlen=_LATENCY_SAMPLES)
        self._recent: deque[Alert] = deque(maxlen=_RECENT_ALERTS)

    # ------------------------------------------------------------------------------ evaluation

    def evaluate(self, points: Iterable[Point]) -> list[Alert]:
        """The alerts these points raise (also queued for the notifier). No I/O, no waiting."""
        raised: list[Alert] = []
        compiled = self._compiled
        evaluated = 0
        for point in points:
            if point.quality not in _EVALUATED or point.value is None:
                continue
            key = (point.unit_id, point.sensor_type)
            plan = compiled.get(key)
            if plan is None:
                plan = compiled[key] = self._compile(key)
            if not plan.groups:
                continue
            evaluated += 1
            value = float(point.value)
            if math.isnan(value):
                continue
            rate = self._rate(key, point, value) if plan.needs_previous else None
            for group in plan.groups:
                for rule in group:
                    if rule.units is not None and point.unit not in rule.units:
                        continue
                    if _breached(rule, value, rate):
                        alert = self._raise(rule, key, point, value)
                        if alert is not None:
                            raised.append(alert)
                        break  # the most severe breach of a group speaks for it
        self._counts["evaluated"] += evaluated
        return raised

    def _compile(self, key: tuple[str, str]) -> _Compiled:
        exact = self._by_point.get(key, [])
        replaced = {rule.group_key for rule in exact}
        rules = exact + [rule for rule in self._by_type.get(key[1], []) if rule.group_key not in replaced]
        if not rules:
            return _NO_RULES
        groups: dict[str, list[Rule]] = {}
        for rule in rules:
            groups.setdefault(rule.group_key, []).append(rule)
        ordered = tuple(tuple(sorted(members, key=lambda r: -SEVERITY_RANK[r.severity])) for members in groups.values())
        return _Compiled(groups=ordered, needs_previous=any(r.rate_of_change is not None for r in rules))

    def _rate(self, key: tuple[str, str], point: Point, value: float) -> float | None:
        previous = self._previous.get(key)
        moment = point.source_ts_us
        if previous is None or moment > previous[0]:
            self._previous[key] = (moment, value)
        if previous is None or moment <= previous[0]:
            return None  # first reading, a duplicate or an older one: no rate to judge
        return abs(value - previous[1]) / ((moment - previous[0]) / 1_000_000)

    def _raise(self, rule: Rule, key: tuple[str, str], point: Point, value: float) -> Alert | None:
        now = self._clock()
        cooldown_key = (rule.name, *key)
        last = self._last_raised.get(cooldown_key)
        if last is not None and now - last < rule.cooldown_s:
            self._counts["suppressed"] += 1
            return None
        self._last_raised[cooldown_key] = now
        fields = {
            "value": value,
            "unit": point.unit,
            "unit_id": point.unit_id,
            "sensor_type": point.sensor_type,
            "threshold": rule.threshold_text,
            "device": point.device,
            "source": point.source,
            "severity": rule.severity,
            "rule": rule.name,
        }
        alert = Alert(
            rule=rule.name,
            severity=rule.severity,
            point_key=key,
            value=value,
            unit=point.unit,
            threshold=rule.threshold_text,
            title=rule.title.format_map(fields),
            message=rule.message.format_map(fields),
            source=point.source,
            device=point.device,
            received_ts=point.received_ts,
            raised_at=datetime.fromtimestamp(now, UTC),
        )
        self._counts["raised"] += 1
        self._by_severity[rule.severity] += 1
        self._recent.append(alert)
        try:
            self._queue.put_nowait(alert)
        except asyncio.QueueFull:
            self._counts["dropped"] += 1
            log.error("alerts: queue full, dropped %s on %s %s: %s", rule.name, *key, alert.message)
        return alert

    # ------------------------------------------------------------------------------ dispatch

    async def run(self) -> None:
        """Send queued alerts until cancelled, up to ``concurrency`` at once, so one slow channel does
        not hold back the next alert."""
        slots = asyncio.Semaphore(self._concurrency)
        while True:
            alert = await self._queue.get()
            await slots.acquire()
            task = asyncio.create_task(self._send(alert), name=f"alert-{alert.rule}")
            self._inflight.add(task)

            def done(finished: asyncio.Task[None]) -> None:
                self._inflight.discard(finished)
                slots.release()
                self._queue.task_done()

            task.add_done_callback(done)

    async def drain(self, timeout_s: float = 5.0) -> bool:
        """Wait (up to ``timeout_s``) until every queued alert has been sent; False if some were not."""
        try:
            await asyncio.wait_for(self._queue.join(), timeout_s)
        except TimeoutError:
            return False
        return True

    async def _send(self, alert: Alert) -> None:
        if self.notifier is None:
            return
        try:
            outcome = await self.notifier.send_async(alert.notification())
        except Exception:  # a notifier bug must not kill the dispatcher
            self._counts["send_failed"] += 1
            log.exception("alerts: notifier raised while sending %s on %s %s", alert.rule, *alert.point_key)
            return
        self._counts["sent"] += 1
        if not outcome.delivered:
            self._counts["send_failed"] += 1
        self._latencies_ms.append((time.time() - alert.received_ts.timestamp()) * 1000)

    # ------------------------------------------------------------------------------ health

    def health(self) -> dict[str, Any]:
        """Counters, queue depth, recent alerts and receipt-to-delivered latency over the last sends."""
        latencies = sorted(self._latencies_ms)
        return {
            "rules": len(self.rules),
            **self._counts,
            "by_severity": dict(self._by_severity),
            "queued": self._queue.qsize(),
            "sending": len(self._inflight),
            "latency_ms_p50": _percentile(latencies, 0.50),
            "latency_ms_p99": _percentile(latencies, 0.99),
            "recent": [
                {
                    "rule": a.rule,
                    "severity": a.severity,
                    "unit_id": a.point_key[0],
                    "sensor_type": a.point_key[1],
                    "value": a.value,
                    "raised_at": a.raised_at.isoformat(timespec="milliseconds"),
                }
                for a in list(self._recent)[-5:]
            ],
        }

    async def aclose(self) -> None:
        """Cancel sends still running (call ``drain`` first to let them finish)."""
        for task in list(self._inflight):
            task.cancel()
        for task in list(self._inflight):
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _breached(rule: Rule, value: float, rate: float | None) -> bool:
    if rule.greater_than is not None:
        return value > rule.greater_than
    if rule.less_than is not None:
        return value < rule.less_than
    if rule.equals is not None:
        return value == rule.equals
    if rule.outside is not None:
        return value < rule.outside.low or value > rule.outside.high
    return rate is not None and rate > rule.rate_of_change  # type: ignore[operator]


def _percentile(ordered: list[float], fraction: float) -> float | None:
    if not ordered:
        return None
    return round(ordered[min(len(ordered) - 1, int(fraction * len(ordered)))], 2)
