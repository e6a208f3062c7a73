"""The logging pipeline: what a draft artifact's staged entries become in the store.

:func:`commit_draft` is the whole of it, in order: check the draft (not empty;
metadata and description storable; every link among the staged entries checked
over the whole draft), store the entries and their tree, run the caller's hook
(the run records itself there), then claim the version
(:func:`objstore.model.versions.commit_version`). ``Artifact`` only builds drafts
and binds the result.

Invariants: nothing is stored before the checks pass; chunks and packs are
flushed before any file object or tree names them, and the version ref is
claimed last (the write order objects, then refs).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from objstore.errors import InvalidInput, UnsafePath
from objstore.files.ingest import chunk_file
from objstore.files.materialize import check_symlinks
from objstore.model.names import CollectionPath
from objstore.model.store import Store
from objstore.model.versions import ResolvedVersion, commit_version
from objstore.storage.ids import ObjectId
from objstore.storage.objects import FILE, TREE, FileObject, TreeEntry, storable_dict, storable_text
from objstore.storage.trees import build_tree


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

    ``before_ref`` runs once everything the version names is stored and before
    its version ref is claimed: the run records itself there, so a version
    never names a run that a crash kept out of the store."""
    if not draft.staged:
        raise InvalidInput(f"artifact {draft.name} has no files; add some before logging it")
    metadata: dict[str, Any] = storable_dict(draft.metadata, "metadata")
    description = storable_text(draft.description, "description")
    check_links(draft.staged)
    before = store.odb.new_bytes
    tree_id, size = store_staged(store, draft.staged, progress)
    if before_ref is not None:
        before_ref()
    committed = commit_version(
        store, CollectionPath(entity, project, draft.name), tree=tree_id, size=size,
        new_bytes=store.odb.new_bytes - before, artifact_type=draft.artifact_type, metadata=metadata,
        description=description, run=run_path, aliases=aliases,
    )
    store.odb.maintain()  # the writer's automatic compaction and repack: after the version's refs (odb's write order)
    return committed
