"""The rollover rule: consumption across a register's rollover, and decreases that are not one."""

from __future__ import annotations

from datetime import date

import numpy as np
import polars as pl
import pytest

from quality.registers import consumption_from_registers, rollover_consumption


def readings(meter: str, registers: list[float], digits: int = 5, first_day: int = 1) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "meter_id": [meter] * len(registers),
            "reading_date": [date(2026, 3, first_day + i) for i in range(len(registers))],
            "register_m3": registers,
            "register_digits": [digits] * len(registers),
        }
    )


def test_the_5_digit_example_rolls_over_for_445_m3():
    outcome = rollover_consumption(np.array([99_678.0]), np.array([123.0]), np.array([5]))
    assert outcome.consumption_m3.tolist() == [445.0]
    assert outcome.rollover.tolist() == [True] and outcome.implausible_decrease.tolist() == [False]


def test_increases_decreases_and_missing_previous_element_wise():
    outcome = rollover_consumption(
        np.array([100.0, 45_210.0, np.nan, 9_990.5, 99_000.0]),
        np.array([102.25, 44_980.0, 7.0, 4.5, 98_999.0]),
        np.array([5, 5, 5, 4, 5]),
    )
    used = outcome.consumption_m3
    assert used[0] == 2.25 and used[3] == 14.0  # 10,000 − 9,990.5 + 4.5 on a 4-digit register
    assert np.isnan(used[1]) and np.isnan(used[2]) and np.isnan(used[4])
    assert outcome.rollover.tolist() == [False, False, False, True, False]
    # A drop of 1 m³ would mean 99,999 m³ consumed as a rollover: a reversal, not a rollover.
    assert outcome.implausible_decrease.tolist() == [False, True, False, False, True]


def test_the_share_of_the_dial_decides_between_rollover_and_decrease():
    previous, current, digits = np.array([80_000.0]), np.array([5_000.0]), np.array([5])
    assert rollover_consumption(previous, current, digits, 0.1).implausible_decrease.tolist() == [True]
    loose = rollover_consumption(previous, current, digits, 0.3)
    assert loose.rollover.tolist() == [True] and loose.consumption_m3.tolist() == [25_000.0]
    with pytest.raises(ValueError, match="max_rollover_share"):
        rollover_consumption(previous, current, digits, 1.0)


def test_a_frame_gets_consumption_flags_and_reasons_per_meter():
    frame = pl.concat(
        [
            readings("M-0001-0003", [99_600.0, 99_678.0, 123.0, 130.5]),
            readings("M-0002-0004", [45_210.0, 44_980.0, 45_300.0]),
        ]
    ).reverse()  # order must not matter
    out = consumption_from_registers(frame)
    rows = {(r["meter_id"], r["reading_date"].day): r for r in out.to_dicts()}
    rolled = rows[("M-0001-0003", 3)]
    assert (rolled["consumption_m3"], rolled["register_rollover"], rolled["problem"]) == (445.0, True, None)
    assert rows[("M-0001-0003", 4)]["consumption_m3"] == 7.5
    assert rows[("M-0001-0003", 1)]["consumption_m3"] is None  # a meter's first reading has no previous
    refused = rows[("M-0002-0004", 2)]
    assert refused["consumption_m3"] is None and refused["register_rollover"] is False
    assert refused["problem"].startswith(
        "meter M-0002-0004 on 2026-03-02: register went down from 45,210.000 m³ (2026-03-01) to 44,980.000 m³"
    )
    # The day after a refused reading is measured from the last one kept: two days' use, not a jump.
    after = rows[("M-0002-0004", 3)]
    assert (after["previous_reading_date"], after["consumption_m3"]) == (date(2026, 3, 1), 90.0)


def test_registers_outside_their_dial_are_refused_and_skipped():
    out = consumption_from_registers(readings("M-0001-0001", [9_000.0, 12_000.0, 9_010.0], digits=4))
    assert (
        out["problem"][1]
        == "meter M-0001-0001 on 2026-03-02: register 12,000.000 m³ is outside its 4-digit dial (0 to 9,999)"
    )
    assert out["consumption_m3"].to_list() == [None, None, 10.0]


def test_a_run_of_low_readings_is_refused_one_by_one_until_the_register_recovers():
    out = consumption_from_registers(readings("M-0003-0002", [500.0, 480.0, 470.0, 510.0]))
    assert out["problem"].is_null().to_list() == [True, False, False, True]
    assert out["consumption_m3"].to_list() == [None, None, None, 10.0]
