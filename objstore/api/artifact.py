"""``Artifact``: a set of files to log (a draft), or one logged version of a collection.

Shaped like W&B's ``wandb.Artifact``::

    art = objstore.Artifact("mnist-data", type="dataset", metadata={"rows": 60000})
    art.add_file("train.csv")
    art.add_dir("images/", name="images")
    run.log_artifact(art, aliases=["raw"])
    art.version, art.digest            # "v0", the tree id
    art.aliases.append("best"); art.save()
"""

from __future__ import annotations

import os
import stat as statmod
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from objstore.api.commit import Draft, Staged, commit_draft
from objstore.api.runinfo import RunInfo, find_run, iter_runs, set_artifact_loader
from objstore.errors import ArtifactFinalizedError, CorruptObject, InvalidInput, NotFound, ObjstoreError, UnsupportedError
from objstore.files.materialize import materialize, verify
from objstore.files.references import describe_reference, fetch_reference, is_uri
from objstore.files.safepath import directory_lookup, resolve_link
from objstore.model.names import LATEST, check_aliases, check_name
from objstore.model.store import Store
from objstore.model.versions import (
    ResolvedVersion,
    aliases_for,
    remove_alias_from,
    set_alias,
)
from objstore.storage.objects import FILE, REFERENCE, SYMLINK, TREE, TreeEntry, storable_dict
from objstore.storage.trees import split_path, walk_tree


@dataclass(frozen=True, slots=True)
class ArtifactFile:
    """One file of a logged artifact."""

    path: str
    size: int
    kind: str  # file | reference | symlink
    digest: str | None  # the file id (hex) for stored files
    ref: str | None = None  # a reference's URI or a symlink's target


def check_metadata(metadata: object, what: str = "metadata") -> dict[str, Any]:
    """Metadata (or a run config) as it will be stored: JSON's rules, int keys
    converted to strings (see :func:`objstore.storage.objects.storable_dict`)."""
    return storable_dict(metadata, what)


def _scan_dir(top: Path, prefix: str, staged: dict[str, Staged], ancestors: frozenset[tuple[int, int]]) -> None:
    """Stage ``top``'s contents under ``prefix`` by the rule :meth:`Artifact.add_dir` states.

    ``ancestors`` are the (device, inode) of the directories being scanned above
    ``top``, so a link back to one of them is refused rather than followed forever.
    """
    _DirScan(top, prefix, staged, ancestors).run()


class _DirScan:
    """One :func:`_scan_dir`: a walk of ``top`` staging each entry it finds."""

    def __init__(self, top: Path, prefix: str, staged: dict[str, Staged], ancestors: frozenset[tuple[int, int]]) -> None:
        self.top, self.prefix, self.staged = top, prefix, staged
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
            if not dirnames and not filenames and (rel_dir or self.prefix):
                self.staged[(self.prefix + rel_dir).rstrip("/")] = Staged(TREE, 0, entry=TreeEntry("", TREE, 0, None, 0o755))
            self._enter_subdirectories(dirpath, dirnames, filenames)
            for fname in sorted(filenames):
                self._stage(dirpath, parts, self.prefix + rel_dir + fname, fname)

    def _enter_subdirectories(self, dirpath: str, dirnames: list[str], filenames: list[str]) -> None:
        """Walk into the real subdirectories (noting their ancestry); links among them are judged as entries."""
        for d in list(dirnames):
            full = Path(dirpath, d)
            if full.is_symlink():
                dirnames.remove(d)  # judged as a link below, never walked into as a directory
                filenames.append(d)
            else:
                try:
                    st = full.stat()
                except OSError:
                    raise self.changed(full) from None
                self.above[str(full)] = self.above[dirpath] | {(st.st_dev, st.st_ino)}

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
            _scan_dir(full, rel + "/", self.staged, self.above[dirpath] | {(st.st_dev, st.st_ino)})
            return None
        return st


# The public attributes an Artifact stores when assigned; every other assignment
# raises (Artifact.__setattr__), so nothing set by a script is silently lost.
SETTABLE = ("aliases", "description", "metadata")
# W&B's settable Artifact attributes that objstore does not store (yet), and what to do instead.
_NOT_STORED = {
    "tags": "objstore does not store artifact tags; put them in metadata or use aliases",
    "ttl": "objstore has no time-to-live for versions; versions are kept until deleted",
    "distributed_id": "objstore has no distributed artifacts; log each part as its own artifact, or one draft",
    "incremental": "objstore has no incremental artifacts; a new version stores only the chunks that changed anyway",
}


class Artifact:
    """A versioned set of files. Build one and log it, or get a logged one from
    :meth:`objstore.Run.use_artifact` / :meth:`objstore.Api.artifact`.

    Settable attributes are :data:`SETTABLE` only: ``aliases`` (a draft's are
    given when it is logged, a logged version's persist with :meth:`save`), and a
    draft's ``description`` and ``metadata`` (stored when it is logged; a logged
    version's are immutable, so assigning them raises ArtifactFinalizedError).
    Any other assignment raises: UnsupportedError for W&B attributes objstore does
    not store (``tags``, ``ttl``, ``distributed_id``, ``incremental``) or for a
    read-only one (``name``, ``type``, ``version``, …), and likewise for a name
    the class does not have, so a value set is never accepted and dropped.
    """

    def __init__(self, name: str, type: str, description: str | None = None, metadata: dict[str, Any] | None = None) -> None:
        self._resolved: ResolvedVersion | None = None
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

    def _refuse_if_logged(self, what: str) -> None:
        if self._resolved is not None:
            raise ArtifactFinalizedError(f"'Artifact.{what}' used on logged artifact {self.name}: a logged version's "
                                         f"{what} is immutable; log a new version to change it", name=what, obj=self)

    @property
    def type(self) -> str:
        return self._type

    @property
    def description(self) -> str | None:
        return self._description

    @description.setter
    def description(self, value: str | None) -> None:
        self._refuse_if_logged("description")
        self._description = value  # checked when logged, as metadata is

    @property
    def metadata(self) -> dict[str, Any]:
        return self._metadata

    @metadata.setter
    def metadata(self, value: dict[str, Any]) -> None:
        self._refuse_if_logged("metadata")
        self._metadata = value

    @property
    def created(self) -> bool:
        """True when logging this draft made a new version (False when the content was already a version)."""
        return self._created

    # -- building a draft -------------------------------------------------
    def _require_draft(self) -> None:
        if self._resolved is not None:
            raise InvalidInput(f"{self.name} is logged and immutable; build a new Artifact to add files")

    def _stage(self, path: str, staged: Staged, overwrite: bool) -> None:
        split_path(path, directory=staged.kind == TREE)  # refuse unsafe names and depths now, before anything is read
        if path in self._staged and not overwrite:
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

    def add_dir(self, local_path: str | os.PathLike[str], name: str | None = None) -> None:
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
        _scan_dir(root, prefix, staged, frozenset({(st.st_dev, st.st_ino)}))
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
        draft = Draft(self._name, self.type, self.description, self.metadata, self._staged)
        resolved, created = commit_draft(store, draft, entity, project, run_path, aliases, progress, before_ref)
        # A version this call created holds what it was given, and latest: no need to read them.
        self._bind(store, resolved, sorted({LATEST, *aliases}) if created else None)
        self._created = created
        if self._tmpdir is not None:
            self._tmpdir.cleanup()
            self._tmpdir = None

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

    @classmethod
    def _from_resolved(cls, store: Store, resolved: ResolvedVersion, *, read_aliases: bool = True) -> Artifact:
        art = cls.__new__(cls)
        art._name = resolved.collection.name
        art._tmpdir = None
        art._created = False
        art._bind(store, resolved, read_aliases=read_aliases)
        return art

    # -- a logged version ---------------------------------------------------
    def _logged(self) -> tuple[Store, ResolvedVersion]:
        if self._store is None or self._resolved is None:
            raise InvalidInput(f"artifact {self._name} has not been logged yet; log it with run.log_artifact first")
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
    def created_at(self) -> float:
        return self._logged()[1].version.created_at

    @property
    def source_qualified_name(self) -> str:
        """For a registry entry, the version it links to; else the same as qualified_name."""
        return self._logged()[1].version.label

    def files(self) -> list[ArtifactFile]:
        """The files of this version, in path order."""
        store, resolved = self._logged()
        out = []
        for path, entry in walk_tree(store.odb, resolved.version.tree):
            out.append(ArtifactFile(path, entry.size, entry.kind, entry.id.hex if entry.id else None, entry.target))
        return out

    def default_root(self) -> Path:
        return Path("artifacts") / f"{self._name}:{self.version}"

    def download(self, root: str | os.PathLike[str] | None = None, *, progress: Callable[[int], None] | None = None) -> str:
        """Materialize the version under ``root`` (default ``./artifacts/<name>:<version>``)
        and return that directory. Files already there and intact are not rewritten;
        no link below ``root`` is followed (see :mod:`objstore.files.safepath`)."""
        store, resolved = self._logged()
        target = Path(root) if root is not None else self.default_root()
        try:
            materialize(store.odb, store.chunker, resolved.version.tree, target, progress=progress, fetch_reference=fetch_reference,
                        follow_root=root is not None)  # the default directory is objstore's: a link there is not the caller's
        except CorruptObject as exc:
            # The odb knows the damaged object, only we know the version it breaks.
            breaks = tuple(dict.fromkeys((*exc.breaks, resolved.qualified_name, self.source_qualified_name)))
            raise CorruptObject(exc.args[0], object_id=exc.object_id, expected=exc.expected, actual=exc.actual, breaks=breaks) from exc
        return str(target)

    def verify(self, root: str | os.PathLike[str] | None = None) -> None:
        """Check a downloaded copy; raise VerificationFailed naming the files that differ,
        are missing, or are there although the version does not hold them."""
        store, resolved = self._logged()
        target = Path(root) if root is not None else self.default_root()
        if not target.is_dir():
            raise NotFound(f"{target} does not exist; download the artifact first", key=str(target))
        verify(store.odb, store.chunker, resolved.version.tree, target)

    def save(self) -> None:
        """Persist the changes made to ``aliases`` since this object was loaded (or last saved).

        Only those: an alias added here is pointed at this version (W&B: adding
        an alias moves it), an alias removed here is removed if it still points
        at this version, each by compare-and-swap; aliases this object did not
        change are not touched, so a stale object never undoes another writer's
        move. ``latest`` moves by itself and cannot be added or removed. Checks
        everything before writing anything; afterwards ``aliases`` is re-read.
        """
        store, resolved = self._logged()
        if self.metadata != resolved.version.metadata or self.description != resolved.version.description:
            raise ArtifactFinalizedError("a logged version's metadata and description are immutable; "
                                         "log a new version to change them", name="metadata", obj=self)
        wanted = check_aliases(self.aliases)
        loaded = set(self._saved_aliases)
        added = [a for a in wanted if a not in loaded]
        removed = sorted(loaded - set(wanted))
        if LATEST in added or LATEST in removed:
            raise InvalidInput(f"alias {LATEST!r} is managed by the store: it moves by itself to each new version "
                               "and is never set or removed by hand; use another alias")
        for alias in added:
            set_alias(store, resolved.collection, alias, resolved.object_id)
        for alias in removed:
            remove_alias_from(store, resolved.collection, alias, resolved.object_id)
        self._saved_aliases = aliases_for(store, resolved.collection, resolved.object_id)
        self.aliases = list(self._saved_aliases)

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
        ids = {resolved.version_id.hex, resolved.object_id.hex}
        return [r for r in iter_runs(store) if ids & set(r.inputs)]

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
