"""The consolidated index file format: one sorted index over many packs.

Plain functions and a reader over a buffer; nothing here knows where files live.
Learned from git's multi-pack-index (fanout, pack table, sorted ids, offsets)
and restic's index files (one file covers many packs, written create-only).

Layout (all integers little-endian)::

    header    "OSMI" u8 version=1 3×pad, pack_count u32, pad u32, entry_count u64   24 bytes
    fanout    256 × u64: entries whose id's first byte is <= b                     2048 bytes
    packs     pack_count × (name[32], size u64), names strictly ascending          40 bytes each
    ids       entry_count × id[32], ascending (ties by pack number)                32 bytes each
    entries   entry_count × (pack u32, offset u64, stored_len u32, raw_len u32,    21 bytes each
              codec u8), in the order of ids
    checksum  BLAKE3 (keyed for packs) of every byte before it                      32 bytes

The file's name is its hex checksum, so it is create-only and self-verifying. A
file covering packs S holds exactly the union of the ``.idx`` entries of S (a
chunk stored in two packs has two entries), so removing a pack from the file
never loses another pack's entries.

Untrusted like every stored byte, and a checksum proves only that the writer
meant it. :meth:`IndexFile.parse` checks what is cheap and bounds every
allocation (magic, version, the exact size the counts imply, fanout monotone and
ending at the entry count, pack names ascending, pack sizes possible); it never
reads the ids or entries, so a mapped file stays on disk. Every entry handed out
is checked on the way out (:meth:`IndexFile.check`): a pack number in the
table, a chunk and payload no pack can exceed, bytes inside its pack. What is
not checked at open (ids sorted and agreeing with the fanout) can only make a
lookup miss, never crash or allocate; :func:`verify_index_file` checks all of it
(fsck, compaction).

Memory of a mapped file: a lookup goes through :meth:`IndexFile.find`, which
searches the probes in id order, one window of at most ``WINDOW_BYTES`` of ids
and entries at a time, and hands the pages of each window back to the kernel
(``MADV_DONTNEED``) once its entries are copied out. Without that the file's
mapped pages stay counted in the process's RSS, and on kernels whose page cache
holds large folios a single fault maps a whole folio (2 MiB measured here):
1,000 random lookups mapped all 320 MiB of the ids of a 10^7-entry file. With
it the mapped pages a lookup leaves behind are bounded by one window, whatever
the number of probes (see benchmarks/bench_index.py).
"""

from __future__ import annotations

import mmap
import struct
from collections.abc import Callable, Iterator
from typing import BinaryIO

import numpy as np

from objstore.constants import MAX_CHUNK_BYTES, MAX_PACK_BYTES, MAX_STORED_CHUNK_BYTES, MiB
from objstore.errors import CorruptObject
from objstore.storage.ids import Kind, hasher
from objstore.storage.packs import INDEX_DTYPE, PACK_MAGIC, RECORD_HEAD, TRAILER, entry_id

INDEX_FILE_MAGIC = b"OSMI\x01\x00\x00\x00"
HEADER = struct.Struct("<8sIIQ")
FANOUT_DTYPE = np.dtype("<u8")
PACK_DTYPE = np.dtype([("name", "S32"), ("size", "<u8")])
ENTRY_DTYPE = np.dtype([("pack", "<u4"), ("offset", "<u8"), ("stored_len", "<u4"), ("raw_len", "<u4"), ("codec", "u1")])
assert HEADER.size == 24 and PACK_DTYPE.itemsize == 40 and ENTRY_DTYPE.itemsize == 21
FIXED_BYTES = HEADER.size + 256 * FANOUT_DTYPE.itemsize + 32
# The most entries one file may hold: 2**28 chunks of 64 KiB is 16 TiB of stored
# chunks (a 14 GiB file); a file that claims more is refused before anything is
# fetched or mapped.
MAX_ENTRIES = 2**28
MAX_PACKS = 2**24
MAX_INDEX_FILE_BYTES = FIXED_BYTES + MAX_PACKS * PACK_DTYPE.itemsize + MAX_ENTRIES * (32 + ENTRY_DTYPE.itemsize)
# Lookups touch a mapped file one window of at most this many bytes of ids and
# entries at a time, and release each window's pages after it (IndexFile.find):
# what a process keeps mapped stays bounded by this (a window is at least one
# fanout bucket, 2**28 / 256 entries at most), plus a folio at each edge.
WINDOW_BYTES = 16 * MiB
# The first byte a payload can start at, and what follows the records in a pack.
_FIRST_PAYLOAD = len(PACK_MAGIC) + RECORD_HEAD.size
_PACK_TAIL = TRAILER.size + 32


def first_bytes(ids: np.ndarray) -> np.ndarray:
    """The first byte of each id of a contiguous ``S32`` array, without a copy."""
    return ids.view(np.uint8)[::32] if len(ids) else np.empty(0, np.uint8)


def prefixes(ids: np.ndarray) -> np.ndarray:
    """The first 8 bytes of each id of a contiguous ``S32`` array as big-endian
    integers, ordered as the ids are: a strided view, no copy."""
    return ids.view(np.uint8).reshape(len(ids), 32)[:, :8].view(">u8")[:, 0]


FEW_PROBES = 1024  # up to this many probes, search() asks np.searchsorted (measured: faster below ~1000)


def search(ids: np.ndarray, probe: np.ndarray, fanout: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """For each id of ``probe`` (contiguous ``S32``), the first position in ``ids``
    (sorted, contiguous ``S32``, possibly memory-mapped) holding it, and whether it
    is there. A vectorized binary search over 8-byte prefixes, each probe's range
    narrowed by the fanout table first (git's midx lookup): numpy compares integers
    far faster than 32-byte strings, and a mapped file is touched only on the
    search paths. A fanout must be monotone and end at ``len(ids)`` (parse checks)."""
    n = len(ids)
    if not n or not len(probe):
        return np.zeros(len(probe), dtype=np.int64), np.zeros(len(probe), dtype=bool)
    if fanout is None and len(probe) <= FEW_PROBES:
        # A few probes (one read block's chunks: the cold-ingest lookup): numpy's own
        # binary search over whole ids, one call, beats the vectorized loop's ~100
        # calls (3 against 90-140 us for 16 probes, 5k to 1M ids); for many probes the
        # integer prefixes win. The same positions for every id present (the first
        # copy); for an id absent, an insertion point either way.
        pos = np.minimum(np.searchsorted(ids, probe), n - 1)
        return pos, ids[pos] == probe
    keys, wanted = prefixes(ids), prefixes(probe)
    if fanout is not None:
        first = first_bytes(probe).astype(np.int64)
        bounds = np.concatenate(([0], np.asarray(fanout, dtype=np.int64)))
        lo, hi = bounds[first], bounds[first + 1]
    else:
        lo, hi = np.zeros(len(probe), dtype=np.int64), np.full(len(probe), n, dtype=np.int64)
    active = lo < hi
    while active.any():
        mid = (lo + hi) >> 1
        less = keys[np.minimum(mid, n - 1)] < wanted
        lo = np.where(active & less, mid + 1, lo)
        hi = np.where(active & ~less, mid, hi)
        active = lo < hi
    pos = np.minimum(lo, n - 1)
    hit = ids[pos] == probe
    # Two ids sharing their first 8 bytes (about one pair in 10^12 entries, or a
    # forged file): the search stopped at the first of the run; look up exactly.
    for i in np.flatnonzero(~hit & (keys[pos] == wanted)):
        exact = int(np.searchsorted(ids, probe[i]))
        pos[i], hit[i] = min(exact, n - 1), exact < n and ids[min(exact, n - 1)] == probe[i]
    return pos, hit


def file_size(pack_count: int, entry_count: int) -> int:
    return FIXED_BYTES + pack_count * PACK_DTYPE.itemsize + entry_count * (32 + ENTRY_DTYPE.itemsize)


def claimed_size(header: bytes) -> int | None:
    """The size the first ``HEADER.size`` bytes of an index file say the file has;
    None unless they are a header with possible counts. Checked against the
    file's size before it is hashed or copied: a file grown or cut by a byte is
    refused at once, not after reading gigabytes of it."""
    if len(header) < HEADER.size:
        return None
    magic, pack_count, _, entry_count = HEADER.unpack_from(header, 0)
    if magic != INDEX_FILE_MAGIC or pack_count > MAX_PACKS or entry_count > MAX_ENTRIES:
        return None
    return file_size(pack_count, entry_count)


def write_index_file(out: BinaryIO, packs: list[tuple[str, int]], ids: np.ndarray, entries: np.ndarray) -> str:
    """Write one index file; return its name (hex checksum).

    ``packs``: (name, size) strictly ascending by name; ``ids`` (``S32``) ascending,
    ``entries`` (:data:`ENTRY_DTYPE`) in the same order, their ``pack`` numbers into
    ``packs``. The caller sorts (see :func:`merge`); this only lays bytes out."""
    h = hasher(Kind.PACK)

    def write(data: bytes | memoryview) -> None:
        out.write(data)
        h.update(data)

    ids = np.ascontiguousarray(ids, dtype="S32")
    entries = np.ascontiguousarray(entries, dtype=ENTRY_DTYPE)
    fanout = np.cumsum(np.bincount(first_bytes(ids), minlength=256)).astype(FANOUT_DTYPE)
    table = np.array([(bytes.fromhex(n), s) for n, s in packs], dtype=PACK_DTYPE)
    write(HEADER.pack(INDEX_FILE_MAGIC, len(packs), 0, len(ids)))
    write(fanout.tobytes())
    write(table.tobytes())
    write(ids.view(np.uint8).data if len(ids) else b"")
    write(entries.view(np.uint8).data if len(entries) else b"")
    digest = h.digest()
    out.write(digest)
    return digest.hex()


def merge(parts: list[tuple[list[tuple[str, int]], np.ndarray, np.ndarray]]
          ) -> tuple[list[tuple[str, int]], np.ndarray, np.ndarray]:
    """The union of several (packs, ids, entries) triples, ready for
    :func:`write_index_file`: packs renumbered by name, entries sorted by (id,
    pack), exact duplicates (one chunk of one pack listed twice) dropped."""
    sizes: dict[str, int] = {}
    for packs, _, _ in parts:
        sizes.update(packs)
    names = sorted(sizes)
    number = {n: i for i, n in enumerate(names)}
    all_ids, all_entries = [np.empty(0, "S32")], [np.empty(0, ENTRY_DTYPE)]
    for packs, ids, entries in parts:
        remap = np.array([number[n] for n, _ in packs] or [0], dtype="<u4")
        e = np.array(entries, dtype=ENTRY_DTYPE)
        e["pack"] = remap[e["pack"]]
        all_ids.append(np.asarray(ids, dtype="S32"))
        all_entries.append(e)
    ids = np.concatenate(all_ids)
    entries = np.concatenate(all_entries)
    order = np.lexsort((entries["pack"], ids))
    ids, entries = ids[order], entries[order]
    if len(ids) > 1:
        keep = np.ones(len(ids), dtype=bool)
        keep[1:] = (ids[1:] != ids[:-1]) | (entries["pack"][1:] != entries["pack"][:-1])
        ids, entries = ids[keep], entries[keep]
    return [(n, sizes[n]) for n in names], ids, entries


def from_pack_index(name: str, size: int, index: np.ndarray) -> tuple[list[tuple[str, int]], np.ndarray, np.ndarray]:
    """One pack's ``.idx`` entries (:data:`~objstore.storage.packs.INDEX_DTYPE`) as a
    (packs, ids, entries) triple for :func:`merge`."""
    entries = np.zeros(len(index), dtype=ENTRY_DTYPE)
    for f in ("offset", "stored_len", "raw_len", "codec"):
        entries[f] = index[f]
    return [(name, size)], np.asarray(index["id"], dtype="S32"), entries


class IndexFile:
    """A parsed index file over a buffer (bytes, or a read-only memory map).

    Holds numpy views into the buffer: nothing is copied, so a mapped file's
    pages are read only where a lookup touches them."""

    def __init__(self, name: str, buf: bytes | memoryview, pack_names: list[str], pack_sizes: np.ndarray,
                 fanout: np.ndarray, ids: np.ndarray, entries: np.ndarray, ids_at: int = 0, entries_at: int = 0) -> None:
        self.name = name
        self._buf = buf  # keeps the mapping alive as long as the views
        owner = buf.obj if isinstance(buf, memoryview) else None
        self._map = owner if isinstance(owner, mmap.mmap) else None
        self._ids_at, self._entries_at = ids_at, entries_at
        self.pack_names = pack_names
        self.pack_sizes = pack_sizes
        self.fanout = fanout
        self.ids = ids
        self.entries = entries

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def parse(cls, buf: bytes | memoryview, name: str) -> IndexFile:
        """Parse the header, fanout and pack table of ``buf`` (the checksum is the
        caller's: see :func:`checksum_ok`); CorruptObject for anything malformed."""
        view = memoryview(buf)

        def bad(why: str) -> CorruptObject:
            return CorruptObject(f"index file {name[:16]} is damaged ({why}); run objstore fsck", object_id=name)

        if len(view) < FIXED_BYTES:
            raise bad("truncated")
        magic, pack_count, _, entry_count = HEADER.unpack_from(view, 0)
        if magic != INDEX_FILE_MAGIC:
            raise bad("bad header")
        if pack_count > MAX_PACKS or entry_count > MAX_ENTRIES or len(view) != file_size(pack_count, entry_count):
            raise bad(f"{len(view)} bytes for {pack_count} packs and {entry_count} entries")
        pos = HEADER.size
        fanout = np.frombuffer(view, FANOUT_DTYPE, 256, pos)
        pos += fanout.nbytes
        if bool((np.diff(fanout.astype(np.int64)) < 0).any()) or int(fanout[-1]) != entry_count:
            raise bad("fanout table")
        table = np.frombuffer(view, PACK_DTYPE, pack_count, pos)
        pos += table.nbytes
        names = [entry_id(n).hex() for n in table["name"]]
        if any(a >= b for a, b in zip(names, names[1:])):
            raise bad("pack table not sorted")
        sizes = table["size"]
        if pack_count and (int(sizes.max()) > MAX_PACK_BYTES or int(sizes.min()) < _FIRST_PAYLOAD + _PACK_TAIL):
            raise bad("a pack size no pack has")
        ids = np.frombuffer(view, "S32", entry_count, pos)
        pos += entry_count * 32
        entries = np.frombuffer(view, ENTRY_DTYPE, entry_count, pos)
        return cls(name, buf, names, sizes.astype(np.int64), fanout, ids, entries, pos - entry_count * 32, pos)

    def find(self, probe: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each id of ``probe`` (contiguous ``S32``): the first position holding
        it, whether it is there, and a copy of the entry at that position
        (unchecked; meaningless where it is not there). Searched in id order, one
        window of fanout buckets at a time, each window's pages released after it
        (see the module docstring)."""
        n = len(self.ids)
        pos = np.zeros(len(probe), dtype=np.int64)
        hit = np.zeros(len(probe), dtype=bool)
        got = np.zeros(len(probe), dtype=ENTRY_DTYPE)
        if not n or not len(probe):
            return pos, hit, got
        first = first_bytes(probe)
        order = np.argsort(first, kind="stable")
        starts = np.searchsorted(first[order], np.arange(257))  # probes of bucket b: order[starts[b]:starts[b + 1]]
        bounds = np.concatenate(([0], np.asarray(self.fanout, dtype=np.int64)))
        rows = max(WINDOW_BYTES // (32 + ENTRY_DTYPE.itemsize), 1)
        asked = np.flatnonzero(np.diff(starts) > 0)  # the buckets some probe falls in
        i = 0
        while i < len(asked):
            # From the next bucket asked about: as many buckets as fit in a window, at least one.
            b = int(asked[i])
            e = min(max(int(np.searchsorted(bounds, bounds[b] + rows, side="right")) - 1, b + 1), 256)
            sel = order[starts[b]:starts[e]]
            p, h = search(self.ids, probe[sel], self.fanout)
            pos[sel], hit[sel] = p, h
            got[sel] = self.entries[p]
            self.release(int(min(bounds[b], p.min())), int(max(bounds[e], p.max() + 1)))
            i = int(np.searchsorted(asked, e))
        return pos, hit, got

    def release(self, lo: int, hi: int) -> None:
        """Hand the mapped pages of rows ``lo``..``hi`` (ids and entries) back to the
        kernel: clean pages of a private copy, read again from the page cache if
        touched again. Nothing for a file read into memory."""
        if self._map is None or hi <= lo or not hasattr(mmap, "MADV_DONTNEED"):
            return
        for at, width in ((self._ids_at, 32), (self._entries_at, ENTRY_DTYPE.itemsize)):
            start = (at + lo * width) // mmap.PAGESIZE * mmap.PAGESIZE
            end = at + hi * width
            if start < len(self._map):
                self._map.madvise(mmap.MADV_DONTNEED, start, min(end, len(self._map)) - start)

    def check(self, entries: np.ndarray) -> np.ndarray:
        """``entries`` (some of this file's), unless one claims what no pack holds."""
        if not len(entries):
            return entries
        pack = entries["pack"]
        bad = pack >= len(self.pack_names)
        sizes = self.pack_sizes if len(self.pack_sizes) else np.zeros(1, np.int64)
        size = sizes[np.minimum(pack, len(sizes) - 1)]
        offset = entries["offset"].astype(np.uint64)
        stored = entries["stored_len"].astype(np.uint64)
        end = np.maximum(size - _PACK_TAIL, 0).astype(np.uint64)
        bad |= (entries["raw_len"] > MAX_CHUNK_BYTES) | (entries["stored_len"] > MAX_STORED_CHUNK_BYTES)
        bad |= (offset < _FIRST_PAYLOAD) | (offset > end) | (stored > end - np.minimum(offset, end))
        if bad.any():
            i = int(np.argmax(bad))
            raise CorruptObject(
                f"index file {self.name[:16]} claims a chunk of {int(entries['raw_len'][i])} bytes "
                f"({int(entries['stored_len'][i])} stored at offset {int(entries['offset'][i])}) that no pack holds; "
                "it is damaged or forged; run objstore fsck", object_id=self.name)
        return entries

    def pack_indexes(self) -> Iterator[tuple[str, np.ndarray]]:
        """Each covered pack with its entries as a pack ``.idx`` holds them
        (:data:`~objstore.storage.packs.INDEX_DTYPE`, sorted by id). Reads the whole
        file: for gc, fsck and compaction, never for lookups."""
        entries = self.check(np.asarray(self.entries))
        order = np.argsort(entries["pack"], kind="stable")
        bounds = np.searchsorted(entries["pack"][order], np.arange(len(self.pack_names) + 1))
        for no, name in enumerate(self.pack_names):
            sel = order[bounds[no]:bounds[no + 1]]
            index = np.zeros(len(sel), dtype=INDEX_DTYPE)
            index["id"] = self.ids[sel]
            for f in ("offset", "stored_len", "raw_len", "codec"):
                index[f] = entries[f][sel]
            yield name, index

    def triple(self) -> tuple[list[tuple[str, int]], np.ndarray, np.ndarray]:
        """This file as a (packs, ids, entries) triple for :func:`merge`."""
        return list(zip(self.pack_names, (int(s) for s in self.pack_sizes))), self.ids, self.check(np.asarray(self.entries))


def checksum_ok(read_at: Callable[[int, int], bytes | memoryview], size: int, name: str, block: int = 8 << 20) -> bool:
    """Whether the ``size`` bytes ``read_at(offset, length)`` returns end in the
    checksum of everything before them, and that checksum is ``name``. Reads in
    blocks, so memory stays bounded whatever the size."""
    if size < 32:
        return False
    h = hasher(Kind.PACK)
    for start in range(0, size - 32, block):
        data = read_at(start, min(block, size - 32 - start))
        if not data:
            return False
        h.update(data)
    tail = bytes(read_at(size - 32, 32))
    return h.digest() == tail and tail.hex() == name


def verify_index_file(index_file: IndexFile) -> None:
    """What :meth:`IndexFile.parse` leaves to lookups, for the whole file: ids
    ascending (ties by pack), the fanout agreeing with them, every entry possible.
    Reads the whole file; CorruptObject naming it if anything is wrong."""
    ids, entries = index_file.ids, index_file.check(np.asarray(index_file.entries))
    if len(ids) > 1:
        a, b = ids[:-1], ids[1:]
        if bool(((b < a) | ((b == a) & (entries["pack"][1:] <= entries["pack"][:-1]))).any()):
            raise CorruptObject(f"index file {index_file.name[:16]} is not sorted; run objstore fsck", object_id=index_file.name)
    if not np.array_equal(np.cumsum(np.bincount(first_bytes(ids), minlength=256)), index_file.fanout):
        raise CorruptObject(f"index file {index_file.name[:16]} has a fanout table that disagrees with its ids; "
                            "run objstore fsck", object_id=index_file.name)
