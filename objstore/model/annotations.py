"""Annotations of a logged version: ``description``, ``metadata``, ``tags`` and
``ttl``, editable after logging (W&B's ``Artifact.save()`` of a logged version).

A version object is immutable: its content, digest and the description and
metadata it was logged with never change. Edits live beside it, under a mutable
key of their own (:mod:`objstore.storage.keys`)::

    annotations/<entity>/<project>/<name>/v<N>/state            the edited fields (a document)
    annotations/<entity>/<project>/<name>/v<N>/log/<revision>-<id>   one edit each (create-only)

Invariants:

- What a version shows is its object's description and metadata with the
  edited fields of its state laid over them; tags are empty and the ttl is
  inherited until edited. A state names the version object it annotates: one
  naming another object (a collection deleted and logged again under the same
  name) is stale, read as absent, and replaced by the next edit.
- The state changes only by compare-and-swap from the value read. An edit is a
  list of changes (set the description or the ttl, set or delete metadata keys,
  add or remove tags) re-applied to the freshly read state on every attempt, so
  concurrent edits of different keys and tags all land, and edits of the same
  field land in some order, every one recorded: none is lost.
- History: every revision ``r`` of a state has the log entry ``log/<r>-<id>``
  (``<id>``: the version object's, so a stale state's entries are never taken for these; who,
  when, and each changed field's old and new value). The writer of ``r`` writes
  it create-only after its swap; the writer of ``r + 1`` first writes ``r``'s from
  the state (which keeps its last edit) if it is missing, and readers add the
  state's last edit too, so a writer that died after its swap loses no entry.
- A collection (a registry's too) has annotations of its own, ``description``
  and ``tags`` (W&B's ``ArtifactCollection.save()``), in a state beside its
  versions' (``collection/state``), moved by the same compare-and-swap of
  re-applied edits with the same history. It names no object: a collection has
  no identity beyond its name, so deleting the collection drops the state first
  (a crash then leaves no stale description for the next collection of that
  name); its log entries carry the id the state was created with instead.
- A registry link has no annotations of its own: reading or editing through a
  link reaches the version it links to (as W&B, where editing a linked
  artifact edits its source), except the ttl, which a link refuses.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from objstore.constants import MAX_ANNOTATION_BYTES, MAX_USER_VALUE_BYTES
from objstore.errors import Conflict, CorruptObject, InvalidInput, NotFound, ObjstoreError
from objstore.model.names import CollectionPath, check_tags
from objstore.model.store import Store
from objstore.model.versions import ResolvedVersion, collection_exists
from objstore.storage.ids import ObjectId
from objstore.storage.keys import (
    ANNOTATIONS,
    annotation_key,
    annotation_log_key,
    annotation_log_prefix,
    annotations_prefix,
    collection_annotation_key,
    collection_annotation_log_key,
    collection_annotation_log_prefix,
    parse_annotation_key,
    parse_collection_annotation_key,
)
from objstore.storage.objects import storable_dict

FORMAT = 1
INHERIT = "inherit"  # the ttl of a version that sets none: W&B's ArtifactTTL.INHERIT (no team default here)
_FIELDS = ("description", "metadata", "tags", "ttl")


def check_ttl(value: object) -> int | None | str:
    """A ttl as stored: whole seconds (> 0), None (never expires) or :data:`INHERIT`."""
    if value is None or value == INHERIT:
        return value
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidInput(f"ttl must be a positive datetime.timedelta, None or ArtifactTTL.INHERIT, not {value!r}")
    if value <= 0:
        raise InvalidInput(f"ttl must be positive, got {value} seconds")
    return value


def check_description(value: object) -> str | None:
    if value is not None and not isinstance(value, str):
        raise InvalidInput(f"description must be a string or None, not {type(value).__name__}")
    if value is not None and len(value.encode("utf-8", "surrogatepass")) > MAX_USER_VALUE_BYTES:
        raise InvalidInput(f"description is longer than {MAX_USER_VALUE_BYTES} bytes; log long text as a file")
    return value


@dataclass(frozen=True, slots=True)
class Annotations:
    """What a version shows now. ``ttl`` is seconds, None (never expires) or
    :data:`INHERIT`; ``revision`` counts the edits (0: never edited)."""

    description: str | None
    metadata: dict[str, Any]
    tags: tuple[str, ...]
    ttl: int | None | str
    revision: int


@dataclass(frozen=True, slots=True)
class Change:
    """One field an edit changed: ``field`` is ``description``, ``ttl``, ``tags`` or
    ``metadata.<key>`` (None for ``old`` or ``new``: the key was absent)."""

    field: str
    old: Any
    new: Any


@dataclass(frozen=True, slots=True)
class AnnotationEdit:
    """One entry of a version's annotation history."""

    revision: int
    when: float
    who: str
    changes: tuple[Change, ...]


@dataclass(frozen=True, slots=True)
class Edit:
    """What one ``save()`` changes; unset parts leave their field alone, so edits of
    different parts never undo each other. ``metadata_set`` keys are set (or
    replaced), ``metadata_delete`` keys removed, tags added or removed one by one."""

    description: str | None = None
    set_description: bool = False
    metadata_set: Mapping[str, Any] | None = None
    metadata_delete: tuple[str, ...] = ()
    tags_add: tuple[str, ...] = ()
    tags_remove: tuple[str, ...] = ()
    ttl: int | None | str = None
    set_ttl: bool = False

    def is_empty(self) -> bool:
        return not (self.set_description or self.metadata_set or self.metadata_delete or self.tags_add
                    or self.tags_remove or self.set_ttl)


def same_value(a: object, b: object) -> bool:
    """Whether two stored values are the same (as stored: nan equals nan, 1 is not 1.0)."""
    return _pack({"v": a}) == _pack({"v": b})


def source_of(entry: ResolvedVersion) -> tuple[CollectionPath, int, ObjectId]:
    """The version whose annotations ``entry`` shows: itself, or the one a link links to."""
    v = entry.version
    return CollectionPath(v.entity, v.project, v.name), v.index, entry.version_id


def _state_key(coll: CollectionPath, index: int) -> str:
    return annotation_key(coll.entity, coll.project, coll.name, index)


def _pack(doc: dict[str, Any]) -> bytes:
    data: bytes = msgpack.packb(doc, use_bin_type=True)
    return data


def _unpack(key: str, raw: bytes) -> dict[str, Any]:
    try:
        doc = msgpack.unpackb(raw, raw=False, strict_map_key=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise CorruptObject(f"annotations {key} are damaged ({exc}); delete the key to drop its edits", object_id=key) from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(doc.get("revision"), int) \
            or (why := _bad_fields(doc)) is not None:
        why = why if isinstance(doc, dict) and why is not None else "not an annotation state objstore writes"
        raise CorruptObject(f"annotations {key}: {why}; delete the key to drop its edits", object_id=key)
    return doc


def _bad_fields(doc: dict[Any, Any]) -> str | None:
    """What is wrong with a state's parts (what readers take apart), or None."""
    fields = doc.get("fields", {})
    if not isinstance(fields, dict):
        return "its fields are not a mapping"
    if not isinstance(fields.get("description"), (str, type(None))):
        return "its description is not a string"
    if not isinstance(fields.get("metadata", {}), dict):
        return "its metadata is not a mapping"
    tags = fields.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        return "its tags are not a list of strings"
    ttl = fields.get("ttl", INHERIT)
    if not (ttl is None or ttl == INHERIT or (isinstance(ttl, int) and not isinstance(ttl, bool) and ttl > 0)):
        return "its ttl is not positive seconds, none or inherit"
    if "version" in doc and not (isinstance(doc["version"], bytes) and len(doc["version"]) == 32):
        return "it names no version object"
    if "id" in doc and not isinstance(doc["id"], str):
        return "its id is not a string"
    return None


def _read_state(store: Store, key: str, version_id: ObjectId) -> tuple[bytes | None, dict[str, Any] | None]:
    """(raw value, state) of ``key``; the state is None when absent or stale (another object's)."""
    try:
        raw = store.backend.get(key, max_size=MAX_ANNOTATION_BYTES)
    except NotFound:
        return None, None
    if not raw:
        return raw, None  # dropped with its version
    doc = _unpack(key, raw)
    if doc.get("version") != version_id.raw:
        return raw, None
    return raw, doc


def _shown(entry: ResolvedVersion, doc: dict[str, Any] | None) -> Annotations:
    fields: dict[str, Any] = (doc or {}).get("fields", {})
    v = entry.version
    return Annotations(
        fields["description"] if "description" in fields else v.description,
        dict(fields["metadata"]) if "metadata" in fields else dict(v.metadata),
        tuple(fields.get("tags", ())),
        fields.get("ttl", INHERIT),
        int((doc or {}).get("revision", 0)),
    )


def unedited_annotations(entry: ResolvedVersion) -> Annotations:
    """What ``entry`` shows before any edit: a version this very command created
    (nothing to read back)."""
    return _shown(entry, None)


def _swap(store: Store, key: str, raw: bytes | None, new: bytes) -> bool:
    """Move state ``key`` from ``raw`` (None: absent) to ``new``; False if another
    writer moved it first (the caller reads again and re-applies its edit)."""
    try:
        if raw is None:
            return store.backend.put_if_absent(key, new)
        store.backend.compare_and_swap(key, raw, new)
        return True
    except Conflict:
        return False


def read_annotations(store: Store, entry: ResolvedVersion) -> Annotations:
    """The annotations ``entry`` shows now (a link shows its version's)."""
    coll, index, vid = source_of(entry)
    _, doc = _read_state(store, _state_key(coll, index), vid)
    return _shown(entry, doc)


def last_edit_time(store: Store, entry: ResolvedVersion) -> float | None:
    """When ``entry``'s annotations (a link: its version's) were last edited; None if never (one read)."""
    coll, index, vid = source_of(entry)
    _, doc = _read_state(store, _state_key(coll, index), vid)
    last = _edit_of(doc.get("last")) if doc is not None else None
    return last.when if last is not None else None


def _apply(now: Annotations, edit: Edit) -> tuple[dict[str, Any], list[Change]]:
    """The fields after ``edit`` over ``now``, and what it changed."""
    changes: list[Change] = []
    fields: dict[str, Any] = {}
    if edit.set_description and edit.description != now.description:
        changes.append(Change("description", now.description, edit.description))
    meta = dict(now.metadata)
    for k, value in (edit.metadata_set or {}).items():
        if k not in meta or not same_value(meta[k], value):
            changes.append(Change(f"metadata.{k}", meta.get(k), value))
            meta[k] = value
    for k in edit.metadata_delete:
        if k in meta:
            changes.append(Change(f"metadata.{k}", meta.pop(k), None))
    tags = [t for t in now.tags if t not in edit.tags_remove] + [t for t in edit.tags_add if t not in now.tags]
    if tuple(tags) != now.tags:
        changes.append(Change("tags", list(now.tags), tags))
    if edit.set_ttl and edit.ttl != now.ttl:
        changes.append(Change("ttl", now.ttl, edit.ttl))
    fields["description"] = edit.description if edit.set_description else now.description
    fields["metadata"] = storable_dict(meta, "metadata")
    fields["tags"] = tags
    fields["ttl"] = edit.ttl if edit.set_ttl else now.ttl
    return fields, changes


def _edit_doc(edit: AnnotationEdit) -> dict[str, Any]:
    return {"revision": edit.revision, "when": edit.when, "who": edit.who,
            "changes": [[c.field, c.old, c.new] for c in edit.changes]}


def _edit_of(doc: object) -> AnnotationEdit | None:
    if not isinstance(doc, dict):
        return None
    try:
        changes = tuple(Change(str(f), old, new) for f, old, new in doc["changes"])
        return AnnotationEdit(int(doc["revision"]), float(doc["when"]), str(doc["who"]), changes)
    except (KeyError, TypeError, ValueError):
        return None


def _write_log(store: Store, coll: CollectionPath, index: int, vid: ObjectId, last: object) -> None:
    """Write the log entry of the edit ``last`` (a state's last edit) unless it is there."""
    edit = _edit_of(last)
    if edit is not None:
        key = annotation_log_key(coll.entity, coll.project, coll.name, index, edit.revision, vid.hex)
        store.backend.put_if_absent(key, _pack(_edit_doc(edit)))  # create-only: one entry per revision


def edit_annotations(store: Store, entry: ResolvedVersion, edit: Edit, *, who: str | None = None,
                     when: float | None = None, attempts: int = 1000,
                     expected_revision: int | None = None) -> Annotations:
    """Apply ``edit`` to ``entry``'s annotations by compare-and-swap (re-applied to a
    fresh read after each lost race) and return what the version shows afterwards.
    An edit that changes nothing writes nothing. ``when``: the edit's time, if not
    now (an edit made in another store, taken by a transfer). With
    ``expected_revision`` (what a person was shown), Conflict instead of
    re-applying once anyone else edited."""
    if edit.set_ttl and entry.link is not None:
        raise InvalidInput(f"cannot set the ttl of {entry.qualified_name}, a registry link; "
                           f"set it on {entry.version.label}, the version it links to")
    coll, index, vid = source_of(entry)
    key = _state_key(coll, index)
    for _ in range(attempts):
        raw, doc = _read_state(store, key, vid)
        now = _shown(entry, doc)
        if expected_revision is not None and now.revision != expected_revision:
            raise Conflict(key, None, None, f"the annotations of {entry.qualified_name} were edited by someone else "
                                            f"(revision {now.revision}, not {expected_revision}); reload and decide again")
        fields, changes = _apply(now, edit)
        if not changes:
            return now
        if doc is not None:
            _write_log(store, coll, index, vid, doc.get("last"))  # the previous writer's, if it died before writing it
        done = AnnotationEdit(now.revision + 1, time.time() if when is None else when, who or store.refs.who, tuple(changes))
        new = _pack({"format": FORMAT, "version": vid.raw, "revision": done.revision, "fields": fields,
                     "last": _edit_doc(done)})
        if len(new) > MAX_ANNOTATION_BYTES:
            raise InvalidInput(f"the annotations of {entry.qualified_name} would take {len(new)} bytes, more than "
                               f"{MAX_ANNOTATION_BYTES}; store large values as files of a new version")
        if not _swap(store, key, raw, new):
            continue
        _write_log(store, coll, index, vid, _edit_doc(done))
        return _shown(entry, _unpack(key, new))
    raise Conflict(key, None, None, f"the annotations of {entry.qualified_name} kept changing under {attempts} "
                                    "attempts; retry later")


def annotation_history(store: Store, entry: ResolvedVersion) -> list[AnnotationEdit]:
    """Every edit of ``entry``'s annotations (a link: of its version's), oldest first."""
    coll, index, vid = source_of(entry)
    _, doc = _read_state(store, _state_key(coll, index), vid)
    if doc is None:
        return []
    # Entries of another object (a stale state's) end in another id.
    return _history(store, annotation_log_prefix(coll.entity, coll.project, coll.name, index), f"-{vid.hex[:16]}", doc)


def _history(store: Store, prefix: str, suffix: str, doc: dict[str, Any]) -> list[AnnotationEdit]:
    """The edits logged under ``prefix`` whose keys end in ``suffix``, up to the
    state ``doc``'s revision, and its last edit (written even if its log entry was
    not), oldest first."""
    found: dict[int, AnnotationEdit] = {}
    for info in store.backend.iter_prefix(prefix):
        if not info.key.endswith(suffix):
            continue
        try:
            edit = _edit_of(msgpack.unpackb(store.backend.get(info.key, max_size=MAX_ANNOTATION_BYTES), raw=False,
                                            strict_map_key=False))
        except (NotFound, CorruptObject, ValueError, TypeError, msgpack.UnpackException):
            continue  # a damaged entry must not hide the others
        if edit is not None and edit.revision <= doc["revision"]:
            found[edit.revision] = edit
    last = _edit_of(doc.get("last"))
    if last is not None:
        found[last.revision] = last
    return [found[r] for r in sorted(found)]


def drop_version_annotations(store: Store, coll: CollectionPath, index: int) -> None:
    """Delete the annotations of ``coll``'s v<index> and their history (its version is deleted)."""
    for info in list(store.backend.iter_prefix(annotation_log_prefix(coll.entity, coll.project, coll.name, index))):
        store.backend.delete(info.key)
    store.backend.delete(_state_key(coll, index))


def drop_collection_annotations(store: Store, coll: CollectionPath) -> int:
    """Delete every annotation key of ``coll``; how many."""
    n = 0
    for info in list(store.backend.iter_prefix(annotations_prefix(coll.entity, coll.project, coll.name))):
        store.backend.delete(info.key)
        n += 1
    return n


@dataclass(frozen=True, slots=True)
class CollectionAnnotations:
    """What a collection shows now: its own description and tags; ``revision``
    counts the edits (0: never edited)."""

    description: str | None
    tags: tuple[str, ...]
    revision: int


def _collection_state(store: Store, coll: CollectionPath) -> tuple[str, bytes | None, dict[str, Any] | None]:
    key = collection_annotation_key(coll.entity, coll.project, coll.name)
    try:
        raw = store.backend.get(key, max_size=MAX_ANNOTATION_BYTES)
    except NotFound:
        return key, None, None
    return key, raw, _unpack(key, raw)


def _collection_shown(doc: dict[str, Any] | None) -> CollectionAnnotations:
    fields: dict[str, Any] = (doc or {}).get("fields", {})
    return CollectionAnnotations(fields.get("description"), tuple(fields.get("tags", ())), int((doc or {}).get("revision", 0)))


def read_collection_annotations(store: Store, coll: CollectionPath) -> CollectionAnnotations:
    """The description and tags ``coll`` shows now."""
    return _collection_shown(_collection_state(store, coll)[2])


def _write_collection_log(store: Store, coll: CollectionPath, state_id: str, last: object) -> None:
    edit = _edit_of(last)
    if edit is not None:
        key = collection_annotation_log_key(coll.entity, coll.project, coll.name, edit.revision, state_id)
        store.backend.put_if_absent(key, _pack(_edit_doc(edit)))  # create-only: one entry per revision


def edit_collection_annotations(store: Store, coll: CollectionPath, edit: Edit, *, who: str | None = None,
                                when: float | None = None, attempts: int = 1000,
                                expected_revision: int | None = None) -> CollectionAnnotations:
    """Apply ``edit`` (description and tags only) to ``coll``'s own annotations by
    compare-and-swap, as :func:`edit_annotations` a version's; checked before
    anything is written. An edit that changes nothing writes nothing. With
    ``expected_revision`` (what a person was shown), Conflict instead of
    re-applying once anyone else edited."""
    if edit.metadata_set or edit.metadata_delete or edit.set_ttl:
        raise InvalidInput(f"a collection ({coll}) has a description and tags only; metadata and ttl are a version's")
    check_tags(edit.tags_add)
    check_description(edit.description)
    for _ in range(attempts):
        key, raw, doc = _collection_state(store, coll)
        now = _collection_shown(doc)
        if expected_revision is not None and now.revision != expected_revision:
            raise Conflict(key, None, None, f"the description and tags of {coll} were edited by someone else "
                                            f"(revision {now.revision}, not {expected_revision}); reload and decide again")
        fields, changes = _apply(Annotations(now.description, {}, now.tags, INHERIT, now.revision), edit)
        if not changes:
            return now
        state_id = str(doc["id"]) if doc is not None and isinstance(doc.get("id"), str) else secrets.token_hex(8)
        if doc is not None:
            _write_collection_log(store, coll, state_id, doc.get("last"))  # the previous writer's, if it died before
        done = AnnotationEdit(now.revision + 1, time.time() if when is None else when, who or store.refs.who, tuple(changes))
        new = _pack({"format": FORMAT, "id": state_id, "revision": done.revision,
                     "fields": {"description": fields["description"], "tags": fields["tags"]}, "last": _edit_doc(done)})
        if len(new) > MAX_ANNOTATION_BYTES:
            raise InvalidInput(f"the description and tags of {coll} would take {len(new)} bytes, more than "
                               f"{MAX_ANNOTATION_BYTES}")
        if not _swap(store, key, raw, new):
            continue
        _write_collection_log(store, coll, state_id, _edit_doc(done))
        if not collection_exists(store, coll):
            # Deleted meanwhile (or never there). delete_collection drops every
            # annotation key after removing v0, so it either comes after these
            # writes and takes them, or it is done and they are undone here.
            _drop_collection_edit(store, coll, key, new, state_id, done.revision)
            raise NotFound(f"no artifact collection {coll} in the store (deleted?); nothing was saved", key=str(coll))
        return _collection_shown(_unpack(key, new))
    raise Conflict(collection_annotation_key(coll.entity, coll.project, coll.name), None, None,
                   f"the description and tags of {coll} kept changing under {attempts} attempts; retry later")


def _drop_collection_edit(store: Store, coll: CollectionPath, key: str, state: bytes, state_id: str, revision: int) -> None:
    """Undo a collection edit that landed after its collection was deleted: the
    state (unless another writer moved it since: that writer undoes its own) and its log entries."""
    try:
        if store.backend.get(key, max_size=MAX_ANNOTATION_BYTES) == state:
            store.backend.delete(key)
    except NotFound:
        pass
    for r in range(1, revision + 1):
        store.backend.delete(collection_annotation_log_key(coll.entity, coll.project, coll.name, r, state_id))


def collection_annotation_history(store: Store, coll: CollectionPath) -> list[AnnotationEdit]:
    """Every edit of ``coll``'s own description and tags, oldest first."""
    _, _, doc = _collection_state(store, coll)
    if doc is None:
        return []
    # Entries of an earlier collection of this name end in another id.
    return _history(store, collection_annotation_log_prefix(coll.entity, coll.project, coll.name),
                    f"-{str(doc.get('id'))[:16]}", doc)


def drop_collection_state(store: Store, coll: CollectionPath) -> None:
    """Delete ``coll``'s own description and tags (its log goes with
    :func:`drop_collection_annotations`)."""
    store.backend.delete(collection_annotation_key(coll.entity, coll.project, coll.name))


@dataclass(frozen=True, slots=True)
class TtlEntry:
    """A version with a ttl of its own: ``coll`` v``index``, object ``version_id``, ``ttl`` seconds."""

    coll: CollectionPath
    index: int
    version_id: ObjectId
    ttl: int


def iter_ttls(store: Store) -> Iterator[TtlEntry]:
    """Every version whose annotations set a ttl in seconds (whether or not its
    object is still the one the state names: the caller checks)."""
    for info in store.backend.iter_prefix(ANNOTATIONS):
        parsed = parse_annotation_key(info.key)
        if parsed is None or info.size == 0:
            continue
        try:
            doc = _unpack(info.key, store.backend.get(info.key, max_size=MAX_ANNOTATION_BYTES))
        except (NotFound, CorruptObject):
            continue  # fsck's to report; an unreadable state sets no ttl
        ttl = doc.get("fields", {}).get("ttl")
        raw_vid = doc.get("version")
        if isinstance(ttl, int) and not isinstance(ttl, bool) and ttl > 0 and isinstance(raw_vid, bytes) and len(raw_vid) == 32:
            yield TtlEntry(CollectionPath(parsed.entity, parsed.project, parsed.name), parsed.index, ObjectId(raw_vid), ttl)


def annotation_problems(store: Store) -> Iterator[tuple[str, str]]:
    """(key, why) for every key under ``annotations/`` that is damaged: a state
    that does not decode or whose parts are of the wrong kind, a history entry that
    is no edit or not the revision its key names, a key objstore never writes.
    Dropped states (empty) and stale ones (another object's) are not damage."""
    for info in store.backend.iter_prefix(ANNOTATIONS):
        key = info.key
        try:
            raw = store.backend.get(key, max_size=MAX_ANNOTATION_BYTES)
        except NotFound:
            continue  # dropped meanwhile
        except ObjstoreError as exc:
            yield key, f"annotations {key} cannot be read ({exc.args[0] if exc.args else exc})"
            continue
        if key.endswith("/state") and (parse_annotation_key(key) or parse_collection_annotation_key(key)):
            try:
                if raw:
                    _unpack(key, raw)
            except CorruptObject as exc:
                yield key, str(exc.args[0])
        elif "/log/" in key:
            yield from _log_problem(key, raw)
        else:
            yield key, f"annotations {key} is not a key objstore writes; delete it"


def _log_problem(key: str, raw: bytes) -> Iterator[tuple[str, str]]:
    name = key.rsplit("/", 1)[1]
    revision, _, owner = name.partition("-")
    try:
        edit = _edit_of(msgpack.unpackb(raw, raw=False, strict_map_key=False))
    except (ValueError, TypeError, msgpack.UnpackException):
        edit = None
    if not (revision.isascii() and revision.isdigit()) or not owner:  # isdigit() alone takes '①', which int() refuses
        yield key, f"annotation history {key} is not a key objstore writes; delete it"
    elif edit is None:
        yield key, f"annotation history entry {key} is damaged (not an edit); the history shows without it"
    elif edit.revision != int(revision):
        yield key, f"annotation history entry {key} records revision {edit.revision}, not {int(revision)}"


def raw_state(store: Store, coll: CollectionPath, index: int, version_id: ObjectId) -> tuple[bytes | None, dict[str, Any] | None]:
    """(raw value, state) of ``coll``'s v<index> annotations as stored, for a transfer
    to compare and copy by compare-and-swap; the state is None when absent or not
    ``version_id``'s."""
    return _read_state(store, _state_key(coll, index), version_id)


def raw_history(store: Store, coll: CollectionPath, index: int, version_id: ObjectId) -> dict[str, bytes]:
    """Every stored history entry of ``version_id``'s annotations (key -> raw value),
    the state's last edit included even if its writer died before writing it."""
    _, doc = raw_state(store, coll, index, version_id)
    return _raw_history(store, annotation_log_prefix(coll.entity, coll.project, coll.name, index), version_id.hex, doc,
                        lambda r: annotation_log_key(coll.entity, coll.project, coll.name, index, r, version_id.hex))


def raw_collection_state(store: Store, coll: CollectionPath) -> tuple[bytes | None, dict[str, Any] | None]:
    """(raw value, state) of ``coll``'s own description and tags as stored (None, None: never edited);
    CorruptObject if the state is damaged."""
    _, raw, doc = _collection_state(store, coll)
    return raw, doc


def collection_state_id(doc: dict[str, Any] | None) -> str | None:
    """The id a collection state was first written with (its history's entries end in it)."""
    sid = (doc or {}).get("id")
    return sid if isinstance(sid, str) and sid else None


def raw_collection_history(store: Store, coll: CollectionPath, state_id: str) -> dict[str, bytes]:
    """Every stored history entry of ``coll``'s own annotations whose state has id
    ``state_id`` (key -> raw value), that state's last edit included."""
    _, doc = raw_collection_state(store, coll)
    return _raw_history(store, collection_annotation_log_prefix(coll.entity, coll.project, coll.name), state_id,
                        doc if collection_state_id(doc) == state_id else None,
                        lambda r: collection_annotation_log_key(coll.entity, coll.project, coll.name, r, state_id))


def _raw_history(store: Store, prefix: str, owner_hex: str, doc: dict[str, Any] | None,
                 log_key: Callable[[int], str]) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for info in store.backend.iter_prefix(prefix):
        if info.key.endswith(f"-{owner_hex[:16]}"):
            try:
                out[info.key] = store.backend.get(info.key, max_size=MAX_ANNOTATION_BYTES)
            except NotFound:
                continue
    last = _edit_of(doc.get("last")) if doc is not None else None
    if last is not None:
        out.setdefault(log_key(last.revision), _pack(_edit_doc(last)))
    return out
