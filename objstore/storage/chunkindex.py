"""The store-wide chunk index: which pack holds each chunk."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from objstore.storage.packs import INDEX_DTYPE, entry_id


@dataclass(frozen=True, slots=True)
class ChunkLocation:
    pack: str
    offset: int
    stored_len: int
    raw_len: int
    codec: int


class ChunkIndex:
    """Which pack holds each chunk: one sorted numpy array over all loaded packs.

    Membership of a batch is a vectorized binary search, so asking about a
    million ids costs milliseconds, not a million dict probes.
    """

    def __init__(self) -> None:
        self.packs: list[str] = []
        self._pack_no: dict[str, int] = {}
        self._ids = np.empty(0, dtype="S32")
        self._entries = np.empty(0, dtype=INDEX_DTYPE)
        self._owner = np.empty(0, dtype=np.int32)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, pack_name: str) -> bool:
        return pack_name in self._pack_no

    def add_packs(self, indexes: Iterable[tuple[str, np.ndarray]]) -> None:
        new_entries, new_owner = [self._entries], [self._owner]
        for name, index in indexes:
            if name in self._pack_no:
                continue
            self._pack_no[name] = len(self.packs)
            self.packs.append(name)
            new_entries.append(index)
            new_owner.append(np.full(len(index), self._pack_no[name], dtype=np.int32))
        if len(new_entries) == 1:
            return
        entries = np.concatenate(new_entries)
        owner = np.concatenate(new_owner)
        order = np.argsort(entries["id"], kind="stable")
        self._entries, self._owner = entries[order], owner[order]
        self._ids = self._entries["id"]

    def contains_many(self, ids: list[bytes]) -> np.ndarray:
        if not len(self._ids) or not ids:
            return np.zeros(len(ids), dtype=bool)
        probe = np.array(ids, dtype="S32")
        pos = np.searchsorted(self._ids, probe)
        pos_clipped = np.minimum(pos, len(self._ids) - 1)
        hits: np.ndarray = (pos < len(self._ids)) & (self._ids[pos_clipped] == probe)
        return hits

    def locate(self, chunk_id: bytes) -> ChunkLocation | None:
        if not len(self._ids):
            return None
        # numpy's S32 drops trailing NUL bytes on the way out, so compare as numpy
        # values (both sides trimmed alike), never against a Python bytes object.
        probe = np.array([chunk_id], dtype="S32")[0]
        pos = int(np.searchsorted(self._ids, probe))
        if pos >= len(self._ids) or self._ids[pos] != probe:
            return None
        e = self._entries[pos]
        return ChunkLocation(self.packs[self._owner[pos]], int(e["offset"]), int(e["stored_len"]), int(e["raw_len"]), int(e["codec"]))

    def locate_many(self, chunk_ids: list[bytes]) -> list[ChunkLocation | None]:
        """:meth:`locate` for a batch, with one vectorized search."""
        if not len(self._ids) or not chunk_ids:
            return [None] * len(chunk_ids)
        probe = np.array(chunk_ids, dtype="S32")
        pos = np.minimum(np.searchsorted(self._ids, probe), len(self._ids) - 1)
        hit = self._ids[pos] == probe
        entries, owners = self._entries[pos], self._owner[pos]
        offsets, stored, raw, codec = (entries[f].tolist() for f in ("offset", "stored_len", "raw_len", "codec"))
        packs = self.packs
        return [ChunkLocation(packs[o], offsets[i], stored[i], raw[i], codec[i]) if hit[i] else None
                for i, o in enumerate(owners.tolist())]

    def iter_entries(self) -> Iterator[tuple[bytes, ChunkLocation]]:
        for e, owner in zip(self._entries, self._owner):
            yield entry_id(e["id"]), ChunkLocation(self.packs[owner], int(e["offset"]), int(e["stored_len"]),
                                                   int(e["raw_len"]), int(e["codec"]))
