"""The ERP's row rules: plant references by kind, units, and rejects that keep the row as the ERP sent it."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

from assets.partitions import daily
from contracts.erp import DEMAND_FORECASTS, ODATA, PRODUCTION_CAPACITY
from quality.erp import land, plant_reference_rules, reference_problem
from resources.lake import time_windows

KINDS = {"IU01": "IU", "GU01": "GU", "HUB01": "HUB"}
DAY = time_windows(daily, datetime(2026, 12, 1, tzinfo=UTC), datetime(2026, 12, 2, tzinfo=UTC))


def revision(plant: str, unit: str = "TO", demand: str = "80500.500") -> dict:
    return {
        "__metadata": {"uri": f"DemandForecastSet(Plant='{plant}')"},
        "Plant": plant,
        "PeriodStart": "/Date(1811808000000)/",  # 2027-06-01
        "Revision": 3,
        "Demand": demand,
        "BaseUnit": unit,
        "ChangedAt": "/Date(1796115780000)/",  # 2026-12-01T09:03:00Z
    }


def test_plants_must_be_known_and_of_the_right_kind():
    assert reference_problem("IU01", KINDS, ("IU",), PRODUCTION_CAPACITY.name) is None
    assert reference_problem("GU01", KINDS, ("IU",), PRODUCTION_CAPACITY.name) == (
        "plant GU01 is a GU; production capacity belongs to IU plants"
    )
    assert reference_problem("IU01", KINDS, ("GU", "HUB"), DEMAND_FORECASTS.name) == (
        "plant IU01 is an IU; demand belongs to GU/HUB plants"
    )
    assert reference_problem("XX9", KINDS, None, DEMAND_FORECASTS.name) == (
        "plant 'XX9' is not in the ERP's plant master data (erp_plants has 3 plants)"
    )


def test_land_decodes_checks_units_and_references_and_reconciles():
    rows = [revision("GU01"), revision("IU01"), revision("HUB01", unit="KG"), revision("GU01", demand="n/a")]
    loaded = land(
        rows,
        DEMAND_FORECASTS,
        partition_key="2026-12-01",
        mapping=ODATA[DEMAND_FORECASTS.name],
        rules=plant_reference_rules(DEMAND_FORECASTS, KINDS),
        partitions=DAY,
    )
    assert (loaded.received, loaded.written, loaded.rejected) == (4, 1, 3)
    landed = loaded.frame.row(0, named=True)
    assert landed["demand_t"] == Decimal("80500.500")
    assert landed["period_start"].isoformat() == "2027-06-01"
    assert landed["changed_at"] == datetime(2026, 12, 1, 9, 3, tzinfo=UTC)
    rejects = loaded.rejects.to_dicts()
    assert [(r["row_number"], r["field"]) for r in rejects] == [(1, "plant_id"), (2, "BaseUnit"), (3, "demand_t")]
    assert rejects[1]["reason"] == "BaseUnit is 'KG', expected 'TO': figures in other units are not converted"
    assert rejects[2]["reason"] == "expected a decimal number, got 'n/a'"
    assert json.loads(rejects[2]["raw_payload"])["Demand"] == "n/a"  # as the ERP sent it, OData names and all
    assert {r["partition_start"] for r in rejects} == {DAY[0].start}
