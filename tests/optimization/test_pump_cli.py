"""`ihub optimize pump --instance FILE`: the documented instance format, solved and printed."""

from __future__ import annotations

import json

import numpy as np

from ihub.cli import main
from optimization.pump import instance_to_json
from tests.optimization.test_pump import exhaustive, tiny_instance


def test_an_instance_file_is_solved_and_printed(tmp_path, capsys):
    inst = tiny_instance()
    best, best_on = exhaustive(inst)
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(instance_to_json(inst)))
    assert main(["optimize", "pump", "--instance", str(path), "--gap", "0", "--table"]) == 0
    out = capsys.readouterr().out
    assert "station TINY  scenario base  from 2026-12-07 10:00 UTC  6 steps of 15 min" in out
    assert "status     optimal" in out
    assert f"objective  {best:,.2f} THB   gap 0.000 %" in out
    for p, pump in enumerate(("A", "B")):
        row = "".join("█" if v else "·" for v in best_on[p])
        assert f"{pump:<8}{row}" in out
    assert "tank T: 2.50 m →" in out
    assert "baseline   " in out and "saving     " in out
    assert out.count("TINY") == 1  # the table drops the station and scenario columns


def test_an_instance_without_a_plan_says_why(tmp_path, capsys):
    inst = tiny_instance(demand_m3h=np.array([[500.0, 70.0, 90.0, 30.0, 20.0, 60.0]]))
    path = tmp_path / "dry.json"
    path.write_text(json.dumps(instance_to_json(inst)))
    assert main(["optimize", "pump", "--instance", str(path)]) == 1
    out = capsys.readouterr().out
    assert "status     infeasible" in out
    # 2.5 m + (40 + 60 − 500) m³/h × 0.25 h / 10 m² = −7.5 m at the end of the first step (17:15 local).
    assert "why: tank T cannot stay above 1.00 m at 17:15 (short by 8.50)" in out


def test_an_invalid_instance_names_the_problem(tmp_path, capsys):
    data = instance_to_json(tiny_instance())
    data["price_thb_per_kwh"][2] = None
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    assert main(["optimize", "pump", "--instance", str(path)]) == 2
    err = capsys.readouterr().err
    assert "station TINY: tariff missing or out of range at step(s) 2" in err


def test_an_example_instance_is_written_and_read_back(tmp_path, capsys):
    path = tmp_path / "ps01.json"
    assert main(["optimize", "pump", "--write-example", "PS01", str(path)]) == 0
    data = json.loads(path.read_text())
    assert len(data["price_thb_per_kwh"]) == 96 and set(data["demand_m3h"]) == {"T1", "T2"}
    assert data["station"]["id"] == "PS01"
