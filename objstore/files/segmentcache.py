"""The segment cache: a segment's content hash -> its chunk list, per store.

Chunking a tensor is the costly part of logging a file whose bytes the store
already holds (FastCDC holds the GIL, so it runs on one core at a time), and
fine-tuned or re-exported models are mostly tensors the store has seen, often at
other offsets (a grown header shifts every tensor). One BLAKE3 pass over a tensor
(keyed for :attr:`~objstore.storage.ids.Kind.SEGMENT`, multi-threaded, no GIL) names its
bytes; if an entry for that name exists, its chunk list is the one chunking would
produce — cuts depend only on the bytes, the chunking parameters and the element
size — and chunking is skipped.

An entry is made from one read: its key is hashed from the same buffers its
chunks were cut from (:mod:`objstore.files.ingest`), and it is written only after the
whole file was read without changing, so it never pairs one state's key with
another state's chunks. An entry is used only if the format, parameters,
element size and total length agree and every chunk it names is still stored
(gc may have dropped them); anything else is a miss. Like git's index and the
stat cache, the cache is trusted local state of the store: it lives in the
store's ``segments`` cache (:mod:`objstore.files.localcache`).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

import msgpack

from objstore.files import localcache
from objstore.storage.ids import ObjectId

# 2: entries made from one read (key and chunks from the same buffers). Format-1
# entries may pair one state's key with another state's chunks (a file changed
# while it was logged), so they are stale: a miss, never an answer.
FORMAT = 2
# Segments smaller than this are chunked directly: a handful of chunks at most,
# not worth a second pass and a cache file.
MIN_SEGMENT = 4 * 1024 * 1024
_CHUNK = struct.Struct("<32sQ")

ChunkList = list[tuple[ObjectId, int]]


stats = localcache.CacheStats()


class SegmentCache(localcache.ChunkListCache):
    """Per-store entries mapping a segment's content hash to its chunk list."""

    NAME = "segments"

    def is_empty(self) -> bool:
        """True when no segment was ever recorded: a new store has nothing to find."""
        try:
            return not any(self.directory.iterdir())
        except OSError:
            return True

    def _entry_path(self, digest: bytes, align: int) -> Path:
        h = digest.hex()
        return self.directory / h[:2] / f"{h[2:]}-{align}"

    def lookup(self, digest: bytes, align: int, length: int, usable: Callable[[ChunkList], bool] = lambda _: True
               ) -> ChunkList | None:
        """The chunk list recorded for a segment of ``length`` bytes hashing to ``digest``,
        if ``usable`` accepts it (the caller's check that its chunks are stored)."""
        data = localcache.read_entry(self._entry_path(digest, align))
        try:
            if data is None:
                raise ValueError("no entry")
            fmt, chunking, entry_align, entry_length, chunks = msgpack.unpackb(data, raw=False)
            if fmt != FORMAT or chunking != self.chunking or entry_align != align or entry_length != length:
                raise ValueError("stale entry")
            if not isinstance(chunks, bytes) or len(chunks) % _CHUNK.size:
                raise ValueError("damaged entry")
            found = [(ObjectId(c), n) for c, n in _CHUNK.iter_unpack(chunks)]
            if sum(n for _, n in found) != length:
                raise ValueError("damaged entry")
            if not usable(found):
                raise ValueError("chunks no longer stored")
        except (ValueError, TypeError, msgpack.UnpackException):
            stats.misses += 1
            return None
        stats.hits += 1
        return found

    def store(self, digest: bytes, align: int, length: int, chunks: ChunkList) -> None:
        body = msgpack.packb([FORMAT, self.chunking, align, length, b"".join(_CHUNK.pack(c.raw, n) for c, n in chunks)],
                             use_bin_type=True)
        if localcache.write_entry(self._entry_path(digest, align), body):
            stats.stores += 1
