"""Remotes: named other stores to push to and pull from, like git's remotes.

A remote is a name and a URL (a directory path, ``file://…``, ``s3://bucket/prefix``,
``gs://…``, ``az://…``), kept in the local store under ``remotes/<name>/config``
with a few non-secret settings (endpoint, region). Credentials are never
written: they come from the environment (``AWS_ACCESS_KEY_ID`` …) when the
remote is opened. What the remote's refs held when last seen is kept under
``remotes/<name>/refs/…`` (see :class:`objstore.transfer.tracking.Tracking`).

    import objstore
    store = objstore.Store.open("~/models/.objstore")
    objstore.remote_add(store, "origin", "s3://team-models/store")
    objstore.push(store)                       # everything, to origin
    objstore.pull(store, "origin", ["charlie/mnist/MNIST"])
    clone = objstore.clone("s3://team-models/store", "/data/copy")

A URL may stand where a remote name is expected; its tracking state is then
kept under a name derived from the URL.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import blake3

from objstore.console import say
from objstore.constants import MAX_CONFIG_BYTES
from objstore.errors import InvalidInput, InvalidName, NotFound, did_you_mean
from objstore.model.names import CollectionPath, check_name
from objstore.model.store import CONFIG_KEY, Store, local_directory
from objstore.model.versions import collection_exists
from objstore.settings import config_path, config_remotes, resolve_entity, resolve_project
from objstore.storage.backend import is_remote_url, parse_location
from objstore.storage.keys import REMOTES, remote_config_key, remote_name_of_config, remote_prefix
from objstore.transfer import pull as pulling
from objstore.transfer import push as pushing
from objstore.transfer.sync import Progress, TransferResult, describe, qualify_names
from objstore.transfer.tracking import Tracking

DEFAULT_REMOTE = "origin"

# Settings a remote may carry. Anything secret stays in the environment.
ALLOWED_OPTIONS = ("endpoint", "region", "allow_http")
_SECRET_HINTS = ("secret", "password", "token", "access_key", "credential", "session")


@dataclass(frozen=True)
class Remote:
    """A named remote store: its URL and non-secret options."""

    name: str
    url: str
    options: dict[str, str] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """How messages name it: the name, or the URL for an unnamed one."""
        return self.url if self.name.startswith("url-") else self.name

    @property
    def tracking_prefix(self) -> str:
        return remote_prefix(self.name)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "options": dict(self.options)}

    def open(self, *, create: bool = False, like: Store | None = None) -> Store:
        """Open the remote store; ``create`` makes it (with ``like``'s chunking) if absent."""
        return open_store(self.url, create=create, like=like, options=self.options)


def _config_key(name: str) -> str:
    return remote_config_key(name)


def _check_url(url: str) -> str:
    if not isinstance(url, str) or not url.strip():
        raise InvalidInput("a remote URL is needed: a directory path or s3://bucket/prefix")
    url = url.strip()
    where = parse_location(url)  # the one parser: unknown schemes are refused there
    if isinstance(where, str):
        parsed = urlparse(url)
        if parsed.username or parsed.password or "@" in parsed.netloc:
            raise InvalidInput(f"{_redact(url)} carries credentials; objstore never stores them: "
                               f"give s3://bucket/prefix and set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY")
        if parsed.query:
            raise InvalidInput(f"{_redact(url)} has query parameters; pass settings as options, credentials in the environment")
        return url
    return str(where.absolute())


def _redact(url: str) -> str:
    parsed = urlparse(url)
    if "@" in parsed.netloc:
        return url.replace(parsed.netloc, "***@" + parsed.netloc.rsplit("@", 1)[1])
    return url.split("?", 1)[0]


def _check_options(options: dict[str, str]) -> dict[str, str]:
    out = {}
    for key, value in options.items():
        if any(h in key.lower() for h in _SECRET_HINTS):
            raise InvalidInput(f"remote option {key!r} looks like a credential; objstore never stores those: set it in the environment")
        if key not in ALLOWED_OPTIONS:
            raise InvalidInput(f"unknown remote option {key!r}; use one of {', '.join(ALLOWED_OPTIONS)}")
        out[key] = str(value)
    return out


def remote_add(store: Store, name: str, url: str, **options: str) -> Remote:
    """Record a remote. Refuses a name already in use and any URL carrying credentials."""
    check_name(name, "remote name")
    remote = Remote(name, _check_url(url), _check_options(options))
    body = json.dumps(remote.to_dict(), sort_keys=True).encode()
    if not store.backend.put_if_absent(_config_key(name), body):
        existing = remote_get(store, name)
        if existing.url == remote.url and existing.options == remote.options:
            return existing
        raise InvalidInput(f"remote {name!r} already points at {existing.url}; remove it first (objstore remote remove {name})")
    return remote


def remote_get(store: Store, name: str) -> Remote:
    """The remote called ``name``: the store's, else the user config file's
    ``[remotes.NAME]`` (:mod:`objstore.settings`); or NotFound listing the ones there are."""
    try:
        data = json.loads(store.backend.get(_config_key(name), max_size=MAX_CONFIG_BYTES))
    except NotFound:
        configured = config_remotes().get(name)
        if configured is not None:
            return _configured(name, configured)
        known = [r.name for r in remote_list(store)]
        raise NotFound(f"no remote {name!r} (remotes: {', '.join(known) or 'none'}); "
                       f"add one with 'objstore remote add {name} URL'{did_you_mean(name, known)}", key=name) from None
    except ValueError as exc:
        raise InvalidInput(f"remote {name!r} has a damaged config ({exc}); remove and add it again") from None
    return Remote(name, str(data["url"]), {str(k): str(v) for k, v in dict(data.get("options") or {}).items()})


def _configured(name: str, table: dict[str, str]) -> Remote:
    """A remote of the user config file, checked as ``remote add`` checks one."""
    check_name(name, "remote name")
    options = {k: v for k, v in table.items() if k != "url"}
    return Remote(name, _check_url(table["url"]), _check_options(options))


def remote_list(store: Store) -> list[Remote]:
    """Every remote, by name: the store's, and the user config file's it does not shadow."""
    names = set(config_remotes())
    for info in store.backend.iter_prefix(REMOTES):
        if (name := remote_name_of_config(info.key)) is not None:
            names.add(name)
    out = []
    for name in sorted(names):
        try:
            out.append(remote_get(store, name))
        except (NotFound, InvalidInput):
            continue
    return out


def remote_remove(store: Store, name: str) -> None:
    """Forget a remote and what we knew of its refs (nothing on the remote changes)."""
    remote_get(store, name)
    if name in config_remotes() and not any(True for _ in store.backend.iter_prefix(_config_key(name))):
        raise InvalidInput(f"remote {name!r} comes from the config file {config_path()}; remove it there")
    for info in list(store.backend.iter_prefix(remote_prefix(name))):
        store.backend.delete(info.key)


def resolve_remote(store: Store, remote: str | Remote | None) -> Remote:
    """A Remote for a name, a URL or None (``origin``, else the only remote)."""
    if isinstance(remote, Remote):
        return remote
    if remote is None:
        remotes = remote_list(store)
        by_name = {r.name: r for r in remotes}
        if DEFAULT_REMOTE in by_name:
            return by_name[DEFAULT_REMOTE]
        if len(remotes) == 1:
            return remotes[0]
        if not remotes:
            raise NotFound("this store has no remote; add one with 'objstore remote add origin URL'")
        raise InvalidInput(f"several remotes ({', '.join(by_name)}) and none is 'origin'; name the one to use")
    if is_remote_url(remote) or "/" in remote or remote.startswith((".", "~", "file://")):
        url = _check_url(remote)
        for r in remote_list(store):
            if r.url == url:
                return r
        return Remote("url-" + blake3.blake3(url.encode()).hexdigest()[:16], url)
    try:
        check_name(remote, "remote name")
    except InvalidName:
        raise InvalidInput(f"{remote!r} is neither a remote name nor a URL") from None
    return remote_get(store, remote)


def split_remote_args(store: Store, words: list[str] | tuple[str, ...]) -> tuple[str | None, list[str]]:
    """``[REMOTE] [NAME…]`` as push, fetch and pull take them on a command line: the first
    word is the remote if it is one (the store's or the config file's), a URL or a
    path. A first word without ``/`` that names no collection here is taken as a
    remote too, so a typo (``tema``) is reported as an unknown remote with the close
    names, not as a collection with nothing to push."""
    if not words:
        return None, []
    first = words[0]
    if "://" in first or first.startswith(("/", ".", "~")) or first in {r.name for r in remote_list(store)}:
        return first, list(words[1:])
    if "/" not in first and ":" not in first:
        check_name(first, "remote or collection name")
        if not collection_exists(store, CollectionPath(resolve_entity(), resolve_project(), first)):
            remote_get(store, first)  # raises, naming the remotes there are and the closest
    return None, list(words)


def open_store(url: str, *, create: bool = False, like: Store | None = None, options: dict[str, str] | None = None) -> Store:
    """Open a store by URL with remote options; a missing one is created (with
    ``like``'s chunking, so dedup carries across) only if ``create``.

    The opening itself (config checks included) is :meth:`Store.open`'s. Without the
    local cache: what a transfer reads from a remote is copied into a store anyway."""
    try:
        return Store.open(url, create=create, chunking=like.config.chunking if like else None, options=options,
                          cache=False)
    except NotFound:
        raise NotFound(f"no store at {url}; check the remote URL, or push to it first", key=url) from None


def _local(store: Store | str | os.PathLike[str] | None) -> tuple[Store, bool]:
    if isinstance(store, Store):
        return store, False
    return Store.open_existing(store), True


def _check_compatible(local: Store, remote: Store) -> None:
    if local.config.chunking != remote.config.chunking:
        say(f"note: {remote.location} chunks differently from this store; content is shared only where chunks agree")


def push(store: Store | str | os.PathLike[str] | None, remote: str | Remote | None = None, names: list[str] | None = None, *,
         force: bool = False, progress: Progress | None = None) -> TransferResult:
    """Send this store's versions (all, or the collections in ``names``:
    ``entity/project/name`` or ``entity/project``) to ``remote`` and move its refs.

    Refused with :class:`~objstore.errors.NonFastForward` if the remote has
    versions this store has not pulled, or an alias changed there since the last
    fetch (``force`` overwrites aliases and runs, never versions).
    """
    local, owned = _local(store)
    try:
        r = resolve_remote(local, remote)
        other = r.open(create=True, like=local)
        try:
            _check_compatible(local, other)
            names = qualify_names(names, local)
            result = pushing.push(local, other, tracking=Tracking(local, r.tracking_prefix), names=names,
                                   force=force, progress=progress, remote_label=r.label)
        finally:
            other.close()
        say(describe(result), summary=True)
        return result
    finally:
        if owned:
            local.close()


def fetch(store: Store | str | os.PathLike[str] | None, remote: str | Remote | None = None, names: list[str] | None = None, *,
          progress: Progress | None = None) -> TransferResult:
    """Store what ``remote``'s refs reach and record its refs as tracking state; local refs are unchanged."""
    local, owned = _local(store)
    try:
        r = resolve_remote(local, remote)
        other = r.open()
        try:
            names = qualify_names(names, other, local)
            result, _, _ = pulling.fetch(local, other, tracking=Tracking(local, r.tracking_prefix), names=names,
                                          progress=progress, remote_label=r.label)
        finally:
            other.close()
        say(describe(result), summary=True)
        return result
    finally:
        if owned:
            local.close()


def pull(store: Store | str | os.PathLike[str] | None, remote: str | Remote | None = None, names: list[str] | None = None, *,
         progress: Progress | None = None) -> TransferResult:
    """Fetch, then take the remote's new versions, aliases and runs. Local
    versions the remote lacks are renumbered after the remote's; each
    renumbering is in ``result.renumbered`` and said on stderr."""
    local, owned = _local(store)
    try:
        r = resolve_remote(local, remote)
        other = r.open()
        try:
            names = qualify_names(names, other, local)
            result = pulling.pull(local, other, tracking=Tracking(local, r.tracking_prefix), names=names,
                                   progress=progress, remote_label=r.label)
        finally:
            other.close()
        say(describe(result), summary=True)
        return result
    finally:
        if owned:
            local.close()


# A clone's directory holds this file from before its config is written until
# the clone is done, so a re-run after a crash knows it may carry on.
CLONE_MARKER = "clone-incomplete"


def clone(url: str, dest: str | os.PathLike[str], *, name: str = DEFAULT_REMOTE, progress: Progress | None = None,
          **options: str) -> tuple[Store, TransferResult]:
    """Make a new local store at ``dest`` holding everything of the store at ``url``.

    ``dest`` is the store directory itself; it must not hold a store already,
    unless that store is an interrupted clone of the same ``url``: then the clone
    carries on where it stopped (a transfer re-walks and sends only what is still
    missing). The new store chunks like the source, records it as remote
    ``name``, and is returned open with the transfer's result.
    """
    source = Remote(name, _check_url(url), _check_options(options))
    dest_path = local_directory(dest, "a clone's destination")
    if dest_path.exists() and not dest_path.is_dir():
        raise InvalidInput(f"{dest_path} is a file; clone into a directory")
    resuming = (dest_path / CLONE_MARKER).exists()
    if (dest_path / CONFIG_KEY).exists() and not resuming:
        raise InvalidInput(f"{dest_path} already holds a store; clone into a new directory")
    other = source.open()
    # A failed clone leaves nothing half-made, whatever failed (a damaged remote,
    # a full disk, an interrupt): the topmost directory it created goes, or, in a
    # directory that was there, every entry it added.
    made = _topmost_missing(dest_path)
    before = None if made is not None else set(os.listdir(dest_path))
    local: Store | None = None
    try:
        _mark_clone_started(dest_path)
        local = Store.open(dest_path, create=True, chunking=other.config.chunking)
        _clone_remote(local, source, resuming)
        result = pulling.pull(local, other, tracking=Tracking(local, source.tracking_prefix),
                               progress=progress, remote_label=source.url)
        _mark_clone_done(dest_path)
    except BaseException:
        if local is not None:
            _discard(local)
        _remove_added(dest_path, made, before)  # an interrupted clone's own files were there before: kept
        raise
    finally:
        other.close()
    result.direction = "clone"
    say(describe(result), summary=True)
    return local, result


def _mark_clone_started(dest: Path) -> None:
    """Write the marker (durably) before anything of the store exists."""
    dest.mkdir(parents=True, exist_ok=True)
    marker = dest / CLONE_MARKER
    try:
        with open(marker, "wb") as f:
            os.fsync(f.fileno())
        fd = os.open(dest, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        raise InvalidInput(f"cannot write in {dest} ({exc.strerror}); clone into a directory you can write") from None


def _mark_clone_done(dest: Path) -> None:
    """The clone is whole: remove the marker, last."""
    try:
        (dest / CLONE_MARKER).unlink()
    except FileNotFoundError:
        pass


def _clone_remote(local: Store, source: Remote, resuming: bool) -> None:
    """Record ``source`` as a remote of the clone; an interrupted clone already has
    it (and must be of the same URL to carry on)."""
    if resuming:
        try:
            known = remote_get(local, source.name)
        except NotFound:
            known = None
        if known is not None:
            if known.url != source.url:
                raise InvalidInput(
                    f"{local.location} holds an interrupted clone of {known.url}, not {source.url}; "
                    f"re-run the clone of {known.url}, or clone into a new directory")
            return
    remote_add(local, source.name, source.url, **source.options)


def _topmost_missing(path: Path) -> Path | None:
    """The outermost directory of ``path`` that does not exist yet (None if it exists)."""
    path = path.absolute()
    if path.exists():
        return None
    while not path.parent.exists() and path.parent != path:
        path = path.parent
    return path


def _discard(store: Store) -> None:
    """Close a store without storing its open pack (a failed clone's)."""
    try:
        store.odb.abort()
    finally:
        store.backend.close()


def _remove_added(dest: Path, made: Path | None, before: set[str] | None) -> None:
    if made is not None:
        shutil.rmtree(made, ignore_errors=True)
        return
    try:
        added = set(os.listdir(dest)) - (before or set())
    except OSError:
        return
    for entry in added:
        path = dest / entry
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                path.unlink()
            except OSError:
                pass


__all__ = [
    "DEFAULT_REMOTE", "Remote", "clone", "fetch", "open_store", "pull", "push",
    "remote_add", "remote_get", "remote_list", "remote_remove", "resolve_remote",
]
