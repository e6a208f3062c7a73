"""Bad input: each a clear ``objstore.errors`` exception, and the store's files unchanged."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from modelgen import snapshot

import objstore
from objstore import errors


@pytest.fixture
def session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "model.bin").write_bytes(os.urandom(10_000))
    (tmp_path / "data.csv").write_text("a,b\n1,2\n")
    store = tmp_path / "store"
    with objstore.init(project="p", entity="e", store=store) as run:
        run.log_model(str(tmp_path / "model.bin"), name="good")
        data = objstore.Artifact("table", type="dataset")
        data.add_file(tmp_path / "data.csv")
        run.log_artifact(data)
    run = objstore.init(project="p", entity="e", store=store)
    return run, store, tmp_path


CASES: list[tuple[str, type[Exception], str, Callable]] = [
    ("missing path", errors.NotFound, "does not exist", lambda run, d: run.log_model(str(d / "nope.bin"), name="x")),
    ("name with slash", errors.InvalidName, "A-Z", lambda run, d: run.log_model(str(d / "model.bin"), name="a/b")),
    ("name with colon", errors.InvalidName, "A-Z", lambda run, d: run.log_model(str(d / "model.bin"), name="a:b")),
    ("name with space", errors.InvalidName, "A-Z", lambda run, d: run.log_model(str(d / "model.bin"), name="a b")),
    ("empty name", errors.InvalidName, "A-Z", lambda run, d: run.log_model(str(d / "model.bin"), name="")),
    ("129-char name", errors.InvalidName, "1-128", lambda run, d: run.log_model(str(d / "model.bin"), name="n" * 129)),
    ("alias v3", errors.InvalidName, "reserved for version", lambda run, d: run.log_model(str(d / "model.bin"), name="ok", aliases=["v3"])),
    ("alias with slash", errors.InvalidName, "alias", lambda run, d: run.log_model(str(d / "model.bin"), name="ok", aliases=["a/b"])),
    ("empty alias", errors.InvalidName, "alias", lambda run, d: run.log_model(str(d / "model.bin"), name="ok", aliases=[""])),
    ("use unknown model", errors.NotFound, "no artifact", lambda run, d: run.use_model("never-logged:latest")),
    ("use unknown version", errors.NotFound, "has no version", lambda run, d: run.use_model("good:v9")),
    ("use a dataset as a model", errors.WrongType, "not a model", lambda run, d: run.use_model("table:v0")),
    (
        "registered name with slash",
        errors.InvalidName,
        "registered model name",
        lambda run, d: run.link_model(str(d / "model.bin"), registered_model_name="a/b"),
    ),
    ("bad default name", errors.InvalidName, "pass name=", lambda run, d: run.log_model(str(_odd_file(d)))),
    ("metadata not a dict", errors.InvalidInput, "metadata", lambda run, d: run.log_model(str(d / "model.bin"), name="ok", metadata=["x"])),
    (
        "metadata unserializable",
        errors.InvalidInput,
        "metadata",
        lambda run, d: run.log_model(str(d / "model.bin"), name="ok", metadata={"f": object()}),
    ),
    ("malformed selector", errors.InvalidName, "':'", lambda run, d: run.use_model("good:")),
    ("too many slashes", errors.InvalidName, "too many", lambda run, d: run.use_model("a/b/c/d:v0")),
]


def _odd_file(d: Path) -> Path:
    odd = d / "weights (final).bin"
    if not odd.exists():
        odd.write_bytes(b"x")
    return odd


@pytest.mark.parametrize("label,error,words,call", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_and_writes_nothing(session, label: str, error: type[Exception], words: str, call: Callable) -> None:
    run, store, workdir = session
    _odd_file(workdir)
    before = snapshot(store)
    with pytest.raises(error) as err:
        call(run, workdir)
    assert isinstance(err.value, errors.ObjstoreError)
    message = str(err.value)
    assert words in message and "\n" not in message
    assert snapshot(store) == before
    assert not (workdir / "artifacts").exists()


def test_bad_entity_or_project_writes_no_store(tmp_path: Path) -> None:
    with pytest.raises(errors.InvalidName):
        objstore.init(project="has#hash", entity="e", store=tmp_path / "store")
    with pytest.raises(errors.InvalidName):
        objstore.init(project="p", entity="a/b", store=tmp_path / "store")
    assert not (tmp_path / "store").exists()


def test_a_store_path_that_cannot_be_a_directory_is_one_line_through_the_cli(tmp_path: Path) -> None:
    """``--store file/sub`` (under a file) and ``--store /proc/self/x`` (where nothing can be made):
    the store's directory cannot be created, and the CLI said "unexpected NotADirectoryError …
    report it" (before the fix). A store path that is a file already said so in one line."""
    from cli_helpers import run_cli

    (tmp_path / "afile").write_text("hi")
    for store, words in ((tmp_path / "afile", "is a file"), (tmp_path / "afile" / "sub", "cannot create"),
                         (Path("/proc/self/objstore-store"), "cannot create")):
        for command in (["init"], ["log-model", str(tmp_path / "afile"), "--name", "m", "--project", "p"]):
            result = run_cli(store, *command, check=False)
            wanted = words if command == ["init"] or words == "is a file" else "no store at"  # log-model creates none
            assert result.code != 0 and wanted in result.err, (store, command, result.err)
            assert "unexpected" not in result.err and "Traceback" not in result.err, result.err
    assert (tmp_path / "afile").read_text() == "hi"
