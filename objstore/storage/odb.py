"""The object database: chunks in packs, metadata objects loose, over a backend.

Write order — the rule every writer in objstore keeps, and readers rely on:

1. chunk records, streamed into a pack file;
2. the pack (``packs/<name>.pack``), then its index (``packs/<name>.idx``);
   later, a compaction merges ``.idx`` files into a consolidated index file
   (``packs/<checksum>.midx``) and only then deletes them;
3. file, tree, version, link and run objects (``objects/<hh>/<id>``);
4. refs, last, by create-only write or compare-and-swap (:mod:`objstore.model.refs`);
   a run's ref (and record) before the version ref of a version that names the
   run, so no crash leaves a version naming a run the store never recorded;
5. only then a writer's own maintenance (:meth:`ObjectDatabase.maintain`: the
   automatic compaction and repack): a pack is unreachable from its seal until
   step 4, and gc may delete what stays unreachable past its grace period, so
   nothing slow runs in between.

So anything a ref reaches was stored before the ref existed, and a crash at any
point leaves only unreferenced objects behind (gc's business), never a ref to
something missing. Readers go the other way: ref, then objects, then chunks.

Immutable things are written create-only; "already there" is success, because
the content is the name. Nothing is ever rewritten in place. Every byte handed
back is checked against its id first.

Every read is bounded by what the thing read can legitimately be, before it is
verified (a store or a remote is untrusted): a metadata object by
``MAX_STORED_METADATA_BYTES`` stored and ``MAX_METADATA_BYTES`` decoded, whatever
its zstd header declares; an index by its pack's size (from the listing); a pack
read whole by ``MAX_PACK_BYTES``; a chunk by the lengths of an index entry that
:func:`objstore.storage.packs.check_index` accepted. Damage of that kind is a
CorruptObject naming the object, never a MemoryError.

The store-wide chunk index is a cache, rebuildable from the packs themselves:
the union of the consolidated index files (memory-mapped and searched on disk)
and the ``.idx`` files none covers (in memory), see
:mod:`objstore.storage.chunkindex`. Opening a store reads the index files; of
the at most about ``INDEX_COMPACT_THRESHOLD`` ``.idx`` files none covers (a
writer that finds more merges them) it reads only what its lookups need, newest
first (by the listing's dates): a read stops at the first that holds every chunk
it wants; a writer calls a chunk new without them until ``DEDUP_UNCHECKED_CHUNKS``
chunks were called new so, then reads them all. A false "new" only stores one
more copy of a chunk in a new pack, which gc treats like any copy; a hit is
only ever an entry read from the store, so nothing a hit relies on (gc's marks,
the pack re-check below) changes. Index files are written only where the
store's format allows them (``index_files``, set by the Store from its config,
format 2 on; see ``constants.STORE_FORMAT``): on a format-1 store nothing here
writes one, so an objstore release that knows only format 1 still finds every
pack's ``.idx``.

Readers across gc: gc may rewrite a pack (copy its live chunks into a new one)
and delete the old one while a reader still holds an index naming it. Every
chunk read goes through :meth:`ObjectDatabase.read_stored`: a pack that is no
longer there makes the reader reload the index from the ``.idx`` files present
now and read the chunk from where it lives now, once; only a chunk that is in no
pack at all is ``NotFound``. A pack found gone stays skipped (an index file a
racing compaction wrote may still name it), so the other copy gc kept answers. Writers across gc: a dedup hit re-checks, at most
every ``PACK_RECHECK_SECONDS``, that the pack holding the chunk is still stored
and not marked, so a long-lived writer never names a chunk gc removed.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import BinaryIO, TypeVar, cast

import numpy as np

from objstore.constants import CHUNK_MAX, MAX_METADATA_BYTES, MAX_PACK_BYTES, MAX_STORED_METADATA_BYTES, PACK_TARGET
from objstore.errors import CorruptObject, InvalidInput, NotFound, ObjstoreError, StoreBroken, UsageError
from objstore.storage import codecs
from objstore.storage.backend import Backend, LocalBackend, backend_error, new_temp_file
from objstore.storage.chunkindex import (
    ChunkIndex,
    CompactReport,
    IndexListing,
    compact,
    compact_threshold,
    list_indexes,
    loose_count,
    marked_packs,
    open_index_file,
    prune_cache,
)
from objstore.storage.chunkindex import ChunkLocation as ChunkLocation  # re-exported: callers name it odb.ChunkLocation
from objstore.storage.ids import Kind, ObjectId, key_of
from objstore.storage.indexfile import IndexFile
from objstore.storage.keys import (
    OBJECTS,
    PACKS,
    idx_key,
    marked_pack_key,
    object_hex_of,
    object_key,
    pack_key,
    pack_name_of,
)
from objstore.storage.objects import FileObject, MetaObject, decode, encode
from objstore.storage.packs import (
    PackBuilder,
    decode_idx,
    decode_verified,
    encode_idx,
    max_idx_bytes,
    open_pack_file,
    read_pack_index,
)

# Adjacent chunks of one pack are fetched in one ranged read up to this size.
COALESCE_LIMIT = 16 * 1024 * 1024
# ... and up to this size when runs are decoded by threads (several are in flight):
# a run's buffers then stay near the caches (restore of 1 GiB bf16 measured 1 MiB
# against 4: a third of the page faults, ~10% less CPU).
THREADED_RUN_LIMIT = 1024 * 1024
# A dedup hit trusts that the pack holding the chunk is still stored, and not
# marked by gc, for this long after it last looked (see _stale_packs_gone); gc's
# grace period (an hour by default) must be far longer.
PACK_RECHECK_SECONDS = 30.0
# Full packs sealed (fsync, store, index) on a background thread while the writer
# fills the next one; a writer that gets this far ahead of the disk waits.
MAX_SEALING = 2
# A refresh lists again at most this many times when something it listed was
# replaced (by a compaction) before it could read it.
REFRESH_ATTEMPTS = 4
# Uncovered .idx files are fetched this many at a time (each is one request).
IDX_FETCH_THREADS = 8
# A writer may call this many chunks new without fetching the uncovered .idx files
# it has not read (a false "new" only stores a copy; see has_chunks): one, so a
# small file (one chunk) costs no .idx read, while anything larger, a fine-tune
# above all, is deduplicated against everything, from its first chunk on when
# the writer said how much it stores (expect_bytes).
DEDUP_UNCHECKED_CHUNKS = 1
# A ranged read of a file (read_file_ranges) fetches up to this many runs at a time.
RANGE_READ_THREADS = 4

# The native run decoder holds a whole run decoded at once (the reference, one chunk):
# a run whose index entries claim more raw bytes than this is left to the reference, so
# a hostile index cannot make it allocate more before anything is verified.
RUN_DECODE_LIMIT = 32 * 1024 * 1024

# sink(position of the run's first chunk, raw bytes of the run's chunks), see ObjectDatabase.decode_runs
RunSink = Callable[[int, list[bytes | memoryview]], None]
_CHUNK_KEY = key_of(Kind.CHUNK)


def decode_verified_run(located: list[tuple[ObjectId, ChunkLocation]], payloads: list[bytes | memoryview],
                        where: Callable[[ChunkLocation], str], out: bytearray | None = None) -> list[bytes | memoryview]:
    """:func:`~objstore.storage.packs.decode_verified` for every chunk of a run: the raw
    bytes of each, as views of ``out`` when the native run decoder took the run.

    The native decoder (:func:`objstore.storage.codecs.decode_run`) decodes and
    verifies the whole run in a few calls without the GIL, into ``out`` (grown to
    fit; the caller reuses it, so the views are valid until its next use). A run it
    does not take (not built, no ``out``, an unusual payload, or damage) is decoded
    chunk by chunk by the reference, which raises the CorruptObject naming the
    chunk (``where(loc)`` says where it was). Both accept the same runs and return
    the same bytes."""
    if out is not None and all(len(p) == loc.stored_len for (_, loc), p in zip(located, payloads)):
        lens = [loc.raw_len for _, loc in located]
        total = sum(lens)
        if total <= RUN_DECODE_LIMIT and len(out) < total:
            try:
                out.extend(bytes(total - len(out)))
            except BufferError:  # a view of an earlier run is still held somewhere: leave it be
                out = bytearray(total)
        if total <= RUN_DECODE_LIMIT and codecs.decode_run(_CHUNK_KEY, payloads, [loc.codec for _, loc in located], lens,
                                                          b"".join([c.raw for c, _ in located]), out):
            view = memoryview(out)
            chunks: list[bytes | memoryview] = []
            pos = 0
            for n in lens:
                chunks.append(view[pos : pos + n])
                pos += n
            return chunks
    return [decode_verified(c, loc.codec, loc.raw_len, loc.stored_len, p, where(loc)) for (c, loc), p in zip(located, payloads)]


_Run = list[tuple[ObjectId, ChunkLocation]]
# a run decoded: its chunks' raw bytes (views of the buffer when the native decoder took it) and the buffer
_Decoded = tuple[list[bytes | memoryview], bytearray]


def _numbered(runs: Iterable[_Run]) -> Iterator[tuple[int, _Run]]:
    """Each run with the position of its first chunk."""
    pos = 0
    for batch in runs:
        yield pos, batch
        pos += len(batch)


def _hand_on(sink: RunSink, first: int, chunks: list[bytes | memoryview], out: bytearray, free: list[bytearray]) -> int:
    """``sink`` the run, then release its views and put ``out`` back on ``free``
    unless a view of it survives; the run's chunk count."""
    sink(first, chunks)
    for chunk in chunks:
        if isinstance(chunk, memoryview):
            chunk.release()  # a sink that kept one gets an error on use, never later bytes
    try:  # a resize fails while any view of ``out`` lives (one the sink derived and kept)
        out.append(0)
        out.pop()
    except BufferError:
        return len(chunks)  # not reused: those views keep their bytes
    free.append(out)
    return len(chunks)


class _HandOff:
    """Decoded runs handed to one sink from several workers, one run at a time, by
    whichever worker finds the sink free: a worker that finds another handing on
    queues its run and goes back to decoding, and the one handing on takes the queued
    runs too. So no worker waits for the sink and the sink never runs twice at once.
    (Two workers writing one file by turns each wait for the kernel's inode lock,
    spinning: ``rwsem_spin_on_owner`` was 5% of a restore's CPU.) ``wait(first)``
    returns once the run from ``first`` has been handed on, or raises what stopped
    the hand-off before it."""

    def __init__(self, sink: RunSink, free: list[bytearray]) -> None:
        self._sink, self._free = sink, free
        self._ready: deque[tuple[int, list[bytes | memoryview], bytearray]] = deque()
        self._busy = threading.Lock()
        self._changed = threading.Condition()
        self._handed: dict[int, int] = {}  # first chunk of a run handed on -> its chunk count
        self._failure: BaseException | None = None

    def offer(self, first: int, chunks: list[bytes | memoryview], out: bytearray) -> None:
        self._ready.append((first, chunks, out))
        # Looked at again after each release: a run queued while this worker held the
        # sink, by one that found it busy, is taken by this worker's next turn.
        while self._ready and self._failure is None and self._busy.acquire(blocking=False):
            try:
                while self._ready and self._failure is None:
                    at, run, buffer = self._ready.popleft()
                    n = _hand_on(self._sink, at, run, buffer, self._free)
                    with self._changed:
                        self._handed[at] = n
                        self._changed.notify_all()
            except BaseException as exc:
                with self._changed:
                    self._failure = exc
                    self._changed.notify_all()
                raise
            finally:
                self._busy.release()

    def wait(self, first: int) -> int:
        with self._changed:
            while first not in self._handed and self._failure is None:
                self._changed.wait()
            if first not in self._handed:
                assert self._failure is not None
                raise self._failure
            return self._handed.pop(first)


def _in_pool(runs: Iterable[tuple[int, _Run]], work: Callable[[int, _Run], _Decoded | None],
             settle: Callable[[int, _Decoded | None], None], workers: int) -> None:
    """``work`` on each run on ``workers`` threads, at most ``2 * workers + 1`` in
    flight, and ``settle`` of each result on this thread, in order; when this returns
    or raises, no ``work`` is still running."""
    pool = ThreadPoolExecutor(workers, thread_name_prefix="objstore-decode")
    pending: deque[tuple[int, Future[_Decoded | None]]] = deque()

    def settle_oldest() -> None:
        first, fut = pending.popleft()
        settle(first, fut.result())

    try:
        for first, batch in runs:
            pending.append((first, pool.submit(work, first, batch)))
            while len(pending) > 2 * workers:
                settle_oldest()
        while pending:
            settle_oldest()
    finally:
        for _, fut in pending:
            fut.cancel()
        pool.shutdown(wait=True)


def _nothing(first: int, n: int) -> None:
    pass


def _in_pack(loc: ChunkLocation) -> str:
    return f"pack {loc.pack[:16]}"


_T = TypeVar("_T")
_R = TypeVar("_R")

class ObjectDatabase:
    """Chunks and metadata objects over one backend.

    Writers call :meth:`add_chunk` for each chunk (it is deduplicated against
    everything stored), then :meth:`flush` before writing any object that
    refers to those chunks.
    """

    def __init__(self, backend: Backend, *, codec_policy: codecs.CodecPolicy | None = None, index_files: bool = True) -> None:
        self.backend = backend
        # Whether this store may hold consolidated index files (its format says so:
        # the Store, which owns the config, tells). When not, nothing here writes
        # one, since a reader of the older format would miss the packs it covers.
        self.index_files = index_files
        self._local = isinstance(backend, LocalBackend)
        self.compact_setting: int | None = None  # the store's index_compact_threshold (the Store sets it)
        # Run after a writer's automatic compaction: repacks small packs (the Store
        # sets it to objstore.storage.repack's, which is built on this module).
        # Called with the packs this database stored, which it must leave alone (see _maybe_compact).
        self.repacker: Callable[[frozenset[str]], object] | None = None
        self._own_packs: set[str] = set()  # packs stored (or adopted) by this database
        self.codec_policy = codec_policy or codecs.DEFAULT_POLICY
        self.index = ChunkIndex()
        self._lock = threading.RLock()
        # Held by whoever appends to, seals or flushes the open pack, around the
        # bookkeeping (under _lock) and the write (outside it), so the records
        # counted in are the next bytes written; look-ups take only _lock.
        self._append_lock = threading.Lock()
        self._loaded = False
        self._writer: OpenPack | None = None
        # Full packs handed to the sealer thread, not yet in the index.
        self._sealing: list[tuple[OpenPack, Future[None]]] = []
        self._sealer: ThreadPoolExecutor | None = None
        self._broken: BaseException | None = None
        self.damaged_packs: set[str] = set()  # packs whose index and own checksum both fail
        self.damaged_files: set[str] = set()  # index files that fail their checks (fsck names them)
        self._loose = 0  # .idx files no index file covered, at the last refresh
        self._sealed = 0  # packs this process stored
        self._compacted = False
        self._opened: dict[str, IndexFile] = {}  # index files mapped and checked, by name
        # Uncovered .idx files of the last listing not read yet, newest first (see
        # _load_pending), the listing itself and when it was taken (monotonic).
        self._pending: list[str] = []
        self._listing = IndexListing()
        self._listed_at = 0.0
        self._unchecked = 0  # chunks has_chunks called new with .idx files still pending
        # Packs gc has marked for deletion (gc/marked/<pack>): a dedup hit in one
        # of them does not count, so the writer stores its own copy and a later
        # gc deleting the marked pack cannot break the writer's version.
        self.marked_packs: set[str] = set()
        self._marks_read = False  # whether marked_packs was listed since the last refresh
        self._pack_checked: dict[str, float] = {}  # pack -> when (monotonic) it was last seen stored and its mark read
        self.new_chunks = 0
        self.new_bytes = 0  # stored bytes this database wrote (after dedup and compression)
        # Creates that found their key already there (objects, packs): a writer relying on
        # them looks for a deleting gc after its ref (objstore.model.gcintent).
        self.reused = 0

    # -- index -----------------------------------------------------------
    def refresh(self, *, lazy: bool = False) -> None:
        """Load what this process has not seen yet: new index files (mapped, not
        read), and the ``.idx`` of packs no index file covers; with ``lazy``, those
        ``.idx`` files only when a lookup needs them (:meth:`_load_pending`)."""
        with self._lock:
            for _ in range(REFRESH_ATTEMPTS):
                listing = list_indexes(self.backend)
                if not self._load(listing) and (lazy or not self._load_pending(len(self._pending))):
                    break
                # An index file or .idx listed but gone when read: a compaction
                # replaced it meanwhile; the next listing shows its replacement.
            self._loose = loose_count(listing, self.index.covered_packs)
            # Index files merged away since: forget them (a mapping stays valid for
            # whoever still holds it) and drop their cached copies.
            self._opened = {n: f for n, f in self._opened.items() if n in listing.files}
            prune_cache(self.backend, listing.files)
            # A pack stored again under the same name (same content) is back.
            self.index.gone.difference_update(listing.packs)
            self._marks_read = False  # listed again on the next dedup question (a reader never asks)
            self._loaded = True

    def _load(self, listing: IndexListing) -> bool:
        """Add ``listing``'s unseen index files to the index and make its uncovered
        ``.idx`` files the pending ones, newest first; True if an index file was
        gone when read."""
        missing = False
        wanted = {n: size for n, size in listing.files.items() if n not in self.index.files and n not in self.damaged_files}
        # Opened once per process (a reload after gc reuses the mapping), the new
        # ones side by side: each is a GET, and on a bucket they add up one after another.
        unopened = [(n, size) for n, size in wanted.items() if n not in self._opened]
        for name, opened in zip([n for n, _ in unopened], self._map_io(self._open_index_file, unopened)):
            if isinstance(opened, NotFound):
                missing = True
            elif isinstance(opened, CorruptObject):
                self.damaged_files.add(name)
            else:
                self._opened[name] = opened
        for name in wanted:
            if name in self._opened:
                self.index.add_file(self._opened[name])
        fresh = [n for n in listing.idx if n not in self.index and n not in self.damaged_packs]
        if self.damaged_files:
            # The .idx of the packs a damaged index file covered are gone: every pack
            # nothing indexes is read from its own index section instead.
            fresh += [n for n in listing.packs if n not in self.index and n not in listing.idx and n not in self.damaged_packs]
        # Newest first: what a command reads is most often what was logged last.
        self._pending = sorted(fresh, key=lambda n: (-listing.mtimes.get(n, 0.0), n))
        self._listing = listing
        self._listed_at = now = time.monotonic()
        # Seen stored just now, by this listing (a covered pack the listing lacks is
        # looked at on its first dedup hit: an index file may name a pack gc removed).
        self._pack_checked.update((name, now) for name in self.index.covered_packs if name in listing.packs)
        return missing

    def _load_pending(self, count: int) -> bool:
        """Read the next ``count`` pending ``.idx`` files (side by side) into the
        index; True if one was gone when read and no index file covers its pack
        (a compaction replaced it: the caller lists again)."""
        with self._lock:
            names, self._pending = self._pending[:count], self._pending[count:]
            names = [n for n in names if n not in self.index]
            missing = False
            loaded: list[tuple[str, np.ndarray]] = []
            listing = self._listing
            for name, index in zip(names, self._map_io(lambda n: self._read_idx(n, listing), names)):
                if index is None:
                    missing = missing or (name in listing.idx and not self.index.covers(name))
                elif isinstance(index, np.ndarray):
                    loaded.append((name, index))
                else:
                    self.damaged_packs.add(name)
            self.index.add_packs(loaded)
            # Seen stored when listed.
            self._pack_checked.update((name, self._listed_at) for name, _ in loaded)
            return missing

    def _located(self, chunk_ids: list[bytes]) -> list[ChunkLocation | None]:
        """Where each chunk is, reading pending ``.idx`` files newest first, 1, 2, 4,
        ... at a time, only until every chunk is found (or none is left): a command
        reading what was logged lately reads the newest few, not every one."""
        with self._lock:
            found = self.index.locate_many(chunk_ids)
            step, relisted = 1, 0
            while self._pending and None in found:
                if self._load_pending(step) and relisted < REFRESH_ATTEMPTS:
                    relisted += 1
                    self.refresh(lazy=True)  # a compaction merged what was pending: its index file has it
                step = min(2 * step, IDX_FETCH_THREADS)
                todo = [i for i, loc in enumerate(found) if loc is None]
                for i, loc in zip(todo, self.index.locate_many([chunk_ids[i] for i in todo])):
                    found[i] = loc
            return found

    @staticmethod
    def _map_io(fetch: Callable[[_T], _R], items: list[_T]) -> list[_R]:
        """``fetch`` of each item, on up to IDX_FETCH_THREADS threads when there are several."""
        if len(items) <= 1:
            return [fetch(item) for item in items]
        with ThreadPoolExecutor(min(IDX_FETCH_THREADS, len(items)), thread_name_prefix="objstore-idx") as pool:
            return list(pool.map(fetch, items))

    def _open_index_file(self, item: tuple[str, int]) -> IndexFile | NotFound | CorruptObject:
        """Index file ``item`` (name, listed size) opened, or why it could not be."""
        try:
            return open_index_file(self.backend, *item)
        except (NotFound, CorruptObject) as exc:
            return exc

    def _read_idx(self, name: str, listing: IndexListing) -> np.ndarray | None | CorruptObject:
        """Pack ``name``'s index: from its ``.idx``, else from the pack itself. None
        if both are gone; the error if both are damaged."""
        # The listing gave the pack's size: its index can be no larger than
        # that many entries, and no entry may point outside it.
        size = listing.packs.get(name)
        if name in listing.idx:
            try:
                data = self.backend.get(idx_key(name), max_size=max_idx_bytes(size))
                return decode_idx(data, name, size)
            except NotFound:
                return None  # replaced by an index file, or removed by gc, while we listed
            except CorruptObject:
                pass
        # One damaged .idx must not make every version unreadable: the pack
        # carries the same index, covered by the pack's own checksum.
        index = self._index_from_pack(name)
        if index is None:
            return CorruptObject(f"pack {name[:16]} has no readable index", object_id=name)
        return index

    def reload(self) -> None:
        """Forget the loaded index and load it again from the index files and
        ``.idx`` files present now: packs gc removed drop out, the packs it wrote
        come in. Packs found gone stay skipped (see ChunkIndex.gone)."""
        with self._lock:
            self.index = ChunkIndex(self.index.gone)
            self.damaged_packs = set()
            self.damaged_files = set()
            self._pack_checked = {}
            self.refresh(lazy=True)

    def compact_index(self, *, min_loose: int = 1, progress: Callable[[str, int, int], None] | None = None) -> CompactReport:
        """Merge the store's uncovered ``.idx`` files into a consolidated index file
        (:func:`objstore.storage.chunkindex.compact`, ``progress`` too), then load it.
        Refused (UsageError) on a store whose format does not allow index files."""
        if not self.index_files:
            raise UsageError("this store's format predates consolidated index files; upgrade it first "
                             "('objstore maintenance --upgrade')")
        report = compact(self.backend, min_loose=min_loose, progress=progress)
        with self._lock:
            if self._loaded:
                self.refresh(lazy=True)
        return report

    def _maybe_compact(self) -> None:
        """After a writer stored packs: compact once the store has more uncovered
        ``.idx`` files than the threshold. A failure leaves the store as it was
        (compaction is crash-safe), so it never fails the write that triggered it."""
        threshold = compact_threshold(self.compact_setting)
        # Only a process that stored packs: a reader never writes (it may have no write access).
        if not self.index_files or self._compacted or not threshold or not self._sealed or self._loose + self._sealed < threshold:
            return
        self._compacted = True  # once per process: a failing backend is not retried on every flush
        try:
            self.compact_index(min_loose=threshold)
            if self.repacker is not None:
                # After: the small packs' entries are in the index file now, so their
                # marks leave no loose .idx behind; the copy's one .idx waits for the next.
                # This session's own packs are left out: marked, they would be no dedup
                # hit for the rest of the session (a hit skips marked packs), so logging
                # the same content again would store it once more.
                with self._lock:
                    own = frozenset(self._own_packs)
                self.repacker(own)
        except ObjstoreError:
            pass

    def _stale_packs_gone(self, chunk_ids: list[bytes]) -> bool:
        """Whether a pack holding one of ``chunk_ids`` (dedup hits) has gone, or been
        marked by gc, since this process last looked: a dedup hit must never name a
        chunk a gc removed. Each pack is looked at again (its pack and its mark, two
        stats) at most every ``PACK_RECHECK_SECONDS``: gc deletes only packs marked
        for longer than its grace period, far longer than that."""
        now = time.monotonic()
        packs = {loc.pack for loc in self.index.locate_many(chunk_ids) if loc is not None}
        gone = False
        for name in packs:
            if now - self._pack_checked.get(name, -PACK_RECHECK_SECONDS) < PACK_RECHECK_SECONDS:
                continue
            try:
                self.backend.stat(pack_key(name))
            except NotFound:
                gone = True
                self.index.gone.add(name)  # an index file may still name it; no dedup hit may
                continue
            try:
                self.backend.stat(marked_pack_key(name))
                self.marked_packs.add(name)
            except NotFound:
                self.marked_packs.discard(name)
            self._pack_checked[name] = now
        return gone

    def _relocate(self, chunk_id: ObjectId, stale: ChunkLocation) -> ChunkLocation:
        """Where ``chunk_id`` lives now that pack ``stale.pack`` is gone (see the module docstring)."""
        with self._lock:
            # The pack is gone (the read said so); another copy may still be listed,
            # even by an index file a racing compaction wrote: take that one.
            self.index.gone.add(stale.pack)
            if stale.pack in self.index:  # nobody reloaded since that location was handed out
                self.reload()
            loc = self._located([chunk_id.raw])[0]
        if loc is None or loc.pack == stale.pack:
            raise NotFound(f"chunk {chunk_id.hex[:16]} is not in any pack of this store (pack {stale.pack[:16]} was removed)",
                           key=chunk_id.hex)
        return loc

    def read_stored(self, batch: list[tuple[ObjectId, ChunkLocation]]
                    ) -> tuple[list[tuple[ObjectId, ChunkLocation]], list[bytes | memoryview]]:
        """The stored bytes of each chunk of ``batch`` (neighbours in one pack), read in
        one ranged request; if that pack is gone, each chunk again from where it is now."""
        first, last = batch[0][1], batch[-1][1]
        try:
            data = self.backend.get_range(pack_key(first.pack), first.offset, last.offset + last.stored_len - first.offset)
        except NotFound:
            moved = [(c, self._relocate(c, loc)) for c, loc in batch]
            return moved, [self.backend.get_range(pack_key(loc.pack), loc.offset, loc.stored_len) for _, loc in moved]
        view = memoryview(data)
        start = first.offset
        return batch, [view[loc.offset - start : loc.offset - start + loc.stored_len] for _, loc in batch]

    def _index_from_pack(self, name: str) -> np.ndarray | None:
        try:
            return read_pack_index(self.backend.get(pack_key(name), max_size=MAX_PACK_BYTES), name)
        except (CorruptObject, NotFound):
            return None

    def _ensure_loaded(self) -> None:
        if not self._loaded:
            self.refresh(lazy=True)

    def expect_bytes(self, size: int) -> None:
        """A writer about to store content of ``size`` bytes says so first. Content
        larger than ``DEDUP_UNCHECKED_CHUNKS`` of the largest chunks has more chunks
        than the unchecked budget, and unless all but that many are indexed already
        it passes the budget at a later lookup anyway; so its first chunk called new
        (a fine-tune's header chunk, above all) already reads every pending ``.idx``:
        the same requests, read before a copy of that chunk is stored, not after.
        Content within the budget (a small file) still costs no ``.idx`` read."""
        if size > DEDUP_UNCHECKED_CHUNKS * CHUNK_MAX:
            with self._lock:
                self._unchecked = max(self._unchecked, DEDUP_UNCHECKED_CHUNKS)

    def has_chunks(self, chunk_ids: list[ObjectId]) -> list[bool]:
        """For each id, whether it is stored (or queued in the open pack)."""
        self._ensure_loaded()
        with self._lock:
            found = self.index.contains_many([c.raw for c in chunk_ids])
            if self._pending and not found.all():
                # A chunk called new that a pending .idx lists is stored once more: a
                # copy in a new pack, never a wrong answer (a hit is what gc's marks
                # guard). That saves a request per pending .idx, until the copies
                # could cost more than the requests: then every one is read.
                self._unchecked += int((~found).sum())
                if self._unchecked > DEDUP_UNCHECKED_CHUNKS:
                    if self._load_pending(len(self._pending)):
                        self.refresh()
                    found = self.index.contains_many([c.raw for c in chunk_ids])
            if found.any() and not self._marks_read:
                # Marks matter only for dedup hits: content that is all new never lists them.
                self.marked_packs = marked_packs(self.backend)
                self._marks_read = True
            if found.any() and self._stale_packs_gone([c.raw for c, f in zip(chunk_ids, found) if f]):
                self.reload()
                found = self.index.contains_many([c.raw for c in chunk_ids])
            if self.marked_packs:
                found = self._unmarked_hits(chunk_ids, found)
            open_packs = [w.builder for w, _ in self._sealing]
            if self._writer is not None:
                open_packs.append(self._writer.builder)
            if open_packs:
                return [bool(f) or any(c in b for b in open_packs) for f, c in zip(found, chunk_ids)]
            return [bool(f) for f in found]

    def stored_now(self, chunk_ids: list[ObjectId]) -> list[bool]:
        """For each id, whether a pack stored now holds it. Exact, unlike :meth:`has_chunks`,
        whose "new" may be a chunk that is stored (a ``.idx`` left unread, a hit on a pack
        gc marked whose copy is newer than this process's listing): that costs a writer
        only a copy, but whoever must know whether a version is whole
        (:func:`objstore.model.gcintent.lost`) asks this. The index is loaded again from
        a fresh listing, every ``.idx`` read as needed, and each pack holding one looked
        at now (a stat), its twins asked for if it is gone. A pack gc marked counts: it
        is stored, and gc deletes it only after a fresh look at the refs."""
        self.reload()
        raws = [c.raw for c in chunk_ids]
        out = [False] * len(raws)
        with self._lock:
            todo = list(range(len(raws)))
            while todo:
                located = list(zip(todo, self._located([raws[i] for i in todo])))
                packs = {loc.pack for _, loc in located if loc is not None}
                gone = {name for name in packs if not self._pack_exists(name)}  # a look per pack, not per chunk
                self.index.gone |= gone  # locate skips these: the next turn asks for a twin
                for i, loc in located:
                    out[i] = loc is not None and loc.pack not in gone
                todo = [i for i, loc in located if loc is not None and loc.pack in gone]
        return out

    def _pack_exists(self, name: str) -> bool:
        try:
            self.backend.stat(pack_key(name))
            return True
        except NotFound:
            return False

    def _unmarked_hits(self, chunk_ids: list[ObjectId], found: np.ndarray) -> np.ndarray:
        """``found`` without the chunks held only by marked packs (under ``_lock``):
        such a chunk is stored again, while one with a copy in a pack gc has not
        marked (a repack's copy) is a hit. A repack's copy has a loose ``.idx`` until
        the next compaction, so when a hit falls only on marked packs the pending
        ``.idx`` files are read first: otherwise every session until that compaction
        would store the same chunks once more (test_dedup_sessions)."""
        def demoted() -> list[int]:
            return [i for i, c in enumerate(chunk_ids) if found[i] and self.index.locate(c.raw, avoid=self.marked_packs) is None]

        out = demoted()
        if out and self._pending:
            if self._load_pending(len(self._pending)):
                self.refresh()
            out = demoted()
        found = found.copy()
        found[out] = False
        return found

    def locate(self, chunk_id: ObjectId) -> ChunkLocation:
        self._ensure_loaded()
        loc = self._located([chunk_id.raw])[0]
        if loc is None:
            self.refresh(lazy=True)  # another process may have added a pack since we loaded
            loc = self._located([chunk_id.raw])[0]
        if loc is None and self.damaged_packs:
            named = ", ".join(sorted(n[:16] for n in self.damaged_packs))
            raise CorruptObject(
                f"chunk {chunk_id.hex[:16]} is in no readable pack; pack(s) {named} and their indexes are damaged; "
                "run objstore fsck", object_id=chunk_id.hex)
        if loc is None:
            raise NotFound(f"chunk {chunk_id.hex[:16]} is not in any pack of this store", key=chunk_id.hex)
        return loc

    # -- writing chunks --------------------------------------------------
    def add_chunk(self, chunk_id: ObjectId, raw: bytes | memoryview, dtype: str | None = None, *, known_new: bool = False) -> bool:
        """Store one chunk unless it is already stored; True if it was new."""
        if not known_new and self.has_chunks([chunk_id])[0]:
            return False
        codec_id, payload = codecs.encode_chunk(raw, dtype, self.codec_policy)
        return self.add_encoded(chunk_id, codec_id, len(raw), payload)

    def add_encoded(self, chunk_id: ObjectId, codec_id: int, raw_len: int, payload: bytes | memoryview) -> bool:
        """Append an already-encoded chunk to the open pack (closing it when full)."""
        return self.add_encoded_many([(chunk_id, codec_id, raw_len, payload)]) == 1

    def add_encoded_many(self, records: Sequence[tuple[ObjectId, int, int, bytes | memoryview]]) -> int:
        """Append already-encoded chunks (id, codec, raw length, payload), in order, to
        the open pack, a write per pack they go into, closing each pack when full
        exactly where one-at-a-time adds would; how many were new to the packs."""
        added = done = 0
        with self._append_lock:
            while True:
                builder, done, new, pieces = self._stage(records, done)
                added += new
                self._write_staged(builder, pieces)
                with self._lock:
                    if builder.size < PACK_TARGET:
                        return added
                    writer, self._writer = self._writer, None
                    assert writer is not None and writer.builder is builder  # only appenders replace it
                    if self._sealer is None:
                        self._sealer = ThreadPoolExecutor(1, thread_name_prefix="objstore-seal")
                    self._sealing.append((writer, self._sealer.submit(self._seal, writer)))
                    wait = len(self._sealing) > MAX_SEALING
                if wait:
                    self._wait_oldest()  # outside _lock: the sealer needs it to publish the pack
                if done >= len(records):
                    return added

    def _stage(self, records: Sequence[tuple[ObjectId, int, int, bytes | memoryview]], start: int
               ) -> tuple[PackBuilder, int, int, list[bytes | memoryview]]:
        """Count ``records[start:]`` into the open pack (under ``_lock``: has_chunks sees
        them from now on), up to where it is full; returns the bytes, for
        :meth:`_write_staged`. Under ``_append_lock``, so nothing else is appended,
        sealed or flushed between the two."""
        with self._lock:
            if self._broken is not None:
                raise StoreBroken(f"an earlier write failed ({self._broken}); start a new session") from self._broken
            try:
                if self._writer is None:
                    self._writer = OpenPack(self._temp_path())
                builder = self._writer.builder
                payload_before = builder.payload_bytes
                done, new, pieces = builder.stage_many(records, start, PACK_TARGET)
            except OSError as exc:
                self._broken = error = backend_error("cannot write a new pack", exc)
                raise error from exc
            except BaseException as exc:
                self._broken = exc
                raise
            self.new_chunks += new
            self.new_bytes += builder.payload_bytes - payload_before
            return builder, done, new, pieces

    def _write_staged(self, builder: PackBuilder, pieces: list[bytes | memoryview]) -> None:
        """Hash and write what :meth:`_stage` counted in: outside ``_lock``, so the
        chunking threads' look-ups (has_chunks) never wait for the disk or the
        pack checksum. A failure breaks the database: the pack's ids already claim
        those chunks, so no later write may trust it."""
        try:
            builder.write_staged(pieces)
        except OSError as exc:
            # The pack being written is a local temp file, outside the backend's
            # own error mapping: say why (disk full, size limit, read-only).
            error = backend_error("cannot write a new pack", exc)
            with self._lock:
                self._broken = error
            raise error from exc
        except BaseException as exc:
            with self._lock:
                self._broken = exc
            raise

    @property
    def packs_stored(self) -> int:
        """How many packs this database has stored (sealed) since it was opened."""
        return self._sealed

    def flush(self) -> None:
        """Close and store the open pack, then its index, and wait for packs sealed
        in the background. Call before writing objects that name the chunks; once
        the refs naming them are written, call :meth:`maintain`."""
        with self._append_lock, self._lock:
            writer, self._writer = self._writer, None
            broken = self._broken
        if broken is not None:
            # The open pack's index names every record staged into it, and one of its
            # writes failed: stored, it would claim bytes that never reached the file.
            # The error said again (a run's finish flushes after a failed log): the cause.
            if writer is not None:
                writer.discard()
            if isinstance(broken, ObjstoreError) or not isinstance(broken, Exception):
                raise broken  # an interrupt stays one (the CLI's exit 130)
            raise StoreBroken(f"an earlier write failed ({broken}); start a new session") from broken
        if writer is not None:
            self._seal(writer)
        self._wait_sealed()

    def maintain(self) -> None:
        """The writer's automatic step (compaction past the threshold, then a bounded
        repack), at most once per process: call it only after the refs that name what
        this database stored are written (step 5 of the write order).

        Never between a pack's seal and the ref naming its chunks: until that ref
        exists the pack is unreachable, and a step that takes seconds (a compaction
        and a repack read and write packs) would hold that window open so long that
        a gc beside it (marking what is unreachable past its grace, deleting what
        was marked past it) deletes the pack the version is about to name
        (``test_gc_racing_a_writers_automatic_step_loses_none_of_its_chunks`` loses
        chunks that way when the step runs before the ref)."""
        self.flush()
        self._maybe_compact()

    def _wait_sealed(self) -> None:
        while self._wait_oldest():
            pass

    def _wait_oldest(self) -> bool:
        """Wait for the oldest background seal; False if none. A failed seal stays
        listed until this reports it, so its error always reaches a caller."""
        with self._lock:
            if not self._sealing:
                return False
            writer, future = self._sealing[0]
        try:
            future.result()
        except BaseException:
            with self._lock:
                self._sealing = [(w, f) for w, f in self._sealing if w is not writer]
            raise
        return True

    def _seal(self, writer: OpenPack) -> None:
        """Make a full pack durable, store it and its index, then let readers see it.

        Runs on the sealer thread for packs that filled up, and on the caller's for
        the last one; either way nothing names the chunks before this returns.
        """
        try:
            try:
                name, index = writer.finish()
            except OSError as exc:
                raise backend_error("cannot write a new pack", exc) from exc
            if not self.backend.put_file_if_absent(pack_key(name), writer.path):
                with self._lock:
                    self.reused += 1
            self.backend.put_if_absent(idx_key(name), encode_idx(name, index))
            # The very same pack (same chunks, same order) may have existed before
            # this write, even when the create reports True (S3: a retried create
            # that finds exactly our bytes counts as ours). If gc marked it for
            # deletion, this writer needs it: lift the mark always (gc re-checks the
            # mark right before it deletes); one delete per 32 MiB pack.
            self.backend.delete(marked_pack_key(name))
        except BaseException as exc:
            with self._lock:
                self._broken = exc  # later writes refuse; the error itself goes to the waiter
            raise
        finally:
            writer.discard()
        with self._lock:
            # One step under the lock: a chunk is always either in the index or in
            # a pack has_chunks still looks at.
            self._published(name, index)
            self._sealing = [(w, f) for w, f in self._sealing if w is not writer]

    def _published(self, name: str, index: np.ndarray) -> None:
        """Let readers see pack ``name``, stored with its ``.idx``: under ``_lock``."""
        self.index.add_packs([(name, index)])
        self.index.gone.discard(name)
        self._sealed += 1
        self._own_packs.add(name)
        self.marked_packs.discard(name)
        self._pack_checked[name] = time.monotonic()

    def adopt_pack(self, name: str, index: np.ndarray, path: Path) -> None:
        """Store a whole pack already verified at ``path`` (a temporary file on this
        store's file system, see :mod:`objstore.storage.packcopy`), then its index,
        then let readers see it: a transfer's :meth:`_seal` for a pack it did not build."""
        with self._lock:
            if self._broken is not None:
                raise StoreBroken(f"an earlier write failed ({self._broken}); start a new session") from self._broken
        try:
            if not self.backend.put_file_if_absent(pack_key(name), path):
                with self._lock:
                    self.reused += 1  # the very same pack was there: relied on, as in _seal
            self.backend.put_if_absent(idx_key(name), encode_idx(name, index))
            self.backend.delete(marked_pack_key(name))  # as in _seal: this writer needs the pack
        finally:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        with self._lock:
            self._published(name, index)
            self.new_chunks += len(index)
            self.new_bytes += int(index["stored_len"].sum(dtype=np.int64))

    def abort(self) -> None:
        """Drop the open pack without storing it (full packs already sealing are kept:
        unreferenced, they are gc's)."""
        with self._append_lock, self._lock:
            if self._writer is not None:
                self._writer.discard()
                self._writer = None
        while True:
            try:
                if not self._wait_oldest():
                    return
            except Exception:  # noqa: BLE001, S112 - that seal failed; its pack is abandoned with the rest (gc's)
                continue  # an interrupt (BaseException) is not swallowed: it ends the abort

    def _temp_path(self) -> Path:
        return new_temp_file(self.backend, "objstore-pack-")

    # -- reading chunks --------------------------------------------------
    def get_chunk(self, chunk_id: ObjectId) -> bytes:
        """The raw bytes of one chunk, verified against its id."""
        located, (stored,) = self.read_stored([(chunk_id, self.locate(chunk_id))])
        return self._decode_verified(chunk_id, located[0][1], stored)

    def _decode_verified(self, chunk_id: ObjectId, loc: ChunkLocation, stored: bytes | memoryview) -> bytes:
        return decode_verified(chunk_id, loc.codec, loc.raw_len, loc.stored_len, stored, _in_pack(loc))

    def iter_chunks(self, chunk_ids: Iterable[ObjectId]) -> Iterator[bytes]:
        """The raw bytes of each chunk in order, verified, fetching runs of
        neighbouring chunks of one pack in a single ranged read."""
        self.flush()
        for batch in self._runs(chunk_ids, COALESCE_LIMIT):
            yield from self._read_batch(batch)

    def decode_runs(self, chunk_ids: Iterable[ObjectId], sink: RunSink, *, workers: int,
                    in_workers: bool = False, done: Callable[[int, int], None] | None = None) -> None:
        """Hand every chunk of ``chunk_ids``, verified, to ``sink`` a run at a time:
        ``sink(i, chunks)`` gets the raw bytes of chunks ``i .. i + len(chunks) - 1``,
        valid only until it returns (they may be views of a buffer reused for a later
        run). ``done(i, n)``, if given, is called on this thread, in order, once the
        run of ``n`` chunks from ``i`` has been through ``sink``.

        Runs (neighbours in one pack, up to ``THREADED_RUN_LIMIT`` stored) are read,
        decoded and verified by ``workers`` threads (pread, zstd and BLAKE3 release
        the GIL; the native run decoder takes a whole run per call). ``sink`` runs on
        this thread, in order, unless ``in_workers``: then the runs go to ``sink`` from
        the workers as they are verified, in any order, one at a time (:class:`_HandOff`:
        a worker that finds the sink busy goes on decoding), so a sink that writes at
        offsets needs no lock and no thread waits for one writer.
        At most ``2 * workers + 1`` runs are in flight, each decoded into one of as
        many buffers, reused (fresh memory costs a page fault per 4 KiB).
        When this returns or raises, no worker is still running, so no sink either;
        after an error, runs after the failed one may or may not have been handed on.
        """
        self.flush()
        runs = _numbered(self._runs(chunk_ids, THREADED_RUN_LIMIT))
        head = list(itertools.islice(runs, 2))
        free: list[bytearray] = []  # appended and popped whole: atomic under the GIL
        after = done if done is not None else _nothing

        def decode(batch: _Run) -> _Decoded:
            out = free.pop() if free else bytearray()
            located, stored = self.read_stored(batch)
            return decode_verified_run(located, stored, _in_pack, out), out

        hand_off = _HandOff(sink, free) if in_workers else None

        def work(first: int, batch: _Run) -> _Decoded | None:
            decoded = decode(batch)
            if hand_off is None:
                return decoded
            hand_off.offer(first, *decoded)
            return None

        if len(head) < 2 or workers <= 1:  # one run (a small file), or no threads: no pool to start
            for first, batch in itertools.chain(head, runs):
                after(first, _hand_on(sink, first, *decode(batch), free))
            return

        def settle(first: int, got: _Decoded | None) -> None:
            if got is None:  # handed on by the workers
                assert hand_off is not None
                after(first, hand_off.wait(first))
            else:
                after(first, _hand_on(sink, first, *got, free))

        _in_pool(itertools.chain(head, runs), work, settle, workers)

    def locate_many(self, chunk_ids: Iterable[ObjectId]) -> list[tuple[ObjectId, ChunkLocation]]:
        """Each id with its location (:meth:`locate` for a batch: NotFound or CorruptObject
        for one that is in no readable pack)."""
        return list(self._locations(chunk_ids))

    def _locations(self, chunk_ids: Iterable[ObjectId]) -> Iterator[tuple[ObjectId, ChunkLocation]]:
        """Each id with its location, looked up a thousand at a time."""
        self._ensure_loaded()
        it = iter(chunk_ids)
        while batch := list(itertools.islice(it, 1024)):
            for chunk_id, loc in zip(batch, self._located([c.raw for c in batch])):
                yield chunk_id, loc if loc is not None else self.locate(chunk_id)  # locate refreshes or raises

    def _runs(self, chunk_ids: Iterable[ObjectId], limit: int) -> Iterator[list[tuple[ObjectId, ChunkLocation]]]:
        batch: list[tuple[ObjectId, ChunkLocation]] = []
        for chunk_id, loc in self._locations(chunk_ids):
            if batch:
                first, last = batch[0][1], batch[-1][1]
                contiguous = (loc.pack == last.pack and loc.offset >= last.offset + last.stored_len
                              and loc.offset - first.offset + loc.stored_len <= limit
                              and loc.offset - (last.offset + last.stored_len) <= 4096)
                if not contiguous:
                    yield batch
                    batch = []
            batch.append((chunk_id, loc))
        if batch:
            yield batch

    def _read_batch(self, batch: list[tuple[ObjectId, ChunkLocation]]) -> Iterator[bytes]:
        located, stored = self.read_stored(batch)
        for (chunk_id, loc), payload in zip(located, stored):
            yield self._decode_verified(chunk_id, loc, payload)

    # -- metadata objects ------------------------------------------------
    def put_object(self, obj: MetaObject) -> ObjectId:
        """Store a metadata object (create-only) and return its id."""
        oid, body = encode(obj)
        # Re-logging unchanged content re-puts every object it names; on a local disk
        # a stat is far cheaper than put_if_absent's temp file + fsync, and means the
        # same here (put_if_absent never touches an existing object either). On object
        # storage the conditional PUT is one request, like the stat it would save.
        if (self._local and self.has_object(oid)) or not self.backend.put_if_absent(
                object_key(oid), codecs.zstd_compressor().compress(body)):
            with self._lock:
                self.reused += 1
        return oid

    def get_object(self, oid: ObjectId) -> MetaObject:
        """Read, decompress and verify a metadata object."""
        return self.get_object_stored(oid)[0]

    def get_object_stored(self, oid: ObjectId) -> tuple[MetaObject, bytes]:
        """A metadata object and its bytes as stored, verified against ``oid``.

        Every step is bounded by what a metadata object can legitimately be
        (MAX_STORED_METADATA_BYTES stored, MAX_METADATA_BYTES decoded), whatever
        the file's size or the zstd header claims."""
        stored = self.backend.get(object_key(oid), max_size=MAX_STORED_METADATA_BYTES)
        try:
            body = codecs.zstd_decompress_bounded(stored, MAX_METADATA_BYTES)
        except CorruptObject as exc:
            raise CorruptObject(f"object {oid.hex[:16]} in the store at {self.backend.url} does not decompress: {exc}",
                                object_id=oid.hex) from None
        return decode(body, oid), stored

    def has_object(self, oid: ObjectId) -> bool:
        try:
            self.backend.stat(object_key(oid))
            return True
        except NotFound:
            return False

    def iter_object_ids(self) -> Iterator[ObjectId]:
        for info in self.backend.iter_prefix(OBJECTS):
            rest = object_hex_of(info.key)
            if rest is not None:
                try:
                    yield ObjectId.from_hex(rest)
                except ValueError:
                    continue

    def iter_pack_names(self) -> Iterator[str]:
        for info in self.backend.iter_prefix(PACKS):
            if (name := pack_name_of(info.key)) is not None:
                yield name

    # -- byte ranges of a stored file ------------------------------------
    def read_file_ranges(self, fobj: FileObject, ranges: Sequence[tuple[int, int]], *,
                         offsets: np.ndarray | None = None, workers: int = RANGE_READ_THREADS) -> list[np.ndarray]:
        """The bytes ``[start, start + length)`` of the stored file ``fobj`` for each
        ``(start, length)`` of ``ranges``, reading only the chunks that cover them.

        Each chunk needed is read once however many ranges (or places in the file)
        name it; neighbours in one pack are fetched in one ranged request (gaps up
        to 4 KiB bridged, up to ``COALESCE_LIMIT`` a request), by up to ``workers``
        threads. Every chunk is verified against its id, and its length against the
        file's claim, before a byte of it is copied out. ``offsets`` is
        :func:`file_offsets` of ``fobj``, for a caller that reads one file often.
        Reads go through the backend's ``get_range`` only, so a caching backend
        serves them. Each range comes back as a uint8 array (bytes-like);
        the check of every length the file claims against the chunk index comes
        before anything is reserved, so a crafted file object cannot make this
        allocate more than its chunks really hold."""
        if offsets is None:
            offsets = file_offsets(fobj)
        for start, length in ranges:
            if start < 0 or length < 0 or start + length > fobj.size:
                raise InvalidInput(f"bytes {start}..{start + length} are outside the {fobj.size}-byte file")
        wanted = _chunks_covering(fobj, offsets, ranges)
        self.flush()
        runs = list(self._runs(sorted(wanted, key=lambda c: min(wanted[c])), COALESCE_LIMIT))
        for batch in runs:
            for chunk_id, loc in batch:
                for k in wanted[chunk_id]:
                    _check_claim(chunk_id, fobj.chunks[k][1], loc.raw_len)
        outs = [np.empty(length, np.uint8) for _, length in ranges]
        for batch, chunks in zip(runs, self._map_runs(runs, workers)):
            for (chunk_id, _), data in zip(batch, chunks):
                for k in wanted[chunk_id]:
                    begin, claimed = int(offsets[k]), fobj.chunks[k][1]
                    _check_claim(chunk_id, claimed, len(data))  # again: a chunk read from where gc moved it
                    for out, (start, length) in zip(outs, ranges):
                        lo, hi = max(begin, start), min(begin + claimed, start + length)
                        if lo < hi:
                            out[lo - start:hi - start] = np.frombuffer(data, np.uint8, hi - lo, lo - begin)
        return outs

    def _decode_run(self, batch: list[tuple[ObjectId, ChunkLocation]]) -> list[bytes]:
        """The verified raw bytes of each chunk of a run, each its own ``bytes`` (kept by the caller)."""
        return list(self._read_batch(batch))

    def _map_runs(self, runs: list[list[tuple[ObjectId, ChunkLocation]]], workers: int) -> Iterator[list[bytes]]:
        """Each run's chunks, verified, in order; by ``workers`` threads, at most
        ``2 * workers`` runs ahead of the consumer."""
        if workers <= 1 or len(runs) <= 1:
            yield from map(self._decode_run, runs)
            return
        pool = ThreadPoolExecutor(min(workers, len(runs)), thread_name_prefix="objstore-range")
        pending: deque[Future[list[bytes]]] = deque()
        try:
            for batch in runs:
                pending.append(pool.submit(self._decode_run, batch))
                if len(pending) > 2 * workers:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for fut in pending:
                fut.cancel()
            pool.shutdown(wait=True)


def _chunks_covering(fobj: FileObject, offsets: np.ndarray, ranges: Sequence[tuple[int, int]]) -> dict[ObjectId, set[int]]:
    """Each chunk id that ``ranges`` of the file need, with its places (chunk numbers) in the file."""
    wanted: dict[ObjectId, set[int]] = {}
    for start, length in ranges:
        if length:
            first = int(np.searchsorted(offsets, start, "right")) - 1
            stop = int(np.searchsorted(offsets, start + length, "left"))
            for k in range(first, stop):
                wanted.setdefault(fobj.chunks[k][0], set()).add(k)
    return wanted


def _check_claim(chunk_id: ObjectId, claimed: int, real: int) -> None:
    # A file's id covers the lengths it claims for its chunks, not their real lengths.
    if claimed != real:
        raise CorruptObject(f"a file says chunk {chunk_id.hex[:16]} is {claimed} bytes, but it is {real}; refusing it",
                            object_id=chunk_id.hex)


# The largest file an int64 offset addresses (numpy's offsets below).
MAX_FILE_BYTES = (1 << 63) - 1


def file_offsets(fobj: FileObject) -> np.ndarray:
    """Where each chunk of ``fobj`` starts in the file, then the file's size (int64).
    CorruptObject for chunk lengths past what int64 holds: a crafted file object's id
    covers the lengths it claims, and 3 × 2^62 would wrap the offsets negative."""
    lengths = [n for _, n in fobj.chunks]
    if sum(lengths) > MAX_FILE_BYTES or any(n < 0 for n in lengths):
        raise CorruptObject(f"a file object claims {sum(lengths)} bytes in {len(lengths)} chunks, more than any file "
                            "holds; refusing it")
    return np.concatenate(([0], np.cumsum(lengths, dtype=np.int64))).astype(np.int64)


class OpenPack:
    """A pack being written to a local temporary file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file = open_pack_file(path)
        self.builder = PackBuilder(cast(BinaryIO, self._file))

    def finish(self) -> tuple[str, np.ndarray]:
        name = self.builder.finish()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return name, self.builder.index

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
