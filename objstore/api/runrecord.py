"""Writing a run's record: the first one create-only, every change after it a new
record that the run's ref moves to by compare-and-swap.

Invariant: a run ref only ever moves from the record a writer read to one built
from it (``change(current)``), so two processes changing one run (a resumed run,
a second ``use_model``) each see the other's change, never lose it. A writer
that knows the record it wrote last (:class:`Written`) swaps against it without
reading it again; only a Conflict (someone else moved the ref) costs a re-read.
Reading run records back is :mod:`objstore.api.runinfo`'s.

The lineage index (:mod:`objstore.api.runinfo`, ``RunLookup``): before a run's ref
first points at a record, a key per version the record names is written; before
the ref moves to a changed record, a key per version it adds. Create-only, index
before ref (the write order), so the index never lacks what a ref shows; a crash
in between leaves a key naming a run that does not name the version, which the
reader's record read discards. A transfer indexes each run record it brings
before it moves the run's ref (:func:`index_arriving_run`). A store created by
this code says so (``lineage/complete``); an older store gets it from
:func:`index_every_run` (``objstore maintenance``), after every run was indexed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from objstore.api.runinfo import iter_run_records, record_at
from objstore.errors import Conflict, InvalidInput, NotFound
from objstore.model.refs import decode_value, encode_value
from objstore.model.store import Store
from objstore.storage.ids import ObjectId
from objstore.storage.keys import LINEAGE_COMPLETE, lineage_key, parse_ref_key, run_ref
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
    index_lineage(store, record, None)
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
        index_lineage(store, new, current)
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


def index_lineage(store: Store, record: RunRecord, before: RunRecord | None) -> None:
    """Write the lineage index keys ``record`` needs that ``before`` (the record its
    ref moves from; None: every one) did not: one per version it names. Before the
    ref moves (see the module docstring)."""
    payload = f"{record.entity}/{record.project}/{record.id}".encode()
    for role, ids, old in (("used", record.inputs, before.inputs if before else ()),
                           ("logged", record.outputs, before.outputs if before else ())):
        known = set(old)  # a run that logged thousands of versions: a tuple scan per id was quadratic
        for vid in ids:
            if vid not in known:
                store.backend.put_if_absent(lineage_key(role, vid.hex, record.entity, record.project, record.id), payload)


def index_arriving_run(store: Store, key: str, oid: ObjectId | None) -> None:
    """A transfer is about to point run ref ``key`` of ``store`` at record ``oid``
    (stored already): index every version that record names. Any other key: nothing."""
    parsed = parse_ref_key(key)
    if oid is None or parsed is None or parsed.kind != "run":
        return
    record = store.odb.get_object(oid)
    if isinstance(record, RunRecord):
        index_lineage(store, record, None)


def index_every_run(store: Store) -> int | None:
    """Index every run of a store that is not complete yet, then say it is complete
    (``lineage/complete``); the runs indexed, or None if it was complete already.
    Runs recorded meanwhile by this code index themselves (a release before the
    index, writing meanwhile or later, would not: the index would miss its runs)."""
    try:
        store.backend.stat(LINEAGE_COMPLETE)  # not lineage_complete(): on a format-2 store it is kept up, only not trusted
        return None
    except NotFound:
        pass
    runs = 0
    for record in iter_run_records(store):
        index_lineage(store, record, None)
        runs += 1
    store.backend.put_if_absent(LINEAGE_COMPLETE, b"every run of this store is in lineage/")
    return runs


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
