"""What an asset writes to the lake, declared once in its metadata and read back by whoever needs it.

Every ingestion asset carries, in its definition metadata, the full contract of each lake table it writes
(``ihub/lake_tables``: layer, name, description, key, columns and their exact Arrow types). The analyst
catalog takes its views and its lineage from there, so a new source appears in the catalog, with comments
and typed empty views, by declaring its assets — there is no second list to keep in step.

The column types travel as polars' own serialisation of an empty frame (base64): it carries every type the
lake stores (decimals with their precision, timezone-aware timestamps, lists, binary geometry) without a
name table of our own that could drift from polars, and without importing pyarrow when definitions load.
Writer and reader are the same code version in the same process, so the format never crosses versions.
"""

from __future__ import annotations

import base64
import dataclasses
import io
from collections.abc import Iterable, Mapping
from typing import Any

import dagster as dg
import polars as pl

from resources.lake import Column, LakeTable

LAKE_TABLES = "ihub/lake_tables"


def lake_metadata(table: LakeTable, *also: LakeTable) -> dict[str, Any]:
    """Definition metadata for an asset writing ``table`` (and ``also``, e.g. its rejects table).

    The UI shows the first table's columns; the catalog reads every table from ``ihub/lake_tables``.
    """
    return {
        "dagster/column_schema": table.dagster_column_schema(),
        "lake_table": f"{table.layer}.{table.name}",
        LAKE_TABLES: dg.MetadataValue.json([_to_json(t) for t in (table, *also)]),
    }


def lake_tables_by_asset(assets: Iterable[Any]) -> dict[dg.AssetKey, tuple[LakeTable, ...]]:
    """Every asset (spec or definition) that declares lake tables, with those tables, in key order."""
    found: dict[dg.AssetKey, tuple[LakeTable, ...]] = {}
    for asset in assets:
        specs = asset.specs if isinstance(asset, dg.AssetsDefinition) else [asset]
        for spec in specs:
            declared = spec.metadata.get(LAKE_TABLES) if isinstance(spec, dg.AssetSpec) else None
            if declared is not None:
                found[spec.key] = tuple(_from_json(t) for t in _json_value(declared))
    return dict(sorted(found.items(), key=lambda item: item[0].to_user_string()))


def _json_value(value: Any) -> list[Mapping[str, Any]]:
    return value.data if isinstance(value, dg.JsonMetadataValue) else value


def _to_json(table: LakeTable) -> dict[str, Any]:
    fields = {f.name: getattr(table, f.name) for f in dataclasses.fields(table) if f.name != "columns"}
    return {
        **{name: list(value) if isinstance(value, tuple) else value for name, value in fields.items()},
        "columns": [
            {f.name: getattr(c, f.name) for f in dataclasses.fields(c) if f.name != "dtype"} for c in table.columns
        ],
        "polars_schema": base64.b64encode(pl.DataFrame(schema=table.schema).serialize()).decode("ascii"),
    }


def _from_json(data: Mapping[str, Any]) -> LakeTable:
    dtypes = pl.DataFrame.deserialize(io.BytesIO(base64.b64decode(data["polars_schema"]))).schema
    columns = tuple(Column(dtype=dtypes[c["name"]], **c) for c in data["columns"])
    table_fields = {f.name for f in dataclasses.fields(LakeTable)} - {"columns"}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in table_fields}
    return LakeTable(columns=columns, **values)
