"""Runs as recorded in the store, read back: :class:`RunInfo` and the lookups
that find one (by path, by ref, every run under a prefix).

A run is a :class:`~objstore.storage.objects.RunRecord` behind the ref
``refs/<entity>/<project>/runs/<id>``; reading one never writes. A run is a weak
edge of the lineage graph: :func:`find_run` answers None for a run whose ref is
not in this store, while a ref whose record is damaged still raises.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from objstore.errors import CorruptObject, InvalidName, NotFound, did_you_mean
from objstore.model.names import CollectionPath
from objstore.model.store import Store
from objstore.model.versions import LogPage, ResolvedVersion, log_page, read_entry
from objstore.storage.ids import ObjectId
from objstore.storage.keys import parse_ref_key, refs_prefix, run_ref
from objstore.storage.objects import Link, RunRecord, Version

if TYPE_CHECKING:
    from objstore.api.artifact import Artifact

# How a logged version becomes an Artifact: artifact.py registers it
# (set_artifact_loader), so this module, which artifact.py imports for
# ``logged_by``/``used_by``, never imports artifact.py back.
ArtifactLoader = Callable[[Store, ResolvedVersion], "Artifact"]
_artifact_loader: ArtifactLoader | None = None


def set_artifact_loader(loader: ArtifactLoader) -> None:
    """Make :meth:`RunInfo.used_artifacts` and ``logged_artifacts`` build their Artifacts with ``loader``."""
    global _artifact_loader
    _artifact_loader = loader


@dataclass(frozen=True)
class RunInfo:
    """A run as recorded in the store (read-only)."""

    id: str
    entity: str
    project: str
    name: str
    config: dict[str, Any]
    job_type: str | None
    state: str
    started_at: float
    finished_at: float | None
    inputs: tuple[str, ...]  # version ids, hex (the ids themselves are the record's)
    outputs: tuple[str, ...]
    tags: tuple[str, ...] = ()
    notes: str | None = None
    group: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)  # the latest value of each metric logged, not a history
    _store: Store | None = field(default=None, repr=False, compare=False)
    _record: RunRecord | None = field(default=None, repr=False, compare=False)

    @property
    def path(self) -> str:
        return f"{self.entity}/{self.project}/{self.id}"

    @classmethod
    def from_record(cls, record: RunRecord, store: Store | None = None) -> RunInfo:
        return cls(record.id, record.entity, record.project, record.name, record.config, record.job_type, record.state,
                   record.started_at, record.finished_at, tuple(i.hex for i in record.inputs),
                   tuple(o.hex for o in record.outputs), record.tags, record.notes, record.group, record.summary,
                   store, record)

    def _artifacts(self, ids: tuple[ObjectId, ...]) -> list[Artifact]:
        if self._store is None:
            return []
        assert _artifact_loader is not None, "objstore.api.artifact registers the loader when imported"
        out = []
        for oid in ids:
            try:
                entry = read_entry(self._store, _collection_of(self._store, oid), oid)
            except (NotFound, CorruptObject):
                continue
            out.append(_artifact_loader(self._store, entry))
        return out

    def used_artifacts(self) -> list[Artifact]:
        return self._artifacts(self._record.inputs if self._record else ())

    def logged_artifacts(self) -> list[Artifact]:
        return self._artifacts(self._record.outputs if self._record else ())


def _collection_of(store: Store, oid: ObjectId) -> CollectionPath:
    obj = store.odb.get_object(oid)
    if isinstance(obj, Version):
        return CollectionPath(obj.entity, obj.project, obj.name)
    if isinstance(obj, Link):
        e, p, n = obj.registry.split("/")
        return CollectionPath(e, p, n)
    raise CorruptObject(f"object {oid.hex[:16]} is not a version", object_id=oid.hex)


def read_run(store: Store, entity: str, project: str, run_id: str) -> RunRecord:
    oid = store.refs.read(run_ref(entity, project, run_id))
    if oid is None:
        raise missing_run(store, entity, project, run_id)
    return record_at(store, entity, project, run_id, oid)


def missing_run(store: Store, entity: str, project: str, run_id: str) -> NotFound:
    """The error for a run the store lacks, naming the project that has a run of that
    id, else the closest ids in the project (the entity's runs are listed: an error path)."""
    here, elsewhere = [], []
    for key in store.refs.iter_names(refs_prefix(entity)):
        parsed = parse_ref_key(key)
        if parsed is not None and parsed.kind == "run":
            if parsed.project == project:
                here.append(parsed.tail)
            elif parsed.tail == run_id:
                elsewhere.append(f"{parsed.project}/{run_id}")
    hint = (f"; {' and '.join(elsewhere[:5])} exist{'s' if len(elsewhere) == 1 else ''} (give the project)"
            if elsewhere else did_you_mean(run_id, here))
    return NotFound(f"no run {entity}/{project}/{run_id} in the store{hint}", key=f"{entity}/{project}/{run_id}")


def record_at(store: Store, entity: str, project: str, run_id: str, oid: ObjectId | None) -> RunRecord:
    """The record run ``entity/project/run_id``'s ref holds, given the id read from it (None: absent)."""
    if oid is None:
        raise NotFound(f"no run {entity}/{project}/{run_id} in the store", key=f"{entity}/{project}/{run_id}")
    obj = store.odb.get_object(oid)
    if not isinstance(obj, RunRecord):
        raise CorruptObject(f"run ref {entity}/{project}/{run_id} points at a non-run object", object_id=oid.hex)
    return obj


def find_run(store: Store, path: str) -> RunInfo | None:
    """The run at ``entity/project/run-id``; None if its ref is not in this store (a
    run is a weak edge: legitimately absent after a transfer that did not carry it).
    A run ref whose record is damaged or missing still raises: that is damage."""
    parts = path.split("/")
    if len(parts) != 3 or not all(parts):
        return None
    try:
        key = run_ref(*parts)
    except InvalidName:
        return None
    oid = store.refs.read(key)  # read once: its record is the one this value names
    if oid is None:
        return None
    entity, project, run_id = parts
    return RunInfo.from_record(record_at(store, entity, project, run_id, oid), store)


def read_run_by_path(store: Store, path: str) -> RunInfo:
    parts = path.split("/")
    if len(parts) != 3:
        raise InvalidName(f"{path!r} is not a run path; use entity/project/run-id")
    return RunInfo.from_record(read_run(store, *parts), store)


def iter_runs(store: Store, entity: str | None = None, project: str | None = None) -> Iterator[RunInfo]:
    """Every readable run under ``entity`` / ``project`` (None: all)."""
    for record in iter_run_records(store, entity, project):
        yield RunInfo.from_record(record, store)


def iter_run_records(store: Store, entity: str | None = None, project: str | None = None) -> Iterator[RunRecord]:
    """The records behind :func:`iter_runs` (a damaged or missing one is left out)."""
    for key, oid in store.refs.iter_refs(refs_prefix(entity, project)):
        parsed = parse_ref_key(key)
        if parsed is not None and parsed.kind == "run":
            try:
                obj = store.odb.get_object(oid)
            except (NotFound, CorruptObject):
                continue
            if isinstance(obj, RunRecord):
                yield obj


def recorded_runs(store: Store, paths: Iterable[str],
                  listed: Mapping[tuple[str, str], set[str]] | None = None) -> set[str]:
    """Which of the run ``paths`` (``entity/project/run-id``) have a ref in this store,
    by one listing of each project's runs (a request per thousand runs) rather than
    a read per run; a ref present whose record is damaged counts as recorded (only
    reading it tells, as :func:`find_run` does). ``listed``: projects whose run ids
    the caller listed already (:func:`recorded_run_ids`)."""
    projects: dict[tuple[str, str], set[str]] = {}
    for path in paths:
        parts = path.split("/")
        if len(parts) == 3 and all(parts):
            projects.setdefault((parts[0], parts[1]), set()).add(parts[2])
    found: set[str] = set()
    for (entity, project), wanted in projects.items():
        ids = (listed or {}).get((entity, project))
        if ids is None:
            ids = recorded_run_ids(store, entity, project)
        found.update(f"{entity}/{project}/{run_id}" for run_id in wanted & ids)
    return found


def recorded_run_ids(store: Store, entity: str, project: str) -> set[str]:
    """The ids of the runs of ``entity/project`` that have a ref here: one listing."""
    try:
        prefix = run_ref(entity, project, "x")[:-1]
    except InvalidName:
        return set()  # not a name objstore writes: no such run here
    return {info.key[len(prefix):] for info in store.backend.iter_prefix(prefix) if info.size != 0}


def log_with_runs(store: Store, coll: CollectionPath, *, limit: int | None = None,
                  skip: int = 0) -> tuple[LogPage, set[str]]:
    """:func:`~objstore.model.versions.log_page` of ``coll`` and which of its entries'
    runs are recorded here (what ``objstore log`` shows): the runs of the
    collection's own project are listed while its versions are read."""
    with ThreadPoolExecutor(1, thread_name_prefix="objstore-log-runs") as pool:
        own = pool.submit(recorded_run_ids, store, coll.entity, coll.project)
        page = log_page(store, coll, limit=limit, skip=skip)
        listed = {(coll.entity, coll.project): own.result()}
    runs = [e.link.run if e.link is not None else e.version.run for e in page.entries]
    return page, recorded_runs(store, [r for r in runs if r], listed)
