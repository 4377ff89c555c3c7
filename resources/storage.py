"""Where the lake's bytes live: a local folder or an S3-compatible bucket, behind one small interface.

The lake names files by *keys* (``raw/dmama_flow_readings/date=2026-03-01/part-0000-PT1H.parquet``)
and asks a ``Storage`` to write, read, list or delete them; ``open_storage(root)`` picks the backend
from the root: a path (or ``file://`` URL) is a local folder, ``s3://bucket/prefix`` a bucket.

- **Local**: a write goes to a temporary file beside its final name, is fsynced, renamed into place and
  the directory fsynced, so a reader sees the old file or the new one, a crash leaves no half file, and
  the same bytes give the same file. Temporary names carry the writer (host and pid); every write into
  a folder first removes the leftovers of writers that are gone (same host and pid no longer alive, or
  older than ``DEBRIS_AGE_S`` whoever wrote them), so a ``kill -9`` leaves no debris for long.
- **Object storage**: a partition is one object written with one PUT (never multipart), which S3 makes
  visible whole or not at all; there is nothing temporary to clean. Listing is by prefix.

Why fsspec with s3fs rather than obstore: the analyst catalog must read the same bucket from DuckDB,
and DuckDB can mount an fsspec filesystem (``DuckDBPyConnection.register_filesystem``) where its own
httpfs extension cannot be downloaded (no internet on the hub's machines); obstore has no such bridge.
fsspec's local filesystem is not used for local writes because it neither fsyncs nor renames atomically.

Endpoint and credentials come only from the environment, the way every AWS client reads them
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for MinIO or another
S3-compatible server, ``AWS_REGION``); they are never part of a location, a log line or an error.
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# Far longer than any single write takes, so a slow live writer is never swept, however its pid looks.
DEBRIS_AGE_S = 6 * 3600

_DEBRIS = re.compile(r"^\.(?P<final>.+)~(?P<host>[^~]*)~(?P<pid>\d+)~[0-9a-f]+\.(?:tmp|building)(?:\.wal)?$")
_LEGACY_DEBRIS = re.compile(r"^\..+\.[0-9a-f]{32}\.(?:tmp|building)(?:\.wal)?$")


def writer_identity() -> tuple[str, int]:
    """This process as a writer: its host and pid (read at each call, so a forked worker is itself)."""
    return socket.gethostname().replace("~", "-"), os.getpid()


def temporary_name(final_name: str, kind: str = "tmp") -> str:
    """A hidden name beside ``final_name`` that says who is writing it; never matched by ``*.parquet``."""
    host, pid = writer_identity()
    return f".{final_name}~{host}~{pid}~{uuid.uuid4().hex}.{kind}"


def sweep_debris(directory: Path, max_age_s: float = DEBRIS_AGE_S) -> list[str]:
    """Remove temporary files in ``directory`` left by writers that are gone; return their names.

    A file is debris when its writer ran on this host and its pid is no longer alive, or when it is
    older than ``max_age_s`` (a writer on another host, a recycled pid, or a name without a writer).
    """
    import psutil

    host, me = writer_identity()
    now = time.time()
    removed = []
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return removed
    for entry in entries:
        name = entry.name
        if not name.startswith("."):
            continue
        match = _DEBRIS.match(name)
        if match is None and not _LEGACY_DEBRIS.match(name):
            continue
        try:
            age = now - entry.stat(follow_symlinks=False).st_mtime
        except FileNotFoundError:
            continue  # its writer finished meanwhile
        dead = match is not None and match["host"] == host and int(match["pid"]) != me
        dead = dead and not psutil.pid_exists(int(match["pid"]))  # type: ignore[index]
        if dead or age > max_age_s:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
            removed.append(name)
    return removed


class Storage:
    """Bytes under a root, addressed by ``/``-separated keys."""

    root: str
    is_local: bool

    def location(self, key: str) -> str:
        """The absolute path or URL of ``key`` (what DuckDB and a person see)."""
        raise NotImplementedError

    def write(self, key: str, data: bytes) -> str:
        """Put ``data`` at ``key`` whole (atomically), replacing what was there; return its location."""
        raise NotImplementedError

    def read(self, key: str) -> bytes:
        raise NotImplementedError

    def read_many(self, keys: Sequence[str]) -> list[bytes]:
        return [self.read(key) for key in keys]

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        """Remove ``key`` if it exists."""
        raise NotImplementedError

    def list_dir(self, key: str) -> tuple[list[str], list[str]]:
        """Names of the folders and of the files directly under ``key`` (hidden names left out)."""
        raise NotImplementedError

    def find(self, key: str, suffix: str = "") -> list[str]:
        """Keys of every file under ``key`` whose name ends with ``suffix``, sorted (hidden left out)."""
        raise NotImplementedError

    def filesystem(self) -> Any | None:
        """The fsspec filesystem to mount in DuckDB, or ``None`` when DuckDB reads the paths itself."""
        return None


class LocalStorage(Storage):
    is_local = True

    def __init__(self, root: Path) -> None:
        self.path = root.resolve()
        self.root = str(self.path)

    def _path(self, key: str) -> Path:
        return self.path / key if key else self.path

    def location(self, key: str) -> str:
        return str(self._path(key))

    def write(self, key: str, data: bytes) -> str:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_debris(path.parent)
        temporary = path.with_name(temporary_name(path.name))
        try:
            with open(temporary, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        fsync_directory(path.parent)
        return str(path)

    def read(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        if path.exists():
            path.unlink()
            fsync_directory(path.parent)

    def list_dir(self, key: str) -> tuple[list[str], list[str]]:
        folders, files = [], []
        try:
            entries = list(os.scandir(self._path(key)))
        except (FileNotFoundError, NotADirectoryError):
            return folders, files
        for entry in entries:
            if entry.name.startswith("."):
                continue
            (folders if entry.is_dir() else files).append(entry.name)
        return sorted(folders), sorted(files)

    def find(self, key: str, suffix: str = "") -> list[str]:
        base = self._path(key)
        found = []
        for folder, dirs, files in os.walk(base):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            relative = Path(folder).relative_to(self.path).as_posix()
            prefix = "" if relative == "." else relative + "/"
            found.extend(prefix + name for name in files if name.endswith(suffix) and not name.startswith("."))
        return sorted(found)


class FsspecStorage(Storage):
    """An object store through fsspec: one PUT per object, listings never cached (other writers exist)."""

    is_local = False

    def __init__(self, fs: Any, protocol: str, bucket_path: str) -> None:
        self.fs = fs
        self.protocol = protocol
        self.base = bucket_path.strip("/")
        self.root = f"{protocol}://{self.base}"

    def _full(self, key: str) -> str:
        return f"{self.base}/{key}" if key else self.base

    def _key(self, full: str) -> str:
        return full.strip("/").removeprefix(self.base).strip("/")

    def location(self, key: str) -> str:
        return f"{self.protocol}://{self._full(key)}"

    def write(self, key: str, data: bytes) -> str:
        # s3fs switches to multipart at 2 × chunksize; one object per partition means one PUT, always.
        self.fs.pipe_file(self._full(key), data, chunksize=max(len(data), 5 * 2**20))
        return self.location(key)

    def read(self, key: str) -> bytes:
        return self.fs.cat_file(self._full(key))

    def read_many(self, keys: Sequence[str]) -> list[bytes]:
        if not keys:
            return []
        # One call: s3fs fetches the objects concurrently.
        fetched = self.fs.cat([self._full(k) for k in keys], on_error="raise")
        return [fetched[self._full(k)] for k in keys]

    def exists(self, key: str) -> bool:
        return bool(self.fs.exists(self._full(key)))

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm_file(self._full(key))

    def list_dir(self, key: str) -> tuple[list[str], list[str]]:
        try:
            entries = self.fs.ls(self._full(key), detail=True, refresh=True)
        except FileNotFoundError:
            return [], []
        folders, files = [], []
        for entry in entries:
            name = entry["name"].rstrip("/").rsplit("/", 1)[-1]
            if name.startswith("."):
                continue
            (folders if entry["type"] == "directory" else files).append(name)
        return sorted(folders), sorted(files)

    def find(self, key: str, suffix: str = "") -> list[str]:
        self.fs.invalidate_cache()
        try:
            found = self.fs.find(self._full(key))
        except FileNotFoundError:
            return []
        keys = (self._key(path) for path in found)
        return sorted(k for k in keys if k.endswith(suffix) and not any(p.startswith(".") for p in k.split("/")))

    def filesystem(self) -> Any:
        return self.fs


def open_storage(root: str) -> Storage:
    """The storage a lake root names: a path or ``file://`` URL, or ``s3://bucket/prefix``."""
    scheme, sep, rest = root.partition("://")
    if not sep or scheme == "file":
        return LocalStorage(Path(rest if sep else root))
    if scheme in {"s3", "s3a"}:
        import s3fs  # only a lake on object storage pays for botocore

        # Credentials and endpoint are read by botocore from the environment, never passed here.
        fs = s3fs.S3FileSystem(use_listings_cache=False, skip_instance_cache=True)
        return FsspecStorage(fs, "s3", rest)
    raise ValueError(f"lake root {scheme}://…: unsupported storage scheme {scheme!r}; use a path or s3://bucket/prefix")


def fsync_directory(directory: Path) -> None:
    # A rename is only durable once the directory entry is on disk.
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
