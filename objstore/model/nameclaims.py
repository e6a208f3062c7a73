"""Case-folded name claims: the one place that makes "exactly one of two names
differing only in ASCII case wins" hold when both are created at the same instant.

A listing (:func:`objstore.model.versions.refuse_case_twin`) finds a twin that is
already in the store, but two processes that list at once both find none. So
before the first ref under a new entity, project, collection or user-given run
id, and before an alias is first set, its writer creates the claim ``names/<folded parts>/@``
(:func:`objstore.storage.keys.name_claim_key`) holding its exact spelling,
create-only. The folded key is the same for every spelling, so of two racing
writers exactly one creates it; the other reads the winner's spelling and gets
InvalidName before writing any ref.

Invariants:

- A claim is written after the writer's objects and before its refs (the write
  order), top-down (entity, then project, then the name), and never deleted; so
  a project's claim held by the writer's spelling vouches for its entity's (one
  read where both are claimed).
- A claim holding the writer's own spelling is success (re-running, another
  process of the same name): one read, no write.
- Stores written before claims existed have none: a missing claim is created
  after the caller's listing check (``unclaimed``), once per name per store.
- A name whose exact spelling already holds refs (a pair made before claims)
  is not refused: nothing new is made by using it.
- A claim whose spelling has nothing under it, and no claim below it, after
  :data:`~objstore.constants.NAME_CLAIM_STALE_SECONDS` was left by a writer that
  failed between claim and ref; it is taken over by compare-and-swap.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from objstore.constants import NAME_CLAIM_STALE_SECONDS
from objstore.errors import Conflict, InvalidName, NotFound
from objstore.model.store import Store
from objstore.storage.keys import REFS, alias_ref, collection_prefix, decode_name, name_claim_key, ref_display, refs_prefix, run_ref

MAX_CLAIM_BYTES = 2048  # a claim holds one ref prefix and a time
MAX_ATTEMPTS = 10


def _levels(entity: str, project: str | None, name: str | None, run_id: str | None) -> list[tuple[str, str]]:
    """(claim key, the exact ref prefix it claims) of each level, top-down."""
    out = [(name_claim_key(entity), refs_prefix(entity))]
    if project is not None:
        out.append((name_claim_key(entity, project), refs_prefix(entity, project)))
        if name is not None:
            out.append((name_claim_key(entity, project, name), collection_prefix(entity, project, name)))
        if run_id is not None:
            out.append((name_claim_key(entity, project, run_id=run_id), run_ref(entity, project, run_id)))
    return out


def claim_names(store: Store, entity: str, project: str | None = None, name: str | None = None, *,
                run_id: str | None = None, unclaimed: Callable[[], None] | None = None,
                skip_upper: bool = False) -> None:
    """Claim ``entity`` (and ``project``, and ``name`` or ``run_id`` in it) for
    their exact spellings, or raise InvalidName naming the spelling that holds the
    claim. ``unclaimed`` runs once, before the first claim this call creates: the
    caller's listing check for twins already in a store older than claims.
    ``skip_upper``: the entity and project are known good (the caller found them
    so spelled); only the name or run id is claimed."""
    pending = unclaimed
    levels = _levels(entity, project, name, run_id)
    if project is not None and not skip_upper:
        # Claims are made top-down, so the project's, held by this spelling, vouches
        # for the entity's too: one read where both are claimed already.
        held = _read(store, levels[1][0])
        skip_upper = held is not None and held[0] == levels[1][1]
    for key, spelled in levels[2:] if skip_upper and project is not None else levels:
        # The last level is the name the caller is making: most likely unclaimed, so
        # try to create its claim first (one request) unless a listing must come first.
        pending = _claim(store, key, spelled, pending, try_first=pending is None and key == levels[-1][0])


def claim_alias(store: Store, entity: str, project: str, name: str, alias: str, *,
                unclaimed: Callable[[], None] | None = None) -> None:
    """Claim ``alias`` of the collection ``entity/project/name`` (which holds a
    version, so its own names were claimed or checked when it was made) for its
    exact spelling, or raise InvalidName naming the spelling that holds it.
    ``unclaimed``: as for :func:`claim_names`. An alias moves and may be removed,
    but its claim stays, as its ref does (a removed alias is a tombstone, which
    holds its place on a case-insensitive file system): a twin of a removed alias
    stays refused, as the listing check refused it before claims. One read where
    the claim is this spelling's already."""
    key = name_claim_key(entity, project, name, alias=alias)
    _claim(store, key, alias_ref(entity, project, name, alias), unclaimed, try_first=False)


def _claim(store: Store, key: str, spelled: str, pending: Callable[[], None] | None, *,
           try_first: bool) -> Callable[[], None] | None:
    """Make or find the claim ``key`` held by ``spelled``; the listing check ``pending``
    if it has not run yet (None once it ran before a claim was created or taken)."""
    for _ in range(MAX_ATTEMPTS):
        if try_first:
            try_first = False
            if store.backend.put_if_absent(key, _value(spelled)):
                return pending
        held = _read(store, key)
        if held is None:
            if pending is not None:
                pending()
                pending = None
            if store.backend.put_if_absent(key, _value(spelled)):
                return pending
            continue  # someone claimed it just now: read whose it is
        if held[0] == spelled:
            return pending
        if _holds(store, spelled):
            return pending  # this spelling is in the store already (a pair older than claims): nothing new is made
        if _is_stale(store, key, held):
            if pending is not None:
                pending()  # as before a first claim: what the store already holds is checked
                pending = None
            try:
                store.backend.compare_and_swap(key, held[2], _value(spelled))
            except Conflict:
                pass  # another writer judged it first
            continue
        raise InvalidName(f"{_shown(spelled)!r} differs only in case from {_shown(held[0])!r} "
                          f"({ref_display(held[0]).rstrip('/')}, claimed by another writer): on a case-insensitive "
                          "file system (macOS, Windows) the two would share one place, so a store refuses the second; "
                          f"use {_shown(held[0])!r} or another name")
    raise Conflict(key, None, None, f"the name claim {key} kept changing; retry")


def _shown(spelled: str) -> str:
    """The last name of a claimed ref prefix, as people wrote it."""
    part = spelled.rstrip("/").rsplit("/", 1)[-1]
    try:
        return decode_name(part)
    except InvalidName:
        return part


def _value(spelled: str) -> bytes:
    return f"{spelled}\n{time.time():.3f}".encode()


def _read(store: Store, key: str) -> tuple[str, float, bytes] | None:
    try:
        raw = store.backend.get(key, max_size=MAX_CLAIM_BYTES)
    except NotFound:
        return None
    spelled, _, when = raw.decode("utf-8", "replace").partition("\n")
    try:
        stamp = float(when)
    except ValueError:
        stamp = 0.0  # unreadable time: old enough to be judged by what is under it
    return spelled, stamp, raw


def _is_stale(store: Store, key: str, held: tuple[str, float, bytes]) -> bool:
    """Whether the claim ``held`` at ``key`` is old, its spelling holds no key, and no
    claim below it vouches for it (a writer failed between its claim and its first ref)."""
    spelled, stamp, _ = held
    if time.time() - stamp < NAME_CLAIM_STALE_SECONDS or not spelled.startswith(REFS):
        return False  # young, or no claim objstore writes: never judged stale
    below = (info.key for info in store.backend.iter_prefix(key.removesuffix("@")) if info.key != key)
    return next(below, None) is None and not _holds(store, spelled)


def _holds(store: Store, spelled: str) -> bool:
    """Whether any key lies under the ref prefix ``spelled`` (ending in ``/``), or
    the ref ``spelled`` is stored (an alias or run ref: the listing also finds
    longer names, ``Best2`` for ``Best``, which are not it). A removed alias's
    tombstone counts: it holds that place on a case-insensitive file system."""
    if not spelled.startswith(REFS):
        return False
    found = (info.key for info in store.backend.iter_prefix(spelled))
    return next((k for k in found if spelled.endswith("/") or k == spelled), None) is not None
