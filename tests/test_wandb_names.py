"""W&B's name rules per kind, and every name encoded where it becomes a key.

- each kind takes what W&B takes and refuses what W&B refuses (objstore.model.names);
- every odd name the rules allow (``my project``, ``modèle``, ``..``, ``best model``,
  ``epoch=5``, ``prod.lock``, …) logs, reads back by name, lists, and lands as keys
  under ``refs/`` and ``logs/`` only, on a local directory and on S3;
- names valid before the rules widened encode to themselves (older stores' keys
  are unchanged; tests/test_old_store.py reads such a store), and decoding is exact.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import objstore
import objstore.storage.keys
from objstore.errors import InvalidName
from objstore.maintenance.fsck import fsck
from objstore.model.names import check_alias, check_name, check_tag, check_type
from objstore.storage import keys

ODD_PROJECTS = ["my project", "modèle", "..", ".", "a=b", "日本語", " lead"]
ODD_ALIASES = ["best model", "epoch=5", "..", "prod.lock", "50%", "modèle", "latest.lock"]
ODD_ARTIFACTS = ["..", ".hidden", "prod.lock", "-dash"]


@pytest.mark.parametrize("value", ["my project", "modèle", "..", "a=b", "x" * 128, "日本語"])
def test_project_names_w_and_b_takes(value: str) -> None:
    assert check_name(value, "project") == value


@pytest.mark.parametrize("value", ["", "a/b", "a\\b", "a#b", "a?b", "a%b", "a:b", "a\nb", "a\rb", "x" * 129, "a\0b"])
def test_project_names_w_and_b_refuses(value: str) -> None:
    with pytest.raises(InvalidName):
        check_name(value, "project")


@pytest.mark.parametrize("value", ["best model", "epoch=5", "..", "prod.lock", "50%", "a" * 128])
def test_aliases_w_and_b_takes(value: str) -> None:
    assert check_alias(value) == value


@pytest.mark.parametrize("value", ["", "a/b", "a:b", "v3", "v0", "a" * 129])
def test_aliases_w_and_b_refuses(value: str) -> None:
    with pytest.raises(InvalidName):
        check_alias(value)


def test_artifact_entity_type_and_tag_rules() -> None:
    assert check_name("..", "artifact name") == ".." and check_name(".x", "registered model name") == ".x"
    for bad in ("a b", "a/b", "a:b", "", "n" * 129, "é"):
        with pytest.raises(InvalidName):
            check_name(bad, "artifact name")
    for bad in (".x", "a b", "é"):
        with pytest.raises(InvalidName):
            check_name(bad, "entity")
    assert check_type("my type") == "my type"
    for bad in ("wandb-history", "a/b", "a:b", "t" * 129):
        with pytest.raises(InvalidName):
            check_type(bad)
    assert check_tag("needs review") == "needs review" and check_tag("v_1-x") == "v_1-x"
    for bad in ("a b ", " a", "a.b", "a/b", ""):
        with pytest.raises(InvalidName):
            check_tag(bad)


@given(st.from_regex(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}", fullmatch=True))
@settings(max_examples=50, deadline=None)
def test_names_valid_before_encode_to_themselves(name: str) -> None:
    assert keys.encode_name(name) == name and keys.decode_name(name) == name


@given(st.text(min_size=1, max_size=40).filter(lambda s: not any(0xD800 <= ord(c) <= 0xDFFF for c in s)))
@settings(max_examples=100, deadline=None)
def test_any_name_encodes_to_one_safe_key_part(name: str) -> None:
    encoded = len(quote(name, safe="").replace("~", "%7E")) + (2 if name.startswith(".") else 0)
    if encoded > keys.MAX_ENCODED_NAME:  # 40 four-byte characters are 480 bytes encoded: refused, said so
        with pytest.raises(InvalidName, match="once encoded for storage"):
            keys.encode_name(name)
        return
    part = keys.encode_name(name)
    assert part not in ("", ".", "..") and "/" not in part and "\\" not in part and "\0" not in part
    assert part.isascii() and keys.decode_name(part) == name


def test_a_part_no_name_encodes_to_is_no_ref() -> None:
    for part in ("a%2", "a%2f", "%41", "é", "a b"):  # truncated, lower-case, needless, raw
        with pytest.raises(InvalidName):
            keys.decode_name(part)
    assert keys.parse_ref_key("refs/e/a b/n/versions/v0") is None


def test_fsck_reports_a_ref_whose_name_is_not_encoded(tmp_path: Path) -> None:
    (tmp_path / "m").write_bytes(b"m")
    with objstore.init(entity="e", project="p", store=tmp_path / "s") as run:
        run.log_model(str(tmp_path / "m"), name="m")
    store = objstore.Store.open(tmp_path / "s")
    good = keys.version_ref("e", "p", "m", 0)
    raw = store.backend.get(good)
    store.backend.put("refs/e/p/a b/versions/v0", raw)  # written by hand: a space is never left raw
    report = fsck(store)
    assert not report.ok and any("a b" in str(p) for p in report.problems)


def test_a_name_too_long_once_encoded_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    with pytest.raises(InvalidName, match="once encoded"):
        objstore.init(entity="e", project="é" * 128, store=tmp_path / "s")
    assert not (tmp_path / "s").exists()


def _log_odd_names(store: str | Path, model: Path) -> None:
    for project in ODD_PROJECTS:
        with objstore.init(entity="e", project=project, store=store) as run:
            for n, name in enumerate(ODD_ARTIFACTS):
                model.write_bytes(f"{project} {name}".encode())
                run.log_model(str(model), name=name, aliases=ODD_ALIASES[n::2])
    api = objstore.Api(store)
    for project in ODD_PROJECTS:
        names = [c.name for c in api.artifact_collections(project, entity="e")]
        assert names == sorted(ODD_ARTIFACTS)
        for n, name in enumerate(ODD_ARTIFACTS):
            for alias in ODD_ALIASES[n::2]:
                art = api.artifact(f"e/{project}/{name}:{alias}")
                assert alias in art.aliases and art.project == project and art.collection_name == name
                assert Path(art.file(str(model.parent / "out" / str(n)))).read_bytes() == f"{project} {name}".encode()
    assert ("e", "modèle") in [(p.entity, p.name) for p in api.projects()]


def test_odd_names_log_and_read_back_and_stay_inside_a_local_store(tmp_path: Path) -> None:
    store = tmp_path / "store"
    _log_odd_names(store, tmp_path / "model.bin")
    outside = sorted(p.name for p in tmp_path.iterdir())
    assert outside == ["model.bin", "out", "store"]
    tops = {p.name for p in store.iterdir()}
    assert tops <= {"config", "objects", "packs", "refs", "logs", "tmp", "locks", "gc", "cache", "names", "lineage"}
    refs = [p for p in (store / "refs").rglob("*") if p.is_file()]
    assert len(refs) > len(ODD_PROJECTS) * len(ODD_ARTIFACTS)
    for path in [*refs, *(store / "logs").rglob("*")]:
        rel = path.relative_to(store).as_posix()
        assert rel.isascii() and not path.is_symlink(), rel
        assert os.path.realpath(path).startswith(str(store.resolve()) + "/")
    for path in refs:
        assert objstore.storage.keys.parse_ref_key(path.relative_to(store).as_posix()) is not None, path
    assert fsck(objstore.Store.open(store)).ok


@pytest.mark.s3
def test_odd_names_log_and_read_back_on_s3(s3_bucket_url: str, tmp_path: Path) -> None:
    _log_odd_names(s3_bucket_url, tmp_path / "model.bin")
    store = objstore.Store.open(s3_bucket_url)
    listed = [k.key for k in store.backend.iter_prefix("")]
    tops = {"config", "objects", "packs", "refs", "logs", "gc", "names", "lineage"}
    assert listed and all(k.isascii() and k.split("/", 1)[0] in tops for k in listed)
    assert fsck(store).ok


def test_an_old_stores_keys_are_what_the_new_code_builds_and_odd_names_join_it(tmp_path: Path) -> None:
    """The golden store (written before names were encoded) keeps its keys: every ref
    in it is a key today's builders make from its parsed names; odd names logged into
    it land encoded beside them, and it still fscks clean."""
    import tarfile  # noqa: PLC0415

    with tarfile.open(Path(__file__).parent / "golden" / "store_v1.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    root = tmp_path / "store"
    old_refs = sorted(p.relative_to(root).as_posix() for p in (root / "refs").rglob("*") if p.is_file())
    assert old_refs
    for key in old_refs:
        parsed = keys.parse_ref_key(key)
        assert parsed is not None, key
        rebuilt = {"version": lambda r: keys.version_ref(r.entity, r.project, r.name, int(r.tail[1:])),
                   "alias": lambda r: keys.alias_ref(r.entity, r.project, r.name, r.tail),
                   "digest": lambda r: keys.digest_ref(r.entity, r.project, r.name, r.tail),
                   "run": lambda r: keys.run_ref(r.entity, r.project, r.tail)}[parsed.kind](parsed)
        assert rebuilt == key
    (tmp_path / "m").write_bytes(b"new")
    with objstore.init(entity="old", project="my project", store=root) as run:
        run.log_model(str(tmp_path / "m"), name="..", aliases=["best model"])
    assert objstore.Api(root).artifact("old/my project/..:best model").version == "v0"
    assert objstore.Api(root).artifact("old/fixture/tiny:first").version == "v0"
    assert (root / "refs" / "old" / "my%20project" / "%2E." / "aliases" / "best%20model").is_file()
    assert fsck(objstore.Store.open(root)).ok
