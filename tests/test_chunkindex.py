"""Consolidated index files: the format, hostile files, compaction, gc and readers around it.

What must hold: an index file is exactly the union of the ``.idx`` files it
replaces; opening a store reads a bounded number of index files whatever its
history; a hostile index file is a CorruptObject (or a miss), never a crash or a
huge allocation; compaction killed at any point, or racing writers and gc, loses
no chunk and leaves fsck clean.
"""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import objstore
from objstore.errors import CorruptObject
from objstore.maintenance.fsck import fsck
from objstore.maintenance.gc import collect_garbage
from objstore.model.deletion import delete_collection
from objstore.model.gcintent import lost
from objstore.model.inventory import reach
from objstore.model.names import LATEST, CollectionPath, VersionSpec
from objstore.model.store import Store
from objstore.model.versions import resolve
from objstore.storage import indexfile
from objstore.storage.chunkindex import ChunkIndex, cache_path, compact, list_indexes, marked_packs, open_index_file
from objstore.storage.ids import Kind, ObjectId, hash_bytes
from objstore.storage.indexfile import (
    HEADER,
    IndexFile,
    checksum_ok,
    from_pack_index,
    merge,
    search,
    verify_index_file,
    write_index_file,
)
from objstore.storage.packs import INDEX_DTYPE
from objstore.storage.repack import repack_small_packs

# -- the format -----------------------------------------------------------------


def _pack_index(seed: int, n: int, shared: list[bytes] = ()) -> np.ndarray:  # type: ignore[assignment]
    rng = np.random.default_rng(seed)
    ids = [hash_bytes(Kind.CHUNK, rng.bytes(8)).raw for _ in range(n)] + list(shared)
    index = np.zeros(len(ids), dtype=INDEX_DTYPE)
    index["id"] = ids
    index["offset"] = 49 + np.arange(len(ids)) * 100
    index["stored_len"] = 90
    index["raw_len"] = 95
    index["codec"] = 1
    return np.sort(index, order="id")


def _file(packs: dict[str, np.ndarray]) -> tuple[bytes, str]:
    triple = merge([from_pack_index(name, 10_000_000, index) for name, index in packs.items()])
    out = io.BytesIO()
    name = write_index_file(out, *triple)
    return out.getvalue(), name


def _names(k: int) -> list[str]:
    return [hash_bytes(Kind.PACK, bytes([i])).hex for i in range(k)]


def test_index_file_answers_like_the_pack_indexes_it_merges() -> None:
    shared = [hash_bytes(Kind.CHUNK, b"in two packs").raw, b"\x07" * 31 + b"\0"]  # an id ending in NUL too
    packs = {name: _pack_index(i, 50, shared) for i, name in enumerate(_names(3))}
    data, name = _file(packs)
    for block in (7, 100, 1 << 20):
        assert checksum_ok(lambda start, n: data[start:start + n], len(data), name, block)
    assert not checksum_ok(lambda start, n: data[start:start + n], len(data) - 1, name)
    f = IndexFile.parse(data, name)
    verify_index_file(f)
    assert len(f) == 3 * 52 and f.pack_names == sorted(packs)
    memory, on_disk = ChunkIndex(), ChunkIndex()
    memory.add_packs(packs.items())
    on_disk.add_file(f)
    probe = [bytes(x).ljust(32, b"\0") for index in packs.values() for x in index["id"]] + [b"\x01" * 32]
    assert on_disk.contains_many(probe).tolist() == memory.contains_many(probe).tolist() == [True] * (len(probe) - 1) + [False]
    for got, want in zip(on_disk.locate_many(probe), memory.locate_many(probe)):
        assert (got is None) == (want is None)
        if got is not None and want is not None:
            assert packs[got.pack][packs[got.pack]["id"] == np.array([probe[0]], "S32")[0]] is not None
            assert (got.stored_len, got.raw_len, got.codec) == (want.stored_len, want.raw_len, want.codec)
    # Each covered pack comes back exactly as its .idx held it.
    for pack, index in f.pack_indexes():
        assert np.array_equal(index, packs[pack])
    # A chunk in two packs: once one is gone, the other copy answers.
    first = on_disk.locate(shared[0])
    assert first is not None
    on_disk.gone.add(first.pack)
    other = on_disk.locate(shared[0])
    assert other is not None and other.pack != first.pack
    assert on_disk.locate_many([shared[0]])[0] == other and on_disk.contains_many([shared[0]]).tolist() == [True]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.binary(min_size=32, max_size=32), max_size=60), st.lists(st.binary(min_size=32, max_size=32), max_size=30),
       st.integers(0, 3))
def test_search_agrees_with_searchsorted(ids: list[bytes], extra: list[bytes], tie_prefix: int) -> None:
    # Ids sharing their 8-byte prefix, duplicates, ids ending in NUL: what a plain
    # prefix search would get wrong.
    ids = ids + [b"\xaa" * 8 + bytes([i]) * 24 for i in range(tie_prefix)] + ids[:3] + [b"\x05" * 31 + b"\0"]
    arr = np.sort(np.array(ids, dtype="S32"))
    probe = np.array(ids + extra + [b"\xaa" * 8 + b"\x09" * 24], dtype="S32")
    fanout = np.cumsum(np.bincount(arr.view(np.uint8)[::32], minlength=256)).astype("<u8")
    few = indexfile.FEW_PROBES
    try:
        for limit in (few, 0):  # a few probes (np.searchsorted), then the prefix loop
            indexfile.FEW_PROBES = limit
            for fan in (None, fanout):
                pos, hit = search(arr, probe, fan)
                want = np.searchsorted(arr, probe)
                assert hit.tolist() == [bool(w < len(arr) and arr[w] == p) for w, p in zip(want, probe)]
                assert pos[hit].tolist() == want[hit].tolist()
                assert ((0 <= pos) & (pos < max(len(arr), 1))).all()
    finally:
        indexfile.FEW_PROBES = few


def test_merge_is_the_union_and_idempotent() -> None:
    packs = {name: _pack_index(i, 20) for i, name in enumerate(_names(4))}
    data, name = _file(packs)
    f = IndexFile.parse(data, name)
    again = merge([f.triple(), f.triple(), from_pack_index(_names(4)[0], 10_000_000, packs[_names(4)[0]])])
    out = io.BytesIO()
    assert write_index_file(out, *again) == name  # same content, same name: create-only is idempotent


def _forge(data: bytes) -> bytes:
    """``data`` with a valid checksum again: what a hostile writer can always do."""
    from objstore.storage.ids import hasher

    h = hasher(Kind.PACK)
    h.update(data[:-32])
    return data[:-32] + h.digest()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_hostile_index_files_are_corrupt_object_never_a_crash(data: st.DataObject) -> None:
    packs = {name: _pack_index(i, 5) for i, name in enumerate(_names(2))}
    good, _ = _file(packs)
    buf = bytearray(good)
    for _ in range(data.draw(st.integers(1, 4))):
        how = data.draw(st.sampled_from(["flip", "truncate", "count", "entry", "extend"]))
        if how == "flip" and buf:
            buf[data.draw(st.integers(0, len(buf) - 1))] ^= 1 << data.draw(st.integers(0, 7))
        elif how == "truncate":
            del buf[data.draw(st.integers(0, len(buf))):]
        elif how == "count" and len(buf) >= HEADER.size:
            struct.pack_into("<I" if data.draw(st.booleans()) else "<Q", buf, 8 if data.draw(st.booleans()) else 16,
                             data.draw(st.sampled_from([0, 1, 2**31, 2**32 - 1, 10**9])))
        elif how == "entry" and len(buf) > 64:
            field = data.draw(st.integers(0, len(buf) - 40))
            buf[field:field + 4] = b"\xff\xff\xff\x7f"
        elif how == "extend":
            buf += bytes(data.draw(st.integers(1, 64)))
    forged = _forge(bytes(buf)) if data.draw(st.booleans()) and len(buf) >= 32 else bytes(buf)
    name = forged[-32:].hex() if len(forged) >= 32 else "0" * 64
    try:
        if not checksum_ok(lambda start, n: forged[start:start + n], len(forged), name):
            return
        f = IndexFile.parse(forged, name)
    except CorruptObject:
        return
    index = ChunkIndex()
    index.add_file(f)
    probe = [bytes(x).ljust(32, b"\0") for p in packs.values() for x in p["id"]] + [b"\0" * 32, b"\xff" * 32]
    for ask in (lambda: index.locate_many(probe), lambda: index.contains_many(probe), lambda: list(index.iter_entries()),
                lambda: [index.locate(p) for p in probe], lambda: verify_index_file(f), lambda: list(f.pack_indexes())):
        try:
            ask()
        except CorruptObject:
            pass
    for loc in index.locate_many(probe) if _quiet(index, probe) else []:
        if loc is not None:
            assert loc.stored_len <= 17 * 2**20 and loc.offset < 256 * 2**20


def _quiet(index: ChunkIndex, probe: list[bytes]) -> bool:
    try:
        index.locate_many(probe)
        return True
    except CorruptObject:
        return False


# -- stores ---------------------------------------------------------------------

def _sessions(store: Path | str, files: Path, start: int, count: int) -> None:
    files.mkdir(exist_ok=True)
    for i in range(start, start + count):
        p = files / f"m{i}.bin"
        p.write_bytes(np.random.default_rng(i).bytes(40_000) + f"{i}".encode())
        with objstore.init(project="p", entity="e", store=str(store)) as run:
            run.log_model(path=str(p), name=f"m{i}")


def _read_all(store: Path | str, files: Path, which: range) -> None:
    api = objstore.Api(store=str(store), entity="e", project="p")
    for i in which:
        art = api.artifact(f"m{i}:latest")
        out = art.download(str(files.parent / "out" / str(i)))
        assert (Path(out) / f"m{i}.bin").read_bytes() == (files / f"m{i}.bin").read_bytes()


def test_compaction_bounds_what_opening_a_store_reads(tmp_path: Path) -> None:
    store, files = tmp_path / "store", tmp_path / "files"
    _sessions(store, files, 0, 12)
    before = len(list((store / "packs").glob("*.idx")))
    assert before >= 12
    r = run_cli(store, "maintenance", "--json").json()
    assert isinstance(r, dict) and r["idx_merged"] == before and r["written"]
    assert not list((store / "packs").glob("*.idx")) and len(list((store / "packs").glob("*.midx"))) == 1
    s = Store.open_existing(store)
    gets = s.backend.stats.snapshot()
    s.odb.refresh()
    assert s.backend.stats.snapshot().requests - gets.requests <= 3  # two listings (packs/, gc/marked/), no .idx GET
    assert len(s.odb.index.files) == 1 and len(s.odb.index._ids) == 0
    _read_all(store, files, range(12))
    assert fsck(Store.open_existing(store)).ok
    # More sessions: their .idx stay loose until the next compaction, which is geometric.
    _sessions(store, files, 12, 3)
    assert compact(Store.open_existing(store).backend).files_merged == 0  # 3 new packs' entries < 12 packs' entries
    _sessions(store, files, 15, 12)
    assert compact(Store.open_existing(store).backend).files_merged >= 1
    _read_all(store, files, range(27))
    assert fsck(Store.open_existing(store)).ok


def test_writers_compact_by_themselves_past_the_threshold(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBJSTORE_INDEX_COMPACT_THRESHOLD", "4")
    store, files = tmp_path / "store", tmp_path / "files"
    _sessions(store, files, 0, 9)
    listing = list_indexes(Store.open_existing(store).backend)
    assert listing.files and len(listing.idx) < 4
    _read_all(store, files, range(9))
    assert fsck(Store.open_existing(store)).ok


def test_a_reader_holding_an_old_listing_finds_chunks_after_compaction_and_gc(tmp_path: Path) -> None:
    store, files = tmp_path / "store", tmp_path / "files"
    _sessions(store, files, 0, 6)
    reader = Store.open_existing(store)
    reader.odb.refresh()  # holds the six .idx files
    compact(Store.open_existing(store).backend)
    _sessions(store, files, 6, 2)
    # The reader never saw the index file nor the new packs: it lists again on a miss.
    api = objstore.Api(store=reader, entity="e", project="p")
    out = api.artifact("m7:latest").download(str(tmp_path / "o7"))
    assert (Path(out) / "m7.bin").read_bytes() == (files / "m7.bin").read_bytes()
    # gc rewrites the index file without the packs it deletes; the reader's
    # mapped copy names them, so it relocates (or says NotFound for what is gone).
    delete_collection(reader, CollectionPath("e", "p", "m0"))
    report = collect_garbage(Store.open_existing(store), grace_seconds=0)
    assert report.packs_deleted >= 1
    for f in list_indexes(reader.backend).files:
        data = (store / "packs" / f"{f}.midx").read_bytes()
        assert all(p in {x.name[:-5] for x in (store / "packs").glob("*.pack")} for p in IndexFile.parse(data, f).pack_names)
    _read_all(store, files, range(1, 8))
    assert fsck(Store.open_existing(store)).ok


def test_a_damaged_index_file_is_named_and_readers_fall_back_to_the_packs(tmp_path: Path) -> None:
    store, files = tmp_path / "store", tmp_path / "files"
    _sessions(store, files, 0, 4)
    compact(Store.open_existing(store).backend)
    (midx,) = (store / "packs").glob("*.midx")
    data = bytearray(midx.read_bytes())
    data[len(data) // 2] ^= 0x10
    os.chmod(midx, 0o644)
    midx.write_bytes(bytes(data))
    _read_all(store, files, range(4))  # from each pack's own index section
    report = fsck(Store.open_existing(store))
    assert any(p.object_id == midx.stem and "checksum" in p.message for p in report.problems), report.problems
    midx.unlink()
    os.mkfifo(midx)  # not a regular file: damage, not a hang
    _read_all(store, files, range(4))


COMPACTOR = textwrap.dedent("""
    import sys
    from objstore.model.store import Store
    Store.open_existing(sys.argv[1]).odb.compact_index()
""")


def test_compaction_killed_at_every_point_leaves_a_readable_store(tmp_path: Path) -> None:
    store, files = tmp_path / "store", tmp_path / "files"
    _sessions(store, files, 0, 5)
    compact(Store.open_existing(store).backend)
    _sessions(store, files, 5, 5)  # a second compaction merges these with the first file
    for n in range(1, 40):
        env = dict(os.environ, OBJSTORE_FAULT=f"any:{n}")
        proc = subprocess.run([sys.executable, "-c", COMPACTOR, str(store)], env=env, capture_output=True, timeout=120)
        _read_all(store, files, range(10))
        report = fsck(Store.open_existing(store))
        assert report.ok, (n, [p.message for p in report.problems])
        if proc.returncode == 0:
            break
        assert proc.returncode == -9, proc.stderr.decode()[-2000:]
        _sessions(store, files, 10 + n, 0)
    else:
        pytest.fail("compaction never finished")
    assert not list((store / "packs").glob("*.idx"))


# Beside the writers: one process compacting in a loop, one logging scratch
# collections and deleting them (so gc really deletes packs index files cover).
CHURN = textwrap.dedent("""
    import os, sys, time
    import objstore
    from objstore.model.deletion import delete_collection
    from objstore.model.names import CollectionPath
    from objstore.model.store import Store
    store, deadline, work, role = sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4]
    n = 0
    while time.time() < deadline:
        n += 1
        if role == "compact":
            Store.open_existing(store).odb.compact_index()
            time.sleep(0.1)
            continue
        path = os.path.join(work, f"scratch-{n}.bin")
        with open(path, "wb") as f:
            f.write(os.urandom(30_000))
        with objstore.init(project="p", entity="e", store=store) as run:
            run.log_model(path, name=f"scratch-{n}")
        delete_collection(Store.open_existing(store), CollectionPath("e", "p", f"scratch-{n}"))
    print(role, n, flush=True)
""")


def _race(store: str, tmp_path: Path, writers: int) -> None:
    from test_concurrency import _run

    seconds = float(os.environ.get("OBJSTORE_CONCURRENCY_SECONDS", "20"))
    Store.open(store).close()
    (tmp_path / "churn").mkdir()
    deadline = str(time.time() + seconds)
    churn = [subprocess.Popen([sys.executable, "-c", CHURN, store, deadline, str(tmp_path / "churn"), role],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for role in ("compact", "delete")]
    _run(store, tmp_path, writers=writers, seconds=seconds, grace=1.0)
    for proc in churn:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-3000:]
    report = collect_garbage(Store.open_existing(store), grace_seconds=0)  # nobody writes now
    assert report.held is None
    s = Store.open_existing(store)
    assert fsck(s).ok
    listing = list_indexes(s.backend)
    assert listing.files, "no index file was written"
    for name, size in listing.files.items():  # gc left no index naming a deleted pack
        assert set(open_index_file(s.backend, name, size).pack_names) <= set(listing.packs)


def test_compaction_racing_writers_and_gc_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Every writer session and every gc run compacts too: the index churns all the time.
    monkeypatch.setenv("OBJSTORE_INDEX_COMPACT_THRESHOLD", "2")
    _race(str(tmp_path / "store"), tmp_path, writers=4)


@pytest.mark.s3
def test_compaction_racing_writers_and_gc_s3(s3_bucket_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBJSTORE_INDEX_COMPACT_THRESHOLD", "2")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _race(s3_bucket_url, tmp_path, writers=3)
    assert list((tmp_path / "cache").rglob("*.midx"))  # mapped from the local cache


@pytest.mark.s3
def test_remote_index_file_is_cached_verified_and_refetched_when_damaged(
        s3_bucket_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    files = tmp_path / "files"
    Store.open(s3_bucket_url).close()
    _sessions(s3_bucket_url, files, 0, 3)
    assert compact(Store.open_existing(s3_bucket_url).backend).written
    _read_all(s3_bucket_url, files, range(3))
    (cached,) = (tmp_path / "cache").rglob("*.midx")
    data = bytearray(cached.read_bytes())
    data[100] ^= 1
    cached.write_bytes(bytes(data))  # a damaged cache entry is a miss, never an answer
    s = Store.open_existing(s3_bucket_url)
    s.odb.refresh()
    assert len(s.odb.index.files) == 1 and not s.odb.damaged_files
    assert cached.read_bytes() != bytes(data)
    _read_all(s3_bucket_url, files, range(3))
    assert fsck(s).ok



def test_a_reader_whose_listing_names_merged_idx_files_lists_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import objstore.storage.odb as odb_module

    store, files = tmp_path / "store", tmp_path / "files"
    _sessions(store, files, 0, 5)
    stale = list_indexes(Store.open_existing(store).backend)  # the five .idx, no index file
    compact(Store.open_existing(store).backend)
    listings = [stale]
    real = odb_module.list_indexes
    monkeypatch.setattr(odb_module, "list_indexes", lambda backend: listings.pop() if listings else real(backend))
    reader = Store.open_existing(store)
    reader.odb.refresh()  # every .idx it listed is gone: it must list again, not lose them
    assert not listings and len(reader.odb.index.files) == 1 and not reader.odb.damaged_packs
    _read_all(store, files, range(5))


def _version_id(store: Store, name: str) -> ObjectId:
    return resolve(store, VersionSpec(CollectionPath("e", "p", name), LATEST)).object_id


def test_a_version_whose_chunk_only_a_pending_idx_lists_is_not_lost(tmp_path: Path) -> None:
    # A writer may call one chunk new without reading the .idx files it has not read
    # (a false "new" only costs a copy): fine for dedup, wrong for whoever asks whether
    # a version is whole. lost() asked has_chunks, so a gc's writer called a stored
    # version of one chunk lost.
    store, files = tmp_path / "store", tmp_path / "files"
    _sessions(store, files, 0, 3)
    s = Store.open_existing(store)
    assert lost(s, _version_id(s, "m0")) is None


def test_a_version_copied_before_a_mark_newer_than_the_listing_is_not_lost(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # gc's rewrite and repack copy a pack's chunks (a new pack and .idx), then mark it. A
    # reader whose listing is older than the copy sees the mark and not the copy; the
    # chunk is stored all the same (in the marked pack, which a gc deletes only after
    # looking at the refs again, and in the copy). has_chunks drops hits on marked packs
    # (a writer stores those again), so lost() called the version lost and a writer that
    # survived a gc failed: "storing it again did not restore it"
    # (test_compaction_racing_writers_and_gc_local).
    import objstore.storage.odb as odb_module

    store, files = tmp_path / "store", tmp_path / "files"
    _sessions(store, files, 0, 3)
    stale = list_indexes(Store.open_existing(store).backend)
    assert repack_small_packs(Store.open_existing(store), min_packs=2).packs_written
    assert marked_packs(Store.open_existing(store).backend) == set(stale.packs)
    monkeypatch.setattr(odb_module, "list_indexes", lambda backend: stale)  # every listing is older than the copy
    s = Store.open_existing(store)
    for i in range(3):
        assert lost(s, _version_id(s, f"m{i}")) is None


def test_a_version_whose_pack_is_gone_is_lost(tmp_path: Path) -> None:
    # The other side: a pack deleted behind the reader's back, while a stale index
    # file still names it, is lost, whatever the reader loaded before.
    store, files = tmp_path / "store", tmp_path / "files"
    _sessions(store, files, 0, 3)
    compact(Store.open_existing(store).backend)
    s = Store.open_existing(store)
    vid = _version_id(s, "m1")
    assert lost(s, vid) is None
    (chunk,) = {c for c in reach(s, [vid]).chunks}
    pack = s.odb.index.locate(chunk)
    assert pack is not None
    (store / "packs" / f"{pack.pack}.pack").unlink()
    assert lost(s, vid) == f"chunk {chunk.hex()[:16]}"
    assert lost(s, _version_id(s, "m0")) is None and lost(s, _version_id(s, "m2")) is None


def test_stored_now_looks_at_each_pack_once_not_at_each_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # On a bucket each look is a request: a version of many chunks in a few packs
    # costs a stat per pack.
    p = tmp_path / "big.bin"
    p.write_bytes(np.random.default_rng(7).bytes(3_000_000))
    with objstore.init(project="p", entity="e", store=str(tmp_path / "store")) as run:
        run.log_model(path=str(p), name="big")
    s = Store.open_existing(tmp_path / "store")
    chunks = [ObjectId(c) for c in reach(s, [_version_id(s, "big")]).chunks]
    assert len(chunks) > 4
    looked: list[str] = []
    real = s.backend.stat
    monkeypatch.setattr(s.backend, "stat", lambda key: looked.append(key) or real(key))
    assert all(s.odb.stored_now(chunks))
    packs = [k for k in looked if k.endswith(".pack")]
    assert packs and len(packs) == len(set(packs))


def test_fsck_names_an_index_file_that_disagrees_with_its_pack(tmp_path: Path) -> None:
    store, files = tmp_path / "store", tmp_path / "files"
    _sessions(store, files, 0, 3)
    s = Store.open_existing(store)
    listing = list_indexes(s.backend)
    from objstore.storage.packs import decode_idx

    parts = []
    for name in sorted(listing.idx):
        index = decode_idx(s.backend.get(f"packs/{name}.idx"), name).copy()
        if not parts:
            index["offset"][0] += 1  # forged: a checksum only proves the writer meant it
        parts.append(from_pack_index(name, listing.packs[name], index))
    out = io.BytesIO()
    forged = write_index_file(out, *merge(parts))
    (store / "packs" / f"{forged}.midx").write_bytes(out.getvalue())
    for name in listing.idx:
        (store / "packs" / f"{name}.idx").unlink()
    report = fsck(Store.open_existing(store))
    assert any("disagrees" in p.message for p in report.problems), [p.message for p in report.problems]


def test_a_checked_index_file_is_not_hashed_again_but_fsck_rehashes_it(tmp_path: Path) -> None:
    store, files = tmp_path / "store", tmp_path / "files"
    _sessions(store, files, 0, 3)
    compact(Store.open_existing(store).backend)
    s = Store.open_existing(store)
    s.odb.refresh()  # checked once: copied to the user cache and stamped beside the copy
    (midx,) = (store / "packs").glob("*.midx")
    assert cache_path(s.backend, midx.stem).with_suffix(".ok").exists()
    st_before = midx.stat()
    data = bytearray(midx.read_bytes())
    data[-40] ^= 0x01  # inside the entries, behind a stat that still matches
    os.chmod(midx, 0o644)
    midx.write_bytes(bytes(data))
    os.utime(midx, ns=(st_before.st_atime_ns, st_before.st_mtime_ns))
    try:
        _read_all(store, files, range(3))  # a wrong entry fails its chunk's own check, never wrong bytes
    except CorruptObject:
        pass
    report = fsck(Store.open_existing(store))
    assert any(p.object_id == midx.stem for p in report.problems), [p.message for p in report.problems]


@pytest.mark.parametrize("kind", ["fifo", "dev zero", "garbage"])
def test_a_hostile_stamp_is_a_miss_never_a_hang(tmp_path: Path, kind: str) -> None:
    store, files = tmp_path / "store", tmp_path / "files"
    _sessions(store, files, 0, 2)
    compact(Store.open_existing(store).backend)
    s = Store.open_existing(store)
    s.odb.refresh()
    (midx,) = (store / "packs").glob("*.midx")
    stamp = cache_path(s.backend, midx.stem).with_suffix(".ok")
    stamp.unlink()
    if kind == "fifo":
        os.mkfifo(stamp)
    elif kind == "dev zero":
        stamp.symlink_to("/dev/zero")
    else:
        stamp.write_bytes(os.urandom(4096))
    r = run_cli(store, "use-model", "e/p/m1:latest", check=False, timeout=60, cwd=tmp_path)
    assert r.code == 0, r.err


def test_mapped_index_pages_stay_bounded_after_many_lookups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lookup hands the pages of a mapped index file back after each window:
    the file-backed RSS stays near one window, not the whole file (on kernels
    whose page cache holds large folios, one fault maps 2 MiB; 1,000 random
    lookups mapped a whole 10^7-entry file)."""
    import objstore.storage.indexfile as indexfile
    from objstore.storage.indexfile import ENTRY_DTYPE, write_index_file
    from objstore.storage.keys import index_file_key

    if not Path("/proc/self/status").exists():
        pytest.skip("needs /proc")
    monkeypatch.setattr(indexfile, "WINDOW_BYTES", 1 << 20)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    store = tmp_path / "store"
    Store.open(str(store)).close()
    n = 1_000_000  # 53 MB of ids and entries
    rng = np.random.default_rng(5)
    ids = np.sort(np.frombuffer(rng.bytes(32 * n), dtype="S32"))
    table = np.zeros(n, dtype=ENTRY_DTYPE)
    table["offset"], table["stored_len"], table["raw_len"], table["codec"] = 49, 100, 100, 1
    tmp = tmp_path / "x.midx"
    with open(tmp, "wb") as out:
        name = write_index_file(out, [(hash_bytes(Kind.PACK, b"p").hex, 200 << 20)], ids, table)
    target = store.joinpath(*index_file_key(name).split("/"))
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, target)
    s = Store.open_existing(store)
    s.odb.refresh()

    def file_rss() -> int:
        for line in open("/proc/self/status"):
            if line.startswith("RssFile:"):
                return int(line.split()[1]) * 1024
        return 0

    probe = [bytes(x).ljust(32, b"\0") for x in ids[rng.integers(0, n, 20_000)]] + [rng.bytes(32) for _ in range(20_000)]
    before = file_rss()
    assert int(s.odb.index.contains_many(probe).sum()) >= 20_000 - 5
    locs = s.odb.index.locate_many(probe[:5000])
    assert all(loc is not None for loc in locs)
    for p in probe[:200]:
        assert s.odb.index.locate(p) is not None
    assert file_rss() - before < 12 << 20, (file_rss() - before) >> 20


# -- reading the loose .idx files lazily --------------------------------------------

class _CountingIdx:
    """Counts the ``.idx`` GETs of a backend (wraps its ``get``)."""

    def __init__(self, store: Store) -> None:
        self.keys: list[str] = []
        real = store.backend.get

        def get(key: str, *args: object, **kwargs: object) -> bytes:
            if key.endswith(".idx"):
                self.keys.append(key)
            return real(key, *args, **kwargs)  # type: ignore[arg-type]

        store.backend.get = get  # type: ignore[method-assign]


def test_a_reader_reads_the_newest_idx_first_and_only_as_far_as_it_needs(tmp_path: Path) -> None:
    store, files = tmp_path / "store", tmp_path / "files"
    _sessions(store, files, 0, 8)  # eight loose .idx, under the compaction threshold
    assert len(list_indexes(Store.open_existing(store).backend).idx) == 8
    for which, most in ((7, 1), (0, 8)):  # the newest needs one .idx; the oldest all of them, and is found
        s = Store.open_existing(store)
        counted = _CountingIdx(s)
        api = objstore.Api(store=s, entity="e", project="p")
        out = api.artifact(f"m{which}:latest").download(str(tmp_path / "out" / str(which)))
        assert (Path(out) / f"m{which}.bin").read_bytes() == (files / f"m{which}.bin").read_bytes()
        assert len(counted.keys) <= most and len(set(counted.keys)) == len(counted.keys), counted.keys


def test_a_writer_reads_pending_idx_files_only_when_copies_would_cost_more(tmp_path: Path) -> None:
    store, files = tmp_path / "store", tmp_path / "files"
    _sessions(store, files, 0, 6)
    # A small new file: called new without reading a single .idx.
    s = Store.open_existing(store)
    counted = _CountingIdx(s)
    with objstore.init(project="p", entity="e", store=s) as run:
        (files / "small.bin").write_bytes(os.urandom(30_000))
        run.log_model(path=str(files / "small.bin"), name="small")
    assert counted.keys == []
    # Content already stored, more chunks than the budget: the pending .idx are read
    # and it deduplicates (nothing new stored).
    big = files / "big.bin"
    big.write_bytes(np.random.default_rng(99).bytes(12 << 20))
    with objstore.init(project="p", entity="e", store=str(store)) as run:
        run.log_model(path=str(big), name="big")
    s = Store.open_existing(store)
    with objstore.init(project="p", entity="e", store=s) as run:
        (files / "again.bin").write_bytes(big.read_bytes())
        run.log_model(path=str(files / "again.bin"), name="again")
    assert s.odb.new_bytes == 0
    assert fsck(Store.open_existing(store)).ok


def test_a_lazy_reader_whose_pending_idx_files_were_merged_lists_again(tmp_path: Path) -> None:
    store, files = tmp_path / "store", tmp_path / "files"
    _sessions(store, files, 0, 5)
    reader = Store.open_existing(store)
    reader.odb.refresh(lazy=True)  # lists the five .idx, reads none
    assert len(reader.odb.index) == 0
    compact(Store.open_existing(store).backend)  # they are gone now, merged into an index file
    api = objstore.Api(store=reader, entity="e", project="p")
    for i in range(5):
        out = api.artifact(f"m{i}:latest").download(str(tmp_path / "out" / str(i)))
        assert (Path(out) / f"m{i}.bin").read_bytes() == (files / f"m{i}.bin").read_bytes()
    assert len(reader.odb.index.files) == 1 and not reader.odb.damaged_packs
