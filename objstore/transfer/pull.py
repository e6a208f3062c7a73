"""fetch and pull: bring in what the remote's refs reach, record them as
tracking state, then integrate: new remote versions are added and local-only
versions re-based after them; pending parts of distributed versions come as
:mod:`objstore.transfer.parts` carries them. Split from :mod:`objstore.transfer.sync`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from objstore.api.runrecord import index_arriving_run
from objstore.console import say
from objstore.errors import Conflict, CorruptObject, InvalidName, NotFound
from objstore.model.names import LATEST, CollectionPath
from objstore.model.refs import encode_value
from objstore.model.store import Store
from objstore.model.versions import advance_latest, check_ref, create_digest_ref, digest_targets, refuse_arriving_case_twins
from objstore.storage.ids import ObjectId
from objstore.storage.keys import ANNOTATIONS, alias_ref, ref_display, version_ref
from objstore.storage.objects import (
    Link,
    RunRecord,
    Version,
)
from objstore.transfer.annotate import carry_annotations, carry_collection_annotations, carry_rebased
from objstore.transfer.closure import configured_pack_target, copy_closure, survive_gc
from objstore.transfer.deletions import carry_deletions, deleted_at_source, deleted_in_reflog
from objstore.transfer.parts import carry_parts
from objstore.transfer.sync import (
    Progress,
    TransferResult,
    parse_ref,
    read_keys,
    read_refs,
    ref_target,
    ref_value,
    selection_prefixes,
)
from objstore.transfer.tracking import (
    TOMBSTONE,
    CollectionRefs,
    Tracking,
    add_run_refs,
    collections_in,
    finish_stats,
    registry_last,
    remote_counters,
    root_ids,
    run_refs_in,
    runs_of,
    version_chain,
)

# -- fetch and pull ---------------------------------------------------------------------

def fetch(local: Store, remote: Store, *, tracking: Tracking, names: Iterable[str] | None = None,
          progress: Progress | None = None, remote_label: str | None = None) -> tuple[TransferResult, dict[str, bytes], dict[str, bytes]]:
    """Store everything the remote's refs reach that ``local`` lacks, and record
    the remote's refs as tracking state. Local refs are not touched.

    Returns (result, the remote's refs, the tracking state before this fetch).
    """
    started = time.monotonic()
    before = remote_counters(remote)
    result = TransferResult("fetch", remote_label or remote.location)
    prefixes = selection_prefixes(names)
    theirs = read_refs(remote, prefixes)
    tracked = tracking.read_all(prefixes)
    if names:
        add_run_refs(runs_of(remote, theirs), tracked, tracking, (theirs, remote))
    try:  # before anything is copied: refs that could not live beside this store's refs everywhere are not taken
        refuse_arriving_case_twins(local, theirs)
    except InvalidName as exc:
        raise InvalidName(f"{result.remote}: {exc.args[0]}; nothing was changed here") from exc
    copied = copy_closure(remote, local, root_ids(theirs), result, pack_target=configured_pack_target(), progress=progress)
    _check_taken_refs(local, theirs, result.remote)
    # A ref tracked before and absent there now was removed there (a deleted
    # version's digest ref, a removed run): forget it, as git's fetch --prune does.
    tracking.update(theirs, tracked, gone=[k for k in tracked if k not in theirs])
    # What a tracking ref named before stayed reachable throughout; what the moved ones
    # name now may be garbage here that a gc deleted meanwhile (objstore.model.gcintent).
    survive_gc(remote, local, root_ids({k: v for k, v in theirs.items() if tracked.get(k) != v}), copied, result,
               pack_target=configured_pack_target())
    local.odb.maintain()  # after the tracking refs that reach what arrived (odb's write order)
    result.refs = sorted(k for k, v in theirs.items() if tracked.get(k) != v)
    finish_stats(result, remote, before, started)
    return result, theirs, tracked


def _check_taken_refs(local: Store, theirs: dict[str, bytes], label: str) -> None:
    """Refuse a remote whose refs break the rules a reader relies on: a name no
    objstore writes (an alias ``v3``), or an object that belongs elsewhere (an
    alias holding another collection's version). Checked against the objects
    just fetched (verified), before any tracking state or local ref is written,
    so a refused fetch, pull or clone changes no ref here."""
    for key, raw in sorted(theirs.items()):
        try:
            check_ref(local, key, ref_target(key, raw))
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
    if ref_value(raw) == ref_value(encode_value(new)):
        if raw is None and new is None:  # a tombstone where no ref is: write it, so the number stays taken
            return store.backend.put_if_absent(key, b"")
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
    if ref_value(decided_on) == ref_value(encode_value(new)):
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
    run = _Pull(local, remote, tracking, result.remote, f"pull from {result.remote}", result, theirs, tracked,
                selection_prefixes(names))
    _read_local(run, names)
    for coll in registry_last({**run.my_colls, **run.their_colls}):
        _integrate_collection(run, coll)
    _carry_deletions(run)
    carry_parts(remote, local, run.prefixes, result, run.why)  # after the versions: see objstore.transfer.parts
    _merge_runs(run)
    _remap_runs(run)
    carry_rebased(local, _rebased_versions(run))
    carry_annotations(remote, local, _held_by_both(run), result)
    carry_collection_annotations(remote, local, run.their_colls, result)
    _report_kept_and_renumbered(run)
    return result


@dataclass
class _Pull:
    """One pull's state (after its fetch), shared by its steps."""

    local: Store
    remote: Store
    tracking: Tracking
    label: str
    why: str
    result: TransferResult
    theirs: dict[str, bytes]
    tracked: dict[str, bytes]
    prefixes: list[str]
    mine: dict[str, bytes] = field(default_factory=dict)
    run_keys: set[str] = field(default_factory=set)
    my_colls: dict[CollectionPath, CollectionRefs] = field(default_factory=dict)
    their_colls: dict[CollectionPath, CollectionRefs] = field(default_factory=dict)
    remap: dict[ObjectId, ObjectId] = field(default_factory=dict)  # old local version/link id -> its re-based id


def _read_local(run: _Pull, names: Iterable[str] | None) -> None:
    """Read the selected local refs (and, for a selection, the runs either side names)."""
    run.mine = read_refs(run.local, run.prefixes)
    if names:
        run.run_keys = set(run_refs_in(run.theirs)) | runs_of(run.local, run.mine)
        run.mine.update(read_keys(run.local, run.run_keys))
    run.my_colls, run.their_colls = collections_in(run.mine), collections_in(run.theirs)


def _integrate_collection(run: _Pull, coll: CollectionPath) -> None:
    """Re-base one collection's local-only entries after the remote's, then write its refs."""
    mine_c, theirs_c = run.my_colls.get(coll, CollectionRefs()), run.their_colls.get(coll, CollectionRefs())
    local_chain = version_chain(mine_c)
    new_chain, held = _rebase_chain(run, coll, local_chain, version_chain(theirs_c))
    _follow_content(run.local, mine_c, new_chain, held, run.remap)
    _write_version_refs(run, coll, mine_c, len(local_chain), new_chain)
    remote_chain = version_chain(theirs_c)
    gone = {remote_chain[i] for i, oid in enumerate(new_chain[:len(remote_chain)]) if oid == TOMBSTONE}
    _take_digests(run, coll, theirs_c, gone)
    if new_chain:
        advance_latest(run.local, coll, len(new_chain) - 1)
    _merge_aliases(run, coll, mine_c, theirs_c)


def _rebase_chain(run: _Pull, coll: CollectionPath, local_chain: list[ObjectId],
                  remote_chain: list[ObjectId]) -> tuple[list[ObjectId], dict[tuple[str, bytes], ObjectId]]:
    """Check the remote's chain, then append the local-only entries after it; return the new chain and the
    contents re-based by this pull."""
    local, remap, result = run.local, run.remap, run.result
    for idx, version_id in enumerate(remote_chain):
        if version_id != TOMBSTONE:
            _check_entry(local, coll, idx, version_id, run.label)
    k = 0
    while k < min(len(local_chain), len(remote_chain)) and _same_entry(run, coll, k, local_chain[k], remote_chain[k]):
        k += 1
    # Up to k, ours: the same as theirs, or a deletion on one side of a version both had (not undone).
    new_chain = list(local_chain[:k]) + list(remote_chain[k:])
    # Contents re-based by this pull: an entry with one of them is a copy an
    # interrupted pull already made. (Equal content the remote logged on its own
    # stays a version of its own, as it would if both were logged here.)
    held: dict[tuple[str, bytes], ObjectId] = {}
    # Re-base local-only entries after the remote's (or keep them, rewritten
    # only if a link's target was itself renumbered).
    for old_id in local_chain[k:]:
        if old_id == TOMBSTONE:  # a deleted local-only version: its number stays taken, moved up like the rest
            new_chain.append(TOMBSTONE)
            continue
        entry = _entry(local, old_id)
        content_key = _content_key(entry, remap)
        if old_id in new_chain or content_key in held:
            # The remote's own version, or a copy an interrupted pull already
            # re-based: taken once, and whatever named it follows its copy.
            if held.get(content_key, old_id) != old_id:
                remap[old_id] = held[content_key]
            continue
        idx = len(new_chain)
        if isinstance(entry, Version):
            rebased: Version | Link = replace(entry, index=idx, parent=new_chain[-1] if new_chain else None)
        else:
            rebased = _rebased_link(local, entry, idx, remap)
        new_id = local.odb.put_object(rebased) if rebased != entry else old_id
        if new_id != old_id:
            remap[old_id] = new_id
        if idx != entry.index:
            result.renumbered.append((f"{coll}:v{entry.index}", f"{coll}:v{idx}"))
        new_chain.append(new_id)
        held[content_key] = new_id
    return new_chain, held


def _same_entry(run: _Pull, coll: CollectionPath, idx: int, mine: ObjectId, theirs: ObjectId) -> bool:
    """Whether v<idx> here and on the remote are one history: the same entry, or one
    both had that one side deleted (a deletion is never undone by a pull)."""
    if mine == theirs:
        return True
    key = version_ref(coll.entity, coll.project, coll.name, idx)
    if mine == TOMBSTONE:  # deleted here: theirs if we had fetched it before, or held it (our reflog)
        return ref_value(run.tracked.get(key)) == ref_value(encode_value(theirs)) or deleted_in_reflog(run.local, key, theirs)
    if theirs == TOMBSTONE:  # deleted there: ours if the remote ever held it (the object names its number)
        return run.remote.odb.has_object(mine) or deleted_in_reflog(run.remote, key, mine)
    return False


def _rebased_link(store: Store, link: Link, index: int, remap: dict[ObjectId, ObjectId]) -> Link:
    """``link`` as entry ``index``, pointing at its target's re-based copy if there is one."""
    target = remap.get(link.target, link.target)
    if target == link.target:
        return replace(link, index=index)
    version = _entry(store, target)
    assert isinstance(version, Version)  # a re-based copy of a version is a version
    return Link.to_version(link.registry, index, target, version, link.created_at, link.run)


def _write_version_refs(run: _Pull, coll: CollectionPath, mine_c: CollectionRefs, held: int, new_chain: list[ObjectId]) -> None:
    """Write the version refs in crash-safe order, re-pointing our aliases and digests in between."""
    local, why, result = run.local, run.why, run.result
    creates, overwrites = _ref_write_order(held, len(new_chain))
    for idx in creates:
        key = version_ref(coll.entity, coll.project, coll.name, idx)
        if _set_ref(local, key, _held(new_chain[idx]), why):
            result.refs.append(key)
    # Our aliases and digests move to the re-based copies before the version refs
    # they named are overwritten, so none ever names an entry no ref holds.
    _repoint_local(local, coll, mine_c, run.remap, why, result)
    for idx in overwrites:
        key = version_ref(coll.entity, coll.project, coll.name, idx)
        if _set_ref(local, key, _held(new_chain[idx]), why):
            result.refs.append(key)


def _held(oid: ObjectId) -> ObjectId | None:
    """What a version ref of the new chain holds: the id, or nothing (a tombstone)."""
    return None if oid == TOMBSTONE else oid


def _take_digests(run: _Pull, coll: CollectionPath, theirs_c: CollectionRefs, gone: set[ObjectId]) -> None:
    """The remote's digest refs this store lacks (ours were re-pointed at re-based
    ids by :func:`_repoint_local` already), but none naming a version deleted here (``gone``)."""
    for key, oid in digest_targets(coll, theirs_c.digests):
        if key not in run.mine and oid not in gone and create_digest_ref(run.local, key, oid, run.why):
            run.result.refs.append(key)


def _merge_aliases(run: _Pull, coll: CollectionPath, mine_c: CollectionRefs, theirs_c: CollectionRefs) -> None:
    """Aliases (latest moves by itself): take theirs if unchanged here, else keep ours (re-pointed if re-based)."""
    result = run.result
    for alias in sorted(set(mine_c.aliases) | set(theirs_c.aliases)):
        if alias == LATEST:
            continue
        key = alias_ref(coll.entity, coll.project, coll.name, alias)
        l_raw, r_raw, t_raw = run.mine.get(key), run.theirs.get(key), run.tracked.get(key)
        if ref_value(l_raw) == ref_value(r_raw):
            continue
        if ref_value(l_raw) == ref_value(t_raw):  # unchanged here since the last fetch: take theirs
            target = ref_target(key, r_raw)
        else:
            if ref_value(r_raw) != ref_value(t_raw):
                result.kept.append(key)
            current = ref_target(key, l_raw)
            target = run.remap.get(current, current) if current is not None else None
            if target == current:
                continue
        try:
            if _move_ref(run.local, key, l_raw, target, run.why):
                result.refs.append(key)
        except Conflict:  # moved here while we pulled: as if seen, changed on both sides
            if key not in result.kept:
                result.kept.append(key)


def _merge_runs(run: _Pull) -> None:
    """Runs: take the remote's unless changed here too."""
    result = run.result
    for key, r_raw in run_refs_in(run.theirs).items():
        l_raw, t_raw = run.mine.get(key), run.tracked.get(key)
        if ref_value(l_raw) == ref_value(r_raw):
            continue
        if l_raw is None or ref_value(l_raw) == ref_value(t_raw):
            index_arriving_run(run.local, key, ref_target(key, r_raw))  # the lineage index before the ref
            try:
                if _move_ref(run.local, key, l_raw, ref_target(key, r_raw), run.why):
                    result.refs.append(key)
            except Conflict:  # the run moved here while we pulled: the local record wins
                result.kept.append(key)
        elif ref_value(r_raw) != ref_value(t_raw):
            result.kept.append(key)


def _carry_deletions(run: _Pull) -> None:
    """Delete here what the remote deleted, where this store holds the version the
    remote held (after the alias merge, which removed the aliases it deleted)."""
    def knew(coll: CollectionPath, idx: int, oid: ObjectId) -> bool:
        key = version_ref(coll.entity, coll.project, coll.name, idx)
        return (ref_value(run.tracked.get(key)) == ref_value(encode_value(oid)) or run.remote.odb.has_object(oid)
                or deleted_in_reflog(run.remote, key, oid))

    if not any(c.deleted for c in run.their_colls.values()):
        return  # nothing deleted there: no need to read our refs again
    now = collections_in(read_refs(run.local, run.prefixes))
    carry_deletions(run.local, deleted_at_source(run.their_colls, now, knew), run.result,
                    f"deleted on {run.label} (pull)", "this store")


def _rebased_versions(run: _Pull) -> list[tuple[CollectionPath, int, ObjectId, int, ObjectId]]:
    """(collection, old number, old id, new number, new id) of every version this pull re-based."""
    out = []
    for old_id, new_id in run.remap.items():
        old, new = _entry(run.local, old_id), _entry(run.local, new_id)
        if isinstance(old, Version) and isinstance(new, Version):
            out.append((CollectionPath(old.entity, old.project, old.name), old.index, old_id, new.index, new_id))
    return out


def _held_by_both(run: _Pull) -> list[tuple[CollectionPath, int, ObjectId]]:
    """The versions whose annotations may move: the remote's that this store now holds at the same number."""
    now = collections_in(read_refs(run.local, run.prefixes))
    return [(coll, idx, vid) for coll, c in run.their_colls.items() for idx, vid in c.versions.items()
            if now.get(coll, CollectionRefs()).versions.get(idx) == vid]


def _remap_runs(run: _Pull) -> None:
    """Re-point local runs at re-based versions."""
    if run.remap:
        for key in run_refs_in({**read_refs(run.local, run.prefixes), **read_keys(run.local, run.run_keys)}):
            _remap_run(run.local, key, run.remap, run.why)


def _report_kept_and_renumbered(run: _Pull) -> None:
    """Forget the tracking state of kept refs, then say what was renumbered and kept."""
    # A kept ref stays "not seen" in the tracking state, so the next push is
    # still refused for it unless forced: the remote's value is not overwritten by accident.
    result = run.result
    for key in result.kept:
        if not key.startswith(ANNOTATIONS):  # annotations have no tracking state: their history says what is newer
            run.tracking.forget(key, run.tracked.get(key))
    for old, new in result.renumbered:
        say(f"renumbered {old} -> {new.rsplit(':', 1)[1]} (re-based after the versions pulled from {run.label})", summary=True)
    for key in result.kept:
        if (ref := parse_ref(key)) is not None and ref.kind == "version":
            continue  # a deletion kept: said already
        if key.startswith(ANNOTATIONS):
            say(f"kept local {key}: edited both here and on {run.label}, later here (the later edit wins); a push takes it there")
        else:
            say(f"kept local {ref_display(key)}: it changed both here and on {run.label}; push --force to overwrite theirs")


def _content_key(entry: Version | Link, remap: dict[ObjectId, ObjectId]) -> tuple[str, bytes]:
    """What makes two entries of one collection the same content: a version's tree,
    a link's (re-based) target."""
    if isinstance(entry, Version):
        return ("tree", entry.tree.raw)
    return ("link", remap.get(entry.target, entry.target).raw)


def _follow_content(store: Store, coll: CollectionRefs, chain: list[ObjectId], held: dict[tuple[str, bytes], ObjectId],
                    remap: dict[ObjectId, ObjectId]) -> None:
    """Point ``remap`` at the new chain's entry for every alias or digest target of
    ``coll`` that the chain no longer holds (an interrupted pull overwrote its
    version ref) but whose content it does."""
    in_chain = set(chain)
    for raw in (*coll.aliases.values(), *coll.digests.values()):
        try:
            oid = ref_target("", raw) if ref_value(raw) else None
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


def _repoint_local(store: Store, coll: CollectionPath, mine: CollectionRefs, remap: dict[ObjectId, ObjectId], why: str,
                   result: TransferResult) -> None:
    """Move this store's aliases and digest refs of ``coll`` that name a re-based
    entry to its copy (the remote's aliases are taken later, once all is in place)."""
    # latest too: it stays on the newest local entry, which only moves up.
    refs = [(alias_ref(coll.entity, coll.project, coll.name, a), raw) for a, raw in mine.aliases.items()]
    targets = []
    for key, raw in refs:
        try:
            targets.append((key, ref_target(key, raw)))
        except CorruptObject:
            continue
    targets += _readable_digest_targets(coll, mine.digests)
    for key, oid in targets:
        if oid in remap and _set_ref(store, key, remap[oid], why):
            result.refs.append(key)


def _readable_digest_targets(coll: CollectionPath, digests: dict[str, bytes]) -> list[tuple[str, ObjectId]]:
    """The digest refs of a snapshot whose value is an id (a damaged one names nothing to re-point)."""
    out: list[tuple[str, ObjectId]] = []
    for tree_hex, raw in digests.items():
        try:
            out += digest_targets(coll, {tree_hex: raw})
        except CorruptObject:
            continue
    return out


def _remap_run(store: Store, key: str, remap: dict[ObjectId, ObjectId], why: str) -> None:
    for _ in range(100):
        raw = store.refs.read_raw(key)
        oid = ref_target(key, raw)
        if oid is None:
            return
        run = store.odb.get_object(oid)
        if not isinstance(run, RunRecord):
            return
        new = replace(run, inputs=tuple(remap.get(i, i) for i in run.inputs),
                      outputs=tuple(remap.get(o, o) for o in run.outputs))
        if new == run:
            return
        try:
            store.refs.set_if_equals(key, raw, store.odb.put_object(new), why + " (versions re-based)")
            return
        except Conflict:
            continue
