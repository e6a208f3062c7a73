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
from .remotes import Remote, clone, fetch, pull, push, remote_add, remote_list, remote_remove
from .runs import Run, RunInfo, init
from .store import Store

__version__ = "0.1.0"

__all__ = ["Api", "Artifact", "ArtifactCollection", "ArtifactFile", "Remote", "Run", "RunInfo", "Store", "clone", "errors", "fetch",
           "init", "pull", "push", "remote_add", "remote_list", "remote_remove", "__version__"]
