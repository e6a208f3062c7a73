r"""Names of entities, projects, artifacts, registered models and aliases, and the
``entity/project/name:selector`` form that addresses one version.

Rules, per kind, are W&B's (its SDK's ``sdk/artifacts/_validators.py`` and its
server's rule for artifact names), all at most 128 characters:

- entity, run id, job type, remote: 1–128 of ``[A-Za-z0-9._-]``, not starting with ``.``;
- artifact and registered-model names: 1–128 of ``[A-Za-z0-9._-]`` (a leading ``.`` allowed);
- project: 1–128 characters, none of ``/ \ # ? % :`` CR LF (``my project``, ``modèle``, ``..``);
- alias: 1–128 characters without ``/`` or ``:``, never ``v<digits>`` (a version selector);
- artifact type: 1–128 characters without ``/`` or ``:``, not starting with ``wandb-``;
- tag: W&B's tag pattern, words of ``[-\w]`` separated by single spaces.

None of these characters is a ``/`` or ``:``, so ``entity/project/name:selector``
always parses back. Names become keys only through
:func:`objstore.storage.keys.encode_name`, which makes any of them a safe key part
(``..`` included) and leaves the older, narrower names as they were. Breaking a
rule raises :class:`~objstore.errors.InvalidName` naming the rule, before
anything is written. A NUL or an unpaired surrogate is refused in every kind
(a NUL breaks local file names, a surrogate has no UTF-8).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from objstore.errors import InvalidName
from objstore.storage.keys import encode_name

NAME_RULE = "1-128 characters from A-Z a-z 0-9 . _ -, not starting with '.'"
ARTIFACT_NAME_RULE = "1-128 characters from A-Z a-z 0-9 . _ -"
PROJECT_RULE = "1-128 characters, none of / \\ # ? % : or a line break"
ALIAS_RULE = "1-128 characters, no '/' or ':'"
TYPE_RULE = "1-128 characters, no '/' or ':', not starting with 'wandb-'"
TAG_RULE = "letters, digits, '-' and '_', in words separated by single spaces"
MAX_NAME = 128
_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
_PROJECT_BAD = frozenset("/\\#?%:\r\n")
_SEP = frozenset("/:")
_TAG = re.compile(r"[-\w]+( +[-\w]+)*")
_VERSION = re.compile(r"v(\d+)")
_DIGEST_PREFIX = re.compile(r"[0-9a-f]{8,64}")

REGISTRY_PROJECT = "model-registry"
LATEST = "latest"


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise InvalidName(f"{what} must be a string, got {type(value).__name__}")
    if "\0" in value or any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise InvalidName(f"invalid {what} {value!r}: it holds a NUL or an unpaired surrogate")
    return value


def _strict(value: str, what: str) -> bool:
    return bool(_NAME.fullmatch(value)) and not value.startswith(".")


def _artifact(value: str, what: str) -> bool:
    return bool(_NAME.fullmatch(value))


def _project(value: str, what: str) -> bool:
    return 1 <= len(value) <= MAX_NAME and not _PROJECT_BAD.intersection(value)


def _alias(value: str, what: str) -> bool:
    return 1 <= len(value) <= MAX_NAME and not _SEP.intersection(value)


def _type(value: str, what: str) -> bool:
    return _alias(value, what) and not value.startswith("wandb-")


# The rule of each kind of name, by the ``what`` callers pass to check_name.
_RULES = {
    "artifact name": (_artifact, ARTIFACT_NAME_RULE),
    "registered model name": (_artifact, ARTIFACT_NAME_RULE),
    "project": (_project, PROJECT_RULE),
    "alias": (_alias, ALIAS_RULE),
    "artifact type": (_type, TYPE_RULE),
}
_KEYED = frozenset({"entity", "project", "artifact name", "registered model name", "alias", "run id"})


def check_name(value: object, what: str = "name") -> str:
    """Return ``value`` if it is a valid name of kind ``what`` (the rules in the module
    docstring; kinds without a rule of their own take the entity rule), else raise
    InvalidName saying the rule. A name that becomes a key part must also fit one
    once encoded (:func:`objstore.storage.keys.encode_name`)."""
    text = _text(value, what)
    ok, rule = _RULES.get(what, (_strict, NAME_RULE))
    if not ok(text, what):
        raise InvalidName(f"invalid {what} {text!r}: use {rule}")
    if what in _KEYED:
        encode_name(text)
    return text


def check_project(value: object) -> str:
    return check_name(value, "project")


def check_artifact_name(value: object) -> str:
    return check_name(value, "artifact name")


def check_type(value: object) -> str:
    return check_name(value, "artifact type")


def _as_list(values: object, what: str) -> list[object]:
    """``values`` as a list: None is none, one string is one (W&B takes both)."""
    if values is None:
        return []
    if isinstance(values, str):
        return [values]
    try:
        items: list[object] = list(values)  # type: ignore[call-overload]
        return items
    except TypeError:
        raise InvalidName(f"{what} must be a list of strings, got {type(values).__name__}") from None


def check_tag(value: object) -> str:
    text = _text(value, "tag")
    if not _TAG.fullmatch(text) or len(text) > MAX_NAME:
        raise InvalidName(f"invalid tag {text!r}: use {TAG_RULE}, at most {MAX_NAME} characters")
    return text


def check_tags(values: object) -> tuple[str, ...]:
    """Tags deduplicated in order (W&B keeps the first of each)."""
    return tuple(dict.fromkeys(check_tag(t) for t in _as_list(values, "tags")))


def check_alias(value: object) -> str:
    alias = check_name(value, "alias")
    if _VERSION.fullmatch(alias):
        raise InvalidName(f"invalid alias {alias!r}: v<digits> is reserved for version numbers; choose another alias")
    return alias


def check_aliases(values: object) -> tuple[str, ...]:
    items = _as_list(values, "aliases")
    seen: dict[str, None] = {}
    for item in items:
        seen[check_alias(item)] = None
    return tuple(seen)


def version_index(selector: str) -> int | None:
    """N for a selector ``vN`` as objstore writes it (``v0``, ``v12``), else None. ``v00`` or
    ``v٠`` (a digit to ``\\d`` and int()) is no version: as a ref's name beside ``v0`` (a store
    someone else wrote), listings counted it as a second version 0 and broke the log."""
    m = _VERSION.fullmatch(selector)
    return int(m.group(1)) if m and selector == f"v{int(m.group(1))}" else None


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
