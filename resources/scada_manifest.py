"""The SCADA hand-off contract: a sealed window is its segment files plus a manifest, and nothing else.

The collector *publishes* a window once it is over; whoever loads windows (the Dagster window job,
on this machine or on a Celery or Kubernetes worker) only ever uses what is written here::

    sealed/<W>/manifest.json     published: what the window holds (below); appears with the window, never changes
    sealed/<W>/<segment>.jsonl   the segments the manifest lists, one ``Point.to_json()`` per line
    acks/<W>.json                written by the consumer once the window is safely loaded (its only write)
    archive/<W>/...              the collector moved an acknowledged window here, manifest (and ack) included

``<W>`` names the window by its UTC start (``20260301T1205Z``). The manifest (``format_version`` 1)::

    {"format_version": 1, "window": "20260301T1205Z", "start": "2026-03-01T12:05:00Z", "length_s": 300,
     "segments": [{"name": "collector-000000.jsonl", "bytes": 81234, "points": 412, "sha256": "…"}],
     "points": 412, "interruptions": [{"stopped_at": "…", "restarted_at": null}],
     "writer": {"name": "collector", "host": "edge-01", "pid": 4242, "collector_version": "0.1.0"},
     "sealed_at": "2026-03-01T12:10:02.013Z"}

Why this shape:

- **The window length travels with the window.** ``length_s`` is the collector's setting at the time it
  cut the window; the consumer never configures it, so checks, aggregates and alerts cannot disagree
  with the windows (they once did: ``IHUB_SPOOL_WINDOW_S`` reached the collector but not the checks).
  The archive keeps the manifest, so a re-run of an old window knows its length too.
- **A segment is its first ``bytes`` bytes.** Readers read exactly that many bytes and check the sha256,
  so a corrupted or truncated copy fails loudly, naming the window and the segment, instead of loading
  fewer points. Bytes past ``bytes`` (a write that failed after the last commit) were never acknowledged.
- **The consumer writes one small file per window and never moves, renames or deletes the collector's
  files.** The collector archives acknowledged windows itself (freeing its backlog), so a worker needs
  read access to ``sealed/`` and ``archive/`` and write access to ``acks/`` only: the same three
  operations map onto a bucket (list, GET, one PUT) once the lake's storage layer can carry them.
- **Interruptions are said, not guessed.** When the collector was not running for part of a window (it
  was stopped, or it crashed and restarted), the manifest lists those spans; silences inside them are
  the collector's, not a device's, and the window job does not report them as device gaps.

This module uses only the standard library (and the point format), so the edge collector writes the
contract and a Dagster worker reads it without either needing the other's dependencies.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from collector.points import Point

__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "ChecksumError",
    "Interruption",
    "ManifestError",
    "SegmentEntry",
    "WindowDirectory",
    "WindowManifest",
    "WriterInfo",
    "window_name",
    "window_start",
]

FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
ACK_NAME = "ack.json"
SEALED, ARCHIVE, ACKS = "sealed", "archive", "acks"
_WINDOW_FORMAT = "%Y%m%dT%H%MZ"
_WINDOW_RE = re.compile(r"^\d{8}T\d{4}Z$")
_SEGMENT_RE = re.compile(r"^[A-Za-z0-9_.-]+\.jsonl$")
# Up to this span, ``available`` probes each minute's window name rather than listing the directories.
_PROBE_SPAN = timedelta(days=1)


class ManifestError(Exception):
    """A window does not keep the contract (no manifest, a malformed one); the message names the window and field."""


class ChecksumError(ManifestError):
    """A segment's bytes differ from what the manifest says; the message names the window and the segment."""


def window_name(start: datetime) -> str:
    """The name of the window starting at ``start`` (UTC-aware), e.g. ``20260301T1205Z``."""
    if start.tzinfo is None:
        raise ValueError(f"window start {start.isoformat()} has no time zone; spool windows are UTC")
    return start.astimezone(UTC).strftime(_WINDOW_FORMAT)


def window_start(name: str) -> datetime:
    """The UTC start of the window called ``name`` (the inverse of ``window_name``)."""
    if not _WINDOW_RE.match(name):
        raise ValueError(f"{name!r} is not a spool window name (expected e.g. 20260301T1205Z)")
    return datetime.strptime(name, _WINDOW_FORMAT).replace(tzinfo=UTC)


def is_window_name(name: str) -> bool:
    return bool(_WINDOW_RE.match(name))


# ---------------------------------------------------------------------------------------- the manifest


@dataclass(frozen=True, slots=True)
class SegmentEntry:
    """One segment file: its name in the window directory, how many bytes and points of it count, sha256."""

    name: str
    bytes: int
    points: int
    sha256: str


@dataclass(frozen=True, slots=True)
class WriterInfo:
    """Which collector wrote the window: spool writer name, host, process and collector version."""

    name: str
    host: str
    pid: int
    collector_version: str


@dataclass(frozen=True, slots=True)
class Interruption:
    """A span of the window when no collector was writing; ``restarted_at`` None means to the window's end."""

    stopped_at: datetime
    restarted_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class WindowManifest:
    """What a sealed window holds (see the module docstring for the JSON)."""

    window: str
    length_s: int
    segments: tuple[SegmentEntry, ...]
    writer: WriterInfo
    sealed_at: datetime
    interruptions: tuple[Interruption, ...] = field(default=())

    @property
    def start(self) -> datetime:
        return window_start(self.window)

    @property
    def end(self) -> datetime:
        return self.start + timedelta(seconds=self.length_s)

    @property
    def points(self) -> int:
        return sum(segment.points for segment in self.segments)

    def listening(self) -> list[tuple[datetime, datetime]]:
        """The spans of the window when the collector was running: the window minus its interruptions."""
        spans, cursor = [], self.start
        for gap in sorted(self.interruptions, key=lambda i: i.stopped_at):
            stop = min(max(gap.stopped_at, self.start), self.end)
            if stop > cursor:
                spans.append((cursor, stop))
            cursor = max(cursor, min(gap.restarted_at or self.end, self.end))
        if cursor < self.end:
            spans.append((cursor, self.end))
        return spans

    def to_json(self) -> str:
        document = {
            "format_version": FORMAT_VERSION,
            "window": self.window,
            "start": _iso(self.start),
            "length_s": self.length_s,
            "segments": [
                {"name": s.name, "bytes": s.bytes, "points": s.points, "sha256": s.sha256} for s in self.segments
            ],
            "points": self.points,
            "interruptions": [
                {"stopped_at": _iso(i.stopped_at), "restarted_at": _iso(i.restarted_at) if i.restarted_at else None}
                for i in self.interruptions
            ],
            "writer": {
                "name": self.writer.name,
                "host": self.writer.host,
                "pid": self.writer.pid,
                "collector_version": self.writer.collector_version,
            },
            "sealed_at": _iso(self.sealed_at),
        }
        return json.dumps(document, indent=1, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, where: str) -> WindowManifest:
        """Parse and validate a manifest; ``where`` (the file) is named in every error."""
        try:
            document = json.loads(text)
        except ValueError as error:
            raise ManifestError(f"{where}: not JSON: {error}") from None
        if not isinstance(document, dict):
            raise ManifestError(f"{where}: expected a JSON object")

        def need(mapping: dict, key: str, kind: type | tuple[type, ...], path: str = "") -> Any:
            value = mapping.get(key)
            if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
                expected = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
                raise ManifestError(f"{where}: {path}{key}: expected {expected}, got {value!r}")
            return value

        version = need(document, "format_version", int)
        if version != FORMAT_VERSION:
            raise ManifestError(f"{where}: format_version: expected {FORMAT_VERSION}, got {version}")
        name = need(document, "window", str)
        if not _WINDOW_RE.match(name):
            raise ManifestError(f"{where}: window: expected a window name such as 20260301T1205Z, got {name!r}")
        length_s = need(document, "length_s", int)
        if length_s <= 0 or 3600 % length_s:
            raise ManifestError(f"{where}: length_s: expected seconds dividing 3600, got {length_s}")
        if _parse_time(need(document, "start", str), where, "start") != window_start(name):
            raise ManifestError(f"{where}: start: {document['start']} is not the start of window {name}")
        segments = []
        for n, entry in enumerate(need(document, "segments", list)):
            at = f"segments[{n}]."
            if not isinstance(entry, dict):
                raise ManifestError(f"{where}: segments[{n}]: expected an object")
            segment = SegmentEntry(
                name=need(entry, "name", str, at),
                bytes=need(entry, "bytes", int, at),
                points=need(entry, "points", int, at),
                sha256=need(entry, "sha256", str, at),
            )
            if not _SEGMENT_RE.match(segment.name):
                raise ManifestError(f"{where}: {at}name: expected a segment file name, got {segment.name!r}")
            segments.append(segment)
        interruptions = tuple(
            Interruption(
                stopped_at=_parse_time(need(i, "stopped_at", str), where, "interruptions.stopped_at"),
                restarted_at=_parse_time(i["restarted_at"], where, "interruptions.restarted_at")
                if i.get("restarted_at")
                else None,
            )
            for i in document.get("interruptions") or []
        )
        writer = need(document, "writer", dict)
        return cls(
            window=name,
            length_s=length_s,
            segments=tuple(segments),
            writer=WriterInfo(
                name=need(writer, "name", str, "writer."),
                host=need(writer, "host", str, "writer."),
                pid=need(writer, "pid", int, "writer."),
                collector_version=need(writer, "collector_version", str, "writer."),
            ),
            sealed_at=_parse_time(need(document, "sealed_at", str), where, "sealed_at"),
            interruptions=interruptions,
        )


def describe_segment(path: Path) -> SegmentEntry:
    """A segment's manifest entry from the file itself: used when no running writer counted it."""
    digest, size, lines = hashlib.sha256(), 0, 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
            lines += chunk.count(b"\n")
    return SegmentEntry(name=path.name, bytes=size, points=lines, sha256=digest.hexdigest())


def write_file_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary name, fsynced, so a reader sees all of it or nothing."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------- the consumer


class WindowDirectory:
    """The consumer's side of the contract over a directory the collector publishes into.

    ``pending`` lists published windows nobody acknowledged; ``manifest`` and ``read`` find a window
    whether it is still sealed or already archived (re-runs); ``acknowledge`` writes the one file a
    consumer ever writes. Nothing here knows how the collector cuts, writes or seals its windows.
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def pending(self) -> list[str]:
        """Published windows not yet acknowledged, oldest first."""
        acked = {p.name.removesuffix(".json") for p in _entries(self.root / ACKS)}
        return sorted(
            entry.name
            for entry in _entries(self.root / SEALED)
            if _WINDOW_RE.match(entry.name) and entry.name not in acked and (Path(entry.path) / MANIFEST_NAME).exists()
        )

    def available(self, start: datetime, end: datetime, acknowledged_only: bool = False) -> list[WindowManifest]:
        """Manifests of the windows starting in ``[start, end)``, sealed or archived, oldest first.

        ``acknowledged_only`` keeps the windows a consumer has loaded (acknowledged or archived): what
        the lake holds, for steps that read the lake after the load.
        """
        if end - start <= _PROBE_SPAN:
            # An hour or a day: ask for each minute's name instead of listing an archive of years.
            names = [
                window_name(start + timedelta(minutes=m)) for m in range(-(-int((end - start).total_seconds()) // 60))
            ]
            archived = {n for n in names if (self.root / ARCHIVE / n).is_dir()}
            sealed = {n for n in names if (self.root / SEALED / n).is_dir()}
            if acknowledged_only:
                sealed = {n for n in sealed if (self.root / ACKS / f"{n}.json").exists()}
        else:
            archived = {e.name for e in _entries(self.root / ARCHIVE) if _WINDOW_RE.match(e.name)}
            sealed = {e.name for e in _entries(self.root / SEALED) if _WINDOW_RE.match(e.name)}
            if acknowledged_only:
                sealed &= {e.name.removesuffix(".json") for e in _entries(self.root / ACKS)}
        chosen = sorted(n for n in archived | sealed if start <= window_start(n) < end)
        return [self.manifest(name) for name in chosen]

    def is_acknowledged(self, name: str) -> bool:
        window_start(name)
        return (self.root / ACKS / f"{name}.json").exists() or (self.root / ARCHIVE / name).is_dir()

    def manifest(self, name: str) -> WindowManifest:
        """The manifest of window ``name``, sealed or archived; ``ManifestError`` if it has none."""
        return self._locate(name)[1]

    def read(self, name: str) -> tuple[WindowManifest, list[Point]]:
        """The window's manifest and every point its segments hold, each segment's sha256 verified.

        Raises ``ChecksumError`` naming the window and the segment when a segment is shorter than the
        manifest says or its bytes differ. Lines that do not parse as points were never written by a
        collector: they are an error too, naming the segment and the line.
        """
        for _ in range(2):
            directory, manifest = self._locate(name)
            try:
                return manifest, [p for s in manifest.segments for p in _read_segment(directory, manifest, s)]
            except FileNotFoundError:
                # The collector archived the window between locating and reading it: read it where it went.
                continue
        raise ManifestError(f"window {name} in {self.root}: its segments moved while being read twice; try again")

    def acknowledge(self, name: str, by: str, points: int) -> None:
        """Record that window ``name`` is loaded (``by``: who, e.g. a run id); doing it again is harmless."""
        window_start(name)
        (self.root / ACKS).mkdir(parents=True, exist_ok=True)
        document = {"window": name, "acknowledged_by": by, "acknowledged_at": _iso(datetime.now(UTC)), "points": points}
        write_file_atomically(self.root / ACKS / f"{name}.json", (json.dumps(document) + "\n").encode())

    def _locate(self, name: str) -> tuple[Path, WindowManifest]:
        window_start(name)  # refuses a malformed name before touching the disk
        for area in (SEALED, ARCHIVE):
            directory = self.root / area / name
            try:
                text = (directory / MANIFEST_NAME).read_bytes()
            except FileNotFoundError:
                if directory.is_dir():
                    raise ManifestError(
                        f"window {name} in {directory} has no {MANIFEST_NAME}: it was not published by a collector "
                        "that keeps the hand-off contract (restart the collector: it describes such windows on start)"
                    ) from None
                continue
            manifest = WindowManifest.from_json(text, str(directory / MANIFEST_NAME))
            if manifest.window != name:
                raise ManifestError(f"{directory / MANIFEST_NAME}: window: expected {name}, got {manifest.window}")
            return directory, manifest
        raise FileNotFoundError(f"window {name} is neither published (sealed) nor archived in {self.root}")


def _read_segment(directory: Path, manifest: WindowManifest, entry: SegmentEntry) -> list[Point]:
    path = directory / entry.name
    with path.open("rb") as handle:
        data = handle.read(entry.bytes)
    if len(data) != entry.bytes:
        raise ChecksumError(
            f"window {manifest.window}, segment {entry.name}: {len(data)} bytes on disk, the manifest says "
            f"{entry.bytes} ({path})"
        )
    digest = hashlib.sha256(data).hexdigest()
    if digest != entry.sha256:
        raise ChecksumError(
            f"window {manifest.window}, segment {entry.name}: sha256 {digest} does not match the manifest's "
            f"{entry.sha256} ({path}); the segment was changed or damaged after it was sealed"
        )
    points = []
    for number, line in enumerate(data.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            points.append(Point.from_json(line))
        except (ValueError, TypeError) as error:
            raise ManifestError(
                f"window {manifest.window}, segment {entry.name}:{number}: not a point: {error}"
            ) from None
    if len(points) != entry.points:
        raise ChecksumError(
            f"window {manifest.window}, segment {entry.name}: {len(points)} points, the manifest says {entry.points}"
        )
    return points


def _entries(path: Path) -> Iterable[os.DirEntry[str]]:
    try:
        with os.scandir(path) as entries:
            return list(entries)
    except FileNotFoundError:
        return []


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _parse_time(text: str, where: str, field_name: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise ManifestError(f"{where}: {field_name}: expected an ISO UTC time, got {text!r}") from None
    if moment.tzinfo is None:
        raise ManifestError(f"{where}: {field_name}: {text} has no time zone; manifest times are UTC")
    return moment.astimezone(UTC)
