"""The one YAML loader: errors name the file, the line, the column and the field path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field

from resources.yaml_files import ConfigError, load_model


class Register(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    address: int = Field(ge=0)


class Device(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str
    registers: list[Register]


class Plant(BaseModel):
    model_config = ConfigDict(extra="forbid")

    devices: list[Device] = Field(default_factory=list)
    password: str = ""


def write(tmp_path: Path, text: str, name: str = "plant.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    return path


def problems(path: Path, **kwargs) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_model(path, Plant, **kwargs)
    return caught.value


def test_a_valid_file_is_the_model(tmp_path):
    path = write(tmp_path, "devices:\n  - host: plc1\n    registers: [{name: flow, address: 0}]\n")
    assert load_model(path, Plant).devices[0].registers[0].name == "flow"
    assert load_model(write(tmp_path, "# nothing\n", "empty.yaml"), Plant) == Plant()


def test_every_problem_names_file_line_column_and_field_path(tmp_path):
    path = write(
        tmp_path,
        """
        devices:
          - host: plc1
            registers:
              - {name: flow, address: 0}
          - host: plc2
            registers:
              - {name: flow, address: 0}
              - {name: level, address: -4}
              - name: pressure
                adress: 7
        """,
    )
    error = problems(path)
    assert error.problems == [
        f"{path}:8: devices[1].registers[1].address: input should be greater than or equal to 0, got -4",
        f"{path}:9: devices[1].registers[2].address: required field is missing",
        f"{path}:10: devices[1].registers[2].adress: unknown field",
    ]
    located = [(issue.line, issue.column, issue.field) for issue in error.issues]
    assert located == [
        (8, 23, "devices[1].registers[1].address"),
        (9, 9, "devices[1].registers[2].address"),  # a missing field: where its mapping starts
        (10, 9, "devices[1].registers[2].adress"),
    ]


def test_syntax_errors_duplicates_and_unset_variables_are_located(tmp_path, monkeypatch):
    broken = write(tmp_path, "devices:\n  - host: [plc1\n", "broken.yaml")
    (issue,) = problems(broken).issues
    assert (issue.file, issue.line) == (str(broken), 3) and issue.message.startswith("YAML syntax error")
    twice = write(tmp_path, "password: a\npassword: b\n", "twice.yaml")
    (text,) = problems(twice).problems
    assert text.startswith(f"{twice}:") and "duplicate" in text
    monkeypatch.delenv("PLANT_PASSWORD", raising=False)
    secret = write(tmp_path, "devices: []\npassword: ${PLANT_PASSWORD}\n", "secret.yaml")
    assert problems(secret).problems == [f"{secret}:2: password: environment variable PLANT_PASSWORD is not set"]
    monkeypatch.setenv("PLANT_PASSWORD", "s3cret")
    assert load_model(secret, Plant).password == "s3cret"
    assert load_model(secret, Plant, substitute_env=False).password == "${PLANT_PASSWORD}"


def test_a_missing_file_is_named(tmp_path):
    missing = tmp_path / "nowhere.yaml"
    assert problems(missing).problems == [f"{missing}: cannot read: No such file or directory"]


def test_a_bare_list_can_stand_for_its_key(tmp_path):
    class Registers(BaseModel):
        registers: list[Register]

    path = write(tmp_path, "- {name: flow, address: 0}\n- {name: level, address: x}\n", "list.yaml")
    with pytest.raises(ConfigError) as caught:
        load_model(path, Registers, bare_list_key="registers")
    assert caught.value.problems == [
        f"{path}:2: registers[1].address: input should be a valid integer, unable to parse string as an integer, "
        "got 'x'"
    ]
