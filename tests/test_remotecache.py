"""The local cache of remote stores (objstore.storage.remotecache), on the real SeaweedFS
server: a second use_model fetches almost nothing, the bound holds (also with several
processes at once), damaged entries are refetched and never served, mutable keys are
never cached, and a link planted in the cache cannot make objstore write outside it."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

import objstore
from objstore.maintenance.fsck import fsck
from objstore.model.names import parse_version_spec
from objstore.model.store import Store
from objstore.model.versions import resolve
from objstore.storage.backend import LocalBackend
from objstore.storage.chunkindex import compact
from objstore.storage.ids import ObjectId
from objstore.storage.keys import (
    CACHEABLE_KINDS,
    alias_ref,
    digest_ref,
    idx_key,
    immutable_kind,
    index_file_key,
    marked_pack_key,
    object_key,
    pack_key,
    reflog_key,
    remote_config_key,
    run_ref,
    version_ref,
)
from objstore.storage.objects import FileObject
from objstore.storage.remotecache import CachedBackend, RemoteCache, cache_info, parse_size, prune, store_id
from objstore.storage.trees import walk_tree

ENTITY, PROJECT = "team", "proj"
MiB = 1024 * 1024


# -- without a server ------------------------------------------------------------------

def test_only_immutable_keys_are_cacheable() -> None:
    oid = ObjectId(bytes(range(32)))
    name = "ab" * 32
    assert immutable_kind(object_key(oid)) == "object"
    assert immutable_kind(pack_key(name)) == "pack"
    assert immutable_kind(idx_key(name)) == "idx"
    assert immutable_kind(index_file_key(name)) == "index file"
    assert set(CACHEABLE_KINDS) == {"object", "pack", "idx", "index file"}
    for mutable in ("config", alias_ref("e", "p", "n", "latest"), version_ref("e", "p", "n", 3),
                    digest_ref("e", "p", "n", name), run_ref("e", "p", "r1"), reflog_key("refs/e/p/n/aliases/x", "1-2"),
                    remote_config_key("origin"), marked_pack_key(name), "tmp/upload-1", "quarantine/" + object_key(oid),
                    "gc/objects/123-4-ab"):
        assert immutable_kind(mutable) is None, mutable


def test_sizes_parse() -> None:
    assert parse_size("2GiB") == 2 << 30
    assert parse_size("500M") == 500 << 20
    assert parse_size("0") == 0
    assert parse_size("1.5k") == 1536
    for bad in ("", "lots", "-1", "5 parsecs", "2GX"):
        with pytest.raises(objstore.errors.InvalidInput):
            parse_size(bad)


def test_a_local_store_has_no_cache(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s")
    assert isinstance(store.backend, LocalBackend)
    store.close()


@settings(max_examples=10, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 40_000)), min_size=1, max_size=30))
def test_the_bound_holds_for_any_sequence_of_writes(writes: list[tuple[int, int]]) -> None:
    with tempfile.TemporaryDirectory() as where:
        cache = RemoteCache(Path(where), 100_000)
        try:
            for n, (name, size) in enumerate(writes):
                value = bytes([n % 256]) * size
                kept = cache.write(("s", "objects", "ab"), str(name), f"k{name}", value)
                assert kept == (size + 48 <= 25_000)
                with cache.locked():
                    assert sum(e.size for e in cache.scan()) <= 100_000
                if kept:  # the newest entry is never the one evicted for itself
                    assert cache.read(("s", "objects", "ab"), str(name), f"k{name}", size) == value
                    assert cache.read(("s", "objects", "ab"), str(name), "another key", size) is None
        finally:
            cache.close()


# -- on SeaweedFS ------------------------------------------------------------------------

def _model(path: Path, size: int, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def _sha(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _log(url: str, path: Path, name: str, aliases: list[str] | None = None) -> None:
    with objstore.init(project=PROJECT, entity=ENTITY, store=url) as run:
        run.log_model(str(path), name=name, aliases=aliases)


def _use(store: Store | str, spec: str, root: Path) -> str:
    with objstore.init(project=PROJECT, entity=ENTITY, store=store) as run:
        return run.use_model(spec, root=str(root))


def _measured_use(url: str, spec: str, root: Path) -> tuple[str, int, int]:
    """use_model in a freshly opened store: (path, bytes received from the bucket, requests)."""
    store = Store.open(url)
    try:
        path = _use(store, spec, root)
        stats = store.backend.stats.snapshot()
    finally:
        store.close()
    return path, stats.bytes_received, stats.requests


def _cache_files(root: Path, kind: str | None = None) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and p.parent != root
            and not p.name.startswith(".tmp-") and (kind is None or p.relative_to(root).parts[1] == kind)]


def _held(root: Path) -> int:
    cache = RemoteCache(root, 0)
    try:
        with cache.locked():
            return sum(e.size for e in cache.scan())
    finally:
        cache.close()


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "remote-cache"
    monkeypatch.setenv("OBJSTORE_CACHE_DIR", str(root))
    monkeypatch.delenv("OBJSTORE_CACHE_SIZE", raising=False)
    return root


@pytest.mark.s3
def test_second_use_model_fetches_under_one_percent(tmp_path: Path, s3_bucket_url: str, cache_dir: Path) -> None:
    model = _model(tmp_path / "m" / "model.bin", 3 * MiB, 1)
    _log(s3_bucket_url, model, "model")
    first, first_bytes, first_requests = _measured_use(s3_bucket_url, "model:v0", tmp_path / "a")
    second, second_bytes, second_requests = _measured_use(s3_bucket_url, "model:v0", tmp_path / "b")
    assert _sha(first) == _sha(second) == _sha(model)
    assert first_bytes >= model.stat().st_size
    assert second_bytes <= 0.01 * model.stat().st_size, (first_bytes, second_bytes)
    assert second_requests < first_requests
    assert isinstance(Store.open(s3_bucket_url).backend, CachedBackend)
    info = cache_info()
    assert info.root == str(cache_dir) and info.bytes <= info.bound
    assert info.entries["packs"] >= 1 and info.entries["objects"] >= 1 and info.entries["idx"] >= 1
    assert info.hits >= 1 and info.misses >= 1
    assert set(info.stores) == {store_id(s3_bucket_url)}


@pytest.mark.s3
def test_bound_holds_and_least_recently_used_goes_first(tmp_path: Path, s3_bucket_url: str, cache_dir: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    bound = 2 * MiB
    models = [_model(tmp_path / "m" / f"m{i}.bin", 300 * 1024, 10 + i) for i in range(8)]
    for i, m in enumerate(models):
        _log(s3_bucket_url, m, f"m{i}")
    monkeypatch.setenv("OBJSTORE_CACHE_SIZE", str(bound))
    for i, m in enumerate(models):
        path, fetched, _ = _measured_use(s3_bucket_url, f"m{i}:v0", tmp_path / "u" / str(i))
        assert _sha(path) == _sha(m)
        assert _held(cache_dir) <= bound
    # The last ones used are held; the first were evicted for them.
    _, fetched_last, _ = _measured_use(s3_bucket_url, "m7:v0", tmp_path / "again7")
    _, fetched_first, _ = _measured_use(s3_bucket_url, "m0:v0", tmp_path / "again0")
    assert fetched_last < 0.01 * 300 * 1024 < 300 * 1024 <= fetched_first
    assert _held(cache_dir) <= bound
    # A bound of 0 turns the cache off.
    monkeypatch.setenv("OBJSTORE_CACHE_SIZE", "0")
    assert not isinstance(Store.open(s3_bucket_url).backend, CachedBackend)


@pytest.mark.s3
def test_processes_share_the_cache_within_its_bound(tmp_path: Path, s3_bucket_url: str, cache_dir: Path,
                                                    s3_env: dict[str, str]) -> None:
    bound = 3 * MiB
    models = [_model(tmp_path / "m" / f"m{i}.bin", 400 * 1024, 20 + i) for i in range(6)]
    for i, m in enumerate(models):
        _log(s3_bucket_url, m, f"m{i}")
    _compacted(s3_bucket_url)  # an index file in play too, shared by the processes
    script = textwrap.dedent("""
        import hashlib, sys
        from pathlib import Path
        import objstore
        url, out, order = sys.argv[1], Path(sys.argv[2]), sys.argv[3].split(",")
        for round_ in range(3):
            for i in order:
                with objstore.init(project="proj", entity="team", store=url) as run:
                    path = run.use_model(f"m{i}:v0", root=str(out / f"{round_}-{i}"))
                print(i, hashlib.sha256(Path(path).read_bytes()).hexdigest(), flush=True)
    """)
    env = {**os.environ, "OBJSTORE_CACHE_SIZE": str(bound), "OBJSTORE_QUIET": "1"}
    orders = ["0,1,2,3,4,5", "5,4,3,2,1,0", "2,0,4,1,5,3", "3,5,1,4,0,2"]
    procs = [subprocess.Popen([sys.executable, "-c", script, s3_bucket_url, str(tmp_path / f"p{n}"), order],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for n, order in enumerate(orders)]
    peak = 0
    done = threading.Event()

    def watch() -> None:
        nonlocal peak
        while not done.is_set():
            if cache_dir.exists():
                peak = max(peak, _held(cache_dir))
            done.wait(0.05)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        results = [p.communicate(timeout=300) for p in procs]
    finally:
        done.set()
        watcher.join()
    expected = {str(i): _sha(m) for i, m in enumerate(models)}
    for proc, (stdout, stderr) in zip(procs, results):
        assert proc.returncode == 0, stderr
        lines = [line.split() for line in stdout.splitlines()]
        assert len(lines) == 18 and all(expected[i] == digest for i, digest in lines)
    assert 0 < peak <= bound
    assert _held(cache_dir) <= bound
    info = cache_info()
    assert info.hits > 0 and info.bytes <= bound


@pytest.mark.s3
def test_damaged_entries_are_refetched_never_served(tmp_path: Path, s3_bucket_url: str, cache_dir: Path) -> None:
    model = _model(tmp_path / "m" / "model.bin", 1 * MiB, 3)
    _log(s3_bucket_url, model, "model")
    _measured_use(s3_bucket_url, "model:v0", tmp_path / "a")
    entries = _cache_files(cache_dir)
    assert {p.relative_to(cache_dir).parts[1] for p in entries} == {"objects", "idx", "packs"}
    before = {p: p.read_bytes() for p in entries}
    for n, p in enumerate(entries):
        data = bytearray(before[p])
        if n % 3 == 0:
            data = data[: len(data) // 2]  # truncated
        elif n % 3 == 1:
            data[len(data) // 2] ^= 0xFF  # a flipped byte in the value
        else:
            data[12] ^= 0x01  # a flipped byte in the entry's head
        p.write_bytes(bytes(data))
    path, fetched, _ = _measured_use(s3_bucket_url, "model:v0", tmp_path / "b")
    assert _sha(path) == _sha(model)
    assert fetched >= model.stat().st_size  # refetched, not served
    restored = {p for p in entries if p.read_bytes() == before[p]}  # replaced by a whole entry again
    # Every index and pack range is read again; objects only those this use reads (not the run records of others).
    assert {p for p in entries if p.relative_to(cache_dir).parts[1] != "objects"} <= restored
    assert any(p.relative_to(cache_dir).parts[1] == "objects" for p in restored)
    _, fetched, _ = _measured_use(s3_bucket_url, "model:v0", tmp_path / "c")
    assert fetched <= 0.01 * model.stat().st_size


@pytest.mark.s3
def test_fsck_judges_the_bucket_not_the_cache(tmp_path: Path, s3_bucket_url: str, cache_dir: Path) -> None:
    model = _model(tmp_path / "m" / "model.bin", 200 * 1024, 4)
    _log(s3_bucket_url, model, "model")
    _measured_use(s3_bucket_url, "model:v0", tmp_path / "a")
    store = Store.open(s3_bucket_url)
    try:
        assert fsck(store).ok
        key = next(info.key for info in store.backend.iter_prefix("objects/"))
        store.backend.put(key, b"\x00garbage")  # damage the bucket's copy of a cached object
        assert not fsck(store).ok
    finally:
        store.close()


@pytest.mark.s3
def test_a_moved_alias_is_seen_at_once(tmp_path: Path, s3_bucket_url: str, cache_dir: Path) -> None:
    v0 = _model(tmp_path / "m" / "v0.bin", 200 * 1024, 5)
    v1 = _model(tmp_path / "m" / "v1.bin", 200 * 1024, 6)
    _log(s3_bucket_url, v0, "model", aliases=["prod"])
    reader = Store.open(s3_bucket_url)
    try:
        assert _sha(_use(reader, "model:prod", tmp_path / "a")) == _sha(v0)
        _log(s3_bucket_url, v1, "model", aliases=["prod"])  # another writer moves prod to v1
        assert _sha(_use(reader, "model:prod", tmp_path / "b")) == _sha(v1)
    finally:
        reader.close()
    script = ("import sys, objstore\n"
              "with objstore.init(project='proj', entity='team', store=sys.argv[1]) as run:\n"
              "    print(run.use_model('model:prod', root=sys.argv[2]))\n")
    out = subprocess.run([sys.executable, "-c", script, s3_bucket_url, str(tmp_path / "c")],
                         capture_output=True, text=True, check=True, env={**os.environ, "OBJSTORE_QUIET": "1"})
    assert _sha(out.stdout.strip()) == _sha(v1)


@pytest.mark.s3
def test_links_planted_in_the_cache_lead_nowhere(tmp_path: Path, s3_bucket_url: str, cache_dir: Path) -> None:
    model = _model(tmp_path / "m" / "model.bin", 300 * 1024, 7)
    _log(s3_bucket_url, model, "model")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_bytes(b"keep me")
    sid = store_id(s3_bucket_url)
    shutil.rmtree(cache_dir, ignore_errors=True)  # what logging cached
    (cache_dir / sid).mkdir(parents=True)
    for kind in ("objects", "idx", "packs"):
        (cache_dir / sid / kind).symlink_to(outside, target_is_directory=True)
    (cache_dir / "settings").symlink_to(outside / "precious")
    os.link(outside / "precious", cache_dir / ".lock")  # the ledger is written in place: never into this
    path, _, _ = _measured_use(s3_bucket_url, "model:v0", tmp_path / "a")
    assert _sha(path) == _sha(model)
    assert sorted(p.name for p in outside.iterdir()) == ["precious"]
    assert (outside / "precious").read_bytes() == b"keep me"
    for kind in ("objects", "idx", "packs"):
        assert not (cache_dir / sid / kind).is_symlink() and (cache_dir / sid / kind).is_dir()
    # A link in place of an entry is a miss, replaced by the entry; its target is untouched.
    entry = _cache_files(cache_dir, "objects")[0]
    entry.unlink()
    entry.symlink_to(outside / "precious")
    path, _, _ = _measured_use(s3_bucket_url, "model:v0", tmp_path / "b")
    assert _sha(path) == _sha(model)
    assert (outside / "precious").read_bytes() == b"keep me" and not entry.is_symlink()
    prune()
    assert (outside / "precious").read_bytes() == b"keep me"


@pytest.mark.s3
def test_cache_commands(tmp_path: Path, s3_bucket_url: str, cache_dir: Path) -> None:
    from cli.main import main

    model = _model(tmp_path / "m" / "model.bin", 500 * 1024, 8)
    _log(s3_bucket_url, model, "model")
    _measured_use(s3_bucket_url, "model:v0", tmp_path / "a")
    runner = CliRunner()
    info = json.loads(runner.invoke(main, ["cache", "info", "--json"], catch_exceptions=False).output)
    assert info["root"] == str(cache_dir) and info["bytes"] > 500 * 1024 and info["bound"] == 2 << 30
    assert info["entries"]["packs"] >= 1 and list(info["stores"]) == [store_id(s3_bucket_url)]
    text = runner.invoke(main, ["cache", "info"], catch_exceptions=False).output
    assert str(cache_dir) in text and "2.0 GiB" in text
    pruned = json.loads(runner.invoke(main, ["cache", "prune", "--to", "100KiB", "--json"], catch_exceptions=False).output)
    assert pruned["before"] == info["bytes"] and pruned["after"] <= 100 * 1024
    other = json.loads(runner.invoke(main, ["cache", "prune", "--store", "s3://elsewhere/x", "--json"],
                                     catch_exceptions=False).output)
    assert other["before"] == other["after"] == 0
    runner.invoke(main, ["cache", "prune", "--store", s3_bucket_url], catch_exceptions=False)
    assert cache_info().bytes == 0
    assert runner.invoke(main, ["cache", "limit", "64MiB"], catch_exceptions=False).exit_code == 0
    assert cache_info().bound == 64 * MiB
    bad = runner.invoke(main, ["cache", "prune", "--to", "lots"])
    assert bad.exit_code != 0
    assert prune(0) == (0, 0)


@pytest.mark.s3
@pytest.mark.parametrize("held", ["head", "tail"])
def test_a_partly_cached_range_fetches_only_what_is_missing(tmp_path: Path, s3_bucket_url: str, cache_dir: Path,
                                                            held: str) -> None:
    """A range whose first (or last) chunks a cached range holds: those come from the
    cache, only the others from the bucket, in one request; the union is kept."""
    _log(s3_bucket_url, _model(tmp_path / "m" / "model.bin", 2 * MiB, 7), "m")
    store = Store.open(s3_bucket_url)
    try:
        backend = store.backend
        assert isinstance(backend, CachedBackend)
        version = resolve(store, parse_version_spec("m:latest", entity=ENTITY, project=PROJECT)).version
        [(_, entry)] = list(walk_tree(store.odb, version.tree))
        assert entry.id is not None
        fobj = store.odb.get_object(entry.id)
        assert isinstance(fobj, FileObject)
        located = store.odb.locate_many([c for c, _ in fobj.chunks])
        assert len({loc.pack for _, loc in located}) == 1 and len(located) >= 8
        key = f"packs/{located[0][1].pack}.pack"
        first, last = located[0][1], located[-1][1]
        cut = located[len(located) // 2][1]
        whole = (first.offset, last.offset + last.stored_len - first.offset)
        part = ((first.offset, cut.offset - 41 - first.offset) if held == "head"
                else (cut.offset, last.offset + last.stored_len - cut.offset))  # 41: a record's head
        truth = backend.inner.get_range(key, *whole)
        assert backend.get_range(key, *part) == backend.inner.get_range(key, *part)
        before = backend.stats.snapshot()
        assert backend.get_range(key, *whole) == truth
        after = backend.stats.snapshot()
        assert after.requests - before.requests == 1
        fetched = after.bytes_received - before.bytes_received
        assert fetched <= whole[1] - part[1] + 41, (fetched, whole[1], part[1])
        before = after
        assert backend.get_range(key, *whole) == truth  # the union is held now
        assert backend.stats.snapshot().requests == before.requests
    finally:
        store.close()


def _compacted(url: str) -> Path:
    """Compact the store's index into one index file; the bucket's copy of it, downloaded."""
    store = Store.open(url)
    try:
        written = compact(store.backend).written
        assert written is not None
        copy = Path(tempfile.mkdtemp()) / f"{written}.midx"
        copy.write_bytes(store.backend.get(index_file_key(written), max_size=1 << 30))
        return copy
    finally:
        store.close()


@pytest.mark.s3
def test_index_files_count_against_the_bound(tmp_path: Path, s3_bucket_url: str, cache_dir: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A consolidated index file is a cache entry like the others: under the one
    bound, evicted least recently used first and fetched again after, and a damaged
    one (even behind an mtime set back) fetched again and never mapped."""
    bound = 1 * MiB
    models = [_model(tmp_path / "m" / f"m{i}.bin", 200 * 1024, 30 + i) for i in range(6)]
    for i, m in enumerate(models):
        _log(s3_bucket_url, m, f"m{i}")
    bucket_copy = _compacted(s3_bucket_url)
    monkeypatch.setenv("OBJSTORE_CACHE_SIZE", str(bound))
    held = cache_dir / store_id(s3_bucket_url) / "index" / bucket_copy.name
    fetches, last = 0, None
    for round_ in range(2):
        for i, m in enumerate(models):
            path, _, _ = _measured_use(s3_bucket_url, f"m{i}:v0", tmp_path / "u" / f"{round_}-{i}")
            assert _sha(path) == _sha(m)
            assert _held(cache_dir) <= bound
            if not held.exists():  # evicted for this use's pack bytes once it had been mapped
                continue
            assert held.read_bytes() == bucket_copy.read_bytes()
            now = (held.stat().st_ino, held.stat().st_mtime_ns)  # a hit within a minute leaves its mtime
            fetches, last = fetches + (now != last), now
    assert fetches >= 2, "the index file, used first, was never the least recently used entry"
    _measured_use(s3_bucket_url, "m5:v0", tmp_path / "again")
    assert cache_info().entries["index"] >= 1
    for damage in ("flip", "flip, mtime set back", "truncate"):
        st = held.stat()
        data = bytearray(held.read_bytes())
        if damage == "truncate":
            data = data[:-100]
        else:
            data[len(data) // 2] ^= 0x01
        held.write_bytes(bytes(data))
        if damage == "flip, mtime set back":
            os.utime(held, ns=(st.st_atime_ns, st.st_mtime_ns))
        store = Store.open(s3_bucket_url)
        try:
            assert _sha(_use(store, "m5:v0", tmp_path / "d" / damage)) == _sha(models[5])
            cache = store.backend.cache  # type: ignore[attr-defined]
            assert cache.counters.damaged >= 1, damage
        finally:
            store.close()
        assert held.read_bytes() == bucket_copy.read_bytes(), damage
        assert _held(cache_dir) <= bound
