"""The example queries of docs/analysts.md run against a published catalog and give the documented answers."""

import re
from datetime import date
from pathlib import Path

import duckdb
import polars as pl

from assets.catalog import catalog_tables, derived_views, quarantine_views
from contracts.marts import LEAK_INDICATORS

PAGE = Path(__file__).resolve().parents[2] / "docs" / "analysts.md"


def queries() -> list[str]:
    blocks = re.findall(r"```sql\n(.*?)```", PAGE.read_text(), flags=re.S)
    statements = [s.strip() for block in blocks for s in block.split(";")]
    return [s for s in statements if s and not all(line.startswith("--") for line in s.splitlines())]


def test_every_example_query_runs_and_the_leak_query_names_the_leaking_dma(lake, analyst_catalog):
    from orchestration.definitions import defs

    schema = {c.name: c.dtype for c in LEAK_INDICATORS.columns}
    rows = [
        {"dma_id": "DMA-0004", "nights": 60, "leak_suspected": True, "rise_m3h": 12.6, "rise_pct": 171.0,
         "rise_began_on": date(2026, 10, 27), "kind": "growing_leak"},
        {"dma_id": "DMA-0001", "nights": 60, "leak_suspected": False, "rise_m3h": 0.1, "rise_pct": 1.0},
    ]  # fmt: skip
    lake.replace_snapshot(LEAK_INDICATORS, pl.DataFrame([{c: r.get(c) for c in schema} for r in rows], schema=schema))
    tables = catalog_tables(defs.assets)
    published = analyst_catalog.publish(lake, tables, [*derived_views("Asia/Bangkok"), *quarantine_views(tables)])
    statements = queries()
    assert len(statements) >= 5
    with duckdb.connect(published.path, read_only=True) as con:
        answers = [con.execute(sql).fetchall() for sql in statements]
    assert answers[0] == [("DMA-0004", date(2026, 10, 27), 12.6, 171.0, "growing_leak")]
