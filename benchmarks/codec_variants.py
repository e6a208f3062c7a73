"""Settings of each codec worth comparing in the benchmark (``--only codecs``).

Moved out of :mod:`objstore.storage.codecs`: the library ships the codecs it
uses, not the variants only a benchmark measures.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from objstore.storage.codecs import CODECS, ZSTD, ByteGroupCodec, zstd_compressor


def benchmark_variants(codec_id: int) -> list[tuple[str, Callable[[bytes | memoryview, str | None], bytes | None]]]:
    """Settings of one codec worth comparing in the benchmark: (label, encode)."""
    codec = CODECS[codec_id]
    if codec_id == ZSTD:
        return [(f"zstd level {lvl}", lambda raw, dtype, lvl=lvl: zstd_compressor(lvl).compress(raw)) for lvl in (1, 3, -5)]
    if isinstance(codec, ByteGroupCodec):
        def level1(plane: np.ndarray) -> bytes:
            return zstd_compressor(1).compress(plane)

        slow = ByteGroupCodec(codec.codec_id, codec.word, codec.planes, level1)
        return [(f"{codec.name} (entropy-stage zstd, default)", codec.encode), (f"{codec.name} (zstd level 1 planes)", slow.encode)]
    return [(codec.name, codec.encode)]
