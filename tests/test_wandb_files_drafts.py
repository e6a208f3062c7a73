"""Porting from W&B: per-file access, the draft lifecycle, and the public Api's shape.

- ``get_entry``/``get_path``, ``manifest.entries``, ``files(names=)``, ``file()``,
  ``download(path_prefix=)`` and ``entry.download()`` write only what was asked for
  (the other files' chunks are not even read: they are deleted from the store first);
- ``download()``/``use_model()`` return absolute paths under ``$OBJSTORE_ARTIFACT_DIR``,
  else ``$WANDB_ARTIFACT_DIR``, else ``./artifacts``; ``use_model`` of one top-level
  entry returns it, a file or a directory (as W&B, which lists the download);
- drafts: ``wait``, ``new_draft``, ``remove``, re-adding the same bytes, logging on
  ``use_artifact``/``link_artifact``, ``Artifact.link``; ``use_artifact(aliases=)``;
- ``Api(overrides=)``, collections, types, runs, projects; version properties;
- errors by W&B's names (``CommError`` for what is missing).
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

import objstore
from objstore import errors
from objstore.model.annotations import Change, collection_annotation_history
from objstore.storage import keys


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    d = tmp_path / "model"
    (d / "sub").mkdir(parents=True)
    (d / "config.json").write_text('{"layers": 2}')
    (d / "weights.bin").write_bytes(os.urandom(300_000))
    (d / "sub" / "a.txt").write_text("a")
    (d / "sub" / "b.txt").write_text("b")
    return d


@pytest.fixture
def logged(tmp_path: Path, model_dir: Path) -> objstore.Artifact:
    with objstore.init(entity="e", project="p", store=tmp_path / "store") as run:
        art = objstore.Artifact("m", type="model")
        art.add_dir(str(model_dir))
        return run.log_artifact(art)


def _bytes_read(store: Path, fn: Callable[[objstore.Artifact], object]) -> int:
    """Bytes the store's backend returned while ``fn`` ran on a freshly opened copy of e/p/m:v0."""
    api = objstore.Api(store)
    art = api.artifact("e/p/m:v0")
    before = api.store.backend.stats.bytes_received
    fn(art)
    return api.store.backend.stats.bytes_received - before


def test_entries_manifest_and_files(logged: objstore.Artifact) -> None:
    entries = logged.manifest.entries
    assert sorted(entries) == ["config.json", "sub/a.txt", "sub/b.txt", "weights.bin"]
    assert entries["weights.bin"].size == 300_000 and entries["weights.bin"].digest
    assert logged.get_entry("sub/a.txt") == logged.get_path("sub/a.txt")
    assert logged.get_entry("sub/a.txt").ref_url().endswith("/sub/a.txt")
    with pytest.raises(KeyError):
        logged.get_entry("nope")
    assert [(f.name, f.size) for f in logged.files(names=["sub/b.txt", "config.json"])] == [("config.json", 13), ("sub/b.txt", 1)]
    assert logged.file_count == 4
    with pytest.raises(ValueError, match="holds 4 files"):
        logged.file()
    with pytest.raises(errors.ArtifactNotLoggedError):
        objstore.Artifact("x", type="t").get_entry("a")


def test_partial_downloads_read_only_what_was_asked_for(logged: objstore.Artifact, tmp_path: Path) -> None:
    small = logged.get_entry("sub/a.txt").download(str(tmp_path / "one"))
    assert small == str(tmp_path / "one" / "sub" / "a.txt") and Path(small).read_text() == "a"
    assert sorted(p.name for p in (tmp_path / "one").rglob("*") if p.is_file()) == ["a.txt"]
    root = logged.download(str(tmp_path / "sub"), path_prefix="sub/")
    assert sorted(p.relative_to(root).as_posix() for p in Path(root).rglob("*") if p.is_file()) == ["sub/a.txt", "sub/b.txt"]
    # weights.bin is 300 kB of random bytes: a download that read it would show them.
    store = tmp_path / "store"
    everything = _bytes_read(store, lambda a: a.download(str(tmp_path / "all")))
    assert everything > 300_000
    assert _bytes_read(store, lambda a: a.get_entry("config.json").download(str(tmp_path / "c"))) < 100_000
    assert _bytes_read(store, lambda a: a.download(str(tmp_path / "p"), path_prefix="sub")) < 100_000
    assert _bytes_read(store, lambda a: a.download(str(tmp_path / "w"), path_prefix="weights")) > 300_000


def test_downloads_are_absolute_and_honour_the_artifact_dir_variables(logged: objstore.Artifact, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert logged.download() == str(tmp_path / "artifacts" / "m:v0")
    monkeypatch.setenv("WANDB_ARTIFACT_DIR", "wb")
    assert logged.download() == str(tmp_path / "wb" / "m:v0")
    monkeypatch.setenv("OBJSTORE_ARTIFACT_DIR", str(tmp_path / "ours"))
    assert logged.download() == str(tmp_path / "ours" / "m:v0")
    assert Path(logged.get_entry("config.json").download()).read_text() == '{"layers": 2}'
    monkeypatch.chdir(tmp_path / "ours")
    assert logged.download("rel") == str(tmp_path / "ours" / "rel")


def test_use_model_returns_the_one_top_level_entry(tmp_path: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with objstore.init(entity="e", project="p", store=tmp_path / "store") as run:
        run.log_model(str(model_dir / "config.json"), name="one-file")
        one_dir = objstore.Artifact("one-dir", type="model")
        one_dir.add_dir(str(model_dir / "sub"), name="sub")
        run.log_artifact(one_dir)
        run.log_model(str(model_dir), name="many")
        assert run.use_model("one-file") == str(tmp_path / "artifacts" / "one-file:v0" / "config.json")
        assert run.use_model("one-dir") == str(tmp_path / "artifacts" / "one-dir:v0" / "sub")
        assert run.use_model("many") == str(tmp_path / "artifacts" / "many:v0")
        single = objstore.Api(tmp_path / "store", entity="e", project="p").artifact("one-file")
        assert single.file(str(tmp_path / "f")) == str(tmp_path / "f" / "config.json")


def test_draft_lifecycle(tmp_path: Path, model_dir: Path) -> None:
    with objstore.init(entity="e", project="p", store=tmp_path / "store") as run:
        art = objstore.Artifact("d", type="dataset")
        with pytest.raises(errors.ArtifactNotLoggedError):
            art.wait()
        art.add_file(str(model_dir / "config.json"))
        art.add_file(str(model_dir / "config.json"))  # the same bytes again: nothing changes
        (tmp_path / "other.json").write_text("other")
        with pytest.raises(errors.InvalidInput, match="overwrite"):
            art.add_file(str(tmp_path / "other.json"), name="config.json")
        art.add_dir(str(model_dir / "sub"), name="sub")
        art.remove("sub/b.txt")
        with pytest.raises(FileNotFoundError):
            art.remove("nothing")
        assert sorted(art.manifest.entries) == ["config.json", "sub/a.txt"]
        assert art.state == "PENDING"
        run.log_artifact(art)
        assert art.wait() is art and art.state == "COMMITTED"
        with pytest.raises(errors.ArtifactFinalizedError):
            art.remove("config.json")

        draft = art.new_draft()
        assert draft.is_draft() and draft.name == "d" and sorted(draft.manifest.entries) == ["config.json", "sub/a.txt"]
        draft.remove("sub")
        draft.add_file(str(tmp_path / "other.json"))
        v1 = run.log_artifact(draft)
        assert v1.version == "v1" and sorted(v1.manifest.entries) == ["config.json", "other.json"]
        assert Path(v1.download(str(tmp_path / "v1"))).joinpath("config.json").read_text() == '{"layers": 2}'

        # use_artifact / link_artifact of a draft log it first
        used = objstore.Artifact("u", type="dataset")
        used.add_file(str(tmp_path / "other.json"))
        assert run.use_artifact(used, aliases=["picked"]).version == "v0"
        assert "picked" in objstore.Api(tmp_path / "store").artifact("e/p/u:latest").aliases
        linked_draft = objstore.Artifact("l", type="model")
        linked_draft.add_file(str(model_dir / "config.json"))
        link = run.link_artifact(linked_draft, "Registered")
        assert link.is_link and link.qualified_name == "e/model-registry/Registered:v0"
        assert linked_draft.version == "v0"
    with pytest.raises(errors.InvalidInput, match="new_draft"):
        with objstore.init(entity="e", project="p", store=tmp_path / "elsewhere") as other:
            other.log_artifact(art.new_draft())


def test_artifact_link_and_version_properties(logged: objstore.Artifact) -> None:
    link = logged.link("Best", aliases=["prod"])
    assert link.is_link and not logged.is_link and "prod" in link.aliases
    assert link.source_qualified_name == "e/p/m:v0" and link.source_name == "m:v0" and link.source_version == "v0"
    assert (link.source_entity, link.source_project) == ("e", "p")
    assert link.source_artifact.qualified_name == "e/p/m:v0"
    assert link.collection.qualified_name == "e/model-registry/Best" and link.source_collection.qualified_name == "e/p/m"
    assert [a.version for a in logged.collection.artifacts()] == ["v0"]
    assert [a.qualified_name for a in logged.linked_artifacts] == ["e/model-registry/Best:v0"]
    assert dt.datetime.fromisoformat(logged.created_at).tzinfo is not None and logged.updated_at == logged.created_at
    assert logged.url.endswith("#e/p/m:v0") and logged.state == "COMMITTED"
    with pytest.raises(errors.ArtifactNotLoggedError):
        objstore.Artifact("x", type="t").link("Best")


def test_metadata_is_converted_as_w_and_b_converts_it(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    when = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)
    meta = {"acc": np.float32(0.5), "n": np.int64(3), "arr": np.arange(3), "when": when, "day": dt.date(2024, 5, 1),
            "s": {1}, "nested": {"m": np.array([[1.5]])}}
    with objstore.init(entity="e", project="p", store=tmp_path / "s") as run:
        art = run.log_model(str(tmp_path / "f"), name="m", metadata=meta)
    assert art.metadata == {"acc": 0.5, "n": 3, "arr": [0, 1, 2], "when": when.isoformat(), "day": "2024-05-01",
                            "s": [1], "nested": {"m": [[1.5]]}}
    with pytest.raises(errors.InvalidInput, match="at most 100"):
        objstore.Artifact("m", type="model", metadata={str(i): i for i in range(101)})


def test_api_shape(logged: objstore.Artifact, tmp_path: Path) -> None:
    store = tmp_path / "store"
    api = objstore.Api({"entity": "e", "project": "p"}, store=store)
    assert api.artifact("m").qualified_name == "e/p/m:v0"
    assert api.artifact_exists("m:v0") and api.artifact_exists("m", type="model")
    assert not api.artifact_exists("m:v9") and not api.artifact_exists("m", type="dataset")
    assert not api.artifact_exists("bad name/x/y/z") and not api.artifact_exists("a b")
    coll = api.artifact_collection("model", "m")
    assert (coll.name, coll.type, coll.aliases, coll.description, coll.tags) == ("m", "model", ["latest"], None, [])
    assert [a.version for a in coll.artifacts()] == ["v0"]
    coll.save()  # nothing set: nothing written
    assert list(api.store.backend.iter_prefix(keys.annotations_prefix("e", "p", "m"))) == []
    assert api.artifact_collection_exists("m", type="model") and not api.artifact_collection_exists("m", type="dataset")
    assert not api.artifact_collection_exists("nope", type="model")
    with pytest.raises(errors.CommError):
        api.artifact_collection("model", "nope")
    with pytest.raises(errors.CommError):
        api.artifact("nope")
    assert [t.name for t in api.artifact_types()] == ["model"] and api.artifact_type("model").collections() == [coll]
    assert [a.version for a in api.artifacts("model", "m")] == ["v0"]
    run_path = logged.logged_by_path
    assert run_path is not None
    run_id = run_path.split("/")[-1]
    assert api.run(run_id).path == api.run(f"p/{run_id}").path == api.run(run_path).path == run_path
    assert [r.id for r in api.runs("e/p")] == [run_id] and [r.id for r in api.runs()] == [run_id]
    assert [p.name for p in api.projects()] == ["p"] and api.project("p").name == "p"
    entity, project = api.projects()[0]
    assert (entity, project) == ("e", "p")
    assert objstore.Api(store).artifact("e/p/m").version == "v0"  # the store as the first argument, as before
    coll.delete()
    assert not api.artifact_collection_exists("m", type="model")


def test_collection_and_listing_signatures_as_w_and_b(logged: objstore.Artifact, tmp_path: Path) -> None:
    """W&B's ``ArtifactCollection.is_sequence()`` is a method, ``aliases`` a list,
    ``artifacts(per_page=, start=)``; ``Api.artifacts(type_name, name, order, per_page,
    tags, start)`` takes one tag as a string (W&B's ``always_list``)."""
    store = tmp_path / "store"
    api = objstore.Api({"entity": "e", "project": "p"}, store=store)
    art = api.artifact("m:v0")
    art.tags = ["good"]
    art.save()
    coll = api.artifact_collection("model", "m")
    assert coll.is_sequence() is True and isinstance(coll.aliases, list)
    assert [a.version for a in coll.artifacts(per_page=1, start=None)] == ["v0"]
    assert [a.version for a in api.artifacts("model", "m", None, 1, "good", None)] == ["v0"]
    assert api.artifacts(type_name="model", name="m", per_page=1, tags=["good", "other"], start=None) == []
    for listing in (api.artifacts, api.artifact_versions):  # W&B's server finds no "dataset" collection m
        with pytest.raises(errors.NotFound, match="'model', not 'dataset'"):
            listing("dataset", "m")
    with objstore.init(entity="e", project="p", store=store) as run:
        linked = run.link_artifact(api.artifact("m:v0"), "reg")
    registry = api.artifact_collection("model", linked.collection.qualified_name)
    assert registry.is_sequence() is False and registry.aliases == ["latest"]
    for attr in ("aliases", "name", "type"):
        with pytest.raises(errors.UnsupportedError, match="read-only"):
            setattr(registry, attr, ["x"])


def test_collection_description_and_tags_persist(logged: objstore.Artifact, tmp_path: Path) -> None:
    store = tmp_path / "store"
    coll = objstore.Api(store).artifact_collection("model", "e/p/m")
    coll.description = "the model"
    coll.tags = ["good", "fast", "good"]
    assert (coll.description, coll.tags) == ("the model", ["good", "fast"])
    coll.save()
    again = objstore.Api(store).artifact_collection("model", "e/p/m")
    assert (again.description, again.tags) == ("the model", ["good", "fast"])
    code = ("import sys, objstore; c = objstore.Api(sys.argv[1]).artifact_collection('model', 'e/p/m'); "
            "print(c.description, c.tags)")
    out = subprocess.run([sys.executable, "-c", code, str(store)], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "the model ['good', 'fast']"
    again.tags.remove("good")  # in place, as W&B's list
    again.description = None
    again.save()
    third = objstore.Api(store).artifact_collection("model", "e/p/m")
    assert (third.description, third.tags) == (None, ["fast"])
    history = collection_annotation_history(third._store, third._coll)
    assert [(e.revision, [c.field for c in e.changes]) for e in history] == [(1, ["description", "tags"]),
                                                                             (2, ["description", "tags"])]
    assert history[1].changes[1] == Change("tags", ["good", "fast"], ["fast"])
    # the version's own annotations are another thing: untouched
    assert objstore.Api(store).artifact("e/p/m:v0").tags == [] and objstore.Api(store).artifact("e/p/m:v0").description is None
    state = keys.collection_annotation_key("e", "p", "m")
    assert keys.parse_annotation_key(state) is None and keys.parse_collection_annotation_key(state) == ("e", "p", "m")
    assert keys.parse_collection_annotation_key(keys.annotation_key("e", "p", "collection", 0)) is None
    assert keys.parse_annotation_key(keys.annotation_key("e", "p", "collection", 0)) is not None


def test_collection_saves_of_different_tags_both_land(logged: objstore.Artifact, tmp_path: Path) -> None:
    store = tmp_path / "store"
    a = objstore.Api(store).artifact_collection("model", "e/p/m")
    b = objstore.Api(store).artifact_collection("model", "e/p/m")
    a.tags = ["one"]
    b.tags = ["two"]
    b.description = "from b"
    a.save()
    b.save()
    c = objstore.Api(store).artifact_collection("model", "e/p/m")
    assert sorted(c.tags) == ["one", "two"] and c.description == "from b"
    assert sorted(b.tags) == ["one", "two"]  # save() shows what is stored now


def test_collection_concurrent_saves_all_land(logged: objstore.Artifact, tmp_path: Path) -> None:
    store = tmp_path / "store"
    colls = [objstore.Api(store).artifact_collection("model", "e/p/m") for _ in range(6)]
    start = threading.Barrier(len(colls))

    def save(i: int) -> None:
        colls[i].tags = [f"t{i}"]
        start.wait()
        colls[i].save()

    threads = [threading.Thread(target=save, args=(i,)) for i in range(len(colls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    final = objstore.Api(store).artifact_collection("model", "e/p/m")
    assert sorted(final.tags) == [f"t{i}" for i in range(len(colls))]
    assert [e.revision for e in collection_annotation_history(final._store, final._coll)] == list(range(1, len(colls) + 1))


def test_collection_bad_tag_writes_nothing(logged: objstore.Artifact, tmp_path: Path) -> None:
    store = tmp_path / "store"
    coll = objstore.Api(store).artifact_collection("model", "e/p/m")
    with pytest.raises(errors.InvalidName):
        coll.tags = ["ok", "not ok!"]
    coll.tags.append("bad tag?")  # past the setter: save() checks again
    with pytest.raises(errors.InvalidName):
        coll.save()
    with pytest.raises(errors.InvalidInput):
        coll.description = 3  # type: ignore[assignment]
    assert list(coll._store.backend.iter_prefix(keys.annotations_prefix("e", "p", "m"))) == []
    assert objstore.Api(store).artifact_collection("model", "e/p/m").tags == []


def test_delete_collection_removes_its_description_and_tags(logged: objstore.Artifact, tmp_path: Path,
                                                            model_dir: Path) -> None:
    store = tmp_path / "store"
    coll = objstore.Api(store).artifact_collection("model", "e/p/m")
    coll.description, coll.tags = "old", ["old"]
    coll.save()
    coll.delete()
    assert list(coll._store.backend.iter_prefix(keys.annotations_prefix("e", "p", "m"))) == []
    with objstore.init(entity="e", project="p", store=store) as run:
        art = objstore.Artifact("m", type="model")
        art.add_dir(str(model_dir))
        run.log_artifact(art)
    fresh = objstore.Api(store).artifact_collection("model", "e/p/m")
    assert (fresh.description, fresh.tags) == (None, [])


def test_registry_collection_description_and_tags(logged: objstore.Artifact, tmp_path: Path) -> None:
    store = tmp_path / "store"
    logged.link("Best")
    reg = objstore.Api(store).artifact_collection("model", "e/model-registry/Best")
    reg.description, reg.tags = "registered", ["prod"]
    reg.save()
    again = objstore.Api(store).artifact_collection("model", "e/model-registry/Best")
    assert (again.description, again.tags) == ("registered", ["prod"])
    source = objstore.Api(store).artifact_collection("model", "e/p/m")
    assert (source.description, source.tags) == (None, [])  # the registry's own, not its source's
    again.delete()
    assert list(again._store.backend.iter_prefix(keys.annotations_prefix("e", "model-registry", "Best"))) == []


def test_errors_carry_w_and_b_names() -> None:
    assert issubclass(errors.NotFound, errors.CommError) and issubclass(errors.BackendError, errors.CommError)
    assert issubclass(errors.CommError, errors.Error) and issubclass(errors.UsageError, errors.Error)
    assert issubclass(errors.ArtifactNotLoggedError, errors.ArtifactStatusError)
    assert issubclass(errors.AuthenticationError, errors.CommError)
    for name in ("WaitTimeoutError", "TooFewItemsError", "TooManyItemsError"):
        assert issubclass(getattr(errors, name), errors.ObjstoreError)


def test_wandb_mode_and_unknown_run_attributes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "disabled")
    run = objstore.init(entity="e", project="p", store=tmp_path / "s")
    assert run.disabled and not (tmp_path / "s").exists()
    run.finish()
    monkeypatch.setenv("WANDB_MODE", "bogus")
    with pytest.raises(errors.UsageError, match="mode"):
        objstore.init(entity="e", project="p", store=tmp_path / "s")
    assert objstore.init(entity="e", project="p", store=tmp_path / "s", mode="offline").disabled is False
    objstore.finish()
    monkeypatch.delenv("WANDB_MODE")
    with objstore.init(entity="e", project="p", store=tmp_path / "s") as live:
        live.name = "renamed"
        live.tags = ("a",)
        with pytest.raises(errors.UnsupportedError, match="lr"):
            live.lr = 0.1  # type: ignore[attr-defined]
        live.log({"x": 1})
    assert objstore.Api(tmp_path / "s").run(live.path).name == "renamed"


def test_log_artifact_tags_are_checked_and_never_dropped(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with objstore.init(entity="e", project="p", store=tmp_path / "s") as run:
        with pytest.raises(errors.InvalidName):
            run.log_artifact(str(tmp_path / "f"), name="a", type="t", tags=["bad/tag"])
        assert not objstore.Api(tmp_path / "s").artifact_exists("e/p/a")
        logged = run.log_artifact(str(tmp_path / "f"), name="a", type="t", tags=["ok tag", "b"])
    api = objstore.Api(tmp_path / "s")
    assert api.artifact("e/p/a:v0").tags == logged.tags == ["ok tag", "b"]
    (tmp_path / "f").write_text("y")
    with objstore.init(entity="e", project="p", store=tmp_path / "s") as run:
        run.log_artifact(str(tmp_path / "f"), name="a", type="t", tags=["b"])
    assert [a.version for a in api.artifacts("t", "e/p/a", tags=["b"])] == ["v0", "v1"]
    assert [a.version for a in api.artifacts("t", "e/p/a", tags=["ok tag", "b"])] == ["v0"]
    assert api.artifacts("t", "e/p/a", tags=["nope"]) == []


def test_logging_another_type_into_a_collection_is_refused_as_w_and_b(tmp_path: Path) -> None:
    """W&B's ``ValueError`` (objstore's InvalidInput, a ValueError): "Artifact x already
    exists with type 'model'; cannot create another with type 'dataset'", for new
    content and for content the collection already holds; nothing is written."""
    (tmp_path / "f").write_text("one")
    (tmp_path / "g").write_text("two")
    store = tmp_path / "store"
    with objstore.init(entity="e", project="p", store=store) as run:
        run.log_artifact(str(tmp_path / "f"), name="x", type="model")
        before = sorted(i.key for i in objstore.Api(store).store.backend.iter_prefix("refs/e/p/x/"))
        for path in ("g", "f"):
            with pytest.raises(ValueError, match="Artifact x already exists with type 'model'; cannot create another with type 'dataset'"):
                run.log_artifact(str(tmp_path / path), name="x", type="dataset", aliases=["new"])
        run.log_artifact(str(tmp_path / "f"), name="d", type="dataset")
        with pytest.raises(errors.InvalidInput, match="d already exists with type 'dataset'; cannot create another with type 'model'"):
            run.log_model(str(tmp_path / "g"), name="d")
        assert run.log_artifact(str(tmp_path / "g"), name="x", type="model").version == "v1"
    after = sorted(i.key for i in objstore.Api(store).store.backend.iter_prefix("refs/e/p/x/"))
    assert [k for k in after if k not in before and "/versions/" not in k and "/digests/" not in k] == []
    assert [a.type for a in objstore.Api(store).artifact_versions(None, "e/p/x")] == ["model", "model"]
