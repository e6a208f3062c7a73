"""Where a store's local caches live, and how their small entries are written.

Caches (:mod:`objstore.files.statcache`, :mod:`objstore.files.segmentcache`) only save
work: losing one costs speed, never data. They live under ``<store>/cache/<name>/``
for a local store, or ``~/.cache/objstore/<hash of store URL>/<name>/`` for a
remote one, so a cache never outlives or crosses its store. Entries are written
atomically (temp + rename, no fsync: a torn entry after a power cut is a miss,
because every reader validates what it reads), and never through a link planted where
the cache's own directories go (:func:`write_entry`).
"""

from __future__ import annotations

import contextlib
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


# The directories a cache entry's path ends in that are the cache's own (``cache/<name>/<h2>`` of a
# local store, ``<hash>/<name>/<h2>`` under ``~/.cache/objstore``): made here, never a link. What is
# above them is the store's root (which may be a link its user made) or the user's cache home.
OWN_DIRS = 3
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def write_entry(target: Path, body: bytes) -> bool:
    """Write one entry atomically; False (and nothing written) if the cache is not writable.

    A store someone else wrote may hold a link where the cache's own directories go
    (``cache/stat -> ~/elsewhere``): each of the :data:`OWN_DIRS` is opened (or made)
    relative to its parent with ``O_NOFOLLOW``, and the entry is written and renamed in
    that directory, so nothing is ever written through a link (such a cache is unwritable)."""
    own = target.parent.parts[-OWN_DIRS:]
    tmp = f".{target.name}.{os.getpid()}.{time.monotonic_ns()}"
    try:
        Path(*target.parent.parts[:-OWN_DIRS]).mkdir(parents=True, exist_ok=True)
        dir_fd = os.open(Path(*target.parent.parts[:-OWN_DIRS]), _DIR_FLAGS)
    except OSError:
        return False
    try:
        for name in own:
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, dir_fd=dir_fd)
            parent, dir_fd = dir_fd, os.open(name, _DIR_FLAGS, dir_fd=dir_fd)  # a link: ELOOP / ENOTDIR
            os.close(parent)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
        with os.fdopen(fd, "wb") as f:
            f.write(body)
        os.replace(tmp, target.name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        return True
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp, dir_fd=dir_fd)
        return False
    finally:
        os.close(dir_fd)


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
