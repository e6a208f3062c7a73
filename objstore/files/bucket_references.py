"""Reference entries in object storage: ``s3://bucket/key`` (and ``gs://``, ``az://``
… through obstore), recorded, not copied.

Logging records each object's URI, size and ETag, and with ``checksum=True`` the
BLAKE3 of its bytes (read once, streamed). A URI naming no single object is a
prefix: every object under it becomes an entry, named by its path below the
prefix. Downloading streams the object into the temp file materialize hands it
(:class:`objstore.files.safepath.Destination`: the fetcher never names a path) and checks
size and ETag before and after (and the BLAKE3 when recorded), so an object overwritten since it was logged is
a :class:`~objstore.errors.VerificationFailed` naming it, never silently other
bytes. Credentials come from the environment, as for remote stores.

:func:`register` adds the schemes to :mod:`objstore.files.references`'s resolvers
(``objstore/__init__`` calls it); importing this module registers nothing.
"""

from __future__ import annotations

from typing import BinaryIO
from urllib.parse import urlparse

import blake3

from objstore.constants import MiB
from objstore.errors import InvalidInput, NotFound, VerificationFailed
from objstore.files.references import register_resolver
from objstore.storage.backend import open_backend
from objstore.storage.objects import REFERENCE, TreeEntry

SCHEMES = ("s3", "gs", "gcs", "az", "azure", "abfs")
READ_BLOCK = 8 * MiB  # ranged reads while streaming: bounded memory whatever the object size


def _split(uri: str) -> tuple[str, str, str]:
    parsed = urlparse(uri)
    if parsed.scheme not in SCHEMES or not parsed.netloc:
        raise InvalidInput(f"{uri!r} is not an object-storage URI; use s3://bucket/key")
    if parsed.username or parsed.password:
        raise InvalidInput("reference URIs must not carry credentials; set them in the environment")
    return parsed.scheme, parsed.netloc, parsed.path.lstrip("/")


def _bucket(scheme: str, bucket: str):  # type: ignore[no-untyped-def]
    return open_backend(f"{scheme}://{bucket}")


def _hash_object(backend, key: str, size: int) -> str:  # type: ignore[no-untyped-def]
    h = blake3.blake3()
    for start in range(0, size, READ_BLOCK):
        h.update(backend.get_range(key, start, min(READ_BLOCK, size - start)))
    return h.hexdigest()


def _describe(uri: str, checksum: bool) -> list[tuple[str, TreeEntry]]:
    scheme, bucket, key = _split(uri)
    backend = _bucket(scheme, bucket)
    try:
        found: list[tuple[str, str]] = []  # (relative name, key)
        if key and not key.endswith("/"):
            try:
                backend.head(key)
                found.append((key.rsplit("/", 1)[-1], key))
            except NotFound:
                pass
        if not found:
            prefix = key.rstrip("/") + "/" if key else ""
            found = sorted((info.key[len(prefix):], info.key) for info in backend.iter_prefix(prefix)
                           if not info.key.endswith("/"))
        if not found:
            raise NotFound(f"reference {uri} names no object and no prefix with objects in it; check the URI", key=uri)
        out = []
        for rel, k in found:
            info, etag = backend.head(k)
            extra: dict[str, object] = {"etag": etag} if etag else {}
            if checksum:
                extra["blake3"] = _hash_object(backend, k, info.size)
            target = f"{scheme}://{bucket}/{k}"
            out.append((rel, TreeEntry(k.rsplit("/", 1)[-1], REFERENCE, info.size, None, 0o644, target, extra)))
        return out
    finally:
        backend.close()


def _fetch(entry: TreeEntry, out: BinaryIO) -> None:
    assert entry.target is not None
    uri = entry.target
    scheme, bucket, key = _split(uri)
    backend = _bucket(scheme, bucket)
    try:
        def check() -> None:
            try:
                info, etag = backend.head(key)
            except NotFound:
                raise NotFound(f"referenced object {uri} no longer exists; it was deleted after it was logged", key=uri) from None
            want = entry.extra.get("etag")
            if info.size != entry.size or (want and etag != want):
                why = f"size {entry.size} -> {info.size}" if info.size != entry.size else f"ETag {want} -> {etag}"
                raise VerificationFailed(f"referenced object {uri} changed since it was logged ({why}); log it again to use the new bytes",
                                         paths=(uri,))

        check()
        h = blake3.blake3()
        written = 0
        for start in range(0, entry.size, READ_BLOCK):
            block = backend.get_range(key, start, min(READ_BLOCK, entry.size - start))
            h.update(block)
            out.write(block)
            written += len(block)
        # Checked again after reading: an overwrite during the download is caught too.
        check()
        if written != entry.size or ("blake3" in entry.extra and h.hexdigest() != entry.extra["blake3"]):
            raise VerificationFailed(f"referenced object {uri} changed since it was logged (its bytes differ); "
                                     f"log it again to use the new bytes",
                                     paths=(uri,))
    finally:
        backend.close()


def register() -> None:
    """Handle every object-storage scheme's references here."""
    for scheme in SCHEMES:
        register_resolver(scheme, _describe, _fetch)
