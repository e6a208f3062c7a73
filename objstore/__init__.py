"""objstore: a git-like, content-addressed object store for machine-learning models.

    import objstore
    with objstore.init(project="mnist", entity="charlie") as run:
        art = run.log_model(path="model.safetensors", name="MNIST", aliases=["best"])
        path = run.use_model("MNIST:latest")
        run.link_model(path="model.safetensors", registered_model_name="Digits")
"""

from __future__ import annotations

from . import errors
from .api import Api, ArtifactCollection
from .artifact import Artifact, ArtifactFile
from .runs import Run, RunInfo, init
from .store import Store

__version__ = "0.1.0"

__all__ = ["Api", "Artifact", "ArtifactCollection", "ArtifactFile", "Run", "RunInfo", "Store", "errors", "init", "__version__"]
