"""push: send what a remote lacks, then move its refs (version refs create-only,
aliases and runs by CAS against the tracking state). Split from
:mod:`objstore.transfer.sync`.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

from objstore.errors import Conflict, NonFastForward, NotFound
from objstore.model.names import LATEST, CollectionPath
from objstore.model.refs import encode_value
from objstore.model.store import Store
from objstore.model.versions import advance_latest
from objstore.storage.ids import ObjectId
from objstore.storage.keys import alias_ref, digest_ref, ref_display, version_ref
from objstore.transfer.closure import _pack_target, copy_closure
from objstore.transfer.sync import Progress, TransferResult, _norm, _oid, parse_ref, read_refs, selection_prefixes
from objstore.transfer.tracking import Tracking, _add_runs, _Coll, _collections, _finish_stats, _registry_last, _remote_stats, runs_of

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
        for idx, version_id in sorted(c.versions.items()):
            other = theirs_c.versions.get(idx)
            if other is None:
                todo.append((idx, version_id))
            elif other != version_id:
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
            if hexd not in their_colls.get(coll, _Coll()).digests and (
                oid := _oid(digest_ref(coll.entity, coll.project, coll.name, hexd), raw)
            ):
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
        for idx, version_id in todo:
            key = version_ref(coll.entity, coll.project, coll.name, idx)
            if not remote.refs.create(key, version_id, why):
                actual = remote.refs.read_raw(key)
                if _oid(key, actual) != version_id:
                    raise NonFastForward(
                        key, None, actual,
                        f"push refused: {coll}:v{idx} was just pushed to {label} from elsewhere; "
                        f"run 'objstore pull' to re-base your versions after it, then push again",
                    )
            else:
                result.refs.append(key)
            final[key] = encode_value(version_id)
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
