"""What a shell may complete a version argument with: the names a partial
``[[entity/]project/]name[:selector]`` can grow into, from the store's refs; and
the values of ``--entity`` and ``--project`` (the entities and projects holding
anything).

Short forms grow in the caller's entity and project, exactly as
:func:`objstore.model.names.parse_version_spec` reads them, so every candidate
resolves to what it names. Listings only (no version is read); a store that
cannot be read completes nothing rather than failing.
"""

from __future__ import annotations

from objstore.errors import ObjstoreError
from objstore.model.names import CollectionPath, check_name
from objstore.model.store import Store
from objstore.model.versions import list_aliases, list_collections, list_projects, version_numbers


def complete_version(store: Store, text: str, *, entity: str, project: str) -> list[str]:
    """Completions of ``text``: collection names (and the ``project/`` and
    ``entity/`` they sit in), then, once ``text`` has its ``:``, the collection's
    versions (``:v3``) and aliases (``:best``)."""
    try:
        return _complete(store, text, entity, project)
    except (ObjstoreError, OSError):
        return []


def complete_entity(store: Store, text: str) -> list[str]:
    """The entities holding anything whose names start with ``text``."""
    try:
        return sorted({e for e, _ in list_projects(store) if e.startswith(text)})
    except (ObjstoreError, OSError):
        return []


def complete_project(store: Store, text: str, *, entity: str) -> list[str]:
    """The projects of ``entity`` holding anything whose names start with ``text``."""
    try:
        return sorted(p for _, p in list_projects(store, entity) if p.startswith(text))
    except (ObjstoreError, OSError):
        return []


def _complete(store: Store, text: str, entity: str, project: str) -> list[str]:
    path, colon, selector = text.partition(":")
    if colon:
        coll = _collection(path, entity, project)
        if coll is None:
            return []
        words = [f"v{n}" for n in version_numbers(store, coll)] + sorted(list_aliases(store, coll))
        return [f"{path}:{w}" for w in words if w.startswith(selector)]
    parts = path.split("/")
    for part in parts[:-1]:
        check_name(part, "entity or project")
    out: list[str] = []
    if len(parts) == 1:
        out += [c.name for c in list_collections(store, entity, project)]
        out += [f"{p}/" for e, p in list_projects(store, entity) if e == entity]
        out += sorted({f"{e}/" for e, _ in list_projects(store)})
    elif len(parts) == 2:
        out += [f"{parts[0]}/{c.name}" for c in list_collections(store, entity, parts[0])]
        out += [f"{e}/{p}/" for e, p in list_projects(store, parts[0])]
    elif len(parts) == 3:
        out += [str(c) for c in list_collections(store, parts[0], parts[1])]
    return sorted({w for w in out if w.startswith(path)})


def _collection(path: str, entity: str, project: str) -> CollectionPath | None:
    parts = [check_name(p, "name") for p in path.split("/")]
    if len(parts) == 1:
        return CollectionPath(entity, project, parts[0])
    if len(parts) == 2:
        return CollectionPath(entity, parts[0], parts[1])
    if len(parts) == 3:
        return CollectionPath(*parts)
    return None
