"""ONNX parsing on real models written by the onnx package, and on hostile files.

The reference is onnx itself: each initializer's bytes at the offset the parser gives must be what
``numpy_helper.to_array`` returns for it, and an external-data model's offsets and lengths must be
the ones onnx wrote into it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from format_targets import Tensors, assert_targets, measure, parsing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from objstore.storage.formats import onnx as parser

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

NUMPY_OF = {"F32": np.float32, "F16": np.float16}


def model(initializers: list[object], doc: str = "") -> object:
    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])], initializer=initializers)
    m = helper.make_model(graph, doc_string=doc)
    return m


def write_onnx(path: Path, tensors: Tensors, extra: int) -> Path:
    """The tensors as a model's initializers; ``extra`` bytes of doc string, which comes before the graph."""
    inits = [numpy_helper.from_array(np.frombuffer(raw, NUMPY_OF[dtype]).reshape(shape), name)
             for name, (dtype, shape, raw) in tensors.items()]
    onnx.save(model(inits, "d" * extra), str(path))
    return path


def mixed(rng: np.random.Generator) -> list[object]:
    return [
        numpy_helper.from_array(rng.standard_normal((64, 32)).astype(np.float32), "w0"),
        numpy_helper.from_array(rng.standard_normal((32,)).astype(np.float16), "b0"),
        numpy_helper.from_array(rng.standard_normal((3, 5)).astype(np.float64), "d"),
        numpy_helper.from_array(np.arange(7, dtype=np.int64), "shape"),
        numpy_helper.from_array(np.zeros((0, 4), np.float32), "empty"),
        helper.make_tensor("listed", TensorProto.FLOAT, [3], [1.0, 2.0, 3.0]),  # float_data, not raw: plain
        helper.make_tensor("names", TensorProto.STRING, [2], [b"a", b"b"]),
    ]


parse_path, parse_bytes = parsing(parser)


def test_initializers_are_where_onnx_keeps_them(tmp_path: Path) -> None:
    m = model(mixed(np.random.default_rng(0)))
    path = tmp_path / "m.onnx"
    onnx.save(m, str(path))
    p = parse_path(path)
    assert p is not None and p.format == "onnx"
    data = path.read_bytes()
    arrays = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    assert [t.name for t in p.tensors] == ["w0", "b0", "d", "shape", "empty"]
    for t in p.tensors:
        assert data[t.offset:t.offset + t.length] == arrays[t.name].tobytes()
        assert t.shape == arrays[t.name].shape
    assert {t.name: t.dtype for t in p.tensors} == {"w0": "F32", "b0": "F16", "d": "F64", "shape": "I64", "empty": "F32"}


def test_external_data_offsets_are_the_ones_onnx_wrote(tmp_path: Path) -> None:
    m = model(mixed(np.random.default_rng(1)))
    arrays = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer if i.data_type != TensorProto.STRING}
    path = tmp_path / "e.onnx"
    onnx.save(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location="e.onnx.data",
              size_threshold=0)
    p = parse_path(path)
    assert p is not None and p.tensors == ()  # the model file holds no tensor bytes now
    with open(path, "rb") as f:
        ext = parser.external_tensors(f, path.stat().st_size)
    assert ext is not None
    side = (tmp_path / "e.onnx.data").read_bytes()
    assert {e.location for e in ext} == {"e.onnx.data"}
    assert {e.tensor.name for e in ext} == {"w0", "b0", "d", "shape", "empty"}  # float_data stays inline
    for e in ext:
        t = e.tensor
        assert side[t.offset:t.offset + t.length] == arrays[t.name].tobytes()


def test_other_files_are_not_onnx(tmp_path: Path) -> None:
    assert parse_bytes(b"") is None
    assert parse_bytes(b"\x08\x07") is None  # an ir_version and no graph
    assert parse_bytes(b"\x08\x07\x3a\x00") is not None  # an empty graph is a model without initializers
    assert parse_bytes(b"GGUF" + bytes(60)) is None
    assert parse_bytes(bytes(range(256)) * 4) is None


def small(tmp_path: Path) -> bytes:
    path = tmp_path / "s.onnx"
    onnx.save(model(mixed(np.random.default_rng(2))), str(path))
    return path.read_bytes()


def test_every_truncation_is_refused(tmp_path: Path) -> None:
    data = small(tmp_path)
    for cut in range(0, len(data) - 1, 11):
        assert parse_bytes(data[:cut]) is None, cut


def test_lies_are_refused(tmp_path: Path) -> None:
    data = small(tmp_path)
    p = parse_bytes(data)
    assert p is not None
    w0 = p.tensors[0]
    # raw_data's length varint sits just before its bytes: 8192 = 0x80 0x40.
    assert data[w0.offset - 2:w0.offset] == b"\x80\x40"
    for forged in (
        data[:w0.offset - 2] + b"\x81\x40" + data[w0.offset:],  # raw_data one byte longer than its shape
        data[:w0.offset - 2] + b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x7f" + data[w0.offset:],  # absurd length
        data[:w0.offset - 2] + b"\x80" * 11 + data[w0.offset:],  # a varint that never ends
        data + b"\x3a\x00",  # a second graph
        data + b"\x0b",  # a group (wire type 3): not in proto3
    ):
        started = time.process_time()
        assert parse_bytes(forged) is None
        assert time.process_time() - started < 1.0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=8))
def test_fuzz_mutated_files_parse_consistently_or_not_at_all(tmp_path: Path, edits: list[tuple[int, int]]) -> None:
    data = bytearray(small(tmp_path))
    for pos, byte in edits:
        data[pos % len(data)] = byte
    p = parse_bytes(bytes(data))
    if p is not None:
        end = 0
        for t in p.tensors:
            assert end <= t.offset and t.offset + t.length <= len(data)
            end = t.offset + t.length


# --- issue 16's store-level targets --------------------------------------------------------------------

def test_store_targets(tmp_path: Path) -> None:
    assert_targets(measure(tmp_path, write_onnx, ".onnx"))


def write_external(path: Path, tensors: Tensors, extra: int) -> Path:
    """A directory holding ``model.onnx`` and its external data ``model.onnx.data`` (the tensors)."""
    path.mkdir()
    write_onnx(path / "tmp.onnx", tensors, extra)
    onnx.save(onnx.load(str(path / "tmp.onnx")), str(path / "model.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0)
    (path / "tmp.onnx").unlink()
    return path


def test_store_targets_with_external_data_logged_beside_its_model(tmp_path: Path) -> None:
    targets = measure(tmp_path, write_external, ".dir", size_of=lambda d: sum(p.stat().st_size for p in d.iterdir()))
    # The side file's tensors are named by the model stored beside it (the model itself is unchanged).
    assert_targets(targets)


def test_diff_of_external_data_names_each_tensor_and_how_far_it_moved(tmp_path: Path) -> None:
    import objstore
    from objstore.api.diff import diff_versions

    rng = np.random.default_rng(5)
    base = {f"w{i}": rng.standard_normal((128, 64)).astype(np.float32) for i in range(4)}
    base["h"] = rng.standard_normal((64,)).astype(np.float16)
    tuned = dict(base)
    tuned["w1"] = base["w1"] + 0.01 * rng.standard_normal((128, 64)).astype(np.float32)
    tuned["h"] = (base["h"].astype(np.float32) * 1.5).astype(np.float16)

    def write(d: Path, arrays: dict[str, np.ndarray], location: str = "model.onnx.data") -> Path:
        d.mkdir()
        onnx.save(model([numpy_helper.from_array(a, n) for n, a in arrays.items()]), str(d / "model.onnx"),
                  save_as_external_data=True, all_tensors_to_one_file=True, location=location, size_threshold=0)
        return d

    store = tmp_path / "store"
    with objstore.init(project="p", entity="e", store=store) as run:
        a = run.log_model(str(write(tmp_path / "a", base)), name="m")
        b = run.log_model(str(write(tmp_path / "b", tuned)), name="m")
        c = run.log_model(str(write(tmp_path / "c", tuned, location="model.onnx_data")), name="m")
    s, va, vb = a._logged()[0], a._logged()[1], b._logged()[1]
    files = {f.path: f for f in diff_versions(s, va, vb).files}
    assert list(files) == ["model.onnx.data"]  # offsets and lengths did not move: the model is byte-identical
    got = {t.name: (t.change, t.new_dtype, t.new_shape, t.relative_l2) for t in files["model.onnx.data"].tensors or ()}
    assert set(got) == {"w1", "h"}
    for name in got:
        x, y = base[name].astype(np.float64), tuned[name].astype(np.float64)
        expected = np.linalg.norm(y - x) / np.linalg.norm(x)
        change, dtype, shape, l2 = got[name]
        assert change == "values" and shape == base[name].shape and dtype == {"w1": "F32", "h": "F16"}[name]
        assert l2 is not None and abs(l2 - expected) <= 1e-6 * max(1.0, expected), (name, l2, expected)
    # A side file renamed with its model's new location: compared as the same file (one out, one in).
    renamed = {f.path: f for f in diff_versions(s, vb, c._logged()[1]).files}
    assert renamed["model.onnx_data"].status == "renamed" and renamed["model.onnx_data"].old_path == "model.onnx.data"
    assert renamed["model.onnx"].status == "changed"
    # A side file whose model is not beside it in the version: no tensors, never a guess.
    with objstore.init(project="p", entity="e", store=store) as run:
        lone = tmp_path / "lone"
        lone.mkdir()
        (lone / "model.onnx.data").write_bytes((tmp_path / "a" / "model.onnx.data").read_bytes())
        d = run.log_model(str(lone), name="n")
        (lone / "model.onnx.data").write_bytes((tmp_path / "b" / "model.onnx.data").read_bytes())
        e = run.log_model(str(lone), name="n")
    assert [f.tensors for f in diff_versions(s, d._logged()[1], e._logged()[1]).files] == [None]


def test_a_side_file_is_segmented_by_its_model(tmp_path: Path) -> None:
    from objstore.storage.segmenting import segment_file

    d = write_external(tmp_path / "m", {"a": ("F32", (64, 4), bytes(1024)), "b": ("F16", (8,), bytes(16))}, 0)
    side = d / "model.onnx.data"
    size = side.stat().st_size

    def segments() -> list[tuple[int, int, str | None]]:
        with open(side, "rb") as f:
            return [(s.offset, s.length, s.dtype) for s in segment_file(f, size, side)]

    assert segments() == [(0, 1024, "F32"), (1024, 16, "F16")]
    with open(side, "rb") as f:
        assert [(s.offset, s.length) for s in segment_file(f, size)] == [(0, size)]  # no path: plain
    (d / "model.onnx").rename(d / "other.onnx")
    assert segments() == [(0, size, None)]  # no model beside it: plain
    (d / "model.onnx").symlink_to(d / "other.onnx")
    assert segments() == [(0, size, None)]  # the model is not looked for through a symlink
    (d / "model.onnx").unlink()
    side.write_bytes(bytes(size - 8))  # the model now names bytes past the side file's end
    (d / "other.onnx").rename(d / "model.onnx")
    with open(side, "rb") as f:
        assert [(s.offset, s.length) for s in segment_file(f, size - 8, side)] == [(0, size - 8)]
