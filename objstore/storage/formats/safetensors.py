"""safetensors: ``u64 little-endian N``, ``N`` bytes of JSON, then the tensor
data; each tensor's ``data_offsets`` are relative to the data start.

:func:`parse_safetensors_header` is the format's one parser (segmentation, diff
and lazy reads all read headers through it); it raises NotSafetensors naming what
is wrong, for the lazy reader's messages, where :func:`parse` says None.
"""

from __future__ import annotations

import json
import struct
from typing import BinaryIO

from objstore.errors import NotSafetensors
from objstore.storage.formats.base import ParsedFile, TensorInfo, checked

FORMAT = "safetensors"

# A header larger than this is not a safetensors file we will trust.
MAX_HEADER = 100 * 1024 * 1024


def sniff(head: bytes, size: int) -> bool:
    """A plausible header length, then a JSON object."""
    try:
        safetensors_header_length(head, size)
    except NotSafetensors:
        return False
    return head[8:9] == b"{"


def parse(f: BinaryIO, size: int) -> ParsedFile | None:
    parsed = read_safetensors_header(f, size)
    if parsed is None:
        return None
    _, tensors, metadata = parsed
    meta = {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items() if isinstance(k, str)}
    return checked(FORMAT, tensors, meta, size)


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
            shape = info["shape"]
        except (KeyError, TypeError, ValueError):
            raise NotSafetensors(f"tensor {name[:80]!r} lacks a dtype, shape or data_offsets") from None
        # JSON whole numbers only, as safetensors reads them: int() would make the string "44" the
        # shape (4, 4) and 4.7 a 4, and a bool is an int to Python.
        if not isinstance(shape, list) or not all(_whole(d) for d in shape):
            raise NotSafetensors(f"tensor {name[:80]!r} has a shape that is not a list of whole numbers")
        shape = tuple(shape)
        if not (_whole(begin) and _whole(end) and 0 <= begin <= end and data_start + end <= size):
            raise NotSafetensors(f"tensor {name[:80]!r} claims bytes {begin}..{end} of the data, outside the file")
        tensors.append(TensorInfo(name, str(dtype), shape, data_start + begin, end - begin))
    tensors.sort(key=lambda t: (t.offset, t.length))
    for a, b in zip(tensors, tensors[1:]):
        if a.offset + a.length > b.offset:
            raise NotSafetensors(f"tensors {a.name[:80]!r} and {b.name[:80]!r} overlap")
    return data_start, tensors, metadata if isinstance(metadata, dict) else {}


def _whole(value: object) -> bool:
    """A JSON integer (Python parses true/false as bools, which are ints too)."""
    return isinstance(value, int) and not isinstance(value, bool)
