"""Content-defined chunking: FastCDC over a stream, in bounded memory.

A segment (a whole file, or one tensor of a safetensors file; see
:mod:`objstore.storage.segmenting`) is read in blocks of ``READ_BLOCK`` bytes and cut with
FastCDC. Cut points depend only on content, so inserting bytes near the start of
a file moves only the chunks around the insertion.

Element alignment: inside a tensor of ``align``-byte elements every cut is
rounded up to the next multiple of ``align`` (relative to the segment start), so
a chunk never splits a bf16 or fp32 word and byte-plane codecs see whole words.
The rounding is applied to the cuts FastCDC reports; FastCDC itself always
restarts at its own, unrounded cut, so the boundaries are the same however the
stream is split into reads.

Inside a tensor, a store made since stop 28 (``tensor_scan`` :data:`WORDS`) does
not run the gear over every byte: the candidates are the tensor's row grid (every
``stride`` bytes from the segment start, ``stride`` = gcd(row bytes, 64), see
:mod:`objstore.storage.segmenting`), and a candidate cuts when the 8 bytes before
it, mixed by one multiply, miss a mask (:func:`objstore.storage.native.word_cut`).
Content-defined still: a cut depends on the bytes before it and on its grid, so
values changed in place move only the cuts among them, and rows added or removed
(whole rows: a multiple of the stride) keep the other cuts. What it gives up is
resynchronising after a shift off the grid, which a tensor's bytes never make
(a shift by a part of a row is a new tensor layout). Cuts are multiples of the
stride, itself a multiple of the element size, so no rounding is needed. The scan
falls from a third of a cold log's chunking time to almost nothing. Older stores
(:data:`GEAR`) keep their cuts.

Each filled read buffer is cut (and its chunks hashed) in one call of the core,
:mod:`objstore.storage.native`: C when built, else the pure-Python reference
(pyfastcdc), with identical cuts.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from objstore import constants
from objstore.errors import FileChanged
from objstore.storage import native

# How the inside of a tensor is cut (ChunkParams.tensor_scan).
GEAR = "gear"  # FastCDC's gear over every byte, cuts rounded up to elements (stores before stop 28)
WORDS = "words"  # word-sampled cuts on the tensor's row grid (new stores)
TENSOR_SCANS = (GEAR, WORDS)


@dataclass(frozen=True, slots=True)
class ChunkParams:
    """FastCDC parameters, recorded in a store's config and fixed for its lifetime.

    ``tensor_scan``: how tensors are cut inside (:data:`GEAR` or :data:`WORDS`).
    A store's config that does not name it was made with :data:`GEAR`, and is
    cut that way for ever (``to_dict`` leaves it out then, so such a config is
    byte for byte as before)."""

    avg_size: int = constants.CHUNK_AVG
    min_size: int = constants.CHUNK_MIN
    max_size: int = constants.CHUNK_MAX
    normalization: int = constants.CHUNK_NORMALIZATION
    tensor_scan: str = WORDS

    def to_dict(self) -> dict[str, int | str]:
        d: dict[str, int | str] = {"avg": self.avg_size, "min": self.min_size, "max": self.max_size, "nc": self.normalization}
        if self.tensor_scan != GEAR:
            d["tensor"] = self.tensor_scan
        return d

    @classmethod
    def from_dict(cls, d: dict[str, int | str]) -> ChunkParams:
        return cls(int(d["avg"]), int(d["min"]), int(d["max"]), int(d["nc"]), str(d.get("tensor", GEAR)))


class Readable(Protocol):
    def readinto(self, buffer: memoryview) -> int | None: ...


class BufferPool:
    """Read buffers of one size, handed back when their bytes are no longer needed,
    so a long read reuses pages already mapped: a fresh buffer per block costs a
    zeroing memset and a page fault per 4 KiB, a tenth of ingest's CPU. Keeps at
    most ``keep`` buffers; beyond that a buffer handed back is left to the
    allocator, so a pool never holds more than ``keep × size`` bytes."""

    def __init__(self, size: int, keep: int) -> None:
        self.size = size
        self.keep = keep
        self._free: list[bytearray] = []
        self._lock = threading.Lock()

    def take(self) -> bytearray:
        with self._lock:
            if self._free:
                return self._free.pop()
        return bytearray(self.size)

    def give(self, buf: bytearray) -> None:
        with self._lock:
            if len(self._free) < self.keep:
                self._free.append(buf)


def _renew(lease: Lease | None, pool: BufferPool | None, buf: bytearray) -> Lease | None:
    """The lease of the reader's next pooled buffer ``buf``; the reader lets go of the last."""
    if lease is None or pool is None:
        return None
    lease.release()
    return Lease(pool, buf)


class Lease:
    """A pooled buffer's hold count: the reader holds it until it has copied out the
    bytes it carries over, the consumer until it has used the block's chunks; the
    buffer goes back to the pool when both let go (:meth:`release`, once each).
    A consumer that never releases only costs the pool a buffer."""

    __slots__ = ("_pool", "_buf", "_holders", "_lock")

    def __init__(self, pool: BufferPool, buf: bytearray) -> None:
        self._pool = pool
        self._buf: bytearray | None = buf
        self._holders = 2
        self._lock = threading.Lock()

    def release(self) -> None:
        with self._lock:
            self._holders -= 1
            buf = self._buf if self._holders == 0 else None
            if buf is not None:
                self._buf = None
        if buf is not None:
            self._pool.give(buf)


@dataclass(frozen=True, slots=True)
class Block:
    """The chunks cut from one filled read buffer: chunk ``i`` is
    ``data[ends[i-1]:ends[i]]`` (the first starts at ``start``); ``ids`` holds their
    keyed BLAKE3 digests, 32 bytes each, when a key was asked for. ``data`` is valid
    until the next block is requested, unless the blocks were asked for in fresh
    buffers; a fresh buffer from a pool (``lease``) only until the consumer calls
    ``lease.release()``, after which the reader may fill it again."""

    data: memoryview
    start: int
    ends: list[int]
    ids: bytes | None
    lease: Lease | None = None


def _fill(stream: Readable, whole: memoryview, filled: int, limit: int, remaining: int) -> tuple[int, int]:
    """Read into ``whole[filled:limit]`` (at most ``remaining`` bytes); the new filled and remaining."""
    while filled < limit and remaining > 0:
        n = stream.readinto(whole[filled : filled + min(limit - filled, remaining)])
        if not n:
            raise FileChanged(detail=f" (it ended {remaining} bytes early)")
        filled += n
        remaining -= n
    return filled, remaining


class Chunker:
    """Cuts byte streams into content-defined chunks.

    >>> import io
    >>> chunker = Chunker(ChunkParams())
    >>> sum(len(c) for c in chunker.iter_chunks(io.BytesIO(b"x" * 100_000), 100_000))
    100000
    """

    def __init__(self, params: ChunkParams, read_block: int = constants.READ_BLOCK) -> None:
        self.params = params
        # FastCDC's avg_size counts bytes after the min_size skip (its paper's
        # "cut-point skipping"), so ask for avg - min to get chunks of avg on average.
        if params.tensor_scan not in TENSOR_SCANS:
            raise ValueError(f"tensor_scan must be one of {', '.join(TENSOR_SCANS)}, not {params.tensor_scan!r}")
        self._cdc_args = (max(params.avg_size - params.min_size, 256), params.min_size, params.max_size, params.normalization)
        self._cdc = native.Cdc(*self._cdc_args)
        self._by_stride: dict[int, native.Cdc] = {}
        self._capacity = read_block + params.max_size

    def grain(self, align: int, stride: int) -> int | str:
        """What a segment's cuts depend on besides its bytes (the segment cache's key):
        its element size, or with word-sampled cuts their stride."""
        return f"w{stride}" if self._words(stride) else align

    def _words(self, stride: int) -> bool:
        return stride > 0 and self.params.tensor_scan == WORDS

    def _cutter(self, stride: int) -> native.Cdc:
        if not self._words(stride):
            return self._cdc
        cdc = self._by_stride.get(stride)
        if cdc is None:
            cdc = self._by_stride[stride] = native.Cdc(*self._cdc_args, stride=stride)
        return cdc

    def iter_chunks(self, stream: Readable, length: int, align: int = 1, stride: int = 0) -> Iterator[memoryview]:
        """Yield the chunks of the next ``length`` bytes of ``stream``.

        Each yielded view is valid only until the next one is requested; copy it
        (``bytes(view)``) to keep it. Raises if the stream ends early.
        """
        for block in self.iter_blocks(stream, length, align, stride=stride):
            start = block.start
            for end in block.ends:
                yield block.data[start:end]
                start = end

    def iter_blocks(self, stream: Readable, length: int, align: int = 1, key: bytes | None = None,
                    fresh: bool = False, read_block: int | None = None, pool: BufferPool | None = None,
                    stride: int = 0) -> Iterator[Block]:
        """The chunks of the next ``length`` bytes of ``stream``, a read buffer at a
        time, cut (and, given a BLAKE3 ``key``, hashed) in one call of the core
        (:mod:`objstore.storage.native`) per buffer.

        ``fresh``: every block gets a buffer of its own (the bytes carried over to the
        next read are copied, not the chunks), valid as long as its views are
        referenced, or with a ``pool`` (of buffers of read block + max chunk size)
        until the block's lease is released. ``read_block``: bytes read per block,
        instead of the chunker's own. ``stride``: a tensor's cut grid
        (:attr:`~objstore.storage.segmenting.Segment.stride`; 0 for plain bytes),
        which word-sampled cuts use. Raises if the stream ends early.
        """
        if length <= 0:
            return
        cdc = self._cutter(stride)
        capacity = self._capacity if read_block is None else read_block + self.params.max_size
        if pool is not None and (pool.size != capacity or not fresh):
            raise ValueError(f"a pool of {pool.size}-byte buffers for {'' if fresh else 'reused '}blocks of {capacity} bytes")
        limit = min(capacity, length)  # bytes the current buffer may hold
        buf = pool.take() if pool is not None else bytearray(limit)
        lease = Lease(pool, buf) if pool is not None else None
        whole = memoryview(buf)
        filled = 0  # valid bytes in buf
        remaining = length  # bytes not yet read from the stream
        base = 0  # segment offset of buf[0]; always one of FastCDC's own cuts
        emitted = 0  # buffer offset up to which chunks were yielded (>= 0)
        try:
            while True:
                filled, remaining = _fill(stream, whole, filled, limit, remaining)
                cuts = native.core.chunk_block(cdc, buf, filled, remaining == 0, base, align, emitted, key)
                if cuts.ends:
                    yield Block(whole, emitted, cuts.ends, cuts.ids, lease)
                    emitted = cuts.ends[-1]
                elif lease is not None:
                    lease.release()  # no block carries this lease: the consumer's hold goes too
                if cuts.done:
                    return
                carry_from = cuts.carry_from
                keep = filled - carry_from
                limit = min(capacity, keep + remaining)
                if fresh:  # the old buffer lives on in the views handed out (not released here)
                    buf = pool.take() if pool is not None else bytearray(limit)
                    buf[:keep] = whole[carry_from:filled]
                    whole = memoryview(buf)
                    lease = _renew(lease, pool, buf)
                else:
                    buf[:keep] = buf[carry_from:filled]
                base += carry_from
                emitted -= carry_from
                filled = keep
        finally:
            if lease is not None:
                lease.release()
            if not fresh:
                whole.release()
