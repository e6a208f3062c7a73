"""Reference entries: files that stay where they are (``file://`` paths, bucket
URIs), recorded with their size and a checksum so a later download can tell
whether they changed.

Schemes are handled by resolvers registered with :func:`register_resolver`;
``file://`` is built in. This module imports no other resolver: object-storage
schemes live in :mod:`objstore.files.bucket_references`, which the package that
wires the library together (``objstore/__init__``) registers, so the dependency
runs one way (bucket references on this module, never back). A resolver's fetch writes the referenced bytes to a file object
it is handed and never names a path in the destination: materialize owns every
write there (:class:`objstore.files.safepath.Destination`), and keeps what a fetch wrote
only when it returns, that is, when the bytes matched what was logged.
"""

from __future__ import annotations

import os
import stat as statmod
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO
from urllib.parse import unquote, urlparse

import blake3

from objstore.errors import InvalidInput, NotFound, VerificationFailed
from objstore.storage.objects import REFERENCE, TreeEntry

# describe(uri, checksum) -> [(relative name, entry)]; fetch(entry, out) writes the
# referenced bytes to ``out`` (a temp file the caller renames into place only when
# fetch returns, so a fetcher never names a path in the destination).
Describe = Callable[[str, bool], list[tuple[str, TreeEntry]]]
Fetch = Callable[[TreeEntry, BinaryIO], None]
RESOLVERS: dict[str, tuple[Describe, Fetch]] = {}


def register_resolver(scheme: str, describe: Describe, fetch: Fetch) -> None:
    """Handle references with ``scheme://`` by ``describe`` and ``fetch`` (a later
    registration of the same scheme replaces the earlier one)."""
    RESOLVERS[scheme] = (describe, fetch)


def _blake3_file(path: Path) -> str:
    h = blake3.blake3()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    return h.hexdigest()


def _local_path(uri: str) -> Path:
    parsed = urlparse(uri)
    return Path(unquote(parsed.path))


def _describe_file(uri: str, checksum: bool) -> list[tuple[str, TreeEntry]]:
    root = _local_path(uri)
    if not root.exists():
        raise NotFound(f"reference {uri} does not exist; check the path", key=uri)
    files = [root] if root.is_file() else _files_under(root)
    out = []
    for p in files:
        rel = p.name if p == root else p.relative_to(root).as_posix()
        extra: dict[str, object] = {"mtime": p.stat().st_mtime}
        if checksum:
            extra["blake3"] = _blake3_file(p)
        out.append((rel, TreeEntry(p.name, REFERENCE, p.stat().st_size, None, 0o644, p.absolute().as_uri(), extra)))
    return out


def _files_under(root: Path) -> list[Path]:
    """Every regular file under ``root``, in path order, links followed: a reference
    names bytes wherever they are. A link that leads nowhere, or to a directory that
    holds it, is refused rather than dropped; sockets, FIFOs and devices are skipped."""
    files: list[Path] = []
    st = root.stat()
    stack: list[tuple[Path, frozenset[tuple[int, int]]]] = [(root, frozenset({(st.st_dev, st.st_ino)}))]
    while stack:
        directory, above = stack.pop()
        try:
            names = os.listdir(directory)
        except OSError as exc:
            raise InvalidInput(f"{directory} cannot be listed: {exc.strerror or exc}") from None
        for name in names:
            path = directory / name
            try:
                st = path.stat()
            except OSError:
                if path.is_symlink():
                    raise InvalidInput(f"symlink {path} -> {os.readlink(path)!r} leads to nothing; "
                                       f"remove it or point it at a file or directory") from None
                raise NotFound(f"{path} was removed while {root} was being read; add the reference again", key=str(path)) from None
            if statmod.S_ISDIR(st.st_mode):
                if (st.st_dev, st.st_ino) in above:
                    raise InvalidInput(f"symlink {path} leads to a directory that contains it; remove it or point it elsewhere")
                stack.append((path, above | {(st.st_dev, st.st_ino)}))
            elif statmod.S_ISREG(st.st_mode):
                files.append(path)
    return sorted(files)


def _fetch_file(entry: TreeEntry, out: BinaryIO) -> None:
    assert entry.target is not None
    src = _local_path(entry.target)
    changed = VerificationFailed(f"referenced file {entry.target} changed since it was logged; log it again to use the new bytes",
                                 paths=(entry.target,))
    try:
        # O_NONBLOCK: opening a FIFO for reading would wait for a writer, forever;
        # O_NOCTTY: a terminal named here must not become ours. Both are only for the open.
        fd = os.open(src, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise NotFound(f"referenced file {entry.target} no longer exists", key=entry.target) from None
    except OSError as exc:
        raise InvalidInput(f"referenced file {entry.target} cannot be read: {exc.strerror or exc}") from None
    with open(fd, "rb") as f:
        st = os.fstat(fd)
        if not statmod.S_ISREG(st.st_mode):
            raise NotFound(f"referenced file {entry.target} is no longer a regular file", key=entry.target)
        os.set_blocking(fd, True)
        if st.st_size != entry.size:
            raise changed
        # Hashed as copied, so the check covers the very bytes written; read at most
        # the logged size plus one, so a file growing meanwhile is caught, not copied whole.
        h = blake3.blake3()
        copied = 0
        while copied <= entry.size:
            try:
                block = f.read(min(8 << 20, entry.size + 1 - copied))
            except OSError as exc:
                raise InvalidInput(f"referenced file {entry.target} cannot be read: {exc.strerror or exc}") from None
            if not block:
                break
            h.update(block)
            out.write(block)  # errors writing the destination are the caller's to explain
            copied += len(block)
    if copied != entry.size or ("blake3" in entry.extra and h.hexdigest() != entry.extra["blake3"]):
        raise changed


register_resolver("file", _describe_file, _fetch_file)


def _resolver(uri: str) -> tuple[Describe, Fetch]:
    try:
        scheme = urlparse(uri).scheme
    except ValueError as exc:  # e.g. an unbalanced "[" where the host goes
        raise InvalidInput(f"reference {uri!r} is not a valid URI ({exc}); check it") from None
    if "\0" in uri:
        raise InvalidInput(f"reference {uri!r} holds a NUL character, which no path or key can; check it")
    if scheme not in RESOLVERS:
        raise InvalidInput(f"references with scheme {scheme or '(none)'}:// are not supported; use file:// or s3://")
    return RESOLVERS[scheme]


def describe_reference(uri: str, checksum: bool = True) -> list[tuple[str, TreeEntry]]:
    """The entries a reference URI stands for (one per object under a prefix)."""
    return _resolver(uri)[0](uri, checksum)


def fetch_reference(entry: TreeEntry, out: BinaryIO) -> None:
    """Write a referenced object's bytes to ``out``, failing clearly if it changed since logging."""
    if not entry.target:  # a tree from a store or a remote is untrusted (trees.check_tree refuses it first)
        raise InvalidInput(f"reference {entry.name!r} names no URI; the tree holding it is damaged")
    _resolver(entry.target)[1](entry, out)


def is_uri(text: str) -> bool:
    try:
        scheme = urlparse(text).scheme
    except ValueError:
        return "://" in text  # meant as a URI; describing it says what is wrong
    return len(scheme) > 1 and "://" in text
