"""Enumerating what a store holds: every version and registry link behind the refs,
and the objects and chunks a version reaches.

Maintenance (fsck, gc, du, diff) is built on these walks. Reachability follows
*strong* edges only: ref -> version / link / run; link -> version; version ->
tree; tree -> file / tree; file -> chunks. A version's ``parent`` and a run's
inputs and outputs are *weak*: they are history and lineage, not content, so
deleting a collection can free its bytes even though runs still name it
(lineage shows such versions as deleted).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from .errors import CorruptObject, NotFound
from .ids import ObjectId
from .objects import FILE, TREE, FileObject, Link, RunRecord, Tree, Version
from .refs import REFS
from .store import Store


@dataclass(frozen=True, slots=True)
class VersionRef:
    """One ``versions/vN`` ref: who names it (``entity/project/name:vN``), what it
    holds (a version or a link), and the version it comes down to."""

    label: str
    object_id: ObjectId
    version_id: ObjectId
    version: Version
    link: Link | None = None


def version_label(v: Version) -> str:
    return f"{v.entity}/{v.project}/{v.name}:v{v.index}"


def iter_version_refs(store: Store, *, strict: bool = True) -> Iterator[VersionRef]:
    """Every ``refs/<e>/<p>/<name>/versions/vN`` ref of the store, resolved.

    With ``strict=False`` refs whose objects are missing or damaged are skipped
    (fsck reports them itself); otherwise the error propagates.
    """
    for key, oid in store.refs.iter_refs(REFS):
        parts = key[len(REFS):].split("/")
        if len(parts) != 5 or parts[3] != "versions":
            continue
        label = f"{parts[0]}/{parts[1]}/{parts[2]}:{parts[4]}"
        try:
            obj = store.odb.get_object(oid)
            if isinstance(obj, Version):
                yield VersionRef(label, oid, oid, obj)
            elif isinstance(obj, Link):
                target = store.odb.get_object(obj.target)
                if not isinstance(target, Version):
                    raise CorruptObject(f"link {label} points at a non-version object", object_id=obj.target.hex)
                yield VersionRef(label, oid, obj.target, target, obj)
            else:
                raise CorruptObject(f"ref {key} points at a {type(obj).__name__}, not a version", object_id=oid.hex)
        except (NotFound, CorruptObject):
            if strict:
                raise
            continue


def read_meta(store: Store, oid: ObjectId) -> FileObject | Tree | Version | Link | RunRecord:
    return store.odb.get_object(oid)


class ContentWalker:
    """Walks trees to files to chunks, reading each tree and file object once.

    ``tree_contents(tree_id)`` returns the (metadata ids, chunk raw ids) under a
    tree, memoized, so walking every version of a store costs one read per
    distinct tree and file however many versions share them.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._trees: dict[ObjectId, tuple[frozenset[ObjectId], frozenset[bytes]]] = {}
        self._files: dict[ObjectId, FileObject] = {}

    def file(self, file_id: ObjectId) -> FileObject:
        fobj = self._files.get(file_id)
        if fobj is None:
            obj = self.store.odb.get_object(file_id)
            if not isinstance(obj, FileObject):
                raise CorruptObject(f"object {file_id.hex[:16]} should be a file", object_id=file_id.hex)
            self._files[file_id] = fobj = obj
        return fobj

    def tree_contents(self, tree_id: ObjectId, depth: int = 0) -> tuple[frozenset[ObjectId], frozenset[bytes]]:
        """Metadata ids (the tree itself, subtrees, files) and chunk ids under ``tree_id``."""
        cached = self._trees.get(tree_id)
        if cached is not None:
            return cached
        if depth > 256:
            raise CorruptObject(f"tree {tree_id.hex[:16]} nests too deep", object_id=tree_id.hex)
        tree = self.store.odb.get_object(tree_id)
        if not isinstance(tree, Tree):
            raise CorruptObject(f"object {tree_id.hex[:16]} should be a tree", object_id=tree_id.hex)
        objects: set[ObjectId] = {tree_id}
        chunks: set[bytes] = set()
        for entry in tree.entries:
            if entry.id is None:
                continue
            if entry.kind == TREE:
                sub_objects, sub_chunks = self.tree_contents(entry.id, depth + 1)
                objects |= sub_objects
                chunks |= sub_chunks
            elif entry.kind == FILE:
                objects.add(entry.id)
                chunks.update(c.raw for c, _ in self.file(entry.id).chunks)
        result = (frozenset(objects), frozenset(chunks))
        self._trees[tree_id] = result
        return result

    def chunk_sizes(self, tree_id: ObjectId) -> dict[bytes, int]:
        """Raw length of every distinct chunk under ``tree_id``."""
        sizes: dict[bytes, int] = {}
        objects, _ = self.tree_contents(tree_id)
        for oid in objects:
            fobj = self._files.get(oid)
            if fobj is not None:
                for c, n in fobj.chunks:
                    sizes[c.raw] = n
        return sizes
