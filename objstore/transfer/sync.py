"""Moving work between two stores, the way git moves commits: push, fetch, pull.

Any two stores will do (a local directory, a bucket, either way round). One
transfer has three phases, in the write order of :mod:`objstore.storage.odb`:

1. **Walk.** From the ids the moved refs point at (versions, registry links,
   aliases, digests, runs), follow the strong edges of
   :func:`objstore.model.inventory.edges` — the one definition gc and fsck use too:
   versions to their tree, trees to subtrees and files, links to the versions
   they point at. Weak edges (a version's parent, a run's inputs and outputs)
   are history, not content, and are not sent: a run may name a version the
   destination never gets. An object the destination already holds is not
   followed further: whoever stored it stored everything it references first.
   Existence is asked in parallel batches; every object read from the source is
   re-hashed before it is used (a remote is untrusted).
2. **Send.** The chunks the destination lacks (asked in batches of its chunk
   index) are read from the source packs in coalesced ranged reads, decoded and
   re-hashed, and appended to new destination packs *as stored* (no
   re-compression), each pack closed at tens of MiB. Then the missing metadata
   objects, children before parents, byte for byte as stored.
3. **Refs, last.** Version refs are create-only, so of two stores pushing a v3
   exactly one wins and the other is refused (:class:`~objstore.errors.NonFastForward`)
   with a message that says to pull. Aliases and runs move by compare-and-swap
   against the value last fetched (remote-tracking state under
   ``remotes/<remote>/refs/…`` in the local store); a concurrent change is
   refused, not overwritten, unless forced.

Resuming needs no bookkeeping: a pack becomes visible only whole (temp file plus
link on disk; a single PUT, or a multipart upload staged under ``tmp/`` and
copied create-only, on object storage), its index after it, objects after their
chunks and refs after their objects. A re-run walks again and finds only what
is still missing. Nothing here takes a file lock.

A transfer of named collections also moves the run refs of the runs that
logged their versions (the weak ``run`` edge), when the source has them, so
``log`` and ``show`` on the other side can say who logged what.

``pull`` = fetch, then integrate: the remote's new versions are added; local
versions the remote never had are *re-based* after them (new version objects
with new index and parent, the same tree and chunks), their aliases, digests,
runs and registry links following. Each renumbering is reported.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from objstore.console import human_bytes, say
from objstore.constants import MAX_REF_BYTES, PACK_TARGET, MiB
from objstore.errors import Conflict, CorruptObject, InvalidName, NonFastForward, NotFound
from objstore.storage.ids import ObjectId
from objstore.model.inventory import edges, run_ref_of
from objstore.model.names import LATEST, REGISTRY_PROJECT, CollectionPath, version_index
from objstore.storage.packs import decode_verified
from objstore.storage.objects import (
    Link,
    MetaObject,
    RunRecord,
    Tree,
    Version,
)
from objstore.storage.keys import object_key
from objstore.storage.odb import ChunkLocation
from objstore.storage.keys import REFS, alias_ref, collection_prefix, digest_ref, parse_ref_key, ref_display, refs_prefix, version_ref
from objstore.model.refs import decode_value, encode_value
from objstore.model.store import Store
from objstore.storage.trees import check_tree
from objstore.model.versions import advance_latest, check_ref

T = TypeVar("T")
R = TypeVar("R")

# Parallel requests for small things (HEAD of an object, GET of a ref): object
# stores answer each in a round trip, so latency, not bandwidth, bounds them.
IO_WORKERS = 16
# Chunk reads from the source: ranges of one pack merged across gaps up to
# RANGE_GAP (reading a few unneeded bytes beats another request) and up to
# RANGE_MAX each; at most RANGES_IN_FLIGHT prefetched, which bounds memory.
RANGE_GAP = 256 * 1024
RANGE_MAX = 16 * MiB
RANGES_IN_FLIGHT = 4
# Chunk ids asked of the destination's index per call.
HAS_BATCH = 100_000

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: stage ``chunks`` counts stored bytes (called
after each pack is stored at the destination), ``objects`` counts objects."""


@dataclass
class TransferResult:
    """What a push, fetch, pull or clone did.

    ``requests``, ``bytes_sent`` and ``bytes_received`` are the remote backend's
    counters over the operation (see :class:`objstore.storage.backend.base.BackendStats`).
    ``renumbered`` lists ``(old, new)`` names of local versions a pull re-based;
    ``kept`` lists refs where both sides changed and the local value was kept.
    """

    direction: str
    remote: str
    chunks: int = 0
    chunk_bytes: int = 0  # stored (encoded) bytes of the chunks moved
    packs: int = 0
    objects: int = 0
    refs: list[str] = field(default_factory=list)
    renumbered: list[tuple[str, str]] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    requests: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (the CLI's ``--json`` shape)."""
        return {
            "direction": self.direction, "remote": self.remote, "chunks": self.chunks, "chunk_bytes": self.chunk_bytes,
            "packs": self.packs, "objects": self.objects, "refs": list(self.refs),
            "renumbered": [{"old": o, "new": n} for o, n in self.renumbered], "kept": list(self.kept),
            "requests": self.requests, "bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received,
            "seconds": round(self.seconds, 3),
        }


# -- small helpers -------------------------------------------------------------

def _pmap(fn: Callable[[T], R], items: Sequence[T], workers: int = IO_WORKERS) -> list[R]:
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


def _norm(raw: bytes | None) -> bytes | None:
    """A ref's value for comparison: absent and tombstone are both 'nothing'."""
    if raw is None:
        return None
    stripped = raw.strip()
    return stripped or None


@dataclass(frozen=True, slots=True)
class RefName:
    """A parsed ref key: ``kind`` is version, alias, digest or run."""

    key: str
    kind: str
    entity: str
    project: str
    name: str  # the collection (empty for runs)
    tail: str  # vN, the alias, the digest hex, or the run id

    @property
    def collection(self) -> CollectionPath:
        return CollectionPath(self.entity, self.project, self.name)


def parse_ref(key: str) -> RefName | None:
    """Parse ``refs/e/p/n/{versions,aliases,digests}/x`` or ``refs/e/p/runs/id``; None otherwise."""
    parsed = parse_ref_key(key)  # the layout is keys'; the version-number rule is versions'
    if parsed is None or (parsed.kind == "version" and version_index(parsed.tail) is None):
        return None
    return RefName(parsed.key, parsed.kind, parsed.entity, parsed.project, parsed.name, parsed.tail)


def selection_prefixes(names: Iterable[str] | None) -> list[str]:
    """Ref prefixes for ``names``: None is everything; ``entity/project`` a project;
    ``entity/project/name`` one collection (a trailing ``:selector`` is ignored)."""
    if not names:
        return [REFS]
    out: list[str] = []
    for name in names:
        text = name.split(":", 1)[0].strip("/")
        parts = text.split("/")
        if len(parts) == 3 and all(parts):
            out.append(collection_prefix(*parts))
        elif len(parts) == 2 and all(parts):
            out.append(refs_prefix(parts[0], parts[1]))
        else:
            raise InvalidName(f"{name!r} names no collection; use entity/project/name or entity/project")
    return sorted(set(out))


def read_refs(store: Store, prefixes: Sequence[str]) -> dict[str, bytes]:
    """Raw values of every ref under ``prefixes`` (tombstones as ``b""``)."""
    keys: list[str] = []
    for prefix in prefixes:
        keys.extend(info.key for info in store.backend.iter_prefix(prefix))
    keys = sorted({k for k in keys if parse_ref(k) is not None})
    values = _pmap(store.refs.read_raw, keys)
    return {k: v for k, v in zip(keys, values) if v is not None}


def read_keys(store: Store, keys: Iterable[str]) -> dict[str, bytes]:
    """Raw values of exactly ``keys`` (absent ones left out)."""
    ordered = sorted(set(keys))
    values = _pmap(store.refs.read_raw, ordered)
    return {k: v for k, v in zip(ordered, values) if v is not None}


def runs_of(store: Store, snapshot: dict[str, bytes]) -> set[str]:
    """The run refs of the runs that logged the versions and links ``snapshot``'s
    version refs hold (their weak ``run`` edge). An entry that cannot be read
    names no run here; the walk reports it."""
    ids = [oid for k, raw in snapshot.items()
           if (r := parse_ref(k)) is not None and r.kind == "version" and (oid := _oid(k, raw)) is not None]

    def run_key(oid: ObjectId) -> str | None:
        try:
            obj, _ = read_object_verified(store, oid)
        except (NotFound, CorruptObject):
            return None
        return run_ref_of(edges(obj).run)

    return {k for k in _pmap(run_key, ids) if k is not None}


def _oid(key: str, raw: bytes | None) -> ObjectId | None:
    return None if raw is None else decode_value(key, raw)


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

    def update(self, values: dict[str, bytes], previous: dict[str, bytes]) -> None:
        changed = [(k, v) for k, v in values.items() if previous.get(k) != v]
        _pmap(lambda kv: self.store.backend.put(self.prefix + kv[0], kv[1]), changed)


# -- reading and verifying objects ------------------------------------------

def read_object_verified(store: Store, oid: ObjectId) -> tuple[MetaObject, bytes]:
    """A metadata object and its stored bytes, after checking it hashes to ``oid``."""
    return store.odb.get_object_stored(oid)  # bounded reads: a remote is untrusted


def _children(obj: MetaObject) -> tuple[list[ObjectId], list[tuple[ObjectId, int]]]:
    """(object ids, (chunk id, raw length)) an object needs: its strong edges only."""
    e = edges(obj)
    return list(e.strong), list(e.chunks)


@dataclass
class _Missing:
    objects: dict[ObjectId, tuple[bytes, list[ObjectId]]] = field(default_factory=dict)  # id -> (stored, children)
    chunks: dict[ObjectId, int] = field(default_factory=dict)  # chunk id -> raw length


def _walk(src: Store, dst: Store, roots: Iterable[ObjectId]) -> _Missing:
    """Every object reachable from ``roots`` that ``dst`` lacks, and the chunks they name."""
    missing = _Missing()
    seen: set[ObjectId] = set()
    frontier = list(dict.fromkeys(roots))
    while frontier:
        frontier = [o for o in frontier if o not in seen]
        seen.update(frontier)
        present = _pmap(dst.odb.has_object, frontier)
        need = [o for o, p in zip(frontier, present) if not p]
        loaded = _pmap(lambda o: read_object_verified(src, o), need)
        nxt: list[ObjectId] = []
        for oid, (obj, stored) in zip(need, loaded):
            if isinstance(obj, Tree):
                check_tree(obj, oid)  # a remote is untrusted: refuse unsafe names before storing anything
            kids, chunks = _children(obj)
            missing.objects[oid] = (stored, kids)
            for cid, n in chunks:
                missing.chunks[cid] = n
            nxt.extend(k for k in kids if k not in seen)
        frontier = nxt
    return missing


def _chunks_lacking(dst: Store, chunks: dict[ObjectId, int]) -> list[ObjectId]:
    ids = list(chunks)
    out: list[ObjectId] = []
    for i in range(0, len(ids), HAS_BATCH):
        batch = ids[i:i + HAS_BATCH]
        out.extend(c for c, has in zip(batch, dst.odb.has_chunks(batch)) if not has)
    return out


def _plan_ranges(located: list[tuple[ObjectId, ChunkLocation]]) -> list[list[tuple[ObjectId, ChunkLocation]]]:
    located.sort(key=lambda cl: (cl[1].pack, cl[1].offset))
    ranges: list[list[tuple[ObjectId, ChunkLocation]]] = []
    for cid, loc in located:
        if ranges:
            first, last = ranges[-1][0][1], ranges[-1][-1][1]
            end = last.offset + last.stored_len
            if loc.pack == last.pack and end <= loc.offset <= end + RANGE_GAP and loc.offset + loc.stored_len - first.offset <= RANGE_MAX:
                ranges[-1].append((cid, loc))
                continue
        ranges.append([(cid, loc)])
    return ranges


def _verify_chunk(cid: ObjectId, loc: ChunkLocation, payload: memoryview, where: str) -> None:
    try:
        decode_verified(cid, loc.codec, loc.raw_len, loc.stored_len, payload, f"pack {loc.pack[:16]} at {where}")
    except CorruptObject as exc:
        raise CorruptObject(f"{exc.args[0]}; nothing of it was stored", object_id=exc.object_id,
                            expected=exc.expected, actual=exc.actual) from None


def _send_chunks(src: Store, dst: Store, chunk_ids: list[ObjectId], result: TransferResult,
                 pack_target: int, progress: Progress | None) -> None:
    """Copy chunks as stored into new destination packs, verifying each on the way."""
    if not chunk_ids:
        return
    located = [(cid, src.odb.locate(cid)) for cid in chunk_ids]
    total = sum(loc.stored_len for _, loc in located)
    ranges = _plan_ranges(located)

    def fetch(rng: list[tuple[ObjectId, ChunkLocation]]) -> tuple[list[tuple[ObjectId, ChunkLocation]], list[bytes | memoryview]]:
        # Runs in the pool: decoding and hashing release the GIL, so checking
        # overlaps the next reads and the pack writes. The odb reads the range
        # (and finds chunks again if a gc removed the pack meanwhile).
        located, payloads = src.odb.read_stored(rng)
        for (cid, loc), payload in zip(located, payloads):
            _verify_chunk(cid, loc, payload, src.location)
        return located, payloads

    pending = 0
    done = 0

    def close_pack() -> None:
        nonlocal pending
        dst.odb.flush()
        result.packs += 1
        pending = 0
        if progress is not None:
            progress("chunks", done, total)

    with ThreadPoolExecutor(max_workers=RANGES_IN_FLIGHT) as pool:
        futures = [pool.submit(fetch, r) for r in ranges[:RANGES_IN_FLIGHT]]
        for i in range(len(ranges)):
            located, payloads = futures[i].result()
            futures[i] = None  # type: ignore[call-overload]  # release the bytes once used
            if i + RANGES_IN_FLIGHT < len(ranges):
                futures.append(pool.submit(fetch, ranges[i + RANGES_IN_FLIGHT]))
            for (cid, loc), payload in zip(located, payloads):  # verified in fetch()
                if dst.odb.add_encoded(cid, loc.codec, loc.raw_len, payload):
                    result.chunks += 1
                    result.chunk_bytes += loc.stored_len
                pending += loc.stored_len
                done += loc.stored_len
                if pending >= pack_target:
                    close_pack()
    if pending:
        close_pack()


def _send_objects(dst: Store, missing: _Missing, result: TransferResult, progress: Progress | None) -> None:
    """Store the missing objects children first, so holding one means holding its closure."""
    waiting = {oid: {k for k in kids if k in missing.objects and k != oid} for oid, (_, kids) in missing.objects.items()}
    parents: dict[ObjectId, list[ObjectId]] = {}
    for oid, kids in waiting.items():
        for k in kids:
            parents.setdefault(k, []).append(oid)
    ready = [oid for oid, kids in waiting.items() if not kids]
    total = len(waiting)
    written = 0
    while ready:
        _pmap(lambda oid: dst.backend.put_if_absent(object_key(oid), missing.objects[oid][0]), ready)
        written += len(ready)
        if progress is not None:
            progress("objects", written, total)
        nxt = []
        for oid in ready:
            for p in parents.get(oid, ()):
                waiting[p].discard(oid)
                if not waiting[p]:
                    nxt.append(p)
        ready = nxt
    if written != total:
        raise CorruptObject("the objects to transfer reference each other in a cycle; the source store is damaged")
    result.objects += written


def copy_closure(src: Store, dst: Store, roots: Iterable[ObjectId], result: TransferResult, *,
                 pack_target: int = PACK_TARGET, progress: Progress | None = None) -> None:
    """Make ``dst`` hold everything reachable from ``roots``: chunks, then objects."""
    src.odb.flush()  # chunks this process logged but has not stored yet
    missing = _walk(src, dst, roots)
    lacking = _chunks_lacking(dst, missing.chunks)
    _send_chunks(src, dst, lacking, result, min(pack_target, PACK_TARGET), progress)
    dst.odb.flush()
    _send_objects(dst, missing, result, progress)


def _pack_target() -> int:
    # A test and benchmark knob: smaller packs make "halfway" reachable in a small push.
    text = os.environ.get("OBJSTORE_TRANSFER_PACK_BYTES")
    return max(1, int(text)) if text else PACK_TARGET


# -- collections in a ref snapshot ------------------------------------------------

@dataclass
class _Coll:
    versions: dict[int, ObjectId] = field(default_factory=dict)
    aliases: dict[str, bytes] = field(default_factory=dict)  # raw, tombstones included
    digests: dict[str, bytes] = field(default_factory=dict)


def _collections(snapshot: dict[str, bytes]) -> dict[CollectionPath, _Coll]:
    out: dict[CollectionPath, _Coll] = {}
    for key, raw in snapshot.items():
        ref = parse_ref(key)
        if ref is None or ref.kind == "run":
            continue
        coll = out.setdefault(ref.collection, _Coll())
        if ref.kind == "version":
            oid = _oid(key, raw)
            if oid is not None:
                coll.versions[version_index(ref.tail)] = oid  # type: ignore[index]
        elif ref.kind == "alias":
            coll.aliases[ref.tail] = raw
        else:
            coll.digests[ref.tail] = raw
    return out


def _runs(snapshot: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in snapshot.items() if (r := parse_ref(k)) is not None and r.kind == "run"}


def _chain(coll: _Coll) -> list[ObjectId]:
    """The versions v0..vK in order, stopping at the first gap."""
    out = []
    while len(out) in coll.versions:
        out.append(coll.versions[len(out)])
    return out


def _add_runs(keys: set[str], tracked: dict[str, bytes], tracking: Tracking,
              *snapshots: tuple[dict[str, bytes], Store]) -> None:
    """Add the run refs ``keys`` to each (snapshot, its store) and to the tracking state:
    a named transfer moves the runs that logged the versions it moves."""
    if not keys:
        return
    for snapshot, store in snapshots:
        snapshot.update(read_keys(store, keys))
    tracked.update(tracking.read_keys(keys))


def _roots(snapshot: dict[str, bytes]) -> list[ObjectId]:
    return [oid for k, raw in snapshot.items() if (oid := _oid(k, raw)) is not None]


def _registry_last(colls: dict[CollectionPath, Any]) -> list[CollectionPath]:
    """Collections with registries last (their links point at the others' versions)."""
    return sorted(colls, key=lambda c: (c.project == REGISTRY_PROJECT, str(c)))


def _remote_stats(store: Store) -> tuple[int, int, int]:
    s = store.backend.stats.snapshot()
    return s.requests, s.bytes_sent, s.bytes_received


def _finish_stats(result: TransferResult, remote: Store, before: tuple[int, int, int], started: float) -> None:
    after = _remote_stats(remote)
    result.requests = after[0] - before[0]
    result.bytes_sent = after[1] - before[1]
    result.bytes_received = after[2] - before[2]
    result.seconds = time.monotonic() - started


# -- push -----------------------------------------------------------------------------

def push(local: Store, remote: Store, *, tracking: Tracking, names: Iterable[str] | None = None, force: bool = False,
         progress: Progress | None = None, remote_label: str | None = None) -> TransferResult:
    """Send what ``remote`` lacks of ``names`` (all collections and runs if None), then move its refs.

    Version refs only ever extend the remote's history: a local vN that differs
    from the remote's vN raises NonFastForward before anything is sent. Aliases
    and runs move by CAS against the value last fetched; one that changed on both
    sides raises NonFastForward unless ``force`` (versions are never forced).
    """
    started = time.monotonic()
    before = _remote_stats(remote)
    label = remote_label or remote.location
    result = TransferResult("push", label)
    prefixes = selection_prefixes(names)
    mine = read_refs(local, prefixes)
    if names and not mine:
        raise NotFound(f"nothing to push: no refs under {', '.join(prefixes)} in {local.location}")
    theirs = read_refs(remote, prefixes)
    tracked = tracking.read_all(prefixes)
    if names:
        _add_runs(runs_of(local, mine), tracked, tracking, (mine, local), (theirs, remote))

    my_colls, their_colls = _collections(mine), _collections(theirs)
    refused: list[tuple[CollectionPath, int]] = []
    plan_versions: dict[CollectionPath, list[tuple[int, ObjectId]]] = {}
    for coll, c in my_colls.items():
        theirs_c = their_colls.get(coll, _Coll())
        todo = []
        for idx, oid in sorted(c.versions.items()):
            other = theirs_c.versions.get(idx)
            if other is None:
                todo.append((idx, oid))
            elif other != oid:
                refused.append((coll, idx))
        plan_versions[coll] = todo
    if refused:
        listed = ", ".join(f"{coll}:v{idx}" for coll, idx in refused[:5]) + (f" and {len(refused) - 5} more" if len(refused) > 5 else "")
        first, first_idx = refused[0]
        raise NonFastForward(
            version_ref(first.entity, first.project, first.name, first_idx), None, None,
            f"push refused: {label} has different versions at {listed} (logged elsewhere); "
            f"run 'objstore pull' to re-base your versions after them, then push again",
        )

    # Movable refs (aliases except latest, runs): decide each against what we last fetched.
    moves: list[tuple[str, bytes | None, bytes]] = []  # key, expected raw on the remote, new raw
    diverged: list[str] = []
    for key, raw in mine.items():
        ref = parse_ref(key)
        if ref is None or ref.kind not in ("alias", "run") or (ref.kind == "alias" and ref.tail == LATEST):
            continue
        r, t = theirs.get(key), tracked.get(key)
        if _norm(raw) == _norm(r) or _norm(raw) == _norm(t):
            continue  # the same already, or unchanged here since the fetch (the remote moved it)
        if _norm(r) == _norm(t) or force:
            moves.append((key, r, raw if _norm(raw) else b""))
        else:
            diverged.append(key)
    if diverged:
        raise NonFastForward(
            diverged[0], tracked.get(diverged[0]), theirs.get(diverged[0]),
            f"push refused: {', '.join(ref_display(d) for d in diverged[:3])}{' …' if len(diverged) > 3 else ''} "
            f"changed on {label} since your last fetch; run 'objstore pull' first (or push --force to overwrite)",
        )

    roots = [oid for todo in plan_versions.values() for _, oid in todo]
    for key, _, new in moves:
        if (oid := _oid(key, new)) is not None:
            roots.append(oid)
    for coll, c in my_colls.items():
        for hexd, raw in c.digests.items():
            if hexd not in their_colls.get(coll, _Coll()).digests and (oid := _oid(digest_ref(coll.entity, coll.project, coll.name, hexd), raw)):
                roots.append(oid)
    copy_closure(local, remote, roots, result, pack_target=_pack_target(), progress=progress)

    # Refs, last. Versions in order, create-only: losing a race is a refusal.
    why = f"push from {local.refs.who}"
    # Tracking records only what we know the remote holds *and* we hold too:
    # recording a remote change we have not pulled would make the next pull
    # think it was already seen, and the next push overwrite it.
    final = {k: v for k, v in theirs.items() if _norm(mine.get(k)) == _norm(v)}
    for coll in _registry_last(plan_versions):
        todo = plan_versions[coll]
        for idx, oid in todo:
            key = version_ref(coll.entity, coll.project, coll.name, idx)
            if not remote.refs.create(key, oid, why):
                actual = remote.refs.read_raw(key)
                if _oid(key, actual) != oid:
                    raise NonFastForward(
                        key, None, actual,
                        f"push refused: {coll}:v{idx} was just pushed to {label} from elsewhere; "
                        f"run 'objstore pull' to re-base your versions after it, then push again",
                    )
            else:
                result.refs.append(key)
            final[key] = encode_value(oid)
        for hexd, raw in my_colls[coll].digests.items():
            key = digest_ref(coll.entity, coll.project, coll.name, hexd)
            oid = _oid(key, raw)
            if key not in theirs and oid is not None and remote.refs.create(key, oid, why):
                result.refs.append(key)
                final[key] = raw
        if todo:
            advance_latest(remote, coll, max(idx for idx, _ in todo))
            latest = alias_ref(coll.entity, coll.project, coll.name, LATEST)
            value = remote.refs.read_raw(latest)
            if value is not None:
                final[latest] = value
    for key, expected, new in moves:
        try:
            if force:
                remote.refs.set(key, _oid(key, new), why + " (forced)")
            else:
                remote.refs.set_if_equals(key, expected, _oid(key, new), why)
        except Conflict as exc:
            raise NonFastForward(
                key, expected, exc.actual,
                f"push refused: {ref_display(key)} changed on {label} while pushing; run 'objstore pull' first",
            ) from None
        result.refs.append(key)
        final[key] = new
    tracking.update(final, tracked)
    _finish_stats(result, remote, before, started)
    return result


# -- fetch and pull ---------------------------------------------------------------------

def fetch(local: Store, remote: Store, *, tracking: Tracking, names: Iterable[str] | None = None,
          progress: Progress | None = None, remote_label: str | None = None) -> tuple[TransferResult, dict[str, bytes], dict[str, bytes]]:
    """Store everything the remote's refs reach that ``local`` lacks, and record
    the remote's refs as tracking state. Local refs are not touched.

    Returns (result, the remote's refs, the tracking state before this fetch).
    """
    started = time.monotonic()
    before = _remote_stats(remote)
    result = TransferResult("fetch", remote_label or remote.location)
    prefixes = selection_prefixes(names)
    theirs = read_refs(remote, prefixes)
    tracked = tracking.read_all(prefixes)
    if names:
        _add_runs(runs_of(remote, theirs), tracked, tracking, (theirs, remote))
    copy_closure(remote, local, _roots(theirs), result, pack_target=_pack_target(), progress=progress)
    _check_taken_refs(local, theirs, result.remote)
    tracking.update(theirs, tracked)
    result.refs = sorted(k for k, v in theirs.items() if tracked.get(k) != v)
    _finish_stats(result, remote, before, started)
    return result, theirs, tracked


def _check_taken_refs(local: Store, theirs: dict[str, bytes], label: str) -> None:
    """Refuse a remote whose refs break the rules a reader relies on: a name no
    objstore writes (an alias ``v3``), or an object that belongs elsewhere (an
    alias holding another collection's version). Checked against the objects
    just fetched (verified), before any tracking state or local ref is written,
    so a refused fetch, pull or clone changes no ref here."""
    for key, raw in sorted(theirs.items()):
        try:
            check_ref(local, key, _oid(key, raw))
        except CorruptObject as exc:
            raise CorruptObject(f"{label}: {exc.args[0]}; nothing was changed here", object_id=exc.object_id) from exc


def _entry(store: Store, oid: ObjectId) -> Version | Link:
    obj = store.odb.get_object(oid)
    if not isinstance(obj, (Version, Link)):
        raise CorruptObject(f"object {oid.hex[:16]} in a collection is neither a version nor a link", object_id=oid.hex)
    return obj


def _check_entry(store: Store, coll: CollectionPath, idx: int, oid: ObjectId, label: str) -> None:
    """A remote's version ref must hold a version (or link) of that collection with that number."""
    entry = _entry(store, oid)
    where = entry.registry if isinstance(entry, Link) else f"{entry.entity}/{entry.project}/{entry.name}"
    if where != str(coll) or entry.index != idx:
        raise CorruptObject(
            f"{label} has {coll}:v{idx} pointing at {where}:v{entry.index} (object {oid.hex[:16]}); "
            f"refusing to take it, nothing was changed here", object_id=oid.hex,
        )


def _set_ref(store: Store, key: str, new: ObjectId | None, why: str) -> bool:
    """Make local ``key`` hold ``new`` (create-only if absent, else CAS from its value). True if it changed."""
    raw = store.refs.read_raw(key)
    if _norm(raw) == _norm(encode_value(new)):
        return False
    if raw is None and new is not None:
        if store.refs.create(key, new, why):
            return True
        raw = store.refs.read_raw(key)
    store.refs.set_if_equals(key, raw, new, why)
    return True


def _move_ref(store: Store, key: str, decided_on: bytes | None, new: ObjectId | None, why: str) -> bool:
    """Move local ``key`` from ``decided_on`` (its raw value in the snapshot pull
    decided from) to ``new``; True if it changed. Conflict if another writer of
    this store moved it since: its move is newer than the snapshot and wins."""
    if _norm(decided_on) == _norm(encode_value(new)):
        return False
    if decided_on is None and new is not None:
        if store.refs.create(key, new, why):
            return True
        raise Conflict(key, None, store.refs.read_raw(key))
    store.refs.set_if_equals(key, decided_on, new, why)
    return True


def pull(local: Store, remote: Store, *, tracking: Tracking, names: Iterable[str] | None = None,
         progress: Progress | None = None, remote_label: str | None = None) -> TransferResult:
    """Fetch, then bring the remote's new versions, aliases and runs into ``local``.

    Local versions the remote does not have are re-based after the remote's
    (renumbered; the same tree and chunks); each renumbering is in
    ``result.renumbered`` and said on stderr. An alias or run changed on both
    sides keeps its local value and is listed in ``result.kept``.
    """
    fetched, theirs, tracked = fetch(local, remote, tracking=tracking, names=names, progress=progress,
                                     remote_label=remote_label)
    result = replace(fetched, direction="pull", refs=[])
    label = result.remote
    why = f"pull from {label}"
    prefixes = selection_prefixes(names)
    mine = read_refs(local, prefixes)
    run_keys: set[str] = set()
    if names:
        run_keys = set(_runs(theirs)) | runs_of(local, mine)
        mine.update(read_keys(local, run_keys))
    my_colls, their_colls = _collections(mine), _collections(theirs)
    remap: dict[ObjectId, ObjectId] = {}  # old local version/link id -> its re-based id

    for coll in _registry_last({**my_colls, **their_colls}):
        mine_c, theirs_c = my_colls.get(coll, _Coll()), their_colls.get(coll, _Coll())
        local_chain, remote_chain = _chain(mine_c), _chain(theirs_c)
        for idx, oid in enumerate(remote_chain):
            _check_entry(local, coll, idx, oid, label)
        k = 0
        while k < min(len(local_chain), len(remote_chain)) and local_chain[k] == remote_chain[k]:
            k += 1
        new_chain = list(remote_chain) if len(remote_chain) > k else list(local_chain[:k])
        # Contents re-based by this pull: an entry with one of them is a copy an
        # interrupted pull already made. (Equal content the remote logged on its own
        # stays a version of its own, as it would if both were logged here.)
        held: dict[tuple[str, bytes], ObjectId] = {}
        # Re-base local-only entries after the remote's (or keep them, rewritten
        # only if a link's target was itself renumbered).
        for old_id in local_chain[k:]:
            entry = _entry(local, old_id)
            key = _content_key(entry, remap)
            if old_id in new_chain or key in held:
                # The remote's own version, or a copy an interrupted pull already
                # re-based: taken once, and whatever named it follows its copy.
                if held.get(key, old_id) != old_id:
                    remap[old_id] = held[key]
                continue
            idx = len(new_chain)
            if isinstance(entry, Version):
                rebased: Version | Link = replace(entry, index=idx, parent=new_chain[-1] if new_chain else None)
            else:
                target = remap.get(entry.target, entry.target)
                name = entry.target_name
                if target != entry.target:
                    tv = _entry(local, target)
                    assert isinstance(tv, Version)
                    name = f"{tv.entity}/{tv.project}/{tv.name}:v{tv.index}"
                rebased = replace(entry, index=idx, target=target, target_name=name)
            new_id = local.odb.put_object(rebased) if rebased != entry else old_id
            if new_id != old_id:
                remap[old_id] = new_id
            if idx != entry.index:
                result.renumbered.append((f"{coll}:v{entry.index}", f"{coll}:v{idx}"))
            new_chain.append(new_id)
            held[key] = new_id
        _follow_content(local, mine_c, new_chain, held, remap)
        creates, overwrites = _ref_write_order(len(local_chain), len(new_chain))
        for idx in creates:
            key = version_ref(coll.entity, coll.project, coll.name, idx)
            if _set_ref(local, key, new_chain[idx], why):
                result.refs.append(key)
        # Our aliases and digests move to the re-based copies before the version refs
        # they named are overwritten, so none ever names an entry no ref holds.
        _repoint_local(local, coll, mine_c, remap, why, result)
        for idx in overwrites:
            key = version_ref(coll.entity, coll.project, coll.name, idx)
            if _set_ref(local, key, new_chain[idx], why):
                result.refs.append(key)
        # Digests: the remote's as they are; ours re-pointed at re-based ids.
        for hexd, raw in theirs_c.digests.items():
            key = digest_ref(coll.entity, coll.project, coll.name, hexd)
            if key not in mine and (oid := _oid(key, raw)) is not None and local.refs.create(key, oid, why):
                result.refs.append(key)
        for hexd, raw in mine_c.digests.items():
            key = digest_ref(coll.entity, coll.project, coll.name, hexd)
            oid = _oid(key, raw)
            if oid in remap and _set_ref(local, key, remap[oid], why):
                result.refs.append(key)
        if new_chain:
            advance_latest(local, coll, len(new_chain) - 1)
        # Aliases (latest moves by itself above).
        for alias in sorted(set(mine_c.aliases) | set(theirs_c.aliases)):
            if alias == LATEST:
                continue
            key = alias_ref(coll.entity, coll.project, coll.name, alias)
            l_raw, r_raw, t_raw = mine.get(key), theirs.get(key), tracked.get(key)
            if _norm(l_raw) == _norm(r_raw):
                continue
            if _norm(l_raw) == _norm(t_raw):  # unchanged here since the last fetch: take theirs
                target = _oid(key, r_raw)
            else:
                if _norm(r_raw) != _norm(t_raw):
                    result.kept.append(key)
                current = _oid(key, l_raw)
                target = remap.get(current, current) if current is not None else None
                if target == current:
                    continue
            try:
                if _move_ref(local, key, l_raw, target, why):
                    result.refs.append(key)
            except Conflict:  # moved here while we pulled: as if seen, changed on both sides
                if key not in result.kept:
                    result.kept.append(key)

    # Runs: take the remote's unless changed here too; then re-point local runs at re-based versions.
    for key, r_raw in _runs(theirs).items():
        l_raw, t_raw = mine.get(key), tracked.get(key)
        if _norm(l_raw) == _norm(r_raw):
            continue
        if l_raw is None or _norm(l_raw) == _norm(t_raw):
            try:
                if _move_ref(local, key, l_raw, _oid(key, r_raw), why):
                    result.refs.append(key)
            except Conflict:  # the run moved here while we pulled: the local record wins
                result.kept.append(key)
        elif _norm(r_raw) != _norm(t_raw):
            result.kept.append(key)
    if remap:
        hex_map = {o.hex: n.hex for o, n in remap.items()}
        for key in _runs({**read_refs(local, prefixes), **read_keys(local, run_keys)}):
            _remap_run(local, key, hex_map, why)
    # A kept ref stays "not seen" in the tracking state, so the next push is
    # still refused for it unless forced: the remote's value is not overwritten by accident.
    for key in result.kept:
        tracking.forget(key, tracked.get(key))
    for old, new in result.renumbered:
        say(f"renumbered {old} -> {new.rsplit(':', 1)[1]} (re-based after the versions pulled from {label})")
    for key in result.kept:
        say(f"kept local {ref_display(key)}: it changed both here and on {label}; push --force to overwrite theirs")
    return result


def _content_key(entry: Version | Link, remap: dict[ObjectId, ObjectId]) -> tuple[str, bytes]:
    """What makes two entries of one collection the same content: a version's tree,
    a link's (re-based) target."""
    if isinstance(entry, Version):
        return ("tree", entry.tree.raw)
    return ("link", remap.get(entry.target, entry.target).raw)


def _follow_content(store: Store, coll: _Coll, chain: list[ObjectId], held: dict[tuple[str, bytes], ObjectId],
                    remap: dict[ObjectId, ObjectId]) -> None:
    """Point ``remap`` at the new chain's entry for every alias or digest target of
    ``coll`` that the chain no longer holds (an interrupted pull overwrote its
    version ref) but whose content it does."""
    in_chain = set(chain)
    for raw in (*coll.aliases.values(), *coll.digests.values()):
        try:
            oid = _oid("", raw) if _norm(raw) else None
            if oid is None or oid in in_chain or oid in remap:
                continue
            key = _content_key(_entry(store, oid), remap)
        except (NotFound, CorruptObject):
            continue
        if key in held:
            remap[oid] = held[key]


def _ref_write_order(held: int, total: int) -> tuple[list[int], list[int]]:
    """The order in which pull writes version refs v0..v<total-1> over a collection
    holding v0..v<held-1>, so that a crash at any moment leaves the numbering dense
    and every local version held by some ref: first the new numbers, lowest first
    (each one's predecessor exists), then the overwritten ones, highest first (a
    local version only moves up, so its new ref exists before its old one goes)."""
    return list(range(held, total)), list(range(min(held, total) - 1, -1, -1))


def _repoint_local(store: Store, coll: CollectionPath, mine: _Coll, remap: dict[ObjectId, ObjectId], why: str,
                   result: TransferResult) -> None:
    """Move this store's aliases and digest refs of ``coll`` that name a re-based
    entry to its copy (the remote's aliases are taken later, once all is in place)."""
    # latest too: it stays on the newest local entry, which only moves up.
    refs = [(alias_ref(coll.entity, coll.project, coll.name, a), raw) for a, raw in mine.aliases.items()]
    refs += [(digest_ref(coll.entity, coll.project, coll.name, d), raw) for d, raw in mine.digests.items()]
    for key, raw in refs:
        try:
            oid = _oid(key, raw)
        except CorruptObject:
            continue
        if oid in remap and _set_ref(store, key, remap[oid], why):
            result.refs.append(key)


def _remap_run(store: Store, key: str, hex_map: dict[str, str], why: str) -> None:
    for _ in range(100):
        raw = store.refs.read_raw(key)
        oid = _oid(key, raw)
        if oid is None:
            return
        run = store.odb.get_object(oid)
        if not isinstance(run, RunRecord):
            return
        new = replace(run, inputs=tuple(hex_map.get(i, i) for i in run.inputs),
                      outputs=tuple(hex_map.get(o, o) for o in run.outputs))
        if new == run:
            return
        try:
            store.refs.set_if_equals(key, raw, store.odb.put_object(new), why + " (versions re-based)")
            return
        except Conflict:
            continue


def describe(result: TransferResult) -> str:
    """One line saying what a transfer did."""
    moved = f"{result.chunks} chunks ({human_bytes(result.chunk_bytes)} in {result.packs} packs), {result.objects} objects"
    refs = f"{len(result.refs)} refs"
    verb = {"push": "pushed", "fetch": "fetched", "pull": "pulled", "clone": "cloned"}.get(result.direction, result.direction)
    return f"{verb} {moved}, {refs} {'to' if result.direction == 'push' else 'from'} {result.remote}"
