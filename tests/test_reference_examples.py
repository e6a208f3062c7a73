"""The three examples of the reference page (log-models.ja.md), with ``wandb``
replaced by ``objstore`` and training replaced by writing a file, run as written
in real Python processes, and checked against what the page says they do."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import objstore
from objstore.errors import NotFound


def run_script(tmp_path: Path, store: Path, source: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "example.py"
    script.write_text(textwrap.dedent(source))
    env = {**os.environ, "OBJSTORE_DIR": str(store)}
    proc = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc


def test_log_model_example(tmp_path: Path) -> None:
    store = tmp_path / "store"
    proc = run_script(tmp_path, store, '''
        import os
        import objstore

        config = {"optimizer": "adam", "loss": "categorical_crossentropy"}

        # Initialize a run
        run = objstore.init(entity="charlie", project="mnist-experiments", config=config)

        # Hyperparameters
        loss = run.config["loss"]
        optimizer = run.config["optimizer"]
        metrics = ["accuracy"]
        num_classes = 10
        input_shape = (28, 28, 1)

        # Training is replaced by writing the model file.
        model_filename = "model.h5"
        local_filepath = "./"
        full_path = os.path.join(local_filepath, model_filename)
        with open(full_path, "wb") as f:
            f.write(os.urandom(200_000))

        # Log the model to the run
        run.log_model(path=full_path, name="MNIST")
        run.finish()
        print(run.id)
    ''')
    run_id = proc.stdout.strip()
    api = objstore.Api(store=store, entity="charlie", project="mnist-experiments")
    art = api.artifact("MNIST:latest")
    # "a model artifact named MNIST is created and model.h5 is added to it"
    assert art.type == "model" and art.version == "v0"
    assert [f.path for f in art.files()] == ["model.h5"]
    assert art.files()[0].size == 200_000
    # log_model marks the artifact as the run's output.
    run = api.run(f"charlie/mnist-experiments/{run_id}")
    assert run.state == "finished"
    assert [a.qualified_name for a in run.logged_artifacts()] == ["charlie/mnist-experiments/MNIST:v0"]
    assert run.config["loss"] == "categorical_crossentropy"
    assert art.logged_by().id == run_id
    assert "logged charlie/mnist-experiments/MNIST:v0" in proc.stderr


def test_use_model_example(tmp_path: Path) -> None:
    store = tmp_path / "store"
    weights = os.urandom(300_000)
    with objstore.init(entity="luka", project="NLP_Experiments", store=store) as run:
        (tmp_path / "model.bin").write_bytes(weights)
        run.log_model(path=str(tmp_path / "model.bin"), name="fine-tuned-model")
    proc = run_script(tmp_path, store, '''
        import objstore

        entity = "luka"
        project = "NLP_Experiments"
        alias = "latest"  # a semantic nickname or identifier of the model version
        model_artifact_name = "fine-tuned-model"

        # Initialize a run
        run = objstore.init(project=project, entity=entity)
        # Access and download the model; returns the path of the downloaded artifact
        downloaded_model_path = run.use_model(name=f"{model_artifact_name}:{alias}")
        print(downloaded_model_path)
        print(run.id)
        run.finish()
    ''')
    path_text, run_id = proc.stdout.split()
    downloaded = tmp_path / path_text
    # One file: the path is the file itself, holding exactly the logged bytes.
    assert downloaded.is_file() and downloaded.read_bytes() == weights
    assert downloaded.parent.name == "fine-tuned-model:v0"
    run = objstore.Api(store=store).run(f"luka/NLP_Experiments/{run_id}")
    assert [a.qualified_name for a in run.used_artifacts()] == ["luka/NLP_Experiments/fine-tuned-model:v0"]


def test_link_model_example(tmp_path: Path) -> None:
    store = tmp_path / "store"
    model = tmp_path / "local" / "dir" / "model.pt"
    model.parent.mkdir(parents=True)
    example = f'''
        import objstore

        path = {str(model)!r}
        registered_model_name = "Fine-Tuned-Review-Autocompletion"

        run = objstore.init(project="llm-evaluation", entity="noa")
        run.link_model(path=path, registered_model_name=registered_model_name)
        run.finish()
    '''
    api = objstore.Api(store=store, entity="noa")
    with pytest.raises(NotFound):
        api.artifact("noa/model-registry/Fine-Tuned-Review-Autocompletion:v0")
    # No registered model of that name yet: it is created and the model becomes v0.
    model.write_bytes(os.urandom(100_000))
    run_script(tmp_path, store, example)
    linked = api.artifact("noa/model-registry/Fine-Tuned-Review-Autocompletion:v0")
    assert linked.source_qualified_name.startswith("noa/llm-evaluation/run-")
    assert "latest" in linked.aliases
    # With v0, v1, v2 already linked, linking another model makes it v3.
    for _ in range(2):
        model.write_bytes(os.urandom(100_000))
        run_script(tmp_path, store, example)
    model.write_bytes(os.urandom(100_000))
    run_script(tmp_path, store, example)
    versions = api.artifact_versions(None, "noa/model-registry/Fine-Tuned-Review-Autocompletion")
    assert [v.version for v in versions] == ["v0", "v1", "v2", "v3"]
    assert api.artifact("noa/model-registry/Fine-Tuned-Review-Autocompletion:latest").version == "v3"
    # Linking points at the logged model; nothing is copied: the registry entry
    # resolves to the same tree as the version in the project.
    source = api.artifact(versions[3].source_qualified_name)
    assert source.digest == versions[3].digest
    # Linking the same content again adds no registry version.
    run_script(tmp_path, store, example)
    assert len(api.artifact_versions(None, "noa/model-registry/Fine-Tuned-Review-Autocompletion")) == 4
