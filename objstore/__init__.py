"""objstore: a git-like, content-addressed object store for machine-learning models.

    import objstore
    with objstore.init(entity="charlie", project="mnist") as run:
        art = run.log_model(path="model.safetensors", name="MNIST", aliases=["best"])
        path = run.use_model("MNIST:latest")
        run.link_model(path="model.safetensors", registered_model_name="Digits")
"""

from __future__ import annotations

from typing import Any

from objstore import errors
from objstore.api.artifact import Artifact, ArtifactEntry, ArtifactFile, ArtifactTTL
from objstore.api.public import Api, ArtifactCollection, ArtifactType, Project
from objstore.api.runconfig import RunValues
from objstore.api.runinfo import RunInfo
from objstore.api.runs import Run, current_run, finish, init, link_model, log, log_artifact, log_model, use_artifact, use_model
from objstore.files import bucket_references
from objstore.model.store import Store
from objstore.transfer.remotes import Remote, clone, fetch, pull, push, remote_add, remote_list, remote_remove

# Wiring: reference schemes other than file:// are registered here, above the
# resolvers, so files.references never imports the modules that extend it.
bucket_references.register()

__version__ = "0.1.0"

__all__ = ["Api", "Artifact", "ArtifactCollection", "ArtifactEntry", "ArtifactFile", "ArtifactTTL", "ArtifactType", "Project",
           "Remote", "Run", "RunInfo", "RunValues", "Store", "clone",
           "errors", "fetch", "finish", "init", "link_model", "log", "log_artifact", "log_model", "pull", "push", "remote_add",
           "remote_list", "remote_remove", "use_artifact", "use_model", "__version__"]


def __getattr__(name: str) -> Any:
    """``objstore.run`` (the current run, or None), ``objstore.config`` and
    ``objstore.summary`` (the current run's), as W&B's module attributes; looked up
    on each access, since the current run changes with init and finish."""
    if name == "run":
        return current_run()
    if name in ("config", "summary"):
        run = current_run()
        if run is None:
            raise errors.UsageError(f"objstore.{name} needs a run: call objstore.init() first")
        return getattr(run, name)
    raise AttributeError(f"module 'objstore' has no attribute {name!r}")
