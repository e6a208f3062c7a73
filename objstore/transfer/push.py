"""push: send what a remote lacks, then move its refs (version refs create-only,
aliases and runs by CAS against the tracking state, pending parts of distributed
versions as :mod:`objstore.transfer.parts` carries them). Split from
:mod:`objstore.transfer.sync`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from objstore.api.runrecord import index_arriving_run
from objstore.console import say
from objstore.errors import Conflict, InvalidName, NonFastForward, NotFound
from objstore.model.names import LATEST, CollectionPath
from objstore.model.refs import encode_value
from objstore.model.store import Store
from objstore.model.versions import (
    advance_latest,
    create_digest_ref,
    digest_targets,
    missing_collection,
    refuse_arriving_case_twins,
)
from objstore.storage.ids import ObjectId
from objstore.storage.keys import ANNOTATIONS, alias_ref, ref_display, version_ref
from objstore.transfer.annotate import carry_annotations, carry_collection_annotations
from objstore.transfer.closure import Copied, configured_pack_target, copy_closure, survive_gc
from objstore.transfer.deletions import carry_deletions, deleted_at_source, deleted_in_reflog
from objstore.transfer.parts import carry_parts, part_refs
from objstore.transfer.sync import Progress, TransferResult, parse_ref, read_refs, ref_target, ref_value, selection_prefixes
from objstore.transfer.tracking import (
    CollectionRefs,
    Tracking,
    add_run_refs,
    collections_in,
    finish_stats,
    registry_last,
    remote_counters,
    runs_of,
)

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
    before = remote_counters(remote)
    label = remote_label or remote.location
    run = _Push(local, remote, tracking, force, label, TransferResult("push", label))
    _read_sides(run, names)
    try:
        refuse_arriving_case_twins(remote, (k for k in run.mine if k not in run.theirs))
    except InvalidName as exc:
        raise InvalidName(f"push refused: {label}: {exc.args[0]}; nothing was sent") from exc
    _plan_versions(run)
    _plan_moves(run)
    _send_objects(run, progress)
    _create_versions(run)
    _move_refs(run)
    if run.copied is not None:  # after the refs that name what was sent (objstore.model.gcintent)
        survive_gc(run.local, run.remote, run.roots, run.copied, run.result, pack_target=configured_pack_target())
    _carry_deletions(run)
    # Pending parts last: a part finished here is tombstoned there only once its version is there.
    carry_parts(local, remote, selection_prefixes(names), run.result, f"push from {local.refs.who}", mine=run.parts)
    remote.odb.maintain()  # after the refs that reach what was sent (odb's write order)
    carry_annotations(local, remote, _held_by_both(run), run.result)
    carry_collection_annotations(local, remote, [c for c in run.my_colls if c in run.their_colls or run.plan_versions.get(c)],
                                 run.result)
    for key in (k for k in run.result.kept if k.startswith(ANNOTATIONS)):  # kept refs were said already
        say(f"kept {label}'s {key}: edited both there and here, later there (the later edit wins); a pull takes it here")
    tracking.update(run.final, run.tracked, gone=run.gone)
    finish_stats(run.result, remote, before, started)
    return run.result


@dataclass
class _Push:
    """One push's state, shared by its steps."""

    local: Store
    remote: Store
    tracking: Tracking
    force: bool
    label: str
    result: TransferResult
    mine: dict[str, bytes] = field(default_factory=dict)
    theirs: dict[str, bytes] = field(default_factory=dict)
    tracked: dict[str, bytes] = field(default_factory=dict)
    my_colls: dict[CollectionPath, CollectionRefs] = field(default_factory=dict)
    their_colls: dict[CollectionPath, CollectionRefs] = field(default_factory=dict)
    plan_versions: dict[CollectionPath, list[tuple[int, ObjectId]]] = field(default_factory=dict)
    moves: list[tuple[str, bytes | None, bytes]] = field(default_factory=list)  # key, expected raw on the remote, new raw
    final: dict[str, bytes] = field(default_factory=dict)  # what tracking records afterwards
    deleted_there: set[ObjectId] | None = None  # see _deleted_there
    gone: list[str] = field(default_factory=list)  # tracked refs this push removed there (see _carry_deletions)
    parts: dict[str, bytes] = field(default_factory=dict)  # pending parts here (objstore.transfer.parts)
    roots: list[ObjectId] = field(default_factory=list)  # what _send_objects sent the closure of
    copied: Copied | None = None  # what that copy relied on (see objstore.transfer.closure.survive_gc)


def _read_sides(run: _Push, names: Iterable[str] | None) -> None:
    """Read the selected refs here, on the remote, and as last fetched (adding the runs a selection implies)."""
    prefixes = selection_prefixes(names)
    run.mine = read_refs(run.local, prefixes)
    run.parts = part_refs(run.local, prefixes)
    for name in names or ():
        prefix = selection_prefixes([name])[0]
        if not any(key.startswith(prefix) for key in (*run.mine, *run.parts)):
            _nothing_under(run.local, name, prefix)
    run.theirs = read_refs(run.remote, prefixes)
    run.tracked = run.tracking.read_all(prefixes)
    if names:
        add_run_refs(runs_of(run.local, run.mine), run.tracked, run.tracking, (run.mine, run.local), (run.theirs, run.remote))
    run.my_colls, run.their_colls = collections_in(run.mine), collections_in(run.theirs)


def _nothing_under(local: Store, name: str, prefix: str) -> None:
    """Refuse a selected name with nothing under it, naming what was probably meant
    (a typo'd collection: ``lmm`` -> ``llm``), rather than push the rest silently."""
    parts = name.split(":", 1)[0].strip("/").split("/")
    if len(parts) == 3:
        raise NotFound(f"nothing to push: {missing_collection(local, CollectionPath(*parts))}", key=name)
    raise NotFound(f"nothing to push: no refs under {prefix} in {local.location}", key=name)


def _plan_versions(run: _Push) -> None:
    """Plan the versions the remote lacks; refuse if it holds a different one at any index."""
    refused: list[tuple[CollectionPath, int]] = []
    for coll, c in run.my_colls.items():
        theirs_c = run.their_colls.get(coll, CollectionRefs())
        todo = []
        for idx, version_id in sorted(c.versions.items()):
            other = theirs_c.versions.get(idx)
            if idx in theirs_c.deleted:
                continue  # deleted there: a push does not bring it back, and its number stays taken
            if other is None:
                todo.append((idx, version_id))
            elif other != version_id:
                refused.append((coll, idx))
        run.plan_versions[coll] = todo
    if refused:
        listed = ", ".join(f"{coll}:v{idx}" for coll, idx in refused[:5]) + (f" and {len(refused) - 5} more" if len(refused) > 5 else "")
        first, first_idx = refused[0]
        raise NonFastForward(
            version_ref(first.entity, first.project, first.name, first_idx), None, None,
            f"push refused: {run.label} has different versions at {listed} (logged elsewhere); "
            f"run 'objstore pull' to re-base your versions after them, then push again",
        )


def _plan_moves(run: _Push) -> None:
    """Movable refs (aliases except latest, runs): decide each against what we last fetched."""
    diverged: list[str] = []
    theirs, tracked = run.theirs, run.tracked
    for key, raw in run.mine.items():
        ref = parse_ref(key)
        if ref is None or ref.kind not in ("alias", "run") or (ref.kind == "alias" and ref.tail == LATEST):
            continue
        r, t = theirs.get(key), tracked.get(key)
        if ref_value(raw) == ref_value(r) or ref_value(raw) == ref_value(t):
            continue  # the same already, or unchanged here since the fetch (the remote moved it)
        if ref_target(key, raw) in _deleted_there(run):
            run.result.kept.append(key)  # an alias onto a version the remote deleted would bring it back there
            say(f"kept {ref_display(key)} here only: it names a version deleted on {run.label}")
            continue
        if ref_value(r) == ref_value(t) or run.force:
            run.moves.append((key, r, raw if ref_value(raw) else b""))
        else:
            diverged.append(key)
    if diverged:
        raise NonFastForward(
            diverged[0], tracked.get(diverged[0]), theirs.get(diverged[0]),
            f"push refused: {', '.join(ref_display(d) for d in diverged[:3])}{' …' if len(diverged) > 3 else ''} "
            f"changed on {run.label} since your last fetch; run 'objstore pull' first (or push --force to overwrite)",
        )


def _send_objects(run: _Push, progress: Progress | None) -> None:
    """Copy the closure of every planned version, moved ref and new digest ref to the remote."""
    roots = [oid for todo in run.plan_versions.values() for _, oid in todo]
    for key, _, new in run.moves:
        if (oid := ref_target(key, new)) is not None:
            roots.append(oid)
    for coll, c in run.my_colls.items():
        theirs = run.their_colls.get(coll, CollectionRefs()).digests
        roots += [oid for key, oid in digest_targets(coll, {t: raw for t, raw in c.digests.items() if t not in theirs})
                  if oid not in _deleted_there(run)]
    run.roots = roots
    run.copied = copy_closure(run.local, run.remote, roots, run.result, pack_target=configured_pack_target(),
                              progress=progress)


def _create_versions(run: _Push) -> None:
    """Refs, last. Versions in order, create-only (losing a race is a refusal); then digests, then latest."""
    remote, result, label = run.remote, run.result, run.label
    why = f"push from {run.local.refs.who}"
    # Tracking records only what we know the remote holds *and* we hold too:
    # recording a remote change we have not pulled would make the next pull
    # think it was already seen, and the next push overwrite it.
    run.final = final = {k: v for k, v in run.theirs.items() if ref_value(run.mine.get(k)) == ref_value(v)}
    for coll in registry_last(run.plan_versions):
        todo = run.plan_versions[coll]
        for idx, version_id in todo:
            key = version_ref(coll.entity, coll.project, coll.name, idx)
            if not remote.refs.create(key, version_id, why):
                actual = remote.refs.read_raw(key)
                if ref_target(key, actual) != version_id:
                    raise NonFastForward(
                        key, None, actual,
                        f"push refused: {coll}:v{idx} was just pushed to {label} from elsewhere; "
                        f"run 'objstore pull' to re-base your versions after it, then push again",
                    )
            else:
                result.refs.append(key)
            final[key] = encode_value(version_id)
        for key, oid in digest_targets(coll, run.my_colls[coll].digests):
            if key not in run.theirs and oid not in _deleted_there(run) and create_digest_ref(remote, key, oid, why):
                result.refs.append(key)
                final[key] = run.mine[key]
        if todo:
            advance_latest(remote, coll, max(idx for idx, _ in todo))
            latest = alias_ref(coll.entity, coll.project, coll.name, LATEST)
            value = remote.refs.read_raw(latest)
            if value is not None:
                final[latest] = value


def _held_by_both(run: _Push) -> list[tuple[CollectionPath, int, ObjectId]]:
    """The versions whose annotations may move: every selected one the remote now holds (the same object)."""
    out = []
    for coll, c in run.my_colls.items():
        created = {idx for idx, _ in run.plan_versions.get(coll, [])}
        theirs = run.their_colls.get(coll, CollectionRefs()).versions
        out += [(coll, idx, vid) for idx, vid in c.versions.items() if idx in created or theirs.get(idx) == vid]
    return out


def _deleted_there(run: _Push) -> set[ObjectId]:
    """The entries held here at a number the remote has deleted (none of them is
    ever created there, so no alias or digest ref may name one there)."""
    if run.deleted_there is None:
        run.deleted_there = {vid for coll, c in run.my_colls.items() for idx, vid in c.versions.items()
                             if idx in run.their_colls.get(coll, CollectionRefs()).deleted}
    return run.deleted_there


def _carry_deletions(run: _Push) -> None:
    """Delete on the remote what was deleted here, where the remote holds what we
    last saw it hold there (after the alias moves, which removed the aliases we deleted)."""
    def knew(coll: CollectionPath, idx: int, oid: ObjectId) -> bool:
        key = version_ref(coll.entity, coll.project, coll.name, idx)
        return ref_value(run.tracked.get(key)) == ref_value(encode_value(oid)) or deleted_in_reflog(run.local, key, oid)

    deleted = carry_deletions(run.remote, deleted_at_source(run.my_colls, run.their_colls, knew), run.result,
                              f"deleted in {run.local.refs.who}'s store (push)", run.label)
    # No ref there names a version deleted there (its digest refs went with it):
    # tracking forgets those it recorded (see the end of push).
    gone_ids = {ref_value(encode_value(oid)) for _, _, oid in deleted}
    run.gone = [k for k, v in run.tracked.items() if ref_value(v) in gone_ids]
    for coll, idx, _ in deleted:
        run.final[version_ref(coll.entity, coll.project, coll.name, idx)] = b""
        latest = alias_ref(coll.entity, coll.project, coll.name, LATEST)
        if (value := run.remote.refs.read_raw(latest)) is not None:
            run.final[latest] = value


def _move_refs(run: _Push) -> None:
    """Move the planned aliases and runs: by CAS against the remote's value, or set outright if forced."""
    why = f"push from {run.local.refs.who}"
    for key, expected, new in run.moves:
        index_arriving_run(run.remote, key, ref_target(key, new))  # the lineage index before the ref
        try:
            if run.force:
                run.remote.refs.set(key, ref_target(key, new), why + " (forced)")
            else:
                run.remote.refs.set_if_equals(key, expected, ref_target(key, new), why)
        except Conflict as exc:
            raise NonFastForward(
                key, expected, exc.actual,
                f"push refused: {ref_display(key)} changed on {run.label} while pushing; run 'objstore pull' first",
            ) from None
        run.result.refs.append(key)
        run.final[key] = new
