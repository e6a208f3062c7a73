"""Turning local files into stored chunks and file objects.

A file is segmented (:mod:`objstore.segmenting`), each segment chunked
(:mod:`objstore.chunking`), each chunk hashed and, if the store lacks it,
encoded and appended to the open pack.

The pipeline (what makes this run near the hashing limit on every core):

- **jobs**: runs of whole segments (tensors) of about ``JOB_BYTES``. Segments
  are chunked independently, so different jobs are cut at the same time by
  ``workers`` chunking threads; each reads its bytes with ``pread`` on one shared
  descriptor, runs FastCDC, hashes every chunk (BLAKE3, GIL released) and asks
  the index which chunks are new, in batches;
- **encode**: new chunks, copied once out of the read buffer, are encoded by a
  pool of ``workers`` threads (zstd and numpy release the GIL);
- **write**: the calling thread takes the results job by job, in file order, and
  appends new chunks to the pack, so packs and file objects are the same
  whatever the timing.

Memory is bounded: at most ``LOOKAHEAD`` jobs are started ahead of the one being
written, each with at most ``QUEUE_BATCHES`` batches of ``BATCH_BYTES`` waiting,
plus one read buffer per chunking thread — tens of MiB whatever the file size.

Re-logging an unchanged file skips all of that: :mod:`objstore.statcache`
remembers each file's chunk list by its stat.

Callers must :meth:`~objstore.odb.ObjectDatabase.flush` before storing the file
objects returned here (the write order in :mod:`objstore.odb`).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from . import codecs
from .chunking import Chunker
from .errors import InvalidInput, NotFound
from .ids import Kind, ObjectId, hash_bytes
from .objects import FileObject
from .odb import ObjectDatabase
from .segmenting import Segment, segment_file
from .statcache import StatCache

Progress = Callable[[int], None]

JOB_BYTES = 8 * 1024 * 1024  # segments are grouped into jobs of at least this many bytes
BATCH_BYTES = 2 * 1024 * 1024  # chunks handed from a chunking thread to the writer at once
BATCH_CHUNKS = 64
QUEUE_BATCHES = 4  # batches a job may have waiting for the writer
LOOKAHEAD = 3  # jobs started ahead of the one being written
# Below this a file is chunked on the calling thread: threads cost more than they save.
PIPELINE_MIN_BYTES = 4 * 1024 * 1024

_DEFAULT = object()


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


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise NotFound(f"{path} does not exist; check the path", key=str(path)) from None
    except IsADirectoryError:
        raise InvalidInput(f"{path} is a directory; use add_dir or pass the directory as path") from None
    except PermissionError:
        raise InvalidInput(f"{path} is not readable (permission denied)") from None


def stat_cache_for(odb: ObjectDatabase, chunker: Chunker) -> StatCache:
    """The stat cache of ``odb``'s store, keyed also by the chunking parameters."""
    p = chunker.params
    return StatCache.for_backend(odb.backend, (p.avg_size, p.min_size, p.max_size, p.normalization))


def chunk_file(path: Path, chunker: Chunker, odb: ObjectDatabase | None, progress: Progress | None = None, *,
               stat_cache: StatCache | None | object = _DEFAULT, workers: int | None = None) -> FileObject:
    """Chunk and hash ``path``; store its new chunks in ``odb`` (if given).

    With ``odb=None`` nothing is stored: the result is just the file's identity,
    used to tell whether a materialized copy is intact.

    ``stat_cache``: by default the store's (only when ``odb`` is given); None
    disables it. ``workers``: threads for chunking and for encoding (default:
    one each per CPU); 0 runs everything on the calling thread, the simple
    sequential path the pipeline must agree with.
    """
    path = Path(path)
    cache: StatCache | None
    if stat_cache is _DEFAULT:
        cache = stat_cache_for(odb, chunker) if odb is not None else None
    else:
        cache = stat_cache  # type: ignore[assignment]
    read_start = time.time_ns()
    if cache is not None and odb is not None:
        try:
            st = os.stat(path)
        except OSError:
            st = None
        if st is not None and os.path.isfile(path):
            hit = cache.lookup(path, st)
            if hit is not None and all(odb.has_chunks([c for c, _ in hit.chunks])):
                if progress is not None:
                    progress(hit.size)
                return hit
    fd = _open(path)
    try:
        st = os.fstat(fd)
        size = st.st_size
        with os.fdopen(os.dup(fd), "rb", buffering=0) as f:
            segments = segment_file(f, size)
        n_workers = default_workers() if workers is None else workers
        if n_workers <= 0 or size < PIPELINE_MIN_BYTES:
            chunks = _sequential(fd, segments, chunker, odb, progress)
        else:
            chunks = _Pipeline(fd, segments, chunker, odb, progress, n_workers).run()
        after = os.fstat(fd)
    finally:
        os.close(fd)
    fobj = FileObject(size, tuple(chunks))
    if cache is not None and odb is not None and (after.st_size, after.st_mtime_ns, after.st_ctime_ns) == (st.st_size, st.st_mtime_ns, st.st_ctime_ns):
        cache.store(path, st, read_start, fobj)
    return fobj


def file_id_of(path: Path, chunker: Chunker) -> ObjectId:
    """The id ``path`` would have if logged, without storing anything."""
    return chunk_file(path, chunker, None).compute_id()


def _sequential(fd: int, segments: list[Segment], chunker: Chunker, odb: ObjectDatabase | None,
                progress: Progress | None) -> list[tuple[ObjectId, int]]:
    chunks: list[tuple[ObjectId, int]] = []
    for segment in segments:
        for view in chunker.iter_chunks(_PReader(fd, segment.offset), segment.length, segment.align):
            chunk_id = hash_bytes(Kind.CHUNK, view)
            chunks.append((chunk_id, len(view)))
            if odb is not None:
                odb.add_chunk(chunk_id, view, segment.dtype)
            if progress is not None:
                progress(len(view))
    return chunks


def _jobs(segments: list[Segment]) -> list[list[Segment]]:
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


# One chunk in flight: id, raw length, and (new chunks only) the raw copy then the encoding.
_Item = tuple[ObjectId, int, "Future[list[tuple[int, bytes | memoryview]]] | None", int]
_DONE = None


class _Pipeline:
    def __init__(self, fd: int, segments: list[Segment], chunker: Chunker, odb: ObjectDatabase | None,
                 progress: Progress | None, workers: int) -> None:
        self.fd = fd
        self.jobs = _jobs(segments)
        self.chunker = chunker
        self.odb = odb
        self.progress = progress
        self.workers = workers
        self.queues: list[queue.Queue[list[_Item] | None | BaseException]] = [queue.Queue(QUEUE_BATCHES) for _ in self.jobs]
        self.ahead = threading.Semaphore(LOOKAHEAD)
        self.next_job = 0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.encoders = ThreadPoolExecutor(workers, thread_name_prefix="objstore-encode") if odb is not None else None

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
                return j
        return None

    def _chunk_worker(self) -> None:
        while (j := self._take_job()) is not None:
            q = self.queues[j]
            try:
                self._run_job(j, q)
                self._put(q, _DONE)
            except BaseException as exc:  # handed to the writer, which re-raises it
                self._put(q, exc)
                return

    def _put(self, q: "queue.Queue[list[_Item] | None | BaseException]", item: "list[_Item] | None | BaseException") -> None:
        while not self.stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def _run_job(self, j: int, q: "queue.Queue[list[_Item] | None | BaseException]") -> None:
        odb = self.odb
        pending: list[tuple[ObjectId, int, bytes | None, str | None]] = []
        pending_bytes = 0

        def flush() -> None:
            nonlocal pending, pending_bytes
            items: list[_Item] = []
            if odb is None:
                items = [(cid, n, None, 0) for cid, n, _, _ in pending]
            else:
                known = odb.has_chunks([cid for cid, _, _, _ in pending])
                new = [(k, raw, dtype) for k, ((_, _, raw, dtype), seen) in enumerate(zip(pending, known)) if not seen]
                fut = self.encoders.submit(_encode_many, [(raw, dtype) for _, raw, dtype in new], odb.codec_policy) if new else None  # type: ignore[union-attr]
                slot = {k: i for i, (k, _, _) in enumerate(new)}
                items = [(cid, n, fut if k in slot else None, slot.get(k, -1)) for k, (cid, n, _, _) in enumerate(pending)]
            pending, pending_bytes = [], 0
            self._put(q, items)

        for seg in self.jobs[j]:
            for view in self.chunker.iter_chunks(_PReader(self.fd, seg.offset), seg.length, seg.align):
                if self.stop.is_set():
                    return
                n = len(view)
                # the one copy of a chunk's bytes: the read buffer is reused for the next block
                raw = bytes(view) if odb is not None else None
                pending.append((hash_bytes(Kind.CHUNK, raw if raw is not None else view), n, raw, seg.dtype))
                pending_bytes += n
                if pending_bytes >= BATCH_BYTES or len(pending) >= BATCH_CHUNKS:
                    flush()
        if pending:
            flush()

    # -- the writer (calling thread) ----------------------------------------
    def run(self) -> list[tuple[ObjectId, int]]:
        threads = [threading.Thread(target=self._chunk_worker, name=f"objstore-chunk-{i}", daemon=True)
                   for i in range(min(self.workers, len(self.jobs)))]
        for t in threads:
            t.start()
        chunks: list[tuple[ObjectId, int]] = []
        odb, progress = self.odb, self.progress
        try:
            for q in self.queues:
                while True:
                    got = q.get()
                    if got is _DONE:
                        break
                    if isinstance(got, BaseException):
                        raise got
                    for chunk_id, n, fut, slot in got:
                        chunks.append((chunk_id, n))
                        if fut is not None and odb is not None:
                            codec_id, payload = fut.result()[slot]
                            odb.add_encoded(chunk_id, codec_id, n, payload)
                        if progress is not None:
                            progress(n)
                self.ahead.release()
        finally:
            self.stop.set()
            for t in threads:
                t.join()
            if self.encoders is not None:
                self.encoders.shutdown(wait=True, cancel_futures=True)
        return chunks


def _encode_many(items: list[tuple[bytes, str | None]], policy: codecs.CodecPolicy) -> list[tuple[int, bytes | memoryview]]:
    return [codecs.encode_chunk(raw, dtype, policy) for raw, dtype in items]


def iter_file_chunks(path: Path, chunker: Chunker) -> Iterator[tuple[ObjectId, int]]:
    """The (id, length) of each chunk of ``path``, in order (sequential; for tools and tests)."""
    fd = _open(Path(path))
    try:
        size = os.fstat(fd).st_size
        with os.fdopen(os.dup(fd), "rb", buffering=0) as f:
            segments = segment_file(f, size)
        yield from _sequential(fd, segments, chunker, None, None)
    finally:
        os.close(fd)
