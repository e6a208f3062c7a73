"""Backends: where a store's bytes live. See :mod:`objstore.storage.backend.base` for the contract.

:func:`parse_location` is the one place a store or remote location is parsed
(``objstore.init(store=…)``, ``--store``, ``$OBJSTORE_DIR``, ``clone``, ``remote add``
and :func:`open_backend` all go through it): an object-storage URL
(``s3://``, ``gs://``, ``az://`` …), a ``file://`` URL, or a directory path. A string
with any other scheme (``ftp://``, ``http://``, an upper-case ``S3://``) is an
:class:`~objstore.errors.InvalidInput` naming the supported ones, never a directory
called ``ftp:``.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from objstore.errors import InvalidInput
from objstore.storage.backend._local import LocalBackend, backend_error
from objstore.storage.backend.base import Backend, KeyInfo, join_key

__all__ = ["Backend", "KeyInfo", "LocalBackend", "backend_error", "join_key", "open_backend", "is_remote_url", "parse_location",
           "new_temp_file"]

_OBJECT_SCHEMES = ("s3://", "gs://", "gcs://", "az://", "azure://", "abfs://", "memory://")
# RFC 3986: a scheme is a letter, then letters, digits, + - . ; "C:\models" has no "//".
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
SUPPORTED = "a directory path, file:///path, s3://bucket/prefix, gs://bucket/prefix or az://container/prefix"


def new_temp_file(backend: Backend, prefix: str) -> Path:
    """A new empty local file to build something in before it is stored: in the
    store's own ``tmp/`` when it is local (so a rename publishes it), else in the
    system's temporary directory."""
    make = getattr(backend, "new_temp_path", None)
    if make is not None:
        return Path(make())
    fd, name = tempfile.mkstemp(prefix=prefix)
    os.close(fd)
    return Path(name)


def is_remote_url(location: str | Path) -> bool:
    return isinstance(location, str) and location.startswith(_OBJECT_SCHEMES)


def parse_location(location: str | os.PathLike[str]) -> str | Path:
    """An object-storage URL (returned as given) or a local directory (a Path, ``~`` expanded).

    A ``Path`` is always a path. A string is a URL when it starts with ``scheme://``:
    the object-storage schemes, or ``file://`` with no host (or ``localhost``);
    anything else is refused.
    """
    if not isinstance(location, str):
        return Path(location).expanduser()
    match = _SCHEME.match(location)
    if match is None:
        return Path(location).expanduser()
    if is_remote_url(location):
        return location
    scheme = match.group(1)
    rest = location[match.end():]
    if scheme == "file":
        host, _, path = rest.partition("/")
        if host not in ("", "localhost"):
            raise InvalidInput(f"{_redact(location)} names host {host!r}; a file:// URL is local: write file:///absolute/path")
        return Path("/" + path)
    if scheme.lower() + "://" in (*_OBJECT_SCHEMES, "file://"):
        raise InvalidInput(f"unsupported store location {_redact(location)}: write the scheme in lower case "
                           f"({_redact(scheme.lower() + '://' + rest)}); objstore reads {SUPPORTED}")
    raise InvalidInput(f"unsupported store location {_redact(location)}: objstore has no {scheme}:// backend; "
                       f"use {SUPPORTED}")


def _redact(url: str) -> str:
    """The URL for a message: credentials in it (``user:secret@``) are never echoed."""
    match = _SCHEME.match(url)
    if match is None:
        return repr(url)
    head, rest = url[: match.end()], url[match.end():]
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        netloc = "***@" + netloc.rsplit("@", 1)[1]
    return repr(head + netloc + slash + path.split("?", 1)[0])


def open_backend(location: str | Path, **options: str) -> Backend:
    """The backend for a local path or an object-storage URL (``s3://bucket/prefix``)."""
    where = parse_location(location)
    if isinstance(where, str):
        from objstore.storage.backend._obstore import ObjectStoreBackend  # obstore is imported only when used

        return ObjectStoreBackend.from_url(where, **options)
    return LocalBackend(where)
