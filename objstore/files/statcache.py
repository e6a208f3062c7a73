"""The stat cache: (path, size, mtime, inode, ctime) -> the file's chunk list, per store.

Re-logging a file that has not changed since it was last chunked should not read
it again. Each entry remembers the ``stat`` of a file as it was just before it
was read, and the :class:`~objstore.storage.objects.FileObject` that reading produced.
A lookup whose ``stat`` matches on every field returns that object without
opening the file.

Racy entries (as git handles them): a file modified within the same timestamp
tick as it was last read keeps its mtime and ctime, so its stat cannot show the
change. An entry is therefore trusted only if the file's last change — the later
of mtime and ctime — is older than the moment reading began by more than the
file system's timestamp granularity (:func:`racy_slack_ns`: a few clock ticks,
or 2 s where timestamps are whole seconds, as on ext3, HFS+ and FAT); otherwise
it is ignored and the file re-hashed. ``ctime`` counts because no user can set
it: ``cp -p``, ``rsync -t``, tar or ``os.utime`` put back an old mtime on bytes
written this instant, and only ctime shows the instant. :mod:`objstore.files.ingest`
waits out that tick before it reads a file, so fresh files get usable entries.

A hit is still checked against the store: every chunk it names must be stored
(gc or a recreated store may have dropped them), else it is a miss.

Where entries live: one small file per source path (named by a hash of the
path), in the store's ``stat`` cache (:mod:`objstore.files.localcache`); a damaged
entry is a miss.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

import blake3
import msgpack

from objstore.files import localcache
from objstore.storage.ids import ObjectId
from objstore.storage.objects import FileObject

# 2: racy by ctime too, and never built from a format-1 segment-cache answer
# (which may have been poisoned); format-1 entries are stale: a miss.
FORMAT = 2
# Timestamps come from the kernel's coarse clock, which can lag time.time_ns()
# by a tick (up to ~10 ms); a change this close to the read start is racy.
RACY_SLACK_NS = 20_000_000
# File systems that keep whole seconds (FAT keeps even ones): a change up to 2 s
# before the read can share its timestamp with one during the read.
COARSE_SLACK_NS = 2_000_000_000
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
    def of(cls, st: os.stat_result) -> StatKey:
        return cls(st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev, st.st_ctime_ns)

    @property
    def last_change_ns(self) -> int:
        """When the file last changed as far as its stat can tell (a set-back mtime still moves ctime)."""
        return max(self.mtime_ns, self.ctime_ns)

    def racy(self, read_start_ns: int) -> bool:
        """True if a change during a read that began at ``read_start_ns`` could have left this stat as it is."""
        return self.last_change_ns >= read_start_ns - racy_slack_ns(self)


def racy_slack_ns(key: StatKey) -> int:
    """How close to a read a change must be to maybe share its timestamp: the file
    system's granularity, guessed from the stat (whole seconds in both mtime and
    ctime happen by chance once in 10^18 on a nanosecond file system)."""
    if key.mtime_ns % 1_000_000_000 == 0 and key.ctime_ns % 1_000_000_000 == 0:
        return COARSE_SLACK_NS
    return RACY_SLACK_NS


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
        current = StatKey.of(st)
        try:
            if data is None:
                raise ValueError("no entry")
            fmt, name, key, read_start, chunking, size, chunks = msgpack.unpackb(data, raw=False)
            if fmt != FORMAT or name != os.fsdecode(path) or chunking != self.chunking or StatKey(*key) != current:
                raise ValueError("another file, or this one changed")
            if not isinstance(read_start, int) or current.racy(read_start):
                stats.racy += 1
                raise ValueError("racy entry")
            if not isinstance(chunks, bytes) or len(chunks) % _CHUNK.size:
                raise ValueError("damaged entry")
            found = tuple((ObjectId(c), n) for c, n in _CHUNK.iter_unpack(chunks))
            if size != current.size or sum(n for _, n in found) != size:
                raise ValueError("damaged entry")
        except (ValueError, TypeError, msgpack.UnpackException):
            stats.misses += 1
            return None
        stats.hits += 1
        return FileObject(size, found)

    def store(self, path: Path, st: os.stat_result, read_start_ns: int, fobj: FileObject) -> None:
        """Remember ``fobj`` for ``path`` as stat'ed (``st``) just before reading began at ``read_start_ns``."""
        k = StatKey.of(st)
        if k.racy(read_start_ns):
            return  # racy: it would never be trusted, so do not spend a write on it
        path = Path(os.path.abspath(path))
        target = self._entry_path(path)
        body = msgpack.packb([FORMAT, os.fsdecode(path), [k.size, k.mtime_ns, k.ino, k.dev, k.ctime_ns], read_start_ns,
                              self.chunking, fobj.size, b"".join(_CHUNK.pack(c.raw, n) for c, n in fobj.chunks)], use_bin_type=True)
        if localcache.write_entry(target, body):
            stats.stores += 1
