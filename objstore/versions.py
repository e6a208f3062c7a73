"""Versions, aliases and registry links of collections, on refs alone.

Dense numbering without a lock: a writer stores its version object, then claims
``versions/v<N>`` with a create-only write; if another writer got there first it
rebuilds the version as N+1 and tries again. Create-only writes are atomic on
every backend (O_EXCL-style link locally, If-None-Match on S3), so numbers stay
dense however many processes or machines log at once.

``latest`` moves through every version in order: whoever finds it at v<K> below
its own version moves it to v<K+1> by compare-and-swap (helping slower writers
along), so each version is ``latest`` once, the reflog of ``latest`` has one entry
per version, and a writer that crashed after claiming its number never leaves
``latest`` behind for good.

A registered model (``<entity>/model-registry/<name>``) is a collection whose
versions are :class:`~objstore.objects.Link` objects pointing at versions logged
elsewhere.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import faults
from .errors import Conflict, CorruptObject, InvalidName, NotFound
from .ids import ObjectId
from .names import LATEST, CollectionPath, VersionSpec, check_alias, version_index
from .objects import Link, Version
from .refs import REFS, alias_ref, collection_prefix, digest_ref, version_ref
from .store import Store

_HEX = re.compile(r"[0-9a-f]{8,64}")


@dataclass(frozen=True, slots=True)
class ResolvedVersion:
    """A version as addressed in one collection. For a registry entry, ``link`` is
    the link and ``version``/``version_id`` the version it points at."""

    collection: CollectionPath
    index: int
    object_id: ObjectId  # what the collection's ref holds (a version, or a link)
    version_id: ObjectId
    version: Version
    link: Link | None = None

    @property
    def name(self) -> str:
        return f"{self.collection.name}:v{self.index}"

    @property
    def qualified_name(self) -> str:
        return f"{self.collection}:v{self.index}"


def read_version(store: Store, oid: ObjectId) -> Version:
    obj = store.odb.get_object(oid)
    if not isinstance(obj, Version):
        raise CorruptObject(f"object {oid.hex[:16]} should be a version", object_id=oid.hex)
    return obj


def read_entry(store: Store, coll: CollectionPath, oid: ObjectId) -> ResolvedVersion:
    """Resolve what a collection ref points at (a version, or a link to one)."""
    obj = store.odb.get_object(oid)
    if isinstance(obj, Version):
        return ResolvedVersion(coll, obj.index, oid, oid, obj)
    if isinstance(obj, Link):
        return ResolvedVersion(coll, obj.index, oid, obj.target, read_version(store, obj.target), obj)
    raise CorruptObject(f"object {oid.hex[:16]} in {coll} is neither a version nor a link", object_id=oid.hex)


def _entry_index(store: Store, oid: ObjectId) -> int:
    obj = store.odb.get_object(oid)
    if isinstance(obj, (Version, Link)):
        return obj.index
    raise CorruptObject(f"object {oid.hex[:16]} should be a version or a link", object_id=oid.hex)


def list_versions(store: Store, coll: CollectionPath) -> list[tuple[int, ObjectId]]:
    """(index, object id) of every version of a collection, oldest first."""
    prefix = collection_prefix(coll.entity, coll.project, coll.name) + "versions/"
    out = []
    for ref, oid in store.refs.iter_refs(prefix):
        idx = version_index(ref.rsplit("/", 1)[-1])
        if idx is not None:
            out.append((idx, oid))
    return sorted(out)


def list_aliases(store: Store, coll: CollectionPath) -> dict[str, ObjectId]:
    prefix = collection_prefix(coll.entity, coll.project, coll.name) + "aliases/"
    return {ref.rsplit("/", 1)[-1]: oid for ref, oid in store.refs.iter_refs(prefix)}


def aliases_for(store: Store, coll: CollectionPath, oid: ObjectId) -> list[str]:
    return sorted(a for a, target in list_aliases(store, coll).items() if target == oid)


def collection_exists(store: Store, coll: CollectionPath) -> bool:
    return store.refs.exists(version_ref(coll.entity, coll.project, coll.name, 0))


def resolve(store: Store, spec: VersionSpec) -> ResolvedVersion:
    """The version ``spec`` names, or NotFound saying what exists instead."""
    coll, selector = spec.collection, spec.selector
    idx = version_index(selector)
    oid: ObjectId | None = None
    if idx is not None:
        oid = store.refs.read(version_ref(coll.entity, coll.project, coll.name, idx))
    else:
        oid = store.refs.read(alias_ref(coll.entity, coll.project, coll.name, selector))
        if oid is None and _HEX.fullmatch(selector):
            oid = _find_by_digest(store, coll, selector)
    if oid is None:
        if not collection_exists(store, coll):
            raise NotFound(f"no artifact {coll} in the store at {store.location}; check the name (objstore ls lists them)", key=str(coll))
        raise NotFound(f"{coll} has no version {selector!r}; it has {_describe(store, coll)}", key=str(spec))
    return read_entry(store, coll, oid)


def _describe(store: Store, coll: CollectionPath) -> str:
    versions = list_versions(store, coll)
    aliases = sorted(list_aliases(store, coll))
    text = f"v0..v{versions[-1][0]}" if versions else "no versions"
    return text + (f" and aliases {', '.join(aliases)}" if aliases else "")


def _find_by_digest(store: Store, coll: CollectionPath, prefix: str) -> ObjectId | None:
    base = collection_prefix(coll.entity, coll.project, coll.name) + "digests/"
    matches = [oid for _, oid in store.refs.iter_refs(base + prefix)]
    if len(set(matches)) > 1:
        raise InvalidName(f"digest prefix {prefix!r} matches several versions of {coll}; give more digits")
    return matches[0] if matches else None


def commit_version(
    store: Store,
    coll: CollectionPath,
    *,
    tree: ObjectId,
    size: int,
    new_bytes: int,
    artifact_type: str,
    metadata: dict[str, Any],
    description: str | None,
    run: str | None,
    aliases: tuple[str, ...] = (),
) -> tuple[ResolvedVersion, bool]:
    """Make ``tree`` a version of ``coll`` (or find the version that already holds it).

    Returns (version, created). Everything ``tree`` references must already be
    stored. ``latest`` and ``aliases`` are moved to the version either way.
    """
    def make(n: int, parent: ObjectId | None) -> Version:
        return Version(tree, parent, artifact_type, coll.entity, coll.project, coll.name, n, size,
                       new_bytes, description, metadata, time.time(), run)

    return _add_entry(store, coll, tree, make, aliases)


def link_version(store: Store, registry: CollectionPath, target: ResolvedVersion, *, run: str | None, aliases: tuple[str, ...] = ()) -> tuple[ResolvedVersion, bool]:
    """Link ``target`` into the registered model ``registry``.

    A registered model holds each content once: linking a version whose tree is
    already linked (even when logged by another run under another name) returns
    the existing registry version.
    """
    v = target.version

    def make(n: int, parent: ObjectId | None) -> Link:
        return Link(str(registry), n, target.version_id, f"{v.entity}/{v.project}/{v.name}:v{v.index}", time.time(), run)

    return _add_entry(store, registry, v.tree, make, aliases)


def _add_entry(store: Store, coll: CollectionPath, tree: ObjectId, make: Callable[[int, ObjectId | None], Version | Link],
               aliases: tuple[str, ...]) -> tuple[ResolvedVersion, bool]:
    """Claim the next dense number of ``coll`` for the entry ``make(n, parent)``
    returns, unless an entry already holds ``tree``; then move latest and aliases."""
    digest_key = digest_ref(coll.entity, coll.project, coll.name, tree.hex)
    existing = store.refs.read(digest_key)
    created = existing is None
    if existing is None:
        n = _next_index_hint(store, coll)
        while True:
            ref = version_ref(coll.entity, coll.project, coll.name, n)
            held = store.refs.read(ref)
            if held is None:
                parent = store.refs.read(version_ref(coll.entity, coll.project, coll.name, n - 1)) if n else None
                oid = store.odb.put_object(make(n, parent))
                if store.refs.create(ref, oid, f"add {coll.name}:v{n}"):
                    faults.point("claim")
                    break
                held = store.refs.read(ref)
            # v<n> is taken, perhaps by this very content: a racing writer of it, or
            # one that crashed between its version ref and its digest ref.
            existing = store.refs.read(digest_key) or _holding(store, coll, held, tree)
            if existing is not None:
                created = False
                break
            n += 1
        if created:
            store.refs.create(digest_key, oid, f"digest of {coll.name}:v{n}")
            existing = oid
        else:
            store.refs.create(digest_key, existing, f"digest of {coll.name}, restored")
    assert existing is not None
    entry = read_entry(store, coll, existing)
    advance_latest(store, coll, entry.index)
    for alias in aliases:
        set_alias(store, coll, alias, entry.object_id)
    return entry, created


def _holding(store: Store, coll: CollectionPath, oid: ObjectId | None, tree: ObjectId) -> ObjectId | None:
    """``oid`` if that entry of ``coll`` holds ``tree`` (a damaged entry is not ours)."""
    if oid is None:
        return None
    try:
        return oid if read_entry(store, coll, oid).version.tree == tree else None
    except (CorruptObject, NotFound):
        return None


def _restore_digest_ref(store: Store, coll: CollectionPath, oid: ObjectId) -> None:
    """Create the digest ref of entry ``oid`` if its writer died before doing so,
    so logging that content again finds it instead of adding a duplicate version."""
    try:
        tree = read_entry(store, coll, oid).version.tree
    except (CorruptObject, NotFound):
        return  # fsck reports damaged entries; latest still moves past them
    key = digest_ref(coll.entity, coll.project, coll.name, tree.hex)
    if not store.refs.exists(key):
        store.refs.create(key, oid, f"digest of {coll.name}, restored")


def _next_index_hint(store: Store, coll: CollectionPath) -> int:
    latest = store.refs.read(alias_ref(coll.entity, coll.project, coll.name, LATEST))
    return _index_of(store, coll, latest) + 1 if latest is not None else 0


def _index_of(store: Store, coll: CollectionPath, oid: ObjectId) -> int:
    """The number of entry ``oid`` of ``coll``: from the object, or, if that cannot
    be decoded (fsck reports it), from the version ref that holds it, so one damaged
    entry does not stop the collection from growing."""
    try:
        return _entry_index(store, oid)
    except CorruptObject:
        for idx, held in list_versions(store, coll):
            if held == oid:
                return idx
        raise


def advance_latest(store: Store, coll: CollectionPath, upto: int) -> None:
    """Move ``latest`` forward, one version at a time, until it is at least v<upto>."""
    ref = alias_ref(coll.entity, coll.project, coll.name, LATEST)
    for _ in range(10_000):
        raw = store.refs.read_raw(ref)
        current = None if raw is None else store.refs.read(ref)
        k = _index_of(store, coll, current) if current is not None else -1
        if k >= upto:
            return
        nxt = store.refs.read(version_ref(coll.entity, coll.project, coll.name, k + 1))
        if nxt is None:
            return  # a later version's writer is still claiming it; it will move latest itself
        if k + 1 != upto:
            # Moving latest past another writer's version: that writer may have died
            # before its digest ref; restore it (create-only, so a live one loses nothing).
            _restore_digest_ref(store, coll, nxt)
        try:
            store.refs.set_if_equals(ref, raw, nxt, f"v{k + 1} is the newest version")
        except Conflict:
            continue
    raise Conflict(ref, None, None, f"could not move latest of {coll}; retry")


def set_alias(store: Store, coll: CollectionPath, alias: str, oid: ObjectId) -> None:
    check_alias(alias)
    store.refs.set(alias_ref(coll.entity, coll.project, coll.name, alias), oid, f"alias {alias} -> v{_entry_index(store, oid)}")


def delete_alias(store: Store, coll: CollectionPath, alias: str) -> None:
    check_alias(alias)
    ref = alias_ref(coll.entity, coll.project, coll.name, alias)
    if store.refs.read(ref) is None:
        raise NotFound(f"{coll} has no alias {alias!r}", key=ref)
    store.refs.set(ref, None, f"alias {alias} removed")


def list_projects(store: Store, entity: str | None = None) -> list[tuple[str, str]]:
    """(entity, project) pairs that hold anything."""
    seen: set[tuple[str, str]] = set()
    prefix = REFS + (f"{entity}/" if entity else "")
    for key in store.refs.iter_names(prefix):
        parts = key[len(REFS):].split("/")
        if len(parts) >= 3:
            seen.add((parts[0], parts[1]))
    return sorted(seen)


def list_collections(store: Store, entity: str, project: str) -> list[CollectionPath]:
    names: set[str] = set()
    for key in store.refs.iter_names(f"{REFS}{entity}/{project}/"):
        parts = key[len(REFS):].split("/")
        if len(parts) == 5 and parts[3] == "versions":
            names.add(parts[2])
    return [CollectionPath(entity, project, n) for n in sorted(names)]
