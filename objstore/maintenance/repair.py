"""Repairing a damaged store from another store that holds the same things intact.

``objstore fsck --repair-from REMOTE`` runs :func:`repair_from`: fsck names what
is damaged or missing; everything the other store (a clone, a remote, a backup)
holds intact is fetched by id, verified against that id, and written back.

Packs are content-named and never rewritten in place, so a damaged pack cannot
be patched. Instead, in the write order of :mod:`objstore.storage.odb`:

1. every still-good chunk of a damaged pack (one that fails its checksum, or
   holds a chunk that does not verify) that no healthy pack also holds is copied
   into a new pack, together with the damaged and missing chunks fetched from the
   other store (each verified by the other store's odb before it is accepted);
2. the new pack and its index are stored;
3. only then is each damaged pack moved under ``quarantine/`` (index first, so
   no reader learns of a pack about to vanish), kept for inspection rather than
   deleted; ``gc`` never looks there.

An ``.idx`` that is damaged or missing beside an intact pack is rebuilt from the
pack (the pack carries its own index, covered by its checksum). A damaged or
missing metadata object is fetched, verified, the damaged copy quarantined, and
the good one stored under the same id. A version ref holding garbage is reset to
the other store's value for that ref when that value names a version of the same
collection and index. Whatever the other store cannot supply is reported as
unrepaired; the report's last fsck says exactly what is still broken.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import BinaryIO

from objstore.constants import PACK_TARGET
from objstore.errors import CorruptObject, NotFound, ObjstoreError
from objstore.maintenance.fsck import FsckReport, fsck
from objstore.model.refs import decode_value
from objstore.model.store import Store
from objstore.storage import codecs
from objstore.storage.chunkindex import covered_indexes, list_indexes
from objstore.storage.ids import ChunkKey, ObjectId, chunk_key
from objstore.storage.keys import PACKS, idx_key, idx_name_of, object_key, pack_key, parse_ref_key, quarantine_key
from objstore.storage.objects import Link, Version, encode
from objstore.storage.odb import ObjectDatabase
from objstore.storage.packs import (
    PackBuilder,
    decode_idx,
    decode_verified,
    encode_idx,
    entry_id,
    index_ids,
    read_pack_index,
    scan_all_records,
    scan_records,
    verify_pack,
)
from objstore.storage.remotecache import bypass

Progress = Callable[[str], None]


@dataclass
class RepairReport:
    """What :func:`repair_from` did, and what fsck says afterwards."""

    before: FsckReport
    after: FsckReport
    repacked_chunks: int = 0  # good chunks moved out of damaged packs
    fetched_chunks: int = 0
    fetched_objects: int = 0
    rebuilt_indexes: list[str] = field(default_factory=list)
    repaired_refs: list[str] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)  # keys moved under quarantine/
    unavailable: list[str] = field(default_factory=list)  # ids the other store could not supply

    @property
    def ok(self) -> bool:
        return self.after.ok

    def to_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok, "repacked_chunks": self.repacked_chunks, "fetched_chunks": self.fetched_chunks,
            "fetched_objects": self.fetched_objects, "rebuilt_indexes": self.rebuilt_indexes,
            "repaired_refs": self.repaired_refs, "quarantined": self.quarantined, "unavailable": self.unavailable,
            "before": self.before.to_dict(), "after": self.after.to_dict(),
        }


def repair_from(store: Store, other: Store, *, progress: Progress | None = None) -> RepairReport:
    """Repair ``store`` with intact copies from ``other``; return what was done.

    ``store`` is left with a fresh object database (the old one may still index
    quarantined packs). Safe to re-run: a second run finds nothing to do, or only
    what ``other`` could not supply.
    """
    with bypass(store.backend):  # the bucket itself, not the local cache's verified copies
        return _repair(store, other, progress)


def _repair(store: Store, other: Store, progress: Progress | None) -> RepairReport:
    before = fsck(store)
    report = RepairReport(before, before)
    if before.ok:
        return report
    store.odb.flush()
    run = _Run(store, other, report, progress or (lambda text: None))
    _sort_packs(run)
    fresh = ObjectDatabase(store.backend, codec_policy=store.odb.codec_policy, index_files=store.odb.index_files)
    packer = _Packer(store, set(run.damaged), report)
    _repack_salvaged(run, packer)
    _fetch_chunks(run, packer)
    packer.close()  # new packs, then their indexes: before any damaged pack goes
    _quarantine_damaged(run, packer.restored)
    _fetch_objects(run, fresh)
    _repair_version_refs(run, fresh)
    store.odb = fresh
    report.after = fsck(store)
    return report


@dataclass
class _Run:
    """One repair's state, shared by its steps."""

    store: Store
    other: Store
    report: RepairReport
    note: Progress
    pack_names: list[str] = field(default_factory=list)
    idx_names: set[str] = field(default_factory=set)
    healthy: dict[str, set[ChunkKey]] = field(default_factory=dict)
    damaged: dict[str, bytes] = field(default_factory=dict)
    have_good: set[ChunkKey] = field(default_factory=set)  # chunk ids held intact, in a healthy or a new pack
    missing_objects: set[str] = field(default_factory=set)  # metadata objects to fetch


def _sort_packs(run: _Run) -> None:
    """Sort healthy packs from damaged ones; rebuild a lost or damaged index beside a healthy pack."""
    store, backend, report = run.store, run.store.backend, run.report
    run.pack_names = sorted(store.odb.iter_pack_names())
    run.idx_names = {n for i in backend.iter_prefix(PACKS) if (n := idx_name_of(i.key)) is not None}
    covered = covered_indexes(backend, list_indexes(backend)).indexes  # packs a consolidated index file covers need no .idx
    for name in run.pack_names:
        try:
            data = backend.get(pack_key(name))
        except NotFound:
            continue
        try:
            verify_pack(data, name)
            index = read_pack_index(data, name)
        except CorruptObject:
            run.damaged[name] = data
            continue
        if not all(_record_ok(entry.chunk_id, entry.codec, entry.raw_len, payload) for entry, payload in scan_records(data)):
            run.damaged[name] = data  # written bad, checksum and all: still not to be trusted
            continue
        run.healthy[name] = set(index_ids(index))
        if name not in covered and not _idx_intact(store, name, run.idx_names):
            backend.put(idx_key(name), encode_idx(name, index))  # a cache, derived from the verified pack
            report.rebuilt_indexes.append(name)
            run.note(f"rebuilt the index of pack {name[:16]}")
    run.have_good = set().union(*run.healthy.values()) if run.healthy else set()


def _repack_salvaged(run: _Run, packer: _Packer) -> None:
    """Copy every still-good chunk of a damaged pack that no healthy pack holds into a new pack."""
    for name, data in run.damaged.items():
        for chunk_id, codec, raw_len, payload in _salvage(run.store, name, data):
            if chunk_key(chunk_id) in run.have_good or not _record_ok(chunk_id, codec, raw_len, payload):
                continue
            packer.add(chunk_id, codec, raw_len, payload)
            run.have_good.add(chunk_key(chunk_id))
            run.report.repacked_chunks += 1


def _fetch_chunks(run: _Run, packer: _Packer) -> None:
    """Fetch the damaged and missing chunks from the other store into a new pack.

    A "missing" id the other store holds as an object is left for :func:`_fetch_objects`.
    """
    store, other, report = run.store, run.other, run.report
    wanted = {p.object_id for p in report.before.problems if p.kind in ("chunk", "missing")}
    run.missing_objects = {p.object_id for p in report.before.problems if p.kind == "object"}
    for hex_id in sorted(wanted):
        oid = ObjectId.from_hex(hex_id)
        if oid.raw in run.have_good:
            continue
        if other.odb.has_object(oid):
            run.missing_objects.add(hex_id)  # "missing" names objects as well as chunks
            continue
        try:
            raw = other.odb.get_chunk(oid)  # verified against its id by the other odb
        except (NotFound, CorruptObject) as exc:
            report.unavailable.append(f"chunk {hex_id[:16]}: {exc}")
            continue
        codec_id, encoded = codecs.encode_chunk(raw, None, store.odb.codec_policy)
        packer.add(oid, codec_id, len(raw), encoded)
        run.have_good.add(chunk_key(oid))
        report.fetched_chunks += 1


def _quarantine_damaged(run: _Run, restored: set[str]) -> None:
    """Quarantine each damaged pack not restored in place (index first), and indexes that lost their pack."""
    for name in sorted(set(run.damaged) - restored):
        _quarantine(run.store, idx_key(name), run.report)
        _quarantine(run.store, pack_key(name), run.report)
        run.note(f"quarantined damaged pack {name[:16]}")
    for name in sorted(run.idx_names - set(run.pack_names)):
        _quarantine(run.store, idx_key(name), run.report)


def _fetch_objects(run: _Run, fresh: ObjectDatabase) -> None:
    """Fetch each damaged or missing metadata object, verify it, quarantine the bad copy, store the good one."""
    report = run.report
    for hex_id in sorted(run.missing_objects):
        oid = ObjectId.from_hex(hex_id)
        try:
            obj = run.other.odb.get_object(oid)  # decoded and verified against its id
        except (NotFound, CorruptObject) as exc:
            report.unavailable.append(f"object {hex_id[:16]}: {exc}")
            continue
        if encode(obj)[0] != oid:
            report.unavailable.append(f"object {hex_id[:16]}: the other store's copy re-encodes to another id")
            continue
        _quarantine(run.store, object_key(oid), report)
        fresh.put_object(obj)
        report.fetched_objects += 1


def _repair_version_refs(run: _Run, fresh: ObjectDatabase) -> None:
    """Reset each version ref holding garbage to the other store's value, where that value fits."""
    for p in run.report.before.problems:
        if p.kind == "ref" and p.breaks:
            _repair_version_ref(run.store, run.other, fresh, p.object_id, run.report)


class _Packer:
    """Writes repaired chunks into new packs (closed at PACK_TARGET).

    A pack's name is its checksum, so re-packing every chunk of a damaged pack in
    its original order recreates *that* pack, under the damaged one's name. Then
    the damaged file is copied to quarantine and replaced in place by the good
    bytes (an atomic put of exactly the content the name promises), rather than
    being kept by create-only semantics and then quarantined with nothing left.
    """

    def __init__(self, store: Store, damaged: set[str], report: RepairReport) -> None:
        self.store = store
        self.damaged = damaged
        self.report = report
        self.restored: set[str] = set()
        self._file: BinaryIO | None = None
        self._builder: PackBuilder | None = None

    def add(self, chunk_id: ObjectId, codec: int, raw_len: int, payload: bytes | memoryview) -> None:
        if self._builder is None:
            self._file = tempfile.TemporaryFile()
            self._builder = PackBuilder(self._file)
        self._builder.add(chunk_id, codec, raw_len, payload)
        if self._builder.size >= PACK_TARGET:
            self.close()

    def close(self) -> None:
        builder, f = self._builder, self._file
        self._builder = self._file = None
        if builder is None or f is None:
            return
        with f:
            name = builder.finish()
            f.seek(0)
            data = f.read()
        backend = self.store.backend
        if name in self.damaged:
            _quarantine_copy(self.store, pack_key(name), self.report)
            _quarantine_copy(self.store, idx_key(name), self.report)
            backend.put(pack_key(name), data)
            backend.put(idx_key(name), encode_idx(name, builder.index))
            self.restored.add(name)
        else:
            backend.put_if_absent(pack_key(name), data)
            backend.put_if_absent(idx_key(name), encode_idx(name, builder.index))


def _quarantine_copy(store: Store, key: str, report: RepairReport) -> None:
    try:
        store.backend.put(quarantine_key(key), store.backend.get(key))
        report.quarantined.append(key)
    except NotFound:
        pass


def _record_ok(chunk_id: ObjectId, codec: int, raw_len: int, payload: memoryview | bytes) -> bool:
    try:
        decode_verified(chunk_id, codec, raw_len, len(payload), payload, "a damaged pack")
    except ObjstoreError:
        return False
    return True


def _salvage(store: Store, name: str, data: bytes) -> list[tuple[ObjectId, int, int, memoryview]]:
    """Every chunk record a damaged pack may still hold: where its ``.idx`` says, and
    where a walk of the records from the front finds them (a truncated pack has no
    trailer, so the walk runs to the last whole record). Callers verify each."""
    view = memoryview(data)
    found: list[tuple[ObjectId, int, int, memoryview]] = []
    try:
        for e in decode_idx(store.backend.get(idx_key(name)), name):
            off, n = int(e["offset"]), int(e["stored_len"])
            if off + n <= len(view):
                found.append((ObjectId(entry_id(e["id"])), int(e["codec"]), int(e["raw_len"]), view[off:off + n]))
    except (CorruptObject, NotFound):
        pass
    for entry, payload in scan_all_records(view):
        found.append((entry.chunk_id, entry.codec, entry.raw_len, payload))
    return found


def _idx_intact(store: Store, name: str, idx_names: set[str]) -> bool:
    if name not in idx_names:
        return False
    try:
        decode_idx(store.backend.get(idx_key(name)), name)
        return True
    except (CorruptObject, NotFound):
        return False


def _quarantine(store: Store, key: str, report: RepairReport) -> None:
    """Move ``key`` under ``quarantine/`` (copy, then delete): kept, never read again."""
    try:
        data = store.backend.get(key)
    except NotFound:
        return
    store.backend.put(quarantine_key(key), data)
    store.backend.delete(key)
    report.quarantined.append(key)


def _repair_version_ref(store: Store, other: Store, odb: ObjectDatabase, key: str, report: RepairReport) -> None:
    parsed = parse_ref_key(key)
    if parsed is None or parsed.kind != "version":
        return
    try:
        current = store.backend.get(key)
        value = other.backend.get(key)
        oid = decode_value(key, value)
    except (NotFound, CorruptObject):
        report.unavailable.append(f"ref {key}: the other store has no readable value for it")
        return
    if oid is None:
        return
    try:
        obj = odb.get_object(oid) if odb.has_object(oid) else other.odb.get_object(oid)
    except (NotFound, CorruptObject) as exc:
        report.unavailable.append(f"ref {key}: {exc}")
        return
    entity, project, name, vname = parsed.entity, parsed.project, parsed.name, parsed.tail
    if isinstance(obj, Version):
        same = (obj.entity, obj.project, obj.name, f"v{obj.index}") == (entity, project, name, vname)
    elif isinstance(obj, Link):
        same = (obj.registry, f"v{obj.index}") == (f"{entity}/{project}/{name}", vname)
    else:
        same = False
    if not same:
        report.unavailable.append(f"ref {key}: the other store's value is not {entity}/{project}/{name}:{vname}")
        return
    odb.put_object(obj)  # the objects below it are checked by the closing fsck
    # Version refs are write-once; repair is the one writer allowed to replace garbage
    # (by CAS against the garbage read, so a concurrent repair cannot be overwritten).
    store.refs.replace_garbage(key, current, oid, "repair: replaced with the other store's value")
    report.repaired_refs.append(key)
