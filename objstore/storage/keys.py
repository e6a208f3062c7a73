"""Key layout: every key namespace of a store, built and parsed here only.

Layout (the same on every backend)::

    config                                            the store's format and chunking
    objects/<hex[:2]>/<hex[2:]>                       one loose object each
    packs/<name>.pack, packs/<name>.idx               a pack and its index
    packs/<name>.midx                                 a consolidated index over many packs (objstore.storage.indexfile)
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
    annotations/<entity>/<project>/<name>/v<N>/state  a version's edited annotations, moved by compare-and-swap
    annotations/<entity>/<project>/<name>/v<N>/log/<revision>-<id>  one annotation edit each (create-only)

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
INDEX_FILE_SUFFIX = ".midx"
GC_MARKED = "gc/marked/"  # where gc marks packs it will delete (objstore.maintenance.gc)
GC_MARKED_OBJECTS = "gc/objects/"  # where gc lists loose objects it will delete
TMP = "tmp/"  # staging: never content, swept by gc, skipped by listings of other prefixes
REFS = "refs/"
LOGS = "logs/"
REMOTES = "remotes/"
QUARANTINE = "quarantine/"
ANNOTATIONS = "annotations/"  # mutable annotations of versions (objstore.model.annotations)
# Before locks lived beside the keys they guard, local ref locks sat under refs/.
LEGACY_LOCK_AREA = REFS


def pack_key(name: str) -> str:
    return f"{PACKS}{name}{PACK_SUFFIX}"


def idx_key(name: str) -> str:
    return f"{PACKS}{name}{IDX_SUFFIX}"


def index_file_key(name: str) -> str:
    return f"{PACKS}{name}{INDEX_FILE_SUFFIX}"


def index_file_name_of(key: str) -> str | None:
    """The name of ``packs/<name>.midx``; None for any other key."""
    if key.startswith(PACKS) and key.endswith(INDEX_FILE_SUFFIX):
        return key[len(PACKS):-len(INDEX_FILE_SUFFIX)]
    return None


def object_key(oid: ObjectId) -> str:
    h = oid.hex
    return f"{OBJECTS}{h[:2]}/{h[2:]}"


def pack_name_of(key: str) -> str | None:
    """The pack name of ``packs/<name>.pack``; None for any other key."""
    if key.startswith(PACKS) and key.endswith(PACK_SUFFIX):
        return key[len(PACKS):-len(PACK_SUFFIX)]
    return None


def idx_name_of(key: str) -> str | None:
    """The pack name of ``packs/<name>.idx``; None for any other key."""
    if key.startswith(PACKS) and key.endswith(IDX_SUFFIX):
        return key[len(PACKS):-len(IDX_SUFFIX)]
    return None


def object_prefix(hex_prefix: str) -> str:
    """The listing prefix of the loose objects whose hex id starts with ``hex_prefix``."""
    return f"{OBJECTS}{hex_prefix[:2]}/{hex_prefix[2:]}"


def object_hex_of(key: str) -> str | None:
    """The 64-digit hex id a loose-object key spells; None if it spells none
    (the digits are not checked: ``ObjectId.from_hex`` does that)."""
    if not key.startswith(OBJECTS):
        return None
    rest = key[len(OBJECTS):].replace("/", "")
    return rest if len(rest) == 64 else None


def marked_pack_key(name: str) -> str:
    return f"{GC_MARKED}{name}"


def marked_pack_name_of(key: str) -> str:
    return key[len(GC_MARKED):]


def marked_objects_key(stamp: str) -> str:
    return f"{GC_MARKED_OBJECTS}{stamp}"


def quarantine_key(key: str) -> str:
    """Where repair moves a damaged ``key``."""
    return f"{QUARANTINE}{key}"


# -- remotes -----------------------------------------------------------------

def remote_prefix(name: str) -> str:
    """Everything kept about remote ``name``: its config and its tracking refs."""
    return f"{REMOTES}{name}/"


def remote_config_key(name: str) -> str:
    return f"{REMOTES}{name}/config"


def remote_name_of_config(key: str) -> str | None:
    """The remote name of ``remotes/<name>/config``; None for any other key."""
    if not key.startswith(REMOTES):
        return None
    parts = key[len(REMOTES):].split("/")
    return parts[0] if len(parts) == 2 and parts[1] == "config" else None


def tracked_ref_of(key: str) -> str | None:
    """The ref that ``remotes/<name>/refs/...`` tracks; None for any other key."""
    if not key.startswith(REMOTES):
        return None
    _, _, rest = key[len(REMOTES):].partition("/")
    return rest if rest.startswith(REFS) else None


# -- ref names ---------------------------------------------------------------

def refs_prefix(entity: str | None = None, project: str | None = None) -> str:
    """The listing prefix of every ref, of one entity's, or of one project's
    (``project`` counts only with ``entity``)."""
    return REFS + (f"{entity}/" if entity else "") + (f"{project}/" if entity and project else "")


def reflog_prefix(ref: str) -> str:
    """The listing prefix of ``ref``'s reflog entries (``LOGS`` lists them all)."""
    return f"{LOGS}{ref}/"


def reflogs_under(ref_prefix: str) -> str:
    """The listing prefix of the reflog entries of every ref under ``ref_prefix``."""
    return f"{LOGS}{ref_prefix}"


def reflog_key(ref: str, stamp: str) -> str:
    return f"{LOGS}{ref}/{stamp}"


def ref_display(key: str) -> str:
    """How messages name a ref: its key without ``refs/``."""
    return key.removeprefix(REFS)


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


def ref_key_parts(key: str) -> list[str] | None:
    """The ``/``-separated parts of a key under ``refs/``, the prefix removed;
    None for a key outside ``refs/``. For listings that want what lies under a
    prefix (projects, collections) rather than one ref kind."""
    return key[len(REFS):].split("/") if key.startswith(REFS) else None


def ref_label(ref: RefKey) -> str:
    """``entity/project/name:vN``, how messages name a version ref."""
    return f"{ref.entity}/{ref.project}/{ref.name}:{ref.tail}"


# -- annotations -------------------------------------------------------------
# Beside refs, not under them: an annotation's value is a document, not an object id,
# so no ref reader ever meets one. The entity/project/name parts are spelled as in
# the collection's ref prefix, so both follow one naming of a collection.

def annotations_prefix(entity: str, project: str, name: str) -> str:
    """The listing prefix of every annotation key of collection ``entity/project/name``."""
    return ANNOTATIONS + collection_prefix(entity, project, name)[len(REFS):]


def annotation_key(entity: str, project: str, name: str, index: int) -> str:
    """The mutable key holding version v<index>'s edited annotations."""
    return f"{annotations_prefix(entity, project, name)}v{index}/state"


def annotation_log_prefix(entity: str, project: str, name: str, index: int) -> str:
    return f"{annotations_prefix(entity, project, name)}v{index}/log/"


def annotation_log_key(entity: str, project: str, name: str, index: int, revision: int, version_hex: str) -> str:
    """The create-only key of the edit that made ``revision`` of the annotations of
    v<index>, the version object ``version_hex``: a collection deleted and logged
    again under the same name numbers its edits anew, never into an old entry."""
    return f"{annotation_log_prefix(entity, project, name, index)}{revision:012d}-{version_hex[:16]}"


@dataclass(frozen=True, slots=True)
class AnnotationKey:
    """``annotations/<e>/<p>/<name>/v<N>/state`` taken apart."""

    entity: str
    project: str
    name: str
    index: int


def parse_annotation_key(key: str) -> AnnotationKey | None:
    """The version an annotation state key belongs to; None for any other key."""
    if not key.startswith(ANNOTATIONS) or not key.endswith("/state"):
        return None
    parts = ref_key_parts(REFS + key[len(ANNOTATIONS):])  # the same parts, read as a ref's
    if parts is None or len(parts) != 5 or not parts[3].startswith("v") or not parts[3][1:].isdigit():
        return None
    if parts[3] != f"v{int(parts[3][1:])}":
        return None
    return AnnotationKey(parts[0], parts[1], parts[2], int(parts[3][1:]))
