"""Whatever objstore accepts it can read back; everything else is refused before anything is written.

Issue 10, classes 3 (the writing side), 9 and 12:

- user metadata and run config as a training script really passes them (a Hugging
  Face ``config.json`` with int keys, tuples, big ints, huge strings): converted the
  way JSON would (int keys become strings, tuples lists) or refused with an
  ``InvalidInput`` naming the key, and never stored unreadable;
- trees deeper than reading accepts are refused when logged;
- a store location with a scheme objstore does not support is an error, not a
  directory called ``ftp:``;
- a store config with chunking parameters out of range, of the wrong type or of a
  newer format is a clear error on open and on clone, API and CLI alike.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import msgpack
import pytest
from cli_helpers import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from modelgen import snapshot

import objstore
from objstore import errors
from objstore.api.public import Api
from objstore.maintenance.fsck import fsck
from objstore.maintenance.gc import collect_garbage
from objstore.model.store import Store
from objstore.transfer.remotes import clone

MiB = 1 << 20

# What ``transformers.PretrainedConfig.to_dict()`` holds for a classifier: int keys in
# id2label, tuples, None, floats, nested dicts.
HF_CONFIG: dict[str, Any] = {
    "architectures": ["BertForSequenceClassification"],
    "id2label": {0: "cat", 1: "dog", 2: "bird"},
    "label2id": {"cat": 0, "dog": 1, "bird": 2},
    "hidden_dropout_prob": 0.1,
    "layer_norm_eps": 1e-12,
    "problem_type": None,
    "tie_word_embeddings": True,
    "begin_suppress_tokens": (220, 50256),
    "task_specific_params": {"summarization": {"num_beams": 4, "length_penalty": 2.0}},
    "rope_scaling": {"type": "linear", "factor": 2.0},
    "torch_dtype": "float32",
    "transformers_version": "4.44.0",
}
HF_CONFIG_STORED: dict[str, Any] = {
    **HF_CONFIG,
    "id2label": {"0": "cat", "1": "dog", "2": "bird"},
    "begin_suppress_tokens": [220, 50256],
}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("OBJSTORE_DIR", raising=False)
    (tmp_path / "model.bin").write_bytes(os.urandom(5000))
    (tmp_path / "other.bin").write_bytes(os.urandom(5000))
    return tmp_path


def assert_store_healthy(store: Path | str) -> None:
    """fsck finds nothing and gc runs to the end."""
    with Store.open_existing(store) as s:
        report = fsck(s)
        assert report.ok, [p.to_dict() for p in report.problems]
        collect_garbage(s, grace_seconds=0)
        assert fsck(s).ok


def version_refs(store: Path) -> list[str]:
    return (
        # under versions/ only: a random run id may start with v and a digit too
        sorted(p.relative_to(store).as_posix() for p in (store / "refs").rglob("v[0-9]*") if p.is_file() and p.parent.name == "versions")
        if (store / "refs").exists()
        else []
    )


# -- class 3: metadata and config ----------------------------------------------------------


def test_hf_config_metadata_with_int_keys_reads_back(workdir: Path) -> None:
    store = workdir / "store"
    with objstore.init(project="p", entity="e", store=store) as run:
        art = run.log_model(str(workdir / "model.bin"), name="clf", metadata={"config": HF_CONFIG, **HF_CONFIG})
        assert art.metadata == {"config": HF_CONFIG_STORED, **HF_CONFIG_STORED}
        path = run.use_model("clf:latest")
        assert Path(path).read_bytes() == (workdir / "model.bin").read_bytes()
        # The collection stays usable: the next log reads the previous version.
        again = run.log_model(str(workdir / "other.bin"), name="clf", metadata={"id2label": {0: "x"}})
        assert again.version == "v1"
    read = Api(store=store, entity="e", project="p").artifact("clf:v0")
    assert read.metadata == {"config": HF_CONFIG_STORED, **HF_CONFIG_STORED}
    assert Api(store=store, entity="e", project="p").artifact("clf:v1").metadata == {"id2label": {"0": "x"}}
    assert_store_healthy(store)
    out = run_cli(store, "show", "e/p/clf:v0", "--json").json()
    assert out["metadata"]["id2label"] == {"0": "cat", "1": "dog", "2": "bird"}  # type: ignore[index]


def test_metadata_changed_after_construction_is_converted_too(workdir: Path) -> None:
    store = workdir / "store"
    with objstore.init(project="p", entity="e", store=store) as run:
        art = objstore.Artifact("clf", type="model")
        art.add_file(workdir / "model.bin")
        art.metadata["id2label"] = {0: "cat"}  # W&B lets scripts fill metadata in later
        run.log_artifact(art)
    assert Api(store=store, entity="e", project="p").artifact("clf:v0").metadata == {"id2label": {"0": "cat"}}
    assert_store_healthy(store)


def test_run_config_with_int_keys_reads_back(workdir: Path) -> None:
    store = workdir / "store"
    with objstore.init(project="p", entity="e", store=store, config={"id2label": {0: "cat"}, "shape": (3, 224)}) as run:
        run.config["later"] = {7: "set after init"}
        run.log_model(str(workdir / "model.bin"), name="m")
        path = run.path
    info = Api(store=store).run(path)
    assert info.config == {"id2label": {"0": "cat"}, "shape": [3, 224], "later": {"7": "set after init"}}
    with objstore.init(project="p", entity="e", store=store) as run:
        run.log_model(str(workdir / "other.bin"), name="m")
    assert_store_healthy(store)
    assert run_cli(store, "show", "e/p/m:v0").code == 0
    assert run_cli(store, "log", "e/p/m").code == 0


@pytest.mark.parametrize(
    "bad,words",
    [
        ({"ids": {(1, 2): "tuple key"}}, "['ids']"),
        ({"ids": {b"raw": 1}}, "['ids']"),
        ({"ids": {0: "a", "0": "b"}}, "'0'"),
        ({"n": 2**64}, "['n']"),
        ({"n": -(2**63) - 1}, "['n']"),
        ({"obj": object()}, "['obj']"),
        ({"name": "bad \udcff surrogate"}, "['name']"),
        ({"deep": "NEST"}, "['deep']"),
    ],
    ids=["tuple-key", "bytes-key", "colliding-keys", "int-too-big", "int-too-small", "object", "surrogate", "too-deep"],
)
def test_unstorable_metadata_is_refused_naming_the_key_and_writes_nothing(workdir: Path, bad: dict[str, Any], words: str) -> None:
    if bad.get("deep") == "NEST":
        bad = {"deep": _nest(1021)}  # packs, but deeper than msgpack's decoder stack (1024) once wrapped
    store = workdir / "store"
    with objstore.init(project="p", entity="e", store=store) as run:
        run.log_model(str(workdir / "model.bin"), name="good")
    run = objstore.init(project="p", entity="e", store=store)
    before = snapshot(store)
    with pytest.raises(errors.InvalidInput) as err:
        run.log_model(str(workdir / "other.bin"), name="bad", metadata=bad)
    message = str(err.value)
    assert "metadata" in message and words in message and "\n" not in message
    assert snapshot(store) == before
    with pytest.raises(errors.InvalidInput):
        objstore.init(project="p", entity="e", store=workdir / "fresh", config=bad)
    assert not (workdir / "fresh").exists()
    assert_store_healthy(store)


def test_map_longer_than_the_decoder_reads_is_refused_before_ingest(workdir: Path) -> None:
    store = workdir / "store"
    with objstore.init(project="p", entity="e", store=store) as run:
        run.log_model(str(workdir / "model.bin"), name="good")
    run = objstore.init(project="p", entity="e", store=store)
    before = snapshot(store)
    with pytest.raises(errors.InvalidInput, match=r"metadata\['big'\]"):
        run.log_model(str(workdir / "other.bin"), name="bad", metadata={"big": dict.fromkeys(range((1 << 20) + 1))})
    assert snapshot(store) == before


@pytest.mark.parametrize(
    "description", [5, b"bytes", "lone \udcff surrogate", "d" * (16 * MiB + 1)], ids=["int", "bytes", "surrogate", "huge"]
)
def test_unstorable_description_is_refused_before_ingest(workdir: Path, description: Any) -> None:
    store = workdir / "store"
    with objstore.init(project="p", entity="e", store=store) as run:
        run.log_model(str(workdir / "model.bin"), name="good")
    run = objstore.init(project="p", entity="e", store=store)
    before = snapshot(store)
    with pytest.raises(errors.InvalidInput, match="description"):
        run.log_model(str(workdir / "other.bin"), name="bad", description=description)
    art = objstore.Artifact("later", type="model")
    art.add_file(workdir / "other.bin")
    art.description = description  # W&B lets scripts set it after construction
    with pytest.raises(errors.InvalidInput, match="description"):
        run.log_artifact(art)
    assert snapshot(store) == before


@pytest.mark.parametrize("name", [5, "lone \udcff surrogate"], ids=["int", "surrogate"])
def test_unstorable_run_name_is_refused_before_anything_is_written(workdir: Path, name: Any) -> None:
    store = workdir / "store"
    with objstore.init(project="p", entity="e", store=store) as run:
        run.log_model(str(workdir / "model.bin"), name="good")
    before = snapshot(store)
    with pytest.raises(errors.InvalidInput, match="run name"):
        objstore.init(project="p", entity="e", store=store, name=name).log_model(str(workdir / "other.bin"), name="m")
    assert snapshot(store) == before


def test_self_containing_metadata_is_refused(workdir: Path) -> None:
    loop: dict[str, Any] = {}
    loop["me"] = loop
    with objstore.init(project="p", entity="e", store=workdir / "store") as run:
        with pytest.raises(errors.InvalidInput, match="metadata"):
            run.log_model(str(workdir / "model.bin"), name="m", metadata=loop)
    assert version_refs(workdir / "store") == []


def test_string_over_16_mib_is_refused_or_reads_back(workdir: Path) -> None:
    store = workdir / "store"
    huge = "x" * (16 * MiB + 1)
    with objstore.init(project="p", entity="e", store=store) as run:
        run.log_model(str(workdir / "model.bin"), name="m")
        try:
            run.log_model(str(workdir / "other.bin"), name="m", metadata={"notes": huge})
        except errors.InvalidInput as exc:
            assert "notes" in str(exc) and "MiB" in str(exc)
            assert version_refs(store) == ["refs/e/p/m/versions/v0"]
        else:
            assert Api(store=store, entity="e", project="p").artifact("m:v1").metadata == {"notes": huge}
        run.log_model(str(workdir / "other.bin"), name="m", metadata={"notes": "short"})
    with pytest.raises(errors.InvalidInput, match="config"):
        objstore.init(project="p", entity="e", store=store, config={"notes": huge}).log_model(str(workdir / "model.bin"), name="c")
    assert_store_healthy(store)


def test_metadata_within_the_limits_reads_back(workdir: Path) -> None:
    store = workdir / "store"
    value = {
        "big": 2**64 - 1,
        "small": -(2**63),
        "blob": b"\x00\xff" * 1000,
        "nan": math.nan,
        "inf": -math.inf,
        "text": "üñíçødé ✓",
        "nested": {"a": [1, [2, [3, {"b": None}]]]},
    }
    with objstore.init(project="p", entity="e", store=store) as run:
        run.log_model(str(workdir / "model.bin"), name="m", metadata=value)
    got = Api(store=store, entity="e", project="p").artifact("m:v0").metadata
    assert math.isnan(got.pop("nan")) and got == {k: v for k, v in value.items() if k != "nan"}
    assert_store_healthy(store)


def test_subclasses_of_the_basic_types_are_stored_as_their_base_type(workdir: Path) -> None:
    import collections
    import enum

    import numpy as np

    class Split(str, enum.Enum):  # noqa: UP042 (the str-and-Enum subclass is what is tested)
        TRAIN = "train"

    class Level(enum.IntEnum):
        HIGH = 3

    value = collections.OrderedDict(
        [
            ("split", Split.TRAIN),
            ("level", Level.HIGH),
            ("lr", np.float64(0.5)),
            ("by_level", {Level.HIGH: "h"}),
            ("splits", {Split.TRAIN: 1}),
        ]
    )
    with objstore.init(project="p", entity="e", store=workdir / "store") as run:
        art = run.log_model(str(workdir / "model.bin"), name="m", metadata=value)
    want = {"split": "train", "level": 3, "lr": 0.5, "by_level": {"3": "h"}, "splits": {"train": 1}}
    for got in (art.metadata, Api(store=workdir / "store", entity="e", project="p").artifact("m:v0").metadata):
        assert got == want and [type(v) for v in got.values()] == [str, int, float, dict, dict]
    (workdir / "other.bin").write_bytes(b"other")
    with objstore.init(project="p", entity="e", store=workdir / "store") as run:  # numpy and sets converted, as W&B
        art = run.log_model(str(workdir / "other.bin"), name="m", metadata={"n": np.int64(3), "a": np.arange(2), "s": {"x"}})
    assert art.metadata == {"n": 3, "a": [0, 1], "s": ["x"]} and type(art.metadata["n"]) is int


# -- class 3: hypothesis property -------------------------------------------------------------

_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=20),
    st.binary(max_size=20),
)
_keys = st.one_of(st.text(max_size=8), st.integers(min_value=-5, max_value=5), st.binary(max_size=3), st.booleans(), st.none())
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.lists(inner, max_size=3).map(tuple), st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=20,
)


def _nest(levels: int) -> list[Any]:
    value: list[Any] = []
    for _ in range(levels):
        value = [value]
    return value


class _Refused(Exception):
    pass


def _expected(value: Any) -> Any:
    """The documented conversion: int keys become strings, tuples lists; anything else
    that JSON-like metadata cannot hold is refused."""
    if value is None or isinstance(value, (bool, float, str, bytes)):
        return value
    if isinstance(value, int):
        if not -(2**63) <= value < 2**64:
            raise _Refused
        return value
    if isinstance(value, (list, tuple)):
        return [_expected(v) for v in value]
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if isinstance(k, bool) or not isinstance(k, (int, str)):
                raise _Refused
            key = str(k)
            if key in out:
                raise _Refused
            out[key] = _expected(v)
        return out
    raise _Refused


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return (math.isnan(a) and math.isnan(b)) or a == b
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return type(a) is type(b) and a == b


@pytest.fixture(scope="module")
def prop_store() -> Any:
    d = Path(tempfile.mkdtemp(prefix="objstore-readback-"))
    (d / "model.bin").write_bytes(os.urandom(3000))
    yield d
    shutil.rmtree(d, ignore_errors=True)


_counter = [0]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(meta=st.dictionaries(_keys, _values, max_size=4))
def test_metadata_either_refused_with_nothing_written_or_reads_back_equal(prop_store: Path, meta: dict[Any, Any]) -> None:
    store = prop_store / "store"
    _counter[0] += 1
    name = f"m{_counter[0]}"
    try:
        expected = _expected(meta)
    except _Refused:
        expected = _Refused
    run = objstore.init(project="p", entity="e", store=store, id=f"r{_counter[0]}")
    before = snapshot(store)
    if expected is _Refused:
        with pytest.raises(errors.InvalidInput) as err:
            run.log_model(str(prop_store / "model.bin"), name=name, metadata=meta)
        assert "metadata" in str(err.value) and "\n" not in str(err.value)
        assert snapshot(store) == before
        return
    art = run.log_model(str(prop_store / "model.bin"), name=name, metadata=meta)
    assert _same(art.metadata, expected)
    run.finish()  # a run's outputs are written with its record when it finishes (issue 13)
    with Store.open_existing(store) as s:
        got = Api(store=s, entity="e", project="p").artifact(f"{name}:v0").metadata
        assert _same(got, expected), (got, expected)
        # The collection stays writable and the run record readable.
        assert Api(store=s).run(f"e/p/r{_counter[0]}").outputs


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(config=st.dictionaries(_keys, _values, max_size=4))
def test_run_config_either_refused_with_nothing_written_or_reads_back_equal(prop_store: Path, config: dict[Any, Any]) -> None:
    store = prop_store / "store"
    _counter[0] += 1
    run_id = f"c{_counter[0]}"
    try:
        expected = _expected(config)
    except _Refused:
        expected = _Refused
    objstore.init(project="p", entity="e", store=store).finish()  # the store exists; what follows may not write
    before = snapshot(store)
    if expected is _Refused:
        with pytest.raises(errors.InvalidInput) as err:
            objstore.init(project="p", entity="e", store=store, id=run_id, config=config)
        assert "config" in str(err.value) and "\n" not in str(err.value)
        assert snapshot(store) == before
        return
    with objstore.init(project="p", entity="e", store=store, id=run_id, config=config) as run:
        run.log_model(str(prop_store / "model.bin"), name=f"cfg{_counter[0]}")
    got = Api(store=store).run(f"e/p/{run_id}").config
    assert _same(got, expected), (got, expected)


def test_property_store_stays_healthy(prop_store: Path) -> None:
    """Runs after the property test (same module store): fsck clean, gc runs."""
    if (prop_store / "store").exists():
        assert_store_healthy(prop_store / "store")


# -- class 3: trees --------------------------------------------------------------------------


def _deep_dir(root: Path, levels: int) -> Path:
    d = root
    for _ in range(levels):
        d = d / "d"
    d.mkdir(parents=True)
    (d / "leaf.bin").write_bytes(b"deep leaf")
    return root


def test_directory_deeper_than_reading_accepts_is_refused_and_writes_nothing(workdir: Path) -> None:
    store = workdir / "store"
    deep = _deep_dir(workdir / "deep", 300)
    with objstore.init(project="p", entity="e", store=store) as run:
        run.log_model(str(workdir / "model.bin"), name="good")
    before = snapshot(store)
    run = objstore.init(project="p", entity="e", store=store)
    with pytest.raises(errors.InvalidInput) as err:
        run.log_model(str(deep), name="deep")
    assert "levels" in str(err.value) and "\n" not in str(err.value)
    assert not (store / "refs/e/p/deep").exists()
    assert snapshot(store) == before
    assert_store_healthy(store)
    with objstore.init(project="p", entity="e", store=store) as run:
        assert Path(run.use_model("good:v0")).read_bytes() == (workdir / "model.bin").read_bytes()
    result = run_cli(store, "log-model", str(deep), "--name", "deep", "-p", "p", "--entity", "e", check=False)
    assert result.code != 0 and "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1
    assert not (store / "refs/e/p/deep").exists()


def test_deepest_tree_logging_accepts_can_be_used(workdir: Path) -> None:
    """The limit is the reader's: the deepest path logging accepts materializes and fscks."""
    from objstore.constants import MAX_TREE_DEPTH

    store = workdir / "store"
    art = objstore.Artifact("edge", type="model")
    deepest = "/".join(["d"] * MAX_TREE_DEPTH + ["leaf.bin"])
    art.add_file(workdir / "model.bin", name=deepest)
    with pytest.raises(errors.InvalidInput):
        art.add_file(workdir / "model.bin", name="d/" + deepest)
    empty = objstore.Artifact("edge-empty", type="model")
    empty.add_file(workdir / "model.bin")
    with objstore.init(project="p", entity="e", store=store) as run:
        run.log_artifact(art)
        top = run.use_model("edge:v0")  # its one top-level entry, the directory d (as W&B's)
        path = Path(top).joinpath(*deepest.split("/")[1:])
        assert Path(path).read_bytes() == (workdir / "model.bin").read_bytes()
        assert len(Path(path).relative_to(Path(path).parents[MAX_TREE_DEPTH]).parts) == MAX_TREE_DEPTH + 1
    assert_store_healthy(store)


def test_deep_empty_directory_is_refused_too(workdir: Path) -> None:
    """An empty directory is a tree of its own, one level deeper than a file at the same path."""
    from objstore.constants import MAX_TREE_DEPTH

    store = workdir / "store"
    ok, deep = workdir / "ok", workdir / "deep"
    (ok / Path(*["d"] * MAX_TREE_DEPTH)).mkdir(parents=True)  # innermost: an empty tree at depth MAX
    (deep / Path(*["d"] * (MAX_TREE_DEPTH + 1))).mkdir(parents=True)  # ... at depth MAX + 1
    for d in (ok, deep):
        (d / "leaf.bin").write_bytes(b"x")
    with objstore.init(project="p", entity="e", store=store) as run:
        with pytest.raises(errors.InvalidInput, match="levels"):
            run.log_model(str(deep), name="deep-empty")
        assert version_refs(store) == []
        art = run.log_model(str(ok), name="ok-empty")
    out = Path(art.download(workdir / "dl"))
    assert (out / Path(*["d"] * MAX_TREE_DEPTH)).is_dir() and (out / "leaf.bin").read_bytes() == b"x"
    assert_store_healthy(store)


def test_file_name_that_is_not_utf8_is_refused_cleanly(workdir: Path) -> None:
    d = workdir / "named"
    d.mkdir()
    try:
        (d / os.fsdecode(b"weights-\xff.bin")).write_bytes(b"x")
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system refuses non-UTF-8 names")
    store = workdir / "store"
    with objstore.init(project="p", entity="e", store=store) as run:
        with pytest.raises(errors.ObjstoreError, match="UTF-8"):
            run.log_model(str(d), name="named")
    assert version_refs(store) == []
    assert_store_healthy(store)


def test_symlink_target_that_is_not_utf8_is_refused_cleanly(workdir: Path) -> None:
    d = workdir / "linked"
    d.mkdir()
    (d / "weights.bin").write_bytes(b"x")
    # A link is kept as a link only when it leads inside the directory, so a non-UTF-8 target that
    # exists is also a non-UTF-8 name in the tree; this dangling one is refused by the symlink rule.
    os.symlink(os.fsdecode(b"weights-\xff.bin"), d / "alias.bin")
    store = workdir / "store"
    run = objstore.init(project="p", entity="e", store=store)
    with pytest.raises(errors.InvalidInput, match="UTF-8|leads to nothing"):
        run.log_model(str(d), name="linked")
    assert version_refs(store) == []
    assert_store_healthy(store)


# -- class 9: unknown URL schemes ---------------------------------------------------------------

BAD_LOCATIONS = ["ftp://host/models", "http://host/models", "https://host/models", "S3://bucket/models", "sftp://h/x"]


def _made_anything(workdir: Path) -> list[str]:
    return sorted(p.name for p in workdir.iterdir() if p.name not in ("model.bin", "other.bin"))


@pytest.mark.parametrize("location", BAD_LOCATIONS)
def test_unknown_scheme_is_an_error_api(workdir: Path, location: str) -> None:
    for call in (
        lambda: objstore.init(project="p", entity="e", store=location),
        lambda: Api(store=location),
        lambda: Store.open(location),
        lambda: Store.open_existing(location),
    ):
        with pytest.raises(errors.InvalidInput) as err:
            call()
        message = str(err.value)
        assert "s3://" in message and location.split("://")[0] in message and "\n" not in message
    assert _made_anything(workdir) == []


@pytest.mark.parametrize("location", BAD_LOCATIONS)
def test_unknown_scheme_is_an_error_cli(workdir: Path, location: str) -> None:
    commands = [("init",), ("ls",), ("log-model", str(workdir / "model.bin"), "--name", "m")]
    for args in commands if location in BAD_LOCATIONS[::3] else commands[:1]:
        result = run_cli(location, *args, cwd=workdir, check=False)
        assert result.code != 0, args
        assert "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1, result.err
        assert "s3://" in result.err and "unexpected" not in result.err
    result = run_cli("", "init", cwd=workdir, env={"OBJSTORE_DIR": location}, check=False)
    assert result.code != 0 and "s3://" in result.err and len(result.err.strip().splitlines()) == 1
    assert _made_anything(workdir) == []


def test_unknown_scheme_as_remote_or_clone_destination(workdir: Path) -> None:
    store = workdir / "store"
    with objstore.init(project="p", entity="e", store=store) as run:
        run.log_model(str(workdir / "model.bin"), name="m")
    before = sorted(os.listdir(workdir))
    for url in ("ftp://host/x", "S3://bucket/x"):
        assert run_cli(store, "remote", "add", "r", url, check=False).code != 0
        assert run_cli(store, "push", url, check=False).code != 0
        result = run_cli("", "clone", url, "copy", cwd=workdir, check=False)
        assert result.code != 0 and len(result.err.strip().splitlines()) == 1
        with pytest.raises(errors.InvalidInput):
            clone(str(store), url)
        result = run_cli(url, "clone", str(store), cwd=workdir, check=False)
        assert result.code != 0 and len(result.err.strip().splitlines()) == 1 and "unexpected" not in result.err
    assert sorted(os.listdir(workdir)) == before


def test_file_url_still_opens_the_directory(workdir: Path) -> None:
    store = workdir / "store"
    with objstore.init(project="p", entity="e", store=f"file://{store}") as run:
        run.log_model(str(workdir / "model.bin"), name="m")
    assert version_refs(store) == ["refs/e/p/m/versions/v0"]
    with pytest.raises(errors.InvalidInput):
        Store.open("file://otherhost/models")
    assert not (workdir / "otherhost").exists()


# -- class 12: store config ----------------------------------------------------------------------


def _forge(store: Path, **changes: Any) -> None:
    key = store / "config"
    d = msgpack.unpackb(key.read_bytes(), raw=False)
    for k, v in changes.items():
        if k in ("avg", "min", "max", "nc", "tensor"):
            if v is _DROP:
                del d["chunking"][k]
            else:
                d["chunking"][k] = v
        elif v is _DROP:
            del d[k]
        else:
            d[k] = v
    key.write_bytes(msgpack.packb(d))


_DROP = object()

FORGED = [
    ("avg-too-small", {"avg": 10}, "chunking"),
    ("avg-huge", {"avg": 1 << 40}, "chunking"),
    ("min-above-max", {"min": 200_000, "max": 100_000}, "chunking"),
    ("min-above-avg", {"min": 200_000}, "chunking"),
    ("max-too-big", {"max": 64 << 20}, "chunking"),
    ("negative", {"min": -1}, "chunking"),
    ("nc-out-of-range", {"nc": 9}, "chunking"),
    ("avg-as-text", {"avg": "65536"}, "chunking"),
    ("avg-as-float", {"avg": 65536.5}, "chunking"),
    ("nc-as-bool", {"nc": True}, "chunking"),
    ("missing-max", {"max": _DROP}, "chunking"),
    ("chunking-not-a-map", {"chunking": [1, 2]}, "chunking"),
    ("tensor-scan-unknown", {"tensor": "every-3rd-byte"}, "tensor scan"),
    ("tensor-scan-not-text", {"tensor": [1]}, "tensor scan"),
    ("format-as-text", {"format": "1"}, "format"),
    ("newer-format", {"format": 99}, "upgrade objstore"),
    ("no-format", {"format": _DROP}, "format"),
]


def _good_store(workdir: Path) -> Path:
    store = workdir / "store"
    with objstore.init(project="p", entity="e", store=store) as run:
        run.log_model(str(workdir / "model.bin"), name="m")
    return store


@pytest.mark.parametrize("label,changes,words", FORGED, ids=[f[0] for f in FORGED])
def test_forged_store_config_is_a_clear_error_on_open_and_clone(workdir: Path, label: str, changes: dict[str, Any], words: str) -> None:
    store = _good_store(workdir)
    _forge(store, **changes)
    before = snapshot(store)
    calls = [
        lambda: Store.open_existing(store),
        lambda: Store.open(store),
        lambda: objstore.init(project="p", entity="e", store=store).log_model(str(workdir / "other.bin"), name="m"),
        lambda: Api(store=store, entity="e", project="p").artifact("m:v0").download(workdir / "dl"),
    ]
    for call in calls:
        with pytest.raises(errors.ObjstoreError) as err:
            call()
        message = str(err.value)
        assert words in message and "\n" not in message, message
        assert not isinstance(err.value, errors.NotFound)
    with pytest.raises(errors.ObjstoreError, match=words):
        clone(str(store), workdir / "copy")
    assert not (workdir / "copy").exists()
    other = workdir / "other-store"
    with objstore.init(project="p", entity="e", store=other) as run:
        run.log_model(str(workdir / "other.bin"), name="n")
    with pytest.raises(errors.ObjstoreError, match=words):
        objstore.push(str(other), str(store))
    assert snapshot(store) == before


# One forged config per kind of damage for the CLI (each command is a subprocess).
CLI_FORGED = [f for f in FORGED if f[0] in ("min-above-avg", "avg-as-text", "missing-max", "newer-format")]


@pytest.mark.parametrize("label,changes,words", CLI_FORGED, ids=[f[0] for f in CLI_FORGED])
def test_forged_store_config_is_one_line_in_the_cli(workdir: Path, label: str, changes: dict[str, Any], words: str) -> None:
    store = _good_store(workdir)
    _forge(store, **changes)
    before = snapshot(store)
    for args in (("ls",), ("log", "e/p/m"), ("fsck",), ("gc",), ("log-model", str(workdir / "other.bin"), "--name", "m")):
        result = run_cli(store, *args, cwd=workdir, check=False)
        assert result.code != 0, args
        assert words in result.err and "unexpected" not in result.err and "Traceback" not in result.err, result.err
        assert len(result.err.strip().splitlines()) == 1
    result = run_cli("", "clone", str(store), "copy2", cwd=workdir, check=False)
    assert result.code != 0 and words in result.err and "unexpected" not in result.err
    assert not (workdir / "copy2").exists()
    # Pushing into a forged remote is refused as well, before anything is sent.
    other = workdir / "other-store"
    with objstore.init(project="p", entity="e", store=other) as run:
        run.log_model(str(workdir / "other.bin"), name="n")
    result = run_cli(other, "push", str(store), check=False)
    assert result.code != 0 and words in result.err and "unexpected" not in result.err
    assert snapshot(store) == before


def test_creating_a_store_with_bad_chunking_writes_nothing(workdir: Path) -> None:
    from objstore.storage.chunking import ChunkParams

    with pytest.raises(errors.InvalidInput, match="chunking"):
        Store.open(workdir / "store", chunking=ChunkParams(avg_size=100, min_size=50, max_size=200))
    assert not (workdir / "store" / "config").exists()


@pytest.mark.s3
@pytest.mark.parametrize(
    "label,changes,words",
    [f for f in FORGED if f[0] in ("min-above-avg", "avg-as-text", "newer-format")],
    ids=["min-above-avg", "avg-as-text", "newer-format"],
)
def test_forged_config_on_a_bucket_is_a_clear_error(
    workdir: Path, s3_env: dict[str, str], s3_bucket_url: str, label: str, changes: dict[str, Any], words: str
) -> None:
    """A remote store opens through the same Store.open: its config is checked the same way."""
    from objstore.storage.backend import open_backend

    with objstore.init(project="p", entity="e", store=s3_bucket_url) as run:
        run.log_model(str(workdir / "model.bin"), name="m")
    backend = open_backend(s3_bucket_url)
    d = msgpack.unpackb(backend.get("config"), raw=False)
    for k, v in changes.items():
        (d["chunking"] if k in ("avg", "min", "max", "nc") else d)[k] = v
    backend.put("config", msgpack.packb(d))
    backend.close()
    for call in (lambda: Store.open_existing(s3_bucket_url), lambda: clone(s3_bucket_url, workdir / "copy")):
        with pytest.raises(errors.ObjstoreError, match=words) as err:
            call()
        assert not isinstance(err.value, errors.NotFound) and "\n" not in str(err.value)
    assert not (workdir / "copy").exists()
    local = _good_store(workdir)
    for args in (("push", s3_bucket_url), ("fetch", s3_bucket_url)):
        result = run_cli(local, *args, check=False)
        assert result.code != 0 and words in result.err and "unexpected" not in result.err, result.err
