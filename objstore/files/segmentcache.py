"""The segment cache: a segment's probe -> its chunk list, per store.

Chunking a tensor is the costly part of logging a file whose bytes the store
already holds, and fine-tuned or re-exported models are mostly tensors the store
has seen, often at other offsets (a grown header shifts every tensor). An entry is
found by a *probe* of the segment — its length and a few small ranges of its bytes
(:func:`probe_key`) — and is an answer only once the file's bytes at the entry's
cuts hash to the entry's chunk ids, which the caller checks in the same pass that
would otherwise have hashed them anyway (:mod:`objstore.files.ingest`). Cuts depend
only on the bytes, the chunking parameters and the grain (the element size, or the
stride of word-sampled cuts: :meth:`Chunker.grain`), so a verified
entry is exactly the chunk list chunking would produce, and a tensor the cache
answers costs one read and one hash of its bytes instead of a cut scan and a hash.

Invariants:

- **An answer is verified, never trusted.** Every chunk an entry names is hashed
  again from the file's own bytes before the entry is used: a stale, torn, forged
  or colliding entry (a probe is not a hash of the whole segment) costs a miss,
  never a chunk list that names bytes the file does not hold. So an entry may be
  written from any read — its probe and its chunks need not even come from the same
  one — and a file that changed while it was logged cannot poison the cache.
- Entries are used only if the format, chunking parameters, grain and total
  length agree, every chunk's length is one chunking can make, and (the caller's
  ``usable`` check) every chunk is still stored; anything else is a miss. The cache
  lives in the store's ``segments`` cache (:mod:`objstore.files.localcache`).
- Making an entry costs no second pass over a segment: the probe reads
  ``3 * PROBE_BYTES``, and the chunk list is the one the log made.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable
from pathlib import Path

import msgpack

from objstore.errors import FileChanged
from objstore.files import localcache
from objstore.storage.ids import Kind, ObjectId, hasher

# 3: keyed by a probe, verified against the file's bytes before use. Entries of
# formats 1 and 2 (keyed by a hash of every byte) are a miss.
FORMAT = 3
# Segments smaller than this are chunked directly: a handful of chunks at most,
# not worth a probe and a cache file.
MIN_SEGMENT = 4 * 1024 * 1024
# The probe: the first, middle and last PROBE_BYTES of a segment, and its length.
# Wide enough that a tensor changed only in a few rows rarely probes like its old
# self (that costs a verification pass that fails, then the chunking), small against
# the segments probed (0.6% of the smallest).
PROBE_BYTES = 8 * 1024
_CHUNK = struct.Struct("<32sQ")

ChunkList = list[tuple[ObjectId, int]]


stats = localcache.CacheStats()
_stats_lock = threading.Lock()  # segments are looked up by several chunking threads at once


def probe_ranges(offset: int, length: int) -> list[tuple[int, int]]:
    """The (file offset, length) ranges the probe of a segment reads."""
    if length <= 3 * PROBE_BYTES:
        return [(offset, length)]
    middle = offset + (length // 2 // PROBE_BYTES) * PROBE_BYTES
    return [(offset, PROBE_BYTES), (middle, PROBE_BYTES), (offset + length - PROBE_BYTES, PROBE_BYTES)]


def probe_key(fd: int, offset: int, length: int) -> bytes:
    """The probe of the ``length``-byte segment at ``offset`` of ``fd``: where its entry
    is looked up (an entry found must still be verified; see the module docstring)."""
    h = hasher(Kind.SEGMENT).update(length.to_bytes(8, "little"))
    for start, n in probe_ranges(offset, length):
        data = os.pread(fd, n, start)
        if len(data) != n:
            raise FileChanged(detail=" (it ended early)")
        h.update(data)
    return h.digest()


class SegmentCache(localcache.ChunkListCache):
    """Per-store entries mapping a segment's content hash to its chunk list."""

    NAME = "segments"

    def is_empty(self) -> bool:
        """True when no segment was ever recorded: a new store has nothing to find."""
        try:
            return not any(self.directory.iterdir())
        except OSError:
            return True

    def _entry_path(self, digest: bytes, grain: int | str) -> Path:
        h = digest.hex()
        return self.directory / h[:2] / f"{h[2:]}-{grain}"

    def has_entry(self, digest: bytes, grain: int | str) -> bool:
        """Whether an entry is filed under ``digest`` (unread, unchecked: a hint only)."""
        return self._entry_path(digest, grain).is_file()

    def lookup(self, digest: bytes, grain: int | str, length: int, usable: Callable[[ChunkList], bool],
               max_chunk: int) -> ChunkList | None:
        """The chunk list recorded for a segment of ``length`` bytes probing to ``digest``,
        if ``usable`` accepts it: the caller's checks that its chunks are stored and
        that the segment's bytes hash to them. No chunk may be longer than ``max_chunk``
        (chunking's largest), so verifying an entry never needs more memory than that."""
        data = localcache.read_entry(self._entry_path(digest, grain))
        try:
            if data is None:
                raise ValueError("no entry")
            fmt, chunking, entry_grain, entry_length, chunks = msgpack.unpackb(data, raw=False)
            if fmt != FORMAT or chunking != self.chunking or entry_grain != grain or entry_length != length:
                raise ValueError("stale entry")
            if not isinstance(chunks, bytes) or len(chunks) % _CHUNK.size:
                raise ValueError("damaged entry")
            found = [(ObjectId(c), n) for c, n in _CHUNK.iter_unpack(chunks)]
            if sum(n for _, n in found) != length or not all(0 < n <= max_chunk for _, n in found):
                raise ValueError("damaged entry")
            if not usable(found):
                raise ValueError("chunks no longer stored, or not the segment's bytes")
        except (ValueError, TypeError, msgpack.UnpackException):
            with _stats_lock:
                stats.misses += 1
            return None
        with _stats_lock:
            stats.hits += 1
        return found

    def store(self, digest: bytes, grain: int | str, length: int, chunks: ChunkList) -> None:
        body = msgpack.packb([FORMAT, self.chunking, grain, length, b"".join(_CHUNK.pack(c.raw, n) for c, n in chunks)],
                             use_bin_type=True)
        if localcache.write_entry(self._entry_path(digest, grain), body):
            with _stats_lock:
                stats.stores += 1
