"""The shared retry policy: counts, budgets, Retry-After, sync and async alike."""

import asyncio

import pytest

from resources.retry import RetryPolicy


class Transient(Exception):
    pass


class RateLimited(Exception):
    def __init__(self, wait_s: float) -> None:
        super().__init__(f"429, retry after {wait_s} s")
        self.retry_after_s = wait_s


class FakeClock:
    """Time that moves only when the policy sleeps, so budgets are tested exactly and instantly."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def run(policy: RetryPolicy, outcomes: list, clock: FakeClock):
    calls = []

    def attempt():
        calls.append(clock.now)
        outcome = outcomes.pop(0)
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    for retrying in policy.retrying(
        retry_if=lambda e: isinstance(e, Transient | RateLimited), sleep=clock.sleep, clock=clock
    ):
        with retrying:
            result = attempt()
    return result, calls


def test_exponential_backoff_then_success():
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=4, initial_s=0.5, factor=2.0)
    result, calls = run(policy, [Transient(), Transient(), Transient(), "ok"], clock)
    assert result == "ok"
    assert clock.sleeps == [0.5, 1.0, 2.0]
    assert len(calls) == 4


def test_gives_up_after_max_attempts_with_the_last_error():
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=3, initial_s=0.1)
    with pytest.raises(Transient):
        run(policy, [Transient(), Transient(), Transient(), "never"], clock)
    assert clock.sleeps == pytest.approx([0.1, 0.2])


def test_errors_not_retryable_are_raised_at_once():
    clock = FakeClock()
    with pytest.raises(ValueError):
        run(RetryPolicy(max_attempts=5), [ValueError("bad request")], clock)
    assert clock.sleeps == []


def test_rate_limits_are_bounded_by_time_not_by_count():
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=2, budget_s=30, max_retry_after_s=60)
    result, _ = run(policy, [RateLimited(1.0)] * 10 + ["ok"], clock)
    assert result == "ok"
    assert clock.sleeps == [1.0] * 10  # ten 429s and no failure counted against the two attempts


def test_budget_stops_before_a_wait_that_would_overrun_it():
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=None, budget_s=5.0)
    with pytest.raises(RateLimited):
        run(policy, [RateLimited(2.0)] * 10, clock)
    assert clock.sleeps == [2.0, 2.0]  # a third wait would end at 6 s, past the 5 s budget


def test_retry_after_is_capped():
    policy = RetryPolicy(max_retry_after_s=3.0)
    assert policy.delay(1, retry_after_s=120.0) == 3.0


def test_jitter_stays_within_its_fraction():
    policy = RetryPolicy(initial_s=1.0, jitter=0.2)
    delays = [policy.delay(1) for _ in range(200)]
    assert min(delays) >= 0.8 and max(delays) <= 1.2
    assert len(set(delays)) > 1


def test_backoff_grows_to_its_cap_and_resets():
    backoff = RetryPolicy(initial_s=1.0, factor=2.0, max_delay_s=5.0).backoff()
    assert [backoff.next() for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    backoff.reset()
    assert backoff.next() == 1.0


def test_async_retrying_uses_the_same_rules():
    clock = FakeClock()
    policy = RetryPolicy(max_attempts=3, initial_s=0.25)
    outcomes = [Transient(), Transient(), "ok"]

    async def sleep(seconds: float) -> None:
        clock.sleep(seconds)

    async def main():
        async for attempt in policy.async_retrying(
            retry_if=lambda e: isinstance(e, Transient), sleep=sleep, clock=clock
        ):
            with attempt:
                outcome = outcomes.pop(0)
                if isinstance(outcome, BaseException):
                    raise outcome
                return outcome

    assert asyncio.run(main()) == "ok"
    assert clock.sleeps == [0.25, 0.5]


def test_a_policy_that_could_retry_forever_is_refused():
    with pytest.raises(ValueError, match="forever"):
        RetryPolicy(max_attempts=None, budget_s=None)
