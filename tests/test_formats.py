"""The format registry and format-independent segmentation (storage/formats, storage/segmenting).

Each format's parser has its own tests (test_formats_<format>.py); here: what
every parser's answer must be, and how any answer becomes segments.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from objstore.storage import formats
from objstore.storage.formats.base import TensorInfo, checked
from objstore.storage.segmenting import Segment, segment_file
from objstore.testing.tensorfiles import random_weights, write_safetensors


def _segments(data: bytes) -> list[Segment]:
    return segment_file(io.BytesIO(data), len(data))


def test_safetensors_segments_are_header_then_each_tensor(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    path = write_safetensors(tmp_path / "m.safetensors", {
        "b": ("BF16", (64, 8), random_weights(rng, (64, 8), "BF16")),
        "a": ("F32", (3,), random_weights(rng, (3,), "F32")),
        "odd": ("I8", (5,), b"\x01" * 5),
    })
    data = path.read_bytes()
    header = 8 + struct.unpack("<Q", data[:8])[0]
    # strides: a row of b is 16 bytes; a and odd are 1-D (one element)
    assert _segments(data) == [Segment(0, header), Segment(header, 1024, "BF16", "b", 16),
                               Segment(header + 1024, 12, "F32", "a", 4), Segment(header + 1036, 5, "I8", "odd", 1)]
    parsed = formats.parse(io.BytesIO(data), len(data))
    assert parsed is not None and parsed.format == "safetensors"
    assert [t.name for t in parsed.tensors] == ["b", "a", "odd"]


def test_a_file_no_parser_takes_is_one_plain_segment() -> None:
    for data in (b"", b"x", b"PK\x03\x04" + b"\0" * 100, struct.pack("<Q", 10) + b"[1,2,3,4,5]" + b"\0" * 10):
        assert formats.parse(io.BytesIO(data), len(data)) is None
        assert _segments(data) == ([Segment(0, len(data))] if data else [])


def test_checked_refuses_lies() -> None:
    t = TensorInfo
    assert checked("x", [t("a", "F32", (1,), 4, 4)], {}, 8) is not None
    assert checked("x", [t("a", "F32", (1,), 6, 4)], {}, 8) is None  # past the end
    assert checked("x", [t("a", "F32", (1,), -1, 4)], {}, 8) is None
    assert checked("x", [t("a", "F32", (1,), 0, 4), t("b", "F32", (1,), 2, 4)], {}, 8) is None  # overlap
    assert checked("x", [t("a", "F32", (1,), 0, 4), t("a", "F32", (1,), 4, 4)], {}, 8) is None  # a name twice
    parsed = checked("x", [t("b", "F32", (1,), 4, 4), t("a", "F32", (1,), 0, 4)], {}, 8)
    assert parsed is not None and [x.name for x in parsed.tensors] == ["a", "b"]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 12), st.sampled_from(["F32", "BF16", "I8", "Q4_K"]),
                          st.lists(st.one_of(st.integers(-3, 13), st.integers(0, 1 << 62)), max_size=3)), max_size=6), st.integers(0, 20))
def test_segments_cover_every_byte_once_for_any_layout(ranges: list[tuple[int, int, str, list[int]]], tail: int) -> None:
    """Whatever layout a parser returns, the segments are the whole file in order; tensors
    keep their dtype exactly when their length is whole elements; a tensor's cut grid,
    whatever shape it claims, divides 64 and is whole elements (0 for plain bytes)."""
    tensors, pos = [], 0
    for i, (gap, length, dtype, shape) in enumerate(ranges):
        tensors.append(TensorInfo(f"t{i}", dtype, tuple(shape) if shape else (length,), pos + gap, length))
        pos += gap + length
    size = pos + tail
    parsed = checked("fake", tensors, {}, size)
    assert parsed is not None

    class Fake:
        FORMAT = "fake"

        @staticmethod
        def sniff(head: bytes, size: int) -> bool:
            return True

        @staticmethod
        def parse(f: object, size: int) -> formats.ParsedFile:
            return parsed  # type: ignore[return-value]

    saved = formats.FORMATS
    formats.FORMATS = (Fake,)  # type: ignore[assignment]
    try:
        segments = _segments(b"\0" * size)
    finally:
        formats.FORMATS = saved
    assert sum(s.length for s in segments) == size
    assert all(a.offset + a.length == b.offset for a, b in zip(segments, segments[1:]))
    assert all(s.length > 0 for s in segments)
    by_name = {s.name: s for s in segments if s.name}
    for t in tensors:
        if t.length:
            size_of = formats.DTYPE_SIZES.get(t.dtype, 1)
            segment = by_name[t.name]
            assert segment.dtype == (t.dtype if t.length % size_of == 0 else None)
            assert (segment.stride == 0) == (segment.dtype is None)
            assert segment.stride == 0 or (64 % segment.stride == 0 and segment.stride % segment.align == 0)
