"""Object ids: 32-byte BLAKE3 digests, domain-separated by object kind.

Each kind hashes with its own BLAKE3 key, so a chunk can never share an id with a
tree even if their bytes agree. Ids stay binary inside the library and become hex
only at the edges (keys, file names, CLI output).
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NewType, cast

import blake3

from objstore.errors import InvalidName

DIGEST_SIZE = 32


class Kind(enum.Enum):
    CHUNK = "chunk"
    FILE = "file"
    TREE = "tree"
    VERSION = "version"
    LINK = "link"
    RUN = "run"
    PACK = "pack"
    SEGMENT = "segment"  # segment-cache probes: a tensor's length and a few of its bytes (never stored)


_KEYS = {kind: blake3.blake3(b"objstore/v1/" + kind.value.encode()).digest() for kind in Kind}


@dataclass(frozen=True, slots=True, order=True)
class ObjectId:
    """A 32-byte digest. ``str(oid)`` is its hex form."""

    raw: bytes

    def __post_init__(self) -> None:
        if len(self.raw) != DIGEST_SIZE:
            raise ValueError(f"an object id is {DIGEST_SIZE} bytes, got {len(self.raw)}")

    @classmethod
    def from_hex(cls, text: str) -> ObjectId:
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise InvalidName(f"{text!r} is not a hex object id") from None
        if len(raw) != DIGEST_SIZE:
            raise InvalidName(f"{text!r} is not a {DIGEST_SIZE * 2}-digit hex object id")
        return cls(raw)

    @property
    def hex(self) -> str:
        return self.raw.hex()

    def __str__(self) -> str:
        return self.raw.hex()

    def __repr__(self) -> str:
        return f"ObjectId({self.raw.hex()[:16]}…)"


ChunkKey = NewType("ChunkKey", bytes)
"""A chunk's id as its 32 raw bytes: the form chunk sets, dict keys and the numpy
``S32`` index use (an :class:`ObjectId` per chunk would cost an object each).
A ``NewType``: at run time it is plain ``bytes``, and mypy still tells a chunk id
from other bytes (a ref value, a payload, an object id's raw form). Per-chunk
conversions use ``cast`` (half the cost of calling the NewType), a list of them
one ``cast`` for the whole list."""


def chunk_key(oid: ObjectId) -> ChunkKey:
    """The :data:`ChunkKey` of a chunk named by an ObjectId (in a file object's chunk list)."""
    return cast(ChunkKey, oid.raw)


def hasher(kind: Kind) -> blake3.blake3:
    """A fresh BLAKE3 hasher keyed for ``kind``."""
    return blake3.blake3(key=_KEYS[kind])


def key_of(kind: Kind) -> bytes:
    """The BLAKE3 key of ``kind``'s ids (for hashing many objects in one native call)."""
    return _KEYS[kind]


def ids_from_digests(digests: bytes) -> list[ObjectId]:
    """The ids packed one after another in ``digests`` (32 bytes each)."""
    return [ObjectId(digests[i : i + DIGEST_SIZE]) for i in range(0, len(digests), DIGEST_SIZE)]


def hash_bytes(kind: Kind, data: bytes | bytearray | memoryview) -> ObjectId:
    """The id of ``data`` as an object of ``kind``."""
    return ObjectId(blake3.blake3(data, key=_KEYS[kind]).digest())


_CHUNK_REF = struct.Struct("<32sQ")


def file_id_from_chunks(chunks: Iterable[tuple[ObjectId, int]]) -> ObjectId:
    """The Merkle id of a file: the hash of its ordered (chunk id, length) list.

    Two files with the same bytes chunk the same way and so get the same id,
    however and wherever they were logged.
    """
    h = hasher(Kind.FILE)
    for chunk_id, length in chunks:
        h.update(_CHUNK_REF.pack(chunk_id.raw, length))
    return ObjectId(h.digest())
