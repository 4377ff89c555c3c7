"""One retry policy for everything that talks to another system: HTTP sources, notifiers, field devices.

Built on tenacity (well kept, sync and async alike) rather than hand-written loops, so every caller
gets the same semantics:

- **Exponential backoff** ``initial_s * factor ** n`` capped at ``max_delay_s``, with optional jitter
  (a fraction of the delay, so many clients retrying together do not stampede a recovering server).
- **The server's word first**: an exception carrying ``retry_after_s`` (a 429 or 503 with
  ``Retry-After``) waits that long, capped at ``max_retry_after_s``.
- **A budget by time and by count**: a retry stops when the next wait would overrun ``budget_s`` since
  the first attempt, or when ``max_attempts`` failures have been *counted*. A failure that carries
  ``retry_after_s`` is the server asking us to slow down, not a fault: it is bounded by the time budget
  only, so a rate-limited source slows a run down instead of failing it.

Nothing here imports Dagster: the edge collector uses it too and must run without the orchestrator.

Request-style use (bounded)::

    for attempt in policy.retrying(retry_if=is_transient):
        with attempt:
            answer = send()

Reconnect-style use (unbounded, reset after a success)::

    backoff = policy.backoff()
    while running:
        try:
            await connect()
            backoff.reset()
        except OSError:
            await asyncio.sleep(backoff.next())
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import tenacity

__all__ = ["Backoff", "RetryPolicy", "retry_after_of"]


def retry_after_of(error: BaseException | None) -> float | None:
    """The wait a failure asks for (its ``retry_after_s``), or None when it asks for none."""
    value = getattr(error, "retry_after_s", None)
    return float(value) if isinstance(value, (int, float)) and value >= 0 else None


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry; see the module docstring for the rules."""

    max_attempts: int | None = 4
    budget_s: float | None = None
    initial_s: float = 0.5
    factor: float = 2.0
    max_delay_s: float = 30.0
    jitter: float = 0.0
    max_retry_after_s: float = 60.0

    def __post_init__(self) -> None:
        if self.max_attempts is not None and self.max_attempts < 1:
            raise ValueError(f"max_attempts must be 1 or more (or None for no count limit), got {self.max_attempts}")
        if self.max_attempts is None and self.budget_s is None:
            raise ValueError("a retry policy needs max_attempts, budget_s or both; neither would retry forever")
        if self.budget_s is not None and self.budget_s < 0:
            raise ValueError(f"budget_s must be 0 or more, got {self.budget_s}")
        for name in ("initial_s", "max_delay_s", "max_retry_after_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be 0 or more, got {getattr(self, name)}")
        if self.factor < 1:
            raise ValueError(f"factor must be 1 or more, got {self.factor}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be a fraction between 0 and 1, got {self.jitter}")

    # -- the schedule --------------------------------------------------------------------------------

    def delay(self, failures: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait after the ``failures``-th failure (1-based)."""
        if retry_after_s is not None:
            return min(retry_after_s, self.max_retry_after_s)
        base = min(self.initial_s * self.factor ** max(0, failures - 1), self.max_delay_s)
        if self.jitter:
            base *= 1 - self.jitter + 2 * self.jitter * random.random()
        return base

    def backoff(self) -> Backoff:
        """A reconnect schedule: ``next()`` gives the following wait, ``reset()`` starts over."""
        return Backoff(self)

    # -- tenacity ------------------------------------------------------------------------------------

    def retrying(
        self,
        *,
        retry_if: Callable[[BaseException], bool],
        sleep: Callable[[float], None] = time.sleep,
        before_sleep: Callable[[BaseException, int, float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> tenacity.Retrying:
        """A tenacity ``Retrying`` that retries exceptions for which ``retry_if`` is true, then re-raises
        the last one. ``before_sleep(error, failures, wait_s)`` is called before each wait (for logs)."""
        return tenacity.Retrying(sleep=sleep, **self._arguments(retry_if, before_sleep, clock))

    def async_retrying(
        self,
        *,
        retry_if: Callable[[BaseException], bool],
        sleep: Callable[[float], Any] = asyncio.sleep,
        before_sleep: Callable[[BaseException, int, float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> tenacity.AsyncRetrying:
        """The same as ``retrying``, for coroutines (``async for attempt in ...: with attempt: ...``)."""
        return tenacity.AsyncRetrying(sleep=sleep, **self._arguments(retry_if, before_sleep, clock))

    def _arguments(self, retry_if, before_sleep, clock) -> dict[str, Any]:
        budget = _Budget(self, clock)

        # tenacity computes the wait before it asks whether to stop, so the failure is counted here.
        def wait(state: tenacity.RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            return budget.record(error)

        def stop(state: tenacity.RetryCallState) -> bool:
            return budget.exhausted(state.upcoming_sleep)

        def announce(state: tenacity.RetryCallState) -> None:
            if before_sleep is not None and state.outcome is not None and state.next_action is not None:
                before_sleep(state.outcome.exception(), budget.counted, state.next_action.sleep)

        return {
            "retry": tenacity.retry_if_exception(retry_if),
            "wait": wait,
            "stop": stop,
            "before_sleep": announce,
            "reraise": True,
        }


@dataclass
class _Budget:
    """What one call has spent: counted failures and time since its first attempt."""

    policy: RetryPolicy
    clock: Callable[[], float]
    counted: int = 0
    started: float = field(default=0.0)

    def __post_init__(self) -> None:
        self.started = self.clock()

    def record(self, error: BaseException | None) -> float:
        """Count a failure (unless the server asked to wait) and return the wait before the next try."""
        retry_after = retry_after_of(error)
        if retry_after is None:
            self.counted += 1
        return self.policy.delay(max(1, self.counted), retry_after)

    def exhausted(self, next_wait_s: float) -> bool:
        policy = self.policy
        if policy.max_attempts is not None and self.counted >= policy.max_attempts:
            return True
        return policy.budget_s is not None and self.clock() - self.started + next_wait_s > policy.budget_s


class Backoff:
    """A reconnect schedule from a policy: waits grow with each failure and start over after a success."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.failures = 0

    def next(self) -> float:
        self.failures += 1
        return self.policy.delay(self.failures)

    def reset(self) -> None:
        self.failures = 0
