"""Refs: named pointers to object ids, with a reflog.

Layout (the same on every backend)::

    refs/<entity>/<project>/<name>/versions/v<N>     written once (create-only)
    refs/<entity>/<project>/<name>/aliases/<alias>   moved by compare-and-swap
    refs/<entity>/<project>/<name>/digests/<hex>     digest -> version, written once
    refs/<entity>/<project>/runs/<run-id>            moved by compare-and-swap
    logs/<ref>/<time ns>-<random>                    one reflog entry each

A ref's value is the hex id and a newline; an empty value is a tombstone (a
deleted alias, or a deleted version whose number stays taken), so deleting is
a compare-and-swap too and never races a move.
A reflog entry is written after the move it records succeeded, so the log never
claims a move that did not happen (a crash in between loses one entry, never
a ref).
"""

from __future__ import annotations

import getpass
import itertools
import os
import secrets
import socket
import time
from collections.abc import Collection, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import msgpack

from objstore.constants import MAX_REF_BYTES, MAX_REFLOG_ENTRY_BYTES
from objstore.errors import Conflict, CorruptObject, NotFound
from objstore.storage.backend import Backend, LocalBackend
from objstore.storage.ids import ObjectId
from objstore.storage.keys import LOGS, reflog_key, reflog_prefix, reflogs_under

# Refs read at once on object storage, where each read is a request of its own
# (latency-bound: threads overlap the waits), and how many listed keys a batch holds.
READ_THREADS = 16
READ_BATCH = 256


def default_who() -> str:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass(frozen=True, slots=True)
class ReflogEntry:
    ref: str
    old: ObjectId | None
    new: ObjectId | None
    when: float
    who: str
    why: str


def encode_value(oid: ObjectId | None) -> bytes:
    return b"" if oid is None else oid.hex.encode() + b"\n"


def decode_value(ref: str, value: bytes) -> ObjectId | None:
    text = value.strip()
    if not text:
        return None
    try:
        return ObjectId.from_hex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise CorruptObject(f"ref {ref} holds garbage rather than an object id", object_id=ref) from None


class RefStore:
    """Reads and moves refs on a backend."""

    def __init__(self, backend: Backend, who: str | None = None) -> None:
        self.backend = backend
        self.who = who or default_who()

    def read_raw(self, ref: str) -> bytes | None:
        try:
            return self.backend.get(ref, max_size=MAX_REF_BYTES)  # a ref is a hex id; never read more
        except NotFound:
            return None

    def read(self, ref: str) -> ObjectId | None:
        """The id a ref points at; None if it is absent or deleted."""
        raw = self.read_raw(ref)
        return None if raw is None else decode_value(ref, raw)

    def exists(self, ref: str) -> bool:
        try:
            self.backend.stat(ref)
            return True
        except NotFound:
            return False

    def create(self, ref: str, oid: ObjectId, why: str, *, log: bool = True) -> bool:
        """Write a ref that is never moved afterwards. False if it already exists.
        ``log=False`` for a ref derived from another whose own entry records the
        same event (a digest ref, written beside its version ref): no entry."""
        if not self.backend.put_if_absent(ref, encode_value(oid)):
            return False
        if log:
            self._log(ref, None, oid, why)
        return True

    def set_if_equals(self, ref: str, expected_raw: bytes | None, new: ObjectId | None, why: str) -> None:
        """Move ``ref`` to ``new`` (None deletes it) if it still holds ``expected_raw``
        (the raw value last read, None for absent). Raises Conflict otherwise."""
        old = None if expected_raw is None else decode_value(ref, expected_raw)
        self.backend.compare_and_swap(ref, expected_raw, encode_value(new))
        self._log(ref, old, new, why)

    def set(self, ref: str, new: ObjectId | None, why: str, *, attempts: int = 100) -> ObjectId | None:
        """Move ``ref`` to ``new`` whatever it holds, by CAS retried against fresh reads.
        Returns the previous value."""
        for _ in range(attempts):
            raw = self.read_raw(ref)
            old = None if raw is None else decode_value(ref, raw)
            if old == new and raw is not None:
                return old
            try:
                self.set_if_equals(ref, raw, new, why)
                return old
            except Conflict:
                time.sleep(0.001 * secrets.randbelow(10))
        raise Conflict(ref, None, self.read_raw(ref), f"{ref} kept changing under {attempts} attempts; retry later")

    def replace_garbage(self, ref: str, garbage: bytes, new: ObjectId, why: str) -> None:
        """Move ``ref`` from the undecodable value ``garbage`` (the raw value last read)
        to ``new``, by CAS so a concurrent writer is never overwritten; the reflog
        entry records no old id, since there was none. Only repair replaces a
        write-once ref, and only this way."""
        self.backend.compare_and_swap(ref, garbage, encode_value(new))
        self._log(ref, None, new, why)

    def remove(self, ref: str, why: str) -> None:
        """Delete ``ref`` outright (not a tombstone), logging the id it held. Only for
        refs whose collection is deleted whole, and digest refs of a deleted version
        (objstore.model.deletion), which are derived and may be made again; absent is fine."""
        try:
            old = self.read(ref)
        except CorruptObject:
            old = None  # garbage is removed all the same
        self.backend.delete(ref)
        self._log(ref, old, None, why)

    def drop_reflogs(self, prefix: str) -> int:
        """Delete the reflog entries of every ref under ``prefix``; how many."""
        n = 0
        for info in list(self.backend.iter_prefix(reflogs_under(prefix))):
            self.backend.delete(info.key)
            n += 1
        return n

    def iter_refs(self, prefix: str) -> Iterator[tuple[str, ObjectId]]:
        """(ref, id) for every live ref under ``prefix``; tombstones are skipped.
        Refs are read a batch at a time, in parallel on object storage."""
        keys = (info.key for info in self.backend.iter_prefix(prefix) if info.size != 0)
        while batch := list(itertools.islice(keys, READ_BATCH)):
            for key, oid in zip(batch, self.read_many(batch)):
                if oid is not None:
                    yield key, oid

    def read_many(self, refs: list[str]) -> list[ObjectId | None]:
        """:meth:`read` of each of ``refs``, in order; in parallel on object storage
        (each read is a request there), one after another on a local disk."""
        if len(refs) < 2 or isinstance(self.backend, LocalBackend):
            return [self.read(ref) for ref in refs]
        with ThreadPoolExecutor(min(READ_THREADS, len(refs)), thread_name_prefix="objstore-refs") as pool:
            return list(pool.map(self.read, refs))

    def iter_names(self, prefix: str) -> Iterator[str]:
        """Keys under ``prefix``, without reading them (tombstones included)."""
        for info in self.backend.iter_prefix(prefix):
            yield info.key

    # -- reflog ----------------------------------------------------------
    def _log(self, ref: str, old: ObjectId | None, new: ObjectId | None, why: str) -> None:
        entry = msgpack.packb({"old": old.raw if old else None, "new": new.raw if new else None,
                               "when": time.time(), "who": self.who, "why": why})
        key = reflog_key(ref, f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}")
        self.backend.put_if_absent(key, entry)

    def reflog(self, ref: str) -> list[ReflogEntry]:
        """The moves of ``ref``, oldest first."""
        entries = []
        for info in self.backend.iter_prefix(reflog_prefix(ref)):
            try:
                d = msgpack.unpackb(self.backend.get(info.key, max_size=MAX_REFLOG_ENTRY_BYTES), raw=False,
                                    max_bin_len=64, max_str_len=4096)
                entries.append((info.key, ReflogEntry(
                    ref,
                    ObjectId(d["old"]) if d.get("old") else None,
                    ObjectId(d["new"]) if d.get("new") else None,
                    float(d["when"]), str(d["who"]), str(d["why"]),
                )))
            except (NotFound, CorruptObject, ValueError, KeyError, TypeError, msgpack.UnpackException):
                continue  # a damaged log entry must not hide the others
        entries.sort(key=lambda kv: kv[0])
        return [e for _, e in entries]

    def iter_reflog_targets(self, skip: Collection[str] = ()) -> Iterator[ObjectId]:
        """Every id any reflog entry names (gc keeps these reachable), but for the
        entries whose keys are in ``skip`` (read already: entries are create-only)."""
        for info in self.backend.iter_prefix(LOGS):
            if info.key in skip:
                continue
            try:
                d = msgpack.unpackb(self.backend.get(info.key, max_size=MAX_REFLOG_ENTRY_BYTES), raw=False,
                                    max_bin_len=64, max_str_len=4096)
            except (NotFound, CorruptObject, ValueError, msgpack.UnpackException):
                continue
            for k in ("old", "new"):
                if isinstance(d, dict) and isinstance(d.get(k), bytes) and len(d[k]) == 32:
                    yield ObjectId(d[k])
