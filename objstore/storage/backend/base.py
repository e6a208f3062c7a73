"""The byte-level key/value interface every store sits on.

Keys are ``/``-separated relative paths (``packs/ab/abcd….pack``,
``refs/charlie/mnist/MNIST/aliases/latest``). The same layout is used on every
backend, so a store directory can be copied to a bucket as it is.

Guarantees each implementation keeps:

- ``put_if_absent`` is create-only and atomic: readers see the whole value or
  nothing, and of two racing writers exactly one wins. Because immutable
  objects are named by their content, "already there" is success for them.
  True means this call created the key, False that it was there before. On a
  local disk ``O_EXCL`` answers exactly that. Over HTTP a create whose answer
  was lost is retried and meets its own write, so the S3 backend reads the key
  back: True there can also mean "an attempt of this call failed in transit
  and the key now holds exactly these bytes", which another writer cannot
  have produced unless it wrote the same bytes. That is safe for every caller:
  ``refs.create`` (version claims, digests, reflog entries: values unique per
  writer, so equal bytes are this writer's), the store config and remote
  configs (equal bytes are the same configuration, whoever wrote it), gc marks
  (a mark is a mark), and objects, idx files, packs and chunk index files
  (content-addressed: equal bytes under the name are the object). A
  first-attempt "already exists" still gives False even for equal bytes, so a
  writer that finds its pack already there (and must lift a gc mark from it)
  is told so.
- ``compare_and_swap`` replaces a value only if it still equals what the caller
  read; otherwise it raises :class:`~objstore.errors.Conflict` with the actual value.
  Deletion of a mutable ref is a swap to ``b""`` (a tombstone), so it is a CAS too.
- ``get`` of a missing key raises :class:`~objstore.errors.NotFound`; transport
  failures raise :class:`~objstore.errors.BackendError` with ``retryable`` set.
- Reads are bounded: ``get`` never returns (or allocates) more than its
  ``max_size`` (the most the caller's kind of value can legitimately hold;
  :data:`~objstore.constants.MAX_VALUE_BYTES` unless told) and raises
  :class:`~objstore.errors.CorruptObject` naming the key for a larger value,
  ideally before reading it; ``get_range`` never more than ``length``. A value
  that is not a stored blob (on disk: a FIFO, a device, a socket, a link to one)
  is refused the same way, without blocking on it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from objstore.constants import MAX_VALUE_BYTES
from objstore.errors import CorruptObject

# A compare-and-swap reads the current value up to this size (or that of the values
# compared, if larger): enough for any ref, bounded for a value that is not one.
CAS_READ_MIN = 64 * 1024


@dataclass(frozen=True, slots=True)
class KeyInfo:
    key: str
    size: int
    mtime: float  # seconds since the epoch, as the backend reports it


@dataclass(slots=True)
class BackendStats:
    """What a backend has done since it was opened: requests made (each attempt,
    including retries; for the local backend each file operation) and payload
    bytes sent and received. Thread-safe; transfer tests and benchmarks read it."""

    requests: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def add(self, *, requests: int = 0, sent: int = 0, received: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.bytes_sent += sent
            self.bytes_received += received

    def snapshot(self) -> BackendStats:
        with self._lock:
            return BackendStats(self.requests, self.bytes_sent, self.bytes_received)


@runtime_checkable
class Backend(Protocol):
    """Dumb blob I/O. Stores, packs and refs are built above it."""

    url: str
    stats: BackendStats  # counters since the backend was opened

    def get(self, key: str, max_size: int = MAX_VALUE_BYTES) -> bytes:
        """The whole value at ``key``; CorruptObject if it holds more than ``max_size`` bytes."""
        ...

    def get_range(self, key: str, start: int, length: int) -> bytes:
        """``length`` bytes from ``start`` (fewer only at the end of the value)."""
        ...

    def stat(self, key: str) -> KeyInfo:
        """Size and modification time of ``key``."""
        ...

    def put(self, key: str, data: bytes | memoryview) -> None:
        """Write ``key`` atomically, replacing any value (caches only, never refs)."""
        ...

    def put_if_absent(self, key: str, data: bytes | memoryview) -> bool:
        """Create ``key``; return False (and change nothing) if it already exists.

        True: this call created it (on S3, possibly "holds exactly these bytes after
        a lost answer"; see the module docstring)."""
        ...

    def put_file_if_absent(self, key: str, path: Path) -> bool:
        """Like :meth:`put_if_absent` with the content of a local file, streamed.

        The file may be consumed (moved) by the call.
        """
        ...

    def compare_and_swap(self, key: str, expected: bytes | None, data: bytes) -> None:
        """Set ``key`` to ``data`` if it holds ``expected`` (None: absent), else raise Conflict."""
        ...

    def iter_prefix(self, prefix: str) -> Iterator[KeyInfo]:
        """Every key starting with ``prefix``, in no particular order."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; a missing key is not an error."""
        ...

    def close(self) -> None:
        ...


def too_large(key: str, where: str, size: int, max_size: int) -> CorruptObject:
    """The error for a value over its read bound (``size`` as far as it was seen)."""
    return CorruptObject(f"{key} in the store at {where} holds {size}+ bytes, more than the {max_size} a value "
                         f"of its kind can hold; the store is damaged or was tampered with", object_id=key)


def join_key(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p)
