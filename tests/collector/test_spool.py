"""The durable spool: windows, sealing, recovery, back-pressure, and no acknowledged point lost to kill -9."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from collector.points import GOOD, Point
from collector.spool import (
    Spool,
    SpoolError,
    SpoolFullError,
    SpoolLockedError,
    archive_window,
    read_dead_letters,
    read_window,
    sealed_windows,
    window_name,
    window_start,
    write_dead_letter,
)
from resources.scada_manifest import ChecksumError, ManifestError, WindowDirectory

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()  # a window boundary


class Clock:
    """A clock the test moves by hand (seconds since the epoch)."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def point(received_s: float, value: float = 1.0, unit_id: str = "UNIT001", sensor: str = "flow") -> Point:
    received = int(received_s * 1_000_000)
    return Point("mqtt", "gw", unit_id, sensor, value, "L/min", GOOD, received - 1000, received)


def test_window_names_round_trip():
    start = datetime(2026, 3, 1, 12, 5, tzinfo=UTC)
    assert window_name(start) == "20260301T1205Z"
    assert window_start("20260301T1205Z") == start
    with pytest.raises(ValueError, match="not a spool window name"):
        window_start("2026-03-01")
    with pytest.raises(ValueError, match="no time zone"):
        window_name(datetime(2026, 3, 1, 12, 5))


def test_window_length_must_divide_an_hour(tmp_path):
    with pytest.raises(ValueError, match="divides 3600"):
        Spool(tmp_path, window_s=420)


def test_points_are_filed_by_receive_window_and_sealed_after_the_delay(tmp_path):
    clock = Clock(T0 + 10)
    points = [point(T0 + 10, 1.0), point(T0 + 299.9, 2.0), point(T0 + 300, 3.0)]

    async def scenario():
        async with Spool(tmp_path, clock=clock, seal_delay_s=2.0) as spool:
            await spool.append(points)
            assert sorted(os.listdir(tmp_path / "open")) == ["20260301T1200Z", "20260301T1205Z"]
            clock.now = T0 + 301.9
            assert spool.seal_due() == []  # the delay has not passed
            clock.now = T0 + 302
            assert spool.seal_due() == ["20260301T1200Z"]
            assert spool.health()["open_windows"] == ["20260301T1205Z"]

    asyncio.run(scenario())
    assert sealed_windows(tmp_path) == ["20260301T1200Z"]
    assert read_window(tmp_path, "20260301T1200Z") == points[:2]
    files = sorted(p.name for p in (tmp_path / "sealed" / "20260301T1200Z").iterdir())
    assert files == ["collector-000000.jsonl", "manifest.json"]
    segment = tmp_path / "sealed" / "20260301T1200Z" / "collector-000000.jsonl"
    assert segment.read_text().splitlines() == [p.to_json() for p in points[:2]]
    with pytest.raises(SpoolError, match="still open"):
        read_window(tmp_path, "20260301T1205Z")


def test_a_window_is_read_again_after_it_was_archived(tmp_path):
    clock = Clock(T0)

    async def scenario():
        async with Spool(tmp_path, clock=clock) as spool:
            await spool.append([point(T0 + 1), point(T0 + 2)])
            clock.now = T0 + 400
            spool.seal_due()
            assert spool.health()["sealed_windows"] == 1
            archive_window(tmp_path, "20260301T1200Z")
            archive_window(tmp_path, "20260301T1200Z")  # a re-run archives again: no-op
            spool.seal_due()  # rescans: the archived window no longer counts as backlog
            assert spool.backlog_bytes == 0

    asyncio.run(scenario())
    assert sealed_windows(tmp_path) == []
    assert len(read_window(tmp_path, "20260301T1200Z")) == 2
    with pytest.raises(FileNotFoundError, match="neither sealed nor archived"):
        archive_window(tmp_path, "20260301T1300Z")


def test_recovery_truncates_a_torn_line_and_seals_windows_already_over(tmp_path):
    clock = Clock(T0 + 5)
    good = [point(T0 + 1, 1.0), point(T0 + 2, 2.0)]

    async def write():
        spool = Spool(tmp_path, clock=clock)
        await spool.append(good)
        await spool.append([point(T0 + 3, 3.0)])
        spool.close()

    asyncio.run(write())
    segment = tmp_path / "open" / "20260301T1200Z" / "collector-000000.jsonl"
    with segment.open("ab") as handle:  # what a crash in the middle of a write leaves
        handle.write(point(T0 + 4, 4.0).to_json().encode()[:17])

    # Restarted inside the same window: the torn line goes, the window stays open, a new segment starts.
    async def restart_in_window():
        async with Spool(tmp_path, clock=clock) as spool:
            assert spool.health()["open_windows"] == ["20260301T1200Z"]
            await spool.append([point(T0 + 6, 6.0)])

    asyncio.run(restart_in_window())
    assert segment.read_bytes().endswith(b"\n")
    segments = sorted(p.name for p in segment.parent.glob("*.jsonl"))
    assert segments == ["collector-000000.jsonl", "collector-000001.jsonl"]

    # Restarted after the window: it is sealed on start, with every acknowledged point and no torn one.
    clock.now = T0 + 3600
    Spool(tmp_path, clock=clock).close()
    assert sealed_windows(tmp_path) == ["20260301T1200Z"]
    assert [p.value for p in read_window(tmp_path, "20260301T1200Z")] == [1.0, 2.0, 3.0, 6.0]


def test_a_point_for_an_already_sealed_window_goes_to_the_current_one(tmp_path):
    clock = Clock(T0 + 1)

    async def scenario():
        async with Spool(tmp_path, clock=clock) as spool:
            await spool.append([point(T0 + 1)])
            clock.now = T0 + 303
            spool.seal_due()
            # A reader held this point past the seal delay: the sealed window must not change.
            await spool.append([point(T0 + 299, 9.0)])
            assert spool.health()["late_points"] == 1
            clock.now = T0 + 603
            spool.seal_due()

    asyncio.run(scenario())
    assert [p.value for p in read_window(tmp_path, "20260301T1200Z")] == [1.0]
    late = read_window(tmp_path, "20260301T1205Z")
    assert [p.value for p in late] == [9.0]
    assert late[0].received_ts_us == int((T0 + 299) * 1_000_000)  # timestamps kept as received


def test_a_full_spool_refuses_points_says_so_and_accepts_again_once_archived(tmp_path, caplog):
    clock = Clock(T0)
    one = point(T0 + 1)
    line = len(one.to_json()) + 1

    async def scenario():
        async with Spool(tmp_path, clock=clock, max_bytes=10 * line) as spool:
            await spool.append([one] * 8)
            assert spool.health()["state"] == "warning"
            with caplog.at_level(logging.ERROR, logger="collector.spool"):
                with pytest.raises(SpoolFullError, match="full"):
                    await spool.append([one] * 3)
                with pytest.raises(SpoolFullError):
                    await spool.append([one])  # full stays full until room is made
            assert spool.health()["state"] == "full"
            assert spool.health()["refused_points"] == 4
            assert [r.levelname for r in caplog.records].count("ERROR") == 1  # once per change, not per call

            clock.now = T0 + 400
            spool.seal_due()
            archive_window(tmp_path, "20260301T1200Z")
            with caplog.at_level(logging.ERROR, logger="collector.spool"):
                spool.seal_due()
            assert spool.health()["state"] == "ok"
            assert any("accepts points again" in r.message for r in caplog.records)
            await spool.append([point(T0 + 401)])

    asyncio.run(scenario())


def test_concurrent_single_point_appends_share_commits(tmp_path):
    async def scenario():
        async with Spool(tmp_path) as spool:
            now = time.time()

            async def caller(k: int):
                for i in range(50):
                    await spool.append([point(now, float(i), unit_id=f"U{k}")])

            await asyncio.gather(*(caller(k) for k in range(40)))
            health = spool.health()
            assert health["points_appended"] == 2000
            assert health["commits"] < 2000 / 4  # group commit: many appends per fsync

    asyncio.run(scenario())


def test_a_second_writer_on_the_same_root_is_refused(tmp_path):
    first = Spool(tmp_path)
    try:
        with pytest.raises(SpoolLockedError, match=str(os.getpid())):
            Spool(tmp_path)
    finally:
        first.close()
    Spool(tmp_path).close()  # released on close


def test_dead_letters_keep_the_payload_and_the_reason(tmp_path):
    write_dead_letter(tmp_path, "mqtt", b'{"value": oops', "not JSON: line 1 column 11")
    path = write_dead_letter(tmp_path, "mqtt", b"\xff\xfe", "not UTF-8")
    assert path.parent == tmp_path / "dead-letter"
    records = read_dead_letters(tmp_path)
    assert [(r["source"], r["reason"], r["payload_encoding"]) for r in records] == [
        ("mqtt", "not JSON: line 1 column 11", "utf-8"),
        ("mqtt", "not UTF-8", "base64"),
    ]
    assert records[0]["payload"] == '{"value": oops'


FAILING_DISK = textwrap.dedent(
    """
    import asyncio, resource, signal, sys
    from collector.points import Point
    from collector.spool import Spool, SpoolError

    # Files may not grow past 4000 bytes: a write past it fails (EFBIG) as on a full disk.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4000, 4000))

    async def main():
        spool = Spool(sys.argv[1], clock=lambda: 1772366405.0)
        for seq in range(60):
            at = 1772366401000000
            batch = [Point("test", "disk", "U1", "seq", float(seq), "", "GOOD", seq * 10 + i, at) for i in range(10)]
            try:
                await spool.append(batch)
                print("ok", seq, flush=True)
            except SpoolError as error:
                print("failed", seq, error, flush=True)
        await spool.aclose()

    asyncio.run(main())
    """
)


def test_a_failed_write_is_cut_back_and_the_spool_goes_on_in_a_new_segment(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", FAILING_DISK, str(tmp_path)], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    failed = [line for line in lines if line.startswith("failed")]
    assert failed, "the file size limit never bit"
    assert "cannot write" in failed[0] and "collector-000000.jsonl" in failed[0]
    acknowledged = {int(line.split()[1]) for line in lines if line.startswith("ok")}
    assert len(acknowledged) > len(failed)  # it went on after each failure
    window = tmp_path / "open" / "20260301T1200Z"
    assert len(list(window.glob("*.jsonl"))) > 1  # new segments after failures
    for segment in window.glob("*.jsonl"):
        assert segment.read_bytes().endswith(b"\n")  # no torn line left behind
    Spool(tmp_path, clock=lambda: T0 + 3600).close()
    values = [p.value for p in read_window(tmp_path, "20260301T1200Z")]
    assert sorted(set(values)) == sorted(float(seq) for seq in acknowledged)
    assert len(values) == 10 * len(acknowledged)
    # The manifest, written on recovery from the files, agrees with what was acknowledged.
    manifest, published = WindowDirectory(tmp_path).read("20260301T1200Z")
    assert manifest.points == len(published) == 10 * len(acknowledged)


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from collector.points import Point, now_micros
    from collector.spool import Spool

    root, first = sys.argv[1], int(sys.argv[2])

    async def main():
        spool = Spool(root, window_s=60, seal_delay_s=0.5)
        next_seq = first

        async def worker(k):
            nonlocal next_seq
            while True:
                start = next_seq
                size = 1 + start % 3000
                next_seq += size
                now = now_micros()
                seqs = range(start, start + size)
                batch = [Point("test", "kill", f"U{k}", "seq", float(s), "", "GOOD", s, now) for s in seqs]
                await spool.append(batch)
                print(start, size, flush=True)  # acknowledged

        await asyncio.gather(*(worker(k) for k in range(4)))

    asyncio.run(main())
    """
)


@pytest.mark.slow
def test_no_acknowledged_point_is_lost_when_the_writer_is_killed(tmp_path, caplog):
    root = tmp_path / "spool"
    acknowledged: set[int] = set()
    for cycle in range(6):
        process = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(root), str(cycle * 1_000_000_000)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            acked_this_cycle = 0
            deadline = time.monotonic() + 30
            assert process.stdout is not None
            while acked_this_cycle < 20_000 and time.monotonic() < deadline:
                line = process.stdout.readline()
                if not line.endswith(b"\n"):
                    break
                start, size = map(int, line.split())
                acknowledged.update(range(start, start + size))
                acked_this_cycle += size
            process.send_signal(signal.SIGKILL)
            rest, errors = process.communicate(timeout=10)
        finally:
            if process.poll() is None:
                process.kill()
        # Acknowledgements printed before the kill landed still count.
        for line in rest.split(b"\n"):
            if line.count(b" ") == 1:
                start, size = map(int, line.split())
                acknowledged.update(range(start, start + size))
        assert acked_this_cycle > 0, errors.decode()

    with caplog.at_level(logging.WARNING, logger="collector.spool"):
        Spool(root, window_s=60, clock=lambda: time.time() + 3600).close()  # recover, seal everything
    assert not any("not a point" in r.message for r in caplog.records)
    found: dict[int, int] = {}
    for name in sealed_windows(root):
        for p in read_window(root, name):
            found[p.source_ts_us] = found.get(p.source_ts_us, 0) + 1
    # Every window's manifest matches its segments (counted as written, or described on recovery).
    windows = WindowDirectory(root)
    assert sum(len(windows.read(name)[1]) for name in sealed_windows(root)) == sum(found.values())
    missing = acknowledged - found.keys()
    assert not missing, f"{len(missing)} acknowledged points lost, e.g. {sorted(missing)[:5]}"
    assert all(found[seq] == 1 for seq in acknowledged)
    assert list((root / "open").iterdir()) == []


def test_a_sealed_window_is_published_with_its_manifest(tmp_path):
    clock = Clock(T0 + 1)
    points = [point(T0 + 1 + i, float(i)) for i in range(5)]

    async def scenario():
        async with Spool(tmp_path, window_s=60, writer="edge-a", clock=clock) as spool:
            await spool.append(points[:3])
            await spool.append(points[3:])
            clock.now = T0 + 63
            assert spool.seal_due() == ["20260301T1200Z"]

    asyncio.run(scenario())
    windows = WindowDirectory(tmp_path)
    assert windows.pending() == ["20260301T1200Z"]
    manifest, read = windows.read("20260301T1200Z")
    assert read == points
    assert (manifest.window, manifest.length_s, manifest.points) == ("20260301T1200Z", 60, 5)
    assert manifest.start == datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    assert manifest.end == datetime(2026, 3, 1, 12, 1, tzinfo=UTC)
    segment = tmp_path / "sealed" / "20260301T1200Z" / "edge-a-000000.jsonl"
    (entry,) = manifest.segments
    assert (entry.name, entry.bytes, entry.points) == (segment.name, segment.stat().st_size, 5)
    assert entry.sha256 == hashlib.sha256(segment.read_bytes()).hexdigest()
    assert (manifest.writer.name, manifest.writer.pid) == ("edge-a", os.getpid())
    assert manifest.sealed_at == datetime.fromtimestamp(T0 + 63, UTC)
    assert manifest.interruptions == ()
    document = json.loads((tmp_path / "sealed" / "20260301T1200Z" / "manifest.json").read_text())
    assert document["format_version"] == 1 and document["start"] == "2026-03-01T12:00:00.000Z"


def test_a_damaged_segment_fails_naming_the_window_and_the_segment(tmp_path):
    clock = Clock(T0 + 1)

    async def scenario():
        async with Spool(tmp_path, clock=clock) as spool:
            await spool.append([point(T0 + 1, 1.0), point(T0 + 2, 2.0)])
            clock.now = T0 + 400
            spool.seal_due()

    asyncio.run(scenario())
    segment = tmp_path / "sealed" / "20260301T1200Z" / "collector-000000.jsonl"
    segment.write_bytes(segment.read_bytes().replace(b"1.0", b"7.0"))
    damaged = r"window 20260301T1200Z, segment collector-000000\.jsonl: sha256 \w+ does not match the manifest"
    with pytest.raises(ChecksumError, match=damaged):
        WindowDirectory(tmp_path).read("20260301T1200Z")
    segment.write_bytes(segment.read_bytes()[:-10])
    with pytest.raises(ChecksumError, match=r"segment collector-000000\.jsonl: \d+ bytes on disk, the manifest says"):
        WindowDirectory(tmp_path).read("20260301T1200Z")
    (tmp_path / "sealed" / "20260301T1200Z" / "manifest.json").write_text('{"format_version": 2}')
    with pytest.raises(ManifestError, match=r"manifest\.json: format_version: expected 1, got 2"):
        WindowDirectory(tmp_path).read("20260301T1200Z")


def test_an_acknowledged_window_is_archived_by_the_collector_and_still_readable(tmp_path):
    clock = Clock(T0 + 1)

    async def scenario():
        async with Spool(tmp_path, clock=clock) as spool:
            await spool.append([point(T0 + 1), point(T0 + 2)])
            clock.now = T0 + 400
            spool.seal_due()
            windows = WindowDirectory(tmp_path)
            windows.acknowledge("20260301T1200Z", by="run-1", points=2)
            assert windows.pending() == [] and windows.is_acknowledged("20260301T1200Z")
            assert sealed_windows(tmp_path) == ["20260301T1200Z"]  # the consumer moved nothing
            spool.seal_due()  # the collector's next tick archives it, and the backlog drops
            assert spool.backlog_bytes == 0

    asyncio.run(scenario())
    archived = tmp_path / "archive" / "20260301T1200Z"
    assert sorted(p.name for p in archived.iterdir()) == ["ack.json", "collector-000000.jsonl", "manifest.json"]
    assert json.loads((archived / "ack.json").read_text())["acknowledged_by"] == "run-1"
    assert list((tmp_path / "acks").iterdir()) == []
    start = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    windows = WindowDirectory(tmp_path)
    assert [m.window for m in windows.available(start, start.replace(hour=13), acknowledged_only=True)] == [
        "20260301T1200Z"
    ]
    assert len(windows.read("20260301T1200Z")[1]) == 2


def test_a_stopped_collector_is_an_interruption_in_the_manifest_not_a_silence(tmp_path):
    clock = Clock(T0 + 10)

    async def first_run():
        async with Spool(tmp_path, clock=clock) as spool:
            await spool.append([point(T0 + 10)])
            clock.now = T0 + 100  # stopped here, inside the window

    asyncio.run(first_run())
    clock.now = T0 + 160  # restarted later in the same window
    spool = Spool(tmp_path, clock=clock)
    clock.now = T0 + 400
    spool.seal_due()
    spool.close()
    manifest = WindowDirectory(tmp_path).manifest("20260301T1200Z")
    (gap,) = manifest.interruptions
    assert gap.stopped_at == datetime.fromtimestamp(T0 + 100, UTC)
    assert gap.restarted_at == datetime.fromtimestamp(T0 + 160, UTC)
    start = datetime.fromtimestamp(T0, UTC)
    assert manifest.listening() == [
        (start, datetime.fromtimestamp(T0 + 100, UTC)),
        (datetime.fromtimestamp(T0 + 160, UTC), datetime.fromtimestamp(T0 + 300, UTC)),
    ]
    assert start.minute == 0
