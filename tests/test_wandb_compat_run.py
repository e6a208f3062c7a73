"""Porting from W&B, runs: ``init`` takes W&B's parameters in W&B's order, the run's
config and summary behave as W&B's, and the module-level calls act on the current run."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import objstore
from objstore import errors
from objstore.api.runinfo import read_run_by_path


@pytest.fixture(autouse=True)
def no_current_run() -> Iterator[None]:
    yield
    objstore.finish()


def test_entity_then_project_positionally_as_wandb(tmp_path: Path) -> None:
    run = objstore.init("ent", "proj", store=tmp_path / "s")
    assert (run.entity, run.project) == ("ent", "proj")


def test_tags_notes_group_job_type_name_id_are_stored(tmp_path: Path) -> None:
    with objstore.init(entity="e", project="p", store=tmp_path / "s", tags=["a", "b"], notes="first", group="g",
                       job_type="train", name="nice", id="run1") as run:
        assert run.tags == ("a", "b") and run.notes == "first" and run.group == "g"
    info = read_run_by_path(objstore.Store.open(tmp_path / "s"), "e/p/run1")
    assert (info.tags, info.notes, info.group, info.job_type, info.name, info.state) == (
        ("a", "b"), "first", "g", "train", "nice", "finished")


def test_config_attribute_access_and_update_are_stored(tmp_path: Path) -> None:
    with objstore.init(entity="e", project="p", store=tmp_path / "s", config={"lr": 0.1, "layers": [2, 3]}, id="r") as run:
        assert run.config.lr == 0.1 and run.config["layers"] == [2, 3]
        run.config.batch = 32
        run.config.update({"epochs": 3})
        run.config["drop"] = 0.5
        assert objstore.config.batch == 32
        with pytest.raises(AttributeError):
            _ = run.config.missing
        with pytest.raises(errors.InvalidInput, match="config"):
            run.config.bad = object()
    info = read_run_by_path(objstore.Store.open(tmp_path / "s"), "e/p/r")
    assert info.config == {"lr": 0.1, "layers": [2, 3], "batch": 32, "epochs": 3, "drop": 0.5}


@pytest.mark.parametrize("form", ["json", "namespace", "include", "exclude"])
def test_config_forms_wandb_accepts(tmp_path: Path, form: str) -> None:
    kwargs: dict[str, object] = {}
    if form == "json":
        (tmp_path / "c.json").write_text(json.dumps({"lr": 0.1, "wandb_version": 1, "bs": {"value": 8, "desc": "batch"}}))
        kwargs["config"] = str(tmp_path / "c.json")
    elif form == "namespace":
        kwargs["config"] = argparse.Namespace(lr=0.1, bs=8)
    elif form == "include":
        kwargs.update(config={"lr": 0.1, "bs": 8, "x": 1}, config_include_keys=["lr", "bs"])
    else:
        kwargs.update(config={"lr": 0.1, "bs": 8, "x": 1}, config_exclude_keys=["x"])
    run = objstore.init(entity="e", project="p", store=tmp_path / "s", **kwargs)  # type: ignore[arg-type]
    assert run.config.as_dict() == {"lr": 0.1, "bs": 8}


def test_a_missing_config_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(errors.UsageError, match="config file"):
        objstore.init(entity="e", project="p", store=tmp_path / "s", config=str(tmp_path / "none.yaml"))


def test_log_and_summary_record_the_latest_values(tmp_path: Path) -> None:
    (tmp_path / "m.bin").write_bytes(b"w")
    with objstore.init(entity="e", project="p", store=tmp_path / "s", id="r") as run:
        for step in range(3):
            run.log({"loss": 1.0 / (step + 1), "epoch": step})
        run.summary["best"] = 0.9
        objstore.log({"acc": 0.5})
        assert run.summary.loss == pytest.approx(1 / 3) and run.summary["epoch"] == 2
        art = run.log_model(str(tmp_path / "m.bin"), name="m")
    info = read_run_by_path(objstore.Store.open(tmp_path / "s"), "e/p/r")
    assert info.summary == {"loss": pytest.approx(1 / 3), "epoch": 2, "best": 0.9, "acc": 0.5}
    made_by = art.logged_by()
    assert made_by is not None and made_by.summary["best"] == 0.9


def test_numpy_values_a_training_script_logs_are_converted_as_wandb_converts_them(tmp_path: Path) -> None:
    """``np.argmax`` gives an ``np.int64``, a float16 model's loss an ``np.float32``: W&B stores them
    as numbers, and so does objstore's artifact metadata, but run.log, run.summary and run.config
    refused them ("a int64 cannot be stored", "a bool cannot be stored" for ``np.bool_``) before
    the fix."""
    np = pytest.importorskip("numpy")
    with objstore.init(entity="e", project="p", store=tmp_path / "s", id="r",
                       config={"lr": np.float32(0.5), "layers": np.arange(3)}) as run:
        run.log({"loss": np.float32(0.25), "step": np.int64(3)})
        run.summary["best_epoch"] = np.int64(7)
        run.config.update({"fp16": np.bool_(True)})
        run.config.seed = np.int32(11)
    info = read_run_by_path(objstore.Store.open(tmp_path / "s"), "e/p/r")
    assert info.summary == {"loss": 0.25, "step": 3, "best_epoch": 7}
    assert info.config == {"lr": 0.5, "layers": [0, 1, 2], "fp16": True, "seed": 11}
    assert all(type(v) in (int, float, bool, list) for v in (*info.summary.values(), *info.config.values()))


def test_disabled_mode_writes_nothing_and_every_call_does_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # use_model's default root is ./artifacts: nothing may appear there either
    (tmp_path / "m.bin").write_bytes(b"w")
    run = objstore.init(entity="e", project="p", store=tmp_path / "s", mode="disabled", config={"lr": 1})
    assert objstore.run is run and run.disabled and run.config.lr == 1
    run.log({"loss": 1.0})
    run.log_model(str(tmp_path / "m.bin"), name="m")
    run.use_model("m:latest")
    run.link_model(str(tmp_path / "m.bin"), registered_model_name="r")
    objstore.log_artifact(str(tmp_path / "m.bin"))
    objstore.use_artifact("x:v0").download()
    run.finish()
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("mode", ["online", "offline", None])
def test_online_and_offline_behave_alike(tmp_path: Path, mode: Any) -> None:
    with objstore.init(entity="e", project="p", store=tmp_path / "s", mode=mode, id="r") as run:
        assert not run.disabled
    assert read_run_by_path(objstore.Store.open(tmp_path / "s"), "e/p/r").state == "finished"


@pytest.mark.parametrize("kwargs, match", [({"mode": "other"}, "mode"), ({"resume": "sometimes"}, "resume"),
                                           ({"reinit": "twice"}, "reinit"), ({"tags": "notalist"}, "tags"),
                                           ({"tags": [1]}, "tag"), ({"notes": 5}, "notes"), ({"group": 5}, "group")])
def test_bad_init_arguments_are_usage_errors(tmp_path: Path, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(errors.UsageError, match=match):
        objstore.init(entity="e", project="p", store=tmp_path / "s", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("kwargs", [{"resume_from": "r?_step=3"}, {"fork_from": "r?_step=3"}])
def test_wandb_arguments_objstore_does_not_offer_are_refused(tmp_path: Path, kwargs: dict[str, str]) -> None:
    with pytest.raises(errors.UnsupportedError):
        objstore.init(entity="e", project="p", store=tmp_path / "s", **kwargs)  # type: ignore[arg-type]


def test_accepted_and_ignored_arguments(tmp_path: Path) -> None:
    run = objstore.init(entity="e", project="p", store=tmp_path / "s", dir=str(tmp_path / "logs"), save_code=True,
                        settings={"x_label": "a"}, force=False, sync_tensorboard=False, monitor_gym=False,
                        allow_val_change=True)
    run.finish()
    assert not (tmp_path / "logs").exists()


def test_resume_rules(tmp_path: Path) -> None:
    store = tmp_path / "s"
    with pytest.raises(errors.UsageError, match="must"):
        objstore.init(entity="e", project="p", store=store, id="r", resume="must")
    with objstore.init(entity="e", project="p", store=store, id="r", resume="never", config={"a": 1}) as run:
        run.log({"loss": 2.0})
    with pytest.raises(errors.UsageError, match="never"):
        objstore.init(entity="e", project="p", store=store, id="r", resume="never")
    for resume in ("allow", "must", True, "auto"):
        with objstore.init(entity="e", project="p", store=store, id="r", resume=resume) as run:
            assert run.config.a == 1 and run.summary.loss == 2.0


def test_reinit(tmp_path: Path) -> None:
    store = tmp_path / "s"
    first = objstore.init(entity="e", project="p", store=store, id="one")
    assert objstore.run is first
    assert objstore.init(entity="e", project="p", store=store, reinit="return_previous") is first
    other = objstore.init(entity="e", project="p", store=store, reinit="create_new", id="two")
    assert other is not first and objstore.run is first
    second = objstore.init(entity="e", project="p", store=store, reinit=True, id="three")
    assert objstore.run is second
    assert read_run_by_path(objstore.Store.open(store), "e/p/one").state == "finished"
    second.finish()
    assert objstore.run is None


def test_module_level_calls_act_on_the_current_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # use_model's default root is ./artifacts
    (tmp_path / "m.bin").write_bytes(b"w")
    assert objstore.run is None
    with pytest.raises(errors.UsageError, match="init"):
        objstore.log({"a": 1})
    with pytest.raises(errors.UsageError, match="init"):
        objstore.log_model(str(tmp_path / "m.bin"))
    for attr in ("config", "summary"):
        with pytest.raises(errors.UsageError, match="init"):
            getattr(objstore, attr)
    run = objstore.init(entity="e", project="p", store=tmp_path / "s", id="r", config={"lr": 0.1})
    objstore.log({"loss": 0.5})
    assert objstore.run is run and objstore.config.lr == 0.1 and objstore.summary["loss"] == 0.5
    art = objstore.log_model(str(tmp_path / "m.bin"), name="m", aliases=["best"])
    assert objstore.use_model("m:best").endswith("m.bin")
    objstore.link_model(str(tmp_path / "m.bin"), registered_model_name="reg")
    assert objstore.use_artifact("m:v0").digest == art.digest
    objstore.log_artifact(str(tmp_path / "m.bin"), name="data", type="dataset")
    objstore.finish()
    assert objstore.run is None
    info = read_run_by_path(run.store, "e/p/r")
    assert info.summary == {"loss": 0.5} and info.config == {"lr": 0.1}
    assert info.state == "finished" and len(info.outputs) == 3 and len(info.inputs) == 1  # m:best and m:v0 are one version
