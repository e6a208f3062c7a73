"""Writing a run's record: the first one create-only, every change after it a new
record that the run's ref moves to by compare-and-swap.

Invariant: a run ref only ever moves from the record a writer read to one built
from it (``change(current)``), so two processes changing one run (a resumed run,
a second ``use_model``) each see the other's change, never lose it. A writer
that knows the record it wrote last (:class:`Written`) swaps against it without
reading it again; only a Conflict (someone else moved the ref) costs a re-read.
Reading run records back is :mod:`objstore.api.runinfo`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from objstore.api.runinfo import record_at
from objstore.errors import Conflict, InvalidInput, NotFound
from objstore.model.refs import decode_value, encode_value
from objstore.model.store import Store
from objstore.storage.ids import ObjectId
from objstore.storage.keys import run_ref
from objstore.storage.objects import RunRecord

# Compare-and-swap attempts before a run that keeps changing is a Conflict.
MAX_UPDATE_ATTEMPTS = 100


@dataclass(frozen=True, slots=True)
class Written:
    """A run record as this process last stored it: the record and the ref's raw value then."""

    record: RunRecord
    raw: bytes


def create_record(store: Store, record: RunRecord) -> Written:
    """Store ``record`` as its run's first; InvalidInput if the run id is taken."""
    oid = store.odb.put_object(record)
    if not store.refs.create(run_ref(record.entity, record.project, record.id), oid, f"run {record.state}"):
        raise InvalidInput(f"run id {record.id} is already in use; pass a different id")
    return Written(record, encode_value(oid))


def update_record(store: Store, entity: str, project: str, run_id: str,
                  change: Callable[[RunRecord], RunRecord], known: Written | None = None) -> Written:
    """Move run ``entity/project/run_id`` to ``change(current record)``; return what it holds after.

    ``known``: what this process wrote last, tried first as the current record
    (one swap, no read); if another writer moved the ref since, it is read again."""
    ref = run_ref(entity, project, run_id)
    for _ in range(MAX_UPDATE_ATTEMPTS):
        if known is not None:
            raw, current = known.raw, known.record
            known = None
        else:
            raw_read = store.refs.read_raw(ref)
            current = record_at(store, entity, project, run_id, None if raw_read is None else decode_value(ref, raw_read))
            raw = raw_read or b""
        new = change(current)
        if new == current:
            return Written(current, raw)
        oid = store.odb.put_object(new)
        try:
            store.refs.set_if_equals(ref, raw, oid, f"run {new.state}")
            return Written(new, encode_value(oid))
        except Conflict:
            continue
    raise Conflict(ref, None, None, f"run {entity}/{project}/{run_id} kept changing; retry")


def with_output(version_id: ObjectId) -> Callable[[RunRecord], RunRecord]:
    """The change that records ``version_id`` as logged by the run (once)."""
    return lambda r: r if version_id in r.outputs else replace(r, outputs=r.outputs + (version_id,))


def with_input(version_id: ObjectId) -> Callable[[RunRecord], RunRecord]:
    """The change that records ``version_id`` as used by the run (once)."""
    return lambda r: r if version_id in r.inputs else replace(r, inputs=r.inputs + (version_id,))


def add_output(store: Store, run_path: str, version_id: ObjectId) -> None:
    """Record ``version_id`` as an output of the run ``entity/project/id`` (another
    process's, perhaps still running: its next write re-reads and keeps this);
    a run not in this store is left alone (lineage is weak)."""
    parts = run_path.split("/")
    if len(parts) != 3:
        return
    try:
        update_record(store, parts[0], parts[1], parts[2], with_output(version_id))
    except NotFound:
        return
