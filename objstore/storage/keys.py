"""Key layout: every key namespace of a store, built and parsed here only.

Layout (the same on every backend)::

    config                                            the store's format and chunking
    objects/<hex[:2]>/<hex[2:]>                       one loose object each
    packs/<name>.pack, packs/<name>.idx               a pack and its index
    gc/marked/<pack name>                             packs gc will delete (objstore.maintenance.gc)
    gc/objects/<time>-<pid>-<random>                  loose objects gc will delete
    tmp/...                                           staging; never read as content
    refs/<entity>/<project>/<name>/versions/v<N>      written once (create-only)
    refs/<entity>/<project>/<name>/aliases/<alias>    moved by compare-and-swap
    refs/<entity>/<project>/<name>/digests/<hex>      digest -> version, written once
    refs/<entity>/<project>/runs/<run-id>             moved by compare-and-swap
    logs/<ref>/<time ns>-<random>                     one reflog entry each
    remotes/<remote>/config                           a configured remote
    remotes/<remote>/refs/...                         what fetch last saw of its refs
    quarantine/<key>                                  damaged keys repair moved aside

Invariant: no other module spells a prefix or takes a key apart by hand; they
ask the builders and parsers below, so the layout can change in one place.
"""

from __future__ import annotations

from dataclasses import dataclass

from objstore.storage.ids import ObjectId

PACKS = "packs/"
OBJECTS = "objects/"
PACK_SUFFIX = ".pack"
IDX_SUFFIX = ".idx"
GC_MARKED = "gc/marked/"  # where gc marks packs it will delete (objstore.maintenance.gc)
REFS = "refs/"
LOGS = "logs/"


def pack_key(name: str) -> str:
    return f"{PACKS}{name}{PACK_SUFFIX}"


def idx_key(name: str) -> str:
    return f"{PACKS}{name}{IDX_SUFFIX}"


def object_key(oid: ObjectId) -> str:
    h = oid.hex
    return f"{OBJECTS}{h[:2]}/{h[2:]}"


# -- ref names ---------------------------------------------------------------

def collection_prefix(entity: str, project: str, name: str) -> str:
    return f"{REFS}{entity}/{project}/{name}/"


def version_ref(entity: str, project: str, name: str, index: int) -> str:
    return f"{REFS}{entity}/{project}/{name}/versions/v{index}"


def alias_ref(entity: str, project: str, name: str, alias: str) -> str:
    return f"{REFS}{entity}/{project}/{name}/aliases/{alias}"


def digest_ref(entity: str, project: str, name: str, digest_hex: str) -> str:
    return f"{REFS}{entity}/{project}/{name}/digests/{digest_hex}"


def run_ref(entity: str, project: str, run_id: str) -> str:
    return f"{REFS}{entity}/{project}/runs/{run_id}"


@dataclass(frozen=True, slots=True)
class RefKey:
    """A ref key taken apart. ``kind``: version, alias, digest or run; ``tail`` is
    the ``vN``, the alias, the digest hex or the run id; ``name`` is empty for runs.
    Only the layout is parsed here; whether the parts obey the name rules, and
    whether the ref's value belongs there, is :func:`objstore.model.versions.check_ref`'s."""

    key: str
    kind: str
    entity: str
    project: str
    name: str
    tail: str


_NAMESPACES = {"versions": "version", "aliases": "alias", "digests": "digest"}


def parse_ref_key(key: str) -> RefKey | None:
    """Parse ``refs/e/p/n/{versions,aliases,digests}/x`` or ``refs/e/p/runs/id``; None for any other key."""
    if not key.startswith(REFS):
        return None
    parts = key[len(REFS):].split("/")
    if len(parts) == 5 and parts[3] in _NAMESPACES:
        return RefKey(key, _NAMESPACES[parts[3]], parts[0], parts[1], parts[2], parts[4])
    if len(parts) == 4 and parts[2] == "runs":
        return RefKey(key, "run", parts[0], parts[1], "", parts[3])
    return None
