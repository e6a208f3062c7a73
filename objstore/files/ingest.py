"""Turning local files into stored chunks and file objects.

A file is segmented (:mod:`objstore.storage.segmenting`), each segment chunked
(:mod:`objstore.storage.chunking`), each chunk hashed and, if the store lacks it,
encoded and appended to the open pack.

The pipeline (what makes this run near the hashing limit on every core):

- **jobs**: runs of whole segments (tensors) of about ``JOB_BYTES``. Segments
  are chunked independently, so different jobs are cut at the same time by
  ``workers`` chunking threads; each reads its bytes with ``pread`` on one shared
  descriptor into a buffer of its own per ``BLOCK_BYTES`` block (from a pool: a
  buffer is filled again once its new chunks are in the pack), and cuts and
  hashes the whole block in one call of the core (:mod:`objstore.storage.native`,
  GIL released), then asks the index which of the block's chunks are new, in one
  batch;
- **encode**: a block's new chunks, views into its buffer (never copied), are
  encoded in one task by a pool of ``workers`` threads (zstd and numpy release
  the GIL);
- **write**: the calling thread takes the results job by job, in the schedule's
  order (:func:`_schedule`: file order, except that tensors the segment cache may
  answer are spread among the others), and appends each block's new chunks to the
  pack (one write per block); the file object lists the chunks in file order. The
  order depends on the file and the cache only, so packs and file objects are the
  same whatever the timing, and the sequential path's.

Per chunk, Python only builds its id and calls the codec (new chunks); a block's new
records go into the pack in one write, and everything else is per block.

Memory is bounded: at most ``LOOKAHEAD`` jobs are started ahead of the one being
written (a job done that holds only ids, no buffer, gives its place back), with
at most ``WAITING_BATCHES`` blocks holding new chunks waiting in all
(:class:`_Room`: jobs not yet being written share all but ``QUEUE_BATCHES`` of
them, so the job being written always finds room; and ``LIGHT_BATCHES`` blocks of
ids of chunks already stored per job, which hold no buffer), plus one block being
cut per chunking thread — tens of MiB whatever the file size.

Re-logging an unchanged file skips all of that: :mod:`objstore.files.statcache`
remembers each file's chunk list by its stat. A tensor the store has seen before,
in any file at any offset, skips chunking: :mod:`objstore.files.segmentcache` maps a
probe of it to its chunk list, which the chunking thread verifies by hashing the
tensor's bytes at the entry's cuts (the one hash chunking would have made).

Each byte of a new tensor is hashed once (its chunk id, in the call of the core
that cuts it); a tensor the cache answers is read and hashed once too.

Invariants kept here, the one place that makes cache entries and file objects
from a file's bytes:

- **A cache answers only for bytes it was checked against.** A segment-cache entry
  is used only once the segment's bytes, read now, hash to its chunk ids, so an
  entry filed from a read that changed (or forged) is a miss, never a wrong answer.
  A stat-cache entry pairs the stat taken before the read with the chunks of that
  read, and is written only if the read was stable (next point).
- **A file object is one real state of the file.** Reading begins only once the
  file's last change (mtime or ctime) is older than a timestamp tick, waiting out
  at most that tick (:func:`_settled_stat`; git's racy-index rule), so a write
  during the read must move mtime or ctime; the stat after the read must equal the
  one before. Otherwise :class:`~objstore.errors.FileChanged` is raised and nothing
  from the read is kept: no file object returned, no cache entry written (entries
  are collected while reading and written only after that check), and the caller
  stores no version. Refusing costs no second pass over the file.
- Limits: a change no stat shows (a write through a shared mapping to pages
  already dirty moves neither mtime nor ctime) can make a file object a mix of two
  states; every chunk is still the bytes its id names, and the segment cache stays
  true, since it verifies what it answers.
  Timestamps are trusted to come from a clock that agrees with ours within the
  tick, as git trusts them.

Callers must :meth:`~objstore.storage.odb.ObjectDatabase.flush` before storing the file
objects returned here (the write order in :mod:`objstore.storage.odb`).
"""

from __future__ import annotations

import contextlib
import enum
import itertools
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from objstore.errors import FileChanged, InvalidInput, NotFound
from objstore.files.segmentcache import MIN_SEGMENT, SegmentCache, probe_key, probe_ranges
from objstore.files.statcache import COARSE_SLACK_NS, StatCache, StatKey, racy_slack_ns
from objstore.storage import codecs, native
from objstore.storage.chunking import GEAR, TENSOR_SCANS, Block, BufferPool, Chunker, Lease
from objstore.storage.ids import Kind, ObjectId, ids_from_digests, key_of
from objstore.storage.objects import FileObject
from objstore.storage.odb import ObjectDatabase
from objstore.storage.segmenting import Segment, segment_file

Progress = Callable[[int], None]

JOB_BYTES = 8 * 1024 * 1024  # segments are grouped into jobs of at least this many bytes
# A chunking thread reads, cuts and hashes this much per call of the core, and hands
# the block's chunks to the writer at once: large enough that the per-block Python
# (a few calls) vanishes, small enough that the blocks waiting stay a few MiB each.
BLOCK_BYTES = 2 * 1024 * 1024
QUEUE_BATCHES = 4  # blocks carrying new chunk bytes kept free for the job being written
# ... and blocks carrying only ids (chunks already stored): small, so a job whose
# tensors the segment cache answered can run far ahead of a job still chunking.
LIGHT_BATCHES = 256
# Jobs started ahead of the one being written, not counting jobs already done that
# hold only ids (tensors the segment cache answered, chunks already stored): those
# give their place back at once, so a thread verifying tensors runs on ahead of a
# thread still chunking a large new one (an embedding grown by a few rows) instead
# of waiting for it two jobs in.
LOOKAHEAD = 3
# Blocks carrying new chunk bytes waiting for the writer, all jobs together. Shared
# rather than per job: a job is ~21 MiB (10 blocks) in a model's layers, so with
# QUEUE_BATCHES per job the thread cutting the next job stopped 4 blocks in and
# waited for the writer to finish the job before (a quarter to a third of its
# time); now it may fill the room the jobs further ahead are not using.
WAITING_BATCHES = 3 * QUEUE_BATCHES
# Below this a file is chunked on the calling thread: threads cost more than they save.
PIPELINE_MIN_BYTES = 4 * 1024 * 1024
# Longest wait for a just-changed file's timestamp tick to pass before reading it
# (_settled_stat): the coarsest granularity, plus a little clock skew.
MAX_SETTLE_NS = COARSE_SLACK_NS + 1_000_000_000

class _Default(enum.Enum):
    """The type of ``_DEFAULT``: "the store's own cache", told apart from None (no cache)."""

    DEFAULT = enum.auto()


_DEFAULT = _Default.DEFAULT


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


class _PReader:
    """``readinto`` over a shared descriptor at an explicit offset (pread: no shared file position)."""

    __slots__ = ("fd", "offset")

    def __init__(self, fd: int, offset: int) -> None:
        self.fd = fd
        self.offset = offset

    def readinto(self, buffer: memoryview) -> int:
        n = os.preadv(self.fd, [buffer], self.offset)
        self.offset += n
        return n


# A segment the segment cache has an entry for is verified in blocks of about this
# many bytes: each read once into a per-thread buffer and hashed at the entry's cuts.
VERIFY_BYTES = 2 * 1024 * 1024
_verify_buffers = threading.local()


_Chunks = list[tuple[ObjectId, int]]


class _Reuse:
    """What one ``chunk_file`` call does with the segment cache.

    Each large segment is probed (:func:`~objstore.files.segmentcache.probe_key`) by
    the thread that would chunk it; an entry found is used only if its chunks are
    all stored and the segment's bytes, read once, hash to them (:func:`_verified`):
    then the segment is not cut at all. Otherwise it is chunked, and its chunk list
    collected under its probe. Entries are only collected while the file is read,
    and written by :meth:`commit` once the whole read is known to be of one state of
    the file.
    """

    def __init__(self, cache: SegmentCache, odb: ObjectDatabase | None, chunker: Chunker) -> None:
        self.cache = cache
        self.odb = odb
        self.chunker = chunker
        self.max_chunk = chunker.params.max_size
        self.empty = cache.is_empty()  # a new store has nothing to find: no look-ups
        # (key, grain, length, chunks) of each segment chunked: written by commit()
        self.entries: list[tuple[bytes, int | str, int, _Chunks]] = []
        self.probes: dict[int, bytes] = {}  # offset -> probe, made while planning (_schedule)

    @staticmethod
    def applies(segment: Segment) -> bool:
        return segment.length >= MIN_SEGMENT

    def known(self, fd: int, segment: Segment) -> bool:
        """Whether the cache holds an entry under ``segment``'s probe (not yet verified:
        a hint for the schedule). The probe is kept for :meth:`answer`."""
        key = self.probes[segment.offset] = probe_key(fd, segment.offset, segment.length)
        return self.cache.has_entry(key, self._grain(segment))

    def _grain(self, segment: Segment) -> int | str:
        return self.chunker.grain(segment.align, segment.stride)

    def answer(self, fd: int, segment: Segment) -> tuple[bytes, _Chunks | None]:
        """The segment's probe, and its chunk list if the cache holds one verified now."""
        key = self.probes.get(segment.offset) or probe_key(fd, segment.offset, segment.length)
        if self.empty:
            return key, None
        found = self.cache.lookup(key, self._grain(segment), segment.length,
                                  lambda chunks: self._stored(chunks) and _verified(fd, segment, chunks, self.max_chunk),
                                  self.max_chunk)
        return key, found

    def _stored(self, chunks: _Chunks) -> bool:
        return self.odb is None or all(self.odb.has_chunks([c for c, _ in chunks]))

    def record(self, key: bytes, segment: Segment, chunks: _Chunks) -> None:
        self.entries.append((key, self._grain(segment), segment.length, chunks))

    def commit(self) -> None:
        """Write the entries collected: only once the file read was found stable."""
        for key, grain, length, chunks in self.entries:
            self.cache.store(key, grain, length, chunks)
        self.entries = []


def _verified(fd: int, segment: Segment, chunks: _Chunks, max_chunk: int) -> bool:
    """Whether ``segment``'s bytes, read now, hash to ``chunks`` at their cuts (each chunk
    at most ``max_chunk`` bytes, which the segment cache checked). Reads stop at the
    first block that differs."""
    room = max(VERIFY_BYTES, max_chunk)
    buf = getattr(_verify_buffers, "buf", None)
    if buf is None or len(buf) < room:
        buf = _verify_buffers.buf = memoryview(bytearray(room))
    # A file shorter now fails here; the stat check after the read refuses it.
    return native.core.verify_at(_CHUNK_KEY, fd, segment.offset, [n for _, n in chunks],
                                 b"".join(c.raw for c, _ in chunks), buf[:room])


_CHUNK_KEY = key_of(Kind.CHUNK)


@dataclass(frozen=True, slots=True)
class _Run:
    """Consecutive chunks of one segment: one cut block, or a segment-cache answer
    (``block`` None: every chunk known stored)."""

    ids: list[ObjectId]
    lengths: list[int]
    block: Block | None

    def view(self, k: int) -> memoryview:
        """The bytes of chunk ``k`` (only for a cut block)."""
        assert self.block is not None
        ends = self.block.ends
        return self.block.data[ends[k - 1] if k else self.block.start : ends[k]]

    def new_chunks(self, odb: ObjectDatabase) -> list[int]:
        """The chunks of a cut block the store lacks, each id once (its first copy)."""
        if self.block is None:
            return []
        seen: set[ObjectId] = set()
        new = []
        for k, (chunk_id, stored) in enumerate(zip(self.ids, odb.has_chunks(self.ids))):
            if not stored and chunk_id not in seen:
                seen.add(chunk_id)
                new.append(k)
        return new


def _cut(chunker: Chunker, reader: _PReader, segment: Segment, pool: BufferPool | None) -> Iterator[_Run]:
    fresh = pool is not None
    read_block = BLOCK_BYTES if fresh else None
    for block in chunker.iter_blocks(reader, segment.length, segment.align, _CHUNK_KEY, fresh, read_block, pool,
                                     segment.stride):
        assert block.ids is not None  # asked for with a key
        ends = block.ends
        lengths = [ends[0] - block.start, *(b - a for a, b in zip(ends, ends[1:]))]
        yield _Run(ids_from_digests(block.ids), lengths, block)


def _segment_runs(fd: int, segment: Segment, chunker: Chunker, reuse: _Reuse | None, pool: BufferPool | None = None
                  ) -> Iterator[_Run]:
    """The chunks of ``segment``, a block at a time. A block's views are valid only
    until the next run, unless a ``pool`` is given: then every block has a buffer of
    its own from it, valid until its lease is released."""
    if reuse is None or not reuse.applies(segment):
        yield from _cut(chunker, _PReader(fd, segment.offset), segment, pool)
        return
    key, found = reuse.answer(fd, segment)
    if found is not None:
        yield _Run([c for c, _ in found], [n for _, n in found], None)
        return
    chunks: _Chunks = []
    for run in _cut(chunker, _PReader(fd, segment.offset), segment, pool):
        chunks.extend(zip(run.ids, run.lengths))
        yield run
    reuse.record(key, segment, chunks)


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise NotFound(f"{path} does not exist; check the path", key=str(path)) from None
    except IsADirectoryError:
        raise InvalidInput(f"{path} is a directory; use add_dir or pass the directory as path") from None
    except PermissionError:
        raise InvalidInput(f"{path} is not readable (permission denied)") from None


def _chunking_key(chunker: Chunker) -> tuple[int, ...]:
    p = chunker.params
    key = (p.avg_size, p.min_size, p.max_size, p.normalization)
    # a gear store's key is as it always was, so its caches stay valid
    return key if p.tensor_scan == GEAR else (*key, TENSOR_SCANS.index(p.tensor_scan))


def stat_cache_for(odb: ObjectDatabase, chunker: Chunker) -> StatCache:
    """The stat cache of ``odb``'s store, keyed also by the chunking parameters."""
    return StatCache.for_backend(odb.backend, _chunking_key(chunker))


def segment_cache_for(odb: ObjectDatabase, chunker: Chunker) -> SegmentCache:
    """The segment cache of ``odb``'s store, keyed also by the chunking parameters."""
    return SegmentCache.for_backend(odb.backend, _chunking_key(chunker))


def chunk_file(path: Path, chunker: Chunker, odb: ObjectDatabase | None, progress: Progress | None = None, *,
               stat_cache: StatCache | None | _Default = _DEFAULT, segment_cache: SegmentCache | None | _Default = _DEFAULT,
               workers: int | None = None) -> FileObject:
    """Chunk and hash ``path``; store its new chunks in ``odb`` (if given).

    With ``odb=None`` nothing is stored: the result is just the file's identity,
    used to tell whether a materialized copy is intact.

    ``stat_cache``, ``segment_cache``: by default the store's (only when ``odb``
    is given); None disables one. ``workers``: threads for chunking and for
    encoding (default: one each per CPU); 0 runs everything on the calling
    thread, the simple sequential path the pipeline must agree with.
    """
    path = Path(path)
    if stat_cache is _DEFAULT:
        stat_cache = stat_cache_for(odb, chunker) if odb is not None else None
    if segment_cache is _DEFAULT:
        segment_cache = segment_cache_for(odb, chunker) if odb is not None else None
    reuse = _Reuse(segment_cache, odb, chunker) if isinstance(segment_cache, SegmentCache) else None
    cache = stat_cache if odb is not None and isinstance(stat_cache, StatCache) else None
    if cache is not None and odb is not None and (hit := _stat_cache_hit(path, cache, odb)) is not None:
        if progress is not None:
            progress(hit.size)
        return hit
    if odb is not None:
        with contextlib.suppress(OSError):  # a file that cannot be stat'd fails in the read below
            odb.expect_bytes(os.stat(path).st_size)
    read = _read_file(path, chunker, odb, progress, reuse, workers)
    fobj = FileObject(read.size, tuple(read.chunks))
    # Entries only now: they describe a read known to be of one state of the file.
    if reuse is not None:
        reuse.commit()
    if cache is not None:
        cache.store(path, read.stat, read.start_ns, fobj)
    return fobj


def _stat_cache_hit(path: Path, cache: StatCache, odb: ObjectDatabase) -> FileObject | None:
    """The file object the stat cache remembers for ``path``, if its chunks are all stored."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not os.path.isfile(path):
        return None
    hit = cache.lookup(path, st)
    if hit is not None and all(odb.has_chunks([c for c, _ in hit.chunks])):
        return hit
    return None


@dataclass(frozen=True, slots=True)
class _Read:
    """One read of a file: its chunks, the stat taken before it and when it began."""

    chunks: list[tuple[ObjectId, int]]
    stat: os.stat_result
    start_ns: int

    @property
    def size(self) -> int:
        return self.stat.st_size


def _read_file(path: Path, chunker: Chunker, odb: ObjectDatabase | None, progress: Progress | None,
               reuse: _Reuse | None, workers: int | None) -> _Read:
    """Segment, chunk and (with ``odb``) store ``path``; FileChanged unless what was read
    is one state of the file, whenever anything is kept (chunks, cache entries)."""
    # Whatever is kept (chunks, a file object to store, cache entries) must come from
    # one state of the file; a bare identity (odb=None, no caches) only has to be honest.
    keeping = odb is not None or reuse is not None
    fd = _open(path)
    try:
        st, read_start = _settled_stat(fd) if keeping else (os.fstat(fd), time.time_ns())
        with os.fdopen(os.dup(fd), "rb", buffering=0) as f:
            segments = segment_file(f, st.st_size, path)
        n_workers = default_workers() if workers is None else workers
        if n_workers <= 0 or st.st_size < PIPELINE_MIN_BYTES:
            chunks = _sequential(fd, segments, chunker, odb, progress, reuse)
        else:
            chunks = _Pipeline(fd, segments, chunker, odb, progress, n_workers, reuse).run()
        after = os.fstat(fd)
    except FileChanged as exc:
        if exc.path is None:
            raise FileChanged(str(path), exc.detail) from None
        raise
    finally:
        os.close(fd)
    if keeping and StatKey.of(after) != StatKey.of(st):
        # The read began a tick after the file's last change (_settled_stat), so any
        # write since moved mtime or ctime: what was read may be a mix of two states.
        raise FileChanged(str(path))
    return _Read(chunks, st, read_start)


def _settled_stat(fd: int) -> tuple[os.stat_result, int]:
    """The stat of ``fd`` once its last change is more than a timestamp tick old, and
    the time reading may begin.

    A write within the tick of the previous change leaves mtime and ctime as they
    were (the racy-git problem), so only a read that begins after that tick can
    tell from the stats before and after it whether the file changed meanwhile, and
    only then may the stat cache trust the entry it records. A file changed this
    instant costs a wait of at most that tick (a few ms; 2 s where timestamps are
    whole seconds). A change stamped far in the future (a skewed clock, ``touch -d``)
    is not waited for: any write now stamps the present, which differs from it.
    """
    st = os.fstat(fd)
    key = StatKey.of(st)
    settled = key.last_change_ns + racy_slack_ns(key)
    if 0 <= settled - time.time_ns() <= MAX_SETTLE_NS:
        while (now := time.time_ns()) <= settled:
            time.sleep((settled - now) / 1e9 + 1e-4)
        st = os.fstat(fd)
        if StatKey.of(st) != key:
            raise FileChanged(detail=" (it is still being written)")
    return st, time.time_ns()


def file_id_of(path: Path, chunker: Chunker) -> ObjectId:
    """The id ``path`` would have if logged, without storing anything."""
    return chunk_file(path, chunker, None).compute_id()


def _sequential(fd: int, segments: list[Segment], chunker: Chunker, odb: ObjectDatabase | None,
                progress: Progress | None, reuse: _Reuse | None = None) -> list[tuple[ObjectId, int]]:
    chunks = _FileOrder(segments)
    for segment in itertools.chain.from_iterable(_schedule(fd, segments, reuse)):
        for run in _segment_runs(fd, segment, chunker, reuse):
            chunks.add(segment, run.ids, run.lengths)
            if odb is not None:
                for k in run.new_chunks(odb):
                    odb.add_chunk(run.ids[k], run.view(k), segment.dtype, known_new=True)
            if progress is not None:
                progress(sum(run.lengths))
    return chunks.in_file_order()


def _jobs(segments: list[Segment]) -> list[list[Segment]]:
    """Runs of whole segments of at least ``JOB_BYTES`` each (a segment the segment cache
    answers is still read and hashed once, so it weighs what it holds)."""
    jobs: list[list[Segment]] = []
    current: list[Segment] = []
    size = 0
    for seg in segments:
        current.append(seg)
        size += seg.length
        if size >= JOB_BYTES:
            jobs.append(current)
            current, size = [], 0
    if current:
        jobs.append(current)
    return jobs


def _schedule(fd: int, segments: list[Segment], reuse: _Reuse | None) -> list[list[Segment]]:
    """The jobs, in the order they are chunked and their new chunks written.

    Tensors the segment cache may answer (an entry under their probe) cost a read and a
    hash each; the others (new, grown, small) a cut scan, and the encoding of whatever
    the store lacks. In file order the two kinds come in runs (a fine-tune's changed
    layers and head are the file's last tensors, a grown vocabulary its first and last),
    so one chunking thread works alone at the end while the other has nothing left.
    Each kind is grouped into jobs in file order and the two lists are merged evenly by
    bytes (:func:`_interleave`), so both threads have both kinds of work to the end.
    The order depends only on the file and the cache, never on timing, so packs are
    the same however the threads run; a new store (empty cache) keeps file order."""
    if reuse is None or reuse.empty:
        return _jobs(segments)
    large = [s for s in segments if reuse.applies(s)]
    if hasattr(os, "posix_fadvise"):
        # The probes are read here, one after another, before any chunking: ask for
        # them all first, so a file not in the page cache costs one round of reads.
        for s in large:
            for start, n in probe_ranges(s.offset, s.length):
                os.posix_fadvise(fd, start, n, os.POSIX_FADV_WILLNEED)
    known = {s.offset for s in large if reuse.known(fd, s)}
    return _interleave(_jobs([s for s in segments if s.offset not in known]),
                       _jobs([s for s in segments if s.offset in known]))


def _interleave(first: list[list[Segment]], second: list[list[Segment]]) -> list[list[Segment]]:
    """Both job lists, each in its own order, merged so that each is spread over the
    whole: the next job comes from the list that has handed out the smaller share of
    its bytes (``first`` on a tie)."""
    def size(job: list[Segment]) -> int:
        return sum(s.length for s in job)

    totals = [sum(map(size, jobs)) or 1 for jobs in (first, second)]
    lists, taken, next_of, out = (first, second), [0, 0], [0, 0], []
    while next_of[0] < len(first) or next_of[1] < len(second):
        if next_of[1] == len(second):
            side = 0
        elif next_of[0] == len(first):
            side = 1
        else:  # shares compared as taken[0] / totals[0] <= taken[1] / totals[1], in integers
            side = 0 if taken[0] * totals[1] <= taken[1] * totals[0] else 1
        job = lists[side][next_of[side]]
        next_of[side] += 1
        taken[side] += size(job)
        out.append(job)
    return out


class _FileOrder:
    """Chunks collected by segment in any order, handed back in file order."""

    def __init__(self, segments: list[Segment]) -> None:
        self._segments = segments
        # Keyed by (offset, length): segments never overlap, so only empty ones share a key.
        self._by_segment: dict[tuple[int, int], list[tuple[ObjectId, int]]] = {}

    def add(self, segment: Segment, ids: list[ObjectId], lengths: list[int]) -> None:
        self._by_segment.setdefault((segment.offset, segment.length), []).extend(zip(ids, lengths))

    def in_file_order(self) -> list[tuple[ObjectId, int]]:
        return [c for s in self._segments for c in self._by_segment.get((s.offset, s.length), ())]


# One run in flight: its segment, its ids and lengths, and (if it has new chunks) the encoding
# task, which of the run's chunks it encodes, in order, the lease of the buffer
# they are in and the pooled buffer their payloads are laid out in (both given back
# once they are written).
_Item = tuple[Segment, list[ObjectId], list[int], "Future[list[tuple[int, bytes | memoryview]]] | None", list[int],
              Lease | None, bytearray | None]
_Queue = queue.Queue[tuple[_Item, bool] | None | BaseException]
_DONE = None


class _Room:
    """Places for blocks with new chunks waiting for the writer, shared by every job.

    A job other than the one being written (the ``head``) takes a place only while
    more than ``reserve`` are free, so the head always finds one: the places it
    holds are freed by the writer, which waits only for the head. Without the
    reserve, jobs ahead could take every place while the head waits for one."""

    def __init__(self, total: int, reserve: int) -> None:
        assert 0 < reserve <= total
        self._free = total
        self._reserve = reserve
        self._head = 0
        self._cond = threading.Condition()

    def take(self, job: int, stop: threading.Event) -> bool:
        """A place for a block of ``job``, once there is one; False if ``stop`` is set first."""
        with self._cond:
            while not stop.is_set():
                if self._free > (0 if job == self._head else self._reserve):
                    self._free -= 1
                    return True
                self._cond.wait(0.1)  # and see stop
        return False

    def give(self) -> None:
        with self._cond:
            self._free += 1
            self._cond.notify_all()

    def advance(self, job: int) -> None:
        """The writer now waits for ``job``: its thread may take the reserve."""
        with self._cond:
            self._head = job
            self._cond.notify_all()


_Task = tuple[float, int, "Future[Any] | None", Callable[..., Any] | None, tuple[Any, ...]]


class _Encoders:
    """``workers`` threads running encode tasks in the writer's order (by job, then
    as submitted), not in the order they were submitted: a thread that runs ahead on
    a later job must not put its blocks' encoding before the blocks the writer is
    waiting for (with a plain FIFO pool the writer spent ~45% of a cold ingest
    waiting for encode results while later jobs' blocks were being encoded)."""

    def __init__(self, workers: int) -> None:
        self._tasks: queue.PriorityQueue[_Task] = queue.PriorityQueue()
        self._order = itertools.count()
        self._threads = [threading.Thread(target=self._work, name=f"objstore-encode_{i}", daemon=True)
                         for i in range(workers)]
        for t in self._threads:
            t.start()

    def submit(self, job: int, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        fut: Future[Any] = Future()
        self._tasks.put((job, next(self._order), fut, fn, args))
        return fut

    def _work(self) -> None:
        while True:
            _, _, fut, fn, args = self._tasks.get()
            if fut is None or fn is None:
                return  # shut down: every task before this one is done or cancelled
            if fut.set_running_or_notify_cancel():
                try:
                    fut.set_result(fn(*args))
                except BaseException as exc:  # the writer re-raises it from result()
                    fut.set_exception(exc)

    def shutdown(self) -> None:
        """Cancel the tasks not started, let the running ones end, stop the threads."""
        with contextlib.suppress(queue.Empty):
            while True:
                fut = self._tasks.get_nowait()[2]
                if fut is not None:
                    fut.cancel()
        for _ in self._threads:
            self._tasks.put((float("inf"), next(self._order), None, None, ()))
        for t in self._threads:
            t.join()


class _Pipeline:
    def __init__(self, fd: int, segments: list[Segment], chunker: Chunker, odb: ObjectDatabase | None,
                 progress: Progress | None, workers: int, reuse: _Reuse | None = None) -> None:
        self.fd = fd
        self.reuse = reuse
        self.segments = segments
        self.jobs = _schedule(fd, segments, reuse)
        self.chunker = chunker
        self.odb = odb
        self.progress = progress
        self.workers = workers
        self.queues: list[_Queue] = [queue.Queue() for _ in self.jobs]
        self.room = _Room(WAITING_BATCHES, QUEUE_BATCHES)  # for blocks with new bytes
        self.light = [threading.Semaphore(LIGHT_BATCHES) for _ in self.jobs]  # for blocks of ids only
        self.ahead = threading.Semaphore(LOOKAHEAD)
        self.placed = [False] * len(self.jobs)  # jobs holding one of the LOOKAHEAD places
        self.next_job = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.encoders = _Encoders(workers) if odb is not None else None
        # With a store, each block in a buffer of its own, from a pool: the encoder
        # reads the new chunks where they were read, and the buffer is reused once
        # they are written. It keeps as many as can be in flight at once.
        # (the blocks waiting, and per thread the block being cut, one waiting for room and the next one's buffer)
        self.pool = (BufferPool(BLOCK_BYTES + chunker.params.max_size, WAITING_BATCHES + 3 * workers)
                     if odb is not None else None)
        # ... and, with the C batch encoder, one for the encoded payloads of each block
        # with new chunks (they are smaller than the block's raw bytes, or stored raw).
        self.out_pool = (BufferPool(self.pool.size, self.pool.keep)
                         if self.pool is not None and codecs.BATCH_INTO else None)

    # -- chunking threads -------------------------------------------------
    def _take_job(self) -> int | None:
        while not self.stop.is_set():
            if self.ahead.acquire(timeout=0.1):
                with self.lock:
                    if self.next_job >= len(self.jobs):
                        self.ahead.release()
                        return None
                    j = self.next_job
                    self.next_job += 1
                    self.placed[j] = True
                return j
        return None

    def _chunk_worker(self) -> None:
        while (j := self._take_job()) is not None:
            q = self.queues[j]
            try:
                heavy = self._run_job(j, q)
                q.put(_DONE)
            except BaseException as exc:  # handed to the writer, which re-raises it
                q.put(exc)
                return
            if not heavy:
                self._give_place(j)  # only ids wait in its queue: they cost no buffer

    def _give_place(self, j: int) -> None:
        """Job ``j``'s place among the ``LOOKAHEAD``, given back once: by the thread that
        ran it if it holds no new bytes, else by the writer once it is written."""
        with self.lock:
            if self.placed[j]:
                self.placed[j] = False
                self.ahead.release()

    def _wait_for_room(self, room: threading.Semaphore) -> bool:
        while not self.stop.is_set():
            if room.acquire(timeout=0.1):
                return True
        return False

    def _run_job(self, j: int, q: _Queue) -> bool:
        """Chunk job ``j`` into ``q``; whether any block with new bytes went into it."""
        odb = self.odb
        any_heavy = False
        for seg in self.jobs[j]:
            for run in _segment_runs(self.fd, seg, self.chunker, self.reuse, self.pool):
                if self.stop.is_set():
                    return True
                fut = out = None
                new = run.new_chunks(odb) if odb is not None else []
                if odb is not None and new:
                    assert self.encoders is not None  # made whenever odb is given
                    out = self.out_pool.take() if self.out_pool is not None else None
                    fut = self.encoders.submit(j, codecs.encode_many, [(run.view(k), seg.dtype) for k in new],
                                               odb.codec_policy, out)
                lease = run.block.lease if run.block is not None else None
                if fut is None and lease is not None:
                    lease.release()  # nothing to write from this buffer
                    lease = None
                heavy = fut is not None
                any_heavy |= heavy
                if self.room.take(j, self.stop) if heavy else self._wait_for_room(self.light[j]):
                    q.put(((seg, run.ids, run.lengths, fut, new, lease, out), heavy))  # unbounded: the room semaphores bound what waits
        return any_heavy

    # -- the writer (calling thread) ----------------------------------------
    def run(self) -> list[tuple[ObjectId, int]]:
        threads = [threading.Thread(target=self._chunk_worker, name=f"objstore-chunk-{i}", daemon=True)
                   for i in range(min(self.workers, len(self.jobs)))]
        for t in threads:
            t.start()
        chunks = _FileOrder(self.segments)
        odb, progress = self.odb, self.progress
        try:
            for j, (q, light) in enumerate(zip(self.queues, self.light)):
                self.room.advance(j)
                while True:
                    got = q.get()
                    if got is _DONE:
                        break
                    if isinstance(got, BaseException):
                        raise got
                    (segment, ids, lengths, fut, new, lease, out), heavy = got
                    chunks.add(segment, ids, lengths)
                    if fut is not None and odb is not None:
                        odb.add_encoded_many([(ids[k], codec_id, lengths[k], payload)
                                              for k, (codec_id, payload) in zip(new, fut.result())])
                    if lease is not None:
                        lease.release()  # its chunks are in the pack file now (raw payloads were views of it)
                    if out is not None and self.out_pool is not None:
                        self.out_pool.give(out)  # so are the payloads laid out in it
                    if progress is not None:
                        progress(sum(lengths))
                    if heavy:
                        self.room.give()
                    else:
                        light.release()
                self._give_place(j)
        finally:
            self.stop.set()
            for t in threads:
                t.join()
            if self.encoders is not None:
                self.encoders.shutdown()
        return chunks.in_file_order()


def iter_file_chunks(path: Path, chunker: Chunker) -> Iterator[tuple[ObjectId, int]]:
    """The (id, length) of each chunk of ``path``, in order (sequential; for tools and tests)."""
    fd = _open(Path(path))
    try:
        size = os.fstat(fd).st_size
        with os.fdopen(os.dup(fd), "rb", buffering=0) as f:
            segments = segment_file(f, size, Path(path))
        yield from _sequential(fd, segments, chunker, None, None)
    finally:
        os.close(fd)
