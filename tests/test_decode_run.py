"""The native run decoder (codecs.decode_run, odb.decode_verified_run) against the
reference (codecs.decode_chunk + the id check, chunk by chunk).

Properties: on every run the encoders write, the native decoder takes the run (it
is not silently always falling back) and gives the reference's bytes; on any run,
damaged in any way, what the native decoder accepts the reference accepts too, with
the same bytes (so a transfer never copies a record some reader refuses); a run it
refuses is decoded by the reference, which raises the usual CorruptObject.
"""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Iterator

import numpy as np
import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from objstore.errors import CorruptObject
from objstore.storage import codecs
from objstore.storage.ids import Kind, ObjectId, hash_bytes, key_of
from objstore.storage.odb import RUN_DECODE_LIMIT, ChunkLocation, decode_verified_run

KEY = key_of(Kind.CHUNK)
native = pytest.mark.skipif(codecs.RUN_DECODER_IMPLEMENTATION != "native", reason="the C extension is not built")


def weights(rng: np.random.Generator, dtype: str, nbytes: int) -> bytes:
    if dtype == "F32":
        data = rng.normal(0, 0.02, nbytes // 4 + 1).astype("<f4").tobytes()
    elif dtype == "F16":
        data = rng.normal(0, 0.02, nbytes // 2 + 1).astype("<f2").tobytes()
    elif dtype == "BF16":
        data = (rng.normal(0, 0.02, nbytes // 2 + 1).astype("<f4").view("<u4") >> 16).astype("<u2").tobytes()
    else:
        data = rng.integers(0, 4, nbytes, dtype=np.uint8).tobytes()  # compressible, not a float
    return data[:nbytes]


def encoded_run(seed: int, specs: list[tuple[str | None, int]]) -> tuple[list[bytes], list[int], list[bytes | memoryview], bytes]:
    rng = np.random.default_rng(seed)
    raws: list[bytes] = []
    cids: list[int] = []
    payloads: list[bytes | memoryview] = []
    for dtype, n in specs:
        raw = weights(rng, dtype or "", n)
        cid, payload = codecs.encode_chunk(raw, dtype)
        raws.append(raw)
        cids.append(cid)
        payloads.append(bytes(payload))
    ids = b"".join(hash_bytes(Kind.CHUNK, r).raw for r in raws)
    return raws, cids, payloads, ids


def reference(cids: list[int], payloads: list[bytes | memoryview], lens: list[int], ids: bytes) -> list[bytes] | None:
    """Each chunk decoded and checked by the reference; None if it refuses any."""
    out = []
    for i, (cid, p, n) in enumerate(zip(cids, payloads, lens)):
        try:
            raw = codecs.decode_chunk(cid, p, n)
        except (CorruptObject, ValueError):
            return None
        if hash_bytes(Kind.CHUNK, raw).raw != ids[32 * i : 32 * i + 32]:
            return None
        out.append(raw)
    return out


@contextlib.contextmanager
def decoder(one_call: bool) -> Iterator[None]:
    """decode_run with the one-call C decoder (vendored zstd inside the C call), or the
    three-call one (run_frames, python-zstandard, finish_run) when ``one_call`` is False."""
    was = codecs.ONE_CALL_DECODE
    codecs.ONE_CALL_DECODE = one_call and was
    try:
        yield
    finally:
        codecs.ONE_CALL_DECODE = was


SPECS = st.lists(st.tuples(st.sampled_from(["BF16", "F32", "F16", None]), st.integers(0, 70_000)), min_size=1, max_size=6)


@native
@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), specs=SPECS, one_call=st.booleans())
def test_native_run_decoder_takes_written_runs_and_matches_the_reference(seed: int, specs: list[tuple[str | None, int]],
                                                                        one_call: bool) -> None:
    raws, cids, payloads, ids = encoded_run(seed, specs)
    lens = [len(r) for r in raws]
    out = bytearray()
    out.extend(bytes(sum(lens)))
    with decoder(one_call):
        assert codecs.decode_run(KEY, payloads, cids, lens, ids, out)
    assert bytes(out) == b"".join(raws) == b"".join(reference(cids, payloads, lens, ids) or [b"refused"])


def mutate(data: bytes, how: str, pos: int, value: int) -> bytes:
    if not data:
        return bytes([value])
    pos %= len(data)
    if how == "flip":
        return data[:pos] + bytes([data[pos] ^ (value or 1)]) + data[pos + 1 :]
    if how == "truncate":
        return data[:pos]
    if how == "extend":
        return data + bytes([value]) * (pos % 9 + 1)
    return data[:pos] + bytes([value]) + data[pos:]  # insert


@native
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), specs=SPECS, victim=st.integers(0, 5),
       how=st.sampled_from(["flip", "truncate", "extend", "insert", "codec", "raw_len", "header"]),
       pos=st.integers(0, 2**20), value=st.integers(0, 255), one_call=st.booleans())
def test_native_run_decoder_accepts_only_what_the_reference_accepts(seed: int, specs: list[tuple[str | None, int]], victim: int,
                                                                    how: str, pos: int, value: int, one_call: bool) -> None:
    raws, cids, payloads, ids = encoded_run(seed, specs)
    lens = [len(r) for r in raws]
    v = victim % len(raws)
    if how == "codec":
        cids[v] = value % 8
    elif how == "raw_len":
        lens[v] = max(0, lens[v] + (value - 128))
    elif how == "header":
        payloads[v] = mutate(bytes(payloads[v]), "flip", pos % 16, value)
    else:
        payloads[v] = mutate(bytes(payloads[v]), how, pos, value)
    out = bytearray(sum(lens))
    with decoder(one_call):
        took = codecs.decode_run(KEY, payloads, cids, lens, ids, out)
    ref = reference(cids, payloads, lens, ids)
    if took:
        assert ref is not None, "the native decoder accepted a run the reference refuses"
        assert bytes(out[: sum(lens)]) == b"".join(ref)


def _frames_without_size(raw: bytes) -> bytes:
    """A rotgroup2 payload whose compressed plane is a zstd frame that declares no size."""
    codec = codecs.CODECS[codecs.ROTGROUP2]
    assert isinstance(codec, codecs.ByteGroupCodec)
    planes = codec.split(raw)
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(planes[1])
    return b"".join([struct.pack("<BBB", 2, 0b10, 0), struct.pack("<I", len(frame)), bytes(planes[0]), frame])


@native
def test_a_frame_that_declares_no_size_goes_to_the_reference() -> None:
    raw = weights(np.random.default_rng(3), "BF16", 8192)
    payload = _frames_without_size(raw)
    assert codecs.decode_chunk(codecs.ROTGROUP2, payload, len(raw)) == raw
    ids = hash_bytes(Kind.CHUNK, raw).raw
    assert not codecs.decode_run(KEY, [payload], [codecs.ROTGROUP2], [len(raw)], ids, bytearray(len(raw)))
    loc = ChunkLocation("p" * 64, 0, len(payload), len(raw), codecs.ROTGROUP2)
    chunks = decode_verified_run([(ObjectId(ids), loc)], [payload], lambda _: "here", bytearray())
    assert bytes(chunks[0]) == raw


@native
def test_the_one_call_decoder_is_the_one_built() -> None:
    """With both extensions built, decode_run decodes the frames inside the C call
    (vendored zstd), not through python-zstandard: the tests above then test it."""
    assert codecs.ONE_CALL_DECODE == (codecs.PLANES_IMPLEMENTATION == "native")


@native
@pytest.mark.parametrize("one_call", [True, False])
@pytest.mark.parametrize("extra", [b"", b"\x00", None])
def test_bytes_after_a_frame_are_the_reference_s_to_judge(one_call: bool, extra: bytes | None) -> None:
    """A zstd chunk whose payload holds more than its one frame (a second frame, one
    byte): python-zstandard decodes the first frame and ignores the rest, so the C
    decoder does not judge such a payload itself; the run goes to the reference and
    decode_verified_run returns the reference's answer, whatever it is."""
    raw = weights(np.random.default_rng(7), None, 20_000)
    frame = zstandard.ZstdCompressor(level=3).compress(raw)
    payload = frame + (frame if extra is None else extra)  # None: a second frame
    ids = hash_bytes(Kind.CHUNK, raw).raw
    loc = ChunkLocation("c" * 64, 0, len(payload), len(raw), codecs.ZSTD)
    ref = reference([codecs.ZSTD], [payload], [len(raw)], ids)
    with decoder(one_call):
        took = codecs.decode_run(KEY, [payload], [codecs.ZSTD], [len(raw)], ids, bytearray(len(raw)))
        if one_call:
            assert took == (extra == b"")
        try:
            got: list[bytes] | None = [bytes(c) for c in decode_verified_run([(ObjectId(ids), loc)], [payload],
                                                                              lambda _: "here", bytearray())]
        except CorruptObject:
            got = None
    assert got == ref


def test_decode_verified_run_refuses_damage_with_the_reference_error() -> None:
    """Whatever decoder is built: a chunk that does not hash to its id is named in the error."""
    raws, cids, payloads, ids = encoded_run(5, [("BF16", 65536), ("BF16", 65536)])
    bad_ids = ids[:32] + bytes(32)
    located = [(ObjectId(bad_ids[32 * i : 32 * i + 32]), ChunkLocation("a" * 64, 0, len(p), len(r), c))
               for i, (r, c, p) in enumerate(zip(raws, cids, payloads))]
    with pytest.raises(CorruptObject, match="does not hash to its id") as exc:
        decode_verified_run(located, payloads, lambda loc: f"pack {loc.pack[:16]}", bytearray())
    assert exc.value.object_id == bytes(32).hex()


def test_a_run_claiming_more_than_the_limit_is_left_to_the_reference() -> None:
    """Index entries are untrusted: a run whose claimed raw lengths add up past
    RUN_DECODE_LIMIT is not allocated at once; the reference then refuses it chunk by chunk."""
    n = RUN_DECODE_LIMIT // (8 << 20) + 2
    payload = zstandard.ZstdCompressor().compress(b"x" * 100)
    located = [(ObjectId(bytes(32)), ChunkLocation("b" * 64, 0, len(payload), 8 << 20, codecs.ZSTD)) for _ in range(n)]
    out = bytearray()
    with pytest.raises(CorruptObject, match="declares 100 bytes"):
        decode_verified_run(located, [payload] * n, lambda _: "here", out)
    assert len(out) == 0


@native
@pytest.mark.parametrize("damaged", [False, True])
def test_a_frame_with_a_checksum_is_checked_by_both_paths(damaged: bool) -> None:
    """A zstd frame carrying its content checksum (objstore writes none, another
    writer may): decoded in the C call when intact; when its checksum is wrong, the
    C call does not take it and the reference refuses it."""
    raw = weights(np.random.default_rng(11), None, 30_000)
    frame = bytearray(zstandard.ZstdCompressor(level=3, write_checksum=True).compress(raw))
    if damaged:
        frame[-1] ^= 0x40
    payload = bytes(frame)
    ids = hash_bytes(Kind.CHUNK, raw).raw
    for one_call in (True, False):
        with decoder(one_call):
            out = bytearray(len(raw))
            took = codecs.decode_run(KEY, [payload], [codecs.ZSTD], [len(raw)], ids, out)
        assert took == (not damaged)
        if took:
            assert bytes(out) == raw
    assert (reference([codecs.ZSTD], [payload], [len(raw)], ids) is None) == damaged
