"""Where each entry's bytes lie in a zip file (torch.save checkpoints, ``.npz``).

Only stored (uncompressed) entries have a byte range that is their content;
compressed ones are listed without one. The central directory is read by
:mod:`zipfile` (it only reads, never extracts); each entry's local header is
read here to find where its data starts, which must lie inside the file.
"""

from __future__ import annotations

import struct
import zipfile
from dataclasses import dataclass
from typing import BinaryIO

from objstore.storage.formats.base import MAX_TENSORS

ZIP_MAGIC = b"PK\x03\x04"
_LOCAL = struct.Struct("<4s22xHH")  # signature, ..., name length, extra length (30 bytes)


@dataclass(frozen=True, slots=True)
class Entry:
    name: str
    offset: int  # where the content starts in the file (stored entries; -1 for compressed)
    length: int  # the content's length (uncompressed)
    stored: bool


def sniff(head: bytes, size: int) -> bool:
    return head.startswith(ZIP_MAGIC) and size >= 22


def entries(f: BinaryIO, size: int) -> dict[str, Entry] | None:
    """Every entry by name, or None if ``f`` is no zip file or lies (an entry
    outside the file, a name twice, more entries than any model has)."""
    try:
        with zipfile.ZipFile(f) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, ValueError, struct.error):
        return None
    if len(infos) > MAX_TENSORS:
        return None
    out: dict[str, Entry] = {}
    for info in infos:
        if info.filename in out or info.flag_bits & 0x1:  # a name twice; an encrypted entry
            return None
        stored = info.compress_type == zipfile.ZIP_STORED and info.compress_size == info.file_size
        offset = -1
        if stored:
            # Checked before seeking: a lying end record makes zipfile compute offsets below 0,
            # and a real file's seek there raises OSError, which would fail the file's ingest.
            if not 0 <= info.header_offset <= size - _LOCAL.size:
                return None
            f.seek(info.header_offset)
            local = f.read(_LOCAL.size)
            if len(local) != _LOCAL.size:
                return None
            magic, name_len, extra_len = _LOCAL.unpack(local)
            offset = info.header_offset + _LOCAL.size + name_len + extra_len
            if magic != ZIP_MAGIC or offset + info.file_size > size:
                return None
        out[info.filename] = Entry(info.filename, offset, info.file_size, stored)
    return out
