"""The segment cache: a tensor the store has seen is not chunked again, wherever it
sits in the file, and what the cache answers is exactly what chunking would."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from modelgen import fine_tune, tensor_range, transformer, write_safetensors

from objstore.files import ingest, segmentcache
from objstore.files.ingest import chunk_file
from objstore.model.store import Store
from objstore.storage.chunking import Chunker, ChunkParams
from objstore.storage.ids import Kind, hash_bytes
from objstore.storage.segmenting import segment_file

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
def test_a_shifted_model_reuses_every_largetensor_range(tmp_path: Path, workers: int | None) -> None:
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


@pytest.mark.parametrize("workers,job_bytes", [(2, 1 << 20), (3, 256 * KiB)])
def test_a_fine_tune_is_scheduled_out_of_file_order_and_stored_as_the_sequential_path_stores_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int, job_bytes: int) -> None:
    # The changed tensors of a fine-tune are interleaved with the answered ones
    # (ingest._schedule), so new chunks reach the packs out of file order: whatever
    # the threads, the packs must still be the sequential path's and the file object
    # the file's own, in file order.
    monkeypatch.setattr(ingest, "JOB_BYTES", job_bytes)
    monkeypatch.setattr(ingest, "PIPELINE_MIN_BYTES", 0)
    tensors = _model()
    base = write_safetensors(tmp_path / "base.safetensors", tensors)
    tuned_tensors = fine_tune(tensors, ["layers.0.attn.k.weight", "layers.1.attn.o.weight"], seed=5)
    # ... and one changed between its probe's ranges: filed under a known probe, so
    # scheduled among the answered tensors, then chunked when its bytes disagree.
    name = "layers.0.attn.q.weight"
    dtype, shape, data = tensors[name]
    edited = bytearray(data)
    middle = len(data) // 2 + 3 * segmentcache.PROBE_BYTES
    edited[middle : middle + 64] = bytes(64)
    tuned_tensors[name] = (dtype, shape, bytes(edited))
    tuned = write_safetensors(tmp_path / "tuned.safetensors", tuned_tensors)
    first = Store.open(tmp_path / "first")
    _cached(first, base)
    first.odb.flush()
    for name in ("seq", "par"):
        shutil.copytree(tmp_path / "first", tmp_path / name)
    store = Store.open(tmp_path / "seq")
    with open(tuned, "rb") as f:
        segments = ingest.segment_file(f, tuned.stat().st_size, tuned)
    fd = os.open(tuned, os.O_RDONLY)
    try:
        reuse = ingest._Reuse(ingest.segment_cache_for(store.odb, store.chunker), store.odb, store.chunker)
        scheduled = [s.offset for job in ingest._schedule(fd, segments, reuse) for s in job]
    finally:
        os.close(fd)
    assert scheduled != sorted(scheduled), "the test must exercise an order other than the file's"

    def packs(root: Path) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in (root / "packs").iterdir() if p.name not in before}

    before = {p.name for p in (tmp_path / "first" / "packs").iterdir()}
    seq = _cached(store, tuned, workers=0)
    store.odb.flush()
    par_store = Store.open(tmp_path / "par")
    par = _cached(par_store, tuned, workers=workers)
    par_store.odb.flush()
    assert par == seq == chunk_file(tuned, store.chunker, None)
    assert packs(tmp_path / "par") == packs(tmp_path / "seq") != {}
    assert b"".join(par_store.odb.iter_chunks([c for c, _ in par.chunks])) == tuned.read_bytes()


@pytest.mark.parametrize("workers", [0, 2])
def test_a_file_rewritten_between_its_schedule_and_its_chunking_is_refused_and_the_cache_stays_true(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers: int) -> None:
    # The schedule probes every large tensor before any is chunked, and the probes are
    # kept for the answers: a write in between must still be refused, and what the
    # cache learnt from that read must never answer for bytes it does not match.
    from objstore.errors import FileChanged

    monkeypatch.setattr(ingest, "PIPELINE_MIN_BYTES", 0)
    tensors = _model()
    base = write_safetensors(tmp_path / "base.safetensors", tensors)
    store = Store.open(tmp_path / "store")
    _cached(store, base)
    store.odb.flush()
    path = tmp_path / "m.safetensors"
    shutil.copyfile(base, path)
    offset, length = tensor_range(path, "layers.1.attn.v.weight")
    real = ingest._schedule

    def schedule_then_write(fd: int, segments: list, reuse: object) -> list:  # type: ignore[type-arg]
        jobs = real(fd, segments, reuse)  # type: ignore[arg-type]
        with open(path, "r+b") as f:  # same length, other bytes, outside the probe's ranges
            f.seek(offset + length // 2 + 3 * segmentcache.PROBE_BYTES)
            f.write(os.urandom(4096))
        return jobs

    monkeypatch.setattr(ingest, "_schedule", schedule_then_write)
    with pytest.raises(FileChanged):
        _cached(store, path, workers)
    monkeypatch.setattr(ingest, "_schedule", real)
    got = _cached(store, path, workers)
    store.odb.flush()
    assert got == _uncached(Store.open(tmp_path / "fresh"), path)
    assert b"".join(store.odb.iter_chunks([c for c, _ in got.chunks])) == path.read_bytes()


@settings(max_examples=200, deadline=None)
@given(first=st.lists(st.integers(min_value=0, max_value=50), max_size=12),
       second=st.lists(st.integers(min_value=0, max_value=50), max_size=12))
def test_interleaving_keeps_each_order_and_spreads_both_over_the_whole(first: list[int], second: list[int]) -> None:
    from objstore.storage.segmenting import Segment

    def jobs(sizes: list[int], tag: int) -> list[list[Segment]]:
        return [[Segment(1000 * tag + i, n)] for i, n in enumerate(sizes)]

    a, b = jobs(first, 1), jobs(second, 2)
    merged = ingest._interleave(a, b)
    assert [j for j in merged if j in a] == a and [j for j in merged if j in b] == b
    assert len(merged) == len(a) + len(b)
    # Whenever a job of one list is handed out, that list had handed out no larger a
    # share of its bytes than the other (unless the other was used up).
    total_a, total_b = sum(first) or 1, sum(second) or 1
    taken_a = taken_b = 0
    left_a, left_b = len(a), len(b)
    for job in merged:
        n = job[0].length
        if job in a:
            assert left_b == 0 or taken_a * total_b <= taken_b * total_a
            taken_a += n
            left_a -= 1
        else:
            assert left_a == 0 or taken_b * total_a < taken_a * total_b
            taken_b += n
            left_b -= 1


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


@settings(max_examples=60, deadline=None)
@given(offset=st.integers(min_value=0, max_value=100), length=st.integers(min_value=1, max_value=8 * segmentcache.PROBE_BYTES))
def test_the_probe_reads_inside_its_segment(offset: int, length: int) -> None:
    ranges = segmentcache.probe_ranges(offset, length)
    assert all(offset <= start and start + n <= offset + length and n > 0 for start, n in ranges)
    assert [s for s, _ in ranges] == sorted(s for s, _ in ranges)
    assert all(a + n <= b for (a, n), (b, _) in zip(ranges, ranges[1:])), "ranges overlap"
    assert sum(n for _, n in ranges) == min(length, 3 * segmentcache.PROBE_BYTES)


def _entry_for(root: Path, path: Path, offset: int, length: int, chunker: Chunker | None = None) -> Path:
    """The cache entry of the tensor at ``offset``, filed under its grain for ``chunker``
    (a new store's: word-sampled cuts on the tensor's grid)."""
    with open(path, "rb") as f:
        segment = next(s for s in segment_file(f, os.fstat(f.fileno()).st_size) if s.offset == offset)
        h = segmentcache.probe_key(f.fileno(), offset, length).hex()
    grain = (chunker or Chunker(ChunkParams())).grain(segment.align, segment.stride)
    return root / "cache" / "segments" / h[:2] / f"{h[2:]}-{grain}"


def test_a_tensor_changed_outside_its_probe_is_chunked_not_answered(tmp_path: Path) -> None:
    """The probe reads a few KiB of a tensor: one changed elsewhere probes like its old
    self, and only the verification against its bytes tells them apart."""
    store = Store.open(tmp_path / "store")
    tensors = _model()
    name = "layers.0.attn.q.weight"
    dtype, shape, data = tensors[name]
    middle = len(data) // 2 + 3 * segmentcache.PROBE_BYTES  # between the probe's middle and last ranges
    edited = bytearray(data)
    edited[middle:middle + 64] = bytes(64)
    base = write_safetensors(tmp_path / "base.safetensors", tensors)
    other = write_safetensors(tmp_path / "edited.safetensors", {**tensors, name: (dtype, shape, bytes(edited))})
    offset, length = tensor_range(other, name)
    assert _entry_for(tmp_path / "store", base, *tensor_range(base, name)) == _entry_for(tmp_path / "store", other, offset, length)
    _cached(store, base)
    store.odb.flush()
    hits, misses = segmentcache.stats.hits, segmentcache.stats.misses
    got = _cached(store, other)
    store.odb.flush()
    assert segmentcache.stats.hits - hits == len(LARGE) - 1
    assert segmentcache.stats.misses - misses == 1
    assert got == _uncached(Store.open(tmp_path / "fresh"), other)
    assert b"".join(store.odb.iter_chunks([c for c, _ in got.chunks])) == other.read_bytes()


def test_an_entry_of_the_right_bytes_cut_where_chunking_never_cuts_is_a_miss(tmp_path: Path) -> None:
    """A forged entry can hash correctly and still not be chunking's answer: the whole
    tensor as one chunk. Its ids verify, but no chunk may exceed the chunker's largest
    (a restore would hold it whole), so it is a miss and the tensor is chunked."""
    store = Store.open(tmp_path / "store")
    path = write_safetensors(tmp_path / "m.safetensors", _model())
    expected = _cached(store, path)
    store.odb.flush()
    name = "embed.weight"
    offset, length = tensor_range(path, name)
    entry = _entry_for(tmp_path / "store", path, offset, length)
    fmt, chunking, align, entry_length, _ = msgpack.unpackb(entry.read_bytes(), raw=False)
    whole = path.read_bytes()[offset:offset + length]
    one = hash_bytes(Kind.CHUNK, whole).raw + length.to_bytes(8, "little")
    entry.write_bytes(msgpack.packb([fmt, chunking, align, entry_length, one], use_bin_type=True))
    store.odb.add_chunk(hash_bytes(Kind.CHUNK, whole), whole, "BF16")  # so the stored check passes
    store.odb.flush()
    assert length > store.chunker.params.max_size
    misses = segmentcache.stats.misses
    assert _cached(store, path) == expected
    assert segmentcache.stats.misses - misses == 1


def test_every_entry_forged_over_another_tensor_is_a_miss(tmp_path: Path) -> None:
    """Each entry's chunk list swapped for another tensor's of the same length (all
    stored, all of today's format): every one fails its verification, and the file
    logs as if the cache were empty."""
    store = Store.open(tmp_path / "store")
    path = write_safetensors(tmp_path / "m.safetensors", _model())
    expected = _cached(store, path)
    store.odb.flush()
    by_length: dict[int, list[Path]] = {}
    for name in LARGE:
        offset, length = tensor_range(path, name)
        by_length.setdefault(length, []).append(_entry_for(tmp_path / "store", path, offset, length))
    swapped = 0
    for group in by_length.values():
        bodies = [p.read_bytes() for p in group]
        for p, body in zip(group, bodies[1:] + bodies[:1]):
            if body != p.read_bytes():
                p.write_bytes(body)
                swapped += 1
    assert swapped >= 4
    hits = segmentcache.stats.hits
    assert _cached(store, path) == expected
    assert segmentcache.stats.hits - hits == len(LARGE) - swapped
