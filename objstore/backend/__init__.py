"""Backends: where a store's bytes live. See :mod:`objstore.backend.base` for the contract."""

from __future__ import annotations

from pathlib import Path

from .base import Backend, KeyInfo, join_key
from ._local import LocalBackend

__all__ = ["Backend", "KeyInfo", "LocalBackend", "join_key", "open_backend", "is_remote_url"]

_OBJECT_SCHEMES = ("s3://", "gs://", "gcs://", "az://", "azure://", "abfs://", "memory://")


def is_remote_url(location: str | Path) -> bool:
    return isinstance(location, str) and location.startswith(_OBJECT_SCHEMES)


def open_backend(location: str | Path, **options: str) -> Backend:
    """The backend for a local path or an object-storage URL (``s3://bucket/prefix``)."""
    if is_remote_url(location):
        from ._obstore import ObjectStoreBackend  # obstore is imported only when used

        return ObjectStoreBackend.from_url(str(location), **options)
    text = str(location)
    if text.startswith("file://"):
        text = text[len("file://"):]
    return LocalBackend(Path(text))
