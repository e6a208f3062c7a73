"""Deletions travel: a push deletes the remote's copy of a version deleted here,
a pull deletes the local copy of one deleted on the remote; never a
resurrection, numbers stay taken, ``latest`` moves back; refused (kept, said)
where the destination has an alias or a registry link on the version that the
deleting side did not know of. Against a local and an S3 remote, through the
CLI in subprocesses for one direction."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_transfer import objstore_cli
from transfer_support import ENTITY, PROJECT, aliases, assert_intact, log, make_models

import objstore
from objstore.model.store import Store
from objstore.storage.keys import version_ref
from objstore.transfer.remotes import open_store, remote_add

NAME = f"{ENTITY}/{PROJECT}/model"


@pytest.fixture
def models(tmp_path: Path) -> tuple[Path, Path]:
    return make_models(tmp_path / "models")


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def remote_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield str(tmp_path / "remote") if request.param == "local" else request.getfixturevalue("s3_bucket_url")


def gone(store: Store, spec: str) -> bool:
    try:
        objstore.Api(store=store).artifact(spec)
    except objstore.errors.NotFound:
        return True
    return False


def published(tmp_path: Path, models: tuple[Path, Path], url: str) -> Store:
    """A store with v0 (aliased best), v1 and v2 pushed to ``url``."""
    local = Store.open(tmp_path / "local")
    log(local, models[0], aliases=["best"])
    log(local, models[1])
    (tmp_path / "third.bin").write_bytes(b"a third model")
    log(local, tmp_path / "third.bin")
    remote_add(local, "origin", url)
    objstore.push(local)
    return local


def test_a_deletion_travels_both_ways_and_numbers_stay_taken(tmp_path: Path, models: tuple[Path, Path],
                                                            remote_url: str) -> None:
    local = published(tmp_path, models, remote_url)
    objstore.clone(remote_url, tmp_path / "clone")
    objstore.Api(store=local).artifact(f"{NAME}:v2").delete(delete_aliases=True)  # latest
    objstore.Api(store=local).artifact(f"{NAME}:v0").delete(delete_aliases=True)  # best: known to the remote
    pushed = objstore.push(local)
    remote = open_store(remote_url)
    assert gone(remote, f"{NAME}:v0") and gone(remote, f"{NAME}:v2") and gone(remote, f"{NAME}:best")
    assert aliases(remote) == {"latest": 1}
    assert pushed.kept == []
    assert objstore.push(local).refs == []  # done: nothing moves again

    # The other way, through the CLI in subprocesses: the clone deletes v1 too, pushes; local pulls.
    c = ["--store", str(tmp_path / "clone")]
    pulled = json.loads(objstore_cli(*c, "pull", "--json", cwd=tmp_path).stdout)
    assert pulled["kept"] == []
    clone = Store.open_existing(tmp_path / "clone")
    assert gone(clone, f"{NAME}:v0") and gone(clone, f"{NAME}:v2") and aliases(clone) == {"latest": 1}
    done = objstore_cli(*c, "delete", f"{NAME}:v1", "--delete-aliases", "--yes", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    done = objstore_cli(*c, "push", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    objstore.pull(local)
    assert all(gone(s, f"{NAME}:v{i}") for s in (local, remote, clone) for i in range(3))
    assert all(aliases(s) == {} for s in (local, remote, clone))
    # A new version takes the next number everywhere; pulling and pushing bring nothing back.
    (tmp_path / "fourth.bin").write_bytes(b"a fourth model")
    assert log(local, tmp_path / "fourth.bin").version == "v3"
    objstore.push(local)
    objstore.pull(clone)
    objstore.pull(local)
    for store in (local, remote, clone):
        assert [i for i in range(4) if not gone(store, f"{NAME}:v{i}")] == [3]
        assert aliases(store) == {"latest": 3}
        assert_intact(store)


def test_a_deletion_is_kept_where_the_destination_aliased_it_since(tmp_path: Path, models: tuple[Path, Path],
                                                                    remote_url: str, capfd: pytest.CaptureFixture[str],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OBJSTORE_QUIET", raising=False)  # the kept deletion is said on stderr
    local = published(tmp_path, models, remote_url)
    remote = open_store(remote_url)
    theirs = objstore.Api(store=remote).artifact(f"{NAME}:v1")
    theirs.aliases.append("prod")  # set on the remote by someone else: not known here
    theirs.save()
    objstore.Api(store=local).artifact(f"{NAME}:v1").delete()
    capfd.readouterr()
    pushed = objstore.push(local)
    assert [k for k in pushed.kept if "/versions/" in k] == [f"refs/{NAME}/versions/v1"]
    assert "model:v1" in capfd.readouterr().err
    assert objstore.Api(store=remote).artifact(f"{NAME}:prod").version == "v1"
    assert gone(local, f"{NAME}:v1")  # and not brought back by a pull
    objstore.pull(local)
    assert gone(local, f"{NAME}:v1")
    # Once the alias is gone there, the next push deletes it.
    prod = objstore.Api(store=remote).artifact(f"{NAME}:v1")
    prod.aliases.remove("prod")
    prod.save()
    capfd.readouterr()
    objstore.push(local)
    assert gone(remote, f"{NAME}:v1")
    assert f"carried the deletion of {NAME}:v1 to " in capfd.readouterr().err  # said, as git push says "- [deleted]"

    # Pull: an alias set here on a version the remote deleted keeps it here.
    clone, _ = objstore.clone(remote_url, tmp_path / "clone")
    mine = objstore.Api(store=clone).artifact(f"{NAME}:v2")
    mine.aliases.append("mine")
    mine.save()
    objstore.Api(store=remote).artifact(f"{NAME}:v2").delete(delete_aliases=True)
    pulled = objstore.pull(clone)
    assert pulled.kept == [f"refs/{NAME}/versions/v2"]
    assert objstore.Api(store=clone).artifact(f"{NAME}:mine").version == "v2"
    # Pushing the alias would name the version the remote deleted: kept here, and no digest ref goes back.
    pushed = objstore.push(clone)
    assert pushed.kept == [f"refs/{NAME}/aliases/mine"] and pushed.refs == []
    assert gone(remote, f"{NAME}:mine") and gone(remote, f"{NAME}:v2")
    assert gone(remote, f"{NAME}:{objstore.Api(store=clone).artifact(f'{NAME}:v2').digest}")
    mine = objstore.Api(store=clone).artifact(f"{NAME}:v2")
    mine.aliases.remove("mine")
    mine.save()
    objstore.pull(clone)
    assert gone(clone, f"{NAME}:v2") and aliases(clone) == {"latest": 0, "best": 0}
    for store in (local, remote, clone):
        assert_intact(store)


def test_a_registry_link_goes_first_and_an_unknown_one_keeps_the_version(tmp_path: Path, models: tuple[Path, Path],
                                                                         remote_url: str) -> None:
    local = Store.open(tmp_path / "local")
    log(local, models[0], link="Reg")
    log(local, models[1])
    remote_add(local, "origin", remote_url)
    objstore.push(local)
    remote = open_store(remote_url)
    api = objstore.Api(store=local)
    api.artifact(f"{ENTITY}/model-registry/Reg:v0").unlink()
    api.artifact(f"{NAME}:v0").delete()
    objstore.push(local)
    assert gone(remote, f"{ENTITY}/model-registry/Reg:v0") and gone(remote, f"{NAME}:v0")

    # Linked on the remote only: the version stays there.
    with objstore.init(project=PROJECT, entity=ENTITY, store=remote) as run:
        run.link_artifact(objstore.Api(store=remote).artifact(f"{NAME}:v1"), f"{ENTITY}/model-registry/Other")
    objstore.Api(store=local).artifact(f"{NAME}:v1").delete(delete_aliases=True)
    pushed = objstore.push(local)
    assert pushed.kept == [f"refs/{NAME}/versions/v1"]
    assert not gone(remote, f"{NAME}:v1")
    assert_intact(remote)
    assert_intact(local)


def test_ls_omits_a_collection_whose_versions_are_all_deleted(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s")
    (tmp_path / "a.bin").write_bytes(b"a")
    (tmp_path / "b.bin").write_bytes(b"b")
    log(store, tmp_path / "a.bin")
    log(store, tmp_path / "b.bin")
    log(store, tmp_path / "a.bin", name="other")
    s = ["--store", str(tmp_path / "s")]
    done = objstore_cli(*s, "delete", f"{NAME}:v0", "--yes", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    listed = json.loads(objstore_cli(*s, "ls", f"{ENTITY}/{PROJECT}", "--json", cwd=tmp_path).stdout)
    assert [c["name"] for c in listed["collections"]] == ["model", "other"]  # one version left
    done = objstore_cli(*s, "delete", f"{NAME}:v1", "--delete-aliases", "--yes", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    listed = json.loads(objstore_cli(*s, "ls", f"{ENTITY}/{PROJECT}", "--json", cwd=tmp_path).stdout)
    assert [c["name"] for c in listed["collections"]] == ["other"]
    projects = json.loads(objstore_cli(*s, "ls", "--json", cwd=tmp_path).stdout)["projects"]
    assert projects == [{"entity": ENTITY, "project": PROJECT, "collections": 1}]
    assert [c.name for c in objstore.Api(store=store).artifact_collections(f"{ENTITY}/{PROJECT}")] == ["other"]
    objstore.Api(store=store).artifact(f"{ENTITY}/{PROJECT}/other:v0").delete(delete_aliases=True)
    assert json.loads(objstore_cli(*s, "ls", "--json", cwd=tmp_path).stdout)["projects"] == []
    # Its numbers stay taken: logging again goes on after them, and it is listed again.
    assert log(store, tmp_path / "a.bin").version == "v2"
    assert [c.name for c in objstore.Api(store=store).artifact_collections(f"{ENTITY}/{PROJECT}")] == ["model"]


def test_a_deleted_collection_travels_both_ways_and_its_numbers_stay_taken(tmp_path: Path, models: tuple[Path, Path],
                                                                           remote_url: str) -> None:
    local = published(tmp_path, models, remote_url)
    clone, _ = objstore.clone(remote_url, tmp_path / "clone")
    collection = objstore.Api(store=clone).artifact_collection("model", NAME)
    collection.description = "the base and its fine-tunes"
    collection.save()
    objstore.push(clone)
    objstore.pull(local)
    objstore.Api(store=local).artifact_collection("model", NAME).delete()
    assert objstore.push(local).kept == []
    remote = open_store(remote_url)
    assert all(gone(remote, f"{NAME}:v{i}") for i in range(3)) and aliases(remote) == {}
    assert not objstore.Api(store=remote).artifact_collection_exists(NAME, "model")
    assert objstore.pull(clone).kept == []
    assert not objstore.Api(store=clone).artifact_collection_exists(NAME, "model")
    assert list(clone.backend.iter_prefix("annotations/")) == []  # its description went with it
    (tmp_path / "again.bin").write_bytes(b"logged again")
    assert log(clone, tmp_path / "again.bin").version == "v3"  # never v0 again: v0 named another content
    objstore.push(clone)
    objstore.pull(local)
    assert objstore.Api(store=local).artifact(f"{NAME}:latest").version == "v3"
    assert_intact(local)
    assert_intact(remote)


def test_a_push_to_a_remote_name_added_since_the_deletion_carries_it(tmp_path: Path, models: tuple[Path, Path],
                                                                     remote_url: str) -> None:
    local = published(tmp_path, models, remote_url)
    objstore.Api(store=local).artifact(f"{NAME}:v1").delete()
    remote_add(local, "again", remote_url)  # no tracking state under this name
    assert objstore.push(local, "again").kept == []
    assert gone(open_store(remote_url), f"{NAME}:v1")


def test_a_pull_takes_a_deletion_whose_object_gc_reclaimed_there(tmp_path: Path, models: tuple[Path, Path],
                                                                  remote_url: str) -> None:
    from objstore.maintenance.gc import collect_garbage

    local = published(tmp_path, models, remote_url)
    sibling, _ = objstore.clone(str(tmp_path / "local"), tmp_path / "sibling")  # holds v1, never saw the remote
    remote = open_store(remote_url)
    objstore.Api(store=remote).artifact(f"{NAME}:v1").delete()
    collect_garbage(remote, grace_seconds=0)
    collect_garbage(remote, grace_seconds=0)
    held = sibling.refs.read(version_ref(ENTITY, PROJECT, "model", 1))
    assert held is not None and not remote.odb.has_object(held)
    remote_add(sibling, "hub", remote_url)
    pulled = objstore.pull(sibling, "hub")
    assert pulled.kept == [] and pulled.renumbered == []  # not brought back as a new number either
    assert gone(sibling, f"{NAME}:v1") and aliases(sibling) == {"latest": 2, "best": 0}
    assert_intact(sibling)
    assert local.refs.read(version_ref(ENTITY, PROJECT, "model", 1)) == held  # the source still has it
