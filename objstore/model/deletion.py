"""Deleting: one version, one registry link, a whole collection, and expiry by ttl.

Only refs go; the bytes stay until ``gc`` finds them unreachable, so a delete
is cheap and a concurrent reader that already resolved a version can finish
(gc's grace period gives it time).

- **A version** (:func:`delete_version`, W&B's ``Artifact.delete``): its ref
  ``versions/v<N>`` becomes a tombstone, so its number is never given again
  (:mod:`objstore.model.versions`); then its aliases go (``latest`` moves back to
  the newest version left), its digest ref and its annotations. Refused while it
  has aliases unless ``delete_aliases``, and while a registered model links to it
  (unlink first: the link would keep it). gc then treats it as gone: the reflog
  entries that still name it (of ``latest``, of its aliases) keep it no longer
  (:func:`objstore.model.inventory.deleted_entries`). Order matters: the
  tombstone comes first, so a writer moving ``latest`` forward never lands on
  the deleted version after its aliases were cleared.
- **A registry link** (:func:`unlink`, W&B's ``Artifact.unlink``, and
  ``delete`` of a link): the same steps in the registered model; the version
  linked is untouched.
- **A deletion that arrives** (:func:`delete_arrived`, a push or pull carrying
  one made in another store): as a version's or a link's, but kept (and why
  said) while an alias other than ``latest`` or a link here still names it: one
  the deleting side did not know of.
- **A collection** (:func:`delete_collection`): every version as above (a
  tombstone each, so a push or pull carries the deletion under the same rules),
  then its aliases and digest refs, then its annotations. Refused while a
  registered model links to one of its versions. Its numbers stay taken: the
  name logged again goes on from the next number (W&B starts a new collection
  at v0; here a number never names two contents, on any store it travels to).
  A collection an older objstore deleted has no refs left, and nothing to carry.
- **Expiry** (:func:`expire_versions`): a version whose ttl
  (:mod:`objstore.model.annotations`) has passed since it was logged is deleted
  as above, aliases and all; ``objstore gc`` runs it first. Until then an
  expired version stays readable (W&B too deletes "shortly after" the ttl).
  It ends by putting right a ``latest`` an older objstore left behind a
  deleted number (:func:`settle_latest`).

Runs keep naming deleted versions; lineage shows them as not in the store once
gc has run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from objstore.errors import Conflict, CorruptObject, InvalidInput, NotFound, VersionInUse, in_cli_words
from objstore.model.annotations import (
    drop_collection_annotations,
    drop_collection_state,
    drop_version_annotations,
    iter_ttls,
)
from objstore.model.inventory import iter_version_refs
from objstore.model.names import LATEST, CollectionPath, version_index
from objstore.model.refs import decode_value
from objstore.model.store import Store
from objstore.model.versions import (
    ResolvedVersion,
    advance_latest,
    aliases_for,
    collection_exists,
    list_versions,
    missing_collection,
    read_entry,
    remove_alias_from,
    retreat_latest,
)
from objstore.storage.ids import ObjectId
from objstore.storage.keys import REFS, alias_ref, collection_prefix, digest_ref, parse_ref_key, version_ref


@dataclass(frozen=True, slots=True)
class Deleted:
    collection: str
    versions: int
    refs: int


@dataclass(frozen=True, slots=True)
class DeletedVersion:
    """One version (or link, ``unlinked``) deleted, and the aliases removed with it."""

    version: str
    aliases: tuple[str, ...]
    unlinked: bool = False


def _links_to(store: Store, version_id: ObjectId) -> list[str]:
    return sorted(r.label for r in iter_version_refs(store, strict=False) if r.link is not None and r.version_id == version_id)


def delete_version(store: Store, entry: ResolvedVersion, *, delete_aliases: bool = False,
                   why: str = "deleted") -> DeletedVersion:
    """Delete the version ``entry`` (a registry link: unlink it, see :func:`unlink`).

    VersionInUse if it has aliases and not ``delete_aliases``, or if a registered
    model links to it; NotFound if it is already deleted.
    """
    if entry.link is not None:
        return unlink(store, entry)
    aliases = aliases_for(store, entry.collection, entry.object_id)
    if aliases and not delete_aliases:
        held = f"{entry.qualified_name} has aliases {', '.join(aliases)}"
        raise in_cli_words(VersionInUse(f"{held}; pass delete_aliases=True to delete them with it"),
                           f"{held}; pass --delete-aliases to delete them with it")
    linked = _links_to(store, entry.version_id)
    if linked:
        raise VersionInUse(f"{entry.qualified_name} is linked from {', '.join(linked)}; unlink those first")
    removed = _remove_entry(store, entry, why)
    drop_version_annotations(store, entry.collection, entry.index)  # after the tombstone: nothing annotates it now
    return DeletedVersion(entry.qualified_name, removed)


def unlink(store: Store, entry: ResolvedVersion) -> DeletedVersion:
    """Remove the registry link ``entry`` from its registered model, with its aliases
    there; the version it links to stays. InvalidInput if ``entry`` is no link."""
    if entry.link is None:
        raise InvalidInput(f"{entry.qualified_name} is not a linked artifact and cannot be unlinked; "
                           "use delete() to delete it")
    return DeletedVersion(entry.qualified_name, _remove_entry(store, entry, "unlinked"), unlinked=True)


def delete_arrived(store: Store, entry: ResolvedVersion, why: str) -> DeletedVersion | str:
    """Delete ``entry`` here because it was deleted in another store (a transfer
    carries the deletion); the reason as a string instead if it is kept: an alias
    other than ``latest`` or a registry link still names it here, which the other
    side did not know of when it deleted (its own aliases and links of it were
    removed there, and a transfer moves those first). Already deleted: done."""
    aliases = [a for a in aliases_for(store, entry.collection, entry.object_id) if a != LATEST]
    if aliases:
        return f"it has aliases {', '.join(aliases)} there"
    if entry.link is None and (linked := _links_to(store, entry.version_id)):
        return f"it is linked from {', '.join(linked)} there"
    try:
        removed = _remove_entry(store, entry, why)
    except NotFound:
        return DeletedVersion(entry.qualified_name, (), unlinked=entry.link is not None)
    if entry.link is None:
        drop_version_annotations(store, entry.collection, entry.index)
    return DeletedVersion(entry.qualified_name, removed, unlinked=entry.link is not None)


def _remove_entry(store: Store, entry: ResolvedVersion, why: str) -> tuple[str, ...]:
    """Tombstone ``entry``'s version ref, then remove its aliases and digest ref."""
    coll = entry.collection
    ref = version_ref(coll.entity, coll.project, coll.name, entry.index)
    raw = store.refs.read_raw(ref)
    if not raw or decode_value(ref, raw) != entry.object_id:
        raise NotFound(f"{entry.qualified_name} is already deleted", key=ref)
    try:
        store.refs.set_if_equals(ref, raw, None, f"v{entry.index} {why}")
    except Conflict:
        # A version ref only ever changes to a tombstone (repair aside): another process deleted it first.
        raise NotFound(f"{entry.qualified_name} is already deleted", key=ref) from None
    removed = []
    # Read after the tombstone: an alias set onto it meanwhile goes too.
    for alias in aliases_for(store, coll, entry.object_id):
        if alias == LATEST:
            retreat_latest(store, coll, entry.object_id)
        elif not remove_alias_from(store, coll, alias, entry.object_id):
            continue
        removed.append(alias)
    digest_key = digest_ref(coll.entity, coll.project, coll.name, entry.version.tree.hex)
    if store.refs.read(digest_key) == entry.object_id:
        store.refs.remove(digest_key, f"v{entry.index} {why}")
    return tuple(removed)


def delete_collection(store: Store, coll: CollectionPath) -> Deleted:
    """Delete every version of ``coll`` (tombstones: the numbers stay taken, and
    a push or pull carries each deletion as a version's), then its aliases and
    digest refs, then its annotations. The refs counted are those changed."""
    if not collection_exists(store, coll):
        raise missing_collection(store, coll)
    versions = list_versions(store, coll)
    ids = {oid for _, oid in versions}
    if not coll.is_registry:
        linked = sorted(r.label for r in iter_version_refs(store, strict=False) if r.link is not None and r.version_id in ids)
        if linked:
            raise VersionInUse(f"{coll} is linked from {', '.join(linked)}; delete those registered models first")
    why = f"collection {coll} deleted"
    # First: the collection's own description and tags name no object, so one a
    # crash left behind would show on the next version logged under this name.
    drop_collection_state(store, coll)
    changed = sum(_tombstone(store, version_ref(coll.entity, coll.project, coll.name, idx), oid, why)
                  for idx, oid in reversed(versions))
    # Then what names the deleted versions, each by compare-and-swap against the
    # value read: an alias (``latest`` too) a writer moved onto a version logged
    # meanwhile stays with it. Once ``latest`` goes the collection no longer exists.
    for ref, oid in list(store.refs.iter_refs(collection_prefix(coll.entity, coll.project, coll.name))):
        parsed = parse_ref_key(ref)
        if parsed is not None and parsed.kind == "alias" and oid in ids:
            changed += _tombstone(store, ref, oid, why)
        elif parsed is not None and parsed.kind == "digest" and oid in ids:  # derived: removed, as a version's
            store.refs.remove(ref, why)
            changed += 1
    # Last: annotations name the version object they annotate, so any a crash
    # leaves behind are stale for a version logged again under this name.
    if not collection_exists(store, coll):
        drop_collection_annotations(store, coll)
    return Deleted(str(coll), len(versions), changed)


def _tombstone(store: Store, ref: str, oid: ObjectId, why: str) -> bool:
    """Make ``ref`` a tombstone if it still holds ``oid``; True if this call did."""
    raw = store.refs.read_raw(ref)
    if not raw or decode_value(ref, raw) != oid:
        return False
    try:
        store.refs.set_if_equals(ref, raw, None, why)
    except Conflict:
        return False
    return True


@dataclass(frozen=True, slots=True)
class Expiry:
    """What :func:`expire_versions` did: versions deleted, those it had to keep (why),
    and the collections whose ``latest`` it moved up to their newest version (:func:`settle_latest`)."""

    expired: tuple[DeletedVersion, ...]
    kept: tuple[tuple[str, str], ...]
    settled: tuple[str, ...] = ()


def settle_latest(store: Store) -> tuple[str, ...]:
    """Move ``latest`` up to the newest version in every collection where it is
    behind one past a deleted number; the collections moved. An objstore older
    than tombstones logs past a deleted number (its claim fails there and it
    takes the next) but stops moving ``latest`` at the tombstone, taking it for a
    number still being claimed; this release's next log there, or this (run by
    every ``objstore gc``), puts it right. Only collections holding a tombstone
    are read (one listing finds them)."""
    newest: dict[CollectionPath, int] = {}
    deleted: set[CollectionPath] = set()
    for info in store.backend.iter_prefix(REFS):
        parsed = parse_ref_key(info.key)
        if parsed is None or parsed.kind != "version" or (idx := version_index(parsed.tail)) is None:
            continue
        coll = CollectionPath(parsed.entity, parsed.project, parsed.name)
        if info.size == 0:
            deleted.add(coll)
        else:
            newest[coll] = max(newest.get(coll, -1), idx)
    moved = []
    for coll in sorted(deleted & set(newest), key=str):
        before = store.refs.read_raw(alias_ref(coll.entity, coll.project, coll.name, LATEST))
        try:
            advance_latest(store, coll, newest[coll])
        except (CorruptObject, NotFound, Conflict):
            continue  # fsck reports damage; a busy collection's next writer moves it
        if store.refs.read_raw(alias_ref(coll.entity, coll.project, coll.name, LATEST)) != before:
            moved.append(str(coll))
    return tuple(moved)


def expire_versions(store: Store, *, now: float | None = None, dry_run: bool = False,
                    progress: Callable[[str, int, int], None] | None = None) -> Expiry:
    """Delete every version whose ttl has passed since it was logged (aliases too);
    a version a registered model links to is kept (and said). ``dry_run`` deletes
    nothing and says what would go. ``progress("ttl", done, total)`` follows the
    versions with a ttl checked."""
    at = time.time() if now is None else now
    expired: list[DeletedVersion] = []
    kept: list[tuple[str, str]] = []
    ttls = list(iter_ttls(store))  # one listing, counted for the progress
    for done, t in enumerate(ttls):
        if progress is not None:
            progress("ttl", done + 1, len(ttls))
        ref = version_ref(t.coll.entity, t.coll.project, t.coll.name, t.index)
        try:
            oid = store.refs.read(ref)
            if oid != t.version_id:
                continue  # deleted already, or a stale state
            entry = read_entry(store, t.coll, oid, ref=ref)
        except (NotFound, CorruptObject):
            continue  # fsck reports damage; a damaged version is not expired blind
        if entry.version.created_at + t.ttl > at:
            continue
        if dry_run:
            expired.append(DeletedVersion(entry.qualified_name, tuple(aliases_for(store, t.coll, oid))))
            continue
        try:
            expired.append(delete_version(store, entry, delete_aliases=True, why="expired (ttl)"))
        except VersionInUse as exc:
            kept.append((entry.qualified_name, str(exc)))
        except NotFound:
            continue  # deleted by another process meanwhile
    return Expiry(tuple(expired), tuple(kept), () if dry_run else settle_latest(store))
