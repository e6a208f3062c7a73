"""``cat-file``: the type, size or content of one object or chunk, by id.

An id is a full 64-digit hex id, or for metadata objects a unique prefix of at
least 8 digits. Metadata objects print as JSON (binary ids as hex, a file's
chunk list expanded); a chunk's content is its raw bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from objstore.errors import InvalidName, NotFound
from objstore.model.store import Store
from objstore.storage.ids import ObjectId
from objstore.storage.keys import object_hex_of, object_prefix
from objstore.storage.objects import FileObject, Link, RunRecord, Tree, Version, encode

_HEX = re.compile(r"[0-9a-f]{8,64}")


@dataclass(frozen=True, slots=True)
class CatObject:
    """``type``: chunk, file, tree, version, link or run. ``size``: raw bytes of a
    chunk, encoded (msgpack) bytes of a metadata object."""

    id: str
    type: str
    size: int
    obj: FileObject | Tree | Version | Link | RunRecord | None  # None for a chunk

    def pretty(self) -> dict[str, Any]:
        """A JSON-ready view of a metadata object."""
        assert self.obj is not None
        view: dict[str, Any] = _jsonable(self.obj.to_dict() if not isinstance(self.obj, FileObject) else {
            "v": 1, "k": "file", "size": self.obj.size, "chunks": [[c.hex, n] for c, n in self.obj.chunks]})
        return view


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _resolve_object_prefix(store: Store, prefix: str) -> ObjectId | None:
    if len(prefix) == 64:
        oid = ObjectId.from_hex(prefix)
        return oid if store.odb.has_object(oid) else None
    matches = [oid for oid in _objects_under(store, prefix) if oid.hex.startswith(prefix)]
    if len(matches) > 1:
        raise InvalidName(f"id prefix {prefix!r} matches {len(matches)} objects; give more digits")
    return matches[0] if matches else None


def _objects_under(store: Store, prefix: str) -> list[ObjectId]:
    out = []
    for info in store.backend.iter_prefix(object_prefix(prefix)):
        rest = object_hex_of(info.key)
        if rest is not None:
            out.append(ObjectId.from_hex(rest))
    return out


def cat_object(store: Store, text: str) -> CatObject:
    """Find the metadata object or chunk ``text`` names."""
    ident = text.strip().lower()
    if not _HEX.fullmatch(ident):
        raise InvalidName(f"{text!r} is not an object id; give 8 to 64 hex digits (objstore show prints ids)")
    oid = _resolve_object_prefix(store, ident)
    if oid is not None:
        obj = store.odb.get_object(oid)
        _, body = encode(obj)
        return CatObject(oid.hex, obj.kind.value, len(body), obj)
    if len(ident) == 64:
        chunk_id = ObjectId.from_hex(ident)
        try:
            loc = store.odb.locate(chunk_id)
        except NotFound:
            pass
        else:
            return CatObject(chunk_id.hex, "chunk", loc.raw_len, None)
    raise NotFound(f"no object or chunk {ident} in the store (chunks need all 64 digits)", key=ident)


def chunk_bytes(store: Store, cat: CatObject) -> bytes:
    """The verified raw bytes of a chunk found by :func:`cat_object`."""
    return store.odb.get_chunk(ObjectId.from_hex(cat.id))
