"""The segment cache: a tensor the store has seen is not chunked again, wherever it
sits in the file, and what the cache answers is exactly what chunking would."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from modelgen import fine_tune, transformer, write_safetensors

from objstore.files import ingest, segmentcache
from objstore.files.ingest import chunk_file
from objstore.model.store import Store
from objstore.storage import native
from objstore.storage.ids import Kind, hash_bytes, key_of
from objstore.storage.segmenting import Segment

KiB = 1024
LARGE = [f"layers.{i}.attn.{p}.weight" for i in range(2) for p in ("q", "k", "v", "o")] + ["embed.weight"]


@pytest.fixture(autouse=True)
def small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    # Real models have MiB-sized tensors; these test models are small, so let
    # 512 KiB tensors count as large enough to cache.
    monkeypatch.setattr(ingest, "MIN_SEGMENT", 256 * KiB)


def _model(seed: int = 1):
    return transformer(seed, layers=2, hidden=512, vocab=2048)


def _uncached(store: Store, path: Path, workers: int | None = None):
    return chunk_file(path, store.chunker, store.odb, stat_cache=None, segment_cache=None, workers=workers)


def _cached(store: Store, path: Path, workers: int | None = None):
    return chunk_file(path, store.chunker, store.odb, stat_cache=None, workers=workers)


@pytest.mark.parametrize("workers", [0, None])
def test_a_shifted_model_reuses_every_large_tensor(tmp_path: Path, workers: int | None) -> None:
    store = Store.open(tmp_path / "store")
    tensors = _model()
    base = write_safetensors(tmp_path / "base.safetensors", tensors)
    # Grown header metadata: every tensor moves by an odd number of bytes.
    shifted = write_safetensors(tmp_path / "shifted.safetensors", tensors, metadata={"note": "x" * 101})
    _cached(store, base, workers)
    store.odb.flush()
    hits = segmentcache.stats.hits
    got = _cached(store, shifted, workers)
    assert segmentcache.stats.hits - hits == len(LARGE)
    assert got == _uncached(store, shifted, workers)
    store.odb.flush()


def test_a_fine_tune_rechunks_only_its_changed_tensors(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "store")
    tensors = _model()
    changed = ["layers.1.attn.q.weight", "layers.1.attn.v.weight"]
    base = write_safetensors(tmp_path / "base.safetensors", tensors)
    tuned = write_safetensors(tmp_path / "tuned.safetensors", fine_tune(tensors, changed, seed=2))
    _cached(store, base)
    store.odb.flush()
    hits, misses = segmentcache.stats.hits, segmentcache.stats.misses
    got = _cached(store, tuned)
    assert segmentcache.stats.hits - hits == len(LARGE) - len(changed)
    assert segmentcache.stats.misses - misses == len(changed)
    assert got == _uncached(store, tuned)


def test_entries_naming_chunks_the_store_lacks_are_not_used(tmp_path: Path) -> None:
    """A cache copied from another store (or outliving a gc) must not vouch for chunks
    this store does not hold: the file is chunked and stored in full."""
    first = Store.open(tmp_path / "first")
    path = write_safetensors(tmp_path / "m.safetensors", _model())
    _cached(first, path)
    first.odb.flush()
    second_root = tmp_path / "second"
    second = Store.open(second_root)
    shutil.copytree(tmp_path / "first" / "cache" / "segments", second_root / "cache" / "segments")
    hits = segmentcache.stats.hits
    got = _cached(second, path)
    second.odb.flush()
    assert segmentcache.stats.hits == hits
    assert got == _uncached(Store.open(tmp_path / "third"), path)
    assert all(second.odb.has_chunks([c for c, _ in got.chunks]))
    assert b"".join(second.odb.iter_chunks([c for c, _ in got.chunks])) == path.read_bytes()


def test_a_damaged_entry_is_a_miss(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "store")
    path = write_safetensors(tmp_path / "m.safetensors", _model())
    expected = _cached(store, path)
    store.odb.flush()
    entries = [p for p in (tmp_path / "store" / "cache" / "segments").rglob("*") if p.is_file()]
    assert len(entries) == len(LARGE)
    for i, entry in enumerate(entries):
        data = entry.read_bytes()
        # truncated, garbage, or a chunk list whose lengths no longer add up
        entry.write_bytes(data[: len(data) // 2] if i % 3 == 0 else b"\x93garbage" if i % 3 == 1 else data[:-41] + data[-1:])
    hits = segmentcache.stats.hits
    assert _cached(store, path) == expected
    assert segmentcache.stats.hits == hits


def test_a_logged_model_verifies_after_a_cached_ingest(tmp_path: Path) -> None:
    import objstore

    tensors = _model()
    base = write_safetensors(tmp_path / "base.safetensors", tensors)
    shifted = write_safetensors(tmp_path / "shifted.safetensors", tensors, metadata={"k": "v" * 33})
    with objstore.init(project="p", entity="e", store=tmp_path / "store") as run:
        run.log_model(str(base), name="m")
        art = run.log_model(str(shifted), name="m")
    out = Path(art.download(root=str(tmp_path / "out")))
    assert (out / "shifted.safetensors").read_bytes() == shifted.read_bytes()
    art.verify(root=str(tmp_path / "out"))


@settings(max_examples=40, deadline=None)
@given(data=st.binary(min_size=0, max_size=5 * ingest.PIECE // 2),
       splits=st.lists(st.integers(min_value=1, max_value=ingest.PIECE + 7), max_size=12))
def test_the_key_is_the_same_streamed_in_any_pieces_or_hashed_in_parallel(tmp_path_factory, data: bytes, splits: list[int]) -> None:
    path = tmp_path_factory.mktemp("key") / "f"
    path.write_bytes(b"pad" + data)
    fd = os.open(path, os.O_RDONLY)
    try:
        (parallel,) = ingest._hash_segments(fd, [Segment(3, len(data))])
    finally:
        os.close(fd)
    # Streamed as chunking does it: each call of the core that cuts a buffer feeds the
    # bytes read since the last call (buf[fresh_from:filled]), in both implementations.
    cdc = native.Cdc(1024, 256, 4096, 1)
    for core in [native.python_core, *([native.native_core] if native.native_core is not None else [])]:
        pieces = core.new_pieces(key_of(Kind.SEGMENT), ingest.PIECE)
        buf, pos = bytearray(data), 0
        for n in splits + [len(data)]:
            end = min(len(data), pos + n)
            core.chunk_block(cdc, buf, end, True, 0, 1, 0, None, pieces, pos)
            pos = end
        streamed = hash_bytes(Kind.SEGMENT, bytes(pieces.done) + core.pieces_tail(pieces)).raw
        assert streamed == parallel, core.name
