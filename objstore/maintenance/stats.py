"""``du``: how much the store holds, logically and on disk, and what dedup and
compression save.

Terms:

- *logical bytes*: the sum of every version's size (each version object counted
  once, however many refs or registry links name it) — what downloading every
  version would write.
- *unique bytes*: the raw bytes of the distinct chunks those versions reference.
- *chunk stored bytes*: those chunks as stored (after compression).
- *stored bytes*: everything in ``packs/`` and ``objects/``, garbage included, and
  *temp bytes*: files under ``tmp/`` (a writer's pack in progress, or the leftover
  of one that died; ``gc`` removes those older than its grace period).
- *dedup ratio* = logical / unique; *compression ratio* = unique / chunk stored.
"""

from __future__ import annotations

from dataclasses import dataclass

from objstore.errors import CorruptObject, NotFound
from objstore.model.inventory import ContentWalker, iter_version_refs
from objstore.model.store import Store
from objstore.storage.ids import ChunkKey, ObjectId
from objstore.storage.keys import OBJECTS, PACKS, TMP, idx_name_of, index_file_name_of, pack_name_of


@dataclass(frozen=True, slots=True)
class Usage:
    """Usage of a set of versions (the whole store, or one project)."""

    versions: int
    logical_bytes: int
    unique_bytes: int
    chunk_stored_bytes: int

    @property
    def dedup_ratio(self) -> float:
        return self.logical_bytes / self.unique_bytes if self.unique_bytes else 1.0

    @property
    def compression_ratio(self) -> float:
        return self.unique_bytes / self.chunk_stored_bytes if self.chunk_stored_bytes else 1.0

    def to_dict(self) -> dict[str, float | int]:
        return {
            "versions": self.versions, "logical_bytes": self.logical_bytes, "unique_bytes": self.unique_bytes,
            "chunk_stored_bytes": self.chunk_stored_bytes, "dedup_ratio": round(self.dedup_ratio, 4),
            "compression_ratio": round(self.compression_ratio, 4),
        }


@dataclass(frozen=True, slots=True)
class StoreUsage:
    """The whole store: ``total`` over every version, the bytes on the backend, and
    (with ``by="project"``) one :class:`Usage` per ``entity/project``."""

    total: Usage
    pack_bytes: int
    index_bytes: int
    object_bytes: int
    packs: int
    objects: int
    projects: dict[str, Usage]
    temp_bytes: int = 0
    temp_files: int = 0
    damaged_versions: tuple[str, ...] = ()  # left out of the totals: they do not read (fsck says more)

    @property
    def stored_bytes(self) -> int:
        return self.pack_bytes + self.index_bytes + self.object_bytes + self.temp_bytes

    def to_dict(self) -> dict[str, object]:
        return {
            **self.total.to_dict(),
            "stored_bytes": self.stored_bytes, "pack_bytes": self.pack_bytes, "index_bytes": self.index_bytes,
            "object_bytes": self.object_bytes, "temp_bytes": self.temp_bytes, "temp_files": self.temp_files,
            "damaged_versions": list(self.damaged_versions),
            "packs": self.packs, "objects": self.objects,
            "projects": {name: u.to_dict() for name, u in sorted(self.projects.items())},
        }


def disk_usage(store: Store, *, by: str | None = None) -> StoreUsage:
    """Measure ``store``. ``by="project"`` adds per-project usage (a chunk shared by
    two projects counts in both)."""
    if by not in (None, "project"):
        from objstore.errors import InvalidInput

        raise InvalidInput(f"du can group by 'project' only, not {by!r}")
    store.odb.refresh()
    stored_len: dict[ChunkKey, int] = {}
    for raw, loc in store.odb.index.iter_entries():
        stored_len.setdefault(raw, loc.stored_len)
    walker = ContentWalker(store)
    seen_versions: set[ObjectId] = set()
    groups: dict[str, tuple[int, int, dict[ChunkKey, int]]] = {}
    total_versions, total_logical = 0, 0
    total_chunks: dict[ChunkKey, int] = {}
    damaged: set[str] = set()
    for ref in iter_version_refs(store, strict=False, damaged=lambda label, _: damaged.add(label)):
        if ref.version_id in seen_versions:
            continue
        v = ref.version
        try:
            sizes = walker.chunk_sizes(v.tree)
        except (CorruptObject, NotFound):
            damaged.add(ref.label)  # one damaged version never hides the rest
            continue
        seen_versions.add(ref.version_id)
        total_versions += 1
        total_logical += v.size
        total_chunks.update(sizes)
        if by == "project":
            key = f"{v.entity}/{v.project}"
            n, logical, chunks = groups.get(key, (0, 0, {}))
            chunks.update(sizes)
            groups[key] = (n + 1, logical + v.size, chunks)

    def usage(n: int, logical: int, chunks: dict[ChunkKey, int]) -> Usage:
        return Usage(n, logical, sum(chunks.values()), sum(stored_len.get(c, 0) for c in chunks))

    st = stored(store)
    return StoreUsage(
        usage(total_versions, total_logical, total_chunks), st.pack_bytes, st.index_bytes, st.object_bytes, st.packs,
        st.objects, {k: usage(*g) for k, g in groups.items()}, st.temp_bytes, st.temp_files, tuple(sorted(damaged)),
    )


@dataclass(frozen=True, slots=True)
class Stored:
    """What the store's files take, from one listing (no version is read)."""

    pack_bytes: int
    index_bytes: int
    object_bytes: int
    packs: int
    objects: int
    temp_bytes: int
    temp_files: int

    @property
    def total(self) -> int:
        """Everything but temp files: du's *stored bytes*."""
        return self.pack_bytes + self.index_bytes + self.object_bytes


def stored(store: Store) -> Stored:
    """The bytes and counts of ``packs/``, ``objects/`` and ``tmp/`` (cheap: listings only)."""
    pack_bytes = index_bytes = object_bytes = packs = objects = 0
    for info in store.backend.iter_prefix(PACKS):
        if pack_name_of(info.key) is not None:
            pack_bytes += info.size
            packs += 1
        elif idx_name_of(info.key) is not None or index_file_name_of(info.key) is not None:
            index_bytes += info.size
    for info in store.backend.iter_prefix(OBJECTS):
        object_bytes += info.size
        objects += 1
    temp_bytes = temp_files = 0
    for info in store.backend.iter_prefix(TMP):
        temp_bytes += info.size
        temp_files += 1
    return Stored(pack_bytes, index_bytes, object_bytes, packs, objects, temp_bytes, temp_files)
