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

from objstore.errors import NotSafetensors

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
    try:
        n = safetensors_header_length(head, size)
        raw = f.read(n)
        return parse_safetensors_header(raw, size) if len(raw) == n else None
    except NotSafetensors:
        return None


def safetensors_header_length(head: bytes, size: int) -> int:
    """The JSON header's length from a file's first 8 bytes (``size`` the whole file's);
    NotSafetensors if no safetensors file of that size can start so."""
    if size < 8 or len(head) < 8:
        raise NotSafetensors(f"{size} bytes is too short for a safetensors header")
    (n,) = struct.unpack("<Q", head[:8])
    if n < 2 or n > MAX_HEADER or 8 + n > size:
        raise NotSafetensors(f"its first 8 bytes claim a {n}-byte header, impossible in a {size}-byte file")
    return int(n)


def parse_safetensors_header(raw: bytes, size: int) -> tuple[int, list[TensorInfo], dict[str, str]]:
    """Parse the JSON header ``raw`` (the bytes after the length) of a ``size``-byte
    file: (data start, tensors by offset, ``__metadata__``); NotSafetensors naming
    what is wrong. The one parser of the format: segmentation, diff and lazy reads
    all read headers through it."""
    if raw[:1] != b"{":
        raise NotSafetensors("its header is not a JSON object")
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        raise NotSafetensors("its header is not valid JSON") from None
    if not isinstance(header, dict):
        raise NotSafetensors("its header is not a JSON object")
    data_start = 8 + len(raw)
    metadata = header.pop("__metadata__", None) or {}
    tensors: list[TensorInfo] = []
    for name, info in header.items():
        try:
            dtype = info["dtype"]
            begin, end = info["data_offsets"]
            shape = tuple(int(d) for d in info["shape"])
        except (KeyError, TypeError, ValueError):
            raise NotSafetensors(f"tensor {name[:80]!r} lacks a dtype, shape or data_offsets") from None
        if not (isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end and data_start + end <= size):
            raise NotSafetensors(f"tensor {name[:80]!r} claims bytes {begin}..{end} of the data, outside the file")
        tensors.append(TensorInfo(name, str(dtype), shape, data_start + begin, end - begin))
    tensors.sort(key=lambda t: (t.offset, t.length))
    for a, b in zip(tensors, tensors[1:]):
        if a.offset + a.length > b.offset:
            raise NotSafetensors(f"tensors {a.name[:80]!r} and {b.name[:80]!r} overlap")
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
