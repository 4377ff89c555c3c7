"""MQTT QoS 1 into the durable spool: sustained points per second, points lost, the collector's memory.

Run: ``python -m bench.mqtt_throughput [--messages 1000000] [--publishers 4] [--mode both|drain|live]
[--stock-messages 100000]``

What is measured, on one Mosquitto started with ``deploy/mosquitto.conf`` on a free loopback port:

1. **bare paho** (the ceiling, ``mqtt_raw_points_per_s``): the simplest paho subscriber, in its own
   process: ``on_message`` counts, ``loop_forever()``, QoS 1 with paho's automatic acknowledgement,
   MQTT 3.1.1, persistent session. Nothing is decoded or stored.
2. **collector** (``mqtt_points_per_s``): ``MqttReader`` with its defaults, in its own process, into the
   real ``collector.spool.Spool`` (fsync on every commit); every message is decoded into a point and
   acknowledged only after the spool returned.
3. **batched** (``mqtt_batched_points_per_s``): the same collector, 100 points per message on
   ``scada/{unit}/batch``.
4. **stock broker** (``mqtt_stock_points_per_s``, ``mqtt_stock_points_lost``): the collector with its
   defaults, live, against a second Mosquitto run with its stock settings (only a loopback listener and
   anonymous access: 20 messages in flight and 1,000 queued per MQTT 3.1.1 client), fed a burst of
   ``--stock-messages`` single-point messages as fast as the publishers go. ``mqtt_stock_broker_dropped``
   is what the broker's ``$SYS`` counter says it dropped, as the reader's ``health()`` reported it after
   the broker's next ``$SYS`` round (-1: not reported).

The burst is ``--messages`` single-point QoS 1 messages (JSON with a unique timestamp each), published
by ``--publishers`` ``mosquitto_pub -l`` processes in parallel (a C client; not the bottleneck). In
``live`` mode the subscriber is connected while the burst is published, and the rate runs from the
first message received to the last one durable; in ``drain`` mode the burst is queued in the broker
for the subscriber's persistent session first, then the subscriber connects and the rate is how fast
it empties the queue (no publisher competing for the CPU). ``mqtt_points_lost`` counts published keys
(unit, sensor, timestamp) not found in the spool afterwards; ``collector_rss_mb`` is the collector
process's peak resident memory over its runs. The headline keys come from drain mode when it ran (the
default runs both): it measures the subscriber alone, while live mode shares the cores with the broker
and the publishers (and anything else on the machine); live figures are reported as ``mqtt_live_*``.
``mosquitto_pub -l`` drops what it has not sent when its input ends, so each publisher's input stays
open until the subscriber (or, in drain mode, the broker's ``$SYS`` counter) has everything.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench.common import print_table, write_results

START_US = 1772323200000000  # 2026-03-01T00:00:00Z
SENSORS = ("temperature", "pressure", "flow", "power")
STALL_S = 30.0  # a subscriber that receives nothing for this long has lost the rest


def _timestamp(us: int) -> str:
    """ISO 8601 UTC with microseconds, from microseconds after 2026-03-01 (fast: no datetime)."""
    offset = us - START_US
    seconds, micros = divmod(offset, 1_000_000)
    minutes, second = divmod(seconds, 60)
    hours, minute = divmod(minutes, 60)
    days, hour = divmod(hours, 24)
    return f"2026-03-{1 + days:02d}T{hour:02d}:{minute:02d}:{second:02d}.{micros:06d}Z"


def _write_inputs(directory: Path, prefix: str, messages: int, publishers: int, batch: int) -> list[tuple[str, Path]]:
    """One input file per publisher: (topic, file); every point's key is unique and known."""
    inputs = []
    per_publisher = -(-messages // publishers)
    for k in range(publishers):
        unit = f"UNIT{k + 1:03d}"
        count = max(0, min(per_publisher, messages - k * per_publisher))
        path = directory / f"{prefix}-{k}.txt"
        with path.open("w") as handle:
            if batch == 1:
                for i in range(count):
                    value = (i % 1000) / 10
                    handle.write(f'{{"value": {value}, "timestamp": "{_timestamp(START_US + i * 1000)}"}}\n')
                topic = f"{prefix}/{unit}/flow"
            else:
                for i in range(count):
                    items = ", ".join(
                        f'{{"sensor_type": "{SENSORS[j % 4]}", "value": {j}.5, '
                        f'"timestamp": "{_timestamp(START_US + (i * batch + j) * 1000)}"}}'
                        for j in range(batch)
                    )
                    handle.write(f"[{items}]\n")
                topic = f"{prefix}/{unit}/batch"
        inputs.append((topic, path))
    return inputs


def _expected_keys(messages: int, publishers: int, batch: int) -> set[tuple[str, str, str, int]]:
    keys = set()
    per_publisher = -(-messages // publishers)
    for k in range(publishers):
        unit = f"UNIT{k + 1:03d}"
        count = max(0, min(per_publisher, messages - k * per_publisher))
        for i in range(count):
            if batch == 1:
                keys.add(("mqtt", unit, "flow", START_US + i * 1000))
            else:
                for j in range(batch):
                    keys.add(("mqtt", unit, SENSORS[j % 4], START_US + (i * batch + j) * 1000))
    return keys


class Publishers:
    """``mosquitto_pub -l`` processes fed from files; their input stays open until ``close``."""

    def __init__(self, port: int, inputs: list[tuple[str, Path]]) -> None:
        self.processes: list[subprocess.Popen[bytes]] = []
        self.feeders: list[threading.Thread] = []
        for topic, path in inputs:
            process = subprocess.Popen(
                ["mosquitto_pub", "-p", str(port), "-q", "1", "-M", "1000", "-t", topic, "-l"],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            feeder = threading.Thread(target=self._feed, args=(process, path), daemon=True)
            feeder.start()
            self.processes.append(process)
            self.feeders.append(feeder)

    def _feed(self, process: subprocess.Popen[bytes], path: Path) -> None:
        assert process.stdin is not None
        try:
            with path.open("rb") as handle:
                shutil.copyfileobj(handle, process.stdin, 1 << 20)
            process.stdin.flush()
        except (BrokenPipeError, ValueError):
            pass

    def close(self) -> None:
        for process in self.processes:
            if process.stdin is not None:
                with contextlib.suppress(BrokenPipeError):
                    process.stdin.close()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


# ---------------------------------------------------------------------------------------- children


def _child_raw(port: int, client_id: str, topic: str, expected: int, register_only: bool) -> dict[str, Any]:
    """The bare paho subscriber: count messages, acknowledge automatically, nothing else."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
    state = {"count": 0, "first": 0.0, "last": 0.0}

    def on_connect(client: Any, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        client.subscribe(topic, qos=1)

    def on_subscribe(client: Any, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        print("ready", flush=True)
        if register_only:
            client.disconnect()

    def on_message(client: Any, userdata: Any, message: Any) -> None:
        now = time.perf_counter()
        if not state["count"]:
            state["first"] = now
        state["count"] += 1
        state["last"] = now
        if state["count"] >= expected:
            client.disconnect()

    def watchdog() -> None:
        while True:
            time.sleep(1.0)
            if state["count"] and time.perf_counter() - state["last"] > STALL_S:
                client.disconnect()
                return

    client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
    threading.Thread(target=watchdog, daemon=True).start()
    client.connect("127.0.0.1", port, keepalive=60)
    client.loop_forever()
    return {"points": state["count"], "seconds": state["last"] - state["first"], "rss_mb": _rss_mb()}


def _child_collector(
    port: int, client_id: str, topic: str, expected: int, spool_dir: str, register_only: bool, stall_s: float = STALL_S
) -> dict:
    """``MqttReader`` (its defaults) into the real spool; stops once ``expected`` points are durable."""
    from collector.mqtt import MqttBrokerConfig, build_reader
    from collector.spool import Spool

    async def main() -> dict[str, Any]:
        config = MqttBrokerConfig(
            name="bench", port=port, client_id=client_id, topics=[topic], dead_letter_path=Path(spool_dir) / "dl.jsonl"
        )
        reader = build_reader(config)
        state = {"points": 0, "first": 0.0, "last": 0.0}
        done = asyncio.Event()

        async with Spool(spool_dir, writer="bench") as spool:

            async def emit(points: Any) -> None:
                if not state["points"]:
                    state["first"] = time.perf_counter()
                await spool.append(points)
                state["points"] += len(points)
                state["last"] = time.perf_counter()
                if state["points"] >= expected:
                    done.set()

            task = asyncio.create_task(reader.run(emit))
            while not (
                reader.health()["connected"]
                and all(isinstance(v, int) for v in reader.health()["subscriptions"].values())
            ):
                await asyncio.sleep(0.01)
            print("ready", flush=True)
            if not register_only:
                while not done.is_set():
                    await asyncio.sleep(0.2)
                    if state["points"] and time.perf_counter() - state["last"] > stall_s:
                        break
                # Give the last acknowledgements a moment to leave before disconnecting.
                await asyncio.sleep(0.2)
                # The broker republishes its $SYS counters every sys_interval (10 s as shipped): wait for
                # the round after the burst, so the drop count covers all of it.
                uptime = reader.health()["broker_uptime_s"]
                deadline = time.monotonic() + 12.0
                while uptime is not None and reader.health()["broker_uptime_s"] == uptime:
                    if time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.1)
                await asyncio.sleep(0.2)
            health = reader.health()
            dropped = health.get("broker_dropped_messages")
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return {
            "points": state["points"],
            "seconds": state["last"] - state["first"],
            "rss_mb": _rss_mb(),
            "dead_letters": health["dead_letters"],
            "errors": health["errors"],
            "broker_dropped": -1 if dropped is None else dropped,
        }

    return asyncio.run(main())


def _rss_mb() -> float:
    """This process's peak resident memory in MB.

    ``VmHWM`` belongs to the process's own address space; ``ru_maxrss`` would not do: Linux carries it
    across ``exec``, so a child started by a large parent reports the parent's peak.
    """
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# ---------------------------------------------------------------------------------------- parent


class Child:
    """A subscriber process; ``ready()`` once subscribed, ``result()`` its JSON line."""

    def __init__(self, args: list[str]) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.mqtt_throughput", "--child", *args],
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if line != "ready":
            self.process.kill()
            raise RuntimeError(f"subscriber did not start: {line!r}")

    def result(self, timeout_s: float) -> dict[str, Any]:
        # Not communicate(): it reads the pipe's descriptor and misses what readline() already buffered,
        # which is the result itself when "ready" and the result arrive in one read (register mode).
        assert self.process.stdout is not None
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()
            raise
        lines = self.process.stdout.read().strip().splitlines()
        if not lines:
            raise RuntimeError(f"subscriber exited with {self.process.returncode} and no result")
        return json.loads(lines[-1])


def _sys_received(port: int) -> int:
    """The broker's count of PUBLISH packets received so far ($SYS, updated every sys_interval)."""
    out = subprocess.run(
        ["mosquitto_sub", "-p", str(port), "-t", "$SYS/broker/publish/messages/received", "-C", "1", "-W", "5"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return int(out) if out.isdigit() else -1


def _forget_session(port: int, client_id: str) -> None:
    """Drop a persistent session so the broker stops queueing for it (the next phase starts clean)."""
    import paho.mqtt.client as paho
    from paho.mqtt.enums import CallbackAPIVersion

    client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    client.connect("127.0.0.1", port)
    client.loop_start()
    time.sleep(0.2)
    client.disconnect()
    client.loop_stop()


def run_phase(
    broker_port: int,
    kind: str,
    mode: str,
    messages: int,
    publishers: int,
    batch: int,
    work: Path,
    stall_s: float = STALL_S,
) -> dict[str, Any]:
    """Publish the burst and measure one subscriber; returns its figures (and lost points for the collector)."""
    prefix = f"b{uuid.uuid4().hex[:6]}"
    client_id = f"bench-{kind}-{prefix}"
    inputs = _write_inputs(work, prefix, messages, publishers, batch)
    points = messages * batch
    spool_dir = work / f"spool-{prefix}"
    args = [kind, str(broker_port), client_id, f"{prefix}/+/+", str(points), str(spool_dir), str(stall_s)]
    before = _sys_received(broker_port)
    if mode == "drain":
        Child([*args, "register"]).result(60)
        feed = Publishers(broker_port, inputs)
        while _sys_received(broker_port) - before < messages:
            time.sleep(0.5)
        feed.close()
        child = Child(args)
    else:
        child = Child(args)
        feed = Publishers(broker_port, inputs)
    try:
        result = child.result(timeout_s=max(600.0, points / 1000))
    finally:
        feed.close()
        _forget_session(broker_port, client_id)
    if kind == "collector":
        from collector.spool import Spool, read_window, sealed_windows

        # Seal everything by opening the spool with a clock an hour on, then read every window back.
        Spool(spool_dir, writer="reader", clock=lambda: time.time() + 3600).close()
        found = {p.key for name in sealed_windows(spool_dir) for p in read_window(spool_dir, name)}
        expected = _expected_keys(messages, publishers, batch)
        result["lost"] = len(expected - found)
        result["unique"] = len(found & expected)
        shutil.rmtree(spool_dir, ignore_errors=True)
    for _, path in inputs:
        path.unlink()
    result["rate"] = result["points"] / result["seconds"] if result["seconds"] > 0 else 0.0
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.mqtt_throughput", description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000, help="single-point messages in the burst")
    parser.add_argument("--publishers", type=int, default=4, help="mosquitto_pub -l processes in parallel")
    parser.add_argument("--batch-size", type=int, default=100, help="points per message in the batched run")
    parser.add_argument(
        "--mode", choices=["live", "drain", "both"], default="both", help="headline figures from drain when run"
    )
    parser.add_argument(
        "--stock-messages", type=int, default=100_000, help="burst against a stock Mosquitto (0: skip that run)"
    )
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        kind, port, client_id, topic, expected, spool_dir, stall, *rest = args.child
        register = rest == ["register"]
        if kind == "raw":
            result = _child_raw(int(port), client_id, topic, int(expected), register)
        else:
            result = _child_collector(int(port), client_id, topic, int(expected), spool_dir, register, float(stall))
        print(json.dumps(result), flush=True)
        return

    for tool in ("mosquitto", "mosquitto_pub", "mosquitto_sub"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (apt-get install mosquitto mosquitto-clients)")
    from simulators.mqtt_broker import MosquittoProcess

    batch_messages = max(1, args.messages // args.batch_size)
    modes = ["live", "drain"] if args.mode == "both" else [args.mode]
    figures: dict[str, float] = {}
    rows: list[tuple[str, str]] = []
    with tempfile.TemporaryDirectory(prefix="ihub-bench-mqtt-") as tmp:
        work = Path(tmp)
        # sys_interval only makes the broker report its counters every second (used to know a queued
        # burst is complete); everything else is the shipped configuration.
        with MosquittoProcess(data_dir=work / "mosquitto", extra=("sys_interval 1",)) as broker:
            results: dict[str, dict[str, Any]] = {}
            for mode in modes:
                results[f"raw-{mode}"] = run_phase(broker.port, "raw", mode, args.messages, args.publishers, 1, work)
                results[f"collector-{mode}"] = run_phase(
                    broker.port, "collector", mode, args.messages, args.publishers, 1, work
                )
                results[f"batched-{mode}"] = run_phase(
                    broker.port, "collector", mode, batch_messages, args.publishers, args.batch_size, work
                )
                for name in ("raw", "collector", "batched"):
                    r = results[f"{name}-{mode}"]
                    lost = f", lost {r['lost']}, peak RSS {r['rss_mb']:.0f} MB" if "lost" in r else ""
                    rows.append(
                        (f"{mode}: {name}", f"{r['rate']:,.0f} pts/s ({r['points']:,} in {r['seconds']:.1f} s{lost})")
                    )
        if args.stock_messages:
            # Nothing tuned: what a site gets from a fresh Mosquitto install. The stall limit is short
            # because a broker that dropped messages never delivers the rest.
            with MosquittoProcess(data_dir=work / "mosquitto-stock", config=None) as stock_broker:
                stock = run_phase(
                    stock_broker.port, "collector", "live", args.stock_messages, args.publishers, 1, work, stall_s=5.0
                )
            rows.append(
                (
                    "stock broker, live: collector",
                    f"{stock['rate']:,.0f} pts/s ({stock['points']:,} of {args.stock_messages:,}, lost "
                    f"{stock['lost']:,}, broker dropped {stock['broker_dropped']:,})",
                )
            )
    # Drain measures the subscriber alone over the whole burst; live shares two cores with the broker and four
    # publishers and swings with whatever else runs on the machine. The headline is drain when it ran.
    headline = "drain" if "drain" in modes else "live"
    raw, collector, batched = (results[f"{n}-{headline}"] for n in ("raw", "collector", "batched"))
    figures = {
        "mqtt_points_per_s": collector["rate"],
        "mqtt_raw_points_per_s": raw["rate"],
        "mqtt_vs_raw_ratio": collector["rate"] / raw["rate"] if raw["rate"] else 0.0,
        "mqtt_points_lost": collector["lost"],
        "mqtt_batched_points_per_s": batched["rate"],
        "mqtt_batched_points_lost": batched["lost"],
        "collector_rss_mb": max(r["rss_mb"] for k, r in results.items() if not k.startswith("raw")),
        "mqtt_messages": args.messages,
        "mqtt_publishers": args.publishers,
    }
    if args.stock_messages:
        figures.update(
            {
                "mqtt_stock_points_per_s": stock["rate"],
                "mqtt_stock_points_lost": stock["lost"],
                "mqtt_stock_broker_dropped": stock["broker_dropped"],
                "mqtt_stock_messages": args.stock_messages,
            }
        )
    for other in (m for m in modes if m != headline):
        figures[f"mqtt_{other}_points_per_s"] = results[f"collector-{other}"]["rate"]
        figures[f"mqtt_{other}_raw_points_per_s"] = results[f"raw-{other}"]["rate"]
        figures[f"mqtt_{other}_batched_points_per_s"] = results[f"batched-{other}"]["rate"]
        figures[f"mqtt_{other}_points_lost"] = (
            results[f"collector-{other}"]["lost"] + results[f"batched-{other}"]["lost"]
        )
    rows += [
        ("collector / bare paho", f"{figures['mqtt_vs_raw_ratio']:.2f}"),
        ("collector peak RSS", f"{figures['collector_rss_mb']:.0f} MB"),
    ]
    print_table(
        f"MQTT QoS 1 into the spool: {args.messages:,} messages, {args.publishers} publishers, "
        f"{os.cpu_count()} cores (headline: {headline})",
        rows,
    )
    path = write_results("mqtt_throughput", figures)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
