"""Pending parts of distributed versions (``run.upsert_artifact``) carried by push
and pull, so writers on different machines sharing one remote can each push their
parts and the finisher pull them all before ``finish_artifact``.

A part ref (``refs/<e>/<p>/<name>/pending/<id>/<token>``,
:mod:`objstore.model.distributed`) is create-only and its token unique to its
writer, so one key is one part wherever it is seen: a transfer copies it as git
copies a tag, and never has to merge two values of it.

Invariants:

- A live part the destination lacks is created there, create-only, after the
  objects its record reaches (the write order); one the destination finished
  already (a tombstone there) is never brought back, so a part is laid into
  one version only, whichever store finished it.
- A part finished at the source (a tombstone) and live at the destination is
  tombstoned there, by compare-and-swap against the value read, after the
  transfer's versions are in place: the finished version has arrived first, so
  a transfer that stops halfway leaves the part pending, never lost.
- An arriving part ref must hold a part record of its own collection (checked
  on the objects just copied, before its ref is written).
- Parts are not remote-tracked (no ``remotes/<r>/refs`` entry): create-only
  and unique, they need no last-seen value to decide a move.
"""

from __future__ import annotations

from collections.abc import Sequence

from objstore.errors import Conflict, CorruptObject
from objstore.model.distributed import PENDING_INDEX
from objstore.model.store import Store
from objstore.storage.ids import ObjectId
from objstore.storage.keys import parse_part_ref
from objstore.storage.objects import Version
from objstore.transfer.closure import configured_pack_target, copy_closure, survive_gc
from objstore.transfer.sync import TransferResult, read_keys, ref_target


def part_refs(store: Store, prefixes: Sequence[str]) -> dict[str, bytes]:
    """Raw values of the part refs under ``prefixes`` (finished ones as ``b""``): one listing per prefix."""
    keys = [info.key for prefix in prefixes for info in store.backend.iter_prefix(prefix)
            if parse_part_ref(info.key) is not None]
    return read_keys(store, keys)


def carry_parts(src: Store, dst: Store, prefixes: Sequence[str], result: TransferResult, why: str, *,
                mine: dict[str, bytes] | None = None) -> None:
    """Make ``dst`` hold every part pending in ``src`` under ``prefixes`` that ``dst``
    has not finished, and tombstone in ``dst`` the parts ``src`` finished. Each ref
    written is added to ``result.refs``. ``mine``: the source's part refs, when read already."""
    here = part_refs(src, prefixes) if mine is None else mine
    if not here:
        return
    there = part_refs(dst, prefixes)
    new = {k: v for k, v in here.items() if v and k not in there}
    if new:
        roots = [oid for k, v in new.items() if (oid := ref_target(k, v)) is not None]
        copied = copy_closure(src, dst, roots, result, pack_target=configured_pack_target())
        for key, raw in sorted(new.items()):
            oid = ref_target(key, raw)
            assert oid is not None  # live: not a tombstone
            _check_part(dst, key, oid, result.remote)
            if dst.refs.create(key, oid, why):
                result.refs.append(key)
        survive_gc(src, dst, roots, copied, result, pack_target=configured_pack_target())  # after the part refs
        dst.odb.maintain()  # after the refs that reach what was copied (odb's write order)
    for key in sorted(k for k, v in here.items() if not v and there.get(k)):
        try:
            dst.refs.set_if_equals(key, there[key], None, f"{why}: finished there")
            result.refs.append(key)
        except Conflict:
            continue  # finished here meanwhile too


def _check_part(store: Store, key: str, oid: ObjectId, label: str) -> None:
    parsed = parse_part_ref(key)
    record = store.odb.get_object(oid)
    if parsed is None or not isinstance(record, Version) or record.index != PENDING_INDEX or \
            (record.entity, record.project, record.name) != (parsed.entity, parsed.project, parsed.name):
        raise CorruptObject(f"{label}: {key} holds no part record of {parsed.entity}/{parsed.project}/{parsed.name}"
                            if parsed else f"{label}: {key} is no part ref", object_id=oid.hex)
