"""NumPy ``.npy`` files and ``.npz`` archives of them (``np.save``, ``np.savez``).

A ``.npy`` file is ``\\x93NUMPY``, a version (1.0, 2.0 or 3.0), the header's
length (u16 in 1.0, u32 after), the header — a Python dict literal such as
``{'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }`` — then the array's
bytes. An ``.npz`` is a zip of ``<name>.npy`` members; ``np.savez`` stores them,
``np.savez_compressed`` deflates them (those members are plain bytes to us).

Invariants: the header is read by :func:`ast.literal_eval` on at most
:data:`MAX_HEADER` bytes, never ``eval``; only little-endian (or byte-sized)
plain dtypes in C order are tensors, so a Fortran-ordered, big-endian, object
or structured array is chunked plainly. The tensor of a ``.npy`` is named
``array``; an ``.npz`` member by its name without ``.npy``.
"""

from __future__ import annotations

import ast
import math
import struct
from typing import BinaryIO

from objstore.storage.formats import zipfiles
from objstore.storage.formats.base import MAX_TENSORS, ParsedFile, TensorInfo, checked

FORMAT = "npy"
NPZ = "npz"
MAGIC = b"\x93NUMPY"
# numpy itself refuses headers over 10,000 bytes unless told otherwise.
MAX_HEADER = 65536
# The tensor name of a lone .npy file.
ARRAY = "array"

# numpy descr -> dtype, as safetensors spells it.
DESCRS: dict[str, str] = {
    "<f4": "F32", "<f2": "F16", "<f8": "F64", "<c8": "C64", "|b1": "BOOL", "|u1": "U8", "|i1": "I8",
    "<i2": "I16", "<u2": "U16", "<i4": "I32", "<u4": "U32", "<i8": "I64", "<u8": "U64",
}


def sniff(head: bytes, size: int) -> bool:
    return head.startswith(MAGIC)


def parse(f: BinaryIO, size: int) -> ParsedFile | None:
    info = array_at(f, 0, size, ARRAY)
    return None if info is None else checked(FORMAT, [info], {}, size)


def array_at(f: BinaryIO, start: int, length: int, name: str) -> TensorInfo | None:
    """The array of the ``.npy`` bytes ``start .. start + length`` of ``f`` as a tensor, or None."""
    f.seek(start)
    head = f.read(12)
    if len(head) < 10 or not head.startswith(MAGIC) or head[6] not in (1, 2, 3):
        return None
    if head[6] == 1:
        (n,), header_start = struct.unpack("<H", head[8:10]), 10
    elif len(head) == 12:
        (n,), header_start = struct.unpack("<I", head[8:12]), 12
    else:
        return None
    if n > MAX_HEADER or header_start + n > length:
        return None
    f.seek(start + header_start)
    raw = f.read(n)
    try:
        header = ast.literal_eval(raw.decode("utf-8" if head[6] == 3 else "latin-1"))
    except (ValueError, SyntaxError, MemoryError, RecursionError, TypeError):
        return None
    if not isinstance(header, dict) or header.keys() != {"descr", "fortran_order", "shape"}:
        return None
    descr, fortran, shape = header["descr"], header["fortran_order"], header["shape"]
    dtype = DESCRS.get(descr) if isinstance(descr, str) else None
    if (dtype is None or fortran is not False or not isinstance(shape, tuple)
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
        return None
    nbytes = math.prod(shape) * int(descr[2:])
    data = header_start + n
    if data + nbytes > length:
        return None
    return TensorInfo(name, dtype, tuple(shape), start + data, nbytes)


class Npz:
    """The ``.npz`` parser (a module-like object in the FORMATS registry)."""

    FORMAT = NPZ

    @staticmethod
    def sniff(head: bytes, size: int) -> bool:
        return zipfiles.sniff(head, size)

    @staticmethod
    def parse(f: BinaryIO, size: int) -> ParsedFile | None:
        entries = zipfiles.entries(f, size)
        if not entries or not all(name.endswith(".npy") for name in entries) or len(entries) > MAX_TENSORS:
            return None
        tensors = []
        for entry in entries.values():
            if not entry.stored:
                continue  # a deflated member: its bytes are no array's
            info = array_at(f, entry.offset, entry.length, entry.name[: -len(".npy")])
            if info is None:
                return None
            tensors.append(info)
        # All deflated (np.savez_compressed): no tensor to cut at or to diff by.
        return checked(NPZ, tensors, {}, size) if tensors else None
