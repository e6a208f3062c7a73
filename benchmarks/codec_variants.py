"""Settings of each codec worth comparing in the benchmark (``--only codecs``).

Moved out of :mod:`objstore.storage.codecs`: the library ships the codecs it
uses, not the variants only a benchmark measures.
"""

from __future__ import annotations

from collections.abc import Callable

from objstore.storage.codecs import BYTEGROUP2, BYTEGROUP4, CODECS, ZSTD, ByteGroupCodec, zstd_compressor

ELEMENT_SIZE = {"BF16": 2, "F16": 2, "F32": 4}
Encode = Callable[[bytes | memoryview, str | None], bytes | None]


def codecs_for(dtype: str) -> list[int]:
    """The codec ids worth measuring on tensors of ``dtype``: zstd and the byte-plane codecs of its word size."""
    return [ZSTD] + [cid for cid, c in sorted(CODECS.items()) if isinstance(c, ByteGroupCodec) and c.word == ELEMENT_SIZE[dtype]]


def benchmark_variants(codec_id: int) -> list[tuple[str, Encode]]:
    """Settings of one codec worth comparing in the benchmark: (label, encode)."""
    codec = CODECS[codec_id]
    if codec_id == ZSTD:
        return [(f"zstd level {lvl}", lambda raw, dtype, lvl=lvl: zstd_compressor(lvl).compress(raw)) for lvl in (1, 3, -5)]
    if isinstance(codec, ByteGroupCodec):
        rows: list[tuple[str, Encode]] = [(f"{codec.name} (id {codec_id})", codec.encode)]
        if codec_id in (BYTEGROUP2, BYTEGROUP4):
            def level1(plane: bytes | memoryview) -> bytes:
                return zstd_compressor(1).compress(plane)

            slow = ByteGroupCodec(codec.codec_id, codec.word, codec.planes, level1, rotate=codec.rotate)
            rows.append((f"{codec.name} (zstd level 1 planes)", slow.encode))
        return rows
    return [(codec.name, codec.encode)]
