"""A store: a backend with its config, object database and refs.

Where a store is, in order (DESIGN.md): the ``store`` argument (a path or an
``s3://`` URL), ``$OBJSTORE_DIR``, the nearest ``.objstore`` directory at or above
the working directory, else ``~/.objstore`` (created on first use).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

import msgpack

from .backend import Backend, is_remote_url, open_backend
from .chunking import Chunker, ChunkParams
from .constants import MAX_CONFIG_BYTES, STORE_FORMAT
from .errors import CorruptObject, InvalidInput, NotFound
from .odb import ObjectDatabase
from .refs import RefStore

CONFIG_KEY = "config"
STORE_DIRNAME = ".objstore"


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """What a store fixes at creation and never changes."""

    format: int
    chunking: ChunkParams
    created_at: float

    def encode(self) -> bytes:
        return msgpack.packb({"format": self.format, "chunking": self.chunking.to_dict(), "created_at": self.created_at})

    @classmethod
    def decode(cls, data: bytes) -> "StoreConfig":
        try:
            d = msgpack.unpackb(data, raw=False, max_str_len=4096, max_map_len=64)
            return cls(int(d["format"]), ChunkParams.from_dict(d["chunking"]), float(d["created_at"]))
        except (ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
            raise CorruptObject(f"the store's config is damaged ({exc}); restore it from a clone or recreate the store") from exc


def resolve_location(store: str | os.PathLike[str] | None = None, *, cwd: Path | None = None) -> str | Path:
    """Where the store is: argument, ``$OBJSTORE_DIR``, nearest ``.objstore`` upward, ``~/.objstore``."""
    if store is not None and str(store) != "":
        return str(store) if is_remote_url(str(store)) else Path(store).expanduser()
    env = os.environ.get("OBJSTORE_DIR")
    if env:
        return env if is_remote_url(env) else Path(env).expanduser()
    here = (cwd or Path.cwd()).absolute()
    for directory in (here, *here.parents):
        candidate = directory / STORE_DIRNAME
        if candidate.is_dir():
            return candidate
    return Path.home() / STORE_DIRNAME


class Store:
    """An opened store. Use :meth:`open` (create if missing) or :meth:`open_existing`.

    >>> import tempfile
    >>> store = Store.open(tempfile.mkdtemp())
    >>> store.config.chunking.avg_size
    65536
    """

    def __init__(self, backend: Backend, config: StoreConfig) -> None:
        self.backend = backend
        self.config = config
        self.location = backend.url
        self.odb = ObjectDatabase(backend)
        self.refs = RefStore(backend)
        self.chunker = Chunker(config.chunking)

    @classmethod
    def open(cls, location: str | os.PathLike[str] | None = None, *, create: bool = True, chunking: ChunkParams | None = None) -> "Store":
        """Open the store at ``location`` (resolved as the module says), creating it if allowed."""
        where = resolve_location(location)
        if isinstance(where, Path):
            if where.exists() and not where.is_dir():
                raise InvalidInput(f"{where} is a file, not a store directory; pass a directory path")
            if not where.exists():
                if not create:
                    raise NotFound(f"no store at {where}; run 'objstore init' or pass --store", key=str(where))
                where.mkdir(parents=True, exist_ok=True)
        backend = open_backend(where)
        try:
            config = StoreConfig.decode(backend.get(CONFIG_KEY, max_size=MAX_CONFIG_BYTES))
        except NotFound:
            if not create:
                raise NotFound(f"no store at {where}; run 'objstore init' or pass --store", key=str(where)) from None
            config = StoreConfig(STORE_FORMAT, chunking or ChunkParams(), time.time())
            if not backend.put_if_absent(CONFIG_KEY, config.encode()):
                config = StoreConfig.decode(backend.get(CONFIG_KEY, max_size=MAX_CONFIG_BYTES))  # another process created it first
        if config.format > STORE_FORMAT:
            raise InvalidInput(f"the store at {where} has format {config.format}; this objstore reads up to {STORE_FORMAT}: upgrade objstore")
        return cls(backend, config)

    @classmethod
    def open_existing(cls, location: str | os.PathLike[str] | None = None) -> "Store":
        return cls.open(location, create=False)

    def close(self) -> None:
        self.odb.flush()
        self.backend.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.location!r})"
