"""Reference entries: files that stay where they are (``file://`` paths, bucket
URIs), recorded with their size and a checksum so a later download can tell
whether they changed.

Schemes are handled by resolvers registered in ``RESOLVERS``; ``file://`` is
built in, object-storage schemes are added by :mod:`objstore.remote_refs` when
it is importable.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from urllib.parse import unquote, urlparse

import blake3

from .errors import InvalidInput, NotFound, VerificationFailed
from .objects import REFERENCE, TreeEntry

# describe(uri, checksum) -> [(relative name, entry)]; fetch(entry, dest) -> None
Describe = Callable[[str, bool], list[tuple[str, TreeEntry]]]
Fetch = Callable[[TreeEntry, Path], None]
RESOLVERS: dict[str, tuple[Describe, Fetch]] = {}


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
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    out = []
    for p in files:
        rel = p.name if p == root else p.relative_to(root).as_posix()
        extra = {"mtime": p.stat().st_mtime}
        if checksum:
            extra["blake3"] = _blake3_file(p)
        out.append((rel, TreeEntry(p.name, REFERENCE, p.stat().st_size, None, 0o644, p.absolute().as_uri(), extra)))
    return out


def _fetch_file(entry: TreeEntry, dest: Path) -> None:
    assert entry.target is not None
    src = _local_path(entry.target)
    if not src.is_file():
        raise NotFound(f"referenced file {entry.target} no longer exists", key=entry.target)
    if src.stat().st_size != entry.size or ("blake3" in entry.extra and _blake3_file(src) != entry.extra["blake3"]):
        raise VerificationFailed(f"referenced file {entry.target} changed since it was logged", paths=(entry.target,))
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.objstore-ref")
    shutil.copyfile(src, tmp)
    os.replace(tmp, dest)


RESOLVERS["file"] = (_describe_file, _fetch_file)


def _resolver(uri: str) -> tuple[Describe, Fetch]:
    scheme = urlparse(uri).scheme
    if scheme not in RESOLVERS and scheme in ("s3", "gs", "gcs", "az", "azure", "abfs"):
        try:
            from . import remote_refs  # noqa: F401  (registers object-storage schemes)
        except ImportError:
            pass
    if scheme not in RESOLVERS:
        raise InvalidInput(f"references with scheme {scheme or '(none)'}:// are not supported; use file:// or s3://")
    return RESOLVERS[scheme]


def describe_reference(uri: str, checksum: bool = True) -> list[tuple[str, TreeEntry]]:
    """The entries a reference URI stands for (one per object under a prefix)."""
    return _resolver(uri)[0](uri, checksum)


def fetch_reference(entry: TreeEntry, dest: Path) -> None:
    """Copy a referenced object to ``dest``, failing clearly if it changed since logging."""
    assert entry.target is not None
    _resolver(entry.target)[1](entry, dest)


def is_uri(text: str) -> bool:
    scheme = urlparse(text).scheme
    return len(scheme) > 1 and "://" in text
