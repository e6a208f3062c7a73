"""Porting from W&B, artifacts: every attribute assignment objstore does not store
raises (W&B's exception names), none is accepted and lost."""

from __future__ import annotations

from pathlib import Path

import pytest

import objstore
from objstore import errors


@pytest.fixture
def logged(tmp_path: Path) -> objstore.Artifact:
    (tmp_path / "m.bin").write_bytes(b"weights")
    with objstore.init(entity="e", project="p", store=tmp_path / "s") as run:
        return run.log_model(str(tmp_path / "m.bin"), name="m", metadata={"a": 1}, description="d")


def draft() -> objstore.Artifact:
    return objstore.Artifact("d", type="dataset")


@pytest.mark.parametrize("attr, value", [("distributed_id", "x"), ("incremental", True)])
@pytest.mark.parametrize("which", ["draft", "logged"])
def test_wandb_attributes_objstore_does_not_store_raise(logged: objstore.Artifact, which: str, attr: str,
                                                         value: object) -> None:
    art = draft() if which == "draft" else logged
    with pytest.raises(errors.UnsupportedError, match=attr):
        setattr(art, attr, value)
    assert attr not in vars(art)


@pytest.mark.parametrize("which", ["draft", "logged"])
@pytest.mark.parametrize("attr", ["descripton", "alias", "foo"])
def test_unknown_attributes_raise_naming_what_is_settable(logged: objstore.Artifact, which: str, attr: str) -> None:
    art = draft() if which == "draft" else logged
    with pytest.raises(AttributeError, match="aliases, description, metadata, tags, ttl"):
        setattr(art, attr, 1)


@pytest.mark.parametrize("attr", ["name", "type", "version", "digest", "size", "id", "created", "qualified_name"])
def test_read_only_attributes_raise(logged: objstore.Artifact, attr: str) -> None:
    before = getattr(logged, attr)
    with pytest.raises(errors.UnsupportedError, match="read-only"):
        setattr(logged, attr, "x")
    assert getattr(logged, attr) == before


def test_a_drafts_settable_attributes_are_stored(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    art = draft()
    art.description, art.metadata, art.aliases = "about", {"k": [1]}, ["raw"]
    art.add_file(tmp_path / "f")
    with objstore.init(entity="e", project="p", store=tmp_path / "s") as run:
        run.log_artifact(art)
    again = objstore.Api(store=tmp_path / "s").artifact("e/p/d:v0")
    assert (again.description, again.metadata, sorted(again.aliases)) == ("about", {"k": [1]}, ["latest", "raw"])


def test_wandb_errors_are_in_the_hierarchy() -> None:
    assert issubclass(errors.InvalidInput, errors.UsageError) and issubclass(errors.InvalidName, errors.UsageError)
    assert issubclass(errors.UnsupportedError, errors.UsageError)
    assert issubclass(errors.ArtifactFinalizedError, errors.ArtifactStatusError)
    assert issubclass(errors.ArtifactStatusError, AttributeError)


def test_w_and_b_media_objects_are_refused_by_name() -> None:
    """``Artifact.add(obj, name)`` (W&B's media objects: tables, images) is out of scope:
    a clear UnsupportedError saying what to do, not an AttributeError; nothing staged."""
    art = draft()
    with pytest.raises(errors.UnsupportedError, match="add_file"):
        art.add(object(), "table")
    assert art.manifest.entries == {}
