"""docs/quality.md, generated from the checks the code location declares, so the page cannot drift.

Run ``python -m quality.rules_doc`` after adding or changing a rule; ``tests/quality/test_rules_doc.py``
fails while the page on disk differs from what the declarations say.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import dagster as dg

PAGE = Path(__file__).resolve().parent.parent / "docs" / "quality.md"

INTRODUCTION = """\
# Data quality: every rule, where it runs, and what happens when it fails

This page is generated from the asset checks the code location declares (`python -m quality.rules_doc`);
a test fails when it is stale. Rules live in `quality/`, one module per source, and run in three places:

1. **At ingestion** (`quality/conform.py`): a row that cannot be typed for its lake table (a missing
   required field, a value of the wrong type or out of the type's range, a repeated key, a time outside
   the requested window) is kept in the `rejects` layer with the field, the reason and the raw payload.
   For every partition `received = written + rejected`.
2. **As asset checks** after each materialization: a Great Expectations suite per table (`quality/gx.py`)
   with one result per rule (unexpected count, observed value and examples in the metadata), and the
   time-series and cross-table rules below. A long window (a backfill) is validated a day or a
   partition at a time and merged per rule, so a month never sits in memory as one frame.
3. **On every SCADA point** (`quality/qartod.py`): a QARTOD flag per test and overall (1 pass,
   2 not evaluated, 3 suspect, 4 fail, 9 missing), computed column-wise from the same sensor limits the
   collector and the window checks read.

**Severity.** A rule that fails at ERROR severity and is *blocking* stops everything downstream in the same
run (Dagster skips the steps), and a plan computed later refuses to run on that partition
(`assets/upstream_checks.py`) until the partition is re-materialized clean. A WARN rule is reported and
does not stop anything. "at run time" means the check decides its severity from what it found.
"""


def render(defs: dg.Definitions) -> str:
    """The page for ``defs``: one table per asset group, one row per check, sorted by asset and name."""
    graph = defs.resolve_asset_graph()
    by_group: dict[str, list[tuple[str, str, str, str, str]]] = defaultdict(list)
    for key in graph.asset_check_keys:
        spec = graph.get_check_spec(key)
        group = graph.get(key.asset_key).group_name or "default"
        severity = spec.metadata.get("severity")
        severity_text = getattr(severity, "value", severity) or "at run time"
        by_group[group].append(
            (
                key.asset_key.to_user_string(),
                key.name,
                "yes" if spec.blocking else "no",
                str(severity_text),
                _cell(spec.description or ""),
            )
        )
    lines = [INTRODUCTION]
    total = sum(len(rows) for rows in by_group.values())
    lines.append(f"{total} checks in {len(by_group)} groups.\n")
    for group in sorted(by_group):
        rows = sorted(by_group[group])
        lines.append(f"## {group}\n")
        lines.append("| asset | check | blocking | severity | what it requires |")
        lines.append("|---|---|---|---|---|")
        lines.extend(
            f"| `{asset}` | `{name}` | {blocking} | {severity} | {text} |"
            for asset, name, blocking, severity, text in rows
        )
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def main(argv: list[str] | None = None) -> int:
    import warnings

    warnings.simplefilter("ignore")  # Dagster's preview/beta notices are not what the user asked for
    from orchestration.definitions import defs

    PAGE.write_text(render(defs))
    print(f"wrote {PAGE.relative_to(Path.cwd()) if PAGE.is_relative_to(Path.cwd()) else PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
