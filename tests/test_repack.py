"""Repacking small packs, and compaction with repacking racing writers and gc.

What must hold: the many small packs short sessions leave end up as few full
ones; every chunk copied is checked against its id first (a damaged pack is left
alone, never copied or marked); the small packs are only marked, so a reader
holding an index that names them keeps reading them, and gc deletes them after
its grace period; under 8 writers, a compaction+repack loop and a gc loop (on
the real SeaweedFS server and on a local directory) no version, alias or chunk
is lost, every version reads back as it was logged, and fsck is clean.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import msgpack
import pytest
from cli_helpers import run_cli
from test_chunkindex import _read_all, _sessions

import objstore
from objstore.maintenance.fsck import fsck
from objstore.maintenance.gc import collect_garbage
from objstore.maintenance.repack import repack_small_packs
from objstore.model.store import Store
from objstore.storage.chunkindex import list_indexes, marked_packs
from objstore.storage.ids import Kind, hash_bytes
from objstore.storage.keys import idx_key, pack_key
from objstore.storage.packs import PackBuilder, encode_idx


def _packs(store: Path) -> set[str]:
    return {p.name[:-5] for p in (store / "packs").glob("*.pack")}


def test_small_packs_are_copied_marked_then_deleted_by_gc(tmp_path: Path) -> None:
    store, files = tmp_path / "store", tmp_path / "files"
    _sessions(store, files, 0, 12)
    small = _packs(store)
    assert len(small) >= 12
    reader = Store.open_existing(store)
    reader.odb.refresh()  # holds an index naming only the small packs
    r = run_cli(store, "maintenance", "--json").json()
    assert isinstance(r, dict) and r["repack"]["packs_marked"] == len(small) and r["repack"]["packs_written"] == 1
    backend = Store.open_existing(store).backend
    assert marked_packs(backend) == small and _packs(store) > small  # copied first, only marked
    assert not list_indexes(backend).idx  # the marked packs' entries stay in an index file, not loose .idx
    _read_all(store, files, range(12))
    report = collect_garbage(Store.open_existing(store), grace_seconds=0)
    assert report.packs_deleted == len(small)
    assert len(_packs(store)) == 1 and not marked_packs(backend)
    # The reader's index names only packs that are gone: it reloads and reads the copies.
    import objstore

    api = objstore.Api(store=reader, entity="e", project="p")
    for i in range(12):
        out = api.artifact(f"m{i}:latest").download(str(tmp_path / "old" / str(i)))
        assert (Path(out) / f"m{i}.bin").read_bytes() == (files / f"m{i}.bin").read_bytes()
    assert fsck(Store.open_existing(store)).ok
    # Nothing small is left to repack; the full pack is not rewritten.
    assert repack_small_packs(Store.open_existing(store)).packs_marked == 0


def test_gc_within_its_grace_period_keeps_repacked_packs(tmp_path: Path) -> None:
    store, files = tmp_path / "store", tmp_path / "files"
    _sessions(store, files, 0, 9)
    small = _packs(store)
    assert repack_small_packs(Store.open_existing(store)).packs_marked == len(small)
    assert collect_garbage(Store.open_existing(store), grace_seconds=3600).packs_deleted == 0
    assert small <= _packs(store)
    _read_all(store, files, range(9))


def test_a_pack_with_a_chunk_that_fails_its_id_is_neither_copied_nor_marked(tmp_path: Path) -> None:
    store, files = tmp_path / "store", tmp_path / "files"
    _sessions(store, files, 0, 8)
    s = Store.open_existing(store)
    # A pack whose own checksum holds (its writer meant it) but whose chunk does
    # not hash to the id it is stored under.
    good, bad = b"a chunk that is what it says", b"a chunk under another's id"
    forged_id = hash_bytes(Kind.CHUNK, b"something else")
    path = tmp_path / "forged.pack"
    with open(path, "wb") as out:
        b = PackBuilder(out)
        b.add(hash_bytes(Kind.CHUNK, good), 0, len(good), good)
        b.add(forged_id, 0, len(bad), bad)
        name = b.finish()
    s.backend.put_file_if_absent(pack_key(name), path)
    s.backend.put_if_absent(idx_key(name), encode_idx(name, b.index))
    report = repack_small_packs(Store.open_existing(store))
    assert report.packs_skipped == 1 and report.packs_marked == 8 and report.packs_written == 1
    assert name not in marked_packs(s.backend) and name in _packs(store)
    (copy,) = _packs(store) - marked_packs(s.backend) - {name}
    copied = {bytes(x).ljust(32, b"\0") for x in _pack_ids(store, copy)}
    assert forged_id.raw not in copied and hash_bytes(Kind.CHUNK, good).raw not in copied
    _read_all(store, files, range(8))


def test_fewer_small_packs_than_the_minimum_are_left_alone(tmp_path: Path) -> None:
    store, files = tmp_path / "store", tmp_path / "files"
    _sessions(store, files, 0, 3)
    report = repack_small_packs(Store.open_existing(store))
    assert report.small_packs == 3 and report.packs_marked == 0
    assert not marked_packs(Store.open_existing(store).backend)


def test_a_copy_identical_to_a_small_pack_does_not_mark_it(tmp_path: Path) -> None:
    """Pack B's chunks all in pack A, A's records in id order: the copy is A byte
    for byte, whichever comes first. A is then its own copy and stays unmarked."""
    store = tmp_path / "store"
    s = Store.open(str(store))
    x, y = sorted((b"chunk one", b"chunk two"), key=lambda raw: hash_bytes(Kind.CHUNK, raw).raw)
    names = []
    for chunks in ((x, y), (x,)):
        path = tmp_path / f"p{len(names)}.pack"
        with open(path, "wb") as out:
            b = PackBuilder(out)
            for raw in chunks:
                b.add(hash_bytes(Kind.CHUNK, raw), 0, len(raw), raw)
            names.append(b.finish())
        s.backend.put_file_if_absent(pack_key(names[-1]), path)
        s.backend.put_if_absent(idx_key(names[-1]), encode_idx(names[-1], b.index))
    report = repack_small_packs(Store.open_existing(store), min_packs=2)
    assert report.packs_written == 1 and report.packs_marked == 1
    assert marked_packs(s.backend) == {names[1]}
    assert _packs(store) == set(names)


def _pack_ids(store: Path, name: str) -> list[bytes]:
    from objstore.storage.packs import read_pack_index

    return list(read_pack_index((store / "packs" / f"{name}.pack").read_bytes(), name)["id"])


def test_repack_mark_is_a_gc_mark(tmp_path: Path) -> None:
    # gc reads a mark's time from the listing, not its body; the body says who made it.
    store, files = tmp_path / "store", tmp_path / "files"
    _sessions(store, files, 0, 8)
    repack_small_packs(Store.open_existing(store))
    marks = list((store / "gc" / "marked").iterdir())
    assert len(marks) == 8
    assert msgpack.unpackb(marks[0].read_bytes())["by"] == "repack"


# -- racing writers and gc --------------------------------------------------------

# One process merging indexes and repacking small packs in a loop, as cron'd
# `objstore maintenance` runs would, while the writers and gc of test_concurrency run.
MAINTAIN = textwrap.dedent("""
    import sys, time
    from objstore.maintenance.repack import repack_small_packs
    from objstore.model.store import Store
    store, deadline = sys.argv[1], float(sys.argv[2])
    runs = marked = 0
    # Once at least (on a loaded machine starting may take the whole time), and on
    # until something is marked: writers repack by themselves too, and may have
    # taken every small pack so far.
    while runs == 0 or time.time() < deadline or (marked == 0 and time.time() < deadline + 30):
        s = Store.open_existing(store)
        s.odb.compact_index()
        marked += repack_small_packs(s, min_packs=2).packs_marked
        s.odb.compact_index()
        runs += 1
        time.sleep(0.2)
    print("maintenance runs", runs, "packs marked", marked, flush=True)
""")


def _race(store: str, tmp_path: Path, seconds: float) -> None:
    from test_concurrency import _run

    Store.open(store).close()
    deadline = time.time() + seconds
    maintain = subprocess.Popen([sys.executable, "-c", MAINTAIN, store, str(deadline)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # 8 writers (versions, links, aliases), gc looping with a 1 s grace, fsck looping;
    # then every acknowledged version, alias and its content is checked (see test_concurrency).
    _run(store, tmp_path, writers=8, seconds=seconds, grace=1.0)
    out, err = maintain.communicate(timeout=300)
    assert maintain.returncode == 0, err[-3000:]
    marked = int(out.split()[-1])
    assert marked > 0, out  # packs really were repacked while the others ran
    time.sleep(1.1)
    report = collect_garbage(Store.open_existing(store), grace_seconds=1.0)  # deletes what the last repacks marked
    assert report.held is None
    s = Store.open_existing(store)
    report = fsck(s)
    assert report.ok, [p.message for p in report.problems]
    listing = list_indexes(s.backend)
    for name in marked_packs(s.backend) & set(listing.packs):
        assert name in listing.packs  # a marked pack is still stored until gc's second phase
    import objstore
    from objstore.model.versions import list_collections, list_versions

    api = objstore.Api(store=s, entity="e", project="p")
    n = 0
    for ent, proj in (("e", "p"), ("e", "model-registry")):
        for coll in list_collections(s, ent, proj):
            for index, _ in list_versions(s, coll):
                # download checks every chunk against its id and each file against its digest
                api.artifact(f"{coll.entity}/{coll.project}/{coll.name}:v{index}").download(tmp_path / "all" / str(n))
                n += 1
    assert n >= 16


def test_compaction_and_repack_racing_8_writers_and_gc_local(tmp_path: Path) -> None:
    _race(str(tmp_path / "store"), tmp_path, float(os.environ.get("OBJSTORE_CONCURRENCY_SECONDS", "12")))


@pytest.mark.s3
def test_compaction_and_repack_racing_8_writers_and_gc_s3(s3_bucket_url: str, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _race(s3_bucket_url, tmp_path, float(os.environ.get("OBJSTORE_CONCURRENCY_SECONDS", "12")))


@pytest.mark.s3
@pytest.mark.slow
def test_compaction_and_repack_racing_8_writers_and_gc_s3_long(s3_bucket_url: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _race(s3_bucket_url, tmp_path, 120.0)


# -- the compaction threshold, a store setting ---------------------------------

def test_the_compaction_threshold_is_a_store_setting_the_env_overrides(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OBJSTORE_INDEX_COMPACT_THRESHOLD", raising=False)
    store, files = tmp_path / "store", tmp_path / "files"
    Store.open(str(store)).close()
    unset = (store / "config").read_bytes()
    r = run_cli(store, "maintenance", "--compact-threshold", "4", "--json").json()
    assert r == {"index_compact_threshold": 4, "effective": 4}
    assert Store.open_existing(store).config.index_compact_threshold == 4
    _sessions(store, files, 0, 6)
    listing = list_indexes(Store.open_existing(store).backend)
    assert listing.files and len(listing.idx) < 4  # writers merged past the store's 4, not the default 64
    # The environment overrides the store's setting (0: never).
    monkeypatch.setenv("OBJSTORE_INDEX_COMPACT_THRESHOLD", "0")
    _sessions(store, files, 6, 6)
    assert len(list_indexes(Store.open_existing(store).backend).idx) >= 6
    monkeypatch.delenv("OBJSTORE_INDEX_COMPACT_THRESHOLD")
    run_cli(store, "maintenance", "--compact-threshold", "default")
    assert (store / "config").read_bytes() == unset  # unset: the config is byte for byte as before
    assert run_cli(store, "maintenance", "--compact-threshold", "lots", check=False).code != 0
    _read_all(store, files, range(12))


def test_a_threshold_in_digits_int_refuses_is_a_clear_error_or_ignored(tmp_path: Path) -> None:
    """'①' is a digit to str.isdigit() but not to int(): --compact-threshold ① and the variable
    OBJSTORE_INDEX_COMPACT_THRESHOLD=② each ended a command with "unexpected ValueError" (before
    the fix). The option is refused as 'lots' is; the variable is ignored as any non-number is."""
    store = tmp_path / "store"
    (tmp_path / "f").write_bytes(b"weights")
    Store.open(str(store)).close()
    refused = run_cli(store, "maintenance", "--compact-threshold", "\u2460", check=False)
    assert refused.code != 0 and "not a number" in refused.err and "unexpected" not in refused.err, refused.err
    logged = run_cli(store, "log-model", str(tmp_path / "f"), "--name", "m", "--project", "p",
                     env={"OBJSTORE_INDEX_COMPACT_THRESHOLD": "\u2461"}, check=False)
    assert logged.code == 0, logged.err


def test_a_config_with_an_impossible_threshold_is_damaged(tmp_path: Path) -> None:
    from objstore.errors import CorruptObject

    store = tmp_path / "store"
    Store.open(str(store)).close()
    d = msgpack.unpackb((store / "config").read_bytes())
    for bad in (-1, "64", 10**9, True):
        (store / "config").write_bytes(msgpack.packb({**d, "index_compact_threshold": bad}))
        with pytest.raises(CorruptObject, match="index_compact_threshold"):
            Store.open_existing(store)


def test_writers_still_deduplicate_against_the_copies_of_repacked_packs(tmp_path: Path) -> None:
    """The small packs are marked (a writer must not count a chunk only they hold),
    but every chunk of theirs has a copy in a pack that is not: still a hit."""
    from objstore.storage.ids import ObjectId

    store, files = tmp_path / "store", tmp_path / "files"
    _sessions(store, files, 0, 10)
    run_cli(store, "maintenance")
    s = Store.open_existing(store)
    (copy,) = _packs(store) - marked_packs(s.backend)
    ids = [ObjectId(bytes(x).ljust(32, b"\0")) for x in _pack_ids(store, copy)]
    assert all(s.odb.has_chunks(ids))
    assert s.odb.marked_packs  # it knows the small packs are marked


def test_gc_racing_a_writers_automatic_step_loses_none_of_its_chunks(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The interleaving that lost a chunk beside gc in CI (stop 22), made deterministic.

    The tenth session's writer passes the compaction threshold, so it merges the
    index and repacks small packs, its own new pack among them (unreferenced until
    its version ref exists). On a loaded machine that step takes seconds; gc, run by
    another process with a 1 s grace meanwhile, marks what is unreachable and deletes
    what was marked. Here gc runs twice at the very moment the step runs, told that
    2 and 4 seconds have passed (``now``). The step must come after the writer's refs,
    so gc sees the version and keeps its chunks; when it ran inside ``flush()``
    (before the refs), gc deleted the writer's pack and the version named chunks in
    no pack."""
    import objstore.model.store as store_module

    monkeypatch.setenv("OBJSTORE_INDEX_COMPACT_THRESHOLD", "10")
    store, files = tmp_path / "store", tmp_path / "files"
    _sessions(store, files, 0, 9)
    real_repack = store_module.repack
    gc_runs: list[int] = []

    def repack_with_gc_beside(*args: object, **kwargs: object) -> object:
        report = real_repack(*args, **kwargs)  # type: ignore[arg-type]
        for seconds in (2.0, 4.0):  # the time a repack takes under load, as gc sees it
            collect_garbage(Store.open_existing(store), grace_seconds=1.0, now=time.time() + seconds)
            gc_runs.append(1)
        return report

    monkeypatch.setattr(store_module, "repack", repack_with_gc_beside)
    # The tenth session logs a model above SMALL_PACK_BYTES: its pack is no small
    # pack, so no repack copy of it exists either.
    big = files / "big.bin"
    big.write_bytes(os.urandom(5 * 1024 * 1024))
    with objstore.init(project="p", entity="e", store=str(store)) as run:
        logged = run.log_model(path=str(big), name="big")
    assert len(gc_runs) == 2  # the automatic step really ran
    report = fsck(Store.open_existing(store))
    assert report.ok, [p.message for p in report.problems]
    out = objstore.Api(store=str(store), entity="e", project="p").artifact(f"big:{logged.version}").download(str(tmp_path / "out"))
    assert (Path(out) / "big.bin").read_bytes() == big.read_bytes()
    _read_all(store, files, range(9))


def test_a_writer_past_the_compaction_threshold_repacks_small_packs_too(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The automatic step a writer takes past the threshold merges the .idx files and
    then repacks (a pack's worth of) small packs, two-phase as ``maintenance`` does."""
    monkeypatch.setenv("OBJSTORE_INDEX_COMPACT_THRESHOLD", "10")
    store, files = tmp_path / "store", tmp_path / "files"
    _sessions(store, files, 0, 10)  # the tenth session compacts, then repacks
    backend = Store.open_existing(store).backend
    marked = marked_packs(backend)
    assert len(marked) >= 8, marked
    for name in marked:
        assert msgpack.unpackb(backend.get(f"gc/marked/{name}"))["by"] == "repack"
    listing = list_indexes(backend)
    assert len(listing.idx) <= 1 and listing.files  # only the copy's .idx is loose
    assert len(_packs(store)) == 10 + 1  # copied first, only marked
    _read_all(store, files, range(10))
    assert collect_garbage(Store.open_existing(store), grace_seconds=0).packs_deleted == len(marked)
    _read_all(store, files, range(10))
    assert fsck(Store.open_existing(store)).ok


def test_a_bounded_repack_copies_at_most_its_share(tmp_path: Path) -> None:
    """A writer's automatic step is bounded in packs (requests) and bytes, whatever the store holds."""
    from objstore.storage.repack import repack

    store, files = tmp_path / "store", tmp_path / "files"
    _sessions(store, files, 0, 12)
    backend = Store.open_existing(store).backend
    assert repack(backend, min_packs=2, max_packs=3).packs_marked == 3
    assert repack(backend, min_packs=2, max_bytes=100_000).packs_marked == 2  # ~40 KB packs
    _read_all(store, files, range(12))


def test_a_writers_automatic_repack_leaves_its_own_fresh_pack_alone(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer that passes the threshold repacks small packs after its refs; its
    own pack of this session is one of the smallest. Marked, its chunks are no
    dedup hit for the rest of the session (a marked pack is skipped), so logging
    the same file again stored them a second time. Counted in stored bytes: the
    second log of the same content stores nothing, and the writer's pack is unmarked."""
    monkeypatch.setenv("OBJSTORE_INDEX_COMPACT_THRESHOLD", "10")
    store, files = tmp_path / "store", tmp_path / "files"
    _sessions(store, files, 0, 9)
    again = files / "again.bin"
    again.write_bytes(os.urandom(300_000))
    with objstore.init(project="p", entity="e", store=str(store)) as run:
        run.log_model(path=str(again), name="first")
        odb = run.store.odb  # type: ignore[attr-defined]
        assert marked_packs(odb.backend), "the automatic repack ran after the first version's refs"
        before = odb.new_bytes
        run.log_model(path=str(again), name="second")  # the same bytes, another collection
        stored_again = odb.new_bytes - before
    assert stored_again == 0
    s = Store.open_existing(store)
    own = {n for n in _packs(store) if n not in marked_packs(s.backend)}
    assert len(own) == 2  # the writer's pack (kept, not copied) and the repack's copy
    assert fsck(s).ok
    _read_all(store, files, range(9))
