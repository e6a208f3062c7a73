"""Per-chunk encodings, chosen chunk by chunk.

A codec turns a chunk's raw bytes into what is stored and back. The chunk's id
is always the hash of the raw bytes (checked on every read, above this layer),
so a codec can never change what a reader gets, only how many bytes are kept.
A chunk that does not shrink by ``MIN_SAVING`` is stored raw.

Codec ids are part of the pack format: never renumber one.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, Protocol

import numpy as np
import zstandard

from objstore import constants
from objstore.errors import CorruptObject

RAW = 0
ZSTD = 1
BYTEGROUP2 = 2  # bytegroup+zstd over 2-byte words (bf16, fp16)
BYTEGROUP4 = 3  # bytegroup+zstd over 4-byte words (fp32)
# Words rotated left 3 bits, then byte-grouped: the exponent's low 6 bits and the
# mantissa's top 2 share the top byte, entropy-coded; the bottom byte's 2 exponent
# bits, nearly always equal, are stored once and its other 6 bits packed.
ROTGROUP2 = 4  # bf16
ROTGROUP4 = 5  # fp32


class Codec(Protocol):
    codec_id: int
    name: str

    def encode(self, raw: bytes | memoryview, dtype: str | None) -> bytes | None:
        """The encoded bytes, or None when this codec does not apply to the chunk."""
        ...

    def decode(self, stored: bytes | memoryview, raw_len: int) -> bytes:
        ...


_local = threading.local()


def zstd_compressor(level: int = constants.ZSTD_LEVEL) -> zstandard.ZstdCompressor:
    """A per-thread compressor: zstandard objects must not be shared across threads."""
    key = f"c{level}"
    comp = getattr(_local, key, None)
    if comp is None:
        comp = zstandard.ZstdCompressor(level=level)
        setattr(_local, key, comp)
    return comp


def zstd_decompressor() -> zstandard.ZstdDecompressor:
    dec = getattr(_local, "d", None)
    if dec is None:
        dec = _local.d = zstandard.ZstdDecompressor()
    return dec


def zstd_declared_size(stored: bytes | memoryview) -> int | None:
    """The content size a zstd frame's header declares (None if it declares none).

    python-zstandard's one-shot ``decompress`` allocates the declared size before it
    decodes a byte, ``max_output_size`` notwithstanding, so a 16-byte frame claiming
    4 TiB would exhaust memory: every decode here reads the header first.
    """
    try:
        size = zstandard.frame_content_size(stored)
    except zstandard.ZstdError as exc:
        raise CorruptObject(f"a zstd payload has no valid frame header ({exc})") from exc
    return None if size < 0 else size


def zstd_decompress(stored: bytes | memoryview, raw_len: int) -> bytes:
    """Decode a frame that must hold exactly ``raw_len`` bytes, allocating no more."""
    declared = zstd_declared_size(stored)
    if declared is not None and declared != raw_len:
        raise CorruptObject(f"a zstd payload declares {declared} bytes, expected {raw_len}")
    out = zstd_decompress_bounded(stored, raw_len)
    if len(out) != raw_len:
        raise CorruptObject(f"a zstd payload decoded to {len(out)} bytes, expected {raw_len}")
    return out


# A frame that declares no size is decoded in steps of this many bytes.
_STREAM_STEP = 1 << 20


def zstd_decompress_bounded(stored: bytes | memoryview, max_size: int) -> bytes:
    """Decode one frame of at most ``max_size`` bytes, allocating at most that.

    A frame that declares more is refused from its header; one that declares
    nothing (objstore's writers always declare) is decoded by a streaming reader
    that stops one byte past the bound.
    """
    declared = zstd_declared_size(stored)
    if declared is not None and declared > max_size:
        raise CorruptObject(f"a zstd payload declares {declared} bytes, more than the {max_size} it can hold")
    try:
        if declared is not None:
            return zstd_decompressor().decompress(stored, max_output_size=max_size)
        parts: list[bytes] = []
        got = 0
        # The window a frame asks for is allocated too; none needs more than its content.
        window = 1 << min(max(max_size.bit_length(), 10), 27)
        streaming = zstandard.ZstdDecompressor(max_window_size=window)
        with streaming.stream_reader(stored, read_across_frames=False) as reader:
            while got <= max_size:
                block = reader.read(min(_STREAM_STEP, max_size + 1 - got))
                if not block:
                    break
                parts.append(block)
                got += len(block)
    except zstandard.ZstdError as exc:
        raise CorruptObject(f"a zstd payload does not decode: {exc}") from exc
    if got > max_size:
        raise CorruptObject(f"a zstd payload decodes to more than the {max_size} bytes it can hold")
    return b"".join(parts)


class RawCodec:
    codec_id = RAW
    name = "raw"

    def encode(self, raw: bytes | memoryview, dtype: str | None) -> bytes | None:
        return bytes(raw)

    def decode(self, stored: bytes | memoryview, raw_len: int) -> bytes:
        if len(stored) != raw_len:
            raise CorruptObject(f"a raw chunk holds {len(stored)} bytes, expected {raw_len}")
        return bytes(stored)


class ZstdCodec:
    codec_id = ZSTD
    name = "zstd"

    def __init__(self, level: int = constants.ZSTD_LEVEL) -> None:
        self.level = level

    def encode(self, raw: bytes | memoryview, dtype: str | None) -> bytes | None:
        return zstd_compressor(self.level).compress(raw)

    def decode(self, stored: bytes | memoryview, raw_len: int) -> bytes:
        return zstd_decompress(stored, raw_len)


def _compress_plane(plane: bytes | memoryview) -> bytes:
    return plane_compressor().compress(plane)


def plane_compressor() -> zstandard.ZstdCompressor:
    """The per-thread zstd set up for byte planes: an entropy coder, nearly no match finder.

    An exponent plane is low-entropy noise with few long repeats, so what pays is
    Huffman coding of literals; zstd's level 1 spends most of its time finding
    short matches that save little. A 64-entry hash table with 7-byte minimum
    matches finds almost none, and a window covering the whole plane keeps it in
    one block (one Huffman table). Measured on a bf16 exponent plane: ratio 0.34
    at ~400-550 MB/s, against 0.38 at ~130 MB/s for level 1 (``python -m benchmarks
    --only codecs`` compares them).
    """
    comp = getattr(_local, "plane", None)
    if comp is None:
        params = zstandard.ZstdCompressionParameters(
            window_log=17, chain_log=6, hash_log=6, search_log=1, min_match=7, target_length=0, strategy=zstandard.STRATEGY_FAST,
        )
        comp = _local.plane = zstandard.ZstdCompressor(compression_params=params)
    return comp


def _load_planes() -> ModuleType | None:
    """The C byte-plane transforms (csrc/planes), unless absent or ``OBJSTORE_NATIVE=0``."""
    if os.environ.get("OBJSTORE_NATIVE", "") == "0":
        return None
    try:
        from objstore.storage import _planes  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return None
    module: ModuleType = _planes
    return module


def _load_run_decoder() -> ModuleType | None:
    """The C run decoder (csrc/native), unless absent or ``OBJSTORE_NATIVE=0``."""
    if os.environ.get("OBJSTORE_NATIVE", "") == "0":
        return None
    try:
        from objstore.storage import _native  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return None
    module: ModuleType = _native
    return module


_PLANES = _load_planes()
_RUNS = _load_run_decoder()
# The vendored zstd's decoder, which _planes lends _native's decode_run (one GIL-free
# call per run, no Python object per frame). Any zstd version decodes a valid frame to
# the same bytes, and a frame it does not take goes to the reference, so unlike the
# batch encoder this needs no version match. OBJSTORE_ONE_CALL=0 turns it off (then
# python-zstandard decodes the frames between run_frames and finish_run).
_ZSTD_DECODER = getattr(_PLANES, "zstd_decoder", None)
ONE_CALL_DECODE = (_RUNS is not None and hasattr(_RUNS, "decode_run") and _ZSTD_DECODER is not None
                   and os.environ.get("OBJSTORE_ONE_CALL", "") != "0")
# Whether decode_run decodes in C (else it always answers None: the reference decides).
RUN_DECODER_IMPLEMENTATION = "native" if _RUNS is not None else "python"
# Which split/merge the bytegroup codecs run: both give the same bytes (tested).
PLANES_IMPLEMENTATION = "native" if _PLANES is not None else "python"

_WORD_DTYPES: dict[int, np.dtype[Any]] = {2: np.dtype("<u2"), 4: np.dtype("<u4"), 8: np.dtype("<u8")}
# Header of a bytegroup payload: word size, bitmask of compressed planes.
_BG_HEAD = struct.Struct("<BB")
# ... and with 6-bit packed planes: word size, compressed planes, packed planes.
_BG_HEAD3 = struct.Struct("<BBB")
_BG_LEN = struct.Struct("<I")
# A chunk smaller than this many words is not worth splitting.
_BG_MIN_WORDS = 256


def _packed6_size(m: int) -> int:
    return 1 + 3 * ((m + 3) // 4)


def pack6(plane: bytes | memoryview) -> bytes | None:
    """The plane with its low 2 bits stored once: that value as a byte, then each
    byte's high 6 bits, 4 to 3 bytes (24 bits little-endian, first value lowest,
    the last group zero-padded); None unless every byte's low 2 bits are equal."""
    if _PLANES is not None:
        out: bytes | None = _PLANES.pack6(plane)
        return out
    p = np.frombuffer(plane, dtype=np.uint8)
    low = int(p[0] & 3) if len(p) else 0
    if np.any((p & 3) != low):
        return None
    v = np.zeros(-(-len(p) // 4) * 4, dtype=np.uint32)
    v[: len(p)] = p >> 2
    g = v.reshape(-1, 4)
    x = g[:, 0] | (g[:, 1] << 6) | (g[:, 2] << 12) | (g[:, 3] << 18)
    return bytes([low]) + x.astype("<u4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()


def unpack6(packed: bytes | memoryview, m: int) -> bytes:
    """The ``m``-byte plane :func:`pack6` packed; CorruptObject unless ``packed`` is
    exactly what pack6 writes (length, a low value below 4, zero padding)."""
    if _PLANES is not None:
        try:
            out: bytes = _PLANES.unpack6(packed, m)
        except ValueError as exc:
            raise CorruptObject(f"a bytegroup plane: {exc}") from None
        return out
    if m < 0 or len(packed) != _packed6_size(m):
        raise CorruptObject(f"a bytegroup plane: a 6-bit packed plane of {m} bytes holds {len(packed)} bytes")
    low = packed[0]
    if low > 3:
        raise CorruptObject(f"a bytegroup plane: a 6-bit packed plane names low bits {low}")
    b = np.frombuffer(packed, dtype=np.uint8, offset=1).reshape(-1, 3).astype(np.uint32)
    x = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
    v = np.stack([(x >> (6 * j)) & 63 for j in range(4)], axis=1).reshape(-1)
    if np.any(v[m:]):
        raise CorruptObject("a bytegroup plane: a 6-bit packed plane has nonzero padding")
    return ((v[:m] << 2) | low).astype(np.uint8).tobytes()


class ByteGroupCodec:
    """Split ``word``-byte elements into byte planes; zstd the planes that pay, keep the rest raw.

    Payload: ``u8 word, u8 mask`` (bit k: plane k is compressed), a ``u32`` stored
    length per compressed plane, then planes 0..word-1 in order (each compressed
    or raw, ``raw_len // word`` bytes raw), then the ``raw_len % word`` trailing
    bytes as they were. Float weights keep sign and exponent in the top byte of a
    little-endian word: that plane is low-entropy, the mantissa planes are noise.
    So only ``planes`` (by default the top one) are tried, and each is kept
    compressed only if it saves ``MIN_SAVING`` of its size. (ZipNN groups bytes
    the same way.) The grouping is per chunk, so chunk cuts inside a tensor must
    fall on element boundaries, which :mod:`objstore.storage.chunking` guarantees.

    With ``rotate`` r, each word is rotated left by r bits before the split (and
    right after the merge), which moves bit boundaries, not bytes. r = 1 moves the
    sign to the bottom, so a bf16/fp32 top byte is the 8-bit exponent alone (ZipNN's
    layout). r = 3 is better still: the top byte holds the exponent's low 6 bits
    and the mantissa's top 2, whose distribution depends on the exponent (a normal
    weight's density falls across an octave), so coding them jointly gains ~0.08
    bit per weight; the bottom byte then holds the exponent's top 2 bits (the same
    for every weight in (2^-63, 2)), the sign and 5 mantissa bits. With ``pack6``
    (ids 4 and 5) such a plane whose low 2 bits agree across the chunk is stored as
    :func:`pack6` writes it, exactly 6 bits a byte, no table, no second zstd call;
    the payload header then has a third byte, the bitmask of packed planes
    (disjoint from the compressed ones; a packed plane holds ``1 + 3 * ceil(m / 4)``
    bytes). Measured on Normal(0, 0.02) bf16 in 64 KiB chunks: 0.671 unrotated,
    0.664 with r = 1, 0.658 with r = 3 and both planes coded, 0.6575 with the
    bottom plane packed (the order-0 entropy bound of r = 3 is 0.654).
    """

    def __init__(self, codec_id: int, word: int, planes: tuple[int, ...], compress: Callable[[bytes | memoryview], bytes] | None = None,
                 rotate: int = 0, pack6: tuple[int, ...] | None = None) -> None:
        if not 0 <= rotate < 8 * word:
            raise ValueError(f"a {word}-byte word cannot be rotated by {rotate} bits")
        self.codec_id = codec_id
        self.word = word
        self.planes = planes
        self.rotate = rotate
        # None: the two-byte header of ids 2 and 3, no packed planes; a tuple (even
        # empty): the three-byte header, these planes packed when their low bits agree.
        self.pack6 = pack6
        self.name = f"bytegroup{word}+zstd" if not rotate else f"rotgroup{word}r{rotate}+zstd"
        self._compress = compress or _compress_plane

    def split(self, raw: bytes | memoryview) -> list[bytes] | list[memoryview]:
        """The byte planes of ``raw``'s rotated whole words, each contiguous (trailing bytes left out)."""
        if _PLANES is not None:
            planes: list[bytes] = _PLANES.split(raw, self.word, self.rotate)
            return planes
        return self.split_python(raw)

    def merge(self, planes: list[bytes | memoryview], tail: bytes | memoryview = b"") -> bytes:
        """Interleave byte planes back into words, unrotate them, append ``tail`` (the inverse of :meth:`split`)."""
        if _PLANES is not None:
            out: bytes = _PLANES.merge(planes, self.word, self.rotate, tail)
            return out
        return self.merge_python(planes, tail)

    def split_python(self, raw: bytes | memoryview) -> list[memoryview]:
        """:meth:`split` in numpy, the reference. Shift-and-narrow on whole words runs
        3-8 GB/s; a transposing copy, 2.5."""
        w = self.word
        m = len(raw) // w
        words = np.frombuffer(raw, dtype=_WORD_DTYPES[w], count=m)
        if self.rotate:
            words = (words << self.rotate) | (words >> (8 * w - self.rotate))
        return [((words >> (8 * k)).astype(np.uint8) if k else words.astype(np.uint8)).data for k in range(w)]

    def merge_python(self, planes: list[bytes | memoryview], tail: bytes | memoryview = b"") -> bytes:
        """:meth:`merge` in numpy, the reference."""
        arrays = [np.frombuffer(p, dtype=np.uint8) for p in planes]
        if self.word == 2:
            words = arrays[0].astype("<u2")
            words |= arrays[1].astype("<u2") << 8
        else:
            out = np.empty((len(arrays[0]), self.word), dtype=np.uint8)
            for k, plane in enumerate(arrays):
                out[:, k] = plane
            words = out.view(_WORD_DTYPES[self.word]).reshape(-1)
        if self.rotate:
            words = (words >> self.rotate) | (words << (8 * self.word - self.rotate))
        return words.tobytes() + bytes(tail) if len(tail) else words.tobytes()

    def encode(self, raw: bytes | memoryview, dtype: str | None) -> bytes | None:
        w = self.word
        m = len(raw) // w
        if m < _BG_MIN_WORDS:
            return None
        planes = self.split(raw)
        mask = packed = 0
        parts: list[bytes | memoryview] = []
        lengths: list[bytes] = []
        limit = m * (1.0 - constants.MIN_SAVING)
        for k in range(w):
            plane = planes[k]
            if self.pack6 is not None and k in self.pack6:
                six = pack6(plane)
                if six is not None:
                    packed |= 1 << k
                    parts.append(six)
                    continue
            if k in self.planes:
                out = self._compress(plane)
                if len(out) <= limit:
                    mask |= 1 << k
                    lengths.append(_BG_LEN.pack(len(out)))
                    parts.append(out)
                    continue
            parts.append(memoryview(plane))  # the plane is contiguous: its bytes, without a copy
        if not mask | packed:
            return None  # nothing paid: let the caller store the chunk raw
        tail = memoryview(raw)[m * w :]
        head = _BG_HEAD.pack(w, mask) if self.pack6 is None else _BG_HEAD3.pack(w, mask, packed)
        return b"".join([head, *lengths, *parts, tail])

    def decode(self, stored: bytes | memoryview, raw_len: int) -> bytes:
        w = self.word
        m = raw_len // w
        view = memoryview(stored)
        try:
            if self.pack6 is None:
                word, mask = _BG_HEAD.unpack_from(view, 0)
                packed = 0
            else:
                word, mask, packed = _BG_HEAD3.unpack_from(view, 0)
        except struct.error:
            raise CorruptObject("a bytegroup payload is truncated") from None
        if word != w or (mask | packed) >> w or mask & packed:
            raise CorruptObject(f"a bytegroup payload names word size {word}, compressed planes {mask:#x} and packed "
                                f"planes {packed:#x}, expected {w}-byte words")
        pos = _BG_HEAD.size if self.pack6 is None else _BG_HEAD3.size
        lengths = {}
        for k in range(w):
            if mask >> k & 1:
                if pos + 4 > len(view):
                    raise CorruptObject("a bytegroup payload is truncated")
                (lengths[k],) = _BG_LEN.unpack_from(view, pos)
                pos += 4
        planes: list[bytes | memoryview] = []
        for k in range(w):
            n = lengths.get(k, _packed6_size(m) if packed >> k & 1 else m)
            part = view[pos : pos + n]
            if len(part) != n:
                raise CorruptObject("a bytegroup payload is truncated")
            pos += n
            if k in lengths:
                try:
                    plane = zstd_decompress(part, m)
                except CorruptObject as exc:
                    raise CorruptObject(f"a bytegroup plane: {exc}") from None
                planes.append(plane)
            elif packed >> k & 1:
                planes.append(unpack6(part, m))
            else:
                planes.append(part)
        tail = view[pos:]
        if len(tail) != raw_len - m * w:
            raise CorruptObject(f"a bytegroup payload holds {pos + len(tail)} bytes, which does not match {raw_len} raw bytes")
        return self.merge(planes, tail)


CODECS: dict[int, Codec] = {
    RAW: RawCodec(),
    ZSTD: ZstdCodec(),
    BYTEGROUP2: ByteGroupCodec(BYTEGROUP2, 2, (1,)),
    BYTEGROUP4: ByteGroupCodec(BYTEGROUP4, 4, (3,)),
    ROTGROUP2: ByteGroupCodec(ROTGROUP2, 2, (0, 1), rotate=3, pack6=(0,)),
    ROTGROUP4: ByteGroupCodec(ROTGROUP4, 4, (0, 3), rotate=3, pack6=(0,)),
}

# The codec worth trying for each float dtype (safetensors names). fp16 keeps the
# unrotated layout: its top byte already holds the sign, all 5 exponent bits and 2
# mantissa bits, and rotating the sign out gains 0.05% (measured) for the cost of a shift.
BYTEGROUP_FOR_DTYPE = {"BF16": ROTGROUP2, "F16": BYTEGROUP2, "F32": ROTGROUP4}


def register(codec: Codec) -> None:
    """Add a codec (a new id only: stored data names codecs by id)."""
    existing = CODECS.get(codec.codec_id)
    if existing is not None and existing.name != codec.name:
        raise ValueError(f"codec id {codec.codec_id} is already {existing.name}")
    CODECS[codec.codec_id] = codec


class CodecPolicy(Protocol):
    def candidates(self, dtype: str | None) -> tuple[int, ...]: ...


class DefaultPolicy:
    """Which codecs to try for a chunk: a byte-plane codec for bf16/fp16/fp32 tensors, zstd for the rest.

    One candidate per chunk, because trying two doubles the encode time, and on
    float weights plain zstd never beat bytegroup in the benchmark's workloads.
    Chunks written earlier keep the codec id they were written with; only new
    chunks get this choice.
    """

    def candidates(self, dtype: str | None) -> tuple[int, ...]:
        bytegroup = BYTEGROUP_FOR_DTYPE.get(dtype) if dtype else None
        return (bytegroup,) if bytegroup is not None else (ZSTD,)


def encode_chunk(raw: bytes | memoryview, dtype: str | None, policy: CodecPolicy | None = None) -> tuple[int, bytes | memoryview]:
    """Encode one chunk: (codec id, stored bytes). Falls back to raw unless a codec saves ``MIN_SAVING``."""
    limit = len(raw) * (1.0 - constants.MIN_SAVING)
    best: tuple[int, bytes] | None = None
    for codec_id in (policy or DEFAULT_POLICY).candidates(dtype):
        out = CODECS[codec_id].encode(raw, dtype)
        if out is not None and len(out) <= limit and (best is None or len(out) < len(best[1])):
            best = (codec_id, out)
    if best is None:
        return RAW, raw
    return best


# multi_compress_to_buffer is python-zstandard's C backend only; its frames are
# byte for byte those of compress() with the same compressor (tests/test_codec_batch.py).
_MULTI = zstandard.backend == "cext" and hasattr(zstandard.ZstdCompressor, "multi_compress_to_buffer")
# The C batch encoder's frames come from the zstd vendored in csrc/zstd; they are
# zstandard's frames only when both are the same zstd version, so it is used only then.
# OBJSTORE_ONE_CALL=0 turns it off (the three-call batch; to compare the two in one build).
BATCH_INTO = (_PLANES is not None and hasattr(_PLANES, "encode_batch")
              and tuple(_PLANES.zstd_version()) == tuple(zstandard.ZSTD_VERSION)
              and os.environ.get("OBJSTORE_ONE_CALL", "") != "0")


def encode_many(items: Sequence[tuple[bytes | memoryview, str | None]], policy: CodecPolicy | None = None,
                out: bytearray | None = None) -> list[tuple[int, bytes | memoryview]]:
    """:func:`encode_chunk` of each (raw, dtype), byte for byte, in a few calls per codec instead of several per chunk.

    With ``out`` (the caller's to pool; used when it holds the items' total raw length) and
    :data:`BATCH_INTO`, each codec's chunks are encoded in **one** GIL-free C call
    (split, 6-bit packing, zstd from the vendored library, payload layout) and the
    payloads are views of ``out``, laid out back to back: no Python object and no
    fresh buffer per chunk. ``out`` must then not be reused until they are written.

    With the C transforms, the chunks a bytegroup codec takes are split and 6-bit
    packed in one call, their planes entropy-coded in one call of python-zstandard,
    and the payloads assembled in one more, each without the GIL; zstd chunks are
    coded in one call too. Chunks whose policy offers more than one codec, or a
    codec this cannot batch, go through :func:`encode_chunk` one by one.
    """
    policy = policy or DEFAULT_POLICY
    result: list[tuple[int, bytes | memoryview] | None] = [None] * len(items)
    if _PLANES is None or not _MULTI:
        return [encode_chunk(raw, dtype, policy) for raw, dtype in items]
    picked: dict[str | None, int | None] = {}
    groups: dict[int, list[int]] = {}
    for i, (raw, dtype) in enumerate(items):
        if dtype not in picked:
            candidates = policy.candidates(dtype)
            picked[dtype] = candidates[0] if len(candidates) == 1 and _batchable(candidates[0]) else None
        codec_id = picked[dtype]
        if codec_id is None or not len(raw):  # python-zstandard's batch refuses empty inputs
            result[i] = encode_chunk(raw, dtype, policy)
        else:
            groups.setdefault(codec_id, []).append(i)
    # payloads are smaller than their raw bytes or stored raw: the raw total always fits
    into = out if BATCH_INTO and out is not None and len(out) >= sum(len(raw) for raw, _ in items) else None
    pos = 0
    for codec_id, idx in groups.items():
        raws = [items[i][0] for i in idx]
        if into is not None:
            encoded, pos = _encode_group_into(codec_id, raws, into, pos)
        else:
            encoded = _encode_group(codec_id, raws)
        for i, one in zip(idx, encoded):
            result[i] = one
    return result  # type: ignore[return-value]  # every slot filled above


def _batchable(codec_id: int) -> bool:
    codec = CODECS.get(codec_id)
    if isinstance(codec, ByteGroupCodec):
        return codec._compress is _compress_plane and codec.word in (2, 4)
    return isinstance(codec, ZstdCodec)


def _scratch(size: int) -> bytearray:
    """A per-thread buffer of at least ``size`` bytes, kept: a fresh one per block costs a page fault per 4 KiB."""
    buf: bytearray | None = getattr(_local, "scratch", None)
    if buf is None or len(buf) < size:
        buf = _local.scratch = bytearray(max(size, 4 << 20))
    return buf


def _encode_group(codec_id: int, raws: list[bytes | memoryview]) -> list[tuple[int, bytes | memoryview]]:
    codec = CODECS[codec_id]
    limit = 1.0 - constants.MIN_SAVING
    if isinstance(codec, ZstdCodec):
        inputs: list[bytes | bytearray | memoryview] = list(raws)
        coded = zstd_compressor(codec.level).multi_compress_to_buffer(inputs)
        whole = [coded[i].tobytes() for i in range(len(coded))]
        return [(ZSTD, f) if len(f) <= len(r) * limit else (RAW, r) for r, f in zip(raws, whole)]
    assert isinstance(codec, ByteGroupCodec) and _PLANES is not None
    w = codec.word
    try_mask = sum(1 << k for k in set(codec.planes) if k < w)
    pack6_mask = -1 if codec.pack6 is None else sum(1 << k for k in set(codec.pack6) if k < w)
    scratch = _scratch(_PLANES.split_batch_scratch(raws, w, pack6_mask))
    plan, segments = _PLANES.split_batch(raws, w, codec.rotate, try_mask, pack6_mask, _BG_MIN_WORDS, scratch)
    frames: list[Any] = []
    if segments:
        coded = plane_compressor().multi_compress_to_buffer(zstandard.BufferWithSegments(scratch, segments))
        frames = [coded[i] for i in range(len(coded))]
    payloads = _PLANES.assemble_batch(plan, raws, scratch, frames, constants.MIN_SAVING)
    return [(RAW, r) if p is None else (codec_id, p) for r, p in zip(raws, payloads)]


def _encode_group_into(codec_id: int, raws: list[bytes | memoryview], out: bytearray, pos: int
                       ) -> tuple[list[tuple[int, bytes | memoryview]], int]:
    """One codec's chunks in one C call, payloads laid out in ``out`` from ``pos``; and where the next may go."""
    assert _PLANES is not None
    codec = CODECS[codec_id]
    view = memoryview(out)[pos:]
    if isinstance(codec, ZstdCodec):
        table, used = _PLANES.encode_batch(raws, 0, 0, 0, -1, 0, codec.level, constants.MIN_SAVING, view)
    else:
        assert isinstance(codec, ByteGroupCodec)
        w = codec.word
        try_mask = sum(1 << k for k in set(codec.planes) if k < w)
        pack6_mask = -1 if codec.pack6 is None else sum(1 << k for k in set(codec.pack6) if k < w)
        table, used = _PLANES.encode_batch(raws, w, codec.rotate, try_mask, pack6_mask, _BG_MIN_WORDS, 0,
                                           constants.MIN_SAVING, view)
    rows = memoryview(table).cast("q")
    encoded: list[tuple[int, bytes | memoryview]] = []
    for i, raw in enumerate(raws):
        n = rows[2 * i + 1]
        if n < 0:
            encoded.append((RAW, raw))
        else:
            at = rows[2 * i]
            encoded.append((codec_id, view[at : at + n]))
    return encoded, pos + used


def decode_chunk(codec_id: int, stored: bytes | memoryview, raw_len: int) -> bytes:
    """A chunk's raw bytes. ``raw_len`` comes from an index, which is untrusted: a
    length no chunk can have is refused before anything is allocated for it."""
    if not 0 <= raw_len <= constants.MAX_CHUNK_BYTES or len(stored) > constants.MAX_STORED_CHUNK_BYTES:
        raise CorruptObject(f"a chunk claims {raw_len} bytes ({len(stored)} stored), more than any chunk holds "
                            f"({constants.MAX_CHUNK_BYTES})")
    codec = CODECS.get(codec_id)
    if codec is None:
        raise CorruptObject(f"a chunk names codec {codec_id}, which this objstore does not know; upgrade objstore")
    return codec.decode(stored, raw_len)


DEFAULT_POLICY: CodecPolicy = DefaultPolicy()


def decode_run(key: bytes, payloads: list[bytes | memoryview], codec_ids: list[int], raw_lens: list[int],
               ids: bytes, out: bytearray) -> bool:
    """Write the raw bytes of a run of stored chunks back to back into ``out`` (at
    least ``sum(raw_lens)`` bytes), every chunk checked to hash (BLAKE3 keyed with
    ``key``) to its id in ``ids`` (32 bytes each); True if it did.

    Per run, not per chunk, and none of the work under the GIL: one C call
    (:data:`ONE_CALL_DECODE`) checks every header as :func:`decode_chunk` does,
    decodes each zstd frame into exactly the size it must have (the vendored zstd),
    merges planes, unpacks 6-bit planes, copies tails and verifies each chunk right
    after decoding it; without it, the C core lists the frames, python-zstandard
    decodes them and a second C call does the rest. False when
    the C core is not built, or any chunk of the run fails a check or is in a form
    only the reference decodes (a frame that declares no size): the caller then
    decodes the run chunk by chunk with :func:`decode_chunk`, which decides and
    words the error. So this never accepts what the reference refuses, and what it
    accepts is byte for byte what the reference returns (``tests/test_decode_run.py``).
    ``out`` is the caller's to reuse: a fresh buffer per run costs a page fault per
    4 KiB written.
    """
    if _RUNS is None:
        return False
    if ONE_CALL_DECODE:
        return int(_RUNS.decode_run(key, payloads, codec_ids, raw_lens, ids, constants.MAX_CHUNK_BYTES,
                                    constants.MAX_STORED_CHUNK_BYTES, out, _ZSTD_DECODER)) < 0
    plan = _RUNS.run_frames(payloads, codec_ids, raw_lens, constants.MAX_CHUNK_BYTES, constants.MAX_STORED_CHUNK_BYTES)
    if plan is None:
        return False
    frames, sizes = plan
    dec = zstd_decompressor()
    try:
        decoded = [dec.decompress(frame, max_output_size=size) for frame, size in zip(frames, sizes)]
    except zstandard.ZstdError:
        return False
    bad: int = _RUNS.finish_run(key, payloads, codec_ids, raw_lens, ids, decoded, constants.MAX_CHUNK_BYTES, out)
    return bad < 0
