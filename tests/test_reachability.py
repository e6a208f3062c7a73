"""One definition of what a version, a run and a ref reach, kept by transfer,
gc, fsck and the readers alike (issue 10, classes 13, 11 and part of 3).

Each test builds a real store (and real remotes: plain directories), and where
damage is needed forges it by editing the store's files.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import msgpack
import pytest
from cli_helpers import run_cli

import objstore
from objstore.maintenance.fsck import fsck
from objstore.maintenance.gc import collect_garbage
from objstore.model.deletion import delete_collection
from objstore.model.names import CollectionPath
from objstore.model.store import Store
from objstore.model.versions import list_versions
from objstore.storage import codecs
from objstore.storage.ids import ObjectId, hash_bytes
from objstore.storage.keys import object_key, run_ref, version_ref
from objstore.storage.objects import Version
from objstore.transfer.remotes import remote_add as _remote_add

E, P = "team", "proj"


def _file(path: Path, seed: int, size: int = 300_000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def _log(store: Path | Store, path: Path, name: str, project: str = P) -> objstore.Artifact:
    with objstore.init(project=project, entity=E, store=store) as run:
        return run.log_model(str(path), name=name)


def remote_add(store: Path, name: str, url: str) -> None:
    s = Store.open_existing(store)
    _remote_add(s, name, url)
    s.close()


def _fsck_ok(store: Path) -> None:
    s = Store.open_existing(store)
    report = fsck(s)
    s.close()
    assert report.ok, [p.message for p in report.problems]


def _cli_log_and_show(store: Path, coll: str) -> None:
    """``objstore log`` and ``show`` work and name the run (present or not)."""
    listed = run_cli(store, "log", coll, "--json").json()
    assert listed["versions"], listed  # type: ignore[index]
    shown = run_cli(store, "show", f"{coll}:v0")
    assert "logged by" in shown.out


# -- class 13: transfer, gc and fsck agree ------------------------------------------

def test_named_push_sends_the_runs_that_logged_the_versions(tmp_path: Path) -> None:
    """Failed before: the clone's ``log`` and ``show`` died with "no run … in the store"
    (the named push sent the versions, not their runs) while fsck said ok."""
    local = tmp_path / "local"
    a = _log(local, _file(tmp_path / "a.bin", 1), "a")
    _log(local, _file(tmp_path / "b.bin", 2), "b")
    remote_add(local, "team", str(tmp_path / "remote"))
    objstore.push(str(local), "team", [f"{E}/{P}/a"])
    clone, _ = objstore.clone(str(tmp_path / "remote"), tmp_path / "clone")
    clone.close()
    _fsck_ok(tmp_path / "clone")
    art = objstore.Api(store=tmp_path / "clone").artifact(f"{E}/{P}/a:v0")
    logged = art.logged_by()
    assert logged is not None and logged.path == a.logged_by().path  # type: ignore[union-attr]
    _cli_log_and_show(tmp_path / "clone", f"{E}/{P}/a")


def test_a_teammates_named_push_then_pull_keeps_the_pullers_log_working(tmp_path: Path) -> None:
    """Failed before: after a teammate pushed one collection by name and this store
    pulled, ``objstore log`` of that collection failed on the run it lacked."""
    mine, theirs, remote = tmp_path / "mine", tmp_path / "theirs", str(tmp_path / "remote")
    _log(theirs, _file(tmp_path / "t.bin", 3), "shared")
    remote_add(theirs, "origin", remote)
    objstore.push(str(theirs))
    objstore.clone(remote, mine)[0].close()
    _log(mine, _file(tmp_path / "m.bin", 4), "own")
    _log(theirs, _file(tmp_path / "t2.bin", 5), "shared")  # shared:v1, logged by a new run
    objstore.push(str(theirs), "origin", [f"{E}/{P}/shared"])
    objstore.pull(str(mine))
    _fsck_ok(mine)
    _cli_log_and_show(mine, f"{E}/{P}/shared")
    _cli_log_and_show(mine, f"{E}/{P}/own")


def test_a_run_absent_from_the_store_is_said_not_in_this_store(tmp_path: Path) -> None:
    """Lineage commands tolerate a run that is legitimately absent (its ref was never
    taken, e.g. an older clone): they say so instead of failing."""
    store = tmp_path / "s"
    art = _log(store, _file(tmp_path / "a.bin", 6), "a")
    run_path = art.logged_by().path  # type: ignore[union-attr]
    s = Store.open_existing(store)
    s.backend.delete(run_ref(E, P, run_path.rsplit("/", 1)[1]))
    s.close()
    assert objstore.Api(store=store).artifact(f"{E}/{P}/a:v0").logged_by() is None
    shown = run_cli(store, "show", f"{E}/{P}/a:v0")
    assert f"{run_path} (not in this store)" in shown.out
    listed = run_cli(store, "log", f"{E}/{P}/a")
    assert "not in this store" in listed.out
    run_cli(store, "lineage", f"{E}/{P}/a:v0")
    _fsck_ok(store)


def test_delete_gc_then_push_succeeds_and_fsck_agrees(tmp_path: Path) -> None:
    """Failed before: push walked a run's outputs into the deleted version and died on
    the object gc had freed, while fsck said "no damage found"."""
    store = tmp_path / "s"
    with objstore.init(project=P, entity=E, store=store) as run:
        run.log_model(str(_file(tmp_path / "a.bin", 7)), name="a")
        run.log_model(str(_file(tmp_path / "b.bin", 8)), name="b")
    s = Store.open_existing(store)
    delete_collection(s, CollectionPath(E, P, "a"))
    report = collect_garbage(s, grace_seconds=0)
    assert report.objects_deleted > 0
    s.close()
    _fsck_ok(store)
    remote_add(store, "r", str(tmp_path / "remote"))
    objstore.push(str(store), "r")
    _fsck_ok(tmp_path / "remote")
    clone, _ = objstore.clone(str(tmp_path / "remote"), tmp_path / "clone")
    clone.close()
    _fsck_ok(tmp_path / "clone")
    lin = run_cli(tmp_path / "clone", "lineage", f"{E}/{P}/b:v0")
    assert lin.code == 0


# -- class 11: readers across gc ----------------------------------------------------

def test_a_reader_holding_an_api_across_a_gc_that_rewrote_its_pack(tmp_path: Path) -> None:
    """Failed before: the reader's index still named the old pack, gone after gc,
    and reading the live version raised NotFound."""
    store = tmp_path / "s"
    both = tmp_path / "both"
    _file(both / "big.bin", 9, 600_000)
    small = _file(both / "small.bin", 10, 120_000)
    _log(store, both, "both")  # one pack holding both files' chunks
    _log(store, small, "small")  # dedups: its chunks live in that pack
    api = objstore.Api(store=store, entity=E, project=P)
    reader = api.artifact("small:v0")
    first = reader.download(str(tmp_path / "out1"))  # the reader has loaded the index now
    s = Store.open_existing(store)
    delete_collection(s, CollectionPath(E, P, "both"))
    report = collect_garbage(s, grace_seconds=0)
    s.close()
    assert report.packs_rewritten == 1 and report.packs_deleted >= 1
    again = reader.download(str(tmp_path / "out2"))
    assert (Path(again) / "small.bin").read_bytes() == (Path(first) / "small.bin").read_bytes() == small.read_bytes()
    # And through a path that resolves afresh on the same Api.
    assert Path(api.artifact("small:v0").download(str(tmp_path / "out3"))).is_dir()


# -- class 3 (part): one unreadable object never stops fsck or gc --------------------

def _forge_int_key_version(store: Path, name: str, from_coll: str) -> str:
    """Re-store ``from_coll:v0``'s version as ``name:v0`` with int metadata keys (what a
    Hugging Face ``id2label`` gave before the encoder refused it): a well-hashed object
    the decoder refuses. Returns the forged object's hex id."""
    s = Store.open_existing(store)
    (_, oid), = list_versions(s, CollectionPath(E, P, from_coll))
    v = s.odb.get_object(oid)
    assert isinstance(v, Version)
    d = v.to_dict()
    d["name"], d["metadata"] = name, {0: "cat", 1: "dog"}
    body = msgpack.packb(d, use_bin_type=True)
    forged = hash_bytes(v.kind, body)
    s.backend.put_if_absent(object_key(forged), codecs.zstd_compressor().compress(body))
    assert s.refs.create(version_ref(E, P, name, 0), forged, "forged")
    s.close()
    return forged.hex


def test_an_undecodable_version_is_reported_and_gc_keeps_what_it_reaches(tmp_path: Path) -> None:
    """Failed before: gc refused to run for the whole store (CorruptObject)."""
    store = tmp_path / "s"
    _log(store, _file(tmp_path / "c.bin", 11), "c")
    _log(store, _file(tmp_path / "keep.bin", 12), "keep")
    _log(store, _file(tmp_path / "gone.bin", 13), "gone")
    forged = _forge_int_key_version(store, "bad", "c")
    s = Store.open_existing(store)
    (_, c_id), = list_versions(s, CollectionPath(E, P, "c"))
    c_tree = s.odb.get_object(c_id).tree  # type: ignore[union-attr]
    delete_collection(s, CollectionPath(E, P, "c"))  # c's tree is reachable only through "bad" now
    delete_collection(s, CollectionPath(E, P, "gone"))

    report = fsck(s)
    bad = [p for p in report.problems if p.object_id == forged]
    assert bad and f"{E}/{P}/bad:v0" in report.damaged_versions, report.to_dict()
    assert report.versions >= 1 and all(f"{E}/{P}/keep" not in v for v in report.damaged_versions)

    gc = collect_garbage(s, grace_seconds=0)  # runs, frees "gone", keeps what "bad" may reach
    assert gc.bytes_freed > 0
    s.close()
    s = Store.open_existing(store)
    assert s.odb.has_object(c_tree)
    art_dir = objstore.Api(store=store).artifact(f"{E}/{P}/keep:v0").download(str(tmp_path / "k"))
    assert (Path(art_dir) / "keep.bin").read_bytes() == (tmp_path / "keep.bin").read_bytes()
    # The chunks under the forged version's tree are all still readable.
    from objstore.model.inventory import ContentWalker

    _, chunks = ContentWalker(s).tree_contents(c_tree)
    assert chunks and all(s.odb.has_chunks([ObjectId(c) for c in chunks]))
    s.close()


def test_a_garbled_tree_object_is_reported_and_gc_deletes_nothing_it_might_need(tmp_path: Path) -> None:
    store = tmp_path / "s"
    a = _log(store, _file(tmp_path / "a.bin", 14), "a")
    _log(store, _file(tmp_path / "gone.bin", 15), "gone")
    s = Store.open_existing(store)
    (_, a_id), = list_versions(s, CollectionPath(E, P, "a"))
    tree = s.odb.get_object(a_id).tree  # type: ignore[union-attr]
    delete_collection(s, CollectionPath(E, P, "gone"))
    path = store / object_key(tree)
    path.chmod(0o644)
    path.write_bytes(b"\x28\xb5\x2f\xfd garbage, not the tree")
    s.close()
    s = Store.open_existing(store)
    report = fsck(s)
    assert f"{E}/{P}/a:v0" in report.damaged_versions, report.to_dict()
    packs_before = sorted(os.listdir(store / "packs"))
    objects_before = sum(len(f) for _, _, f in os.walk(store / "objects"))
    gc = collect_garbage(s, grace_seconds=0)  # runs, but cannot know what the tree reached
    assert gc.packs_deleted == 0 and gc.objects_deleted == 0
    assert sorted(os.listdir(store / "packs")) == packs_before
    assert sum(len(f) for _, _, f in os.walk(store / "objects")) == objects_before
    s.close()
    del a


@pytest.mark.parametrize("command", ["fsck", "gc"])
def test_cli_fsck_and_gc_go_on_past_an_undecodable_object(tmp_path: Path, command: str) -> None:
    store = tmp_path / "s"
    _log(store, _file(tmp_path / "c.bin", 16), "c")
    _forge_int_key_version(store, "bad", "c")
    if command == "fsck":
        r = run_cli(store, "fsck", check=False)
        assert r.code == 3 and f"{E}/{P}/bad:v0" in r.out + r.err, (r.out, r.err)
        assert "unexpected" not in r.err
    else:
        r = run_cli(store, "gc", "--grace", "0", check=False)
        assert r.code == 0, r.err


def test_a_writer_holding_a_store_across_a_gc_that_deleted_a_pack_stores_its_own_copy(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A long-lived writer dedups against its loaded index: after a gc deleted the pack
    its chunks were in, logging that content again must store them anew, not name
    chunks that are gone. (Failed before: the new version's chunks were in no pack.)

    gc deletes only packs marked longer ago than its grace period; here grace 0 and
    a zero recheck interval stand for "the writer last looked before that"."""
    import objstore.storage.odb

    monkeypatch.setattr(objstore.storage.odb, "PACK_RECHECK_SECONDS", 0.0)
    store = tmp_path / "s"
    data = _file(tmp_path / "a.bin", 17)
    s = Store.open(store)
    _log(s, data, "a")  # the writer's odb has loaded the index, with a's pack in it
    other = Store.open_existing(store)
    delete_collection(other, CollectionPath(E, P, "a"))
    assert collect_garbage(other, grace_seconds=0).packs_deleted == 1
    other.close()
    _log(s, data, "again")
    s.close()
    _fsck_ok(store)
    out = objstore.Api(store=store).artifact(f"{E}/{P}/again:v0").download(str(tmp_path / "out"))
    assert (Path(out) / "a.bin").read_bytes() == data.read_bytes()


def test_logging_into_a_collection_whose_latest_does_not_decode(tmp_path: Path) -> None:
    """A store written before the encoder refused int keys holds an undecodable
    latest; logging into that collection again works (it failed for good before),
    and fsck still names only the damaged version."""
    store = tmp_path / "s"
    _log(store, _file(tmp_path / "c.bin", 18), "c")
    _forge_int_key_version(store, "bad", "c")
    s = Store.open_existing(store)
    from objstore.storage.keys import alias_ref

    (_, forged), = list_versions(s, CollectionPath(E, P, "bad"))
    s.refs.set(alias_ref(E, P, "bad", "latest"), forged, "forged")
    s.close()
    art = _log(store, _file(tmp_path / "d.bin", 19), "bad")
    assert art.version == "v1"
    s = Store.open_existing(store)
    assert fsck(s).damaged_versions == (f"{E}/{P}/bad:v0",)
    s.close()


def test_log_and_show_go_on_past_an_undecodable_run_record(tmp_path: Path) -> None:
    """A run record written with int config keys (before the encoder refused them):
    log goes on (it lists which runs are recorded, reading no record: issue 13), show
    says the run is damaged instead of failing; fsck names the run ref."""
    store = tmp_path / "s"
    art = _log(store, _file(tmp_path / "a.bin", 20), "a")
    run_id = art.logged_by().id  # type: ignore[union-attr]
    s = Store.open_existing(store)
    record = s.odb.get_object(s.refs.read(run_ref(E, P, run_id)))  # type: ignore[arg-type]
    d = record.to_dict()
    d["config"] = {0: "lr"}
    body = msgpack.packb(d, use_bin_type=True)
    forged = hash_bytes(record.kind, body)
    s.backend.put_if_absent(object_key(forged), codecs.zstd_compressor().compress(body))
    s.refs.set(run_ref(E, P, run_id), forged, "forged")
    report = fsck(s)
    s.close()
    assert any(p.object_id == run_ref(E, P, run_id) for p in report.problems), report.to_dict()
    logged = run_cli(store, "log", f"{E}/{P}/a")
    assert logged.code == 0 and f"{E}/{P}/{run_id}" in logged.out
    assert "(damaged" in run_cli(store, "show", f"{E}/{P}/a:v0").out
    assert run_cli(store, "gc", "--grace", "0").code == 0


def test_du_and_ls_go_on_past_an_undecodable_version(tmp_path: Path) -> None:
    """du and ls failed for the whole store on one undecodable version."""
    store = tmp_path / "s"
    _log(store, _file(tmp_path / "c.bin", 21), "c")
    _forge_int_key_version(store, "bad", "c")
    du = run_cli(store, "du", "--json").json()
    assert du["versions"] == 1 and du["damaged_versions"] == [f"{E}/{P}/bad:v0"], du  # type: ignore[index]
    listed = run_cli(store, "ls", f"{E}/{P}", "--json").json()
    assert sorted(c["name"] for c in listed["collections"]) == ["bad", "c"], listed  # type: ignore[index]
