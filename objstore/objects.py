"""The metadata objects: file, tree, version, link and run.

Each is a frozen dataclass with a canonical msgpack encoding (a dict with a
format field ``v`` and the kind ``k``). The id of a tree, version, link or run is
the BLAKE3 hash (keyed by kind) of that encoding; the id of a file is the Merkle
hash of its chunk list (:func:`objstore.ids.file_id_from_chunks`), so identical
files share an id however they were logged.

Decoding treats its input as hostile: sizes are bounded, types are checked, and
anything unexpected is a :class:`~objstore.errors.CorruptObject`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any, Union

import msgpack

from .constants import MAX_METADATA_BYTES
from .errors import CorruptObject
from .ids import Kind, ObjectId, file_id_from_chunks, hash_bytes

FORMAT = 1
_CHUNK_REF = struct.Struct("<32sQ")

# Tree entry kinds.
FILE = "file"
TREE = "tree"
REFERENCE = "reference"
SYMLINK = "symlink"
ENTRY_KINDS = (FILE, TREE, REFERENCE, SYMLINK)


@dataclass(frozen=True, slots=True)
class FileObject:
    """A file: its size and ordered (chunk id, length) list."""

    size: int
    chunks: tuple[tuple[ObjectId, int], ...]

    kind = Kind.FILE

    def compute_id(self) -> ObjectId:
        return file_id_from_chunks(self.chunks)

    def to_dict(self) -> dict[str, Any]:
        blob = b"".join(_CHUNK_REF.pack(c.raw, n) for c, n in self.chunks)
        return {"v": FORMAT, "k": "file", "size": self.size, "chunks": blob}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FileObject":
        blob = _get(d, "chunks", bytes)
        if len(blob) % _CHUNK_REF.size:
            raise CorruptObject("a file object's chunk list is truncated")
        chunks = tuple((ObjectId(raw), n) for raw, n in _CHUNK_REF.iter_unpack(blob))
        size = _get(d, "size", int)
        if sum(n for _, n in chunks) != size or size < 0:
            raise CorruptObject("a file object's size disagrees with its chunks")
        return cls(size, chunks)


@dataclass(frozen=True, slots=True)
class TreeEntry:
    """One name in a directory.

    ``id`` is the file or tree id (None for references); ``target`` is a symlink's
    target or a reference's URI; ``extra`` holds a reference's ETag/checksum.
    """

    name: str
    kind: str
    size: int
    id: ObjectId | None = None
    mode: int = 0o644
    target: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_list(self) -> list[Any]:
        return [self.name, self.kind, self.id.raw if self.id else None, self.size, self.mode, self.target, self.extra or None]

    @classmethod
    def from_list(cls, item: Any) -> "TreeEntry":
        if not isinstance(item, list) or len(item) != 7:
            raise CorruptObject("a tree entry is malformed")
        name, kind, raw, size, mode, target, extra = item
        if not isinstance(name, str) or kind not in ENTRY_KINDS or not isinstance(size, int) or size < 0 or not isinstance(mode, int):
            raise CorruptObject(f"a tree entry is malformed ({str(name)[:40]!r})")
        if (raw is None) != (kind in (REFERENCE, SYMLINK)) or (raw is not None and (not isinstance(raw, bytes) or len(raw) != 32)):
            raise CorruptObject(f"tree entry {name!r} has a bad id")
        if target is not None and not isinstance(target, str):
            raise CorruptObject(f"tree entry {name!r} has a bad target")
        if extra is not None and not isinstance(extra, dict):
            raise CorruptObject(f"tree entry {name!r} has bad extra fields")
        return cls(name, kind, size, ObjectId(raw) if raw else None, mode, target, extra or {})


@dataclass(frozen=True, slots=True)
class Tree:
    """A directory: entries sorted by name (sorting makes equal directories share an id)."""

    entries: tuple[TreeEntry, ...]

    kind = Kind.TREE

    @property
    def size(self) -> int:
        return sum(e.size for e in self.entries)

    def to_dict(self) -> dict[str, Any]:
        return {"v": FORMAT, "k": "tree", "entries": [e.to_list() for e in sorted(self.entries, key=lambda e: e.name)]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Tree":
        items = _get(d, "entries", list)
        return cls(tuple(TreeEntry.from_list(i) for i in items))

    def compute_id(self) -> ObjectId:
        return hash_bytes(Kind.TREE, pack(self.to_dict()))


@dataclass(frozen=True, slots=True)
class Version:
    """One logged version of an artifact: the commit."""

    tree: ObjectId
    parent: ObjectId | None
    artifact_type: str
    entity: str
    project: str
    name: str
    index: int
    size: int  # logical bytes of the tree
    new_bytes: int  # stored bytes this version added (after dedup and compression)
    description: str | None
    metadata: dict[str, Any]
    created_at: float
    run: str | None  # "entity/project/run-id" of the run that logged it

    kind = Kind.VERSION

    @property
    def digest(self) -> str:
        return self.tree.hex

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": FORMAT, "k": "version", "tree": self.tree.raw, "parent": self.parent.raw if self.parent else None,
            "type": self.artifact_type, "entity": self.entity, "project": self.project, "name": self.name,
            "index": self.index, "size": self.size, "new_bytes": self.new_bytes, "description": self.description, "metadata": self.metadata,
            "created_at": self.created_at, "run": self.run,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Version":
        parent = d.get("parent")
        return cls(
            ObjectId(_get(d, "tree", bytes)), ObjectId(parent) if parent else None, _get(d, "type", str),
            _get(d, "entity", str), _get(d, "project", str), _get(d, "name", str), _get(d, "index", int),
            _get(d, "size", int), _get(d, "new_bytes", int), _opt(d, "description", str), _get(d, "metadata", dict), float(_get(d, "created_at", (int, float))),
            _opt(d, "run", str),
        )

    def compute_id(self) -> ObjectId:
        return hash_bytes(Kind.VERSION, pack(self.to_dict()))


@dataclass(frozen=True, slots=True)
class Link:
    """A registry entry: a registered model's version pointing at a version logged elsewhere."""

    registry: str  # "entity/model-registry/<registered model>"
    index: int
    target: ObjectId  # the version object
    target_name: str  # "entity/project/name:vN", for display
    created_at: float
    run: str | None

    kind = Kind.LINK

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": FORMAT, "k": "link", "registry": self.registry, "index": self.index, "target": self.target.raw,
            "target_name": self.target_name, "created_at": self.created_at, "run": self.run,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Link":
        return cls(
            _get(d, "registry", str), _get(d, "index", int), ObjectId(_get(d, "target", bytes)), _get(d, "target_name", str),
            float(_get(d, "created_at", (int, float))), _opt(d, "run", str),
        )

    def compute_id(self) -> ObjectId:
        return hash_bytes(Kind.LINK, pack(self.to_dict()))


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run's state. Runs change (inputs, outputs, state), so each change is a new
    object and the run's ref moves by compare-and-swap."""

    id: str
    entity: str
    project: str
    name: str
    config: dict[str, Any]
    job_type: str | None
    started_at: float
    finished_at: float | None
    state: str  # running | finished | crashed
    inputs: tuple[str, ...]  # version object ids (hex) used
    outputs: tuple[str, ...]  # version object ids (hex) logged

    kind = Kind.RUN

    @property
    def path(self) -> str:
        return f"{self.entity}/{self.project}/{self.id}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": FORMAT, "k": "run", "id": self.id, "entity": self.entity, "project": self.project, "name": self.name,
            "config": self.config, "job_type": self.job_type, "started_at": self.started_at, "finished_at": self.finished_at,
            "state": self.state, "inputs": list(self.inputs), "outputs": list(self.outputs),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RunRecord":
        finished = d.get("finished_at")
        return cls(
            _get(d, "id", str), _get(d, "entity", str), _get(d, "project", str), _get(d, "name", str), _get(d, "config", dict),
            _opt(d, "job_type", str), float(_get(d, "started_at", (int, float))), float(finished) if finished is not None else None,
            _get(d, "state", str), tuple(_str_list(d, "inputs")), tuple(_str_list(d, "outputs")),
        )

    def compute_id(self) -> ObjectId:
        return hash_bytes(Kind.RUN, pack(self.to_dict()))


MetaObject = Union[FileObject, Tree, Version, Link, RunRecord]
_BY_TAG: dict[str, type] = {"file": FileObject, "tree": Tree, "version": Version, "link": Link, "run": RunRecord}


def pack(d: dict[str, Any]) -> bytes:
    return msgpack.packb(d, use_bin_type=True)


def encode(obj: MetaObject) -> tuple[ObjectId, bytes]:
    """The id and canonical msgpack body of a metadata object."""
    body = pack(obj.to_dict())
    oid = obj.compute_id() if isinstance(obj, FileObject) else hash_bytes(obj.kind, body)
    return oid, body


def decode(body: bytes, expected: ObjectId | None = None) -> MetaObject:
    """Parse a msgpack body (untrusted) and, if ``expected`` is given, check its id."""
    label = expected.hex[:16] if expected else "?"
    try:
        d = msgpack.unpackb(
            body, raw=False, strict_map_key=True,
            max_bin_len=MAX_METADATA_BYTES, max_str_len=1 << 24, max_array_len=1 << 24, max_map_len=1 << 20,
        )
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise CorruptObject(f"object {label} is not valid msgpack: {exc}", object_id=expected.hex if expected else None) from exc
    if not isinstance(d, dict) or d.get("v") != FORMAT or d.get("k") not in _BY_TAG:
        raise CorruptObject(f"object {label} is not an objstore object of a known format", object_id=expected.hex if expected else None)
    try:
        obj: MetaObject = _BY_TAG[d["k"]].from_dict(d)
    except CorruptObject as exc:
        raise CorruptObject(f"object {label}: {exc.args[0]}", object_id=expected.hex if expected else None) from None
    except (ValueError, TypeError, KeyError) as exc:
        raise CorruptObject(f"object {label} is malformed: {exc}", object_id=expected.hex if expected else None) from exc
    if expected is not None:
        actual = obj.compute_id() if isinstance(obj, FileObject) else hash_bytes(obj.kind, body)
        if actual != expected:
            raise CorruptObject(
                f"object {expected.hex[:16]} does not hash to its id (got {actual.hex[:16]})",
                object_id=expected.hex, expected=expected.hex, actual=actual.hex,
            )
    return obj


def _get(d: dict[str, Any], key: str, types: type | tuple[type, ...]) -> Any:
    value = d.get(key)
    if not isinstance(value, types) or isinstance(value, bool) and types is int:
        raise CorruptObject(f"field {key!r} is missing or has the wrong type")
    return value


def _opt(d: dict[str, Any], key: str, types: type) -> Any:
    value = d.get(key)
    if value is not None and not isinstance(value, types):
        raise CorruptObject(f"field {key!r} has the wrong type")
    return value


def _str_list(d: dict[str, Any], key: str) -> list[str]:
    value = d.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CorruptObject(f"field {key!r} is missing or has the wrong type")
    return value
