"""Writing a run's record: the first one create-only, every change after it a new
record that the run's ref moves to by compare-and-swap.

Invariant: a run ref only ever moves from the record a writer read to one built
from it (``change(current)``), so two processes changing one run (a resumed run,
a second ``use_model``) each see the other's change, never lose it. Reading run
records back is :mod:`objstore.api.runinfo`'s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from objstore.api.runinfo import read_run
from objstore.errors import Conflict, InvalidInput
from objstore.model.store import Store
from objstore.storage.ids import ObjectId
from objstore.storage.keys import run_ref
from objstore.storage.objects import RunRecord

# Compare-and-swap attempts before a run that keeps changing is a Conflict.
MAX_UPDATE_ATTEMPTS = 100


def create_record(store: Store, record: RunRecord) -> None:
    """Store ``record`` as its run's first; InvalidInput if the run id is taken."""
    oid = store.odb.put_object(record)
    if not store.refs.create(run_ref(record.entity, record.project, record.id), oid, "run started"):
        raise InvalidInput(f"run id {record.id} is already in use; pass a different id")


def update_record(store: Store, entity: str, project: str, run_id: str,
                  change: Callable[[RunRecord], RunRecord]) -> RunRecord:
    """Move run ``entity/project/run_id`` to ``change(current record)``; return the record it holds after."""
    ref = run_ref(entity, project, run_id)
    for _ in range(MAX_UPDATE_ATTEMPTS):
        raw = store.refs.read_raw(ref)
        current = read_run(store, entity, project, run_id)
        new = change(current)
        if new == current:
            return current
        oid = store.odb.put_object(new)
        try:
            store.refs.set_if_equals(ref, raw, oid, f"run {new.state}")
            return new
        except Conflict:
            continue
    raise Conflict(ref, None, None, f"run {entity}/{project}/{run_id} kept changing; retry")


def with_output(version_id: ObjectId) -> Callable[[RunRecord], RunRecord]:
    """The change that records ``version_id`` as logged by the run (once)."""
    return lambda r: r if version_id in r.outputs else replace(r, outputs=r.outputs + (version_id,))


def with_input(version_id: ObjectId) -> Callable[[RunRecord], RunRecord]:
    """The change that records ``version_id`` as used by the run (once)."""
    return lambda r: r if version_id in r.inputs else replace(r, inputs=r.inputs + (version_id,))
