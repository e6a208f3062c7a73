"""Lazy tensor reads (``Artifact.safe_open``) and ranged file reads
(``ObjectDatabase.read_file_ranges``), on a local store and on the real SeaweedFS
server: the bytes are the logged bytes, only the tensor's chunks are fetched (counted
by the backend), neighbours in one request, and damage or a file that is not
safetensors is an error, never other bytes."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import objstore
from objstore.api.artifact import Artifact, logged_version
from objstore.errors import CorruptObject, InvalidInput, NotFound, NotSafetensors
from objstore.files.lazytensors import NUMPY_DTYPES, SafetensorsFile
from objstore.model.store import Store
from objstore.storage.keys import pack_key
from objstore.storage.objects import FileObject
from objstore.storage.odb import ChunkLocation
from objstore.storage.segmenting import DTYPE_SIZES
from objstore.storage.trees import entry_at
from objstore.testing.tensorfiles import Tensor, random_weights, write_safetensors

DTYPES = ["F32", "F16", "BF16", "F64", "I8", "U8", "I32", "I64", "BOOL", "F8_E4M3", "U16"]
# Rows of this many bytes make a tensor span several chunks (avg 128 KiB).
WIDE = 1024


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "store")
    return str(request.getfixturevalue("s3_bucket_url"))


def log_file(store: str, path: Path, name: str = "m") -> Artifact:
    with objstore.init("e", "p", store=store) as run:
        return run.log_model(path=str(path), name=name)


def fresh(store: str, name: str = "m") -> Artifact:
    """The version as a new process sees it: a new Store, nothing loaded."""
    return objstore.Api(store=store).artifact(f"e/p/{name}:latest")


def raw_of(dtype: str, shape: tuple[int, ...], rng: np.random.Generator) -> bytes:
    n = math.prod(shape) * DTYPE_SIZES[dtype]
    if dtype in ("F32", "F16", "BF16", "F64"):
        return random_weights(rng, shape, dtype)
    return rng.integers(0, 256, n, dtype=np.uint8).tobytes() if dtype != "BOOL" else rng.integers(0, 2, n, dtype=np.uint8).tobytes()


def tensor_chunks(store: Store, fobj: FileObject, start: int, length: int) -> list[ChunkLocation]:
    """Where the chunks covering bytes ``start .. start + length`` of the file are stored."""
    pos, ids = 0, []
    for cid, n in fobj.chunks:
        if pos < start + length and pos + n > start:
            ids.append(cid)
        pos += n
    return [loc for _, loc in store.odb.locate_many(ids)]


def file_object(art: Artifact, name: str) -> tuple[Store, FileObject]:
    store, resolved = logged_version(art)
    entry = entry_at(store.odb, resolved.version.tree, name)
    assert entry.id is not None
    fobj = store.odb.get_object(entry.id)
    assert isinstance(fobj, FileObject)
    return store, fobj


# -- byte-identical to the materialized file ---------------------------------

shapes = st.lists(st.integers(0, 6), min_size=0, max_size=3).map(tuple)
tensor_specs = st.lists(st.tuples(st.sampled_from(DTYPES), shapes, st.booleans()), min_size=1, max_size=6)


@pytest.fixture(scope="module")
def shared_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("lazy-store")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(specs=tensor_specs, seed=st.integers(0, 2**32 - 1), metadata=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2))
def test_every_tensor_reads_as_the_materialized_file_has_it(shared_store: Path, tmp_path: Path,
                                                            specs: list[tuple[str, tuple[int, ...], bool]],
                                                            seed: int, metadata: dict[str, str]) -> None:
    rng = np.random.default_rng(seed)
    tensors: dict[str, Tensor] = {}
    for i, (dtype, shape, wide) in enumerate(specs):
        shape = (*shape, WIDE // DTYPE_SIZES[dtype]) if wide else shape  # some span several chunks
        tensors[f"t{i}.{dtype}"] = (dtype, shape, raw_of(dtype, shape, rng))
    path = write_safetensors(tmp_path / f"model-{seed}.safetensors", tensors, metadata)
    art = log_file(str(shared_store / "store"), path)
    restored = Path(art.download(tmp_path / f"out-{seed}")) / path.name
    on_disk = restored.read_bytes()
    (n,) = struct.unpack("<Q", on_disk[:8])
    header = json.loads(on_disk[8:8 + n])
    with art.safe_open(path.name) as f:
        assert f.keys() == sorted(tensors)
        assert f.metadata() == metadata
        for name, (dtype, shape, _) in tensors.items():
            begin, end = header[name]["data_offsets"]
            got = f.get_tensor(name)
            assert got.dtype == np.dtype(NUMPY_DTYPES[dtype]) and got.shape == shape
            assert got.tobytes() == on_disk[8 + n + begin:8 + n + end]
            if shape:
                lo, hi = sorted(rng.integers(-1, shape[0] + 1, 2).tolist())
                assert np.array_equal(f.get_slice(name)[lo:hi], got[lo:hi])
                assert np.array_equal(f.get_slice(name)[::-2], got[::-2])


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ranges=st.lists(st.tuples(st.integers(0, 1_500_000), st.integers(0, 400_000)), min_size=1, max_size=4))
def test_read_file_ranges_returns_exactly_those_bytes(plain_file: tuple[Artifact, bytes], ranges: list[tuple[int, int]]) -> None:
    art, data = plain_file
    store, fobj = file_object(art, "blob.bin")
    ranges = [(min(s, len(data)), min(n, len(data) - min(s, len(data)))) for s, n in ranges]
    got = store.odb.read_file_ranges(fobj, ranges)
    assert [g.tobytes() for g in got] == [data[s:s + n] for s, n in ranges]


@pytest.fixture(scope="module")
def plain_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Artifact, bytes]:
    """A 1.5 MB file that is not safetensors (cut by content alone, not on any edge we read at)."""
    top = tmp_path_factory.mktemp("plain")
    data = np.random.default_rng(7).integers(0, 256, 1_500_000, dtype=np.uint8).tobytes()
    (top / "blob.bin").write_bytes(data)
    return log_file(str(top / "store"), top / "blob.bin"), data


def test_read_file_ranges_refuses_a_range_outside_the_file(plain_file: tuple[Artifact, bytes]) -> None:
    art, data = plain_file
    store, fobj = file_object(art, "blob.bin")
    for bad in [(-1, 2), (len(data) - 1, 2), (0, -1)]:
        with pytest.raises(InvalidInput, match="outside the"):
            store.odb.read_file_ranges(fobj, [bad])


# -- what is fetched, counted ---------------------------------------------------

@pytest.fixture
def model(tmp_path: Path) -> tuple[Path, dict[str, Tensor]]:
    """Five F32 tensors, 1 to 4 MiB each: each spans 8-40 chunks."""
    rng = np.random.default_rng(3)
    tensors = {f"layer{i}.weight": ("F32", (256 * (i + 1), WIDE), random_weights(rng, (256 * (i + 1), WIDE), "F32"))
               for i in range(4)}
    tensors["bias"] = ("F32", (WIDE,), random_weights(rng, (WIDE,), "F32"))
    return write_safetensors(tmp_path / "model.safetensors", tensors), tensors


def test_get_tensor_fetches_its_own_chunks_in_one_request(store_url: str, model: tuple[Path, dict[str, Tensor]]) -> None:
    path, tensors = model
    log_file(store_url, path)
    art = fresh(store_url)
    store, fobj = file_object(art, path.name)
    stats = store.backend.stats
    header_size = 8 + struct.unpack("<Q", path.read_bytes()[:8])[0]
    tensor_chunks(store, fobj, 0, 1)  # loads the chunk index: a cost of opening the store, not of this file
    start = stats.snapshot()
    with art.safe_open(path.name) as f:
        opened = stats.snapshot()
        for name in ["layer2.weight", "bias", "layer0.weight"]:
            before = stats.snapshot()
            got = f.get_tensor(name)
            after = stats.snapshot()
            info = next(t for t in _offsets(path) if t[0] == name)
            locs = tensor_chunks(store, fobj, info[1], info[2])
            stored = sum(loc.stored_len for loc in locs)
            assert got.tobytes() == tensors[name][2]
            # Segmentation cuts on tensor edges: the chunks covering a tensor are its own.
            assert len(locs) >= 1 and stored <= info[2] * 1.01 + 64
            fetched = after.bytes_received - before.bytes_received
            # Its stored bytes and their record heads (41 bytes each in the pack), nothing else.
            assert stored <= fetched <= stored + 41 * len(locs)
            assert after.requests - before.requests == 1  # one pack, neighbours: one ranged GET
    # Opening read the tree, the file object (40 bytes a chunk) and the header's chunk: no tensor.
    assert opened.bytes_received - start.bytes_received < header_size + 41 + 40 * len(fobj.chunks) + 2048
    assert opened.requests - start.requests <= 4


def _offsets(path: Path) -> list[tuple[str, int, int]]:
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    return [(k, 8 + n + v["data_offsets"][0], v["data_offsets"][1] - v["data_offsets"][0]) for k, v in header.items()]


def test_a_file_not_cut_on_tensor_edges_costs_at_most_two_more_chunks(store_url: str, model: tuple[Path, dict[str, Tensor]],
                                                                     tmp_path: Path) -> None:
    """A safetensors file logged as something else (here: behind a prefix, so its
    header is not at 0 and it is cut by content alone) read by byte range."""
    path, _ = model
    blob = tmp_path / "shifted.bin"
    blob.write_bytes(b"\x01" * 1234 + path.read_bytes())
    log_file(store_url, blob, "shifted")
    art = fresh(store_url, "shifted")
    store, fobj = file_object(art, blob.name)
    chunk_max = max(n for _, n in fobj.chunks)
    tensor_chunks(store, fobj, 0, 1)  # loads the chunk index
    for name, start, length in _offsets(path):
        before = store.backend.stats.snapshot()
        (got,) = store.odb.read_file_ranges(fobj, [(1234 + start, length)])
        fetched = store.backend.stats.snapshot().bytes_received - before.bytes_received
        assert got.tobytes() == path.read_bytes()[start:start + length], name
        inside = tensor_chunks(store, fobj, 1234 + start, length)
        assert fetched <= sum(loc.stored_len + 41 for loc in inside)
        assert fetched <= length + 2 * (chunk_max + 41) + 41 * len(inside)


# -- damage and files that are not safetensors --------------------------------------

def test_a_damaged_chunk_is_an_error_never_other_bytes(store_url: str, model: tuple[Path, dict[str, Tensor]]) -> None:
    path, tensors = model
    log_file(store_url, path)
    art = fresh(store_url)
    store, fobj = file_object(art, path.name)
    _, start, length = next(t for t in _offsets(path) if t[0] == "layer1.weight")
    victim = tensor_chunks(store, fobj, start, length)[3]
    packed = bytearray(store.backend.get(pack_key(victim.pack), max_size=1 << 30))
    packed[victim.offset + victim.stored_len // 2] ^= 0x40
    store.backend.put(pack_key(victim.pack), bytes(packed))  # same name, other bytes: what a bad disk or a hostile store does
    with fresh(store_url).safe_open(path.name) as f:
        assert f.get_tensor("layer0.weight").tobytes() == tensors["layer0.weight"][2]  # untouched chunks still read
        with pytest.raises(CorruptObject):
            f.get_tensor("layer1.weight")
        with pytest.raises(CorruptObject):
            f.get_slice("layer1.weight")[:]


def _hostile(path: Path, header: dict[str, object] | bytes, data: bytes = b"\0" * 64) -> Path:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)
    return path


@pytest.mark.parametrize(("header", "reason"), [
    ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 100]}}, "outside the file"),
    ({"a": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 16]}}, "byte range holds 16"),
    ({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]},
      "b": {"dtype": "F32", "shape": [4], "data_offsets": [8, 24]}}, "overlap"),
    ({"a": {"dtype": "F32", "shape": [4]}}, "lacks"),
    ({"a": {"dtype": "F32", "shape": [-4], "data_offsets": [0, 16]}}, "negative"),
    ({"__metadata__": {"k": 3}}, "__metadata__"),
    # safetensors itself refuses these; int() made "44" the shape (4, 4) and 4.7 a 4 (before the fix).
    ({"a": {"dtype": "F32", "shape": "44", "data_offsets": [0, 64]}}, "not a list of whole numbers"),
    ({"a": {"dtype": "F32", "shape": [4.7], "data_offsets": [0, 16]}}, "not a list of whole numbers"),
    ({"a": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, "not a list of whole numbers"),
    ({"a": {"dtype": "U8", "shape": [1], "data_offsets": [False, True]}}, "outside the file"),
    (b"[1, 2]", "not a JSON object"),
    (b"{not json", "not valid JSON"),
])
def test_a_hostile_header_is_a_clear_error(tmp_path: Path, header: dict[str, object] | bytes, reason: str) -> None:
    art = log_file(str(tmp_path / "store"), _hostile(tmp_path / "bad.safetensors", header))
    with pytest.raises(NotSafetensors, match=reason) as info:
        art.safe_open("bad.safetensors")
    assert "bad.safetensors in e/p/m:v0 is not a usable safetensors file" in str(info.value)


@pytest.mark.parametrize("shape", [[0, 1 << 70], [0, 1 << 40, 1 << 40], [1] * 65])
def test_a_shape_numpy_cannot_hold_is_refused_at_open(tmp_path: Path, shape: list[int]) -> None:
    """An empty tensor's byte range is 0 bytes whatever its other dimensions claim, and 65
    dimensions of 1 fill 4 bytes: each passes the size check, but numpy cannot make such an
    array, and get_tensor / get_slice let numpy's ValueError out (before the fix)."""
    nbytes = 4 if 0 not in shape else 0
    header = {"a": {"dtype": "F32", "shape": shape, "data_offsets": [0, nbytes]}}
    art = log_file(str(tmp_path / "store"), _hostile(tmp_path / "bad.safetensors", header))
    with pytest.raises(NotSafetensors, match="numpy"):
        art.safe_open("bad.safetensors")


def test_a_file_that_is_not_safetensors_is_a_clear_error(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "notes.txt").write_text("hello, this is text and no tensor at all")
    (tmp_path / "d" / "tiny").write_bytes(b"abc")
    (tmp_path / "d" / "huge-length").write_bytes(struct.pack("<Q", 1 << 40) + b"{}")
    (tmp_path / "d" / "sub").mkdir()
    (tmp_path / "d" / "sub" / "x").write_text("x")
    art = log_file(str(tmp_path / "store"), tmp_path / "d")
    with pytest.raises(NotSafetensors, match="impossible"):
        art.safe_open("notes.txt")
    with pytest.raises(NotSafetensors, match="too short"):
        art.safe_open("tiny")
    with pytest.raises(NotSafetensors, match="impossible"):
        art.safe_open("huge-length")
    with pytest.raises(InvalidInput, match="is a tree"):
        art.safe_open("sub")
    with pytest.raises(NotFound, match="not in this version"):
        art.safe_open("missing.safetensors")
    with pytest.raises(NotFound, match="not a directory"):
        art.safe_open("notes.txt/x")


def test_misuse_is_a_clear_error(tmp_path: Path, model: tuple[Path, dict[str, Tensor]]) -> None:
    path, _ = model
    art = log_file(str(tmp_path / "store"), path)
    with pytest.raises(InvalidInput, match="framework 'pt'"):
        art.safe_open(path.name, framework="pt")
    with pytest.raises(InvalidInput, match="not been logged"):
        objstore.Artifact("draft", type="model").safe_open(path.name)
    f = art.safe_open(path.name)
    with pytest.raises(NotFound, match="no tensor 'nope'"):
        f.get_tensor("nope")
    with pytest.raises(IndexError):
        f.get_slice("bias")[WIDE]
    f.close()
    with pytest.raises(InvalidInput, match="was closed"):
        f.get_tensor("bias")


def test_unsupported_dtypes_are_listed_but_refused(tmp_path: Path) -> None:
    path = _hostile(tmp_path / "q.safetensors", {"q": {"dtype": "F4", "shape": [8], "data_offsets": [0, 4]},
                                                  "ok": {"dtype": "U8", "shape": [4], "data_offsets": [4, 8]}}, b"\1\2\3\4\5\6\7\x08")
    with log_file(str(tmp_path / "store"), path).safe_open("q.safetensors") as f:
        assert f.keys() == ["ok", "q"]
        assert f.get_tensor("ok").tolist() == [5, 6, 7, 8]
        with pytest.raises(InvalidInput, match="dtype F4"):
            f.get_tensor("q")


def test_ranges_of_neighbouring_tensors_share_one_request(store_url: str, model: tuple[Path, dict[str, Tensor]]) -> None:
    path, tensors = model
    log_file(store_url, path)
    art = fresh(store_url)
    store, fobj = file_object(art, path.name)
    spans = {name: (start, length) for name, start, length in _offsets(path)}
    tensor_chunks(store, fobj, 0, 1)  # loads the chunk index
    before = store.backend.stats.snapshot()
    # Out of order, and one of them twice: each chunk is fetched once, in file order.
    got = store.odb.read_file_ranges(fobj, [spans["layer1.weight"], spans["layer0.weight"], spans["layer1.weight"]])
    after = store.backend.stats.snapshot()
    assert [g.tobytes() for g in got] == [tensors["layer1.weight"][2], tensors["layer0.weight"][2], tensors["layer1.weight"][2]]
    assert after.requests - before.requests == 1
    stored = sum(loc.stored_len + 41 for loc in tensor_chunks(store, fobj, spans["layer0.weight"][0],
                                                                 sum(spans["layer1.weight"]) - spans["layer0.weight"][0]))
    assert after.bytes_received - before.bytes_received <= stored


def test_a_file_object_lying_about_a_chunk_length_is_refused(plain_file: tuple[Artifact, bytes]) -> None:
    """A file's id covers the chunk lengths it claims, not the real ones: a crafted
    file object can call a chunk shorter or longer than it is and still have an id."""
    art, data = plain_file
    store, fobj = file_object(art, "blob.bin")
    (cid, n), rest = fobj.chunks[0], fobj.chunks[1:]
    for claimed in (n - 1, n + 1, 1 << 40):
        lying = FileObject(fobj.size - n + claimed, ((cid, claimed), *rest))
        with pytest.raises(CorruptObject, match=f"says chunk {cid.hex[:16]} is {claimed} bytes"):
            store.odb.read_file_ranges(lying, [(0, min(claimed, 2 * n))])
        with pytest.raises(CorruptObject, match="says chunk"):  # refused before 1 TiB is reserved for it
            store.odb.read_file_ranges(lying, [(0, lying.size)])


def test_a_file_object_claiming_more_bytes_than_an_offset_holds_is_refused(plain_file: tuple[Artifact, bytes]) -> None:
    """Three chunks each claimed 2^62 bytes long (a crafted file object; its id covers what it
    claims, and 3·2^62 still fits the object's uint64 size): the int64 offsets wrapped negative
    and an IndexError escaped read_file_ranges and safe_open (before the fix)."""
    art, _ = plain_file
    store, fobj = file_object(art, "blob.bin")
    cid = fobj.chunks[0][0]
    lying = FileObject(3 << 62, ((cid, 1 << 62),) * 3)
    with pytest.raises(CorruptObject, match="more than"):
        store.odb.read_file_ranges(lying, [(0, 16)])
    with pytest.raises(CorruptObject, match="more than"):
        SafetensorsFile(store.odb, lying, "forged")
