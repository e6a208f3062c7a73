"""The restore pipeline (ObjectDatabase.decode_runs under materialize): many runs
decoded by threads and written at their offsets in order give exactly the file,
a damaged chunk anywhere stops it with nothing left behind, and progress adds up.

Runs are made tiny (a few chunks each) so a small file spans many of them, in
flight on several workers at once.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import objstore
from objstore import errors
from objstore.files import materialize
from objstore.files.materialize import read_file_object
from objstore.model.store import Store
from objstore.storage import codecs
from objstore.storage import odb as odb_module
from objstore.storage.chunking import ChunkParams
from objstore.storage.ids import ObjectId
from objstore.storage.keys import pack_key
from objstore.storage.trees import walk_tree
from objstore.testing.tensorfiles import random_weights, write_safetensors

SMALL = ChunkParams(avg_size=4096, min_size=1024, max_size=16384, normalization=1)


def _log(store: Path, src: Path) -> objstore.Artifact:
    if not store.exists():
        Store.open(store, chunking=SMALL).close()
    with objstore.init(project="p", entity="e", store=store) as run:
        return run.log_model(src, name="m")


def _content(seed: int, size: int) -> bytes:
    rng = np.random.default_rng(seed)
    # half compressible, half noise: zstd and raw chunks interleaved
    return b"".join(bytes(rng.integers(0, 4, 3000, dtype=np.uint8)) + rng.bytes(3000) for _ in range(size // 6000 + 1))[:size]


@pytest.fixture(autouse=True)
def tiny_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(odb_module, "THREADED_RUN_LIMIT", 20_000)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(size=st.integers(0, 300_000), seed=st.integers(0, 2**16), workers=st.integers(1, 4))
def test_many_runs_on_many_workers_give_the_file(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
                                                 size: int, seed: int, workers: int) -> None:
    monkeypatch.setattr(materialize, "default_workers", lambda: workers)
    tmp = tmp_path_factory.mktemp("run")
    src = tmp / "blob.bin"
    src.write_bytes(_content(seed, size))
    art = _log(tmp / "store", src)
    seen: list[int] = []
    out = Path(art.download(tmp / "out", progress=seen.append))
    assert (out / "blob.bin").read_bytes() == src.read_bytes()
    assert sum(seen) == size


def test_a_safetensors_file_over_many_runs(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    src = tmp_path / "model.safetensors"
    write_safetensors(src, {"a": ("BF16", (256, 256), random_weights(rng, (256, 256), "BF16")),
                            "b": ("F32", (128, 256), random_weights(rng, (128, 256), "F32"))})
    out = Path(_log(tmp_path / "store", src).download(tmp_path / "out"))
    assert (out / "model.safetensors").read_bytes() == src.read_bytes()


def _damage_late_chunk(store: Path) -> None:
    """Flip a byte in the payload of the file's last-but-one chunk."""
    st_, resolved = objstore.Api(store).artifact("e/p/m:latest")._logged()  # noqa: SLF001 - the test needs the tree
    entry = next(e for _, e in walk_tree(st_.odb, resolved.version.tree) if e.id is not None)
    assert entry.id is not None
    chunk_id, _ = read_file_object(st_.odb, entry.id).chunks[-2]
    loc = st_.odb.locate(chunk_id)
    path = store / pack_key(loc.pack)
    data = bytearray(path.read_bytes())
    data[loc.offset + loc.stored_len // 2] ^= 0xFF
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))


def test_a_damaged_chunk_late_in_the_file_leaves_nothing_behind(tmp_path: Path) -> None:
    src = tmp_path / "blob.bin"
    src.write_bytes(_content(5, 400_000))
    _log(tmp_path / "store", src)
    _damage_late_chunk(tmp_path / "store")
    out = tmp_path / "out"
    with pytest.raises(errors.CorruptObject, match="does not hash to its id|does not decode|zstd"):
        objstore.Api(tmp_path / "store").artifact("e/p/m:latest").download(out)
    assert not out.exists()  # neither the file nor its temp file, nor the root the download made


def test_a_progress_callback_that_raises_stops_the_restore_cleanly(tmp_path: Path) -> None:
    src = tmp_path / "blob.bin"
    src.write_bytes(_content(6, 300_000))
    art = _log(tmp_path / "store", src)

    def stop(n: int) -> None:
        raise KeyboardInterrupt

    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        art.download(out, progress=stop)
    assert not out.exists()  # the root the download made is gone with what it held
    art.download(out)  # and a second try writes it whole
    assert (out / "blob.bin").read_bytes() == src.read_bytes()


@pytest.mark.parametrize("keep", ["views", "derived"])
def test_a_sink_that_keeps_its_chunks_never_sees_them_overwritten(tmp_path: Path, keep: str) -> None:
    """decode_runs reuses a run's buffer once its sink returns: a sink that kept the
    views it was given gets an error on use; one that kept views derived from them
    keeps their bytes (that buffer is not reused)."""
    src = tmp_path / "blob.bin"
    data = _content(11, 200_000)
    src.write_bytes(data)
    _log(tmp_path / "store", src)
    st_, resolved = objstore.Api(tmp_path / "store").artifact("e/p/m:latest")._logged()  # noqa: SLF001 - the test needs the tree
    entry = next(e for _, e in walk_tree(st_.odb, resolved.version.tree) if e.id is not None)
    assert entry.id is not None
    fobj = read_file_object(st_.odb, entry.id)
    kept: list[bytes | memoryview] = []

    def sink(first: int, chunks: list[bytes | memoryview]) -> None:
        kept.extend(memoryview(c)[:] if keep == "derived" else c for c in chunks)

    st_.odb.decode_runs((c for c, _ in fobj.chunks), sink, workers=2)
    views = [c for c in kept if isinstance(c, memoryview)]
    if keep == "derived":
        assert b"".join(bytes(c) for c in kept) == data
    elif codecs.RUN_DECODER_IMPLEMENTATION == "native":
        assert views  # the run decoder's chunks are views of a reused buffer
        for view in views:
            with pytest.raises(ValueError, match="released"):
                bytes(view)


def _file_chunks(store: Path) -> tuple[Store, list[ObjectId]]:
    st_, resolved = objstore.Api(store).artifact("e/p/m:latest")._logged()  # noqa: SLF001 - the test needs the tree
    entry = next(e for _, e in walk_tree(st_.odb, resolved.version.tree) if e.id is not None)
    assert entry.id is not None
    return st_, [c for c, _ in read_file_object(st_.odb, entry.id).chunks]


def _logged_blob(tmp_path: Path, seed: int, size: int) -> tuple[bytes, Store, list[ObjectId]]:
    """A blob of ``size`` bytes logged into a new store: its bytes, the store and its chunk ids."""
    src = tmp_path / "blob.bin"
    data = _content(seed, size)
    src.write_bytes(data)
    _log(tmp_path / "store", src)
    return (data, *_file_chunks(tmp_path / "store"))


def test_sinks_in_the_workers_get_every_chunk_once_and_done_comes_in_order(tmp_path: Path) -> None:
    data, st_, chunk_ids = _logged_blob(tmp_path, 12, 300_000)
    got: dict[int, bytes] = {}
    threads: set[str] = set()
    order: list[tuple[int, int]] = []

    def sink(first: int, chunks: list[bytes | memoryview]) -> None:
        threads.add(threading.current_thread().name)
        for i, c in enumerate(chunks, first):
            assert i not in got
            got[i] = bytes(c)

    def done(first: int, n: int) -> None:
        assert threading.current_thread() is threading.main_thread()
        assert all(first + k in got for k in range(n))  # handed on before done says so
        order.append((first, n))

    st_.odb.decode_runs(iter(chunk_ids), sink, workers=3, in_workers=True, done=done)
    assert b"".join(got[i] for i in range(len(chunk_ids))) == data
    assert [f for f, _ in order] == sorted(f for f, _ in order) and sum(n for _, n in order) == len(chunk_ids)
    assert len(order) > 4 and threads and all(t.startswith("objstore-decode") for t in threads)


def test_sinks_in_the_workers_never_run_two_at_once(tmp_path: Path) -> None:
    # Two workers writing one file by turns spin on its inode lock: the workers hand
    # runs to one sink at a time (a worker that finds it busy goes on decoding).
    data, st_, chunk_ids = _logged_blob(tmp_path, 15, 400_000)
    got: dict[int, bytes] = {}
    active, most, lock = [0], [0], threading.Lock()
    threads: set[str] = set()

    def sink(first: int, chunks: list[bytes | memoryview]) -> None:
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        threads.add(threading.current_thread().name)
        time.sleep(0.005)  # long enough that the other workers finish a decode meanwhile
        got.update((i, bytes(c)) for i, c in enumerate(chunks, first))
        with lock:
            active[0] -= 1

    st_.odb.decode_runs(iter(chunk_ids), sink, workers=4, in_workers=True)
    assert b"".join(got[i] for i in range(len(chunk_ids))) == data
    assert most[0] == 1
    assert threads and all(t.startswith("objstore-decode") for t in threads)  # still by the workers


def test_a_sink_failing_in_a_worker_stops_every_worker_before_the_error_comes_out(tmp_path: Path) -> None:
    _, st_, chunk_ids = _logged_blob(tmp_path, 13, 300_000)
    calls: list[int] = []

    def sink(first: int, chunks: list[bytes | memoryview]) -> None:
        calls.append(first)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        time.sleep(0.01)  # others still running when the failing one raises

    with pytest.raises(OSError, match="No space"):
        st_.odb.decode_runs(iter(chunk_ids), sink, workers=4, in_workers=True)
    seen = len(calls)
    time.sleep(0.1)
    assert len(calls) == seen  # no worker was left running
    assert seen < len(chunk_ids)


@pytest.mark.parametrize("where", ["first", "middle", "last"])
def test_a_damaged_run_anywhere_leaves_nothing_at_the_destination(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  where: str) -> None:
    """Workers write the runs they verified while another fails: the temp file they
    wrote into is removed, nothing is renamed into place, and the file already there
    is left as it was."""
    monkeypatch.setattr(materialize, "default_workers", lambda: 4)
    _, st_, chunk_ids = _logged_blob(tmp_path, 14, 500_000)
    victim = chunk_ids[{"first": 0, "middle": len(chunk_ids) // 2, "last": -1}[where]]
    loc = st_.odb.locate(victim)
    pack = tmp_path / "store" / pack_key(loc.pack)
    raw = bytearray(pack.read_bytes())
    raw[loc.offset + loc.stored_len // 2] ^= 0xFF
    os.chmod(pack, 0o644)
    pack.write_bytes(bytes(raw))
    out = tmp_path / "out"
    out.mkdir()
    (out / "blob.bin").write_bytes(b"the copy that was here")
    with pytest.raises(errors.CorruptObject):
        objstore.Api(tmp_path / "store").artifact("e/p/m:latest").download(out)
    assert os.listdir(out) == ["blob.bin"]
    assert (out / "blob.bin").read_bytes() == b"the copy that was here"


def test_a_destination_replaced_by_a_link_while_workers_write_is_not_written_through(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Midway through the parallel writes the file's name becomes a link to a file
    outside: the writers write to their own temp file's descriptor, the outside
    file keeps its bytes, and the finished file replaces the link."""
    monkeypatch.setattr(materialize, "default_workers", lambda: 4)
    src = tmp_path / "blob.bin"
    data = _content(15, 400_000)
    src.write_bytes(data)
    art = _log(tmp_path / "store", src)
    out = tmp_path / "out"
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"not yours")
    real = materialize._pwrite_all  # noqa: SLF001 - the hook sits in the writers' path
    planted = threading.Event()

    def pwrite_then_plant(fd: int, chunk: bytes | memoryview, offset: int) -> None:
        real(fd, chunk, offset)
        if offset > 100_000 and not planted.is_set():
            planted.set()
            os.symlink(outside, out / "blob.bin")

    monkeypatch.setattr(materialize, "_pwrite_all", pwrite_then_plant)
    art.download(out)
    assert planted.is_set()
    assert outside.read_bytes() == b"not yours"
    assert not (out / "blob.bin").is_symlink()
    assert (out / "blob.bin").read_bytes() == data
    assert os.listdir(out) == ["blob.bin"]
