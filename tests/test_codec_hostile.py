"""Codec ids 4/5 on hostile payloads, decoded by both byte-plane paths (the C
extension objstore.storage._planes and the numpy fallback): each damaged payload
is refused by both (CorruptObject, nothing else) or decoded by both to the same
bytes, and a declared size no buffer can have is refused without arithmetic
overflow in the C code."""

from __future__ import annotations

import sys
from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from objstore.errors import CorruptObject
from objstore.storage import codecs

ROTATED = [codecs.ROTGROUP2, codecs.ROTGROUP4]
needs_native = pytest.mark.skipif(codecs.PLANES_IMPLEMENTATION != "native", reason="objstore.storage._planes is not built")


def _payload(codec_id: int, seed: int) -> tuple[bytes, bytes]:
    word = codecs.CODECS[codec_id].word  # type: ignore[attr-defined]
    rng = np.random.default_rng(seed)
    weights = (rng.standard_normal(1500, dtype=np.float32) * 0.02).astype("<f4")
    raw = (weights.view("<u4") >> 16).astype("<u2").tobytes() if word == 2 else weights.tobytes()
    raw += bytes(seed % word)  # a tail
    stored = codecs.CODECS[codec_id].encode(raw, None)
    assert stored is not None
    return raw, bytes(stored)


def _decode(codec_id: int, payload: bytes, raw_len: int) -> bytes | str:
    try:
        return codecs.decode_chunk(codec_id, payload, raw_len)
    except CorruptObject:
        return "corrupt"


@pytest.fixture
def fallback() -> Iterator[None]:
    saved = codecs._PLANES
    yield
    codecs._PLANES = saved


@needs_native
@settings(max_examples=120, deadline=None)
@given(codec_id=st.sampled_from(ROTATED), seed=st.integers(0, 7), data=st.data())
def test_damaged_payloads_decode_alike_on_both_paths(codec_id: int, seed: int, data: st.DataObject) -> None:
    raw, stored = _payload(codec_id, seed)
    damaged = bytearray(stored)
    for _ in range(data.draw(st.integers(1, 3))):
        pos = data.draw(st.integers(0, len(damaged) - 1)) if damaged else 0
        action = data.draw(st.sampled_from(["flip", "drop", "insert", "truncate"]))
        if action == "flip" and damaged:
            damaged[pos] ^= data.draw(st.integers(1, 255))
        elif action == "drop" and damaged:
            del damaged[pos]
        elif action == "truncate":
            del damaged[pos:]
        else:
            damaged.insert(pos, data.draw(st.integers(0, 255)))
    raw_len = data.draw(st.sampled_from([len(raw), len(raw) - 1, len(raw) + 1, 0, 1 << 40]))
    native = _decode(codec_id, bytes(damaged), raw_len)
    saved = codecs._PLANES
    try:
        codecs._PLANES = None
        python = _decode(codec_id, bytes(damaged), raw_len)
    finally:
        codecs._PLANES = saved
    assert native == python


@pytest.mark.parametrize("path", ["native", "python"])
def test_unpack6_refuses_sizes_no_buffer_has(path: str, fallback: None) -> None:
    """m + 3 overflowed a signed size in the C check (UBSan: undefined behaviour) before the fix."""
    if path == "native" and codecs.PLANES_IMPLEMENTATION != "native":
        pytest.skip("objstore.storage._planes is not built")
    if path == "python":
        codecs._PLANES = None
    for m in (sys.maxsize, sys.maxsize - 2, -1, 1 << 62):
        with pytest.raises(CorruptObject):
            codecs.unpack6(b"\x00", m)


@needs_native
@settings(max_examples=200, deadline=None)
@given(m=st.integers(0, 40), packed=st.binary(max_size=40), exact=st.booleans())
def test_unpack6_alike_on_both_paths_for_any_bytes(m: int, packed: bytes, exact: bool) -> None:
    if exact:  # the right length, any content (bad low value, nonzero padding)
        packed = (packed * 40)[: 1 + 3 * ((m + 3) // 4)] if packed else bytes(1 + 3 * ((m + 3) // 4))
    results: list[bytes | str] = []
    saved = codecs._PLANES
    try:
        for planes in (saved, None):
            codecs._PLANES = planes
            try:
                results.append(codecs.unpack6(packed, m))
            except CorruptObject:
                results.append("corrupt")
    finally:
        codecs._PLANES = saved
    assert results[0] == results[1]
