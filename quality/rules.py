"""Rules every source needs, written once: keys present, keys unique, figures not negative.

A source module declares which columns and why (the why is what the UI and docs/quality.md show); the
expectations themselves live here, so a fix to how uniqueness is checked reaches every table at once.
"""

from __future__ import annotations

from quality.gx import Rule


def _listed(columns: tuple[str, ...]) -> str:
    return columns[0] if len(columns) == 1 else f"{', '.join(columns[:-1])} and {columns[-1]}"


def keys_present(*columns: str) -> Rule:
    """Every row has a value in each of ``columns`` (the columns that say what a row is about)."""
    return Rule(
        name="keys_present",
        description=f"Every row names its {_listed(columns)}.",
        expectations=lambda gxe, _: [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in columns],
    )


def unique(*columns: str, name: str = "unique_key", why: str = "a re-run never doubles a row") -> Rule:
    """No two rows share the values of ``columns``; ``name`` keeps each table's check key stable."""
    return Rule(
        name=name,
        description=f"No two rows share ({', '.join(columns)}): {why}.",
        expectations=lambda gxe, _: [
            gxe.ExpectCompoundColumnsToBeUnique(column_list=list(columns))
            if len(columns) > 1
            else gxe.ExpectColumnValuesToBeUnique(column=columns[0])
        ],
    )


def non_negative(*columns: str, why: str, name: str = "figures_non_negative") -> Rule:
    """Each of ``columns`` is 0 or more."""
    return Rule(
        name=name,
        description=f"{', '.join(columns)} are 0 or more ({why}).",
        expectations=lambda gxe, _: [gxe.ExpectColumnValuesToBeBetween(column=c, min_value=0) for c in columns],
    )
