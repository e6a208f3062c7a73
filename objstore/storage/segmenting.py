"""Format-aware segmentation: where a file may be cut before CDC runs.

For ``.safetensors`` (detected by content, not by name) the header and every
tensor are separate segments, so chunk boundaries always fall on tensor edges
and every chunk knows its dtype. Every other format (GGUF, ``.pt``/zip, ``.h5``,
``.onnx``, anything) is one plain segment.

A safetensors file is ``u64 little-endian N``, ``N`` bytes of JSON, then the
tensor data; each tensor's ``data_offsets`` are relative to the data start.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import BinaryIO

from objstore.storage.formats.base import DTYPE_SIZES
from objstore.storage.formats.safetensors import read_safetensors_header


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
