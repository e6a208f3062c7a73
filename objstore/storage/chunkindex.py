"""The store-wide chunk index: which pack holds each chunk.

Two kinds of source, searched alike (a vectorized binary search each):

- consolidated index files (``packs/<name>.midx``, :mod:`objstore.storage.indexfile`),
  each covering many packs, memory-mapped and searched on disk, never loaded.
  What is mapped is always a private copy, named by the file's name (its
  checksum): a remote store's is fetched once into the remote cache
  (:mod:`objstore.storage.remotecache`), where it counts against the cache's
  one bound, is evicted least recently used first and is checked again when its
  stat changed (with no cache, or a file too large for it, into an unlinked
  temporary file); a local store's is copied into the user cache directory
  (keyed by the store's path) in the same pass that checks its checksum
  (reading in blocks, so memory does not grow with it). Never the store's own file: a file in a directory others can write
  can be truncated under a mapping, and the next lookup touching a page past
  its new end kills the process with SIGBUS (git maps its pack indexes in place
  and accepts that risk; we don't). With no writable cache directory the file
  is read into memory instead. Lookups go through ``IndexFile.find``, which
  releases the mapped pages after each window of probes, so what a process
  keeps mapped stays bounded whatever it asks;
- one in-memory sorted array, for the ``.idx`` files no index file covers (at
  most about ``INDEX_COMPACT_THRESHOLD`` of them; the object database reads
  them only as its lookups need them, newest first) and the packs this process adds.

Invariants:

- An index file covering packs S holds exactly the union of their ``.idx``
  entries. It is written create-only, and only once it is durable are the
  ``.idx`` files (and smaller index files) it replaces deleted: at every
  moment each pack's entries are in its ``.idx``, in an index file, or both.
  Coverage may overlap (two compactions at once, a crash between write and
  delete): lookups take the union, so overlap only costs space.
- Entries of packs gc has marked are carried over as they are (marked ``.idx``
  files stay loose), so compaction never changes what gc's two phases see.
- gc removes a pack from every index file covering it before it deletes the
  pack (:func:`drop_packs`). A compaction racing it may still publish a file
  naming the gone pack; that is stale, not wrong: every chunk gc kept of it has
  a copy in a pack that stays, readers skip packs they found gone
  (``ChunkIndex.gone``) and take another copy, and the next gc drops the pack.
- A reader that listed an ``.idx`` or index file that is gone when it reads it
  lists again (a compaction replaced it): see ``ObjectDatabase.refresh`` and,
  for gc's whole index, :func:`read_all_indexes`.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import blake3
import numpy as np

from objstore.constants import INDEX_COMPACT_THRESHOLD, MiB
from objstore.errors import CorruptObject, NotFound
from objstore.storage.backend import Backend, new_temp_file
from objstore.storage.ids import ChunkKey
from objstore.storage.indexfile import (
    HEADER,
    MAX_INDEX_FILE_BYTES,
    IndexFile,
    checksum_ok,
    claimed_size,
    from_pack_index,
    merge,
    search,
    verify_index_file,
    write_index_file,
)
from objstore.storage.keys import (
    GC_MARKED,
    PACKS,
    idx_key,
    idx_name_of,
    index_file_key,
    index_file_name_of,
    marked_pack_name_of,
    pack_name_of,
)
from objstore.storage.packs import INDEX_DTYPE, decode_idx, entry_id, max_idx_bytes
from objstore.storage.remotecache import ENTRY_SHARE, KIND_DIRS, TOUCH_AFTER, RemoteCache, cache_of, store_id

# Index files are checked and fetched in blocks of this size (bounded memory).
BLOCK = 8 * MiB
# Compaction merges every index file once there are more than this many, whatever
# their sizes; below it, only those the geometric rule picks (see _pick_files).
MAX_INDEX_FILES = 16
# A whole-index read (gc's) lists the index files again at most this many times
# when one it listed was merged away before it could read it.
RELIST_ATTEMPTS = 4


@dataclass(frozen=True, slots=True)
class ChunkLocation:
    pack: str
    offset: int
    stored_len: int
    raw_len: int
    codec: int


class ChunkIndex:
    """Which pack holds each chunk: index files searched on disk, plus one sorted
    numpy array over the packs loaded from their own ``.idx``.

    Membership of a batch is a vectorized binary search per source, so asking
    about a million ids costs milliseconds, not a million dict probes. A chunk
    stored in several packs has several entries; lookups return one in a pack not
    in ``gone`` (packs this process found deleted), memory first.
    """

    def __init__(self, gone: set[str] | None = None) -> None:
        self.packs: list[str] = []
        self._pack_no: dict[str, int] = {}
        self._ids = np.empty(0, dtype="S32")
        self._entries = np.empty(0, dtype=INDEX_DTYPE)
        self._owner = np.empty(0, dtype=np.int32)
        self.files: dict[str, IndexFile] = {}
        self._covered: set[str] = set()
        self.gone: set[str] = set() if gone is None else gone

    def __len__(self) -> int:
        return len(self._ids) + sum(len(f) for f in self.files.values())

    def __contains__(self, pack_name: str) -> bool:
        return pack_name in self._pack_no or pack_name in self._covered

    @property
    def covered_packs(self) -> set[str]:
        """The packs the loaded index files cover."""
        return self._covered

    def covers(self, pack_name: str) -> bool:
        """Whether a loaded index file covers ``pack_name``."""
        return pack_name in self._covered

    def add_file(self, index_file: IndexFile) -> None:
        if index_file.name not in self.files:
            self.files[index_file.name] = index_file
            self._covered.update(index_file.pack_names)

    def add_packs(self, indexes: Iterable[tuple[str, np.ndarray]]) -> None:
        new_entries, new_owner = [self._entries], [self._owner]
        for name, index in indexes:
            if name in self._pack_no:
                continue
            self._pack_no[name] = len(self.packs)
            self.packs.append(name)
            new_entries.append(index)
            new_owner.append(np.full(len(index), self._pack_no[name], dtype=np.int32))
        if len(new_entries) == 1:
            return
        entries = np.concatenate(new_entries)
        owner = np.concatenate(new_owner)
        order = np.argsort(entries["id"], kind="stable")
        self._entries, self._owner = entries[order], owner[order]
        self._ids = np.ascontiguousarray(self._entries["id"])  # search views it as bytes

    # -- the sources, alike ------------------------------------------------------
    def _sources(self) -> Iterator[tuple[list[str], IndexFile | None]]:
        """Each source with the pack names its entries' owner numbers index: the
        in-memory array (None), then each index file."""
        if len(self._ids):
            yield self.packs, None
        for f in self.files.values():
            if len(f):
                yield f.pack_names, f

    def _find(self, f: IndexFile | None, probe: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """For each probe in source ``f``: position, hit, a copy of the entry there
        and its pack number (see :meth:`IndexFile.find`, which keeps what a mapped
        file leaves in memory bounded)."""
        if f is None:
            pos, hit = search(self._ids, probe)
            return pos, hit, self._entries[pos], self._owner[pos]
        pos, hit, got = f.find(probe)
        return pos, hit, got, got["pack"]

    def _twins(self, f: IndexFile | None, pos: int, probe: np.bytes_) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The entries (one-row arrays) and pack numbers of every copy of ``probe``
        from ``pos`` on (a chunk stored in several packs has an entry each)."""
        ids = self._ids if f is None else f.ids
        end = pos
        try:
            while end < len(ids) and ids[end] == probe:
                if f is None:
                    yield self._entries[end:end + 1], self._owner[end:end + 1]
                else:
                    row = np.array(f.entries[end:end + 1])
                    yield row, row["pack"]
                end += 1
        finally:
            if f is not None:
                f.release(pos, end + 1)

    def _gone_numbers(self, names: list[str]) -> np.ndarray:
        return np.array([i for i, n in enumerate(names) if n in self.gone], dtype=np.int64)

    def contains_many(self, ids: list[bytes]) -> np.ndarray:
        found = np.zeros(len(ids), dtype=bool)
        if not ids:
            return found
        probe = np.array(ids, dtype="S32")
        for names, f in self._sources():
            _, hit, _, owner = self._find(f, probe)
            if self.gone and hit.any():
                gone = self._gone_numbers(names)
                if len(gone):
                    # A hit in a gone pack may have a twin in a live one: ask the slow way.
                    in_gone = hit & np.isin(owner, gone)
                    for i in np.flatnonzero(in_gone & ~found):
                        found[i] = self.locate(ids[i]) is not None
                    hit &= ~in_gone
            found |= hit
        return found

    def locate(self, chunk_id: bytes, avoid: set[str] | frozenset[str] = frozenset()) -> ChunkLocation | None:
        """Where ``chunk_id`` is, in a pack neither in ``gone`` nor in ``avoid``
        (a writer avoids packs gc marked: a copy elsewhere still counts)."""
        # numpy's S32 drops trailing NUL bytes on the way out, so compare as numpy
        # values (both sides trimmed alike), never against a Python bytes object.
        probes = np.array([chunk_id], dtype="S32")
        for names, f in self._sources():
            pos, hit, _, _ = self._find(f, probes)
            if not hit[0]:
                continue
            for entries, owner in self._twins(f, int(pos[0]), probes[0]):
                loc = _location(names, entries, owner, f)[0]
                if loc.pack not in self.gone and loc.pack not in avoid:
                    return loc
        return None

    def locate_many(self, chunk_ids: list[bytes]) -> list[ChunkLocation | None]:
        """:meth:`locate` for a batch, with one vectorized search per source."""
        out: list[ChunkLocation | None] = [None] * len(chunk_ids)
        if not chunk_ids:
            return out
        probe = np.array(chunk_ids, dtype="S32")
        todo = np.arange(len(chunk_ids))
        for names, f in self._sources():
            if not len(todo):
                break
            _, hit, entries, owner = self._find(f, probe[todo])
            for i, loc in zip(todo[hit].tolist(), _location(names, entries[hit], owner[hit], f)):
                out[i] = loc if loc.pack not in self.gone else self.locate(chunk_ids[i])
            todo = todo[~hit]
        return out

    def iter_entries(self) -> Iterator[tuple[ChunkKey, ChunkLocation]]:
        for names, f in self._sources():
            ids = self._ids if f is None else f.ids
            for start in range(0, len(ids), 65536):
                sel = slice(start, start + 65536)
                if f is None:
                    entries, owner = self._entries[sel], self._owner[sel]
                else:
                    entries = np.array(f.entries[sel])
                    owner = entries["pack"]
                keys = [entry_id(x) for x in ids[sel]]
                locs = _location(names, entries, owner, f)
                if f is not None:
                    f.release(start, start + 65536)  # a full scan keeps one block mapped, not the file
                yield from zip(keys, locs)


def _location(names: list[str], entries: np.ndarray, owner: np.ndarray, f: IndexFile | None) -> list[ChunkLocation]:
    if f is not None:
        entries = f.check(np.asarray(entries))  # an entry of a file is untrusted until checked
    offsets, stored, raw, codec = (entries[k].tolist() for k in ("offset", "stored_len", "raw_len", "codec"))
    return [ChunkLocation(names[o], offsets[i], stored[i], raw[i], codec[i]) for i, o in enumerate(owner.tolist())]


# -- listing and opening --------------------------------------------------------

@dataclass(frozen=True, slots=True)
class IndexListing:
    """One listing of ``packs/``: sizes of the packs, their ``.idx`` and the index
    files, and when each ``.idx`` was stored."""

    packs: dict[str, int] = field(default_factory=dict)
    idx: dict[str, int] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)
    mtimes: dict[str, float] = field(default_factory=dict)  # of each .idx, as the backend reports it


def list_indexes(backend: Backend) -> IndexListing:
    listing = IndexListing()
    for info in backend.iter_prefix(PACKS):
        if (name := idx_name_of(info.key)) is not None:
            listing.idx[name] = info.size
            listing.mtimes[name] = info.mtime
        elif (name := pack_name_of(info.key)) is not None:
            listing.packs[name] = info.size
        elif (name := index_file_name_of(info.key)) is not None:
            listing.files[name] = info.size
    return listing


def marked_packs(backend: Backend) -> set[str]:
    return {marked_pack_name_of(info.key) for info in backend.iter_prefix(GC_MARKED)}


def open_index_file(backend: Backend, name: str, size: int, *, recheck: bool = False) -> IndexFile:
    """Index file ``name`` (``size`` bytes, from the listing), checked against its
    checksum and mapped from a private copy: a local store's in the user cache
    directory (made on first use), a remote store's in the remote cache, where it
    counts against the cache's bound (:func:`_open_cached`). NotFound if it is
    gone, CorruptObject if damaged. ``recheck``: hash the file even if it was
    checked before (gc, fsck; fsck reads the bucket itself, through ``bypass``)."""
    if size > MAX_INDEX_FILE_BYTES:
        raise CorruptObject(f"index file {name[:16]} is {size} bytes, larger than any index file", object_id=name)
    local = _local_path(backend, index_file_key(name))
    if local is not None:
        return _open_local(local, name, cache_path(backend, name), recheck)
    cache = cache_of(backend)
    if cache is not None:
        with contextlib.suppress(OSError):  # an unusable cache directory: an unkept copy
            return _open_cached(backend, cache, name, size, recheck)
    return _open_unkept(backend, name, size)


def _open_cached(backend: Backend, cache: RemoteCache, name: str, size: int, recheck: bool) -> IndexFile:
    """Index file ``name`` mapped from the remote cache: the entry held if its
    stamp (an entry of its own) matches its stat, or its checksum holds; else
    fetched into a reservation of the cache's bound, checked, renamed into place
    and stamped. A held entry that fails its checksum is deleted and fetched
    again, never mapped. One larger than the cache keeps an entry is not kept."""
    parts, entry, stamp = (store_id(backend.url), KIND_DIRS["index file"]), f"{name}.midx", f"{name}.ok"
    label = f"{index_file_key(name)}#stamp"
    held = cache.open_raw(parts, entry)
    if held is not None:
        fd, st = held
        try:
            fresh = not recheck and cache.read(parts, stamp, label, 256) == _stamp_text((st,)).encode()
            if fresh or (st.st_size == size and checksum_ok(lambda start, n: os.pread(fd, n, start), size, name, BLOCK)):
                if not fresh or time.time() - st.st_mtime > TOUCH_AFTER:
                    os.utime(fd)  # its age in the LRU order; the new ctime needs a new stamp
                    cache.write(parts, stamp, label, _stamp_text((os.fstat(fd),)).encode())
                cache.counters.hits += 1
                cache.counters.bytes_served += size
                return _map(fd, os.fstat(fd), name)
            cache.counters.damaged += 1
            cache.drop_entries(parts, [entry, stamp])
        finally:
            os.close(fd)
    cache.counters.misses += 1
    if size > cache.bound // ENTRY_SHARE:
        return _open_unkept(backend, name, size)
    dir_fd, tmp = cache.reserve(parts, size)
    kept = False
    try:
        with os.fdopen(os.open(tmp, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd), "r+b") as out:
            _fetch_into(backend, name, size, out)
            if not checksum_ok(lambda start, n: os.pread(out.fileno(), n, start), size, name, BLOCK):
                raise _damaged(name)  # the bucket's file: nothing kept
            os.rename(tmp, entry, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            kept = True
            cache.counters.bytes_kept += size
            cache.write(parts, stamp, label, _stamp_text((os.fstat(out.fileno()),)).encode())
            return _map(out.fileno(), os.fstat(out.fileno()), name)
    except BaseException:
        if not kept:  # once renamed, the reservation is the entry's
            cache.release(dir_fd, tmp, size)
        raise
    finally:
        os.close(dir_fd)


def _open_unkept(backend: Backend, name: str, size: int) -> IndexFile:
    """Index file ``name`` fetched into an unlinked temporary file and mapped from
    it (no cache, or too large for it): memory does not grow with the file, and
    its disk space is freed when the process lets it go."""
    with tempfile.TemporaryFile() as out:
        _fetch_into(backend, name, size, out)
        if not checksum_ok(lambda start, n: os.pread(out.fileno(), n, start), size, name, BLOCK):
            raise _damaged(name)
        return _map(out.fileno(), os.fstat(out.fileno()), name)


def _parse_checked(data: bytes, name: str) -> IndexFile:
    view = memoryview(data)
    if not checksum_ok(lambda start, n: view[start:start + n], len(data), name):
        raise _damaged(name) from None
    return IndexFile.parse(data, name)


def _open_local(source: Path, name: str, cached: Path, recheck: bool) -> IndexFile:
    """A local store's index file ``source``, mapped from its copy ``cached``. The
    stamp beside the copy records the stats of both after a check: while both
    match, the copy is mapped unhashed; otherwise ``source`` is hashed and copied
    again in one read."""
    stamp = cached.with_suffix(".ok")
    fd, st = _open_regular(source, name)
    try:
        if not recheck:
            try:
                copy_fd, copy_st = _open_regular(cached, name)
            except (NotFound, CorruptObject):
                pass  # not copied yet, or not a file: a miss
            else:
                try:
                    if _stamped(stamp, st, copy_st):
                        return _map(copy_fd, copy_st, name)
                finally:
                    os.close(copy_fd)
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            out_fd, tmp = tempfile.mkstemp(dir=cached.parent, prefix=f".{name[:16]}.")
        except OSError:
            # No usable cache directory: read it into memory, never map the store's file.
            return _parse_checked(_pread_all(fd, st.st_size), name)
        copied = True
        with os.fdopen(out_fd, "w+b") as out:
            def read_at(start: int, n: int) -> bytes:
                # checksum_ok reads the file once, in order, from start to end:
                # each block read is the next block of the copy.
                nonlocal copied
                data = os.pread(fd, n, start)
                if copied:
                    try:
                        out.write(data)
                    except OSError:
                        copied = False  # a full cache disk: still check, then read it into memory
                return data

            try:
                if not checksum_ok(read_at, st.st_size, name, BLOCK):
                    raise _damaged(name)
                if copied:
                    try:
                        out.flush()
                        os.replace(tmp, cached)
                    except OSError:
                        copied = False
                if not copied:
                    return _parse_checked(_pread_all(fd, st.st_size), name)
                copy_st = os.fstat(out.fileno())
                _write_stamp(stamp, st, copy_st)
                return _map(out.fileno(), copy_st, name)
            finally:
                try:
                    os.unlink(tmp)
                except FileNotFoundError:
                    pass
    finally:
        os.close(fd)


def _pread_all(fd: int, size: int) -> bytes:
    parts: list[bytes] = []
    start = 0
    while start < size and (block := os.pread(fd, min(BLOCK, size - start), start)):
        parts.append(block)
        start += len(block)
    return b"".join(parts)


def _damaged(name: str) -> CorruptObject:
    return CorruptObject(f"index file {name[:16]} fails its checksum; run objstore fsck", object_id=name)


def _local_path(backend: Backend, key: str) -> Path | None:
    root = getattr(backend, "root", None)
    return root.joinpath(*key.split("/")) if isinstance(root, Path) else None


def cache_path(backend: Backend, name: str) -> Path:
    """Where the private copy of a store's index file ``name`` is: under the user
    cache directory, by the store's URL (a local store's absolute path), named by
    the file's own checksum (immutable)."""
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    store = blake3.blake3(str(getattr(backend, "url", backend)).encode()).hexdigest()[:32]
    return home / "objstore" / store / "index" / f"{name}.midx"


def prune_cache(backend: Backend, listed: Iterable[str], min_age: float = 3600.0) -> None:
    """Delete this store's cached index files that it no longer lists (merged
    away), once they are ``min_age`` seconds old: a process that just fetched one
    keeps it, and one that has it mapped keeps reading it after the unlink. A
    remote store's copies made before they moved into the remote cache all go."""
    keep = {f"{name}{suffix}" for name in listed for suffix in (".midx", ".ok")}
    local = _local_path(backend, "x") is not None
    directory = cache_path(backend, "x").parent
    try:
        entries = list(os.scandir(directory))
    except OSError:
        entries = []
    now = time.time()
    for entry in entries:
        try:
            if (not local or entry.name not in keep) and now - entry.stat(follow_symlinks=False).st_mtime > min_age:
                os.unlink(entry.path)
        except OSError:
            continue
    cache = cache_of(backend)
    if cache is not None:
        cache.drop_old(((store_id(backend.url), KIND_DIRS["index file"])), keep, min_age)


def _fetch_into(backend: Backend, name: str, size: int, out: BinaryIO) -> None:
    """Index file ``name``'s ``size`` bytes written to ``out``, in ranged reads of ``BLOCK``."""
    for start in range(0, size, BLOCK):
        block = backend.get_range(index_file_key(name), start, min(BLOCK, size - start))
        if not block:
            break
        out.write(block)
    out.flush()


def _stat_key(st: os.stat_result) -> str:
    # The ctime too: a write, or a utime setting the mtime back after one, moves it.
    return f"{st.st_size}:{st.st_mtime_ns}:{st.st_ctime_ns}:{st.st_ino}:{st.st_dev}"


def _stamped(stamp: Path, *stats: os.stat_result) -> bool:
    """Whether ``stamp`` records ``stats``. A stamp is a cache entry: anything but a
    small regular file (a FIFO, a link to /dev/zero) is a miss, never a wait."""
    try:
        fd = os.open(stamp, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        return os.read(fd, 256) == _stamp_text(stats).encode()
    except OSError:
        return False
    finally:
        os.close(fd)


def _stamp_text(stats: tuple[os.stat_result, ...]) -> str:
    return " ".join(_stat_key(st) for st in stats)


def _write_stamp(stamp: Path, *stats: os.stat_result) -> None:
    try:
        stamp.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=stamp.parent, prefix=f".{stamp.name}.")  # exclusive: never a planted file
    except OSError:
        return  # no stamp: the next open checks the checksum again
    try:
        with os.fdopen(fd, "w") as f:
            f.write(_stamp_text(stats))
        os.replace(tmp, stamp)
    except OSError:
        try:
            os.unlink(tmp)
        except OSError:
            pass


def _open_regular(path: Path, name: str) -> tuple[int, os.stat_result]:
    """An fd on the index file at ``path`` and its stat; NotFound if it is gone,
    CorruptObject unless it is a regular file of a possible size."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise NotFound(f"index file {name[:16]} is gone", key=name) from None
    except OSError as exc:
        raise CorruptObject(f"index file {name[:16]} cannot be opened ({exc.strerror})", object_id=name) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_INDEX_FILE_BYTES or st.st_size == 0:
        os.close(fd)
        raise CorruptObject(f"index file {name[:16]} is not a regular file of a possible size", object_id=name)
    try:
        claimed = claimed_size(os.pread(fd, HEADER.size, 0))
    except OSError:
        claimed = None
    if claimed != st.st_size:
        os.close(fd)
        raise CorruptObject(f"index file {name[:16]} is damaged ({st.st_size} bytes, not the size its header says: "
                            f"{claimed if claimed is not None else 'no valid header'}); run objstore fsck", object_id=name)
    return fd, st


def _map(fd: int, st: os.stat_result, name: str) -> IndexFile:
    mapped = mmap.mmap(fd, st.st_size, access=mmap.ACCESS_READ)
    if hasattr(mmap, "MADV_RANDOM"):
        mapped.madvise(mmap.MADV_RANDOM)  # binary searches: no read-ahead around each probe
    return IndexFile.parse(memoryview(mapped), name)


# -- compaction -----------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CompactReport:
    """What one compaction did: the index file written (None if none), how many
    ``.idx`` and index files it replaced and deleted, and the entries it holds."""

    written: str | None
    idx_merged: int
    files_merged: int
    entries: int

    def to_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__slots__}


def compact_threshold(setting: int | None = None) -> int:
    """How many uncovered ``.idx`` files make a writer compact (0: never):
    ``OBJSTORE_INDEX_COMPACT_THRESHOLD`` if set to a number, else the store's
    setting (``setting``, from its config), else ``INDEX_COMPACT_THRESHOLD``."""
    text = os.environ.get("OBJSTORE_INDEX_COMPACT_THRESHOLD", "").strip()
    if text.isascii() and text.isdigit():  # isdigit() alone takes '②', which int() refuses
        return int(text)
    return INDEX_COMPACT_THRESHOLD if setting is None else setting


def loose_count(listing: IndexListing, covered: set[str]) -> int:
    return sum(1 for n in listing.idx if n not in covered)


def compact(backend: Backend, *, min_loose: int = 1,
            progress: Callable[[str, int, int], None] | None = None) -> CompactReport:
    """Merge the ``.idx`` files no index file covers (except marked packs'), and
    the index files the geometric rule picks, into one new index file; then
    delete what it replaces. Does nothing unless at least ``min_loose`` ``.idx``
    files are uncovered or there are more than ``MAX_INDEX_FILES`` index files.
    Safe to kill at any point and beside writers, readers, gc and other
    compactions (see the module docstring). ``progress("indexes", done, total)``
    follows the reading of the pack indexes and index files merged."""
    listing = list_indexes(backend)
    files: list[IndexFile] = []
    for name, size in listing.files.items():
        try:
            files.append(open_index_file(backend, name, size))
        except NotFound:
            continue  # merged by another compaction meanwhile: its replacement covers it
        except CorruptObject:
            continue  # left for fsck; its packs' .idx were deleted, so readers fall back to the packs
    covered = {p for f in files for p in f.pack_names}
    # .idx files an index file already covers: a compaction killed after writing
    # that file and before deleting them. The file is durable (listed), so they go.
    for pack in sorted(n for n in listing.idx if n in covered):
        backend.delete(idx_key(pack))
    marked = marked_packs(backend)
    loose = sorted(n for n in listing.idx if n not in covered and n not in marked and n in listing.packs)
    if len(loose) < min_loose and len(files) <= MAX_INDEX_FILES:
        return CompactReport(None, 0, 0, 0)
    parts = []
    taken_idx: list[str] = []
    for done, name in enumerate(loose):
        if progress is not None:
            progress("indexes", done, len(loose))
        size = listing.packs[name]
        try:
            index = decode_idx(backend.get(idx_key(name), max_size=max_idx_bytes(size)), name, size)
        except (NotFound, CorruptObject):
            continue  # consumed by another compaction, deleted by gc, or damaged (readers fall back)
        parts.append(from_pack_index(name, size, index))
        taken_idx.append(name)
    picked = _pick_files(files, sum(len(p[1]) for p in parts))
    for done, f in enumerate(picked, start=len(loose)):
        if progress is not None:
            progress("indexes", done, len(loose) + len(picked))
        verify_index_file(f)  # merging copies every entry: check them all first
        parts.append(f.triple())
    if progress is not None:
        progress("indexes", len(loose) + len(picked), len(loose) + len(picked))
    if not parts or (len(parts) == 1 and not taken_idx):
        return CompactReport(None, 0, 0, 0)
    packs, ids, entries = merge(parts)
    name = _store_file(backend, packs, ids, entries)
    # Durable now (create-only put): only after that do the files it replaces go.
    for f in picked:
        if f.name != name:
            backend.delete(index_file_key(f.name))
    for pack in taken_idx:
        backend.delete(idx_key(pack))
    return CompactReport(name, len(taken_idx), len(picked), len(ids))


def _pick_files(files: list[IndexFile], loose_entries: int) -> list[IndexFile]:
    """Index files to merge with ``loose_entries`` new entries: the smallest first,
    each while it is no larger than what is merged so far (git's geometric repack),
    so a store keeps O(log entries) files and old large files are rarely rewritten;
    all of them once there are more than ``MAX_INDEX_FILES``."""
    ordered = sorted(files, key=len)
    if len(ordered) > MAX_INDEX_FILES:
        return ordered
    picked, total = [], loose_entries
    for f in ordered:
        if len(f) > total:
            break
        picked.append(f)
        total += len(f)
    return picked


def _store_file(backend: Backend, packs: list[tuple[str, int]], ids: np.ndarray, entries: np.ndarray) -> str:
    path = new_temp_file(backend, "objstore-index-")
    try:
        with open(path, "wb") as out:
            name = write_index_file(out, packs, ids, entries)
            out.flush()
            os.fsync(out.fileno())
        backend.put_file_if_absent(index_file_key(name), path)
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    return name


def drop_packs(backend: Backend, packs: set[str]) -> int:
    """Rewrite every index file that covers one of ``packs`` without them (the new
    file first, then the old one deleted). gc calls this before it deletes the
    packs, so no index it leaves names them. Returns the files rewritten."""
    if not packs:
        return 0
    rewritten = 0
    for name, size in list_indexes(backend).files.items():
        try:
            f = open_index_file(backend, name, size)
        except NotFound:
            continue
        except CorruptObject:
            continue  # fsck reports it; a damaged file names nothing readers trust
        if not packs.intersection(f.pack_names):
            continue
        keep = [(p, index) for p, index in f.pack_indexes() if p not in packs]
        sizes = dict(zip(f.pack_names, (int(s) for s in f.pack_sizes)))
        if keep:
            merged = merge([from_pack_index(p, sizes[p], index) for p, index in keep])
            _store_file(backend, *merged)
        backend.delete(index_file_key(name))
        rewritten += 1
    return rewritten


@dataclass(frozen=True, slots=True)
class CoveredIndexes:
    """What the index files of a listing say, each file checked whole: each pack
    they cover with its entries as its ``.idx`` would hold them, the index file
    those entries came from, and (file, why) for each damaged index file."""

    indexes: dict[str, np.ndarray] = field(default_factory=dict)
    source: dict[str, str] = field(default_factory=dict)
    damaged: list[tuple[str, str]] = field(default_factory=list)
    gone: bool = False  # an index file listed was gone when read (a compaction replaced it)


def covered_indexes(backend: Backend, listing: IndexListing) -> CoveredIndexes:
    """The packs the index files of ``listing`` cover (see :class:`CoveredIndexes`).
    For gc, fsck and repair: the whole index in memory."""
    indexes: dict[str, np.ndarray] = {}
    source: dict[str, str] = {}
    damaged: list[tuple[str, str]] = []
    gone = False
    for name, size in sorted(listing.files.items()):
        try:
            f = open_index_file(backend, name, size, recheck=True)
            verify_index_file(f)
            for pack, index in f.pack_indexes():
                if pack not in indexes:
                    indexes[pack] = index
                    source[pack] = name
        except NotFound:
            gone = True  # replaced by a compaction since the listing: its successor covers the same packs
        except CorruptObject as exc:
            damaged.append((name, str(exc.args[0]) if exc.args else str(exc)))
    return CoveredIndexes(indexes, source, damaged, gone)


def covered_since(backend: Backend, seen: set[str]) -> CoveredIndexes:
    """The packs covered by the index files listed now that are not in ``seen``
    (added to it): a compaction's newer files. Listed again while one of those was
    itself merged away before it could be read (up to ``RELIST_ATTEMPTS`` times)."""
    indexes: dict[str, np.ndarray] = {}
    source: dict[str, str] = {}
    damaged: list[tuple[str, str]] = []
    gone = False
    for _ in range(RELIST_ATTEMPTS):
        newer = {n: size for n, size in list_indexes(backend).files.items() if n not in seen}
        seen.update(newer)
        more = covered_indexes(backend, IndexListing(files=newer))
        for pack, index in more.indexes.items():
            if pack not in indexes:
                indexes[pack], source[pack] = index, more.source[pack]
        damaged += more.damaged
        gone = more.gone
        if not gone:
            break
    return CoveredIndexes(indexes, source, damaged, gone)


def read_all_indexes(backend: Backend, listing: IndexListing) -> dict[str, np.ndarray]:
    """Every pack's index, from the index files and the ``.idx`` files of
    ``listing``. Packs with neither (or only damaged ones) are missing from it.

    An index file or ``.idx`` listed but gone when read was merged into a newer
    index file by a compaction meanwhile: the index files listed since are read
    too (up to ``RELIST_ATTEMPTS`` times), so a pack the listing shows is missing
    only when its index really is unreadable, not because of a compaction."""
    found = covered_indexes(backend, listing)
    indexes, gone = found.indexes, found.gone
    for name in listing.idx:
        if name in indexes:
            continue
        try:
            indexes[name] = decode_idx(backend.get(idx_key(name)), name)
        except NotFound:
            gone = True
        except CorruptObject:
            continue
    if gone:
        for pack, index in covered_since(backend, set(listing.files)).indexes.items():
            indexes.setdefault(pack, index)
    return indexes
