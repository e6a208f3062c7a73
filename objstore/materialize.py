"""Writing a stored tree out as files, and checking a written copy against it.

The tree is untrusted (it may come from a remote): names are checked, no entry
is written outside the destination, symlinks must point inside it and are
created last so nothing is ever written through one, and every chunk is
verified against its id before its bytes reach a file. Each file is written to
a temporary name beside its destination and renamed into place when complete.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from pathlib import Path

from .chunking import Chunker
from .errors import CorruptObject, UnsafePath, VerificationFailed
from .ids import ObjectId
from .ingest import default_workers, file_id_of
from .objects import FILE, REFERENCE, SYMLINK, TREE, FileObject, TreeEntry
from .odb import ObjectDatabase
from .trees import split_path, walk_tree

Progress = Callable[[int], None]
ReferenceFetcher = Callable[[TreeEntry, Path], None]


def _inside(root: Path, candidate: Path) -> bool:
    try:
        candidate.relative_to(root)
        return True
    except ValueError:
        return False


def _safe_destination(root: Path, rel: str) -> Path:
    dest = root.joinpath(*split_path(rel))
    parent = Path(os.path.realpath(dest.parent))
    if not _inside(Path(os.path.realpath(root)), parent):
        raise UnsafePath(f"{rel!r} would be written outside {root} (through a symlink); refusing")
    return dest


def read_file_object(odb: ObjectDatabase, file_id: ObjectId) -> FileObject:
    obj = odb.get_object(file_id)
    if not isinstance(obj, FileObject):
        raise CorruptObject(f"object {file_id.hex[:16]} should be a file", object_id=file_id.hex)
    return obj


def write_file(odb: ObjectDatabase, file_id: ObjectId, dest: Path, expected_size: int, progress: Progress | None = None) -> None:
    """Write one stored file to ``dest`` atomically, verifying every chunk."""
    fobj = read_file_object(odb, file_id)
    if fobj.size != expected_size:
        raise CorruptObject(
            f"file {file_id.hex[:16]} is {fobj.size} bytes but its tree entry says {expected_size}; refusing it",
            object_id=file_id.hex,
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.objstore-{secrets.token_hex(4)}")
    try:
        with open(tmp, "wb") as out:
            # decode and verify on every core while this thread writes
            chunks = odb.iter_chunks((c for c, _ in fobj.chunks), workers=default_workers())
            for (chunk_id, claimed), data in zip(fobj.chunks, chunks):
                # A file's id covers the lengths it claims for its chunks, not their real
                # lengths: a crafted file object can call a 10-byte chunk 5 bytes and
                # still hash to its id. Each chunk is verified; so is its length.
                if len(data) != claimed:
                    raise CorruptObject(
                        f"file {file_id.hex[:16]} says chunk {chunk_id.hex[:16]} is {claimed} bytes, but it is {len(data)}; refusing it",
                        object_id=file_id.hex)
                out.write(data)
                if progress is not None:
                    progress(len(data))
        os.replace(tmp, dest)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def materialize(
    odb: ObjectDatabase,
    chunker: Chunker,
    tree_id: ObjectId,
    root: Path,
    *,
    progress: Progress | None = None,
    fetch_reference: ReferenceFetcher | None = None,
) -> list[Path]:
    """Write the tree under ``root``; files already there and intact are left alone.

    Returns the paths of the files in the tree (written or already intact).
    """
    root = Path(root).absolute()
    root.mkdir(parents=True, exist_ok=True)
    entries = list(walk_tree(odb, tree_id, include_dirs=True))  # validates every name before anything is written
    paths: list[Path] = []
    symlinks: list[tuple[Path, str, str]] = []
    for rel, entry in entries:
        dest = _safe_destination(root, rel)
        if entry.kind == TREE:
            if dest.is_symlink():
                raise UnsafePath(f"{dest} is a symlink where the version has a directory; move it away and retry")
            dest.mkdir(parents=True, exist_ok=True)
            continue
        if entry.kind == SYMLINK:
            symlinks.append((dest, entry.target or "", rel))
            continue
        paths.append(dest)
        if entry.kind == FILE:
            assert entry.id is not None
            if _intact(dest, entry, chunker):
                if progress is not None:
                    progress(entry.size)
                continue
            if dest.is_symlink() or dest.is_dir():
                raise UnsafePath(f"{dest} exists and is not a regular file; move it away and retry")
            write_file(odb, entry.id, dest, entry.size, progress)
            os.chmod(dest, entry.mode & 0o777 or 0o644)
        elif entry.kind == REFERENCE and fetch_reference is not None:
            fetch_reference(entry, dest)
    real_root = Path(os.path.realpath(root))
    for dest, target, rel in symlinks:
        if not target or os.path.isabs(target) or "\0" in target:
            raise UnsafePath(f"symlink {rel!r} points to {target!r}, outside the destination; refusing")
        resolved = Path(os.path.normpath(os.path.join(os.path.realpath(dest.parent), target)))
        if not _inside(real_root, resolved):
            raise UnsafePath(f"symlink {rel!r} points to {target!r}, outside the destination; refusing")
        if dest.is_symlink() and os.readlink(dest) == target:
            continue
        if dest.exists() or dest.is_symlink():
            dest.unlink()
        os.symlink(target, dest)
        paths.append(dest)
    # Each target was checked alone, textually; together links can still escape
    # (sub/up -> "..", then out -> "sub/up/../../x": the kernel follows sub/up
    # before the ".."). Where a link leads is a property of the finished set, so
    # check each one's real resolution now, and take them all back if any escapes.
    for dest, target, rel in symlinks:
        if not _inside(real_root, Path(os.path.realpath(dest))):
            for made, _, _ in symlinks:
                if made.is_symlink():
                    made.unlink()
            raise UnsafePath(f"symlink {rel!r} points to {target!r}, which leads outside the destination through other links; refusing")
    return paths


def _intact(dest: Path, entry: TreeEntry, chunker: Chunker) -> bool:
    try:
        st = dest.lstat()
    except FileNotFoundError:
        return False
    if not dest.is_file() or dest.is_symlink() or st.st_size != entry.size:
        return False
    return file_id_of(dest, chunker) == entry.id


def verify(odb: ObjectDatabase, chunker: Chunker, tree_id: ObjectId, root: Path) -> None:
    """Check that ``root`` holds exactly the tree's files; raise VerificationFailed naming those that differ."""
    root = Path(root)
    bad: list[str] = []
    for rel, entry in walk_tree(odb, tree_id, include_dirs=True):
        dest = root.joinpath(*split_path(rel))
        if entry.kind == TREE and (dest.is_symlink() or not dest.is_dir()):
            bad.append(rel + "/")
        elif entry.kind == FILE and not _intact(dest, entry, chunker):
            bad.append(rel)
        elif entry.kind == SYMLINK and (not dest.is_symlink() or os.readlink(dest) != entry.target):
            bad.append(rel)
    if bad:
        listed = ", ".join(bad[:10]) + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
        raise VerificationFailed(f"{len(bad)} file(s) under {root} differ from the version: {listed}", paths=tuple(bad))
