"""Settings of each codec worth comparing in the benchmark (``--only codecs``).

Moved out of :mod:`objstore.storage.codecs`: the library ships the codecs it
uses, not the variants only a benchmark measures.
"""

from __future__ import annotations

from collections.abc import Callable

from objstore.storage.codecs import BYTEGROUP2, BYTEGROUP4, CODECS, ROTGROUP2, ROTGROUP4, ZSTD, ByteGroupCodec, zstd_compressor

ELEMENT_SIZE = {"BF16": 2, "F16": 2, "F32": 4}
Encode = Callable[[bytes | memoryview, str | None], bytes | None]
Decode = Callable[[bytes | memoryview, int], bytes]


def codecs_for(dtype: str) -> list[int]:
    """The codec ids worth measuring on tensors of ``dtype``: zstd and the byte-plane codecs of its word size."""
    return [ZSTD] + [cid for cid, c in sorted(CODECS.items()) if isinstance(c, ByteGroupCodec) and c.word == ELEMENT_SIZE[dtype]]


def _level1(plane: bytes | memoryview) -> bytes:
    return zstd_compressor(1).compress(plane)


def benchmark_variants(codec_id: int) -> list[tuple[str, Encode, Decode]]:
    """Settings of one codec worth comparing in the benchmark: (label, encode, decode)."""
    codec = CODECS[codec_id]
    if codec_id == ZSTD:
        return [(f"zstd level {lvl}", lambda raw, dtype, lvl=lvl: zstd_compressor(lvl).compress(raw), codec.decode) for lvl in (1, 3, -5)]
    if not isinstance(codec, ByteGroupCodec):
        return [(codec.name, codec.encode, codec.decode)]
    rows: list[tuple[str, Encode, Decode]] = [(f"{codec.name} (id {codec_id})", codec.encode, codec.decode)]
    if codec_id in (BYTEGROUP2, BYTEGROUP4):
        slow = ByteGroupCodec(codec.codec_id, codec.word, codec.planes, _level1)
        rows.append((f"{codec.name} (zstd level 1 planes)", slow.encode, slow.decode))
    if codec_id in (ROTGROUP2, ROTGROUP4):
        w = codec.word
        # ZipNN's layout: rotated by 1, the exponent byte alone entropy-coded
        zipnn_layout = ByteGroupCodec(99, w, (w - 1,), rotate=1, pack6=())
        # the 3-bit rotation with the bottom plane entropy-coded, not packed
        coded = ByteGroupCodec(99, w, (0, w - 1), rotate=3, pack6=())
        rows += [(f"rotgroup{w}r1+zstd (exponent byte only)", zipnn_layout.encode, zipnn_layout.decode),
                 (f"rotgroup{w}r3+zstd (bottom plane coded)", coded.encode, coded.decode)]
    return rows
