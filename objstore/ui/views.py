"""What each page of ``objstore ui`` shows, read through the library the CLI uses.

Each function answers one page as frozen values; templates only lay them out.
Values stay raw here (names, descriptions, metadata exactly as stored): escaping
is the templates' job, done by Jinja2's autoescaping, so no value can be escaped
twice or not at all. Nothing here writes to the store except :func:`move_alias`,
:func:`edit_description` and :func:`edit_collection`, each one compare-and-swap
against what the page showed (:func:`objstore.model.versions.move_alias`, and
the revision of the annotations shown), so a change someone else made first is
a Conflict.

Cost: the store, project and collection pages read what they show and no more
(listings of refs, then one entry per row shown), so they cost the same on a
store with ten versions per collection as on one with thousands. What must read
every version (logical and unique bytes) is :func:`usage_page`, a page of its
own that says so; the store page shows the totals a :class:`UsageCounter` last
counted in the background (on a Store of its own), never counting in the request.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from objstore.api.artifact import Artifact, artifact_of
from objstore.api.diff import VersionDiff, diff_versions
from objstore.api.lineage import Lineage, lineage
from objstore.api.public import Api
from objstore.api.runinfo import RunInfo, log_with_runs
from objstore.errors import CorruptObject, InvalidInput, NotFound, ObjstoreError
from objstore.maintenance.stats import Stored, StoreUsage, disk_usage, stored
from objstore.model.annotations import (
    CollectionAnnotations,
    Edit,
    edit_annotations,
    edit_collection_annotations,
    read_annotations,
    read_collection_annotations,
)
from objstore.model.names import REGISTRY_PROJECT, CollectionPath, check_tags, parse_version_spec
from objstore.model.refs import ReflogEntry
from objstore.model.store import Store
from objstore.model.versions import (
    ResolvedVersion,
    alias_history,
    collection_exists,
    list_aliases,
    list_projects,
    missing_collection,
    resolve,
    summarize_collections,
)
from objstore.model.versions import move_alias as move_alias_ref
from objstore.storage.ids import ObjectId

# Rows per page (projects of the store, collections of a project, versions of a
# collection), tensors listed per file on a version page.
PAGE_SIZE = 50
TENSORS_SHOWN = 200


@dataclass(frozen=True, slots=True)
class ProjectRow:
    entity: str
    project: str
    collections: int
    versions: int


@dataclass(frozen=True, slots=True)
class StorePage:
    location: str
    projects: tuple[ProjectRow, ...]
    total: int  # (entity, project) pairs holding refs; ``projects`` is the page of them from ``skip``
    skip: int
    stored: Stored


@dataclass(frozen=True, slots=True)
class CollectionRow:
    name: str
    type: str
    versions: int
    aliases: tuple[str, ...]
    updated_at: float | None  # when its newest version was logged (linked, in a registry)


@dataclass(frozen=True, slots=True)
class RowsPage:
    rows: tuple[CollectionRow, ...]
    total: int
    skip: int


@dataclass(frozen=True, slots=True)
class ProjectPage:
    entity: str
    project: str
    collections: RowsPage
    registry: RowsPage


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
    annotations: CollectionAnnotations  # its own description and tags, with the revision the edit form sends


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


def store_page(store: Store, skip: int = 0) -> StorePage:
    """The projects from ``skip`` (a page of them), each from one listing of its refs,
    and the bytes on the backend from listings of packs and objects: no version is read."""
    pairs = list_projects(store)
    rows = []
    for entity, project in pairs[skip:skip + PAGE_SIZE]:
        colls = summarize_collections(store, entity, project)
        if colls:  # a project holding runs only has nothing to show
            rows.append(ProjectRow(entity, project, len(colls), sum(c.versions for c in colls)))
    return StorePage(store.location, tuple(rows), len(pairs), skip, stored(store))


def usage_page(store: Store) -> StoreUsage:
    """``objstore du --by project``: reads every version's tree, so its cost grows with the store."""
    return disk_usage(store, by="project")


@dataclass(frozen=True, slots=True)
class Counted:
    """What a background count found: the usage (None if it failed), when, and why not."""

    usage: StoreUsage | None
    at: float
    error: str | None = None


class UsageCounter:
    """Logical and unique bytes of the store at ``location``, counted in a daemon thread
    on a Store of its own (``disk_usage`` reads every version: no request waits for it).
    :meth:`latest` starts a count when there is none younger than ``max_age`` seconds
    and none running, and returns the last finished one (None before the first)."""

    def __init__(self, location: str, max_age: float = 60.0) -> None:
        self.location, self.max_age = location, max_age
        self._lock = threading.Lock()
        self._last: Counted | None = None
        self._running = False

    def latest(self) -> Counted | None:
        with self._lock:
            last, stale = self._last, self._last is None or time.time() - self._last.at > self.max_age
            if stale and not self._running:
                self._running = True
                threading.Thread(target=self._count, name="objstore-ui-usage", daemon=True).start()
        return last

    def _count(self) -> None:
        try:
            with Store.open(self.location, create=False) as store:
                counted = Counted(disk_usage(store), time.time())
        except ObjstoreError as exc:  # a damaged store: the page says so, fsck says more
            counted = Counted(None, time.time(), str(exc))
        with self._lock:
            self._last, self._running = counted, False


def _collection_rows(store: Store, entity: str, project: str, skip: int) -> RowsPage:
    listed = summarize_collections(store, entity, project)
    rows = []
    for c in listed[skip:skip + PAGE_SIZE]:
        try:  # the newest entry gives the type and the time: one ref and one object read per row
            newest = resolve_version(store, c.coll, f"v{c.newest}")
            kind, when = newest.version.artifact_type, newest.link.created_at if newest.link else newest.version.created_at
        except (CorruptObject, NotFound):  # damaged or deleted since the listing: the row stays (fsck says more)
            kind, when = "?", None
        rows.append(CollectionRow(c.coll.name, kind, c.versions, c.aliases, when))
    return RowsPage(tuple(rows), len(listed), skip)


def project_page(store: Store, entity: str, project: str, skip: int = 0, registry_skip: int = 0) -> ProjectPage:
    colls = _collection_rows(store, entity, project, skip)
    if not colls.total and project != REGISTRY_PROJECT:
        raise NotFound(f"{entity}/{project} holds no collection")
    registry = RowsPage((), 0, 0) if project == REGISTRY_PROJECT else \
        _collection_rows(store, entity, REGISTRY_PROJECT, registry_skip)
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
    return CollectionPage(coll, kind, page.total, skip, tuple(rows), read_collection_annotations(store, coll))


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
        tuple(alias_history(store, coll, resolved.object_id, include_latest=False)), lineage(store, resolved),
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


def edit_description(store: Store, coll: CollectionPath, selector: str, revision: int, new: str,
                     tags: list[str] | None = None) -> None:
    """Set the version's description (and, given ``tags``, its tags) if its annotations
    are still at ``revision`` (what the page showed): one compare-and-swap in the
    library; a bad tag is InvalidName and nothing is written."""
    resolved = resolve_version(store, coll, selector)
    now = read_annotations(store, resolved)
    wanted = now.tags if tags is None else check_tags(tags)
    edit = Edit(description=new or None, set_description=True,
                tags_add=tuple(t for t in wanted if t not in now.tags),
                tags_remove=tuple(t for t in now.tags if t not in wanted))
    edit_annotations(store, resolved, edit, expected_revision=revision)


def edit_collection(store: Store, coll: CollectionPath, revision: int, description: str, tags: list[str]) -> None:
    """Set the collection's own description and tags if they are still at ``revision``
    (what the page showed): one compare-and-swap in the library; a bad tag is
    InvalidName and nothing is written."""
    now = read_collection_annotations(store, coll)
    wanted = check_tags(tags)
    edit = Edit(description=description or None, set_description=(description or None) != now.description,
                tags_add=tuple(t for t in wanted if t not in now.tags),
                tags_remove=tuple(t for t in now.tags if t not in wanted))
    if not collection_exists(store, coll):
        raise missing_collection(store, coll)
    edit_collection_annotations(store, coll, edit, expected_revision=revision)
