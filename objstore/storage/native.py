"""The per-chunk core of ingest, in C when built, in Python otherwise.

Two implementations of the same functions, which must agree byte for byte:

- ``native``: the C extension :mod:`objstore.storage._native` (built by ``pip
  install`` from ``csrc/``; FastCDC and the vendored BLAKE3 with SIMD dispatch),
  releasing the GIL for a whole read block at a time;
- ``python``: the reference, pyfastcdc and the ``blake3`` package, the code paths
  objstore used before the extension existed (numpy for the word-sampled cuts).

:data:`IMPLEMENTATION` names the one in use: the native one if it imported and
``OBJSTORE_NATIVE`` is not ``0`` (tests and the benchmark's fallback row set it).
``tests/test_native.py`` checks that both give the same cuts and ids, and
``tests/test_golden_ingest.py`` that both give the recorded ones.

Cut semantics (see :class:`objstore.storage.chunking.Chunker`): FastCDC (or, with
a stride, the word-sampled cuts of :func:`word_cut`) runs over a
buffer whose offset 0 is one of its own cuts; every cut is rounded up to the next
multiple of ``align`` counted from the segment start (``base`` is the segment
offset of the buffer); a chunk ending exactly at the end of a buffer that is not
the segment's last, or whose rounded cut needs bytes not read yet, is not a cut
yet: the next buffer restarts at its start (``carry_from``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol

import blake3
import numpy as np
from pyfastcdc import FastCDC
from pyfastcdc.py.constants import MASKS
from pyfastcdc.utils import logarithm2

DIGEST = 32


@dataclass(frozen=True, slots=True)
class BlockCuts:
    """The chunks one buffer yields: each ends at ``ends[i]`` (buffer offsets; the
    first starts where the previous buffer's last emitted chunk ended), their
    keyed BLAKE3 digests (32 bytes each, if a key was given), where the next buffer
    must start, and whether the segment is done."""

    ends: list[int]
    ids: bytes | None
    carry_from: int
    done: bool


class Cdc:
    """One set of FastCDC parameters, usable by both implementations.

    ``avg_size`` is FastCDC's own (objstore asks for avg - min; see chunking.py).
    ``stride`` 0: FastCDC's gear over every byte. ``stride`` g (1 .. 64, dividing
    64): word-sampled cuts (:func:`word_cut`), the masks sized so a chunk holds
    about as many bytes as the gear's, and a forced cut at max_size rounded down
    to a multiple of 64 (when that leaves it above avg), so every cut stays on the
    grid of g from the segment start."""

    def __init__(self, avg_size: int, min_size: int, max_size: int, normalization: int, stride: int = 0) -> None:
        # pyfastcdc validates the parameters (and is the Python path's cutter)
        self.fastcdc = FastCDC(avg_size, min_size=min_size, max_size=max_size,
                               normalized_chunking=normalization)  # type: ignore[arg-type]
        self.stride = stride
        if not stride:
            bits = logarithm2(avg_size)
            self.config = (min_size, avg_size, max_size, MASKS[bits + normalization], MASKS[bits - normalization], 0)
            return
        if stride < 1 or 64 % stride:
            raise ValueError(f"a word-sampled stride must divide 64, not {stride}")
        bits = logarithm2(max(avg_size // stride, 1))
        on_grid = max_size - max_size % 64
        self.config = (min_size, avg_size, on_grid if on_grid >= avg_size else max_size,
                       _top_bits(bits + normalization), _top_bits(bits - normalization), stride)


def _top_bits(n: int) -> int:
    """A mask of the top ``n`` bits of 64 (0 .. 63 of them)."""
    n = max(0, min(n, 63))
    return ((1 << n) - 1) << (64 - n)


_WORD_XOR = np.uint64(0x243F6A8885A308D3)
_WORD_MUL = np.uint64(0x9E3779B97F4A7C15)


def _first_word_hit(view: memoryview, first: int, stop: int, stride: int, mask: int) -> int | None:
    """The first candidate p in ``first``, ``first + stride``, … below ``stop`` whose
    word ``view[p-8:p]`` (little-endian), mixed, has no bit of ``mask`` set."""
    n = -(-(stop - first) // stride)
    if n <= 0:
        return None
    words = np.ndarray((n,), dtype="<u8", buffer=view, offset=first - 8, strides=(stride,))
    hits = np.flatnonzero((((words ^ _WORD_XOR) * _WORD_MUL) & np.uint64(mask)) == 0)
    return first + int(hits[0]) * stride if hits.size else None


def word_cut(config: tuple[int, ...], view: memoryview, off: int, length: int) -> int:
    """The length of the next word-sampled chunk of ``view[off:off + length]`` (the
    reference of csrc/native/native.c's cut_words; ``off`` is a chunk start).

    Candidates are the multiples of the stride from the chunk start, from min_size
    on; candidate p cuts when the 8 bytes before it, as a little-endian word w, give
    ``(w ^ XOR) * MUL`` (mod 2**64) with no bit of the mask set: mask_s below avg,
    mask_l from there to max, where the chunk is cut anyway. A scan of one multiply
    per stride bytes instead of a gear step per byte; the cuts depend on the bytes
    just before them and on their offset's grid, which tensor edits (values changed
    in place, whole rows added or removed) keep."""
    min_size, avg_size, max_size, mask_s, mask_l, stride = config
    remaining = length
    if remaining <= min_size:
        return remaining
    center = avg_size
    if remaining > max_size:
        remaining = max_size
    elif remaining < center:
        center = remaining
    p = -(-min_size // stride) * stride
    for stop, mask in ((center, mask_s), (remaining, mask_l)):
        if p < stop:
            hit = _first_word_hit(view, off + p, off + stop, stride, mask)
            if hit is not None:
                return hit - off
            p += -(-(stop - p) // stride) * stride
    return remaining


def _cuts(cdc: Cdc, view: memoryview) -> Iterator[tuple[int, int]]:
    """(start, end) of each chunk of ``view``, the last one ending at its end."""
    if not cdc.stride:
        for chunk in cdc.fastcdc.cut_buf(view):
            yield chunk.offset, chunk.offset + chunk.length
        return
    off = 0
    while off < len(view):
        end = off + word_cut(cdc.config, view, off, len(view) - off)
        yield off, end
        off = end


class Core(Protocol):
    name: str

    def chunk_block(self, cdc: Cdc, buf: bytearray | memoryview, filled: int, at_end: bool, base: int, align: int,
                    emitted: int, key: bytes | None) -> BlockCuts: ...

    def hash_many(self, key: bytes, buf: bytes | bytearray | memoryview, start: int, ends: list[int]) -> bytes: ...

    def verify_at(self, key: bytes, fd: int, offset: int, lengths: list[int], ids: bytes, buf: memoryview) -> bool: ...

    def new_stream(self, key: bytes) -> Stream: ...


class Stream(Protocol):
    """One keyed BLAKE3 stream (a pack checksum): ``update_many`` hashes its buffers in order."""

    def update_many(self, pieces: list[bytes | memoryview]) -> None: ...

    def digest(self) -> bytes: ...


class _PyStream:
    __slots__ = ("_hasher",)

    def __init__(self, key: bytes) -> None:
        self._hasher = blake3.blake3(key=key)

    def update_many(self, pieces: list[bytes | memoryview]) -> None:
        update = self._hasher.update
        for piece in pieces:
            update(piece)

    def digest(self) -> bytes:
        return self._hasher.digest()


class _NativeStream:
    """The C stream: every ``update_many`` is one GIL-free call, however many buffers."""

    __slots__ = ("_m", "_state")

    def __init__(self, module: ModuleType, key: bytes) -> None:
        self._m = module
        self._state: bytearray = module.stream_new(key)

    def update_many(self, pieces: list[bytes | memoryview]) -> None:
        self._m.stream_update(self._state, pieces)

    def digest(self) -> bytes:
        out: bytes = self._m.stream_digest(self._state)
        return out


class PythonCore:
    """The reference implementation (pyfastcdc + blake3)."""

    name = "python"

    def new_stream(self, key: bytes) -> Stream:
        return _PyStream(key)

    def chunk_block(self, cdc: Cdc, buf: bytearray | memoryview, filled: int, at_end: bool, base: int, align: int,
                    emitted: int, key: bytes | None) -> BlockCuts:
        ends: list[int] = []
        first = emitted  # where the first chunk starts
        carry_from = filled
        view = memoryview(buf)[:filled]
        try:
            for start, end in _cuts(cdc, view):
                if end == filled and not at_end:
                    carry_from = start  # may not be a real cut: redo it with more data
                    break
                cut = end
                if align > 1:
                    cut = -(-(base + end) // align) * align - base
                    if cut > filled:
                        if not at_end:
                            carry_from = start  # the rounded cut needs bytes not read yet
                            break
                        cut = filled
                if cut > emitted:
                    ends.append(cut)
                    emitted = cut
            done = at_end and carry_from == filled
            if done and emitted < filled:
                ends.append(filled)
            ids = None if key is None else self.hash_many(key, view, first, ends)
        finally:
            view.release()
        return BlockCuts(ends, ids, carry_from, done)

    def hash_many(self, key: bytes, buf: bytes | bytearray | memoryview, start: int, ends: list[int]) -> bytes:
        with memoryview(buf) as view:
            out = []
            for end in ends:
                out.append(blake3.blake3(view[start:end], key=key).digest())
                start = end
            return b"".join(out)

    def verify_at(self, key: bytes, fd: int, offset: int, lengths: list[int], ids: bytes, buf: memoryview) -> bool:
        """Whether the bytes of ``fd`` from ``offset``, cut at ``lengths``, hash (keyed)
        to ``ids`` (32 bytes each): read into ``buf`` as many whole chunks a read as
        fit; False at the first read whose chunks differ, or when the file ends early."""
        if len(ids) != DIGEST * len(lengths):
            raise ValueError("verify_at: ids must hold 32 bytes per length")
        if not all(0 < n <= len(buf) for n in lengths):
            raise ValueError("verify_at: every length must be between 1 and the buffer's size")
        i = 0
        while i < len(lengths):
            ends: list[int] = []
            size, j = 0, i
            while j < len(lengths) and size + lengths[j] <= len(buf):
                size += lengths[j]
                ends.append(size)
                j += 1
            if os.preadv(fd, [buf[:size]], offset) != size:
                return False
            if self.hash_many(key, buf, 0, ends) != ids[DIGEST * i : DIGEST * j]:
                return False
            offset, i = offset + size, j
        return True


class NativeCore:
    """The C extension."""

    name = "native"

    def __init__(self, module: ModuleType) -> None:
        self._m = module
        self.simd: str = module.simd()

    def new_stream(self, key: bytes) -> Stream:
        return _NativeStream(self._m, key)

    def chunk_block(self, cdc: Cdc, buf: bytearray | memoryview, filled: int, at_end: bool, base: int, align: int,
                    emitted: int, key: bytes | None) -> BlockCuts:
        ends, ids, carry_from, done = self._m.chunk_block(buf, filled, at_end, base, align, emitted, cdc.config, key)
        return BlockCuts(ends, ids, carry_from, done)

    def hash_many(self, key: bytes, buf: bytes | bytearray | memoryview, start: int, ends: list[int]) -> bytes:
        out: bytes = self._m.hash_many(key, buf, start, ends)
        return out

    def verify_at(self, key: bytes, fd: int, offset: int, lengths: list[int], ids: bytes, buf: memoryview) -> bool:
        if not hasattr(self._m, "verify_at"):  # not built where there is no pread (Windows)
            return python_core.verify_at(key, fd, offset, lengths, ids, buf)
        same: bool = self._m.verify_at(key, fd, offset, lengths, ids, buf)
        return same


def _load_native() -> NativeCore | None:
    try:
        from objstore.storage import _native  # type: ignore[attr-defined]
    except ImportError:
        return None
    return NativeCore(_native)


python_core = PythonCore()
native_core = _load_native()  # None when the extension was not built
FORCED_OFF = os.environ.get("OBJSTORE_NATIVE", "") == "0"
core: Core = native_core if native_core is not None and not FORCED_OFF else python_core
IMPLEMENTATION: str = core.name
SIMD: str = native_core.simd if native_core is not None and core is native_core else "none"


def describe() -> str:
    """What ``objstore --version`` reports: ``native, avx512`` or ``python``."""
    return f"native, {SIMD}" if IMPLEMENTATION == "native" else "python"
