"""A store: a backend with its config, object database and refs.

Where a store is, in order (DESIGN.md): the ``store`` argument (a path or an
``s3://`` URL), ``$OBJSTORE_DIR``, the nearest ``.objstore`` directory at or above
the working directory, else ``~/.objstore`` (created on first use). Locations are
parsed by :func:`objstore.storage.backend.parse_location` only: a scheme objstore has no
backend for is an error, never a directory.

:meth:`Store.open` is the one way a store is opened, local or remote (remotes
and clone use it too): its config is untrusted, so :meth:`StoreConfig.decode`
checks the format version (a newer one asks for an upgrade), the types and the
chunking ranges (:func:`check_chunking`, the very rules the chunker applies)
before anything else reads the store, and a bad config is a one-line error,
never a chunker's ``ValueError``.

Formats (``constants.STORE_FORMAT``): new stores are created at format 3; formats
1, 2 and 3 are read and written. Format 2 may hold consolidated index files; a
format-1 store is never written one (the Store tells its object database so), so
the releases that know only format 1 keep using it; reading it never writes to
it. Format 3 is the lineage index's: runs are indexed by the versions they use
and log on every format, but the index is trusted (``lineage/complete``, see
:mod:`objstore.api.runinfo`) only at format 3, because the releases before the
index know at most format 2: they refuse a format-3 store instead of writing
runs the index would not know. :meth:`Store.upgrade` raises a store to format 3
by one compare-and-swap of the config (``objstore maintenance --upgrade``); from
then on the older releases refuse it ("upgrade objstore") instead of missing the
chunks of packs whose ``.idx`` a compaction replaced (from format 1) or writing
runs used-by would miss (from format 1 or 2). A ``lineage/complete`` written at
an older format is deleted by the upgrade (runs older releases wrote since may be
missing from the index); ``objstore maintenance`` then indexes every run once.
A process of an older release that opened the store before the upgrade still
writes as it did until it ends: upgrade once none runs.

Settings: ``index_compact_threshold`` (how many uncovered ``.idx`` files make a
writer merge them; absent means the default, ``constants.INDEX_COMPACT_THRESHOLD``)
is changed by :meth:`Store.set_index_compact_threshold` (``objstore maintenance
--compact-threshold N``), by the same compare-and-swap; releases that do not know
it ignore the key. ``OBJSTORE_INDEX_COMPACT_THRESHOLD`` overrides it per process.
The config changes only by the upgrade and that setting.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeGuard

import msgpack

from objstore import settings
from objstore.constants import INDEX_FILES_FORMAT, LINEAGE_INDEX_FORMAT, MAX_CONFIG_BYTES, PACK_TARGET, STORE_FORMAT, KiB, MiB
from objstore.constants import STORE_DIRNAME as STORE_DIRNAME  # re-exported: the CLI and tests name it here
from objstore.errors import Conflict, CorruptObject, InvalidInput, NotFound
from objstore.model.refs import RefStore
from objstore.storage.backend import Backend, open_backend, parse_location
from objstore.storage.chunking import GEAR, TENSOR_SCANS, Chunker, ChunkParams
from objstore.storage.keys import LINEAGE_COMPLETE
from objstore.storage.odb import ObjectDatabase
from objstore.storage.remotecache import wrap as with_cache
from objstore.storage.repack import AUTO_REPACK_PACKS, repack

CONFIG_KEY = "config"

_CHUNKING_FIELDS = ("avg", "min", "max", "nc")
# The largest index_compact_threshold a store may set: more .idx files than this
# loose would make every open slow whatever it says (0 means never).
MAX_COMPACT_THRESHOLD = 100_000


def check_chunking(params: ChunkParams) -> ChunkParams:
    """Refuse chunking parameters the chunker cannot use (InvalidInput saying the ranges).

    The ranges are pyfastcdc's, applied to what :class:`~objstore.storage.chunking.Chunker`
    hands it (it asks FastCDC for ``avg - min``, see there); building a Chunker is
    the final word, so this can never accept what chunking would refuse.
    """
    values = (params.avg_size, params.min_size, params.max_size, params.normalization)
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise InvalidInput(f"chunking parameters must be integers, got {_show_params(params)}")
    avg, low, high, nc = values
    cdc_avg = max(avg - low, 256)
    why = (
        "min must be 64 B .. 1 MiB" if not 64 <= low <= MiB else
        "max must be 1 KiB .. 16 MiB" if not KiB <= high <= 16 * MiB else
        "avg - min (256 at least) must lie between min and the smaller of max and 4 MiB"
        if not low <= cdc_avg <= min(high, 4 * MiB) else
        "nc (normalization) must be 0 .. 3" if not 0 <= nc <= 3 else
        None
    )
    if why is None:
        try:
            Chunker(params)
        except (ValueError, TypeError, IndexError, OverflowError) as exc:
            why = str(exc)
    if why is not None:
        raise InvalidInput(f"chunking parameters {_show_params(params)} are out of range: {why}")
    return params


def _show_params(params: ChunkParams) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in params.to_dict().items())


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """What a store fixes at creation and never changes (but ``format``, raised by
    :meth:`Store.upgrade`, and the settings, see the module docstring)."""

    format: int
    chunking: ChunkParams
    created_at: float
    index_compact_threshold: int | None = None  # None: the default (constants.INDEX_COMPACT_THRESHOLD)

    def encode(self) -> bytes:
        d: dict[str, object] = {"format": self.format, "chunking": self.chunking.to_dict(), "created_at": self.created_at}
        if self.index_compact_threshold is not None:  # absent otherwise: a store never set is byte for byte as before
            d["index_compact_threshold"] = self.index_compact_threshold
        packed: bytes = msgpack.packb(d)
        return packed

    @classmethod
    def decode(cls, data: bytes, where: object = "this store") -> StoreConfig:
        """Parse and check a store's config (untrusted: a forged store or remote)."""
        damaged = f"the config of the store at {where} is damaged"
        fix = "restore it from a clone or recreate the store"
        try:
            d = msgpack.unpackb(data, raw=False, max_str_len=4096, max_bin_len=4096, max_array_len=64, max_map_len=64)
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            raise CorruptObject(f"{damaged} (not msgpack: {exc}); {fix}") from None
        if not isinstance(d, dict):
            raise CorruptObject(f"{damaged} (not a map); {fix}")
        fmt = d.get("format")
        if not _is_int(fmt) or fmt < 1:
            raise CorruptObject(f"{damaged} (its format field is {fmt!r}, not a format number); {fix}")
        if fmt > STORE_FORMAT:  # checked first: a newer format may lay out everything else differently
            raise InvalidInput(f"the store at {where} has format {fmt}; this objstore reads up to {STORE_FORMAT}: upgrade objstore")
        chunking = d.get("chunking")
        if not isinstance(chunking, dict) or not all(_is_int(chunking.get(k)) for k in _CHUNKING_FIELDS):
            raise CorruptObject(f"{damaged} (its chunking field is {_short(chunking)}, not integers {', '.join(_CHUNKING_FIELDS)}); {fix}")
        scan = chunking.get("tensor", GEAR)
        if scan not in TENSOR_SCANS:
            raise CorruptObject(f"{damaged} (its chunking names tensor scan {_short(scan)}, not one of "
                                f"{', '.join(TENSOR_SCANS)}); {fix}")
        params = ChunkParams(chunking["avg"], chunking["min"], chunking["max"], chunking["nc"], scan)
        try:
            check_chunking(params)
        except InvalidInput as exc:
            raise CorruptObject(f"{damaged} ({exc}); {fix}") from None
        created = d.get("created_at")
        if not isinstance(created, (int, float)) or isinstance(created, bool):
            raise CorruptObject(f"{damaged} (its created_at field is {_short(created)}); {fix}")
        threshold = d.get("index_compact_threshold")
        if threshold is not None and (not _is_int(threshold) or not 0 <= threshold <= MAX_COMPACT_THRESHOLD):
            raise CorruptObject(f"{damaged} (its index_compact_threshold is {_short(threshold)}, not 0 .. "
                                f"{MAX_COMPACT_THRESHOLD}); {fix}")
        return cls(fmt, params, float(created), threshold)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def resolve_location(store: str | os.PathLike[str] | None = None, *, cwd: Path | None = None) -> str | Path:
    """Where the store is: argument, ``$OBJSTORE_DIR``, nearest ``.objstore`` upward,
    the user config file's ``store``, ``~/.objstore`` (the order is :mod:`objstore.settings`')."""
    if store is not None and str(store) != "":
        return parse_location(store)
    env = os.environ.get("OBJSTORE_DIR")
    if env:
        return parse_location(env)
    here = (cwd or Path.cwd()).absolute()
    for directory in (here, *here.parents):
        candidate = directory / STORE_DIRNAME
        if candidate.is_dir():
            return candidate
    configured = settings.user_config().values.get("store")
    if configured:
        return parse_location(os.path.expanduser(configured))
    return Path.home() / STORE_DIRNAME


def init_location(store: str | os.PathLike[str] | None = None, *, cwd: Path | None = None) -> str | os.PathLike[str]:
    """Where a new store is made (``objstore init``): argument, ``$OBJSTORE_DIR``, else
    ``.objstore`` in the working directory, as git init does (never a store found above)."""
    if store is not None and str(store) != "":
        return store
    return os.environ.get("OBJSTORE_DIR") or (cwd or Path.cwd()) / STORE_DIRNAME


def local_directory(location: str | os.PathLike[str], purpose: str) -> Path:
    """``location`` as a local directory, for what must be local (a clone's destination)."""
    where = parse_location(location)
    if not isinstance(where, Path):
        raise InvalidInput(f"{purpose} must be a local directory, not {where}")
    return where


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
        self.odb = ObjectDatabase(backend, index_files=config.format >= INDEX_FILES_FORMAT)
        self.odb.compact_setting = config.index_compact_threshold
        # A writer's automatic step (ObjectDatabase.maintain, after its refs) also repacks a
        # bounded batch of small packs (one pack's worth, at most AUTO_REPACK_PACKS), so a
        # store only writers use never piles them up.
        self.odb.repacker = lambda own: repack(backend, max_bytes=PACK_TARGET, max_packs=AUTO_REPACK_PACKS, keep=own)
        self.refs = RefStore(backend)
        self.chunker = Chunker(config.chunking)

    @classmethod
    def open(cls, location: str | os.PathLike[str] | None = None, *, create: bool = True, chunking: ChunkParams | None = None,
             options: dict[str, str] | None = None, cache: bool = True) -> Store:
        """Open the store at ``location`` (resolved as the module says), creating it if allowed.

        ``chunking`` is used only when creating; ``options`` (endpoint, region …) go to
        an object-storage backend. A remote store reads its immutable values through
        the local cache (:mod:`objstore.storage.remotecache`) unless ``cache`` is False;
        a local one never does. Every opening of a store, local or remote, is this one.
        """
        where = resolve_location(location)
        if create and chunking is not None:
            check_chunking(chunking)  # before anything is created
        if isinstance(where, Path):
            if where.exists() and not where.is_dir():
                raise InvalidInput(f"{where} is a file, not a store directory; pass a directory path")
            if not where.exists():
                if not create:
                    raise NotFound(f"no store at {where}; run 'objstore init' or pass --store", key=str(where))
                try:
                    where.mkdir(parents=True, exist_ok=True)
                except OSError as exc:  # under a file, on a read-only or pseudo file system: the user's input
                    raise InvalidInput(f"cannot create the store directory {where}: {exc.strerror or exc}") from None
        backend = open_backend(where, **(options or {}))
        if cache and not isinstance(where, Path):
            backend = with_cache(backend)
        try:
            try:
                config = StoreConfig.decode(backend.get(CONFIG_KEY, max_size=MAX_CONFIG_BYTES), where)
            except NotFound:
                if not create:
                    raise NotFound(f"no store at {where}; run 'objstore init' or pass --store", key=str(where)) from None
                config = StoreConfig(STORE_FORMAT, chunking or ChunkParams(), time.time())
                if not backend.put_if_absent(CONFIG_KEY, config.encode()):
                    # another process created it first
                    config = StoreConfig.decode(backend.get(CONFIG_KEY, max_size=MAX_CONFIG_BYTES), where)
                else:
                    # A new store has no run yet, so its lineage index (objstore.api.runrecord) is complete.
                    backend.put_if_absent(LINEAGE_COMPLETE, b"every run of this store is in lineage/")
            return cls(backend, config)
        except BaseException:
            backend.close()
            raise

    def upgrade(self) -> bool:
        """Raise the store to ``STORE_FORMAT`` (one compare-and-swap of the config,
        nothing else changed); True if this call did it, False if it already was
        (or a racing process did it first). objstore releases that know only an
        older format refuse the store afterwards."""
        while self.config.format < STORE_FORMAT:
            raw = self.backend.get(CONFIG_KEY, max_size=MAX_CONFIG_BYTES)
            current = StoreConfig.decode(raw, self.location)
            if current.format >= STORE_FORMAT:
                self._use(current)
                break
            upgraded = replace(current, format=STORE_FORMAT)
            try:
                self.backend.compare_and_swap(CONFIG_KEY, raw, upgraded.encode())
            except Conflict:
                continue  # another process changed it meanwhile: read it again
            if current.format < LINEAGE_INDEX_FORMAT:
                # Written at a format older releases still wrote: it may vouch for an
                # index that lacks their runs. After the swap, so none writes one more.
                self.backend.delete(LINEAGE_COMPLETE)
            self._use(upgraded)
            return True
        return False

    def set_index_compact_threshold(self, value: int | None) -> None:
        """Set (None: unset) the store's ``index_compact_threshold``: one
        compare-and-swap of the config, nothing else changed. InvalidInput unless
        0 (never) .. ``MAX_COMPACT_THRESHOLD``."""
        if value is not None and (not _is_int(value) or not 0 <= value <= MAX_COMPACT_THRESHOLD):
            raise InvalidInput(f"the index compaction threshold must be 0 (never) .. {MAX_COMPACT_THRESHOLD}, got {value!r}")
        while True:
            raw = self.backend.get(CONFIG_KEY, max_size=MAX_CONFIG_BYTES)
            current = StoreConfig.decode(raw, self.location)
            changed = replace(current, index_compact_threshold=value)
            if changed == current:
                self._use(current)
                return
            try:
                self.backend.compare_and_swap(CONFIG_KEY, raw, changed.encode())
            except Conflict:
                continue  # another process changed it meanwhile: read it again
            self._use(changed)
            return

    def _use(self, config: StoreConfig) -> None:
        self.config = config
        self.odb.index_files = config.format >= INDEX_FILES_FORMAT
        self.odb.compact_setting = config.index_compact_threshold

    @classmethod
    def open_existing(cls, location: str | os.PathLike[str] | None = None) -> Store:
        return cls.open(location, create=False)

    def close(self) -> None:
        self.odb.maintain()  # flushes first; the automatic step after everything this process wrote
        self.backend.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({self.location!r})"


def init_store(location: str | os.PathLike[str] | None = None) -> tuple[Store, bool]:
    """The store at :func:`init_location` (``location``), created if absent: (store, created)."""
    where = init_location(location)
    try:
        return Store.open_existing(where), False
    except NotFound:
        return Store.open(where, create=True), True
