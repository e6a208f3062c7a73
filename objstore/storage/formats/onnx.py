"""ONNX models: where the graph's initializers keep their ``raw_data``, found by walking the protobuf wire format.

An ``.onnx`` file is one serialized ``ModelProto``: a sequence of fields, each a varint tag
(field number << 3 | wire type) and a value (a varint, 8 or 4 fixed bytes, or a varint length and
that many bytes). The path to the weights is ModelProto.graph (field 7) → GraphProto.initializer
(field 5, repeated) → TensorProto: dims (1, varints, packed or not), data_type (2), name (8),
raw_data (9: the little-endian values), external_data (13: key/value entries ``location``,
``offset``, ``length``) and data_location (14; 1 = EXTERNAL). Only these fields are read; every
other field (nodes, attributes, doc strings) is skipped by its length, so no protobuf runtime is
needed and nothing in the file is interpreted beyond them.

What :func:`parse` returns: every initializer with inline ``raw_data`` of a dtype we name, named by
the initializer's name, its bytes exactly shape × element size (4-bit types: half a byte each,
rounded up), sorted by offset and apart (:func:`~objstore.storage.formats.base.checked`). The file
as a whole must be well-formed protobuf ending exactly at its size, with an ``ir_version`` first
(what ``onnx.save`` writes) and a graph; otherwise it is not ONNX here. Initializers stored in
``float_data`` and friends (not raw) and the initializers of subgraphs (If/Loop bodies) stay in the
plain segments. :func:`external_tensors` reads the layout of an external-data side file (a file
of bare tensors, which no parser can tell apart from noise by itself) from the ``.onnx`` that names
it, and :func:`side_file` finds that model beside a side file, so ingest segments the side file by
the model's offsets whenever both are in one directory.

Bounded on hostile input: lengths are checked against the bytes left before anything is read,
the nesting is fixed (model → graph → tensor → entry), and at most :data:`MAX_FIELDS` fields are
walked in all.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from objstore.storage.formats.base import ParsedFile, TensorInfo, checked
from objstore.storage.formats.reader import PastEnd, SequentialReader

FORMAT = "onnx"

MAX_FIELDS = 4_000_000
MAX_DIMS = 64
MAX_SMALL = 1 << 20  # a name, a dims list or an external-data entry larger than this is a lie
MAX_IR_VERSION = 64  # 11 in 2025; the sniff's sanity bound

# ModelProto, GraphProto, TensorProto, StringStringEntryProto field numbers
_IR_VERSION, _GRAPH = 1, 7
_INITIALIZER = 5
_DIMS, _DATA_TYPE, _NAME, _RAW_DATA, _EXTERNAL_DATA, _DATA_LOCATION = 1, 2, 8, 9, 13, 14
_KEY, _VALUE = 1, 2
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_EXTERNAL = 1

# TensorProto.DataType -> (name, bits per element); safetensors' names where it has one.
DATA_TYPES: dict[int, tuple[str, int]] = {
    1: ("F32", 32), 2: ("U8", 8), 3: ("I8", 8), 4: ("U16", 16), 5: ("I16", 16), 6: ("I32", 32), 7: ("I64", 64),
    9: ("BOOL", 8), 10: ("F16", 16), 11: ("F64", 64), 12: ("U32", 32), 13: ("U64", 64), 14: ("C64", 64),
    15: ("COMPLEX128", 128), 16: ("BF16", 16), 17: ("F8_E4M3", 8), 18: ("FLOAT8E4M3FNUZ", 8), 19: ("F8_E5M2", 8),
    20: ("FLOAT8E5M2FNUZ", 8), 21: ("UINT4", 4), 22: ("INT4", 4), 23: ("FLOAT4E2M1", 4), 24: ("FLOAT8E8M0", 8),
    25: ("UINT2", 2), 26: ("INT2", 2),
}


class _Lie(Exception):
    """The file is not well-formed ONNX (internal: parse turns it into None)."""


@dataclass(frozen=True, slots=True)
class ExternalTensor:
    """An initializer whose bytes are in a side file: ``location`` (as the model names it), offset, length."""

    tensor: TensorInfo  # offset and length in the side file
    location: str


@dataclass(frozen=True, slots=True)
class _Tensor:
    name: str
    dtype: str
    shape: tuple[int, ...]
    raw: tuple[int, int] | None  # (offset, length) of inline raw_data in the file
    external: dict[str, str]


class _Wire(SequentialReader):
    """The file's reader, with protobuf's varints and fields, counting the fields walked."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        super().__init__(f, size)
        self.fields = 0

    def varint(self) -> int:
        value = shift = 0
        while True:
            byte = self.take(1)[0]
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7
            if shift >= 70:
                raise _Lie("varint longer than 10 bytes")

    def field(self, end: int) -> tuple[int, int, int]:
        """The next field before ``end``: (number, wire type, value); for a LEN field the value is the
        payload's length and the reader is at its start; fixed-size values are skipped (value 0)."""
        self.fields += 1
        if self.fields > MAX_FIELDS:
            raise _Lie("too many fields")
        tag = self.varint()
        number, wire = tag >> 3, tag & 7
        if number == 0:
            raise _Lie("field number 0")
        if wire == _VARINT:
            value = self.varint()
        elif wire == _LEN:
            value = self.varint()
            if value > end - self.pos:
                raise _Lie("length past the end of its message")
        elif wire in (_I64, _I32):
            self.skip(8 if wire == _I64 else 4)
            value = 0
        else:
            raise _Lie(f"wire type {wire}")
        if self.pos > end:
            raise _Lie("field past the end of its message")
        return number, wire, value


def sniff(head: bytes, size: int) -> bool:
    """Whether ``head`` starts like a serialized ModelProto: ``ir_version`` (field 1, a small varint) first."""
    return size >= 4 and len(head) >= 2 and head[0] == 0x08 and 1 <= head[1] <= MAX_IR_VERSION


def parse(f: BinaryIO, size: int) -> ParsedFile | None:
    """The inline initializers of an ONNX model of ``size`` bytes, or None if it is not one."""
    found = _model(f, size)
    if found is None:
        return None
    tensors, metadata = found
    inline = [TensorInfo(t.name, t.dtype, t.shape, t.raw[0], t.raw[1]) for t in tensors if t.raw is not None]
    return checked(FORMAT, inline, metadata, size)


def external_tensors(f: BinaryIO, size: int) -> list[ExternalTensor] | None:
    """The initializers of the ONNX model ``f`` whose bytes are in side files, where the model says they are
    (None if ``f`` is not ONNX). Locations are as written in the model; what a caller resolves them to is its own
    business (this reads only ``f``)."""
    found = _model(f, size)
    if found is None:
        return None
    out = []
    for t in found[0]:
        if t.raw is not None or "location" not in t.external:
            continue
        try:
            offset, length = int(t.external.get("offset", "0")), int(t.external["length"])
        except (KeyError, ValueError):
            return None  # a length is required to know the tensor: the model lies or is partial
        out.append(ExternalTensor(TensorInfo(t.name, t.dtype, t.shape, offset, length), t.external["location"]))
    return out


def side_file(path: Path, size: int) -> ParsedFile | None:
    """The layout of ``path`` (``size`` bytes) as an external-data file of the ONNX model beside it, or None.

    The model is looked for where onnx's and the exporters' naming puts it: the side file's name cut
    after its first ``.onnx`` (``model.onnx.data``, ``model.onnx_data`` → ``model.onnx``), one
    ``stat`` for any other file. Only initializers whose location is exactly this file's name are
    taken; the model is opened without following a symlink and only parsed, so at worst a stale or
    hostile model makes the side file's segments plain (:func:`checked` still bounds them to the file).
    """
    model_name = model_of_side_file(path.name)
    if model_name is None:
        return None
    model = path.with_name(model_name)
    try:
        fd = os.open(model, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as f:
        return side_layout(f, os.fstat(fd).st_size, path.name, size)


def model_of_side_file(name: str) -> str | None:
    """The name of the ONNX model an external-data file called ``name`` belongs to by onnx's and the
    exporters' naming (``model.onnx.data``, ``model.onnx_data`` → ``model.onnx``), or None."""
    cut = name.find(".onnx")
    if cut < 0 or name == name[:cut + 5]:
        return None
    return name[:cut + 5]


def side_layout(model: BinaryIO, model_size: int, side_name: str, side_size: int) -> ParsedFile | None:
    """The layout of the side file ``side_name`` (``side_size`` bytes) as the ONNX model ``model`` names
    it: the initializers whose location is exactly that name; None if the model names none (or is no model)."""
    ext = external_tensors(model, model_size)
    if not ext:
        return None
    mine = [e.tensor for e in ext if e.location in (side_name, f"./{side_name}")]
    return checked(FORMAT, mine, {"external_data_of": model_of_side_file(side_name) or ""}, side_size) if mine else None


def _model(f: BinaryIO, size: int) -> tuple[list[_Tensor], dict[str, str]] | None:
    w = _Wire(f, size)
    try:
        number, wire, ir_version = w.field(size)
        if (number, wire) != (_IR_VERSION, _VARINT) or not 1 <= ir_version <= MAX_IR_VERSION:
            return None
        tensors: list[_Tensor] | None = None
        while w.pos < size:
            number, wire, value = w.field(size)
            if number == _GRAPH and wire == _LEN:
                if tensors is not None:
                    return None  # a second graph would merge into the first: not what onnx.save writes
                tensors = _graph(w, w.pos + value)
            elif wire == _LEN:
                w.skip(value)
        if tensors is None:
            return None
        return tensors, {"ir_version": str(ir_version)}
    except (_Lie, PastEnd, UnicodeDecodeError, ValueError):  # ValueError: an external length not a number
        return None


def _graph(w: _Wire, end: int) -> list[_Tensor]:
    tensors = []
    while w.pos < end:
        number, wire, value = w.field(end)
        if number == _INITIALIZER and wire == _LEN:
            tensors.append(_tensor(w, w.pos + value))
        elif wire == _LEN:
            w.skip(value)
    if w.pos != end:
        raise _Lie("graph overruns its length")
    return tensors


def _tensor(w: _Wire, end: int) -> _Tensor:
    dims: list[int] = []
    data_type = 0
    name = ""
    raw: tuple[int, int] | None = None
    external: dict[str, str] = {}
    location = 0
    while w.pos < end:
        number, wire, value = w.field(end)
        if number == _DIMS and wire == _VARINT:
            dims.append(value)
        elif number == _DIMS and wire == _LEN:
            stop = w.pos + _small(value)
            while w.pos < stop:
                dims.append(w.varint())
            if w.pos != stop:
                raise _Lie("packed dims overrun")
        elif number == _DATA_TYPE and wire == _VARINT:
            data_type = value
        elif number == _NAME and wire == _LEN:
            name = w.take(_small(value)).decode()
        elif number == _RAW_DATA and wire == _LEN:
            if raw is not None:
                raise _Lie("raw_data twice")  # protobuf keeps the last: the first would be no tensor's bytes
            raw = (w.pos, value)
            w.skip(value)
        elif number == _EXTERNAL_DATA and wire == _LEN:
            key, val = _entry(w, w.pos + _small(value))
            external[key] = val
        elif number == _DATA_LOCATION and wire == _VARINT:
            location = value
        elif wire == _LEN:
            w.skip(value)
        if len(dims) > MAX_DIMS:
            raise _Lie("too many dims")
    if w.pos != end:
        raise _Lie("tensor overruns its length")
    known = DATA_TYPES.get(data_type)
    if location == _EXTERNAL:
        raw = None
    if known is None:
        return _Tensor(name, "", tuple(dims), None, {})  # strings, or a type we do not name: plain
    dtype, bits = known
    length = -(-math.prod(dims) * bits // 8)
    if raw is not None and raw[1] != length:
        raise _Lie(f"initializer {name!r} raw_data does not match its shape")
    if location == _EXTERNAL:
        external.setdefault("length", str(length))
        if int(external["length"]) != length:
            raise _Lie(f"initializer {name!r} external length does not match its shape")
    return _Tensor(name, dtype, tuple(dims), raw, external if location == _EXTERNAL else {})


def _entry(w: _Wire, end: int) -> tuple[str, str]:
    key = value = ""
    while w.pos < end:
        number, wire, n = w.field(end)
        if wire != _LEN:
            continue
        text = w.take(n).decode()
        if number == _KEY:
            key = text
        elif number == _VALUE:
            value = text
    if w.pos != end:
        raise _Lie("entry overruns its length")
    return key, value


def _small(n: int) -> int:
    if n > MAX_SMALL:
        raise _Lie("field too large for what it holds")
    return n
