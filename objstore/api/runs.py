"""``Run``: one execution of a script, logging and using artifacts (W&B's ``wandb.Run``).

A run is recorded as a :class:`~objstore.storage.objects.RunRecord` behind the ref
``refs/<entity>/<project>/runs/<id>``; each change (an input, an output, the
final state) stores a new record and moves the ref by compare-and-swap. Runs
carry the lineage graph: what each run used and what it logged.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import TracebackType
from typing import Any

from objstore.api.artifact import Artifact, artifact_of, check_metadata, log_draft, logged_version
from objstore.api.naming import DEFAULT_PROJECT, artifact_name_for, default_entity, default_run_name, new_run_id
from objstore.api.runinfo import RunInfo, find_run, iter_runs, read_run, read_run_by_path  # noqa: F401  (re-exported)
from objstore.api.runrecord import create_record, update_record, with_input, with_output
from objstore.console import human_bytes, say
from objstore.errors import InvalidInput, InvalidName, WrongType
from objstore.files.references import is_uri
from objstore.model.names import REGISTRY_PROJECT, CollectionPath, check_aliases, check_name, parse_version_spec
from objstore.model.store import Store
from objstore.model.versions import link_version, resolve
from objstore.storage.keys import run_ref
from objstore.storage.objects import FILE, REFERENCE, RunRecord, storable_text


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

    def __init__(self, store: Store, *, entity: str, project: str, name: str | None, config: dict[str, Any] | None,
                 job_type: str | None, id: str | None) -> None:
        self.store = store
        self.entity = check_name(entity, "entity")
        self.project = check_name(project, "project")
        self.id = check_name(id, "run id") if id is not None else new_run_id()
        self.job_type = check_name(job_type, "job type") if job_type is not None else None
        self.config = check_metadata(config, "config")
        name = storable_text(name, "run name")
        self.name = name or default_run_name()
        self._finished = False
        self._started_at = time.time()
        # The record is written with the run's first change (an input, an output,
        # finishing), not here: a run whose every call was refused as bad input
        # leaves the store exactly as it was.
        self._recorded = False
        ref = run_ref(self.entity, self.project, self.id)
        if store.refs.read(ref) is not None:  # resuming a run by id
            previous = read_run(store, self.entity, self.project, self.id)
            self.name = name or previous.name
            self._recorded = True
            self._update(lambda r: replace(r, state="running", finished_at=None, config={**r.config, **self.config}))

    def _record_start(self) -> None:
        if self._recorded:
            return
        self.config = check_metadata(self.config, "config")
        create_record(self.store, RunRecord(self.id, self.entity, self.project, self.name, self.config, self.job_type,
                                            self._started_at, None, "running", (), ()))
        self._recorded = True

    # -- the run record -------------------------------------------------
    @property
    def path(self) -> str:
        return f"{self.entity}/{self.project}/{self.id}"

    def _update(self, change: Callable[[RunRecord], RunRecord]) -> RunRecord:
        self._record_start()
        return update_record(self.store, self.entity, self.project, self.id, change)

    def _check_open(self) -> None:
        if self._finished:
            raise InvalidInput(f"run {self.path} has finished; start a new run with objstore.init()")
        if not self._recorded:
            # run.config may have been changed since init; it is stored with the run's
            # first change, so convert or refuse it before this call writes anything.
            self.config = check_metadata(self.config, "config")

    # -- artifacts ------------------------------------------------------
    def log_artifact(self, artifact_or_path: Artifact | str | os.PathLike[str], name: str | None = None,
                     type: str | None = None, aliases: list[str] | None = None, *,
                     progress: Callable[[int], None] | None = None) -> Artifact:
        """Log an Artifact (or a path, as a new artifact) as this run's output."""
        self._check_open()
        wanted = check_aliases(aliases)
        if isinstance(artifact_or_path, Artifact):
            art = artifact_or_path
            if art.is_draft():  # aliases set on the draft are given to the version too, as in W&B
                wanted = check_aliases(list(dict.fromkeys([*art.aliases, *wanted])))
        else:
            art = self._artifact_from_path(artifact_or_path, name, type or "unspecified", None, None)
        # The run's record is stored before the version's ref is claimed (objects
        # before refs), so no crash leaves a version naming an unrecorded run.
        log_draft(art, self.store, self.entity, self.project, self.path, wanted, progress, before_ref=self._record_start)
        self._update(with_output(logged_version(art)[1].version_id))
        alias_note = f" (aliases: {', '.join(art.aliases)})" if art.aliases else ""
        if art.created:
            say(f"logged {art.qualified_name}: {human_bytes(art.size)}, {human_bytes(art.new_bytes)} new{alias_note}")
        else:
            say(f"{art.qualified_name} already holds this content (digest {art.digest[:12]}); no new version{alias_note}")
        return art

    def _artifact_from_path(self, path: str | os.PathLike[str], name: str | None, type: str,
                            metadata: dict[str, Any] | None, description: str | None) -> Artifact:
        text = os.fspath(path)
        name = artifact_name_for(text, name, self.id)
        art = Artifact(name, type=type, description=description, metadata=metadata)
        if is_uri(text):
            art.add_reference(text)
        elif os.path.isdir(text):
            art.add_dir(text)
        else:
            art.add_file(text)
        return art

    def use_artifact(self, artifact_or_name: Artifact | str, type: str | None = None) -> Artifact:
        """Mark a logged version as this run's input and return it (not yet downloaded)."""
        self._check_open()
        if isinstance(artifact_or_name, Artifact):
            store, resolved = logged_version(artifact_or_name)
            art = artifact_or_name
        else:
            spec = parse_version_spec(artifact_or_name, entity=self.entity, project=self.project)
            resolved = resolve(self.store, spec)
            art = artifact_of(self.store, resolved)
        if type is not None and resolved.version.artifact_type != type:
            raise WrongType(f"{art.qualified_name} is of type {resolved.version.artifact_type!r}, not {type!r}")
        self._update(with_input(resolved.version_id))
        return art

    def link_artifact(self, artifact: Artifact, target_path: str, aliases: list[str] | None = None) -> Artifact:
        """Link a logged version into a collection elsewhere (typically ``<entity>/model-registry/<name>``)."""
        self._check_open()
        wanted = check_aliases(aliases)
        _, resolved = logged_version(artifact)
        parts = target_path.split("/") if isinstance(target_path, str) else []
        if len(parts) == 1:
            parts = [self.entity, REGISTRY_PROJECT, parts[0]]
        elif len(parts) == 2:
            parts = [self.entity, *parts]
        if len(parts) != 3:
            raise InvalidName(f"{target_path!r} is not a link target; use <registered model>, or entity/model-registry/<name>")
        registry = CollectionPath(check_name(parts[0], "entity"), check_name(parts[1], "project"),
                                  check_name(parts[2], "registered model name"))
        self._record_start()  # before the link's ref names this run
        entry, created = link_version(self.store, registry, resolved, run=self.path, aliases=wanted)
        linked = artifact_of(self.store, entry)
        if created:
            say(f"linked {artifact.qualified_name} as {linked.qualified_name}")
        else:
            say(f"{artifact.qualified_name} is already linked as {linked.qualified_name}; no new version")
        return linked

    # -- models (the log_model / use_model / link_model page) -------------
    def log_model(self, path: str | os.PathLike[str], name: str | None = None, aliases: list[str] | None = None,
                  metadata: dict[str, Any] | None = None, description: str | None = None, *,
                  progress: Callable[[int], None] | None = None) -> Artifact:
        """Log a model file, directory or external URI as a ``model`` artifact, output of this run.

        The default name is ``run-<run id>-<basename of path>``. Logging content
        that the artifact already holds returns that version and creates none.
        """
        self._check_open()
        wanted = check_aliases(aliases)
        art = self._artifact_from_path(path, name, "model", metadata, description)
        return self.log_artifact(art, aliases=list(wanted), progress=progress)

    def use_model(self, name: str, root: str | os.PathLike[str] | None = None, *,
                  progress: Callable[[int], None] | None = None) -> str:
        """Download a logged model and mark it as this run's input.

        Returns the path: the file itself when the version holds exactly one
        file, else the directory. Raises WrongType if the artifact is not a model.
        """
        self._check_open()
        spec = parse_version_spec(name, entity=self.entity, project=self.project)
        resolved = resolve(self.store, spec)
        if "model" not in resolved.version.artifact_type:
            raise WrongType(f"{resolved.qualified_name} is of type {resolved.version.artifact_type!r}, "
                            f"not a model; use use_artifact for it")
        art = artifact_of(self.store, resolved)
        self._update(with_input(resolved.version_id))
        directory = Path(art.download(root, progress=progress))
        files = art.files()
        if len(files) == 1 and files[0].kind in (FILE, REFERENCE):
            return str(directory / files[0].path)
        return str(directory)

    def link_model(self, path: str | os.PathLike[str], registered_model_name: str, name: str | None = None,
                   aliases: list[str] | None = None) -> Artifact:
        """Log (or reuse) the model at ``path`` and link it into ``<entity>/model-registry/<registered_model_name>``."""
        self._check_open()
        check_name(registered_model_name, "registered model name")
        wanted = check_aliases(aliases)
        art = self.log_model(path, name=name)
        return self.link_artifact(art, f"{self.entity}/{REGISTRY_PROJECT}/{registered_model_name}", aliases=list(wanted))

    # -- lifecycle ------------------------------------------------------
    def finish(self, exit_code: int = 0) -> None:
        """Mark the run finished (or crashed for a non-zero exit code) and flush the store.

        A run that crashed before using or logging anything is not recorded.
        """
        if self._finished:
            return
        self.store.odb.flush()
        if exit_code != 0 and not self._recorded:
            self._finished = True  # it crashed before doing anything: leave no trace
            return
        state = "finished" if exit_code == 0 else "crashed"
        self._update(lambda r: replace(r, state=state, finished_at=time.time()))
        self._finished = True

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.finish(0 if exc_type is None else 1)

    def __repr__(self) -> str:
        return f"<Run {self.path} ({self.name})>"


def init(project: str | None = None, entity: str | None = None, store: str | os.PathLike[str] | Store | None = None,
         name: str | None = None, config: dict[str, Any] | None = None, job_type: str | None = None,
         id: str | None = None) -> Run:
    """Start a run.

    The store is, in order: ``store`` (a path or ``s3://`` URL), ``$OBJSTORE_DIR``,
    the nearest ``.objstore`` above the working directory, else ``~/.objstore``.
    The entity defaults to the OS user name, the project to ``uncategorized``.

    >>> import objstore, tempfile
    >>> run = objstore.init(project="mnist", entity="charlie", store=tempfile.mkdtemp())
    >>> run.path.startswith("charlie/mnist/")
    True
    """
    entity = check_name(entity, "entity") if entity is not None else default_entity()
    project = check_name(project, "project") if project is not None else DEFAULT_PROJECT
    config = check_metadata(config, "config")  # before the store is created: bad input writes nothing
    name = storable_text(name, "run name")
    opened = store if isinstance(store, Store) else Store.open(store)
    return Run(opened, entity=entity, project=project, name=name, config=config, job_type=job_type, id=id)
