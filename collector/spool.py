"""The durable spool: where every SCADA point lands before anything else may count it as received.

Layout under the spool root (one collector process writes a root; a lock file enforces it)::

    open/<W>/<writer>-<seq:06d>.jsonl     being written: one ``Point.to_json()`` per line
    sealed/<W>/...                        published: segments + manifest.json (``resources.scada_manifest``)
    acks/<W>.json                         the consumer's acknowledgement that it loaded the window
    archive/<W>/...                       consumed: moved here by the spool once acknowledged
    dead-letter/<source>-<YYYYMMDD>.jsonl unparsable input, one JSON object per line with the reason

``sealed/``, ``acks/`` and ``archive/`` are the hand-off contract, described in ``resources.scada_manifest``;
everything else here is the writer's own business.

``<W>`` names a *receive-time* window by its UTC start, e.g. ``20260301T1205Z`` for 12:05–12:10 with
the default 300-second windows. A point is filed under the window of its ``received_ts_us``; a window
is sealed (its manifest written, then its directory renamed from ``open/`` to ``sealed/`` in one
``os.rename``, so a published window always has its manifest) once its end plus ``seal_delay_s`` has
passed. A sealed window never changes again: a point that arrives for a window already sealed (a reader
that held it longer than the seal delay) is filed under the current window instead, keeping its
timestamps, and counted as ``late_points``.

Durability: ``Spool.append`` returns only after its lines are written and fsynced (group commit:
appends that arrive while a commit is in flight share the next one). A crash can leave a torn last
line in an open segment; that line was never acknowledged, and recovery on start truncates it.

Manifest figures are counted as the bytes are written: the writer thread feeds each committed chunk
to the segment's sha256 (the bytes are in hand there, so sealing costs no re-read, however large the
window), and a failed write rolls the figures back with the file. Segments a previous process left
are described from the file when the spool recovers them.

Interruptions: a clean ``close`` leaves ``stopped.json`` in each window still open; on start, every
window recovered from a previous process records when writing stopped (that marker, or the newest
segment's modification time after a crash) and when it restarted, in ``interruptions.json``; the
manifest carries them, so the silence of a stopped collector is not reported as device gaps.

The raw helpers at the end (``sealed_windows``, ``read_window``, ``archive_window``) are the collector's
own view of its root, for its tests and benchmarks; consumers use ``resources.scada_manifest.WindowDirectory``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from collector.points import Point
from resources.scada_manifest import (
    ACK_NAME,
    ACKS,
    MANIFEST_NAME,
    Interruption,
    SegmentEntry,
    WindowManifest,
    WriterInfo,
    describe_segment,
    is_window_name,
    window_name,
    window_start,
    write_file_atomically,
)

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_WINDOW_S",
    "Spool",
    "SpoolError",
    "SpoolFullError",
    "SpoolLockedError",
    "archive_window",
    "read_dead_letters",
    "read_window",
    "sealed_windows",
    "window_name",
    "window_start",
    "write_dead_letter",
]

DEFAULT_WINDOW_S = 300
DEFAULT_MAX_BYTES = 2 * 1024**3
WARNING_FRACTION = 0.8
# Once full, the spool accepts again only when the backlog has shrunk (windows archived) and is below
# this fraction, so it does not flap between full and not full from one append to the next.
RESUME_FRACTION = 0.95

OPEN, SEALED, ARCHIVE, DEAD_LETTER = "open", "sealed", "archive", "dead-letter"
_WINDOW_FORMAT = "%Y%m%dT%H%MZ"
_STOPPED_NAME = "stopped.json"
_INTERRUPTIONS_NAME = "interruptions.json"
_WRITER_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
_SEGMENT_SUFFIX = ".jsonl"
_MICROS = 1_000_000

log = logging.getLogger(__name__)


class SpoolError(Exception):
    """A spool operation failed; the message names the spool root and the file."""


class SpoolFullError(SpoolError):
    """The un-archived backlog reached ``max_bytes``: the points were not written (and must not be acked)."""


class SpoolLockedError(SpoolError):
    """Another process already writes to this spool root."""


# ---------------------------------------------------------------------------------------- windows


def check_window_s(window_s: int) -> int:
    """``window_s`` if it is a whole number of minutes that divides an hour, else ValueError."""
    if not isinstance(window_s, int) or window_s < 60 or window_s % 60 or 3600 % window_s:
        raise ValueError(
            f"window_s must be a whole number of minutes that divides 3600 (60, 120, 300, 600, 900, 1800, 3600), "
            f"got {window_s!r}"
        )
    return window_s


def _name_of_index(index: int, window_s: int) -> str:
    return datetime.fromtimestamp(index * window_s, UTC).strftime(_WINDOW_FORMAT)


# ---------------------------------------------------------------------------------------- writer


@dataclass(slots=True)
class _Segment:
    """The one open file of a window that this process appends to."""

    path: Path
    fd: int
    size: int = 0  # bytes written
    committed: int = 0  # bytes written and fsynced: what a failed commit is cut back to
    points: int = 0
    sha: Any = field(default_factory=hashlib.sha256)
    committed_points: int = 0
    committed_sha: Any = field(default_factory=hashlib.sha256)

    def entry(self) -> SegmentEntry:
        """The manifest entry for what is committed of this segment."""
        return SegmentEntry(self.path.name, self.committed, self.committed_points, self.committed_sha.hexdigest())


@dataclass(slots=True)
class _Batch:
    """Appends waiting for the same commit: encoded lines per window index, and their shared future."""

    future: asyncio.Future[None]
    chunks: dict[int, list[bytes]] = field(default_factory=dict)
    counts: dict[int, int] = field(default_factory=dict)
    nbytes: int = 0
    npoints: int = 0


class Spool:
    """Appends points durably into receive-time windows and seals the windows that are over.

    ``clock`` returns seconds since the epoch (``time.time``); it decides which windows are due and
    where late points go. Construction recovers what a previous process left: torn last lines are
    truncated and windows already over are sealed. Use ``await spool.aclose()`` (or ``async with``)
    to flush and release the root.
    """

    def __init__(
        self,
        root: str | os.PathLike[str],
        window_s: int = DEFAULT_WINDOW_S,
        writer: str = "collector",
        max_bytes: int = DEFAULT_MAX_BYTES,
        fsync: bool = True,
        seal_delay_s: float = 2.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_window_s(window_s)
        if not _WRITER_RE.match(writer):
            raise ValueError(f"spool writer name must match [A-Za-z0-9_.-]+, got {writer!r}")
        if max_bytes <= 0:
            raise ValueError(f"spool max_bytes must be positive, got {max_bytes}")
        if seal_delay_s < 0:
            raise ValueError(f"spool seal_delay_s must not be negative, got {seal_delay_s}")
        self.root = Path(root)
        self.window_s = window_s
        self.writer = writer
        self.max_bytes = max_bytes
        self.fsync = fsync
        self.seal_delay_s = seal_delay_s
        self._clock = clock
        self._window_us = window_s * _MICROS

        for sub in (OPEN, SEALED, ARCHIVE, ACKS, DEAD_LETTER):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self._lock_fd = _acquire_lock(self.root)

        # Everything below is shared by the event loop (append, seal_due, health) and the writer thread.
        self._io_lock = threading.Lock()
        self._segments: dict[int, _Segment] = {}
        self._finished: dict[int, list[SegmentEntry]] = {}  # closed segments of open windows, for the manifest
        self._writer_info = WriterInfo(writer, socket.gethostname(), os.getpid(), _collector_version())
        self._open_windows: dict[int, int] = {}  # window index -> bytes in open/<W>
        self._closed: set[int] = set()  # sealed or archived, so never written again
        self._sealed_sizes: dict[str, int] = {}  # sealed/<W> -> bytes, refreshed by seal_due
        self._pending_bytes = 0
        self._state = "ok"
        self._full_at = 0  # backlog when the spool became full
        self._points_appended = 0
        self._bytes_appended = 0
        self._commits = 0
        self._late_points = 0
        self._refused_points = 0
        self._last_error: str | None = None

        self._pending: _Batch | None = None
        self._inflight: _Batch | None = None
        self._wakeup: asyncio.Event | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._closed_spool = False

        self._recover()

    # ------------------------------------------------------------------------------ public

    @property
    def backlog_bytes(self) -> int:
        """Bytes not yet archived: open and sealed windows plus appends waiting for their commit."""
        return sum(self._open_windows.values()) + sum(self._sealed_sizes.values()) + self._pending_bytes

    async def append(self, points: Sequence[Point]) -> None:
        """Write ``points`` under their receive-time windows; returns once they are fsynced.

        Raises ``SpoolFullError`` (nothing written) when the backlog would pass ``max_bytes``, and
        ``SpoolError`` naming the file when the write itself failed.
        """
        if not points:
            return
        if self._closed_spool:
            raise SpoolError(f"spool {self.root} is closed")
        window_us = self._window_us
        lines: dict[int, list[str]] = {}
        for point in points:
            index = point.received_ts_us // window_us
            bucket = lines.get(index)
            if bucket is None:
                bucket = lines[index] = []
            bucket.append(point.to_json())
        encoded = {index: ("\n".join(bucket) + "\n").encode() for index, bucket in lines.items()}
        nbytes = sum(len(data) for data in encoded.values())
        self._admit(nbytes, len(points))

        batch = self._pending
        if batch is None:
            self._ensure_flusher()
            batch = self._pending = _Batch(future=asyncio.get_running_loop().create_future())
            batch.future.add_done_callback(_consume_exception)
            assert self._wakeup is not None
            self._wakeup.set()
        for index, data in encoded.items():
            batch.chunks.setdefault(index, []).append(data)
            batch.counts[index] = batch.counts.get(index, 0) + len(lines[index])
        batch.nbytes += nbytes
        batch.npoints += len(points)
        self._pending_bytes += nbytes
        # A cancelled caller must not cancel the commit other callers share.
        await asyncio.shield(batch.future)

    def seal_due(self) -> list[str]:
        """Seal every open window whose end plus ``seal_delay_s`` has passed, and archive the windows
        consumers acknowledged; returns the names of the windows sealed."""
        now = self._clock()
        sealed: list[str] = []
        with self._io_lock:
            for index in sorted(self._open_windows):
                if (index + 1) * self.window_s + self.seal_delay_s <= now:
                    sealed.append(self._seal(index))
            self._archive_acknowledged()
            self._refresh_sealed_sizes()
        self._update_state()
        return sealed

    def health(self) -> dict[str, Any]:
        """Backlog, windows and counters for the status endpoint; ``state`` is ok, warning or full."""
        backlog = self.backlog_bytes
        sealed = sorted(self._sealed_sizes)
        return {
            "root": str(self.root),
            "state": self._state,
            "backlog_bytes": backlog,
            "max_bytes": self.max_bytes,
            "used_pct": round(100.0 * backlog / self.max_bytes, 2),
            "open_windows": [_name_of_index(i, self.window_s) for i in sorted(self._open_windows)],
            "sealed_windows": len(sealed),
            "oldest_sealed": sealed[0] if sealed else None,
            "points_appended": self._points_appended,
            "bytes_appended": self._bytes_appended,
            "commits": self._commits,
            "late_points": self._late_points,
            "refused_points": self._refused_points,
            "last_error": self._last_error,
        }

    async def flush(self) -> None:
        """Wait until every append made so far is committed (or has failed)."""
        while (batch := self._pending or self._inflight) is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(batch.future)

    async def aclose(self) -> None:
        """Commit pending appends, close the segments and release the root (windows stay open on disk)."""
        await self.flush()
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
            self._flusher = None
        self.close()

    def close(self) -> None:
        """Close the segments and release the root; appends not yet committed are not written."""
        if self._closed_spool:
            return
        self._closed_spool = True
        with self._io_lock:
            for segment in self._segments.values():
                if not self.fsync:
                    with contextlib.suppress(OSError):
                        os.fsync(segment.fd)
                self._close_segment(segment)
            self._segments.clear()
            self._mark_stopped()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        os.close(self._lock_fd)

    async def __aenter__(self) -> Spool:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------------------ admission

    def _admit(self, nbytes: int, npoints: int) -> None:
        self._update_state()
        backlog = self.backlog_bytes
        if self._state == "full" or backlog + nbytes > self.max_bytes:
            self._refused_points += npoints
            if self._state != "full":
                self._full_at = backlog
                self._set_state("full")
            raise SpoolFullError(
                f"spool {self.root} is full: {backlog} bytes not yet archived, limit {self.max_bytes} "
                f"(is the SCADA window job archiving sealed windows?)"
            )

    def _update_state(self) -> None:
        backlog = self.backlog_bytes
        if self._state == "full" and not backlog < min(self._full_at, RESUME_FRACTION * self.max_bytes):
            return
        self._set_state("warning" if backlog >= WARNING_FRACTION * self.max_bytes else "ok")

    def _set_state(self, state: str) -> None:
        previous, self._state = self._state, state
        if state == previous:
            return
        backlog = self.backlog_bytes
        figures = f"{backlog} of {self.max_bytes} bytes ({100.0 * backlog / self.max_bytes:.1f} %) not yet archived"
        if state == "full":
            log.error("spool %s is FULL, refusing points until windows are archived: %s", self.root, figures)
        elif previous == "full":
            log.error("spool %s accepts points again: %s", self.root, figures)
        elif state == "warning":
            log.warning("spool %s is above %d %% of its limit: %s", self.root, int(WARNING_FRACTION * 100), figures)
        else:
            log.info("spool %s back below %d %% of its limit: %s", self.root, int(WARNING_FRACTION * 100), figures)

    # ------------------------------------------------------------------------------ commits

    def _ensure_flusher(self) -> None:
        loop = asyncio.get_running_loop()
        if self._flusher is None or self._flusher.done() or self._flusher.get_loop() is not loop:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="spool-writer")
            self._wakeup = asyncio.Event()
            self._flusher = loop.create_task(self._flush_loop(), name="spool-flusher")

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        assert self._wakeup is not None
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            batch = self._pending
            if batch is None:
                continue
            # Appends arriving from here on form the next batch, committed right after this one.
            self._pending, self._inflight = None, batch
            try:
                await loop.run_in_executor(self._executor, self._write_batch, batch)
            except Exception as error:  # every waiter gets the error; the loop keeps serving
                self._last_error = str(error)
                batch.future.set_exception(error if isinstance(error, SpoolError) else SpoolError(str(error)))
            else:
                batch.future.set_result(None)
            finally:
                self._pending_bytes -= batch.nbytes
                self._inflight = None
            self._update_state()
            if self._pending is not None:
                self._wakeup.set()

    def _write_batch(self, batch: _Batch) -> None:
        """Writer thread: append each window's lines to its segment, then fsync every touched file."""
        now = self._clock()
        with self._io_lock:
            touched: dict[int, _Segment] = {}
            new_dirs: set[Path] = set()
            where = self.root / OPEN
            try:
                for index, chunks in batch.chunks.items():
                    target = self._target_window(index, now)
                    if target != index:
                        self._late_points += batch.counts[index]
                    segment = self._segment(target, new_dirs)
                    where = segment.path
                    touched[target] = segment
                    data = b"".join(chunks)
                    _write_all(segment.fd, data)
                    segment.size += len(data)
                    segment.sha.update(data)
                    segment.points += batch.counts[index]
                    self._open_windows[target] = self._open_windows.get(target, 0) + len(data)
                if self.fsync:
                    for segment in touched.values():
                        where = segment.path
                        os.fdatasync(segment.fd)
                    # A new file is only durable once its directory entry is.
                    for directory in sorted(new_dirs, key=lambda p: len(p.parts), reverse=True):
                        where = directory
                        _fsync_dir(directory)
            except OSError as error:
                for index, segment in touched.items():
                    self._discard_uncommitted(index, segment)
                raise SpoolError(f"spool {self.root}: cannot write {where}: {error.strerror or error}") from error
            for segment in touched.values():
                segment.committed = segment.size
                segment.committed_points = segment.points
                segment.committed_sha = segment.sha.copy()
            self._commits += 1
            self._points_appended += batch.npoints
            self._bytes_appended += batch.nbytes

    def _target_window(self, index: int, now: float) -> int:
        """Where lines received in window ``index`` go: there, unless that window is closed or bogus."""
        current = int(now // self.window_s)
        if index in self._segments or index in self._open_windows:
            return index
        over = (index + 1) * self.window_s + self.seal_delay_s <= now
        if index in self._closed or over or index > current + 1 or self._closed_on_disk(index):
            return current
        return index

    def _closed_on_disk(self, index: int) -> bool:
        name = _name_of_index(index, self.window_s)
        if (self.root / SEALED / name).exists() or (self.root / ARCHIVE / name).exists():
            self._closed.add(index)
            return True
        return False

    def _segment(self, index: int, new_dirs: set[Path]) -> _Segment:
        segment = self._segments.get(index)
        if segment is not None:
            return segment
        window_dir = self.root / OPEN / _name_of_index(index, self.window_s)
        if not window_dir.exists():
            window_dir.mkdir()
            new_dirs.add(self.root / OPEN)
        seq = _next_seq(window_dir, self.writer)
        path = window_dir / f"{self.writer}-{seq:06d}{_SEGMENT_SUFFIX}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
        new_dirs.add(window_dir)
        segment = self._segments[index] = _Segment(path=path, fd=fd)
        self._open_windows.setdefault(index, 0)
        return segment

    def _discard_uncommitted(self, index: int, segment: _Segment) -> None:
        """After a failed write or fsync, cut the file back to its last committed line; start a new segment."""
        with contextlib.suppress(OSError):
            os.ftruncate(segment.fd, segment.committed)
        # Whatever the truncate did, the manifest counts only the committed bytes: readers stop there.
        self._finished.setdefault(index, []).append(segment.entry())
        self._open_windows[index] = max(0, self._open_windows.get(index, 0) - (segment.size - segment.committed))
        self._close_segment(segment)
        self._segments.pop(index, None)

    def _close_segment(self, segment: _Segment) -> None:
        with contextlib.suppress(OSError):
            os.close(segment.fd)

    # ------------------------------------------------------------------------------ sealing

    def _seal(self, index: int) -> str:
        name = _name_of_index(index, self.window_s)
        entries = self._finished.pop(index, [])
        segment = self._segments.pop(index, None)
        if segment is not None:
            if not self.fsync:
                os.fsync(segment.fd)
            self._close_segment(segment)
            entries.append(segment.entry())
        source = self.root / OPEN / name
        target = self.root / SEALED / name
        if target.exists():
            # Only after the clock went backwards: never replace a sealed window, add to it.
            log.warning("spool %s: window %s was already sealed; adding the late segments to it", self.root, name)
            _merge_dir(source, target)
            self._describe_from_disk(target, self.window_s)
        else:
            self._write_manifest(source, name, self.window_s, entries)
            os.rename(source, target)
        _fsync_dir(self.root / OPEN)
        _fsync_dir(self.root / SEALED)
        self._open_windows.pop(index, None)
        self._closed.add(index)
        log.info("spool %s: sealed window %s", self.root, name)
        return name

    def _write_manifest(self, directory: Path, name: str, length_s: int, entries: list[SegmentEntry]) -> None:
        """Publish what the window holds; written (and fsynced) before the directory is renamed into sealed/."""
        manifest = WindowManifest(
            window=name,
            length_s=length_s,
            segments=tuple(sorted(entries, key=lambda e: e.name)),
            writer=self._writer_info,
            sealed_at=datetime.fromtimestamp(self._clock(), UTC),
            interruptions=_read_interruptions(directory),
        )
        write_file_atomically(directory / MANIFEST_NAME, manifest.to_json().encode())

    def _describe_from_disk(self, directory: Path, length_s: int) -> None:
        """(Re)write a window's manifest from its files: after a merge, or for a window sealed without one."""
        entries = [describe_segment(path) for path in sorted(directory.glob(f"*{_SEGMENT_SUFFIX}"))]
        self._write_manifest(directory, directory.name, length_s, entries)

    def _archive_acknowledged(self) -> None:
        """Move every window a consumer acknowledged to archive/, its acknowledgement with it.

        The consumer only writes ``acks/<W>.json``; moving the window is the collector's job, so no
        other process ever renames or deletes files on the collector's disk.
        """
        for entry in _scandir(self.root / ACKS):
            name = entry.name.removesuffix(".json")
            if not entry.name.endswith(".json") or not is_window_name(name):
                continue
            try:
                if (self.root / SEALED / name).is_dir():
                    archive_window(self.root, name)
                if (self.root / ARCHIVE / name).is_dir():
                    os.rename(entry.path, self.root / ARCHIVE / name / ACK_NAME)
            except OSError as error:
                log.error("spool %s: cannot archive acknowledged window %s: %s", self.root, name, error)

    def _mark_stopped(self) -> None:
        """Leave in each window still open the time writing stopped, for the manifest's interruptions."""
        stopped = {"stopped_at": datetime.fromtimestamp(self._clock(), UTC).isoformat()}
        for index in self._open_windows:
            directory = self.root / OPEN / _name_of_index(index, self.window_s)
            try:
                if directory.is_dir():
                    write_file_atomically(directory / _STOPPED_NAME, json.dumps(stopped).encode())
            except OSError as error:
                log.warning("spool %s: cannot record the stop in %s: %s", self.root, directory, error)

    def _record_interruption(self, directory: Path, segments: list[Path]) -> None:
        """A window a previous process left open: note when writing stopped and when it restarted."""
        marker = directory / _STOPPED_NAME
        try:
            stopped_at = datetime.fromisoformat(json.loads(marker.read_bytes())["stopped_at"])
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            # A crash leaves no marker: the last write is the best evidence of when it stopped.
            newest = max((path.stat().st_mtime for path in segments), default=None)
            if newest is None:
                return
            stopped_at = datetime.fromtimestamp(newest, UTC)
        now = datetime.fromtimestamp(self._clock(), UTC)
        end = window_start(directory.name) + timedelta(seconds=self.window_s)
        gap = {
            "stopped_at": stopped_at.astimezone(UTC).isoformat(),
            "restarted_at": now.isoformat() if now < end else None,
        }
        known = _interruption_records(directory)
        write_file_atomically(directory / _INTERRUPTIONS_NAME, json.dumps([*known, gap]).encode())
        marker.unlink(missing_ok=True)

    def _refresh_sealed_sizes(self) -> None:
        # The consumer archives from another process, so the sealed set is re-read; only new
        # windows are measured.
        names = {entry.name for entry in _scandir(self.root / SEALED) if is_window_name(entry.name)}
        for gone in set(self._sealed_sizes) - names:
            del self._sealed_sizes[gone]
        for name in names - set(self._sealed_sizes):
            self._sealed_sizes[name] = _dir_bytes(self.root / SEALED / name)

    # ------------------------------------------------------------------------------ recovery

    def _recover(self) -> None:
        """Truncate torn last lines in open segments, then seal the windows already over."""
        for entry in sorted(_scandir(self.root / OPEN), key=lambda e: e.name):
            if not entry.is_dir() or not is_window_name(entry.name):
                log.warning("spool %s: ignoring %s, which is not a window directory", self.root, entry.path)
                continue
            index = int(window_start(entry.name).timestamp()) // self.window_s
            if index * self.window_s != int(window_start(entry.name).timestamp()):
                raise SpoolError(
                    f"spool {self.root}: open window {entry.name} does not start on a {self.window_s}-second "
                    f"boundary; was the spool written with another window_s?"
                )
            total = 0
            kept: list[Path] = []
            for segment in sorted(Path(entry.path).glob(f"*{_SEGMENT_SUFFIX}")):
                size = _truncate_torn_tail(segment)
                if size == 0:
                    segment.unlink()  # created, but nothing in it was ever acknowledged
                    continue
                total += size
                kept.append(segment)
            if not kept:
                shutil.rmtree(entry.path)
                continue
            self._record_interruption(Path(entry.path), kept)
            self._finished[index] = [describe_segment(segment) for segment in kept]
            self._open_windows[index] = total
        for entry in _scandir(self.root / SEALED):
            if is_window_name(entry.name) and not (Path(entry.path) / MANIFEST_NAME).exists():
                # Sealed by a collector that predates the manifest: publish it now, with today's window length.
                log.warning("spool %s: describing window %s, sealed without a manifest", self.root, entry.name)
                self._describe_from_disk(Path(entry.path), self.window_s)
        self.seal_due()


# ---------------------------------------------------------------------------------------- consumer


def sealed_windows(root: str | os.PathLike[str]) -> list[str]:
    """Names of the sealed (complete, not yet archived) windows under ``root``, oldest first."""
    return sorted(entry.name for entry in _scandir(Path(root) / SEALED) if is_window_name(entry.name))


def read_window(root: str | os.PathLike[str], name: str) -> list[Point]:
    """Every point of window ``name``, from ``sealed/`` or, once archived, ``archive/`` (re-runs work).

    Lines that do not parse (never written by the collector itself) are logged with file and line
    and skipped.
    """
    window_start(name)  # refuses a malformed name before touching the disk
    base = Path(root)
    for area in (SEALED, ARCHIVE):
        try:
            segments = sorted(p for p in (base / area / name).iterdir() if p.name.endswith(_SEGMENT_SUFFIX))
        except FileNotFoundError:
            continue
        try:
            return [point for segment in segments for point in _read_segment(segment)]
        except FileNotFoundError:
            # Archived by another run between listing and reading: read it where it went.
            continue
    if (base / OPEN / name).exists():
        raise SpoolError(f"spool {base}: window {name} is still open (not sealed yet)")
    raise FileNotFoundError(f"spool {base}: window {name} is neither sealed nor archived")


def archive_window(root: str | os.PathLike[str], name: str) -> None:
    """Move ``sealed/<name>`` to ``archive/<name>``; doing it again is a no-op."""
    window_start(name)
    base = Path(root)
    source, target = base / SEALED / name, base / ARCHIVE / name
    (base / ARCHIVE).mkdir(parents=True, exist_ok=True)
    try:
        os.rename(source, target)
    except FileNotFoundError:
        if target.exists():
            return
        raise FileNotFoundError(f"spool {base}: window {name} is neither sealed nor archived") from None
    except OSError:
        if not target.is_dir():
            raise
        # Both exist only after the clock went backwards: one archived window, re-described from its files.
        (source / MANIFEST_NAME).unlink(missing_ok=True)
        _merge_dir(source, target)
        old = WindowManifest.from_json((target / MANIFEST_NAME).read_bytes(), str(target / MANIFEST_NAME))
        entries = tuple(describe_segment(path) for path in sorted(target.glob(f"*{_SEGMENT_SUFFIX}")))
        fresh = WindowManifest(name, old.length_s, entries, old.writer, old.sealed_at, old.interruptions)
        write_file_atomically(target / MANIFEST_NAME, fresh.to_json().encode())
    _fsync_dir(base / SEALED)
    _fsync_dir(base / ARCHIVE)


def write_dead_letter(root: str | os.PathLike[str], source: str, payload: bytes, reason: str) -> Path:
    """Record input that could not be turned into points, with the reason; returns the file written.

    One JSON object per line in ``dead-letter/<source>-<YYYYMMDD>.jsonl``: ``at``, ``source``,
    ``reason``, ``payload`` (text when it is UTF-8, else base64, as ``payload_encoding`` says). The
    line is fsynced before returning, so a message may be acknowledged once this returns.
    """
    now = datetime.now(UTC)
    try:
        text, encoding = payload.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        text, encoding = base64.b64encode(payload).decode("ascii"), "base64"
    record = {
        "at": now.isoformat(timespec="microseconds"),
        "source": source,
        "reason": reason,
        "payload": text,
        "payload_encoding": encoding,
    }
    directory = Path(root) / DEAD_LETTER
    directory.mkdir(parents=True, exist_ok=True)
    safe_source = re.sub(r"[^A-Za-z0-9_.-]", "_", source) or "unknown"
    path = directory / f"{safe_source}-{now:%Y%m%d}.jsonl"
    line = (json.dumps(record, ensure_ascii=False) + "\n").encode()
    # O_APPEND with one write keeps lines whole when several processes dead-letter at once.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        _write_all(fd, line)
        os.fdatasync(fd)
    finally:
        os.close(fd)
    return path


def read_dead_letters(root: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every dead-letter record under ``root``, file by file in name order."""
    records: list[dict[str, Any]] = []
    for path in sorted((Path(root) / DEAD_LETTER).glob("*.jsonl")):
        with path.open("rb") as handle:
            records.extend(json.loads(line) for line in handle if line.strip())
    return records


# ---------------------------------------------------------------------------------------- helpers


def _collector_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ihub")
    except PackageNotFoundError:
        return "unknown"


def _interruption_records(directory: Path) -> list[dict[str, Any]]:
    try:
        return list(json.loads((directory / _INTERRUPTIONS_NAME).read_bytes()))
    except FileNotFoundError:
        return []


def _read_interruptions(directory: Path) -> tuple[Interruption, ...]:
    return tuple(
        Interruption(
            stopped_at=datetime.fromisoformat(record["stopped_at"]),
            restarted_at=datetime.fromisoformat(record["restarted_at"]) if record.get("restarted_at") else None,
        )
        for record in _interruption_records(directory)
    )


def _read_segment(path: Path) -> list[Point]:
    points: list[Point] = []
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                points.append(Point.from_json(line))
            except (ValueError, TypeError) as error:
                log.warning("%s:%d: skipping a line that is not a point: %s", path, number, error)
    return points


def _acquire_lock(root: Path) -> int:
    fd = os.open(root / ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise SpoolLockedError(f"spool {root} is already being written by another process (pid {holder})") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def _next_seq(window_dir: Path, writer: str) -> int:
    prefix = f"{writer}-"
    seqs = [
        int(path.name[len(prefix) : -len(_SEGMENT_SUFFIX)])
        for path in window_dir.iterdir()
        if path.name.startswith(prefix)
        and path.name.endswith(_SEGMENT_SUFFIX)
        and path.name[len(prefix) : -len(_SEGMENT_SUFFIX)].isdigit()
    ]
    return max(seqs, default=-1) + 1


def _truncate_torn_tail(path: Path) -> int:
    """Cut ``path`` after its last newline (a line without one was never acknowledged); returns the size."""
    with path.open("r+b") as handle:
        size = handle.seek(0, os.SEEK_END)
        end = size
        step = 4096
        while end > 0:
            start = max(0, end - step)
            handle.seek(start)
            chunk = handle.read(end - start)
            newline = chunk.rfind(b"\n")
            if newline >= 0:
                keep = start + newline + 1
                break
            end = start
        else:
            keep = 0
        if keep != size:
            log.warning("spool: %s ended with a torn line; truncated %d unacknowledged bytes", path, size - keep)
            handle.truncate(keep)
            handle.flush()
            os.fsync(handle.fileno())
        return keep


def _merge_dir(source: Path, target: Path) -> None:
    """Move every file of ``source`` into ``target`` (renaming on a clash), then remove ``source``."""
    for path in sorted(source.iterdir()):
        destination = target / path.name
        n = 1
        while destination.exists():
            destination = target / f"{path.stem}.{n}{path.suffix}"
            n += 1
        os.rename(path, destination)
    _fsync_dir(target)
    os.rmdir(source)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _scandir(path: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return list(entries)
    except FileNotFoundError:
        return []


def _dir_bytes(path: Path) -> int:
    total = 0
    for entry in _scandir(path):
        with contextlib.suppress(FileNotFoundError):
            total += entry.stat().st_size
    return total


def _consume_exception(future: asyncio.Future[None]) -> None:
    # When every waiter was cancelled nobody reads the error; it is already in health()["last_error"].
    if not future.cancelled():
        future.exception()
