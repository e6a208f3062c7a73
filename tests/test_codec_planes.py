"""The rotated byte-plane codecs (ids 4, 5): their bit layout, the 6-bit packing of
a plane whose low bits agree, exact round trips of any words, decoding of recorded
payloads (the format is pinned), refusal of hostile payloads without allocating
more than the chunk they claim to be, and the C transforms equal to numpy's."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import blake3
import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from objstore.errors import CorruptObject
from objstore.storage import codecs

ROTATED = [codecs.ROTGROUP2, codecs.ROTGROUP4]
GOLDEN = Path(__file__).parent / "golden" / "codec_planes_v1.json"


def words_like_weights(seed: str, n: int, word: int) -> bytes:
    """Float words with the sign random, exponents in a narrow band, mantissas random,
    from integer arithmetic only (the same bytes on every machine)."""
    r = np.frombuffer(blake3.blake3(seed.encode()).digest(length=8 * n), dtype="<u8") >> np.uint64(1)
    bits, exp_bits, lo, span = (16, 8, 118, 7) if word == 2 else (32, 8, 116, 9)
    mant = bits - 1 - exp_bits
    sign = (r >> np.uint64(40)) & np.uint64(1)
    exp = np.uint64(lo) + r % np.uint64(span)
    w = (sign << np.uint64(bits - 1)) | (exp << np.uint64(mant)) | ((r >> np.uint64(8)) & np.uint64((1 << mant) - 1))
    return w.astype("<u2" if word == 2 else "<u4").tobytes()


def rotl(value: int, r: int, bits: int) -> int:
    mask = (1 << bits) - 1
    return ((value << r) | (value >> (bits - r))) & mask if r else value


@pytest.mark.parametrize("codec_id", ROTATED)
def test_planes_are_the_bytes_of_the_rotated_words(codec_id: int) -> None:
    codec = codecs.CODECS[codec_id]
    assert isinstance(codec, codecs.ByteGroupCodec)
    w, r = codec.word, codec.rotate
    raw = os.urandom(w * 301)
    planes = [bytes(p) for p in codec.split(raw)]
    words = [int.from_bytes(raw[i : i + w], "little") for i in range(0, len(raw), w)]
    for k in range(w):
        assert planes[k] == bytes(rotl(x, r, 8 * w) >> (8 * k) & 0xFF for x in words)


def test_rotation_puts_the_exponent_where_the_layout_says() -> None:
    bf16 = 0b1_10110101_1100110  # sign 1, exponent 0xB5, mantissa 0x66
    raw = struct.pack("<H", bf16) * 300
    top, bottom = (bytes(p)[0] for p in reversed(codecs.ByteGroupCodec(99, 2, (1,), rotate=1).split(raw)))
    assert (top, bottom) == (0xB5, 0b1100110_1)  # exponent byte; mantissa then sign
    top, bottom = (bytes(p)[0] for p in reversed(codecs.CODECS[codecs.ROTGROUP2].split(raw)))
    assert top == 0b110101_11  # exponent's low 6 bits, mantissa's top 2
    assert bottom == 0b00110_1_10  # mantissa's low 5, sign, exponent's top 2


@settings(max_examples=60, deadline=None)
@given(codec_id=st.sampled_from(ROTATED), words=st.lists(st.integers(0, 2**32 - 1), max_size=3000),
       tail=st.binary(max_size=3), planes=st.sets(st.integers(0, 3)))
def test_any_words_round_trip_whatever_planes_are_compressed(codec_id: int, words: list[int], tail: bytes, planes: set[int]) -> None:
    base = codecs.CODECS[codec_id]
    assert isinstance(base, codecs.ByteGroupCodec)
    w = base.word
    codec = codecs.ByteGroupCodec(codec_id, w, tuple(k for k in planes if k < w), rotate=base.rotate,
                                  pack6=tuple(k for k in planes if k < w and k % 2 == 0))
    raw = b"".join((x & ((1 << (8 * w)) - 1)).to_bytes(w, "little") for x in words) + tail[: w - 1]
    stored = codec.encode(raw, None)
    if stored is not None:
        assert base.decode(stored, len(raw)) == raw  # the decoder reads the plane mask, not the encoder's settings


@settings(max_examples=100, deadline=None)
@given(values=st.lists(st.integers(0, 63), max_size=300), low=st.integers(0, 3))
def test_pack6_round_trips_planes_whose_low_bits_agree(values: list[int], low: int) -> None:
    plane = bytes(v << 2 | low for v in values)
    packed = codecs.pack6(plane)
    assert packed is not None and len(packed) == 1 + 3 * ((len(plane) + 3) // 4)
    assert codecs.unpack6(packed, len(plane)) == plane
    if len(plane) > 1:
        assert codecs.pack6(plane[:-1] + bytes([plane[-1] ^ 1])) is None  # one byte's low bits differ


def test_pack6_refuses_what_it_never_writes() -> None:
    plane = bytes(v << 2 | 1 for v in range(10))
    packed = codecs.pack6(plane)
    assert packed is not None
    for bad, m in [(packed[:-1], 10), (packed + b"\0", 10), (b"\x04" + packed[1:], 10), (packed, 9), (packed, 13), (b"", 0),
                   (packed[:-1] + bytes([packed[-1] | 0x80]), 10)]:  # the last group's padding bits set
        with pytest.raises(CorruptObject):
            codecs.unpack6(bad, m)


def test_bf16_weights_pack_the_bottom_plane() -> None:
    x = np.random.default_rng(3).standard_normal(32_768).astype(np.float32) * np.float32(0.02)
    raw = (x.view(np.uint32) >> 16).astype("<u2").tobytes()
    stored = codecs.CODECS[codecs.ROTGROUP2].encode(raw, "BF16")
    assert stored is not None and tuple(stored[:3]) == (2, 0b10, 0b01)  # top plane coded, bottom packed
    raw = raw[:-2] + struct.pack("<H", 0x4100)  # one weight of 8.0: its exponent's top bits differ
    stored = codecs.CODECS[codecs.ROTGROUP2].encode(raw, "BF16")
    assert stored is not None and tuple(stored[:3]) == (2, 0b11, 0)  # both planes coded instead
    assert codecs.CODECS[codecs.ROTGROUP2].decode(stored, len(raw)) == raw


@settings(max_examples=40, deadline=None)
@given(dtype=st.sampled_from(["BF16", "F32", "F16"]), n=st.integers(0, 20_000), seed=st.integers(0, 2**32 - 1),
       scale=st.sampled_from([0.02, 1.0, 3e4, 1e-30, 0.0]), specials=st.booleans())
def test_float_tensors_round_trip_through_the_default_policy(dtype: str, n: int, seed: int, scale: float, specials: bool) -> None:
    x = np.random.default_rng(seed).standard_normal(n).astype(np.float32) * np.float32(scale)
    if specials and n >= 7:
        x[:7] = [np.inf, -np.inf, np.nan, 0.0, -0.0, 1e-45, 3e38]  # infinities, NaN, signed zeros, a subnormal
    with np.errstate(over="ignore"):
        if dtype == "BF16":
            raw = (x.view(np.uint32) >> 16).astype("<u2").tobytes()
        else:
            raw = x.astype({"F16": "<f2", "F32": "<f4"}[dtype]).tobytes()
    codec_id, stored = codecs.encode_chunk(raw, dtype)
    assert codecs.decode_chunk(codec_id, stored, len(raw)) == raw
    assert len(stored) <= len(raw)


@pytest.mark.parametrize("dtype,codec_id,most", [("BF16", codecs.ROTGROUP2, 0.662), ("F32", codecs.ROTGROUP4, 0.833)])
def test_rotated_codec_beats_the_unrotated_one_on_normal_weights(dtype: str, codec_id: int, most: float) -> None:
    x = np.random.default_rng(7).standard_normal(32_768 if dtype == "BF16" else 16_384).astype(np.float32) * np.float32(0.02)
    raw = (x.view(np.uint32) >> 16).astype("<u2").tobytes() if dtype == "BF16" else x.tobytes()
    new = codecs.CODECS[codec_id].encode(raw, dtype)
    old = codecs.CODECS[codecs.BYTEGROUP2 if dtype == "BF16" else codecs.BYTEGROUP4].encode(raw, dtype)
    assert new is not None and old is not None
    assert len(new) < len(old)
    assert len(new) / len(raw) <= most


# ---- the pinned format ----------------------------------------------------------
def golden_cases() -> dict[str, tuple[int, bytes]]:
    return {f"{codec_id}/{n}+{extra}": (codec_id, words_like_weights(f"planes {codec_id} {n}", n, codecs.CODECS[codec_id].word)  # type: ignore[attr-defined]
                                         + b"\xa5" * extra)
            for codec_id in ROTATED for n, extra in ((300, 0), (1000, 1))}


def test_recorded_payloads_decode_to_their_bytes() -> None:
    cases = golden_cases()
    if os.environ.get("OBJSTORE_WRITE_GOLDEN") == "1":
        out = {}
        for name, (codec_id, raw) in cases.items():
            stored = codecs.CODECS[codec_id].encode(raw, None)
            assert stored is not None
            out[name] = {"codec": codec_id, "raw_len": len(raw), "payload": bytes(stored).hex()}
        GOLDEN.write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
    recorded = json.loads(GOLDEN.read_text())
    assert set(recorded) == set(cases)
    for name, (codec_id, raw) in cases.items():
        case = recorded[name]
        assert case["codec"] == codec_id and case["raw_len"] == len(raw)
        assert codecs.decode_chunk(codec_id, bytes.fromhex(case["payload"]), len(raw)) == raw, name


# ---- hostile payloads ------------------------------------------------------------
def _payload(codec_id: int) -> tuple[bytes, bytes]:
    raw = words_like_weights(f"hostile {codec_id}", 4096, codecs.CODECS[codec_id].word)  # type: ignore[attr-defined]
    stored = codecs.CODECS[codec_id].encode(raw, None)
    assert stored is not None
    return raw, bytes(stored)


@pytest.mark.parametrize("codec_id", ROTATED)
def test_hostile_headers_are_refused(codec_id: int) -> None:
    raw, stored = _payload(codec_id)
    w = stored[0]
    mask = stored[1]
    bad = [
        b"", stored[:1], stored[:2], stored[:5],  # truncated inside the header or the lengths
        bytes([w ^ 6]) + stored[1:],  # another word size
        stored[:1] + bytes([mask | 1 << w]) + stored[2:],  # a plane the word does not have
        stored[:2] + bytes([stored[2] | 1 << w]) + stored[3:],  # a packed plane the word does not have
        stored[:2] + bytes([stored[2] | mask]) + stored[3:],  # a plane both compressed and packed
        stored[:-1], stored + b"\x00",  # one byte short or long overall
        stored[:3] + struct.pack("<I", 0xFFFFFFFF) + stored[7:],  # a plane length past the end
        stored[:3] + struct.pack("<I", 0) + stored[7:],  # an empty compressed plane
    ]
    for payload in bad:
        with pytest.raises(CorruptObject):
            codecs.decode_chunk(codec_id, payload, len(raw))
    for raw_len in (len(raw) - 1, len(raw) + 1, len(raw) * 2, 0):
        with pytest.raises(CorruptObject):
            codecs.decode_chunk(codec_id, stored, raw_len)


@pytest.mark.parametrize("codec_id", ROTATED)
def test_a_plane_claiming_more_bytes_than_the_chunk_is_refused_before_allocating(codec_id: int) -> None:
    """A 4 TiB frame header, a frame declaring one byte more than its plane, and a
    frame declaring nothing that decodes past its plane: each is an error, none an
    allocation beyond the chunk."""
    raw, _ = _payload(codec_id)
    w = codecs.CODECS[codec_id].word  # type: ignore[attr-defined]
    m = len(raw) // w
    plane = bytes(codecs.CODECS[codec_id].split(raw)[w - 1])  # type: ignore[attr-defined]
    frames = [
        zstandard.ZstdCompressor().compress(plane + b"\x00"),  # declares m + 1
        zstandard.ZstdCompressor(write_content_size=False).compress(plane + plane),  # declares nothing, holds 2m
        zstandard.ZstdCompressor(write_content_size=False).compress(plane[:-1]),  # declares nothing, holds m - 1
    ]
    huge = bytearray(zstandard.ZstdCompressor().compress(b"\x00" * 1000))
    frames.append(bytes(huge))  # declares 1000 bytes, not m
    for frame in frames:
        mask = 1 << (w - 1)
        others = b"".join(bytes(p) for p in codecs.CODECS[codec_id].split(raw)[: w - 1])  # type: ignore[attr-defined]
        payload = bytes([w, mask, 0]) + struct.pack("<I", len(frame)) + others + frame
        assert m == len(others) // max(w - 1, 1)
        with pytest.raises(CorruptObject):
            codecs.decode_chunk(codec_id, payload, len(raw))
    # a frame header claiming 4 TiB: single-segment frame, content size field of 8 bytes
    claim = b"\x28\xb5\x2f\xfd" + bytes([0xE0]) + (4 << 40).to_bytes(8, "little") + b"\x01\x00\x00"
    payload = bytes([w, 1 << (w - 1), 0]) + struct.pack("<I", len(claim)) + b"\x00" * (m * (w - 1)) + claim
    with pytest.raises(CorruptObject):
        codecs.decode_chunk(codec_id, payload, len(raw))


@settings(max_examples=150, deadline=None)
@given(codec_id=st.sampled_from(ROTATED), data=st.data())
def test_random_damage_is_an_error_or_the_exact_bytes(codec_id: int, data: st.DataObject) -> None:
    """Flipped, dropped or inserted bytes anywhere: CorruptObject, or (when the
    damage hit a raw plane) bytes of the right length; never another exception."""
    raw, stored = _payload(codec_id)
    damaged = bytearray(stored)
    for _ in range(data.draw(st.integers(1, 4))):
        pos = data.draw(st.integers(0, max(len(damaged) - 1, 0)))
        action = data.draw(st.sampled_from(["flip", "drop", "insert"]))
        if action == "flip" and damaged:
            damaged[pos] ^= data.draw(st.integers(1, 255))
        elif action == "drop" and damaged:
            del damaged[pos]
        else:
            damaged.insert(pos, data.draw(st.integers(0, 255)))
    try:
        out = codecs.decode_chunk(codec_id, bytes(damaged), len(raw))
    except CorruptObject:
        return
    assert len(out) == len(raw)  # the chunk id check above this layer catches other bytes


# ---- the C transforms and the numpy reference agree --------------------------------
needs_native = pytest.mark.skipif(codecs.PLANES_IMPLEMENTATION != "native", reason="objstore.storage._planes is not built")


@needs_native
@settings(max_examples=80, deadline=None)
@given(word=st.sampled_from([2, 4]), rotate=st.integers(0, 31), raw=st.binary(max_size=5000), tail=st.binary(max_size=3))
def test_native_split_and_merge_equal_the_numpy_reference(word: int, rotate: int, raw: bytes, tail: bytes) -> None:
    codec = codecs.ByteGroupCodec(99, word, (), rotate=rotate % (8 * word))
    native = codec.split(raw)
    python = codec.split_python(raw)
    assert [bytes(p) for p in native] == [bytes(p) for p in python]
    assert codec.merge(list(native), tail) == codec.merge_python(list(python), tail) == raw[: len(raw) // word * word] + tail


@needs_native
@settings(max_examples=80, deadline=None)
@given(plane=st.binary(max_size=600), low=st.sampled_from([None, 0, 1, 2, 3]), cut=st.integers(0, 4))
def test_native_pack6_equals_the_numpy_reference(plane: bytes, low: int | None, cut: int) -> None:
    if low is not None:
        plane = bytes(b & 0xFC | low for b in plane)
    native = codecs.pack6(plane)
    saved = codecs._PLANES
    try:
        codecs._PLANES = None
        python = codecs.pack6(plane)
        if python is not None:
            python_back = codecs.unpack6(python, len(plane))
            hurt = python[: len(python) - cut]
            try:
                python_hurt: bytes | str = codecs.unpack6(hurt, len(plane))
            except CorruptObject:
                python_hurt = "refused"
    finally:
        codecs._PLANES = saved
    assert native == python
    if native is not None:
        assert codecs.unpack6(native, len(plane)) == python_back == plane
        try:
            native_hurt: bytes | str = codecs.unpack6(hurt, len(plane))
        except CorruptObject:
            native_hurt = "refused"
        assert native_hurt == python_hurt


@needs_native
def test_native_merge_refuses_planes_of_unequal_length() -> None:
    codec = codecs.CODECS[codecs.ROTGROUP4]
    with pytest.raises(ValueError):
        codec.merge([b"ab", b"ab", b"a", b"ab"])  # type: ignore[attr-defined]
    with pytest.raises(ValueError):
        codec.merge([b"ab", b"ab"])  # type: ignore[attr-defined]


def test_forced_fallback_writes_the_same_payloads() -> None:
    """OBJSTORE_NATIVE=0 (a machine without a compiler) picks the numpy path and encodes byte for byte alike."""
    import subprocess
    import sys

    script = (
        "import sys, hashlib\n"
        "from objstore.storage import codecs\n"
        "from tests.test_codec_planes import golden_cases\n"
        "h = hashlib.sha256()\n"
        "for name, (cid, raw) in sorted(golden_cases().items()):\n"
        "    h.update(codecs.CODECS[cid].encode(raw, None))\n"
        "print(codecs.PLANES_IMPLEMENTATION, h.hexdigest())\n"
    )
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", script], env={**os.environ, "OBJSTORE_NATIVE": "0"}, cwd=root,
                         capture_output=True, text=True, check=True).stdout.split()
    import hashlib

    h = hashlib.sha256()
    for _name, (cid, raw) in sorted(golden_cases().items()):
        payload = codecs.CODECS[cid].encode(raw, None)
        assert payload is not None
        h.update(payload)
    assert out == ["python", h.hexdigest()]


def simd_boundary_digest() -> str:
    """A digest of merge and unpack6 outputs at lengths around the AVX2 kernels' step
    (32 words, 8 groups) and their load margin, each checked against the numpy path."""
    import hashlib

    rng = np.random.default_rng(7)
    h = hashlib.sha256()
    for m in [*range(0, 80), 95, 96, 97, 255, 256, 257, 4099, 65536]:
        low = m % 4
        plane = bytes((rng.integers(0, 256, m, dtype=np.uint8) & 0xFC) | low)
        packed = codecs.pack6(plane)
        assert packed is not None and codecs.unpack6(packed, m) == plane
        raw = rng.bytes(2 * m)
        for rotate in (0, 3, 9):
            codec = codecs.ByteGroupCodec(99, 2, (), rotate=rotate)
            planes = codec.split_python(raw)
            assert codec.merge(list(planes)) == codec.merge_python(list(planes)) == raw
            h.update(codec.merge(list(planes)))
        h.update(codecs.unpack6(packed, m))
    return h.hexdigest()


@needs_native
def test_simd_and_scalar_decode_kernels_give_the_same_bytes() -> None:
    """OBJSTORE_SIMD=0 forces the scalar merge and unpack (a CPU without AVX2): same bytes."""
    import subprocess
    import sys

    script = "from tests.test_codec_planes import simd_boundary_digest\nprint(simd_boundary_digest())\n"
    root = Path(__file__).resolve().parent.parent
    scalar = subprocess.run([sys.executable, "-c", script], env={**os.environ, "OBJSTORE_SIMD": "0"}, cwd=root,
                            capture_output=True, text=True, check=True).stdout.strip()
    assert scalar == simd_boundary_digest()
