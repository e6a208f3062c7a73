"""``fsck``: re-hash everything a store holds and say which versions any damage breaks.

Checks, in the order readers depend on them:

1. every pack: its checksum, its ``.idx`` (present, intact, agreeing with the
   pack), and every chunk the index lists re-hashed after decoding — a chunk is
   good if at least one copy in some pack is;
2. every metadata object (file, tree, version, link, run) re-hashed and decoded;
3. every ref: it holds an id, the object exists and is of the right kind, and it
   belongs where the ref is (:func:`objstore.model.versions.check_ref`: names by the
   name rules, the collection, number, digest or run the ref's place promises);
4. every version and registry link: its tree, every subtree and file, and every
   chunk of every file exist and are good. Chunks move while fsck runs (a writer's
   automatic repack copies small packs and marks them, gc deletes them once the
   grace period is over, and a copy can move on in turn): a chunk neither look at
   the packs found good is read, verified against its id, from where the store's
   index puts it now (:meth:`objstore.storage.odb.ObjectDatabase.get_chunk`, which
   follows it once more if that pack goes too); only a chunk found nowhere then is
   missing. Past ``RELOOK_LIMIT`` chunks found nowhere, the store is damaged and
   the rest are reported without that look;
5. every annotation key (:func:`objstore.model.annotations.annotation_problems`):
   a damaged state or history entry is reported (kind ``annotation``), never
   raised; it breaks no version's content, so it names none.

What is walked is the strong closure of every ref, by the edges of
:func:`objstore.model.inventory.edges` — exactly what gc keeps, a push sends and a
reader needs. Weak edges (a version's parent, the run it names, a run's inputs
and outputs) may legitimately point at nothing here, so they are not damage.
One object that cannot be decoded is reported, naming the versions it breaks,
and the check goes on with the rest of the store.

Each problem names the object and the versions (``entity/project/name:vN``,
registry links included) it breaks. Nothing is changed; repair is separate.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from objstore.errors import CorruptObject, NotFound, ObjstoreError, UnsafePath
from objstore.model.annotations import annotation_problems
from objstore.model.inventory import edges, tree_children
from objstore.model.store import Store
from objstore.model.versions import check_ref
from objstore.storage.chunkindex import covered_indexes, covered_since, list_indexes
from objstore.storage.ids import ChunkKey, ObjectId, chunk_key
from objstore.storage.keys import PACKS, REFS, idx_key, marked_pack_key, pack_key, pack_name_of, parse_ref_key, ref_label
from objstore.storage.objects import TREE, FileObject, Link, RunRecord, Tree, Version
from objstore.storage.packs import decode_idx, decode_verified, entry_id, read_pack_index, trailer_ids, verify_pack
from objstore.storage.remotecache import bypass

# Chunks in no pack fsck read that are looked up again where the index puts them
# now (each costs a listing and a read); past this many found nowhere, the store
# is damaged and looking again for the rest would only cost requests.
RELOOK_LIMIT = 64


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong. ``kind``: pack, index, chunk, object, ref, missing or annotation."""

    kind: str
    object_id: str
    message: str
    breaks: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {"kind": self.kind, "object": self.object_id, "message": self.message, "breaks": list(self.breaks)}


@dataclass(frozen=True, slots=True)
class FsckReport:
    """What fsck checked and found. ``ok`` when nothing is wrong."""

    problems: tuple[Problem, ...]
    packs: int
    chunks: int
    objects: int
    refs: int
    versions: int

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def damaged_versions(self) -> tuple[str, ...]:
        """Every version some problem breaks, sorted."""
        return tuple(sorted({v for p in self.problems for v in p.breaks}))

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok, "damaged_versions": list(self.damaged_versions), "problems": [p.to_dict() for p in self.problems],
            "checked": {"packs": self.packs, "chunks": self.chunks, "objects": self.objects, "refs": self.refs, "versions": self.versions},
        }


@dataclass
class _State:
    good_chunks: set[ChunkKey] = field(default_factory=set)
    bad_chunks: dict[ChunkKey, str] = field(default_factory=dict)  # chunk -> why (only if no good copy)
    bad_objects: dict[bytes, str] = field(default_factory=dict)
    # Chunks of intact packs that have no .idx yet: a writer stores the pack, then its
    # index, so a crash in between leaves exactly this. Not damage unless a version
    # needs one of them (then it is named as missing, with this reason).
    unindexed: dict[ChunkKey, str] = field(default_factory=dict)
    packs_seen: set[str] = field(default_factory=set)
    unindexed_packs: set[str] = field(default_factory=set)
    problems: list[Problem] = field(default_factory=list)  # pack / index / ref problems (no breaks known)
    ref_breaks: dict[bytes, set[str]] = field(default_factory=dict)  # object a version ref holds, damaged -> that version
    chunks_checked: int = 0


Stages = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: stage ``packs`` counts pack bytes verified,
``objects`` and ``versions`` count items; ``total`` is known when the stage starts."""


def fsck(store: Store, *, progress: Stages | None = None) -> FsckReport:
    """Check the whole store; return a report (never raises for damage it finds)."""
    with bypass(store.backend):  # the bucket itself, not the local cache's verified copies
        return _fsck(store, progress or _silent)


def _silent(stage: str, done: int, total: int) -> None:
    pass


def _fsck(store: Store, progress: Stages) -> FsckReport:
    st = _State()
    packs = _check_packs(store, st, progress=progress)
    for chunk in list(st.bad_chunks):
        if chunk in st.good_chunks:
            del st.bad_chunks[chunk]
    objects = _check_objects(store, st, progress)
    refs, roots = _check_refs(store, st)
    # Packs were listed before refs were read; a writer that stored a pack (and
    # its index), then a version, in between is seen by its ref only. Everything a
    # ref read above reaches was stored before that read (the write order), so one
    # more look at packs that are new, or had no index yet, finds all of it.
    packs += _check_packs(store, st, skip=st.packs_seen - st.unindexed_packs)
    for chunk in list(st.bad_chunks):
        if chunk in st.good_chunks:
            del st.bad_chunks[chunk]
    breaks, missing = _check_versions(store, st, roots, progress)
    st.problems += [Problem("annotation", key, why) for key, why in annotation_problems(store)]
    for raw, labels in st.ref_breaks.items():
        breaks.setdefault(raw, set()).update(labels)

    problems = list(st.problems)
    for chunk_id, why in sorted(st.bad_chunks.items()):
        problems.append(Problem("chunk", chunk_id.hex(), why, tuple(sorted(breaks.get(chunk_id, ())))))
    for raw, why in sorted(st.bad_objects.items()):
        problems.append(Problem("object", raw.hex(), why, tuple(sorted(breaks.get(raw, ())))))
    for raw, why in sorted(missing.items()):
        problems.append(Problem("missing", raw.hex(), why, tuple(sorted(breaks.get(raw, ())))))
    return FsckReport(tuple(problems), packs, st.chunks_checked, objects, refs, len(roots))


def _check_packs(store: Store, st: _State, skip: set[str] | None = None, progress: Stages = _silent) -> int:
    """Verify every pack not in ``skip``, its index and each chunk in it; return how many were checked."""
    # Indexes first, then packs: writers store a pack before its index, so every
    # index listed here has its pack listed below, unless gc removed both meanwhile
    # (it removes the index first), which the re-check of orphans tells apart.
    listing = list_indexes(store.backend)
    idx_names = set(listing.idx)
    # Consolidated index files, each checked whole; a pack they cover needs no .idx.
    found = covered_indexes(store.backend, listing)
    covered, source = found.indexes, found.source
    if skip is None:
        for file_name, why in found.damaged:
            st.problems.append(Problem("index", file_name, f"{why}; readers fall back to the packs' own indexes, "
                                                           "and repair rebuilds their .idx files"))
    seen_files = set(listing.files)

    def relist() -> dict[str, np.ndarray]:
        """``covered``, with the index files written since (a compaction moved a .idx);
        again while one of those was merged away before it could be read."""
        more = covered_since(store.backend, seen_files)
        for pack, index in more.indexes.items():
            if pack not in covered:
                covered[pack], source[pack] = index, more.source[pack]
        return covered

    sizes = {n: info.size for info in store.backend.iter_prefix(PACKS) if (n := pack_name_of(info.key)) is not None}
    all_names = set(sizes)
    names = sorted(all_names - (skip or set()))
    if skip is None:
        for name in sorted(idx_names - all_names):
            if _exists(store, idx_key(name)) and not _exists(store, pack_key(name)):
                st.problems.append(Problem("index", name, f"index packs/{name}.idx has no pack; its chunks are lost"))
    total, done = sum(sizes[n] for n in names), 0
    progress("packs", 0, total)
    for name in names:
        st.packs_seen.add(name)
        st.unindexed_packs.discard(name)
        data = _read_pack(store, st, name)
        if data is None:
            continue
        done += len(data)
        progress("packs", min(done, total), total)
        index = _pack_index(store, st, name, data, name in idx_names, covered, source, relist)
        if index is not None:
            _verify_chunks(st, name, data, index)
    return len(names)


def _read_pack(store: Store, st: _State, name: str) -> bytes | None:
    """The bytes of pack ``name``; None if gc removed it meanwhile or it cannot be read (reported)."""
    try:
        return store.backend.get(pack_key(name))
    except NotFound:
        return None  # removed by gc while we listed
    except CorruptObject as exc:  # not a regular file, or larger than any pack: report it and go on
        st.problems.append(Problem("pack", name, f"pack {name[:16]} cannot be read ({exc.args[0]})"))
        return None


def _pack_index(store: Store, st: _State, name: str, data: bytes, has_idx: bool,
                covered: dict[str, np.ndarray], source: dict[str, str],
                relist: Callable[[], dict[str, np.ndarray]]) -> np.ndarray | None:
    """The index readers use for pack ``name`` (its .idx, or the consolidated index
    file covering it), after checking the pack's checksum; None if there is none
    to verify against (its chunks are then recorded as unindexed or bad) or gc
    removed the pack meanwhile. ``source`` names the index file each entry of
    ``covered`` came from."""
    try:
        verify_pack(data, name)
        intact = True
    except CorruptObject as exc:
        intact = False
        st.problems.append(Problem("pack", name, f"pack {name[:16]} fails its checksum ({exc.args[0]})"))
    index = covered.get(name)
    if index is not None and intact and not _same_entries(index, own := read_pack_index(data, name)):
        file_name = source[name]
        st.problems.append(Problem("index", file_name, f"index file packs/{file_name}.midx disagrees with pack "
                                                       f"{name[:16]} about its chunks; delete that index file "
                                                       "and run repair"))
        # The intact pack's own index is the truth its chunks are checked
        # against: the file is what lies, not the chunks (repair rebuilds the
        # .idx from the pack once the file is gone).
        index = own
    if has_idx:
        try:
            index = decode_idx(store.backend.get(idx_key(name)), name)
        except CorruptObject as exc:
            index = _index_damaged(st, name, data, exc)
        except NotFound:
            if (gone := _idx_gone(store, name, covered, relist)) == "deleting":
                return None
            if gone == "covered":
                index = covered[name]
            else:
                # The pack is here and unmarked, its listed .idx gone. One way: gc
                # deleted a pack and its .idx while a writer whose chunks those were
                # stored them again (the same chunks can make the same bytes, so the
                # same name) and has yet to store the .idx. Either way it is a pack
                # stored before its index, as below; the second look after the refs
                # finds the .idx or names what needs it.
                has_idx = False
    if has_idx or index is not None:
        pass
    elif name in relist():  # its .idx was merged into an index file since the listing
        index = covered[name]
    elif intact:
        # An interrupted write (pack stored, index not yet): gc's business, not damage.
        st.unindexed_packs.add(name)
        for raw in trailer_ids(data):
            st.unindexed[raw] = f"chunk {raw.hex()[:16]} is only in pack {name[:16]}, which has no index (an interrupted write)"
        return None
    else:
        st.problems.append(Problem("index", name, f"pack {name[:16]} has no index; its chunks are unreadable"))
    if index is None:
        # The odb cannot read these chunks, so they are not good; name them so
        # fsck says which versions the lost index breaks.
        for raw in trailer_ids(data):
            st.bad_chunks.setdefault(raw, f"chunk {raw.hex()[:16]} is only in pack {name[:16]}, whose index is missing or damaged")
    return index


def _idx_gone(store: Store, name: str, covered: dict[str, np.ndarray],
             relist: Callable[[], dict[str, np.ndarray]]) -> str:
    """Why pack ``name``'s listed ``.idx`` was not there when read: ``covered`` (an
    index file has its entries), ``deleting`` (gc is deleting the pack) or ``gone``
    (the pack is here, unmarked, without it)."""
    if name not in covered:
        relist()  # a compaction may have replaced the .idx since the listing
    if name in covered:
        # Readers find the pack through that index file (marked or not: a repack
        # marks a pack after copying it, and it stays until gc's phase 2), so its
        # chunks are checked against it. gc rewrites the index files without a
        # pack before it deletes the .idx; if it did so since our listing, the
        # bytes checked were still the pack's, and gc deletes only a pack whose
        # reachable chunks live on elsewhere.
        return "covered"
    if _exists(store, marked_pack_key(name)) or not _exists(store, pack_key(name)):
        # Removed by gc since we read it: gc deletes a marked pack's .idx, then
        # the pack, then the mark, so between the first two the pack is still
        # there, and marked: being deleted, not damaged. The mark is asked for
        # first: a mark gone and the pack seen after it means no gc is deleting
        # it, but the other order misses a gc finishing between the two asks.
        return "deleting"
    return "gone"


def _verify_chunks(st: _State, name: str, data: bytes, index: np.ndarray) -> None:
    """Decode and re-hash every chunk ``index`` lists in pack ``name``."""
    for e in index:
        raw = entry_id(e["id"])
        st.chunks_checked += 1
        off, stored_len = int(e["offset"]), int(e["stored_len"])
        try:
            decode_verified(ObjectId(raw), int(e["codec"]), int(e["raw_len"]), stored_len,
                            memoryview(data)[off:off + stored_len], f"pack {name[:16]}")
        except ObjstoreError as exc:
            st.bad_chunks.setdefault(raw, str(exc.args[0]) if exc.args else str(exc))
        else:
            st.good_chunks.add(raw)


def _index_damaged(st: _State, name: str, data: bytes, exc: Exception) -> np.ndarray | None:
    # Readers fall back to the pack's own index section when the pack's
    # checksum holds (odb.refresh), so the chunks stay readable then.
    try:
        index = read_pack_index(data, name)
    except CorruptObject:
        st.problems.append(Problem("index", name, f"index of pack {name[:16]} is damaged ({exc}) "
                                                  f"and so is the pack; its chunks are unreadable"))
        return None
    st.problems.append(Problem("index", name, f"index of pack {name[:16]} is damaged ({exc}); "
                                              f"readers use the pack's own index, rewrite packs/{name}.idx from it"))
    return index


def _same_entries(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two indexes of one pack list the same entries (in any order)."""
    return len(a) == len(b) and bool(np.array_equal(np.sort(a, order=["id", "offset"]), np.sort(b, order=["id", "offset"])))


def _exists(store: Store, key: str) -> bool:
    try:
        store.backend.stat(key)
        return True
    except NotFound:
        return False


def _check_objects(store: Store, st: _State, progress: Stages) -> int:
    n = 0
    ids = list(store.odb.iter_object_ids())
    for oid in ids:
        n += 1
        progress("objects", n, len(ids))
        try:
            store.odb.get_object(oid)
        except NotFound:
            continue
        except ObjstoreError as exc:
            st.bad_objects[oid.raw] = f"object {oid.hex[:16]}: {exc}"
    return n


def _check_refs(store: Store, st: _State) -> tuple[int, dict[ObjectId, str]]:
    """Check every ref; return (count, {version or link id: label}) for the version walk."""
    roots: dict[ObjectId, str] = {}
    n = 0
    for info in store.backend.iter_prefix(REFS):
        n += 1
        key = info.key
        parsed = parse_ref_key(key)
        label = ref_label(parsed) if parsed is not None and parsed.kind == "version" else None
        try:
            oid = store.refs.read(key)
        except CorruptObject as exc:
            # A version ref holding garbage breaks that version: name it.
            st.problems.append(Problem("ref", key, str(exc), (label,) if label else ()))
            continue
        if oid is None:
            continue  # a tombstone
        if oid.raw in st.bad_objects:
            st.problems.append(Problem("ref", key, f"ref {key} points at damaged object {oid.hex[:16]}", (label,) if label else ()))
            if label:
                st.ref_breaks.setdefault(oid.raw, set()).add(label)
            continue
        try:
            obj = store.odb.get_object(oid)
        except NotFound:
            st.problems.append(Problem("ref", key, f"ref {key} points at {oid.hex[:16]}, which is not in the store",
                                       (label,) if label else ()))
            continue
        except ObjstoreError as exc:
            st.problems.append(Problem("ref", key, f"ref {key}: {exc}", (label,) if label else ()))
            st.bad_objects.setdefault(oid.raw, f"object {oid.hex[:16]}: {exc}")
            if label:
                st.ref_breaks.setdefault(oid.raw, set()).add(label)
            continue
        is_run = parsed is not None and parsed.kind == "run"
        want = (RunRecord,) if is_run else (Version, Link)
        if not isinstance(obj, want):
            st.problems.append(Problem("ref", key, f"ref {key} points at a {type(obj).__name__}, not a {'run' if is_run else 'version'}"))
            continue
        if not _ref_belongs(store, st, key, oid, label):
            continue
        if label is not None:
            roots[oid] = label
        elif not is_run:
            roots.setdefault(oid, "")  # alias / digest refs: checked, named by their version
    return n, roots


def _ref_belongs(store: Store, st: _State, key: str, oid: ObjectId, label: str | None) -> bool:
    """Report a ref whose object belongs elsewhere (another collection, number,
    digest or run) or whose name breaks the rules; True if it is where it should be."""
    try:
        check_ref(store, key, oid)
    except (CorruptObject, NotFound) as exc:
        st.problems.append(Problem("ref", key, str(exc), (label,) if label else ()))
        return False
    return True


def _check_versions(store: Store, st: _State, roots: dict[ObjectId, str],
                    progress: Stages) -> tuple[dict[bytes, set[str]], dict[bytes, str]]:
    """Walk every version; return ({bad or missing id: versions broken}, {missing id: why})."""
    walk = _VersionWalk(store, st)
    for i, (oid, label) in enumerate(roots.items(), 1):
        walk.check_root(oid, label)
        progress("versions", i, len(roots))
    return walk.breaks, walk.missing


class _VersionWalk:
    """What every version reaches, each tree and file judged once (``memo``): the
    ids below it that are damaged or missing, and the versions each one breaks."""

    def __init__(self, store: Store, st: _State) -> None:
        self.store, self.st = store, st
        self.breaks: dict[bytes, set[str]] = {}
        self.missing: dict[bytes, str] = {}
        self.memo: dict[bytes, frozenset[bytes]] = {}  # tree or file id -> bad ids below it
        self.reloaded = False  # whether the odb's index was loaded afresh for a re-look
        self.not_found = 0  # chunks the re-look found nowhere

    def check_root(self, oid: ObjectId, label: str) -> None:
        """Charge every bad id under the version (or link) ``oid`` to its names."""
        try:
            obj = self.store.odb.get_object(oid)
        except ObjstoreError:
            return  # reported as a ref problem
        labels = {label} if label else set()
        if isinstance(obj, Link):
            target = self.get(obj.target, f"the version {obj.target.hex[:16]} that {label or obj.registry} links")
            if not isinstance(target, Version):
                if target is not None:
                    self.st.bad_objects[obj.target.raw] = f"link target {obj.target.hex[:16]} is not a version"
                self.breaks.setdefault(obj.target.raw, set()).update(labels or {f"{obj.registry}:v{obj.index}"})
                return
            obj = target
            labels.add(target.label)
        if not isinstance(obj, Version):
            return
        labels.add(obj.label)
        (tree,) = edges(obj).strong
        for bad in self.bad_under_tree(tree, ""):
            self.breaks.setdefault(bad, set()).update(labels)

    def bad_under_file(self, fid: ObjectId, path: str) -> frozenset[bytes]:
        st = self.st
        if fid.raw in self.memo:
            return self.memo[fid.raw]
        found: set[bytes] = set()
        obj = self.get(fid, f"file {path!r}")
        if obj is None:
            found.add(fid.raw)
        elif not isinstance(obj, FileObject):
            st.bad_objects[fid.raw] = f"object {fid.hex[:16]} ({path!r}) should be a file"
            found.add(fid.raw)
        else:
            for c, _ in edges(obj).chunks:
                key = chunk_key(c)
                if key not in st.good_chunks and (key in st.bad_chunks or not self.found_now(c)):
                    if key not in st.bad_chunks:
                        self.missing[key] = st.unindexed.get(key, f"chunk {c.hex[:16]} of {path!r} is in no pack")
                    found.add(key)
        self.memo[fid.raw] = frozenset(found)
        return self.memo[fid.raw]

    def found_now(self, chunk_id: ObjectId) -> bool:
        """Whether ``chunk_id``, in no pack fsck read, reads back verified from where
        the store's index puts it now (see the module docstring); it is good then."""
        if self.not_found >= RELOOK_LIMIT:
            return False
        odb = self.store.odb
        if not self.reloaded:
            odb.reload()  # the index as it is after both looks, not as some caller loaded it
            self.reloaded = True
        try:
            odb.get_chunk(chunk_id)
        except ObjstoreError:
            self.not_found += 1
            return False
        self.st.good_chunks.add(chunk_key(chunk_id))
        return True

    def bad_under_tree(self, tid: ObjectId, path: str, depth: int = 0) -> frozenset[bytes]:
        if tid.raw in self.memo:
            return self.memo[tid.raw]
        found: set[bytes] = set()
        obj = self.get(tid, f"directory {path or '/'!r}")
        if obj is None:
            found.add(tid.raw)
        elif not isinstance(obj, Tree) or depth > 256:
            self.st.bad_objects[tid.raw] = f"object {tid.hex[:16]} ({path or '/'!r}) should be a tree"
            found.add(tid.raw)
        else:
            for name, kind, child in tree_children(obj):
                sub = f"{path}{name}"
                if kind == TREE:
                    found |= self.bad_under_tree(child, sub + "/", depth + 1)
                else:
                    found |= self.bad_under_file(child, sub)
        self.memo[tid.raw] = frozenset(found)
        return self.memo[tid.raw]

    def get(self, oid: ObjectId, what: str) -> object | None:
        """The object ``oid`` (``what`` names it), or None, recorded as bad or missing."""
        if oid.raw in self.st.bad_objects:
            return None
        try:
            return self.store.odb.get_object(oid)
        except NotFound:
            self.missing[oid.raw] = f"{what} (object {oid.hex[:16]}) is not in the store"
        except (ObjstoreError, UnsafePath) as exc:
            self.st.bad_objects[oid.raw] = f"object {oid.hex[:16]} ({what}): {exc}"
        return None
