"""Hostile files of every format, through the parsers' one entry point and through the CLI.

Each format's own test file fuzzes its parser (truncations, mutations, forged fields); this one
checks what they all promise together: a file claiming absurd counts or lengths (2^60 tensors, a
2^62-byte string, a 2^40 × 2^40 shape) is parsed to None or a checked layout without allocating
for the claim (tracemalloc's peak stays far below it) and without looping over it, and a directory
of such files logs through ``objstore log-model`` with exit 0, no traceback, and comes back byte
for byte (chunked plainly).
"""

from __future__ import annotations

import io
import struct
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli

from objstore.storage import formats

h5py = pytest.importorskip("h5py")


def gguf_header(n_tensors: int, n_kv: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv)


def npy(header: str) -> bytes:
    body = header.encode() + b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(body)) + body


def zipped(entries: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            z.writestr(name, data)
    return out.getvalue()


def offsets_before_start(data: bytes) -> bytes:
    """A zip whose end record puts its central directory 1 MB further on than it is: zipfile
    then computes every entry's local header at an offset below 0. Seeking there raised
    OSError (EINVAL) from a real file, which no parser catches (BytesIO's is a ValueError), so
    log-model failed with a traceback (before the fix)."""
    end = data.rfind(b"PK\x05\x06")
    (start,) = struct.unpack_from("<I", data, end + 16)
    return data[:end + 16] + struct.pack("<I", start + 1_000_000) + data[end + 20:]


def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def h5_forged(tmp_path: Path) -> dict[str, bytes]:
    path = tmp_path / "real.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("a/x", data=np.arange(64, dtype=np.float32))
    data = path.read_bytes()
    out = {}
    tree = data.find(b"TREE")
    forged = bytearray(data)
    forged[tree + 6:tree + 8] = b"\xff\xff"  # 65,535 children in a node that holds one
    out["btree-count.h5"] = bytes(forged)
    with h5py.File(path, "w", libver="latest") as f:
        g = f.create_group("g")
        for i in range(20):
            g.create_dataset(f"d{i}", data=np.ones(4, np.float32))
    data = path.read_bytes()
    forged = bytearray(data)
    heap = data.find(b"FRHP")
    forged[heap + 10:heap + 14] = b"\xff\xff\xff\xff"  # a 4 GiB managed-object limit: heap ids lengthen
    out["heap-limits.h5"] = bytes(forged)
    forged = bytearray(data)
    bthd = data.find(b"BTHD")
    forged[bthd + 18 + 8:bthd + 18 + 16] = struct.pack("<Q", 1 << 60)  # 2^60 records in the tree
    out["btree2-total.h5"] = bytes(forged)
    return out


def hostile(tmp_path: Path) -> dict[str, bytes]:
    files = {
        "huge-header.safetensors": struct.pack("<Q", 1 << 62) + b"{}",
        "tensor-count.gguf": gguf_header(1 << 60, 0) + bytes(64),
        "kv-count.gguf": gguf_header(0, 1 << 60) + bytes(64),
        "kv-string.gguf": gguf_header(0, 1) + struct.pack("<Q", 1) + b"k" + struct.pack("<IQ", 8, 1 << 62) + bytes(64),
        "huge-shape.npy": npy("{'descr': '<f4', 'fortran_order': False, 'shape': (1099511627776, 1099511627776), }"),
        "lying-shape.npy": npy("{'descr': '<f4', 'fortran_order': False, 'shape': (99999,), }") + bytes(16),
        "huge-member.npz": zipped({"a.npy": npy("{'descr': '<f8', 'fortran_order': False, 'shape': (1 << 50,), }")}),
        "huge-string.pt": zipped({"archive/data.pkl": b"\x80\x02X" + struct.pack("<I", 0xFFFFFFF0) + b"abc",
                                  "archive/data/0": bytes(64)}),
        "huge-memo.pt": zipped({"archive/data.pkl": b"\x80\x02}r" + struct.pack("<I", 0x7FFFFFFF) + b"h" + b"\xff" + b".",
                                "archive/data/0": bytes(64)}),
        "offsets-before-start.pt": offsets_before_start(zipped({"archive/data.pkl": b"\x80\x02}q\x00.",
                                                                 "archive/byteorder": b"little"})),
        "graph-length.onnx": b"\x08\x07" + b"\x3a" + varint(1 << 62) + bytes(64),
        "initializer-count.onnx": b"\x08\x07\x3a" + varint(4 * 100_000) + b"\x2a\x00" * 100_000,
    }
    files.update(h5_forged(tmp_path))
    return files


def test_absurd_counts_and_lengths_allocate_nothing_for_them(tmp_path: Path) -> None:
    for name, data in hostile(tmp_path).items():
        tracemalloc.start()
        started = time.process_time()
        try:
            parsed = formats.parse(io.BytesIO(data), len(data))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert time.process_time() - started < 2.0, name  # no loop over a lying count
        assert peak < 8 * len(data) + (4 << 20), (name, peak)  # bounded by the file, not by its claims
        if parsed is not None:  # what a hostile file may still give: tensors inside it, apart
            end = 0
            for t in parsed.tensors:
                assert end <= t.offset and t.offset + t.length <= len(data), name
                end = t.offset + t.length
            assert all(t.length < len(data) for t in parsed.tensors), name


def test_hostile_files_log_plainly_through_the_cli_with_no_traceback(tmp_path: Path) -> None:
    files = hostile(tmp_path)
    model = tmp_path / "model"
    model.mkdir()
    for name, data in files.items():
        (model / name).write_bytes(data)
    store = tmp_path / "s"
    run_cli(store, "init")
    logged = run_cli(store, "log-model", str(model), "--name", "m", "--project", "p", check=False)
    assert logged.code == 0, logged.err
    assert "Traceback" not in logged.err + logged.out
    out = tmp_path / "out"
    used = run_cli(store, "use-model", "m:latest", "--project", "p", "--root", str(out), check=False)
    assert used.code == 0 and "Traceback" not in used.err + used.out, used.err
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files
