"""A store in a local directory.

Every write goes to a temporary file under ``<root>/tmp/``, is fsynced, and is
then moved into place, so a reader (or a crash) sees a whole value or none:

- ``put``: ``rename`` over the target.
- ``put_if_absent``: ``link`` to the target, which fails if it exists; two racing
  writers cannot both win, and no reader ever sees a partial file.
- ``compare_and_swap``: under the key's lock (created with O_EXCL, holding the
  owner's pid and host), re-read, compare, then ``rename``. A lock whose owner on
  this host is no longer running is broken at once; see :mod:`objstore.storage.backend.locks`.

Internal files never share a name with a key. Temp files live in ``<root>/tmp/``
and locks in ``<root>/locks/``, named by a hash of their key
(``locks/<sha256 of key>.lock``); neither directory is listed by
:meth:`LocalBackend.iter_prefix` (``tmp/`` only when asked for by prefix, as on
object storage), and no key may start with ``locks/``. Store keys are built
under ``refs/``, ``logs/``, ``packs/`` … and never there, so an alias named
``latest.lock`` is a key like any other: listed, and never taken for a lock.

Stores written before locks moved there may hold ``<key>.lock`` files (and
their ``.lock.break.lock`` / ``.lock.<pid>-<hex>.lock`` companions) beside refs,
left by a writer killed while holding one. Their content tells them apart from
refs: a lock holds an owner line ``pid host time``, never an object id, so
listings under ``refs/`` skip ``*.lock`` files holding one; the empty ones (a
guard, a lock killed mid-creation) read as tombstones, which every reader
treats as absent. They protect nothing any more and may be deleted by hand.
An objstore of that older kind must not write to the same store at the same
time as this one: their locks would not exclude each other.

Reads open only regular files. objstore never makes a link inside a store, but a
link to a regular file is followed (a user may have moved files to another disk;
what is read is verified above this layer anyway); anything else — a FIFO, a
device, a socket, a link to one — is refused as damage. The file is opened with
O_NONBLOCK, so a FIFO cannot block the open, and checked with ``fstat`` on the
opened descriptor, so it cannot be swapped between the check and the read. A
read never takes more than its bound, whatever the file's size says.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path

from objstore import faults
from objstore.constants import MAX_VALUE_BYTES, MiB
from objstore.errors import BackendError, Conflict, CorruptObject, InvalidName, NotFound
from objstore.storage.backend.base import CAS_READ_MIN, BackendStats, KeyInfo, too_large
from objstore.storage.backend.locks import FileLock
from objstore.storage.keys import LEGACY_LOCK_AREA

TMP_DIR = "tmp"
LOCKS_DIR = "locks"
LOCK_SUFFIX = ".lock"
# What a lock file written by an older version beside its key holds: an owner
# line. (Its empty companions read as tombstones, which refs treat as absent.)
_LEGACY_LOCK_CONTENT = re.compile(rb"-?\d+ \S+ \d+(\.\d*)?\s*")
_LEGACY_LOCK_MAX = 512
# Only refs were ever moved by compare-and-swap, so only they had locks beside them.
# Reads go in steps of this size, so a bound is never allocated up front.
READ_STEP = 8 * MiB


class LocalBackend:
    """Blob I/O on a directory tree. Safe for concurrent processes on one machine."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self.url = str(self.root)
        self._tmp = self.root / TMP_DIR
        self._made_dirs: set[Path] = set()
        self.stats = BackendStats()  # one "request" per file operation

    # -- paths -----------------------------------------------------------
    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts) or "\\" in key or "\0" in key:
            raise InvalidName(f"{key!r} is not a valid storage key")
        if parts[0] == LOCKS_DIR or key == TMP_DIR:
            raise InvalidName(f"{key!r} is not a valid storage key: {parts[0]}/ holds the local backend's own files")
        return self.root.joinpath(*parts)

    def lock_path(self, key: str) -> Path:
        """The lock file that guards ``key``'s compare-and-swap.

        Named by a hash of the key, in a directory no key can reach, so no key
        (``x.lock``, ``x.lock.break``, …) can ever be taken for a lock or its guard.
        """
        self._path(key)  # the same keys as everywhere else
        return self.root / LOCKS_DIR / f"{hashlib.sha256(key.encode()).hexdigest()}{LOCK_SUFFIX}"

    def _ensure_dir(self, directory: Path) -> None:
        if directory not in self._made_dirs:
            directory.mkdir(parents=True, exist_ok=True)
            self._made_dirs.add(directory)

    def _temp_path(self) -> Path:
        self._ensure_dir(self._tmp)
        return self._tmp / f"{os.getpid()}-{secrets.token_hex(8)}"

    def new_temp_path(self) -> Path:
        """A fresh path on the store's file system, so a finished pack is linked
        into place rather than copied."""
        return self._temp_path()

    def _write_temp(self, data: bytes | memoryview) -> Path:
        tmp = self._temp_path()
        try:
            with open(tmp, "wb") as f:
                f.write(data)
                faults.point("write")
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            _unlink_quietly(tmp)
            raise _backend_error(f"cannot write under {self.root}", exc) from exc
        return tmp

    # -- reads -----------------------------------------------------------
    def _open_regular(self, key: str, path: Path | None = None) -> tuple[int, int]:
        """An O_RDONLY descriptor on the regular file at ``key`` and its size.

        NotFound for a missing key (or a directory: no key names one); CorruptObject
        for anything that is not a regular file."""
        path = path or self._path(key)
        try:
            st = os.stat(path)
            # Only a regular file is opened at all: opening a device can act, a FIFO block.
            if stat.S_ISREG(st.st_mode):
                fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
                try:
                    st = os.fstat(fd)  # the file opened, which may not be the one checked
                except OSError:
                    os.close(fd)
                    raise
                if stat.S_ISREG(st.st_mode):
                    return fd, st.st_size
                os.close(fd)
        except (FileNotFoundError, NotADirectoryError):
            raise NotFound(f"{key} is not in the store at {self.root}", key=key) from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise self._not_regular(key, "a symlink loop") from None
            raise _backend_error(f"cannot read {key}", exc) from exc
        if stat.S_ISDIR(st.st_mode):
            raise NotFound(f"{key} is not in the store at {self.root}", key=key)
        kind = ("a FIFO" if stat.S_ISFIFO(st.st_mode) else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a socket" if stat.S_ISSOCK(st.st_mode) else "not a file")
        raise self._not_regular(key, kind)

    def _not_regular(self, key: str, kind: str) -> CorruptObject:
        return CorruptObject(f"{key} in the store at {self.root} is {kind}, not a regular file; the store is damaged "
                             f"or was tampered with: remove it (objstore fsck says what it breaks)", object_id=key)

    @staticmethod
    def _read_at_most(fd: int, size: int, start: int, limit: int) -> bytes:
        """Up to ``limit`` bytes from ``start``: one read of what fstat says the file
        holds (``size``) plus a byte to notice growth, then bounded steps."""
        first = min(limit, max(size - start, 0) + 1)
        parts: list[bytes] = []
        got = 0
        while got < limit:
            block = os.pread(fd, first - got if got < first else min(limit - got, READ_STEP), start + got)
            if not block:
                break
            parts.append(block)
            got += len(block)
        if len(parts) == 1:
            return parts[0]  # the usual case: no copy
        return b"".join(parts)

    def get(self, key: str, max_size: int = MAX_VALUE_BYTES) -> bytes:
        self.stats.add(requests=1)
        data = self._read_value(key, self._path(key), max_size)
        self.stats.add(received=len(data))
        return data

    def _read_value(self, key: str, path: Path, max_size: int) -> bytes:
        fd, size = self._open_regular(key, path)
        try:
            if size > max_size:
                raise too_large(key, self.url, size, max_size)  # refused before reading a byte
            data = self._read_at_most(fd, size, 0, max_size + 1)
        except OSError as exc:
            raise _backend_error(f"cannot read {key}", exc) from exc
        finally:
            os.close(fd)
        if len(data) > max_size:
            raise too_large(key, self.url, len(data), max_size)
        return data

    def get_range(self, key: str, start: int, length: int) -> bytes:
        self.stats.add(requests=1)
        if start < 0 or length < 0:
            raise ValueError(f"bad range start={start} length={length}")
        fd, size = self._open_regular(key)
        try:
            data = self._read_at_most(fd, size, start, length)
        except OSError as exc:
            raise _backend_error(f"cannot read {key}", exc) from exc
        finally:
            os.close(fd)
        self.stats.add(received=len(data))
        return data

    def stat(self, key: str) -> KeyInfo:
        self.stats.add(requests=1)
        try:
            st = self._path(key).stat()
        except FileNotFoundError:
            raise NotFound(f"{key} is not in the store at {self.root}", key=key) from None
        return KeyInfo(key, st.st_size, st.st_mtime)

    def iter_prefix(self, prefix: str) -> Iterator[KeyInfo]:
        # Walk only the directory the prefix names, not the whole store.
        directory, _, stem = prefix.rpartition("/")
        base = self.root / directory if directory else self.root
        self.stats.add(requests=1)
        if not base.is_dir():
            return
        for dirpath, dirnames, filenames in os.walk(base):
            rel_dir = os.path.relpath(dirpath, self.root).replace(os.sep, "/")
            if rel_dir == ".":
                rel_dir = ""
                dirnames[:] = [d for d in dirnames if d not in (TMP_DIR, LOCKS_DIR)]
            elif rel_dir.split("/", 1)[0] == LOCKS_DIR:
                return
            for name in filenames:
                key = f"{rel_dir}/{name}" if rel_dir else name
                if not key.startswith(prefix):
                    continue
                if (name.endswith(LOCK_SUFFIX) and key.startswith(LEGACY_LOCK_AREA)
                        and _is_legacy_lock(os.path.join(dirpath, name))):
                    continue
                try:
                    st = os.stat(os.path.join(dirpath, name))
                except FileNotFoundError:
                    continue  # deleted while we listed
                yield KeyInfo(key, st.st_size, st.st_mtime)
            if stem and rel_dir == directory:
                dirnames[:] = [d for d in dirnames if d.startswith(stem)]

    # -- writes ----------------------------------------------------------
    def put(self, key: str, data: bytes | memoryview) -> None:
        target = self._path(key)
        self.stats.add(requests=1)
        faults.point("put")
        tmp = self._write_temp(data)
        try:
            self._ensure_dir(target.parent)
            faults.point("rename")
            os.replace(tmp, target)
        except OSError as exc:
            _unlink_quietly(tmp)
            raise _backend_error(f"cannot write {key}", exc) from exc
        _fsync_dir(target.parent)
        self.stats.add(sent=len(data))

    def _present(self, key: str, target: Path) -> bool:
        """Whether ``key`` holds a value already (a create-only write then succeeds
        as is). Anything there but a regular file (a symlink, even a dangling one,
        a directory) is refused as readers refuse it, never taken for the value:
        a push would report a pack stored that the store does not hold."""
        try:
            st = os.lstat(target)
        except (FileNotFoundError, NotADirectoryError):
            return False
        except OSError as exc:
            raise _backend_error(f"cannot look at {key}", exc) from exc
        if stat.S_ISREG(st.st_mode):
            return True
        raise self._not_regular(key, "a symlink" if stat.S_ISLNK(st.st_mode) else
                                "a directory" if stat.S_ISDIR(st.st_mode) else "not a file")

    def put_if_absent(self, key: str, data: bytes | memoryview) -> bool:
        target = self._path(key)
        self.stats.add(requests=1)
        if self._present(key, target):
            return False
        faults.point("put")
        created = self._link_into_place(self._write_temp(data), target, key)
        if created:
            self.stats.add(sent=len(data))
        return created

    def put_file_if_absent(self, key: str, path: Path) -> bool:
        target = self._path(key)
        self.stats.add(requests=1)
        if self._present(key, target):
            return False
        faults.point("put")
        src = Path(path)
        try:
            with open(src, "rb+") as f:
                os.fsync(f.fileno())
                size = os.fstat(f.fileno()).st_size
        except OSError as exc:
            raise _backend_error(f"cannot read {src}", exc) from exc
        created = self._link_into_place(src, target, key)
        if created:
            self.stats.add(sent=size)
        return created

    def _link_into_place(self, tmp: Path, target: Path, key: str) -> bool:
        try:
            self._ensure_dir(target.parent)
            faults.point("rename")
            os.link(tmp, target)
        except FileExistsError:
            self._present(key, target)  # refuses a symlink or directory made there meanwhile
            return False
        except OSError as exc:
            raise _backend_error(f"cannot write {key}", exc) from exc
        finally:
            _unlink_quietly(tmp)
        _fsync_dir(target.parent)
        return True

    def compare_and_swap(self, key: str, expected: bytes | None, data: bytes) -> None:
        target = self._path(key)
        self.stats.add(requests=1)
        self._ensure_dir(target.parent)
        lock = self.lock_path(key)
        self._ensure_dir(lock.parent)
        faults.point("put")
        with FileLock(lock, label=key):
            # Re-read under the lock: this read, not the caller's, closes the race.
            try:
                actual: bytes | None = self._read_value(key, target, max(len(expected or b""), len(data), CAS_READ_MIN))
            except NotFound:
                actual = None
            if actual != expected:
                raise Conflict(key, expected, actual)
            tmp = self._write_temp(data)
            try:
                faults.point("rename")
                os.replace(tmp, target)
            except OSError as exc:
                _unlink_quietly(tmp)
                raise _backend_error(f"cannot write {key}", exc) from exc
            _fsync_dir(target.parent)
            self.stats.add(sent=len(data))

    def delete(self, key: str) -> None:
        self.stats.add(requests=1)
        try:
            faults.point("delete")
            os.unlink(self._path(key))
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise _backend_error(f"cannot delete {key}", exc) from exc

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"LocalBackend({str(self.root)!r})"


def _is_legacy_lock(path: str) -> bool:
    """True for a lock file an older version left beside its key (see the module
    docstring): it holds an owner line, which no ref value ever is."""
    try:
        with open(path, "rb") as f:
            head = f.read(_LEGACY_LOCK_MAX + 1)
    except OSError:
        return False
    return len(head) <= _LEGACY_LOCK_MAX and _LEGACY_LOCK_CONTENT.fullmatch(head) is not None


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


# Errors fsyncing a directory that only say "this filesystem cannot" (or that the
# directory went away), as restic ignores them; any other is a write that may not
# be durable and is reported.
_FSYNC_DIR_IGNORED = frozenset({errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOENT, errno.EINVAL})


def _fsync_dir(directory: Path) -> None:
    """Make a rename or unlink in ``directory`` durable; raise BackendError if the
    filesystem fails to (not for one that cannot fsync directories at all)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError as exc:
        if exc.errno in _FSYNC_DIR_IGNORED:
            return
        raise backend_error(f"open directory {directory} to make it durable", exc) from exc
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _FSYNC_DIR_IGNORED:
            raise backend_error(f"make directory {directory} durable", exc) from exc
    finally:
        os.close(fd)


def backend_error(what: str, exc: OSError) -> BackendError:
    """A BackendError for a failed local file operation, saying why in words
    (``the disk is full``) rather than errno numbers."""
    reason = {
        errno.ENOSPC: "the disk is full; free space and retry",
        errno.EDQUOT: "the disk quota is exhausted; free space and retry",
        errno.EFBIG: "the file size limit was reached",
        errno.EROFS: "the file system is read-only",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
    }.get(exc.errno or 0, exc.strerror or str(exc))
    return BackendError(f"{what}: {reason}", retryable=False)


_backend_error = backend_error
