"""``Api``: read and change what is stored without starting a run (W&B's ``wandb.Api``).

>>> import objstore, tempfile
>>> api = objstore.Api(store=tempfile.mkdtemp())
>>> api.artifact_collections("mnist", entity="charlie")
[]
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from objstore.api.artifact import Artifact, artifact_of
from objstore.api.naming import DEFAULT_PROJECT, default_entity
from objstore.api.runinfo import RunInfo, read_run_by_path
from objstore.errors import CorruptObject, NotFound, WrongType
from objstore.model.names import CollectionPath, check_name, parse_version_spec
from objstore.model.store import Store
from objstore.model.versions import list_aliases, list_collections, list_projects, list_versions, read_entry, resolve
from objstore.storage.keys import version_ref


@dataclass(frozen=True, slots=True)
class ArtifactCollection:
    """A collection (or registered model): its path, type and version count."""

    entity: str
    project: str
    name: str
    type: str
    version_count: int
    aliases: tuple[str, ...]

    @property
    def qualified_name(self) -> str:
        return f"{self.entity}/{self.project}/{self.name}"


class Api:
    """Queries over a store. ``entity``/``project`` fill in short names."""

    def __init__(self, store: str | os.PathLike[str] | Store | None = None, *,
                 entity: str | None = None, project: str | None = None) -> None:
        self.store = store if isinstance(store, Store) else Store.open(store)
        self.entity = check_name(entity, "entity") if entity else default_entity()
        self.project = check_name(project, "project") if project else DEFAULT_PROJECT

    def artifact(self, name: str, type: str | None = None) -> Artifact:
        """The version ``[[entity/]project/]name[:selector]`` names (``latest`` by default)."""
        resolved = resolve(self.store, parse_version_spec(name, entity=self.entity, project=self.project))
        if type is not None and resolved.version.artifact_type != type:
            raise WrongType(f"{resolved.qualified_name} is of type {resolved.version.artifact_type!r}, not {type!r}")
        return artifact_of(self.store, resolved)

    def artifact_exists(self, name: str) -> bool:
        try:
            self.artifact(name)
            return True
        except NotFound:
            return False

    def artifact_versions(self, type_name: str | None, name: str) -> list[Artifact]:
        """Every version of a collection, oldest first."""
        spec = parse_version_spec(name, entity=self.entity, project=self.project)
        coll = spec.collection
        versions = [artifact_of(self.store, read_entry(self.store, coll, oid, ref=version_ref(coll.entity, coll.project, coll.name, idx)))
                    for idx, oid in list_versions(self.store, coll)]
        if not versions:
            raise NotFound(f"no artifact {coll} in the store; check the name (objstore ls lists them)", key=str(coll))
        if type_name is not None:
            versions = [v for v in versions if v.type == type_name]
        return versions

    artifacts = artifact_versions

    def artifact_collections(self, project_name: str | None = None, type_name: str | None = None, *,
                             entity: str | None = None) -> list[ArtifactCollection]:
        """The collections of a project (``entity/project`` or just ``project``)."""
        ent, proj = entity or self.entity, project_name or self.project
        if proj and "/" in proj:
            ent, proj = proj.split("/", 1)
        out = []
        for coll in list_collections(self.store, ent, proj):
            out.append(self._describe(coll))
        return [c for c in out if type_name is None or c.type == type_name]

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
        return ArtifactCollection(coll.entity, coll.project, coll.name, kind, len(versions),
                                  tuple(sorted(list_aliases(self.store, coll))))

    def projects(self, entity: str | None = None) -> list[tuple[str, str]]:
        """(entity, project) pairs in the store."""
        return list_projects(self.store, entity)

    def run(self, path: str) -> RunInfo:
        """A run by ``entity/project/run-id``."""
        return read_run_by_path(self.store, path)
