"""The pack format: chunk records, then the pack's own index, then a checksum.

Plain functions over bytes and file objects; nothing here knows where packs live.

Layout (all integers little-endian)::

    header   "OSPK" u8 version=1 3×pad                         8 bytes
    records  id[32] codec u8 raw_len u32 stored_len u32 payload  (41-byte head each)
    index    id[32] offset u64 stored_len u32 raw_len u32 codec u8, sorted by id
    trailer  index_offset u64 count u32 "OSPKEND1"               20 bytes
    checksum BLAKE3 (keyed for packs) of every byte before it    32 bytes

A pack is written front to back in one stream; its name is the hex checksum, so
a pack is create-only and self-verifying. The records repeat what the index says,
so a lost or damaged index can always be rebuilt by scanning the records. The
``.idx`` file beside each pack is the index section with its own checksum, so a
reader can learn a pack's contents without fetching the pack.

An index is untrusted like every stored byte, and a checksum only proves that
whoever wrote it meant it: both parsers refuse an index whose entries no
objstore pack can hold (a chunk over :data:`~objstore.constants.MAX_CHUNK_BYTES`,
a payload outside the pack's records), so no reader ever allocates what a forged
entry claims.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import io
import mmap
import os
import struct
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO, cast

import numpy as np

from objstore.constants import MAX_CHUNK_BYTES, MAX_PACK_BYTES, MAX_STORED_CHUNK_BYTES
from objstore.errors import CorruptObject
from objstore.storage import codecs, native
from objstore.storage.ids import DIGEST_SIZE, ChunkKey, Kind, ObjectId, hash_bytes, key_of

PACK_MAGIC = b"OSPK\x01\x00\x00\x00"
PACK_END = b"OSPKEND1"
IDX_MAGIC = b"OSIX\x01\x00\x00\x00"
RECORD_HEAD = struct.Struct("<32sBII")
TRAILER = struct.Struct("<QI8s")

# One index entry, as numpy sees it: a packed little-endian record.
INDEX_DTYPE = np.dtype([("id", "S32"), ("offset", "<u8"), ("stored_len", "<u4"), ("raw_len", "<u4"), ("codec", "u1")])
assert INDEX_DTYPE.itemsize == 49


@dataclass(frozen=True, slots=True)
class PackEntry:
    """Where one chunk is: payload ``offset`` in its pack, sizes and codec."""

    chunk_id: ObjectId
    offset: int
    stored_len: int
    raw_len: int
    codec: int


_PACK_KEY = key_of(Kind.PACK)


class PackBuilder:
    """Writes one pack to a binary file, in one forward stream.

    >>> import io
    >>> out = io.BytesIO(); b = PackBuilder(out)
    >>> b.add(hash_bytes(Kind.CHUNK, b"hi"), 0, 2, b"hi")
    >>> name = b.finish(); len(name)
    64
    """

    def __init__(self, out: BinaryIO) -> None:
        self._out = out
        # An unbuffered file gets a batch of records in one writev (no copy into a
        # buffer, one system call per batch instead of two per record).
        self._fd = out.fileno() if isinstance(out, io.FileIO) else None
        # A direct pack file takes a batch of records in one call (a copy each into its
        # staging buffer, without a Python call per record).
        self._write_many = out.write_many if isinstance(out, DirectFile) else None
        # The checksum in the core: one GIL-free call per batch of records (C), not two
        # Python calls per record.
        self._hash = native.core.new_stream(_PACK_KEY)
        self._entries: list[tuple[bytes, int, int, int, int]] = []
        self._ids: set[bytes] = set()
        self.size = 0
        self.payload_bytes = 0  # of the records added (what a writer reports as new)
        self._write(PACK_MAGIC)

    def _write(self, data: bytes | memoryview) -> None:
        self._write_pieces([data])

    def __contains__(self, chunk_id: ObjectId) -> bool:
        return chunk_id.raw in self._ids

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, chunk_id: ObjectId, codec: int, raw_len: int, payload: bytes | memoryview) -> None:
        self.add_many([(chunk_id, codec, raw_len, payload)])

    def add_many(self, records: Sequence[tuple[ObjectId, int, int, bytes | memoryview]], start: int = 0,
                 limit: int | None = None) -> tuple[int, int]:
        """Append ``records[start:]`` (id, codec, raw length, payload) in order, each id
        once, in one write; with a ``limit``, stop after the record that brings the
        pack to ``limit`` bytes, so a pack ends where adding one at a time would end
        it. Returns the index of the first record not taken and how many were new."""
        taken, added, pieces = self.stage_many(records, start, limit)
        self.write_staged(pieces)
        return taken, added

    def stage_many(self, records: Sequence[tuple[ObjectId, int, int, bytes | memoryview]], start: int = 0,
                   limit: int | None = None) -> tuple[int, int, list[bytes | memoryview]]:
        """:meth:`add_many`'s bookkeeping without the write: the records are counted in
        (ids, index entries, size) and their bytes returned, for :meth:`write_staged`,
        which must get them before anything else is staged or written. So a caller
        can let others see which chunks this pack holds (cheap) while it hashes and
        writes (slow) outside its own lock."""
        pieces: list[bytes | memoryview] = []
        size, ids, entries, head = self.size, self._ids, self._entries, RECORD_HEAD.pack
        added = 0
        end = len(records)
        i = start
        while i < end and (limit is None or size < limit):
            chunk_id, codec, raw_len, payload = records[i]
            i += 1
            raw_id = chunk_id.raw
            if raw_id in ids:
                continue
            ids.add(raw_id)
            stored = len(payload)
            pieces.append(head(raw_id, codec, raw_len, stored))
            pieces.append(payload)
            size += RECORD_HEAD.size
            entries.append((raw_id, size, stored, raw_len, codec))
            size += stored
            added += 1
            self.payload_bytes += stored
        self.size = size
        return i, added, pieces

    def write_staged(self, pieces: list[bytes | memoryview]) -> None:
        """Hash and write the bytes :meth:`stage_many` returned (already counted in ``size``)."""
        self._hash.update_many(pieces)
        self._emit(pieces)

    def _write_pieces(self, pieces: list[bytes | memoryview]) -> None:
        self.write_staged(pieces)
        self.size += sum(len(piece) for piece in pieces)

    def _emit(self, pieces: list[bytes | memoryview]) -> None:
        if self._write_many is not None:
            self._write_many(pieces)
        elif self._fd is None:
            for piece in pieces:
                self._out.write(piece)
        else:
            _writev_all(self._fd, pieces)

    def index_array(self) -> np.ndarray:
        arr = np.array(self._entries, dtype=INDEX_DTYPE)
        return np.sort(arr, order="id", kind="stable") if len(arr) else arr

    def finish(self) -> str:
        """Write index, trailer and checksum; return the pack's name (hex checksum)."""
        index = self.index_array()
        index_offset = self.size
        self._write(index.tobytes())
        self._write(TRAILER.pack(index_offset, len(index), PACK_END))
        digest = self._hash.digest()
        self._emit([digest])
        self.size += len(digest)
        self._index = index
        return digest.hex()

    @property
    def index(self) -> np.ndarray:
        return self._index


_IOV_MAX = 1024  # pieces per writev (Linux's IOV_MAX)


def _writev_all(fd: int, pieces: list[bytes | memoryview]) -> None:
    """Write every piece, in order: writev may write less than asked (a signal, a
    full disk reports its error on the next call)."""
    views = [memoryview(p).cast("B") for p in pieces if len(p)]
    i = 0
    while i < len(views):
        n = os.writev(fd, views[i : i + _IOV_MAX])
        while i < len(views) and n >= len(views[i]):
            n -= len(views[i])
            i += 1
        if n:
            views[i] = views[i][n:]


# Pack files written with O_DIRECT (OBJSTORE_DIRECT_PACKS=0: through the page cache).
DIRECT_PACKS = os.environ.get("OBJSTORE_DIRECT_PACKS", "1") != "0"
DIRECT_ALIGN = 4096  # offsets, lengths and buffer addresses of O_DIRECT writes
DIRECT_STAGE = 4 * 1024 * 1024  # bytes staged per write (a multiple of DIRECT_ALIGN)
# Full buffers queued for the pack-writing thread before the caller waits for the
# oldest: one in flight made the writer of a cold 1 GiB ingest wait 0.3-0.4 s for
# the disk (4 MiB O_DIRECT writes of 3-10 ms each on these VMs, at uneven times).
WRITES_IN_FLIGHT = 3


class DirectFile:
    """A new file written with ``O_DIRECT`` from page-aligned staging buffers: the
    bytes go from a buffer to the disk instead of into page-cache pages. On this
    class of VM, 32 MiB files written and fsynced that way cost a tenth of the CPU
    (0.05 against 0.55-1.0 CPU-s per 0.66 GB) and reach the disk 3-10× faster; the
    page-cache copy was a fifth of cold ingest's CPU. Bytes are staged in order and
    written ``DIRECT_STAGE`` at a time, **behind** the caller: a full buffer goes to
    the pack-writing thread while the caller fills another one, so the writer of a
    log (the calling thread, which also takes the chunking threads' results) never
    waits for the disk unless it runs ``WRITES_IN_FLIGHT`` buffers ahead; a write's
    error is raised by a later :meth:`write` or by :meth:`flush`. :meth:`flush` turns ``O_DIRECT`` off
    and writes what is staged through the page cache (the tail need not be aligned),
    so ``flush`` + ``fsync`` make the whole file durable. A file system that refuses
    direct writes part-way gets the rest buffered. :meth:`close` drops what is staged
    (a discarded pack). Only for files written front to back and not read until
    closed (packs)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_DIRECT, 0o666)
        self._stage = _take_stage()
        self._view = memoryview(self._stage)
        self._spares: list[mmap.mmap] = []  # buffers written out, free again
        self._pending: deque[tuple[Future[None], mmap.mmap]] = deque()  # writes queued, oldest first
        self._staged = 0
        self._direct = True
        self.closed = False

    def fileno(self) -> int:
        return self._fd

    def write(self, data: bytes | memoryview) -> int:
        src = memoryview(data).cast("B")
        n, pos = len(src), 0
        while pos < n:
            take = min(n - pos, DIRECT_STAGE - self._staged)
            self._view[self._staged : self._staged + take] = src[pos : pos + take]
            self._staged += take
            pos += take
            if self._staged == DIRECT_STAGE:
                self._write_behind()
        return n

    def write_many(self, pieces: Sequence[bytes | memoryview]) -> None:
        """:meth:`write` of each piece in order, with a slice copy per piece that
        fits the staging buffer without filling it (most records) and no other Python."""
        view, staged = self._view, self._staged
        for piece in pieces:
            n = len(piece)
            if staged + n < DIRECT_STAGE and (type(piece) is bytes or (type(piece) is memoryview and piece.format == "B"
                                                                       and piece.ndim == 1)):
                view[staged : staged + n] = piece
                staged += n
            else:
                self._staged = staged
                self.write(piece)
                view, staged = self._view, self._staged
        self._staged = staged

    def flush(self) -> None:
        self._wait()
        self._buffered()
        self._write_out(self._stage, self._staged)
        self._staged = 0

    def _write_behind(self) -> None:
        """Hand the full buffer to the pack-writing thread and go on in another one."""
        if len(self._pending) >= WRITES_IN_FLIGHT:
            self._wait_oldest()
        full, staged = self._stage, self._staged
        # One thread writes every queued buffer in order, so the file's bytes stay in order.
        self._pending.append((_pack_writer().submit(self._write_out, full, staged), full))
        self._view.release()
        self._stage = self._spares.pop() if self._spares else _take_stage()
        self._view = memoryview(self._stage)
        self._staged = 0

    def _wait_oldest(self) -> None:
        pending, stage = self._pending.popleft()
        try:
            pending.result()  # a failed write raises here, in the caller's thread
        finally:
            self._spares.append(stage)  # done either way

    def _wait(self) -> None:
        while self._pending:
            self._wait_oldest()

    def _buffered(self) -> None:
        if self._direct:
            fcntl.fcntl(self._fd, fcntl.F_SETFL, fcntl.fcntl(self._fd, fcntl.F_GETFL) & ~os.O_DIRECT)
            self._direct = False

    def _write_out(self, stage: mmap.mmap, staged: int) -> None:
        done = 0
        with memoryview(stage) as view:
            while done < staged:
                try:
                    done += os.write(self._fd, view[done:staged])
                except OSError as exc:
                    if exc.errno != errno.EINVAL or not self._direct:
                        raise
                    self._buffered()  # accepted at open, refused at write: go on through the page cache

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            while self._pending:
                with contextlib.suppress(OSError):  # a discarded file: its writes' errors no longer matter
                    self._wait_oldest()
            self._view.release()
            for stage in (self._stage, *self._spares):
                _give_stage(stage)
            os.close(self._fd)


# Staging buffers of closed DirectFiles, kept for the next pack: a fresh one costs
# a page fault per 4 KiB. At most _STAGES_KEPT (for two files: one being written, one sealing).
_stages: list[mmap.mmap] = []
_stages_lock = threading.Lock()
_STAGES_KEPT = 2 * (WRITES_IN_FLIGHT + 1)
# The thread that writes DirectFiles' full buffers (one for all: the disk is one).
_writer_pool: ThreadPoolExecutor | None = None


def _pack_writer() -> ThreadPoolExecutor:
    global _writer_pool
    with _stages_lock:
        if _writer_pool is None:
            _writer_pool = ThreadPoolExecutor(1, thread_name_prefix="objstore-packwrite")
        return _writer_pool


def _new_stages_lock_in_child() -> None:
    global _stages_lock, _writer_pool
    _stages_lock = threading.Lock()  # a thread of the parent may have held it at the fork
    _writer_pool = None  # and its writing thread does not exist here


os.register_at_fork(after_in_child=_new_stages_lock_in_child)


def _take_stage() -> mmap.mmap:
    with _stages_lock:
        while _stages:
            stage = _stages.pop()
            if len(stage) == DIRECT_STAGE:
                return stage
            stage.close()  # made for another stage size (a test's)
    return mmap.mmap(-1, DIRECT_STAGE)  # page-aligned, as O_DIRECT needs


def _give_stage(stage: mmap.mmap) -> None:
    with _stages_lock:
        if len(_stages) < _STAGES_KEPT:
            _stages.append(stage)
            return
    stage.close()


def open_pack_file(path: str | os.PathLike[str]) -> DirectFile | io.FileIO:
    """A new pack file for :class:`PackBuilder`: a :class:`DirectFile` where the file
    system takes ``O_DIRECT``, else an unbuffered plain file."""
    if DIRECT_PACKS and hasattr(os, "O_DIRECT"):
        try:
            return DirectFile(path)
        except OSError as exc:
            if exc.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                raise
    return io.FileIO(path, "wb")


def encode_idx(pack_name: str, index: np.ndarray) -> bytes:
    """The ``.idx`` file for a pack: magic, count, entries, pack name, checksum."""
    body = IDX_MAGIC + struct.pack("<I", len(index)) + index.tobytes() + bytes.fromhex(pack_name)
    return body + hash_bytes(Kind.PACK, body).raw


IDX_OVERHEAD = len(IDX_MAGIC) + 4 + 32 + 32
PACK_OVERHEAD = len(PACK_MAGIC) + TRAILER.size + 32


def max_idx_bytes(pack_size: int | None = None) -> int:
    """The largest ``.idx`` a pack of ``pack_size`` bytes (else the largest pack) can
    have: every entry costs the pack a record head and an index entry."""
    size = MAX_PACK_BYTES if pack_size is None else min(pack_size, MAX_PACK_BYTES)
    return IDX_OVERHEAD + INDEX_DTYPE.itemsize * max(size - PACK_OVERHEAD, 0) // (RECORD_HEAD.size + INDEX_DTYPE.itemsize)


def check_index(index: np.ndarray, pack_name: str | None, records_end: int | None) -> np.ndarray:
    """``index``, unless an entry claims what no pack holds: a chunk over
    MAX_CHUNK_BYTES, a payload over MAX_STORED_CHUNK_BYTES, or bytes outside the
    records (which end at ``records_end``, when known)."""
    if not len(index):
        return index
    raw, stored, offset = index["raw_len"], index["stored_len"], index["offset"]
    bad = (raw > MAX_CHUNK_BYTES) | (stored > MAX_STORED_CHUNK_BYTES) | (offset < len(PACK_MAGIC) + RECORD_HEAD.size)
    if records_end is not None:
        end = np.uint64(max(records_end, 0))
        bad |= (offset > end) | (stored.astype(np.uint64) > end - np.minimum(offset, end))
    if bad.any():
        i = int(np.argmax(bad))
        raise CorruptObject(
            f"the index of pack {(pack_name or '?')[:16]} claims a chunk of {int(raw[i])} bytes ({int(stored[i])} stored "
            f"at offset {int(offset[i])}), which no pack holds; the pack is damaged or forged", object_id=pack_name)
    return index


def decode_idx(data: bytes, pack_name: str, pack_size: int | None = None) -> np.ndarray:
    """Parse and verify an ``.idx`` file; raise CorruptObject if it is damaged or
    claims what its pack (of ``pack_size`` bytes, when known) cannot hold."""
    if len(data) < 8 + 4 + 32 + 32 or data[:8] != IDX_MAGIC:
        raise CorruptObject(f"the index of pack {pack_name[:16]} is damaged (bad header); rebuild it with fsck", object_id=pack_name)
    body, digest = data[:-32], data[-32:]
    if hash_bytes(Kind.PACK, body).raw != digest:
        raise CorruptObject(f"the index of pack {pack_name[:16]} is damaged (checksum mismatch); rebuild it with fsck", object_id=pack_name)
    (count,) = struct.unpack_from("<I", body, 8)
    entries = body[12:-32]
    if len(entries) != count * INDEX_DTYPE.itemsize or body[-32:].hex() != pack_name:
        raise CorruptObject(f"the index of pack {pack_name[:16]} does not match its pack", object_id=pack_name)
    records_end = None if pack_size is None else pack_size - TRAILER.size - 32 - len(entries)
    return check_index(np.frombuffer(entries, dtype=INDEX_DTYPE), pack_name, records_end)


def read_pack_index(data: bytes | memoryview, pack_name: str | None = None) -> np.ndarray:
    """The index section of a whole pack held in memory, after checking its checksum."""
    verify_pack(data, pack_name)
    index_offset, count, end = TRAILER.unpack_from(data, len(data) - 32 - TRAILER.size)
    if end != PACK_END:
        raise CorruptObject("a pack has no valid trailer", object_id=pack_name)
    start, stop = index_offset, index_offset + count * INDEX_DTYPE.itemsize
    if stop != len(data) - 32 - TRAILER.size:
        raise CorruptObject("a pack's trailer disagrees with its size", object_id=pack_name)
    return check_index(np.frombuffer(bytes(data[start:stop]), dtype=INDEX_DTYPE), pack_name, start)


def verify_pack(data: bytes | memoryview, pack_name: str | None = None) -> str:
    """Check a whole pack's checksum (and name, if given); return the name."""
    if len(data) < len(PACK_MAGIC) + TRAILER.size + 32 or bytes(data[:8]) != PACK_MAGIC:
        raise CorruptObject(f"pack {(pack_name or '?')[:16]} is truncated or not a pack", object_id=pack_name)
    # a view: slicing bytes would copy the whole pack first (measured: 0.48 CPU-s to
    # checksum 0.7 GB of packs held as bytes, 0.11 through a view)
    digest = hash_bytes(Kind.PACK, memoryview(data)[:-32]).raw
    if digest != bytes(data[-32:]) or (pack_name is not None and digest.hex() != pack_name):
        raise CorruptObject(
            f"pack {(pack_name or digest.hex())[:16]} fails its checksum",
            object_id=pack_name, expected=pack_name, actual=digest.hex(),
        )
    return digest.hex()


def scan_records(data: bytes | memoryview) -> Iterator[tuple[PackEntry, memoryview]]:
    """Every record of a pack in write order, from the records alone (index rebuild, fsck)."""
    view = memoryview(data)
    pos = len(PACK_MAGIC)
    limit = len(view) - 32 - TRAILER.size
    try:
        index_offset, _, end = TRAILER.unpack_from(view, limit)
        if end == PACK_END and len(PACK_MAGIC) <= index_offset <= limit:
            limit = index_offset
    except struct.error:
        pass
    while pos + RECORD_HEAD.size <= limit:
        raw_id, codec, raw_len, stored_len = RECORD_HEAD.unpack_from(view, pos)
        start = pos + RECORD_HEAD.size
        if start + stored_len > limit:
            break
        yield PackEntry(ObjectId(raw_id), start, stored_len, raw_len, codec), view[start : start + stored_len]
        pos = start + stored_len



def entry_id(raw: bytes | np.bytes_) -> ChunkKey:
    """The 32-byte chunk id of an index entry's ``id`` field. numpy's ``S32`` drops
    trailing NUL bytes when an item is read, so an id ending in a zero byte comes
    back short; every reader of an index pads through here, never by hand."""
    return cast(ChunkKey, bytes(raw).ljust(DIGEST_SIZE, b"\0"))


def index_ids(index: np.ndarray) -> list[ChunkKey]:
    """The chunk ids an index lists, in its order, each 32 bytes (see :func:`entry_id`)."""
    return cast("list[ChunkKey]", [bytes(x).ljust(DIGEST_SIZE, b"\0") for x in index["id"]])  # entry_id, inlined


def trailer_ids(data: bytes | memoryview) -> list[ChunkKey]:
    """Chunk ids a pack's own index section lists, without checking the pack's
    checksum (best effort, to name what a damaged pack loses); [] if unreadable."""
    try:
        index_offset, count, _ = TRAILER.unpack_from(data, len(data) - 32 - TRAILER.size)
        stop = index_offset + count * INDEX_DTYPE.itemsize
        if stop > len(data):
            return []
        return index_ids(np.frombuffer(bytes(data[index_offset:stop]), dtype=INDEX_DTYPE))
    except (struct.error, ValueError):  # a damaged trailer: nothing to name
        return []


def scan_all_records(data: bytes | memoryview) -> Iterator[tuple[PackEntry, memoryview]]:
    """Every whole record from the front of a possibly truncated pack, running to
    the end of ``data`` (a truncated pack has no trailer to stop at): salvage."""
    view = memoryview(data)
    pos = len(PACK_MAGIC)
    while pos + RECORD_HEAD.size <= len(view):
        raw_id, codec, raw_len, stored_len = RECORD_HEAD.unpack_from(view, pos)
        start = pos + RECORD_HEAD.size
        if start + stored_len > len(view):
            break
        yield PackEntry(ObjectId(raw_id), start, stored_len, raw_len, codec), view[start:start + stored_len]
        pos = start + stored_len


def decode_verified(chunk_id: ObjectId, codec: int, raw_len: int, stored_len: int,
                    payload: bytes | memoryview, where: str) -> bytes:
    """The raw bytes of one stored chunk record, decoded and checked against its id.

    The one chunk check: every reader, fsck, gc, repair and transfer call it.
    ``where`` names the record in messages ("pack 1a2b…"). Raises CorruptObject
    (with expected and actual ids on a hash mismatch) if the payload is short,
    does not decode, or does not hash to ``chunk_id``."""
    if len(payload) != stored_len:
        raise CorruptObject(f"chunk {chunk_id.hex[:16]} is truncated in {where}", object_id=chunk_id.hex)
    try:
        raw = codecs.decode_chunk(codec, payload, raw_len)
    except (CorruptObject, ValueError) as exc:
        raise CorruptObject(f"chunk {chunk_id.hex[:16]} in {where}: {exc.args[0] if exc.args else exc}",
                            object_id=chunk_id.hex) from None
    actual = hash_bytes(Kind.CHUNK, raw)
    if actual != chunk_id:
        raise CorruptObject(f"chunk {chunk_id.hex[:16]} in {where} does not hash to its id",
                            object_id=chunk_id.hex, expected=chunk_id.hex, actual=actual.hex)
    return raw


assert DIGEST_SIZE == 32
