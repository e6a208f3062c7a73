"""GGUF (llama.cpp's model file): where its tensors lie, parsed by hand from the documented layout.

A GGUF file is, all little-endian: ``b"GGUF"``, ``u32 version`` (2 or 3), ``u64 tensor_count``,
``u64 kv_count``; ``kv_count`` key/value pairs (a string key, a ``u32`` value type, the value;
strings are ``u64 length`` + UTF-8, arrays ``u32 element type`` + ``u64 count`` + elements, possibly
arrays again); ``tensor_count`` tensor infos (string name, ``u32 n_dims``, ``n_dims`` × ``u64``
dims innermost first, ``u32 ggml type``, ``u64 offset`` relative to the data start); padding to
``general.alignment`` (default 32); the tensor data, each tensor at its offset.

Invariants of what :func:`parse` returns: tensors sorted by offset, non-overlapping, each wholly
inside the file at or after the data start, each tensor's length exactly what its ggml type and
element count need (so a file that lies about any of these is not GGUF here, and is chunked
plainly). F32/F16/BF16/F64 and the integer types are spelled as safetensors spells them, so the
codec applies its float planes; quantized types keep ggml's own name (``Q4_K``, ``Q8_0``…) and are
stored as plain bytes. Shapes are given outermost first (numpy order), the reverse of the file's.

Bounded on hostile input: every count is checked against the bytes left before anything is
allocated for it, fixed-size arrays are skipped without a loop, nesting is limited, and at most
:data:`MAX_ITEMS` variable-size items (strings, arrays, tensor infos) are walked in all. The
gguf package (a test dependency) is the reference implementation; it is not used here, so the
core install does not need numpy's reader for this.
"""

from __future__ import annotations

import struct
from typing import BinaryIO

from objstore.storage.formats.base import ParsedFile, TensorInfo, checked
from objstore.storage.formats.reader import PastEnd, SequentialReader

FORMAT = "gguf"

MAGIC = b"GGUF"
VERSIONS = (2, 3)  # version 1 (u32 counts) predates the format's spread and is not written by anyone now
DEFAULT_ALIGNMENT = 32

# How many strings, arrays and tensor infos one header may hold before it is judged hostile. Real
# headers hold a tokenizer: llama 3's vocabulary and merges are ~410k strings, gemma's ~256k.
MAX_ITEMS = 4_000_000
MAX_NESTING = 4  # arrays of arrays: the spec allows them, no real file nests deeper than 2
MAX_DIMS = 8  # GGML_MAX_DIMS is 4
# What goes into ParsedFile.metadata: short scalars and strings only (a vocabulary is not metadata).
MAX_META_ENTRIES = 256
MAX_META_VALUE = 512

# ggml type id -> (name, elements per block, bytes per block), from ggml.h / gguf's GGML_QUANT_SIZES.
QK_K = 256
GGML_TYPES: dict[int, tuple[str, int, int]] = {
    0: ("F32", 1, 4),
    1: ("F16", 1, 2),
    2: ("Q4_0", 32, 2 + 16),
    3: ("Q4_1", 32, 2 + 2 + 16),
    6: ("Q5_0", 32, 2 + 4 + 16),
    7: ("Q5_1", 32, 2 + 2 + 4 + 16),
    8: ("Q8_0", 32, 2 + 32),
    9: ("Q8_1", 32, 4 + 4 + 32),
    10: ("Q2_K", QK_K, 2 + 2 + QK_K // 16 + QK_K // 4),
    11: ("Q3_K", QK_K, 2 + QK_K // 4 + QK_K // 8 + 12),
    12: ("Q4_K", QK_K, 2 + 2 + QK_K // 2 + 12),
    13: ("Q5_K", QK_K, 2 + 2 + QK_K // 2 + QK_K // 8 + 12),
    14: ("Q6_K", QK_K, 2 + QK_K // 2 + QK_K // 4 + QK_K // 16),
    15: ("Q8_K", QK_K, 4 + QK_K + QK_K // 8),
    16: ("IQ2_XXS", QK_K, 2 + QK_K // 4),
    17: ("IQ2_XS", QK_K, 2 + QK_K // 4 + QK_K // 32),
    18: ("IQ3_XXS", QK_K, 2 + QK_K // 4 + QK_K // 8),
    19: ("IQ1_S", QK_K, 2 + QK_K // 8 + QK_K // 16),
    20: ("IQ4_NL", 32, 2 + 16),
    21: ("IQ3_S", QK_K, 2 + QK_K // 4 + QK_K // 8 + QK_K // 32 + 4),
    22: ("IQ2_S", QK_K, 2 + QK_K // 4 + QK_K // 16),
    23: ("IQ4_XS", QK_K, 2 + 2 + QK_K // 2 + QK_K // 64),
    24: ("I8", 1, 1),
    25: ("I16", 1, 2),
    26: ("I32", 1, 4),
    27: ("I64", 1, 8),
    28: ("F64", 1, 8),
    29: ("IQ1_M", QK_K, QK_K // 8 + QK_K // 16 + QK_K // 32),
    30: ("BF16", 1, 2),
    34: ("TQ1_0", QK_K, 2 + 4 * 13),
    35: ("TQ2_0", QK_K, 2 + 64),
    39: ("MXFP4", 32, 1 + 16),
    40: ("NVFP4", 64, 4 + 32),
    41: ("Q1_0", 128, 2 + 16),
}

# GGUF value type id -> struct format of a fixed-size value (8 = string, 9 = array are variable).
_STRING, _ARRAY = 8, 9
_FIXED: dict[int, str] = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_TYPE_NAMES = {0: "u8", 1: "i8", 2: "u16", 3: "i16", 4: "u32", 5: "i32", 6: "f32", 7: "bool", 8: "str",
               9: "array", 10: "u64", 11: "i64", 12: "f64"}

class _Lie(Exception):
    """The header contradicts itself (internal: parse turns it into None)."""


class _Cursor(SequentialReader):
    """The header's reader, with GGUF's integers and strings, counting the items walked."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        super().__init__(f, size)
        self.items = 0

    def u32(self) -> int:
        return int(struct.unpack("<I", self.take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack("<Q", self.take(8))[0])

    def count(self) -> None:
        self.items += 1
        if self.items > MAX_ITEMS:
            raise _Lie("too many header items")

    def string(self) -> bytes:
        self.count()
        return self.take(self.u64())


def sniff(head: bytes, size: int) -> bool:
    """Whether ``head`` (the file's first bytes) starts a little-endian GGUF file we read."""
    return size >= 24 and head[:4] == MAGIC and len(head) >= 8 and struct.unpack_from("<I", head, 4)[0] in VERSIONS


def parse(f: BinaryIO, size: int) -> ParsedFile | None:
    """The tensors of a GGUF file of ``size`` bytes, or None if it is not one or lies."""
    f.seek(0)
    if not sniff(f.read(8), size):
        return None
    try:
        return _parse(_Cursor(f, size), size)
    except (_Lie, PastEnd, UnicodeDecodeError, struct.error):
        return None


def _parse(c: _Cursor, size: int) -> ParsedFile | None:
    c.skip(8)  # magic and version, checked by sniff
    n_tensors, n_kv = c.u64(), c.u64()
    # The smallest key/value is 8 (key length) + 4 (type) + 1 (a u8) bytes, the smallest tensor info
    # 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset): a count needing more bytes than are left lies.
    if n_kv * 13 > c.left() or n_tensors * 24 > c.left():
        raise _Lie("counts larger than the file")
    metadata: dict[str, str] = {}
    alignment = DEFAULT_ALIGNMENT
    for _ in range(n_kv):
        key = c.string().decode()
        vtype = c.u32()
        value = _value(c, vtype, 0)
        if key == "general.alignment":
            if vtype not in (4, 10) or not isinstance(value, int) or value <= 0 or value & (value - 1):
                raise _Lie("general.alignment not a power of two")
            alignment = value
        if len(metadata) < MAX_META_ENTRIES and value is not None:
            metadata[key] = value if isinstance(value, str) else str(value)
    infos = [_tensor_info(c) for _ in range(n_tensors)]
    data_start = -(-c.pos // alignment) * alignment
    tensors = []
    for name, shape, dtype, length, rel in infos:
        if rel % alignment:
            raise _Lie(f"tensor {name!r} not aligned")
        tensors.append(TensorInfo(name, dtype, shape, data_start + rel, length))
    return checked(FORMAT, tensors, metadata, size)


def _value(c: _Cursor, vtype: int, depth: int) -> str | int | float | bool | None:
    """Read one value; return it if it is worth keeping as metadata (None otherwise)."""
    fixed = _FIXED.get(vtype)
    if fixed is not None:
        v = struct.unpack("<" + fixed, c.take(struct.calcsize(fixed)))[0]
        return v if isinstance(v, (int, float, bool)) else None
    if vtype == _STRING:
        s = c.string().decode()
        return s if len(s) <= MAX_META_VALUE else None
    if vtype != _ARRAY:
        raise _Lie(f"unknown value type {vtype}")
    if depth >= MAX_NESTING:
        raise _Lie("arrays nested too deep")
    c.count()
    etype, n = c.u32(), c.u64()
    fixed = _FIXED.get(etype)
    if fixed is not None:
        c.skip(n * struct.calcsize(fixed))  # checked against the bytes left: no loop, no allocation
    else:
        if n * 8 > c.left():  # every string or array element needs at least 8 bytes
            raise _Lie("array larger than the file")
        for _ in range(n):
            _value(c, etype, depth + 1)
    return f"[{n} x {_TYPE_NAMES.get(etype, '?')}]"


def _tensor_info(c: _Cursor) -> tuple[str, tuple[int, ...], str, int, int]:
    name = c.string().decode()
    n_dims = c.u32()
    if n_dims > MAX_DIMS:
        raise _Lie(f"tensor {name!r} has {n_dims} dims")
    dims = struct.unpack(f"<{n_dims}Q", c.take(8 * n_dims))
    gtype, rel = c.u32(), c.u64()
    known = GGML_TYPES.get(gtype)
    if known is None:
        raise _Lie(f"tensor {name!r} has unknown ggml type {gtype}")
    dtype, block, block_bytes = known
    elements = 1
    for d in dims:
        elements *= d
    # ggml quantizes rows in whole blocks: the innermost dim is a multiple of the block size.
    if (dims and dims[0] % block) or elements % block:
        raise _Lie(f"tensor {name!r} does not fill whole {dtype} blocks")
    return name, tuple(reversed(dims)), dtype, elements // block * block_bytes, rel
