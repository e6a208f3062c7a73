"""Distributed versions (W&B's ``run.upsert_artifact`` / ``run.finish_artifact``):
parts that several processes add to one pending version of a collection, which
one of them finishes.

A part is one create-only ref
``refs/<entity>/<project>/<name>/pending/<distributed id>/<token>`` (the token
unique to the writer: time and randomness) holding a *part record*: a
:class:`~objstore.storage.objects.Version` object with index ``-1`` (never a
number: no ``versions/vN`` ref ever holds it) whose tree is the part's files,
whose ``run`` is the run that upserted it, and whose ``metadata`` is
``{"metadata": <the part's metadata>, "aliases": [<its aliases>]}``.

Invariants:

- Concurrent upserts never contend: each writes its own key, create-only, so
  none is lost, whatever the number of writers or machines.
- A part's ref is written last (its chunks, files, tree and record first: the
  write order), and it is a ref under ``refs/``, so gc keeps everything it
  reaches until the part is finished.
- Finishing takes the parts it listed (:func:`pending_parts`), and after the
  version holding them is claimed clears exactly those (:func:`clear_parts`, a
  compare-and-swap to a tombstone against the value read): a part upserted
  after the listing stays pending for the next version (W&B: "subsequent
  upserts with the same distributed ID will result in a new version").
- Parts are laid over one another oldest first (by the time in their record,
  then their token): a later part's file replaces an earlier one's at the same path.
- A collection holding only pending parts exists (W&B creates the collection with
  its PENDING version at the first upsert): listings show it with no version
  (:func:`pending_type` gives its type); it holds no version until finished.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from typing import Any

from objstore.errors import Conflict, CorruptObject, InvalidName, WrongType
from objstore.model.names import CollectionPath
from objstore.model.refs import encode_value
from objstore.model.store import Store
from objstore.storage.keys import pending_part_ref, pending_prefix, pending_root
from objstore.storage.objects import Version

PENDING_INDEX = -1  # the index of a part record: no version number
MAX_DISTRIBUTED_ID = 128  # characters, as W&B's other names


@dataclass(frozen=True, slots=True)
class Part:
    """One upserted part: its ref, the raw value read there, and its record."""

    ref: str
    raw: bytes
    record: Version

    @property
    def metadata(self) -> dict[str, Any]:
        inner = self.record.metadata.get("metadata", {})
        return dict(inner) if isinstance(inner, dict) else {}

    @property
    def aliases(self) -> tuple[str, ...]:
        inner = self.record.metadata.get("aliases", [])
        return tuple(a for a in inner if isinstance(a, str)) if isinstance(inner, list) else ()


def check_distributed_id(distributed_id: object) -> str:
    """The id as given; InvalidName unless a string of 1 to 128 characters (it becomes a key part, encoded)."""
    if not isinstance(distributed_id, str) or not 1 <= len(distributed_id) <= MAX_DISTRIBUTED_ID:
        raise InvalidName(f"distributed_id {distributed_id!r} must be a string of 1 to {MAX_DISTRIBUTED_ID} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in distributed_id):
        raise InvalidName(f"distributed_id {distributed_id!r} holds a control character")
    return distributed_id


def add_part(store: Store, coll: CollectionPath, distributed_id: str, record: Version) -> Part:
    """Store ``record`` (a part record: index -1, of ``coll``; everything its tree
    names already stored) and create its ref; the part is then pending."""
    if record.index != PENDING_INDEX or (record.entity, record.project, record.name) != (coll.entity, coll.project, coll.name):
        raise CorruptObject("a part record must have index -1 and its collection's names", object_id=coll.name)
    oid = store.odb.put_object(record)
    token = f"{time.time_ns():x}-{os.getpid():x}-{secrets.token_hex(6)}"
    ref = pending_part_ref(coll.entity, coll.project, coll.name, distributed_id, token)
    if not store.refs.create(ref, oid, f"upsert into {coll.name} ({distributed_id})"):
        raise Conflict(ref, None, store.refs.read_raw(ref), f"part token {token} is taken; retry")
    return Part(ref, encode_value(oid), record)


def pending_parts(store: Store, coll: CollectionPath, distributed_id: str) -> list[Part]:
    """The parts pending in ``distributed_id`` of ``coll``, oldest first."""
    prefix = pending_prefix(coll.entity, coll.project, coll.name, distributed_id)
    parts: list[Part] = []
    for ref, oid in store.refs.iter_refs(prefix):
        record = store.odb.get_object(oid)
        if not isinstance(record, Version) or record.index != PENDING_INDEX or \
                (record.entity, record.project, record.name) != (coll.entity, coll.project, coll.name):
            raise CorruptObject(f"ref {ref} holds no part record of {coll}", object_id=oid.hex)
        parts.append(Part(ref, encode_value(oid), record))
    return sorted(parts, key=lambda p: (p.record.created_at, p.ref))


def expected_type(parts: list[Part]) -> str | None:
    """The type every part has (WrongType if two differ); None without parts."""
    types = {p.record.artifact_type for p in parts}
    if len(types) > 1:
        raise WrongType(f"the parts pending have types {sorted(types)}; a version has one type")
    return types.pop() if types else None


def clear_parts(store: Store, parts: list[Part], version_label: str) -> None:
    """Tombstone each of ``parts`` (compare-and-swap against the value read): they are in ``version_label`` now.
    A part someone else cleared meanwhile (a concurrent finish of the same parts) is left as it is."""
    for part in parts:
        try:
            store.refs.set_if_equals(part.ref, part.raw, None, f"finished into {version_label}")
        except Conflict:
            continue




def pending_type(store: Store, coll: CollectionPath) -> str | None:
    """The type of a part pending in ``coll`` under any distributed id (None if none
    is): one listing, and one ref and one object read when a part is pending."""
    for _, oid in store.refs.iter_refs(pending_root(coll.entity, coll.project, coll.name)):
        record = store.odb.get_object(oid)
        if isinstance(record, Version) and record.index == PENDING_INDEX:
            return record.artifact_type
    return None
