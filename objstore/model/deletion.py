"""Deleting a whole collection (W&B's artifact delete): its refs and their reflogs.

Only refs go; the bytes stay until ``gc`` finds them unreachable, so a delete
is cheap and a concurrent reader that already resolved a version can finish.
A collection whose versions a registered model links to is refused: delete the
registered model (``<entity>/model-registry/<name>``) first, or the link would
dangle. Runs keep naming the deleted versions; lineage shows them as deleted.
"""

from __future__ import annotations

from dataclasses import dataclass

from objstore.errors import InvalidInput, NotFound
from objstore.model.inventory import iter_version_refs
from objstore.model.names import CollectionPath
from objstore.model.store import Store
from objstore.model.versions import collection_exists, list_versions
from objstore.storage.keys import collection_prefix


@dataclass(frozen=True, slots=True)
class Deleted:
    collection: str
    versions: int
    refs: int


def delete_collection(store: Store, coll: CollectionPath) -> Deleted:
    """Remove every ref of ``coll`` (versions, aliases, digests) and their reflogs."""
    if not collection_exists(store, coll):
        raise NotFound(f"no artifact {coll} in the store; check the name (objstore ls lists them)", key=str(coll))
    versions = list_versions(store, coll)
    ids = {oid for _, oid in versions}
    if not coll.is_registry:
        linked = sorted(r.label for r in iter_version_refs(store, strict=False) if r.link is not None and r.version_id in ids)
        if linked:
            raise InvalidInput(f"{coll} is linked from {', '.join(linked)}; delete those registered models first")
    prefix = collection_prefix(coll.entity, coll.project, coll.name)
    keys = list(store.refs.iter_names(prefix))
    # Aliases and digests first, version refs last: until the end the collection
    # still resolves by number, never half by alias.
    keys.sort(key=lambda k: ("/versions/" in k, k))
    for key in keys:
        store.refs.remove(key, f"collection {coll} deleted")
    store.refs.drop_reflogs(prefix)  # after the refs: a crash between leaves logs, which only keep objects
    return Deleted(str(coll), len(versions), len(keys))
