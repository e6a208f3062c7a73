"""Default names: the entity, project, run id and run name a run gets when none is given, and
the collection a path is logged into (``run-<run id>-<basename>``).

Split from :mod:`objstore.api.runs`.
"""

from __future__ import annotations

import os
import secrets

from objstore.errors import InvalidInput, InvalidName, NotFound
from objstore.files.references import is_uri
from objstore.model.names import check_name
from objstore.settings import DEFAULT_PROJECT, default_entity

__all__ = ["DEFAULT_PROJECT", "artifact_name_for", "default_entity", "default_run_name", "new_run_id"]

_ADJECTIVES = ("amber", "brisk", "calm", "dusky", "eager", "fancy", "gentle", "hazy", "icy", "jolly", "keen",
               "lucid", "misty", "noble", "olive", "proud", "quiet", "rapid", "sunny", "tidy", "vivid", "witty")
_NOUNS = ("river", "forest", "comet", "meadow", "harbor", "canyon", "glacier", "breeze",
          "ember", "lagoon", "summit", "valley", "prairie", "dune", "aurora", "cedar")


def default_run_name() -> str:
    """A run's display name when none is given: ``adjective-noun-NN``, as W&B does."""
    return f"{secrets.choice(_ADJECTIVES)}-{secrets.choice(_NOUNS)}-{secrets.randbelow(100)}"


def new_run_id() -> str:
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(secrets.choice(alphabet) for _ in range(8))


def artifact_name_for(path: str, name: str | None, run_id: str) -> str:
    """The collection a run logs ``path`` (a file, a directory or a URI) into: ``name``,
    checked, else the default ``run-<run id>-<basename>``. Refuses a local path that
    does not exist, and a default name that breaks the naming rules, before anything
    is written."""
    if not isinstance(path, str) or not path:
        raise InvalidInput("path must be a file, a directory or a URI")
    if is_uri(path):
        base = path.rstrip("/").rsplit("/", 1)[-1]
    else:
        base = os.path.basename(os.path.normpath(path))
        if not os.path.exists(path):
            raise NotFound(f"{path} does not exist; check the path", key=path)
    if name is not None:
        return check_name(name, "artifact name")
    name = f"run-{run_id}-{base}"
    try:
        return check_name(name, "artifact name")
    except InvalidName:
        raise InvalidName(f"the default name {name!r} breaks the naming rules; pass name= with 1-128 of A-Z a-z 0-9 . _ -") from None
