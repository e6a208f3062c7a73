"""The stat cache: unchanged files are not re-read; changed and racy ones are."""

from __future__ import annotations

import os
import random
import shutil
import time
from pathlib import Path

import pytest

import objstore
from objstore.files import statcache
from objstore.files.ingest import chunk_file, stat_cache_for
from objstore.files.statcache import StatCache
from objstore.model.store import Store

HOUR_NS = 3600 * 10**9


def age(path: Path, seconds_ago: int = 3600) -> None:
    """Give ``path`` an mtime in the past, as any file not written this instant has."""
    past = time.time_ns() - seconds_ago * 10**9
    os.utime(path, ns=(past, past))


def write(path: Path, size: int, seed: int) -> Path:
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    return Store.open(tmp_path / "store")


def test_an_unchanged_file_is_not_read_again(tmp_path: Path, store: Store) -> None:
    model = write(tmp_path / "model.bin", 1 << 20, seed=1)
    age(model)
    run = objstore.init(project="p", entity="e", store=store)
    first = run.log_model(model, name="m")
    hits = statcache.stats.hits
    # The counter proves it (chmod 000 would not: it changes ctime, which is part
    # of the key, and root reads anyway): the second log answers from the cache.
    again = run.log_model(model, name="m")
    assert statcache.stats.hits == hits + 1
    assert again.version == first.version and again.digest == first.digest


def test_the_cached_answer_equals_reading_the_file(tmp_path: Path, store: Store) -> None:
    model = write(tmp_path / "model.bin", 3 << 20, seed=2)
    age(model)
    fresh = chunk_file(model, store.chunker, store.odb, stat_cache=None)
    store.odb.flush()
    cache = stat_cache_for(store.odb, store.chunker)
    first = chunk_file(model, store.chunker, store.odb, stat_cache=cache)
    hits = statcache.stats.hits
    second = chunk_file(model, store.chunker, store.odb, stat_cache=cache)
    assert statcache.stats.hits == hits + 1
    assert first == second == fresh


def test_a_file_changed_in_place_with_its_old_mtime_is_rehashed(tmp_path: Path, store: Store) -> None:
    model = write(tmp_path / "model.bin", 1 << 20, seed=3)
    age(model)
    run = objstore.init(project="p", entity="e", store=store)
    first = run.log_model(model, name="m")
    old = model.stat()
    with open(model, "r+b") as f:  # same size, same mtime: only the content and ctime differ
        f.seek(1000)
        f.write(b"changed!")
    os.utime(model, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert model.stat().st_mtime_ns == old.st_mtime_ns and model.stat().st_size == old.st_size
    second = run.log_model(model, name="m")
    assert second.digest != first.digest, "a change the mtime cannot show was missed"


def test_an_entry_written_in_the_files_mtime_tick_is_not_trusted(tmp_path: Path, store: Store) -> None:
    """Racy entries (git's rule): the file may change again within the tick its mtime shows."""
    model = write(tmp_path / "model.bin", 1 << 20, seed=4)
    st = model.stat()
    fobj = chunk_file(model, store.chunker, store.odb, stat_cache=None)
    store.odb.flush()
    cache = StatCache(tmp_path / "cache")
    # read began in the same tick as the last write: never stored, never trusted
    cache.store(model, st, st.st_mtime_ns + 1_000, fobj)
    racy = statcache.stats.racy
    assert cache.lookup(model, st) is None
    safe = StatCache(tmp_path / "cache2")
    safe.store(model, st, st.st_mtime_ns + 10 * 10**9, fobj)  # read began 10 s after the last write
    assert safe.lookup(model, st) == fobj
    assert statcache.stats.racy >= racy


def test_a_hit_whose_chunks_are_gone_is_a_miss(tmp_path: Path) -> None:
    model = write(tmp_path / "model.bin", 1 << 20, seed=6)
    age(model)
    a = Store.open(tmp_path / "a")
    cache = StatCache(tmp_path / "shared-cache")  # one cache used with two stores: a misuse it must survive
    chunk_file(model, a.chunker, a.odb, stat_cache=cache)
    a.odb.flush()
    b = Store.open(tmp_path / "b")
    fobj = chunk_file(model, b.chunker, b.odb, stat_cache=cache)
    b.odb.flush()
    assert b.odb.new_chunks == len({c for c, _ in fobj.chunks}) > 0, "store b must get the chunks, not just the cached list"


def test_remote_stores_keep_their_cache_under_the_user_cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))

    class Remote:
        url = "s3://bucket/prefix"

    one = StatCache.for_backend(Remote())
    assert one.directory.is_relative_to(tmp_path / "xdg" / "objstore")
    Remote.url = "s3://bucket/other"
    assert StatCache.for_backend(Remote()).directory != one.directory


@pytest.mark.parametrize("planted", ["cache", "cache/stat", "cache/stat/h2"])
def test_a_link_planted_in_the_stores_cache_is_never_written_through(tmp_path: Path, planted: str) -> None:
    """A store someone else wrote (a shared directory, an unpacked archive) may hold a link where
    its cache directories go: ``cache/stat -> ~/elsewhere``. The stat cache made its directories
    and wrote its entries through it, into a directory outside the store (before the fix).
    Now the link is refused: nothing lands outside, and logging works (uncached)."""
    model = write(tmp_path / "model.bin", 1 << 20, seed=7)
    age(model)
    store_path = tmp_path / "store"
    Store.open(store_path).close()
    outside = tmp_path / "outside"
    outside.mkdir()
    link = store_path / planted
    if planted.endswith("h2"):  # the two-hex-digit directory of the entry this file will have
        Store.open(store_path).close()
        run = objstore.init(project="p", entity="e", store=str(store_path))
        run.log_model(model, name="warm")
        run.finish()
        (entry,) = [p for p in (store_path / "cache" / "stat").rglob("*") if p.is_file()]
        link = entry.parent
        for p in link.iterdir():
            p.unlink()
        link.rmdir()
        age(model, 7200)  # a new stat key: the entry is written again
    elif link.exists():
        shutil.rmtree(link)
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside, target_is_directory=True)
    run = objstore.init(project="p", entity="e", store=str(store_path))
    art = run.log_model(model, name="m")
    run.finish()
    assert list(outside.rglob("*")) == []
    assert link.is_symlink()  # left in place, not followed
    assert art.version == "v0"
