"""Carrying the annotation edits of transferred versions (push, pull, clone).

A version's annotation state (:mod:`objstore.model.annotations`) moves like a
ref, fast-forward only, but its history says by itself what is newer, so no
tracking state is needed:

- The destination takes the source's state when it has none for that version
  object, or when its own is an ancestor of the source's: a lower revision
  whose last edit is the source's history entry of that revision.
- A destination ahead (the source's state is an ancestor of its own) stays, quietly.
- Otherwise (edited differently on both sides since their last common
  revision) the later edit wins, as on W&B's server, where the last save wins:
  when the source's last edit is later than the destination's, its fields are
  applied at the destination as one new edit (with the source's author, said
  to be taken by a transfer, and time), so the destination's history keeps
  both sides' edits; else the destination's state stays and its key is listed in
  ``result.kept``, and the transfer the other way takes it there. Equal fields
  on both sides are left alone, so a settled pair stays quiet.
- History entries are create-only and keyed by revision and version object, so
  the source's entries up to the state taken are copied (create-only) before
  the state itself; a destination that keeps its own state copies none (the
  entries of a diverged revision would describe the other side's edit).
- The state moves by compare-and-swap from the value read: an edit made at the
  destination meanwhile wins (listed as kept).
- A collection's own description and tags (its state) move by the same rule;
  it names no object, so its identity is the id it was created with: states
  created apart on each side (another id) never fast-forward, and the later
  edit wins as above.
- A version a pull re-bases is a new object at a new number: its state and
  history are copied to the copy's key (naming the copy) before the remote's
  states are taken, so a re-based version keeps its edits.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgpack

from objstore.errors import Conflict, CorruptObject
from objstore.model.annotations import (
    Edit,
    collection_state_id,
    edit_annotations,
    edit_collection_annotations,
    raw_collection_history,
    raw_collection_state,
    raw_history,
    raw_state,
    read_annotations,
    read_collection_annotations,
    same_value,
)
from objstore.model.names import CollectionPath
from objstore.model.store import Store
from objstore.model.versions import read_entry
from objstore.storage.ids import ObjectId
from objstore.storage.keys import (
    annotation_key,
    annotation_log_key,
    collection_annotation_key,
    collection_annotation_log_key,
)
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
    d_raw, d_doc = raw_state(dst, coll, index, vid)  # d_doc None with d_raw set: a stale state, replaced

    def take(doc: dict[str, Any]) -> None:
        fields = doc.get("fields") or {}
        entry = read_entry(dst, coll, vid)
        now = read_annotations(dst, entry)
        meta, tags = dict(fields.get("metadata") or {}), tuple(fields.get("tags", ()))
        edit_annotations(dst, entry, Edit(fields.get("description"), "description" in fields, meta,
                                          tuple(k for k in now.metadata if k not in meta), tags,
                                          tuple(t for t in now.tags if t not in tags), fields.get("ttl"), "ttl" in fields),
                         who=_taker(src, doc), when=_when(doc))

    return _carry(dst, annotation_key(coll.entity, coll.project, coll.name, index), (s_raw, s_doc), (d_raw, d_doc),
                  _Owner(src, dst, lambda st: raw_history(st, coll, index, vid),
                         lambda r: annotation_log_key(coll.entity, coll.project, coll.name, index, r, vid.hex), take))


def carry_collection_annotations(src: Store, dst: Store, colls: Iterable[CollectionPath], result: TransferResult) -> None:
    """Bring each of ``colls``' own description and tags at ``dst`` up to ``src``'s, by the rule
    of the versions' (module docstring); the states of two collections edited apart (their
    states were created on each side: another id) never merge, the destination's is kept."""
    outcomes = pmap(lambda c: _carry_collection(src, dst, c), list(colls))
    for key, outcome in sorted(o for o in outcomes if o is not None):
        (result.annotations if outcome == "moved" else result.kept).append(key)


def _carry_collection(src: Store, dst: Store, coll: CollectionPath) -> tuple[str, str] | None:
    key = collection_annotation_key(coll.entity, coll.project, coll.name)
    try:
        s_raw, s_doc = raw_collection_state(src, coll)
        d_raw, d_doc = raw_collection_state(dst, coll)
    except CorruptObject:
        return None  # fsck reports a damaged state; a transfer does not copy or overwrite one
    sid = collection_state_id(s_doc)
    if s_raw is None or s_doc is None or sid is None or d_raw == s_raw:
        return None
    def take(doc: dict[str, Any]) -> None:
        fields = doc.get("fields") or {}
        now = read_collection_annotations(dst, coll)
        edit_collection_annotations(dst, coll, Edit(fields.get("description"), True, None, (), tuple(fields.get("tags", ())),
                                                    tuple(t for t in now.tags if t not in fields.get("tags", ()))),
                                    who=_taker(src, doc), when=_when(doc))

    owner = _Owner(src, dst, lambda st: raw_collection_history(st, coll, sid),
                   lambda r: collection_annotation_log_key(coll.entity, coll.project, coll.name, r, sid), take)
    if d_doc is not None and collection_state_id(d_doc) != sid:
        if same_value(d_doc.get("fields"), s_doc.get("fields")):
            return None
        return _take_later(owner, key, s_doc, d_doc)
    return _carry(dst, key, (s_raw, s_doc), (d_raw, d_doc), owner)


@dataclass(frozen=True)
class _Owner:
    """What one annotation state belongs to, on both sides: its history there, and its log key per revision."""

    src: Store
    dst: Store
    history: Callable[[Store], dict[str, bytes]]
    log_key: Callable[[int], str]
    take: Callable[[dict[str, Any]], None]  # apply a source state's fields at the destination as one new edit


def _when(doc: dict[str, Any] | None) -> float | None:
    last = (doc or {}).get("last")
    when = last.get("when") if isinstance(last, dict) else None
    return float(when) if isinstance(when, (int, float)) else None


def _taker(src: Store, doc: dict[str, Any]) -> str:
    last = doc.get("last")
    who = last.get("who") if isinstance(last, dict) else None
    return f"{who or 'unknown'} (the later edit, taken from {src.location})"


def _take_later(owner: _Owner, key: str, s_doc: dict[str, Any], d_doc: dict[str, Any]) -> tuple[str, str]:
    """States edited apart on both sides: the source's fields as a new edit here if its
    last edit is the later, else the destination's stays (kept)."""
    s_when, d_when = _when(s_doc), _when(d_doc)
    if s_when is None or (d_when is not None and s_when <= d_when):
        return key, "kept"
    owner.take(s_doc)
    return key, "moved"


def _carry(dst: Store, key: str, source: tuple[bytes, dict[str, Any]], dest: tuple[bytes | None, dict[str, Any] | None],
           owner: _Owner) -> tuple[str, str] | None:
    """Move state ``key`` at ``dst`` from ``dest`` to ``source`` if that only moves it forward."""
    (s_raw, s_doc), (d_raw, d_doc) = source, dest
    if d_raw == s_raw:
        return None
    if d_doc is not None and not _is_ancestor(owner, owner.src, d_doc, s_doc["revision"]):
        if same_value(d_doc.get("fields"), s_doc.get("fields")) or _is_ancestor(owner, owner.dst, s_doc, d_doc["revision"]):
            return None  # the same fields, or the destination is simply ahead: nothing to say
        return _take_later(owner, key, s_doc, d_doc)
    for log_key, value in sorted(owner.history(owner.src).items()):
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


def _is_ancestor(owner: _Owner, side: Store, d_doc: dict[str, Any], s_revision: int) -> bool:
    """Whether state ``d_doc`` is one the history at ``side`` passed through before its revision ``s_revision``."""
    d_revision = d_doc["revision"]
    if not isinstance(d_revision, int) or d_revision >= s_revision:
        return False
    entry = owner.history(side).get(owner.log_key(d_revision))
    if entry is None:
        return False
    return same_value(msgpack.unpackb(entry, raw=False, strict_map_key=False), d_doc.get("last"))
