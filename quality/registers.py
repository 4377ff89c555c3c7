"""Consumption from meter registers: the rollover rule, vectorized.

A meter's register (index) counts cubic metres on N digits and starts again at 0 after 10^N − 1. Between
two readings the consumption is ``current − previous``; when the register went *down*, either it rolled
over, and the consumption is ``(10^N − previous) + current`` (shared/DOMAIN.md), or something else happened
(a misread, a reversal, a replaced meter) that no consumption can be computed from.

Which one: a rollover means the register passed through 10^N, so the volume it implies is small next to
the register's range (a 5-digit register going 99,678 → 00,123 consumed 445 m³, 0.4 % of 100,000). A
register going 45,210 → 44,980 would have to have consumed 99,770 m³, nearly the whole dial, between two
daily readings: implausible as a rollover, so the decrease is rejected with its reason. The bound is
``max_rollover_share`` of 10^N (default 10 %), far above any customer's use between readings and far
below what a mid-dial drop implies.

A rejected reading is left out of the chain: the next reading is compared with the last one kept, so a
single misread costs one day, not two wrong ones.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

__all__ = ["DEFAULT_MAX_ROLLOVER_SHARE", "Consumption", "consumption_from_registers", "rollover_consumption"]

DEFAULT_MAX_ROLLOVER_SHARE = 0.1
_DECIMALS = 3  # registers are read to the litre


@dataclass(frozen=True)
class Consumption:
    """Per pair of readings: the consumption (NaN where none can be computed), whether the register
    rolled over, and whether the pair is a decrease that is not a rollover."""

    consumption_m3: np.ndarray
    rollover: np.ndarray
    implausible_decrease: np.ndarray
    rollover_m3: np.ndarray  # what a rollover would have meant, for the reason text


def rollover_consumption(
    previous: np.ndarray,
    current: np.ndarray,
    digits: np.ndarray,
    max_rollover_share: float = DEFAULT_MAX_ROLLOVER_SHARE,
) -> Consumption:
    """Consumption between ``previous`` and ``current`` registers of ``digits``-digit meters, element-wise.

    NaN ``previous`` (no earlier reading) gives NaN consumption and neither flag.
    """
    if not 0 < max_rollover_share < 1:
        raise ValueError(f"max_rollover_share must be in (0, 1), got {max_rollover_share}")
    previous = np.asarray(previous, dtype=np.float64)
    current = np.asarray(current, dtype=np.float64)
    modulus = 10.0 ** np.asarray(digits, dtype=np.float64)
    known = ~np.isnan(previous)
    decrease = known & (current < previous)
    wrap = np.round(modulus - previous + current, _DECIMALS)
    rollover = decrease & (wrap <= max_rollover_share * modulus)
    implausible = decrease & ~rollover
    used = np.where(rollover, wrap, np.where(decrease, np.nan, np.round(current - previous, _DECIMALS)))
    return Consumption(used, rollover, implausible, wrap)


def consumption_from_registers(
    readings: pl.DataFrame, *, max_rollover_share: float = DEFAULT_MAX_ROLLOVER_SHARE
) -> pl.DataFrame:
    """Consumption of each reading since the meter's previous kept reading.

    ``readings`` has ``meter_id``, ``reading_date``, ``register_m3`` and ``register_digits`` (any order,
    one row per meter and date). Returned, in (meter, date) order, with ``previous_reading_date``,
    ``previous_register_m3``, ``consumption_m3`` (null for a meter's first reading), ``register_rollover``
    and ``problem``: null for a usable reading, else why it is not (a register outside its dial, or a
    decrease that is not a rollover, naming meter, day, previous and current). Readings with a problem are
    left out when the next reading's previous is chosen.
    """
    work = readings.sort("meter_id", "reading_date").with_row_index("_i")
    modulus = 10.0 ** work["register_digits"].cast(pl.Float64)
    register = work["register_m3"]
    outside = (register < 0) | (register >= modulus)
    problems: dict[int, str] = {
        int(i): (f"meter {m} on {d}: register {r:,.3f} m³ is outside its {n}-digit dial (0 to {10**n - 1:,})")
        for i, m, d, r, n in work.filter(outside)
        .select("_i", "meter_id", "reading_date", "register_m3", "register_digits")
        .iter_rows()
    }
    while True:
        chain = _chain(work.filter(~pl.col("_i").is_in(list(problems))), max_rollover_share)
        bad = chain.filter(pl.col("_implausible")).group_by("meter_id").agg(pl.all().sort_by("reading_date").first())
        if bad.height == 0:
            break
        # One per meter and pass: leaving a reading out changes its successor's previous, so judge again.
        for row in bad.iter_rows(named=True):
            problems[row["_i"]] = (
                f"meter {row['meter_id']} on {row['reading_date']}: register went down from "
                f"{row['previous_register_m3']:,.3f} m³ ({row['previous_reading_date']}) to "
                f"{row['register_m3']:,.3f} m³; "
                f"as a rollover of its {row['register_digits']}-digit register that would mean "
                f"{row['_rollover_m3']:,.3f} m³ used, more than {max_rollover_share:.0%} of the dial, so it is not one "
                "(a misread, a reversal or a replaced meter); no consumption is computed from it"
            )
    result = work.join(
        chain.select("_i", "previous_reading_date", "previous_register_m3", "consumption_m3", "register_rollover"),
        on="_i",
        how="left",
    ).with_columns(
        pl.col("register_rollover").fill_null(False),
        problem=pl.col("_i").replace_strict(problems, default=None, return_dtype=pl.String),
    )
    return result.sort("_i").drop("_i")


def _chain(kept: pl.DataFrame, max_rollover_share: float) -> pl.DataFrame:
    """Each kept reading against the one before it of the same meter."""
    chained = kept.with_columns(
        previous_reading_date=pl.col("reading_date").shift(1).over("meter_id"),
        previous_register_m3=pl.col("register_m3").shift(1).over("meter_id"),
    )
    outcome = rollover_consumption(
        chained["previous_register_m3"].fill_null(np.nan).to_numpy(),
        chained["register_m3"].to_numpy(),
        chained["register_digits"].to_numpy(),
        max_rollover_share,
    )
    return chained.with_columns(
        consumption_m3=pl.Series(outcome.consumption_m3).fill_nan(None),
        register_rollover=pl.Series(outcome.rollover),
        _implausible=pl.Series(outcome.implausible_decrease),
        _rollover_m3=pl.Series(outcome.rollover_m3),
    )
