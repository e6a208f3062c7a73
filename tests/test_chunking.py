"""Chunking: boundaries independent of read splits, resynchronising after an
insertion, element-aligned inside tensors, and pinned by golden vectors."""

from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path

import blake3
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from objstore.files.ingest import chunk_file, iter_file_chunks
from objstore.storage.chunking import GEAR, Chunker, ChunkParams
from objstore.storage.formats import TensorInfo
from objstore.storage.ids import Kind, hash_bytes
from objstore.storage.segmenting import cut_stride

GOLDEN = Path(__file__).parent / "golden" / "chunking_v1.json"
SMALL = ChunkParams(avg_size=4096, min_size=1024, max_size=16384, normalization=1)


def stream_bytes(seed: str, n: int) -> bytes:
    """Deterministic incompressible bytes (BLAKE3 XOF)."""
    return blake3.blake3(seed.encode()).digest(length=n)


class SplitReader:
    """A stream whose reads return the given sizes in turn (a pipe, a socket, a slow disk)."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data = data
        self.pos = 0
        self.sizes = sizes or [len(data) or 1]
        self.k = 0

    def readinto(self, buf: memoryview) -> int:
        want = max(1, self.sizes[self.k % len(self.sizes)])
        self.k += 1
        n = min(want, len(buf), len(self.data) - self.pos)
        buf[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


def cuts(chunker: Chunker, stream: object, length: int, align: int = 1, stride: int = 0) -> list[int]:
    out, pos = [], 0
    for view in chunker.iter_chunks(stream, length, align, stride):  # type: ignore[arg-type]
        pos += len(view)
        out.append(pos)
    return out


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(0, 200_000), sizes=st.lists(st.integers(1, 70_000), min_size=1, max_size=8),
       block=st.sampled_from([4096, 20_000, 65_536]), align=st.sampled_from([1, 2, 4]), seed=st.integers(0, 3))
def test_read_splits_do_not_move_boundaries(n: int, sizes: list[int], block: int, align: int, seed: int) -> None:
    n -= n % align
    data = stream_bytes(f"splits-{seed}", n)
    whole = cuts(Chunker(SMALL, read_block=1 << 20), io.BytesIO(data), n, align)
    split = cuts(Chunker(SMALL, read_block=block), SplitReader(data, sizes), n, align)
    assert split == whole
    assert (whole[-1] if whole else 0) == n


@pytest.mark.parametrize("align", [2, 4])
def test_cuts_inside_tensors_fall_on_element_boundaries(align: int) -> None:
    data = stream_bytes("aligned", 400_000)
    got = cuts(Chunker(SMALL, read_block=30_000), io.BytesIO(data), len(data), align)
    assert got[-1] == len(data)
    assert all(c % align == 0 for c in got)
    # and the rounding is small: every chunk stays within the size limits (+ align)
    sizes = [b - a for a, b in zip([0, *got], got)]
    assert max(sizes) <= SMALL.max_size + align


def test_boundaries_resynchronise_after_an_insertion() -> None:
    data = stream_bytes("shift", 1_000_000)
    shifted = data[:5000] + b"inserted!" * 11 + data[5000:]
    chunker = Chunker(SMALL)

    def ids(b: bytes) -> list[bytes]:
        return [hash_bytes(Kind.CHUNK, v).raw for v in chunker.iter_chunks(io.BytesIO(b), len(b))]

    before, after = ids(data), ids(shifted)
    reused = len(set(before) & set(after)) / len(before)
    assert reused >= 0.95, f"only {reused:.1%} of chunks survived a 99-byte insertion"


def word_cuts(data: bytes, stride: int, read_block: int = 1 << 20, sizes: list[int] | None = None) -> list[int]:
    return cuts(Chunker(SMALL, read_block=read_block), SplitReader(data, sizes or [len(data) or 1]), len(data), 2, stride)


def bf16_rows(seed: int, rows: int, cols: int) -> bytes:
    rng = np.random.default_rng(seed)
    return ((rng.standard_normal(rows * cols, dtype=np.float32) * 0.02).view(np.uint32) >> 16).astype("<u2").tobytes()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.integers(1, 400), cols=st.sampled_from([32, 100, 512, 1000]), at=st.floats(0, 1), added=st.integers(1, 40),
       seed=st.integers(0, 3), sizes=st.lists(st.integers(1, 70_000), min_size=1, max_size=4))
def test_word_cuts_survive_rows_added_anywhere(rows: int, cols: int, at: float, added: int, seed: int,
                                               sizes: list[int]) -> None:
    """Word-sampled cuts are on the tensor's row grid: rows inserted anywhere (vocab
    growth, a pruned layer's rows back) keep every chunk that lies wholly before them
    and resynchronise after them; the cuts do not depend on the read splits."""
    row = 2 * cols
    stride = math.gcd(row, 64)
    data = bf16_rows(seed, rows, cols)
    k = int(at * rows) * row
    grown = data[:k] + bf16_rows(seed + 100, added, cols) + data[k:]
    before, after = word_cuts(data, stride), word_cuts(grown, stride, 5000, sizes)
    assert word_cuts(data, stride, 30_000, sizes) == before
    assert all(c % stride == 0 for c in before[:-1]) and before[-1] == len(data)
    # a chunk that starts within max_size of the end is cut against the end (FastCDC's
    # rule, the gear's too), so only the cuts before both the rows and that are kept
    kept = min(k, len(data) - SMALL.max_size)
    assert [c for c in before if c <= kept] == [c for c in after if c <= kept]
    shift = len(grown) - len(data)
    tail_before = {c + shift for c in before if c > k + SMALL.max_size}
    assert tail_before <= set(after), "the cuts after the inserted rows did not come back"


def test_word_cuts_of_a_fine_tune_change_only_around_changed_values() -> None:
    """Values changed in place move only the cuts whose 8 sampled bytes changed:
    one weight in a million changed leaves almost every chunk as it was."""
    data = bytearray(bf16_rows(7, 2000, 512))
    before = word_cuts(bytes(data), 64)
    rng = np.random.default_rng(8)
    for at in rng.integers(0, len(data) // 2, 3):
        data[2 * at] ^= 0x55
    after = word_cuts(bytes(data), 64)
    assert len(set(before) ^ set(after)) <= 6


def test_the_stride_is_the_row_grid_up_to_64() -> None:
    t = TensorInfo
    assert cut_stride(t("w", "BF16", (4096, 4096), 0, 2 * 4096 * 4096), 2) == 64
    assert cut_stride(t("w", "BF16", (100, 1000), 0, 200_000), 2) == 16  # a 2000-byte row
    assert cut_stride(t("w", "F32", (7, 3), 0, 84), 4) == 4  # a 12-byte row
    assert cut_stride(t("b", "BF16", (4096,), 0, 8192), 2) == 2  # 1-D: one element
    assert cut_stride(t("q", "Q4_K", (32, 256), 0, 32 * 144), 1) == 16  # a 144-byte row of blocks
    assert cut_stride(t("x", "BF16", (0, 8), 0, 0), 2) == 2
    assert cut_stride(t("x", "BF16", (3, 5), 0, 31), 2) == 2  # a length no whole number of rows: elements
    assert cut_stride(t("x", "F32", (8, 1), 0, 8), 4) == 4  # a row shorter than an element: elements


def test_a_gear_store_keeps_its_cuts_inside_tensors() -> None:
    """Stores made before word-sampled cuts (no tensor_scan in their config) cut tensors
    with the gear, stride or not, exactly as before."""
    data = bf16_rows(3, 300, 512)
    gear = ChunkParams(SMALL.avg_size, SMALL.min_size, SMALL.max_size, SMALL.normalization, GEAR)
    assert ChunkParams.from_dict({"avg": 4096, "min": 1024, "max": 16384, "nc": 1}) == gear
    assert "tensor" not in gear.to_dict()
    assert cuts(Chunker(gear), io.BytesIO(data), len(data), 2) == cuts(Chunker(gear), io.BytesIO(data), len(data), 2, 64)
    assert Chunker(gear).grain(2, 64) == 2 and Chunker(SMALL).grain(2, 64) == "w64"
    assert cuts(Chunker(SMALL), io.BytesIO(data), len(data), 2) != word_cuts(data, 64)


def golden_input(tmp: Path) -> tuple[bytes, Path]:
    """The fixed inputs of the golden vectors: plain bytes, and a small bf16 safetensors file."""
    plain = stream_bytes("objstore golden v1", 3 * 1024 * 1024 + 17)
    header = {
        "a.weight": {"dtype": "BF16", "shape": [700, 1024], "data_offsets": [0, 1_433_600]},
        "b.bias": {"dtype": "F32", "shape": [1023], "data_offsets": [1_433_600, 1_437_692]},
        "c.weight": {"dtype": "F32", "shape": [300, 1000], "data_offsets": [1_437_692, 2_637_692]},
    }
    raw = json.dumps(header, separators=(",", ":")).encode()
    body = stream_bytes("objstore golden tensors v1", 2_637_692)
    path = tmp / "golden.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + body)
    return plain, path


# The vectors were recorded with the default of stores made before 128 KiB became the
# default (64 KiB average): those stores keep their parameters, so their cuts must not move.
V1_DEFAULT = ChunkParams(avg_size=64 * 1024, min_size=16 * 1024, max_size=256 * 1024, normalization=1, tensor_scan=GEAR)


def golden_vectors(tmp: Path) -> dict[str, object]:
    plain, path = golden_input(tmp)
    chunker = Chunker(V1_DEFAULT)
    plain_chunks = [(hash_bytes(Kind.CHUNK, v).hex, len(v)) for v in chunker.iter_chunks(io.BytesIO(plain), len(plain))]
    st_chunks = [(c.hex, n) for c, n in iter_file_chunks(path, chunker)]
    return {
        "params": V1_DEFAULT.to_dict(),
        "plain": {"lengths": [n for _, n in plain_chunks], "ids": [h for h, _ in plain_chunks]},
        "safetensors": {"lengths": [n for _, n in st_chunks], "ids": [h for h, _ in st_chunks],
                        "file_id": chunk_file(path, chunker, None).compute_id().hex},
    }


def test_golden_vectors(tmp_path: Path) -> None:
    got = golden_vectors(tmp_path)
    if os.environ.get("OBJSTORE_WRITE_GOLDEN"):
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(got, indent=1) + "\n")
    want = json.loads(GOLDEN.read_text())
    # A difference here is a format change: existing stores would stop deduplicating
    # against new logs. Change chunking only with a new store format.
    assert got["params"] == want["params"]
    assert got["plain"]["lengths"] == want["plain"]["lengths"], "chunk boundaries moved"
    assert got["plain"]["ids"] == want["plain"]["ids"], "chunk ids changed"
    assert got["safetensors"] == want["safetensors"], "safetensors chunking or file ids changed"
    # the safetensors cuts respect tensor edges and element sizes
    _, path = golden_input(tmp_path)
    header_len = int.from_bytes(path.read_bytes()[:8], "little")
    start = 8 + header_len
    ends, pos = set(), 0
    for n in got["safetensors"]["lengths"]:  # type: ignore[index]
        pos += n
        ends.add(pos)
    tensors = [(start, 2, 1_433_600), (start + 1_433_600, 4, 4092), (start + 1_437_692, 4, 1_200_000)]
    for offset, size, length in tensors:
        assert offset in ends and offset + length in ends, "a chunk straddles a tensor edge"
        assert all((e - offset) % size == 0 for e in ends if offset < e < offset + length), "a cut splits an element"


def test_a_store_config_names_its_tensor_scan_and_an_old_one_reads_as_gear(tmp_path: Path) -> None:
    """A new store records word-sampled cuts in its config; a config without the field
    (every store made before) opens as gear, and its chunker cuts with the gear."""
    import msgpack

    from objstore.model.store import Store

    new = Store.open(tmp_path / "new")
    assert new.config.chunking.tensor_scan == "words"
    assert msgpack.unpackb((tmp_path / "new" / "config").read_bytes())["chunking"]["tensor"] == "words"
    Store.open(tmp_path / "old", chunking=ChunkParams(tensor_scan=GEAR))
    raw = msgpack.unpackb((tmp_path / "old" / "config").read_bytes())
    assert "tensor" not in raw["chunking"]
    old = Store.open_existing(tmp_path / "old")
    assert old.config.chunking.tensor_scan == GEAR and old.chunker.grain(2, 64) == 2
