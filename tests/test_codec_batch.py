"""The batch encoder (codecs.encode_many): byte for byte what encode_chunk writes for
every chunk, on the C path and the forced fallback, whatever the dtypes, lengths and
contents of a block's chunks; and the C batch calls refuse inputs that are not theirs."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from objstore.storage import codecs

DTYPES = ["BF16", "F16", "F32", None, "I8"]


def chunk_bytes(kind: str, dtype: str | None, n: int, seed: int) -> bytes:
    """n bytes of a kind of chunk: weights (which pack and compress), noise (which
    do not), constant words, or weights whose bottom plane's low bits disagree."""
    rng = np.random.default_rng(seed)
    if kind == "noise":
        return rng.bytes(n)
    if kind == "zeros":
        return bytes(n)
    values = rng.standard_normal(n // 2 + 2, dtype=np.float32) * np.float32(0.02)
    if dtype == "F32":
        raw = values.astype("<f4").tobytes()
    elif dtype == "F16":
        raw = values.astype("<f2").tobytes()
    else:
        raw = (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    if kind == "mixed":
        raw = raw[: n // 2] + rng.bytes(n)
    return raw[:n]


def reference(items: list[tuple[bytes | memoryview, str | None]]) -> list[tuple[int, bytes]]:
    return [(cid, bytes(p)) for cid, p in (codecs.encode_chunk(raw, dtype) for raw, dtype in items)]


chunk = st.tuples(st.sampled_from(["weights", "noise", "zeros", "mixed"]), st.sampled_from(DTYPES),
                  st.one_of(st.integers(0, 600), st.integers(600, 70_000)), st.integers(0, 2**32 - 1))


@settings(max_examples=40, deadline=None)
@given(chunks=st.lists(chunk, max_size=12))
def test_a_batch_encodes_each_chunk_as_encode_chunk_does(chunks: list[tuple[str, str | None, int, int]]) -> None:
    # views into one buffer, as ingest hands them over
    raws = [chunk_bytes(kind, dtype, n, seed) for kind, dtype, n, seed in chunks]
    buf = memoryview(b"".join(raws))
    items: list[tuple[bytes | memoryview, str | None]] = []
    pos = 0
    for raw, (_, dtype, _, _) in zip(raws, chunks):
        items.append((buf[pos : pos + len(raw)], dtype))
        pos += len(raw)
    got = codecs.encode_many(items)
    assert [(cid, bytes(p)) for cid, p in got] == reference(items)
    for (cid, payload), raw in zip(got, raws):
        assert codecs.decode_chunk(cid, payload, len(raw)) == raw
        if cid == codecs.RAW:
            assert bytes(payload) == raw


def test_every_codec_path_is_taken_by_realistic_blocks() -> None:
    """bf16/fp32 weights packed and coded, fp16 (no packed plane), zstd, raw: one block each way."""
    items: list[tuple[bytes | memoryview, str | None]] = [
        (chunk_bytes("weights", "BF16", 131072, 1), "BF16"), (chunk_bytes("weights", "F32", 131072, 2), "F32"),
        (chunk_bytes("weights", "F16", 131072, 3), "F16"), (chunk_bytes("zeros", None, 5000, 4), None),
        (chunk_bytes("noise", "BF16", 131072, 5), "BF16"), (chunk_bytes("mixed", "BF16", 131072, 6), "BF16"),
        (chunk_bytes("weights", "BF16", 100, 7), "BF16"),
    ]
    got = codecs.encode_many(items)
    assert [cid for cid, _ in got] == [codecs.ROTGROUP2, codecs.ROTGROUP4, codecs.BYTEGROUP2, codecs.ZSTD, codecs.RAW,
                                       codecs.ROTGROUP2, codecs.RAW]
    assert [(cid, bytes(p)) for cid, p in got] == reference(items)


def test_a_policy_with_two_candidates_is_honoured_chunk_by_chunk() -> None:
    class Both:
        def candidates(self, dtype: str | None) -> tuple[int, ...]:
            return (codecs.ZSTD, codecs.ROTGROUP2)

    items: list[tuple[bytes | memoryview, str | None]] = [(chunk_bytes("weights", "BF16", 65536, 8), "BF16"),
                                                          (bytes(70000), "BF16")]
    got = codecs.encode_many(items, Both())
    assert got == [codecs.encode_chunk(raw, dtype, Both()) for raw, dtype in items]


@pytest.mark.skipif(codecs.PLANES_IMPLEMENTATION != "native", reason="the C transforms are not built")
def test_the_c_batch_calls_refuse_what_is_not_theirs() -> None:
    from objstore.storage import _planes  # type: ignore[attr-defined,unused-ignore]

    raws = [chunk_bytes("weights", "BF16", 4096, 9), chunk_bytes("weights", "BF16", 2048, 10)]
    need = _planes.split_batch_scratch(raws, 2, 1)
    with pytest.raises(ValueError):
        _planes.split_batch(raws, 2, 3, 3, 1, 256, bytearray(need - 1))
    with pytest.raises(ValueError):
        _planes.split_batch(raws, 2, 3, 4, 1, 256, bytearray(need))  # no plane 2 in a 2-byte word
    with pytest.raises(ValueError):
        _planes.split_batch(raws, 3, 3, 1, 1, 256, bytearray(need))
    scratch = bytearray(need)
    plan, segments = _planes.split_batch(raws, 2, 3, 3, 1, 256, scratch)
    frames = [bytes(8)] * (len(segments) // 16)
    for bad in ([raws[0]], [raws[1], raws[0]]):
        with pytest.raises(ValueError):
            _planes.assemble_batch(plan, bad, scratch, frames, 0.02)
    with pytest.raises(ValueError):
        _planes.assemble_batch(plan, raws, scratch, frames + [b""], 0.02)
    with pytest.raises(ValueError):
        _planes.assemble_batch(plan, raws, bytearray(need - 1), frames, 0.02)
    with pytest.raises(ValueError):
        _planes.assemble_batch(object(), raws, scratch, frames, 0.02)


def test_multi_compress_frames_are_those_of_compress() -> None:
    """The batch relies on this: python-zstandard's one-call batch writes each frame
    exactly as compress() does with the same compressor."""
    planes = [chunk_bytes(kind, "BF16", n, s) for s, (kind, n) in
              enumerate([("weights", 65536), ("noise", 1000), ("zeros", 300), ("weights", 262144)])]
    for comp in (codecs.plane_compressor(), codecs.zstd_compressor()):
        coded = comp.multi_compress_to_buffer(list[bytes | bytearray | memoryview](planes))
        assert [coded[i].tobytes() for i in range(len(coded))] == [comp.compress(p) for p in planes]


def test_forced_fallback_batches_write_the_same_payloads() -> None:
    """OBJSTORE_NATIVE=0: encode_many is encode_chunk per chunk in numpy, and writes the same bytes."""
    script = (
        "import hashlib\n"
        "from objstore.storage import codecs\n"
        "from tests.test_codec_batch import realistic_items\n"
        "h = hashlib.sha256()\n"
        "for cid, p in codecs.encode_many(realistic_items()):\n"
        "    h.update(bytes([cid]) + bytes(p))\n"
        "print(codecs.PLANES_IMPLEMENTATION, h.hexdigest())\n"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", script], env={**os.environ, "OBJSTORE_NATIVE": "0"}, cwd=root,
                         capture_output=True, text=True, check=True).stdout.split()
    h = hashlib.sha256()
    for cid, p in codecs.encode_many(realistic_items()):
        h.update(bytes([cid]) + bytes(p))
    assert out == ["python", h.hexdigest()]


def realistic_items() -> list[tuple[bytes | memoryview, str | None]]:
    return [(chunk_bytes(kind, dtype, n, i), dtype) for i, (kind, dtype, n) in enumerate(
        [("weights", "BF16", 131072), ("weights", "F32", 131072), ("weights", "F16", 65536), ("zeros", None, 4000),
         ("noise", "F32", 9000), ("mixed", "BF16", 131072), ("weights", "BF16", 511), ("weights", "BF16", 131073)])]


assert zstandard.backend in ("cext", "cffi")


@pytest.mark.skipif(codecs.PLANES_IMPLEMENTATION != "native", reason="the C transforms are not built")
def test_the_portable_c_loops_write_what_the_wide_ones_do() -> None:
    """OBJSTORE_PLANES_PORTABLE=1 turns off the AVX2 split and BMI2 packing: same payloads, same planes."""
    script = (
        "import hashlib\n"
        "from objstore.storage import codecs\n"
        "from tests.test_codec_batch import realistic_items\n"
        "h = hashlib.sha256()\n"
        "for cid, p in codecs.encode_many(realistic_items()):\n"
        "    h.update(bytes([cid]) + bytes(p))\n"
        "for raw, _ in realistic_items():\n"
        "    for w, r in ((2, 0), (2, 3), (2, 15), (4, 0), (4, 3), (4, 31)):\n"
        "        for k in range(1, 40):\n"
        "            h.update(b''.join(codecs._PLANES.split(raw[:k * w + k % w], w, r)))\n"
        "        h.update(b''.join(codecs._PLANES.split(raw, w, r)))\n"
        "    for k in (0, 1, 7, 8, 9, 15, 16, 17, 33, len(raw)):\n"
        "        h.update(codecs.pack6(bytes(b & 0xFC for b in raw[:k])) or b'-')\n"
        "print(codecs.PLANES_IMPLEMENTATION, h.hexdigest())\n"
    )
    root = Path(__file__).resolve().parent.parent
    outs = [subprocess.run([sys.executable, "-c", script], env={**os.environ, "OBJSTORE_PLANES_PORTABLE": flag}, cwd=root,
                           capture_output=True, text=True, check=True).stdout.split() for flag in ("0", "1")]
    assert outs[0] == outs[1] and outs[0][0] == "native"


# -- the one-call batch encoder (encode_many with a pooled ``out``; issue 12) --

needs_batch_into = pytest.mark.skipif(not codecs.BATCH_INTO, reason="the C batch encoder is not built")


@needs_batch_into
@settings(max_examples=60, deadline=None)
@given(chunks=st.lists(chunk, max_size=12), slack=st.integers(0, 64))
def test_one_call_batches_into_a_pooled_buffer_write_what_encode_chunk_does(
        chunks: list[tuple[str, str | None, int, int]], slack: int) -> None:
    raws = [chunk_bytes(kind, dtype, n, seed) for kind, dtype, n, seed in chunks]
    buf = memoryview(b"".join(raws))
    items: list[tuple[bytes | memoryview, str | None]] = []
    pos = 0
    for raw in raws:
        items.append((buf[pos : pos + len(raw)], chunks[len(items)][1]))
        pos += len(raw)
    out = bytearray(b"\xa5" * (pos + slack))  # stale bytes from an earlier use: payloads must not depend on them
    got = codecs.encode_many(items, out=out)
    assert [(cid, bytes(p)) for cid, p in got] == reference(items)
    for (cid, payload), raw in zip(got, raws):
        assert codecs.decode_chunk(cid, payload, len(raw)) == raw
        if cid != codecs.RAW:
            assert isinstance(payload, memoryview) and payload.obj is out  # laid out in the caller's buffer


@needs_batch_into
def test_one_call_batches_take_every_codec_path_and_stay_inside_out() -> None:
    items = realistic_items() + [(chunk_bytes("weights", "BF16", 262144, 20), "BF16"), (bytes(262144), None)]
    total = sum(len(raw) for raw, _ in items)
    out = bytearray(total)
    got = codecs.encode_many(items, out=out)
    assert [(cid, bytes(p)) for cid, p in got] == reference(items)
    assert {cid for cid, _ in got} == {codecs.ROTGROUP2, codecs.ROTGROUP4, codecs.BYTEGROUP2, codecs.ZSTD, codecs.RAW}
    coded = [p for cid, p in got if cid != codecs.RAW]
    # the payloads tile the start of out, none overlapping another (in codec groups' order)
    base = np.frombuffer(out, np.uint8).ctypes.data
    spans = sorted((np.frombuffer(p, np.uint8).ctypes.data - base, len(p)) for p in coded)
    at = 0
    for start, n in spans:
        assert start == at
        at += n
    assert at <= total


@needs_batch_into
def test_the_one_call_encoder_refuses_a_buffer_too_small_and_bad_masks() -> None:
    from objstore.storage import _planes  # type: ignore[attr-defined,unused-ignore]

    raws = [chunk_bytes("weights", "BF16", 65536, 11), bytes(30000)]
    with pytest.raises(ValueError, match="too small"):
        _planes.encode_batch(raws, 2, 3, 3, 1, 256, 0, 0.02, bytearray(100))
    with pytest.raises(ValueError, match="too small"):
        _planes.encode_batch([bytes(30000)], 0, 0, 0, -1, 0, 3, 0.02, bytearray(5))
    with pytest.raises(ValueError):
        _planes.encode_batch(raws, 2, 3, 4, 1, 256, 0, 0.02, bytearray(1 << 20))
    with pytest.raises(ValueError):
        _planes.encode_batch(raws, 3, 3, 1, 1, 256, 0, 0.02, bytearray(1 << 20))
    with pytest.raises(TypeError):
        _planes.encode_batch(raws, 2, 3, 3, 1, 256, 0, 0.02, b"read-only")


def test_the_vendored_zstd_is_the_wheels_or_the_one_call_encoder_is_off() -> None:
    if codecs.PLANES_IMPLEMENTATION != "native":
        assert not codecs.BATCH_INTO
        return
    from objstore.storage import _planes  # type: ignore[attr-defined,unused-ignore]

    assert codecs.BATCH_INTO == (tuple(_planes.zstd_version()) == tuple(zstandard.ZSTD_VERSION))


def test_an_out_buffer_too_small_for_the_batch_is_not_used() -> None:
    items = realistic_items()
    out = bytearray(100)
    got = codecs.encode_many(items, out=out)
    assert [(cid, bytes(p)) for cid, p in got] == reference(items)
    assert all(not isinstance(p, memoryview) or p.obj is not out for _, p in got)
