"""Carrying the annotation edits of transferred versions (push, pull, clone).

A version's annotation state (:mod:`objstore.model.annotations`) moves like a
ref, fast-forward only, but its history says by itself what is newer, so no
tracking state is needed:

- The destination takes the source's state when it has none for that version
  object, or when its own is an ancestor of the source's: a lower revision
  whose last edit is the source's history entry of that revision.
- A destination ahead (the source's state is an ancestor of its own) stays, quietly.
- Otherwise (edited differently on both sides since their last common revision)
  the destination's state stays and its key is listed in ``result.kept``, as a
  ref changed on both sides is kept.
- History entries are create-only and keyed by revision and version object, so
  the source's entries up to the state taken are copied (create-only) before
  the state itself; a destination that keeps its own state copies none (the
  entries of a diverged revision would describe the other side's edit).
- The state moves by compare-and-swap from the value read: an edit made at the
  destination meanwhile wins (listed as kept).
- A version a pull re-bases is a new object at a new number: its state and
  history are copied to the copy's key (naming the copy) before the remote's
  states are taken, so a re-based version keeps its edits.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgpack

from objstore.errors import Conflict
from objstore.model.annotations import raw_history, raw_state, same_value
from objstore.model.names import CollectionPath
from objstore.model.store import Store
from objstore.storage.ids import ObjectId
from objstore.storage.keys import annotation_key, annotation_log_key
from objstore.transfer.sync import TransferResult, pmap


def carry_annotations(src: Store, dst: Store, versions: Iterable[tuple[CollectionPath, int, ObjectId]],
                      result: TransferResult) -> None:
    """Bring ``dst``'s annotations of ``versions`` (held by both, same object) up to ``src``'s where that
    only moves them forward; record each moved key in ``result.annotations``, each kept one in ``result.kept``."""
    outcomes = pmap(lambda v: _carry_one(src, dst, *v), list(versions))
    for key, outcome in sorted(o for o in outcomes if o is not None):
        (result.annotations if outcome == "moved" else result.kept).append(key)


def _carry_one(src: Store, dst: Store, coll: CollectionPath, index: int, vid: ObjectId) -> tuple[str, str] | None:
    s_raw, s_doc = raw_state(src, coll, index, vid)
    if s_raw is None or s_doc is None:
        return None
    key = annotation_key(coll.entity, coll.project, coll.name, index)
    d_raw, d_doc = raw_state(dst, coll, index, vid)
    if d_raw == s_raw:
        return None
    if d_doc is not None and not _is_ancestor(src, coll, index, vid, d_doc, s_doc["revision"]):
        if same_value(d_doc.get("fields"), s_doc.get("fields")) or _is_ancestor(dst, coll, index, vid, s_doc, d_doc["revision"]):
            return None  # the same fields, or the destination is simply ahead: nothing to say
        return key, "kept"
    for log_key, value in sorted(raw_history(src, coll, index, vid).items()):
        dst.backend.put_if_absent(log_key, value)  # create-only: an entry already there is the same edit
    try:
        if d_raw is None:
            if not dst.backend.put_if_absent(key, s_raw):
                return key, "kept"
        else:
            dst.backend.compare_and_swap(key, d_raw, s_raw)  # a stale (other object's) state is replaced too
    except Conflict:
        return key, "kept"  # edited here while we transferred: that edit is newer
    return key, "moved"


def carry_rebased(store: Store, moves: Iterable[tuple[CollectionPath, int, ObjectId, int, ObjectId]]) -> None:
    """Copy each (collection, old number, old object, new number, new object)'s annotations
    to its re-based copy, unless the copy has its own already (an interrupted pull copied them)."""
    for coll, old_idx, old_vid, new_idx, new_vid in moves:
        _, doc = raw_state(store, coll, old_idx, old_vid)
        if doc is None:
            continue
        raw_new, now = raw_state(store, coll, new_idx, new_vid)
        if now is not None:
            continue
        for key, value in sorted(raw_history(store, coll, old_idx, old_vid).items()):
            revision = int(key.rsplit("/", 1)[1].split("-", 1)[0])  # an entry names no object: copied as is
            store.backend.put_if_absent(annotation_log_key(coll.entity, coll.project, coll.name, new_idx, revision,
                                                           new_vid.hex), value)
        state: bytes = msgpack.packb({**doc, "version": new_vid.raw}, use_bin_type=True)
        key = annotation_key(coll.entity, coll.project, coll.name, new_idx)
        try:
            if raw_new is None:
                store.backend.put_if_absent(key, state)
            else:
                store.backend.compare_and_swap(key, raw_new, state)  # a stale state (another object's) there
        except Conflict:
            continue  # edited meanwhile through the copy: that edit is newer


def _is_ancestor(src: Store, coll: CollectionPath, index: int, vid: ObjectId, d_doc: dict[str, object],
                 s_revision: int) -> bool:
    """Whether the destination's state ``d_doc`` is one the source's history passed through."""
    d_revision = d_doc["revision"]
    if not isinstance(d_revision, int) or d_revision >= s_revision:
        return False
    entry = raw_history(src, coll, index, vid).get(
        annotation_log_key(coll.entity, coll.project, coll.name, index, d_revision, vid.hex))
    if entry is None:
        return False
    return same_value(msgpack.unpackb(entry, raw=False, strict_map_key=False), d_doc.get("last"))
