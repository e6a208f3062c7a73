"""A collection's own description and tags beyond one store and one object:
carried by push, pull and clone (forward only, as a version's annotations),
their edit history on ``ArtifactCollection``, the ``objstore annotations
--collection`` command, and ``save()`` racing ``delete_collection`` (nothing
left behind: a save that lands after the deletion is undone and says so)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_transfer import objstore_cli
from transfer_support import ENTITY, PROJECT, log

import objstore
from objstore.model.store import Store
from objstore.storage import keys
from objstore.transfer.remotes import open_store, remote_add

NAME = f"{ENTITY}/{PROJECT}/model"


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def remote_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    yield str(tmp_path / "remote") if request.param == "local" else request.getfixturevalue("s3_bucket_url")


def coll(store: Store | Path, name: str = NAME) -> objstore.api.public.ArtifactCollection:
    return objstore.Api(store=store).artifact_collection("model", name)


def edit(store: Store | Path, description: str | None, tags: list[str], name: str = NAME) -> None:
    c = coll(store, name)
    c.description, c.tags = description, tags
    c.save()


def shown(store: Store | Path, name: str = NAME) -> tuple[str | None, list[str], list[int]]:
    c = coll(store, name)
    return c.description, c.tags, [e.revision for e in c.annotation_history()]


def small(tmp_path: Path, text: str) -> Path:
    path = tmp_path / f"{abs(hash(text))}.bin"
    path.write_bytes(text.encode())
    return path


def test_push_clone_and_pull_carry_a_collections_description_and_tags(tmp_path: Path, remote_url: str) -> None:
    local = Store.open(tmp_path / "local")
    log(local, small(tmp_path, "v0"), link="Reg")
    remote_add(local, "origin", remote_url)
    edit(local, "the model", ["a"])
    edit(local, "the model", ["a", "b"])
    edit(local, "registered", ["prod"], name=f"{ENTITY}/model-registry/Reg")
    pushed = objstore.push(local)
    remote = open_store(remote_url)
    assert shown(remote) == ("the model", ["a", "b"], [1, 2])
    assert shown(remote, f"{ENTITY}/model-registry/Reg") == ("registered", ["prod"], [1])
    assert keys.collection_annotation_key(ENTITY, PROJECT, "model") in pushed.annotations
    clone, _ = objstore.clone(remote_url, tmp_path / "clone")
    assert shown(clone) == ("the model", ["a", "b"], [1, 2])

    edit(local, "newer", ["a", "b"])
    objstore.push(local)
    pulled = objstore.pull(clone)
    assert shown(clone) == ("newer", ["a", "b"], [1, 2, 3]) and pulled.kept == []
    assert objstore.pull(clone).annotations == []  # nothing new: nothing moves

    # A newer edit at the destination stays; edits on both sides: the later wins.
    edit(clone, "clone's", ["c"])
    assert objstore.pull(clone).kept == []
    assert shown(clone)[0] == "clone's"
    edit(local, "local's", ["a"])
    objstore.push(local)
    pulled = objstore.pull(clone)
    assert pulled.kept == [] and shown(clone)[:2] == ("local's", ["a"])
    assert shown(remote)[0] == "local's"
    edit(clone, "clone's, later", ["c"])
    edit(local, "local's again", ["a"])  # later still: it wins wherever it meets the clone's
    objstore.push(clone)
    assert shown(remote)[0] == "clone's, later"
    assert objstore.pull(local).kept == [keys.collection_annotation_key(ENTITY, PROJECT, "model")]  # later here
    assert objstore.push(local).kept == [] and shown(remote)[0] == "local's again"
    assert objstore.pull(clone).kept == [] and shown(clone)[:2] == ("local's again", ["a"])


def test_collections_described_apart_settle_by_the_later_edit(tmp_path: Path) -> None:
    """Two stores that each described a collection first have two histories (two
    state ids), never fast-forwarded: the later edit wins, and equal fields are quiet."""
    a = Store.open(tmp_path / "a")
    log(a, small(tmp_path, "v0"))
    remote_add(a, "origin", str(tmp_path / "remote"))
    objstore.push(a)
    b, _ = objstore.clone(str(tmp_path / "remote"), tmp_path / "b")
    edit(a, "same", ["t"])
    edit(b, "same", ["t"])
    objstore.push(a)
    assert objstore.pull(b).kept == []  # the same fields: nothing to say
    edit(a, "a's", ["t"])
    objstore.push(a)
    assert objstore.pull(b).kept == []
    assert shown(b)[:2] == ("a's", ["t"])
    edit(b, "b's", ["u"])
    assert objstore.pull(b).kept == [keys.collection_annotation_key(ENTITY, PROJECT, "model")]  # later here
    assert shown(b)[:2] == ("b's", ["u"])


def test_collection_history_and_the_annotations_command(tmp_path: Path) -> None:
    store = tmp_path / "store"
    log(Store.open(store), small(tmp_path, "v0"))
    s = ["--store", str(store)]
    done = objstore_cli(*s, "annotations", NAME, "--collection", "--description", "from the CLI", "--tag", "x",
                        "--tag", "y", "--json", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    data = json.loads(done.stdout)
    assert (data["collection"], data["description"], data["tags"]) == (NAME, "from the CLI", ["x", "y"])
    assert [(h["revision"], [c["field"] for c in h["changes"]]) for h in data["history"]] == [(1, ["description", "tags"])]
    done = objstore_cli(*s, "annotations", NAME, "--collection", "--untag", "x", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "tags        y" in done.stdout and "r2" in done.stdout
    history = coll(store).annotation_history()
    assert [e.revision for e in history] == [1, 2] and history[1].changes[0].old == ["x", "y"]
    # A version's too, through the same options; the collection's stay apart.
    done = objstore_cli(*s, "annotations", f"{NAME}:v0", "--tag", "v-tag", "--json", cwd=tmp_path)
    assert json.loads(done.stdout)["tags"] == ["v-tag"]
    assert objstore.Api(store=store).artifact(f"{NAME}:v0").tags == ["v-tag"] and coll(store).tags == ["y"]
    for bad in (["annotations", f"{NAME}:v0", "--collection"], ["annotations", f"{ENTITY}/{PROJECT}/nope", "--collection"],
                ["annotations", NAME, "--collection", "--tag", "not ok!"]):
        done = objstore_cli(*s, *bad, cwd=tmp_path)
        assert done.returncode != 0 and done.stderr.count("\n") == 1 and "error" in done.stderr, (bad, done.stderr)
    assert coll(store).tags == ["y"]


def test_a_save_after_the_collection_was_deleted_leaves_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    log(Store.open(store), small(tmp_path, "v0"))
    stale = coll(store)  # read before the deletion
    coll(store).delete()
    stale.description, stale.tags = "too late", ["late"]
    with pytest.raises(objstore.errors.NotFound, match="deleted"):
        stale.save()
    s = Store.open_existing(store)
    assert list(s.backend.iter_prefix(keys.annotations_prefix(ENTITY, PROJECT, "model"))) == []
    log(s, small(tmp_path, "again"))
    assert shown(store) == (None, [], [])


SAVER = textwrap.dedent("""
    import sys, objstore
    store, name, who, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    for i in range(n):
        try:
            c = objstore.Api(store=store).artifact_collection("model", name)
            c.tags = c.tags + [f"{who}-{i}"]
            c.description = f"{who} {i}"
            c.save()
        except objstore.errors.NotFound:
            print("deleted", flush=True)
            break
    print("done", flush=True)
""")

DELETER = textwrap.dedent("""
    import sys, time, objstore
    store, name, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    time.sleep(delay)
    objstore.Api(store=store).artifact_collection("model", name).delete()
    print("deleted", flush=True)
""")


@pytest.mark.parametrize("delay", [0.0, 0.3, 0.8])
def test_saves_racing_delete_collection_leave_nothing_behind(tmp_path: Path, delay: float) -> None:
    store = tmp_path / "store"
    log(Store.open(store), small(tmp_path, "v0"))
    savers = [subprocess.Popen([sys.executable, "-c", SAVER, str(store), NAME, f"s{i}", "40"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    deleter = subprocess.run([sys.executable, "-c", DELETER, str(store), NAME, str(delay)],
                             capture_output=True, text=True, timeout=120, check=False)
    assert deleter.returncode == 0, deleter.stderr
    for p in savers:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0 and out.strip().endswith("done"), err
    s = Store.open_existing(store)
    # The outcome is clear: the collection is gone, and so is everything it had.
    assert not objstore.Api(store=store).artifact_collection_exists(NAME, type="model")
    assert list(s.backend.iter_prefix(keys.annotations_prefix(ENTITY, PROJECT, "model"))) == []
    log(s, small(tmp_path, "again"))
    assert shown(store) == (None, [], [])
