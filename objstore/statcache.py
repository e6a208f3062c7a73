"""The stat cache: (path, size, mtime, inode, ctime) -> the file's chunk list, per store.

Re-logging a file that has not changed since it was last chunked should not read
it again. Each entry remembers the ``stat`` of a file as it was just before it
was read, and the :class:`~objstore.objects.FileObject` that reading produced.
A lookup whose ``stat`` matches on every field returns that object without
opening the file.

Racy entries (as git handles them): a file modified within the same timestamp
tick as it was last read keeps its mtime, so its stat cannot show the change.
An entry is therefore trusted only if the file's mtime is strictly older than
the moment reading began (minus the file system's timestamp granularity);
otherwise it is ignored and the file re-hashed. ``ctime`` is part of the key, and
no user can set it, so ``touch -d`` or ``os.utime`` back to an old mtime is also
caught.

A hit is still checked against the store: every chunk it names must be stored
(gc or a recreated store may have dropped them), else it is a miss.

Where entries live: one small file per source path (named by a hash of the
path), in the store's ``stat`` cache (:mod:`objstore.localcache`); a damaged
entry is a miss.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import blake3
import msgpack

from . import localcache
from .ids import ObjectId
from .objects import FileObject

FORMAT = 1
# Timestamps come from the kernel's coarse clock, which can lag time.time_ns()
# by a tick (up to ~10 ms); an mtime this close to the read start is racy.
RACY_SLACK_NS = 20_000_000
_CHUNK = struct.Struct("<32sQ")


@dataclass(frozen=True, slots=True)
class StatKey:
    """The parts of ``os.stat`` that change whenever a file's content can have."""

    size: int
    mtime_ns: int
    ino: int
    dev: int
    ctime_ns: int

    @classmethod
    def of(cls, st: os.stat_result) -> "StatKey":
        return cls(st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, st.st_ctime_ns)


stats = localcache.CacheStats()


class StatCache(localcache.ChunkListCache):
    """Per-store entries mapping a file's stat to its chunk list."""

    NAME = "stat"

    def _entry_path(self, path: Path) -> Path:
        h = blake3.blake3(os.fsencode(path)).hexdigest()[:40]
        return self.directory / h[:2] / h[2:]

    def lookup(self, path: Path, st: os.stat_result) -> FileObject | None:
        """The cached file object for ``path`` if its stat is unchanged and not racy."""
        path = Path(os.path.abspath(path))
        data = localcache.read_entry(self._entry_path(path))
        try:
            if data is None:
                raise ValueError("no entry")
            entry = msgpack.unpackb(data, raw=False)
            fmt, name, key, read_start, chunking, size, chunks = entry
        except (OSError, ValueError, TypeError, msgpack.UnpackException):
            stats.misses += 1
            return None
        if fmt != FORMAT or name != os.fsdecode(path) or chunking != self.chunking or StatKey(*key) != StatKey.of(st):
            stats.misses += 1
            return None
        if st.st_mtime_ns >= read_start - RACY_SLACK_NS:
            stats.racy += 1
            stats.misses += 1
            return None
        if not isinstance(chunks, bytes) or len(chunks) % _CHUNK.size:
            stats.misses += 1
            return None
        fobj = FileObject(size, tuple((ObjectId(c), n) for c, n in _CHUNK.iter_unpack(chunks)))
        stats.hits += 1
        return fobj

    def store(self, path: Path, st: os.stat_result, read_start_ns: int, fobj: FileObject) -> None:
        """Remember ``fobj`` for ``path`` as stat'ed (``st``) just before reading began at ``read_start_ns``."""
        if st.st_mtime_ns >= read_start_ns - RACY_SLACK_NS:
            return  # racy: it would never be trusted, so do not spend a write on it
        path = Path(os.path.abspath(path))
        target = self._entry_path(path)
        k = StatKey.of(st)
        body = msgpack.packb([FORMAT, os.fsdecode(path), [k.size, k.mtime_ns, k.ino, k.dev, k.ctime_ns], read_start_ns,
                              self.chunking, fobj.size, b"".join(_CHUNK.pack(c.raw, n) for c, n in fobj.chunks)], use_bin_type=True)
        if localcache.write_entry(target, body):
            stats.stores += 1
