"""``gc``: drop what no ref or reflog reaches, safely while writers run.

Reachable = everything reached along strong edges (:func:`objstore.model.inventory.reach`,
the definition transfer and fsck use too) from every live ref and every object
any reflog entry names (so a moved alias or an old run record keeps its target
until its reflog goes), and from every remote-tracking ref
(``remotes/<name>/refs/…``): what ``fetch`` stored for a later ``pull`` stays
until the tracking ref moves on. A deleted version is no longer kept by the
reflog entries that name it (:func:`objstore.model.inventory.deleted_entries`).
A version kept *only* by tracking refs (deleted here while a remote still held
it when last seen) is named in ``GcReport.tracked_only``, so a user learns why
its bytes stay and which remote to push the deletion to or fetch from.

Never delete on uncertainty: an object gc cannot decode keeps everything its
bytes name; if what some ref reaches cannot be learned at all (an object of its
closure missing or unreadable), this gc marks and deletes nothing and says why
in ``GcReport.held`` (run fsck). One damaged object never stops gc from running.

Leftovers: files under ``tmp/`` (a writer's partial pack, a staged upload) older
than the grace period belong to writers that died; gc removes them.

Safety while other processes write (they store chunks, then packs, then
objects, then refs — :mod:`objstore.storage.odb`):

- Nothing younger than ``grace_seconds`` (by the backend's modification time)
  is ever considered garbage: a writer that stored chunks but not yet its
  version loses nothing.
- Two phases. Phase 1 only *marks*: an unreachable pack gets
  ``gc/marked/<pack>``, unreachable loose objects are listed in one
  ``gc/objects/<time>-<rand>`` file. Phase 2, in a later gc once a mark is
  older than the grace period, re-checks against a fresh mark of what is
  reachable *now*: a marked pack is deleted only if every chunk in it that is
  reachable now has a copy in a pack that stays; otherwise its mark is dropped
  (something started using it again). A marked pack whose index this run could
  not read (merged into a new index file by a compaction between gc's listing
  and its read, or damaged) is never deleted: it stays marked for a later run. Marked objects are deleted only if still
  unreachable. With ``grace_seconds=0`` both phases happen in one run — only for
  when no writer can be running.
- A second look right before deleting. What gc reached was computed from the
  refs read at its start, and a run on a large store takes minutes. A writer
  that logs again the bytes of a deleted collection meanwhile writes file and
  tree objects that exist already (create-only: "already there" is success) and
  the very same pack (same chunks, same order; it lifts the mark), then its
  version ref: all of it garbage by the first look, so gc deleted what the new
  version names (``test_gc_deleting_while_a_writer_stores_the_same_pack_*``
  lost its tree and its pack). So just before its deletes gc reads the refs
  again, and the reflog entries written since, walks only what is new, and
  keeps (unmarked) what that reaches; if that walk cannot tell, nothing due is
  deleted. The window left, that read to the deletes, gc cannot close alone
  (a writer's "already there" leaves no trace gc could see): before that second
  look gc writes its intent (``gc/deleting/…``), and marks it done after its last
  delete; a writer that relied on bytes already stored looks for intents after
  its version ref, waits for a running gc (bounded: a dead gc's intent goes
  stale), and stores again what that gc deleted of its version
  (:mod:`objstore.model.gcintent`; Dekker's order: one of the two sees the other;
  ``test_gc_deleting_while_a_writer_logs_in_its_last_window_*``). The writers
  that look: ``commit_draft`` and ``upsert_artifact``'s part (a part ref is a
  root like a version's), and every transfer into a store (fetch and pull, push
  to a remote, the parts they carry): a transfer skips what the destination holds
  already, so it relies on bytes there just as a re-log does, looks after its refs
  (tracking, version or part refs) and copies again from its source what a gc
  there deleted (:func:`objstore.transfer.closure.survive_gc`;
  ``test_gc_deleting_while_a_transfer_lands_in_its_last_window``). Two writers need
  no look. ``link_model`` names a version it resolved through a live ref, so every
  gc that looked before the link's ref existed still saw that version reached; it
  is deleted only if its source is deleted meanwhile, then marked by one gc and
  deleted by a later one after the grace period — a link whose resolve-to-ref
  window spans the grace period, or the user's own deletion racing the link (with
  ``grace_seconds=0`` no writer may run at all). ``finish_artifact`` lays the
  parts' trees into a version the parts' refs keep reachable throughout: it
  clears them (``clear_parts``) only after ``commit_draft`` wrote, and looked
  after, the version's ref.
- A pack that is mostly garbage (``GC_REWRITE_GARBAGE_FRACTION`` of its stored
  bytes) is rewritten: its live chunks are copied, verified, into a new pack
  (create-only, index written), and only then is the old pack marked.
- Repacking (:mod:`objstore.maintenance.repack`) marks the small packs it
  copied with this very mark; phase 2 treats them like any marked pack (every
  reachable chunk in them has its copy in a pack that stays, so they go).

Deletion order is the reverse of the write order: the consolidated index files
covering a pack are rewritten without it, then its ``.idx`` goes, then the pack,
so no reader learns of a pack that is about to vanish. Packs covered by index
files count like packs with an ``.idx``; after its phases gc merges the ``.idx``
files left uncovered (:func:`objstore.storage.chunkindex.compact`) — only on a
store of format 2 or later: a format-1 store gets no index file, so the releases
that know only format 1 still find every pack's ``.idx``.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypedDict

import msgpack
import numpy as np

from objstore.constants import GC_GRACE_SECONDS, GC_REWRITE_GARBAGE_FRACTION
from objstore.errors import NotFound, ObjstoreError
from objstore.model.gcintent import Intent, announce, withdraw
from objstore.model.inventory import deleted_entries, reach
from objstore.model.store import Store
from objstore.storage.backend import KeyInfo
from objstore.storage.chunkindex import IndexListing, compact, drop_packs, read_all_indexes
from objstore.storage.ids import ChunkKey, ObjectId, chunk_key
from objstore.storage.keys import (
    GC_MARKED,
    GC_MARKED_OBJECTS,
    LOGS,
    OBJECTS,
    PACKS,
    REFS,
    REMOTES,
    TMP,
    idx_key,
    idx_name_of,
    index_file_name_of,
    marked_objects_key,
    marked_pack_key,
    marked_pack_name_of,
    object_hex_of,
    object_key,
    pack_key,
    pack_name_of,
    tracking_key_parts,
)
from objstore.storage.objects import Version
from objstore.storage.packs import decode_verified, entry_id, index_ids

MARKED_PACKS = GC_MARKED
MARKED_OBJECTS = GC_MARKED_OBJECTS


@dataclass(frozen=True, slots=True)
class GcReport:
    """What one gc did (or, with ``dry_run``, would do)."""

    dry_run: bool
    reachable_objects: int
    reachable_chunks: int
    packs_marked: int
    packs_rewritten: int
    chunks_copied: int
    packs_deleted: int
    packs_unmarked: int
    objects_marked: int
    objects_deleted: int
    bytes_marked: int  # freed by a later gc, once the marks are older than the grace period
    bytes_freed: int  # freed by this run (deleted packs, indexes and objects, minus copies written)
    temp_files_deleted: int = 0  # leftovers of dead writers under tmp/
    damaged_objects: tuple[str, ...] = ()  # reached but undecodable: what their bytes name was kept
    held: str | None = None  # why nothing was marked or deleted, if so (run fsck)
    # (remote, version label, logical bytes) of each version kept only because a
    # remote-tracking ref still names it, sorted.
    tracked_only: tuple[tuple[str, str, int], ...] = ()
    # Garbage this run had to leave for the grace period: unreachable but younger
    # than it (``young``: a gc after ``young_due`` marks the first of it), or marked
    # and the mark younger than it (``pending``: a gc after ``pending_due`` deletes
    # the first of it).
    bytes_young: int = 0
    bytes_pending: int = 0
    young_due: float | None = None
    pending_due: float | None = None

    def to_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__slots__}


@dataclass(frozen=True, slots=True)
class Reachable:
    objects: frozenset[ObjectId]
    chunks: frozenset[ChunkKey]
    damaged: tuple[tuple[ObjectId, str], ...] = ()
    unknown: tuple[tuple[ObjectId, str], ...] = ()
    tracked_only: tuple[tuple[str, str, int], ...] = ()  # see GcReport.tracked_only


def mark_reachable(store: Store, known: Callable[[], set[bytes]] | None = None,
                   visited: Callable[[int], None] | None = None) -> Reachable:
    """Everything reachable from refs (strictly), reflogs and tracking refs (if
    still there). ``known()`` lists every stored id, for salvaging what an
    undecodable object names (see :func:`objstore.model.inventory.reach`)."""
    roots = {oid for _, oid in store.refs.iter_refs(REFS)}
    deleted = deleted_entries(store)
    # A deleted version's reflog entries keep it no longer (inventory.deleted_entries).
    weak = (set(store.refs.iter_reflog_targets()) - deleted) - roots
    r = reach(store, roots, weak, known=known, visited=visited)
    # Tracking refs are walked apart (usually they name what local refs reach
    # already, so this walks nothing), to tell the user what they alone keep.
    tracking = _tracking_targets(store)
    extra = set(tracking) - r.objects
    if not extra:
        return Reachable(r.objects, r.chunks, r.damaged, r.unknown)
    t = reach(store, (), extra, known=known, visited=visited)
    return Reachable(r.objects | t.objects, r.chunks | t.chunks, r.damaged + t.damaged, r.unknown + t.unknown,
                     # only what was deleted here: a version fetched and not yet pulled is kept on purpose
                     _tracked_versions(store, {oid: tracking[oid] for oid in extra & deleted}))


def _tracked_versions(store: Store, held: dict[ObjectId, set[str]]) -> tuple[tuple[str, str, int], ...]:
    """(remote, label, logical bytes) of the versions among ``held`` (kept by those remotes' tracking refs only)."""
    out = []
    for oid, remotes in held.items():
        try:
            obj = store.odb.get_object(oid)
        except ObjstoreError:
            continue  # gone or damaged: nothing of it to explain (fsck reports damage)
        if isinstance(obj, Version):
            out += [(remote, obj.label, obj.size) for remote in remotes]
    return tuple(sorted(out))


def _tracking_targets(store: Store) -> dict[ObjectId, set[str]]:
    """Objects named by remote-tracking refs, with the remotes naming each: weak
    roots, like reflog entries (kept if present, not required, since tracking
    state is only a cache)."""
    out: dict[ObjectId, set[str]] = {}
    # Where fetch records a remote's refs (objstore.transfer.remotes, a layer above this one).
    for info in store.backend.iter_prefix(REMOTES):
        tracked = tracking_key_parts(info.key)
        if tracked is None or info.size == 0:
            continue
        try:
            oid = store.refs.read(info.key)
        except ObjstoreError:
            continue  # a damaged tracking ref protects nothing; fetch rewrites it
        if oid is not None:
            out.setdefault(oid, set()).add(tracked[0])
    return out


@dataclass(frozen=True, slots=True)
class _Listing:
    """What the store held when this gc listed it, before marking anything."""

    packs: dict[str, KeyInfo]  # pack name -> the .pack key's listing
    idx_sizes: dict[str, int]  # pack name -> size of its .idx
    objects: dict[ObjectId, KeyInfo]  # loose objects
    indexes: dict[str, np.ndarray]  # pack name -> its decoded index (packs without a usable one are left alone)
    unlisted: frozenset[str] = frozenset()  # packs an index names that the listing did not show

    def known(self) -> set[bytes]:
        """Every id stored, for salvaging what an undecodable object names."""
        ids = {o.raw for o in self.objects}
        for index in self.indexes.values():
            ids.update(index_ids(index))
        return ids


class _Counts(TypedDict):
    """The running counts of one gc run: the GcReport fields of the same names."""

    packs_marked: int
    packs_rewritten: int
    chunks_copied: int
    packs_deleted: int
    packs_unmarked: int
    objects_marked: int
    objects_deleted: int
    bytes_marked: int
    bytes_freed: int
    bytes_young: int
    bytes_pending: int


@dataclass(slots=True)
class _Run:
    """One gc run's fixed inputs and its running counts."""

    store: Store
    dry_run: bool
    start: float
    grace_seconds: float
    reach: Reachable
    listing: _Listing
    progress: Callable[[str, int, int], None]
    logs_read: frozenset[str] = frozenset()  # reflog entry keys listed before ``reach`` was computed
    intent: Intent | None = None  # this gc's "deleting now", written before its first second look
    counts: _Counts = field(default_factory=lambda: _Counts(
        packs_marked=0, packs_rewritten=0, chunks_copied=0, packs_deleted=0, packs_unmarked=0,
        objects_marked=0, objects_deleted=0, bytes_marked=0, bytes_freed=0, bytes_young=0, bytes_pending=0))
    due: dict[str, float] = field(default_factory=dict)  # young / pending -> earliest due time

    def old(self, mtime: float) -> bool:
        # grace 0: the caller knows no writer runs, so marks made now are due now.
        return self.grace_seconds == 0 or self.start - mtime >= self.grace_seconds

    def waiting(self, kind: str, size: int, mtime: float) -> None:
        """Garbage (``young``) or a mark (``pending``) of ``size`` bytes left for the grace period."""
        self.counts["bytes_young" if kind == "young" else "bytes_pending"] += size
        self.due[kind] = min(self.due.get(kind, mtime + self.grace_seconds), mtime + self.grace_seconds)


def collect_garbage(store: Store, *, grace_seconds: float = GC_GRACE_SECONDS, dry_run: bool = False,
                    now: float | None = None, progress: Callable[[str, int, int], None] | None = None) -> GcReport:
    """Run one gc over ``store`` (see the module docstring for the guarantees).

    ``progress(stage, done, total)``: stage ``objects`` counts objects reached
    (``total``: how many are stored, so reaching stops at or below it), then
    ``packs`` the packs looked at for marking."""
    if grace_seconds < 0:
        from objstore.errors import InvalidInput

        raise InvalidInput("the grace period cannot be negative; pass 0 or more seconds")
    start = time.time() if now is None else now
    # List what exists *before* marking: anything stored after this listing is
    # simply not considered, and anything listed but referenced by a ref written
    # after we read the refs is younger than the grace period.
    listing = _list_stored(store)
    # Reflog entries are create-only: the second look before deleting reads only those listed after this.
    logs_read = frozenset(info.key for info in store.backend.iter_prefix(LOGS))
    tell = progress or (lambda stage, done, total: None)
    n_objects = len(listing.objects)
    tell("objects", 0, n_objects)
    reachable = mark_reachable(store, listing.known, lambda n: tell("objects", min(n, n_objects), n_objects))
    tell("objects", n_objects, n_objects)
    run = _Run(store, dry_run, start, grace_seconds, reachable, listing, tell, logs_read)
    damaged = tuple(sorted(oid.hex for oid, _ in run.reach.damaged))
    temp_deleted, temp_freed = _remove_leftovers(store, run.old, dry_run)
    run.counts["bytes_freed"] += temp_freed
    if run.reach.unknown:
        oid, why = run.reach.unknown[0]
        more = f" (and {len(run.reach.unknown) - 1} more)" if len(run.reach.unknown) > 1 else ""
        held = f"nothing marked or deleted: cannot tell what object {oid.hex[:16]} reaches ({why}){more}; run 'objstore fsck'"
        return GcReport(dry_run, len(run.reach.objects), len(run.reach.chunks), **run.counts,
                        temp_files_deleted=temp_deleted, damaged_objects=damaged, held=held)
    marked = {marked_pack_name_of(info.key): info.mtime for info in store.backend.iter_prefix(MARKED_PACKS)}
    copied_chunks = _mark_packs(run, marked)  # phase 1
    object_marks = _mark_objects(run)  # phase 1
    try:
        _delete_due_packs(run, marked, copied_chunks)  # phase 2
        _delete_due_objects(run, object_marks)  # phase 2
    finally:
        if run.intent is not None:
            withdraw(store, run.intent)  # after the last delete (a killed gc's intent goes stale)
    if not dry_run and store.odb.index_files:  # never on a format-1 store (see objstore.model.store)
        compact(store.backend)  # the .idx files of the packs it wrote, with the rest
    return GcReport(dry_run, len(run.reach.objects), len(run.reach.chunks), **run.counts,
                    temp_files_deleted=temp_deleted, damaged_objects=damaged, tracked_only=run.reach.tracked_only,
                    young_due=run.due.get("young"), pending_due=run.due.get("pending"))


def _list_stored(store: Store) -> _Listing:
    pack_listing = list(store.backend.iter_prefix(PACKS))
    pack_infos = {n: info for info in pack_listing if (n := pack_name_of(info.key)) is not None}
    idx_sizes = {n: info.size for info in pack_listing if (n := idx_name_of(info.key)) is not None}
    object_infos = {}
    for info in store.backend.iter_prefix(OBJECTS):
        rest = object_hex_of(info.key)
        if rest is not None:
            try:
                object_infos[ObjectId.from_hex(rest)] = info
            except ObjstoreError:
                continue
    # From the .idx files and the consolidated index files; a pack with no usable
    # index is left alone (fsck reports it).
    every = read_all_indexes(store.backend, IndexListing(
        {n: i.size for n, i in pack_infos.items()}, idx_sizes,
        {n: info.size for info in pack_listing if (n := index_file_name_of(info.key)) is not None}))
    indexes = {name: index for name, index in every.items() if name in pack_infos}
    return _Listing(pack_infos, idx_sizes, object_infos, indexes, frozenset(set(every) - set(pack_infos)))


def _mark_packs(run: _Run, marked: dict[str, float]) -> set[ChunkKey]:
    """Phase 1 for packs: mark unreachable packs, rewrite mostly-garbage ones
    (their live chunks copied to a new pack first). Returns the chunks copied."""
    counts, listing = run.counts, run.listing
    copied_chunks: set[ChunkKey] = set()
    for i, (name, info) in enumerate(sorted(listing.packs.items()), 1):
        run.progress("packs", i, len(listing.packs))
        if name in marked or name not in listing.indexes:
            continue
        index = listing.indexes[name]
        live = [e for e in index if entry_id(e["id"]) in run.reach.chunks]
        if not run.old(info.mtime):
            if not live:
                run.waiting("young", info.size + listing.idx_sizes.get(name, 0), info.mtime)
            continue
        if live:
            garbage = sum(int(e["stored_len"]) for e in index) - sum(int(e["stored_len"]) for e in live)
            total = sum(int(e["stored_len"]) for e in index)
            if total == 0 or garbage / total < GC_REWRITE_GARBAGE_FRACTION:
                continue
            if not run.dry_run:
                copied = _rewrite(run.store, name, live)
                if copied is None:
                    continue  # a live chunk is damaged: keep the pack, fsck will say
                counts["chunks_copied"] += len(copied)
                copied_chunks.update(copied)
                counts["bytes_freed"] -= sum(int(e["stored_len"]) for e in live)
            else:
                counts["chunks_copied"] += len(live)
                copied_chunks.update(entry_id(e["id"]) for e in live)
            counts["packs_rewritten"] += 1
        counts["packs_marked"] += 1
        counts["bytes_marked"] += info.size + listing.idx_sizes.get(name, 0)
        marked[name] = run.start
        if not run.dry_run:
            run.store.backend.put_if_absent(marked_pack_key(name), msgpack.packb({"when": run.start}))
    return copied_chunks


def _mark_objects(run: _Run) -> list[tuple[str, float, list[bytes]]]:
    """Phase 1 for loose objects: one mark listing the unreachable ones not marked
    yet. Returns every mark (key, when, ids), the new one included."""
    store, objects = run.store, run.listing.objects
    already: set[bytes] = set()
    object_marks = [(info.key, info.mtime, _read_object_mark(store, info.key)) for info in store.backend.iter_prefix(MARKED_OBJECTS)]
    for _, _, ids in object_marks:
        already.update(ids)
    unreached = [oid for oid, info in objects.items() if oid not in run.reach.objects and oid.raw not in already]
    fresh = [oid for oid in unreached if run.old(objects[oid].mtime)]
    for oid in unreached:
        if not run.old(objects[oid].mtime):
            run.waiting("young", objects[oid].size, objects[oid].mtime)
    if fresh:
        run.counts["objects_marked"] = len(fresh)
        run.counts["bytes_marked"] += sum(objects[o].size for o in fresh)
        key = marked_objects_key(f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}")
        if not run.dry_run:
            store.backend.put_if_absent(key, b"".join(o.raw for o in fresh))
        object_marks.append((key, run.start, [o.raw for o in fresh]))
    return object_marks


def _delete_due_packs(run: _Run, marked: dict[str, float], copied_chunks: set[ChunkKey]) -> None:
    """Phase 2 for packs: delete those marked past the grace period whose live
    chunks all live on in a pack that stays; unmark those reachable again."""
    store, counts, listing = run.store, run.counts, run.listing
    due = {name for name, mtime in marked.items() if run.old(mtime) and name in listing.packs}
    for name, mtime in marked.items():
        if name in listing.packs and name not in due:
            run.waiting("pending", listing.packs[name].size + listing.idx_sizes.get(name, 0), mtime)
    for name in marked:
        if name not in listing.packs and not run.dry_run:
            store.backend.delete(marked_pack_key(name))  # the pack is gone already
    # Which packs keep each reachable chunk: a due pack may go only if every live
    # chunk in it also lives in a pack that stays.
    staying_chunks: set[ChunkKey] = set(copied_chunks)
    for name, index in listing.indexes.items():
        if name not in due:
            staying_chunks.update(index_ids(index))

    def marked_now(name: str) -> set[str]:
        try:
            store.backend.stat(marked_pack_key(name))
            return {name}
        except NotFound:
            return set()

    deleting = _deletable_packs(run, due, staying_chunks, marked_now)
    if run.dry_run:
        return
    # The second look (see the module docstring): what refs written since reach was
    # computed need (a version logged meanwhile that reuses what was garbage) stays,
    # unmarked; if that cannot be learned, every due pack stays, marked.
    known = not deleting or _reached_since(run)
    for name in list(deleting):
        if not known or any(c in run.reach.chunks and c not in staying_chunks for c in index_ids(listing.indexes[name])):
            deleting.remove(name)
            counts["packs_deleted"] -= 1
            counts["bytes_freed"] -= listing.packs[name].size + listing.idx_sizes.get(name, 0)
            if known:
                counts["packs_unmarked"] += 1
                store.backend.delete(marked_pack_key(name))
    # Indexes before packs: no index file left names a pack about to go (and
    # none names one gone already; see objstore.storage.chunkindex).
    drop_packs(store.backend, set(deleting) | _gone_but_covered(run))
    for name in deleting:
        store.backend.delete(idx_key(name))
        store.backend.delete(pack_key(name))
        store.backend.delete(marked_pack_key(name))


def _deletable_packs(run: _Run, due: set[str], staying_chunks: set[ChunkKey],
                     marked_now: Callable[[str], set[str]]) -> list[str]:
    """The due packs that may go by what this run reached: the others are
    reachable again (their marks dropped) or unknown (left marked)."""
    counts, listing = run.counts, run.listing
    deleting: list[str] = []
    for name in sorted(due):
        due_index = listing.indexes.get(name)
        if due_index is None:
            # What it holds is unknown to this run: its index file was merged away
            # between the listing and the read (a compaction), or it is damaged. It
            # may hold a chunk a version reuses; never delete on uncertainty. The
            # mark stays for a run that can read its index.
            continue
        ids = index_ids(due_index)
        needed = [c for c in ids if c in run.reach.chunks and c not in staying_chunks]
        if needed:
            # Reachable again (a version logged since reuses it): keep it, drop the mark.
            counts["packs_unmarked"] += 1
            staying_chunks.update(ids)
            if not run.dry_run:
                run.store.backend.delete(marked_pack_key(name))
            continue
        if not run.dry_run and name not in marked_now(name):
            counts["packs_unmarked"] += 1  # a writer stored this very pack again and lifted the mark
            continue
        counts["packs_deleted"] += 1
        counts["bytes_freed"] += listing.packs[name].size + listing.idx_sizes.get(name, 0)
        deleting.append(name)
    return deleting


def _reached_since(run: _Run) -> bool:
    """Widen ``run.reach`` by what the refs and reflog entries written since it
    was computed reach, right before deleting (see the module docstring); False
    if what they reach cannot be learned (then nothing is deleted)."""
    store = run.store
    if run.intent is None:
        # Before reading the refs again: a writer whose ref this look misses sees the
        # intent after its ref (Dekker's order, objstore.model.gcintent).
        run.intent = announce(store)
    roots = {oid for _, oid in store.refs.iter_refs(REFS)}
    # Kept if present, like reflog entries; a deleted version's entries keep it here
    # too (this look only ever keeps more).
    weak = set(store.refs.iter_reflog_targets(skip=run.logs_read)) | set(_tracking_targets(store))
    new_roots, new_weak = roots - run.reach.objects, (weak - roots) - run.reach.objects
    if not new_roots and not new_weak:
        return True
    r = reach(store, new_roots, new_weak, known=run.listing.known)
    old = run.reach
    run.reach = Reachable(old.objects | r.objects, old.chunks | r.chunks, old.damaged + r.damaged,
                          old.unknown + r.unknown, old.tracked_only)
    return not r.unknown


def _gone_but_covered(run: _Run) -> set[str]:
    """Packs an index file still covers that are not stored (a compaction racing
    an earlier gc): confirmed gone by a stat, since a listing can miss a new pack."""
    stale = set()
    for name in run.listing.unlisted:
        try:
            run.store.backend.stat(pack_key(name))
        except NotFound:
            stale.add(name)
    return stale


def _delete_due_objects(run: _Run, object_marks: list[tuple[str, float, list[bytes]]]) -> None:
    """Phase 2 for loose objects: delete those of marks past the grace period that
    are still unreachable, then the marks."""
    if not run.dry_run and any(run.old(mtime) for _, mtime, _ in object_marks) and not _reached_since(run):
        return  # what a ref written meanwhile reaches is unknown: delete nothing
    for key, mtime, ids in object_marks:
        if not run.old(mtime):
            run.waiting("pending", sum(info.size for raw in ids if (info := run.listing.objects.get(ObjectId(raw))) is not None
                                       and ObjectId(raw) not in run.reach.objects), mtime)
            continue
        for raw in ids:
            oid = ObjectId(raw)
            if oid in run.reach.objects:
                continue  # in use again
            obj_info = run.listing.objects.get(oid)
            if obj_info is None:
                continue
            run.counts["objects_deleted"] += 1
            run.counts["bytes_freed"] += obj_info.size
            if not run.dry_run:
                run.store.backend.delete(object_key(oid))
        if not run.dry_run:
            run.store.backend.delete(key)


def _remove_leftovers(store: Store, old: Callable[[float], bool], dry_run: bool) -> tuple[int, int]:
    """Delete files under ``tmp/`` past the grace period (a live writer's temp file
    is younger: it is written, then renamed or linked away, within one operation).
    Returns (files, bytes)."""
    files = size = 0
    for info in list(store.backend.iter_prefix(TMP)):
        if not old(info.mtime):
            continue
        files += 1
        size += info.size
        if not dry_run:
            try:
                store.backend.delete(info.key)
            except NotFound:
                continue  # its writer finished with it meanwhile
    return files, size


def _read_object_mark(store: Store, key: str) -> list[bytes]:
    try:
        data = store.backend.get(key)
    except NotFound:
        return []
    return [data[i:i + 32] for i in range(0, len(data) - len(data) % 32, 32)]


def _rewrite(store: Store, name: str, live: list[np.void]) -> list[ChunkKey] | None:
    """Copy the live chunks of pack ``name`` into a new pack, verified. Returns the
    ids copied, or None (writing nothing) if one of them is damaged."""
    data = store.backend.get(pack_key(name))
    copies = []
    for e in live:
        raw_id = entry_id(e["id"])
        off, n = int(e["offset"]), int(e["stored_len"])
        payload = data[off:off + n]
        try:
            decode_verified(ObjectId(raw_id), int(e["codec"]), int(e["raw_len"]), n, payload, f"pack {name[:16]}")
        except ObjstoreError:
            return None
        copies.append((ObjectId(raw_id), int(e["codec"]), int(e["raw_len"]), payload))
    for chunk_id, codec_id, raw_len, payload in copies:
        store.odb.add_encoded(chunk_id, codec_id, raw_len, payload)
    store.odb.flush()  # the new pack and its index exist before the old pack is marked
    return [chunk_key(c) for c, _, _, _ in copies]
