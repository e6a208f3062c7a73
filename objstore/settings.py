"""Settings: the entity, project, store and remotes a call uses when it names none.

Split from :mod:`objstore.api.naming` (the defaults).
"""

from __future__ import annotations

import getpass
import re

DEFAULT_PROJECT = "uncategorized"


def default_entity() -> str:
    """The OS user name, made a valid entity name."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "user"
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", user).lstrip(".")[:128]
    return cleaned or "user"
