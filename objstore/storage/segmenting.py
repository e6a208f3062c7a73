"""Format-aware segmentation: where a file may be cut before CDC runs.

For ``.safetensors`` (detected by content, not by name) the header and every
tensor are separate segments, so chunk boundaries always fall on tensor edges
and every chunk knows its dtype. Every other format (GGUF, ``.pt``/zip, ``.h5``,
``.onnx``, anything) is one plain segment.

A safetensors file is ``u64 little-endian N``, ``N`` bytes of JSON, then the
tensor data; each tensor's ``data_offsets`` are relative to the data start.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import BinaryIO

# dtype name -> element size in bytes, as safetensors spells them.
DTYPE_SIZES: dict[str, int] = {
    "BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "F4": 1, "F6_E2M3": 1, "F6_E3M2": 1,
    "I16": 2, "U16": 2, "F16": 2, "BF16": 2,
    "I32": 4, "U32": 4, "F32": 4,
    "I64": 8, "U64": 8, "F64": 8, "C64": 8,
}

# A header larger than this is not a safetensors file we will trust.
MAX_HEADER = 100 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Segment:
    """A byte range of a file that chunking treats as a unit.

    ``dtype`` is the safetensors dtype of a tensor segment (None for headers and
    plain files), ``align`` the element size chunk cuts must respect.
    """

    offset: int
    length: int
    dtype: str | None = None
    name: str | None = None

    @property
    def align(self) -> int:
        return DTYPE_SIZES.get(self.dtype, 1) if self.dtype else 1


@dataclass(frozen=True, slots=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int  # absolute, in the file
    length: int


def read_safetensors_header(f: BinaryIO, size: int) -> tuple[int, list[TensorInfo], dict[str, str]] | None:
    """Parse a safetensors header: (data start, tensors by offset, ``__metadata__``), or None if not one."""
    if size < 8:
        return None
    f.seek(0)
    head = f.read(8)
    if len(head) != 8:
        return None
    (n,) = struct.unpack("<Q", head)
    if n < 2 or n > MAX_HEADER or 8 + n > size:
        return None
    raw = f.read(n)
    if len(raw) != n or raw[:1] != b"{":
        return None
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return None
    if not isinstance(header, dict):
        return None
    data_start = 8 + n
    metadata = header.pop("__metadata__", None) or {}
    tensors: list[TensorInfo] = []
    for name, info in header.items():
        try:
            dtype = info["dtype"]
            begin, end = info["data_offsets"]
            shape = tuple(int(d) for d in info["shape"])
        except (KeyError, TypeError, ValueError):
            return None
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end and data_start + end <= size):
            return None
        tensors.append(TensorInfo(name, str(dtype), shape, data_start + begin, end - begin))
    tensors.sort(key=lambda t: (t.offset, t.length))
    for a, b in zip(tensors, tensors[1:]):
        if a.offset + a.length > b.offset:
            return None  # overlapping tensors: not a layout we segment
    return data_start, tensors, metadata if isinstance(metadata, dict) else {}


def segment_file(f: BinaryIO, size: int) -> list[Segment]:
    """The segments of a file of ``size`` bytes, in order, covering every byte once."""
    parsed = read_safetensors_header(f, size)
    f.seek(0)
    if parsed is None:
        return [Segment(0, size)] if size else []
    data_start, tensors, _ = parsed
    segments = [Segment(0, data_start, None, "__header__")]
    pos = data_start
    for t in tensors:
        if t.offset > pos:
            segments.append(Segment(pos, t.offset - pos))  # padding between tensors
        if t.length:
            dtype = t.dtype if t.length % DTYPE_SIZES.get(t.dtype, 1) == 0 else None
            segments.append(Segment(t.offset, t.length, dtype, t.name))
        pos = t.offset + t.length
    if pos < size:
        segments.append(Segment(pos, size - pos))
    return segments
