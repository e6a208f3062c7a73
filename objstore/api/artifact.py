"""``Artifact``: a set of files to log (a draft), or one logged version of a collection.

Shaped like W&B's ``wandb.Artifact``::

    art = objstore.Artifact("mnist-data", type="dataset", metadata={"rows": 60000})
    art.add_file("train.csv")
    art.add_dir("images/", name="images")
    run.log_artifact(art, aliases=["raw"])
    art.version, art.digest            # "v0", the tree id
    art.aliases.append("best"); art.save()
    art.description = "tuned"; art.tags = ["prod"]; art.ttl = timedelta(days=30); art.save()
    art.delete(delete_aliases=True)

A logged version's content and digest never change; its description, metadata,
tags and ttl are annotations kept beside it (:mod:`objstore.model.annotations`),
edited by ``save()`` and recorded in :meth:`Artifact.annotation_history`.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import filecmp
import os
import stat as statmod
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import IO, Any

from objstore.api.commit import Draft, Staged, commit_draft, finish_parts, lay_over, store_part, stored_entries
from objstore.api.runinfo import RunInfo, RunLookup, find_run, set_artifact_loader
from objstore.constants import MAX_USER_VALUE_DEPTH
from objstore.errors import (
    ArtifactFinalizedError,
    ArtifactNotLoggedError,
    CorruptObject,
    InvalidInput,
    InvalidName,
    NotFound,
    ObjstoreError,
    UnsupportedError,
)
from objstore.files.ignore import IgnoreRules, is_store, rules_for
from objstore.files.lazytensors import SafetensorsFile, open_safetensors
from objstore.files.materialize import materialize, verify
from objstore.files.references import describe_reference, fetch_reference, is_uri
from objstore.files.safepath import directory_lookup, resolve_link
from objstore.model.annotations import (
    INHERIT,
    AnnotationEdit,
    Annotations,
    Edit,
    annotation_history,
    check_description,
    check_ttl,
    edit_annotations,
    last_edit_time,
    read_annotations,
    same_value,
    unedited_annotations,
)
from objstore.model.deletion import DeletedVersion, delete_version, unlink
from objstore.model.inventory import iter_version_refs
from objstore.model.names import LATEST, REGISTRY_PROJECT, CollectionPath, check_aliases, check_name, check_tags, parse_version_spec
from objstore.model.store import Store
from objstore.model.versions import (
    ResolvedVersion,
    aliases_for,
    link_version,
    remove_alias_from,
    resolve,
    set_alias,
)
from objstore.storage.ids import ObjectId
from objstore.storage.keys import alias_ref, collection_prefix, version_ref
from objstore.storage.objects import FILE, REFERENCE, SYMLINK, TREE, TreeEntry, storable_dict
from objstore.storage.trees import entry_at, split_path, walk_tree


@dataclass(frozen=True, slots=True)
class ArtifactFile:
    """One file of a logged artifact (W&B's ``File`` of ``Artifact.files()``: ``name``, ``size``)."""

    path: str
    size: int
    kind: str  # file | reference | symlink
    digest: str | None  # the file id (hex) for stored files
    ref: str | None = None  # a reference's URI or a symlink's target

    @property
    def name(self) -> str:
        return self.path


# Environment variables naming the directory downloads go to by default: objstore's
# own first, then W&B's; else ./artifacts (made absolute, as W&B does).
ARTIFACT_DIR_VARS = ("OBJSTORE_ARTIFACT_DIR", "WANDB_ARTIFACT_DIR")
MAX_METADATA_KEYS = 100  # W&B's limit on an artifact's top-level metadata keys


def artifact_dir() -> Path:
    """Where downloads go when no root is given (see :data:`ARTIFACT_DIR_VARS`)."""
    for var in ARTIFACT_DIR_VARS:
        if os.environ.get(var):
            return Path(os.environ[var]).absolute()
    return Path("artifacts").absolute()


def _json_friendly(value: Any, depth: int = 0) -> Any:
    """``value`` converted as W&B converts metadata before storing it: numpy scalars
    and arrays to Python values and lists, ``datetime``/``date`` to ISO strings,
    sets to lists, enums that are not also ints or strings to their names,
    dataclasses to dicts. What else it holds is left for :func:`storable_dict` to
    judge, and so is anything nested deeper than it accepts (a value that contains
    itself included: it is refused there, never followed forever here)."""
    if depth > MAX_USER_VALUE_DEPTH:
        return value
    if isinstance(value, Mapping):
        return {k: _json_friendly(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_json_friendly(v, depth + 1) for v in value) if type(value) in (list, tuple) else value
    if isinstance(value, (set, frozenset)):
        return [_json_friendly(v, depth + 1) for v in value]
    if isinstance(value, (_dt.datetime, _dt.date, _dt.time)):
        return value.isoformat()
    if isinstance(value, enum.Enum) and not isinstance(value, (int, str)):
        return value.name
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _json_friendly(dataclasses.asdict(value), depth + 1)
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):  # an ndarray or a numpy scalar
        return _json_friendly(value.tolist(), depth + 1)
    return value


def check_metadata(metadata: object, what: str = "metadata") -> dict[str, Any]:
    """Metadata (or a run config) as it will be stored: converted as W&B converts it
    (:func:`_json_friendly`), then JSON's rules, int keys converted to strings (see
    :func:`objstore.storage.objects.storable_dict`); an artifact's metadata holds at
    most :data:`MAX_METADATA_KEYS` top-level keys, as W&B's."""
    if isinstance(metadata, Mapping):
        metadata = _json_friendly(metadata)
    out = storable_dict(metadata, what)
    if what == "metadata" and len(out) > MAX_METADATA_KEYS:
        raise InvalidInput(f"metadata has {len(out)} keys; an artifact may have at most {MAX_METADATA_KEYS} "
                           f"(as in W&B): nest them under fewer keys")
    return out


def _same_file(old: Staged, new: Staged) -> bool:
    """Whether two staged local files hold the same bytes (a re-add that changes nothing)."""
    if old.kind != FILE or new.kind != FILE or old.source is None or new.source is None or old.size != new.size:
        return False
    try:
        return filecmp.cmp(old.source, new.source, shallow=False)
    except OSError:
        return False


def _scan_dir(top: Path, prefix: str, staged: dict[str, Staged], ancestors: frozenset[tuple[int, int]],
              rules: IgnoreRules, base: str = "") -> None:
    """Stage ``top``'s contents under ``prefix`` by the rule :meth:`Artifact.add_dir` states.

    ``ancestors`` are the (device, inode) of the directories being scanned above
    ``top``, so a link back to one of them is refused rather than followed forever.
    ``rules`` say what is left out (:mod:`objstore.files.ignore`), for paths relative
    to the directory logged: ``base`` is ``top``'s (a linked directory's) place there.
    """
    _DirScan(top, prefix, staged, ancestors, rules, base).run()


class _DirScan:
    """One :func:`_scan_dir`: a walk of ``top`` staging each entry it finds."""

    def __init__(self, top: Path, prefix: str, staged: dict[str, Staged], ancestors: frozenset[tuple[int, int]],
                 rules: IgnoreRules, base: str) -> None:
        self.top, self.prefix, self.staged = top, prefix, staged
        self.rules, self.base = rules, base
        self.lookup = directory_lookup(top)
        self.above: dict[str, frozenset[tuple[int, int]]] = {str(top): ancestors}

    def changed(self, full: Path) -> NotFound:
        # what was listed is gone, or no longer what it was a moment ago (another process at work)
        return NotFound(f"{full} was removed or replaced while {self.top} was being read; log it again", key=str(full))

    def unlistable(self, exc: OSError) -> None:
        # os.walk would skip the directory: its files would vanish from the version unsaid
        if isinstance(exc, FileNotFoundError):
            raise self.changed(Path(str(exc.filename)))
        raise InvalidInput(f"directory {exc.filename} cannot be listed ({exc.strerror or exc}); "
                           f"make it readable or remove it, then log again")

    def run(self) -> None:
        for dirpath, dirnames, filenames in os.walk(self.top, onerror=self.unlistable):
            dirnames.sort()
            here = Path(dirpath).relative_to(self.top)
            parts = () if here == Path(".") else here.parts
            rel_dir = "".join(p + "/" for p in parts)
            if parts and is_store(Path(dirpath), filenames):
                dirnames.clear()  # a store under another name: never logged, never walked
                continue
            if not dirnames and not filenames and (rel_dir or self.prefix):
                self.staged[(self.prefix + rel_dir).rstrip("/")] = Staged(TREE, 0, entry=TreeEntry("", TREE, 0, None, 0o755))
            self._enter_subdirectories(dirpath, rel_dir, dirnames, filenames)
            for fname in sorted(filenames):
                if not self.rules.skips_file(self.base + rel_dir + fname):
                    self._stage(dirpath, parts, self.prefix + rel_dir + fname, fname)

    def _enter_subdirectories(self, dirpath: str, rel_dir: str, dirnames: list[str], filenames: list[str]) -> None:
        """Walk into the real subdirectories the ignore rules keep (noting their ancestry);
        links among them are judged as entries."""
        for d in list(dirnames):
            full = Path(dirpath, d)
            if self.rules.skips_dir(self.base + rel_dir + d, full):
                dirnames.remove(d)
            elif full.is_symlink():
                dirnames.remove(d)  # judged as a link below, never walked into as a directory
                filenames.append(d)
            else:
                try:
                    st = full.stat()
                except OSError:
                    raise self.changed(full) from None
                self.above[os.path.join(dirpath, d)] = self.above[dirpath] | {(st.st_dev, st.st_ino)}

    def _stage(self, dirpath: str, parts: tuple[str, ...], rel: str, fname: str) -> None:
        """Stage the entry ``fname`` of ``dirpath`` as ``rel``: a regular file, or what a link stands for."""
        full = Path(dirpath, fname)
        if full.is_symlink():
            followed = self._follow(dirpath, parts, rel, fname, full)
            if followed is None:
                return
            st = followed
        else:
            try:
                st = full.lstat()
            except FileNotFoundError:
                raise self.changed(full) from None
        if not statmod.S_ISREG(st.st_mode):
            return  # sockets, fifos, devices
        if not os.access(full, os.R_OK):
            raise InvalidInput(f"{full} is not readable (permission denied)")
        self.staged[rel] = Staged(FILE, st.st_size, source=full)

    def _follow(self, dirpath: str, parts: tuple[str, ...], rel: str, fname: str, full: Path) -> os.stat_result | None:
        """A symlink: kept as a link if it leads inside ``top``, else followed. Returns the
        stat of what it leads to when that is to be staged as a file; None when it is
        dealt with here (kept as a link, or a directory scanned in its place)."""
        try:
            target = os.readlink(full)
        except OSError:  # EINVAL: no longer a link
            raise self.changed(full) from None
        found = resolve_link(self.lookup, (*parts, fname), target)
        if found.outcome == "inside":
            self.staged[rel] = Staged(SYMLINK, 0, entry=TreeEntry("", SYMLINK, 0, None, 0o777, target))
            return None
        try:
            st = full.stat()  # following it
        except OSError:
            why = "loops" if found.outcome == "loop" else "leads to nothing"
            raise InvalidInput(f"symlink {full} -> {target!r} {why}; remove it or point it at a file or directory") from None
        if statmod.S_ISDIR(st.st_mode):
            if (st.st_dev, st.st_ino) in self.above[dirpath]:
                raise InvalidInput(f"symlink {full} -> {target!r} leads to a directory that contains it; "
                                   f"remove it or point it elsewhere")
            _scan_dir(full, rel + "/", self.staged, self.above[dirpath] | {(st.st_dev, st.st_ino)}, self.rules,
                      self.base + "".join(p + "/" for p in parts) + fname + "/")
            return None
        return st


class ArtifactTTL(Enum):
    """W&B's: ``artifact.ttl = ArtifactTTL.INHERIT`` drops a version's own ttl (there
    is no team default here, so an inherited ttl never expires it)."""

    INHERIT = 0


# The public attributes an Artifact stores when assigned; every other assignment
# raises (Artifact.__setattr__), so nothing set by a script is silently lost.
SETTABLE = ("aliases", "description", "metadata", "tags", "ttl")
# W&B's settable Artifact attributes that objstore does not store (yet), and what to do instead.
_NOT_STORED = {
    "distributed_id": "it is given by run.upsert_artifact / run.finish_artifact(distributed_id=…), as in W&B",
}


# What modules above this one provide (they build on it, so it cannot import them):
# "collection" (store, path, type) -> ArtifactCollection, from objstore.api.public;
# "save_draft" (artifact, project) -> None, from objstore.api.runs.
_WIRED: dict[str, Callable[..., Any]] = {}


def wire(name: str, fn: Callable[..., Any]) -> None:
    """Register one of :data:`_WIRED`'s providers (done once, when the providing module loads)."""
    _WIRED[name] = fn


def _iso(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).isoformat()


def _last_alias_move(store: Store, coll: CollectionPath, oid: ObjectId) -> float | None:
    """When an alias of ``coll`` other than ``latest`` last moved onto or off entry ``oid`` (its reflogs)."""
    prefix = collection_prefix(coll.entity, coll.project, coll.name) + "aliases/"
    when = [e.when for key in store.refs.iter_names(prefix) if key != alias_ref(coll.entity, coll.project, coll.name, LATEST)
            for e in store.refs.reflog(key) if oid in (e.old, e.new)]
    return max(when, default=None)


def link_target(target_path: object, entity: str) -> CollectionPath:
    """The registered model a link target names: ``name`` (in ``<entity>/model-registry``),
    ``project/name`` or ``entity/project/name``."""
    parts = target_path.split("/") if isinstance(target_path, str) else []
    if len(parts) == 1:
        parts = [entity, REGISTRY_PROJECT, parts[0]]
    elif len(parts) == 2:
        parts = [entity, *parts]
    if len(parts) != 3:
        raise InvalidName(f"{target_path!r} is not a link target; use <registered model>, or entity/model-registry/<name>")
    return CollectionPath(check_name(parts[0], "entity"), check_name(parts[1], "project"),
                          check_name(parts[2], "registered model name"))


@dataclass(frozen=True)
class ArtifactEntry:
    """One entry of an artifact (W&B's ``ArtifactManifestEntry``): ``path``, ``size``,
    ``digest`` (the stored file's id), ``ref`` (a reference's URI or a link's target)."""

    path: str
    size: int
    kind: str
    digest: str | None
    ref: str | None
    artifact: Artifact = field(repr=False, compare=False)

    @property
    def name(self) -> str:
        return self.path

    def download(self, root: str | os.PathLike[str] | None = None, skip_cache: bool | None = None) -> str:
        """Write this entry alone under ``root`` (the artifact's default directory if
        None) and return its absolute path; nothing else of the version is read."""
        return self.artifact._download_only(root, lambda rel: rel == self.path, self.path)

    def ref_url(self) -> str:
        """A URL naming this entry of this version: ``objstore-artifact://<version id>/<path>``."""
        return f"objstore-artifact://{self.artifact.id}/{self.path}"


@dataclass(frozen=True)
class ArtifactManifest:
    """W&B's manifest: the entries by path."""

    entries: dict[str, ArtifactEntry]


class Artifact:
    """A versioned set of files. Build one and log it, or get a logged one from
    :meth:`objstore.Run.use_artifact` / :meth:`objstore.Api.artifact`.

    Settable attributes are :data:`SETTABLE` only: ``aliases`` (a draft's are
    given when it is logged, a logged version's persist with :meth:`save`),
    ``description``, ``metadata`` and ``ttl`` (a draft's stored when it is logged,
    a logged version's with :meth:`save`), and a logged version's ``tags`` (a
    draft has none to set, as in W&B: ArtifactNotLoggedError). Any other
    assignment raises: UnsupportedError for W&B attributes objstore does not
    store (``distributed_id``) or for a read-only one (``incremental``, ``name``,
    ``type``, ``version``, …), and likewise for a name the class does not have,
    so a value set is never accepted and dropped.

    ``incremental=True`` (W&B's): when logged, the draft is laid over the
    collection's latest version in that store: the new version holds latest's
    files, with the draft's added or replacing those at the same path (a draft
    file at ``a/b`` replaces a file ``a``, a draft entry ``a`` everything under
    it). With no latest yet it is the draft alone. The latest read when it is
    logged is the base; a version logged by another writer meanwhile is not in it
    (as W&B's server, which merges at creation).
    """

    def __init__(self, name: str, type: str, description: str | None = None, metadata: dict[str, Any] | None = None,
                 incremental: bool = False) -> None:
        self._resolved: ResolvedVersion | None = None
        self._incremental = bool(incremental)
        self._name = check_name(name, "artifact name")
        self._type = check_name(type, "artifact type")
        self._description = description
        self._metadata = check_metadata(metadata)
        self._staged: dict[str, Staged] = {}
        self._tmpdir: tempfile.TemporaryDirectory[str] | None = None
        self._store: Store | None = None
        self._saved_aliases: list[str] = []
        self._aliases: list[str] | None = []  # None: a logged version's, not read yet
        self._created = False
        self._origin: Store | None = None  # the store new_draft() took the entries from
        self._distributed_id: str | None = None  # set when upserted as a part of a distributed version
        self._init_annotations()

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_") or name in SETTABLE:
            object.__setattr__(self, name, value)  # a property's setter still runs
            return
        cls = type(self)
        if name in _NOT_STORED:
            raise UnsupportedError(f"Artifact.{name} cannot be set: {_NOT_STORED[name]}")
        if isinstance(getattr(cls, name, None), property):
            raise UnsupportedError(f"Artifact.{name} is read-only; the settable attributes are {', '.join(SETTABLE)}")
        raise UnsupportedError(f"Artifact has no attribute {name!r} to set; the settable attributes are {', '.join(SETTABLE)}")

    @property
    def aliases(self) -> list[str]:
        """The aliases (a logged version's are read from the store on first use: a
        command that never looks at them, like use_model, never lists them)."""
        if self._aliases is None:
            store, resolved = self._logged()
            self._saved_aliases = aliases_for(store, resolved.collection, resolved.object_id)
            self._aliases = list(self._saved_aliases)
        return self._aliases

    @aliases.setter
    def aliases(self, value: list[str]) -> None:
        if self._aliases is None:
            self.aliases  # noqa: B018 - what save() compares against is the stored aliases, read first
        self._aliases = value

    @property
    def type(self) -> str:
        return self._type

    @property
    def description(self) -> str | None:
        return self._description

    @description.setter
    def description(self, value: str | None) -> None:
        self._description = value  # checked when logged or saved, as metadata is

    @property
    def metadata(self) -> dict[str, Any]:
        return self._metadata

    @metadata.setter
    def metadata(self, value: dict[str, Any]) -> None:
        self._metadata = value

    @property
    def created(self) -> bool:
        """True when logging this draft made a new version (False when the content was already a version)."""
        return self._created

    # -- building a draft -------------------------------------------------
    def _require_draft(self) -> None:
        if self._resolved is not None:
            raise InvalidInput(f"{self.name} is logged and immutable; build a new Artifact to add files")
        if self._distributed_id is not None:
            raise ArtifactFinalizedError(f"{self.name} was upserted as a part of {self._distributed_id!r} and is "
                                         "finalized, as in W&B; build a new Artifact for more files", name="add", obj=self)

    def _stage(self, path: str, staged: Staged, overwrite: bool) -> None:
        split_path(path, directory=staged.kind == TREE)  # refuse unsafe names and depths now, before anything is read
        if path in self._staged and not overwrite:
            if _same_file(self._staged[path], staged):
                return  # the same path with the same bytes again: nothing changes (as W&B)
            raise InvalidInput(f"{path!r} is already in the artifact; pass overwrite=True to replace it")
        self._staged[path] = staged

    def add_file(self, local_path: str | os.PathLike[str], name: str | None = None, *, overwrite: bool = False) -> None:
        """Add one local file, as ``name`` (default: its base name)."""
        self._require_draft()
        p = Path(local_path)
        if not p.exists():
            raise NotFound(f"{p} does not exist; check the path", key=str(p))
        if not p.is_file():
            raise InvalidInput(f"{p} is not a regular file; use add_dir for a directory")
        if not os.access(p, os.R_OK):
            raise InvalidInput(f"{p} is not readable (permission denied)")
        self._stage(name or p.name, Staged(FILE, p.stat().st_size, source=p), overwrite)

    def add_dir(self, local_path: str | os.PathLike[str], name: str | None = None, *,
                exclude: Sequence[str] = ()) -> None:
        """Add a directory's contents (recursively), under ``name`` if given.

        Empty directories are kept. A symlink is kept as a symlink when it leads to
        a file or directory inside the directory (resolved as the kernel does, never
        above the directory at any step); materialize applies the same rule
        (:func:`objstore.files.safepath.resolve_link`), so such a link can always be
        written back; logging checks that again over the whole draft, since links
        from two calls can combine into one that leaves. Any other symlink is followed: a link to a file outside stores
        that file's bytes, a link to a directory outside stores that directory's
        contents (its own links judged the same way, with it as the directory), and a
        link that leaves and re-enters (``../m/file.bin`` inside ``m``) stores the
        file it reaches. A link that leads nowhere (dangling, a loop, or a directory
        that contains the link itself) is refused with :class:`InvalidInput` naming
        it, and so is a directory that cannot be listed: nothing is dropped silently.
        Sockets, FIFOs and devices hold no bytes to store and are skipped.

        Never added (:mod:`objstore.files.ignore`): a store inside the directory, the
        downloads directory (:func:`artifact_dir`), and what the directory's
        ``.objstoreignore`` or the gitignore patterns in ``exclude`` match.
        """
        self._require_draft()
        root = Path(local_path)
        if not root.exists():
            raise NotFound(f"{root} does not exist; check the path", key=str(root))
        if not root.is_dir():
            raise InvalidInput(f"{root} is not a directory; use add_file for a file")
        prefix = f"{name.strip('/')}/" if name else ""
        staged: dict[str, Staged] = {}
        st = root.stat()
        rules = rules_for(root, exclude, never=[artifact_dir()])
        _scan_dir(root, prefix, staged, frozenset({(st.st_dev, st.st_ino)}), rules)
        if not staged and prefix:
            staged[prefix.rstrip("/")] = Staged(TREE, 0, entry=TreeEntry("", TREE, 0, None, 0o755))
        for rel, item in staged.items():
            self._stage(rel, item, overwrite=True)

    @contextmanager
    def new_file(self, name: str, mode: str = "x", encoding: str | None = None) -> Iterator[IO[Any]]:
        """Write a new file straight into the artifact.

        >>> art = Artifact("notes", type="dataset")
        >>> with art.new_file("hello.txt") as f:
        ...     _ = f.write("hello")
        """
        self._require_draft()
        split_path(name)
        if self._tmpdir is None:
            self._tmpdir = tempfile.TemporaryDirectory(prefix="objstore-new-")
        # a fresh short name, not the entry's: a name of the file system's full length has no room for more
        fd, tmpname = tempfile.mkstemp(dir=self._tmpdir.name)
        os.close(fd)
        local = Path(tmpname)
        open_mode = mode.replace("x", "w")
        with open(local, open_mode, encoding=encoding if "b" not in open_mode else None) as f:
            yield f
        self._stage(name, Staged(FILE, local.stat().st_size, source=local), overwrite="x" not in mode)

    def add_reference(self, uri: str, name: str | None = None, checksum: bool = True) -> None:
        """Record an external file or prefix (``file://…``, ``s3://bucket/key``) without copying it.

        Its size and checksum (ETag, or BLAKE3 when ``checksum`` reads the bytes) are
        kept so :meth:`download` can refuse an object that changed since.
        """
        self._require_draft()
        if not isinstance(uri, str) or not is_uri(uri):
            raise InvalidInput(f"{uri!r} is not a URI; use add_file for local files or give file:///abs/path")
        entries = describe_reference(uri, checksum)
        if not entries:
            raise NotFound(f"reference {uri} matched no objects", key=uri)
        single = len(entries) == 1 and name is not None
        for rel, entry in entries:
            path = name if single and name is not None else (f"{name.strip('/')}/{rel}" if name else rel)
            self._stage(path, Staged(REFERENCE, entry.size, entry=entry), overwrite=True)

    # -- logging ----------------------------------------------------------
    def _commit(self, store: Store, entity: str, project: str, run_path: str | None, aliases: tuple[str, ...],
                progress: Callable[[int], None] | None = None, before_ref: Callable[[], None] | None = None) -> None:
        """Log this draft through :func:`objstore.api.commit.commit_draft` and become the version it made."""
        self._require_draft()
        self._check_ready_entries(store)
        staged = self._over_latest(store, entity, project) if self._incremental else self._staged
        draft = Draft(self._name, self.type, self.description, check_metadata(self.metadata), staged)
        resolved, created = commit_draft(store, draft, entity, project, run_path, aliases, progress, before_ref)
        ttl_set, ttl = self._ttl_changed, self._ttl
        # A version this call created holds what it was given, and latest: no need to read them.
        self._bind(store, resolved, sorted({LATEST, *aliases}) if created else None)
        self._created = created
        if ttl_set:
            self._store_draft_ttl(ttl)
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

    def _over_latest(self, store: Store, entity: str, project: str) -> dict[str, Staged]:
        """An incremental draft's entries: the collection's latest version's, with the draft's laid over them."""
        try:
            base = resolve(store, parse_version_spec(f"{self._name}:{LATEST}", entity=entity, project=project))
        except NotFound:
            return self._staged  # nothing logged yet: the draft alone
        return lay_over(stored_entries(store, base.version.tree), self._staged)

    def _upsert(self, store: Store, entity: str, project: str, run_path: str | None, distributed_id: str,
                aliases: tuple[str, ...], progress: Callable[[int], None] | None = None,
                before_ref: Callable[[], None] | None = None) -> None:
        """Store this draft as a part pending in ``distributed_id`` (W&B's
        ``upsert_artifact``); it stays a draft (state ``PENDING``), finalized."""
        self._require_draft()
        self._check_ready_entries(store)
        draft = Draft(self._name, self.type, self.description, check_metadata(self.metadata), self._staged)
        store_part(store, draft, entity, project, distributed_id, run_path, aliases, progress, before_ref)
        self._distributed_id = distributed_id

    def _finish(self, store: Store, entity: str, project: str, run_path: str | None, distributed_id: str,
                aliases: tuple[str, ...], progress: Callable[[int], None] | None = None,
                before_ref: Callable[[], None] | None = None) -> list[str]:
        """Log the parts pending in ``distributed_id`` with this draft laid over them
        (W&B's ``finish_artifact``) and become that version; return the runs that upserted the parts."""
        if self._resolved is not None:
            raise ArtifactFinalizedError(f"{self.qualified_name} is logged already; finish_artifact takes a draft",
                                         name="finish_artifact", obj=self)
        self._check_ready_entries(store)
        draft = Draft(self._name, self.type, self.description, check_metadata(self.metadata), self._staged)
        resolved, created, parts = finish_parts(store, draft, entity, project, distributed_id, run_path, aliases,
                                                progress, before_ref)
        self._bind(store, resolved, sorted({LATEST, *(a for p in parts for a in p.aliases), *aliases}) if created else None)
        self._created = created
        self._distributed_id = distributed_id
        return sorted({p.record.run for p in parts if p.record.run})

    @property
    def distributed_id(self) -> str | None:
        """W&B's: the id of the distributed version this artifact was upserted into or finished (read-only)."""
        return self._distributed_id

    @property
    def incremental(self) -> bool:
        """W&B's: whether this draft is logged over the collection's latest version (read-only)."""
        return self._incremental

    def _bind(self, store: Store, resolved: ResolvedVersion, aliases: list[str] | None = None, *,
              read_aliases: bool = True) -> None:
        """Become the logged version ``resolved``. Its aliases are a snapshot taken now
        (a stale object never undoes another writer's move, see :meth:`save`):
        ``aliases`` when the caller knows them, else read, unless ``read_aliases`` is
        False (an object that never leaves objstore reads them on first use, if ever)."""
        self._store = store
        self._resolved = resolved
        self._staged = {}
        version = resolved.version
        self._type = version.artifact_type
        self._description = version.description
        self._metadata = dict(version.metadata)
        self._saved_aliases = []
        self._aliases = None
        if aliases is not None:
            self._saved_aliases = list(aliases)
            self._aliases = list(aliases)
        elif read_aliases:
            self.aliases  # noqa: B018 - the snapshot, read now
        # A version this call created has no edits yet; an internal object (use_model's) shows none either.
        fresh = aliases is not None or not read_aliases
        self._show_annotations(unedited_annotations(resolved) if fresh else read_annotations(store, resolved))

    @classmethod
    def _from_resolved(cls, store: Store, resolved: ResolvedVersion, *, read_aliases: bool = True) -> Artifact:
        art = cls.__new__(cls)
        art._name = resolved.collection.name
        art._tmpdir = None
        art._created = False
        art._origin = None
        art._incremental = False
        art._distributed_id = None
        art._init_annotations()
        art._bind(store, resolved, read_aliases=read_aliases)
        return art

    # -- a logged version ---------------------------------------------------
    def _logged(self) -> tuple[Store, ResolvedVersion]:
        if self._store is None or self._resolved is None:
            raise ArtifactNotLoggedError(f"artifact {self._name} has not been logged yet; log it with run.log_artifact first",
                                         name="logged", obj=self)
        return self._store, self._resolved

    def is_draft(self) -> bool:
        return self._resolved is None

    @property
    def name(self) -> str:
        """``name:vN`` once logged, the bare name before."""
        return self._resolved.name if self._resolved else self._name

    @property
    def collection_name(self) -> str:
        return self._name

    @property
    def qualified_name(self) -> str:
        return self._logged()[1].qualified_name

    @property
    def entity(self) -> str:
        return self._logged()[1].collection.entity

    @property
    def project(self) -> str:
        return self._logged()[1].collection.project

    @property
    def version(self) -> str:
        return f"v{self._logged()[1].index}"

    @property
    def id(self) -> str:
        """The id of the version object (for a registry entry, of the link)."""
        return self._logged()[1].object_id.hex

    @property
    def digest(self) -> str:
        """The id of the version's tree: equal content, equal digest."""
        return self._logged()[1].version.digest

    @property
    def size(self) -> int:
        if self._resolved is None:
            return sum(s.size for s in self._staged.values())
        return self._resolved.version.size

    @property
    def new_bytes(self) -> int:
        """Stored bytes this version added to the store when it was logged."""
        return self._logged()[1].version.new_bytes

    @property
    def source_qualified_name(self) -> str:
        """For a registry entry, the version it links to; else the same as qualified_name."""
        return self._logged()[1].version.label

    def files(self, names: list[str] | None = None, per_page: int = 50) -> list[ArtifactFile]:
        """The files of this version, in path order; only those at ``names`` if given
        (as W&B's; ``per_page`` is accepted and ignored: the list is whole)."""
        store, resolved = self._logged()
        wanted = None if names is None else set(names)
        out = []
        for path, entry in walk_tree(store.odb, resolved.version.tree):
            if wanted is None or path in wanted:
                out.append(ArtifactFile(path, entry.size, entry.kind, entry.id.hex if entry.id else None, entry.target))
        return out

    def default_root(self) -> Path:
        """``<artifact dir>/<name>:<version>``, absolute (see :func:`artifact_dir`)."""
        return artifact_dir() / f"{self._name}:{self.version}"

    def download(self, root: str | os.PathLike[str] | None = None, allow_missing_references: bool = False,
                 skip_cache: bool | None = None, path_prefix: str | os.PathLike[str] | None = None,
                 multipart: bool | None = None, *, progress: Callable[[int], None] | None = None) -> str:
        """Materialize the version under ``root`` (default :meth:`default_root`) and
        return that directory's absolute path. ``path_prefix`` (``/``-separated, as
        W&B's) writes only the entries whose path starts with it, and reads nothing
        else. Files already there and intact are not rewritten; no link below ``root``
        is followed (see :mod:`objstore.files.safepath`). ``allow_missing_references``,
        ``skip_cache`` and ``multipart`` are accepted and ignored (a changed reference
        is always refused; there is no separate cache to skip)."""
        if path_prefix is None:
            return self._download_only(root, None, None, progress)
        prefix = Path(path_prefix).as_posix() if not isinstance(path_prefix, str) else path_prefix
        return self._download_only(root, lambda rel: rel.startswith(prefix), None, progress)

    def _download_only(self, root: str | os.PathLike[str] | None, only: Callable[[str], bool] | None, one: str | None,
                       progress: Callable[[int], None] | None = None) -> str:
        """Materialize what ``only`` accepts (everything if None); the root's absolute
        path, or that of the entry ``one`` under it."""
        store, resolved = self._logged()
        target = (Path(root) if root is not None else self.default_root()).absolute()
        try:
            materialize(store.odb, store.chunker, resolved.version.tree, target, progress=progress, fetch_reference=fetch_reference,
                        follow_root=root is not None, only=only)  # the default directory is objstore's: a link there is not the caller's
        except CorruptObject as exc:
            # The odb knows the damaged object, only we know the version it breaks.
            breaks = tuple(dict.fromkeys((*exc.breaks, resolved.qualified_name, self.source_qualified_name)))
            raise CorruptObject(exc.args[0], object_id=exc.object_id, expected=exc.expected, actual=exc.actual, breaks=breaks) from exc
        return str(target / one) if one is not None else str(target)

    def safe_open(self, name: str, framework: str = "np") -> SafetensorsFile:
        """Open the safetensors file ``name`` of this version for lazy reads, as
        ``safetensors.safe_open(path, framework="np")`` would a local one: ``keys()``,
        ``metadata()``, ``get_tensor(name)`` (numpy; BF16 as uint16 bits),
        ``get_slice(name)[a:b]``; a context manager. Reads the header now and each
        tensor's own chunks when asked, from a local or a remote store, nothing
        else (see :mod:`objstore.files.lazytensors`)."""
        store, resolved = self._logged()
        entry = entry_at(store.odb, resolved.version.tree, name)
        return open_safetensors(store.odb, entry, f"{name} in {resolved.qualified_name}", framework)

    def verify(self, root: str | os.PathLike[str] | None = None) -> None:
        """Check a downloaded copy; raise VerificationFailed naming the files that differ,
        are missing, or are there although the version does not hold them."""
        store, resolved = self._logged()
        target = Path(root) if root is not None else self.default_root()
        if not target.is_dir():
            raise NotFound(f"{target} does not exist; download the artifact first", key=str(target))
        verify(store.odb, store.chunker, resolved.version.tree, target)

    def save(self, project: str | None = None, settings: object = None) -> None:
        """Persist the changes made to ``aliases``, ``description``, ``metadata``,
        ``tags`` and ``ttl`` since this object was loaded (or last saved).
        A draft is logged instead (:meth:`_save_draft`, as W&B).

        Only those: an alias added here is pointed at this version (W&B: adding
        an alias moves it), an alias removed here is removed if it still points
        at this version, each by compare-and-swap; aliases this object did not
        change are not touched, so a stale object never undoes another writer's
        move. ``latest`` moves by itself and cannot be added or removed. The
        annotations likewise: only the description, the metadata keys, the tags
        and the ttl changed here are written, in one compare-and-swap, so edits
        by other processes to other keys and tags are kept
        (:mod:`objstore.model.annotations`); each save is one entry of
        :meth:`annotation_history`. Checks everything before writing anything;
        afterwards the aliases and annotations are re-read.
        """
        if self._resolved is None:
            return self._save_draft(project)
        store, resolved = self._logged()
        edit = self._annotation_edit()
        wanted = check_aliases(self.aliases)
        loaded = set(self._saved_aliases)
        added = [a for a in wanted if a not in loaded]
        removed = sorted(loaded - set(wanted))
        if LATEST in added or LATEST in removed:
            raise InvalidInput(f"alias {LATEST!r} is managed by the store: it moves by itself to each new version "
                               "and is never set or removed by hand; use another alias")
        self._require_not_deleted()
        for alias in added:
            set_alias(store, resolved.collection, alias, resolved.object_id)
        for alias in removed:
            remove_alias_from(store, resolved.collection, alias, resolved.object_id)
        shown = edit_annotations(store, resolved, edit) if not edit.is_empty() else read_annotations(store, resolved)
        self._saved_aliases = aliases_for(store, resolved.collection, resolved.object_id)
        self.aliases = list(self._saved_aliases)
        self._show_annotations(shown)

    # -- annotations: tags, ttl, their edits (objstore.model.annotations) --------
    def _init_annotations(self) -> None:
        self._tags: list[str] = []
        self._ttl: int | None | str = INHERIT
        self._ttl_changed = False
        self._saved_annotations: Annotations | None = None

    def _show_annotations(self, shown: Annotations) -> None:
        """Take ``shown`` as what this logged version has (and what ``save`` diffs against)."""
        self._saved_annotations = shown
        self._description = shown.description
        self._metadata = dict(shown.metadata)
        self._tags = list(shown.tags)
        self._ttl = shown.ttl
        self._ttl_changed = False

    @property
    def tags(self) -> list[str]:
        """A logged version's tags (W&B's tag rule); set them and :meth:`save`. A
        draft has none (``[]``, as W&B) and refuses them until logged."""
        if self._resolved is None:
            return []
        return self._tags

    @tags.setter
    def tags(self, value: list[str]) -> None:
        if self._resolved is None:
            raise ArtifactNotLoggedError(f"'Artifact.tags' used on draft {self._name}: tags are set on a logged "
                                         "version (log it first, or pass tags= when logging)", name="tags", obj=self)
        self._tags = list(check_tags(value))

    @property
    def ttl(self) -> timedelta | None:
        """How long after it was logged the version is deleted (``objstore gc`` expires
        it, see :func:`objstore.model.deletion.expire_versions`); None: never.

        As W&B: a draft's (or an edited version's) inherited ttl is unknown until
        logged or saved (ArtifactNotLoggedError); a logged version that inherits
        has None, since a store has no team default.
        """
        if self._ttl == INHERIT:
            if self._resolved is None or self._ttl_changed:
                raise ArtifactNotLoggedError(f"'Artifact.ttl' of {self.name} is inherited and not known until it is "
                                             "logged or saved", name="ttl", obj=self)
            return None
        return None if self._ttl is None else timedelta(seconds=int(self._ttl))

    @ttl.setter
    def ttl(self, value: timedelta | ArtifactTTL | None) -> None:
        if self._resolved is not None and self._resolved.link is not None:
            raise InvalidInput(f"cannot set the ttl of {self.name}, a registry link; unlink it or set the ttl of "
                               f"{self._resolved.version.label}, the version it links to")
        if isinstance(value, ArtifactTTL):
            stored: int | None | str = INHERIT
        elif value is None:
            stored = None
        elif isinstance(value, timedelta):
            if value.total_seconds() <= 0:
                raise InvalidInput(f"ttl must be a positive duration, got {value}")
            stored = check_ttl(max(1, int(value.total_seconds())))
        else:
            raise InvalidInput(f"ttl must be a datetime.timedelta, None or ArtifactTTL.INHERIT, not {type(value).__name__}")
        self._ttl = stored
        self._ttl_changed = True

    def _annotation_edit(self) -> Edit:
        """What ``save`` writes: the annotations changed since loaded, checked."""
        saved = self._saved_annotations
        assert saved is not None  # bound with the version
        description = check_description(self._description)
        metadata = check_metadata(self._metadata)
        tags = check_tags(self._tags)
        changed_meta = {k: v for k, v in metadata.items() if k not in saved.metadata or not same_value(saved.metadata[k], v)}
        return Edit(
            description=description, set_description=description != saved.description,
            metadata_set=changed_meta, metadata_delete=tuple(k for k in saved.metadata if k not in metadata),
            tags_add=tuple(t for t in tags if t not in saved.tags), tags_remove=tuple(t for t in saved.tags if t not in tags),
            ttl=self._ttl, set_ttl=self._ttl_changed,
        )

    def _store_draft_ttl(self, ttl: int | None | str) -> None:
        """A draft's ttl, set before it was logged, given to the version it became."""
        store, resolved = self._logged()
        self._show_annotations(edit_annotations(store, resolved, Edit(ttl=ttl, set_ttl=True)))

    def _require_not_deleted(self) -> None:
        store, resolved = self._logged()
        coll = resolved.collection
        if store.refs.read(version_ref(coll.entity, coll.project, coll.name, resolved.index)) != resolved.object_id:
            raise NotFound(f"{resolved.qualified_name} was deleted", key=resolved.qualified_name)

    def annotation_history(self) -> list[AnnotationEdit]:
        """Every edit of this version's annotations since it was logged, oldest first:
        who, when, and each field's old and new value (objstore's; W&B keeps none)."""
        store, resolved = self._logged_for("annotation_history")
        return annotation_history(store, resolved)

    # -- deleting --------------------------------------------------------------
    def delete(self, delete_aliases: bool = False) -> None:
        """Delete this version (W&B's). Refused (VersionInUse, a CommError) while it has
        aliases, unless ``delete_aliases`` removes them with it, or while a registered
        model links to it. On a registry link, only the link goes (:meth:`unlink`).
        Its number is never given again; ``objstore gc`` frees its bytes after its
        grace period (see :mod:`objstore.model.deletion`)."""
        store, resolved = self._logged_for("delete")
        self._deleted_as(delete_version(store, resolved, delete_aliases=delete_aliases))

    def unlink(self) -> None:
        """Remove this registry link from its registered model (W&B's); the version it
        links to stays. InvalidInput (a ValueError, as W&B's) if this is no link."""
        store, resolved = self._logged_for("unlink")
        self._deleted_as(unlink(store, resolved))

    def _logged_for(self, what: str) -> tuple[Store, ResolvedVersion]:
        if self._resolved is None:
            raise ArtifactNotLoggedError(f"'Artifact.{what}' used on draft {self._name}: log it first", name=what, obj=self)
        return self._logged()

    def _deleted_as(self, done: DeletedVersion) -> None:
        self._saved_aliases = []
        self.aliases = []

    @property
    def logged_by_path(self) -> str | None:
        """``entity/project/run-id`` of the run that logged (or linked) this version."""
        _, resolved = self._logged()
        return resolved.link.run if resolved.link is not None else resolved.version.run

    def logged_by(self) -> RunInfo | None:
        """The run that logged this version; None if it names none, or names one that
        is not in this store (a run is lineage, not content: a transfer or a crash
        may leave it out)."""
        store, _ = self._logged()
        path = self.logged_by_path
        return find_run(store, path) if path else None

    def used_by(self) -> list[RunInfo]:
        store, resolved = self._logged()
        # By the lineage index: a listing and the runs it names, not every run (runinfo.RunLookup).
        return [RunInfo.from_record(r, store) for r in RunLookup(store).runs("used", {resolved.version_id, resolved.object_id})]

    # -- per-file access and the draft lifecycle (W&B's names) ---------------
    @property
    def manifest(self) -> ArtifactManifest:
        """The entries of the version (or of the draft), by path: W&B's ``manifest.entries``."""
        if self._resolved is None:
            return ArtifactManifest({p: ArtifactEntry(p, s.size, s.kind, None, s.entry.target if s.entry else None, self)
                                     for p, s in sorted(self._staged.items()) if s.kind != TREE})
        return ArtifactManifest({f.path: ArtifactEntry(f.path, f.size, f.kind, f.digest, f.ref, self) for f in self.files()})

    @property
    def file_count(self) -> int:
        return len(self.manifest.entries)

    def get_entry(self, name: str | os.PathLike[str]) -> ArtifactEntry:
        """The entry at ``name`` of a logged version; KeyError (as W&B) if it holds none there."""
        self._logged()
        path = Path(name).as_posix()
        entry = self.manifest.entries.get(path)
        if entry is None:
            raise KeyError(f"Path not contained in artifact {self.name}: {path}")
        return entry

    def get_path(self, name: str | os.PathLike[str]) -> ArtifactEntry:
        """W&B's older name for :meth:`get_entry`."""
        return self.get_entry(name)

    def file(self, root: str | os.PathLike[str] | None = None) -> str:
        """Download the version's only file and return its absolute path; InvalidInput
        (a ValueError, as W&B's) when the version holds more than one."""
        entries = self.manifest.entries
        if len(entries) != 1:
            raise InvalidInput(f"{self.name} holds {len(entries)} files, not one; call download() to get them all "
                               f"or get_entry(name).download() for one")
        return next(iter(entries.values())).download(root)

    def wait(self, timeout: int | None = None) -> Artifact:
        """Return this artifact: logging (and upserting a part) is synchronous here, so a
        logged or upserted one has nothing to wait for (W&B waits for the upload, not the
        finish); a draft that was never logged raises ArtifactNotLoggedError."""
        if self._resolved is None and self._distributed_id is None:
            raise ArtifactNotLoggedError(f"'Artifact.wait' used on draft {self._name}: log it with run.log_artifact first",
                                         name="wait", obj=self)
        return self

    def new_draft(self) -> Artifact:
        """A draft holding this version's entries, name (the source collection's, for a
        registry entry), type, description and metadata: change it and log it as the
        next version. Its entries are the stored files themselves, so it is logged into
        the same store (another store is refused)."""
        store, resolved = self._logged()
        version = resolved.version
        draft = Artifact(version.name, type=version.artifact_type, description=version.description,
                         metadata=dict(version.metadata))
        entries = list(walk_tree(store.odb, version.tree, include_dirs=True))
        parents = {p.rsplit("/", 1)[0] for p, _ in entries if "/" in p}
        for path, entry in entries:
            if entry.kind != TREE or path not in parents:  # a directory is an entry only when empty
                draft._staged[path] = Staged(entry.kind, entry.size, entry=entry)
        draft._origin = store
        return draft

    def remove(self, item: str | os.PathLike[str] | ArtifactEntry) -> None:
        """Remove a file from the draft, or every file under a directory; NotFound
        (a FileNotFoundError, as W&B's) when it holds neither."""
        if self._resolved is not None:
            raise ArtifactFinalizedError(f"'Artifact.remove' used on logged artifact {self.name}: a logged version "
                                         f"is immutable; call new_draft() and remove from that", name="remove", obj=self)
        self._require_draft()  # an upserted part is finalized too
        path = item.path if isinstance(item, ArtifactEntry) else Path(item).as_posix().strip("/")
        if path in self._staged:
            del self._staged[path]
            return
        under = [p for p in self._staged if p.startswith(path + "/")]
        if not under or not path:
            raise NotFound(f"No such file or directory in artifact {self._name}: {path}", key=path)
        for p in under:
            del self._staged[p]

    def add(self, obj: object, name: str, overwrite: bool = False) -> None:
        """W&B's ``add`` of a media object (a ``wandb.Table``, an image) is not offered:
        objstore stores files, and has no W&B media types to serialize them."""
        raise UnsupportedError(f"Artifact.add(obj, {name!r}) of a W&B media object is not offered; "
                               f"write the object to a file and add it with add_file")

    def link(self, target_path: str, aliases: Iterable[str] | None = None) -> Artifact:
        """Link this logged version into the registered model ``target_path``
        (``name``, ``project/name`` or ``entity/project/name``; the entity and the
        ``model-registry`` project by default) and return the link; no run is recorded
        as the linker. A draft raises ArtifactNotLoggedError: log it first (or use
        ``run.link_artifact``, which logs it)."""
        if self._resolved is None:
            raise ArtifactNotLoggedError(f"'Artifact.link' used on draft {self._name}: log it first, "
                                         f"or call run.link_artifact(artifact, target_path)", name="link", obj=self)
        store, resolved = self._logged()
        registry = link_target(target_path, resolved.collection.entity)
        entry, _ = link_version(store, registry, resolved, run=None, aliases=check_aliases(list(aliases or ())))
        return artifact_of(store, entry)

    @property
    def state(self) -> str:
        """W&B's: ``PENDING`` for a draft, ``COMMITTED`` once logged."""
        return "PENDING" if self._resolved is None else "COMMITTED"

    @property
    def is_link(self) -> bool:
        """True for a registry entry (a link to a version of another collection)."""
        return self._logged()[1].link is not None

    @property
    def source_entity(self) -> str:
        return self._logged()[1].version.entity

    @property
    def source_project(self) -> str:
        return self._logged()[1].version.project

    @property
    def source_name(self) -> str:
        version = self._logged()[1].version
        return f"{version.name}:v{version.index}"

    @property
    def source_version(self) -> str:
        return f"v{self._logged()[1].version.index}"

    @property
    def collection(self) -> Any:
        """The collection this version is in (a registry entry: the registered model),
        as :class:`objstore.api.public.ArtifactCollection`."""
        return self._collection_of(self._logged()[1].collection)

    @property
    def source_collection(self) -> Any:
        """The collection of the version a registry entry links to (else :attr:`collection`)."""
        v = self._logged()[1].version
        return self._collection_of(CollectionPath(v.entity, v.project, v.name))

    def _collection_of(self, coll: CollectionPath) -> Any:
        return _WIRED["collection"](self._logged()[0], coll, self.type)

    @property
    def source_artifact(self) -> Artifact:
        """The version a registry entry links to (itself for a version)."""
        store, resolved = self._logged()
        if resolved.link is None:
            return self
        return artifact_of(store, resolve(store, parse_version_spec(resolved.version.label, entity=None, project=None)))

    @property
    def linked_artifacts(self) -> list[Artifact]:
        """The registry entries that link to this version (empty for a link itself)."""
        store, resolved = self._logged()
        if resolved.link is not None:
            return []
        return [artifact_of(store, resolve(store, parse_version_spec(ref.label, entity=None, project=None)))
                for ref in iter_version_refs(store, strict=False)
                if ref.link is not None and ref.version_id == resolved.version_id]

    @property
    def url(self) -> str:
        """Where the version is: ``<store url>#<entity>/<project>/<name>:vN`` (no web page here)."""
        store, resolved = self._logged()
        return f"{store.location}#{resolved.qualified_name}"

    @property
    def created_timestamp(self) -> float:
        """When the version was logged, in seconds since the epoch."""
        return self._logged()[1].version.created_at

    @property
    def created_at(self) -> str:
        """When the version was logged, as an ISO 8601 string in UTC (W&B's form)."""
        return _iso(self.created_timestamp)

    @property
    def updated_at(self) -> str:
        """W&B's: when the version last changed, as an ISO 8601 string in UTC. Content
        is immutable here, so: its last annotation edit (description, metadata,
        tags, ttl) or the last move of an alias onto or off it, else when it was
        logged. ``latest`` is the store's, moved by logging others: not an edit of this one."""
        store, resolved = self._logged()
        edited = last_edit_time(store, resolved)
        moved = _last_alias_move(store, resolved.collection, resolved.object_id)
        return _iso(max(t for t in (resolved.version.created_at, edited, moved) if t is not None))

    def _save_draft(self, project: str | None) -> None:
        """W&B's ``save()`` of a draft: log it as an output of the current run, or of a
        run of job type ``auto`` started (in ``project``, if given) and finished for it."""
        _WIRED["save_draft"](self, project)

    def _check_ready_entries(self, store: Store) -> None:
        origin = getattr(self, "_origin", None)
        if origin is not None and origin is not store and origin.location != store.location:
            raise InvalidInput(f"draft {self._name} was made by new_draft() from {origin.location}; "
                               f"its files are stored there: log it into that store")

    def __repr__(self) -> str:
        if self._resolved is None:
            return f"<Artifact draft {self._name!r} type={self.type!r} files={len(self._staged)}>"
        return f"<Artifact {self.qualified_name} type={self.type!r} digest={self.digest[:12]}>"

    def __del__(self) -> None:
        tmp = getattr(self, "_tmpdir", None)
        if tmp is not None:
            try:
                tmp.cleanup()
            except (OSError, ObjstoreError):
                pass


def artifact_of(store: Store, resolved: ResolvedVersion, *, read_aliases: bool = True) -> Artifact:
    """The logged version ``resolved`` of ``store`` as an :class:`Artifact` (what
    ``Api.artifact`` and ``run.use_artifact`` hand out). ``read_aliases=False`` for one
    that is never handed out (its aliases are read only if it is asked for them)."""
    return Artifact._from_resolved(store, resolved, read_aliases=read_aliases)


def logged_version(art: Artifact) -> tuple[Store, ResolvedVersion]:
    """The store and version a logged artifact is; InvalidInput for a draft."""
    return art._logged()


def log_draft(art: Artifact, store: Store, entity: str, project: str, run_path: str | None, aliases: tuple[str, ...],
              progress: Callable[[int], None] | None = None, before_ref: Callable[[], None] | None = None) -> None:
    """Store the draft ``art`` in ``store`` as a new version of ``entity/project/<its name>``
    (or find the version already holding its content) and bind ``art`` to it.
    ``before_ref`` runs once everything the version names is stored and before its
    ref is claimed (see :func:`objstore.api.commit.commit_draft`)."""
    art._commit(store, entity, project, run_path, aliases, progress, before_ref=before_ref)


set_artifact_loader(artifact_of)
