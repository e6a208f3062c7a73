"""Parsers of the tensor file formats segmentation knows, one module per format.

Each module has ``FORMAT`` (its name), ``sniff(head, size)`` (a cheap look at
the file's first :data:`HEAD_BYTES` for the format's magic) and ``parse(f,
size)``, which returns a :class:`~objstore.storage.formats.base.ParsedFile` or
None when the file is not that format or lies about itself.

Invariants every parser keeps (the fuzz tests check them on mutated files):

- Detection is by content: a name never makes a file parse, nor stops it.
- Nothing in a file is executed or resolved (no ``pickle.load``, no ``eval``);
  time and memory are bounded by the file's size and fixed limits, whatever
  its counts and lengths claim.
- A parser returns None or a checked layout (:func:`~objstore.storage.formats.base.checked`:
  tensors inside the file, apart, names unique). It raises nothing but OSError
  from reading ``f``; :func:`parse` turns a parser's slip on a hostile file
  (:data:`~objstore.storage.formats.base.MALFORMED`) into None too, so a file
  that parses as no format is chunked plainly, never refused.

A file object whose reads cost whole chunks (:class:`objstore.files.lazytensors.StoredFile`:
the stored file, fetched chunk by chunk) says so by two attributes, so that parsing it
fetches no chunk of tensor data: ``read_ahead`` (the bytes a sequential header walk may read
beyond what it needs; 0 there, :data:`~objstore.storage.formats.reader.BLOCK` for a local
file) and ``sniff_bytes`` (how much of its start the sniffs may see for the price of one
chunk: the first chunk, which segmentation cuts at the header's end).
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO, Protocol

from objstore.storage.formats import gguf, hdf5, numpy, onnx, safetensors, torch
from objstore.storage.formats.base import DTYPE_SIZES, MALFORMED, ParsedFile, TensorInfo


class Parser(Protocol):
    """What a format module is (a module, or a class of static methods for a second format in one module)."""

    FORMAT: str

    def sniff(self, head: bytes, size: int) -> bool: ...

    def parse(self, f: BinaryIO, size: int) -> ParsedFile | None: ...


# The parsers, tried in this order; the first whose sniff and parse both accept a file wins.
FORMATS: tuple[Parser, ...] = (
    safetensors,
    torch,
    numpy,
    numpy.Npz,
    gguf,
    hdf5,
    onnx,
)

# How much of a file's start every sniff is shown.
HEAD_BYTES = 4096

__all__ = ["DTYPE_SIZES", "FORMATS", "HEAD_BYTES", "ParsedFile", "TensorInfo", "model_of_side_file", "parse",
           "parse_side_file", "parse_side_of"]


def parse(f: BinaryIO, size: int) -> ParsedFile | None:
    """The layout of the ``size``-byte file ``f`` by the first format that takes it, or None."""
    f.seek(0)
    # Every sniff needs at most 16 bytes but HDF5's (a user block puts its signature at 512 … 4096).
    head = f.read(min(size, HEAD_BYTES, max(16, getattr(f, "sniff_bytes", HEAD_BYTES))))
    for module in FORMATS:
        if not module.sniff(head, size):
            continue
        try:
            parsed: ParsedFile | None = module.parse(f, size)
        except MALFORMED:
            parsed = None
        if parsed is not None:
            return parsed
    return None


def parse_side_file(path: Path, size: int) -> ParsedFile | None:
    """The layout of ``path``, a file of bare tensors with no header of its own, as a file beside it
    describes it (ONNX external data: :func:`~objstore.storage.formats.onnx.side_file`), or None."""
    try:
        return onnx.side_file(path, size)
    except MALFORMED:
        return None


def model_of_side_file(name: str) -> str | None:
    """The name of the model file whose side file ``name`` would be (ONNX external data), or None."""
    return onnx.model_of_side_file(name)


def parse_side_of(model: BinaryIO, model_size: int, side_name: str, side_size: int) -> ParsedFile | None:
    """The layout of the side file ``side_name`` (``side_size`` bytes) as the model ``model`` describes it
    (what :func:`parse_side_file` does when both are files in one directory, for any other storage), or None."""
    try:
        return onnx.side_layout(model, model_size, side_name, side_size)
    except MALFORMED:
        return None
