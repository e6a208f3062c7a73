"""``Run``: one execution of a script, logging and using artifacts (W&B's ``wandb.Run``).

A run is recorded as a :class:`~objstore.storage.objects.RunRecord` behind the ref
``refs/<entity>/<project>/runs/<id>``; a change stores a new record and moves the
ref by compare-and-swap. Runs carry the lineage graph: what each run used and
what it logged.

When the record is written: changes (an input, an output, config, the final
state) are held by the Run and written together, so a command writes the
record once or twice, not once per change:

- before the ref of a version or link that names the run is claimed (objects
  before refs: no crash leaves a version naming a run the store never
  recorded), the record is stored with every change held so far, in state
  ``running``: the one write crash-safety needs;
- when a version is used (``use_model``, ``use_artifact``), with the input:
  lineage must not depend on the process living on, so a process killed
  outright (SIGKILL, the OOM killer, power loss) right after still names what
  it used;
- when the run finishes, with its final state;
- at interpreter exit, for a run never finished (state stays ``running``, as it
  did when every change was written at once).

So a ``use_model`` command writes two records (at use, and at finish), a
``log_model`` command two (before the version ref, and at finish). What a
process killed outright had changed since its last write (config, summary) is
not recorded; the versions it logged still name it.
"""

from __future__ import annotations

import atexit
import builtins
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, cast

from objstore.api.artifact import Artifact, artifact_of, check_metadata, link_target, log_draft, logged_version, wire
from objstore.api.naming import artifact_name_for, default_run_name, new_run_id
from objstore.api.runconfig import RunValues, config_values
from objstore.api.runinfo import RunInfo, find_run, iter_runs, read_run, read_run_by_path, record_at  # noqa: F401  (re-exported)
from objstore.api.runrecord import Written, add_output, create_record, update_record, with_input, with_output
from objstore.console import human_bytes, say
from objstore.errors import InvalidInput, MissingArgument, UnsupportedError, UsageError, WrongType
from objstore.files.references import is_uri
from objstore.model.distributed import check_distributed_id
from objstore.model.nameclaims import claim_names
from objstore.model.names import REGISTRY_PROJECT, CollectionPath, check_aliases, check_name, check_tags, parse_version_spec
from objstore.model.refs import encode_value
from objstore.model.store import Store
from objstore.model.versions import link_version, refuse_case_twin, resolve
from objstore.settings import resolve_entity, resolve_project, resolve_run_id
from objstore.storage.keys import run_ref, runs_prefix
from objstore.storage.objects import RunRecord, storable_text
from objstore.storage.trees import walk_tree


class Run:
    """A run: log and use models and artifacts, with lineage recorded.

    >>> import objstore, tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()); (d / "model.bin").write_bytes(b"weights")
    7
    >>> with objstore.init(project="demo", entity="doc", store=d / "store") as run:
    ...     art = run.log_model(path=str(d / "model.bin"), name="demo-model")
    >>> art.version
    'v0'
    """

    disabled = False

    def __setattr__(self, name: str, value: Any) -> None:
        # Every public attribute a Run has is set in __init__; anything else a script
        # sets (a typo, a W&B attribute objstore does not keep) raises, never lost.
        if not name.startswith("_") and name not in RUN_ATTRIBUTES:
            raise UnsupportedError(f"Run has no attribute {name!r} to set; the settable ones are "
                                   f"{', '.join(sorted(RUN_SETTABLE))} (config values go in run.config)")
        object.__setattr__(self, name, value)

    def __init__(self, store: Store, *, entity: str, project: str, name: str | None, config: dict[str, Any] | None,
                 job_type: str | None, id: str | None, tags: tuple[str, ...] = (), notes: str | None = None,
                 group: str | None = None, resume: str | None = None) -> None:
        self.store = store
        self.entity = check_name(entity, "entity")
        self.project = check_name(project, "project")
        self.id = check_name(id, "run id") if id is not None else new_run_id()
        self.job_type = check_name(job_type, "job type") if job_type is not None else None
        self.tags, self.notes, self.group = tags, notes, group
        name = storable_text(name, "run name")
        self.name = name or default_run_name()
        self._finished = False
        self._started_at = time.time()
        # The record is written when a ref is about to name the run, and when it
        # finishes (see the module docstring), not here: a run whose every call was
        # refused as bad input leaves the store exactly as it was.
        self._recorded = False
        self._written: Written | None = None  # the record this process stored last
        self._pending: list[Callable[[RunRecord], RunRecord]] = []  # changes not yet stored
        self._write_lock = threading.Lock()
        # Whether the run's entity and project are known to be spelled as in the store
        # (something of this run's was found or made there): then its first record
        # needs no name-claim look-up (objstore.model.nameclaims).
        self._names_checked = False
        self._id_given = id is not None
        self.config = RunValues("config", config, self._config_changed)
        self.summary = RunValues("summary")  # stored with the run's next write: a log() is not a write each
        # A new random id needs no look-up: the create-only write of its record
        # refuses an id in use. A given id may name a run to resume.
        held = store.refs.read(run_ref(self.entity, self.project, self.id)) if id is not None else None
        exists = held is not None
        if id is not None and not exists:
            refuse_case_twin(store, [run_ref(self.entity, self.project, self.id)], [runs_prefix(self.entity, self.project)])
        if exists and resume == "never":
            raise UsageError(f"run {self.path} exists and resume='never'; pass another id, or resume='allow'")
        if not exists and resume == "must":
            raise UsageError(f"no run {self.path} to resume and resume='must'; pass the id of a run in the store")
        if exists:  # resuming a run by id
            self._names_checked = True
            previous = record_at(store, self.entity, self.project, self.id, held)  # the ref just read, not again
            self._written = Written(previous, encode_value(held))
            self.name = name or previous.name
            self.config.setdefaults(previous.config)
            self.summary.update(previous.summary)
            self.tags = tags or previous.tags
            self.notes = notes if notes is not None else previous.notes
            self.group = group if group is not None else previous.group
            self._recorded = True
            self._change(lambda r: replace(r, state="running", finished_at=None))

    def _config_changed(self) -> None:
        # stored with the run's next write, like every change (_with_values reads it then)
        if self._recorded and not self._finished:
            self._change(lambda r: r)

    def _change(self, change: Callable[[RunRecord], RunRecord]) -> None:
        """Hold ``change`` until the record is next written (see the module docstring)."""
        with self._write_lock:
            self._pending.append(change)
        _unwritten.add(self)

    def _record_start(self) -> None:
        """Store the record with every change held so far: a ref is about to name the run."""
        self._write()

    def _record_checked(self) -> None:
        """:meth:`_record_start` where the store has just checked (or claimed) the run's
        entity and project names: logging into them found them so spelled, or made them."""
        self._names_checked = True
        self._write()

    def _claim_names(self) -> None:
        """Before the first record: the run's entity, project and (a given) id must have
        no case twin, also against a process making one at this instant
        (:func:`objstore.model.nameclaims.claim_names`). A run whose names were
        checked by its own use or log costs nothing here; a random id is not
        claimed (lower case, fresh: it has no twin but by a given id's, checked at init)."""
        ref = run_ref(self.entity, self.project, self.id)
        if self._names_checked and not self._id_given:
            return
        def listed() -> None:
            refuse_case_twin(self.store, [ref], [runs_prefix(self.entity, self.project)])
        claim_names(self.store, self.entity, self.project, run_id=self.id if self._id_given else None,
                    unclaimed=listed, skip_upper=self._names_checked)

    def _write(self) -> None:
        """Store the record: created with the held changes applied, or moved to them."""
        with self._write_lock:
            pending, self._pending = self._pending, []
            _unwritten.discard(self)

            def change(r: RunRecord) -> RunRecord:
                for step in pending:
                    r = step(r)
                return self._with_values(r)

            try:
                if not self._recorded:
                    self._claim_names()
                    base = RunRecord(self.id, self.entity, self.project, self.name, {}, self.job_type,
                                     self._started_at, None, "running", (), ())
                    self._written = create_record(self.store, change(base))
                    self._recorded = True
                else:
                    self._written = update_record(self.store, self.entity, self.project, self.id, change, self._written)
            except BaseException:
                self._pending = pending + self._pending  # not stored: kept for the next write
                raise

    def _with_values(self, record: RunRecord) -> RunRecord:
        """``record`` holding this run's config, summary, tags, notes and group as they are now."""
        return replace(record, name=self.name, config={**record.config, **self.config.as_dict()},
                       summary={**record.summary, **self.summary.as_dict()},
                       tags=tuple(self.tags), notes=self.notes or None, group=self.group or None)

    def _found(self, coll: CollectionPath) -> None:
        """A collection was read through its refs: if it is in the run's own project,
        the run's entity and project are spelled as in the store."""
        if (coll.entity, coll.project) == (self.entity, self.project):
            self._names_checked = True

    def log(self, data: dict[str, Any], step: int | None = None, commit: bool | None = None) -> None:
        """Record ``data``'s values as the run's latest (its summary), stored with the
        run's next change or when it finishes. Only the summary is kept, not each
        step's history: ``step`` and ``commit`` are accepted and ignored."""
        self._check_open()
        if not isinstance(data, dict):
            raise InvalidInput(f"run.log takes a dict of metric names to values, not {type(data).__name__}")
        self.summary.update(data)

    # -- the run record -------------------------------------------------
    @property
    def path(self) -> str:
        return f"{self.entity}/{self.project}/{self.id}"


    def _check_open(self) -> None:
        if self._finished:
            raise InvalidInput(f"run {self.path} has finished; start a new run with objstore.init()")

    # -- artifacts ------------------------------------------------------
    def log_artifact(self, artifact_or_path: Artifact | str | os.PathLike[str], name: str | None = None,
                     type: str | None = None, aliases: list[str] | None = None, tags: list[str] | None = None, *,
                     progress: Callable[[int], None] | None = None) -> Artifact:
        """Log an Artifact (or a path, as a new artifact) as this run's output.
        ``tags`` are checked by W&B's tag rule before anything is written, then
        added to the version's tags (``Artifact.tags`` + ``save``)."""
        self._check_open()
        wanted = check_aliases(aliases)
        new_tags = check_tags(tags)
        if isinstance(artifact_or_path, Artifact):
            art = artifact_or_path
            if art.is_draft():  # aliases set on the draft are given to the version too, as in W&B
                wanted = check_aliases(list(dict.fromkeys([*art.aliases, *wanted])))
        else:
            art = self._artifact_from_path(artifact_or_path, name, type or "unspecified", None, None)
        # The run's record is stored before the version's ref is claimed (objects
        # before refs), so no crash leaves a version naming an unrecorded run.
        log_draft(art, self.store, self.entity, self.project, self.path, wanted, progress, before_ref=self._record_checked)
        self._change(with_output(logged_version(art)[1].version_id))
        if new_tags:
            art.tags = list(dict.fromkeys([*art.tags, *new_tags]))
            art.save()
        shown = art.aliases
        alias_note = f" (aliases: {', '.join(shown)})" if shown else ""
        if art.created:
            say(f"logged {art.qualified_name}: {human_bytes(art.size)}, {human_bytes(art.new_bytes)} new{alias_note}", summary=True)
        else:
            say(f"{art.qualified_name} already holds this content (digest {art.digest[:12]}); no new version{alias_note}", summary=True)
        return art

    def upsert_artifact(self, artifact_or_path: Artifact | str | os.PathLike[str], name: str | None = None,
                        type: str | None = None, aliases: list[str] | None = None,
                        distributed_id: str | None = None) -> Artifact:
        """W&B's: add an artifact's files to the distributed version ``distributed_id``
        (default: the run's group) of its collection, as a part pending until some
        run calls :meth:`finish_artifact`; returns the artifact, finalized, in state
        ``PENDING``. Parts from any number of processes and machines are all kept
        (each its own create-only ref, see :mod:`objstore.model.distributed`)."""
        self._check_open()
        dist = self._distributed_id(distributed_id, "upsert")
        wanted = check_aliases(aliases)
        art = self._prepared(artifact_or_path, name, type)
        art._upsert(self.store, self.entity, self.project, self.path, dist, wanted, before_ref=self._record_checked)
        say(f"upserted {len(art.manifest.entries)} file(s) into {art.name} ({dist!r}); pending until finish_artifact",
            summary=True)
        return art

    def finish_artifact(self, artifact_or_path: Artifact | str | os.PathLike[str], name: str | None = None,
                        type: str | None = None, aliases: list[str] | None = None,
                        distributed_id: str | None = None) -> Artifact:
        """W&B's: log every part pending in ``distributed_id`` (default: the run's
        group) of the collection, with this artifact's own files laid over them, as
        one version, output of this run and of each run that upserted a part. A
        part upserted after this call listed them goes into the next version."""
        self._check_open()
        dist = self._distributed_id(distributed_id, "finish")
        wanted = check_aliases(aliases)
        art = self._prepared(artifact_or_path, name, type)
        runs = art._finish(self.store, self.entity, self.project, self.path, dist, wanted,
                           before_ref=self._record_checked)
        version_id = logged_version(art)[1].version_id
        self._change(with_output(version_id))
        for path in runs:
            if path != self.path:
                add_output(self.store, path, version_id)
        made = "logged" if art.created else "already held as"
        say(f"{made} {art.qualified_name} from {dist!r} ({len(runs)} upserting run(s))", summary=True)
        return art

    def _distributed_id(self, distributed_id: str | None, verb: str) -> str:
        if distributed_id is None and not self.group:
            raise MissingArgument(f"Cannot {verb} artifact unless run is in a group or distributed_id is provided")
        return check_distributed_id(distributed_id if distributed_id is not None else self.group)

    def _prepared(self, artifact_or_path: Artifact | str | os.PathLike[str], name: str | None,
                  type: str | None) -> Artifact:
        if isinstance(artifact_or_path, Artifact):
            return artifact_or_path
        if not isinstance(artifact_or_path, str | os.PathLike):
            raise InvalidInput(f"pass an Artifact or a path, not {builtins.type(artifact_or_path).__name__}")
        return self._artifact_from_path(artifact_or_path, name, type or "unspecified", None, None)

    def _artifact_from_path(self, path: str | os.PathLike[str], name: str | None, type: str,
                            metadata: dict[str, Any] | None, description: str | None,
                            exclude: Sequence[str] = ()) -> Artifact:
        text = os.fspath(path)
        name = artifact_name_for(text, name, self.id)
        art = Artifact(name, type=type, description=description, metadata=metadata)
        if is_uri(text):
            art.add_reference(text)
        elif os.path.isdir(text):
            art.add_dir(text, exclude=exclude)
        else:
            art.add_file(text)
        return art

    def use_artifact(self, artifact_or_name: Artifact | str, type: str | None = None,
                     aliases: list[str] | None = None, use_as: str | None = None) -> Artifact:
        """Mark a logged version as this run's input and return it (not yet downloaded).
        A draft is logged first, as this run's output (as W&B). ``aliases`` are
        pointed at the version used (W&B: moved there). ``use_as`` is accepted and ignored."""
        self._check_open()
        wanted = check_aliases(aliases)
        if isinstance(artifact_or_name, Artifact) and artifact_or_name.is_draft():
            self.log_artifact(artifact_or_name)
        if isinstance(artifact_or_name, Artifact):
            store, resolved = logged_version(artifact_or_name)
            art = artifact_or_name
        else:
            spec = parse_version_spec(artifact_or_name, entity=self.entity, project=self.project)
            resolved = resolve(self.store, spec)
            self._found(resolved.collection)
            art = artifact_of(self.store, resolved)
        if type is not None and resolved.version.artifact_type != type:
            raise WrongType(f"{art.qualified_name} is of type {resolved.version.artifact_type!r}, not {type!r}")
        self._change(with_input(resolved.version_id))
        self._write()  # an input is stored when used (see the module docstring)
        if wanted:
            art.aliases = list(dict.fromkeys([*art.aliases, *wanted]))
            art.save()
        return art

    def link_artifact(self, artifact: Artifact, target_path: str, aliases: list[str] | None = None) -> Artifact:
        """Link a logged version into a collection elsewhere (typically ``<entity>/model-registry/<name>``).
        A draft is logged first, as this run's output (as W&B)."""
        self._check_open()
        wanted = check_aliases(aliases)
        registry = link_target(target_path, self.entity)
        if artifact.is_draft():
            self.log_artifact(artifact)
        _, resolved = logged_version(artifact)
        self._record_start()  # before the link's ref names this run
        entry, created = link_version(self.store, registry, resolved, run=self.path, aliases=wanted)
        linked = artifact_of(self.store, entry)
        linked._created = created  # what Artifact.created says of a link: made by this call, or there already
        if created:
            say(f"linked {artifact.qualified_name} as {linked.qualified_name}", summary=True)
        else:
            say(f"{artifact.qualified_name} is already linked as {linked.qualified_name}; no new version", summary=True)
        return linked

    # -- models (the log_model / use_model / link_model page) -------------
    def log_model(self, path: str | os.PathLike[str], name: str | None = None, aliases: list[str] | None = None,
                  metadata: dict[str, Any] | None = None, description: str | None = None, *,
                  progress: Callable[[int], None] | None = None, exclude: Sequence[str] = ()) -> Artifact:
        """Log a model file, directory or external URI as a ``model`` artifact, output of this run.

        The default name is ``run-<run id>-<basename of path>``. Logging content
        that the artifact already holds returns that version and creates none.
        A directory is walked as :meth:`Artifact.add_dir` walks it: its
        ``.objstoreignore`` and the gitignore patterns in ``exclude`` leave files out.
        """
        self._check_open()
        wanted = check_aliases(aliases)
        art = self._artifact_from_path(path, name, "model", metadata, description, exclude)
        return self.log_artifact(art, aliases=list(wanted), progress=progress)

    def use_model(self, name: str, root: str | os.PathLike[str] | None = None, *,
                  progress: Callable[[int], None] | None = None) -> str:
        """Download a logged model and mark it as this run's input.

        Returns the absolute path: the entry itself (a file or a directory) when the
        version holds exactly one top-level entry, as W&B's, else the directory.
        Raises WrongType if the artifact is not a model.
        """
        self._check_open()
        spec = parse_version_spec(name, entity=self.entity, project=self.project)
        resolved = resolve(self.store, spec)
        self._found(resolved.collection)
        if "model" not in resolved.version.artifact_type:
            raise WrongType(f"{resolved.qualified_name} is of type {resolved.version.artifact_type!r}, "
                            f"not a model; use use_artifact for it")
        art = artifact_of(self.store, resolved, read_aliases=False)  # only its files are used: no alias listing
        self._change(with_input(resolved.version_id))
        self._write()  # an input is stored when used, before the download (see the module docstring)
        directory = Path(art.download(root, progress=progress))
        top = {path.split("/", 1)[0] for path, _ in walk_tree(self.store.odb, resolved.version.tree, include_dirs=True)}
        if len(top) == 1:
            return str(directory / top.pop())
        return str(directory)

    def link_model(self, path: str | os.PathLike[str], registered_model_name: str, name: str | None = None,
                   aliases: list[str] | None = None, *, progress: Callable[[int], None] | None = None,
                   exclude: Sequence[str] = ()) -> Artifact:
        """Log (or reuse) the model at ``path`` and link it into ``<entity>/model-registry/<registered_model_name>``.

        ``progress`` and ``exclude`` are :meth:`log_model`'s (bytes read; patterns a directory's walk leaves out)."""
        self._check_open()
        check_name(registered_model_name, "registered model name")
        wanted = check_aliases(aliases)
        art = self.log_model(path, name=name, progress=progress, exclude=exclude)
        return self.link_artifact(art, f"{self.entity}/{REGISTRY_PROJECT}/{registered_model_name}", aliases=list(wanted))

    # -- lifecycle ------------------------------------------------------
    def finish(self, exit_code: int | None = 0, quiet: bool | None = None) -> None:
        """Mark the run finished (or crashed for a non-zero exit code) and flush the store.

        A run that crashed before using or logging anything is not recorded.
        """
        if self._finished:
            return
        exit_code = exit_code or 0
        self.store.odb.flush()
        if exit_code != 0 and not self._recorded and not self._pending and not len(self.summary):
            self._finished = True  # it crashed before doing anything: leave no trace
            _forget(self)
            return
        state = "finished" if exit_code == 0 else "crashed"
        self._change(lambda r: replace(r, state=state, finished_at=time.time()))
        self._write()
        self.store.odb.maintain()  # after the run's refs (odb's write order); once per process
        self._finished = True
        _forget(self)

    def detach(self) -> None:
        """Store the record with everything held, leaving the run ``running``, and stop
        using it here: for a run that other processes join and one of them finishes
        (the CLI's ``--run ID``). A run never recorded is recorded now."""
        if self._finished:
            return
        self.store.odb.flush()
        self._write()
        self._finished = True
        _forget(self)

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.finish(0 if exc_type is None else 1)

    def __repr__(self) -> str:
        return f"<Run {self.path} ({self.name})>"


class _Noop:
    """What a disabled run's calls return, as W&B's: any attribute or call gives itself."""

    def __getattr__(self, _: str) -> _Noop:
        return self

    def __call__(self, *args: Any, **kwargs: Any) -> _Noop:
        return self


class DisabledRun(Run):
    """The run of ``init(mode="disabled")``: no store is opened and its calls do nothing
    (those that return an artifact or path return a do-nothing object, as W&B's);
    ``config`` and ``summary`` still hold what is set, in memory only."""

    disabled = True

    def __init__(self, *, entity: str, project: str, name: str | None, config: dict[str, Any], job_type: str | None,
                 id: str | None) -> None:  # no super().__init__: that opens the run's record
        self.entity, self.project = entity, project
        self.id = id or new_run_id()
        self.name = name or f"dummy-{self.id}"
        self.job_type = job_type
        self.tags, self.notes, self.group = (), None, None
        self.config = RunValues("config", config)
        self.summary = RunValues("summary")
        self._finished = False

    def log(self, data: dict[str, Any], step: int | None = None, commit: bool | None = None) -> None:
        pass

    def log_artifact(self, *args: Any, **kwargs: Any) -> Artifact:
        return cast(Artifact, _Noop())

    def use_artifact(self, *args: Any, **kwargs: Any) -> Artifact:
        return cast(Artifact, _Noop())

    def link_artifact(self, *args: Any, **kwargs: Any) -> Artifact:
        return cast(Artifact, _Noop())

    def log_model(self, *args: Any, **kwargs: Any) -> Artifact:
        return cast(Artifact, _Noop())

    def upsert_artifact(self, *args: Any, **kwargs: Any) -> Artifact:
        return cast(Artifact, _Noop())

    def finish_artifact(self, *args: Any, **kwargs: Any) -> Artifact:
        return cast(Artifact, _Noop())

    def use_model(self, *args: Any, **kwargs: Any) -> str:
        return cast(str, _Noop())

    def link_model(self, *args: Any, **kwargs: Any) -> Artifact:
        return cast(Artifact, _Noop())

    def finish(self, exit_code: int | None = 0, quiet: bool | None = None) -> None:
        self._finished = True
        _forget(self)


# What a script may set on a run (stored with the run's next change), and every public attribute.
RUN_SETTABLE = frozenset({"name", "notes", "tags", "group"})
RUN_ATTRIBUTES = RUN_SETTABLE | {"store", "entity", "project", "id", "job_type", "config", "summary"}

# Runs holding changes not yet stored; at interpreter exit each is written (still
# ``running`` unless finished), so a script that never calls finish loses no lineage.
# Held strongly, as W&B holds a run until it finishes: a run dropped unfinished
# must still be written at exit. A run leaves this set whenever it is written.
_unwritten: set[Run] = set()


@atexit.register
def _write_unwritten() -> None:
    for run in list(_unwritten):
        try:
            run._write()
        except Exception:  # noqa: BLE001, S112 - at exit there is no caller left to tell; the next run is unaffected
            continue


# The current run: what objstore.run, objstore.log() and the other module-level calls act on.
_current: Run | None = None

MODES = (None, "online", "offline", "shared", "disabled")
RESUMES = (None, False, True, "allow", "never", "must", "auto")
REINITS = (None, False, True, "default", "return_previous", "finish_previous", "create_new")
MAX_TAG_LENGTH = 64  # W&B's limit for a run tag


def current_run() -> Run | None:
    """The run the module-level calls act on (``objstore.run``): the last one started
    by ``init`` (unless with ``reinit="create_new"``) and not finished."""
    return _current


def _forget(run: Run) -> None:
    global _current
    if _current is run:
        _current = None


def _check_choice(value: object, allowed: tuple[object, ...], what: str) -> None:
    if not any(value is a or (isinstance(a, str) and value == a) for a in allowed):
        shown = ", ".join(repr(a) for a in allowed if a is not None)
        raise UsageError(f"{what}={value!r} is not one of {shown}")


def _check_modes(mode: Any, resume: object, reinit: object, dir: object, resume_from: object, fork_from: object) -> Any:
    """Refuse what ``init`` cannot honour among its choices, before anything is written;
    return the mode (``$WANDB_MODE`` when none is given: the argument wins, as in W&B)."""
    mode = mode if mode is not None else os.environ.get("WANDB_MODE") or None
    for value, unsupported in ((resume_from, "resume_from"), (fork_from, "fork_from")):
        if value is not None:
            raise UnsupportedError(f"init({unsupported}=…) is not offered: objstore keeps no step history to "
                                   f"rewind or fork; resume the run by id instead")
    _check_choice(mode, MODES, "mode")
    _check_choice(resume, RESUMES, "resume")
    _check_choice(reinit, REINITS, "reinit")
    if dir is not None and not isinstance(dir, str | os.PathLike):
        raise UsageError(f"dir must be a path, not {type(dir).__name__}")
    return mode


def _check_tags(tags: object) -> tuple[str, ...]:
    if tags is None:
        return ()
    if isinstance(tags, str) or not isinstance(tags, list | tuple):
        raise UsageError(f"tags must be a list of strings, not {type(tags).__name__}")
    for tag in tags:
        if not isinstance(tag, str) or not 1 <= len(tag) <= MAX_TAG_LENGTH:
            raise UsageError(f"tag {tag!r} is not a string of 1 to {MAX_TAG_LENGTH} characters")
        storable_text(tag, "tag")
    return tuple(dict.fromkeys(tags))


def _check_text(value: object, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise UsageError(f"{what} must be a string, not {type(value).__name__}")
    return storable_text(value, what)


def init(entity: str | None = None, project: str | None = None, dir: str | os.PathLike[str] | None = None,
         id: str | None = None, name: str | None = None, notes: str | None = None, tags: list[str] | tuple[str, ...] | None = None,
         config: dict[str, Any] | str | object | None = None, config_exclude_keys: list[str] | None = None,
         config_include_keys: list[str] | None = None, allow_val_change: bool | None = None, group: str | None = None,
         job_type: str | None = None, mode: Literal["online", "offline", "disabled", "shared"] | None = None,
         force: bool | None = None,
         reinit: bool | Literal["default", "return_previous", "finish_previous", "create_new"] | None = None,
         resume: bool | Literal["allow", "never", "must", "auto"] | None = None, resume_from: str | None = None,
         fork_from: str | None = None, save_code: bool | None = None, tensorboard: bool | None = None,
         sync_tensorboard: bool | None = None, monitor_gym: bool | None = None, settings: object = None,
         anonymous: object = None, *, store: str | os.PathLike[str] | Store | None = None) -> Run:
    """Start a run: W&B's ``wandb.init``, with its parameters in its order.

    Store, entity and project: the arguments, else the environment, else (after a ``.objstore``
    above the working directory, for the store) the user config file, else ``~/.objstore``,
    the OS user and ``uncategorized``; ``id``, ``$OBJSTORE_RUN_ID``, ``$WANDB_RUN_ID`` (:mod:`objstore.settings`).

    Stored in the run's record: ``entity``, ``project``, ``id``, ``name``, ``job_type``,
    ``config`` (a dict, a YAML/JSON file's path or an object's attributes, filtered by
    ``config_include_keys``/``config_exclude_keys``), ``tags``, ``notes``, ``group``.
    ``mode`` (default ``$WANDB_MODE``): ``"online"``, ``"offline"``, ``"shared"`` alike; ``"disabled"`` gives a run whose
    calls do nothing and opens no store. ``resume``: ``"never"`` refuses an id in
    use, ``"must"`` an id not in use; otherwise an existing id resumes that run.
    ``reinit``: ``"return_previous"`` returns the current unfinished run,
    ``True``/``"finish_previous"`` finishes it first, ``"create_new"`` leaves
    ``objstore.run`` as it is; by default (unlike W&B's ``"return_previous"`` in
    scripts) a new run is started and becomes ``objstore.run``. ``resume_from``
    and ``fork_from`` are refused (UnsupportedError). Accepted and ignored:
    ``dir`` (objstore writes no run files), ``allow_val_change`` (config values
    may always change), ``force``, ``save_code``, ``tensorboard``,
    ``sync_tensorboard``, ``monitor_gym``, ``settings``, ``anonymous``.
    Bad arguments raise UsageError before anything is written.

    >>> import objstore, tempfile
    >>> run = objstore.init("charlie", "mnist", store=tempfile.mkdtemp())
    >>> run.path.startswith("charlie/mnist/")
    True
    """
    global _current
    mode, id = _check_modes(mode, resume, reinit, dir, resume_from, fork_from), resolve_run_id(id)
    entity = check_name(resolve_entity(entity), "entity")
    project = check_name(resolve_project(project), "project")
    values = check_metadata(config_values(config, config_include_keys, config_exclude_keys), "config")
    run_tags, run_notes, run_group = _check_tags(tags), _check_text(notes, "notes"), _check_text(group, "group")
    name = storable_text(name, "run name")
    if _current is not None and not _current._finished:
        if reinit == "return_previous":
            return _current
        if reinit in (True, "finish_previous"):
            _current.finish()
    if mode == "disabled":
        run: Run = DisabledRun(entity=entity, project=project, name=name, config=values, job_type=job_type, id=id)
    else:
        opened = store if isinstance(store, Store) else Store.open(store)
        run = Run(opened, entity=entity, project=project, name=name, config=values, job_type=job_type, id=id,
                  tags=run_tags, notes=run_notes, group=run_group,
                  resume=resume if resume in ("never", "must") else None)
    if reinit != "create_new":
        _current = run
    return run


# -- the module-level calls (W&B's wandb.log, wandb.log_model, …) ---------------
def _require_run(call: str) -> Run:
    if _current is None:
        raise UsageError(f"objstore.{call}() needs a run: call objstore.init() first")
    return _current


def log(data: dict[str, Any], step: int | None = None, commit: bool | None = None) -> None:
    """:meth:`Run.log` of the current run."""
    _require_run("log").log(data, step, commit)


def log_artifact(artifact_or_path: Artifact | str | os.PathLike[str], name: str | None = None, type: str | None = None,
                 aliases: list[str] | None = None, tags: list[str] | None = None) -> Artifact:
    """:meth:`Run.log_artifact` of the current run."""
    return _require_run("log_artifact").log_artifact(artifact_or_path, name, type, aliases, tags)


def use_artifact(artifact_or_name: Artifact | str, type: str | None = None, aliases: list[str] | None = None,
                 use_as: str | None = None) -> Artifact:
    """:meth:`Run.use_artifact` of the current run."""
    return _require_run("use_artifact").use_artifact(artifact_or_name, type, aliases, use_as)


def log_model(path: str | os.PathLike[str], name: str | None = None, aliases: list[str] | None = None) -> Artifact:
    """:meth:`Run.log_model` of the current run."""
    return _require_run("log_model").log_model(path, name, aliases)


def use_model(name: str) -> str:
    """:meth:`Run.use_model` of the current run."""
    return _require_run("use_model").use_model(name)


def link_model(path: str | os.PathLike[str], registered_model_name: str, name: str | None = None,
               aliases: list[str] | None = None) -> Artifact:
    """:meth:`Run.link_model` of the current run."""
    return _require_run("link_model").link_model(path, registered_model_name, name, aliases)


def finish(exit_code: int | None = None, quiet: bool | None = None) -> None:
    """Finish the current run, if there is one (W&B's ``wandb.finish``)."""
    if _current is not None:
        _current.finish(exit_code, quiet)


def _save_draft(artifact: Artifact, project: str | None) -> None:
    """W&B's ``Artifact.save()`` of a draft: log it in the current run, or in a run of
    job type ``auto`` started (in ``project``, if given) and finished for it."""
    run = _current
    if run is not None and not run.disabled:
        run.log_artifact(artifact)
        return
    with init(project=project, job_type="auto", reinit="create_new") as auto:
        auto.log_artifact(artifact)


wire("save_draft", _save_draft)
