"""The local cache of remote stores: immutable values kept on disk, bounded, shared by processes.

A remote store's backend is wrapped in a :class:`CachedBackend` (by
:meth:`objstore.model.store.Store.open`; a store on a local disk is never
wrapped). It keeps what :func:`objstore.storage.keys.immutable_kind` calls
immutable and nothing else: loose metadata objects and ``.idx`` files read
whole, and ranges of packs. Refs, aliases, claims, the config, gc marks and
listings always go to the bucket. Consolidated index files are kept here too,
as raw files :mod:`objstore.storage.chunkindex` memory-maps (it fetches them
into a reservation of this cache, see :meth:`RemoteCache.reserve`, and checks
them against their names), so everything cached counts against one bound.

Layout, under :func:`cache_root` (``$OBJSTORE_CACHE_DIR``, else
``<user cache dir>/objstore/remote``)::

    .lock                          flock'd around every change; holds the ledger
    settings                       the bound set by ``objstore cache limit``
    <store id>/objects/<h2>/<h>    a loose object      (h: BLAKE3 of the key)
    <store id>/idx/<h2>/<h>        a pack's .idx
    <store id>/packs/<h2>/<h>/<start>-<end>   bytes start..end of the pack
    <store id>/index/<name>.midx   a consolidated index file, raw (mapped in place)
    <store id>/index/<name>.ok     an entry: the stat of the .midx when its checksum last held

Invariants:

- Verified in, verified out. A value is stored only after it checked as what
  its key names: an object against its id, an ``.idx`` or index file against
  its checksum, a
  pack range record by record against the chunk ids it holds (so a range is
  fetched from its first record's head; a range that is not whole records is
  passed through, never kept; a range a held one covers at one end is served
  from it, only the rest fetched, and the union kept). Every entry carries the BLAKE3 of its key and
  value; a read re-hashes it, and a damaged, truncated or foreign entry is a
  miss: deleted, fetched again, never served. An index file is too large to
  re-hash on every open: its ``.ok`` entry records its stat (with the ctime,
  which no write or utime can set back) after a check, and a file whose stat
  differs is hashed again, and deleted and fetched again if it fails. Readers above check everything
  again (chunks against their ids), so the cache can never hand out wrong bytes.
- Bounded: the bytes of all files under the root never exceed the bound (a
  default of 2 GiB; ``$OBJSTORE_CACHE_SIZE``, else ``objstore cache limit``).
  A writer reserves an entry's size in the ledger under the lock, creating
  its temp file at full size in the same step, so a scan under the lock
  always sees what the ledger counts; when a reservation would pass the bound,
  the least recently used entries (by mtime, touched on a hit) are deleted
  down to 90% of it. An entry over a quarter of the bound is not kept.
- Safe with several processes: entries are written to a temp file and renamed
  into place, so a reader sees a whole entry or none; the lock is never held
  across network I/O (fetch first, then reserve, write and rename); eviction
  only unlinks, and a reader that has an entry open reads it to the end.
- Inside the root nothing follows a symlink: directories are opened with
  ``O_NOFOLLOW`` relative to their parent, files likewise, so a link planted in
  the cache cannot make objstore read or write outside it (a planted link is
  removed and replaced by a directory or entry of ours).
- The cache is only a cache: with no usable directory, or a bound of 0, reads
  go to the bucket. Maintenance that must judge the bucket itself (fsck,
  repair) reads through :func:`bypass`.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import os
import re
import secrets
import stat
import struct
import threading
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import blake3

from objstore.constants import MAX_CHUNK_BYTES, MAX_METADATA_BYTES, MAX_STORED_CHUNK_BYTES, MAX_VALUE_BYTES, MiB
from objstore.errors import CorruptObject, InvalidInput
from objstore.storage import codecs
from objstore.storage.backend.base import Backend, BackendStats, KeyInfo
from objstore.storage.ids import ObjectId
from objstore.storage.keys import idx_name_of, immutable_kind, object_hex_of
from objstore.storage.objects import decode
from objstore.storage.packs import PACK_MAGIC, RECORD_HEAD, decode_idx, decode_verified

GiB = 1024 * MiB
DEFAULT_BOUND = 2 * GiB
ENV_DIR = "OBJSTORE_CACHE_DIR"
ENV_SIZE = "OBJSTORE_CACHE_SIZE"
LOW_WATER = 0.9  # eviction frees down to this share of the bound, so it scans rarely
ENTRY_SHARE = 4  # an entry larger than bound / ENTRY_SHARE is not kept
TEMP_MAX_AGE = 3600.0  # a temp file this old was left by a dead writer
TOUCH_AFTER = 60.0  # a hit refreshes an entry's mtime (its LRU age) at most this often

# Entry: magic, value length, BLAKE3(label NUL value), value.
ENTRY_MAGIC = b"OSCACHE1"
ENTRY_HEAD = struct.Struct("<8sQ32s")
# The ledger at the start of .lock: magic, bytes reserved, hits, misses, bytes served, bytes kept.
LEDGER_MAGIC = b"OSLEDGR1"
LEDGER = struct.Struct("<8sQQQQQ")
KIND_DIRS = {"object": "objects", "idx": "idx", "pack": "packs", "index file": "index"}
SPECIAL = {".lock", "settings"}
_RANGE_NAME = re.compile(r"(\d+)-(\d+)")
_STORE_ID = re.compile(r"[0-9a-f]{32}")
_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*", re.IGNORECASE)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


# -- where and how big ----------------------------------------------------------

def cache_root() -> Path:
    """``$OBJSTORE_CACHE_DIR``, else ``$XDG_CACHE_HOME/objstore/remote`` (``~/.cache`` by default)."""
    configured = os.environ.get(ENV_DIR)
    if configured:
        return Path(configured).expanduser()
    home = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return home / "objstore" / "remote"


def store_id(url: str) -> str:
    """A remote store's name in the cache: the same hash of its URL that names its
    other local caches (:func:`objstore.files.localcache.cache_dir`). Every key kept
    is content-addressed, so a store re-created at the same URL shares entries safely."""
    return blake3.blake3(url.encode()).hexdigest()[:32]


def parse_size(text: str) -> int:
    """Bytes from ``2GiB``, ``500M``, ``1.5g``, ``0`` (binary units); InvalidInput otherwise."""
    match = _SIZE.fullmatch(text)
    if not match or (match.group(3) and match.group(3).lower() not in ("b", "ib")):
        raise InvalidInput(f"{text!r} is not a size; write e.g. 2GiB, 500MiB or 0")
    unit = 1024 ** " kmgt".index(match.group(2).lower() or " ")
    return int(float(match.group(1)) * unit)


def configured_bound(root: Path | None = None) -> int:
    """The bound in bytes: ``$OBJSTORE_CACHE_SIZE``, else what ``objstore cache limit``
    saved in the root's ``settings``, else :data:`DEFAULT_BOUND`."""
    env = os.environ.get(ENV_SIZE)
    if env:
        return parse_size(env)
    saved = _read_small(root or cache_root(), "settings")
    if saved is not None:
        try:
            return parse_size(saved.decode())
        except (InvalidInput, UnicodeDecodeError):
            pass  # a damaged settings file: the default
    return DEFAULT_BOUND


def save_bound(size: int, root: Path | None = None) -> None:
    """Save the bound for every process using this cache (``$OBJSTORE_CACHE_SIZE`` still wins)."""
    if size < 0:
        raise InvalidInput("a cache size cannot be negative")
    cache = RemoteCache(root or cache_root(), size)
    with cache.locked():
        cache.write_file(cache.root_fd(), "settings", str(size).encode())


def _read_small(root: Path, name: str) -> bytes | None:
    try:
        fd = os.open(root / name, _FILE_FLAGS)
    except OSError:
        return None
    try:
        return os.read(fd, 256) if stat.S_ISREG(os.fstat(fd).st_mode) else None
    finally:
        os.close(fd)


# -- what verifies a value --------------------------------------------------------

def verified_value(key: str, data: bytes) -> bool:
    """Whether ``data`` is what the whole-value key ``key`` names."""
    kind = immutable_kind(key)
    try:
        if kind == "object":
            hex_id = object_hex_of(key)
            assert hex_id is not None
            decode(codecs.zstd_decompress_bounded(data, MAX_METADATA_BYTES), ObjectId.from_hex(hex_id))
            return True
        if kind == "idx":
            name = idx_name_of(key)
            assert name is not None
            decode_idx(data, name)
            return True
    except (CorruptObject, ValueError):
        return False
    return False


def whole_records(data: bytes | memoryview, where: str) -> bool:
    """Whether ``data`` is a run of whole pack records, each chunk hashing to its id."""
    view = memoryview(data)
    pos = 0
    while pos < len(view):
        if pos + RECORD_HEAD.size > len(view):
            return False
        raw_id, codec, raw_len, stored_len = RECORD_HEAD.unpack_from(view, pos)
        start = pos + RECORD_HEAD.size
        if raw_len > MAX_CHUNK_BYTES or stored_len > MAX_STORED_CHUNK_BYTES or start + stored_len > len(view):
            return False
        try:
            decode_verified(ObjectId(raw_id), codec, raw_len, stored_len, view[start:start + stored_len], where)
        except (CorruptObject, ValueError):
            return False
        pos = start + stored_len
    return pos > 0


# -- the on-disk cache ----------------------------------------------------------------

@dataclass(slots=True)
class CacheCounters:
    """What this process's cache did (not yet in the ledger: ``flush`` adds them)."""

    hits: int = 0
    misses: int = 0
    bytes_served: int = 0
    bytes_kept: int = 0
    refused: int = 0  # fetched values that did not verify, or ranges not whole records: never kept
    damaged: int = 0  # entries that failed their check on read: deleted, refetched


@dataclass(frozen=True, slots=True)
class Entry:
    """One file under the root (``path`` relative to it)."""

    path: tuple[str, ...]
    size: int
    mtime: float


@dataclass(frozen=True, slots=True)
class CacheInfo:
    """What ``objstore cache info`` shows."""

    root: str
    bound: int
    bytes: int
    entries: dict[str, int]  # per kind: objects, idx, packs
    stores: dict[str, int]  # bytes per store id
    hits: int
    misses: int
    bytes_served: int
    bytes_kept: int

    def to_dict(self) -> dict[str, object]:
        return {k: getattr(self, k) for k in self.__slots__}


class RemoteCache:
    """The cache directory at ``root``, bounded by ``bound`` bytes. Thread-safe."""

    def __init__(self, root: Path, bound: int) -> None:
        self.root = Path(root)
        self.bound = bound
        self.counters = CacheCounters()
        self._mutex = threading.RLock()
        self._lock_fd: int | None = None
        self._root_fd: int | None = None
        self._depth = 0
        _LIVE.add(self)  # counters reach the ledger at exit even if nobody closes the store

    # -- directories, always relative, never through a link --------------------------
    def root_fd(self) -> int:
        if self._root_fd is None:
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        return self._root_fd

    def open_dir(self, parts: tuple[str, ...], create: bool) -> int | None:
        """An fd on directory ``parts`` under the root; None if it is missing (and not
        ``create``). Something else in its place (a planted link) is replaced when creating."""
        fd = os.dup(self.root_fd())
        try:
            for part in parts:
                try:
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                        raise
                    if not create:
                        os.close(fd)
                        return None
                    if exc.errno != errno.ENOENT:
                        os.unlink(part, dir_fd=fd)  # a link or a file where our directory goes
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(part, 0o700, dir_fd=fd)
                    child = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = child
            return fd
        except BaseException:
            os.close(fd)
            raise

    # -- the lock and the ledger ----------------------------------------------------
    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the cache's lock (re-entrant within this process; local file work only)."""
        with self._mutex:
            if self._depth == 0:
                if self._lock_fd is None:
                    self._lock_fd = self._open_lock()
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._lock_fd is not None:
                    fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _open_lock(self) -> int:
        """The lock file, which holds the ledger: it is written in place, so a symlink
        or a hard link planted there (to a file of the user's) is replaced first."""
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        for _ in range(3):
            try:
                fd = os.open(".lock", flags, 0o600, dir_fd=self.root_fd())
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                os.unlink(".lock", dir_fd=self.root_fd())
                continue
            st = os.fstat(fd)
            if stat.S_ISREG(st.st_mode) and st.st_nlink == 1:
                return fd
            os.close(fd)
            os.unlink(".lock", dir_fd=self.root_fd())
        raise OSError(errno.EINVAL, f"cannot make the lock file in {self.root}")

    def _ledger(self) -> list[int] | None:
        assert self._lock_fd is not None
        raw = os.pread(self._lock_fd, LEDGER.size, 0)
        if len(raw) != LEDGER.size or raw[:8] != LEDGER_MAGIC:
            return None
        return list(LEDGER.unpack(raw)[1:])

    def _set_ledger(self, values: list[int]) -> None:
        assert self._lock_fd is not None
        os.pwrite(self._lock_fd, LEDGER.pack(LEDGER_MAGIC, *values), 0)

    def _usage(self) -> list[int]:
        """The ledger, rebuilt by a scan if it is missing or damaged (under the lock)."""
        ledger = self._ledger()
        if ledger is None:
            ledger = [sum(e.size for e in self.scan()), 0, 0, 0, 0]
            self._set_ledger(ledger)
        return ledger

    def flush(self) -> None:
        """Add this process's counters to the ledger."""
        c = self.counters
        if not (c.hits or c.misses):
            return
        try:
            with self.locked():
                ledger = self._usage()
                self._merge_counters(ledger)
                self._set_ledger(ledger)
        except OSError:
            pass

    def _merge_counters(self, ledger: list[int]) -> None:
        """Move this process's hit and miss counts into ``ledger`` (under the lock)."""
        c = self.counters
        ledger[1:] = [ledger[1] + c.hits, ledger[2] + c.misses, ledger[3] + c.bytes_served, ledger[4] + c.bytes_kept]
        self.counters = CacheCounters(refused=c.refused, damaged=c.damaged)

    # -- entries ------------------------------------------------------------------------
    def read(self, parts: tuple[str, ...], name: str, label: str, max_size: int) -> bytes | None:
        """The value of entry ``parts/name`` if it is whole and is ``label``'s; else None (a
        damaged one is deleted)."""
        try:
            fd = self.open_dir(parts, create=False)
        except OSError:
            return None
        if fd is None:
            return None
        try:
            return self._read_in(fd, name, label, max_size)
        finally:
            os.close(fd)

    def _read_in(self, dir_fd: int, name: str, label: str, max_size: int) -> bytes | None:
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self._drop(dir_fd, name)
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_size > ENTRY_HEAD.size + max_size:
                return None
            with os.fdopen(os.dup(fd), "rb") as f:
                raw = f.read(st.st_size + 1)
        except OSError:
            return None
        finally:
            os.close(fd)
        value = _entry_value(raw, label)
        if value is None:
            self.counters.damaged += 1
            self._drop(dir_fd, name)
            return None
        if time.time() - st.st_mtime > TOUCH_AFTER:
            with contextlib.suppress(OSError):
                os.utime(name, dir_fd=dir_fd, follow_symlinks=False)
        return value

    def _drop(self, dir_fd: int, name: str) -> None:
        """Delete a damaged or planted entry, taking its size out of the ledger."""
        try:
            with self.locked():
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                os.unlink(name, dir_fd=dir_fd)
                ledger = self._usage()
                ledger[0] = max(ledger[0] - st.st_size, 0)
                self._set_ledger(ledger)
        except OSError:
            pass

    def write(self, parts: tuple[str, ...], name: str, label: str, value: bytes | memoryview) -> bool:
        """Keep ``value`` as entry ``parts/name`` (replacing what is there); False if it is
        too large for the bound or the directory is unusable."""
        size = ENTRY_HEAD.size + len(value)
        if size > self.bound // ENTRY_SHARE:
            return False
        head = ENTRY_HEAD.pack(ENTRY_MAGIC, len(value), _digest(label, value))
        try:
            dir_fd, tmp = self.reserve(parts, size)
        except OSError:
            return False
        try:
            try:
                with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd), "wb") as f:
                    f.write(head)
                    f.write(value)
                os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            except OSError:
                self.release(dir_fd, tmp, size)
                return False
            self.counters.bytes_kept += len(value)
            return True
        finally:
            os.close(dir_fd)

    def release(self, dir_fd: int, tmp: str, size: int) -> None:
        """Give back a reservation of ``size`` bytes whose temp file ``tmp`` did not become an entry."""
        with contextlib.suppress(OSError), self.locked():
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=dir_fd)
            ledger = self._usage()
            ledger[0] = max(ledger[0] - size, 0)
            self._set_ledger(ledger)

    def open_raw(self, parts: tuple[str, ...], name: str) -> tuple[int, os.stat_result] | None:
        """An fd on the raw entry ``parts/name`` (an index file) and its stat; None if
        there is none (a link or anything but a regular file there is deleted).
        Its bytes are the caller's to check."""
        try:
            dir_fd = self.open_dir(parts, create=False)
        except OSError:
            return None
        if dir_fd is None:
            return None
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                self._drop(dir_fd, name)
            os.close(dir_fd)
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                os.close(fd)
                self._drop(dir_fd, name)
                return None
            return fd, st
        finally:
            os.close(dir_fd)

    def reserve(self, parts: tuple[str, ...], size: int) -> tuple[int, str]:
        """Under the lock: make room, count ``size`` in the ledger and create the temp
        file at that size (so a scan sees the reservation); (dir fd, temp name).
        The caller fills the temp file (without the lock: it may fetch into it) and
        renames it into place in ``dir_fd``, or gives it back with :meth:`release`.
        OSError if the bound leaves no room."""
        with self.locked():
            ledger = self._usage()
            if ledger[0] + size > self.bound:
                ledger[0] = self.evict(target=int(self.bound * LOW_WATER) - size)
                if ledger[0] + size > self.bound:  # what is left is live writers' reservations
                    raise OSError(errno.ENOSPC, "the cache is full of entries being written")
            dir_fd = self.open_dir(parts, create=True)
            assert dir_fd is not None
            tmp = f".tmp-{os.getpid()}-{secrets.token_hex(6)}"
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                             dir_fd=dir_fd)
                try:
                    os.ftruncate(fd, size)
                finally:
                    os.close(fd)
            except BaseException:
                os.close(dir_fd)
                raise
            ledger[0] += size
            self._merge_counters(ledger)
            self._set_ledger(ledger)
            return dir_fd, tmp

    def drop_entries(self, parts: tuple[str, ...], names: list[str]) -> None:
        """Delete entries ``parts/<name>`` (ranges a larger one now holds)."""
        if not names:
            return
        with contextlib.suppress(OSError), self.locked():
            fd = self.open_dir(parts, create=False)
            if fd is None:
                return
            try:
                freed = 0
                for name in names:
                    with contextlib.suppress(OSError):
                        freed += os.stat(name, dir_fd=fd, follow_symlinks=False).st_size
                        os.unlink(name, dir_fd=fd)
                ledger = self._usage()
                ledger[0] = max(ledger[0] - freed, 0)
                self._set_ledger(ledger)
            finally:
                os.close(fd)

    def drop_old(self, parts: tuple[str, ...], keep: set[str], min_age: float) -> None:
        """Delete the entries ``parts/<name>`` not in ``keep`` unused for ``min_age`` seconds
        (a live writer's temp files are its reservations: left alone)."""
        names = [n for n in self.list_dir(parts) if n not in keep and not n.startswith(".tmp-")]
        if not names:
            return
        fd = self.open_dir(parts, create=False)
        if fd is None:
            return
        try:
            now = time.time()
            old = []
            for name in names:
                with contextlib.suppress(OSError):
                    if now - os.stat(name, dir_fd=fd, follow_symlinks=False).st_mtime > min_age:
                        old.append(name)
        finally:
            os.close(fd)
        self.drop_entries(parts, old)

    def list_dir(self, parts: tuple[str, ...]) -> list[str]:
        try:
            fd = self.open_dir(parts, create=False)
        except OSError:
            return []
        if fd is None:
            return []
        try:
            return os.listdir(fd)
        except OSError:
            return []
        finally:
            os.close(fd)

    def write_file(self, dir_fd: int, name: str, data: bytes) -> None:
        """A small file of ours at the root (settings), written atomically."""
        tmp = f".tmp-{os.getpid()}-{secrets.token_hex(6)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.rename(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)

    # -- scanning and eviction ------------------------------------------------------------
    def scan(self) -> list[Entry]:
        """Every regular file under the root but ours at the top (links are not followed);
        temp files a dead writer left are deleted on the way."""
        found: list[Entry] = []
        now = time.time()
        for dirpath, _dirs, files, dir_fd in os.fwalk(".", dir_fd=self.root_fd(), follow_symlinks=False):
            rel = tuple(p for p in Path(dirpath).parts if p != ".")
            for name in files:
                if not rel and name in SPECIAL:
                    continue
                try:
                    st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
                except OSError:
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                if name.startswith(".tmp-") and now - st.st_mtime > TEMP_MAX_AGE:
                    with contextlib.suppress(OSError):
                        os.unlink(name, dir_fd=dir_fd)
                    continue
                found.append(Entry((*rel, name), st.st_size, st.st_mtime))
        return found

    def evict(self, target: int, store: str | None = None) -> int:
        """Delete least recently used entries (of ``store`` only, if given) until the
        cache holds at most ``target`` bytes; the bytes it holds after. Under the lock."""
        with self.locked():
            entries = self.scan()
            total = sum(e.size for e in entries)
            for e in sorted(entries, key=lambda e: e.mtime):
                if total <= max(target, 0):
                    break
                if e.path[-1].startswith(".tmp-") or (store is not None and e.path[0] != store):
                    continue  # a reservation of a live writer: its bytes are about to be an entry
                fd = self.open_dir(e.path[:-1], create=False)
                if fd is None:
                    continue
                try:
                    os.unlink(e.path[-1], dir_fd=fd)
                    total -= e.size
                except OSError:
                    pass
                finally:
                    os.close(fd)
            ledger = self._ledger() or [0, 0, 0, 0, 0]
            ledger[0] = total
            self._set_ledger(ledger)
            return total

    def info(self) -> CacheInfo:
        entries = self.scan()
        kinds = {d: 0 for d in KIND_DIRS.values()}
        stores: dict[str, int] = {}
        for e in entries:
            if len(e.path) >= 3 and e.path[1] in kinds and not e.path[-1].startswith(".tmp-"):
                kinds[e.path[1]] += 1
            stores[e.path[0]] = stores.get(e.path[0], 0) + e.size
        with self.locked():
            ledger = self._usage()
        c = self.counters
        return CacheInfo(str(self.root), self.bound, sum(e.size for e in entries), kinds, stores,
                         ledger[1] + c.hits, ledger[2] + c.misses, ledger[3] + c.bytes_served, ledger[4] + c.bytes_kept)

    def close(self) -> None:
        self.flush()
        with self._mutex:
            for fd in (self._lock_fd, self._root_fd):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._lock_fd = self._root_fd = None


_LIVE: weakref.WeakSet[RemoteCache] = weakref.WeakSet()


@atexit.register
def _flush_all() -> None:
    for cache in list(_LIVE):
        cache.flush()


def _digest(label: str, value: bytes | memoryview) -> bytes:
    h = blake3.blake3(label.encode() + b"\0")
    h.update(value)
    return h.digest()


def _entry_value(raw: bytes, label: str) -> bytes | None:
    if len(raw) < ENTRY_HEAD.size:
        return None
    magic, length, digest = ENTRY_HEAD.unpack_from(raw)
    value = raw[ENTRY_HEAD.size:]
    if magic != ENTRY_MAGIC or length != len(value) or _digest(label, value) != digest:
        return None
    return value


# -- the backend wrapper ------------------------------------------------------------------

def _key_dir(store: str, kind: str, key: str) -> tuple[tuple[str, ...], str]:
    h = blake3.blake3(key.encode()).hexdigest()[:40]
    return (store, KIND_DIRS[kind], h[:2]), h


class CachedBackend:
    """A remote backend whose immutable values are kept in a :class:`RemoteCache`.

    ``stats`` are the wrapped backend's: what went to the bucket. ``cache.counters``
    say what the cache answered."""

    def __init__(self, inner: Backend, cache: RemoteCache) -> None:
        self.inner = inner
        self.cache = cache
        self.url = inner.url
        self.stats: BackendStats = inner.stats
        self.store = store_id(inner.url)
        self.bypassed = 0

    def __getattr__(self, name: str) -> Any:
        if name == "inner":
            raise AttributeError(name)  # not set yet: never recurse
        return getattr(self.inner, name)  # head(), endpoint, bucket of the S3 backend

    # -- reads through the cache --------------------------------------------------
    def get(self, key: str, max_size: int = MAX_VALUE_BYTES) -> bytes:
        kind = immutable_kind(key)
        if self.bypassed or kind not in ("object", "idx"):
            return self.inner.get(key, max_size)
        parts, name = _key_dir(self.store, kind, key)
        value = self.cache.read(parts, name, key, max_size)
        if value is not None:
            self.cache.counters.hits += 1
            self.cache.counters.bytes_served += len(value)
            return value
        self.cache.counters.misses += 1
        data = self.inner.get(key, max_size)
        if verified_value(key, data):
            self.cache.write(parts, name, key, data)
        else:
            self.cache.counters.refused += 1
        return data

    def get_range(self, key: str, start: int, length: int) -> bytes:
        head = RECORD_HEAD.size
        if self.bypassed or immutable_kind(key) != "pack" or length <= 0 or start < len(PACK_MAGIC) + head:
            return self.inner.get_range(key, start, length)
        parts, pack_dir = _key_dir(self.store, "pack", key)
        parts = (*parts, pack_dir)
        end = start + length
        held = self._held_ranges(parts)
        for s, e in held:
            if s <= start and end <= e:
                value = self.cache.read(parts, f"{s}-{e}", f"{key}@{s}-{e}", e - s)
                if value is not None:
                    self.cache.counters.hits += 1
                    self.cache.counters.bytes_served += length
                    return value[start - s:end - s]
        partial = self._partly_held(key, parts, held, start - head, end)
        if partial is not None:
            return partial[head:]
        self.cache.counters.misses += 1
        # From the head of the record whose payload the range starts at: whole records verify.
        data = self.inner.get_range(key, start - head, length + head)
        s, e = start - head, start - head + len(data)
        if len(data) == length + head and whole_records(data, f"pack {key}"):
            self._keep(key, parts, held, s, data)
        else:
            self.cache.counters.refused += 1
        return data[head:]

    def _keep(self, key: str, parts: tuple[str, ...], held: list[tuple[int, int]], s: int, data: bytes) -> None:
        """Keep the verified records ``data`` (pack bytes from ``s``), dropping the held ranges inside them."""
        e = s + len(data)
        if self.cache.write(parts, f"{s}-{e}", f"{key}@{s}-{e}", data):
            self.cache.drop_entries(parts, [f"{a}-{b}" for a, b in held if s <= a and b <= e and (a, b) != (s, e)])

    def _partly_held(self, key: str, parts: tuple[str, ...], held: list[tuple[int, int]], s: int, e: int) -> bytes | None:
        """Pack bytes ``s..e`` (whole records) when a held range covers one end of them:
        that part from the cache, only the rest (whole records too: a held range
        starts and ends at record boundaries) in one request, and the union kept.
        None when none does (a range missing on both sides is one request either way)."""
        for a, b in sorted(held, key=lambda r: r[0] - r[1]):  # the largest overlap first
            if a <= s < b < e:  # the cached part first, the rest after it
                missing = (b, e - b)
            elif s < a < e <= b:  # the rest first, then the cached part
                missing = (s, a - s)
            else:
                continue
            value = self.cache.read(parts, f"{a}-{b}", f"{key}@{a}-{b}", b - a)
            if value is None:
                continue
            rest = self.inner.get_range(key, *missing)
            if len(rest) != missing[1] or not whole_records(rest, f"pack {key}"):
                self.cache.counters.refused += 1
                return None  # fetched whole by the caller (and passed through if it does not verify either)
            self.cache.counters.hits += 1
            self.cache.counters.bytes_served += len(value)
            union = value + rest if missing[0] == b else rest + value
            self._keep(key, parts, held, min(a, s), union)
            lo = s - min(a, s)
            return union[lo:lo + (e - s)]
        return None

    def _held_ranges(self, parts: tuple[str, ...]) -> list[tuple[int, int]]:
        held = []
        for name in self.cache.list_dir(parts):
            match = _RANGE_NAME.fullmatch(name)
            if match:
                held.append((int(match.group(1)), int(match.group(2))))
        return sorted(held, key=lambda r: r[1] - r[0])  # the smallest that holds a request is read

    # -- everything else goes to the bucket ---------------------------------------
    def stat(self, key: str) -> KeyInfo:
        return self.inner.stat(key)

    def put(self, key: str, data: bytes | memoryview) -> None:
        self.inner.put(key, data)

    def put_if_absent(self, key: str, data: bytes | memoryview) -> bool:
        return self.inner.put_if_absent(key, data)

    def put_file_if_absent(self, key: str, path: Path) -> bool:
        return self.inner.put_file_if_absent(key, path)

    def compare_and_swap(self, key: str, expected: bytes | None, data: bytes) -> None:
        self.inner.compare_and_swap(key, expected, data)

    def iter_prefix(self, prefix: str) -> Iterator[KeyInfo]:
        return self.inner.iter_prefix(prefix)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def close(self) -> None:
        self.cache.close()
        self.inner.close()

    def __repr__(self) -> str:
        return f"CachedBackend({self.inner!r})"


def open_cache(root: Path | None = None, bound: int | None = None) -> RemoteCache:
    """The cache at ``root`` (:func:`cache_root`) with ``bound`` (:func:`configured_bound`)."""
    where = root or cache_root()
    return RemoteCache(where, configured_bound(where) if bound is None else bound)


def wrap(backend: Backend) -> Backend:
    """``backend`` (a remote store's) behind the cache; as it is if the bound is 0 or
    the cache directory cannot be made."""
    try:
        cache = open_cache()
        if cache.bound <= 0:
            return backend
        cache.root_fd()
    except (OSError, InvalidInput):
        return backend
    return CachedBackend(backend, cache)


def cache_of(backend: object) -> RemoteCache | None:
    """The cache behind ``backend``; None if it has none, or is being read through :func:`bypass`."""
    return backend.cache if isinstance(backend, CachedBackend) and not backend.bypassed else None


@contextlib.contextmanager
def bypass(backend: Backend) -> Iterator[None]:
    """Read the bucket itself while this lasts (fsck, repair judge what it holds)."""
    if not isinstance(backend, CachedBackend):
        yield
        return
    backend.bypassed += 1
    try:
        yield
    finally:
        backend.bypassed -= 1


def cache_info(root: Path | None = None) -> CacheInfo:
    """Where the cache is, its bound, what it holds and how often it answered."""
    cache = open_cache(root)
    try:
        return cache.info()
    finally:
        cache.close()


def prune(to_bytes: int = 0, store: str | None = None, root: Path | None = None) -> tuple[int, int]:
    """Delete least recently used entries until the cache (or store ``store``'s part:
    an id or the store's URL) holds at most ``to_bytes``; (bytes before, bytes after)."""
    if to_bytes < 0:
        raise InvalidInput("a cache size cannot be negative")
    sid = None
    if store is not None:
        sid = store if _STORE_ID.fullmatch(store) else store_id(store)
    cache = open_cache(root)
    try:
        with cache.locked():
            entries = cache.scan()
            before = sum(e.size for e in entries if sid is None or e.path[0] == sid)
            others = sum(e.size for e in entries) - before
            after = cache.evict(others + to_bytes, store=sid) - others
        return before, max(after, 0)
    finally:
        cache.close()


