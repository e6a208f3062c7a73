"""Per-chunk encodings, chosen chunk by chunk.

A codec turns a chunk's raw bytes into what is stored and back. The chunk's id
is always the hash of the raw bytes (checked on every read, above this layer),
so a codec can never change what a reader gets, only how many bytes are kept.
A chunk that does not shrink by ``MIN_SAVING`` is stored raw.

Codec ids are part of the pack format: never renumber one.
"""

from __future__ import annotations

import threading
from typing import Protocol

import zstandard

from . import constants
from .errors import CorruptObject

RAW = 0
ZSTD = 1


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


def zstd_decompress(stored: bytes | memoryview, raw_len: int) -> bytes:
    try:
        out = zstd_decompressor().decompress(stored, max_output_size=raw_len)
    except zstandard.ZstdError as exc:
        raise CorruptObject(f"a zstd payload does not decode: {exc}") from exc
    if len(out) != raw_len:
        raise CorruptObject(f"a zstd payload decoded to {len(out)} bytes, expected {raw_len}")
    return out


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


CODECS: dict[int, Codec] = {RAW: RawCodec(), ZSTD: ZstdCodec()}


def register(codec: Codec) -> None:
    """Add a codec (a new id only: stored data names codecs by id)."""
    existing = CODECS.get(codec.codec_id)
    if existing is not None and existing.name != codec.name:
        raise ValueError(f"codec id {codec.codec_id} is already {existing.name}")
    CODECS[codec.codec_id] = codec


def codec_name(codec_id: int) -> str:
    codec = CODECS.get(codec_id)
    return codec.name if codec else f"unknown({codec_id})"


class CodecPolicy(Protocol):
    def candidates(self, dtype: str | None) -> tuple[int, ...]: ...


class DefaultPolicy:
    """Which codecs to try for a chunk: zstd for everything (float tensors may get more)."""

    def candidates(self, dtype: str | None) -> tuple[int, ...]:
        return (ZSTD,)


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


def decode_chunk(codec_id: int, stored: bytes | memoryview, raw_len: int) -> bytes:
    codec = CODECS.get(codec_id)
    if codec is None:
        raise CorruptObject(f"a chunk names codec {codec_id}, which this objstore does not know; upgrade objstore")
    return codec.decode(stored, raw_len)


DEFAULT_POLICY: CodecPolicy = DefaultPolicy()
