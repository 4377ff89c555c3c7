"""The fleet's geofence file: validated at load, errors naming the file, the line and the field."""

from __future__ import annotations

import textwrap

import pytest

from resources.fleet import SHIPPED_GEOFENCES, FleetSettings, load_geofences
from resources.yaml_files import ConfigError
from simulators.plant_network import PLANTS


def test_the_shipped_geofences_are_the_plant_network(lake):
    fences = load_geofences(SHIPPED_GEOFENCES)
    assert fences.radius_km == 2.0
    assert [(f.plant_id, f.kind, f.latitude, f.longitude) for f in fences.plants] == [
        (p.plant_id, p.kind, p.latitude, p.longitude) for p in PLANTS
    ]
    used = FleetSettings(geofences_file=str(SHIPPED_GEOFENCES)).geofences(lake)
    assert used.source == str(SHIPPED_GEOFENCES)
    assert used.frame.height == len(PLANTS) and set(used.frame["radius_km"]) == {2.0}


def test_a_bad_geofence_file_names_every_problem_with_its_line(tmp_path):
    path = tmp_path / "geofences.yaml"
    path.write_text(
        textwrap.dedent(
            """
            radius_km: 0
            plants:
              - {plant_id: IU01, kind: IU, latitude: 24.9, longitude: 74.6}
              - {plant_id: GU01, kind: GX, latitude: 23.0, longitude: 72.6}
              - {plant_id: GU02, kind: GU, latitude: 96.9, longitude: 75.8, radius_km: 3}
            """
        ).lstrip()
    )
    with pytest.raises(ConfigError) as error:
        load_geofences(path)
    text = str(error.value)
    assert f"{path}:1: radius_km: " in text
    assert f"{path}:4: plants[1].kind: " in text and "'GX'" in text
    assert f"{path}:5: plants[2].latitude: " in text


def test_a_plant_listed_twice_is_refused(tmp_path):
    path = tmp_path / "geofences.yaml"
    path.write_text(
        "plants:\n"
        "  - {plant_id: IU01, kind: IU, latitude: 24.9, longitude: 74.6}\n"
        "  - {plant_id: IU01, kind: IU, latitude: 24.8, longitude: 74.6}\n"
    )
    with pytest.raises(ConfigError, match="plant IU01 is listed twice"):
        load_geofences(path)
