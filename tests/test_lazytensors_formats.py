"""Lazy tensor reads of every format beyond safetensors fetch only the asked tensor's chunks.

``Artifact.safe_open`` parses a non-safetensors file through ``StoredFile`` (each read fetches the
chunks it touches), then ``get_tensor`` reads one tensor's byte range. What is counted is the
backend's own request and byte counters of a fresh store (nothing cached in memory): a tensor's
read must fetch exactly the stored bytes of the chunks covering it (plus each chunk record's head
in its pack), in one ranged request, and opening must fetch no chunk that lies inside a tensor.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from format_targets import Tensors, small_model

import objstore
from objstore.api.artifact import logged_version
from objstore.model.store import Store
from objstore.storage import formats
from objstore.storage.objects import FileObject
from objstore.storage.trees import entry_at

h5py = pytest.importorskip("h5py")
pytest.importorskip("torch")
pytest.importorskip("onnx")
pytest.importorskip("gguf")

from test_formats_gguf import write_gguf  # noqa: E402
from test_formats_onnx import write_onnx  # noqa: E402
from test_formats_store import write_npz, write_pt  # noqa: E402

RECORD_HEAD = 41  # bytes before each chunk's payload in a pack record
NUMPY_OF = {"F32": np.float32, "F16": np.float16}


def write_h5_dense(path: Path, tensors: Tensors, extra: int) -> Path:
    """The tensors in one "latest format" group of more than 8 members (dense storage: fractal heap + B-tree v2)."""
    del extra
    with h5py.File(path, "w", libver="latest") as f:
        g = f.create_group("weights")
        for name, (dtype, shape, raw) in tensors.items():
            g.create_dataset(name, data=np.frombuffer(raw, NUMPY_OF[dtype]).reshape(shape))
    return path


WRITERS: dict[str, tuple[Callable[[Path, Tensors, int], Path], Callable[[str], str]]] = {
    ".pt": (write_pt, lambda n: n),
    ".npz": (write_npz, lambda n: n),
    ".gguf": (lambda p, t, e: write_gguf(p, t), lambda n: n),
    ".h5": (write_h5_dense, lambda n: f"weights/{n}"),
    ".onnx": (write_onnx, lambda n: n),
}


def chunk_spans(fobj: FileObject) -> list[tuple[int, int, object]]:
    pos, out = 0, []
    for cid, n in fobj.chunks:
        out.append((pos, pos + n, cid))
        pos += n
    return out


def stored_len(store: Store, ids: list[object]) -> int:
    return sum(loc.stored_len for _, loc in store.odb.locate_many(ids))  # type: ignore[arg-type]


@pytest.mark.parametrize("suffix", list(WRITERS))
def test_get_tensor_fetches_only_the_asked_tensors_chunks(tmp_path: Path, suffix: str, monkeypatch: pytest.MonkeyPatch) -> None:
    write, name_of = WRITERS[suffix]
    tensors = small_model(layers=3)  # 13 tensors (more than 8: a dense HDF5 group), the large ones several chunks each
    path = write(tmp_path / f"m{suffix}", tensors, 0)
    with open(path, "rb") as f:
        parsed = formats.parse(f, path.stat().st_size)
    assert parsed is not None
    where = {t.name: t for t in parsed.tensors}
    assert set(where) == {name_of(n) for n in tensors}
    store_dir = tmp_path / "s"
    with objstore.init(project="p", entity="e", store=store_dir) as run:
        run.log_model(str(path), name="m")
    art = objstore.Api(store=str(store_dir)).artifact("e/p/m:latest")  # a new Store: nothing in memory
    store, resolved = logged_version(art)
    entry = entry_at(store.odb, resolved.version.tree, path.name)
    assert entry.id is not None
    fobj = store.odb.get_object(entry.id)
    assert isinstance(fobj, FileObject)
    spans = chunk_spans(fobj)
    store.odb.locate_many([spans[0][2]])  # loads the chunk index: a cost of opening the store, not of this file
    stats = store.backend.stats
    inside_tensors = {cid for a, b, cid in spans if any(t.offset <= a and b <= t.offset + t.length for t in parsed.tensors)}
    outside = [cid for _, _, cid in spans if cid not in inside_tensors]
    opened_ranges: list[tuple[int, int]] = []
    read_file_ranges = store.odb.read_file_ranges

    def recording(fobj: FileObject, ranges: list[tuple[int, int]], **kw: object) -> object:
        opened_ranges.extend(ranges)
        return read_file_ranges(fobj, ranges, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(store.odb, "read_file_ranges", recording)  # observes the calls; the reads are real
    start = stats.snapshot()
    with art.safe_open(path.name) as f:
        opened = stats.snapshot()
        monkeypatch.undo()
        assert sorted(f.keys()) == sorted(where)
        for name in sorted(tensors, key=lambda n: -len(tensors[n][2]))[:6]:
            t = where[name_of(name)]
            before = stats.snapshot()
            got = f.get_tensor(t.name)
            after = stats.snapshot()
            assert got.tobytes() == tensors[name][2] and got.shape == tensors[name][1]
            mine = [cid for a, b, cid in spans if a < t.offset + t.length and b > t.offset]
            # Segmentation cut the file on this tensor's edges: its chunks hold its bytes and no other's.
            assert all(cid in inside_tensors for cid in mine), name
            fetched = after.bytes_received - before.bytes_received
            own = stored_len(store, mine)
            assert own <= fetched <= own + RECORD_HEAD * len(mine), (name, fetched, own, len(mine))
            assert after.requests - before.requests == 1, name  # one pack, neighbours: one ranged GET
    # Opening parsed the file through its stored chunks: the tree, the file object and chunks outside the
    # tensors (headers, pickles, B-tree nodes, protobuf fields), never a chunk inside one.
    # Every byte range opening asked of the file: none touches a chunk inside a tensor.
    assert opened_ranges and not [(lo, n) for lo, n in opened_ranges for a, b, cid in spans
                                  if cid in inside_tensors and lo < b and lo + n > a], suffix
    open_bytes = opened.bytes_received - start.bytes_received
    assert open_bytes <= stored_len(store, outside) + RECORD_HEAD * len(outside) + 40 * len(fobj.chunks) + 8192, suffix
