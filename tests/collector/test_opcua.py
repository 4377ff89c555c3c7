"""The OPC UA reader against the real asyncua simulator on loopback: subscriptions, polling, quality, security,
reconnects and browsing; plus the node map loader and the simulator's model."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from collector.opcua import (
    OpcUaConnectionError,
    OpcUaEndpointConfig,
    browse,
    browse_main,
    build_reader,
    load_node_map,
)
from collector.points import BAD, COMM_FAIL, GOOD, UNCERTAIN, Point
from simulators.opcua import (
    OpcUaSimServer,
    PumpStationModel,
    generate_certificates,
    serve_opcua,
    station_variables,
)

pytestmark = pytest.mark.timeout(120)

MAP = Path(__file__).resolve().parents[2] / "collector" / "maps" / "pump_station_opcua.yaml"
KELVIN = 273.15


class Sink:
    """A counting emit that keeps every batch, and lets a test wait for the point it expects."""

    def __init__(self) -> None:
        self.batches: list[list[Point]] = []
        self._arrived = asyncio.Event()

    @property
    def points(self) -> list[Point]:
        return [point for batch in self.batches for point in batch]

    async def __call__(self, points) -> None:
        self.batches.append(list(points))
        self._arrived.set()

    async def wait_for(self, predicate: Callable[[Point], bool], timeout_s: float = 10.0) -> Point:
        """The first point (already received or arriving within ``timeout_s``) that satisfies ``predicate``."""
        deadline = asyncio.get_running_loop().time() + timeout_s
        seen = 0
        while True:
            points = self.points
            for point in points[seen:]:
                if predicate(point):
                    return point
            seen = len(points)
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"no matching point within {timeout_s} s; last: {points[-3:]}")
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)


async def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def running(reader, sink: Sink):
    task = asyncio.create_task(reader.run(sink))
    try:
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def run(coro, timeout_s: float = 60.0) -> Any:
    """Run one test body on a fresh event loop, bounded in time."""
    return asyncio.run(asyncio.wait_for(coro, timeout_s))


def endpoint(url: str, **overrides: Any) -> OpcUaEndpointConfig:
    settings: dict[str, Any] = {
        "name": "ps01",
        "url": url,
        "node_map": str(MAP),
        "subscription": {"publishing_interval_ms": 50, "sampling_interval_ms": 0},
        "poll_interval_s": 0.2,
        "reconnect": {"initial_s": 0.2, "max_s": 1.0},
        "timeout_s": 3.0,
    }
    return OpcUaEndpointConfig.model_validate({**settings, **overrides})


def is_(unit_id: str, sensor_type: str, quality: str = GOOD) -> Callable[[Point], bool]:
    return lambda p: p.unit_id == unit_id and p.sensor_type == sensor_type and p.quality == quality


@pytest.fixture(scope="module")
def static_sim() -> Iterator[OpcUaSimServer]:
    """A pump station whose values move only when a test sets them (security None only)."""
    with serve_opcua(tick_s=0, security=False) as server:
        yield server


@pytest.fixture
def sim(static_sim: OpcUaSimServer) -> Iterator[OpcUaSimServer]:
    yield static_sim
    static_sim.release_all()


# ---------------------------------------------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------------------------------------------


def test_the_pump_station_map_loads_with_kelvin_converted():
    nodes = load_node_map(MAP)
    assert len(nodes) == len(station_variables(1)) == 20
    motor = next(n for n in nodes if n.node_id == "ns=2;s=PS01.Pump1.MotorTemperature")
    assert (motor.unit_id, motor.sensor_type, motor.unit) == ("PS01-P1", "motor_temperature", "°C")
    assert motor.convert(350.15) == pytest.approx(77.0)
    assert sum(n.browse_path is not None for n in nodes) == 3


def test_node_map_errors_name_the_file_line_and_field(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "defaults:\n  unit_id: PS09\nnodes:\n"
        '  - node_id: "ns=2;s=A"\n    sensor_type: flow\n'
        '  - node_id: "ns=2;s=B"\n    sensor_type: pressure\n    scale: lots\n'
    )
    with pytest.raises(ValueError, match=r"bad\.yaml:8: nodes\[1\]\.scale: .*number"):
        load_node_map(bad)
    bad.write_text('- browse_path: "Objects/PumpStation/Flow"\n  unit_id: X\n  sensor_type: flow\n')
    with pytest.raises(ValueError, match=r"bad\.yaml:1: nodes\[0\]\.browse_path: .*namespace index"):
        load_node_map(bad)
    # Defaults fill every node.
    bad.write_text("defaults: {unit_id: PS09, unit: bar}\nnodes:\n  - {node_id: 'ns=2;i=7', sensor_type: pressure}\n")
    assert load_node_map(bad)[0].unit_id == "PS09"


def test_endpoint_config_refuses_what_would_fail_later(tmp_path: Path):
    with pytest.raises(ValidationError, match="needs the collector's certificate and private_key"):
        endpoint("opc.tcp://127.0.0.1:4840", security={"policy": "Basic256Sha256"})
    with pytest.raises(ValidationError, match="unit PS01 sensor flow is already"):
        endpoint(
            "opc.tcp://127.0.0.1:4840",
            node_map=[
                {"node_id": "ns=2;s=A", "unit_id": "PS01", "sensor_type": "flow"},
                {"node_id": "ns=2;s=B", "unit_id": "PS01", "sensor_type": "flow"},
            ],
        )
    with pytest.raises(ValidationError, match=r"not an opc\.tcp:// URL"):
        endpoint("http://127.0.0.1:4840")
    with pytest.raises(ValidationError, match="both username and password"):
        endpoint("opc.tcp://127.0.0.1:4840", username="op")
    # A relative node map resolves against the configuration file's directory.
    (tmp_path / "maps").mkdir()
    (tmp_path / "maps" / "m.yaml").write_text(MAP.read_text())
    config = OpcUaEndpointConfig.model_validate(
        {"name": "x", "url": "opc.tcp://h:1", "node_map": "maps/m.yaml"}, context={"base_dir": tmp_path}
    )
    assert len(config.node_map) == 20


# ---------------------------------------------------------------------------------------------------------------
# Subscriptions, polling, quality
# ---------------------------------------------------------------------------------------------------------------


def test_subscription_delivers_changes_with_units_scale_and_offset(sim: OpcUaSimServer):
    reader = build_reader(endpoint(sim.url))

    async def body() -> None:
        sink = Sink()
        async with running(reader, sink):
            # The initial values: every mapped node, as served, Kelvin already in °C.
            await wait_until(lambda: len({(p.unit_id, p.sensor_type) for p in sink.points}) == 20)
            flow = await sink.wait_for(is_("PS01", "flow"))
            assert flow.value == pytest.approx(sim.value("PS01.Outlet.Flow"))
            assert (flow.source, flow.device, flow.unit) == ("opcua", "ps01", "m³/h")

            sim.set_value("PS01.Pump1.MotorTemperature", 350.15)
            motor = await sink.wait_for(lambda p: is_("PS01-P1", "motor_temperature")(p) and p.value > 76.9)
            assert motor.value == pytest.approx(77.0)
            assert motor.unit == "°C"
            # The source timestamp is the server's, and it is close to the receipt.
            assert abs(motor.received_ts_us - motor.source_ts_us) < 5_000_000
            assert reader.health()["mode"] == "subscribe"
            assert reader.health()["monitored_items"] == 20
            assert reader.health()["subscriptions"] == 1

    run(body())


def test_browse_paths_resolve_to_the_served_nodes(sim: OpcUaSimServer):
    reader = build_reader(endpoint(sim.url))

    async def body() -> None:
        sink = Sink()
        async with running(reader, sink):
            sim.set_value("PS01.Tank2.Level", 4.321)
            level = await sink.wait_for(lambda p: is_("PS01-T2", "level")(p) and p.value == pytest.approx(4.321))
            water = await sink.wait_for(is_("PS01-T1", "temperature"))
            assert water.value == pytest.approx(sim.value("PS01.Tank1.WaterTemperature") - KELVIN)
            assert level.unit == "m"
            assert reader.health()["unresolved_nodes"] == {}

    run(body())


def test_unknown_nodes_are_reported_and_the_rest_goes_on(sim: OpcUaSimServer):
    config = endpoint(
        sim.url,
        node_map=[
            {"node_id": "ns=2;s=PS01.Outlet.Flow", "unit_id": "PS01", "sensor_type": "flow"},
            {"node_id": "ns=2;s=PS01.Nothing", "unit_id": "PS01", "sensor_type": "ghost"},
            {"browse_path": "0:Objects/2:PS01/2:Nowhere", "unit_id": "PS01", "sensor_type": "void"},
            {"node_id": "ns=2;s=PS01.Pump1", "unit_id": "PS01", "sensor_type": "object"},
        ],
    )
    reader = build_reader(config)

    async def body() -> None:
        sink = Sink()
        async with running(reader, sink):
            await sink.wait_for(is_("PS01", "flow"))
            unresolved = reader.health()["unresolved_nodes"]
            assert set(unresolved) == {"ns=2;s=PS01.Nothing", "0:Objects/2:PS01/2:Nowhere", "ns=2;s=PS01.Pump1"}
            assert "BadNodeIdUnknown" in unresolved["ns=2;s=PS01.Nothing"]
            assert "not a Variable" in unresolved["ns=2;s=PS01.Pump1"]
            assert reader.health()["monitored_items"] == 1

    run(body())


def test_status_codes_become_qualities(sim: OpcUaSimServer):
    reader = build_reader(endpoint(sim.url))

    async def body() -> None:
        sink = Sink()
        async with running(reader, sink):
            await sink.wait_for(is_("PS01-P2", "pressure"))
            sim.set_status("PS01.Pump2.DischargePressure", "BadSensorFailure")
            bad = await sink.wait_for(is_("PS01-P2", "pressure", BAD))
            assert bad.value is None  # the server sends no value with a Bad status
            sim.set_value("PS01.Pump2.DischargePressure", 4.5, status="UncertainLastUsableValue")
            uncertain = await sink.wait_for(is_("PS01-P2", "pressure", UNCERTAIN))
            assert uncertain.value == pytest.approx(4.5)
            sim.set_value("PS01.Pump2.DischargePressure", 4.6)
            good = await sink.wait_for(lambda p: is_("PS01-P2", "pressure", GOOD)(p) and p.value > 4.55)
            assert good.value == pytest.approx(4.6)

    run(body())


def test_deadband_suppresses_small_changes(sim: OpcUaSimServer):
    config = endpoint(
        sim.url,
        node_map=[{"node_id": "ns=2;s=PS01.Outlet.Flow", "unit_id": "PS01", "sensor_type": "flow", "deadband": 5}],
    )
    reader = build_reader(config)

    async def body() -> None:
        sink = Sink()
        async with running(reader, sink):
            sim.set_value("PS01.Outlet.Flow", 300.0)
            await sink.wait_for(lambda p: p.value == 300.0)
            sim.set_value("PS01.Outlet.Flow", 302.0)  # within the deadband: not reported
            sim.set_value("PS01.Outlet.Flow", 310.0)
            await sink.wait_for(lambda p: p.value == 310.0)
            assert 302.0 not in [p.value for p in sink.points]

    run(body())


def test_polling_when_the_server_refuses_subscriptions():
    with serve_opcua(tick_s=0, security=False, allow_subscriptions=False) as server:
        reader = build_reader(endpoint(server.url))

        async def body() -> None:
            sink = Sink()
            async with running(reader, sink):
                await sink.wait_for(is_("PS01-P3", "power"))
                assert reader.health()["mode"] == "poll"
                assert reader.health()["subscriptions"] == 0
                server.set_value("PS01.Pump3.Power", 47.5)
                power = await sink.wait_for(lambda p: is_("PS01-P3", "power")(p) and p.value == pytest.approx(47.5))
                assert power.unit == "kW"
                # Unchanged values are not emitted again on every poll.
                await asyncio.sleep(0.6)
                repeats = [p for p in sink.points if is_("PS01-P3", "power")(p) and p.value == pytest.approx(47.5)]
                assert len(repeats) == 1

        run(body())


def test_poll_mode_reads_by_itself(sim: OpcUaSimServer):
    reader = build_reader(endpoint(sim.url, mode="poll"))

    async def body() -> None:
        sink = Sink()
        async with running(reader, sink):
            sim.set_value("PS01.Pump1.MotorTemperature", 313.15)
            point = await sink.wait_for(lambda p: is_("PS01-P1", "motor_temperature")(p) and abs(p.value - 40.0) < 1e-6)
            assert point.unit == "°C"
            assert reader.health()["mode"] == "poll"

    run(body())


# ---------------------------------------------------------------------------------------------------------------
# Security
# ---------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def secure_sim() -> Iterator[OpcUaSimServer]:
    with serve_opcua(tick_s=0.2, username="operator", password="s3cret!") as server:
        yield server


def secure_endpoint(server: OpcUaSimServer, password: str, mode: str = "SignAndEncrypt") -> OpcUaEndpointConfig:
    certificates = server.certificates
    assert certificates is not None
    return endpoint(
        server.url,
        security={
            "policy": "Basic256Sha256",
            "mode": mode,
            "certificate": str(certificates.client_certificate),
            "private_key": str(certificates.client_private_key),
        },
        username="operator",
        password=password,
    )


@pytest.mark.parametrize("mode", ["SignAndEncrypt", "Sign"])
def test_basic256sha256_with_certificates_and_password(secure_sim: OpcUaSimServer, mode: str):
    reader = build_reader(secure_endpoint(secure_sim, "s3cret!", mode))

    async def body() -> None:
        sink = Sink()
        async with running(reader, sink):
            await sink.wait_for(is_("PS01", "pressure"))
            # The simulator moves every tick: a second value proves the subscription keeps delivering.
            first = len(sink.points)
            await wait_until(lambda: len(sink.points) > first + 20)
            health = reader.health()
            assert health["connected"] and health["security"] == f"Basic256Sha256 {mode}"
            assert health["errors"] == 0

    run(body())


def test_a_wrong_password_fails_with_a_clear_error(secure_sim: OpcUaSimServer):
    reader = build_reader(secure_endpoint(secure_sim, "guess"))

    async def body() -> None:
        sink = Sink()
        async with running(reader, sink):
            await wait_until(lambda: reader.health()["connect_failures"] >= 2)
        health = reader.health()
        assert not health["connected"]
        assert "OPC UA endpoint 'ps01'" in health["last_error"]
        assert "refused user 'operator': wrong username or password (BadUserAccessDenied)" in health["last_error"]
        # The points say so once, not on every retry.
        assert [p.quality for p in sink.points] == [COMM_FAIL] * 20

        with pytest.raises(OpcUaConnectionError, match="wrong username or password"):
            await browse(
                secure_sim.url,
                security=secure_endpoint(secure_sim, "x").security,
                username="operator",
                password="guess",
            )

    run(body())


def test_an_untrusted_client_certificate_is_named(secure_sim: OpcUaSimServer, tmp_path: Path):
    stranger = generate_certificates(tmp_path)
    security = {
        "policy": "Basic256Sha256",
        "certificate": str(stranger.client_certificate),
        "private_key": str(stranger.client_private_key),
    }

    async def body() -> None:
        with pytest.raises(OpcUaConnectionError, match="is the certificate trusted") as refused:
            await browse(secure_sim.url, security=security, username="operator", password="s3cret!")
        assert "BadCertificateUntrusted" in str(refused.value)
        assert str(stranger.client_certificate) in str(refused.value)

    run(body())


# ---------------------------------------------------------------------------------------------------------------
# Reconnects and browsing
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_reconnects_after_a_server_restart_and_subscribes_again():
    with serve_opcua(tick_s=0, security=False) as server:
        reader = build_reader(endpoint(server.url))

        async def body() -> None:
            sink = Sink()
            async with running(reader, sink):
                await wait_until(lambda: reader.health()["monitored_items"] == 20)
                await asyncio.to_thread(server.restart, 0.5)
                await sink.wait_for(is_("PS01", "flow", COMM_FAIL))
                await wait_until(lambda: reader.health()["reconnects"] == 1 and reader.health()["subscriptions"] == 1)
                server.set_value("PS01.Outlet.Pressure", 1.234)
                after = await sink.wait_for(lambda p: is_("PS01", "pressure")(p) and p.value == pytest.approx(1.234))
                assert after.quality == GOOD
                # Every mapped node went COMM_FAIL exactly once for the outage.
                comm_fail = [p for p in sink.points if p.quality == COMM_FAIL]
                assert len(comm_fail) == 20
                assert len({(p.unit_id, p.sensor_type) for p in comm_fail}) == 20
                assert all(p.value is None for p in comm_fail)

        run(body())


def test_browse_lists_the_simulator_variables(sim: OpcUaSimServer, tmp_path: Path):
    async def body() -> list[dict[str, Any]]:
        return await browse(sim.url)

    listing = run(body())
    assert [entry["node_id"] for entry in listing] == [f"ns=2;s={ident}" for ident in station_variables(1)]
    flow = next(entry for entry in listing if entry["node_id"] == "ns=2;s=PS01.Pump1.Flow")
    assert flow["browse_path"] == "0:Objects/2:PS01/2:Pump1/2:Flow"
    assert flow["data_type"] == "Double"
    assert flow["unit"] == "m³/h"
    assert flow["value"] == pytest.approx(sim.value("PS01.Pump1.Flow"))
    running_entry = next(entry for entry in listing if entry["node_id"] == "ns=2;s=PS01.Pump1.Running")
    assert running_entry["data_type"] == "Boolean"

    # The printed snippet is a node map the reader accepts, with Kelvin turned into °C.
    out = io.StringIO()
    assert browse_main(sim.url, out=out) == 0
    snippet = tmp_path / "browsed.yaml"
    snippet.write_text(out.getvalue())
    nodes = load_node_map(snippet)
    assert len(nodes) == 20
    motor = next(n for n in nodes if n.node_id == "ns=2;s=PS01.Pump1.MotorTemperature")
    assert (motor.unit_id, motor.sensor_type, motor.unit, motor.offset) == (
        "PS01-Pump1",
        "motor_temperature",
        "°C",
        -KELVIN,
    )


def test_browse_main_reports_an_unreachable_server(capsys):
    assert browse_main("opc.tcp://127.0.0.1:1/none", timeout_s=2) == 1
    assert "cannot connect" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------------------------
# The simulator's model
# ---------------------------------------------------------------------------------------------------------------


def test_the_station_model_is_deterministic_and_physical():
    start = datetime(2026, 3, 2, 17, 0, tzinfo=UTC)  # Monday 00:00 in Bangkok
    a, b = PumpStationModel(7, 0, start), PumpStationModel(7, 0, start)
    day_a = [a.step(60.0) for _ in range(24 * 60)]
    day_b = [b.step(60.0) for _ in range(24 * 60)]
    assert day_a == day_b
    assert day_a != [PumpStationModel(8, 0, start).step(60.0) for _ in range(3)]

    demand = [v["Outlet.Flow"] for v in day_a]
    night, morning = min(demand[120:240]), max(demand[360:480])  # 02-04 local vs 06-08 local
    assert morning > 2.5 * night
    # Pumps cycle on tank level, and the level stays in the tank.
    starts = sum(
        1
        for before, after in itertools.pairwise(day_a)
        for pump in ("Pump1", "Pump2", "Pump3")
        if not before[f"{pump}.Running"] and after[f"{pump}.Running"]
    )
    assert starts >= 1
    assert all(0.3 <= v["Tank1.Level"] <= 6.1 for v in day_a)
    # Pump power follows ρ·g·Q·H/η with η between 0.6 and 0.8.
    for values in day_a:
        if values["Pump1.Running"]:
            q = values["Pump1.Flow"] / 3600
            head_m = (values["Pump1.DischargePressure"] - values["Tank1.Level"] / 10.197) * 10.197
            efficiency = 1000 * 9.81 * q * head_m / (values["Pump1.Power"] * 1000)
            assert 0.6 < efficiency < 0.85
            break
    # Temperatures are in Kelvin, around 30 °C for water and up to ~80 °C for a running motor.
    assert all(290 < v["Tank1.WaterTemperature"] < 310 for v in day_a)
    assert all(290 < v["Pump1.MotorTemperature"] < 360 for v in day_a)
    assert not math.isnan(sum(demand))
    assert start + timedelta(days=1) == a.clock
