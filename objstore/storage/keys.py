"""Key layout: every key namespace of a store, built and parsed here only.

Layout (the same on every backend)::

    config                                            the store's format and chunking
    objects/<hex[:2]>/<hex[2:]>                       one loose object each
    packs/<name>.pack, packs/<name>.idx               a pack and its index
    packs/<name>.midx                                 a consolidated index over many packs (objstore.storage.indexfile)
    gc/marked/<pack name>                             packs gc will delete (objstore.maintenance.gc)
    gc/objects/<time>-<pid>-<random>                  loose objects gc will delete
    gc/deleting/<time>-<pid>-<random>                 a gc's intent: deleting now, or done at (objstore.model.gcintent)
    tmp/...                                           staging; never read as content
    refs/<entity>/<project>/<name>/versions/v<N>      written once (create-only)
    refs/<entity>/<project>/<name>/aliases/<alias>    moved by compare-and-swap
    refs/<entity>/<project>/<name>/digests/<hex>      digest -> version, written once
    refs/<entity>/<project>/<name>/pending/<distributed id>/<part>  one upserted part of a distributed
                                                      version not yet finished (create-only; cleared by finish)
    refs/<entity>/<project>/runs/<run-id>             moved by compare-and-swap
    logs/<ref>/<time ns>-<random>                     one reflog entry each
    remotes/<remote>/config                           a configured remote
    remotes/<remote>/refs/...                         what fetch last saw of its refs
    quarantine/<key>                                  damaged keys repair moved aside
    names/<folded entity>[/<folded project>[/<folded name>[/@aliases/<folded alias>] | /@runs/<folded run id>]]/@
                                                      the spelling that claimed a name, whatever its case
                                                      (create-only; objstore.model.nameclaims)
    annotations/<entity>/<project>/<name>/v<N>/state  a version's edited annotations, moved by compare-and-swap
    annotations/<entity>/<project>/<name>/v<N>/log/<revision>-<id>  one annotation edit each (create-only)
    annotations/<entity>/<project>/<name>/collection/state  a collection's own description and tags (compare-and-swap)
    annotations/<entity>/<project>/<name>/collection/log/<revision>-<id>  one edit of them each (create-only)
    lineage/used/<version hex>/<entity>/<project>/<run-id>    a run names the version as an input (create-only)
    lineage/logged/<version hex>/<entity>/<project>/<run-id>  a run names the version as an output (create-only)
    lineage/complete                                  every run of the store is in the two above (create-only)

Invariant: no other module spells a prefix or takes a key apart by hand; they
ask the builders and parsers below, so the layout can change in one place.

Names in ref keys (entity, project, collection, alias, run id) are encoded by
:func:`encode_name`: the characters ``A-Z a-z 0-9 _ - .`` stand for themselves,
every other byte of the name's UTF-8 is ``%XX``, and so is a leading ``.``
(``..`` is ``%2E.``, ``.hidden`` is ``%2Ehidden``). So no name can be ``.``,
``..``, empty or hold a ``/`` once in a key, whatever W&B's wider name rules
allow, and non-ASCII names are the same bytes on every backend (no Unicode
normalisation by a file system). The names objstore accepted before the rules
widened (``[A-Za-z0-9._-]``, not starting with ``.``) encode to themselves, so
keys of older stores are unchanged; ``%`` was never allowed, so decoding is exact.
Letters keep their case (W&B's names are case-sensitive, and older keys must stay
found), so two names differing only in case would share a place on a
case-insensitive file system: the store refuses the second (:func:`case_twin`,
checked by ``objstore.model.versions`` where a collection, alias or run is first made).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import quote, unquote

from objstore.errors import InvalidName
from objstore.storage.ids import ObjectId

PACKS = "packs/"
OBJECTS = "objects/"
PACK_SUFFIX = ".pack"
IDX_SUFFIX = ".idx"
INDEX_FILE_SUFFIX = ".midx"
GC_MARKED = "gc/marked/"  # where gc marks packs it will delete (objstore.maintenance.gc)
GC_MARKED_OBJECTS = "gc/objects/"  # where gc lists loose objects it will delete
GC_DELETING = "gc/deleting/"  # a gc's intent to delete, for writers to look for (objstore.model.gcintent)
TMP = "tmp/"  # staging: never content, swept by gc, skipped by listings of other prefixes
REFS = "refs/"
LOGS = "logs/"
REMOTES = "remotes/"
QUARANTINE = "quarantine/"
NAMES = "names/"  # case-folded name claims (objstore.model.nameclaims)
ANNOTATIONS = "annotations/"  # mutable annotations of versions (objstore.model.annotations)
LINEAGE = "lineage/"  # the lineage index: which runs name a version (objstore.api.runinfo)
LINEAGE_ROLES = ("used", "logged")
LINEAGE_COMPLETE = f"{LINEAGE}complete"
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


# What the local cache of a remote store may keep (objstore.storage.remotecache):
# keys whose value, once written, never changes. Everything else (config, refs,
# aliases, claims, reflogs, remotes, gc marks, staging, quarantine) can move.
CACHEABLE_KINDS = ("object", "idx", "pack", "index file")


def immutable_kind(key: str) -> str | None:
    """The kind of an immutable key (one of ``CACHEABLE_KINDS``): a loose object,
    an ``.idx``, a pack or a consolidated index file, each named by its content
    (an ``.idx`` by its pack's); None for every key whose value can change.
    Existence is never immutable: gc deletes all of them."""
    if object_hex_of(key) is not None and key.count("/") == 2:
        return "object"
    if pack_name_of(key) is not None:
        return "pack"
    if idx_name_of(key) is not None:
        return "idx"
    if index_file_name_of(key) is not None:
        return "index file"
    return None


def marked_pack_key(name: str) -> str:
    return f"{GC_MARKED}{name}"


def marked_pack_name_of(key: str) -> str:
    return key[len(GC_MARKED):]


def marked_objects_key(stamp: str) -> str:
    return f"{GC_MARKED_OBJECTS}{stamp}"


def gc_intent_key(stamp: str) -> str:
    return f"{GC_DELETING}{stamp}"


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
    tracked = tracking_key_parts(key)
    return tracked[1] if tracked else None


def tracking_key_parts(key: str) -> tuple[str, str] | None:
    """``(remote name, tracked ref)`` of ``remotes/<name>/refs/...``; None for any other key."""
    if not key.startswith(REMOTES):
        return None
    remote, _, rest = key[len(REMOTES):].partition("/")
    return (remote, rest) if rest.startswith(REFS) else None


# -- ref names ---------------------------------------------------------------

# The longest an encoded name may be: one path component on every local file system.
MAX_ENCODED_NAME = 255
_SAFE = "_-."  # with the ASCII letters and digits, what quote() leaves alone here
_ENCODED = re.compile(r"(?:[A-Za-z0-9_.-]|%[0-9A-F]{2})+")


def encode_name(name: str) -> str:
    """``name`` as it appears in a key (see the module docstring); InvalidName when
    the encoded form is longer than :data:`MAX_ENCODED_NAME` bytes."""
    out = quote(name, safe=_SAFE, encoding="utf-8", errors="strict").replace("~", "%7E")  # quote keeps "~" always
    if out.startswith("."):
        out = "%2E" + out[1:]
    if not out or len(out) > MAX_ENCODED_NAME:
        raise InvalidName(f"name {name[:40]!r}{'…' if len(name) > 40 else ''} is {len(out)} bytes once encoded for "
                          f"storage; the most is {MAX_ENCODED_NAME} (non-ASCII characters take 6 to 12): shorten it")
    return out


def decode_name(part: str) -> str:
    """The name a key part spells; InvalidName for a part :func:`encode_name` never writes."""
    if not _ENCODED.fullmatch(part):
        raise InvalidName(f"{part!r} is not an encoded name")
    try:
        name = unquote(part, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:  # escapes of bytes that are no UTF-8 (%E2%80): in a key someone else wrote
        raise InvalidName(f"{part!r} is not an encoded name (its escapes are not UTF-8)") from None
    if encode_name(name) != part:
        raise InvalidName(f"{part!r} is not how objstore encodes the name {name!r}")
    return name

@dataclass(frozen=True, slots=True)
class CaseTwin:
    """Two keys sharing one place on a case-insensitive file system: ``existing``,
    the one met first, and ``name`` and ``twin``, the names (decoded) in the part
    where the later key and it differ only in ASCII case (the later's, the first's)."""

    existing: str
    name: str
    twin: str


def case_twin(keys: Iterable[str], existing: Iterable[str] = ()) -> CaseTwin | None:
    """The first of ``keys`` (keys about to be made) that a case-insensitive file
    system (macOS's and Windows's defaults) would take for the same place as one
    of ``existing`` or an earlier one of ``keys``: leading ``/``-separated parts
    equal ignoring ASCII case, one differing exactly. Pairs within ``existing``
    are not this call's to report, nor a part whose spelling is there already. ASCII case is the only folding that matters,
    since every other character of an encoded name is a ``%XX`` (hex always upper
    case). One pass, a dict lookup per part."""
    seen: dict[str, dict[str, str]] = {}  # each leading run of parts, folded -> its spellings -> the first key so spelled
    for key, new in [*((k, False) for k in existing), *((k, True) for k in keys)]:
        parts = key.split("/")
        for depth in range(1, len(parts) + 1):
            exact = "/".join(parts[:depth])
            spellings = seen.setdefault(exact.lower(), {})
            if new and exact not in spellings and (other := next(iter(spellings.items()), None)):
                return CaseTwin(other[1], _decoded(parts[depth - 1]), _decoded(other[0].rsplit("/", 1)[-1]))
            spellings.setdefault(exact, key)
    return None


def _decoded(part: str) -> str:
    try:
        return decode_name(part)
    except InvalidName:  # a fixed part of the layout (versions/v3), not a name
        return part


def name_claim_key(entity: str, project: str | None = None, name: str | None = None, *,
                   run_id: str | None = None, alias: str | None = None) -> str:
    """The key of the claim on a name whatever its ASCII case: of an entity, a
    project of it, a collection, an alias of that collection or a run id of that
    project. Every part is the encoded name lower-cased (``%XX`` too, so one key
    per folded name on any file system); ``@``, ``@aliases`` and ``@runs`` are
    never an encoded name's spelling."""
    parts = [entity] + ([project] if project is not None else [])
    if name is not None and project is not None:
        parts.append(name)
    folded = [encode_name(p).lower() for p in parts]
    if alias is not None and name is not None and project is not None:
        folded += ["@aliases", encode_name(alias).lower()]
    if run_id is not None and project is not None:
        folded += ["@runs", encode_name(run_id).lower()]
    return NAMES + "/".join(folded) + "/@"


def refs_prefix(entity: str | None = None, project: str | None = None) -> str:
    """The listing prefix of every ref, of one entity's, or of one project's
    (``project`` counts only with ``entity``)."""
    return REFS + (f"{encode_name(entity)}/" if entity else "") + (f"{encode_name(project)}/" if entity and project else "")


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
    return f"{REFS}{encode_name(entity)}/{encode_name(project)}/{encode_name(name)}/"


def version_ref(entity: str, project: str, name: str, index: int) -> str:
    return f"{collection_prefix(entity, project, name)}versions/v{index}"


def aliases_prefix(entity: str, project: str, name: str) -> str:
    """The listing prefix of a collection's aliases."""
    return f"{collection_prefix(entity, project, name)}aliases/"


def alias_ref(entity: str, project: str, name: str, alias: str) -> str:
    return f"{aliases_prefix(entity, project, name)}{encode_name(alias)}"


def digest_ref(entity: str, project: str, name: str, digest_hex: str) -> str:
    return f"{collection_prefix(entity, project, name)}digests/{digest_hex}"


def pending_root(entity: str, project: str, name: str) -> str:
    """The listing prefix of every part pending in collection ``entity/project/name``, whatever its distributed id."""
    return f"{collection_prefix(entity, project, name)}pending/"


def pending_prefix(entity: str, project: str, name: str, distributed_id: str) -> str:
    """The listing prefix of the parts upserted into the distributed version
    ``distributed_id`` of collection ``entity/project/name`` (objstore.model.distributed).
    Six parts deep, so no ref parser takes a part for a version, alias, digest or run."""
    return f"{pending_root(entity, project, name)}{encode_name(distributed_id)}/"


def pending_part_ref(entity: str, project: str, name: str, distributed_id: str, part: str) -> str:
    """The create-only ref of one upserted part; ``part`` is a writer-chosen unique token."""
    if not _PART.fullmatch(part):
        raise InvalidName(f"{part!r} is not a part token")
    return f"{pending_prefix(entity, project, name, distributed_id)}{part}"


_PART = re.compile(r"[0-9a-f-]{1,64}")


@dataclass(frozen=True, slots=True)
class PartKey:
    """A pending part's ref taken apart (names decoded)."""

    key: str
    entity: str
    project: str
    name: str
    distributed_id: str
    token: str


def parse_part_ref(key: str) -> PartKey | None:
    """Parse ``refs/e/p/n/pending/<distributed id>/<token>``; None for any other key."""
    parts = key.split("/")
    if len(parts) != 7 or parts[0] != REFS.rstrip("/") or parts[4] != "pending" or not _PART.fullmatch(parts[6]):
        return None
    try:
        names = [decode_name(p) for p in (parts[1], parts[2], parts[3], parts[5])]
    except InvalidName:
        return None
    return PartKey(key, names[0], names[1], names[2], names[3], parts[6])


def runs_prefix(entity: str, project: str) -> str:
    """The listing prefix of a project's run refs."""
    return f"{refs_prefix(entity, project)}runs/"


def run_ref(entity: str, project: str, run_id: str) -> str:
    return f"{runs_prefix(entity, project)}{encode_name(run_id)}"


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
    """Parse ``refs/e/p/n/{versions,aliases,digests}/x`` or ``refs/e/p/runs/id``, names decoded;
    None for any other key (a part that is no encoded name included: not objstore's)."""
    if not key.startswith(REFS):
        return None
    parts = key[len(REFS):].split("/")
    try:
        if len(parts) == 5 and parts[3] in _NAMESPACES:
            tail = decode_name(parts[4]) if parts[3] == "aliases" else parts[4]
            return RefKey(key, _NAMESPACES[parts[3]], decode_name(parts[0]), decode_name(parts[1]), decode_name(parts[2]), tail)
        if len(parts) == 4 and parts[2] == "runs":
            return RefKey(key, "run", decode_name(parts[0]), decode_name(parts[1]), "", decode_name(parts[3]))
    except InvalidName:
        return None
    return None


def has_ref_shape(key: str) -> bool:
    """Whether ``key`` has the shape of a ref of the layout (whatever its parts spell):
    such a key that :func:`parse_ref_key` refuses holds a name objstore never encodes so."""
    parts = key[len(REFS):].split("/") if key.startswith(REFS) else []
    return (len(parts) == 5 and parts[3] in _NAMESPACES) or (len(parts) == 4 and parts[2] == "runs")


def ref_key_parts(key: str) -> list[str] | None:
    """The ``/``-separated parts of a key under ``refs/``, the prefix removed, each
    name decoded; None for a key outside ``refs/`` or with a part no name encodes
    to. For listings that want what lies under a prefix (projects, collections)
    rather than one ref kind."""
    if not key.startswith(REFS):
        return None
    try:
        return [decode_name(p) for p in key[len(REFS):].split("/")]
    except InvalidName:
        return None


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


# A collection's own annotations sit beside its versions', under ``collection/``:
# never ``v<N>``, so no version parser takes them for a version's, nor the other way.
_COLLECTION_PART = "collection"


def collection_annotation_key(entity: str, project: str, name: str) -> str:
    """The mutable key holding collection ``entity/project/name``'s own description and tags."""
    return f"{annotations_prefix(entity, project, name)}{_COLLECTION_PART}/state"


def collection_annotation_log_prefix(entity: str, project: str, name: str) -> str:
    return f"{annotations_prefix(entity, project, name)}{_COLLECTION_PART}/log/"


def collection_annotation_log_key(entity: str, project: str, name: str, revision: int, state_id: str) -> str:
    """The create-only key of the edit that made ``revision`` of the collection's
    annotations, whose state was first written with id ``state_id``: a collection
    deleted and made again numbers its edits anew, never into an old entry."""
    return f"{collection_annotation_log_prefix(entity, project, name)}{revision:012d}-{state_id[:16]}"


def parse_collection_annotation_key(key: str) -> tuple[str, str, str] | None:
    """(entity, project, name) of a collection annotation state key; None for any other key."""
    if not key.startswith(ANNOTATIONS) or not key.endswith(f"/{_COLLECTION_PART}/state"):
        return None
    parts = ref_key_parts(REFS + key[len(ANNOTATIONS):])
    if parts is None or len(parts) != 5 or parts[3] != _COLLECTION_PART:
        return None
    return parts[0], parts[1], parts[2]


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
    if parts is None or len(parts) != 5 or not parts[3].startswith("v"):
        return None
    number = parts[3][1:]
    if not (number.isascii() and number.isdigit()) or parts[3] != f"v{int(number)}":  # isdigit() takes '²' too
        return None
    return AnnotationKey(parts[0], parts[1], parts[2], int(number))


def lineage_prefix(role: str, version_hex: str) -> str:
    """The listing prefix of the runs that name version ``version_hex`` in ``role`` (used or logged)."""
    if role not in LINEAGE_ROLES:
        raise ValueError(f"unknown lineage role {role!r}")
    return f"{LINEAGE}{role}/{version_hex}/"


def lineage_key(role: str, version_hex: str, entity: str, project: str, run_id: str) -> str:
    return f"{lineage_prefix(role, version_hex)}{encode_name(entity)}/{encode_name(project)}/{encode_name(run_id)}"


def lineage_run_of(key: str) -> tuple[str, str, str] | None:
    """(entity, project, run id) of a ``lineage/used|logged/<hex>/…`` key, names
    decoded; None for any other key."""
    if not key.startswith(LINEAGE):
        return None
    parts = key[len(LINEAGE):].split("/")
    if len(parts) != 5 or parts[0] not in LINEAGE_ROLES:
        return None
    try:
        return decode_name(parts[2]), decode_name(parts[3]), decode_name(parts[4])
    except InvalidName:
        return None
