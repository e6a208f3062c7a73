"""HDF5 (``.h5``, Keras weights) and Keras 3 ``.keras`` zips: where contiguous datasets lie, parsed by hand.

An HDF5 file is a graph of objects addressed by file offset (relative to the superblock's base
address). The superblock (at 0, or 512, 1024… after a user block) names the root group's object
header; an object header is a list of messages; a group's children are found through a symbol
table message (a version 1 B-tree of symbol table nodes naming children by offsets into a local
heap: what h5py and Keras write by default), link messages (compact "latest format" groups), or a
link info message (dense "latest format" groups of more than 8 links: a version 2 B-tree whose
records hold fractal-heap ids, each naming a link message in the heap's direct blocks); a
dataset's messages give its dataspace (shape), datatype (inline, or shared: a committed datatype's
object header) and layout (for a contiguous dataset, the address and size of its raw data).
Covered: superblock versions 0–3, object header versions 1 and 2 with continuation blocks, layout
message versions 3 and 4, dense groups (unfiltered heaps, any depth of B-tree and indirect blocks).

What :func:`parse` returns lists every contiguous, allocated dataset reachable from the root whose
datatype is a little-endian integer or IEEE float (F16/BF16/F32/F64 as safetensors spells them),
named by its path (``layers/dense/vars/0``), sorted by offset, non-overlapping, each wholly inside
the file, each exactly shape × element size long. Everything else (chunked or compressed datasets,
strings, compound types, object headers, B-tree nodes, heaps; old layout message versions 1–2, a
datatype in the shared-message heap, a filtered fractal heap) is left to the plain segments between
tensors. A file that lies (an address outside the file, overlapping data, a size that does not match
the shape, a bad signature where an object must be, a B-tree holding another number of records than
its header says, a heap block not at the heap offset its table gives) is not parsed at all: it is
segmented plainly, never by a guess.

A ``.keras`` file is a zip whose ``model.weights.h5`` member, stored uncompressed (as Keras writes
it), is an HDF5 file: its datasets are located inside the zip.

Bounded on hostile input: every object and B-tree node is visited once (cycles end there), nesting
is limited, and the parser gives up after :data:`MAX_READS` reads or :data:`MAX_OBJECTS` objects.
h5py (a test dependency) is the reference; it is not used here, so the core install stays small
and a hostile file never reaches the HDF5 C library.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import BinaryIO

from objstore.storage.formats import zipfiles
from objstore.storage.formats.base import ParsedFile, TensorInfo, checked

FORMAT = "hdf5"

SIGNATURE = b"\x89HDF\r\n\x1a\n"
KERAS_WEIGHTS = "model.weights.h5"
SUPERBLOCK_SEARCH_END = 1 << 16  # user blocks are powers of two from 512; larger ones are not looked for

MAX_READS = 200_000
MAX_OBJECTS = 100_000
MAX_DEPTH = 64  # group nesting and B-tree height
MAX_READ = 64 << 20  # one local heap or object header block

# message types
_DATASPACE, _LINK_INFO, _DATATYPE, _LINK, _LAYOUT, _CONTINUATION, _SYMBOL_TABLE = 0x01, 0x02, 0x03, 0x06, 0x08, 0x10, 0x11

# (size, exponent bits, mantissa bits) of an IEEE little-endian float -> its safetensors name
_FLOATS = {(2, 5, 10): "F16", (2, 8, 7): "BF16", (4, 8, 23): "F32", (8, 11, 52): "F64"}
_INTS = {(1, True): "I8", (1, False): "U8", (2, True): "I16", (2, False): "U16",
         (4, True): "I32", (4, False): "U32", (8, True): "I64", (8, False): "U64"}


class _Lie(Exception):
    """The file contradicts itself (internal: parse turns it into None)."""


@dataclass(frozen=True, slots=True)
class _Message:
    type: int
    flags: int
    data: bytes


class _Reader:
    """Reads of a window ``[start, start + size)`` of a file by HDF5 address, each bounds-checked and counted."""

    def __init__(self, f: BinaryIO, start: int, size: int) -> None:
        self.f = f
        self.start = start
        self.size = size
        self.base = 0
        self.o = 8  # size of offsets and lengths, from the superblock
        self.l = 8
        self.reads = 0
        self.sb_version = 0

    @property
    def undefined(self) -> int:
        return (1 << (8 * self.o)) - 1

    def at(self, addr: int, n: int) -> bytes:
        """``n`` bytes at HDF5 address ``addr``."""
        self.reads += 1
        if self.reads > MAX_READS:
            raise _Lie("too many reads")
        pos = self.base + addr
        if addr < 0 or n < 0 or n > MAX_READ or pos + n > self.size:
            raise _Lie("read outside the file")
        self.f.seek(self.start + pos)
        data = self.f.read(n)
        if len(data) != n:
            raise _Lie("file shorter than its size")
        return data

    def up_to(self, addr: int, n: int) -> bytes:
        """Up to ``n`` bytes at ``addr``, fewer at the end of the file (for variable-length structures)."""
        return self.at(addr, max(0, min(n, self.size - self.base - addr)))

    def uint(self, data: bytes, pos: int, n: int) -> int:
        if pos + n > len(data):
            raise _Lie("structure cut short")
        return int.from_bytes(data[pos:pos + n], "little")


def sniff(head: bytes, size: int) -> bool:
    """Whether ``head`` starts an HDF5 file (signature at 0 or after a user block) or a zip (maybe ``.keras``)."""
    if zipfiles.sniff(head, size):
        return True
    return any(head[off:off + 8] == SIGNATURE for off in (0, 512, 1024, 2048, 4096) if off + 8 <= min(len(head), size))


def parse(f: BinaryIO, size: int) -> ParsedFile | None:
    """The contiguous datasets of an HDF5 file (or a ``.keras`` zip's weights) of ``size`` bytes, or None."""
    f.seek(0)
    head = f.read(8)
    try:
        if head.startswith(zipfiles.ZIP_MAGIC):
            window = _keras_weights(f, size)
            if window is None:
                return None
            start, length = window
            tensors, metadata = _parse_hdf5(_Reader(f, start, length))
            metadata["container"] = "keras"
        else:
            tensors, metadata = _parse_hdf5(_Reader(f, 0, size))
    except (_Lie, UnicodeDecodeError, struct.error, RecursionError):
        return None
    return checked(FORMAT, tensors, metadata, size)


def _keras_weights(f: BinaryIO, size: int) -> tuple[int, int] | None:
    """Where the uncompressed ``model.weights.h5`` entry of a zip lies, or None."""
    entries = zipfiles.entries(f, size)
    entry = entries.get(KERAS_WEIGHTS) if entries is not None else None
    if entry is None or not entry.stored:
        return None
    return entry.offset, entry.length


def _parse_hdf5(r: _Reader) -> tuple[list[TensorInfo], dict[str, str]]:
    root = _superblock(r)
    found: list[TensorInfo] = []
    _Walk(r, found).group_or_dataset(root, "", 0)
    return found, {"superblock": str(r.sb_version)}


def _superblock(r: _Reader) -> int:
    """Find and read the superblock; set the reader's base and sizes; return the root object header's address."""
    for off in [0, *(512 << i for i in range(20) if 512 << i < min(r.size, SUPERBLOCK_SEARCH_END))]:
        if r.up_to(off, 8) == SIGNATURE:
            break
    else:
        raise _Lie("no superblock")
    sb = r.up_to(off, 256)
    version = r.uint(sb, 8, 1)
    if version in (0, 1):
        osize, lsize = r.uint(sb, 13, 1), r.uint(sb, 14, 1)
        pos = 24 + (4 if version == 1 else 0)
    elif version in (2, 3):
        osize, lsize = r.uint(sb, 9, 1), r.uint(sb, 10, 1)
        pos = 12
    else:
        raise _Lie(f"superblock version {version}")
    if osize not in (2, 4, 8) or lsize not in (2, 4, 8):
        raise _Lie("odd offset sizes")
    r.o, r.l = osize, lsize
    base = r.uint(sb, pos, osize)
    if version in (0, 1):
        # base, free-space, end-of-file, driver addresses; then the root's symbol table entry:
        # link name offset, object header address.
        root = r.uint(sb, pos + 5 * osize, osize)
    else:
        # base, superblock extension, end-of-file, root object header addresses.
        root = r.uint(sb, pos + 3 * osize, osize)
    if base != off:
        # Addresses count from the base; a base other than the superblock's own place is legal but
        # never written by the library, and not trusted here.
        raise _Lie("base address is not the superblock's")
    r.base = base
    r.sb_version = version
    return root


class _Walk:
    """One depth-first walk from the root group, each object visited once."""

    def __init__(self, r: _Reader, found: list[TensorInfo]) -> None:
        self.r = r
        self.found = found
        self.seen: set[int] = set()

    def group_or_dataset(self, addr: int, path: str, depth: int) -> None:
        if addr in self.seen:
            return  # a hard link to an object already visited, or a cycle
        self.seen.add(addr)
        if len(self.seen) > MAX_OBJECTS or depth > MAX_DEPTH:
            raise _Lie("object graph too large or too deep")
        messages = _object_header(self.r, addr)
        by_type: dict[int, _Message] = {}
        for m in messages:
            by_type.setdefault(m.type, m)
        if _LAYOUT in by_type:
            tensor = _dataset(self.r, path, by_type)
            if tensor is not None:
                self.found.append(tensor)
            return
        for name, child in self._children(messages, depth):
            self.group_or_dataset(child, f"{path}/{name}" if path else name, depth + 1)

    def _children(self, messages: list[_Message], depth: int) -> list[tuple[str, int]]:
        r = self.r
        children: list[tuple[str, int]] = []
        for m in messages:
            if m.type == _SYMBOL_TABLE:
                btree, heap = r.uint(m.data, 0, r.o), r.uint(m.data, r.o, r.o)
                names = _local_heap(r, heap)
                self._btree_children(btree, names, children, depth)
            elif m.type == _LINK:
                link = _link(r, m.data)
                if link is not None:
                    children.append(link)
            elif m.type == _LINK_INFO:
                children.extend(_dense_links(r, m.data, self.seen))
        return children

    def _btree_children(self, addr: int, names: bytes, out: list[tuple[str, int]], depth: int) -> None:
        r = self.r
        if addr in self.seen or depth > MAX_DEPTH:
            raise _Lie("B-tree cycle or too deep")
        self.seen.add(addr)
        head = r.at(addr, 8 + 2 * r.o)
        if head[:4] != b"TREE" or head[4] != 0:
            raise _Lie("not a group B-tree node")
        level, entries = head[5], r.uint(head, 6, 2)
        body = r.at(addr + 8 + 2 * r.o, entries * (r.l + r.o) + r.l)
        for i in range(entries):
            child = r.uint(body, i * (r.l + r.o) + r.l, r.o)
            if level:
                self._btree_children(child, names, out, depth + 1)
            else:
                self._symbol_node(child, names, out)

    def _symbol_node(self, addr: int, names: bytes, out: list[tuple[str, int]]) -> None:
        r = self.r
        if addr in self.seen:
            raise _Lie("symbol table node listed twice")
        self.seen.add(addr)
        head = r.at(addr, 8)
        if head[:4] != b"SNOD" or head[4] != 1:
            raise _Lie("not a symbol table node")
        n = r.uint(head, 6, 2)
        entry = 2 * r.o + 24
        body = r.at(addr + 8, n * entry)
        for i in range(n):
            name_off, obj = r.uint(body, i * entry, r.o), r.uint(body, i * entry + r.o, r.o)
            end = names.find(b"\0", name_off)
            if name_off >= len(names) or end < 0:
                raise _Lie("symbol name outside the local heap")
            out.append((names[name_off:end].decode(), obj))


def _local_heap(r: _Reader, addr: int) -> bytes:
    head = r.at(addr, 8 + 2 * r.l + r.o)
    if head[:4] != b"HEAP" or head[4] != 0:
        raise _Lie("not a local heap")
    seg_size = r.uint(head, 8, r.l)
    seg_addr = r.uint(head, 8 + 2 * r.l, r.o)
    return r.at(seg_addr, seg_size)


def _link(r: _Reader, data: bytes) -> tuple[str, int] | None:
    """A link message's (name, object address) if it is a hard link, else None."""
    if r.uint(data, 0, 1) != 1:
        raise _Lie("link message version")
    flags = r.uint(data, 1, 1)
    pos = 2
    link_type = 0
    if flags & 0x08:
        link_type = r.uint(data, pos, 1)
        pos += 1
    if flags & 0x04:
        pos += 8  # creation order
    if flags & 0x10:
        pos += 1  # name character set
    size_len = 1 << (flags & 3)
    name_len = r.uint(data, pos, size_len)
    pos += size_len
    if pos + name_len > len(data):
        raise _Lie("link name cut short")
    name = data[pos:pos + name_len].decode()
    if link_type != 0:
        return None  # soft and external links point outside this walk
    return name, r.uint(data, pos + name_len, r.o)


def _dense_links(r: _Reader, data: bytes, seen: set[int]) -> list[tuple[str, int]]:
    """The hard links of a group kept in dense storage, from its link info message: each record of the
    name-index B-tree (version 2) holds a fractal heap id, and the heap object it names is a link message."""
    if r.uint(data, 0, 1) != 0:
        raise _Lie("link info version")
    pos = 2 + (8 if r.uint(data, 1, 1) & 0x01 else 0)
    heap_addr, btree_addr = r.uint(data, pos, r.o), r.uint(data, pos + r.o, r.o)
    if heap_addr == r.undefined and btree_addr == r.undefined:
        return []  # a compact group: its links are link messages, read beside this one
    heap = _FractalHeap(r, heap_addr, seen)
    links: list[tuple[str, int]] = []
    for record in _btree2_records(r, btree_addr, 5, seen):
        link = _link(r, heap.managed(record[4:]))  # a type-5 record: name hash (4), heap id
        if link is not None:
            links.append(link)
    return links


def _btree2_records(r: _Reader, addr: int, kind: int, seen: set[int]) -> list[bytes]:
    """Every record of the version 2 B-tree at ``addr`` of record type ``kind``; its header's total count checked."""
    head = r.at(addr, 16 + 2 * r.l + r.o)
    if head[:4] != b"BTHD" or head[4] != 0 or head[5] != kind:
        raise _Lie("not a version 2 B-tree of the expected type")
    node_size, rec_size, depth = r.uint(head, 6, 4), r.uint(head, 10, 2), r.uint(head, 12, 2)
    root, root_n, total = r.uint(head, 16, r.o), r.uint(head, 16 + r.o, 2), r.uint(head, 18 + r.o, r.l)
    if rec_size == 0 or node_size < 10 + rec_size or node_size > MAX_READ or depth > MAX_DEPTH or total > MAX_OBJECTS:
        raise _Lie("B-tree header out of range")
    # Each level's most records per node and the width of its count fields, as the library sizes them
    # (H5B2__hdr_init): leaves hold (node size - 10) / record size records.
    max_nrec = [(node_size - 10) // rec_size]
    cum_max = [max_nrec[0]]
    cum_size = [0]
    nrec_size = _enc_size(max_nrec[0])
    for d in range(1, depth + 1):
        pointer = r.o + nrec_size + (cum_size[d - 1] if d > 1 else 0)
        max_nrec.append((node_size - 10 - pointer) // (rec_size + pointer))
        cum_max.append((max_nrec[d] + 1) * cum_max[d - 1] + max_nrec[d])
        cum_size.append(_enc_size(cum_max[d]))
    out: list[bytes] = []

    def node(at: int, n: int, d: int) -> None:
        if at in seen or n > max_nrec[d] or len(out) > total:
            raise _Lie("B-tree node cycle or count out of range")
        seen.add(at)
        block = r.at(at, node_size)
        if block[:4] != (b"BTIN" if d else b"BTLF") or block[4] != 0 or block[5] != kind:
            raise _Lie("not a version 2 B-tree node")
        out.extend(block[6 + i * rec_size:6 + (i + 1) * rec_size] for i in range(n))
        pos = 6 + n * rec_size
        for _ in range(n + 1 if d else 0):
            child, child_n = r.uint(block, pos, r.o), r.uint(block, pos + r.o, nrec_size)
            pos += r.o + nrec_size + (cum_size[d - 1] if d > 1 else 0)
            node(child, child_n, d - 1)

    if root != r.undefined:
        node(root, root_n, depth)
    if len(out) != total:
        raise _Lie("B-tree holds a different number of records than its header says")
    return out


def _enc_size(n: int) -> int:
    """Bytes the library uses to encode counts up to ``n`` (H5VM_limit_enc_size)."""
    return max(n, 1).bit_length() // 8 + 1 if n else 1


class _FractalHeap:
    """The managed objects of a fractal heap: its direct blocks found by walking the doubling table from the
    root, each block's own heap offset read from its header and checked against where the table puts it."""

    def __init__(self, r: _Reader, addr: int, seen: set[int]) -> None:
        self.r = r
        o, ln = r.o, r.l
        head = r.at(addr, 22 + 12 * ln + 3 * o + 4)  # through the root block fields and the checksum
        if head[:4] != b"FRHP" or head[4] != 0:
            raise _Lie("not a fractal heap")
        if r.uint(head, 7, 2):
            raise _Lie("a filtered fractal heap")  # compressed heap blocks: not read here
        self.checksummed = bool(r.uint(head, 9, 1) & 0x02)
        max_managed = r.uint(head, 10, 4)
        pos = 14 + 2 * (ln + o) + 8 * ln  # past the huge-object, free-space and object counts
        width, start_size = r.uint(head, pos, 2), r.uint(head, pos + 2, ln)
        max_direct, max_heap_bits = r.uint(head, pos + 2 + ln, ln), r.uint(head, pos + 2 + 2 * ln, 2)
        root, root_rows = r.uint(head, pos + 6 + 2 * ln, o), r.uint(head, pos + 6 + 2 * ln + o, 2)
        if not (_pow2(start_size) and _pow2(max_direct) and start_size <= max_direct <= MAX_READ
                and 0 < width <= 1024 and 0 < max_heap_bits <= 64 and max_managed > 0):
            raise _Lie("fractal heap table out of range")
        self.width, self.start_size, self.max_direct = width, start_size, max_direct
        self.offset_size = (max_heap_bits + 7) // 8
        self.length_size = min((max_direct.bit_length() - 1 + 7) // 8, _enc_size(max_managed))
        self.blocks: dict[int, tuple[int, int]] = {}  # heap offset -> (address, size) of each direct block
        self.seen = seen
        if root == r.undefined:
            return
        if root_rows == 0:
            self._direct(root, 0, start_size)
        else:
            self._indirect(root, 0, root_rows, 0)

    def _row_size(self, row: int) -> int:
        return self.start_size << max(0, row - 1)

    def _direct(self, addr: int, offset: int, size: int) -> None:
        r = self.r
        if addr in self.seen or len(self.blocks) > MAX_OBJECTS:
            raise _Lie("heap block twice or too many")
        self.seen.add(addr)
        head = r.at(addr, 5 + r.o + self.offset_size)
        if head[:4] != b"FHDB" or head[4] != 0 or r.uint(head, 5 + r.o, self.offset_size) != offset:
            raise _Lie("not the direct block the heap's table names")
        self.blocks[offset] = (addr, size)

    def _indirect(self, addr: int, offset: int, rows: int, depth: int) -> None:
        r = self.r
        if addr in self.seen or depth > MAX_DEPTH or rows > 64:
            raise _Lie("heap indirect block twice, too deep or too wide")
        self.seen.add(addr)
        direct_rows = (self.max_direct.bit_length() - self.start_size.bit_length()) + 2
        n = self.width * rows
        head = r.at(addr, 5 + r.o + self.offset_size + n * r.o)
        if head[:4] != b"FHIB" or head[4] != 0 or r.uint(head, 5 + r.o, self.offset_size) != offset:
            raise _Lie("not the indirect block the heap's table names")
        pos, at = 5 + r.o + self.offset_size, offset
        for row in range(rows):
            size = self._row_size(row)
            for _ in range(self.width):
                child = r.uint(head, pos, r.o)
                pos += r.o
                if child != r.undefined:
                    if row < direct_rows:
                        self._direct(child, at, size)
                    else:
                        # A child indirect block spanning one entry of this row: its rows are those whose
                        # blocks, doubled from the start size, add up to this entry's size.
                        child_rows = (size.bit_length() - (self.start_size * self.width).bit_length()) + 1
                        self._indirect(child, at, child_rows, depth + 1)
                at += size

    def managed(self, heap_id: bytes) -> bytes:
        """The bytes of the managed object ``heap_id`` names (tiny and huge objects refuse: links are neither)."""
        r = self.r
        if not heap_id or heap_id[0] & 0xF0 != 0:
            raise _Lie("a heap id that is not a managed object")
        offset = r.uint(heap_id, 1, self.offset_size)
        length = r.uint(heap_id, 1 + self.offset_size, self.length_size)
        block = max((b for b in self.blocks if b <= offset), default=None)
        if block is None:
            raise _Lie("heap id outside every direct block")
        addr, size = self.blocks[block]
        inside = offset - block
        header = 5 + r.o + self.offset_size + (4 if self.checksummed else 0)
        if inside < header or inside + length > size or length == 0:
            raise _Lie("heap object outside its direct block")
        return r.at(addr + inside, length)


def _pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _object_header(r: _Reader, addr: int) -> list[_Message]:
    """Every message of the object header at ``addr``, continuation blocks included."""
    first = r.up_to(addr, 16)
    messages: list[_Message] = []
    blocks: list[tuple[int, int]] = []
    if first[:4] == b"OHDR":
        if r.uint(first, 4, 1) != 2:
            raise _Lie("object header version")
        flags = r.uint(first, 5, 1)
        pos = 6 + (16 if flags & 0x20 else 0) + (4 if flags & 0x10 else 0)
        size_len = 1 << (flags & 3)
        head = r.at(addr, pos + size_len)
        chunk0 = r.uint(head, pos, size_len)
        v2_order = bool(flags & 0x04)
        blocks.append((addr + pos + size_len, chunk0))
        version = 2
    else:
        if r.uint(first, 0, 1) != 1:
            raise _Lie("not an object header")
        blocks.append((addr + 16, r.uint(first, 8, 4)))
        version = 1
        v2_order = False
    seen_blocks: set[int] = set()
    i = 0
    while i < len(blocks):
        start, length = blocks[i]
        i += 1
        if start in seen_blocks or len(seen_blocks) > 1024:
            raise _Lie("continuation cycle")
        seen_blocks.add(start)
        block = r.at(start, length)
        if version == 2 and i > 1:
            # A continuation block is "OCHK", messages, a checksum; chunk 0's length counts its messages only.
            if block[:4] != b"OCHK":
                raise _Lie("not a continuation block")
            block = block[4:-4]
        for m in _messages(r, block, version, v2_order):
            if m.type == _CONTINUATION:
                blocks.append((r.uint(m.data, 0, r.o), r.uint(m.data, r.o, r.l)))
            messages.append(m)
    return messages


def _messages(r: _Reader, block: bytes, version: int, v2_order: bool) -> list[_Message]:
    out = []
    pos = 0
    head_len = 8 if version == 1 else 4 + (2 if v2_order else 0)
    while pos + head_len <= len(block):
        if version == 1:
            mtype, size, flags = r.uint(block, pos, 2), r.uint(block, pos + 2, 2), r.uint(block, pos + 4, 1)
        else:
            mtype, size, flags = r.uint(block, pos, 1), r.uint(block, pos + 1, 2), r.uint(block, pos + 3, 1)
        pos += head_len
        if pos + size > len(block):
            raise _Lie("message past its block")
        out.append(_Message(mtype, flags, block[pos:pos + size]))
        pos += size
        if version == 1:
            pos += -pos % 8  # version 1 messages are 8-byte aligned
    return out


def _dataset(r: _Reader, path: str, by_type: dict[int, _Message]) -> TensorInfo | None:
    """The dataset's tensor if it is contiguous, allocated and of a dtype we name; None if it is not."""
    layout = by_type[_LAYOUT].data
    if r.uint(layout, 0, 1) not in (3, 4) or r.uint(layout, 1, 1) != 1:
        return None  # compact, chunked or virtual (or an old layout message): stays plain
    address, length = r.uint(layout, 2, r.o), r.uint(layout, 2 + r.o, r.l)
    if address == r.undefined:
        return None  # never written
    space, dtype_msg = by_type.get(_DATASPACE), by_type.get(_DATATYPE)
    if space is None or dtype_msg is None:
        raise _Lie("dataset without dataspace or datatype")
    if space.flags & 0x02:
        return None  # a dataspace shared through the file's shared-message heap: h5py never writes one
    dtype_data = _committed_datatype(r, dtype_msg.data) if dtype_msg.flags & 0x02 else dtype_msg.data
    if dtype_data is None:
        return None
    shape = _dataspace(r, space.data)
    typed = _datatype(r, dtype_data)
    if shape is None or typed is None:
        return None
    dtype, elsize = typed
    if math.prod(shape) * elsize != length:
        raise _Lie(f"dataset {path!r} size does not match its shape")
    if address + length > r.size - r.base:
        raise _Lie(f"dataset {path!r} outside the file")
    return TensorInfo(path, dtype, shape, r.start + r.base + address, length)


def _committed_datatype(r: _Reader, shared: bytes) -> bytes | None:
    """The datatype message body of the committed datatype a shared message names (``f['t'] = dtype`` in
    h5py), or None when it is kept in the shared-message heap instead (not read: the dataset stays plain)."""
    version, kind = r.uint(shared, 0, 1), r.uint(shared, 1, 1)
    if version == 1:
        addr = r.uint(shared, 8, r.o)
    elif version == 2:
        addr = r.uint(shared, 2, r.o)
    elif version == 3 and kind == 2:
        addr = r.uint(shared, 2, r.o)
    elif version == 3 and kind == 1:
        return None
    else:
        raise _Lie("shared message version")
    found = [m for m in _object_header(r, addr) if m.type == _DATATYPE]
    if len(found) != 1 or found[0].flags & 0x02:
        raise _Lie("a committed datatype that is not one datatype")  # a chain of shares would be a lie
    return found[0].data


def _dataspace(r: _Reader, data: bytes) -> tuple[int, ...] | None:
    version, ndims, flags = r.uint(data, 0, 1), r.uint(data, 1, 1), r.uint(data, 2, 1)
    if version == 1:
        pos = 8
    elif version == 2:
        kind = r.uint(data, 3, 1)
        if kind == 2:
            return None  # null dataspace: no elements
        pos = 4
    else:
        raise _Lie("dataspace version")
    if ndims > 32:
        raise _Lie("too many dimensions")
    del flags
    return tuple(r.uint(data, pos + i * r.l, r.l) for i in range(ndims))


def _datatype(r: _Reader, data: bytes) -> tuple[str, int] | None:
    cls = r.uint(data, 0, 1) & 0x0F
    bits = r.uint(data, 1, 1)
    size = r.uint(data, 4, 4)
    if cls == 0:  # fixed-point
        if bits & 0x01:
            return None  # big-endian
        precision = r.uint(data, 10, 2)
        if r.uint(data, 8, 2) or precision != 8 * size:
            return None  # padded integers are not plain integer arrays
        name = _INTS.get((size, bool(bits & 0x08)))
    elif cls == 1:  # floating point
        if bits & 0x41:
            return None  # big-endian or VAX order
        exp_size, mant_size = r.uint(data, 13, 1), r.uint(data, 15, 1)
        if r.uint(data, 8, 2) or r.uint(data, 10, 2) != 8 * size:
            return None
        name = _FLOATS.get((size, exp_size, mant_size))
    else:
        return None
    return (name, size) if name else None
