"""Copying a closure of objects between stores: walk, send chunks, send objects.

Every object and chunk read from the source is re-verified before it is stored
(a remote is untrusted); chunks are sent as stored, objects children first, so
a re-run finds only what is still missing. Between two local stores, a source
pack wanted whole is carried whole (:mod:`objstore.storage.packcopy`, checked
where it lands); object storage, and packs wanted in part, take the ranged
reads. Split from :mod:`objstore.transfer.sync`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from objstore.constants import PACK_TARGET
from objstore.errors import CorruptObject, ObjstoreError
from objstore.model.gcintent import lost, overlapped
from objstore.model.inventory import edges
from objstore.model.store import Store
from objstore.storage.backend import LocalBackend
from objstore.storage.ids import ObjectId
from objstore.storage.keys import object_key
from objstore.storage.objects import (
    MetaObject,
    Tree,
)
from objstore.storage.odb import ChunkLocation, decode_verified_run
from objstore.storage.packcopy import claimed_ids, copy_pack_file, local_pack_path
from objstore.storage.packs import index_ids
from objstore.storage.trees import check_tree
from objstore.transfer.sync import HAS_BATCH, RANGE_GAP, RANGE_MAX, RANGES_IN_FLIGHT, Progress, TransferResult, pmap

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
    present: int = 0  # objects found already in ``dst`` (not copied: relied on)


@dataclass(frozen=True)
class Copied:
    """What a :func:`copy_closure` relied on: when it started (this machine's clock) and
    how many objects, chunks and packs it found already in the destination instead of
    copying them. Those may be garbage there that a deleting gc removes before the
    transfer's refs name them: see :func:`survive_gc`."""

    started: float
    relied: int


def _walk(src: Store, dst: Store, roots: Iterable[ObjectId], *, again: bool = False) -> _Missing:
    """Every object reachable from ``roots`` that ``dst`` lacks, and the chunks they name
    (``again``: every object, present or not, as a repair after a gc needs)."""
    missing = _Missing()
    seen: set[ObjectId] = set()
    frontier = list(dict.fromkeys(roots))
    while frontier:
        frontier = [o for o in frontier if o not in seen]
        seen.update(frontier)
        present = [False] * len(frontier) if again else pmap(dst.odb.has_object, frontier)
        need = [o for o, p in zip(frontier, present) if not p]
        missing.present += len(frontier) - len(need)
        loaded = pmap(lambda o: read_object_verified(src, o), need)
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


_scratch = threading.local()  # per fetch thread: the buffer its runs are decoded into, reused


def _verify_run(located: list[tuple[ObjectId, ChunkLocation]], payloads: list[bytes | memoryview], where: str) -> None:
    """Decode and verify every chunk of a fetched range (a run at a time in C when built);
    the decoded bytes are dropped, the stored ones are what is copied."""
    out = getattr(_scratch, "out", None)
    if out is None:
        out = _scratch.out = bytearray()
    try:
        decode_verified_run(located, payloads, lambda loc: f"pack {loc.pack[:16]} at {where}", out)
    except CorruptObject as exc:
        raise CorruptObject(f"{exc.args[0]}; nothing of it was stored", object_id=exc.object_id,
                            expected=exc.expected, actual=exc.actual) from None


def _send_chunks(src: Store, dst: Store, chunk_ids: list[ObjectId], result: TransferResult,
                 pack_target: int, progress: Progress | None) -> None:
    """Copy chunks as stored into new destination packs, verifying each on the way."""
    if not chunk_ids:
        return
    located = src.odb.locate_many(chunk_ids)
    total = sum(loc.stored_len for _, loc in located)
    packs_before = dst.odb.packs_stored
    done = 0
    if pack_target >= PACK_TARGET:
        located, done = _send_whole_packs(src, dst, located, result, total, progress)
    ranges = _plan_ranges(located)

    def fetch(rng: list[tuple[ObjectId, ChunkLocation]]) -> tuple[list[tuple[ObjectId, ChunkLocation]], list[bytes | memoryview]]:
        # Runs in the pool: decoding and hashing release the GIL, so checking
        # overlaps the next reads and the pack writes. The odb reads the range
        # (and finds chunks again if a gc removed the pack meanwhile).
        located, payloads = src.odb.read_stored(rng)
        _verify_run(located, payloads, src.location)
        return located, payloads

    pending = 0
    # The odb seals each full pack on its own thread while the next fills; a smaller
    # pack target (a test and benchmark knob) is reached by sealing here, in line.
    seal_here = pack_target < PACK_TARGET

    def close_pack() -> None:
        nonlocal pending
        if seal_here:
            dst.odb.flush()
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
    dst.odb.flush()
    result.packs += dst.odb.packs_stored - packs_before


# Whole packs copied and verified at once: each holds a pack (up to MAX_PACK_BYTES)
# and its decoded runs in memory, and verifying is what takes the CPU.
# At most one chunk in this many of a pack carried whole may be one the transfer does not need.
WHOLE_PACK_SLACK = 16
WHOLE_PACK_WORKERS = 2


def _send_whole_packs(src: Store, dst: Store, located: list[tuple[ObjectId, ChunkLocation]], result: TransferResult,
                      total: int, progress: Progress | None) -> tuple[list[tuple[ObjectId, ChunkLocation]], int]:
    """Between two local stores, carry over whole every source pack all of whose
    chunks are wanted (:mod:`objstore.storage.packcopy` verifies each where it
    lands); return the chunks still to send and the stored bytes sent."""
    if not isinstance(src.backend, LocalBackend) or not isinstance(dst.backend, LocalBackend):
        return located, 0  # object storage: ranged reads and new packs (closure's usual path)
    by_pack: dict[str, list[tuple[ObjectId, ChunkLocation]]] = {}
    for cid, loc in located:
        by_pack.setdefault(loc.pack, []).append((cid, loc))
    wanted = {cid.raw for cid, _ in located}
    # Whole when (nearly) every chunk of it is wanted. A few others are allowed for
    # stores written before writers read the pending indexes up front (odb.expect_bytes):
    # there each session's pack repeats a chunk an older pack holds (a fine-tune's
    # header), so a push of later sessions to a remote holding the older pack would
    # send every such pack chunk by chunk; carrying that copy too costs little and is
    # what the source holds. Today's writer stores no such copy (test_dedup_sessions).
    whole = [name for name in by_pack
             if (path := local_pack_path(src.backend, name)) is not None
             and (ids := claimed_ids(path)) is not None and len(ids - wanted) <= len(ids) // WHOLE_PACK_SLACK]
    if not whole:
        return located, 0
    new_temp_path = dst.backend.new_temp_path

    def carry(name: str) -> tuple[str, set[bytes] | None]:
        path = local_pack_path(src.backend, name)
        assert path is not None
        try:
            copied = copy_pack_file(path, new_temp_path(), name)
        except FileNotFoundError:
            return name, None  # gone (a gc moved its chunks): sent chunk by chunk, from where they are now
        except CorruptObject as exc:
            raise CorruptObject(f"{exc.args[0]} (in {src.location}); nothing of it was stored", object_id=exc.object_id,
                                expected=exc.expected, actual=exc.actual) from None
        dst.odb.adopt_pack(name, copied.index, copied.path)
        return name, set(index_ids(copied.index))

    done = 0
    carried: set[bytes] = set()
    pool = ThreadPoolExecutor(max_workers=WHOLE_PACK_WORKERS)
    try:
        # Submitted as consumed, so a pause here (a progress callback) pauses the copying.
        futures = [pool.submit(carry, name) for name in whole[:WHOLE_PACK_WORKERS]]
        for i in range(len(whole)):
            name, ids = futures[i].result()
            if i + WHOLE_PACK_WORKERS < len(whole):
                futures.append(pool.submit(carry, whole[i + WHOLE_PACK_WORKERS]))
            if ids is None:
                continue
            carried |= ids
            sent = by_pack[name]
            result.chunks += sum(1 for cid, _ in sent if cid.raw in ids)
            result.chunk_bytes += sum(loc.stored_len for cid, loc in sent if cid.raw in ids)
            done += sum(loc.stored_len for _, loc in sent)
            if progress is not None:
                progress("chunks", done, total)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # after a refusal, no further pack is carried
    return [(cid, loc) for cid, loc in located if cid.raw not in carried], done


def _send_objects(dst: Store, missing: _Missing, result: TransferResult, progress: Progress | None) -> int:
    """Store the missing objects children first, so holding one means holding its closure.
    Returns how many were there already (a create that found its key)."""
    waiting = {oid: {k for k in kids if k in missing.objects and k != oid} for oid, (_, kids) in missing.objects.items()}
    parents: dict[ObjectId, list[ObjectId]] = {}
    for oid, kids in waiting.items():
        for k in kids:
            parents.setdefault(k, []).append(oid)
    ready = [oid for oid, kids in waiting.items() if not kids]
    total = len(waiting)
    written = there = 0
    while ready:
        there += sum(not new for new in pmap(lambda oid: dst.backend.put_if_absent(object_key(oid), missing.objects[oid][0]), ready))
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
    return there


def copy_closure(src: Store, dst: Store, roots: Iterable[ObjectId], result: TransferResult, *,
                 pack_target: int = PACK_TARGET, progress: Progress | None = None, again: bool = False) -> Copied:
    """Make ``dst`` hold everything reachable from ``roots``: chunks, then objects.
    ``again``: copy every object (create-only), not only those ``dst`` lacks."""
    started, reused = time.time(), dst.odb.reused
    src.odb.flush()  # chunks this process logged but has not stored yet
    missing = _walk(src, dst, roots, again=again)
    lacking = _chunks_lacking(dst, missing.chunks)
    _send_chunks(src, dst, lacking, result, min(pack_target, PACK_TARGET), progress)
    dst.odb.flush()
    there = _send_objects(dst, missing, result, progress)
    relied = missing.present + len(missing.chunks) - len(lacking) + there + dst.odb.reused - reused
    return Copied(started, relied)


def survive_gc(src: Store, dst: Store, roots: Iterable[ObjectId], copied: Copied, result: TransferResult, *,
               pack_target: int = PACK_TARGET) -> None:
    """After the refs that make ``roots`` reachable in ``dst`` (the writer's look of
    :mod:`objstore.model.gcintent`): if the copy relied on anything already in ``dst``
    and a gc deleted there meanwhile, copy again from ``src`` what it deleted of
    ``roots``' closure; if that cannot restore it, say so. No request when nothing was
    relied on; one listing when no gc deleted lately."""
    wanted = list(dict.fromkeys(roots))
    if not wanted or not copied.relied or not overlapped(dst, copied.started) or lost(dst, *wanted) is None:
        return
    dst.odb.reload()  # forget the packs that gc deleted, so their chunks are copied again, not taken for hits
    copy_closure(src, dst, wanted, result, pack_target=pack_target, again=True)
    why = lost(dst, *wanted)
    if why is not None:
        raise ObjstoreError(f"a gc at {dst.location} deleted {why} while it was being copied there, and copying it "
                            f"again did not restore it; run the transfer again")


def configured_pack_target() -> int:
    # A test and benchmark knob: smaller packs make "halfway" reachable in a small push.
    text = os.environ.get("OBJSTORE_TRANSFER_PACK_BYTES")
    return max(1, int(text)) if text else PACK_TARGET
