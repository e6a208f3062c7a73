"""A deleting gc's intent, and the writer's look for it: the last window between
gc's second look at the refs and its deletes, closed by Dekker's order.

gc (:mod:`objstore.maintenance.gc`) writes an intent key ``gc/deleting/<stamp>``
(:func:`announce`) *before* its second look at the refs, and rewrites it as done
(:func:`withdraw`) *after* its last delete. A writer that relied on bytes already
stored ("already there" is success for a create-only write: its file and tree
objects, or the very same pack) writes its version ref, *then* lists the intents
(:func:`overlapped`). Each side writes, then reads what the other writes, so at
least one sees the other: either gc's second look sees the new ref (and keeps
its closure), or the writer sees the intent (and checks its closure after that gc).

Invariants:

- A writer never waits for ever: a running intent older than
  ``GC_INTENT_STALE_SECONDS`` is a dead gc's; its writer waits no longer and checks.
- A finished intent stays ``GC_INTENT_KEEP_SECONDS`` (gc's :func:`sweep` removes
  older ones by their modification time, the end for a finished one): a gc that ran
  wholly inside a writer's window (after its "already there", before its ref) is
  still seen. A writer whose window is longer than that checks always.
- Times are each machine's clock: they are compared with ``GC_INTENT_CLOCK_MARGIN``
  to spare, so a skewed clock costs a needless check, never a missed one.
- Only a writer that relied on bytes already stored looks (one listing); one that
  stored everything anew makes no request more: gc deletes only what it listed
  before this writer's creates, and never deletes a key twice.
- :func:`lost` checks a version's strong closure where it is stored now (each
  object by a stat, never a cache; chunks by ``ObjectDatabase.stored_now``: a fresh
  listing, every ``.idx`` it needs read, each pack stat'd; never dedup's answer,
  which may call a stored chunk new).
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass

import msgpack

from objstore.constants import GC_INTENT_CLOCK_MARGIN, GC_INTENT_KEEP_SECONDS, GC_INTENT_STALE_SECONDS
from objstore.errors import NotFound, ObjstoreError
from objstore.model.inventory import reach
from objstore.model.store import Store
from objstore.storage.ids import ObjectId
from objstore.storage.keys import GC_DELETING, gc_intent_key, object_key

POLL_SECONDS = 0.25


@dataclass(frozen=True, slots=True)
class Intent:
    """One gc's intent: its key and when it started deleting (that gc's clock)."""

    key: str
    start: float


def announce(store: Store) -> Intent:
    """gc: say "deleting now", before the second look at the refs."""
    start = time.time()
    key = gc_intent_key(f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}")
    store.backend.put_if_absent(key, msgpack.packb({"start": start}))
    return Intent(key, start)


def withdraw(store: Store, intent: Intent) -> None:
    """gc: say "done" after the last delete (kept for writers, see the module docstring),
    and remove the intents old enough that no writer needs them."""
    store.backend.put(intent.key, msgpack.packb({"start": intent.start, "end": time.time()}))
    sweep(store)


def sweep(store: Store) -> int:
    """Remove intents older than any writer's look needs (by modification time). Returns how many."""
    horizon = time.time() - (GC_INTENT_STALE_SECONDS + GC_INTENT_KEEP_SECONDS + GC_INTENT_CLOCK_MARGIN)
    removed = 0
    for info in list(store.backend.iter_prefix(GC_DELETING)):
        if info.mtime < horizon:
            try:
                store.backend.delete(info.key)
            except NotFound:
                continue
            removed += 1
    return removed


def _state(store: Store, key: str) -> tuple[float, float | None] | None:
    """(start, end or None while running) of an intent; None if gone or unreadable."""
    try:
        value = msgpack.unpackb(store.backend.get(key, max_size=4096))
        start, end = float(value["start"]), value.get("end")
        return start, None if end is None else float(end)
    except (NotFound, ObjstoreError, ValueError, TypeError, KeyError, AttributeError, msgpack.UnpackException):
        return None


def overlapped(store: Store, started: float) -> bool:
    """Writer, after its version ref: whether a gc may have deleted, since
    ``started`` (this machine's clock, before the writer's first "already there"),
    what the version names. Waits for a running gc to finish (bounded). One
    listing when no gc deleted lately; a read per intent of one that did."""
    if time.time() - started > GC_INTENT_KEEP_SECONDS:
        return True  # an intent of a gc within this window may have been swept already
    relevant = False
    for info in list(store.backend.iter_prefix(GC_DELETING)):
        if info.mtime < started - GC_INTENT_STALE_SECONDS - GC_INTENT_CLOCK_MARGIN:
            continue  # finished, or died, before this writer started
        state = _state(store, info.key)
        while state is not None and state[1] is None and time.time() - state[0] < GC_INTENT_STALE_SECONDS:
            time.sleep(POLL_SECONDS)  # a gc is deleting: wait for it to finish before checking
            state = _state(store, info.key)
        if state is None or state[1] is None or state[1] >= started - GC_INTENT_CLOCK_MARGIN:
            relevant = True  # gone or unreadable, a dead gc's, or finished within this window
    return relevant


def lost(store: Store, *roots: ObjectId) -> str | None:
    """What of the strong closure of ``roots`` (a version, or whatever a transfer's
    refs name) is not stored now (a phrase for a message), or None if it is whole."""
    r = reach(store, list(roots))
    if r.unknown:
        oid, why = r.unknown[0]
        return f"object {oid.hex[:16]} ({why})"
    for oid in sorted(r.objects, key=lambda o: o.raw):
        try:
            store.backend.stat(object_key(oid))
        except NotFound:
            return f"object {oid.hex[:16]}"
    chunks = [ObjectId(raw) for raw in sorted(r.chunks)]
    for chunk, found in zip(chunks, store.odb.stored_now(chunks)):
        if not found:
            return f"chunk {chunk.hex[:16]}"
    return None
