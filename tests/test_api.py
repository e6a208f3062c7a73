"""The API's smaller promises: default names, store resolution, aliases, drafts,
references, lineage accessors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from modelgen import snapshot

import objstore
from objstore import errors
from objstore.model.store import Store, resolve_location
from objstore.storage.keys import alias_ref


def test_default_name_uses_run_id_and_basename_even_with_trailing_slash(tmp_path: Path) -> None:
    model_dir = tmp_path / "checkpoint-final"
    model_dir.mkdir()
    (model_dir / "weights.bin").write_bytes(os.urandom(1000))
    (model_dir / "config.json").write_text("{}")
    with objstore.init(project="p", entity="e", store=tmp_path / "s") as run:
        art = run.log_model(str(model_dir) + "/")
        single = run.log_model(str(model_dir / "weights.bin"))
    assert art.name == f"run-{run.id}-checkpoint-final:v0"
    assert single.name == f"run-{run.id}-weights.bin:v0"
    assert sorted(f.path for f in art.files()) == ["config.json", "weights.bin"]


def test_store_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("OBJSTORE_DIR", raising=False)
    deep = tmp_path / "project" / "src" / "train"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert resolve_location() == home / ".objstore"
    (tmp_path / "project" / ".objstore").mkdir()
    assert resolve_location() == tmp_path / "project" / ".objstore"
    monkeypatch.setenv("OBJSTORE_DIR", str(tmp_path / "env-store"))
    assert resolve_location() == tmp_path / "env-store"
    assert resolve_location(tmp_path / "arg-store") == tmp_path / "arg-store"
    assert resolve_location("s3://bucket/prefix") == "s3://bucket/prefix"
    # With nothing set, init creates ~/.objstore on first use.
    monkeypatch.delenv("OBJSTORE_DIR")
    monkeypatch.chdir(home)
    objstore.init(project="p", entity="e").finish()
    assert (home / ".objstore" / "config").is_file()


def test_aliases_move_and_save(tmp_path: Path) -> None:
    store = tmp_path / "s"
    with objstore.init(project="p", entity="e", store=store) as run:
        for i in range(3):
            (tmp_path / "m.bin").write_bytes(os.urandom(500) + bytes([i]))
            run.log_model(str(tmp_path / "m.bin"), name="m", aliases=["best"] if i == 1 else None)
    api = objstore.Api(store=store, entity="e", project="p")
    assert api.artifact("m:best").version == "v1"
    assert api.artifact("m").version == "v2"  # no selector means latest
    v0 = api.artifact("m:v0")
    v0.aliases.append("production")
    v0.save()
    assert api.artifact("m:production").version == "v0"
    v0.aliases.remove("production")
    v0.save()
    with pytest.raises(errors.NotFound):
        api.artifact("m:production")
    v2 = api.artifact("m:v2")
    v2.aliases.append("v7")
    with pytest.raises(errors.InvalidName):
        v2.save()
    # Moving an alias to another version is recorded in the reflog.
    v2.aliases = ["latest", "best"]
    v2.save()
    assert api.artifact("m:best").version == "v2"
    opened = Store.open(store)
    moves = opened.refs.reflog(alias_ref("e", "p", "m", "best"))
    assert [opened.odb.get_object(m.new).index for m in moves] == [1, 2]
    # Metadata is an annotation: saved, while the content and digest stay as logged.
    digest = v2.digest
    v2.metadata["changed"] = True
    v2.save()
    again = api.artifact("m:v2")
    assert again.metadata["changed"] is True and again.digest == digest


def test_digest_selector_and_realias_on_relog(tmp_path: Path) -> None:
    store = tmp_path / "s"
    (tmp_path / "m.bin").write_bytes(os.urandom(2000))
    with objstore.init(project="p", entity="e", store=store) as run:
        first = run.log_model(str(tmp_path / "m.bin"), name="m")
        again = run.log_model(str(tmp_path / "m.bin"), name="m", aliases=["prod"])
        assert again.version == first.version == "v0"
        assert "prod" in again.aliases
        by_digest = run.use_artifact(f"m:{first.digest[:12]}")
        assert by_digest.version == "v0"
    record = objstore.Api(store=store).run(run.path)
    # Logging again still records the version as the run's output, once.
    assert record.outputs == (first._logged()[1].version_id.hex,)


def test_artifact_draft_new_file_reference_and_types(tmp_path: Path) -> None:
    store = tmp_path / "s"
    external = tmp_path / "external.bin"
    external.write_bytes(os.urandom(4000))
    art = objstore.Artifact("bundle", type="dataset", description="d", metadata={"rows": 3})
    with art.new_file("notes/readme.txt", mode="w") as f:
        f.write("hello")
    art.add_reference(external.as_uri(), name="ext.bin")
    with pytest.raises(errors.InvalidInput):
        art.version  # not logged yet
    with objstore.init(project="p", entity="e", store=store) as run:
        run.log_artifact(art, aliases=["raw"])
        with pytest.raises(errors.WrongType):
            run.use_artifact("bundle:raw", type="model")
    assert art.version == "v0" and art.metadata == {"rows": 3} and art.description == "d"
    kinds = {f.path: f.kind for f in art.files()}
    assert kinds == {"ext.bin": "reference", "notes/readme.txt": "file"}
    out = Path(art.download(tmp_path / "out"))
    assert (out / "notes" / "readme.txt").read_text() == "hello"
    assert (out / "ext.bin").read_bytes() == external.read_bytes()
    external.write_bytes(os.urandom(4000))
    with pytest.raises(errors.VerificationFailed, match="changed since it was logged"):
        art.download(tmp_path / "out2")
    with pytest.raises(errors.InvalidInput):
        art.add_file(external)  # a logged artifact is immutable


def test_lineage_accessors(tmp_path: Path) -> None:
    store = tmp_path / "s"
    (tmp_path / "m.bin").write_bytes(os.urandom(1000))
    with objstore.init(project="p", entity="e", store=store, job_type="train") as trainer:
        art = trainer.log_model(str(tmp_path / "m.bin"), name="m")
    with objstore.init(project="p", entity="e", store=store, job_type="eval") as evaluator:
        evaluator.use_model("m:latest", root=tmp_path / "dl")
    assert art.logged_by().id == trainer.id
    assert [r.id for r in art.used_by()] == [evaluator.id]
    record = objstore.Api(store=store).run(evaluator.path)
    assert record.job_type == "eval" and record.state == "finished"
    assert [a.qualified_name for a in record.used_artifacts()] == ["e/p/m:v0"]
    collections = objstore.Api(store=store, entity="e").artifact_collections("p")
    assert [(c.name, c.version_count, c.type) for c in collections] == [("m", 1, "model")]


def test_finished_run_refuses_more_work(tmp_path: Path) -> None:
    run = objstore.init(project="p", entity="e", store=tmp_path / "s")
    run.finish()
    with pytest.raises(errors.InvalidInput, match="finished"):
        run.log_model(str(tmp_path), name="x")


def test_crashed_run_is_recorded(tmp_path: Path) -> None:
    (tmp_path / "m.bin").write_bytes(b"weights")
    with pytest.raises(RuntimeError):
        with objstore.init(project="p", entity="e", store=tmp_path / "s") as run:
            run.log_model(str(tmp_path / "m.bin"), name="m")
            raise RuntimeError("training diverged")
    assert objstore.Api(store=tmp_path / "s").run(run.path).state == "crashed"


def test_run_refused_before_doing_anything_leaves_no_trace(tmp_path: Path) -> None:
    objstore.init(project="p", entity="e", store=tmp_path / "s").finish()  # an empty finished run is recorded
    before = snapshot(tmp_path / "s")
    with pytest.raises(errors.NotFound):
        with objstore.init(project="p", entity="e", store=tmp_path / "s") as run:
            run.use_model("nothing-here:latest")
    assert snapshot(tmp_path / "s") == before
