"""fsck finds and names damage; gc frees exactly the unreachable and nothing a writer needs."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from cli_helpers import OBJSTORE, random_layers, run_cli, sha, write_safetensors

import objstore
from objstore.api.naming import default_entity
from objstore.maintenance.gc import collect_garbage
from objstore.model.store import Store
from objstore.storage.ids import Kind, ObjectId, hash_bytes
from objstore.storage.keys import idx_key
from objstore.storage.packs import decode_idx

ENTITY = default_entity()
HOUR = 3600


def _packs(store: Path) -> set[str]:
    return {p.name[:-5] for p in (store / "packs").glob("*.pack")}


def _age(root: Path, seconds: float) -> None:
    """Pretend everything under ``root`` was written ``seconds`` ago."""
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = Path(dirpath, name)
            st = p.stat()
            os.utime(p, (st.st_atime - seconds, st.st_mtime - seconds))


def test_fsck_names_only_the_version_a_flipped_byte_breaks(tmp_path: Path) -> None:
    store = tmp_path / "store"
    run_cli(store, "init")
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    write_safetensors(a, random_layers(11, prefix="enc"))
    write_safetensors(b, random_layers(22, prefix="dec"))
    run_cli(store, "log-model", str(a), "--name", "alpha")
    packs_after_a = _packs(store)
    run_cli(store, "log-model", str(b), "--name", "beta")
    (b_pack,) = _packs(store) - packs_after_a
    run_cli(store, "link-model", str(b), "Decoder", "--name", "beta")

    opened = Store.open_existing(store)
    index = decode_idx(opened.backend.get(idx_key(b_pack)), b_pack)
    entry = max(index, key=lambda e: int(e["raw_len"]))  # a tensor chunk, not a header
    path = store / "packs" / f"{b_pack}.pack"
    data = bytearray(path.read_bytes())
    data[int(entry["offset"]) + 100] ^= 0x01
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))

    r = run_cli(store, "fsck", check=False)
    assert r.code == 3, r.out + r.err
    assert f"{ENTITY}/uncategorized/beta:v0" in r.out and f"{ENTITY}/model-registry/Decoder:v0" in r.out
    assert "alpha" not in r.out
    report = run_cli(store, "fsck", "--json", check=False).json()
    assert report["ok"] is False
    assert report["damaged_versions"] == sorted([f"{ENTITY}/model-registry/Decoder:v0", f"{ENTITY}/uncategorized/beta:v0"])
    chunk_problems = [p for p in report["problems"] if p["kind"] == "chunk"]
    assert [p["object"] for p in chunk_problems] == [bytes(entry["id"]).ljust(32, b"\0").hex()]
    # the undamaged model still comes out whole; the damaged one is refused, not returned wrong
    assert sha(run_cli(store, "use-model", "alpha", "--root", str(tmp_path / "o1")).out.strip()) == sha(a)
    bad = run_cli(store, "use-model", "beta", "--root", str(tmp_path / "o2"), check=False)
    assert bad.code == 1 and "does not hash" in bad.err


def test_fsck_reports_a_missing_object_and_a_dangling_ref(tmp_path: Path) -> None:
    store = tmp_path / "store"
    m = tmp_path / "m.safetensors"
    write_safetensors(m, random_layers(5, layers=2))
    run_cli(store, "init")
    run_cli(store, "log-model", str(m), "--name", "gamma")
    tree = run_cli(store, "show", "gamma", "--json").json()["digest"]
    (store / "objects" / tree[:2] / tree[2:]).unlink()
    report = run_cli(store, "fsck", "--json", check=False).json()
    assert report["damaged_versions"] == [f"{ENTITY}/uncategorized/gamma:v0"]
    assert any(p["kind"] == "missing" and p["object"] == tree for p in report["problems"])


def test_gc_frees_a_deleted_collection_keeps_shared_bytes_and_a_concurrent_version(tmp_path: Path) -> None:
    store = tmp_path / "store"
    run_cli(store, "init")
    shared = random_layers(31, layers=2, prefix="shared")
    keep, doomed = tmp_path / "keep.safetensors", tmp_path / "doomed.safetensors"
    write_safetensors(keep, {**shared, **random_layers(32, layers=2, prefix="keep")})
    write_safetensors(doomed, {**shared, **random_layers(33, layers=4, prefix="doomed")})
    run_cli(store, "log-model", str(keep), "--name", "keep")
    run_cli(store, "log-model", str(doomed), "--name", "doomed")
    du_before = run_cli(store, "du", "--json").json()
    doomed_unique = 4 * 256 * 256 * 2  # its own four tensors; the shared two stay
    run_cli(store, "delete", "doomed", "--yes")
    assert run_cli(store, "log", "doomed", check=False).code == 1

    # Pretend all of that is old, then mark: nothing is deleted by the first gc.
    _age(store, 2 * HOUR)
    first = run_cli(store, "gc", "--grace", "600", "--json").json()
    assert first["packs_marked"] + first["packs_rewritten"] >= 1 and first["packs_deleted"] == 0
    assert first["objects_marked"] >= 3 and first["objects_deleted"] == 0
    _age(store / "gc", 2 * HOUR)  # the marks are past the grace period now

    # A writer logs a new model while gc runs repeatedly.
    fresh = tmp_path / "fresh.safetensors"
    write_safetensors(fresh, random_layers(34, layers=8, shape=(512, 512), prefix="fresh"))
    env = {k: v for k, v in os.environ.items() if k not in ("OBJSTORE_DIR", "OBJSTORE_PROJECT")}
    packs_before_writer = _packs(store)
    writer = subprocess.Popen([str(OBJSTORE), "--store", str(store), "log-model", str(fresh), "--name", "fresh"],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = []
    while writer.poll() is None or not runs:
        runs.append(run_cli(store, "gc", "--grace", "600", "--json").json())
    out, err = writer.communicate()
    assert writer.returncode == 0, err
    runs.append(run_cli(store, "gc", "--grace", "600", "--json").json())
    assert sum(r["packs_deleted"] for r in runs) >= 1 and sum(r["objects_deleted"] for r in runs) >= 3

    assert run_cli(store, "fsck").code == 0
    got = run_cli(store, "use-model", "fresh", "--root", str(tmp_path / "f")).out.strip()
    assert sha(got) == sha(fresh)
    got = run_cli(store, "use-model", "keep", "--root", str(tmp_path / "k")).out.strip()
    assert sha(got) == sha(keep)
    du_after = run_cli(store, "du", "--json").json()
    fresh_pack_bytes = sum((store / "packs" / f"{p}.pack").stat().st_size for p in _packs(store) - packs_before_writer)
    # pack bytes: before + what fresh added - what gc removed; gc removed doomed's own tensors only
    freed = du_before["pack_bytes"] + fresh_pack_bytes - du_after["pack_bytes"]
    assert doomed_unique <= freed <= doomed_unique * 1.02 + 8192
    assert sum(r["bytes_freed"] for r in runs) >= doomed_unique
    shared_bytes = 2 * 256 * 256 * 2
    assert du_before["unique_bytes"] == keep.stat().st_size + doomed.stat().st_size - shared_bytes
    assert du_after["logical_bytes"] == du_after["unique_bytes"] == keep.stat().st_size + fresh.stat().st_size


def test_gc_grace_protects_chunks_not_yet_in_a_version(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "store")
    payload = np.random.default_rng(7).bytes(100_000)
    cid = hash_bytes(Kind.CHUNK, payload)
    store.odb.add_chunk(cid, payload)
    store.odb.flush()  # a writer's pack, its version not written yet
    (pack,) = _packs(tmp_path / "store")
    report = collect_garbage(store, grace_seconds=600)
    assert report.packs_marked == 0 and pack in _packs(tmp_path / "store")
    report = collect_garbage(store, grace_seconds=0, dry_run=True)
    assert report.packs_deleted == 1 and pack in _packs(tmp_path / "store")
    report = collect_garbage(store, grace_seconds=0)
    assert report.packs_deleted == 1 and pack not in _packs(tmp_path / "store")


def test_gc_keeps_a_marked_pack_a_writer_reused(tmp_path: Path) -> None:
    store = tmp_path / "store"
    m = tmp_path / "m.safetensors"
    write_safetensors(m, random_layers(41, layers=2))
    run_cli(store, "init")
    run_cli(store, "log-model", str(m), "--name", "one")
    run_cli(store, "delete", "one", "--yes")
    _age(store, 2 * HOUR)
    # A writer that loaded the index before gc marked the pack dedups against it...
    writer = objstore.init(project="p", store=Store.open_existing(store))
    writer.store.odb.refresh()
    # Its first dedup question (a chunk it has) reads gc's marks: none yet.
    stored, _ = next(writer.store.odb.index.iter_entries())
    assert writer.store.odb.has_chunks([ObjectId(stored)]) == [True]
    assert run_cli(store, "gc", "--grace", "600", "--json").json()["packs_marked"] == 1
    _age(store / "gc", 2 * HOUR)
    art = writer.log_model(str(m), name="two")
    writer.finish()
    assert art.new_bytes < 1024  # it stored no tensor bytes of its own
    # ...so the next gc finds the marked pack reachable again and keeps it.
    second = run_cli(store, "gc", "--grace", "600", "--json").json()
    assert second["packs_deleted"] == 0 and second["packs_unmarked"] == 1
    assert run_cli(store, "fsck").code == 0
    assert sha(run_cli(store, "use-model", "p/two", "--root", str(tmp_path / "o")).out.strip()) == sha(m)


def test_a_writer_that_sees_a_mark_stores_its_own_copy(tmp_path: Path) -> None:
    store = tmp_path / "store"
    m = tmp_path / "m.safetensors"
    write_safetensors(m, random_layers(42, layers=2))
    run_cli(store, "init")
    run_cli(store, "log-model", str(m), "--name", "one")
    run_cli(store, "delete", "one", "--yes")
    _age(store, 2 * HOUR)
    assert run_cli(store, "gc", "--grace", "600", "--json").json()["packs_marked"] == 1
    _age(store / "gc", 2 * HOUR)
    (marked,) = os.listdir(store / "gc" / "marked")
    r = run_cli(store, "log-model", str(m), "--name", "two", "--json").json()
    assert r["new_bytes"] >= 2 * 256 * 256 * 2  # the marked pack's chunks do not count as stored
    # Same chunks in the same order make the same pack: storing it again lifts the mark.
    assert os.listdir(store / "gc" / "marked") == [] and marked in _packs(store)
    second = run_cli(store, "gc", "--grace", "600", "--json").json()
    assert second["packs_deleted"] == 0
    assert run_cli(store, "fsck").code == 0
    assert sha(run_cli(store, "use-model", "two", "--root", str(tmp_path / "o")).out.strip()) == sha(m)


def test_gc_rewrites_a_mostly_garbage_pack(tmp_path: Path) -> None:
    store = tmp_path / "store"
    run_cli(store, "init")
    layers = random_layers(51, layers=4)
    big, small = tmp_path / "big.safetensors", tmp_path / "small.safetensors"
    write_safetensors(big, layers)
    write_safetensors(small, {"layer0.weight": layers["layer0.weight"]})
    run_cli(store, "log-model", str(big), "--name", "big")
    run_cli(store, "log-model", str(small), "--name", "small")  # shares one of big's four tensors
    before = run_cli(store, "du", "--json").json()
    run_cli(store, "delete", "big", "--yes")
    report = run_cli(store, "gc", "--grace", "0", "--json").json()
    assert report["packs_rewritten"] == 1 and report["chunks_copied"] >= 1 and report["packs_deleted"] == 1
    after = run_cli(store, "du", "--json").json()
    # big's three unshared tensors are gone (stored compressed: a little under their raw size)
    assert before["stored_bytes"] - after["stored_bytes"] >= 0.9 * 3 * 256 * 256 * 2
    assert run_cli(store, "fsck").code == 0
    assert sha(run_cli(store, "use-model", "small", "--root", str(tmp_path / "o")).out.strip()) == sha(small)


def test_delete_refuses_a_collection_the_registry_links(tmp_path: Path) -> None:
    store = tmp_path / "store"
    m = tmp_path / "m.safetensors"
    write_safetensors(m, random_layers(61, layers=1))
    run_cli(store, "init")
    run_cli(store, "link-model", str(m), "Reg", "--name", "linked")
    r = run_cli(store, "delete", "linked", "--yes", check=False)
    assert r.code == 1 and "model-registry/Reg:v0" in r.err
    run_cli(store, "delete", f"{ENTITY}/model-registry/Reg", "--yes")
    run_cli(store, "delete", "linked", "--yes")
    assert run_cli(store, "ls", "--json").json()["projects"] == []


def _store_with_a_pack_gc_is_deleting(tmp_path: Path) -> tuple[Path, str]:
    """A store whose second session's pack is unreachable and marked by gc's phase 1,
    as gc's phase 2 finds it: the store's path and that pack's name."""
    import msgpack

    from objstore.model.deletion import delete_collection
    from objstore.model.names import CollectionPath
    from objstore.storage.keys import marked_pack_key

    store_path = tmp_path / "store"
    keep, doomed = tmp_path / "keep.bin", tmp_path / "doomed.bin"
    keep.write_bytes(os.urandom(50_000))
    doomed.write_bytes(os.urandom(50_000))
    with objstore.init(entity="e", project="p", store=store_path) as run:
        run.log_model(str(keep), name="keep")
    before = _packs(store_path)
    with objstore.init(entity="e", project="p", store=store_path) as run:
        run.log_model(str(doomed), name="doomed")
    (doomed_pack,) = _packs(store_path) - before
    with Store.open_existing(store_path) as store:
        delete_collection(store, CollectionPath("e", "p", "doomed"))
        store.backend.put_if_absent(marked_pack_key(doomed_pack), msgpack.packb({"when": 0.0}))
    return store_path, doomed_pack


def test_fsck_beside_gc_deleting_a_pack_reports_no_damage(tmp_path: Path) -> None:
    """gc deletes a marked pack's .idx, then the pack, then the mark: an fsck that
    reads between the first two finds a pack without its .idx. That pack is being
    deleted, not damaged (seen as a false 'index is damaged' in the compaction race)."""
    from objstore.maintenance.fsck import fsck

    store_path, doomed_pack = _store_with_a_pack_gc_is_deleting(tmp_path)
    with Store.open_existing(store_path) as store:
        backend, real_get = store.backend, store.backend.get

        def gc_deletes_first(key: str, *args: object, **kwargs: object) -> bytes:
            # The interleaving: fsck listed the .idx; gc's phase 2 deletes it (its
            # first step) just before fsck reads it, and has not deleted the pack yet.
            if key == idx_key(doomed_pack):
                backend.delete(key)
            return real_get(key, *args, **kwargs)  # type: ignore[arg-type]

        backend.get = gc_deletes_first  # type: ignore[method-assign]
        report = fsck(store)
    assert report.ok, [p.message for p in report.problems]


def test_fsck_beside_gc_finishing_a_pack_deletion_reports_no_damage(tmp_path: Path) -> None:
    """The same race one step later: fsck finds the .idx gone and the pack still
    there, then gc deletes the pack and its mark before fsck asks for the mark. A
    gone mark only says 'not being deleted' if the pack was looked at after it, so
    fsck must ask for the mark first (seen as a false 'index is damaged' in CI's
    compaction race)."""
    from objstore.maintenance.fsck import fsck
    from objstore.storage.keys import marked_pack_key, pack_key

    store_path, doomed_pack = _store_with_a_pack_gc_is_deleting(tmp_path)
    with Store.open_existing(store_path) as store:
        backend, real_get, real_stat = store.backend, store.backend.get, store.backend.stat

        def gc_deletes_the_idx(key: str, *args: object, **kwargs: object) -> bytes:
            if key == idx_key(doomed_pack):
                backend.delete(key)
            return real_get(key, *args, **kwargs)  # type: ignore[arg-type]

        def gc_finishes_after_the_pack_is_seen(key: str) -> object:
            info = real_stat(key)
            if key == pack_key(doomed_pack):  # seen; now gc deletes the pack, then the mark
                backend.delete(key)
                backend.delete(marked_pack_key(doomed_pack))
            return info

        backend.get = gc_deletes_the_idx  # type: ignore[method-assign]
        backend.stat = gc_finishes_after_the_pack_is_seen  # type: ignore[method-assign,assignment]
        report = fsck(store)
    assert report.ok, [p.message for p in report.problems]


def _store_with_a_marked_pack_a_version_reuses(tmp_path: Path) -> tuple[Path, str, bytes]:
    """A store whose one pack gc marked while unreachable and a writer then reused
    (as in test_gc_keeps_a_marked_pack_a_writer_reused, in-process), its entries
    in an index file, plus an unfinished writer's pack whose .idx is loose: the
    store, the marked pack and the reused file's bytes."""
    from objstore.model.deletion import delete_collection
    from objstore.model.names import CollectionPath

    store = tmp_path / "store"
    m = tmp_path / "m.bin"
    m.write_bytes(os.urandom(200_000))
    with objstore.init(entity="e", project="p", store=store) as run:
        run.log_model(str(m), name="one")
    with Store.open_existing(store) as s:
        s.odb.compact_index()  # its .idx merged into an index file
        delete_collection(s, CollectionPath("e", "p", "one"))
    _age(store, 2 * HOUR)
    writer = objstore.init(entity="e", project="p", store=Store.open_existing(store))
    writer.store.odb.refresh()
    stored, _ = next(writer.store.odb.index.iter_entries())
    assert writer.store.odb.has_chunks([ObjectId(stored)]) == [True]  # seen unmarked
    with Store.open_existing(store) as s:
        assert collect_garbage(s, grace_seconds=600).packs_marked == 1
    _age(store / "gc", 2 * HOUR)
    (marked,) = os.listdir(store / "gc" / "marked")
    assert writer.log_model(str(m), name="two").new_bytes < 1024  # reused the marked pack's chunks
    writer.finish()
    with Store.open_existing(store) as s:  # chunks of a version not written yet
        for i in range(12):
            payload = os.urandom(1000 + i)
            s.odb.add_chunk(hash_bytes(Kind.CHUNK, payload), payload)
        s.odb.flush()
    return store, marked, m.read_bytes()


def test_gc_never_deletes_a_marked_pack_whose_index_a_compaction_merged_away_meanwhile(tmp_path: Path) -> None:
    """gc lists packs/, then reads the index files it listed. A compaction that
    merges the one covering a marked pack in between (a writer's, maintenance's)
    left gc without that pack's index, and gc deleted it unchecked (as if it
    held nothing needed): the version reusing the pack lost every chunk ('chunk
    … is in no pack', issue 13's repack race). gc now reads the index files
    listed since, and never deletes a pack whose index it could not read."""
    from objstore.maintenance.fsck import fsck
    from objstore.storage.chunkindex import CompactReport, compact
    from objstore.storage.keys import PACKS

    store_path, marked, content = _store_with_a_marked_pack_a_version_reuses(tmp_path)
    with Store.open_existing(store_path) as store, Store.open_existing(store_path) as other:
        real_iter = store.backend.iter_prefix
        merged: list[CompactReport] = []

        def compaction_after_the_listing(prefix: str) -> object:
            listed = list(real_iter(prefix))
            if prefix == PACKS and not merged:
                merged.append(compact(other.backend))  # another process replaces the index file gc just listed
            return iter(listed)

        store.backend.iter_prefix = compaction_after_the_listing  # type: ignore[method-assign,assignment]
        report = collect_garbage(store, grace_seconds=600)
    assert merged and merged[0].files_merged == 1
    # It read the index file written meanwhile: the pack is reachable again, so it stays, unmarked.
    assert report.packs_deleted == 0 and report.packs_unmarked == 1 and marked in _packs(store_path)
    with Store.open_existing(store_path) as store:
        assert fsck(store).ok
        art = objstore.Api(store=store, entity="e", project="p").artifact("two:v0")
        out = art.download(tmp_path / "out")
    assert (Path(out) / "m.bin").read_bytes() == content


def test_gc_never_deletes_a_marked_pack_whose_index_is_unreadable(tmp_path: Path) -> None:
    """The same hole without a race: a marked pack whose index gc cannot read
    (its entries only in an index file that is damaged) is left for fsck, not deleted."""
    from objstore.storage.chunkindex import list_indexes
    from objstore.storage.keys import index_file_key

    store_path, marked, _ = _store_with_a_marked_pack_a_version_reuses(tmp_path)
    with Store.open_existing(store_path) as store:
        (name,) = list_indexes(store.backend).files
    path = store_path / index_file_key(name)
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with Store.open_existing(store_path) as store:
        assert collect_garbage(store, grace_seconds=600).packs_deleted == 0
    assert marked in _packs(store_path)


def test_fsck_beside_two_compactions_in_a_row_reports_no_damage(tmp_path: Path) -> None:
    """fsck finds a pack's listed .idx gone (a compaction merged it into an index
    file) and lists the index files again; a second compaction merges that new
    file away before fsck reads it. fsck lists again rather than calling the
    index damaged (seen as a false 'index of pack … is damaged' in
    test_compaction_racing_writers_and_gc_local once writers repacked)."""
    from objstore.maintenance.fsck import fsck
    from objstore.storage.chunkindex import CompactReport, compact
    from objstore.storage.keys import PACKS

    store_path = tmp_path / "store"
    model = tmp_path / "m.bin"
    model.write_bytes(os.urandom(50_000))
    with objstore.init(entity="e", project="p", store=store_path) as run:
        run.log_model(str(model), name="m")
    (pack,) = _packs(store_path)
    merged: list[CompactReport] = []
    with Store.open_existing(store_path) as store, Store.open_existing(store_path) as other:
        real_get, real_iter = store.backend.get, store.backend.iter_prefix

        def first_compaction(key: str, *args: object, **kwargs: object) -> bytes:
            if key == idx_key(pack) and not merged:
                merged.append(compact(other.backend))  # the .idx fsck listed goes into an index file
            return real_get(key, *args, **kwargs)  # type: ignore[arg-type]

        def second_compaction(prefix: str) -> object:
            listed = list(real_iter(prefix))
            if prefix == PACKS and len(merged) == 1:
                for i in range(12):  # another writer's pack, then a compaction taking the new file too
                    payload = os.urandom(1000 + i)
                    other.odb.add_chunk(hash_bytes(Kind.CHUNK, payload), payload)
                other.odb.flush()
                merged.append(compact(other.backend))
            return iter(listed)

        store.backend.get = first_compaction  # type: ignore[method-assign]
        store.backend.iter_prefix = second_compaction  # type: ignore[method-assign,assignment]
        report = fsck(store)
    assert len(merged) == 2 and merged[1].files_merged == 1
    assert report.ok, [p.message for p in report.problems]


def test_fsck_beside_repacks_and_gc_moving_the_chunks_twice_reports_no_damage(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Writers repack small packs by themselves, and gc deletes what a repack marked
    once the grace period is over: a chunk can move twice while one fsck runs. The
    interleaving traced in test_mixed_writers_gc_and_fsck_local (CI: "chunk … of
    'w6-11.bin' is in no pack" from the fsck looping there, while the store was whole:
    the final fsck and every download passed), made deterministic:

    1. fsck lists the packs and their loose ``.idx``; before it reads them, a
       compaction merges the ``.idx`` into an index file and a repack copies the
       small packs into one new pack and marks them. fsck finds each ``.idx`` gone
       and the pack marked: being deleted, so it skips them (in its second look too);
    2. fsck's second look lists the copy; before it reads it, another repack copies
       it on (with a new session's pack) and marks it, and gc, past the grace, deletes
       the marked packs, the copy among them.

    Every chunk then lives only in the second copy, which neither look listed; fsck
    must look for it where the store's index puts it now, not call it lost."""
    from test_chunkindex import _read_all, _sessions

    from objstore.maintenance.fsck import fsck
    from objstore.maintenance.repack import repack_small_packs
    from objstore.storage.chunkindex import compact
    from objstore.storage.keys import pack_key

    monkeypatch.setenv("OBJSTORE_INDEX_COMPACT_THRESHOLD", "0")  # writers leave their .idx loose
    store_path, files = tmp_path / "store", tmp_path / "files"
    _sessions(store_path, files, 0, 4)
    small = _packs(store_path)
    steps: list[str] = []
    with Store.open_existing(store_path) as store, Store.open_existing(store_path) as other:
        real_get, real_iter = store.backend.get, store.backend.iter_prefix

        def moving(key: str, *args: object, **kwargs: object) -> bytes:
            if key.endswith(".idx") and not steps:
                steps.append("compacted and repacked")
                compact(other.backend)
                assert repack_small_packs(other, min_packs=2).packs_marked == len(small)
            elif key.endswith(".pack") and key not in {pack_key(n) for n in small} and len(steps) == 2:
                steps.append("repacked again, then gc")
                _sessions(store_path, files, 4, 1)  # a small pack beside the copy, so it is repacked too
                assert repack_small_packs(other, min_packs=2).packs_marked == 2
                deleted = collect_garbage(Store.open_existing(store_path), grace_seconds=1.0, now=time.time() + 2)
                assert deleted.packs_deleted == len(small) + 2  # the small ones, the first copy, the new pack
            return real_get(key, *args, **kwargs)  # type: ignore[arg-type]

        def second_look(prefix: str) -> object:
            if prefix == "objects/" and len(steps) == 1:
                steps.append("second look")  # between the two looks at the packs
            return real_iter(prefix)

        store.backend.get = moving  # type: ignore[method-assign]
        store.backend.iter_prefix = second_look  # type: ignore[method-assign,assignment]
        report = fsck(store)
    assert steps == ["compacted and repacked", "second look", "repacked again, then gc"]
    assert fsck(Store.open_existing(store_path)).ok  # the store is whole: nothing was lost
    _read_all(store_path, files, range(5))
    assert report.ok, [p.message for p in report.problems]  # and fsck beside the moves said so too


def test_fsck_finds_a_chunk_whose_new_pack_moved_on_before_its_second_look(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """One move is enough when the pack is new: a session stores a pack after fsck's
    first look at the packs (its version ref is read after it, so fsck walks it); a
    repack copies that pack on and gc deletes it after fsck's second look listed it
    and before it read it. The chunk is only in the copy, which neither look listed."""
    from test_chunkindex import _read_all, _sessions

    from objstore.maintenance.fsck import fsck
    from objstore.maintenance.repack import repack_small_packs

    monkeypatch.setenv("OBJSTORE_INDEX_COMPACT_THRESHOLD", "0")
    store_path, files = tmp_path / "store", tmp_path / "files"
    _sessions(store_path, files, 0, 3)
    steps: list[str] = []

    def repack_then_gc() -> None:
        with Store.open_existing(store_path) as s:
            assert repack_small_packs(s, min_packs=2).packs_marked >= 2
        gc = collect_garbage(Store.open_existing(store_path), grace_seconds=1.0, now=time.time() + 2 * len(steps))
        assert gc.packs_deleted >= 2

    with Store.open_existing(store_path) as store:
        real_get, real_iter = store.backend.get, store.backend.iter_prefix

        def after_the_first_look(prefix: str) -> object:
            if prefix == "objects/" and not steps:  # fsck's first look at the packs is over
                steps.append("first look read every pack; they move, and a new session stores one")
                repack_then_gc()
                _sessions(store_path, files, 3, 1)
            return real_iter(prefix)

        def before_the_second_read(key: str, *args: object, **kwargs: object) -> bytes:
            if key.endswith(".pack") and len(steps) == 1:
                steps.append("second look listed the new packs; they move on before it reads one")
                repack_then_gc()
            return real_get(key, *args, **kwargs)  # type: ignore[arg-type]

        store.backend.iter_prefix = after_the_first_look  # type: ignore[method-assign,assignment]
        store.backend.get = before_the_second_read  # type: ignore[method-assign]
        report = fsck(store)
    assert len(steps) == 2
    assert fsck(Store.open_existing(store_path)).ok  # the store is whole
    _read_all(store_path, files, range(4))
    assert report.ok, [p.message for p in report.problems]


def test_fsck_checks_a_marked_pack_whose_idx_a_compaction_merged_meanwhile(tmp_path: Path) -> None:
    """fsck lists a pack's .idx; before it reads it, a compaction merges the .idx
    into an index file and a repack marks the pack (the copy is written first).
    The pack is not being deleted: readers still find it through the index file,
    so its chunks must be checked this run. fsck took the mark for 'gc is
    deleting it' and checked none of them (stop 23's closing note)."""
    from objstore.maintenance.fsck import fsck
    from objstore.storage.chunkindex import compact
    from objstore.storage.keys import marked_pack_key

    store_path = tmp_path / "store"
    model = tmp_path / "m.bin"
    model.write_bytes(os.urandom(300_000))
    with objstore.init(entity="e", project="p", store=store_path) as run:
        run.log_model(str(model), name="m")
    (pack,) = _packs(store_path)
    chunks = len(decode_idx((store_path / idx_key(pack)).read_bytes(), pack))
    with Store.open_existing(store_path) as store, Store.open_existing(store_path) as other:
        real_get = store.backend.get
        moved: list[bool] = []

        def compaction_and_mark(key: str, *args: object, **kwargs: object) -> bytes:
            if key == idx_key(pack) and not moved:
                assert compact(other.backend).files_merged == 0 and not (store_path / idx_key(pack)).exists()
                other.backend.put_if_absent(marked_pack_key(pack), b"\x81\xa2by\xa6repack")
                moved.append(True)
            return real_get(key, *args, **kwargs)  # type: ignore[arg-type]

        store.backend.get = compaction_and_mark  # type: ignore[method-assign]
        report = fsck(store)
    assert moved
    assert report.ok, [p.message for p in report.problems]
    assert report.chunks == chunks  # every chunk of the pack, read where readers find it



def _a_deleted_collections_pack_marked(store: str | Path, tmp_path: Path, seed: int) -> Path:
    """A model logged as ``one`` in a new ``store``, deleted, and its pack marked by a
    gc (two hours later): the garbage a writer re-logging the same bytes meets."""
    m = tmp_path / "m.safetensors"
    write_safetensors(m, random_layers(seed, layers=2))
    run_cli(store, "init")
    run_cli(store, "log-model", str(m), "--name", "one")
    run_cli(store, "delete", "one", "--yes")
    with Store.open_existing(store) as s:
        assert collect_garbage(s, grace_seconds=600, now=time.time() + 2 * HOUR).packs_marked == 1
    return m



def _whole_gc_before(monkeypatch: pytest.MonkeyPatch, module: object, name: str, store: str | Path) -> list[int]:
    """Make ``module.name`` run a whole deleting gc (four hours on) first: the objects
    each such gc deleted, in the list returned."""
    real = getattr(module, name)
    deleted: list[int] = []

    def gc_first(*args: object, **kwargs: object) -> object:
        with Store.open_existing(store) as other:
            deleted.append(collect_garbage(other, grace_seconds=600, now=time.time() + 4 * HOUR).objects_deleted)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, gc_first)
    return deleted


def _gc_deleting_while_a_writer_stores_the_same_pack(store: str, tmp_path: Path) -> None:
    """gc's phase 2 asks whether a due pack is still marked, then deletes it. A
    writer that logs the bytes of a deleted collection again sees the mark, stores
    its own copy, and that copy is the very same pack (same chunks, same order),
    so it lifts the mark; its file and tree objects exist already. Here the writer,
    a real process, does all that (version ref included) right after gc's mark
    re-check and before its deletes: gc, going by the refs it read at its start,
    deleted the version's tree and pack (fsck: "directory '/' … is not in the
    store"). gc now looks at the refs again right before deleting."""
    from objstore.maintenance.fsck import fsck
    from objstore.storage.chunkindex import marked_packs
    from objstore.storage.keys import marked_pack_key

    m = _a_deleted_collections_pack_marked(store, tmp_path, 43)
    with Store.open_existing(store) as s:
        (marked,) = marked_packs(s.backend)
    logged: list[str] = []
    with Store.open_existing(store) as s:
        real_stat = s.backend.stat

        def writer_after_the_recheck(key: str) -> object:
            info = real_stat(key)
            if key == marked_pack_key(marked) and not logged:
                logged.append(run_cli(store, "log-model", str(m), "--name", "two").out)
            return info

        s.backend.stat = writer_after_the_recheck  # type: ignore[method-assign,assignment]
        collect_garbage(s, grace_seconds=600, now=time.time() + 4 * HOUR)
    assert logged  # the writer really ran inside gc's window
    with Store.open_existing(store) as s:
        report = fsck(s)
    assert report.ok, [p.message for p in report.problems]
    assert sha(run_cli(store, "use-model", "two", "--root", str(tmp_path / "o")).out.strip()) == sha(m)


def test_gc_deleting_while_a_writer_stores_the_same_pack_local(tmp_path: Path) -> None:
    _gc_deleting_while_a_writer_stores_the_same_pack(str(tmp_path / "store"), tmp_path)


def _gc_deleting_while_a_writer_logs_in_its_last_window(store: str, tmp_path: Path) -> None:
    """The window gc's second look leaves: a writer that logs the bytes of a deleted
    collection again (its file and tree objects and its pack "already there") and
    writes its version ref after gc read the refs a second time and before gc's
    deletes. Here the writer, a real process, is started once gc has taken its
    second look, right at its first delete, and gc waits until the writer's version
    ref exists before deleting anything. Before the gc intent, gc deleted the new
    version's tree and pack (fsck: lost); now the writer, which looks for a deleting
    gc after its ref, waits for it to finish and stores what it deleted again."""
    from objstore.maintenance.fsck import fsck
    from objstore.storage.chunkindex import marked_packs
    from objstore.storage.keys import REFS

    m = _a_deleted_collections_pack_marked(store, tmp_path, 44)
    with Store.open_existing(store) as s:
        (marked,) = marked_packs(s.backend)
    writers: list[subprocess.Popen[str]] = []
    with Store.open_existing(store) as s:
        real_delete, real_list = s.backend.delete, s.backend.iter_prefix

        def version_logged() -> bool:
            return any("/two/versions/" in info.key for info in real_list(REFS))

        def writer_in_the_window(key: str) -> None:
            if key == idx_key(marked) and not writers:
                writers.append(subprocess.Popen([str(OBJSTORE), "--store", store, "log-model", str(m), "--name", "two"],
                                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                                stdin=subprocess.DEVNULL))
                for _ in range(1200):
                    if version_logged() or writers[0].poll() is not None:
                        break
                    time.sleep(0.1)
                assert version_logged(), writers[0].communicate()
            real_delete(key)

        s.backend.delete = writer_in_the_window  # type: ignore[method-assign]
        collect_garbage(s, grace_seconds=600, now=time.time() + 4 * HOUR)
    assert writers  # the writer really ran inside gc's window
    out, err = writers[0].communicate(timeout=300)
    assert writers[0].returncode == 0, err
    with Store.open_existing(store) as s:
        report = fsck(s)
    assert report.ok, [p.message for p in report.problems]
    assert sha(run_cli(store, "use-model", "two", "--root", str(tmp_path / "o")).out.strip()) == sha(m)


def test_gc_deleting_while_a_writer_logs_in_its_last_window_local(tmp_path: Path) -> None:
    _gc_deleting_while_a_writer_logs_in_its_last_window(str(tmp_path / "store"), tmp_path)


@pytest.mark.s3
def test_gc_deleting_while_a_writer_logs_in_its_last_window_s3(s3_bucket_url: str, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _gc_deleting_while_a_writer_logs_in_its_last_window(s3_bucket_url, tmp_path)


def test_a_gc_killed_while_deleting_leaves_writers_waiting_only_for_the_bound(tmp_path: Path,
                                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """gc is killed (SIGKILL) at its first delete, after it wrote its intent: the
    intent stays, "deleting" for ever. A writer that logs the same bytes again
    (everything "already there") sees it after its ref, waits only until the
    intent is older than the bound (a dead gc's; the bound lowered here so the
    test is short), then checks its version and stores what the dead gc
    deleted of it again: it returns, and the store is whole."""
    import objstore.model.gcintent as gcintent
    from objstore.maintenance.fsck import fsck
    from objstore.storage.keys import GC_DELETING

    store = tmp_path / "store"
    m = tmp_path / "m.safetensors"
    write_safetensors(m, random_layers(45, layers=2))
    run_cli(store, "init")
    run_cli(store, "log-model", str(m), "--name", "one")
    run_cli(store, "delete", "one", "--yes")
    killed = run_cli(store, "gc", "--grace", "0", env={"OBJSTORE_FAULT": "delete:1"}, check=False)
    assert killed.code == -9, killed
    intents = list((store / GC_DELETING).iterdir())
    assert len(intents) == 1  # left by the killed gc
    # The bound: two seconds from now (from the intent's start, as writers count it).
    monkeypatch.setattr(gcintent, "GC_INTENT_STALE_SECONDS", time.time() - intents[0].stat().st_mtime + 2.0)
    waits: list[float] = []
    monkeypatch.setattr(gcintent, "time", SimpleNamespace(time=time.time, sleep=lambda s: waits.append(s) or time.sleep(s)))
    with objstore.init(entity="e", project="p", store=store) as run:
        run.log_model(str(m), name="two")
    assert waits  # it saw the dead gc's intent, waited, and went on
    with Store.open_existing(store) as s:
        report = fsck(s)
    assert report.ok, [p.message for p in report.problems]
    assert sha(run_cli(store, "use-model", "e/p/two:latest", "--root", str(tmp_path / "o")).out.strip()) == sha(m)


def test_only_a_writer_that_reused_stored_bytes_looks_for_a_deleting_gc(tmp_path: Path) -> None:
    """The writer's look costs nothing when it stored everything anew (the
    request-count bound of log_model, tests/test_request_counts.py), and one
    listing of the intents when its objects or pack were already there."""
    from objstore.storage.keys import GC_DELETING

    store = tmp_path / "store"
    m = tmp_path / "m.bin"
    m.write_bytes(os.urandom(50_000))
    run_cli(store, "init")

    def looks(name: str) -> list[str]:
        seen: list[str] = []
        with Store.open_existing(store) as s:
            real = s.backend.iter_prefix

            def listing(prefix: str) -> object:
                if prefix.startswith(GC_DELETING):
                    seen.append(prefix)
                return real(prefix)

            s.backend.iter_prefix = listing  # type: ignore[method-assign,assignment]
            with objstore.init(entity="e", project="p", store=s) as run:
                run.log_model(str(m), name=name)
        return seen

    assert looks("new") == []
    assert looks("again") == [GC_DELETING]  # the same bytes: its file object, tree and pack already there


def _gc_running_wholly_inside_a_writers_window(store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A whole deleting gc between a writer's "already there" and its version ref:
    the gc's intent is done (not running) by the time the writer looks. Its end,
    kept, falls inside the writer's window, so the writer checks its version and
    stores again what that gc deleted (its file and tree objects)."""
    import objstore.api.commit as commit
    from objstore.maintenance.fsck import fsck

    m = _a_deleted_collections_pack_marked(store, tmp_path, 46)
    deleted = _whole_gc_before(monkeypatch, commit, "commit_version", store)
    with objstore.init(entity="e", project="p", store=store) as run:
        run.log_model(str(m), name="two")
    # The gc deleted the file and tree objects the writer had found already there
    # (not the pack: storing it lifted its mark, which gc looks at before deleting).
    assert deleted and deleted[0] >= 2
    with Store.open_existing(store) as s:
        report = fsck(s)
    assert report.ok, [p.message for p in report.problems]
    assert sha(run_cli(store, "use-model", "e/p/two:latest", "--root", str(tmp_path / "o")).out.strip()) == sha(m)


def test_gc_running_wholly_inside_a_writers_window_local(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _gc_running_wholly_inside_a_writers_window(str(tmp_path / "store"), tmp_path, monkeypatch)


@pytest.mark.s3
def test_gc_running_wholly_inside_a_writers_window_s3(s3_bucket_url: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _gc_running_wholly_inside_a_writers_window(s3_bucket_url, tmp_path, monkeypatch)


@pytest.mark.s3
def test_gc_deleting_while_a_writer_stores_the_same_pack_s3(s3_bucket_url: str, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    _gc_deleting_while_a_writer_stores_the_same_pack(s3_bucket_url, tmp_path)


def _gc_deleting_while_a_transfer_lands_in_its_last_window(direction: str, tmp_path: Path) -> None:
    """commit_draft's window, for a transfer: the store gc runs on (``here``) holds,
    as garbage, the bytes of a deleted collection; another store logged the same
    bytes as ``two``. A pull of ``two`` into it (or a push of ``two`` to it) finds
    the tree and file objects already there, copies the pack, which is the very same
    pack (it lifts the mark), and writes its refs (tracking refs, or the version's)
    after gc's second look, before gc's deletes: here the transfer, a real process,
    starts at gc's first delete, and gc waits until the transfer's ref naming ``two``
    exists. Before the transfer looked for gc's intent, gc deleted the tree and the
    pack the new refs name (fsck: lost); now the transfer waits for that gc and
    copies again what it deleted."""
    from objstore.maintenance.fsck import fsck
    from objstore.storage.chunkindex import marked_packs
    from objstore.storage.keys import REFS, REMOTES

    here, other = tmp_path / "here", tmp_path / "other"
    m = tmp_path / "m.safetensors"
    write_safetensors(m, random_layers(47, layers=2))
    for store in (here, other):
        run_cli(store, "init")
    run_cli(here, "log-model", str(m), "--name", "one")
    run_cli(here, "delete", "one", "--yes")
    run_cli(other, "log-model", str(m), "--name", "two")
    with Store.open_existing(here) as s:
        assert collect_garbage(s, grace_seconds=600, now=time.time() + 2 * HOUR).packs_marked == 1
        (marked,) = marked_packs(s.backend)
    if direction == "pull":
        run_cli(here, "remote", "add", "o", str(other))
        argv, names = ["--store", str(here), "pull", "o"], REMOTES  # its tracking ref comes first
    else:
        run_cli(other, "remote", "add", "o", str(here))
        argv, names = ["--store", str(other), "push", "o"], REFS
    transfers: list[subprocess.Popen[str]] = []
    with Store.open_existing(here) as s:
        real_delete, real_list = s.backend.delete, s.backend.iter_prefix

        def landed() -> bool:
            return any("/two/versions/" in info.key for info in real_list(names))

        def transfer_in_the_window(key: str) -> None:
            if key == idx_key(marked) and not transfers:
                transfers.append(subprocess.Popen([str(OBJSTORE), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                                  text=True, stdin=subprocess.DEVNULL))
                for _ in range(1200):
                    if landed() or transfers[0].poll() is not None:
                        break
                    time.sleep(0.1)
                assert landed(), transfers[0].communicate()
            real_delete(key)

        s.backend.delete = transfer_in_the_window  # type: ignore[method-assign]
        deleted = collect_garbage(s, grace_seconds=600, now=time.time() + 4 * HOUR)
    assert transfers and deleted.packs_deleted == 1 and deleted.objects_deleted >= 1  # it really ran in gc's window
    out, err = transfers[0].communicate(timeout=300)
    assert transfers[0].returncode == 0, err
    with Store.open_existing(here) as s:
        report = fsck(s)
    assert report.ok, [p.message for p in report.problems]
    assert sha(run_cli(here, "use-model", "two", "--root", str(tmp_path / "o")).out.strip()) == sha(m)


@pytest.mark.parametrize("direction", ["pull", "push"])
def test_gc_deleting_while_a_transfer_lands_in_its_last_window(direction: str, tmp_path: Path) -> None:
    _gc_deleting_while_a_transfer_lands_in_its_last_window(direction, tmp_path)


def test_only_a_transfer_that_relied_on_bytes_there_looks_for_a_deleting_gc(tmp_path: Path,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A transfer's look (after its refs) costs nothing when it copied everything
    anew or moved no ref, and one listing of the intents when it found part of
    what its new refs name already there."""
    from click.testing import CliRunner

    from cli.main import main
    from objstore.storage.backend import LocalBackend
    from objstore.storage.keys import GC_DELETING

    origin, here = tmp_path / "origin", tmp_path / "here"
    m = tmp_path / "m.bin"
    m.write_bytes(os.urandom(50_000))
    for store in (origin, here):
        run_cli(store, "init")
    run_cli(origin, "log-model", str(m), "--name", "one")
    run_cli(here, "remote", "add", "o", str(origin))
    seen: list[str] = []
    real = LocalBackend.iter_prefix

    def listing(self: LocalBackend, prefix: str) -> object:
        if prefix.startswith(GC_DELETING):
            seen.append(prefix)
        return real(self, prefix)

    monkeypatch.setattr(LocalBackend, "iter_prefix", listing)

    def looks(*args: str) -> list[str]:
        seen.clear()
        result = CliRunner().invoke(main, ["--store", str(here), *args], env={"OBJSTORE_PROJECT": None})
        assert result.exit_code == 0, result.output
        return list(seen)

    assert looks("pull", "o") == []  # all new here
    assert looks("pull", "o") == []  # nothing moved
    run_cli(origin, "log-model", str(m), "--name", "again")  # the same bytes: a new version, its tree already here
    assert looks("pull", "o") == [GC_DELETING]


def test_gc_running_wholly_inside_an_upserting_writers_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """commit_draft's window, for a part (``upsert_artifact``): its part ref is a root
    like a version's ref, and its tree and pack may be a deleted collection's garbage.
    A whole deleting gc runs between the writer's "already there" and its part ref:
    before the part looked for gc's intent, the part's tree was gone (fsck: lost,
    and finish_artifact failed); now it stores again what that gc deleted."""
    import objstore.api.commit as commit
    from objstore.maintenance.fsck import fsck

    store = tmp_path / "store"
    m = _a_deleted_collections_pack_marked(store, tmp_path, 48)
    real_add = commit.add_part
    deleted = _whole_gc_before(monkeypatch, commit, "add_part", store)
    with objstore.init(entity="e", project="p", store=store) as run:
        run.upsert_artifact(str(m), name="two", type="model", distributed_id="d1")
    assert deleted and deleted[0] >= 1
    with Store.open_existing(store) as s:
        report = fsck(s)
    assert report.ok, [p.message for p in report.problems]
    monkeypatch.setattr(commit, "add_part", real_add)
    with objstore.init(entity="e", project="p", store=store) as run:
        run.finish_artifact(objstore.Artifact("two", "model"), distributed_id="d1")
    assert sha(run_cli(store, "use-model", "e/p/two:latest", "--root", str(tmp_path / "o")).out.strip()) == sha(m)


@pytest.mark.parametrize("comes_back", [True, False])
def test_a_listed_idx_that_vanishes_beside_its_unmarked_pack_is_a_write_in_progress(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, comes_back: bool) -> None:
    # gc deleted a pack and its .idx while a writer whose chunks they were stored the
    # same pack again (same bytes, same name): between listing the .idx and reading
    # it, fsck sees the pack, unmarked, and no .idx, until the writer stores it. That
    # is the state of a pack stored before its index, not damage; if the index never
    # comes, what needs the pack is named, with the reason.
    from objstore.maintenance import fsck as fsck_module

    (tmp_path / "m.bin").write_bytes(os.urandom(50_000))
    with objstore.init(project="p", entity="e", store=tmp_path / "s") as run:
        run.log_model(str(tmp_path / "m.bin"), name="m")
    store = Store.open_existing(tmp_path / "s")
    (idx_file,) = (tmp_path / "s" / "packs").glob("*.idx")
    saved = idx_file.read_bytes()
    real_get, real_refs = store.backend.get, fsck_module._check_refs

    def get(key: str, **kwargs: object) -> bytes:
        if key.endswith(".idx") and idx_file.exists() and not hasattr(get, "done"):
            get.done = True  # type: ignore[attr-defined]
            idx_file.unlink()  # gc, between fsck's listing and its read
        return real_get(key, **kwargs)

    def check_refs(*args: object) -> object:
        if comes_back:
            idx_file.write_bytes(saved)  # the writer stores the index after the pack
        return real_refs(*args)

    monkeypatch.setattr(store.backend, "get", get)
    monkeypatch.setattr(fsck_module, "_check_refs", check_refs)
    report = fsck_module.fsck(store)
    assert hasattr(get, "done"), "the test must make the .idx vanish under fsck"
    if comes_back:
        assert report.ok, [p.message for p in report.problems]
    else:
        assert not report.ok
        assert all("no index (an interrupted write)" in p.message for p in report.problems), report.problems
