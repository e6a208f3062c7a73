"""``Api``: read and change what is stored without starting a run (W&B's ``wandb.Api``).

Shaped like W&B's: ``Api(overrides={"entity": …, "project": …})`` (or objstore's
``Api(store, entity=…, project=…)``), ``artifact``, ``artifacts``,
``artifact_exists``, ``artifact_collection(s)``, ``artifact_collection_exists``,
``artifact_type(s)``, ``run``, ``runs``, ``project``, ``projects``. Lists are
whole lists, not W&B's lazy paginators (``per_page`` is accepted and ignored).
What W&B answers with ``CommError`` (a missing artifact, collection or run)
raises :class:`~objstore.errors.NotFound`, which is one.

>>> import objstore, tempfile
>>> api = objstore.Api(store=tempfile.mkdtemp())
>>> api.artifact_collections("mnist", entity="charlie")
[]
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, NamedTuple

from objstore.api.artifact import Artifact, artifact_of, wire
from objstore.api.runinfo import RunInfo, iter_runs, read_run_by_path
from objstore.errors import CorruptObject, InvalidName, NotFound, UnsupportedError, UsageError, WrongType
from objstore.model import deletion
from objstore.model.annotations import (
    AnnotationEdit,
    CollectionAnnotations,
    Edit,
    check_description,
    collection_annotation_history,
    edit_collection_annotations,
    read_collection_annotations,
)
from objstore.model.distributed import pending_type
from objstore.model.names import CollectionPath, check_name, check_tags, parse_version_spec
from objstore.model.store import Store
from objstore.model.versions import (
    collection_exists,
    list_aliases,
    list_collections,
    list_projects,
    list_versions,
    missing_collection,
    read_entry,
    resolve,
)
from objstore.settings import resolve_entity, resolve_project
from objstore.storage.keys import version_ref


class Project(NamedTuple):
    """A project of the store (W&B's ``Project``: ``name``, ``entity``, ``path``);
    still unpacks as the ``(entity, project)`` pair ``projects()`` gave before."""

    entity: str
    name: str

    @property
    def path(self) -> list[str]:
        return [self.entity, self.name]


class ArtifactCollection:
    """A collection (or registered model): its path, type, version count and aliases,
    its own ``description`` and ``tags``, and W&B's ``artifacts()``, ``delete()``, ``save()``.

    ``description`` (a string or None) and ``tags`` (a list; W&B's tag rule, checked
    on assignment and again by ``save()``) are the collection's own, not any
    version's. Assigning them changes this object only; ``save()`` stores the
    difference from what was read (tags added and removed one by one) by
    compare-and-swap, so saves of different tags from different objects or
    processes all land (:func:`objstore.model.annotations.edit_collection_annotations`),
    and then shows what is stored; NotFound if the collection was deleted (nothing
    is left behind). ``annotation_history()`` lists every edit.
    """

    def __init__(self, store: Store, coll: CollectionPath, type: str, version_count: int, aliases: tuple[str, ...]) -> None:
        self._store, self._coll = store, coll
        self.entity, self.project, self.name = coll.entity, coll.project, coll.name
        self.type, self.version_count, self._aliases = type, version_count, aliases
        self._show(read_collection_annotations(store, coll))

    def _show(self, saved: CollectionAnnotations) -> None:
        self._saved = saved
        self._description = saved.description
        self._tags = list(saved.tags)

    def __setattr__(self, name: str, value: Any) -> None:
        prop = getattr(type(self), name, None)
        if not name.startswith("_") and (name in self.__dict__ or (isinstance(prop, property) and prop.fset is None)):
            raise UnsupportedError(f"ArtifactCollection.{name} is read-only")
        object.__setattr__(self, name, value)

    @property
    def aliases(self) -> list[str]:
        """The aliases of its versions, sorted (a list, as W&B's; a fresh one each time)."""
        return list(self._aliases)

    @property
    def qualified_name(self) -> str:
        return str(self._coll)

    @property
    def description(self) -> str | None:
        return self._description

    @description.setter
    def description(self, value: str | None) -> None:
        self._description = check_description(value)

    @property
    def tags(self) -> list[str]:
        return self._tags

    @tags.setter
    def tags(self, value: list[str]) -> None:
        self._tags = list(check_tags(value))

    def is_sequence(self) -> bool:
        """W&B's method: True for an artifact collection, False for a registered model (a portfolio)."""
        return not self._coll.is_registry

    def artifacts(self, per_page: int = 50, start: str | None = None) -> list[Artifact]:
        """Its versions, oldest first (a whole list: ``per_page`` and W&B's cursor
        ``start`` are accepted and ignored)."""
        return _versions(self._store, self._coll)

    def save(self) -> None:
        """Store what was assigned to ``description`` and ``tags`` since they were read
        (nothing assigned: nothing written); a bad tag raises InvalidName and writes nothing."""
        tags = check_tags(self._tags)
        edit = Edit(
            description=self._description, set_description=self._description != self._saved.description,
            tags_add=tuple(t for t in tags if t not in self._saved.tags),
            tags_remove=tuple(t for t in self._saved.tags if t not in tags))
        if not edit.is_empty():
            self._show(edit_collection_annotations(self._store, self._coll, edit))

    def annotation_history(self) -> list[AnnotationEdit]:
        """Every edit of this collection's own description and tags, oldest first:
        who, when, each field's old and new value (objstore's; W&B keeps none)."""
        return collection_annotation_history(self._store, self._coll)

    def delete(self) -> None:
        """Delete the collection (every version, alias and digest ref, and their reflogs;
        ``gc`` reclaims the bytes): :func:`objstore.model.deletion.delete_collection`."""
        deletion.delete_collection(self._store, self._coll)

    def __repr__(self) -> str:
        return f"<ArtifactCollection {self._coll} type={self.type!r} versions={self.version_count}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ArtifactCollection):
            return NotImplemented
        return (self._coll, self.type, self.version_count, self._aliases) == (other._coll, other.type, other.version_count, other._aliases)

    __hash__ = None  # type: ignore[assignment]  # mutable-looking, compared by value


class ArtifactType:
    """W&B's ``ArtifactType``: the collections of one type in one project."""

    def __init__(self, api: Api, entity: str, project: str, name: str) -> None:
        self._api, self.entity, self.project, self.name = api, entity, project, name

    @property
    def type(self) -> str:
        return self.name

    def collections(self, per_page: int = 50) -> list[ArtifactCollection]:
        return self._api.artifact_collections(self.project, self.name, entity=self.entity)

    def collection(self, name: str) -> ArtifactCollection:
        return self._api.artifact_collection(self.name, f"{self.entity}/{self.project}/{name}")

    def __repr__(self) -> str:
        return f"<ArtifactType {self.name!r} in {self.entity}/{self.project}>"


def _versions(store: Store, coll: CollectionPath) -> list[Artifact]:
    return [artifact_of(store, read_entry(store, coll, oid, ref=version_ref(coll.entity, coll.project, coll.name, idx)))
            for idx, oid in list_versions(store, coll)]


class Api:
    """Queries over a store. ``entity``/``project`` (or W&B's ``overrides`` dict)
    fill in short names; ``store`` is a path or ``s3://`` URL (by default found as
    ``init`` finds it). A first argument that is not a dict is taken as the store,
    as objstore has always taken it."""

    def __init__(self, overrides: Mapping[str, Any] | str | os.PathLike[str] | Store | None = None,
                 timeout: int | None = None, api_key: str | None = None, *,
                 store: str | os.PathLike[str] | Store | None = None,
                 entity: str | None = None, project: str | None = None) -> None:
        if overrides is not None and not isinstance(overrides, Mapping):
            if store is not None:
                raise UsageError("give the store once: Api(store) or Api(store=…)")
            store, overrides = overrides, None
        settings = dict(overrides or {})
        entity = entity or settings.get("entity")
        project = project or settings.get("project")
        self.store = store if isinstance(store, Store) else Store.open(store)
        self.entity = check_name(resolve_entity(entity), "entity")
        # not self.project: that is W&B's project(name) method
        self.default_project = check_name(resolve_project(project), "project")
        self.settings = {"entity": self.entity, "project": self.default_project}

    @property
    def default_entity(self) -> str:
        return self.entity

    # -- artifacts --------------------------------------------------------
    def artifact(self, name: str, type: str | None = None) -> Artifact:
        """The version ``[[entity/]project/]name[:selector]`` names (``latest`` by default)."""
        resolved = resolve(self.store, parse_version_spec(name, entity=self.entity, project=self.default_project))
        if type is not None and resolved.version.artifact_type != type:
            raise WrongType(f"{resolved.qualified_name} is of type {resolved.version.artifact_type!r}, not {type!r}")
        return artifact_of(self.store, resolved)

    def artifact_exists(self, name: str, type: str | None = None) -> bool:
        """Whether the version exists (False for a name that breaks the rules, as W&B)."""
        try:
            self.artifact(name, type)
            return True
        except (NotFound, InvalidName, WrongType):
            return False

    def _collection_path(self, name: str) -> CollectionPath:
        spec = parse_version_spec(name, entity=self.entity, project=self.default_project)
        if ":" in name:
            raise InvalidName(f"{name!r} names a version; a collection is [[entity/]project/]name")
        return spec.collection

    def artifact_versions(self, type_name: str | None, name: str, per_page: int = 50) -> list[Artifact]:
        """Every version of a collection, oldest first; NotFound (W&B's CommError) if the
        collection is of another type than ``type_name`` (None: any), as ``artifact_collection``."""
        coll = self._collection_path(name)
        versions = _versions(self.store, coll)
        kind = versions[-1].type if versions else pending_type(self.store, coll)
        if kind is None:
            raise missing_collection(self.store, coll)
        if type_name is not None and kind != type_name:
            raise NotFound(f"{coll} is of type {kind!r}, not {type_name!r}", key=str(coll))
        return versions  # only a distributed version's parts: [], as W&B lists COMMITTED versions

    def artifacts(self, type_name: str | None, name: str, order: str | None = None, per_page: int = 50,
                  tags: str | list[str] | None = None, start: str | None = None) -> list[Artifact]:
        """W&B's ``artifacts(type_name, name)``: every logged (W&B's COMMITTED) version
        of a collection, oldest first (``order="-…"`` gives newest first); with
        ``tags`` (one string or a list) only the versions that carry all of them
        (W&B's rule). A whole list: ``per_page`` and the cursor ``start`` are ignored."""
        wanted = set(check_tags(tags))
        versions = self.artifact_versions(type_name, name)
        if wanted:
            versions = [v for v in versions if wanted <= set(v.tags)]
        return list(reversed(versions)) if order and order.startswith("-") else versions

    def artifact_collection(self, type_name: str, name: str) -> ArtifactCollection:
        """The collection ``[[entity/]project/]name`` of type ``type_name``; NotFound
        (W&B's CommError) if there is none of that type."""
        coll = self._collection_path(name)
        if not collection_exists(self.store, coll) and pending_type(self.store, coll) is None:
            raise NotFound(f"no artifact collection {coll} in the store; check the name (objstore ls lists them)", key=str(coll))
        described = self._describe(coll)
        if described.type != type_name:
            raise NotFound(f"{coll} is of type {described.type!r}, not {type_name!r}", key=str(coll))
        return described

    def artifact_collection_exists(self, name: str, type: str) -> bool:
        try:
            self.artifact_collection(type, name)
            return True
        except (NotFound, InvalidName):
            return False

    def artifact_collections(self, project_name: str | None = None, type_name: str | None = None, *,
                             entity: str | None = None) -> list[ArtifactCollection]:
        """The collections of a project (``entity/project`` or just ``project``)."""
        ent, proj = self._project_path(project_name, entity)
        out = [self._describe(coll) for coll in list_collections(self.store, ent, proj, pending=True)]
        return [c for c in out if type_name is None or c.type == type_name]

    def artifact_types(self, project: str | None = None) -> list[ArtifactType]:
        """The types of the project's collections, by name."""
        ent, proj = self._project_path(project, None)
        names = sorted({c.type for c in self.artifact_collections(proj, entity=ent)})
        return [ArtifactType(self, ent, proj, n) for n in names]

    def artifact_type(self, type_name: str, project: str | None = None) -> ArtifactType:
        """The type ``type_name`` of the project; NotFound if no collection has it."""
        for t in self.artifact_types(project):
            if t.name == type_name:
                return t
        ent, proj = self._project_path(project, None)
        raise NotFound(f"no artifact of type {type_name!r} in {ent}/{proj}", key=f"{ent}/{proj}")

    def _project_path(self, project: str | None, entity: str | None) -> tuple[str, str]:
        ent, proj = entity or self.entity, project or self.default_project
        if "/" in proj:
            ent, proj = proj.split("/", 1)
        return ent, proj

    def _describe(self, coll: CollectionPath) -> ArtifactCollection:
        versions = list_versions(self.store, coll)
        # The newest entry that reads gives the type: one damaged version (fsck
        # names it) does not hide its collection, or the project's others.
        kind = "?"
        for _, oid in reversed(versions):
            try:
                kind = read_entry(self.store, coll, oid).version.artifact_type
                break
            except (CorruptObject, NotFound):
                continue
        if not versions:  # only parts of a distributed version (W&B's collection of one PENDING version)
            kind = pending_type(self.store, coll) or kind
        return ArtifactCollection(self.store, coll, kind, len(versions), tuple(sorted(list_aliases(self.store, coll))))

    # -- projects and runs -------------------------------------------------
    def projects(self, entity: str | None = None, per_page: int = 200) -> list[Project]:
        """The projects in the store (of ``entity`` if given), each with ``.entity`` and ``.name``."""
        return [Project(e, p) for e, p in list_projects(self.store, entity)]

    def project(self, name: str, entity: str | None = None) -> Project:
        """The project ``name`` (W&B gives one whether or not it holds anything; so does this)."""
        ent, proj = self._project_path(name, entity)
        return Project(check_name(ent, "entity"), check_name(proj, "project"))

    def run(self, path: str = "") -> RunInfo:
        """A run by ``entity/project/run-id``, ``project/run-id`` or ``run-id``
        (the rest from the Api's entity and project); NotFound if it is not stored."""
        parts = path.split("/") if isinstance(path, str) and path else []
        if not 1 <= len(parts) <= 3:
            raise InvalidName(f"{path!r} is not a run path; use entity/project/run-id, project/run-id or run-id")
        full = [self.entity, self.default_project][: 3 - len(parts)] + parts
        return read_run_by_path(self.store, "/".join(full))

    def runs(self, path: str | None = None, filters: Mapping[str, Any] | None = None, order: str = "+created_at",
             per_page: int = 50) -> list[RunInfo]:
        """The runs of ``entity/project`` (or ``project``; the Api's by default), oldest
        first (``order="-created_at"`` newest first). ``filters`` is refused (not offered)."""
        if filters:
            raise UnsupportedError("runs(filters=…) is not offered; filter the list in Python")
        ent, proj = self._project_path(path, None)
        runs = sorted(iter_runs(self.store, ent, proj), key=lambda r: (r.started_at, r.id))
        return list(reversed(runs)) if order.startswith("-") else runs


def _collection(store: Store, coll: CollectionPath, type_name: str) -> ArtifactCollection:
    return Api(store, entity=coll.entity, project=coll.project).artifact_collection(type_name, str(coll))


wire("collection", _collection)
