"""GGUF parsing on real files written by the gguf package, and on hostile ones.

The reference for where tensors lie is gguf's own GGUFReader; objstore's parser must agree with it
on every file gguf writes, and say None (plain chunking) for every file that lies.
"""

from __future__ import annotations

import io
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from format_targets import Tensors, assert_targets, assert_well_formed, measure, parsing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from objstore.storage.formats import gguf as parser

gguf = pytest.importorskip("gguf")
Q = gguf.GGMLQuantizationType

GGML_OF = {"F32": Q.F32, "F16": Q.F16, "BF16": Q.BF16, "F64": Q.F64}


def write_gguf(path: Path, tensors: dict[str, tuple[str, tuple[int, ...], bytes]], *,
               kv: dict[str, str] | None = None, alignment: int | None = None, vocab: int = 0) -> Path:
    """Write ``{name: (dtype, shape, raw bytes)}`` (safetensors dtypes, numpy shapes) with gguf's writer."""
    w = gguf.GGUFWriter(str(path), "llama")
    if alignment is not None:
        w.add_custom_alignment(alignment)
    for k, v in (kv or {}).items():
        w.add_string(k, v)
    if vocab:
        w.add_token_list([f"tok{i}" for i in range(vocab)])
        w.add_token_scores([float(i) for i in range(vocab)])
    for name, (dtype, shape, raw) in tensors.items():
        w.add_tensor(name, np.frombuffer(raw, np.uint8).reshape(*shape[:-1], -1), raw_dtype=GGML_OF[dtype])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


parse_path, parse_bytes = parsing(parser)


def small_model(rng: np.random.Generator) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    return {
        "token_embd.weight": ("F32", (64, 32), rng.standard_normal((64, 32)).astype(np.float32).tobytes()),
        "blk.0.attn_q.weight": ("F16", (32, 32), rng.standard_normal((32, 32)).astype(np.float16).tobytes()),
        "blk.0.attn_k.weight": ("BF16", (32, 32), rng.integers(0, 1 << 16, (32, 32), dtype=np.uint16).tobytes()),
        "output_norm.weight": ("F64", (3,), np.arange(3, dtype=np.float64).tobytes()),  # odd size: padding follows
    }


def test_tensors_are_where_ggufs_own_reader_finds_them(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    w = gguf.GGUFWriter(str(tmp_path / "m.gguf"), "llama")
    w.add_name("tiny")
    w.add_token_list([f"tok{i}" for i in range(300)])
    w.add_array("nested", [[1, 2], [3]])
    for name, (dtype, shape, raw) in small_model(rng).items():
        w.add_tensor(name, np.frombuffer(raw, np.uint8).reshape(*shape[:-1], -1), raw_dtype=GGML_OF[dtype])
    for qtype in (Q.Q8_0, Q.Q4_0):
        q = gguf.quants.quantize(rng.standard_normal((8, 256)).astype(np.float32), qtype)
        w.add_tensor(f"blk.1.{qtype.name}.weight", q, raw_shape=q.shape, raw_dtype=qtype)
    for qtype in (Q.Q4_K, Q.Q6_K):  # gguf cannot quantize to these: their blocks' bytes, random
        block, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
        w.add_tensor(f"blk.1.{qtype.name}.weight", rng.integers(0, 256, (8, 512 // block * block_bytes), dtype=np.uint8),
                     raw_dtype=qtype)
    w.add_tensor("blk.1.ids", np.arange(10, dtype=np.int32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    path = tmp_path / "m.gguf"
    p = parse_path(path)
    assert p is not None and p.format == "gguf"
    reference = sorted(gguf.GGUFReader(str(path)).tensors, key=lambda t: t.data_offset)
    assert [(t.name, t.dtype, t.shape, t.offset, t.length) for t in p.tensors] == [
        (t.name, {"I32": "I32"}.get(t.tensor_type.name, t.tensor_type.name), tuple(int(d) for d in reversed(t.shape)),
         t.data_offset, t.n_bytes)
        for t in reference
    ]
    assert [t.dtype for t in p.tensors][:4] == ["F32", "F16", "BF16", "F64"]
    assert p.metadata["general.name"] == "tiny"
    assert p.metadata["tokenizer.ggml.tokens"] == "[300 x str]"  # a vocabulary is summarized, not copied
    assert_well_formed(p, path.stat().st_size)


@pytest.mark.parametrize("alignment", [1, 64, 4096])
def test_custom_alignment_is_followed(tmp_path: Path, alignment: int) -> None:
    path = write_gguf(tmp_path / "a.gguf", small_model(np.random.default_rng(2)), alignment=alignment)
    p = parse_path(path)
    assert p is not None
    assert [t.offset for t in p.tensors] == sorted(t.data_offset for t in gguf.GGUFReader(str(path)).tensors)
    assert all((t.offset - p.tensors[0].offset) % alignment == 0 for t in p.tensors)


def test_other_formats_are_not_gguf(tmp_path: Path) -> None:
    assert parse_bytes(b"") is None
    assert parse_bytes(b"GGUF") is None
    assert parse_bytes(b"PK\x03\x04" + bytes(100)) is None
    assert parse_bytes(b"GGUF" + struct.pack("<I", 1) + bytes(64)) is None  # version 1: u32 counts, not read
    assert parse_bytes(b"GGUF" + struct.pack(">I", 3) + bytes(64)) is None  # big-endian: chunked plainly


# --- hostile files: each must give None quickly (plain chunking), never raise -----------------------------

def header(n_tensors: int, n_kv: int) -> bytes:
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, n_kv)


def gstr(s: bytes) -> bytes:
    return struct.pack("<Q", len(s)) + s


def tensor_info(name: bytes, dims: tuple[int, ...], gtype: int, offset: int) -> bytes:
    return gstr(name) + struct.pack(f"<I{len(dims)}QIQ", len(dims), *dims, gtype, offset)


def with_data(head: bytes, data_len: int) -> bytes:
    return head + bytes(-len(head) % 32) + bytes(data_len)


def test_a_minimal_handmade_file_parses() -> None:
    # The baseline the hostile variants below change one thing in.
    data = with_data(header(2, 0) + tensor_info(b"a", (8,), 0, 0) + tensor_info(b"b", (4, 2), 1, 32), 48)
    p = parse_bytes(data)
    assert p is not None
    assert [(t.name, t.dtype, t.shape, t.length) for t in p.tensors] == [("a", "F32", (8,), 32), ("b", "F16", (2, 4), 16)]


@pytest.mark.parametrize("data", [
    pytest.param(with_data(header(1, 0) + tensor_info(b"a", (8,), 0, 64), 48), id="tensor-past-the-end"),
    pytest.param(with_data(header(2, 0) + tensor_info(b"a", (8,), 0, 0) + tensor_info(b"b", (8,), 0, 0), 64),
                 id="overlap"),
    pytest.param(with_data(header(1, 0) + tensor_info(b"a", (8,), 0, 4), 64), id="misaligned"),
    pytest.param(with_data(header(1, 0) + tensor_info(b"a", (8,), 99, 0), 64), id="unknown-type"),
    pytest.param(with_data(header(1, 0) + tensor_info(b"a", (33,), 8, 0), 64), id="partial-quant-block"),
    pytest.param(with_data(header(1, 0) + tensor_info(b"a", (1 << 40, 1 << 40), 0, 0), 64), id="huge-shape"),
    pytest.param(with_data(header(1, 0) + tensor_info(b"a", (1,) * 9, 0, 0), 64), id="too-many-dims"),
    pytest.param(with_data(header(2, 0) + tensor_info(b"a", (8,), 0, 0) + tensor_info(b"a", (8,), 0, 32), 64),
                 id="duplicate-name"),
    pytest.param(with_data(header(1 << 60, 0), 64), id="absurd-tensor-count"),
    pytest.param(with_data(header(0, 1 << 60), 64), id="absurd-kv-count"),
    pytest.param(with_data(header(0, 1) + gstr(b"k") + struct.pack("<I", 8) + struct.pack("<Q", 1 << 62), 64),
                 id="string-longer-than-file"),
    pytest.param(with_data(header(0, 1) + gstr(b"k") + struct.pack("<IIQ", 9, 12, 1 << 61), 64),
                 id="fixed-array-longer-than-file"),
    pytest.param(with_data(header(0, 1) + gstr(b"k") + struct.pack("<IIQ", 9, 8, 1 << 40), 64),
                 id="string-array-longer-than-file"),
    pytest.param(with_data(header(0, 1) + gstr(b"k") + struct.pack("<IIQ", 9, 9, 1) * 6 + struct.pack("<IQ", 0, 0), 64),
                 id="arrays-nested-deep"),
    pytest.param(with_data(header(0, 1) + gstr(b"k") + struct.pack("<I", 77), 64), id="unknown-value-type"),
    pytest.param(with_data(header(0, 1) + gstr(b"general.alignment") + struct.pack("<II", 4, 48), 64),
                 id="alignment-not-a-power-of-two"),
    pytest.param(with_data(header(0, 1) + gstr(b"general.alignment") + struct.pack("<II", 4, 0), 64),
                 id="alignment-zero"),
    pytest.param(with_data(header(1, 0) + gstr(b"\xff\xfe") + struct.pack("<IQIQ", 1, 8, 0, 0), 64),
                 id="name-not-utf8"),
])
def test_hostile_files_are_not_parsed(data: bytes) -> None:
    started = time.process_time()
    assert parse_bytes(data) is None
    assert time.process_time() - started < 1.0  # no loop over a lying count


def test_every_truncation_of_a_real_file_is_refused(tmp_path: Path) -> None:
    data = write_gguf(tmp_path / "t.gguf", small_model(np.random.default_rng(3)), vocab=20).read_bytes()
    p = parse_bytes(data)
    assert p is not None
    last_end = p.tensors[-1].offset + p.tensors[-1].length
    for cut in [*range(0, p.tensors[0].offset, 7), *range(p.tensors[0].offset, last_end, 997)]:
        assert parse_bytes(data[:cut]) is None, cut
    # A file whose header reads short of its reported size (it shrank) is refused, not over-read.
    assert parser.parse(io.BytesIO(data[: p.tensors[0].offset // 2]), len(data)) is None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 4096), st.integers(0, 255)), min_size=1, max_size=8))
def test_fuzz_mutated_files_parse_consistently_or_not_at_all(tmp_path: Path, edits: list[tuple[int, int]]) -> None:
    path = tmp_path / "fuzz.gguf"
    if not path.exists():
        write_gguf(path, small_model(np.random.default_rng(4)), vocab=30, kv={"general.note": "x" * 40})
    data = bytearray(path.read_bytes())
    for pos, byte in edits:
        data[pos % len(data)] = byte
    p = parse_bytes(bytes(data))
    if p is not None:
        assert_well_formed(p, len(data))


# --- issue 16's store-level targets --------------------------------------------------------------------

def test_store_targets(tmp_path: Path) -> None:
    def write(path: Path, tensors: Tensors, extra: int) -> Path:
        return write_gguf(path, tensors, kv={"general.description": "d" * extra} if extra else None)

    assert_targets(measure(tmp_path, write, ".gguf"))
