"""Lazy tensor reads from a tensor file in the store: only the chunks a tensor needs.

Shaped like ``safetensors.safe_open(path, framework="np")``, from a logged
version (:meth:`objstore.Artifact.safe_open`), for a safetensors file and for any
other format :mod:`objstore.storage.formats` parses (torch.save checkpoints,
``.npy``/``.npz``, GGUF, HDF5, ONNX …: its tensors as that parser names them)::

    with art.safe_open("model.safetensors") as f:
        f.keys(), f.metadata()
        w = f.get_tensor("embed.weight")              # a numpy array, read now
        rows = f.get_slice("embed.weight")[100:200]    # only those rows' bytes

Invariants:

- Opening reads the header and nothing else: the file's first chunk, then the
  rest of the header if its length says there is more (at most
  :data:`~objstore.storage.formats.safetensors.MAX_HEADER`). The header is parsed by the
  format's one parser (:func:`~objstore.storage.formats.safetensors.parse_safetensors_header`)
  and checked as a whole before any tensor is read: every tensor inside the
  file and apart from the others, every shape exactly filling its byte range
  and one numpy can make an array of (at most 64 dimensions, a size an intp holds),
  ``__metadata__`` a str -> str map. A file that is no safetensors file is
  parsed through :class:`StoredFile` (a file object over the stored chunks:
  each read fetches and verifies only the chunks it touches) by the other
  formats' parsers, which read their own headers and indexes that way. A file
  no parser takes is a :class:`~objstore.errors.NotSafetensors` naming what is
  wrong with it as safetensors.
- Other formats: a tensor the parser could not give as one contiguous range
  (a torch storage shared by several views, a chunked HDF5 dataset) is not
  listed, or listed under its storage's name (``storage 3``); ``metadata()`` is
  the format's string metadata.
- A tensor (or a slice of rows) is read through
  :meth:`~objstore.storage.odb.ObjectDatabase.read_file_ranges`: only the chunks
  covering its bytes, neighbours in one pack in one ranged request, each chunk
  verified (keyed BLAKE3) before a byte of it is used. So what comes back is the
  bytes that were logged, or an error: never other bytes. Safetensors
  segmentation cuts chunks on tensor edges, so a tensor logged by objstore costs
  its own stored bytes; a file chunked otherwise costs at most one partial chunk
  at each end more.
- Dtypes: numpy's own where numpy has one (little-endian, as the format is).
  numpy has no bfloat16 or float8, so ``BF16`` comes back as ``uint16`` and the
  ``F8_*`` dtypes as ``uint8``, the bit patterns unchanged (``a.view(ml_dtypes.bfloat16)``,
  ``torch.from_numpy(a).view(torch.bfloat16)``): the same array type whatever is
  installed. The sub-byte dtypes (``F4``, ``F6_*``) and unknown ones are listed by
  :meth:`SafetensorsFile.keys` but refused by ``get_tensor``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, BinaryIO, cast

import numpy as np

from objstore.errors import CorruptObject, InvalidInput, NotFound, NotSafetensors
from objstore.files.materialize import read_file_object
from objstore.storage import formats
from objstore.storage.formats.base import DTYPE_SIZES, TensorInfo
from objstore.storage.formats.safetensors import parse_safetensors_header, safetensors_header_length
from objstore.storage.objects import FILE, FileObject, TreeEntry
from objstore.storage.odb import ObjectDatabase, file_offsets

# safetensors dtype -> the numpy dtype get_tensor returns (bit patterns where numpy has no such type).
NUMPY_DTYPES: dict[str, str] = {
    "BOOL": "?", "U8": "u1", "I8": "i1", "U16": "<u2", "I16": "<i2", "U32": "<u4", "I32": "<i4",
    "U64": "<u8", "I64": "<i8", "F16": "<f2", "F32": "<f4", "F64": "<f8", "C64": "<c8",
    "BF16": "<u2", "F8_E5M2": "u1", "F8_E4M3": "u1", "F8_E8M0": "u1",
}
# numpy's own limits on an array (its NPY_MAXDIMS; sizes in bytes as an intp), which even an empty
# array's other dimensions must keep.
MAX_DIMS = 64
MAX_ARRAY_BYTES = int(np.iinfo(np.intp).max)
# What safe_open's ``framework`` may be: this reader hands out numpy arrays only.
FRAMEWORKS = ("np", "numpy")


@dataclass(frozen=True, slots=True)
class _Header:
    tensors: dict[str, TensorInfo]  # by name, in file order
    metadata: dict[str, str]


class SafetensorsFile:
    """One stored safetensors file opened for lazy reads (see the module docstring).

    ``where`` names the file in messages (``model.safetensors in e/p/name:v3``).
    Closing drops the parsed header; reads after it are refused.
    """

    def __init__(self, odb: ObjectDatabase, fobj: FileObject, where: str) -> None:
        self._odb = odb
        self._fobj = fobj
        self._where = where
        self._offsets = file_offsets(fobj)
        self._header: _Header | None = _read_header(odb, fobj, self._offsets, where)

    # -- safetensors.safe_open's surface ----------------------------------
    def keys(self) -> list[str]:
        """The tensor names, sorted (as safetensors lists them)."""
        return sorted(self._open().tensors)

    def metadata(self) -> dict[str, str]:
        """The header's ``__metadata__`` (empty if it has none)."""
        return dict(self._open().metadata)

    def get_tensor(self, name: str) -> np.ndarray:
        """Tensor ``name`` as a numpy array, read from the store now: its own chunks only."""
        info = self._info(name)
        dtype = self._numpy_dtype(info)
        return self._read(info.offset, info.length).view(dtype).reshape(info.shape)

    def get_slice(self, name: str) -> TensorSlice:
        """A handle on tensor ``name`` that reads only what it is indexed with: ``[a:b]``
        (or ``[i]``) on the first axis reads just those rows; any further index
        applies to them in memory."""
        info = self._info(name)
        return TensorSlice(self, info, self._numpy_dtype(info))

    def offset_keys(self) -> list[str]:
        """The tensor names in file order (where their bytes lie)."""
        return list(self._open().tensors)

    def close(self) -> None:
        self._header = None

    def __enter__(self) -> SafetensorsFile:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._header is None else f"{len(self._header.tensors)} tensors"
        return f"<SafetensorsFile {self._where} ({state})>"

    # -- reading ------------------------------------------------------------
    def _open(self) -> _Header:
        if self._header is None:
            raise InvalidInput(f"{self._where} was closed; open it again with safe_open")
        return self._header

    def _info(self, name: str) -> TensorInfo:
        info = self._open().tensors.get(name)
        if info is None:
            raise NotFound(f"{self._where} has no tensor {name!r}", key=name)
        return info

    def _numpy_dtype(self, info: TensorInfo) -> np.dtype[Any]:
        code = NUMPY_DTYPES.get(info.dtype)
        if code is None:
            raise InvalidInput(f"tensor {info.name!r} of {self._where} has dtype {info.dtype}, which numpy cannot hold")
        return np.dtype(code)

    def _read(self, start: int, length: int) -> np.ndarray:
        """Bytes ``start .. start + length`` of the file, verified, as a uint8 array."""
        self._open()
        (out,) = self._odb.read_file_ranges(self._fobj, [(start, length)], offsets=self._offsets)
        return out


class TensorSlice:
    """A tensor not read yet (``SafetensorsFile.get_slice``): index it to read what the index needs."""

    def __init__(self, file: SafetensorsFile, info: TensorInfo, dtype: np.dtype[Any]) -> None:
        self._file = file
        self._info = info
        self._dtype = dtype

    def get_shape(self) -> list[int]:
        return list(self._info.shape)

    def get_dtype(self) -> str:
        """The safetensors dtype (``BF16``, ``F32`` …)."""
        return self._info.dtype

    def __getitem__(self, key: Any) -> np.ndarray:
        shape = self._info.shape
        index = key if isinstance(key, tuple) else (key,)
        first = index[0] if index else Ellipsis
        if not shape or not isinstance(first, (int, np.integer, slice)) or isinstance(first, bool):
            return self._rows(0, shape[0] if shape else 1)[index]  # fancy indexing: the whole tensor
        if isinstance(first, slice):
            rows = range(*first.indices(shape[0]))
            if not rows:
                return self._rows(0, 0)[(slice(None), *index[1:])]
            lo, hi = min(rows), max(rows) + 1
            block = self._rows(lo, hi)[rows.start - lo::rows.step][:len(rows)]
            return block[(slice(None), *index[1:])]
        i = int(first)
        if not -shape[0] <= i < shape[0]:
            raise IndexError(f"index {i} is out of bounds for axis 0 of tensor {self._info.name!r} (size {shape[0]})")
        i %= shape[0]
        return np.asarray(self._rows(i, i + 1)[(0, *index[1:])])

    def _rows(self, lo: int, hi: int) -> np.ndarray:
        """Rows ``lo .. hi`` of the first axis (the whole of a scalar), read from the store."""
        shape = self._info.shape
        if not shape:
            return self._file._read(self._info.offset, self._info.length).view(self._dtype).reshape(())
        row = math.prod(shape[1:]) * self._dtype.itemsize
        data = self._file._read(self._info.offset + lo * row, (hi - lo) * row)
        return data.view(self._dtype).reshape((hi - lo, *shape[1:]))


def open_safetensors(odb: ObjectDatabase, entry: TreeEntry, where: str, framework: str = "np") -> SafetensorsFile:
    """The stored file of tree entry ``entry`` opened for lazy tensor reads (reads its header)."""
    if framework not in FRAMEWORKS:
        raise InvalidInput(f"framework {framework!r} is not offered: tensors come back as numpy arrays "
                           "(torch.from_numpy turns one into a tensor without a copy)")
    if entry.kind != FILE or entry.id is None:
        raise InvalidInput(f"{where} is a {entry.kind}, not a stored file; only stored files can be read lazily")
    fobj = read_file_object(odb, entry.id)
    if fobj.size != entry.size:
        raise CorruptObject(f"file {entry.id.hex[:16]} is {fobj.size} bytes but its tree entry says {entry.size}; refusing it",
                            object_id=entry.id.hex)
    return SafetensorsFile(odb, fobj, where)


class StoredFile(io.RawIOBase):
    """A stored file as a read-only, seekable binary file, for parsers: each read
    fetches (and verifies) only the chunks it touches; the span of chunks last
    fetched is kept, so a parser's small reads inside one chunk cost one fetch.
    Parsers read it without read-ahead and sniff only its first chunk (``read_ahead``,
    ``sniff_bytes``: see :mod:`objstore.storage.formats`), so opening a tensor file
    fetches the chunks of its headers and none of its tensors."""

    read_ahead = 0

    def __init__(self, odb: ObjectDatabase, fobj: FileObject, offsets: np.ndarray | None = None) -> None:
        super().__init__()
        self._odb = odb
        self._fobj = fobj
        self._offsets = file_offsets(fobj) if offsets is None else offsets
        self._pos = 0
        self._span_start = 0
        self._span = np.zeros(0, np.uint8)

    @property
    def sniff_bytes(self) -> int:
        return self._fobj.chunks[0][1] if self._fobj.chunks else 0

    def binary(self) -> BinaryIO:
        """This file as the parsers' ``BinaryIO`` (what it is, by the methods they call)."""
        return cast(BinaryIO, self)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._fobj.size}[whence]
        if base + pos < 0:
            raise OSError(f"seek to {base + pos}, before the file's start")
        self._pos = base + pos
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        start, end = self._pos, min(self._pos + len(view), self._fobj.size)
        if start >= end:
            return 0
        if not (self._span_start <= start and end <= self._span_start + len(self._span)):
            first = int(np.searchsorted(self._offsets, start, side="right")) - 1
            last = int(np.searchsorted(self._offsets, end, side="left"))
            lo, hi = int(self._offsets[first]), int(self._offsets[last])
            (self._span,) = self._odb.read_file_ranges(self._fobj, [(lo, hi - lo)], offsets=self._offsets)
            self._span_start = lo
        view[:end - start] = self._span[start - self._span_start:end - self._span_start].data
        self._pos = end
        return end - start


def float_blocks(odb: ObjectDatabase, fobj: FileObject, info: TensorInfo, offsets: np.ndarray | None = None,
                 block: int = 1 << 20) -> Iterator[np.ndarray]:
    """The values of float tensor ``info`` (F16, BF16, F32, F64) as float64 arrays of at
    most ``block`` elements, in order, read from the store a block at a time (bounded
    memory whatever the tensor's size). ValueError for any other dtype."""
    code = {"F16": "<f2", "BF16": "<u2", "F32": "<f4", "F64": "<f8"}.get(info.dtype)
    if code is None:
        raise ValueError(f"{info.dtype} is not a float dtype")
    dtype = np.dtype(code)
    n = info.length // dtype.itemsize
    offsets = file_offsets(fobj) if offsets is None else offsets
    for i in range(0, n, block):
        count = min(block, n - i)
        (raw,) = odb.read_file_ranges(fobj, [(info.offset + i * dtype.itemsize, count * dtype.itemsize)], offsets=offsets)
        words = raw.view(dtype)
        if info.dtype == "BF16":  # bfloat16 is the top half of a float32
            yield (words.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        else:
            yield words.astype(np.float64)


def _read_header(odb: ObjectDatabase, fobj: FileObject, offsets: np.ndarray, where: str) -> _Header:
    """Read and check the header: a safetensors one (below), else the layout another format's parser reads."""
    try:
        return _read_safetensors_header(odb, fobj, offsets, where)
    except NotSafetensors as exc:
        parsed = formats.parse(StoredFile(odb, fobj, offsets).binary(), fobj.size) if fobj.size else None
        if parsed is None or parsed.format == "safetensors":
            raise exc from None
    for t in parsed.tensors:
        _check_tensor(t)
    return _Header({t.name: t for t in parsed.tensors}, dict(parsed.metadata))


def _read_safetensors_header(odb: ObjectDatabase, fobj: FileObject, offsets: np.ndarray, where: str) -> _Header:
    """Read and check a safetensors header: the first chunk, then the rest if the length says so."""
    size = fobj.size
    if size < 8:
        raise NotSafetensors(f"{size} bytes is too short for a safetensors header", path=where)
    # The first chunk holds the header (segmentation cuts it there); reading it whole
    # costs no more requests than its first 8 bytes and usually holds all of it.
    first = min(size, max(8, fobj.chunks[0][1]), 1 << 20)
    (head,) = odb.read_file_ranges(fobj, [(0, first)], offsets=offsets)
    try:
        n = safetensors_header_length(head[:8].tobytes(), size)
        if 8 + n > first:
            (more,) = odb.read_file_ranges(fobj, [(first, 8 + n - first)], offsets=offsets)
            head = np.concatenate((head, more))
        _, tensors, metadata = parse_safetensors_header(head[8:8 + n].tobytes(), size)
        for t in tensors:
            _check_tensor(t)
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
            raise NotSafetensors("its __metadata__ is not a map of strings to strings")
    except NotSafetensors as exc:
        raise NotSafetensors(exc.reason, path=where) from None
    return _Header({t.name: t for t in tensors}, metadata)


def _check_tensor(t: TensorInfo) -> None:
    """A tensor's shape must fill its byte range exactly (where its dtype has a byte size)."""
    if any(d < 0 for d in t.shape):
        raise NotSafetensors(f"tensor {t.name[:80]!r} has a negative dimension {list(t.shape)}")
    size = DTYPE_SIZES.get(t.dtype) if t.dtype in NUMPY_DTYPES else None
    if size is not None and math.prod(t.shape) * size != t.length:
        raise NotSafetensors(f"tensor {t.name[:80]!r} is {t.dtype} of shape {list(t.shape)} "
                             f"({math.prod(t.shape) * size} bytes) but its byte range holds {t.length}")
    # An empty tensor's 0 bytes fit any other dimensions, and 65 dimensions of 1 fill 4 bytes: both
    # pass the check above, but numpy makes no such array, and its ValueError would escape get_tensor.
    if size is not None and (len(t.shape) > MAX_DIMS or math.prod(d for d in t.shape if d) * size > MAX_ARRAY_BYTES):
        raise NotSafetensors(f"tensor {t.name[:80]!r} has a shape numpy cannot hold: {len(t.shape)} dimensions "
                             f"(at most {MAX_DIMS}) of {math.prod(d for d in t.shape if d)} elements")
