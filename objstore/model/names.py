"""Names of entities, projects, artifacts, registered models and aliases, and the
``entity/project/name:selector`` form that addresses one version.

Rules (DESIGN.md): names are 1–128 of ``[A-Za-z0-9._-]``, not starting with ``.``;
an alias follows the same rule and is never ``v<digits>`` (those are versions).
Breaking a rule raises :class:`~objstore.errors.InvalidName` naming the rule, before
anything is written.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from objstore.errors import InvalidName

NAME_RULE = "1-128 characters from A-Z a-z 0-9 . _ -, not starting with '.'"
_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
_VERSION = re.compile(r"v(\d+)")
_DIGEST_PREFIX = re.compile(r"[0-9a-f]{8,64}")

REGISTRY_PROJECT = "model-registry"
LATEST = "latest"


def check_name(value: object, what: str = "name") -> str:
    """Return ``value`` if it is a valid name, else raise InvalidName saying the rule."""
    if not isinstance(value, str):
        raise InvalidName(f"{what} must be a string, got {type(value).__name__}")
    if not _NAME.fullmatch(value) or value.startswith("."):
        raise InvalidName(f"invalid {what} {value!r}: use {NAME_RULE}")
    return value


def check_alias(value: object) -> str:
    alias = check_name(value, "alias")
    if _VERSION.fullmatch(alias):
        raise InvalidName(f"invalid alias {alias!r}: v<digits> is reserved for version numbers; choose another alias")
    return alias


def check_aliases(values: object) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str):
        values = [values]
    try:
        items = list(values)  # type: ignore[call-overload]
    except TypeError:
        raise InvalidName(f"aliases must be a list of strings, got {type(values).__name__}") from None
    seen: dict[str, None] = {}
    for item in items:
        seen[check_alias(item)] = None
    return tuple(seen)


def version_index(selector: str) -> int | None:
    """N for a selector ``vN``, else None."""
    m = _VERSION.fullmatch(selector)
    return int(m.group(1)) if m else None


@dataclass(frozen=True, slots=True)
class CollectionPath:
    """``entity/project/name``: one artifact collection or registered model."""

    entity: str
    project: str
    name: str

    def __str__(self) -> str:
        return f"{self.entity}/{self.project}/{self.name}"

    @property
    def is_registry(self) -> bool:
        return self.project == REGISTRY_PROJECT


@dataclass(frozen=True, slots=True)
class VersionSpec:
    """A parsed ``entity/project/name:selector``; selector is ``vN``, an alias or a digest prefix."""

    collection: CollectionPath
    selector: str

    def __str__(self) -> str:
        return f"{self.collection}:{self.selector}"


def parse_version_spec(text: object, *, entity: str | None, project: str | None, default_selector: str = LATEST) -> VersionSpec:
    """Parse ``name``, ``name:sel``, ``project/name:sel`` or ``entity/project/name:sel``.

    Missing parts come from ``entity`` and ``project`` (the run's). Raises
    InvalidName with the accepted forms when the text fits none of them.
    """
    if not isinstance(text, str) or not text:
        raise InvalidName("an artifact name is required, e.g. 'MNIST:latest' or 'charlie/mnist/MNIST:v2'")
    path, colon, selector = text.partition(":")
    if colon and not selector:
        raise InvalidName(f"{text!r} ends with ':'; give a version (v0), an alias or a digest after it")
    if ":" in selector:
        raise InvalidName(f"{text!r} has more than one ':'; use name:selector")
    parts = path.split("/")
    if len(parts) == 1:
        ent, proj, name = entity, project, parts[0]
    elif len(parts) == 2:
        ent, proj, name = entity, parts[0], parts[1]
    elif len(parts) == 3:
        ent, proj, name = parts
    else:
        raise InvalidName(f"{text!r} has too many '/': use entity/project/name:selector")
    if ent is None or proj is None:
        raise InvalidName(f"{text!r} needs an entity and project: use entity/project/name:selector")
    collection = CollectionPath(check_name(ent, "entity"), check_name(proj, "project"), check_name(name, "artifact name"))
    selector = selector or default_selector
    if version_index(selector) is None and not _DIGEST_PREFIX.fullmatch(selector):
        check_name(selector, "alias")
    return VersionSpec(collection, selector)
