"""Writing a stored tree out as files, and checking a written copy against it.

The tree is untrusted (it may come from a remote): names are checked, and every
symlink is resolved over the tree itself (:func:`objstore.files.safepath.resolve_link`,
the rule logging applies too) before anything is written; one that leads outside
the destination is refused. Every write goes through
:class:`objstore.files.safepath.Destination`, which follows no link below the root
(planted links are replaced or refused, never written through), writes each file
to a fresh temp name renamed into place when complete, and removes the temp files
of writers that were killed. Symlinks are made last, so nothing is ever written
through one, and checked again once all exist. Every chunk is verified against
its id (and its length against the file's claim) before its bytes reach a file:
a file's runs of chunks are decoded and verified on every core, and written by
those threads, one at a time, at their offsets into the temp file (reserved at its
full size first), so a damaged run anywhere leaves only verified bytes in a temp
file that is removed, never renamed into place.

A copy is verified by :func:`verify`: each entry as the version has it (a
downloaded reference by its size and recorded BLAKE3), and nothing else under the
root (a file the version does not hold is reported). It reads as materialize
writes, each directory through its parent's descriptor with no link below the
root followed, so whatever depth materialize wrote can be verified.
"""

from __future__ import annotations

import errno
import functools
import itertools
import os
import stat as statmod
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import blake3

from objstore.errors import CorruptObject, UnsafePath, VerificationFailed
from objstore.files.ingest import default_workers, file_id_of
from objstore.files.safepath import Destination, Lookup, Parts, resolve_link
from objstore.storage.chunking import Chunker
from objstore.storage.ids import ObjectId
from objstore.storage.objects import FILE, REFERENCE, SYMLINK, TREE, FileObject, TreeEntry
from objstore.storage.odb import ObjectDatabase
from objstore.storage.trees import split_path, walk_tree

Progress = Callable[[int], None]

# fetch(entry, out): write the referenced bytes to ``out``, raising if they changed since logging
ReferenceFetcher = Callable[[TreeEntry, BinaryIO], None]


def read_file_object(odb: ObjectDatabase, file_id: ObjectId) -> FileObject:
    obj = odb.get_object(file_id)
    if not isinstance(obj, FileObject):
        raise CorruptObject(f"object {file_id.hex[:16]} should be a file", object_id=file_id.hex)
    return obj


def file_writer(odb: ObjectDatabase, file_id: ObjectId, expected_size: int,
                progress: Progress | None = None) -> Callable[[BinaryIO], None]:
    """A ``fill`` for :meth:`Destination.write_file`: the stored file's bytes, every chunk verified."""
    fobj = read_file_object(odb, file_id)
    if fobj.size != expected_size:
        raise CorruptObject(
            f"file {file_id.hex[:16]} is {fobj.size} bytes but its tree entry says {expected_size}; refusing it",
            object_id=file_id.hex,
        )

    claimed = [n for _, n in fobj.chunks]
    offsets = list(itertools.accumulate(claimed, initial=0))

    def check_lengths(first: int, chunks: list[bytes | memoryview]) -> None:
        for i, data in enumerate(chunks, first):
            # A file's id covers the lengths it claims for its chunks, not their real
            # lengths: a crafted file object can call a 10-byte chunk 5 bytes and
            # still hash to its id. Each chunk is verified; so is its length.
            if len(data) != claimed[i]:
                raise CorruptObject(
                    f"file {file_id.hex[:16]} says chunk {fobj.chunks[i][0].hex[:16]} is {claimed[i]} bytes, "
                    f"but it is {len(data)}; refusing it", object_id=file_id.hex)

    def fill(out: BinaryIO) -> None:
        fd = out.fileno()
        _preallocate(fd, offsets[-1])

        def write(first: int, chunks: list[bytes | memoryview]) -> None:
            check_lengths(first, chunks)
            for i, data in enumerate(chunks, first):
                _pwrite_all(fd, data, offsets[i])

        def done(first: int, n: int) -> None:
            if progress is not None:
                progress(offsets[first + n] - offsets[first])

        # The workers write the runs they verified, at their offsets, one writer at a
        # time while the others decode (decode_runs' hand-off): the copy into fresh
        # page-cache pages is the largest cost of a restore, one writer thread left the
        # decoders idle a quarter of the time, and two threads writing one file by
        # turns spun on its inode lock (5% of the CPU). A chunk per write: on the VMs
        # measured, one write per run (megabytes) costs 4-6x the system time (the
        # kernel's copy into large fresh folios). Nothing goes through ``out``'s buffer.
        odb.decode_runs((c for c, _ in fobj.chunks), write, workers=default_workers(), in_workers=True, done=done)

    return fill


def _preallocate(fd: int, size: int) -> None:
    """Reserve the file's blocks before writing: one allocation instead of one per page
    (writing into reserved blocks costs half the CPU on ext4), and a full disk is
    found before any decoding. A file system that cannot reserve is written as is."""
    if size <= 0:
        return
    try:
        os.posix_fallocate(fd, 0, size)
    except OSError as exc:
        if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
            raise


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write ``data`` at ``offset``, however short each write the kernel makes."""
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, offset)
        if n <= 0:
            raise OSError(errno.EIO, "a write wrote nothing")
        view, offset = view[n:], offset + n


def tree_lookup(entries: list[tuple[str, TreeEntry]]) -> Lookup:
    """A :data:`~objstore.files.safepath.Lookup` over a tree's entries, as materialize will write them."""
    nodes: dict[Parts, tuple[str, str | None]] = {}
    for rel, entry in entries:
        kind = "dir" if entry.kind == TREE else "link" if entry.kind == SYMLINK else "file"
        nodes[tuple(split_path(rel))] = (kind, entry.target if entry.kind == SYMLINK else None)
    return lambda parts: ("dir", None) if not parts else nodes.get(parts)


def check_symlinks(entries: list[tuple[str, TreeEntry]]) -> None:
    """Refuse a tree with a symlink that leads outside it, before anything is written."""
    lookup = tree_lookup(entries)
    for rel, entry in entries:
        if entry.kind == SYMLINK:
            found = resolve_link(lookup, tuple(split_path(rel)), entry.target or "")
            if found.outcome == "escapes":
                raise UnsafePath(f"symlink {rel!r} points to {entry.target!r}, which leads outside the destination; refusing")


def materialize(
    odb: ObjectDatabase,
    chunker: Chunker,
    tree_id: ObjectId,
    root: Path,
    *,
    progress: Progress | None = None,
    fetch_reference: ReferenceFetcher | None = None,
    follow_root: bool = True,
    only: Callable[[str], bool] | None = None,
) -> list[Path]:
    """Write the tree under ``root``; files already there and intact are left alone.
    ``only``: write just the entries whose path it accepts (nothing else is read; links judged over the whole tree).

    ``follow_root=False`` when the root is objstore's default, not the caller's
    (see :meth:`objstore.files.safepath.Destination.open`).

    Returns the paths of the files in the tree (written or already intact).
    Files under ``root`` that the tree does not hold are left alone too (only
    temp files of killed writers are removed); :func:`verify` reports them.
    """
    entries = list(walk_tree(odb, tree_id, include_dirs=True))  # validates every name before anything is written
    check_symlinks(entries)
    entries = entries if only is None else [(rel, entry) for rel, entry in entries if only(rel)]
    paths: list[Path] = []
    symlinks: list[tuple[Parts, str, str]] = []
    with Destination.open(root, follow_root=follow_root) as dest:
        for rel, entry in entries:
            parts = tuple(split_path(rel))
            path = dest.root.joinpath(*parts)
            if entry.kind == TREE:
                dest.directory(parts)
                continue
            if entry.kind == SYMLINK:
                symlinks.append((parts, entry.target or "", rel))
                continue
            paths.append(path)
            if entry.kind == FILE:
                assert entry.id is not None
                if _intact(dest.open_regular(parts), entry, chunker):
                    if progress is not None:
                        progress(entry.size)
                    continue
                dest.write_file(parts, file_writer(odb, entry.id, entry.size, progress), entry.mode & 0o777 or 0o644)
            elif entry.kind == REFERENCE and fetch_reference is not None:
                dest.write_file(parts, functools.partial(fetch_reference, entry), 0o644)
        for parts, target, _ in symlinks:
            dest.symlink(parts, target)
            paths.append(dest.root.joinpath(*parts))
        # Over the tree, no link leads out (check_symlinks). Through what else stands
        # in the destination (a link planted where a dangling one points) one still
        # could: check each one's real resolution, and take them all back if any escapes.
        real_root = Path(os.path.realpath(dest.root))
        for parts, target, rel in symlinks:
            if not Path(os.path.realpath(dest.root.joinpath(*parts))).is_relative_to(real_root):
                for made, _, _ in symlinks:
                    dest.remove_link(made)
                raise UnsafePath(f"symlink {rel!r} points to {target!r}, which leads outside the destination "
                                 f"through what else is there; refusing")
    return paths


def _intact(fd: int | None, entry: TreeEntry, chunker: Chunker) -> bool:
    """Whether the open regular file ``fd`` (None: not one) holds ``entry``'s bytes. Closes ``fd``."""
    if fd is None:
        return False
    try:
        if os.fstat(fd).st_size != entry.size:
            return False
        # hashed through the descriptor, so what was checked is what is read
        return file_id_of(Path(f"/dev/fd/{fd}"), chunker) == entry.id
    finally:
        os.close(fd)


def _reference_intact(fd: int | None, entry: TreeEntry) -> bool:
    """Whether ``fd`` holds a downloaded reference: its size, and its BLAKE3 when logged. Closes ``fd``."""
    if fd is None:
        return False
    try:
        if os.fstat(fd).st_size != entry.size:
            return False
        want = entry.extra.get("blake3")
        if not want:
            return True
        h = blake3.blake3()
        while block := os.read(fd, 8 << 20):
            h.update(block)
        return bool(h.hexdigest() == want)  # want comes from the (untrusted) entry: Any
    finally:
        os.close(fd)


def _open_file_at(dir_fd: int, name: str) -> int | None:
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError:
        return None
    if not statmod.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return fd


def _kind_at(dir_fd: int, name: str) -> str | None:
    try:
        mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
    except OSError:
        return None
    return "link" if statmod.S_ISLNK(mode) else "dir" if statmod.S_ISDIR(mode) else "other"


def verify(odb: ObjectDatabase, chunker: Chunker, tree_id: ObjectId, root: Path) -> None:
    """Check that ``root`` holds exactly the tree's entries and nothing else; raise
    VerificationFailed naming those that differ, are missing, or are not in the version.

    Read as materialize writes: each directory relative to its parent's descriptor,
    no link below ``root`` followed, so any depth the file system holds can be checked
    (full paths may exceed PATH_MAX) and a directory swapped for a link is reported,
    not read through."""
    root = Path(root)
    children = _expected_children(odb, tree_id)
    bad: list[str] = []
    extra: list[str] = []
    visited: set[Parts] = set()
    top = _open_root(root)
    try:
        # fwalk lists each directory through a descriptor; links (to directories too) are never entered
        for dirpath, dirnames, filenames, dir_fd in os.fwalk(".", dir_fd=top, follow_symlinks=False):
            here = Path(dirpath).parts
            want = children.get(here)
            if want is None:  # not the version's: pruned below, so only if one appeared meanwhile
                dirnames[:] = []
                continue
            visited.add(here)
            prefix = "".join(p + "/" for p in here)
            bad.extend(_differing(dir_fd, prefix, want, chunker))
            extra.extend(_extras(dir_fd, prefix, want, dirnames, filenames))
            # only the version's directories are looked into: an extra one is reported once
            dirnames[:] = sorted(d for d in dirnames if d in want and want[d].kind == TREE)
    finally:
        os.close(top)
    bad.extend(_unvisited(children, visited))
    _report(root, bad, extra)


def _expected_children(odb: ObjectDatabase, tree_id: ObjectId) -> dict[Parts, dict[str, TreeEntry]]:
    """Each directory of the tree (root-relative parts) with its entries by name."""
    children: dict[Parts, dict[str, TreeEntry]] = {(): {}}
    for rel, entry in walk_tree(odb, tree_id, include_dirs=True):  # a directory comes before its contents
        parts = tuple(split_path(rel))
        children[parts[:-1]][parts[-1]] = entry
        if entry.kind == TREE:
            children[parts] = {}
    return children


def _open_root(root: Path) -> int:
    try:
        return os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise VerificationFailed(f"{root} cannot be opened as a directory: {exc.strerror or exc}", paths=()) from None


def _differing(dir_fd: int, prefix: str, want: dict[str, TreeEntry], chunker: Chunker) -> list[str]:
    """The entries of one directory (open as ``dir_fd``) that are missing or differ."""
    return [prefix + name + ("/" if entry.kind == TREE else "")
            for name, entry in want.items() if not _entry_intact(dir_fd, name, entry, chunker)]


def _entry_intact(dir_fd: int, name: str, entry: TreeEntry, chunker: Chunker) -> bool:
    if entry.kind == TREE:
        return _kind_at(dir_fd, name) == "dir"
    if entry.kind == SYMLINK:
        try:
            return os.readlink(name, dir_fd=dir_fd) == entry.target
        except OSError:
            return False
    if entry.kind == REFERENCE:
        return _reference_intact(_open_file_at(dir_fd, name), entry)
    return _intact(_open_file_at(dir_fd, name), entry, chunker)


def _extras(dir_fd: int, prefix: str, want: dict[str, TreeEntry], dirnames: list[str], filenames: list[str]) -> list[str]:
    """What one directory holds that the version does not (a directory with a slash, a link to one without)."""
    extra = [prefix + d + ("" if _kind_at(dir_fd, d) == "link" else "/") for d in sorted(dirnames) if d not in want]
    extra.extend(prefix + f for f in sorted(filenames) if f not in want)
    return extra


def _unvisited(children: dict[Parts, dict[str, TreeEntry]], visited: set[Parts]) -> list[str]:
    """What is under a directory that is missing, a link, or cannot be listed: not checked, so not intact."""
    bad: list[str] = []
    for parts, want in children.items():
        if parts not in visited:
            prefix = "".join(p + "/" for p in parts)
            bad.extend(prefix + name + ("/" if e.kind == TREE else "") for name, e in want.items())
    return bad


def _report(root: Path, bad: list[str], extra: list[str]) -> None:
    if not bad and not extra:
        return
    parts_msg = []
    if bad:
        parts_msg.append(f"{len(bad)} differ from the version or are missing: " + _listed(bad))
    if extra:
        parts_msg.append(f"{len(extra)} are not in the version: " + _listed(extra))
    raise VerificationFailed(f"{root} is not an intact copy: " + "; ".join(parts_msg), paths=tuple(bad + extra))


def _listed(items: list[str]) -> str:
    return ", ".join(items[:10]) + (f" and {len(items) - 10} more" if len(items) > 10 else "")
