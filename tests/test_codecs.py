"""Codecs: every codec round-trips any bytes exactly; float planes pay; nothing
that does not shrink is stored encoded; damaged payloads are errors."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from objstore.errors import CorruptObject
from objstore.storage import codecs

DTYPES = ["BF16", "F16", "F32", None, "I8"]


def floats(dtype: str, n: int, seed: int, scale: float = 0.02) -> bytes:
    values = np.random.default_rng(seed).standard_normal(n, dtype=np.float32) * np.float32(scale)
    if dtype == "BF16":
        return (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    return values.astype({"F16": "<f2", "F32": "<f4"}[dtype]).tobytes()


@settings(max_examples=150, deadline=None)
@given(data=st.binary(max_size=20_000), dtype=st.sampled_from(DTYPES))
def test_every_codec_round_trips_random_bytes(data: bytes, dtype: str | None) -> None:
    for codec in codecs.CODECS.values():
        stored = codec.encode(data, dtype)
        if stored is None:
            continue  # the codec declined: the caller stores the chunk another way
        assert codec.decode(stored, len(data)) == data, codec.name
    codec_id, stored = codecs.encode_chunk(data, dtype)
    assert codecs.decode_chunk(codec_id, stored, len(data)) == data


@settings(max_examples=80, deadline=None)
@given(dtype=st.sampled_from(["BF16", "F16", "F32"]), n=st.integers(0, 40_000), extra=st.integers(0, 3),
       seed=st.integers(0, 2**32 - 1), scale=st.sampled_from([0.02, 1.0, 1e-6, 0.0]))
def test_float_arrays_round_trip_including_odd_lengths(dtype: str, n: int, extra: int, seed: int, scale: float) -> None:
    raw = floats(dtype, n, seed, scale) + os.urandom(extra)
    for codec in codecs.CODECS.values():
        stored = codec.encode(raw, dtype)
        if stored is not None:
            assert codec.decode(stored, len(raw)) == raw
    codec_id, stored = codecs.encode_chunk(raw, dtype)
    assert codecs.decode_chunk(codec_id, stored, len(raw)) == raw
    assert len(stored) <= len(raw)


@pytest.mark.parametrize(
    "dtype,codec_id,most", [("BF16", codecs.ROTGROUP2, 0.70), ("F32", codecs.ROTGROUP4, 0.85), ("F16", codecs.BYTEGROUP2, 0.90)]
)
def test_bytegroup_pays_on_trained_looking_weights(dtype: str, codec_id: int, most: float) -> None:
    raw = floats(dtype, 32_768 if dtype != "F32" else 16_384, seed=5)
    chosen, stored = codecs.encode_chunk(raw, dtype)
    assert chosen == codec_id, "the default policy should pick a byte-plane codec for float tensors"
    assert len(stored) / len(raw) <= most
    # and it beats plain zstd on the same chunk
    assert len(stored) < len(codecs.CODECS[codecs.ZSTD].encode(raw, dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_incompressible_chunks_are_stored_raw(dtype: str | None) -> None:
    raw = os.urandom(65_536)
    codec_id, stored = codecs.encode_chunk(raw, dtype)
    assert codec_id == codecs.RAW
    assert bytes(stored) == raw
    assert codecs.CODECS[codecs.BYTEGROUP2].encode(raw, dtype) is None  # no plane paid


def test_bytegroup_keeps_planes_that_do_not_pay_raw() -> None:
    raw = floats("BF16", 20_000, seed=1)
    stored = codecs.CODECS[codecs.BYTEGROUP2].encode(raw, "BF16")
    assert stored is not None
    word, mask = stored[0], stored[1]
    assert (word, mask) == (2, 0b10), "only the sign/exponent plane should be compressed"
    low_plane = np.frombuffer(raw, dtype="<u2").astype(np.uint8).tobytes()
    assert low_plane in stored, "the mantissa plane should be stored as it is"


@pytest.mark.parametrize("codec_id", [codecs.ZSTD, codecs.BYTEGROUP2, codecs.BYTEGROUP4, codecs.ROTGROUP2, codecs.ROTGROUP4])
def test_damaged_payloads_raise(codec_id: int) -> None:
    raw = floats("F32", 8_192, seed=2)
    stored = codecs.CODECS[codec_id].encode(raw, "F32")
    assert stored is not None
    damaged = [stored[: len(stored) // 2], stored[:1], b"\x07\x01" + stored[2:]]
    if codec_id != codecs.ZSTD:
        damaged.append(stored + b"xx")  # zstd ignores bytes after its frame; the chunk hash still catches them
    for bad in damaged:
        with pytest.raises(CorruptObject):
            out = codecs.decode_chunk(codec_id, bad, len(raw))
            # a payload that still decodes must not silently yield other bytes of the right size
            if out != raw:
                raise CorruptObject("decoded to different bytes")
    with pytest.raises(CorruptObject):
        codecs.decode_chunk(99, stored, len(raw))
