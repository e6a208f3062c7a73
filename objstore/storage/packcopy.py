"""A whole pack copied between two local stores, verified where it lands.

When a transfer wants every chunk of a source pack (a push to an empty remote,
a clone), the pack file itself is carried over instead of its records being
re-packed one by one. Invariant: **nothing unverified is published**. What is
checked is the destination's own file, the very inode that is then linked into
place, never a separate read of the source that could differ from what was
copied (a source truncated or rewritten mid-copy is a copy that fails its
checks). A pack is accepted only if

- its checksum is right and is its name, and its trailer index passes
  :func:`~objstore.storage.packs.check_index`;
- its records are exactly its index entries, back to back up to the index (so
  no record the index does not list hides in it for a later index rebuild to
  pick up);
- every chunk decodes and hashes to its id (keyed BLAKE3, per chunk, by
  :func:`~objstore.storage.odb.decode_verified_run`).

The pack checksum alone would not do: its key is public (domain separation,
not a secret), so a hostile source can checksum any bytes it likes; only a
chunk's own id says its bytes are right.

The bytes land by the cheapest way the two files allow: a hard link when both
stores are on one file system and the source file is owned by this user and
writable by no one else (so no one who could not already write this user's
stores can change it later; git links a local clone's objects the same way,
and readers verify every chunk they read anyway), else ``copy_file_range``
(the kernel copies, no user-space write), else plain reads and writes.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from objstore.constants import MAX_PACK_BYTES, PACK_TARGET
from objstore.errors import CorruptObject
from objstore.storage.backend import Backend, LocalBackend
from objstore.storage.chunkindex import ChunkLocation
from objstore.storage.ids import ObjectId
from objstore.storage.keys import pack_key
from objstore.storage.odb import RUN_DECODE_LIMIT, decode_verified_run
from objstore.storage.packs import INDEX_DTYPE, PACK_MAGIC, RECORD_HEAD, TRAILER, entry_id, read_pack_index

# Whether a pack may be hard-linked from the source store (the test and benchmark
# knob OBJSTORE_TRANSFER_LINK=0 makes every pack a copy).
LINK_ENV = "OBJSTORE_TRANSFER_LINK"
_COPY_STEP = 64 * 1024 * 1024


@dataclass(frozen=True)
class CopiedPack:
    """A pack file copied (or linked) to ``path`` and verified: its ``index``."""

    name: str
    path: Path
    index: np.ndarray
    size: int
    linked: bool


def local_pack_path(backend: Backend, name: str) -> Path | None:
    """Where pack ``name`` of a local store is on disk; None for any other backend."""
    if not isinstance(backend, LocalBackend):
        return None
    return backend.root.joinpath(*pack_key(name).split("/"))


def claimed_ids(path: Path) -> set[bytes] | None:
    """The chunk ids the pack at ``path`` says (unchecked) that it holds: enough to
    choose whether to copy it whole, which then checks everything; None if unreadable.
    Ids, not a count: a pack may also hold a chunk an older pack has (a writer that
    had not read every index yet stores a false "new" again), and the pack is still
    wanted whole when every chunk of it is wanted, wherever the index found it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_size < TRAILER.size + 32:
            return None
        index_offset, count, _ = TRAILER.unpack(os.pread(fd, TRAILER.size, st.st_size - 32 - TRAILER.size))
        length = count * INDEX_DTYPE.itemsize
        if index_offset < 0 or index_offset + length > st.st_size - 32 - TRAILER.size:
            return None
        section = os.pread(fd, length, index_offset)
        if len(section) != length:
            return None
        return {entry_id(e) for e in np.frombuffer(section, dtype=INDEX_DTYPE)["id"]}
    except (OSError, struct.error, ValueError):
        return None
    finally:
        os.close(fd)


def links_allowed() -> bool:
    return os.environ.get(LINK_ENV, "1") != "0"


def copy_pack_file(source: Path, target: Path, name: str, *, link: bool = True) -> CopiedPack:
    """Copy the pack at ``source`` to the new file ``target`` and verify it there
    (see the module docstring); CorruptObject, and ``target`` removed, if it fails."""
    fd = _open_pack(source, name)
    try:
        st = os.fstat(fd)
        linked = link and _linkable(st) and _link(source, fd, target)
        if not linked:
            _copy(fd, target, st.st_size)
    finally:
        os.close(fd)
    try:
        index, size = _verify_file(target, name, linked)
    except BaseException:
        _unlink_quietly(target)
        raise
    return CopiedPack(name, target, index, size, linked)


def _open_pack(path: Path, name: str) -> int:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise CorruptObject(f"pack {name[:16]} cannot be opened ({exc.strerror})", object_id=name) from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size > MAX_PACK_BYTES:
        os.close(fd)
        raise CorruptObject(f"pack {name[:16]} is not a regular file of a possible size", object_id=name)
    return fd


def _linkable(st: os.stat_result) -> bool:
    return links_allowed() and st.st_uid == os.geteuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _link(source: Path, fd: int, target: Path) -> bool:
    """Hard-link ``source`` to ``target`` if it still is the file open as ``fd``."""
    try:
        os.link(source, target, follow_symlinks=True)
    except OSError:  # another file system, links refused: copy instead
        return False
    opened, got = os.fstat(fd), os.lstat(target)
    if (got.st_dev, got.st_ino) != (opened.st_dev, opened.st_ino):  # replaced since it was opened
        _unlink_quietly(target)
        return False
    return True


def _copy(fd: int, target: Path, size: int) -> None:
    out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
    try:
        done = 0
        kernel = hasattr(os, "copy_file_range")  # Linux only
        while done < size:
            n = 0
            if kernel:
                try:
                    n = os.copy_file_range(fd, out, min(size - done, _COPY_STEP), done, done)
                except OSError as exc:
                    if exc.errno not in (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EPERM):
                        raise
                    kernel = False
            if not kernel:
                block = os.pread(fd, min(size - done, 8 * 1024 * 1024), done)
                n = os.pwrite(out, block, done) if block else 0
            if n == 0:
                break  # the source shrank under us: what was copied is checked, and refused
            done += n
        os.fsync(out)
    except BaseException:
        os.close(out)
        _unlink_quietly(target)
        raise
    os.close(out)


_scratch = threading.local()  # per thread: the buffer its runs decode into, reused


def _verify_file(path: Path, name: str, linked: bool) -> tuple[np.ndarray, int]:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        st = os.fstat(fd)
        if st.st_size > MAX_PACK_BYTES or (linked and not _linkable(st)):
            raise CorruptObject(f"pack {name[:16]} changed while it was copied", object_id=name)
        data = _read_all(fd, st.st_size)
        after = os.fstat(fd)
        if (after.st_size, after.st_mtime_ns, after.st_mode) != (st.st_size, st.st_mtime_ns, st.st_mode):
            raise CorruptObject(f"pack {name[:16]} changed while it was copied", object_id=name)
        if linked:
            os.fsync(fd)  # the source's writer synced it; this costs nothing then, and is sure
    finally:
        os.close(fd)
    return verify_pack_file(data, name), len(data)


def _read_all(fd: int, size: int) -> memoryview:
    """The file's first ``size`` bytes (fewer if it is shorter), read into this
    thread's buffer: reused, since fresh pages cost more to fault in than to fill."""
    buf: bytearray | None = getattr(_scratch, "pack", None)
    if buf is None or len(buf) < size:
        buf = _scratch.pack = bytearray(max(size, PACK_TARGET + PACK_TARGET // 4))
    view = memoryview(buf)
    got = 0
    with open(fd, "rb", buffering=0, closefd=False) as f:
        while got < size:
            n = f.readinto(view[got:size])
            if not n:
                break
            got += n
    return view[:got]


def verify_pack_file(data: bytes | memoryview, name: str) -> np.ndarray:
    """The index of the whole pack ``data`` named ``name``, after every check of the
    module docstring; CorruptObject naming what is wrong otherwise."""
    index = read_pack_index(data, name)
    if not _records_are_index(data, index):
        raise CorruptObject(f"pack {name[:16]} holds records its index does not list (or lists records it does not "
                            f"hold); the pack is damaged or forged", object_id=name)
    _verify_chunks(data, index, name)
    return index


_HEAD_DTYPE = np.dtype([("id", "S32"), ("codec", "u1"), ("raw_len", "<u4"), ("stored_len", "<u4")])
assert _HEAD_DTYPE.itemsize == RECORD_HEAD.size


def _records_are_index(data: bytes | memoryview, index: np.ndarray) -> bool:
    """Whether the records, back to back from the header up to the index section,
    are exactly the index's entries (no gap where an unlisted record could hide).
    One vectorised pass over the record heads, not a Python loop per record."""
    index_offset = len(data) - 32 - TRAILER.size - len(index) * INDEX_DTYPE.itemsize
    if not len(index):
        return index_offset == len(PACK_MAGIC)
    by_offset = index[np.argsort(index["offset"], kind="stable")]
    offsets = by_offset["offset"].astype(np.int64)
    ends = offsets + by_offset["stored_len"].astype(np.int64)
    expected = np.concatenate(([len(PACK_MAGIC)], ends[:-1])) + RECORD_HEAD.size
    if not np.array_equal(offsets, expected) or int(ends[-1]) != index_offset:
        return False
    raw = np.frombuffer(data, dtype=np.uint8, count=index_offset)
    heads = raw[(offsets - RECORD_HEAD.size)[:, None] + np.arange(RECORD_HEAD.size)].copy().view(_HEAD_DTYPE).ravel()
    return all(np.array_equal(heads[f], by_offset[f]) for f in ("id", "codec", "raw_len", "stored_len"))


def _verify_chunks(data: bytes | memoryview, index: np.ndarray, name: str) -> None:
    """Every chunk decoded and checked against its id, a run (up to RUN_DECODE_LIMIT raw) at a time."""
    out = getattr(_scratch, "out", None)
    if out is None:
        out = _scratch.out = bytearray()
    view = memoryview(data)
    order = np.argsort(index["offset"], kind="stable")
    run: list[tuple[ObjectId, ChunkLocation]] = []
    raw = 0

    def check() -> None:
        payloads: list[bytes | memoryview] = [view[loc.offset:loc.offset + loc.stored_len] for _, loc in run]
        decode_verified_run(run, payloads, lambda loc: f"pack {name[:16]}", out)

    for i in order:
        e = index[i]
        loc = ChunkLocation(name, int(e["offset"]), int(e["stored_len"]), int(e["raw_len"]), int(e["codec"]))
        if run and raw + loc.raw_len > RUN_DECODE_LIMIT:
            check()
            run, raw = [], 0
        run.append((ObjectId(entry_id(e["id"])), loc))
        raw += loc.raw_len
    if run:
        check()


def _unlink_quietly(path: Path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
