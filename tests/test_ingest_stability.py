"""Files that change while they are logged: every cache entry is derived from the
bytes it describes, and a version's file is always one real state of the file.

A file is mutated at a deterministic moment of a log — right after the first read
that covers a chosen tensor — by a second thread, through real writes to the real
file (``os.preadv`` is wrapped only to know *when* the log has read what; the
reads themselves are the kernel's). What must hold:

- a later log of a different, stable file holding the original bytes stores
  exactly those bytes (the segment cache was not poisoned);
- a log that read a file which changed is refused with a clear error, and leaves
  no version and no cache entry behind;
- a change in the same timestamp tick as the file's previous write is caught
  too (the racy-git problem), and the stat cache never trusts an entry whose
  read began in the tick of the file's last change.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import msgpack
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from modelgen import random_weights, tensor_range, transformer, write_safetensors

import objstore
from objstore.errors import FileChanged, NotFound, ObjstoreError
from objstore.files import ingest, segmentcache, statcache
from objstore.files.ingest import chunk_file
from objstore.files.statcache import StatCache
from objstore.model.store import Store
from objstore.storage import native

KiB = 1024
TARGET = "layers.0.attn.q.weight"


@pytest.fixture(autouse=True)
def small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    # The test models' tensors are 512 KiB-2 MiB: let them count as large enough
    # for the segment cache, as MiB-sized tensors of real models do.
    monkeypatch.setattr(ingest, "MIN_SEGMENT", 256 * KiB)


def _model(seed: int = 1) -> dict:
    return transformer(seed, layers=2, hidden=512, vocab=2048)  # ~6 MiB, 9 large tensors


def age(path: Path, seconds_ago: int = 3600) -> Path:
    past = time.time_ns() - seconds_ago * 10**9
    os.utime(path, ns=(past, past))
    return path


def cache_files(store_root: Path) -> set[str]:
    cache = store_root / "cache"
    return {p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file()} if cache.exists() else set()


class Mutator:
    """Changes ``path`` from a second thread, once, right after the first read of it
    that covers ``trigger``; the log's reads go on after that. By default the change
    rewrites ``writes`` in place (same size) with write(2); ``mapping`` writes them
    through that shared mapping instead; ``change`` replaces both."""

    def __init__(self, path: Path, trigger: int, writes: list[tuple[int, bytes]] = (),  # type: ignore[assignment]
                 mapping: mmap.mmap | None = None, change: Callable[[], None] | None = None) -> None:
        self.path = path
        self.trigger = trigger
        self.writes = list(writes)
        self.mapping = mapping
        self.change = change
        self.ino = os.stat(path).st_ino
        self.fired = threading.Event()
        self.first_read_ns: int | None = None
        self._lock = threading.Lock()

    def _rewrite(self) -> None:
        if self.change is not None:
            self.change()
        elif self.mapping is not None:
            for offset, data in self.writes:
                self.mapping[offset:offset + len(data)] = data
        else:
            with open(self.path, "r+b") as f:
                for offset, data in self.writes:
                    f.seek(offset)
                    f.write(data)

    def after_read(self, fd: int, offset: int, n: int) -> None:
        try:
            if os.fstat(fd).st_ino != self.ino:
                return
        except OSError:
            return
        with self._lock:
            if self.first_read_ns is None:
                self.first_read_ns = time.time_ns()
            if self.fired.is_set() or not (offset <= self.trigger < offset + n):
                return
            writer = threading.Thread(target=self._rewrite)
            writer.start()
            writer.join()
            self.fired.set()


@contextmanager
def mutating(monkeypatch: pytest.MonkeyPatch, mutator: Mutator) -> Iterator[Mutator]:
    real = os.preadv

    def preadv(fd: int, buffers, offset: int, *args) -> int:  # type: ignore[no-untyped-def]
        n = real(fd, buffers, offset, *args)
        mutator.after_read(fd, offset, n)
        return n

    # The segment cache's verification reads in one core call (C's pread, unseen by the
    # hook above): the change lands right after that call's read, as after any other.
    real_verify = native.core.verify_at

    def verify_at(key: bytes, fd: int, offset: int, lengths: list[int], ids: bytes, buf: memoryview) -> bool:
        same = real_verify(key, fd, offset, lengths, ids, buf)
        mutator.after_read(fd, offset, sum(lengths))
        return same

    with monkeypatch.context() as m:
        m.setattr(os, "preadv", preadv)
        m.setattr(native.core, "verify_at", verify_at)
        yield mutator


def _noise(seed: int, n: int) -> bytes:
    return np.random.default_rng(seed).bytes(n)


def test_a_file_changed_during_a_log_does_not_poison_the_segment_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The reported bug: the segment key was hashed in one read and the chunk ids cut in
    another; a change in between filed the new bytes under the old bytes' key, and a
    later log of a different, stable file with the old bytes stored the new ones."""
    run = objstore.init(project="p", entity="e", store=tmp_path / "store")
    # something in the segment cache, so the next log hashes its tensors first
    run.log_model(write_safetensors(tmp_path / "other.safetensors", _model(seed=9)), name="other")
    tensors = _model()
    x = age(write_safetensors(tmp_path / "x.safetensors", tensors))
    offset, length = tensor_range(x, TARGET)
    # change bytes the first read of the tensor already covered
    mutator = Mutator(x, offset, [(offset + 1000, _noise(3, 4096))])
    refused = None
    with mutating(monkeypatch, mutator):
        try:
            run.log_model(x, name="x")
        except ObjstoreError as exc:
            refused = exc
    assert mutator.fired.is_set(), "the mutation never happened: the test proves nothing"

    # A different, stable file holding the original tensor bytes (its header grew, so
    # every tensor sits at another offset: only the segment cache can recognize them).
    y = age(write_safetensors(tmp_path / "y.safetensors", tensors, metadata={"note": "y" * 13}))
    run.log_model(y, name="y")
    got = Path(run.use_model("y:latest", root=tmp_path / "out"))
    assert got.read_bytes() == y.read_bytes(), "the segment cache answered with bytes the file does not hold"
    assert isinstance(refused, FileChanged), "a file changed while being logged was stored without a word"
    assert "changed while" in str(refused)
    run.finish()


def test_a_change_no_stat_shows_cannot_poison_the_segment_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Writes through a shared mapping to pages already dirty move neither mtime nor
    ctime (numpy.memmap weights updated in place): no stat comparison sees them, so the
    log may store a mix of the two states (the documented limit). Whatever entry it
    files, a later file holding the original bytes gets them back: the cache's answer
    is verified against the bytes being logged, never trusted."""
    run = objstore.init(project="p", entity="e", store=tmp_path / "store")
    run.log_model(write_safetensors(tmp_path / "other.safetensors", _model(seed=9)), name="other")
    tensors = _model()
    x = write_safetensors(tmp_path / "x.safetensors", tensors)
    offset, length = tensor_range(x, TARGET)
    with open(x, "r+b") as f, mmap.mmap(f.fileno(), 0) as mapping:
        for page in range(offset, offset + length, mmap.PAGESIZE):
            mapping[page] = mapping[page]  # dirty every page of the tensor: its faults stamp mtime now
        time.sleep(3 * statcache.RACY_SLACK_NS / 1e9)  # ... and let that stamp grow old
        before = x.stat()
        mutator = Mutator(x, offset, [(offset + 1000, _noise(5, 4096))], mapping)
        with mutating(monkeypatch, mutator), contextlib.suppress(FileChanged):
            run.log_model(x, name="x")
        assert mutator.fired.is_set()
        after = x.stat()
        if (after.st_mtime_ns, after.st_ctime_ns) != (before.st_mtime_ns, before.st_ctime_ns):
            pytest.skip("the kernel stamped the mapped write (pages were written back meanwhile)")
    y = age(write_safetensors(tmp_path / "y.safetensors", tensors, metadata={"note": "y" * 13}))
    run.log_model(y, name="y")
    assert Path(run.use_model("y:latest", root=tmp_path / "out")).read_bytes() == y.read_bytes()
    run.finish()


@pytest.mark.parametrize("cache", ["new-store", "warm-segment-cache", "answering-segment-cache"])
@pytest.mark.parametrize("workers", [0, None], ids=["sequential", "pipeline"])
def test_a_same_size_rewrite_during_a_log_is_refused_and_stores_nothing(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, cache: str, workers: int | None) -> None:
    """Also when the segment cache holds x's own tensors (logged before at other
    offsets): then the rewrite lands while the cache's answer is being verified."""
    root = tmp_path / "store"
    store = Store.open(root)
    if cache != "new-store":
        tensors = _model() if cache == "answering-segment-cache" else _model(seed=9)
        chunk_file(write_safetensors(tmp_path / "other.safetensors", tensors, metadata={"note": "o" * 7}),
                   store.chunker, store.odb)
        store.odb.flush()
    monkeypatch.setattr(ingest, "default_workers", lambda: 2)
    x = age(write_safetensors(tmp_path / "x.safetensors", _model()))
    old = x.read_bytes()
    offset, _ = tensor_range(x, TARGET)
    # A new checkpoint of the same shapes saved over the file in place, while it is read.
    new = bytearray(old)
    new[offset:] = _noise(4, len(old) - offset)
    mutator = Mutator(x, offset, [(offset, bytes(new[offset:]))])
    before = cache_files(root)
    hits = segmentcache.stats.hits
    run = objstore.init(project="p", entity="e", store=store)
    with mutating(monkeypatch, mutator):
        with pytest.raises(FileChanged, match="changed while it was being logged"):
            if workers is None:
                run.log_model(x, name="x")
            else:
                chunk_file(x, store.chunker, store.odb, workers=workers)
                raise AssertionError("chunk_file returned the chunks of a file that changed while it was read")
    assert mutator.fired.is_set()
    if cache == "answering-segment-cache":
        assert segmentcache.stats.hits > hits, "the cache answered nothing: its verification was never read through"
    assert cache_files(root) == before, "a refused log left cache entries"
    with pytest.raises(NotFound):
        objstore.Api(store=store).artifact("e/p/x:latest")
    # Once the file is stable it logs, and what comes back is its one real state.
    assert x.read_bytes() == bytes(new)
    run.log_model(x, name="x")
    assert Path(run.use_model("x:latest", root=tmp_path / "out")).read_bytes() == bytes(new)
    run.finish()


def test_a_file_truncated_during_a_log_is_refused_and_stores_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "store"
    run = objstore.init(project="p", entity="e", store=root)
    run.log_model(write_safetensors(tmp_path / "other.safetensors", _model(seed=9)), name="other")
    x = age(write_safetensors(tmp_path / "x.safetensors", _model()))
    offset, length = tensor_range(x, TARGET)
    before = cache_files(root)
    mutator = Mutator(x, offset, change=lambda: os.truncate(x, offset + length // 2))
    with mutating(monkeypatch, mutator):
        with pytest.raises(FileChanged, match="x.safetensors changed while it was being logged"):
            run.log_model(x, name="x")
    assert mutator.fired.is_set()
    assert cache_files(root) == before
    with pytest.raises(NotFound):
        objstore.Api(store=root).artifact("e/p/x:latest")
    run.finish()


@pytest.mark.parametrize("fmt", [1, segmentcache.FORMAT], ids=["format-1", "current-format"])
def test_an_entry_naming_other_bytes_is_not_an_answer(tmp_path: Path, fmt: int) -> None:
    """A cache poisoned by an older objstore (format 1: key from one read, chunks from
    another), or an entry of today's format filed under the wrong probe (forged, or a
    file changed while it was logged), must not serve wrong bytes: it is a miss."""
    store = Store.open(tmp_path / "store")
    tensors = _model()
    original = write_safetensors(tmp_path / "original.safetensors", tensors)
    changed = write_safetensors(tmp_path / "changed.safetensors",
                                {**tensors, TARGET: (*tensors[TARGET][:2], _noise(6, len(tensors[TARGET][2])))})
    chunk_file(original, store.chunker, store.odb, stat_cache=None)
    chunk_file(changed, store.chunker, store.odb, stat_cache=None)
    store.odb.flush()
    entries = [p for p in (tmp_path / "store" / "cache" / "segments").rglob("*") if p.is_file()]
    # forge what the old code wrote for a tensor changed between its two reads:
    # the original bytes' key, the changed bytes' chunks, format 1
    original_entry = next(p for p in entries if _is_entry_of(original, TARGET, p))
    changed_entry = msgpack.unpackb(next(p for p in entries if _is_entry_of(changed, TARGET, p)).read_bytes(), raw=False)
    original_entry.write_bytes(msgpack.packb([fmt, *changed_entry[1:]], use_bin_type=True))
    y = age(write_safetensors(tmp_path / "y.safetensors", tensors, metadata={"note": "y"}))
    hits = segmentcache.stats.hits
    fobj = chunk_file(y, store.chunker, store.odb, stat_cache=None)
    store.odb.flush()
    assert b"".join(store.odb.iter_chunks([c for c, _ in fobj.chunks])) == y.read_bytes()
    assert segmentcache.stats.hits - hits == len(tensors) - 1, "every other tensor is still answered"


def _is_entry_of(path: Path, tensor: str, entry: Path) -> bool:
    offset, length = tensor_range(path, tensor)
    fd = os.open(path, os.O_RDONLY)
    try:
        key = segmentcache.probe_key(fd, offset, length)
    finally:
        os.close(fd)
    h = key.hex()
    return entry.parent.name == h[:2] and entry.name.startswith(h[2:])


def _small_tensors(seed: int) -> dict:
    """Four 64 KiB tensors: below the segment-cache threshold, each read on its own."""
    rng = np.random.default_rng(seed)
    return {f"t{i}": ("BF16", (32, 1024), random_weights(rng, (32, 1024), "BF16")) for i in range(4)}


def test_a_rewrite_in_the_same_tick_as_the_last_write_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Racy files: a file written an instant ago and rewritten as it is read keeps its
    mtime and ctime (both come from a clock that ticks every few ms), so comparing
    stats before and after the read cannot see the change. Logging therefore waits
    for the tick to pass before it reads a file changed this instant."""
    store = Store.open(tmp_path / "store")
    for trial in range(8):
        x = write_safetensors(tmp_path / f"x{trial}.safetensors", _small_tensors(trial))  # fresh: not aged
        first, _ = tensor_range(x, "t0")
        second, length = tensor_range(x, "t1")
        # rewrite the tensor just read and the one read next: storing it would be a mix
        mutator = Mutator(x, first, [(first, _noise(100 + trial, length)), (second, _noise(200 + trial, length))])
        st = x.stat()
        with mutating(monkeypatch, mutator):
            with pytest.raises(FileChanged):
                chunk_file(x, store.chunker, store.odb, workers=0)
        assert mutator.fired.is_set()
        assert mutator.first_read_ns is not None
        assert mutator.first_read_ns > max(st.st_mtime_ns, st.st_ctime_ns) + statcache.RACY_SLACK_NS
        store.odb.abort()


def test_a_file_logged_right_after_it_was_written_is_cached_once_its_tick_passed(tmp_path: Path) -> None:
    """The wait before reading a racy file makes the entry it records trustworthy."""
    store = Store.open(tmp_path / "store")
    x = write_safetensors(tmp_path / "x.safetensors", _small_tensors(1))
    first = chunk_file(x, store.chunker, store.odb)
    store.odb.flush()
    hits = statcache.stats.hits
    assert chunk_file(x, store.chunker, store.odb) == first
    assert statcache.stats.hits == hits + 1


def test_the_stat_cache_does_not_trust_an_entry_read_in_the_tick_of_its_ctime(tmp_path: Path) -> None:
    """``cp -p``, ``rsync -t`` and tar set an old mtime on bytes written this instant: the
    mtime looks old but the change is in this tick, and ctime shows it."""
    store = Store.open(tmp_path / "store")
    model = write_safetensors(tmp_path / "m.safetensors", _small_tensors(2))
    age(model)  # old mtime; ctime is now
    st = model.stat()
    fobj = chunk_file(model, store.chunker, store.odb, stat_cache=None, segment_cache=None)
    cache = StatCache(tmp_path / "cache")
    cache.store(model, st, st.st_ctime_ns + 1_000, fobj)  # read began in the ctime's tick
    assert cache.lookup(model, st) is None


def test_the_stat_cache_allows_for_file_systems_with_whole_second_timestamps(tmp_path: Path) -> None:
    """On a file system that keeps whole seconds (ext3, HFS+, FAT: 2 s), a file changed
    0.5 s after the second began still shows that second: an entry read then is racy."""
    store = Store.open(tmp_path / "store")
    model = write_safetensors(tmp_path / "m.safetensors", _small_tensors(3))
    fobj = chunk_file(model, store.chunker, store.odb, stat_cache=None, segment_cache=None)
    real = model.stat()
    second = (time.time_ns() // 10**9 - 5) * 10**9
    coarse = os.stat_result(tuple(real)[:10], {"st_mtime_ns": second, "st_ctime_ns": second, "st_atime_ns": second})
    cache = StatCache(tmp_path / "cache")
    cache.store(model, coarse, second + 500_000_000, fobj)
    assert cache.lookup(model, coarse) is None
    cache.store(model, coarse, second + 3 * 10**9, fobj)  # read began seconds later: trusted
    assert cache.lookup(model, coarse) == fobj


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(target=st.sampled_from([TARGET, "embed.weight", "layers.1.attn.o.weight"]),
       at=st.floats(min_value=0.0, max_value=0.999), span=st.integers(min_value=1, max_value=300 * KiB),
       seed=st.integers(min_value=0, max_value=2**32 - 1), workers=st.sampled_from([0, None]))
def test_whatever_changes_when_a_log_either_refuses_or_stores_a_real_state_and_the_cache_stays_true(
        tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
        target: str, at: float, span: int, seed: int, workers: int | None) -> None:
    tmp = tmp_path_factory.mktemp("prop")
    store = Store.open(tmp / "store")
    tensors = _model()
    chunk_file(write_safetensors(tmp / "seed.safetensors", _model(seed=9)), store.chunker, store.odb, workers=workers)
    store.odb.flush()
    x = age(write_safetensors(tmp / "x.safetensors", tensors))
    old = x.read_bytes()
    offset, length = tensor_range(x, target)
    start = offset + int(at * length)
    data = _noise(seed, min(span, len(old) - start))
    mutator = Mutator(x, offset, [(start, data)])
    new = old[:start] + data + old[start + len(data):]
    with mutating(monkeypatch, mutator):
        try:
            got = chunk_file(x, store.chunker, store.odb, workers=workers)
        except FileChanged:
            store.odb.abort()
        else:
            store.odb.flush()
            stored = b"".join(store.odb.iter_chunks([c for c, _ in got.chunks]))
            assert stored in (old, new), "a log stored a mix of two states of the file"
    # Every cache entry now tells the truth: a stable file with the original bytes
    # (shifted, so only the segment cache can help) is stored exactly.
    y = age(write_safetensors(tmp / "y.safetensors", tensors, metadata={"n": "y" * (seed % 7 + 1)}))
    fobj = chunk_file(y, store.chunker, store.odb, workers=workers)
    store.odb.flush()
    assert b"".join(store.odb.iter_chunks([c for c, _ in fobj.chunks])) == y.read_bytes()
    assert fobj == chunk_file(y, store.chunker, None, stat_cache=None, segment_cache=None)
