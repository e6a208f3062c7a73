"""Repacking: the many small packs short sessions leave, copied into few full ones.

Every logging session closes at least one pack, however little it wrote, so a
store used by many short sessions holds thousands of packs of a few hundred KiB.
Each costs a listing entry and, when a version's chunks are spread over many of
them, a request per pack to read it back. :func:`repack_small_packs` copies the
chunks of the packs under ``SMALL_PACK_BYTES`` into new packs (of up to
``PACK_TARGET``), then marks the small ones for deletion.

Two-phase, through gc's own mechanism, so it is safe beside writers, readers,
gc and other repacks on a shared bucket:

1. Copy. Each small pack is read whole, its checksum checked, and every chunk
   decoded and hashed against its id (:func:`objstore.storage.packs.decode_verified`)
   before it is copied; a pack with a damaged chunk is left alone (fsck's
   business). The copies are written as any writer writes (pack, fsynced,
   then its ``.idx``, create-only) and are durable before anything is marked.
2. Mark. Only then does each copied pack get a gc mark (``gc/marked/<pack>``),
   exactly as gc's phase 1 marks a pack. It stays stored, and readers holding
   an index that names it keep reading it; writers stop deduplicating against
   it. gc's phase 2 deletes it once the mark is older than the grace period,
   re-checking first that every chunk reachable in it has a copy in a pack that
   stays (the copies made here), and lifts the mark otherwise. Nothing here
   deletes a pack.

Automatic, too: a writer that compacts the index (past the threshold, see
:meth:`objstore.storage.odb.ObjectDatabase.maintain`, called only once the
writer's refs are written) then repacks up to
``PACK_TARGET`` and ``AUTO_REPACK_PACKS`` of small packs (:func:`repack`; their
entries are in the new index file already, so their marks leave no loose
``.idx``, and the copies' ``.idx`` wait for the next compaction), never the packs
the writer stored itself: a writer skips marked packs for dedup, so marking its
own fresh pack would make it store that content again if it logs it again in the
same session (a later session's repack takes that pack);
``objstore maintenance`` takes them all.

So at every moment each chunk of a small pack is in the small pack, in its
copy, or both; a reader that finds the small pack gone reloads its index and
reads the copy (``ObjectDatabase.read_stored``). Each repack copies in an order
of its own: two repacks of the same small packs at once (writers repack by
themselves) would otherwise write one and the same copy, which a third may
mark and gc delete while the second stores it again and lifts its mark (gc
re-checks the mark before it deletes, not after). Two repacks at once copy a
pack twice, which only costs space (gc rewrites mostly-garbage packs). A repack
killed at any point leaves unmarked small packs (repacked next time) and
perhaps copies beside them: duplicates, which cost space only.

The threshold, ``SMALL_PACK_BYTES`` = 4 MiB: a request to a bucket costs 20-50
ms (issue 13 measured 25 ms through a delaying proxy), the time 100 MB/s moves
2.5-5 MB in, so below about 4 MiB a pack costs more in requests than in bytes
(reading it, listing it); above it, rewriting it costs more bytes than the
request it saves. An eighth of ``PACK_TARGET``, so one full pack replaces at
least eight small ones, and a run copies at most 4 MiB per small pack.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgpack

from objstore.constants import PACK_TARGET, MiB
from objstore.errors import CorruptObject, NotFound, ObjstoreError
from objstore.storage.backend import Backend, new_temp_file
from objstore.storage.chunkindex import list_indexes, marked_packs
from objstore.storage.ids import ObjectId
from objstore.storage.keys import idx_key, marked_pack_key, pack_key
from objstore.storage.odb import OpenPack
from objstore.storage.packs import decode_verified, encode_idx, entry_id, read_pack_index

if TYPE_CHECKING:
    from objstore.model.store import Store

SMALL_PACK_BYTES = 4 * MiB
# Fewer small packs than this are left alone: a copy of two or three saves a
# request or two and costs a rewrite.
REPACK_MIN_PACKS = 8
# A writer's automatic step copies at most this many small packs (each a GET and a
# mark): twice what a compaction cycle (16 sessions, a pack each) leaves, so it
# keeps up and drains a backlog, at most ~2 x 32 requests in one session in 16.
AUTO_REPACK_PACKS = 32
# Small packs fetched at once (each one request).
FETCH_THREADS = 8


@dataclass(frozen=True, slots=True)
class RepackReport:
    """What one repack did: small packs found, copied and marked (gc deletes them
    after its grace period), left alone (gone meanwhile, or damaged), the chunks
    and stored bytes copied, and the new packs written."""

    small_packs: int
    packs_marked: int
    packs_skipped: int
    chunks_copied: int
    bytes_copied: int
    packs_written: int = 0

    def to_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__slots__}


def repack_small_packs(store: Store, *, small_bytes: int = SMALL_PACK_BYTES, min_packs: int = REPACK_MIN_PACKS,
                       progress: Callable[[str, int, int], None] | None = None) -> RepackReport:
    """Copy the chunks of every unmarked pack under ``small_bytes`` into new packs, verified, then mark the
    copied packs for gc (see the module docstring). Does nothing unless there are at least ``min_packs``
    of them. ``progress("packs", done, total)`` counts the small packs' bytes read."""
    return repack(store.backend, small_bytes=small_bytes, min_packs=min_packs, progress=progress)


def repack(backend: Backend, *, small_bytes: int = SMALL_PACK_BYTES, min_packs: int = REPACK_MIN_PACKS,
           max_bytes: int | None = None, max_packs: int | None = None, keep: frozenset[str] = frozenset(),
           progress: Callable[[str, int, int], None] | None = None) -> RepackReport:
    """:func:`repack_small_packs` on ``backend``; with ``max_bytes`` and ``max_packs``,
    only as many small packs (smallest first) as add up to at most that much are
    copied, so one step costs a bounded download and number of requests whatever
    a store holds (a writer's automatic step: its small packs are repacked a
    few at each compaction). The packs in ``keep`` are left alone: a writer's own
    packs of this session (see the module docstring)."""
    listing = list_indexes(backend)
    marked = marked_packs(backend)
    small = _bounded(sorted(n for n, size in listing.packs.items()
                            if size < small_bytes and n not in marked and n not in keep),
                     listing.packs, max_bytes, max_packs)
    if len(small) < max(min_packs, 2):
        return RepackReport(len(small), 0, 0, 0, 0)
    # In an order of its own, so two repacks at once never write the same copy (see the docstring).
    small = random.SystemRandom().sample(small, len(small))
    copied: list[str] = []
    skipped = chunks = stored = 0

    written: set[str] = set()
    out: _Copy | None = None
    seen: set[bytes] = set()
    try:
        for name, data in _fetched(backend, small, listing.packs, progress):
            records = _verified_records(name, data)
            if records is None:
                skipped += 1
                continue
            for chunk_id, codec, raw_len, payload in records:
                if chunk_id.raw in seen:
                    continue
                seen.add(chunk_id.raw)
                out = out or _Copy(backend)
                out.builder.add(chunk_id, codec, raw_len, payload)
                chunks += 1
                stored += len(payload)
                if out.builder.size >= PACK_TARGET:
                    written.add(out.store())
                    out = None
            copied.append(name)
        if out is not None:
            written.add(out.store())
            out = None
    finally:
        if out is not None:
            out.discard()
    # The copies are durable (pack, then .idx) before any small pack is marked. A
    # copy may be byte for byte a small pack (its chunks alone, in the same
    # order): that pack is its own copy and stays unmarked.
    now = time.time()
    marking = [n for n in copied if n not in written]
    for name in marking:
        backend.put_if_absent(marked_pack_key(name), msgpack.packb({"when": now, "by": "repack"}))
    return RepackReport(len(small), len(marking), skipped, chunks, stored, len(written))


def _fetched(backend: Backend, small: list[str], sizes: dict[str, int],
             progress: Callable[[str, int, int], None] | None) -> Iterator[tuple[str, bytes | None]]:
    """Each small pack's bytes (None if gc deleted it since the listing), in order,
    read ``FETCH_THREADS`` at a time; ``progress`` counts the bytes read."""
    def fetch(name: str) -> bytes | None:
        try:
            return backend.get(pack_key(name), max_size=sizes[name])
        except NotFound:
            return None  # deleted by gc since the listing

    total, done = sum(sizes[n] for n in small), 0
    with ThreadPoolExecutor(FETCH_THREADS, thread_name_prefix="objstore-repack") as pool:
        for name, data in zip(small, pool.map(fetch, small)):
            done += sizes[name]
            if progress is not None:
                progress("packs", done, total)
            yield name, data


def _bounded(small: list[str], sizes: dict[str, int], max_bytes: int | None, max_packs: int | None) -> list[str]:
    """The smallest of ``small`` adding up to at most ``max_bytes`` and ``max_packs``."""
    if max_bytes is None and max_packs is None:
        return small
    picked: list[str] = []
    total = 0
    for name in sorted(small, key=lambda n: (sizes[n], n)):
        total += sizes[name]
        if (max_bytes is not None and total > max_bytes) or (max_packs is not None and len(picked) >= max_packs):
            break
        picked.append(name)
    return picked


class _Copy(OpenPack):
    """One new pack being written to a local temporary file (the odb's own pack writer)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        super().__init__(new_temp_file(backend, "objstore-repack-"))

    def store(self) -> str:
        """Make the pack durable and store it, then its ``.idx`` (the writers'
        order); lift a mark on the same name (it is needed now). Its name."""
        try:
            name, index = self.finish()
            self.backend.put_file_if_absent(pack_key(name), self.path)
            self.backend.put_if_absent(idx_key(name), encode_idx(name, index))
            self.backend.delete(marked_pack_key(name))
            return name
        finally:
            self.discard()


def _verified_records(name: str, data: bytes | None) -> list[tuple[ObjectId, int, int, memoryview]] | None:
    """Every chunk of pack ``name`` as (id, codec, raw length, payload), each
    checked against its id; None if the pack is gone or anything in it is damaged."""
    if data is None:
        return None
    try:
        index = read_pack_index(data, name)  # the pack's own checksum, and its index section
    except CorruptObject:
        return None
    view = memoryview(data)
    out = []
    for e in index:
        chunk_id = ObjectId(entry_id(e["id"]))
        off, n, codec, raw_len = int(e["offset"]), int(e["stored_len"]), int(e["codec"]), int(e["raw_len"])
        payload = view[off:off + n]
        try:
            decode_verified(chunk_id, codec, raw_len, n, payload, f"pack {name[:16]}")
        except ObjstoreError:
            return None
        out.append((chunk_id, codec, raw_len, payload))
    return out
