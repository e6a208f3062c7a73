"""Remote-tracking state and ref snapshots: what a remote's refs held when this
store last saw them, and the collections and runs a snapshot of refs names.

Tracking state is kept under ``remotes/<remote>/refs/…`` in the local store (a cache, never moved
by CAS); push and pull decide from it. Split from :mod:`objstore.transfer.sync`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from objstore.constants import MAX_REF_BYTES
from objstore.errors import CorruptObject, NotFound
from objstore.model.inventory import edges, run_ref_of
from objstore.model.names import REGISTRY_PROJECT, CollectionPath, version_index
from objstore.model.store import Store
from objstore.storage.ids import ObjectId
from objstore.transfer.closure import read_object_verified
from objstore.transfer.sync import TransferResult, parse_ref, pmap, read_keys, ref_target


def runs_of(store: Store, snapshot: dict[str, bytes]) -> set[str]:
    """The run refs of the runs that logged the versions and links ``snapshot``'s
    version refs hold (their weak ``run`` edge). An entry that cannot be read
    names no run here; the walk reports it."""
    ids = [oid for k, raw in snapshot.items()
           if (r := parse_ref(k)) is not None and r.kind == "version" and (oid := ref_target(k, raw)) is not None]

    def run_key(oid: ObjectId) -> str | None:
        try:
            obj, _ = read_object_verified(store, oid)
        except (NotFound, CorruptObject):
            return None
        return run_ref_of(edges(obj).run)

    return {k for k in pmap(run_key, ids) if k is not None}



# -- tracking state -------------------------------------------------------------

class Tracking:
    """What a remote's refs held when this store last saw them: keys
    ``<prefix>refs/…`` in the local store (a cache; never moved by CAS)."""

    def __init__(self, store: Store, prefix: str) -> None:
        self.store = store
        self.prefix = prefix.rstrip("/") + "/"

    def read_all(self, prefixes: Sequence[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for p in prefixes:
            for info in self.store.backend.iter_prefix(self.prefix + p):
                try:
                    out[info.key[len(self.prefix):]] = self.store.backend.get(info.key, max_size=MAX_REF_BYTES)
                except NotFound:
                    continue
        return out

    def read_keys(self, keys: Iterable[str]) -> dict[str, bytes]:
        out: dict[str, bytes] = {}
        for key in sorted(set(keys)):
            try:
                out[key] = self.store.backend.get(self.prefix + key)
            except NotFound:
                continue
        return out

    def forget(self, key: str, previous: bytes | None) -> None:
        """Put back what was known of ``key`` before the last fetch."""
        if previous is None:
            self.store.backend.delete(self.prefix + key)
        else:
            self.store.backend.put(self.prefix + key, previous)

    def update(self, values: dict[str, bytes], previous: dict[str, bytes], gone: Iterable[str] = ()) -> None:
        """Record ``values`` (``previous``: what was recorded) and forget the keys
        ``gone``, refs the remote no longer has: a stale tracking ref would keep
        what it names from gc here for ever (gc counts tracking refs as roots)."""
        changed = [(k, v) for k, v in values.items() if previous.get(k) != v]
        pmap(lambda kv: self.store.backend.put(self.prefix + kv[0], kv[1]), changed)
        pmap(lambda k: self.store.backend.delete(self.prefix + k), sorted(set(gone) - set(values)))



# -- collections in a ref snapshot ------------------------------------------------

@dataclass
class CollectionRefs:
    """One collection's refs in a snapshot: versions by number, raw aliases and digests."""

    versions: dict[int, ObjectId] = field(default_factory=dict)
    aliases: dict[str, bytes] = field(default_factory=dict)  # raw, tombstones included
    digests: dict[str, bytes] = field(default_factory=dict)
    deleted: set[int] = field(default_factory=set)  # version numbers whose ref is a tombstone


def collections_in(snapshot: dict[str, bytes]) -> dict[CollectionPath, CollectionRefs]:
    """The version, alias and digest refs of ``snapshot`` grouped by collection (runs left out)."""
    out: dict[CollectionPath, CollectionRefs] = {}
    for key, raw in snapshot.items():
        ref = parse_ref(key)
        if ref is None or ref.kind == "run":
            continue
        coll = out.setdefault(ref.collection, CollectionRefs())
        if ref.kind == "version":
            oid = ref_target(key, raw)
            if oid is not None:
                coll.versions[version_index(ref.tail)] = oid  # type: ignore[index]
            else:
                coll.deleted.add(version_index(ref.tail))  # type: ignore[arg-type]
        elif ref.kind == "alias":
            coll.aliases[ref.tail] = raw
        else:
            coll.digests[ref.tail] = raw
    return out


def run_refs_in(snapshot: dict[str, bytes]) -> dict[str, bytes]:
    """The run refs of ``snapshot``."""
    return {k: v for k, v in snapshot.items() if (r := parse_ref(k)) is not None and r.kind == "run"}


# In a version chain, a deleted version: its number stays taken (never a real id: no hash is all zeros).
TOMBSTONE = ObjectId(bytes(32))


def version_chain(coll: CollectionRefs) -> list[ObjectId]:
    """The versions v0..vK in order (a deleted one as :data:`TOMBSTONE`), stopping at the first gap."""
    out: list[ObjectId] = []
    while len(out) in coll.versions or len(out) in coll.deleted:
        out.append(coll.versions.get(len(out), TOMBSTONE))
    return out


def add_run_refs(keys: set[str], tracked: dict[str, bytes], tracking: Tracking,
              *snapshots: tuple[dict[str, bytes], Store]) -> None:
    """Add the run refs ``keys`` to each (snapshot, its store) and to the tracking state:
    a named transfer moves the runs that logged the versions it moves."""
    if not keys:
        return
    for snapshot, store in snapshots:
        snapshot.update(read_keys(store, keys))
    tracked.update(tracking.read_keys(keys))


def root_ids(snapshot: dict[str, bytes]) -> list[ObjectId]:
    """The ids ``snapshot``'s refs point at (tombstones left out): where a transfer walk starts."""
    return [oid for k, raw in snapshot.items() if (oid := ref_target(k, raw)) is not None]


def registry_last(colls: dict[CollectionPath, Any]) -> list[CollectionPath]:
    """Collections with registries last (their links point at the others' versions)."""
    return sorted(colls, key=lambda c: (c.project == REGISTRY_PROJECT, str(c)))


def remote_counters(store: Store) -> tuple[int, int, int]:
    """The backend's (requests, bytes sent, bytes received) so far; :func:`finish_stats` takes the difference."""
    s = store.backend.stats.snapshot()
    return s.requests, s.bytes_sent, s.bytes_received


def finish_stats(result: TransferResult, remote: Store, before: tuple[int, int, int], started: float) -> None:
    """Fill ``result``'s request and byte counters and its duration since ``before`` / ``started``."""
    after = remote_counters(remote)
    result.requests = after[0] - before[0]
    result.bytes_sent = after[1] - before[1]
    result.bytes_received = after[2] - before[2]
    result.seconds = time.monotonic() - started
