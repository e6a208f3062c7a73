"""Porting from W&B, editable annotations: a logged version's description, metadata,
tags and ttl change with ``save()`` and persist; its content and digest do not;
every edit is in its history; edits from many processes at once all land."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest

import objstore
from objstore import errors
from objstore.model.annotations import Edit, annotation_history, edit_annotations, read_annotations
from objstore.model.names import parse_version_spec
from objstore.model.store import Store
from objstore.model.versions import resolve
from objstore.storage.keys import ANNOTATIONS, annotation_key, parse_annotation_key


@pytest.fixture
def store(tmp_path: Path) -> Path:
    (tmp_path / "m.bin").write_bytes(b"weights")
    with objstore.init(entity="e", project="p", store=tmp_path / "s") as run:
        run.log_model(str(tmp_path / "m.bin"), name="m", metadata={"a": 1, "b": 2}, description="first")
    return tmp_path / "s"


def api_artifact(store: Path, name: str = "e/p/m:v0") -> objstore.Artifact:
    return objstore.Api(store=store).artifact(name)


def test_description_metadata_tags_and_ttl_persist_with_save(store: Path) -> None:
    art = api_artifact(store)
    digest, files = art.digest, art.files()
    art.description = "second"
    art.metadata["c"] = [1, 2]
    del art.metadata["a"]
    art.tags = ["candidate", "small model"]
    art.ttl = timedelta(days=3)
    art.save()
    again = api_artifact(store)
    assert again.description == "second"
    assert again.metadata == {"b": 2, "c": [1, 2]}
    assert again.tags == ["candidate", "small model"]
    assert again.ttl == timedelta(days=3)
    assert (again.digest, again.files()) == (digest, files)  # content is immutable
    # The version object itself is untouched: its logged values are still there.
    s = Store.open_existing(store)
    version = resolve(s, parse_version_spec("e/p/m:v0", entity=None, project=None)).version
    assert (version.description, version.metadata) == ("first", {"a": 1, "b": 2})


def test_the_history_says_who_when_old_and_new(store: Path) -> None:
    art = api_artifact(store)
    before = time.time()
    art.description = "second"
    art.save()
    art.metadata["b"] = 3
    art.tags = ["x"]
    art.save()
    art.save()  # nothing changed: no entry
    history = api_artifact(store).annotation_history()
    assert [h.revision for h in history] == [1, 2]
    assert [(c.field, c.old, c.new) for c in history[0].changes] == [("description", "first", "second")]
    assert {(c.field, json.dumps(c.old), json.dumps(c.new)) for c in history[1].changes} == {
        ("metadata.b", "2", "3"), ("tags", "[]", '["x"]')}
    assert all(h.when >= before - 1 and "@" in h.who for h in history)


def test_a_fresh_version_has_no_tags_an_inherited_ttl_and_no_history(store: Path) -> None:
    art = api_artifact(store)
    assert art.tags == [] and art.ttl is None and art.annotation_history() == []


def test_stale_objects_do_not_undo_other_edits(store: Path) -> None:
    first, second = api_artifact(store), api_artifact(store)
    first.metadata["x"] = 1
    first.tags = ["one"]
    first.save()
    second.metadata["y"] = 2  # loaded before first saved: its other keys are not written back
    second.tags = ["two"]
    second.save()
    shown = api_artifact(store)
    assert shown.metadata == {"a": 1, "b": 2, "x": 1, "y": 2}
    assert shown.tags == ["one", "two"]
    assert second.metadata == shown.metadata  # save re-reads


def test_draft_ttl_is_stored_when_logged_and_w_and_b_ttl_rules(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    art = objstore.Artifact("d", type="dataset")
    with pytest.raises(errors.ArtifactNotLoggedError):
        art.ttl  # inherited, unknown before logging (W&B)
    with pytest.raises(errors.ArtifactNotLoggedError):
        art.tags = ["x"]  # W&B: tags are a logged version's
    with pytest.raises(ValueError, match="positive"):
        art.ttl = timedelta(seconds=0)
    with pytest.raises(errors.InvalidInput):
        art.ttl = 3600  # type: ignore[assignment]
    art.ttl = timedelta(hours=2)
    assert art.ttl == timedelta(hours=2)
    art.add_file(tmp_path / "f")
    with objstore.init(entity="e", project="p", store=tmp_path / "s") as run:
        run.log_artifact(art)
    assert art.ttl == timedelta(hours=2)
    again = objstore.Api(store=tmp_path / "s").artifact("e/p/d:v0")
    assert again.ttl == timedelta(hours=2)
    again.ttl = objstore.ArtifactTTL.INHERIT
    with pytest.raises(errors.ArtifactNotLoggedError):
        again.ttl  # changed to inherit, not saved yet
    again.save()
    assert again.ttl is None
    again.ttl = None
    again.save()
    assert objstore.Api(store=tmp_path / "s").artifact("e/p/d:v0").ttl is None


@pytest.mark.parametrize("tags", [["bad/tag"], ["a:b"], [""], [" lead"], ["trail "], [3]])
def test_bad_tags_are_refused_before_anything_is_written(store: Path, tags: list[object]) -> None:
    art = api_artifact(store)
    art.description = "never saved"
    with pytest.raises(errors.InvalidName):
        art.tags = tags  # type: ignore[assignment]
        art.save()
    assert api_artifact(store).description == "first"


def test_bad_metadata_or_description_on_save_writes_nothing(store: Path) -> None:
    art = api_artifact(store)
    art.aliases.append("best")
    art.metadata["bad"] = object()  # nothing W&B's conversion turns into JSON
    with pytest.raises(errors.InvalidInput):
        art.save()
    art = api_artifact(store)
    assert "best" not in art.aliases and "bad" not in art.metadata
    art.metadata["ids"] = {2}  # converted as W&B converts it (a set becomes a list), then stored
    art.save()
    assert api_artifact(store).metadata["ids"] == [2]
    art = api_artifact(store)
    art.description = 5  # type: ignore[assignment]
    with pytest.raises(errors.InvalidInput):
        art.save()


def test_a_link_shows_and_edits_its_versions_annotations_but_refuses_a_ttl(tmp_path: Path) -> None:
    (tmp_path / "m.bin").write_bytes(b"w")
    with objstore.init(entity="e", project="p", store=tmp_path / "s") as run:
        run.link_model(str(tmp_path / "m.bin"), "Reg", name="m")
    api = objstore.Api(store=tmp_path / "s")
    link = api.artifact("e/model-registry/Reg:v0")
    link.tags = ["prod"]
    link.save()
    assert api.artifact("e/p/m:v0").tags == ["prod"]  # W&B: edits the source
    with pytest.raises(ValueError, match="link"):
        link.ttl = timedelta(days=1)


def test_a_stale_state_of_a_deleted_collection_is_not_shown(store: Path, tmp_path: Path) -> None:
    art = api_artifact(store)
    art.tags = ["old"]
    art.save()
    s = Store.open_existing(store)
    state = s.backend.get(annotation_key("e", "p", "m", 0))
    from objstore.model.deletion import delete_collection
    delete_collection(s, parse_version_spec("e/p/m", entity=None, project=None).collection)
    (tmp_path / "n.bin").write_bytes(b"other")
    with objstore.init(entity="e", project="p", store=store) as run:
        run.log_model(str(tmp_path / "n.bin"), name="m")
    # The name logged again goes on from v1 (v0 stays taken). A state naming another
    # object at its number, as a crash or an older store could leave, is stale.
    s.backend.put(annotation_key("e", "p", "m", 1), state)
    fresh = api_artifact(store, "e/p/m:v1")
    assert fresh.tags == [] and fresh.annotation_history() == []
    fresh.tags = ["new"]
    fresh.save()
    fresh.description = "again"
    fresh.save()
    history = api_artifact(store, "e/p/m:v1").annotation_history()  # the stale state's entries are not among them
    assert [[(c.field, c.old, c.new) for c in h.changes] for h in history] == [
        [("tags", [], ["new"])], [("description", None, "again")]]


def test_annotation_keys_parse_back() -> None:
    key = annotation_key("e", "p", "m", 12)
    assert key.startswith(ANNOTATIONS)
    parsed = parse_annotation_key(key)
    assert parsed is not None and (parsed.entity, parsed.project, parsed.name, parsed.index) == ("e", "p", "m", 12)
    assert parse_annotation_key("annotations/e/p/m/v01/state") is None
    assert parse_annotation_key("refs/e/p/m/versions/v1") is None


def test_a_history_entry_lost_in_a_crash_is_written_by_the_next_edit(store: Path) -> None:
    s = Store.open_existing(store)
    entry = resolve(s, parse_version_spec("e/p/m:v0", entity=None, project=None))
    edit_annotations(s, entry, Edit(tags_add=("a",)))
    log_keys = [i.key for i in s.backend.iter_prefix(ANNOTATIONS) if "/log/" in i.key]
    s.backend.delete(log_keys[0])  # the writer died after its swap, before its log entry
    assert [h.revision for h in annotation_history(s, entry)] == [1]  # the state keeps its last edit
    edit_annotations(s, entry, Edit(tags_add=("b",)))
    assert len([i for i in s.backend.iter_prefix(ANNOTATIONS) if "/log/" in i.key]) == 2
    assert [h.revision for h in annotation_history(s, entry)] == [1, 2]
    assert read_annotations(s, entry).tags == ("a", "b")


EDITOR = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    import objstore
    store, go, i, rounds = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    while not go.exists():
        time.sleep(0.001)
    for r in range(rounds):
        art = objstore.Api(store=store).artifact("e/p/m:v0")
        art.metadata[f"w{i}-{r}"] = r
        art.tags = art.tags + [f"t{i}-{r}"]
        art.description = f"by {i} round {r}"
        art.save()
''')


def _edit_race(store: str, tmp_path: Path, writers: int = 4, rounds: int = 3) -> None:
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", EDITOR, store, str(go), str(i), str(rounds)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
             for i in range(writers)]
    time.sleep(1.0)
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    art = objstore.Api(store=store).artifact("e/p/m:v0")
    want = {f"w{i}-{r}" for i in range(writers) for r in range(rounds)}
    assert want <= set(art.metadata), "an edit was lost"
    assert {f"t{i}-{r}" for i in range(writers) for r in range(rounds)} == set(art.tags)
    history = art.annotation_history()
    assert [h.revision for h in history] == list(range(1, len(history) + 1))
    # each save changed at least its own metadata key: one entry each, none lost
    assert len(history) == writers * rounds
    assert {c.field for h in history for c in h.changes if c.field.startswith("metadata.")} == {f"metadata.{k}" for k in want}


def _log_one(store: str, tmp_path: Path) -> None:
    (tmp_path / "m.bin").write_bytes(b"weights")
    with objstore.init(entity="e", project="p", store=store) as run:
        run.log_model(str(tmp_path / "m.bin"), name="m")


def test_concurrent_edits_from_processes_all_land_local(tmp_path: Path) -> None:
    store = str(tmp_path / "s")
    _log_one(store, tmp_path)
    _edit_race(store, tmp_path)


@pytest.mark.s3
def test_concurrent_edits_from_processes_all_land_s3(s3_bucket_url: str, tmp_path: Path) -> None:
    _log_one(s3_bucket_url, tmp_path)
    _edit_race(s3_bucket_url, tmp_path, writers=3, rounds=2)


def test_updated_at_is_the_last_annotation_edit_or_alias_move(tmp_path: Path) -> None:
    """W&B's ``updated_at``: the server's last change of the version; here an
    annotation edit or an alias moved onto or off it, not ``latest`` moving on."""
    import datetime as dt

    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "b").write_bytes(b"b")
    s = tmp_path / "store"
    with objstore.init(entity="e", project="p", store=s) as run:
        run.log_model(str(tmp_path / "a"), name="m")
    v0 = objstore.Api(store=s).artifact("e/p/m:v0")
    assert v0.updated_at == v0.created_at

    def updated() -> dt.datetime:
        return dt.datetime.fromisoformat(objstore.Api(store=s).artifact("e/p/m:v0").updated_at)

    time.sleep(0.05)
    v0.description = "edited"
    v0.save()
    after_edit = updated()
    assert after_edit > dt.datetime.fromisoformat(v0.created_at)
    assert after_edit.timestamp() == pytest.approx(v0.annotation_history()[-1].when, abs=1e-5)
    time.sleep(0.05)
    v0.aliases.append("best")
    v0.save()
    after_alias = updated()
    assert after_alias > after_edit
    time.sleep(0.05)
    with objstore.init(entity="e", project="p", store=s) as run:
        run.log_model(str(tmp_path / "b"), name="m", aliases=["best"])  # best moves off v0; latest too
    after_move = updated()
    assert after_move > after_alias
    time.sleep(0.05)
    with objstore.init(entity="e", project="p", store=s) as run:
        run.log_model(str(tmp_path / "a"), name="m2")
    assert updated() == after_move  # nothing of v0 changed
    v1 = objstore.Api(store=s).artifact("e/p/m:v1")
    assert dt.datetime.fromisoformat(v1.updated_at) >= dt.datetime.fromisoformat(v1.created_at)
