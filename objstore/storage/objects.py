"""The metadata objects: file, tree, version, link and run.

Each is a frozen dataclass with a canonical msgpack encoding (a dict with a
format field ``v`` and the kind ``k``). The id of a tree, version, link or run is
the BLAKE3 hash (keyed by kind) of that encoding; the id of a file is the Merkle
hash of its chunk list (:func:`objstore.storage.ids.file_id_from_chunks`), so identical
files share an id however they were logged.

Decoding treats its input as hostile: sizes are bounded, types are checked, and
anything unexpected is a :class:`~objstore.errors.CorruptObject`.

Invariant: whatever is stored can be read back. The decoder's rules are defined
once, here (``_UNPACK_OPTIONS``: the longest string, binary, array and map, map
keys that are strings; the largest body, :data:`MAX_METADATA_BYTES`; msgpack's
nesting stack), and :func:`encode` checks every object against those same rules,
by decoding what it is about to hand out, so an object the decoder would refuse
is an :class:`~objstore.errors.InvalidInput` before anything is written. Values a
user passes (metadata, run config) go through :func:`storable_dict` first, which
converts what JSON would (int keys become strings, tuples lists) and refuses the
rest naming the key path.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from objstore.constants import MAX_METADATA_BYTES, MAX_OBJECT_STR_BYTES, MAX_USER_VALUE_BYTES, MAX_USER_VALUE_DEPTH, MiB
from objstore.errors import CorruptObject, InvalidInput
from objstore.storage.ids import DIGEST_SIZE, Kind, ObjectId, file_id_from_chunks, hash_bytes

FORMAT = 1
_CHUNK_REF = struct.Struct("<32sQ")

# What the decoder accepts; encode() holds every object to the same options.
_UNPACK_OPTIONS: dict[str, Any] = {
    "raw": False, "strict_map_key": True,  # map keys: str (or bytes), never int
    "max_bin_len": MAX_METADATA_BYTES, "max_str_len": MAX_OBJECT_STR_BYTES,
    "max_array_len": 1 << 24, "max_map_len": 1 << 20,
}
# The integers msgpack can encode (int64 and uint64).
_INT_MIN, _INT_MAX = -(1 << 63), (1 << 64) - 1

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
    def check_dict(cls, d: dict[str, Any]) -> tuple[bytes, int]:
        """The decoder's checks, without building the (possibly huge) chunk list."""
        blob = _get(d, "chunks", bytes)
        if len(blob) % _CHUNK_REF.size:
            raise CorruptObject("a file object's chunk list is truncated")
        size = _get(d, "size", int)
        if size < 0 or sum(n for _, n in _CHUNK_REF.iter_unpack(blob)) != size:
            raise CorruptObject("a file object's size disagrees with its chunks")
        return blob, size

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FileObject:
        blob, size = cls.check_dict(d)
        return cls(size, tuple((ObjectId(raw), n) for raw, n in _CHUNK_REF.iter_unpack(blob)))


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
    def from_list(cls, item: Any) -> TreeEntry:
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
    def from_dict(cls, d: dict[str, Any]) -> Tree:
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

    @property
    def label(self) -> str:
        """``entity/project/name:vN``: how a version is named to people."""
        return f"{self.entity}/{self.project}/{self.name}:v{self.index}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": FORMAT, "k": "version", "tree": self.tree.raw, "parent": self.parent.raw if self.parent else None,
            "type": self.artifact_type, "entity": self.entity, "project": self.project, "name": self.name,
            "index": self.index, "size": self.size, "new_bytes": self.new_bytes, "description": self.description, "metadata": self.metadata,
            "created_at": self.created_at, "run": self.run,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Version:
        parent = d.get("parent")
        return cls(
            ObjectId(_get(d, "tree", bytes)), ObjectId(parent) if parent else None, _get(d, "type", str),
            _get(d, "entity", str), _get(d, "project", str), _get(d, "name", str), _get(d, "index", int),
            _get(d, "size", int), _get(d, "new_bytes", int), _opt(d, "description", str), _get(d, "metadata", dict),
            float(_get(d, "created_at", (int, float))), _opt(d, "run", str),
        )

    def compute_id(self) -> ObjectId:
        return hash_bytes(Kind.VERSION, pack(self.to_dict()))


@dataclass(frozen=True, slots=True)
class Link:
    """A registry entry: a registered model's version pointing at a version logged elsewhere.

    What the entry links is ``target`` alone; its name for people is the target
    version's (:attr:`Version.label`), read from that version. ``written_name``
    is that label as it was when the link was written: the stored format has
    always held it (field ``target_name``), and readers before this one require
    it and refuse a link whose field disagrees with the target, so links are
    still written with it (:meth:`to_version` derives it from the target). It is
    never read back for anything; a link stored without it decodes too.
    """

    registry: str  # "entity/model-registry/<registered model>"
    index: int
    target: ObjectId  # the version object
    created_at: float
    run: str | None
    written_name: str | None = None  # stored as "target_name"; see above

    kind = Kind.LINK

    @classmethod
    def to_version(cls, registry: str, index: int, target_id: ObjectId, target: Version, created_at: float,
                   run: str | None) -> Link:
        """The link ``index`` of ``registry`` to version ``target`` (stored as ``target_id``)."""
        return cls(registry, index, target_id, created_at, run, target.label)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"v": FORMAT, "k": "link", "registry": self.registry, "index": self.index, "target": self.target.raw}
        if self.written_name is not None:
            d["target_name"] = self.written_name
        d.update(created_at=self.created_at, run=self.run)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Link:
        return cls(
            _get(d, "registry", str), _get(d, "index", int), ObjectId(_get(d, "target", bytes)),
            float(_get(d, "created_at", (int, float))), _opt(d, "run", str), _opt(d, "target_name", str),
        )

    def compute_id(self) -> ObjectId:
        return hash_bytes(Kind.LINK, pack(self.to_dict()))


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run's state. Runs change (inputs, outputs, state), so each change is a new
    object and the run's ref moves by compare-and-swap.

    ``tags``, ``notes``, ``group`` and ``summary`` (the latest value of each metric
    the run logged) came later: each is stored only when it is set, so a record
    without them encodes to the bytes earlier code wrote, and readers before them
    (which ignore fields they do not know) still read the rest of the record.
    """

    id: str
    entity: str
    project: str
    name: str
    config: dict[str, Any]
    job_type: str | None
    started_at: float
    finished_at: float | None
    state: str  # running | finished | crashed
    inputs: tuple[ObjectId, ...]  # versions (or registry links) used; stored as hex strings
    outputs: tuple[ObjectId, ...]  # versions logged; stored as hex strings
    tags: tuple[str, ...] = ()
    notes: str | None = None
    group: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)

    kind = Kind.RUN

    @property
    def path(self) -> str:
        return f"{self.entity}/{self.project}/{self.id}"

    def to_dict(self) -> dict[str, Any]:
        d = {
            "v": FORMAT, "k": "run", "id": self.id, "entity": self.entity, "project": self.project, "name": self.name,
            "config": self.config, "job_type": self.job_type, "started_at": self.started_at, "finished_at": self.finished_at,
            "state": self.state, "inputs": [i.hex for i in self.inputs], "outputs": [o.hex for o in self.outputs],
        }
        optional = {"tags": list(self.tags), "notes": self.notes, "group": self.group, "summary": self.summary}
        d.update((k, v) for k, v in optional.items() if v)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunRecord:
        finished = d.get("finished_at")
        tags = d.get("tags", [])
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise CorruptObject("field 'tags' has the wrong type")
        return cls(
            _get(d, "id", str), _get(d, "entity", str), _get(d, "project", str), _get(d, "name", str), _get(d, "config", dict),
            _opt(d, "job_type", str), float(_get(d, "started_at", (int, float))), float(finished) if finished is not None else None,
            _get(d, "state", str), _hex_ids(d, "inputs"), _hex_ids(d, "outputs"),
            tuple(tags), _opt(d, "notes", str), _opt(d, "group", str), _opt(d, "summary", dict) or {},
        )

    def compute_id(self) -> ObjectId:
        return hash_bytes(Kind.RUN, pack(self.to_dict()))


MetaObject = FileObject | Tree | Version | Link | RunRecord
_BY_TAG: dict[str, Callable[[dict[str, Any]], MetaObject]] = {
    "file": FileObject.from_dict, "tree": Tree.from_dict, "version": Version.from_dict, "link": Link.from_dict, "run": RunRecord.from_dict,
}


def pack(d: dict[str, Any]) -> bytes:
    body: bytes = msgpack.packb(d, use_bin_type=True)
    return body


def encode(obj: MetaObject) -> tuple[ObjectId, bytes]:
    """The id and canonical msgpack body of a metadata object.

    Raises :class:`~objstore.errors.InvalidInput` (and stores nothing, since the
    caller stores only what this returns) for an object :func:`decode` would refuse.
    """
    d = obj.to_dict()
    tag = d["k"]
    try:
        body = pack(d)
    except UnicodeEncodeError as exc:  # a name, symlink target or text decoded with surrogateescape
        raise InvalidInput(f"this {tag} cannot be stored: {_show(exc.object)} is not valid UTF-8; rename or clean it up") from None
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidInput(f"this {tag} cannot be stored: {exc}") from None
    if len(body) > MAX_METADATA_BYTES:
        what = (f"a file of {obj.size / (1 << 30):.0f} GiB has too many chunks for one file object (split it in parts)"
                if isinstance(obj, FileObject) else "log fewer files per directory or less metadata")
        raise InvalidInput(f"this {tag} would take {len(body) / MiB:.0f} MiB, more than the {MAX_METADATA_BYTES // MiB} MiB "
                           f"a stored object may hold: {what}")
    try:
        if isinstance(obj, FileObject):
            FileObject.check_dict(_unpack(body, "?", None))  # a file's chunk list can be huge: check, do not build it
        else:
            decode(body)
    except CorruptObject as exc:
        raise InvalidInput(f"this {tag} cannot be stored: it would not read back ({exc})") from None
    oid = obj.compute_id() if isinstance(obj, FileObject) else hash_bytes(obj.kind, body)
    return oid, body


def _unpack(body: bytes, label: str, expected: ObjectId | None) -> dict[str, Any]:
    try:
        d = msgpack.unpackb(body, **_UNPACK_OPTIONS)
    except (ValueError, msgpack.UnpackException, TypeError) as exc:
        raise CorruptObject(f"object {label} is not valid msgpack: {exc}", object_id=expected.hex if expected else None) from exc
    if not isinstance(d, dict) or d.get("v") != FORMAT or d.get("k") not in _BY_TAG:
        raise CorruptObject(f"object {label} is not an objstore object of a known format", object_id=expected.hex if expected else None)
    return d


def decode(body: bytes, expected: ObjectId | None = None) -> MetaObject:
    """Parse a msgpack body (untrusted) and, if ``expected`` is given, check its id."""
    label = expected.hex[:16] if expected else "?"
    d = _unpack(body, label, expected)
    try:
        obj = _BY_TAG[d["k"]](d)
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


# -- values users pass: metadata, run config ------------------------------------------------

def storable_dict(value: object, what: str) -> dict[str, Any]:
    """``value`` (metadata or a run config) as it will be stored, or InvalidInput naming the key.

    The rules are JSON's, as W&B's metadata is JSON: keys are strings (int keys are
    converted, ``{0: "cat"}`` becomes ``{"0": "cat"}``; two keys that convert to the
    same string are refused); values are None, bool, int (64-bit), float (nan and
    ±inf kept as they are), str, bytes, lists (tuples become lists) and dicts,
    nested at most :data:`MAX_USER_VALUE_DEPTH` levels and at most
    :data:`MAX_USER_VALUE_BYTES` once encoded. Subclasses of these (an ``IntEnum``,
    a ``numpy.float64``, an ``OrderedDict``) are stored as the base type; anything
    else (sets, numpy ints and arrays, objects) is refused.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidInput(f"{what} must be a dict (of strings to numbers, strings, lists and dicts), not {type(value).__name__}")
    out: dict[str, Any] = _storable(value, (what,), 0)
    try:
        size = len(pack(out))
    except (TypeError, ValueError, OverflowError) as exc:  # _storable refuses all of these first
        raise InvalidInput(f"{what} cannot be stored: {exc}") from None
    if size > MAX_USER_VALUE_BYTES:
        biggest = max(out, key=lambda k: len(pack({k: out[k]})))
        raise InvalidInput(f"{what} takes {size / MiB:.1f} MiB encoded ({_where((what, biggest))} is the largest part), "
                           f"more than the {MAX_USER_VALUE_BYTES // MiB} MiB allowed; log large values as files of the artifact")
    return out


def _storable(value: Any, path: tuple[Any, ...], depth: int) -> Any:
    if value is None or isinstance(value, bool):
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise InvalidInput(f"{_where(path)}: {_show(value)} does not fit in 64 bits; store it as a string or a float")
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return _storable_str(value, path)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    if depth >= MAX_USER_VALUE_DEPTH:
        raise InvalidInput(f"{_where(path)}: nests deeper than {MAX_USER_VALUE_DEPTH} levels (or contains itself); flatten it")
    if isinstance(value, (list, tuple)):
        _check_length(value, "array", path)
        return [_storable(v, (*path, i), depth + 1) for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        _check_length(value, "map", path)
        out: dict[str, Any] = {}
        originals: dict[str, Any] = {}
        for k, v in value.items():
            if isinstance(k, str):
                key = _storable_str(k, path)
            elif isinstance(k, int) and not isinstance(k, bool):
                key = str(int(k))  # as JSON does: W&B metadata is JSON
            else:
                raise InvalidInput(f"{_where(path)}: key {_show(k)} is a {type(k).__name__}; keys must be strings "
                                   "(int keys are stored as strings, as JSON does)")
            if key in out:
                raise InvalidInput(f"{_where(path)}: keys {_show(originals[key])} and {_show(k)} would both be stored as {key!r}; keep one")
            originals[key] = k
            out[key] = _storable(v, (*path, k), depth + 1)
        return out
    kind = type(value).__name__
    hint = "; use a list" if isinstance(value, (set, frozenset)) else ""
    raise InvalidInput(f"{_where(path)}: a {kind} cannot be stored{hint}; "
                       "metadata holds None, bool, int, float, str, bytes, lists and dicts")


def storable_text(value: object, what: str) -> str | None:
    """A free-text field (a description, a run name) as it will be stored: None or a
    string the decoder reads back; anything else is InvalidInput."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{what} must be a string, not {type(value).__name__}")
    return _storable_str(value, (what,))


def _check_length(value: Any, kind: str, path: tuple[Any, ...]) -> None:
    limit = _UNPACK_OPTIONS[f"max_{kind}_len"]
    if len(value) > limit:
        noun = "entries" if kind == "map" else "items"
        raise InvalidInput(f"{_where(path)}: {len(value)} {noun} are more than the {limit} a stored {'dict' if kind == 'map' else 'list'} "
                           "may hold; log it as a file of the artifact")


def _storable_str(text: str, path: tuple[Any, ...]) -> str:
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidInput(f"{_where(path)}: {_show(text)} is not valid Unicode (a lone surrogate, as from a "
                           "file name decoded with surrogateescape); clean it up first") from None
    if size > MAX_OBJECT_STR_BYTES:
        raise InvalidInput(f"{_where(path)}: a string of {size / MiB:.1f} MiB is longer than the "
                           f"{MAX_OBJECT_STR_BYTES // MiB} MiB a stored string may hold; log it as a file of the artifact")
    return str.__str__(text)  # the characters, not a subclass's __str__ (a str-Enum's is its member name)


def _where(path: tuple[Any, ...]) -> str:
    """``metadata['id2label'][0]``, shortened in the middle for deep paths."""
    parts = [_show(p) for p in path[1:]]
    if len(parts) > 8:
        parts = [*parts[:6], "…", *parts[-1:]]
    return str(path[0]) + "".join(p if p == "…" else f"[{p}]" for p in parts)


def _show(value: Any) -> str:
    try:
        text = repr(value)
    except ValueError:  # an int beyond Python's digit limit for str()
        text = f"<an int of {value.bit_length()} bits>" if isinstance(value, int) else f"<a {type(value).__name__}>"
    return text if len(text) <= 40 else text[:37] + "..."


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


def _hex_ids(d: dict[str, Any], key: str) -> tuple[ObjectId, ...]:
    """A list of ids stored as lower-case hex strings (the run record's format since
    the first release). Only that exact form is accepted, so the object re-encodes
    to the bytes that were hashed."""
    value = d.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CorruptObject(f"field {key!r} is missing or has the wrong type")
    out = []
    for text in value:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raw = b""
        if len(raw) != DIGEST_SIZE or raw.hex() != text:
            raise CorruptObject(f"field {key!r} holds {_show(text)}, not a {DIGEST_SIZE * 2}-digit lower-case hex id")
        out.append(ObjectId(raw))
    return tuple(out)
