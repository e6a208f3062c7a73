"""The .npy / .npz parser (storage/formats/numpy.py), on files numpy writes and hostile ones."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from objstore.storage import formats
from objstore.storage.formats import numpy as npfmt
from objstore.storage.formats.base import ParsedFile


def _parse(data: bytes) -> ParsedFile | None:
    return formats.parse(io.BytesIO(data), len(data))


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


@pytest.mark.parametrize("dtype,name", [("<f4", "F32"), ("<f2", "F16"), ("<f8", "F64"), ("<i8", "I64"), ("|u1", "U8"), ("?", "BOOL")])
def test_npy_is_one_tensor_with_its_bytes(dtype: str, name: str) -> None:
    a = (np.arange(60) % 7).astype(dtype).reshape(3, 4, 5)
    data = _npy(a)
    parsed = _parse(data)
    assert parsed is not None and parsed.format == "npy"
    (t,) = parsed.tensors
    assert (t.name, t.dtype, t.shape) == ("array", name, (3, 4, 5))
    assert data[t.offset:t.offset + t.length] == a.tobytes() and t.offset + t.length == len(data)


def test_npz_members_are_tensors_by_name_and_compressed_ones_plain(tmp_path: Path) -> None:
    arrays = {"embed.weight": np.ones((8, 4), np.float32), "bias": np.zeros(3, np.float16)}
    np.savez(tmp_path / "m.npz", **arrays)
    data = (tmp_path / "m.npz").read_bytes()
    parsed = _parse(data)
    assert parsed is not None and parsed.format == "npz"
    assert {t.name: (t.dtype, t.shape) for t in parsed.tensors} == {"embed.weight": ("F32", (8, 4)), "bias": ("F16", (3,))}
    for t in parsed.tensors:
        assert data[t.offset:t.offset + t.length] == arrays[t.name].tobytes()
    np.savez_compressed(tmp_path / "c.npz", **arrays)
    assert _parse((tmp_path / "c.npz").read_bytes()) is None


@pytest.mark.parametrize("array", [np.ones((3, 4), np.float32, order="F"), np.ones(4, ">f4"),
                                   np.array([1, "x"], dtype=object), np.zeros(2, dtype=[("a", "<f4"), ("b", "<i4")])])
def test_fortran_big_endian_object_and_structured_arrays_are_plain(array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    assert _parse(buf.getvalue()) is None


def _with_header(header: bytes, body: bytes = b"\0" * 64) -> bytes:
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + body


def test_a_header_is_a_literal_never_code(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    evil = f"__import__('os').system('touch {marker}')".encode()
    for header in (evil, b"{'descr': " + evil + b", 'fortran_order': False, 'shape': (4,)}",
                   b"{'descr': '<f4', 'fortran_order': False, 'shape': (1000,)}",  # more than the file holds
                   b"{'descr': '<f4', 'fortran_order': False, 'shape': (-4,)}",
                   b"[" * 5000 + b"]" * 5000):
        assert _parse(_with_header(header)) is None
    assert not marker.exists()
    assert _parse(_with_header(b"{'descr': '<f4', 'fortran_order': False, 'shape': (16,)}")) is not None


_NPZ = io.BytesIO()
np.savez(_NPZ, a=np.arange(10, dtype=np.float32), b=np.ones((2, 3), np.float16))


@settings(max_examples=80, deadline=None)
@given(st.data())
def test_mutated_or_truncated_files_parse_to_a_checked_layout_or_none(data: st.DataObject) -> None:
    raw = bytearray(data.draw(st.sampled_from([_NPZ.getvalue(), _npy(np.arange(12, dtype=np.float32))])))
    if data.draw(st.booleans()):
        raw = raw[:data.draw(st.integers(0, len(raw)))]
    for _ in range(data.draw(st.integers(0, 8))):
        if raw:
            raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    for parser in (npfmt, npfmt.Npz):
        parsed = parser.parse(io.BytesIO(bytes(raw)), len(raw))  # never raises
        if parsed is not None:
            assert all(0 <= t.offset and t.offset + t.length <= len(raw) for t in parsed.tensors)
