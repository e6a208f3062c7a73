"""What each page of ``objstore ui`` shows, read through the library the CLI uses.

Each function answers one page as frozen values; templates only lay them out.
Values stay raw here (names, descriptions, metadata exactly as stored): escaping
is the templates' job, done by Jinja2's autoescaping, so no value can be escaped
twice or not at all. Nothing here writes to the store except :func:`move_alias`
and :func:`edit_description`, each one compare-and-swap against what the page
showed (:func:`objstore.model.versions.move_alias`, and the annotation state
read back before the edit), so a change someone else made first is a Conflict.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from objstore.api.artifact import Artifact, artifact_of
from objstore.api.diff import VersionDiff, diff_versions
from objstore.api.lineage import Lineage, lineage
from objstore.api.public import Api
from objstore.api.runinfo import RunInfo, log_with_runs
from objstore.errors import InvalidInput, NotFound, ObjstoreError
from objstore.maintenance.stats import StoreUsage, disk_usage
from objstore.model.annotations import Edit, edit_annotations, read_annotations
from objstore.model.names import REGISTRY_PROJECT, CollectionPath, parse_version_spec
from objstore.model.refs import ReflogEntry
from objstore.model.store import Store
from objstore.model.versions import (
    ResolvedVersion,
    alias_history,
    list_aliases,
    list_collections,
    list_projects,
    missing_collection,
    resolve,
)
from objstore.model.versions import move_alias as move_alias_ref
from objstore.storage.ids import ObjectId

# Versions per page of a collection, tensors listed per file on a version page.
PAGE_SIZE = 50
TENSORS_SHOWN = 200
# How long the store page's byte totals (every version's tree read) are reused.
USAGE_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class ProjectRow:
    entity: str
    project: str
    collections: int
    versions: int
    logical_bytes: int
    unique_bytes: int


@dataclass(frozen=True, slots=True)
class StorePage:
    location: str
    projects: tuple[ProjectRow, ...]
    logical_bytes: int
    unique_bytes: int
    stored_bytes: int
    versions: int


@dataclass(frozen=True, slots=True)
class CollectionRow:
    name: str
    type: str
    versions: int
    aliases: tuple[str, ...]
    updated_at: str | None


@dataclass(frozen=True, slots=True)
class ProjectPage:
    entity: str
    project: str
    collections: tuple[CollectionRow, ...]
    registry: tuple[CollectionRow, ...]


@dataclass(frozen=True, slots=True)
class VersionRow:
    index: int
    aliases: tuple[str, ...]
    size: int
    new_bytes: int
    created_at: float
    run: str | None
    run_recorded: bool
    digest: str


@dataclass(frozen=True, slots=True)
class CollectionPage:
    coll: CollectionPath
    type: str
    total: int
    skip: int
    versions: tuple[VersionRow, ...]
    description: str | None


@dataclass(frozen=True, slots=True)
class TensorRow:
    name: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class FileRow:
    path: str
    size: int
    kind: str
    ref: str | None
    tensors: tuple[TensorRow, ...]
    more_tensors: int


@dataclass(frozen=True, slots=True)
class VersionPage:
    coll: CollectionPath
    index: int
    type: str
    digest: str
    id: str
    source: str
    aliases: tuple[str, ...]
    description: str | None
    metadata: dict[str, Any]
    tags: tuple[str, ...]
    size: int
    new_bytes: int
    created_at: float
    files: tuple[FileRow, ...]
    logged_by: str | None
    used_by: tuple[str, ...]
    alias_moves: tuple[ReflogEntry, ...]
    lineage: Lineage
    alias_targets: dict[str, str]  # alias -> the entry id it points at now (hex), for compare-and-swap forms
    revision: int  # of the annotations shown, for the description form's compare-and-swap


@dataclass(frozen=True, slots=True)
class RunPage:
    run: RunInfo
    inputs: tuple[str, ...]   # qualified names of the versions it used (or ids no longer here)
    outputs: tuple[str, ...]


class _UsageCache:
    """The store page's totals, recomputed at most every :data:`USAGE_SECONDS`."""

    def __init__(self) -> None:
        self._at = 0.0
        self._usage: StoreUsage | None = None

    def get(self, store: Store) -> StoreUsage:
        if self._usage is None or time.monotonic() - self._at > USAGE_SECONDS:
            self._usage, self._at = disk_usage(store, by="project"), time.monotonic()
        return self._usage


USAGE = _UsageCache()


def store_page(store: Store) -> StorePage:
    usage = USAGE.get(store)
    rows = []
    for entity, project in list_projects(store):
        colls = list_collections(store, entity, project)
        if not colls:
            continue
        u = usage.projects.get(f"{entity}/{project}")
        rows.append(ProjectRow(entity, project, len(colls), u.versions if u else 0,
                               u.logical_bytes if u else 0, u.unique_bytes if u else 0))
    t = usage.total
    return StorePage(store.location, tuple(rows), t.logical_bytes, t.unique_bytes, usage.stored_bytes, t.versions)


def _collection_rows(store: Store, entity: str, project: str) -> tuple[CollectionRow, ...]:
    api = Api(store, entity=entity, project=project)
    rows = []
    for c in api.artifact_collections(project, entity=entity):
        newest = c.artifacts(per_page=1)
        rows.append(CollectionRow(c.name, c.type, c.version_count, tuple(c.aliases),
                                  newest[0].updated_at if newest else None))
    return tuple(rows)


def project_page(store: Store, entity: str, project: str) -> ProjectPage:
    colls = _collection_rows(store, entity, project)
    if not colls and project != REGISTRY_PROJECT:
        raise NotFound(f"{entity}/{project} holds no collection")
    registry = () if project == REGISTRY_PROJECT else _collection_rows(store, entity, REGISTRY_PROJECT)
    return ProjectPage(entity, project, colls, registry)


def collection_page(store: Store, coll: CollectionPath, skip: int = 0) -> CollectionPage:
    page, recorded = log_with_runs(store, coll, limit=PAGE_SIZE, skip=skip)
    if page.total == 0:
        raise missing_collection(store, coll)
    rows = []
    for entry in page.entries:
        v = entry.version
        run = entry.link.run if entry.link is not None else v.run
        rows.append(VersionRow(entry.index, tuple(page.aliases.get(entry.object_id, ())), v.size, v.new_bytes,
                               v.created_at, run, bool(run) and run in recorded, v.digest))
    kind = page.entries[0].version.artifact_type if page.entries else ""
    described = Api(store, entity=coll.entity, project=coll.project).artifact_collection(kind, coll.name).description \
        if kind else None
    return CollectionPage(coll, kind, page.total, skip, tuple(rows), described)


def resolve_version(store: Store, coll: CollectionPath, selector: str) -> ResolvedVersion:
    return resolve(store, parse_version_spec(f"{coll.name}:{selector}", entity=coll.entity, project=coll.project))


def _files(art: Artifact) -> tuple[FileRow, ...]:
    rows = []
    for f in art.files(per_page=10_000):
        tensors: list[TensorRow] = []
        more = 0
        if f.kind == "file" and f.path.endswith(".safetensors"):
            try:
                with art.safe_open(f.path) as st:
                    names = st.offset_keys()
                    more = max(0, len(names) - TENSORS_SHOWN)
                    for name in names[:TENSORS_SHOWN]:
                        s = st.get_slice(name)
                        tensors.append(TensorRow(name, s.get_dtype(), tuple(s.get_shape())))
            except ObjstoreError:
                tensors, more = [], 0  # not a safetensors file after all: shown as a plain file
        rows.append(FileRow(f.path, f.size, f.kind, f.ref, tuple(tensors), more))
    return tuple(rows)


def version_page(store: Store, coll: CollectionPath, selector: str) -> VersionPage:
    resolved = resolve_version(store, coll, selector)
    art = artifact_of(store, resolved)
    users = sorted(art.used_by(), key=lambda r: (r.started_at, r.path), reverse=True)
    now = list_aliases(store, coll)
    return VersionPage(
        coll, resolved.index, art.type, art.digest, resolved.object_id.hex, art.source_qualified_name,
        tuple(art.aliases), art.description, dict(art.metadata), tuple(art.tags), art.size, art.new_bytes,
        art.created_timestamp, _files(art), art.logged_by_path, tuple(r.path for r in users),
        tuple(alias_history(store, coll, resolved.object_id)), lineage(store, resolved),
        {alias: oid.hex for alias, oid in now.items()}, read_annotations(store, resolved).revision,
    )


def diff_page(store: Store, a: tuple[CollectionPath, str], b: tuple[CollectionPath, str]) -> VersionDiff:
    return diff_versions(store, resolve_version(store, *a), resolve_version(store, *b))


def run_page(store: Store, entity: str, project: str, run_id: str) -> RunPage:
    run = Api(store, entity=entity, project=project).run(f"{entity}/{project}/{run_id}")
    return RunPage(run, tuple(a.qualified_name for a in run.used_artifacts()),
                   tuple(a.qualified_name for a in run.logged_artifacts()))


# -- the two edits (only with allow_edits) -----------------------------------------

def move_alias(store: Store, coll: CollectionPath, alias: str, selector: str, expected_hex: str) -> None:
    """Move ``alias`` to version ``selector`` if it still points where the page saw it
    (``expected_hex``: that entry's id, empty for an alias that was unset)."""
    target = resolve_version(store, coll, selector)
    try:
        expected = ObjectId.from_hex(expected_hex) if expected_hex else None
    except ValueError:
        raise InvalidInput(f"{expected_hex!r} is not an entry id; reload the page") from None
    move_alias_ref(store, coll, alias, target.object_id, expected=expected)


def edit_description(store: Store, coll: CollectionPath, selector: str, revision: int, new: str) -> None:
    """Set the version's description if its annotations are still at ``revision``
    (what the page showed): one compare-and-swap in the library."""
    resolved = resolve_version(store, coll, selector)
    edit_annotations(store, resolved, Edit(description=new or None, set_description=True), expected_revision=revision)
