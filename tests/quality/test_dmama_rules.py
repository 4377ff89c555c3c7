"""DMAMA's rules judged on their own: what each asks of a window at a given moment."""

from datetime import UTC, datetime, timedelta

from quality.dmama import FLOW_RULES
from quality.gx import CheckInput

HOUR = datetime(2026, 3, 2, 3, tzinfo=UTC)
FRESH = next(rule for rule in FLOW_RULES if rule.name == "fresh")


def _asked(now: datetime) -> list[dict]:
    import great_expectations as gx

    check = CheckInput(lake=None, window=(HOUR, HOUR + timedelta(hours=1)), now=now)
    return [{"column": e.column, "min_value": e.min_value} for e in FRESH.expectations(gx.expectations, check)]


def test_in_the_first_quarter_of_the_open_hour_no_reading_is_due_yet():
    # The 03:00 reading covers 03:00–03:15 and may come 15 minutes late: nothing is due at 03:14.
    assert _asked(HOUR + timedelta(minutes=14)) == []


def test_later_in_the_hour_the_newest_reading_may_be_at_most_two_intervals_old():
    now = HOUR + timedelta(minutes=40)
    assert _asked(now) == [{"column": "timestamp", "min_value": now - timedelta(minutes=30)}]
    # A closed hour is judged against its end.
    assert _asked(HOUR + timedelta(hours=5)) == [{"column": "timestamp", "min_value": HOUR + timedelta(minutes=30)}]
