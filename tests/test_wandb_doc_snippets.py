"""W&B documentation snippets, run with only ``import wandb`` changed to
``import objstore as wandb`` (the store comes from ``$OBJSTORE_DIR``, W&B's server
setting's stand-in). Each snippet is W&B's code as its docs show it (artifacts,
partial download, new versions from old, registry links, updating aliases, Api
browsing, the log-models page); the files it reads are made first, and what it
printed or returned is checked after.

Also W&B's pages on updating an artifact after logging (description, metadata,
ttl), on data retention (ttl), on deleting versions, and on distributed writers
(``upsert_artifact`` / ``finish_artifact``: W&B's example launches its writers
with ray and fills ``wandb.Table`` parts; here the same calls run in a loop and
write text parts, the one adaptation, said where it is).
"""

from __future__ import annotations

import contextlib
import io
import textwrap
from datetime import timedelta
from pathlib import Path

import pytest

import objstore

SNIPPETS: dict[str, str] = {
    "construct and log an artifact": """
        import wandb

        run = wandb.init(project="artifacts-example", job_type="add-dataset")
        artifact = wandb.Artifact(name="example_artifact", type="dataset")
        artifact.add_file(local_path="./dataset.h5", name="training_dataset")
        artifact.add_dir(local_path="./images", name="images")
        run.log_artifact(artifact)
        run.finish()
    """,
    "save a draft without log_artifact": """
        import wandb

        artifact = wandb.Artifact(name="saved_artifact", type="dataset")
        artifact.add_file(local_path="./dataset.h5")
        artifact.save()
    """,
    "download and use an artifact": """
        import wandb

        run = wandb.init(project="artifacts-example", job_type="use-dataset")
        artifact = run.use_artifact("example_artifact:latest")
        datadir = artifact.download()
        print(datadir)
        run.finish()
    """,
    "download part of an artifact": """
        import wandb

        run = wandb.init(project="artifacts-example")
        artifact = run.use_artifact("example_artifact:latest")
        entry = artifact.get_entry("training_dataset")
        print(entry.download())
        print(artifact.download(path_prefix="images/"))
        run.finish()
    """,
    "wait for a logged artifact": """
        import wandb

        with wandb.init(project="artifacts-example") as run:
            artifact = wandb.Artifact("waited", type="dataset")
            with artifact.new_file("notes.txt", mode="w") as f:
                f.write("hello")
            run.log_artifact(artifact)
            artifact.wait()
            print(artifact.version)
    """,
    "new version from an existing one": """
        import wandb

        run = wandb.init(project="artifacts-example", job_type="incremental")
        saved_artifact = run.use_artifact("example_artifact:latest")
        draft_artifact = saved_artifact.new_draft()
        draft_artifact.add_file("file_to_add.txt")
        draft_artifact.remove("images")
        run.log_artifact(draft_artifact)
        run.finish()
    """,
    "update aliases after logging": """
        import wandb

        api = wandb.Api()
        artifact = api.artifact("artifacts-example/example_artifact:v0")
        artifact.aliases.append("best")
        artifact.save()
    """,
    "link to the registry": """
        import wandb

        run = wandb.init(entity="charlie", project="registry-example")
        artifact = wandb.Artifact(name="my_model", type="model")
        artifact.add_file(local_path="model.pt")
        run.log_artifact(artifact)
        run.link_artifact(artifact=artifact, target_path="charlie/model-registry/best-model", aliases=["staging"])
        run.finish()
    """,
    "link a draft with Artifact.link after logging": """
        import wandb

        with wandb.init(entity="charlie", project="registry-example") as run:
            artifact = wandb.Artifact(name="other_model", type="model")
            artifact.add_file(local_path="model.pt")
            logged = run.log_artifact(artifact)
        logged.link(target_path="charlie/model-registry/other-model", aliases=["production"])
    """,
    "log, use and link a model (the log-models page)": """
        import wandb

        config = {"optimizer": "adam", "loss": "categorical_crossentropy"}
        run = wandb.init(entity="charlie", project="mnist-experiments", config=config)
        loss = run.config["loss"]
        run.log_model(path="./model.h5", name="MNIST")
        run.finish()

        run = wandb.init(project="mnist-experiments", entity="charlie")
        downloaded_model_path = run.use_model(name="MNIST:latest")
        print(downloaded_model_path)
        run.link_model(path="./model.h5", registered_model_name="MNIST-registered")
        run.finish()
    """,
    "browse with the Api": """
        import wandb

        api = wandb.Api(overrides={"entity": "charlie", "project": "mnist-experiments"})
        for project in api.projects():
            print("project", project.name)
        for run in api.runs("charlie/mnist-experiments"):
            print("run", run.name, run.config)
        artifact = api.artifact("MNIST:latest", type="model")
        for f in artifact.files():
            print("file", f.name, f.size)
        collection = api.artifact_collection(type_name="model", name="MNIST")
        for version in collection.artifacts():
            print("version", version.name, version.aliases)
        print("exists", api.artifact_exists("MNIST:v0"), api.artifact_exists("MNIST:v7"))
        print("types", [t.name for t in api.artifact_types()])
        versions = api.artifacts(type_name="model", name="charlie/mnist-experiments/MNIST")
        print("count", len(versions), versions[0].created_at)
    """,
    "update an artifact after logging (Api)": """
        import wandb

        api = wandb.Api()
        artifact = api.artifact("artifacts-example/example_artifact:v0")
        artifact.description = "My new description"
        artifact.metadata["source"] = "camera-trap"
        artifact.save()
    """,
    "update an artifact during a run": """
        import wandb

        with wandb.init(project="artifacts-example") as run:
            artifact = run.use_artifact("example_artifact:latest")
            artifact.metadata["key"] = "new value"
            artifact.save()
    """,
    "set a ttl when logging, and change it": """
        import wandb
        from datetime import timedelta

        run = wandb.init(project="artifacts-example")
        artifact = wandb.Artifact(name="short_lived", type="dataset")
        artifact.add_file("file_to_add.txt")
        artifact.ttl = timedelta(days=30)  # Set TTL policy
        run.log_artifact(artifact)
        run.finish()

        with wandb.init(project="artifacts-example") as run:
            artifact = run.use_artifact("short_lived:latest")
            artifact.ttl = timedelta(days=365 * 2)  # Two years
            artifact.save()
    """,
    "delete a version, and one with aliases": """
        import wandb

        api = wandb.Api()
        artifact = api.artifact("artifacts-example/short_lived:v0")
        artifact.aliases.append("keep-me")
        artifact.save()
        try:
            artifact.delete()
        except wandb.errors.CommError:
            print("refused while aliased")
        artifact.delete(delete_aliases=True)
    """,
    "distributed writers (W&B's ray example as a loop, text parts for tables)": """
        import wandb
        import time

        artifact_type = "dataset"
        artifact_name = "parallel-artifact"
        parts_path = "parts"
        num_parallel = 5
        group_name = "writer-group-{}".format(round(time.time()))

        def train(i):
            with wandb.init(group=group_name) as run:
                artifact = wandb.Artifact(name=artifact_name, type=artifact_type)
                with artifact.new_file("{}/table_{}.csv".format(parts_path, i), mode="w") as f:
                    f.write("a,b,c\\n{},{},{}\\n".format(i, i * 2, 2**i))
                run.upsert_artifact(artifact)

        for i in range(num_parallel):
            train(i)

        with wandb.init(group=group_name) as run:
            artifact = wandb.Artifact(artifact_name, type=artifact_type)
            run.finish_artifact(artifact)
            print(artifact.version, len(artifact.manifest.entries))
    """,
    "catch W&B's errors": """
        import wandb

        api = wandb.Api()
        try:
            api.artifact("artifacts-example/no-such-artifact:latest")
        except wandb.errors.CommError as e:
            print("CommError")
    """,
}


# Run after SNIPPETS, and checked apart: they change what those made.
LATER: dict[str, str] = {
    "tag a version after logging": """
        import wandb

        api = wandb.Api()
        artifact = api.artifact("artifacts-example/example_artifact:v1")
        artifact.tags = ["reviewed", "small"]
        artifact.save()
    """,
    "list the versions carrying a tag": """
        import wandb

        api = wandb.Api()
        for artifact in api.artifacts(type_name="dataset", name="artifacts-example/example_artifact", tags=["reviewed"]):
            print(artifact.version, artifact.tags)
    """,
    "change a ttl with the Api, inherit it, remove it": """
        import wandb
        from datetime import timedelta

        api = wandb.Api()
        artifact = api.artifact("artifacts-example/example_artifact:v1")
        artifact.ttl = timedelta(days=365)  # Delete in one year
        artifact.save()
        print(artifact.ttl.days)
        artifact.ttl = wandb.ArtifactTTL.INHERIT
        artifact.save()
        artifact.ttl = None
        artifact.save()
        print(artifact.ttl)
    """,
    "set a ttl on every version of a collection": """
        import wandb
        from datetime import timedelta

        api = wandb.Api()
        collection = api.artifact_collection(type_name="dataset", name="artifacts-example/waited")
        for artifact in collection.artifacts():
            artifact.ttl = timedelta(days=7)
            artifact.save()
    """,
}

# Run last: they remove what the others made.
DELETIONS: dict[str, str] = {
    "remove an alias, then delete the versions without one": """
        import wandb

        api = wandb.Api()
        artifact = api.artifact("artifacts-example/example_artifact:v0")
        artifact.aliases.remove("best")
        artifact.save()

        for v in api.artifact_versions("dataset", "artifacts-example/example_artifact"):
            if len(v.aliases) == 0:
                v.delete()
    """,
    "delete a collection": """
        import wandb

        api = wandb.Api()
        collection = api.artifact_collection("dataset", "artifacts-example/waited")
        collection.delete()
    """,
    "delete every artifact the runs of a project logged": """
        import wandb

        api = wandb.Api()
        runs = api.runs("artifacts-example")
        for run in runs:
            for artifact in run.logged_artifacts():
                artifact.delete(delete_aliases=True)
    """,
}


def _check_later(api: objstore.Api) -> None:
    outputs = {label: _run(code) for label, code in LATER.items()}
    assert outputs["list the versions carrying a tag"].strip() == "v1 ['reviewed', 'small']"
    assert outputs["change a ttl with the Api, inherit it, remove it"].split() == ["365", "None"]
    history = api.artifact("example_artifact:v1").annotation_history()
    assert [(c.old, c.new) for h in history for c in h.changes if c.field == "ttl"] == [
        ("inherit", 365 * 86400), (365 * 86400, "inherit"), ("inherit", None)]
    assert api.artifact("waited:v0").ttl == timedelta(days=7)
    for label, code in DELETIONS.items():
        assert _run(code) == "", label
    assert not api.artifact_exists("example_artifact:v0") and not api.artifact_exists("waited:v0")
    assert not api.artifact_collection_exists("waited", "dataset")
    assert not api.artifact_exists("example_artifact:v1") and not api.artifact_exists("example_artifact:latest")
    assert api.artifact_collections("artifacts-example") == []


def _run(code: str) -> str:
    source = textwrap.dedent(code).replace("import wandb\n", "import objstore as wandb\n", 1)
    assert "objstore" in source
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(source, "<snippet>", "exec"), {"__name__": "__snippet__"})  # noqa: S102  (the snippets above)
    objstore.finish()
    return out.getvalue()


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OBJSTORE_DIR", str(tmp_path / "store"))
    monkeypatch.delenv("OBJSTORE_ARTIFACT_DIR", raising=False)
    monkeypatch.delenv("WANDB_ARTIFACT_DIR", raising=False)
    (tmp_path / "dataset.h5").write_bytes(b"h5" * 1000)
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "0.png").write_bytes(b"png0")
    (tmp_path / "images" / "1.png").write_bytes(b"png1")
    (tmp_path / "file_to_add.txt").write_text("added")
    (tmp_path / "model.pt").write_bytes(b"torch")
    (tmp_path / "model.h5").write_bytes(b"keras")
    return tmp_path


def test_every_snippet_runs_in_order(workdir: Path) -> None:
    outputs = {label: _run(code) for label, code in SNIPPETS.items()}
    api = objstore.Api(workdir / "store", project="artifacts-example")
    assert outputs["download and use an artifact"].strip() == str(workdir / "artifacts" / "example_artifact:v0")
    part = outputs["download part of an artifact"].split()
    assert part == [str(workdir / "artifacts" / "example_artifact:v0" / "training_dataset"),
                    str(workdir / "artifacts" / "example_artifact:v0")]
    assert outputs["wait for a logged artifact"].strip() == "v0"
    v1 = api.artifact("example_artifact:v1")
    assert sorted(f.name for f in v1.files()) == ["file_to_add.txt", "training_dataset"]
    assert "best" in api.artifact("example_artifact:v0").aliases
    assert api.artifact_exists("uncategorized/saved_artifact:v0")  # a run of job type auto, in the default project
    assert "staging" in api.artifact("charlie/model-registry/best-model:latest").aliases
    assert "production" in api.artifact("charlie/model-registry/other-model:v0").aliases
    assert outputs["log, use and link a model (the log-models page)"].strip() == str(workdir / "artifacts" / "MNIST:v0" / "model.h5")
    browse = outputs["browse with the Api"].splitlines()
    assert "project mnist-experiments" in browse and "file model.h5 5" in browse and "exists True False" in browse
    assert "types ['model']" in browse and any(line.startswith("version MNIST:v0 ['latest']") for line in browse)
    assert sum(line.startswith("run ") for line in browse) == 2
    assert outputs["catch W&B's errors"].strip() == "CommError"
    v0 = api.artifact("example_artifact:v0")
    assert v0.description == "My new description" and v0.metadata["source"] == "camera-trap"
    assert api.artifact("example_artifact:latest").metadata["key"] == "new value"
    assert outputs["delete a version, and one with aliases"].strip() == "refused while aliased"
    assert not api.artifact_exists("short_lived:v0")
    assert outputs["distributed writers (W&B's ray example as a loop, text parts for tables)"].split() == ["v0", "5"]
    parallel = api.artifact("uncategorized/parallel-artifact:v0")
    assert sorted(parallel.manifest.entries) == [f"parts/table_{i}.csv" for i in range(5)]
    _check_later(api)
