"""objstore: a git-like, content-addressed object store for machine-learning models.

    import objstore
    with objstore.init(project="mnist", entity="charlie") as run:
        art = run.log_model(path="model.safetensors", name="MNIST", aliases=["best"])
        path = run.use_model("MNIST:latest")
        run.link_model(path="model.safetensors", registered_model_name="Digits")
"""

from __future__ import annotations

from objstore import errors
from objstore.api.artifact import Artifact, ArtifactFile
from objstore.api.public import Api, ArtifactCollection
from objstore.api.runinfo import RunInfo
from objstore.api.runs import Run, init
from objstore.files import bucket_references
from objstore.model.store import Store
from objstore.transfer.remotes import Remote, clone, fetch, pull, push, remote_add, remote_list, remote_remove

# Wiring: reference schemes other than file:// are registered here, above the
# resolvers, so files.references never imports the modules that extend it.
bucket_references.register()

__version__ = "0.1.0"

__all__ = ["Api", "Artifact", "ArtifactCollection", "ArtifactFile", "Remote", "Run", "RunInfo", "Store", "clone", "errors", "fetch",
           "init", "pull", "push", "remote_add", "remote_list", "remote_remove", "__version__"]
