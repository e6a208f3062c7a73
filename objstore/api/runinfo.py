"""Runs as recorded in the store, read back: :class:`RunInfo` and the lookups
that find one (by path, by ref, every run under a prefix).

A run is a :class:`~objstore.storage.objects.RunRecord` behind the ref
``refs/<entity>/<project>/runs/<id>``; reading one never writes. A run is a weak
edge of the lineage graph: :func:`find_run` answers None for a run whose ref is
not in this store, while a ref whose record is damaged still raises.

Which runs used or logged a version is read from the lineage index
(``lineage/used|logged/<version>/<run>``, :mod:`objstore.api.runrecord` writes
it before a run's ref moves), so the cost of :class:`RunLookup` grows with the
answer, not with the store's runs: one stat, a listing per version asked about
and a record read per run listed there. Only a store that says its index is
complete (``lineage/complete``: created by this code, or indexed whole by
``objstore maintenance``) is read that way; any other store's runs are all read,
as before the index, so no run is missed. A key names a run that *may* name the
version: the record read decides.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from objstore.constants import LINEAGE_INDEX_FORMAT
from objstore.errors import CorruptObject, InvalidName, NotFound, did_you_mean
from objstore.model.names import CollectionPath
from objstore.model.store import Store
from objstore.model.versions import LogPage, ResolvedVersion, log_page, read_entry
from objstore.storage.ids import ObjectId
from objstore.storage.keys import LINEAGE_COMPLETE, lineage_prefix, lineage_run_of, parse_ref_key, refs_prefix, run_ref, version_ref
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
            coll = entry.collection
            # A deleted version's entry object stays (gc frees it); W&B lists it in no run,
            # and its delete() would fail: its version ref (a tombstone now) says which.
            if self._store.refs.read(version_ref(coll.entity, coll.project, coll.name, entry.index)) != oid:
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


def lineage_complete(store: Store) -> bool:
    """Whether every run of ``store`` is in its lineage index (one stat): only on a
    store of ``LINEAGE_INDEX_FORMAT`` or later, which the releases before the index
    refuse (on an older one such a release may have written runs the index lacks)."""
    if store.config.format < LINEAGE_INDEX_FORMAT:
        return False
    try:
        store.backend.stat(LINEAGE_COMPLETE)
        return True
    except NotFound:
        return False


class RunLookup:
    """The runs that used or logged a version, by the lineage index (see the module
    docstring); records read once each and kept, so a lineage walk reads each run
    at most once."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._records: dict[tuple[str, str, str], RunRecord | None] = {}
        self._unindexed: list[tuple[str, str, str]] | None = None

    def record(self, path: str) -> RunRecord | None:
        """The record of run ``entity/project/run-id``; None if it is not here (or not readable)."""
        parts = path.split("/")
        return self._record((parts[0], parts[1], parts[2])) if len(parts) == 3 and all(parts) else None

    def _record(self, run: tuple[str, str, str]) -> RunRecord | None:
        if run not in self._records:
            try:
                oid = self.store.refs.read(run_ref(*run))
                self._records[run] = None if oid is None else record_at(self.store, *run, oid)
            except (NotFound, CorruptObject, InvalidName):
                self._records[run] = None  # as iter_run_records: a damaged or missing record is left out
        return self._records[run]

    def _not_indexed(self) -> list[tuple[str, str, str]]:
        """Every run, if the store's index is not complete (one stat; then a listing
        of the run refs, once per lookup object); else none."""
        if self._unindexed is None:
            self._unindexed = [] if lineage_complete(self.store) else sorted(
                (parsed.entity, parsed.project, parsed.tail) for key in self.store.refs.iter_names(refs_prefix())
                if (parsed := parse_ref_key(key)) is not None and parsed.kind == "run")
        return self._unindexed

    def runs(self, role: str, version_ids: Iterable[ObjectId]) -> list[RunRecord]:
        """The runs whose records name one of ``version_ids`` as an input (``role``
        ``used``) or an output (``logged``), by run path."""
        wanted = set(version_ids)
        candidates = set(self._not_indexed())
        for vid in wanted:
            candidates.update(run for info in self.store.backend.iter_prefix(lineage_prefix(role, vid.hex))
                              if (run := lineage_run_of(info.key)) is not None)
        out = []
        for run in sorted(candidates):
            record = self._record(run)
            if record is not None and wanted & set(record.inputs if role == "used" else record.outputs):
                out.append(record)
        return out
