"""Where a store's local caches live, and how their small entries are written.

Caches (:mod:`objstore.files.statcache`, :mod:`objstore.files.segmentcache`) only save
work: losing one costs speed, never data. They live under ``<store>/cache/<name>/``
for a local store, or ``~/.cache/objstore/<hash of store URL>/<name>/`` for a
remote one, so a cache never outlives or crosses its store. Entries are written
atomically (temp + rename, no fsync: a torn entry after a power cut is a miss,
because every reader validates what it reads).
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path
from typing import Self

import blake3

from objstore.constants import MAX_VALUE_BYTES


class CacheStats:
    """Counters of one cache, for tests and the benchmark: how often it answered."""

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.racy = 0  # stat cache: entries too fresh to trust
        self.stores = 0


class ChunkListCache:
    """A store's cache ``NAME`` of chunk lists, valid only for the chunking
    parameters it was made with (``chunking``, compared on every lookup)."""

    NAME = ""

    def __init__(self, directory: Path, chunking: tuple[int, ...] = ()) -> None:
        self.directory = Path(directory)
        self.chunking = list(chunking)

    @classmethod
    def for_backend(cls, backend: object, chunking: tuple[int, ...] = ()) -> Self:
        return cls(cache_dir(backend, cls.NAME), chunking)


def cache_dir(backend: object, name: str) -> Path:
    """The directory of cache ``name`` for the store behind ``backend``."""
    root = getattr(backend, "root", None)
    if isinstance(root, Path):
        return root / "cache" / name
    url = str(getattr(backend, "url", backend))
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return home / "objstore" / blake3.blake3(url.encode()).hexdigest()[:32] / name


def write_entry(target: Path, body: bytes) -> bool:
    """Write one entry atomically; False (and nothing written) if the cache is not writable."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{time.monotonic_ns()}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(body)
        os.replace(tmp, target)
        return True
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return False


def read_entry(target: Path, max_size: int = MAX_VALUE_BYTES) -> bytes | None:
    """An entry's bytes; None (a miss) if it is absent, not a regular file (a FIFO
    must not block the reader) or larger than any entry is."""
    try:
        if not stat.S_ISREG(os.stat(target).st_mode):
            return None  # not opened at all: opening a device can act
        fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size > max_size:
            return None
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read(st.st_size + 1)
        return data if len(data) == st.st_size else None
    except OSError:
        return None
    finally:
        os.close(fd)
