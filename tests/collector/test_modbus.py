"""Modbus TCP reader against hand-worked registers and a real pymodbus server on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import struct
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import pytest
from pydantic import ValidationError

from collector.modbus import (
    MAPS_DIR,
    ModbusDeviceConfig,
    RegisterPoint,
    build_reader,
    decode,
    encode,
    load_register_map,
    plan_requests,
)
from collector.points import BAD, COMM_FAIL, GOOD, Point
from simulators.modbus import ModbusSimulator, serve_modbus

T = TypeVar("T")


def run(coroutine: Awaitable[T], timeout: float = 30.0) -> T:
    """Run a coroutine to completion, never longer than ``timeout`` seconds."""

    async def bounded() -> T:
        return await asyncio.wait_for(coroutine, timeout)

    return asyncio.run(bounded())


@pytest.fixture
def sim() -> Iterator[ModbusSimulator]:
    """A pump station (unit 1, PS01) and a machine (unit 2, M02) on a free loopback port, model frozen."""
    with serve_modbus({1: "pump_station", 2: "machine"}) as simulator:
        simulator.pause()
        yield simulator


async def poll(reader: Any, times: int = 1) -> list[Point]:
    """``times`` polls in a row (the last one's points), then the connection closed."""
    try:
        for _ in range(times):
            points = await reader.poll_once()
        return points
    finally:
        await reader.close()


def fast(simulator: ModbusSimulator, unit_id: int, **overrides: Any) -> ModbusDeviceConfig:
    """A reader configuration with test-sized timeouts and delays."""
    settings = {"timeout_s": 0.5, "retry_delay_s": 0.05, "reconnect_initial_s": 0.1, "reconnect_max_s": 0.4}
    return simulator.device_config(unit_id, **{**settings, **overrides})


def by_name(points: Sequence[Point], config: ModbusDeviceConfig) -> dict[str, Point]:
    """Points keyed by the register map's point name."""
    names = {(config.point_unit_id(p), p.sensor_type or p.name): p.name for p in config.registers}
    return {names[(p.unit_id, p.sensor_type)]: p for p in points}


# --------------------------------------------------------------------------------------------------
# Decoding: every data type in every byte order, against registers worked out by hand
# --------------------------------------------------------------------------------------------------

# Bytes of each value, most significant first (checked against struct below), and the registers a
# device sends in each order: ABCD as is, CDAB words reversed, BADC bytes swapped in each word, DCBA both.
KNOWN = [
    # data type, value, {byte order: registers}
    ("int16", -2, {"ABCD": [0xFFFE], "CDAB": [0xFFFE], "BADC": [0xFEFF], "DCBA": [0xFEFF]}),
    ("int16", 1234, {"ABCD": [0x04D2], "CDAB": [0x04D2], "BADC": [0xD204], "DCBA": [0xD204]}),
    ("uint16", 0x1234, {"ABCD": [0x1234], "CDAB": [0x1234], "BADC": [0x3412], "DCBA": [0x3412]}),
    ("uint16", 65535, {"ABCD": [0xFFFF], "CDAB": [0xFFFF], "BADC": [0xFFFF], "DCBA": [0xFFFF]}),
    (
        "int32",
        -123456789,  # 0xF8A432EB
        {
            "ABCD": [0xF8A4, 0x32EB],
            "CDAB": [0x32EB, 0xF8A4],
            "BADC": [0xA4F8, 0xEB32],
            "DCBA": [0xEB32, 0xA4F8],
        },
    ),
    (
        "uint32",
        0x12345678,
        {
            "ABCD": [0x1234, 0x5678],
            "CDAB": [0x5678, 0x1234],
            "BADC": [0x3412, 0x7856],
            "DCBA": [0x7856, 0x3412],
        },
    ),
    (
        "float32",
        123.456,  # 0x42F6E979
        {
            "ABCD": [0x42F6, 0xE979],
            "CDAB": [0xE979, 0x42F6],
            "BADC": [0xF642, 0x79E9],
            "DCBA": [0x79E9, 0xF642],
        },
    ),
    (
        "float32",
        -0.5,  # 0xBF000000
        {
            "ABCD": [0xBF00, 0x0000],
            "CDAB": [0x0000, 0xBF00],
            "BADC": [0x00BF, 0x0000],
            "DCBA": [0x0000, 0x00BF],
        },
    ),
    (
        "int64",
        -1234567890123456789,  # 0xEEDDEF0B82167EEB
        {
            "ABCD": [0xEEDD, 0xEF0B, 0x8216, 0x7EEB],
            "CDAB": [0x7EEB, 0x8216, 0xEF0B, 0xEEDD],
            "BADC": [0xDDEE, 0x0BEF, 0x1682, 0xEB7E],
            "DCBA": [0xEB7E, 0x1682, 0x0BEF, 0xDDEE],
        },
    ),
    (
        "uint64",
        0x0102030405060708,
        {
            "ABCD": [0x0102, 0x0304, 0x0506, 0x0708],
            "CDAB": [0x0708, 0x0506, 0x0304, 0x0102],
            "BADC": [0x0201, 0x0403, 0x0605, 0x0807],
            "DCBA": [0x0807, 0x0605, 0x0403, 0x0201],
        },
    ),
    (
        "float64",
        123.456,  # 0x405EDD2F1A9FBE77
        {
            "ABCD": [0x405E, 0xDD2F, 0x1A9F, 0xBE77],
            "CDAB": [0xBE77, 0x1A9F, 0xDD2F, 0x405E],
            "BADC": [0x5E40, 0x2FDD, 0x9F1A, 0x77BE],
            "DCBA": [0x77BE, 0x9F1A, 0x2FDD, 0x5E40],
        },
    ),
]
ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
CASES = [(t, v, order, regs[order]) for t, v, regs in KNOWN for order in ORDERS]


@pytest.mark.parametrize(("data_type", "value", "order", "registers"), CASES)
def test_decode_every_type_and_order(data_type: str, value: float, order: str, registers: list[int]) -> None:
    decoded = decode(registers, data_type, order)
    if data_type == "float32":
        assert decoded == pytest.approx(value, rel=1e-7)
        assert decoded == struct.unpack(">f", struct.pack(">f", value))[0]  # exactly the float32 nearest
    else:
        assert decoded == value
        assert type(decoded) is (float if data_type == "float64" else int)


@pytest.mark.parametrize(("data_type", "value", "order", "registers"), CASES)
def test_encode_is_the_inverse(data_type: str, value: float, order: str, registers: list[int]) -> None:
    assert encode(value, data_type, order) == registers


def test_the_hand_worked_abcd_registers_are_big_endian_struct() -> None:
    formats = {"int16": ">h", "uint16": ">H", "int32": ">i", "uint32": ">I", "float32": ">f"}
    formats.update({"int64": ">q", "uint64": ">Q", "float64": ">d"})
    for data_type, value, registers in KNOWN:
        packed = struct.pack(formats[data_type], value)
        assert list(struct.unpack(f">{len(packed) // 2}H", packed)) == registers["ABCD"], data_type


@pytest.mark.parametrize(
    ("order", "registers"),
    [
        ("ABCD", [0x5053, 0x3031, 0x2050, 0x756D, 0x7000]),  # "PS", "01", " P", "um", "p\0"
        ("BADC", [0x5350, 0x3130, 0x5020, 0x6D75, 0x0070]),
        ("CDAB", [0x7000, 0x756D, 0x2050, 0x3031, 0x5053]),
        ("DCBA", [0x0070, 0x6D75, 0x5020, 0x3130, 0x5350]),
    ],
)
def test_strings_in_every_order(order: str, registers: list[int]) -> None:
    assert decode(registers, "string", order, length=5) == "PS01 Pump"
    assert encode("PS01 Pump", "string", order, length=5) == registers


def test_bools_from_registers_and_bits() -> None:
    assert decode([0], "bool") is False
    assert decode([0x8000], "bool") is True
    assert decode([0b0100], "bool", bit=2) is True
    assert decode([0b1011], "bool", bit=2) is False
    assert encode(True, "bool", bit=3) == [0b1000]
    assert encode(False, "bool") == [0]


def test_encode_refuses_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="does not fit int16"):
        encode(40000, "int16")
    with pytest.raises(ValueError, match="does not fit uint32"):
        encode(-1, "uint32")
    with pytest.raises(ValueError, match="fraction"):
        encode(1.5, "uint16")
    with pytest.raises(ValueError, match="registers hold 4"):
        encode("too long", "string", length=2)
    with pytest.raises(ValueError, match="needs 2 registers"):
        decode([1], "float32")


# --------------------------------------------------------------------------------------------------
# Request grouping
# --------------------------------------------------------------------------------------------------


def point(name: str, address: int, data_type: str = "uint16", function: str = "holding", **extra: Any) -> RegisterPoint:
    return RegisterPoint(name=name, address=address, data_type=data_type, function=function, **extra)


def spans(points: list[RegisterPoint], **limits: Any) -> list[tuple[str, int, int]]:
    return [(r.function, r.address, r.count) for r in plan_requests(points, **limits)]


def test_neighbouring_registers_are_one_request() -> None:
    points = [point("a", 0, "float32"), point("b", 2, "int16"), point("c", 3, "float64"), point("d", 7, "uint32")]
    assert spans(points) == [("holding", 0, 9)]
    assert [p.name for p in plan_requests(points)[0].points] == ["a", "b", "c", "d"]


def test_holes_up_to_max_hole_are_bridged() -> None:
    points = [point("a", 0), point("b", 11), point("c", 30)]  # holes of 10 and 18 registers
    assert spans(points, max_hole=10) == [("holding", 0, 12), ("holding", 30, 1)]
    assert spans(points, max_hole=18) == [("holding", 0, 31)]
    assert spans(points, max_hole=0) == [("holding", 0, 1), ("holding", 11, 1), ("holding", 30, 1)]


def test_no_request_exceeds_125_registers() -> None:
    points = [point(f"f{i}", 2 * i, "float32") for i in range(70)]  # 140 registers back to back
    planned = plan_requests(points)
    assert [(r.address, r.count) for r in planned] == [(0, 124), (124, 16)]  # 62 floats, then 8
    assert all(r.count <= 125 for r in planned)
    assert sum(len(r.points) for r in planned) == 70
    assert [r.count for r in plan_requests(points, max_registers=40)] == [40, 40, 40, 20]


def test_coils_group_up_to_2000_bits() -> None:
    coils = [point(f"c{i}", i * 2, "bool", "coil") for i in range(1500)]  # bits 0..2998
    assert spans(coils, max_hole=1) == [("coil", 0, 1999), ("coil", 2000, 999)]


def test_functions_are_never_merged() -> None:
    points = [
        point("h", 0),
        point("i", 1, function="input"),
        point("c", 0, "bool", "coil"),
        point("d", 1, "bool", "discrete_input"),
        point("h2", 1),
    ]
    assert spans(points) == [("coil", 0, 1), ("discrete_input", 1, 1), ("holding", 0, 2), ("input", 1, 1)]


def test_bits_of_one_register_share_it() -> None:
    points = [point("x", 9, "bool", bit=0), point("y", 9, "bool", bit=1), point("z", 10, "int16")]
    assert spans(points) == [("holding", 9, 2)]


def test_the_shipped_maps_plan_as_documented() -> None:
    machine = load_register_map(MAPS_DIR / "machine.yaml").registers
    assert [r.describe() for r in plan_requests(machine)] == [
        "holding registers 2000-2069",
        "holding registers 2100-2109",
        "holding registers 2250-2269",
    ]
    assert [r.describe() for r in plan_requests(machine, max_hole=30)] == [
        "holding registers 2000-2109",
        "holding registers 2250-2269",
    ]
    station = load_register_map(MAPS_DIR / "pump_station.yaml").registers
    assert [r.describe() for r in plan_requests(station)] == [
        "coils 0-2",
        "discrete inputs 0-3",
        "holding registers 0-59",
        "input registers 0-4",
    ]
    data_types = {(p.data_type, p.byte_order) for p in station}
    assert {("float32", "ABCD"), ("float32", "CDAB"), ("uint32", "BADC"), ("float64", "DCBA")} <= data_types
    assert {"int16", "int64", "string", "bool"} <= {t for t, _ in data_types}


# --------------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------------


def device(**fields: Any) -> dict[str, Any]:
    base = {"name": "plc", "host": "127.0.0.1", "plant_unit_id": "PS01"}
    return {**base, "registers": [{"name": "flow", "address": 0, "data_type": "float32"}], **fields}


@pytest.mark.parametrize(
    ("fields", "where", "message"),
    [
        ({"poll_interval_s": 0.05}, ("poll_interval_s",), "greater than or equal to 0.1"),
        ({"max_registers_per_request": 126}, ("max_registers_per_request",), "less than or equal to 125"),
        ({"registers": [{"name": "f", "address": 0, "data_type": "float16"}]}, ("registers", 0, "data_type"), ""),
        ({"registers": [{"name": "f", "address": 0, "data_type": "float32", "byte_order": "ABDC"}]}, None, ""),
        ({"registers": [{"name": "s", "address": 0, "data_type": "string"}]}, ("registers", 0), "length"),
        ({"registers": [{"name": "c", "address": 0, "function": "coil", "data_type": "int16"}]}, None, "bool"),
        ({"registers": [{"name": "f", "address": 0}]}, ("registers", 0), "data_type is required"),
        ({"registers": [{"name": "f", "address": 65535, "data_type": "float32"}]}, None, "runs past 65535"),
        (
            {"registers": [{"name": "f", "address": 0, "data_type": "int16"}, {"name": "f", "address": 1}]},
            None,
            "",
        ),
        (
            {
                "registers": [
                    {"name": "a", "sensor_type": "flow", "address": 0, "data_type": "int16"},
                    {"name": "b", "sensor_type": "flow", "address": 1, "data_type": "int16"},
                ]
            },
            (),
            "both emit unit 'PS01' sensor 'flow'",
        ),
    ],
)
def test_configuration_errors_name_the_field(fields: dict[str, Any], where: tuple | None, message: str) -> None:
    with pytest.raises(ValidationError) as caught:
        ModbusDeviceConfig.model_validate(device(**fields))
    errors = caught.value.errors()
    if where is not None:
        assert any(tuple(e["loc"][: len(where)]) == where for e in errors), errors
    assert message in str(caught.value)


def test_register_map_errors_name_file_line_and_field(tmp_path: Path) -> None:
    (tmp_path / "plc.yaml").write_text(
        "registers:\n"
        "  - {name: inflow, address: 0, data_type: float32}\n"
        "  - name: outflow\n"
        "    address: 2\n"
        "    data_type: float32\n"
        "    scale: lots\n"
    )
    with pytest.raises(ValidationError) as caught:
        ModbusDeviceConfig.model_validate(device(registers=[], register_map="plc.yaml"), context={"base_dir": tmp_path})
    text = str(caught.value)
    assert f"{tmp_path / 'plc.yaml'}:6: registers[1].scale" in text, text


def test_register_map_paths_resolve_against_the_config_directory(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.mkdir()
    (maps / "station.yaml").write_text((MAPS_DIR / "pump_station.yaml").read_text())
    relative = ModbusDeviceConfig.model_validate(
        device(registers=[], register_map="maps/station.yaml"), context={"base_dir": tmp_path}
    )
    absolute = ModbusDeviceConfig.model_validate(device(registers=[], register_map=str(maps / "station.yaml")))
    assert relative.register_map == absolute.register_map == maps / "station.yaml"
    assert len(relative.registers) == len(absolute.registers) == 35
    with pytest.raises(ValidationError, match="cannot read"):
        ModbusDeviceConfig.model_validate(device(registers=[], register_map=str(tmp_path / "missing.yaml")))


# --------------------------------------------------------------------------------------------------
# End to end against the simulator
# --------------------------------------------------------------------------------------------------


def test_a_poll_gives_the_served_values_with_units_and_scales(sim: ModbusSimulator) -> None:
    for unit_id in (1, 2):
        config = fast(sim, unit_id)
        reader = build_reader(config)
        before = time.time() * 1e6
        points = by_name(run(poll(reader)), config)
        after = time.time() * 1e6
        served = sim.served(unit_id)
        numeric = [p for p in config.registers if p.data_type != "string"]
        assert set(points) == {p.name for p in numeric}
        for spec in numeric:
            got = points[spec.name]
            assert got.quality == GOOD, spec.name
            assert got.value == pytest.approx(served[spec.name], rel=1e-12, abs=1e-12), spec.name
            assert got.unit == spec.unit
            assert (got.source, got.device) == ("modbus", config.name)
            assert before <= got.source_ts_us == got.received_ts_us <= after
        strings = {p.name for p in config.registers if p.data_type == "string"}
        assert reader.health()["strings"] == {name: served[name] for name in strings}
    assert reader.health()["strings"]["machine_name"] == "M02 LATHE CNC"


def test_known_values_come_back_scaled_and_typed(sim: ModbusSimulator) -> None:
    """Values pinned in engineering units travel through every data type and byte order of the map."""
    pinned = {
        "inflow": 123.456,  # float32 ABCD
        "outflow": 98.7,  # float32 CDAB
        "discharge_pressure": 4.56,  # int16, scale 0.01
        "tank1_level": 3.217,  # uint16, scale 0.001
        "tank2_level": 4.25,  # int16 BADC, scale 0.01
        "water_temperature": -1.5,  # int16 ×10, negative
        "tank2_high_alarm": True,  # bit 1 of register 9
        "pump2_run_hours": 12345.6,  # uint32 BADC, scale 0.1
        "pump3_starts": 4_000_000_000,  # uint32 BADC beyond int32
        "energy_total": 1234567.891,  # float64 DCBA
        "volume_out_total": 98765432.109,  # int64 ABCD, litres
        "volume_in_total": -5.5,  # int64 CDAB, negative
        "pump1_current": 21.7,  # input register int16 ×10
        "pump2_status": True,  # coil
        "pump3_fault": True,  # discrete input
        "station_name": "Ban Bueng",  # string
    }
    for name, value in pinned.items():
        sim.set_value(1, name, value)
    config = fast(sim, 1)
    reader = build_reader(config)
    points = by_name(run(poll(reader)), config)
    assert points["inflow"].value == pytest.approx(123.456, rel=1e-7)
    inflow = points["inflow"]
    assert (inflow.unit, inflow.unit_id, inflow.sensor_type) == ("m³/h", "PS01-IN", "flow")
    assert points["outflow"].value == pytest.approx(98.7, rel=1e-7)
    assert points["discharge_pressure"].value == 4.56
    assert points["tank1_level"].value == 3.217
    assert (points["tank2_level"].value, points["tank2_level"].unit_id) == (4.25, "PS01-T2")
    assert points["water_temperature"].value == -1.5
    assert points["tank2_high_alarm"].value == 1.0
    assert points["tank1_low_alarm"].value == 0.0  # the neighbouring bit is untouched
    assert points["pump2_run_hours"].value == 12345.6
    assert points["pump3_starts"].value == 4_000_000_000
    assert points["energy_total"].value == 1234567.891
    assert points["volume_out_total"].value == 98765432.109
    assert points["volume_in_total"].value == -5.5
    assert (points["pump1_current"].value, points["pump1_current"].unit) == (21.7, "A")
    assert (points["pump2_status"].value, points["pump2_status"].sensor_type) == (1.0, "pump_status")
    assert points["pump3_fault"].value == 1.0
    assert reader.health()["strings"] == {"station_name": "Ban Bueng"}


def test_scale_and_offset_apply_as_raw_times_scale_plus_offset(sim: ModbusSimulator) -> None:
    sim.set_value(2, "motor_voltage", 400.0)  # int16 scale 0.1 -> raw 4000 in register 2006
    config = fast(
        sim,
        2,
        register_map=None,
        registers=[
            {"name": "kelvin", "address": 2006, "data_type": "int16", "scale": 0.1, "offset": -273.15, "unit": "°C"},
            {"name": "raw", "address": 2006, "data_type": "int16", "scale": 2, "offset": 1},
        ],
    )
    reader = build_reader(config)
    points = by_name(run(poll(reader)), config)
    assert points["kelvin"].value == pytest.approx(400.0 - 273.15)
    assert points["raw"].value == 4000 * 2 + 1


# --------------------------------------------------------------------------------------------------
# Failures, retries and reconnection
# --------------------------------------------------------------------------------------------------


def test_a_failing_request_marks_only_its_points(sim: ModbusSimulator, caplog: pytest.LogCaptureFixture) -> None:
    sim.fault(1, "holding", 30, 33, code=2)  # energy_total's registers answer "illegal data address"
    config = fast(sim, 1)
    reader = build_reader(config)
    served_before = sim.requests

    async def scenario() -> tuple[list[Point], list[Point]]:
        try:
            with caplog.at_level(logging.ERROR, logger="collector.modbus"):
                first = await reader.poll_once()
            assert reader.health()["connected"]  # the device answered: no reason to reconnect
            sim.clear_faults()
            return first, await reader.poll_once()
        finally:
            await reader.close()

    first, second = run(scenario())
    points = by_name(first, config)
    holding = {p.name for p in config.registers if p.function == "holding" and p.data_type != "string"}
    for name, got in points.items():
        if name in holding:
            assert (got.quality, got.value) == (COMM_FAIL, None), name
        else:
            assert got.quality == GOOD, name
    assert len(points) == 34
    # An illegal address never gets better: no retries, one request per function.
    assert sim.requests - served_before == 4 + 4  # (the second poll's four, after the fault cleared)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert 'modbus device "sim-PS01"' in errors[0]
    assert "holding registers 0-59" in errors[0]
    assert "exception 0x02 illegal data address" in errors[0]
    health = reader.health()
    assert health["errors"] == {"illegal_address": 1}
    assert "holding registers 0-59" in health["last_error"]
    # The fault cleared before the second poll: the points came back GOOD, the failure left the report.
    again = by_name(second, config)
    assert all(again[name].quality == GOOD for name in holding)
    assert reader.health()["failing_requests"] == []


def test_transient_failures_are_retried_then_reported(sim: ModbusSimulator) -> None:
    sim.fault(1, "input", 0, 4, code=6)  # "server device busy"
    config = fast(sim, 1, retries=3, retry_delay_s=0.02)
    reader = build_reader(config)
    served_before = sim.requests
    points = by_name(run(poll(reader)), config)
    assert sim.requests - served_before == 3 + (1 + 3)  # three good requests, the busy one four times
    assert points["pump1_current"].quality == COMM_FAIL
    assert points["inflow"].quality == GOOD
    assert reader.health()["errors"] == {"device_busy": 1}
    assert "after 4 attempts" in reader.health()["last_error"]


def test_a_silent_device_times_out_and_the_poll_goes_on(sim: ModbusSimulator) -> None:
    sim.fault(2, "holding", 2100, 2109, code=None)  # the vibration module never answers
    config = fast(sim, 2, timeout_s=0.2, retries=1)
    reader = build_reader(config)
    started = time.monotonic()
    points = by_name(run(poll(reader)), config)
    elapsed = time.monotonic() - started
    assert points["vibration_x"].quality == COMM_FAIL
    assert points["motor_speed"].quality == GOOD
    assert points["parts_total"].quality == GOOD  # the request after the silent one
    assert reader.health()["errors"] == {"timeout": 1}
    assert elapsed >= 0.4  # it waited out the timeout and the retry before giving up


def test_nan_from_the_device_is_a_bad_point(sim: ModbusSimulator) -> None:
    sim.set_value(1, "inflow", math.nan)
    config = fast(sim, 1)
    reader = build_reader(config)
    points = by_name(run(poll(reader)), config)
    assert (points["inflow"].quality, points["inflow"].value) == (BAD, None)
    assert points["outflow"].quality == GOOD


def test_an_unreachable_device_is_comm_fail_with_backoff(sim: ModbusSimulator) -> None:
    port = sim.port
    sim.stop()
    config = fast(sim, 1, port=port, reconnect_initial_s=0.2, reconnect_max_s=0.8)
    reader = build_reader(config)

    async def polls() -> list[list[Point]]:
        batches = []
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # every 50 ms for a second
            batches.append(await reader.poll_once())
            await asyncio.sleep(0.05)
        return batches

    batches = run(polls())
    assert {p.quality for p in batches[0]} == {COMM_FAIL}
    assert len(batches[0]) == 34
    assert all(not batch for batch in batches[1:])  # COMM_FAIL again only at the heartbeat
    health = reader.health()
    assert health["connected"] is False
    # Attempts at 0, 0.2 and 0.6 s (backoff 0.2, 0.4, 0.8): the other polls wait out the backoff.
    assert health["errors"] == {"connect_failed": 3}
    assert health["last_error"] == "connect failed (refused or unreachable); next attempt in 0.8 s"


@pytest.mark.slow
def test_reconnects_after_the_server_restarts(sim: ModbusSimulator) -> None:
    sim.resume()
    config = fast(sim, 1, poll_interval_s=0.1, retries=1, retry_delay_s=0.05)
    reader = build_reader(config)
    seen: list[Point] = []

    async def emit(points: Sequence[Point]) -> None:
        seen.extend(points)

    async def wait_for(condition: Callable[[], bool], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while not condition():
            assert time.monotonic() < deadline, "timed out"
            await asyncio.sleep(0.02)

    async def scenario() -> None:
        task = asyncio.create_task(reader.run(emit))
        try:
            await wait_for(lambda: any(p.quality == GOOD for p in seen), 5)
            await asyncio.to_thread(sim.stop)
            await wait_for(lambda: any(p.quality == COMM_FAIL for p in seen), 5)
            assert not reader.health()["connected"]
            await asyncio.sleep(0.5)  # down long enough for a failed attempt or two
            failed_at = len(seen)
            await asyncio.to_thread(sim.start)
            await wait_for(lambda: any(p.quality == GOOD for p in seen[failed_at:]), 5)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    run(scenario(), timeout=30)
    health = reader.health()
    assert health["reconnects"] >= 1
    assert health["errors"].get("connection_lost", 0) + health["errors"].get("timeout", 0) >= 1
    assert sim.port == config.port  # back on the same port
    assert reader.connected is False  # run() closed the connection when cancelled


def test_run_stops_even_when_a_cancellation_is_swallowed(sim: ModbusSimulator) -> None:
    """pymodbus' asyncio.wait_for (Python 3.11) can eat a cancel that races an answer; run() must still end."""
    reader = build_reader(fast(sim, 1, poll_interval_s=0.1))
    emitted: list[Point] = []

    swallowed = []

    async def swallowing_poll() -> list[Point]:
        if swallowed:  # only the first: a regression then fails in 2 s instead of hanging
            await asyncio.sleep(0.05)
            return []
        # What wait_for does when the answer and the cancellation arrive together:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.05)
            return []
        swallowed.append(True)
        return []

    async def emit(points: Sequence[Point]) -> None:
        emitted.extend(points)

    async def scenario() -> None:
        reader.poll_once = swallowing_poll  # type: ignore[method-assign]
        task = asyncio.create_task(reader.run(emit))
        await asyncio.sleep(0.02)  # inside the (swallowing) poll
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 2)

    run(scenario())


# --------------------------------------------------------------------------------------------------
# Deadband and heartbeat
# --------------------------------------------------------------------------------------------------


def test_deadband_and_heartbeat(sim: ModbusSimulator) -> None:
    registers = [
        {"name": "inflow", "address": 0, "data_type": "float32", "deadband": 0.5, "heartbeat_s": 0.3},
        {"name": "outflow", "address": 2, "data_type": "float32", "byte_order": "CDAB"},  # no deadband
        {"name": "pump1_status", "function": "coil", "address": 0, "deadband": 0, "heartbeat_s": 60},
    ]
    config = fast(sim, 1, register_map=None, registers=registers)
    reader = build_reader(config)
    sim.set_value(1, "inflow", 100.0)
    sim.set_value(1, "pump1_status", False)

    async def scenario() -> None:
        async def polled() -> dict[str, Point]:
            return by_name(await reader.poll_once(), config)

        assert set(await polled()) == {"inflow", "outflow", "pump1_status"}  # the first poll: everything
        assert set(await polled()) == {"outflow"}  # unchanged: only the point without a deadband
        sim.set_value(1, "inflow", 100.4)
        assert set(await polled()) == {"outflow"}  # moved 0.4, within the 0.5 deadband
        sim.set_value(1, "inflow", 100.6)
        assert (await polled())["inflow"].value == pytest.approx(100.6)  # 0.6 from the last emitted 100.0
        sim.set_value(1, "pump1_status", True)
        assert (await polled())["pump1_status"].value == 1.0  # deadband 0: any change
        await asyncio.sleep(0.35)
        assert set(await polled()) == {"inflow", "outflow"}  # heartbeat: unchanged inflow emitted again
        await reader.close()

    run(scenario())
