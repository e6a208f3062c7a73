"""Carrying deletions (push, pull): a version (or registry link) deleted on one
side is deleted on the other, as :func:`objstore.model.deletion.delete_arrived`
deletes it there.

- What travels: a tombstone at the source where the destination still holds the
  version the source deleted, known to be that one: the tracking state recorded
  the remote holding it, or (pull) the remote still holds that object, which
  names its collection and number, or the source's reflog of the version ref
  records that very object deleted (:func:`deleted_in_reflog`). The last covers
  a push to a remote name added since the deletion (no tracking state) and a
  pull from a remote whose gc has reclaimed the deleted object. A tombstone for
  a version only one side ever had is no deletion of the other's.
- A whole collection deleted (:func:`objstore.model.deletion.delete_collection`)
  is a tombstone per version, carried as above; where the destination is left
  with no version of the collection, its own description and tags go too.
- Never a resurrection: a deletion is only ever applied, never undone, so the
  number stays taken on both sides and ``latest`` moves back to the newest left.
- Refused, not applied, where the destination has an alias (other than
  ``latest``) or a registry link on it that the source did not know of: the
  alias moves of the same transfer ran first, so one still there was set at the
  destination only. The key is listed in ``result.kept`` and said on stderr; the
  next transfer tries again once it is gone.
- Links (registered models) go before versions: a link carried with its
  version's deletion would otherwise keep the version.
"""

from __future__ import annotations

from collections.abc import Callable

from objstore.console import say
from objstore.errors import CorruptObject, NotFound
from objstore.model.annotations import drop_collection_annotations, drop_collection_state
from objstore.model.deletion import delete_arrived
from objstore.model.names import REGISTRY_PROJECT, CollectionPath
from objstore.model.store import Store
from objstore.model.versions import collection_exists, read_entry
from objstore.storage.ids import ObjectId
from objstore.storage.keys import version_ref
from objstore.transfer.sync import TransferResult
from objstore.transfer.tracking import CollectionRefs

Deletion = tuple[CollectionPath, int, ObjectId]


def deleted_in_reflog(store: Store, key: str, oid: ObjectId) -> bool:
    """Whether ``store``'s reflog of the version ref ``key`` records ``oid`` moved
    to a tombstone there (read only where tracking state and objects cannot tell)."""
    return any(e.old == oid and e.new is None for e in store.refs.reflog(key))


def drop_emptied_collections(dst: Store, deleted: list[Deletion]) -> None:
    """Drop the annotations of each collection ``deleted`` left with no version at
    ``dst``, as a collection deleted there would have (its description and tags
    would otherwise show on the next version logged under its name)."""
    for coll in sorted({c for c, _, _ in deleted}, key=str):
        if not collection_exists(dst, coll):
            drop_collection_state(dst, coll)
            drop_collection_annotations(dst, coll)


def deleted_at_source(src: dict[CollectionPath, CollectionRefs], dst: dict[CollectionPath, CollectionRefs],
                      knew: Callable[[CollectionPath, int, ObjectId], bool]) -> list[Deletion]:
    """The versions the source deleted that the destination still holds: a source
    tombstone over the destination's ``oid`` where ``knew(coll, idx, oid)``
    (the source had that very version); registry links first."""
    out = []
    for coll, c in src.items():
        held = dst.get(coll, CollectionRefs()).versions
        out += [(coll, idx, held[idx]) for idx in sorted(c.deleted) if idx in held and knew(coll, idx, held[idx])]
    return sorted(out, key=lambda d: (d[0].project != REGISTRY_PROJECT, str(d[0]), d[1]))


def carry_deletions(dst: Store, deletions: list[Deletion], result: TransferResult, why: str, where: str) -> list[Deletion]:
    """Delete each of ``deletions`` at ``dst`` (see the module docstring); the
    version ref of each deleted goes to ``result.refs``, of each kept to
    ``result.kept`` (each said on stderr, ``where`` naming the destination).
    Returns those deleted."""
    done = []
    for coll, idx, oid in deletions:
        key = version_ref(coll.entity, coll.project, coll.name, idx)
        try:
            entry = read_entry(dst, coll, oid, ref=key)
        except (NotFound, CorruptObject):
            continue  # fsck reports damage; a version not read is not deleted blind
        outcome = delete_arrived(dst, entry, why)
        if isinstance(outcome, str):
            result.kept.append(key)
            say(f"kept {where}'s {coll}:v{idx}, deleted on the other side: {outcome}; "
                "remove those (or delete it there), then transfer again")
        else:
            result.refs.append(key)
            done.append((coll, idx, oid))
            say(f"carried the deletion of {coll}:v{idx} to {where}")  # git push's "- [deleted]"
    drop_emptied_collections(dst, done)
    return done
