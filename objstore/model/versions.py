"""Versions, aliases and registry links of collections, on refs alone.

Dense numbering without a lock: a writer stores its version object, then claims
``versions/v<N>`` with a create-only write; if another writer got there first it
rebuilds the version as N+1 and tries again. Create-only writes are atomic on
every backend (O_EXCL-style link locally, If-None-Match on S3), so numbers stay
dense however many processes or machines log at once.

``latest`` moves through every version in order: whoever finds it at v<K> below
its own version moves it to v<K+1> by compare-and-swap (helping slower writers
along), so each version is ``latest`` once, the reflog of ``latest`` has one entry
per version, and a writer that crashed after claiming its number never leaves
``latest`` behind for good.

A deleted version (:mod:`objstore.model.deletion`) leaves a tombstone (an
empty value) at ``versions/v<N>``: its number is never claimed again, ``latest``
passes over it, and a digest ref still naming it is stale, so logging the same
content again makes a new version. Deleting the version ``latest`` holds moves
``latest`` back to the newest version left (:func:`retreat_latest`), by
compare-and-swap: a writer that moved it forward meanwhile keeps its move.

A registered model (``<entity>/model-registry/<name>``) is a collection whose
versions are :class:`~objstore.storage.objects.Link` objects pointing at versions logged
elsewhere.

A ref says where its object belongs, and the object says it too: a version
names its ``entity/project/name`` and number, a link its registered model,
number and target. Every entry read through a collection is checked to be one
of that collection's, and to be what the ref it was read from promises
(:func:`read_entry` with ``ref``: ``versions/vN`` holds number N,
``digests/<tree>`` that tree). Every reader passes the ref it followed: a
selector (:func:`resolve`), a log finding its content by digest, the number of
``latest`` a log starts from and the version ``latest`` moves onto, so one
edited ref never serves another version's bytes, never makes a log skip
numbers and never spins ``latest`` in place. :func:`check_ref` is the whole
rule for any ref key and value (names by the name rules, kind, collection,
number, digest, run), used by fsck and by pull/clone for every ref they take.
A ref pointing elsewhere is a :class:`Misplaced` (a
:class:`~objstore.errors.CorruptObject`) naming the ref, never another
collection's bytes.

Digest refs are this module's: ``digests/<tree>`` holds the entry of the
collection whose content is ``tree`` (for a registry, the tree of the version
linked), so logging that content again finds it. They are derived from the
entries, so they are only ever created (create-only: the first entry found with
that content keeps it) or, when pull re-bases the entry one names, re-pointed
at its copy. Push and pull ask here (:func:`digest_targets`,
:func:`create_digest_ref`) rather than writing digest keys themselves.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from objstore import faults
from objstore.errors import Conflict, CorruptObject, InvalidInput, InvalidName, NotFound, did_you_mean
from objstore.model.nameclaims import claim_alias, claim_names
from objstore.model.names import LATEST, CollectionPath, VersionSpec, check_alias, check_name, version_index
from objstore.model.refs import ReflogEntry, decode_value, encode_value
from objstore.model.store import Store
from objstore.storage.ids import ObjectId
from objstore.storage.keys import (
    REFS,
    alias_ref,
    aliases_prefix,
    case_twin,
    collection_prefix,
    digest_ref,
    has_ref_shape,
    parse_part_ref,
    parse_ref_key,
    ref_display,
    ref_key_parts,
    refs_prefix,
    version_ref,
)
from objstore.storage.objects import Link, RunRecord, Version

_HEX = re.compile(r"[0-9a-f]{8,64}")
_SHORT_HEX = re.compile(r"[0-9a-f]{1,7}")
_TREE_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class ResolvedVersion:
    """A version as addressed in one collection. For a registry entry, ``link`` is
    the link and ``version``/``version_id`` the version it points at."""

    collection: CollectionPath
    index: int
    object_id: ObjectId  # what the collection's ref holds (a version, or a link)
    version_id: ObjectId
    version: Version
    link: Link | None = None

    @property
    def name(self) -> str:
        return f"{self.collection.name}:v{self.index}"

    @property
    def qualified_name(self) -> str:
        return f"{self.collection}:v{self.index}"


def read_version(store: Store, oid: ObjectId) -> Version:
    obj = store.odb.get_object(oid)
    if not isinstance(obj, Version):
        raise CorruptObject(f"object {oid.hex[:16]} should be a version", object_id=oid.hex)
    return obj


def read_entry(store: Store, coll: CollectionPath, oid: ObjectId, *, ref: str | None = None) -> ResolvedVersion:
    """Resolve what a collection ref points at (a version, or a link to one).

    Raises CorruptObject (naming ``ref`` when given) if the object is not an
    entry of ``coll``: a version of another collection, another registered
    model's link, or a link whose target is not the version it names; and, when
    ``ref`` is the key it was read from, if it is not what that key promises
    (``versions/vN``: number N; ``digests/<tree>``: that tree).
    """
    obj = store.odb.get_object(oid)
    if isinstance(obj, Version):
        entry = ResolvedVersion(coll, obj.index, oid, oid, obj)
    elif isinstance(obj, Link):
        entry = ResolvedVersion(coll, obj.index, oid, obj.target, read_version(store, obj.target), obj)
    else:
        raise CorruptObject(f"object {oid.hex[:16]} in {coll} is neither a version nor a link", object_id=oid.hex)
    why = _foreign(coll, entry) or (_not_as_promised(ref, entry) if ref else None)
    if why is not None:
        raise misplaced(f"ref {ref}" if ref else f"an entry of {coll}", oid, why)
    return entry


def _not_as_promised(ref: str, entry: ResolvedVersion) -> str | None:
    """Why ``entry`` is not what ref key ``ref`` promises (its number, its tree); None if it is."""
    key = parse_ref_key(ref)
    if key is None:
        return None
    if key.kind == "version" and key.tail != f"v{entry.index}":
        return f"{entry.qualified_name}, not {key.tail}"
    if key.kind == "digest" and key.tail != entry.version.tree.hex:
        return f"{entry.qualified_name}, which holds tree {entry.version.tree.hex[:16]}"
    return None


def _foreign(coll: CollectionPath, entry: ResolvedVersion) -> str | None:
    """Why ``entry``, read through ``coll``, is not one of ``coll``'s entries; None if it is."""
    if entry.link is None:
        v = entry.version
        if (v.entity, v.project, v.name) != (coll.entity, coll.project, coll.name):
            return f"{v.label}, a version of another collection"
        return None
    if entry.link.registry != str(coll):
        return f"{entry.link.registry}:v{entry.link.index}, an entry of another registered model"
    return None


class Misplaced(CorruptObject):
    """A ref holding a readable object that belongs elsewhere (another collection,
    number, tree or run): the store was edited or damaged."""


def misplaced(where: str, oid: ObjectId, why: str) -> Misplaced:
    """The error for a ref (``where``: "ref <key>") whose object does not belong there."""
    return Misplaced(
        f"{where} points at {why} (object {oid.hex[:16]}); the store was edited or damaged, "
        "refusing to use it (objstore fsck lists such refs)", object_id=oid.hex,
    )


def check_ref(store: Store, key: str, oid: ObjectId | None) -> None:
    """Check that ref ``key`` may hold ``oid`` (None: a tombstone); CorruptObject naming it if not.

    The key's parts must obey the name rules (so an alias is never ``vN``, a
    version ref is exactly ``v<N>``, a digest ref a full tree id), and its object
    must be what that place holds: an entry of the collection (numbered N for
    ``versions/vN``, holding that tree for ``digests/<tree>``), or the run of that
    entity, project and id. Keys outside the ref layout are not objstore's and pass.
    """
    ref = parse_ref_key(key)
    if ref is None:
        if has_ref_shape(key):  # laid out as a ref, but a part is no encoded name
            raise CorruptObject(f"ref {key} has a name objstore never writes (not encoded as keys.encode_name "
                                f"encodes names); refusing to use it", object_id=key)
        return
    try:
        check_name(ref.entity, "entity")
        check_name(ref.project, "project")
        if ref.kind == "run":
            check_name(ref.tail, "run id")
        else:
            check_name(ref.name, "artifact name")
            if ref.kind == "alias":
                check_alias(ref.tail)
            elif ref.kind == "version" and f"v{version_index(ref.tail)}" != ref.tail:
                raise InvalidName(f"{ref.tail!r} is not v<number>")
            elif ref.kind == "digest" and not _TREE_HEX.fullmatch(ref.tail):
                raise InvalidName(f"{ref.tail!r} is not a tree id")
    except InvalidName as exc:
        raise CorruptObject(f"ref {key} has a name objstore never writes ({exc}); refusing to use it", object_id=key) from None
    if oid is None:
        return
    if ref.kind == "run":
        run = store.odb.get_object(oid)
        if not isinstance(run, RunRecord):
            raise misplaced(f"ref {key}", oid, f"a {type(run).__name__}, not a run")
        if (run.entity, run.project, run.id) != (ref.entity, ref.project, ref.tail):
            raise misplaced(f"ref {key}", oid, f"run {run.path}")
        return
    read_entry(store, CollectionPath(ref.entity, ref.project, ref.name), oid, ref=key)


def _entry_index(store: Store, oid: ObjectId) -> int:
    obj = store.odb.get_object(oid)
    if isinstance(obj, (Version, Link)):
        return obj.index
    raise CorruptObject(f"object {oid.hex[:16]} should be a version or a link", object_id=oid.hex)


def list_versions(store: Store, coll: CollectionPath) -> list[tuple[int, ObjectId]]:
    """(index, object id) of every version of a collection, oldest first."""
    prefix = collection_prefix(coll.entity, coll.project, coll.name) + "versions/"
    out = []
    for ref, oid in store.refs.iter_refs(prefix):
        idx = version_index(ref.rsplit("/", 1)[-1])
        if idx is not None:
            out.append((idx, oid))
    return sorted(out)


def list_aliases(store: Store, coll: CollectionPath) -> dict[str, ObjectId]:
    prefix = collection_prefix(coll.entity, coll.project, coll.name) + "aliases/"
    out = {}
    for ref, oid in store.refs.iter_refs(prefix):
        parsed = parse_ref_key(ref)  # decodes the alias (keys.encode_name)
        if parsed is not None and parsed.kind == "alias":
            out[parsed.tail] = oid
    return out


def aliases_for(store: Store, coll: CollectionPath, oid: ObjectId) -> list[str]:
    return sorted(a for a, target in list_aliases(store, coll).items() if target == oid)


def collection_exists(store: Store, coll: CollectionPath) -> bool:
    """Whether ``coll`` holds a version: v0 does, else (v0 deleted) ``latest`` names one.
    One read for most collections; a deleted collection (objstore.model.deletion)
    has tombstones for versions and no ``latest``."""
    raw = store.refs.read_raw(version_ref(coll.entity, coll.project, coll.name, 0))
    return bool(raw) or (raw is not None and store.refs.read(alias_ref(coll.entity, coll.project, coll.name, LATEST)) is not None)


def resolve(store: Store, spec: VersionSpec) -> ResolvedVersion:
    """The version ``spec`` names, or NotFound saying what exists instead.

    The entry found is checked to be the one the ref's place promises (see
    :func:`read_entry`): of this collection, with this number for ``vN``, this
    tree for a digest.
    """
    coll, selector = spec.collection, spec.selector
    idx = version_index(selector)
    oid: ObjectId | None = None
    if idx is not None:
        ref = version_ref(coll.entity, coll.project, coll.name, idx)
        oid = store.refs.read(ref)
    else:
        ref = alias_ref(coll.entity, coll.project, coll.name, selector)
        oid = store.refs.read(ref)
        if oid is None and _HEX.fullmatch(selector):
            ref, oid = _find_by_digest(store, coll, selector)
    if oid is None:
        if idx is not None and store.refs.read_raw(ref) == b"":
            raise NotFound(f"{coll}:v{idx} was deleted; it has {_describe(store, coll)}", key=str(spec))
        if not collection_exists(store, coll):
            raise missing_collection(store, coll)
        raise NotFound(f"{coll} has no version {selector!r}; it has {_describe(store, coll)}"
                       f"{_selector_hint(store, coll, selector)}", key=str(spec))
    return read_entry(store, coll, oid, ref=ref)


def missing_collection(store: Store, coll: CollectionPath) -> NotFound:
    """The error for a collection the store lacks, naming what the user may have meant:
    the same name in other projects (``demo/llm`` when ``llm`` was looked up in
    ``uncategorized``), else the closest names in the project (``lmm`` -> ``llm``)."""
    elsewhere = [CollectionPath(e, p, coll.name) for e, p in list_projects(store)
                 if (e, p) != (coll.entity, coll.project) and collection_exists(store, CollectionPath(e, p, coll.name))]
    if elsewhere:
        shown = [f"{c.project}/{c.name}" if c.entity == coll.entity else str(c) for c in elsewhere[:5]]
        hint = f"; {' and '.join(shown)} exist{'s' if len(shown) == 1 else ''} (give the project, or set OBJSTORE_PROJECT)"
    else:
        hint = did_you_mean(coll.name, (c.name for c in list_collections(store, coll.entity, coll.project)))
    return NotFound(f"no artifact {coll} in the store at {store.location}{hint or '; check the name (objstore ls lists them)'}",
                    key=str(coll))


def _selector_hint(store: Store, coll: CollectionPath, selector: str) -> str:
    """What a selector that found nothing may have meant: a close alias, or the digest-prefix rule."""
    hint = did_you_mean(selector, list_aliases(store, coll))
    if _SHORT_HEX.fullmatch(selector):
        hint += "; a digest prefix needs at least 8 hex digits (objstore log shows the digests)"
    return hint


def _describe(store: Store, coll: CollectionPath) -> str:
    versions = list_versions(store, coll)
    aliases = sorted(list_aliases(store, coll))
    text = f"v0..v{versions[-1][0]}" if versions else "no versions"
    return text + (f" and aliases {', '.join(aliases)}" if aliases else "")


def _find_by_digest(store: Store, coll: CollectionPath, prefix: str) -> tuple[str, ObjectId | None]:
    """(the digest ref, the entry it holds) for a digest prefix; the entry is None if none matches."""
    base = collection_prefix(coll.entity, coll.project, coll.name) + "digests/"
    matches = dict(store.refs.iter_refs(base + prefix))
    if len(set(matches.values())) > 1:
        raise InvalidName(f"digest prefix {prefix!r} matches several versions of {coll}; give more digits")
    for key, oid in matches.items():
        return key, oid
    return base + prefix, None


def commit_version(
    store: Store,
    coll: CollectionPath,
    *,
    tree: ObjectId,
    size: int,
    new_bytes: int,
    artifact_type: str,
    metadata: dict[str, Any],
    description: str | None,
    run: str | None,
    aliases: tuple[str, ...] = (),
    before_ref: Callable[[], None] | None = None,
) -> tuple[ResolvedVersion, bool]:
    """Make ``tree`` a version of ``coll`` (or find the version that already holds it).

    Returns (version, created). Everything ``tree`` references must already be
    stored. ``latest`` and ``aliases`` are moved to the version either way.
    ``before_ref`` runs before any ref is written, once the collection's names
    are known good (it exists so spelled, or its names were just claimed).
    """
    def make(n: int, parent: ObjectId | None) -> Version:
        return Version(tree, parent, artifact_type, coll.entity, coll.project, coll.name, n, size,
                       new_bytes, description, metadata, time.time(), run)

    return _add_entry(store, coll, tree, make, aliases, before_ref, artifact_type)


def link_version(store: Store, registry: CollectionPath, target: ResolvedVersion, *, run: str | None,
                 aliases: tuple[str, ...] = ()) -> tuple[ResolvedVersion, bool]:
    """Link ``target`` into the registered model ``registry``.

    A registered model holds each content once: linking a version whose tree is
    already linked (even when logged by another run under another name) returns
    the existing registry version.
    """
    v = target.version

    def make(n: int, parent: ObjectId | None) -> Link:
        return Link.to_version(str(registry), n, target.version_id, v, time.time(), run)

    return _add_entry(store, registry, v.tree, make, aliases)


def _add_entry(store: Store, coll: CollectionPath, tree: ObjectId, make: Callable[[int, ObjectId | None], Version | Link],
               aliases: tuple[str, ...], before_ref: Callable[[], None] | None = None,
               artifact_type: str | None = None) -> tuple[ResolvedVersion, bool]:
    """Claim the next dense number of ``coll`` for the entry ``make(n, parent)``
    returns, unless an entry already holds ``tree``; then move latest and aliases.
    With ``artifact_type``, a collection whose latest version has another is refused.

    What this writer read or wrote itself is not read again: the number and id
    ``latest`` held (the hint, and the parent of the next number), the entry it
    just stored, and the value of ``latest`` it swaps against."""
    digest_key = digest_ref(coll.entity, coll.project, coll.name, tree.hex)
    latest_key = alias_ref(coll.entity, coll.project, coll.name, LATEST)
    existing = _live_digest(store, coll, digest_key)
    found_at = digest_key  # the ref ``existing`` was read from: the entry must be what it promises
    created = existing is None
    latest_raw = store.refs.read_raw(latest_key)
    latest = _latest_entry(store, coll, latest_raw, artifact_type)
    mine: ResolvedVersion | None = None
    movable = _claim_new_names(store, coll, digest_key, aliases, new_collection=existing is None and latest[0] < 0)
    if before_ref is not None:
        before_ref()
    if existing is None:
        n = latest[0] + 1
        while True:
            ref = version_ref(coll.entity, coll.project, coll.name, n)
            obj = make(n, _parent_of(store, coll, n, latest))
            oid = store.odb.put_object(obj)
            # Create-only: a number someone holds already answers False, read below;
            # a deleted one (a tombstone, objstore.model.deletion) reads as None and
            # is passed over, so a number is never given twice.
            if store.refs.create(ref, oid, f"add {coll.name}:v{n}"):
                faults.point("claim")
                break
            held = store.refs.read(ref)
            # v<n> is taken, perhaps by this very content: a racing writer of it, or
            # one that crashed between its version ref and its digest ref.
            existing, found_at = store.refs.read(digest_key), digest_key
            if existing is None:
                existing, found_at = _holding(store, coll, ref, held, tree), ref
            if existing is not None:
                created = False
                break
            n += 1
        if created:
            # Derived from the version ref just created, whose reflog entry records
            # this very event: a second entry would cost a request and say nothing new.
            store.refs.create(digest_key, oid, f"digest of {coll.name}:v{n}", log=False)
            existing, found_at = oid, ref
            if isinstance(obj, Version):  # just written: no need to read it back
                mine = ResolvedVersion(coll, n, oid, oid, obj)
        else:
            assert existing is not None  # the claim loop ends uncreated only on finding an entry that holds tree
            store.refs.create(digest_key, existing, f"digest of {coll.name}, restored")
    assert existing is not None
    entry = mine if mine is not None else read_entry(store, coll, existing, ref=found_at)
    advance_latest(store, coll, entry.index, known=(latest_raw, latest[0]), mine=(found_at, entry))
    for alias in movable:
        set_alias(store, coll, alias, entry.object_id, index=entry.index, claimed=True)
    return entry, created


def _claim_new_names(store: Store, coll: CollectionPath, digest_key: str, aliases: tuple[str, ...], *,
                     new_collection: bool) -> tuple[str, ...]:
    """Before any ref of a new entry: refuse a case twin of a new collection's name and
    of each alias (of two racing twins one wins here); the aliases to set, latest left out
    (moved to the newest version by the store)."""
    if new_collection:  # perhaps: its name must have no case twin
        refuse_case_twin(store, [digest_key], [refs_prefix(coll.entity, coll.project)])
        claim_names(store, coll.entity, coll.project, coll.name)
    movable = tuple(a for a in aliases if a != LATEST)
    for alias in movable:  # a refused alias twin leaves no version behind
        claim_alias_of(store, coll, alias)
    return movable


def _live_digest(store: Store, coll: CollectionPath, digest_key: str) -> ObjectId | None:
    """The entry digest ref ``digest_key`` holds, unless that entry was deleted
    (objstore.model.deletion): then the ref goes, and the content is new again."""
    existing = store.refs.read(digest_key)
    if existing is not None and _is_deleted(store, coll, existing, digest_key):
        store.refs.remove(digest_key, "its version was deleted")
        return None
    return existing


def _parent_of(store: Store, coll: CollectionPath, n: int, latest: tuple[int, ObjectId | None]) -> ObjectId | None:
    """The entry v<n-1> holds: what ``latest`` holds when it is at n-1 (the common case, no read)."""
    if n == 0:
        return None
    if latest[0] == n - 1:
        return latest[1]
    return store.refs.read(version_ref(coll.entity, coll.project, coll.name, n - 1))


def _is_deleted(store: Store, coll: CollectionPath, oid: ObjectId, ref: str) -> bool:
    """Whether entry ``oid`` of ``coll`` (held by ``ref``) was deleted: its version ref is a tombstone."""
    entry = _readable_entry(store, coll, oid, ref)
    if entry is None:
        return False
    return store.refs.read_raw(version_ref(coll.entity, coll.project, coll.name, entry.index)) == b""


def _latest_entry(store: Store, coll: CollectionPath, raw: bytes | None,
                  artifact_type: str | None = None) -> tuple[int, ObjectId | None]:
    """(number, id) of the entry ``latest`` holds (raw value ``raw``); (-1, None) if none.

    With ``artifact_type``: W&B's refusal (its message; InvalidInput is a ValueError)
    to log another type than the collection's, as that entry has it, read here anyway,
    so the check costs no request; before any ref, so a refused log leaves none."""
    ref = alias_ref(coll.entity, coll.project, coll.name, LATEST)
    oid = None if raw is None else decode_value(ref, raw)
    if oid is None:
        return -1, None
    try:
        entry = read_entry(store, coll, oid, ref=ref)
    except Misplaced:
        raise
    except CorruptObject:
        return _index_of(store, coll, oid, ref), oid  # fsck reports it; its type is unknown
    known = entry.version.artifact_type
    if artifact_type is not None and known != artifact_type:
        raise InvalidInput(f"Artifact {coll.name} already exists with type '{known}'; "
                           f"cannot create another with type '{artifact_type}'")
    return entry.index, oid


def _holding(store: Store, coll: CollectionPath, ref: str, oid: ObjectId | None, tree: ObjectId) -> ObjectId | None:
    """``oid``, held by version ref ``ref``, if that entry holds ``tree`` (a damaged
    entry is not ours). One that belongs elsewhere is refused (Misplaced) before
    any later number is claimed."""
    entry = None if oid is None else _readable_entry(store, coll, oid, ref)
    return oid if entry is not None and entry.version.tree == tree else None


def _readable_entry(store: Store, coll: CollectionPath, oid: ObjectId, ref: str) -> ResolvedVersion | None:
    """The entry ``ref`` holds; None if its object is damaged (fsck reports it, and
    latest still moves past it). One that belongs elsewhere is refused (Misplaced)."""
    try:
        return read_entry(store, coll, oid, ref=ref)
    except Misplaced:
        raise
    except (CorruptObject, NotFound):
        return None


def _restore_digest_ref(store: Store, coll: CollectionPath, entry: ResolvedVersion) -> None:
    """Create the digest ref of ``entry`` if its writer died before doing so,
    so logging that content again finds it instead of adding a duplicate version."""
    key = digest_ref(coll.entity, coll.project, coll.name, entry.version.tree.hex)
    if not store.refs.exists(key):
        store.refs.create(key, entry.object_id, f"digest of {coll.name}, restored")


def digest_targets(coll: CollectionPath, digests: Mapping[str, bytes]) -> Iterator[tuple[str, ObjectId]]:
    """(digest ref key, entry it holds) for the digest refs of ``coll`` in a ref
    snapshot (``digests``: tree hex -> raw value); tombstones left out. A value
    that is not an id raises :class:`~objstore.errors.CorruptObject` naming the ref."""
    for tree_hex, raw in digests.items():
        key = digest_ref(coll.entity, coll.project, coll.name, tree_hex)
        oid = decode_value(key, raw)
        if oid is not None:
            yield key, oid


def create_digest_ref(store: Store, key: str, entry: ObjectId, why: str) -> bool:
    """Create digest ref ``key`` (one :func:`digest_targets` named) holding ``entry``,
    unless ``store`` has it already: a digest ref is never moved, so the entry a
    store first found with that content keeps it. True if created."""
    return store.refs.create(key, entry, why)


def _latest_index(store: Store, coll: CollectionPath, raw: bytes | None) -> int:
    """The number of the entry ``latest`` holds (raw value ``raw``), -1 if none.

    Checked to be an entry of ``coll``: a number taken from another collection's
    version would make the next log skip numbers, or never move latest again."""
    ref = alias_ref(coll.entity, coll.project, coll.name, LATEST)
    oid = None if raw is None else decode_value(ref, raw)
    return -1 if oid is None else _index_of(store, coll, oid, ref)


def _index_of(store: Store, coll: CollectionPath, oid: ObjectId, ref: str) -> int:
    """The number of entry ``oid`` of ``coll``, held by ``ref``: from the object, or,
    if that cannot be decoded (fsck reports it), from the version ref that holds it,
    so one damaged entry does not stop the collection from growing. An entry that
    belongs elsewhere is refused (Misplaced), never numbered."""
    try:
        return read_entry(store, coll, oid, ref=ref).index
    except Misplaced:
        raise
    except CorruptObject:
        for idx, held in list_versions(store, coll):
            if held == oid:
                return idx
        raise


def advance_latest(store: Store, coll: CollectionPath, upto: int, *, known: tuple[bytes | None, int] | None = None,
                   mine: tuple[str, ResolvedVersion] | None = None) -> None:
    """Move ``latest`` forward, one version at a time, until it is at least v<upto>.

    ``known``: latest's raw value and number as the caller just read them (tried
    first; a Conflict reads them again); ``mine``: the version ref and entry of
    v<upto> the caller holds, so it is not read back (until it is found deleted:
    then its ref is read like any other, so the loop passes over its tombstone)."""
    ref = alias_ref(coll.entity, coll.project, coll.name, LATEST)
    for _ in range(10_000):
        if known is not None:
            (raw, k), known = known, None
        else:
            raw = store.refs.read_raw(ref)
            k = _latest_index(store, coll, raw)
        if k >= upto:
            return
        j = k + 1
        entry: ResolvedVersion | None
        nxt: ObjectId | None
        while True:
            nxt_ref = version_ref(coll.entity, coll.project, coll.name, j)
            if mine is not None and mine[1].index == j and mine[0] == nxt_ref:
                nxt, entry = mine[1].object_id, mine[1]
                break
            nxt_raw = store.refs.read_raw(nxt_ref)
            if nxt_raw != b"":
                if nxt_raw is None:
                    return  # a later version's writer is still claiming it; it will move latest itself
                nxt = decode_value(nxt_ref, nxt_raw)
                assert nxt is not None
                # Checked before latest moves onto it: an entry numbered otherwise would
                # leave latest where it is, and this loop moving it there again and again.
                entry = _readable_entry(store, coll, nxt, nxt_ref)
                break
            j += 1  # v<j> was deleted: its number stays taken, latest passes over it
        if j != upto and entry is not None:
            # Moving latest past another writer's version: that writer may have died
            # before its digest ref; restore it (create-only, so a live one loses nothing).
            _restore_digest_ref(store, coll, entry)
        try:
            store.refs.set_if_equals(ref, raw, nxt, f"v{j} is the newest version")
        except Conflict:
            continue
        if store.refs.read_raw(nxt_ref) == b"":
            # Deleted meanwhile. Its deleter tombstones, then looks at latest; this moves
            # latest, then looks at the tombstone: one of the two sees the other, so
            # latest never stays on a deleted version.
            retreat_latest(store, coll, nxt)
            if mine is not None and mine[0] == nxt_ref:
                mine = None  # from now on its ref is read, and its tombstone passed over
            continue
        if j >= upto:
            return  # moved there by this very swap: nothing to read again
        known = (encode_value(nxt), j)
    raise Conflict(ref, None, None, f"could not move latest of {coll}; retry")


def retreat_latest(store: Store, coll: CollectionPath, deleted: ObjectId) -> bool:
    """Move ``latest`` off the entry ``deleted`` (whose version ref is already a
    tombstone) to the newest entry left, or remove it if none is; by
    compare-and-swap, so a writer that moved it to a newer version meanwhile
    keeps its move. True if this call moved it."""
    ref = alias_ref(coll.entity, coll.project, coll.name, LATEST)
    for _ in range(10_000):
        raw = store.refs.read_raw(ref)
        if raw is None or decode_value(ref, raw) != deleted:
            return False
        left = list_versions(store, coll)  # tombstones are not listed
        newest = left[-1][1] if left else None
        why = f"v{left[-1][0]} is the newest version left" if left else "no version left"
        try:
            store.refs.set_if_equals(ref, raw, newest, why)
            return True
        except Conflict:
            continue
    raise Conflict(ref, None, None, f"could not move latest of {coll}; retry")


def _check_movable(alias: str) -> str:
    check_alias(alias)
    if alias == LATEST:
        raise InvalidInput(f"alias {LATEST!r} is managed by the store: it moves by itself to each new version "
                           "and is never set or removed by hand; use another alias")
    return alias


def claim_alias_of(store: Store, coll: CollectionPath, alias: str) -> None:
    """InvalidName if ``alias`` (not ``latest``) has a case twin in ``coll``: one already
    set (a listing, where no claim holds the alias yet: a store older than claims)
    or one another writer is setting at this instant (the claim decides,
    :func:`objstore.model.nameclaims.claim_alias`). One read where claimed already."""
    _check_movable(alias)
    ref = alias_ref(coll.entity, coll.project, coll.name, alias)
    claim_alias(store, coll.entity, coll.project, coll.name, alias, unclaimed=lambda: refuse_case_twin(
        store, [ref], [aliases_prefix(coll.entity, coll.project, coll.name)]))


def set_alias(store: Store, coll: CollectionPath, alias: str, oid: ObjectId, *, index: int | None = None,
              claimed: bool = False) -> None:
    """Point ``alias`` at entry ``oid`` of ``coll``, whatever it points at now (W&B:
    adding an alias to a version moves it there). Not ``latest``. ``index``: the
    entry's number, when the caller knows it (else read from the entry).
    ``claimed``: :func:`claim_alias_of` passed already (else it is called here)."""
    _check_movable(alias)
    if not claimed:
        claim_alias_of(store, coll, alias)
    number = _entry_index(store, oid) if index is None else index
    store.refs.set(alias_ref(coll.entity, coll.project, coll.name, alias), oid, f"alias {alias} -> v{number}")


def move_alias(store: Store, coll: CollectionPath, alias: str, oid: ObjectId, *, expected: ObjectId | None) -> None:
    """Point ``alias`` at entry ``oid`` only if it still points at ``expected`` (None: unset).

    For a caller that showed a person where the alias was (a web page) and must
    not overwrite a move someone else made since: one compare-and-swap against
    the value read, Conflict if the alias is elsewhere now. Not ``latest``.
    """
    _check_movable(alias)
    ref = alias_ref(coll.entity, coll.project, coll.name, alias)
    raw = store.refs.read_raw(ref)
    now = decode_value(ref, raw) if raw is not None else None
    if raw is None and expected is None:
        claim_alias_of(store, coll, alias)  # a new alias: a twin of it is refused, as by set_alias
    if now != expected:
        raise Conflict(ref, encode_value(expected), raw,
                       f"alias {alias!r} of {coll} was moved by someone else meanwhile; reload and decide again")
    store.refs.set_if_equals(ref, raw, oid, f"alias {alias} -> v{_entry_index(store, oid)}")


def alias_history(store: Store, coll: CollectionPath, oid: ObjectId | None = None, *,
                  include_latest: bool = True) -> list[ReflogEntry]:
    """Every move of ``coll``'s aliases (``latest`` included unless told), oldest first,
    from their reflogs; with ``oid``, only the moves onto or off that entry. The
    reflog of ``latest`` has an entry per version, so leaving it out is what keeps
    one version's history from costing a read per version of its collection."""
    prefix = collection_prefix(coll.entity, coll.project, coll.name) + "aliases/"
    latest = alias_ref(coll.entity, coll.project, coll.name, LATEST)
    moves = [e for key in store.refs.iter_names(prefix) if include_latest or key != latest
             for e in store.refs.reflog(key) if oid is None or oid in (e.old, e.new)]
    return sorted(moves, key=lambda e: e.when)


def remove_alias_from(store: Store, coll: CollectionPath, alias: str, oid: ObjectId, *, attempts: int = 100) -> bool:
    """Remove ``alias`` if it still points at ``oid``; True if this call removed it.

    By compare-and-swap against the value read, so an alias another writer
    moved to another version meanwhile is left where they put it.
    """
    _check_movable(alias)
    ref = alias_ref(coll.entity, coll.project, coll.name, alias)
    for _ in range(attempts):
        raw = store.refs.read_raw(ref)
        if raw is None or store.refs.read(ref) != oid:
            return False
        try:
            store.refs.set_if_equals(ref, raw, None, f"alias {alias} removed from v{_entry_index(store, oid)}")
            return True
        except Conflict:
            continue
    raise Conflict(ref, None, store.refs.read_raw(ref), f"{ref} kept changing under {attempts} attempts; retry later")


def delete_alias(store: Store, coll: CollectionPath, alias: str) -> None:
    _check_movable(alias)
    ref = alias_ref(coll.entity, coll.project, coll.name, alias)
    if store.refs.read(ref) is None:
        raise NotFound(f"{coll} has no alias {alias!r}", key=ref)
    store.refs.set(ref, None, f"alias {alias} removed")


def refuse_case_twin(store: Store, keys: Iterable[str], within: Iterable[str] = ()) -> None:
    """InvalidName if two of ``keys`` (refs about to be made), or one and a ref
    under the prefixes ``within``, would share one place on a case-insensitive file
    system (:func:`objstore.storage.keys.case_twin`). Where a key's project holds
    no collection yet, its entity and project names are new too and every ref is
    looked at. Run refs count only against a run id. This finds twins already in
    the store; two writers making twins at the same instant are decided by the
    name claims (:mod:`objstore.model.nameclaims`), which also check a run with a
    random id when its record is first written. A listing per prefix (and of a
    key's project when not listed): called only where collections, aliases or
    runs are first made, here or by a transfer."""
    keys = list(keys)
    listed = {prefix: list(store.refs.iter_names(prefix)) for prefix in dict.fromkeys(within)}
    existing = [k for held in listed.values() for k in held]
    projects = {refs_prefix(r.entity, r.project) for r in map(parse_ref_key, keys) if r is not None}
    if any(not _holds_refs(store, project, listed) for project in projects):
        existing = list(store.refs.iter_names(REFS))
    if not any((r := parse_ref_key(k)) is not None and r.kind == "run" for k in keys):
        existing = [k for k in existing if (r := parse_ref_key(k)) is None or r.kind != "run"]
    twin = case_twin(keys, existing)
    if twin is not None:
        raise InvalidName(f"{twin.name!r} differs only in case from {twin.twin!r} ({ref_display(twin.existing)}): "
                          "on a case-insensitive file system (macOS, Windows) the two would share one place, "
                          f"so a store refuses the second; use {twin.twin!r} or another name")


def _holds_refs(store: Store, project: str, listed: dict[str, list[str]]) -> bool:
    """Whether ``project`` holds a collection's ref: made where its entity and
    project names were checked. Run refs do not count: a run record with a new
    random id is made unchecked (a look-up per run start would cost every
    ``use_model`` a request), so a project holding only runs is checked whole."""
    def collection_ref(key: str) -> bool:
        return (ref := parse_ref_key(key)) is not None and ref.kind != "run"

    if any(collection_ref(k) for prefix, held in listed.items() if prefix.startswith(project) for k in held):
        return True
    return project not in listed and any(collection_ref(k) for k in store.refs.iter_names(project))


def refuse_arriving_case_twins(store: Store, arriving: Iterable[str]) -> None:
    """:func:`refuse_case_twin` for refs a transfer is about to write into ``store``,
    against the refs of their projects there."""
    refs = [r for r in map(parse_ref_key, arriving) if r is not None]
    if refs:
        refuse_case_twin(store, [r.key for r in refs], [refs_prefix(r.entity, r.project) for r in refs])


def list_projects(store: Store, entity: str | None = None) -> list[tuple[str, str]]:
    """(entity, project) pairs that hold anything."""
    seen: set[tuple[str, str]] = set()
    for key in store.refs.iter_names(refs_prefix(entity)):
        parts = ref_key_parts(key)
        if parts is not None and len(parts) >= 3:
            seen.add((parts[0], parts[1]))
    return sorted(seen)


def list_collections(store: Store, entity: str, project: str, *, pending: bool = False) -> list[CollectionPath]:
    """The project's collections holding a version (every version deleted: not listed), from one listing;
    with ``pending``, also those holding only parts of a distributed version not finished yet
    (:mod:`objstore.model.distributed`; W&B lists such a collection, its version PENDING)."""
    names: set[str] = set()
    for info in store.backend.iter_prefix(refs_prefix(entity, project)):
        parsed = parse_ref_key(info.key)
        if parsed is not None and parsed.kind == "version" and info.size != 0:  # empty: a tombstone
            names.add(parsed.name)
        elif pending and info.size != 0 and (part := parse_part_ref(info.key)) is not None:
            names.add(part.name)
    return [CollectionPath(entity, project, n) for n in sorted(names)]


@dataclass(frozen=True, slots=True)
class CollectionSummary:
    """A collection as its refs' names tell it, no ref or object read: how many
    versions it holds, the newest one's number and its aliases' names."""

    coll: CollectionPath
    versions: int
    newest: int
    aliases: tuple[str, ...]


def summarize_collections(store: Store, entity: str, project: str) -> list[CollectionSummary]:
    """:func:`list_collections` with each one's version count, newest number and alias
    names, from the same one listing: the cost of a project's overview does not
    grow with its versions (a listing is one request per thousand keys on object
    storage). Tombstones (empty refs: deleted versions, removed aliases) are left out."""
    numbers: dict[str, list[int]] = {}
    aliases: dict[str, list[str]] = {}
    for info in store.backend.iter_prefix(refs_prefix(entity, project)):
        parsed = parse_ref_key(info.key)
        if parsed is None or info.size == 0:
            continue
        if parsed.kind == "version" and (idx := version_index(parsed.tail)) is not None:
            numbers.setdefault(parsed.name, []).append(idx)
        elif parsed.kind == "alias":
            aliases.setdefault(parsed.name, []).append(parsed.tail)
    return [CollectionSummary(CollectionPath(entity, project, name), len(held), max(held),
                              tuple(sorted(aliases.get(name, ())))) for name, held in sorted(numbers.items())]


# -- the log of a collection ----------------------------------------------------
# A log page reads the newest entries by following each version's parent from one
# ref read every LOG_SEGMENT numbers, the segments in parallel: about one request
# per version shown, whatever the collection's history. 50: a default page (the
# newest 50) costs one ref read; a longer log runs its segments in parallel.
LOG_SEGMENT = 50
LOG_THREADS = 16


@dataclass(frozen=True, slots=True)
class LogPage:
    """Entries of one collection, newest first, with the aliases of each."""

    entries: tuple[ResolvedVersion, ...]
    total: int  # entries the collection holds
    aliases: Mapping[ObjectId, tuple[str, ...]]  # entry id -> its aliases, sorted


def version_numbers(store: Store, coll: CollectionPath) -> list[int]:
    """The numbers of ``coll``'s versions, newest first, from one listing (no ref is read)."""
    prefix = collection_prefix(coll.entity, coll.project, coll.name) + "versions/"
    numbers = []
    for info in store.backend.iter_prefix(prefix):
        idx = version_index(info.key.rsplit("/", 1)[-1])
        if idx is not None and info.size != 0:
            numbers.append(idx)
    return sorted(numbers, reverse=True)


def log_page(store: Store, coll: CollectionPath, *, limit: int | None = None, skip: int = 0) -> LogPage:
    """The ``limit`` newest entries of ``coll`` after the ``skip`` newest (all for None).

    Requests grow with the entries shown, not with the collection's size: one
    listing of its version refs (a request per thousand), one ref read per
    ``LOG_SEGMENT`` entries, one object per entry (two for a registry link), the
    aliases; segments are read in parallel. An entry reached through a parent is
    checked as one read through its ref is (this collection's, this number); one
    that is not is read through its own ref instead."""
    numbers = version_numbers(store, coll)
    shown = numbers[skip:] if limit is None else numbers[skip:skip + limit]
    segments = [shown[i:i + LOG_SEGMENT] for i in range(0, len(shown), LOG_SEGMENT)]
    with ThreadPoolExecutor(max(1, min(LOG_THREADS, len(segments) + 1)), thread_name_prefix="objstore-log") as pool:
        aliases_future = pool.submit(list_aliases, store, coll) if shown else None
        read = list(pool.map(lambda seg: _read_segment(store, coll, seg), segments))
        named = aliases_future.result() if aliases_future is not None else {}
    by_entry: dict[ObjectId, list[str]] = {}
    for alias, oid in named.items():
        by_entry.setdefault(oid, []).append(alias)
    return LogPage(tuple(e for seg in read for e in seg), len(numbers),
                   {oid: tuple(sorted(names)) for oid, names in by_entry.items()})


def _read_segment(store: Store, coll: CollectionPath, numbers: list[int]) -> list[ResolvedVersion]:
    """The entries numbered ``numbers`` (descending): the first through its ref, each
    next one through the parent of the one before when that is the entry expected."""
    out: list[ResolvedVersion] = []
    for n in numbers:
        entry = _through_parent(store, coll, out[-1], n) if out else None
        if entry is None:
            ref = version_ref(coll.entity, coll.project, coll.name, n)
            oid = store.refs.read(ref)
            if oid is None:
                raise NotFound(f"{coll}:v{n} was removed while its log was read; run the log again", key=ref)
            entry = read_entry(store, coll, oid, ref=ref)
        out.append(entry)
    return out


def _through_parent(store: Store, coll: CollectionPath, child: ResolvedVersion, n: int) -> ResolvedVersion | None:
    """Entry ``n`` of ``coll`` as ``child``'s parent names it; None if it names none, or
    one that is not a readable version of ``coll`` numbered ``n`` (the caller reads its ref)."""
    parent = child.version.parent if child.link is None else None
    if parent is None:
        return None
    try:
        obj = store.odb.get_object(parent)
    except (NotFound, CorruptObject):
        return None
    if not isinstance(obj, Version) or obj.index != n:
        return None
    entry = ResolvedVersion(coll, n, parent, parent, obj)
    return entry if _foreign(coll, entry) is None else None
