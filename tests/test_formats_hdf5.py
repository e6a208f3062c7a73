"""HDF5 / Keras parsing on real files written by h5py, and on hostile ones.

The reference for where a dataset's bytes lie is h5py's own ``id.get_offset()`` and
``id.get_storage_size()``; objstore's parser must agree on every contiguous dataset of a numeric
dtype, leave the rest (chunked, compressed, strings) to plain segments, and say None for a file that lies.
"""

from __future__ import annotations

import json
import struct
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from format_targets import Tensors, assert_targets, assert_well_formed, measure, parsing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from objstore.storage.formats import hdf5 as parser

h5py = pytest.importorskip("h5py")


def keras_weights(path: Path, seed: int = 0, *, layers: int = 4, libver: str = "earliest", note: str = "",
                  changed: tuple[int, ...] = ()) -> Path:
    """A Keras-3-style weights file: ``layers/dense_<i>/vars/{0,1}`` (kernel f32, bias f16), plus extras."""
    rng = np.random.default_rng(seed)
    tuned = np.random.default_rng(seed + 1000)
    with h5py.File(path, "w", libver=libver) as f:
        f.attrs["keras_version"] = "3.5.0"
        if note:
            f.attrs["note"] = note
        for i in range(layers):
            g = f.create_group(f"layers/dense_{i}/vars")
            src = tuned if i in changed else rng
            kernel = src.standard_normal((64, 48)).astype(np.float32) * 0.02
            bias = src.standard_normal((48,)).astype(np.float16)
            if i in changed:
                rng.standard_normal((64, 48)), rng.standard_normal((48,))  # keep the others' draws aligned
            g.create_dataset("0", data=kernel)
            g.create_dataset("1", data=bias)
        f.create_dataset("optimizer/vars/iterations", data=np.int64(7))
        f.create_dataset("chunked", data=np.ones((100,), np.float32), chunks=(10,), compression="gzip")
        f.create_dataset("names", data=np.array([b"ab", b"cd"]))
        f.create_dataset("big_endian", data=np.arange(4, dtype=">f4"))
        f.create_dataset("empty", shape=(5,), dtype="f4")  # never written: no storage allocated
    return path


def h5py_contiguous(path: Path) -> dict[str, tuple[int, int, tuple[int, ...]]]:
    out: dict[str, tuple[int, int, tuple[int, ...]]] = {}
    with h5py.File(path) as f:
        def visit(name: str, obj: object) -> None:
            if isinstance(obj, h5py.Dataset) and obj.chunks is None and obj.id.get_offset() is not None:
                out[name] = (obj.id.get_offset(), obj.id.get_storage_size(), obj.shape)
        f.visititems(visit)
    return out


parse_path, parse_bytes = parsing(parser)


@pytest.mark.parametrize("libver", ["earliest", "latest"])  # superblock 0, v1 headers / superblock 3, v2 headers
def test_datasets_are_where_h5py_finds_them(tmp_path: Path, libver: str) -> None:
    path = keras_weights(tmp_path / "w.h5", libver=libver)
    p = parse_path(path)
    assert p is not None and p.format == "hdf5"
    expected = {k: v for k, v in h5py_contiguous(path).items() if k not in ("names", "big_endian")}
    assert {t.name: (t.offset, t.length, t.shape) for t in p.tensors} == expected
    dtypes = {t.name: t.dtype for t in p.tensors}
    assert dtypes["layers/dense_0/vars/0"] == "F32" and dtypes["layers/dense_0/vars/1"] == "F16"
    assert dtypes["optimizer/vars/iterations"] == "I64"
    assert_well_formed(p, path.stat().st_size)


def test_continuation_blocks_and_many_attributes(tmp_path: Path) -> None:
    # Attributes added after a dataset's creation overflow its first header block into continuations.
    path = tmp_path / "c.h5"
    for libver in ("earliest", "latest"):
        with h5py.File(path, "w", libver=libver) as f:
            d = f.create_dataset("x", data=np.arange(1000, dtype=np.float32))
            for i in range(40):
                d.attrs[f"a{i}"] = "v" * 50
            f.create_dataset("y", data=np.arange(10, dtype=np.float64))
        p = parse_path(path)
        assert p is not None
        assert {t.name: (t.offset, t.length, t.shape) for t in p.tensors} == h5py_contiguous(path), libver


def test_deep_groups_and_a_large_symbol_table(tmp_path: Path) -> None:
    # 300 children split the group's B-tree into more than one level of nodes.
    path = tmp_path / "g.h5"
    with h5py.File(path, "w") as f:
        deep = f.create_group("/".join(f"g{i}" for i in range(20)))
        deep.create_dataset("leaf", data=np.ones(3, np.float32))
        wide = f.create_group("wide")
        for i in range(300):
            wide.create_dataset(f"d{i}", data=np.full(2, i, np.int32))
        f["wide/again"] = f["wide/d0"]  # a second hard link: reported once
    p = parse_path(path)
    assert p is not None
    got = {t.name for t in p.tensors}
    assert len(got) == 301 and "/".join(f"g{i}" for i in range(20)) + "/leaf" in got
    assert len({t.offset for t in p.tensors}) == 301


@pytest.mark.parametrize("members", [12, 60, 400])  # one heap block and B-tree leaf / an internal node / indirect blocks
def test_dense_latest_format_groups_are_walked(tmp_path: Path, members: int) -> None:
    # More than 8 links in a "latest" group are kept in dense storage: a fractal heap of link messages
    # indexed by a version 2 B-tree of name hashes.
    path = keras_weights(tmp_path / "d.h5", layers=members, libver="latest")
    data = path.read_bytes()
    assert data.count(b"FRHP") >= 1 and data.count(b"BTHD") >= 1
    if members == 400:
        assert b"FHIB" in data and b"BTIN" in data  # the doubling table's indirect block, an internal B-tree node
    p = parse_path(path)
    assert p is not None
    expected = {k: v for k, v in h5py_contiguous(path).items() if k not in ("names", "big_endian")}
    assert {t.name: (t.offset, t.length, t.shape) for t in p.tensors} == expected
    assert len(p.tensors) == 2 * members + 1
    assert_well_formed(p, len(data))


def test_a_heap_deep_enough_for_child_indirect_blocks(tmp_path: Path) -> None:
    # 30,000 soft links with long names fill ~7 MB of fractal heap: past the root indirect block's
    # direct rows, into child indirect blocks. Soft links are skipped; the datasets among them are found.
    path = tmp_path / "huge.h5"
    with h5py.File(path, "w", libver="latest") as f:
        g = f.create_group("g")
        for i in range(5):
            g.create_dataset(f"d{i}", data=np.full(4, i, np.float32))
        for i in range(30_000):
            g[f"s{i:06d}" + "x" * 200] = h5py.SoftLink("/nowhere")
    data = path.read_bytes()
    assert data.count(b"FHIB") > 1  # the root indirect block and its children
    p = parse_path(path)
    assert p is not None
    assert {t.name: (t.offset, t.length, t.shape) for t in p.tensors} == h5py_contiguous(path)


@pytest.mark.parametrize("libver", ["earliest", "latest"])
def test_committed_datatypes_are_followed(tmp_path: Path, libver: str) -> None:
    # h5py's ``f[name] = dtype`` commits a datatype; datasets created with it hold a shared datatype
    # message that names the committed type's object header.
    path = tmp_path / "t.h5"
    with h5py.File(path, "w", libver=libver) as f:
        f["types/half"] = np.dtype("<f2")
        f["types/big"] = np.dtype(">f4")
        f.create_dataset("w", data=np.arange(30, dtype="f2").reshape(5, 6), dtype=f["types/half"])
        f.create_dataset("be", data=np.arange(4, dtype=">f4"), dtype=f["types/big"])
        f.create_dataset("plain", data=np.arange(4, dtype="f4"))
    p = parse_path(path)
    assert p is not None
    assert {t.name: (t.dtype, t.shape) for t in p.tensors} == {"w": ("F16", (5, 6)), "plain": ("F32", (4,))}
    w = next(t for t in p.tensors if t.name == "w")
    assert path.read_bytes()[w.offset:w.offset + w.length] == np.arange(30, dtype="f2").tobytes()
    assert {t.name: (t.offset, t.length) for t in p.tensors} == {
        k: v[:2] for k, v in h5py_contiguous(path).items() if k != "be"}


def dense(tmp_path: Path) -> bytes:
    return keras_weights(tmp_path / "dense.h5", layers=60, libver="latest").read_bytes()


def test_dense_group_lies_are_refused(tmp_path: Path) -> None:
    data = dense(tmp_path)
    assert parse_bytes(data) is not None
    bthd = data.find(b"BTHD")
    total_at = bthd + 16 + 8 + 2  # the header's total record count (after the root address and its count)
    forged = bytearray(data)
    forged[total_at] ^= 1
    assert parse_bytes(bytes(forged)) is None  # the tree holds a different number of records
    for sig in (b"FRHP", b"FHDB", b"BTLF", b"BTIN"):
        forged = bytearray(data)
        at = data.find(sig)
        forged[at:at + 4] = b"XXXX"
        assert parse_bytes(bytes(forged)) is None, sig
    fhdb = data.find(b"FHDB")
    forged = bytearray(data)
    forged[fhdb + 5 + 8] ^= 0x40  # the direct block's own heap offset: not where the table puts it
    assert parse_bytes(bytes(forged)) is None
    leaf = data.find(b"BTLF")
    forged = bytearray(data)
    forged[leaf + 6 + 4 + 1:leaf + 6 + 4 + 5] = b"\xff\xff\xff\x7f"  # the first record's heap offset: past every block
    assert parse_bytes(bytes(forged)) is None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), min_size=1, max_size=8))
def test_fuzz_dense_groups_parse_consistently_or_not_at_all(tmp_path: Path, edits: list[tuple[int, int]]) -> None:
    path = tmp_path / "dense.h5"
    if not path.exists():
        keras_weights(path, layers=60, libver="latest")
    data = bytearray(path.read_bytes())
    p0 = parse_bytes(bytes(data))
    assert p0 is not None
    inside = [(t.offset, t.offset + t.length) for t in p0.tensors]
    bounds = [(a, b) for a, b in zip([0, *[e for _, e in inside]], [s for s, _ in inside] + [len(data)]) if b > a]
    for pos, byte in edits:
        a, b = bounds[pos % len(bounds)]
        data[a + pos % (b - a)] = byte  # edits outside the tensors' bytes, where the structure is
    p = parse_bytes(bytes(data))
    if p is not None:
        assert_well_formed(p, len(data))


def test_a_user_block_before_the_superblock(tmp_path: Path) -> None:
    path = tmp_path / "u.h5"
    with h5py.File(path, "w", userblock_size=1024) as f:
        f.create_dataset("x", data=np.arange(100, dtype=np.float32))
    p = parse_path(path)
    assert p is not None and [(t.name, t.offset) for t in p.tensors] == [("x", h5py_contiguous(path)["x"][0])]
    x = p.tensors[0]
    assert path.read_bytes()[x.offset:x.offset + x.length] == np.arange(100, dtype=np.float32).tobytes()


def write_keras(path: Path, weights: Path, *, compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression) as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.5.0"}))
        z.writestr("config.json", json.dumps({"class_name": "Sequential"}))
        z.write(weights, "model.weights.h5")
    return path


def test_keras_zip_datasets_are_located_inside_the_zip(tmp_path: Path) -> None:
    weights = keras_weights(tmp_path / "model.weights.h5")
    keras = write_keras(tmp_path / "m.keras", weights)
    p = parse_path(keras)
    inner = parse_path(weights)
    assert p is not None and inner is not None and p.metadata["container"] == "keras"
    data = keras.read_bytes()
    h5 = weights.read_bytes()
    assert [t.name for t in p.tensors] == [t.name for t in inner.tensors]
    for t, u in zip(p.tensors, inner.tensors, strict=True):
        assert data[t.offset:t.offset + t.length] == h5[u.offset:u.offset + u.length]
    assert parse_path(write_keras(tmp_path / "z.keras", weights, compression=zipfile.ZIP_DEFLATED)) is None
    with zipfile.ZipFile(tmp_path / "other.zip", "w") as z:
        z.writestr("data.pkl", b"x")
    assert parse_path(tmp_path / "other.zip") is None


# --- hostile files -------------------------------------------------------------------------------------

def tiny(tmp_path: Path) -> bytes:
    path = tmp_path / "tiny.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("a/x", data=np.arange(64, dtype=np.float32))
        f.create_dataset("b", data=np.arange(16, dtype=np.float16))
    return path.read_bytes()


def test_every_truncation_is_refused(tmp_path: Path) -> None:
    data = tiny(tmp_path)
    assert parse_bytes(data) is not None
    for cut in range(0, len(data), 13):
        p = parse_bytes(data[:cut])
        assert p is None or all(t.offset + t.length <= cut for t in p.tensors), cut


def test_lying_dataset_address_is_refused(tmp_path: Path) -> None:
    data = bytearray(tiny(tmp_path))
    p = parse_bytes(bytes(data))
    assert p is not None
    offset = p.tensors[0].offset
    at = bytes(data).find(struct.pack("<Q", offset))  # the layout message's address field
    for lie in (len(data) - 10, 1 << 62, p.tensors[1].offset):  # past the end, absurd, overlapping the other
        forged = bytearray(data)
        forged[at:at + 8] = struct.pack("<Q", lie)
        assert parse_bytes(bytes(forged)) is None, lie


def test_a_group_that_contains_itself_ends(tmp_path: Path) -> None:
    # A compact latest-format group with a hard link back to the root: a cycle in the object graph.
    path = tmp_path / "cycle.h5"
    with h5py.File(path, "w", libver="latest") as f:
        f.create_dataset("x", data=np.arange(8, dtype=np.float32))
        f["g/self"] = f["/"]
        f["g/self2"] = f["g"]
    started = time.process_time()
    p = parse_path(path)
    assert time.process_time() - started < 1.0
    assert p is not None and [t.name for t in p.tensors] == ["x"]


def test_a_btree_node_that_points_at_itself_is_refused(tmp_path: Path) -> None:
    data = bytearray(tiny(tmp_path))
    tree = data.find(b"TREE")
    o = 8
    child_at = tree + 8 + 2 * o + o  # the first child, after the first key
    data[child_at:child_at + 8] = struct.pack("<Q", tree)
    # The root node is level 0, so its children are symbol nodes: pointing one at a TREE is a lie.
    assert parse_bytes(bytes(data)) is None
    data[tree + 5] = 1  # now level 1: its child is itself, a cycle
    assert parse_bytes(bytes(data)) is None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), min_size=1, max_size=8))
def test_fuzz_mutated_files_parse_consistently_or_not_at_all(tmp_path: Path, edits: list[tuple[int, int]]) -> None:
    path = tmp_path / "fuzz.h5"
    if not path.exists():
        keras_weights(path, layers=2)
    data = bytearray(path.read_bytes())
    metadata_end = min(t.offset for t in parse_bytes(bytes(data)).tensors)  # type: ignore[union-attr]
    for pos, byte in edits:
        data[pos % metadata_end] = byte  # edits in the metadata, where they can lie
    p = parse_bytes(bytes(data))
    if p is not None:
        assert_well_formed(p, len(data))


# --- issue 16's store-level targets --------------------------------------------------------------------

NUMPY_OF = {"F32": np.float32, "F16": np.float16}


def write_h5(path: Path, tensors: Tensors, extra: int) -> Path:
    """The tensors as a Keras-style weights file, each at ``layers/<name>/vars/0``; ``extra`` bytes of
    root attribute, which moves every object after it."""
    with h5py.File(path, "w") as f:
        if extra:
            f.attrs["training_config"] = "c" * extra
        for name, (dtype, shape, raw) in tensors.items():
            f.create_dataset(f"layers/{name}/vars/0", data=np.frombuffer(raw, NUMPY_OF[dtype]).reshape(shape))
    return path


def test_store_targets_h5(tmp_path: Path) -> None:
    assert_targets(measure(tmp_path, write_h5, ".h5"), lambda name: f"layers/{name}/vars/0")


def test_store_targets_keras(tmp_path: Path) -> None:
    def write(path: Path, tensors: Tensors, extra: int) -> Path:
        return write_keras(path, write_h5(path.with_suffix(".weights.h5"), tensors, extra))

    assert_targets(measure(tmp_path, write, ".keras"), lambda name: f"layers/{name}/vars/0")
