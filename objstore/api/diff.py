"""Comparing two versions: files added, removed and changed, and for tensor
files (every format :mod:`objstore.storage.formats` parses: safetensors, torch.save
checkpoints, ``.npy``/``.npz``, GGUF, HDF5, ONNX) which tensors were added, removed
or changed in shape, dtype or values, by the format's own tensor names.

Tensors are compared by the chunk ids of their byte ranges (segmentation puts
chunk boundaries on tensor edges), so equal chunk ids mean equal bytes and no
unchanged tensor is ever read. Reading a layout reads only what its parser reads
(a safetensors header; a zip's directory and pickle; for an ONNX external-data file, the model stored beside it in the version), through
:class:`~objstore.files.lazytensors.StoredFile`. A tensor whose values changed
and whose dtype is a float (F16, BF16, F32, F64) is read from both versions, a
block at a time, for its relative L2 change ``‖b − a‖ / ‖a‖``; it is None for
other dtypes, a zero ``a``, or values that are not finite.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from objstore.files.lazytensors import StoredFile, float_blocks
from objstore.model.inventory import ContentWalker
from objstore.model.store import Store
from objstore.model.versions import ResolvedVersion
from objstore.storage import formats
from objstore.storage.formats.base import TensorInfo
from objstore.storage.ids import ObjectId
from objstore.storage.objects import FILE, FileObject, TreeEntry
from objstore.storage.trees import walk_tree


@dataclass(frozen=True, slots=True)
class TensorChange:
    """``change``: added, removed, dtype, shape or values (dtype and shape win over values).
    ``relative_l2``: for a values change of a float tensor, ``‖new − old‖ / ‖old‖``."""

    name: str
    change: str
    old_dtype: str | None = None
    new_dtype: str | None = None
    old_shape: tuple[int, ...] | None = None
    new_shape: tuple[int, ...] | None = None
    relative_l2: float | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name, "change": self.change,
            "old": None if self.old_dtype is None else {"dtype": self.old_dtype, "shape": list(self.old_shape or ())},
            "new": None if self.new_dtype is None else {"dtype": self.new_dtype, "shape": list(self.new_shape or ())},
            "relative_l2": self.relative_l2,
        }


@dataclass(frozen=True, slots=True)
class MetadataChange:
    """One key of a tensor file's metadata (safetensors' ``__metadata__``) added (old None), removed (new None) or changed."""

    key: str
    old: str | None
    new: str | None

    def to_dict(self) -> dict[str, object]:
        return {"key": self.key, "old": self.old, "new": self.new}


@dataclass(frozen=True, slots=True)
class FileChange:
    """``status``: added, removed, changed or renamed. ``tensors`` and ``metadata``
    (the format's metadata keys that differ) are set when both sides are tensor
    files of one format; ``old_path`` when the file had another name in A. A file whose
    tensors are all equal differs in its header: ``metadata`` says how, or
    neither list has an entry when only the header's layout changed."""

    path: str
    status: str
    old_size: int | None
    new_size: int | None
    tensors: tuple[TensorChange, ...] | None = None
    old_path: str | None = None
    metadata: tuple[MetadataChange, ...] | None = None

    def to_dict(self) -> dict[str, object]:
        return {
            "path": self.path, "status": self.status, "old_size": self.old_size, "new_size": self.new_size,
            "tensors": None if self.tensors is None else [t.to_dict() for t in self.tensors], "old_path": self.old_path,
            "metadata": None if self.metadata is None else [m.to_dict() for m in self.metadata],
        }


@dataclass(frozen=True, slots=True)
class VersionDiff:
    """``bytes_shared``: raw bytes of B's distinct chunks that A also has;
    ``bytes_new``: those A lacks (what B cost on top of A)."""

    a: str
    b: str
    files: tuple[FileChange, ...]
    unchanged: int
    bytes_shared: int
    bytes_new: int

    def to_dict(self) -> dict[str, object]:
        return {"a": self.a, "b": self.b, "files": [f.to_dict() for f in self.files], "unchanged": self.unchanged,
                "bytes_shared": self.bytes_shared, "bytes_new": self.bytes_new}


def diff_versions(store: Store, a: ResolvedVersion, b: ResolvedVersion) -> VersionDiff:
    """What changed from ``a`` to ``b``."""
    walker = ContentWalker(store)
    entries_a = {p: e for p, e in walk_tree(store.odb, a.version.tree)}
    entries_b = {p: e for p, e in walk_tree(store.odb, b.version.tree)}
    changes: list[FileChange] = []
    unchanged = 0
    for path in sorted(entries_a.keys() | entries_b.keys()):
        ea, eb = entries_a.get(path), entries_b.get(path)
        if ea is None:
            assert eb is not None
            changes.append(FileChange(path, "added", None, eb.size))
        elif eb is None:
            changes.append(FileChange(path, "removed", ea.size, None))
        elif (ea.kind, ea.id, ea.target, ea.size) == (eb.kind, eb.id, eb.target, eb.size):
            unchanged += 1
        else:
            changes.append(_changed(store, walker, path, ea, eb, (entries_a, entries_b)))
    added = [c for c in changes if c.status == "added"]
    removed = [c for c in changes if c.status == "removed"]
    if len(added) == 1 and len(removed) == 1:
        # One file out, one file in: a model saved under a new name (base.safetensors
        # -> tuned.safetensors) is compared as the same file, tensor by tensor.
        ea, eb = entries_a[removed[0].path], entries_b[added[0].path]
        if ea.kind == eb.kind == FILE:
            changes = [c for c in changes if c not in (added[0], removed[0])]
            changes.append(_changed(store, walker, added[0].path, ea, eb, (entries_a, entries_b), old_path=removed[0].path))
            changes.sort(key=lambda c: c.path)
    chunks_a = walker.chunk_sizes(a.version.tree)
    chunks_b = walker.chunk_sizes(b.version.tree)
    shared = sum(n for c, n in chunks_b.items() if c in chunks_a)
    new = sum(n for c, n in chunks_b.items() if c not in chunks_a)
    return VersionDiff(a.qualified_name, b.qualified_name, tuple(changes), unchanged, shared, new)


Entries = dict[str, TreeEntry]


def _changed(store: Store, walker: ContentWalker, path: str, ea: TreeEntry, eb: TreeEntry, trees: tuple[Entries, Entries],
             old_path: str | None = None) -> FileChange:
    if old_path is not None and ea.id == eb.id:
        return FileChange(path, "renamed", ea.size, eb.size, (), old_path)
    tensors = metadata = None
    if ea.kind == FILE and eb.kind == FILE and ea.id and eb.id:
        fa, fb = walker.file(ea.id), walker.file(eb.id)
        la = _layout(store, fa, _model_beside(walker, old_path or path, trees[0]))
        lb = _layout(store, fb, _model_beside(walker, path, trees[1]))
        if la is not None and lb is not None and la.format == lb.format:
            tensors = tuple(_with_l2(store, fa, la, fb, lb, c) for c in _tensor_changes(la.tensors, lb.tensors, fa != fb))
            metadata = tuple(MetadataChange(k, la.metadata.get(k), lb.metadata.get(k))
                             for k in sorted(la.metadata.keys() | lb.metadata.keys()) if la.metadata.get(k) != lb.metadata.get(k))
    return FileChange(path, "changed", ea.size, eb.size, tensors, old_path, metadata)


@dataclass(frozen=True, slots=True)
class _Tensor:
    info: TensorInfo
    chunks: tuple[ObjectId, ...] | None  # None when chunk edges do not match the tensor's range

    @property
    def dtype(self) -> str:
        return self.info.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self.info.shape


@dataclass(frozen=True, slots=True)
class _Layout:
    format: str
    tensors: dict[str, _Tensor]
    metadata: dict[str, str]


@dataclass(frozen=True, slots=True)
class _SideOf:
    """An ONNX model stored beside a file, which may be that model's external data: (its name, the side file's name)."""

    model: FileObject
    side_name: str


def _model_beside(walker: ContentWalker, path: str, entries: Entries) -> _SideOf | None:
    """The ONNX model in the same directory of the version whose external data ``path`` would be by its name."""
    folder, _, name = path.rpartition("/")
    model_name = formats.model_of_side_file(name)
    entry = entries.get(f"{folder}/{model_name}" if folder else model_name or "") if model_name else None
    if entry is None or entry.kind != FILE or not entry.id:
        return None
    return _SideOf(walker.file(entry.id), name)


def _layout(store: Store, fobj: FileObject, side_of: _SideOf | None = None) -> _Layout | None:
    """Each tensor of a stored tensor file with the chunks holding its bytes, and the
    format's metadata; None if no format parses it. A file no format parses is read as the
    external data of the ONNX model ``side_of`` names, if there is one. Reads only what the parser reads."""
    if not fobj.chunks:
        return None
    parsed = formats.parse(StoredFile(store.odb, fobj).binary(), fobj.size)
    if parsed is None and side_of is not None and side_of.model.chunks:
        parsed = formats.parse_side_of(StoredFile(store.odb, side_of.model).binary(), side_of.model.size,
                                       side_of.side_name, fobj.size)
    if parsed is None:
        return None
    starts = []
    pos = 0
    for cid, n in fobj.chunks:
        starts.append((pos, pos + n, cid))
        pos += n
    out: dict[str, _Tensor] = {}
    i = 0
    for t in parsed.tensors:  # sorted by offset
        while i < len(starts) and starts[i][1] <= t.offset:
            i += 1
        j, ids = i, []
        aligned = i < len(starts) and starts[i][0] == t.offset or t.length == 0
        while j < len(starts) and starts[j][0] < t.offset + t.length:
            ids.append(starts[j][2])
            j += 1
        if t.length and (j == 0 or starts[j - 1][1] != t.offset + t.length):
            aligned = False
        out[t.name] = _Tensor(t, tuple(ids) if aligned else None)
    return _Layout(parsed.format, out, parsed.metadata)


def _with_l2(store: Store, fa: FileObject, la: _Layout, fb: FileObject, lb: _Layout, change: TensorChange) -> TensorChange:
    """``change`` with its relative L2 change, for a values change of a float tensor."""
    if change.change != "values" or change.new_dtype not in ("F16", "BF16", "F32", "F64"):
        return change
    a, b = la.tensors[change.name].info, lb.tensors[change.name].info
    if a.length != b.length:
        return change
    diff2 = norm2 = 0.0
    for xa, xb in zip(float_blocks(store.odb, fa, a), float_blocks(store.odb, fb, b)):
        diff2 += float(np.dot(xb - xa, xb - xa))
        norm2 += float(np.dot(xa, xa))
    l2 = math.sqrt(diff2 / norm2) if norm2 > 0 else math.nan
    return TensorChange(change.name, change.change, change.old_dtype, change.new_dtype, change.old_shape, change.new_shape,
                        l2 if math.isfinite(l2) else None)


def _tensor_changes(ta: dict[str, _Tensor], tb: dict[str, _Tensor], files_differ: bool) -> tuple[TensorChange, ...]:
    out = []
    for name in sorted(ta.keys() | tb.keys()):
        x, y = ta.get(name), tb.get(name)
        if x is None:
            assert y is not None
            out.append(TensorChange(name, "added", new_dtype=y.dtype, new_shape=y.shape))
        elif y is None:
            out.append(TensorChange(name, "removed", old_dtype=x.dtype, old_shape=x.shape))
        else:
            change = None
            if x.dtype != y.dtype:
                change = "dtype"
            elif x.shape != y.shape:
                change = "shape"
            elif x.chunks is None or y.chunks is None or x.chunks != y.chunks:
                # Unaligned ranges (a file not cut by tensor) cannot be compared by
                # chunk; they are reported as changed only if the file differs at all.
                change = "values" if (x.chunks is not None and y.chunks is not None) or files_differ else None
            if change:
                out.append(TensorChange(name, change, x.dtype, y.dtype, x.shape, y.shape))
    return tuple(out)

