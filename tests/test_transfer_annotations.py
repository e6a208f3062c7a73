"""push / pull / clone carry the annotation edits of the versions they move
(state and history), never undo a newer edit at the destination, and treat a
deleted version (a tombstone ref) as gone: no crash, not resurrected."""

from __future__ import annotations

from pathlib import Path

import pytest
from transfer_support import ENTITY, PROJECT, log, make_models

import objstore
from objstore.model.annotations import annotation_history
from objstore.model.names import parse_version_spec
from objstore.model.store import Store
from objstore.model.versions import resolve
from objstore.transfer.remotes import remote_add

NAME = f"{ENTITY}/{PROJECT}/model"


@pytest.fixture
def models(tmp_path: Path) -> tuple[Path, Path]:
    return make_models(tmp_path / "models")


def art(store: Path | Store, spec: str = f"{NAME}:v0") -> objstore.Artifact:
    return objstore.Api(store=store).artifact(spec)


def edit(store: Path | Store, description: str, tags: list[str], spec: str = f"{NAME}:v0") -> None:
    a = art(store, spec)
    a.description = description
    a.tags = tags
    a.save()


def history(store: Store, spec: str = f"{NAME}:v0") -> list[tuple[int, list[str]]]:
    entry = resolve(store, parse_version_spec(spec, entity=None, project=None))
    return [(e.revision, [c.field for c in e.changes]) for e in annotation_history(store, entry)]


def published(tmp_path: Path, models: tuple[Path, Path]) -> tuple[Store, Path]:
    base, ft = models
    local = Store.open(tmp_path / "local")
    log(local, base)
    log(local, ft)
    remote_add(local, "origin", str(tmp_path / "remote"))
    return local, tmp_path / "remote"


def test_clone_carries_edits_and_history_and_pull_updates(tmp_path: Path, models: tuple[Path, Path]) -> None:
    local, remote = published(tmp_path, models)
    edit(local, "first edit", ["a"])
    objstore.push(local)
    remote_store = Store.open_existing(remote)
    assert art(remote_store).description == "first edit" and art(remote_store).tags == ["a"]

    clone, _ = objstore.clone(str(remote), tmp_path / "clone")
    assert art(clone).description == "first edit" and art(clone).tags == ["a"]
    assert history(clone) == history(local) == [(1, ["description", "tags"])]

    edit(local, "second edit", ["a", "b"])
    objstore.push(local)
    pulled = objstore.pull(clone)
    assert art(clone).description == "second edit" and art(clone).tags == ["a", "b"]
    assert history(clone) == history(local) and len(history(clone)) == 2
    assert pulled.kept == []
    # Nothing new: nothing moves.
    again = objstore.pull(clone)
    assert (again.refs, again.kept) == ([], [])


def test_a_newer_edit_at_the_destination_is_not_undone(tmp_path: Path, models: tuple[Path, Path]) -> None:
    local, remote = published(tmp_path, models)
    edit(local, "first", ["a"])
    objstore.push(local)
    clone, _ = objstore.clone(str(remote), tmp_path / "clone")
    edit(clone, "clone's newer", ["c"])  # revision 2 here; the remote stays at 1
    pulled = objstore.pull(clone)
    assert art(clone).description == "clone's newer" and art(clone).tags == ["c"]
    assert pulled.kept == []  # simply ahead here: not a conflict
    # The clone's push fast-forwards the remote, and the source then pulls it.
    pushed = objstore.push(clone)
    assert art(Store.open_existing(remote)).description == "clone's newer"
    assert pushed.annotations == [f"annotations/{ENTITY}/{PROJECT}/model/v0/state"] and pushed.kept == []
    objstore.pull(local)
    assert art(local).description == "clone's newer" and history(local) == history(clone)


def test_edits_on_both_sides_settle_by_the_later_edit_and_both_stay_in_the_history(
        tmp_path: Path, models: tuple[Path, Path]) -> None:
    local, remote = published(tmp_path, models)
    objstore.push(local)
    clone, _ = objstore.clone(str(remote), tmp_path / "clone")
    edit(local, "source's", ["s"])
    objstore.push(local)
    edit(clone, "clone's", ["c"])  # revision 1 on both sides, different edits, the clone's later
    pulled = objstore.pull(clone)
    assert art(clone).description == "clone's"
    assert any("annotations" in k for k in pulled.kept)  # the later one, here: kept, and said
    pushed = objstore.push(clone)  # ... and taken there by the transfer the other way
    assert pushed.kept == [] and any("annotations" in k for k in pushed.annotations)
    theirs = art(Store.open_existing(remote))
    assert (theirs.description, theirs.tags) == ("clone's", ["c"])
    history_there = annotation_history(Store.open_existing(remote), resolve(Store.open_existing(remote), parse_version_spec(
        f"{NAME}:v0", entity=None, project=None)))
    assert [e.changes[0].new for e in history_there if e.changes[0].field == "description"] == ["source's", "clone's"]
    assert "taken from" in history_there[-1].who
    objstore.pull(local)  # a fast-forward now
    assert art(local).description == "clone's"
    # The source's later edit wins at the destination too, on a pull.
    edit(clone, "clone's again", ["c"])
    edit(local, "local's, later", ["s", "t"])
    objstore.push(local)
    pulled = objstore.pull(clone)
    assert pulled.kept == [] and (art(clone).description, art(clone).tags) == ("local's, later", ["s", "t"])
    assert [c.new for e in annotation_history(clone, resolve(clone, parse_version_spec(f"{NAME}:v0", entity=None,
                                                                                       project=None)))
            for c in e.changes if c.field == "description"][-2:] == ["clone's again", "local's, later"]
    assert objstore.push(clone).annotations == [] and objstore.pull(local).annotations == []  # settled: quiet


def test_a_deleted_version_does_not_come_back(tmp_path: Path, models: tuple[Path, Path]) -> None:
    local, remote = published(tmp_path, models)
    objstore.push(local)
    clone, _ = objstore.clone(str(remote), tmp_path / "clone")
    art(local, f"{NAME}:v0").delete()
    objstore.push(local)  # no crash
    objstore.pull(clone)  # no crash
    objstore.pull(local)
    with pytest.raises(objstore.errors.NotFound):
        art(local, f"{NAME}:v0")
    assert art(local, f"{NAME}:v1").version == "v1"
    # A new version after the deletion is numbered after every number used.
    log(local, models[0])  # the deleted version's content: a new version, v2
    objstore.push(local)
    objstore.pull(clone)
    assert art(clone, f"{NAME}:latest").version == "v2"
    clone2, _ = objstore.clone(str(remote), tmp_path / "clone2")
    assert art(clone2, f"{NAME}:v1").version == "v1"
    assert art(clone2, f"{NAME}:latest").version == "v2"
    # Deleted on the remote too, then a new version here: push and pull neither crash
    # nor bring either deletion back, and the numbers stay unique.
    art(Store.open_existing(remote), f"{NAME}:v1").delete()
    (tmp_path / "third.bin").write_bytes(b"third model")
    log(clone, tmp_path / "third.bin")  # v3 on the clone
    objstore.push(clone)
    objstore.pull(local)
    remote_store = Store.open_existing(remote)
    with pytest.raises(objstore.errors.NotFound):
        art(remote_store, f"{NAME}:v1")
    assert art(remote_store, f"{NAME}:latest").version == "v3"
    assert art(local, f"{NAME}:v3").version == "v3"
    objstore.pull(clone)
    clone3, _ = objstore.clone(str(remote), tmp_path / "clone3")
    for deleted in ("v0", "v1"):  # both deletions travelled (tests/test_transfer_deletions.py)
        with pytest.raises(objstore.errors.NotFound):
            art(clone3, f"{NAME}:{deleted}")
    assert art(clone3, f"{NAME}:v3").version == "v3"


def test_a_rebased_version_keeps_its_edits(tmp_path: Path, models: tuple[Path, Path]) -> None:
    local, remote = published(tmp_path, models)
    objstore.push(local)
    clone, _ = objstore.clone(str(remote), tmp_path / "clone")
    (tmp_path / "mine.bin").write_bytes(b"logged on the clone")
    (tmp_path / "theirs.bin").write_bytes(b"logged on the source")
    log(clone, tmp_path / "mine.bin")  # v2 here
    edit(clone, "clone's v2", ["mine"], spec=f"{NAME}:v2")
    log(local, tmp_path / "theirs.bin")  # v2 there
    objstore.push(local)
    pulled = objstore.pull(clone)
    assert pulled.renumbered == [(f"{NAME}:v2", f"{NAME}:v3")]
    assert art(clone, f"{NAME}:v3").description == "clone's v2" and art(clone, f"{NAME}:v3").tags == ["mine"]
    assert history(clone, f"{NAME}:v3") == [(1, ["description", "tags"])]
    assert art(clone, f"{NAME}:v2").tags == []  # the source's v2: none of the clone's edits
    objstore.push(clone)
    assert art(Store.open_existing(remote), f"{NAME}:v3").description == "clone's v2"
