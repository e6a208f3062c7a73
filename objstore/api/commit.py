"""The logging pipeline: what a draft artifact's staged entries become in the store.

:func:`commit_draft` is the whole of it, in order: check the draft (not empty;
metadata and description storable; every link among the staged entries checked
over the whole draft), store the entries and their tree, run the caller's hook
(the run records itself there), then claim the version
(:func:`objstore.model.versions.commit_version`). ``Artifact`` only builds drafts
and binds the result.

Distributed versions (W&B's ``upsert_artifact`` / ``finish_artifact``) go the
same way: :func:`store_part` stores a draft as a pending part
(:mod:`objstore.model.distributed`) instead of claiming a version, and
:func:`finish_parts` logs the parts listed, laid over one another oldest first
with the finishing draft on top, as one version, then clears exactly those parts.

Invariants: nothing is stored before the checks pass; chunks and packs are
flushed before any file object or tree names them, and the version ref is
claimed last (the write order objects, then refs).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from objstore.errors import InvalidInput, NotFound, ObjstoreError, UnsafePath
from objstore.files.ingest import chunk_file
from objstore.files.materialize import check_symlinks
from objstore.model.distributed import PENDING_INDEX, Part, add_part, clear_parts, expected_type, pending_parts
from objstore.model.gcintent import lost, overlapped
from objstore.model.nameclaims import claim_names
from objstore.model.names import LATEST, CollectionPath, VersionSpec
from objstore.model.refs import decode_value
from objstore.model.store import Store
from objstore.model.versions import ResolvedVersion, commit_version, refuse_case_twin, resolve
from objstore.storage.ids import ObjectId
from objstore.storage.keys import refs_prefix, version_ref
from objstore.storage.objects import FILE, TREE, FileObject, TreeEntry, Version, storable_dict, storable_text
from objstore.storage.trees import build_tree, walk_tree


@dataclass(slots=True)
class Staged:
    """One entry of a draft: a local file to ingest, or a ready entry (reference, symlink, empty
    directory, or a file already stored: ``Artifact.new_draft`` stages a version's files so)."""

    kind: str
    size: int
    source: Path | None = None  # local file to ingest
    entry: TreeEntry | None = None  # a ready entry (reference, symlink, empty dir)


def check_links(staged: dict[str, Staged]) -> None:
    """Whatever is logged as a link can be materialized: each add_dir judged its links
    over its own directory, but links from two calls can combine (``l -> k/../..``
    from one, ``k -> .`` from another) into one that leaves; resolve every link over
    the whole draft by the rule materialize applies, before anything is stored."""
    entries: list[tuple[str, TreeEntry]] = []
    dirs: set[str] = set()
    for path, item in staged.items():
        parts = path.split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
        entries.append((path, item.entry if item.entry is not None else TreeEntry("", FILE, item.size)))
    entries.extend((d, TreeEntry("", TREE, 0)) for d in sorted(dirs) if d not in staged)
    try:
        check_symlinks(entries)
    except UnsafePath as exc:
        raise InvalidInput(f"{str(exc).removesuffix('; refusing')} once combined with the artifact's other entries, "
                           f"so it could never be downloaded; add the link and what it points through in one add_dir") from None


def store_staged(store: Store, staged: dict[str, Staged], progress: Callable[[int], None] | None = None) -> tuple[ObjectId, int]:
    """Store every staged entry and the tree holding them; return the tree's id and
    total size. Files are chunked first and the chunks flushed (aborted on any
    failure, so no pack is left half-written) before any file object or tree is
    stored: nothing stored ever names bytes that are not."""
    files: list[tuple[str, FileObject, int]] = []
    try:
        for path, item in sorted(staged.items()):
            if item.kind == FILE and item.source is not None:
                mode = item.source.stat().st_mode & 0o777
                files.append((path, chunk_file(item.source, store.chunker, store.odb, progress), mode))
        store.odb.flush()  # chunks and packs first: the write order
    except BaseException:
        store.odb.abort()
        raise
    leaves: dict[str, TreeEntry] = {}
    for path, fobj, mode in files:
        fid = store.odb.put_object(fobj)
        leaves[path] = TreeEntry("", FILE, fobj.size, fid, mode)
    for path, item in staged.items():
        if item.kind != FILE or item.source is None:
            assert item.entry is not None
            leaves[path] = item.entry
    return build_tree(store.odb, leaves)


@dataclass(frozen=True, slots=True)
class Draft:
    """What logging needs of a draft artifact: its name, type, the user's description
    and metadata (checked here, as they may have been set after the draft was made)
    and its staged entries."""

    name: str
    artifact_type: str
    description: object
    metadata: object
    staged: dict[str, Staged]


def commit_draft(store: Store, draft: Draft, entity: str, project: str, run_path: str | None, aliases: tuple[str, ...],
                 progress: Callable[[int], None] | None = None,
                 before_ref: Callable[[], None] | None = None) -> tuple[ResolvedVersion, bool]:
    """Store ``draft`` as a version of ``entity/project/<name>`` (or find the version
    already holding its content); return it and whether it is new.

    ``before_ref`` runs once everything the version names is stored and its
    names are known good (no case twin), before any ref is written: the run
    records itself there, so a version never names a run that a crash kept out
    of the store, and a run record never lands under a refused spelling."""
    if not draft.staged:
        raise InvalidInput(f"artifact {draft.name} has no files; add some before logging it")
    metadata: dict[str, Any] = storable_dict(draft.metadata, "metadata")
    description = storable_text(draft.description, "description")
    check_links(draft.staged)
    before, reused, started = store.odb.new_bytes, store.odb.reused, time.time()
    tree_id, size = store_staged(store, draft.staged, progress)
    committed = commit_version(
        store, CollectionPath(entity, project, draft.name), tree=tree_id, size=size,
        new_bytes=store.odb.new_bytes - before, artifact_type=draft.artifact_type, metadata=metadata,
        description=description, run=run_path, aliases=aliases, before_ref=before_ref,
    )
    if store.odb.reused > reused and overlapped(store, started):
        _survive_gc(store, draft, committed[0].object_id, committed[0].version.tree, committed[0].name)
    store.odb.maintain()  # the writer's automatic compaction and repack: after the version's refs (odb's write order)
    return committed


def _survive_gc(store: Store, draft: Draft, object_id: ObjectId, tree: ObjectId, name: str) -> None:
    """After a gc that deleted while this writer relied on bytes already stored
    (:mod:`objstore.model.gcintent`): if it deleted part of the version (or part)
    ``object_id`` just logged, store the draft again (the same bytes give the same
    ids, so its refs name it whole again); if that cannot restore it, say so."""
    why = lost(store, object_id)
    if why is None:
        return
    store.odb.reload()  # forget the packs that gc deleted, so their chunks are stored again, not taken for hits
    tree_id, _ = store_staged(store, draft.staged)
    why = lost(store, object_id) if tree_id == tree else f"its tree (the files changed: now {tree_id.hex[:16]})"
    if why is not None:
        raise ObjstoreError(f"a gc deleted {why} of {name} while it was being logged, and storing it again did not "
                          f"restore it; log it again")


def stored_entries(store: Store, tree: ObjectId) -> dict[str, Staged]:
    """The entries of the stored ``tree`` as ready staged entries (a directory only when empty)."""
    entries = list(walk_tree(store.odb, tree, include_dirs=True))
    parents = {p.rsplit("/", 1)[0] for p, _ in entries if "/" in p}
    return {p: Staged(e.kind, e.size, entry=e) for p, e in entries if e.kind != TREE or p not in parents}


def lay_over(base: dict[str, Staged], top: dict[str, Staged]) -> dict[str, Staged]:
    """``base`` with ``top`` laid over it: a path of ``top`` replaces the entry there,
    a file where ``base`` has a directory (or the other way) everything under it."""
    merged = dict(base)
    for path, item in top.items():
        for other in [q for q in merged if q.startswith(path + "/") or path.startswith(q + "/")]:
            del merged[other]
        merged[path] = item
    return merged


def _check_type(store: Store, coll: CollectionPath, artifact_type: str, parts: list[Part]) -> None:
    """W&B's refusal of a type other than the collection's (its latest version's) or the pending parts'."""
    known = expected_type(parts)
    if known is None:
        try:
            known = resolve(store, VersionSpec(coll, LATEST)).version.artifact_type
        except NotFound:
            return
    if known != artifact_type:
        raise InvalidInput(f"Artifact {coll.name} already exists with type '{known}'; "
                           f"cannot create another with type '{artifact_type}'")


def store_part(store: Store, draft: Draft, entity: str, project: str, distributed_id: str, run_path: str | None,
               aliases: tuple[str, ...], progress: Callable[[int], None] | None = None,
               before_ref: Callable[[], None] | None = None) -> Part:
    """Store ``draft`` as a part pending in ``distributed_id`` of ``entity/project/<name>``
    (W&B's ``upsert_artifact``): checked as a draft to log, its entries stored, then its part ref."""
    if not draft.staged:
        raise InvalidInput(f"artifact {draft.name} has no files; add some before upserting it")
    coll = CollectionPath(entity, project, draft.name)
    metadata: dict[str, Any] = storable_dict(draft.metadata, "metadata")
    description = storable_text(draft.description, "description")
    check_links(draft.staged)
    _check_type(store, coll, draft.artifact_type, pending_parts(store, coll, distributed_id))
    # The part's key holds the collection's, project's and entity's names: none may have a case twin.
    # (checked as the collection's first version ref would be: a new project's entity is looked at store-wide)
    refuse_case_twin(store, [version_ref(entity, project, draft.name, 0)], [refs_prefix(entity, project)])
    before, reused, started = store.odb.new_bytes, store.odb.reused, time.time()
    tree_id, size = store_staged(store, draft.staged, progress)
    claim_names(store, entity, project, draft.name)  # of two racing twins, one wins here
    if before_ref is not None:
        before_ref()  # the names are good now: the run records itself before the part's ref names it
    record = Version(tree_id, None, draft.artifact_type, entity, project, draft.name, PENDING_INDEX, size,
                     store.odb.new_bytes - before, description, {"metadata": metadata, "aliases": list(aliases)},
                     time.time(), run_path)
    part = add_part(store, coll, distributed_id, record)
    part_id = decode_value(part.ref, part.raw)
    if part_id is not None and store.odb.reused > reused and overlapped(store, started):  # a part ref is a root too
        _survive_gc(store, draft, part_id, tree_id, f"a part of {coll}")
    return part


def finish_parts(store: Store, draft: Draft, entity: str, project: str, distributed_id: str, run_path: str | None,
                 aliases: tuple[str, ...], progress: Callable[[int], None] | None = None,
                 before_ref: Callable[[], None] | None = None) -> tuple[ResolvedVersion, bool, list[Part]]:
    """Log the parts pending in ``distributed_id`` with ``draft`` laid over them as one
    version (W&B's ``finish_artifact``), then clear those parts; return the version,
    whether it is new, and the parts it took. Metadata: the parts', oldest first,
    then the draft's, key by key; description: the draft's, else the newest part's;
    aliases: every part's and ``aliases``."""
    coll = CollectionPath(entity, project, draft.name)
    parts = pending_parts(store, coll, distributed_id)
    _check_type(store, coll, draft.artifact_type, parts)
    staged: dict[str, Staged] = {}
    metadata: dict[str, Any] = {}
    description: object = None
    wanted: list[str] = []
    for part in parts:
        staged = lay_over(staged, stored_entries(store, part.record.tree))
        metadata.update(part.metadata)
        description = part.record.description if part.record.description is not None else description
        wanted.extend(part.aliases)
    staged = lay_over(staged, draft.staged)
    metadata.update(storable_dict(draft.metadata, "metadata"))
    merged = Draft(draft.name, draft.artifact_type, draft.description if draft.description is not None else description,
                   metadata, staged)
    resolved, created = commit_draft(store, merged, entity, project, run_path,
                                     tuple(dict.fromkeys([*wanted, *aliases])), progress, before_ref)
    clear_parts(store, parts, resolved.qualified_name)
    return resolved, created, parts
