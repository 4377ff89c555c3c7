"""The rules the ERP tables must meet before the supply planner may read them.

Two kinds:

- **Row rules at load** (`land`): an OData row is decoded by its contract (``contracts/erp.py``), must
  carry the units its figures are in (``BaseUnit`` ``TO``, ``Currency`` ``INR``) and must name plants the
  ERP has master data for, of the right kind (a route leaves an IU; demand is a GU's or a hub's; capacity
  and shutdowns are an IU's). A row that fails goes to the rejects table with the reason, like any row
  that cannot be typed; ``received == written + rejected`` holds.
- **Checks on the lake** (asset checks): the same referential rules over what the lake holds, blocking, so
  a plant removed from the master data after its routes landed stops the planner instead of giving it a
  network with a dangling route; and GX suites for ranges (costs ≥ 0, vehicle capacity, stock bounds in
  order, a shutdown ends after it starts).
"""

import json
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

import dagster as dg
import polars as pl

from contracts.erp import (
    DEMAND_FORECASTS,
    DEMAND_FORECASTS_KEY,
    INVENTORY,
    INVENTORY_KEY,
    MAINTENANCE_SHUTDOWNS,
    MAINTENANCE_SHUTDOWNS_KEY,
    PLANT_KINDS,
    PLANTS,
    PLANTS_KEY,
    PRODUCTION_CAPACITY,
    PRODUCTION_CAPACITY_KEY,
    ROUTE_MODES,
    ROUTES,
    ROUTES_KEY,
    ODataMapping,
)
from quality.conform import Conformed, _filed_under, conform, rejects_table
from quality.gx import Rule, build_gx_checks, checked_window
from quality.rules import keys_present, non_negative
from resources.erp import decode_date, decode_datetime
from resources.lake import Lake, LakeTable

SOURCE = "erp"
RowRule = Callable[[dict[str, Any]], "tuple[str, str] | None"]

# Which plants each table may name, by column: None = any known plant.
PLANT_REFERENCES: dict[str, tuple[tuple[str, tuple[str, ...] | None], ...]] = {
    ROUTES.name: (("origin_plant_id", ("IU",)), ("destination_plant_id", None)),
    DEMAND_FORECASTS.name: (("plant_id", ("GU", "HUB")),),
    INVENTORY.name: (("plant_id", None),),
    PRODUCTION_CAPACITY.name: (("plant_id", ("IU",)),),
    MAINTENANCE_SHUTDOWNS.name: (("plant_id", ("IU",)),),
}
_WHAT = {
    ROUTES.name: "a route",
    DEMAND_FORECASTS.name: "demand",
    INVENTORY.name: "inventory",
    PRODUCTION_CAPACITY.name: "production capacity",
    MAINTENANCE_SHUTDOWNS.name: "a kiln shutdown",
}

_DECODERS = {"text": lambda v: v, "datetime": decode_datetime, "date": decode_date}


# ---------------------------------------------------------------------------------------------- row rules


def plant_kinds(plants: pl.DataFrame) -> dict[str, str]:
    """plant id → kind, from the lake's ``erp_plants``."""
    return dict(plants.select("plant_id", "plant_kind").iter_rows())


def plant_reference_rules(table: LakeTable, kinds: dict[str, str]) -> list[RowRule]:
    """Row rules: each plant column of ``table`` names a known plant of an allowed kind."""
    rules: list[RowRule] = []
    for column, allowed in PLANT_REFERENCES.get(table.name, ()):

        def rule(row: dict[str, Any], column: str = column, allowed: tuple[str, ...] | None = allowed):
            value = row.get(column)
            if not isinstance(value, str):
                return None  # missing or mistyped: the conform step words that
            problem = reference_problem(value, kinds, allowed, table.name)
            return (column, problem) if problem else None

        rules.append(rule)
    return rules


def reference_problem(plant_id: str, kinds: dict[str, str], allowed: tuple[str, ...] | None, table: str) -> str | None:
    """Why ``plant_id`` may not appear here, or None."""
    if plant_id not in kinds:
        return f"plant {plant_id!r} is not in the ERP's plant master data (erp_plants has {len(kinds)} plants)"
    if allowed is not None and kinds[plant_id] not in allowed:
        return (
            f"plant {plant_id} is {'an' if kinds[plant_id][:1] in 'AEIOU' else 'a'} {kinds[plant_id]}; "
            f"{_WHAT.get(table, table)} belongs to {'/'.join(allowed)} plants"
        )
    return None


def unit_rules(mapping: ODataMapping) -> list[RowRule]:
    """Row rules: the unit fields say the figures are in the units the column names promise."""
    rules: list[RowRule] = []
    for prop, required in mapping.units:

        def rule(row: dict[str, Any], prop: str = prop, required: str = required):
            sent = row.get(prop)
            if sent == required:
                return None
            return (prop, f"{prop} is {sent!r}, expected {required!r}: figures in other units are not converted")

        rules.append(rule)
    return rules


def land(
    rows: Sequence[Any],
    table: LakeTable,
    *,
    partition_key: str,
    mapping: ODataMapping | None = None,
    rules: Sequence[RowRule] = (),
    raw_rules: Sequence[RowRule] = (),
    window: tuple[datetime, datetime] | None = None,
    partitions: Sequence[dg.TimeWindow] | None = None,
) -> Conformed:
    """Decode (by ``mapping``), check (``raw_rules`` on the row as sent, ``rules`` on the decoded row) and
    conform ``rows`` into ``table``; rejects keep the row as the source sent it and its position."""
    decoded: list[Any] = []
    for row in rows:
        if mapping is not None and isinstance(row, dict):
            decoded.append({f.column: _DECODERS[f.decode](row.get(f.prop)) for f in mapping.fields})
        else:
            decoded.append(row)
    raw_rules = [*(unit_rules(mapping) if mapping is not None else ()), *raw_rules]
    refused: dict[int, tuple[str, str]] = {}
    kept: list[int] = []
    for index, (raw, row) in enumerate(zip(rows, decoded, strict=True)):
        problem = None
        if isinstance(raw, dict):
            problem = next((p for rule in raw_rules if (p := rule(raw)) is not None), None)
            problem = problem or next((p for rule in rules if (p := rule(row)) is not None), None)
        if problem is not None:
            refused[index] = problem
        else:
            kept.append(index)
    loaded = conform(
        [decoded[i] for i in kept],
        table,
        source=SOURCE,
        partition_key=partition_key,
        window=window,
        partitions=partitions,
    )
    # Back to positions and payloads as sent: the rejects name the row the source sent, not our rename.
    typed = loaded.rejects.to_dicts()
    for reject in typed:
        reject["row_number"] = kept[reject["row_number"]]
    own = [
        {
            "source": SOURCE,
            "table_name": table.name,
            "partition_key": partition_key,
            "row_number": index,
            "field": field,
            "reason": reason,
            "partition_start": _filed_under(decoded[index], table, window, partitions),
        }
        for index, (field, reason) in refused.items()
    ]
    everything = sorted([*typed, *own], key=lambda r: r["row_number"])
    for reject in everything:
        reject["raw_payload"] = _as_json(rows[reject["row_number"]])
    rejects = pl.DataFrame(everything, schema=rejects_table(table).schema) if everything else loaded.rejects
    return Conformed(frame=loaded.frame, rejects=rejects_table(table).conform(rejects), received=len(rows))


def _as_json(row: Any) -> str:
    return json.dumps(row, sort_keys=True, default=str, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------- lake checks


def dangling_references(frame: pl.DataFrame, table: LakeTable, kinds: dict[str, str]) -> list[str]:
    """Each row of ``frame`` naming an unknown plant or one of the wrong kind, as "column=value: why"."""
    found: list[str] = []
    for column, allowed in PLANT_REFERENCES.get(table.name, ()):
        for value in frame.get_column(column).drop_nulls().unique().sort().to_list():
            problem = reference_problem(value, kinds, allowed, table.name)
            if problem:
                count = frame.filter(pl.col(column) == value).height
                found.append(f"{column}={value} ({count} rows): {problem}")
    return found


def plant_reference_check(
    asset_key: dg.AssetKey, table: LakeTable, partitions_def: dg.TimeWindowPartitionsDefinition | None = None
) -> dg.AssetChecksDefinition:
    """A blocking check that every plant the table names (in the checked partitions) is a known plant of
    the kind the table allows."""
    allowed = "; ".join(f"{c}: {'/'.join(k) if k else 'any plant'}" for c, k in PLANT_REFERENCES[table.name])
    spec = dg.AssetCheckSpec(
        name="plants_known",
        asset=asset_key,
        description=(
            f"Every plant {table.name} names is in erp_plants and of the right kind ({allowed}); "
            "a dangling reference would give the planner a wrong network."
        ),
        blocking=True,
        partitions_def=partitions_def,
        additional_deps=[PLANTS_KEY],
    )

    @dg.multi_asset_check(specs=[spec], name=f"{asset_key.to_python_identifier()}_plants_known")
    def _check(context: dg.AssetCheckExecutionContext, lake: Lake) -> Iterator[dg.AssetCheckResult]:
        window = checked_window(context)
        frame = lake.read(table, *window) if window else lake.read(table)
        kinds = plant_kinds(lake.read(PLANTS))
        problems = dangling_references(frame, table, kinds) if kinds else ["erp_plants is empty: run erp/plants"]
        yield dg.AssetCheckResult(
            asset_key=asset_key,
            check_name="plants_known",
            passed=not problems,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "rows_checked": frame.height,
                "known_plants": len(kinds),
                "dangling": "; ".join(problems[:10]) or "none",
            },
        )

    return _check


def _keys(*columns: str) -> Rule:
    return keys_present(*columns)


def _non_negative(*columns: str) -> Rule:
    return non_negative(*columns, why="a negative cost or tonnage breaks the plan")


PLANT_RULES = (
    _keys("plant_id", "plant_kind"),
    Rule(
        name="unique_plant_id",
        description="One row per plant.",
        expectations=lambda gxe, _: [gxe.ExpectColumnValuesToBeUnique(column="plant_id")],
    ),
    Rule(
        name="kinds_known",
        description=f"Plant kind is one of {', '.join(PLANT_KINDS)}.",
        expectations=lambda gxe, _: [gxe.ExpectColumnValuesToBeInSet(column="plant_kind", value_set=list(PLANT_KINDS))],
    ),
    _non_negative("opening_stock_t", "safety_stock_t", "max_stock_t", "production_cost_inr_per_t"),
    Rule(
        name="stock_bounds_ordered",
        description="Stock bounds are in order for every plant: safety stock ≤ maximum, opening stock ≤ maximum.",
        expectations=lambda gxe, _: [
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="max_stock_t", column_B="safety_stock_t", or_equal=True
            ),
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(
                column_A="max_stock_t", column_B="opening_stock_t", or_equal=True
            ),
        ],
    ),
)

ROUTE_RULES = (
    _keys("route_id", "origin_plant_id", "destination_plant_id", "mode"),
    Rule(
        name="unique_route_id",
        description="One row per route.",
        expectations=lambda gxe, _: [gxe.ExpectColumnValuesToBeUnique(column="route_id")],
    ),
    Rule(
        name="modes_known",
        description=f"Mode is one of {', '.join(ROUTE_MODES)}.",
        expectations=lambda gxe, _: [gxe.ExpectColumnValuesToBeInSet(column="mode", value_set=list(ROUTE_MODES))],
    ),
    _non_negative("freight_cost_inr_per_t", "handling_cost_inr_per_t", "cost_per_trip_inr", "min_batch_t"),
    Rule(
        name="vehicle_capacity_plausible",
        description="A vehicle carries between 1 t and 5,000 t (a truck 25–35 t, a rake about 3,800 t).",
        expectations=lambda gxe, _: [
            gxe.ExpectColumnValuesToBeBetween(column="vehicle_capacity_t", min_value=1, max_value=5000)
        ],
    ),
)

DEMAND_RULES = (
    _keys("plant_id", "period_start", "revision"),
    _non_negative("demand_t"),
)

INVENTORY_RULES = (
    _keys("plant_id", "stock_date"),
    _non_negative("stock_t"),
)

CAPACITY_RULES = (
    _keys("plant_id", "period_start"),
    _non_negative("capacity_t"),
)

SHUTDOWN_RULES = (
    _keys("plant_id", "starts_at", "ends_at"),
    Rule(
        name="ends_after_start",
        description="A shutdown ends after it starts.",
        expectations=lambda gxe, _: [
            gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="ends_at", column_B="starts_at", or_equal=False)
        ],
    ),
)


def erp_checks(daily: dg.TimeWindowPartitionsDefinition) -> list[dg.AssetChecksDefinition]:
    """Every ERP check: a GX suite per table and the blocking plant-reference check on each table that
    names plants."""
    return [
        build_gx_checks(PLANTS_KEY, PLANTS, PLANT_RULES),
        build_gx_checks(ROUTES_KEY, ROUTES, ROUTE_RULES),
        plant_reference_check(ROUTES_KEY, ROUTES),
        build_gx_checks(DEMAND_FORECASTS_KEY, DEMAND_FORECASTS, DEMAND_RULES, daily),
        plant_reference_check(DEMAND_FORECASTS_KEY, DEMAND_FORECASTS, daily),
        build_gx_checks(INVENTORY_KEY, INVENTORY, INVENTORY_RULES, daily),
        plant_reference_check(INVENTORY_KEY, INVENTORY, daily),
        build_gx_checks(PRODUCTION_CAPACITY_KEY, PRODUCTION_CAPACITY, CAPACITY_RULES, daily),
        plant_reference_check(PRODUCTION_CAPACITY_KEY, PRODUCTION_CAPACITY, daily),
        build_gx_checks(MAINTENANCE_SHUTDOWNS_KEY, MAINTENANCE_SHUTDOWNS, SHUTDOWN_RULES, daily),
        plant_reference_check(MAINTENANCE_SHUTDOWNS_KEY, MAINTENANCE_SHUTDOWNS, daily),
    ]
