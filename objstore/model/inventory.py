"""What a store holds and what each thing in it reaches: the one definition of
reachability that gc, fsck, transfer and the readers share.

Edges (:func:`edges`), by the kind of object:

- **strong** — content a reader needs, so it must be stored wherever the object
  is: ref -> version / link / run record; link -> its version; version -> tree;
  tree -> file / tree; file -> chunks. gc keeps the strong closure of every ref,
  transfer sends it, fsck checks it and calls anything missing in it damage.
- **weak** — history and lineage, which may legitimately be absent: a version's
  ``parent``; a run record's inputs and outputs; the run a version or link names
  (``run``, a path, not an id: its record lives behind the ref
  ``refs/<entity>/<project>/runs/<id>``). gc does not keep weak targets,
  transfer does not follow them as content (it moves the runs that logged the
  versions it moves, when the source has them, as refs of their own), and
  readers treat an absent weak target as "not in this store" (``log``, ``show``
  and ``lineage`` say so), never as an error.

Deleted versions (:mod:`objstore.model.deletion`): a version ref that is a
tombstone names, in its reflog, the entry that was deleted
(:func:`deleted_entries`). Reflog entries are weak roots of gc, and the reflogs
of ``latest`` and of aliases name every version they ever held, so gc leaves out
the deleted entries from those roots: a deleted version is kept only by what
still holds it strongly (a live ref, a link, a remote-tracking ref).

Reachability for gc (:func:`reach`) never deletes on uncertainty: an object that
is stored but cannot be decoded still keeps every stored object and chunk whose
id appears in its bytes; one whose bytes cannot be read at all (missing from a
ref's closure, or not even decompressing) makes the result uncertain, and gc
then deletes nothing.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import zstandard

from objstore.errors import CorruptObject, NotFound, ObjstoreError
from objstore.model.store import Store
from objstore.storage.ids import ChunkKey, ObjectId, chunk_key
from objstore.storage.keys import REFS, object_key, parse_ref_key, ref_label, run_ref
from objstore.storage.objects import FILE, TREE, FileObject, Link, MetaObject, RunRecord, Tree, Version

# Where writers keep temporary files: the local backend's tmp/ directory and the
# object-store backend's staging prefix (objstore.storage.backend) are both this prefix.
# A body larger than this is not scanned for the ids it names (see :func:`reach`):
# the object's reach is then unknown. Real metadata objects are far smaller.
SALVAGE_LIMIT = 64 * 1024 * 1024
MAX_TREE_DEPTH = 256


@dataclass(frozen=True, slots=True)
class Edges:
    """What one object names: ``strong`` objects and ``chunks`` it needs, ``weak``
    objects it names as history, and the ``run`` (a path) that made it."""

    strong: tuple[ObjectId, ...] = ()
    chunks: tuple[tuple[ObjectId, int], ...] = ()
    weak: tuple[ObjectId, ...] = ()
    run: str | None = None


def edges(obj: MetaObject) -> Edges:
    """The edges of ``obj`` (see the module docstring for which are strong)."""
    if isinstance(obj, Version):
        return Edges(strong=(obj.tree,), weak=(obj.parent,) if obj.parent else (), run=obj.run)
    if isinstance(obj, Link):
        return Edges(strong=(obj.target,), run=obj.run)
    if isinstance(obj, Tree):
        return Edges(strong=tuple(oid for _, _, oid in tree_children(obj)))
    if isinstance(obj, FileObject):
        return Edges(chunks=obj.chunks)
    if isinstance(obj, RunRecord):
        return Edges(weak=(*obj.inputs, *obj.outputs))
    return Edges()


def tree_children(tree: Tree) -> Iterator[tuple[str, str, ObjectId]]:
    """(name, kind, id) of the entries of ``tree`` that are strong edges (files and
    subtrees; references and symlinks name nothing in the store)."""
    for entry in tree.entries:
        if entry.id is not None and entry.kind in (FILE, TREE):
            yield entry.name, entry.kind, entry.id


def run_ref_of(path: str | None) -> str | None:
    """The ref key of the run ``entity/project/id`` a version or link names (None if
    it names none, or a path that is not one)."""
    if not path:
        return None
    parts = path.split("/")
    if len(parts) != 3 or not all(parts):
        return None
    try:
        return run_ref(*parts)
    except ObjstoreError:
        return None


@dataclass(frozen=True, slots=True)
class VersionRef:
    """One ``versions/vN`` ref: who names it (``entity/project/name:vN``), what it
    holds (a version or a link), and the version it comes down to."""

    label: str
    object_id: ObjectId
    version_id: ObjectId
    version: Version
    link: Link | None = None


def iter_version_refs(store: Store, *, strict: bool = True,
                      damaged: Callable[[str, ObjstoreError], None] | None = None) -> Iterator[VersionRef]:
    """Every ``refs/<e>/<p>/<name>/versions/vN`` ref of the store, resolved.

    With ``strict=False`` refs whose objects are missing or damaged are skipped
    (fsck reports them itself; ``damaged(label, error)`` hears of each);
    otherwise the error propagates.
    """
    for key, oid in store.refs.iter_refs(REFS):
        parsed = parse_ref_key(key)
        if parsed is None or parsed.kind != "version":
            continue
        label = ref_label(parsed)
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
        except (NotFound, CorruptObject) as exc:
            if strict:
                raise
            if damaged is not None:
                damaged(label, exc)
            continue


def deleted_entries(store: Store) -> set[ObjectId]:
    """The entries (versions, links) whose ``versions/vN`` ref was deleted: the ids
    the reflogs of tombstoned version refs name."""
    out: set[ObjectId] = set()
    for info in store.backend.iter_prefix(REFS):
        if info.size != 0:
            continue
        parsed = parse_ref_key(info.key)
        if parsed is None or parsed.kind != "version":
            continue
        for entry in store.refs.reflog(info.key):
            out.update(oid for oid in (entry.old, entry.new) if oid is not None)
    return out


class ContentWalker:
    """Walks trees to files to chunks, reading each tree and file object once.

    ``tree_contents(tree_id)`` returns the (metadata ids, chunk raw ids) under a
    tree, memoized, so walking every version of a store costs one read per
    distinct tree and file however many versions share them.
    """

    def __init__(self, store: Store) -> None:
        self.store = store
        self._trees: dict[ObjectId, tuple[frozenset[ObjectId], frozenset[ChunkKey]]] = {}
        self._files: dict[ObjectId, FileObject] = {}

    def file(self, file_id: ObjectId) -> FileObject:
        fobj = self._files.get(file_id)
        if fobj is None:
            obj = self.store.odb.get_object(file_id)
            if not isinstance(obj, FileObject):
                raise CorruptObject(f"object {file_id.hex[:16]} should be a file", object_id=file_id.hex)
            self._files[file_id] = fobj = obj
        return fobj

    def tree_contents(self, tree_id: ObjectId, depth: int = 0) -> tuple[frozenset[ObjectId], frozenset[ChunkKey]]:
        """Metadata ids (the tree itself, subtrees, files) and chunk ids under ``tree_id``."""
        cached = self._trees.get(tree_id)
        if cached is not None:
            return cached
        if depth > MAX_TREE_DEPTH:
            raise CorruptObject(f"tree {tree_id.hex[:16]} nests too deep", object_id=tree_id.hex)
        tree = self.store.odb.get_object(tree_id)
        if not isinstance(tree, Tree):
            raise CorruptObject(f"object {tree_id.hex[:16]} should be a tree", object_id=tree_id.hex)
        objects: set[ObjectId] = {tree_id}
        chunks: set[ChunkKey] = set()
        for _, kind, oid in tree_children(tree):
            if kind == TREE:
                sub_objects, sub_chunks = self.tree_contents(oid, depth + 1)
                objects |= sub_objects
                chunks |= sub_chunks
            else:
                objects.add(oid)
                chunks.update(chunk_key(c) for c, _ in edges(self.file(oid)).chunks)
        result = (frozenset(objects), frozenset(chunks))
        self._trees[tree_id] = result
        return result

    def chunk_sizes(self, tree_id: ObjectId) -> dict[ChunkKey, int]:
        """Raw length of every distinct chunk under ``tree_id``."""
        sizes: dict[ChunkKey, int] = {}
        objects, _ = self.tree_contents(tree_id)
        for oid in objects:
            fobj = self._files.get(oid)
            if fobj is not None:
                for c, n in fobj.chunks:
                    sizes[chunk_key(c)] = n
        return sizes


# -- reachability for gc ----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Reach:
    """What some roots reach along strong edges.

    ``damaged`` lists (object, why) for objects reached that could not be decoded;
    what their bytes name was kept anyway. ``unknown`` lists (object, why) for
    objects whose reach could not be learned at all (missing, or unreadable): with
    any ``unknown``, the result is uncertain and nothing may be deleted.
    """

    objects: frozenset[ObjectId]
    chunks: frozenset[ChunkKey]
    damaged: tuple[tuple[ObjectId, str], ...] = ()
    unknown: tuple[tuple[ObjectId, str], ...] = ()


def reach(store: Store, roots: Iterable[ObjectId], weak_roots: Iterable[ObjectId] = (), *,
          known: Callable[[], set[bytes]] | None = None, visited: Callable[[int], None] | None = None) -> Reach:
    """Everything ``roots`` (live refs: their closure must be whole) and ``weak_roots``
    (reflog and tracking entries: kept if present) reach along strong edges.

    ``known()`` returns the raw ids of every stored object and chunk; it is called
    only if some object cannot be decoded, to learn which of them its bytes name.
    ``visited(n)``, if given, is told the count of objects reached so far, now and then (gc's progress).
    """
    objects: set[ObjectId] = set()
    chunks: set[ChunkKey] = set()
    damaged: dict[ObjectId, str] = {}
    unknown: dict[ObjectId, str] = {}
    known_ids: set[bytes] | None = None

    def salvage(oid: ObjectId, why: str) -> list[ObjectId]:
        nonlocal known_ids
        body = _salvage_body(store, oid)
        if body is None or known is None:
            unknown[oid] = why
            return []
        damaged[oid] = why
        if known_ids is None:
            known_ids = known()
        named = {body[i:i + 32] for i in range(len(body) - 31)} & known_ids
        out = []
        for raw in named:
            chunks.add(ChunkKey(raw))  # harmless if it is an object id: only chunk ids are looked up there
            out.append(ObjectId(raw))
        return out

    def walk(start: Iterable[ObjectId], strict: bool) -> None:
        stack = [(oid, strict) for oid in start]
        while stack:
            oid, must = stack.pop()
            if oid in objects:
                continue
            try:
                obj = store.odb.get_object(oid)
            except NotFound:
                if must:
                    unknown[oid] = f"object {oid.hex[:16]} is reached by a ref but missing"
                continue  # a weak root (or what it reaches) long gone
            except ObjstoreError as exc:
                objects.add(oid)
                # What it names may be anything stored: keep all of that, leniently.
                stack.extend((o, False) for o in salvage(oid, str(exc)) if o not in objects)
                continue
            objects.add(oid)
            if visited is not None and len(objects) % 64 == 0:
                visited(len(objects))
            e = edges(obj)
            chunks.update(chunk_key(c) for c, _ in e.chunks)
            # Iterative and depth-blind: a tree nested deeper than readers accept
            # still keeps what it names (content ids cannot form a cycle).
            stack.extend((child, must) for child in e.strong if child not in objects)

    walk(roots, True)
    walk(weak_roots, False)
    return Reach(frozenset(objects), frozenset(chunks), tuple(damaged.items()), tuple(unknown.items()))


def _salvage_body(store: Store, oid: ObjectId) -> bytes | None:
    """The decompressed bytes of a stored object that does not decode, or None if
    even those cannot be had (bounded: never more than :data:`SALVAGE_LIMIT`)."""
    try:
        stored = store.backend.get(object_key(oid))
        reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stored))
        body = reader.read(SALVAGE_LIMIT + 1)
    except (ObjstoreError, zstandard.ZstdError, OSError, MemoryError):
        return None
    if len(body) > SALVAGE_LIMIT:
        return None
    return body
