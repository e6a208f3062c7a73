"""The values every format parser returns (see :mod:`objstore.storage.formats`)."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

# dtype name -> element size in bytes, as safetensors spells them.
DTYPE_SIZES: dict[str, int] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "F4": 1, "F6_E2M3": 1, "F6_E3M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int  # absolute, in the file
    length: int


# More tensors than this in one file is taken for a lie (a hostile count), not a model.
MAX_TENSORS = 1 << 20

# What a parser's bug on a hostile file can raise. parse() turns these into "not
# this format" so a file always ingests (plainly at worst); parsers should return
# None themselves, and their fuzz tests call them directly to check they do.
MALFORMED: tuple[type[Exception], ...] = (ValueError, KeyError, IndexError, TypeError, OverflowError,
                                         RecursionError, struct.error)


@dataclass(frozen=True, slots=True)
class ParsedFile:
    """A tensor file's layout as its parser read it.

    ``format``: the parser's FORMAT ("safetensors", "torch", "npy", "npz", "gguf",
    "hdf5", "onnx"). ``tensors``: sorted by offset, non-overlapping, inside the
    file, names unique (checked by :func:`checked`, the only constructor parsers
    use). A dtype is spelled as safetensors does (F32, F16, BF16, F64, I8 …) or is
    the format's own name for a kind that is no plain number (GGUF "Q4_K"), which
    the codec stores as plain bytes. ``metadata``: the format's string metadata.
    """

    format: str
    tensors: tuple[TensorInfo, ...]
    metadata: dict[str, str]


def checked(format: str, tensors: Iterable[TensorInfo], metadata: dict[str, str], size: int) -> ParsedFile | None:
    """``tensors`` as a ParsedFile of a ``size``-byte file, sorted by offset; None when
    they lie: too many, a range outside the file, two overlapping, a name twice."""
    out: list[TensorInfo] = []
    for t in tensors:
        if len(out) >= MAX_TENSORS or not (0 <= t.offset and 0 <= t.length and t.offset + t.length <= size):
            return None
        out.append(t)
    out.sort(key=lambda t: (t.offset, t.length))
    if any(a.offset + a.length > b.offset for a, b in zip(out, out[1:])):
        return None
    if len({t.name for t in out}) != len(out):
        return None
    return ParsedFile(format, tuple(out), metadata)
