"""Format-aware segmentation: where a file may be cut before CDC runs.

A file one of :mod:`objstore.storage.formats`' parsers takes (detected by
content, not by name) is cut into one segment per tensor, carrying its dtype to
the chunker (cuts on whole elements) and the codec, and one plain segment per gap
between tensors (headers, padding, metadata, index structures). So chunk
boundaries always fall on tensor edges, every tensor's chunks know their dtype,
and bytes that move with a header change (a zip's entry names, an HDF5 object
header) sit in chunks of their own instead of smearing over the tensors beside
them. Any other file is one plain segment. The segments are the whole file, in
order, each byte once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from objstore.storage import formats
from objstore.storage.formats import DTYPE_SIZES


@dataclass(frozen=True, slots=True)
class Segment:
    """A byte range of a file that chunking treats as a unit.

    ``dtype`` is the dtype of a tensor segment as :class:`~objstore.storage.formats.ParsedFile`
    spells it (None for gaps and plain files), ``align`` the element size chunk cuts must respect.
    ``stride`` (tensors; 0 otherwise): the grid word-sampled cuts may fall on, the
    gcd of the tensor's row (its bytes over its first dimension, or one element)
    and 64, so adding or removing whole rows keeps the grid; always a multiple of
    ``align``.
    """

    offset: int
    length: int
    dtype: str | None = None
    name: str | None = None
    stride: int = 0

    @property
    def align(self) -> int:
        return DTYPE_SIZES.get(self.dtype, 1) if self.dtype else 1


def segment_file(f: BinaryIO, size: int, path: Path | None = None) -> list[Segment]:
    """The segments of a file of ``size`` bytes, in order, covering every byte once; ``path``, where the
    file is, lets a file of bare tensors be segmented by the file beside it that describes it."""
    parsed = formats.parse(f, size)
    if parsed is None and path is not None:
        parsed = formats.parse_side_file(path, size)
    f.seek(0)
    if parsed is None:
        return [Segment(0, size)] if size else []
    segments = []
    pos = 0
    for t in parsed.tensors:
        if t.offset > pos:
            segments.append(Segment(pos, t.offset - pos))  # a header, padding, metadata between tensors
        if t.length:
            # A tensor whose bytes are no whole number of its elements is cut as plain bytes.
            dtype = t.dtype if t.length % DTYPE_SIZES.get(t.dtype, 1) == 0 else None
            stride = cut_stride(t, DTYPE_SIZES.get(t.dtype, 1)) if dtype else 0
            segments.append(Segment(t.offset, t.length, dtype, t.name, stride))
        pos = t.offset + t.length
    if pos < size:
        segments.append(Segment(pos, size - pos))
    return segments


def cut_stride(tensor: formats.TensorInfo, align: int) -> int:
    """The grid of ``tensor``'s word-sampled cuts (:attr:`Segment.stride`): gcd(row, 64),
    or the element size where the shape gives no whole row of whole elements."""
    rows = tensor.shape[0] if len(tensor.shape) >= 2 else 0
    row = tensor.length // rows if rows > 0 and tensor.length % rows == 0 else align
    return math.gcd(row, 64) if row % align == 0 else align
