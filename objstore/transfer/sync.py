"""Moving work between two stores, the way git moves commits: push, fetch, pull.

Any two stores will do (a local directory, a bucket, either way round). One
transfer has three phases, in the write order of :mod:`objstore.storage.odb`:

1. **Walk.** From the ids the moved refs point at (versions, registry links,
   aliases, digests, runs), follow the strong edges of
   :func:`objstore.model.inventory.edges` — the one definition gc and fsck use too:
   versions to their tree, trees to subtrees and files, links to the versions
   they point at. Weak edges (a version's parent, a run's inputs and outputs)
   are history, not content, and are not sent: a run may name a version the
   destination never gets. An object the destination already holds is not
   followed further: whoever stored it stored everything it references first.
   Existence is asked in parallel batches; every object read from the source is
   re-hashed before it is used (a remote is untrusted).
2. **Send.** The chunks the destination lacks (asked in batches of its chunk
   index) are read from the source packs in coalesced ranged reads, decoded and
   re-hashed, and appended to new destination packs *as stored* (no
   re-compression), each pack closed at tens of MiB. Between two local stores
   a source pack all of whose chunks are wanted (a push to an empty remote, a
   clone) is carried whole instead, linked or copied by the kernel, and
   published only once it and each of its chunks were checked where it landed
   (:mod:`objstore.storage.packcopy`). Then the missing metadata
   objects, children before parents, byte for byte as stored.
3. **Refs, last.** Version refs are create-only, so of two stores pushing a v3
   exactly one wins and the other is refused (:class:`~objstore.errors.NonFastForward`)
   with a message that says to pull. Aliases and runs move by compare-and-swap
   against the value last fetched (remote-tracking state under
   ``remotes/<remote>/refs/…`` in the local store); a concurrent change is
   refused, not overwritten, unless forced.

Resuming needs no bookkeeping: a pack becomes visible only whole (temp file plus
link on disk; a single PUT, or a multipart upload staged under ``tmp/`` and
copied create-only, on object storage), its index after it, objects after their
chunks and refs after their objects. A re-run walks again and finds only what
is still missing. Nothing here takes a file lock.

A transfer of named collections also moves the run refs of the runs that
logged their versions (the weak ``run`` edge), when the source has them, so
``log`` and ``show`` on the other side can say who logged what.

``pull`` = fetch, then integrate: the remote's new versions are added; local
versions the remote never had are *re-based* after them (new version objects
with new index and parent, the same tree and chunks), their aliases, digests,
runs and registry links following. Each renumbering is reported.

The jobs live one per module: :mod:`objstore.transfer.tracking` (remote-tracking
state, the collections a ref snapshot names), :mod:`objstore.transfer.closure`
(phases 1 and 2), :mod:`objstore.transfer.push` and :mod:`objstore.transfer.pull`
(phase 3, each its own way). This module holds what they share: the result,
reading and parsing ref snapshots, and the selection of refs by name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from objstore.console import human_bytes
from objstore.constants import MiB
from objstore.errors import InvalidName
from objstore.model.names import CollectionPath, version_index
from objstore.model.refs import decode_value
from objstore.model.store import Store
from objstore.settings import resolve_entity, resolve_project
from objstore.storage.ids import ObjectId
from objstore.storage.keys import REFS, collection_prefix, parse_ref_key, refs_prefix

T = TypeVar("T")
R = TypeVar("R")

# Parallel requests for small things (HEAD of an object, GET of a ref): object
# stores answer each in a round trip, so latency, not bandwidth, bounds them.
IO_WORKERS = 16
# Chunk reads from the source: ranges of one pack merged across gaps up to
# RANGE_GAP (reading a few unneeded bytes beats another request) and up to
# RANGE_MAX each; at most RANGES_IN_FLIGHT prefetched, which bounds memory.
RANGE_GAP = 256 * 1024
RANGE_MAX = 16 * MiB
RANGES_IN_FLIGHT = 4
# Chunk ids asked of the destination's index per call.
HAS_BATCH = 100_000

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``: stage ``chunks`` counts stored bytes (called
after each pack is stored at the destination), ``objects`` counts objects."""


@dataclass
class TransferResult:
    """What a push, fetch, pull or clone did.

    ``requests``, ``bytes_sent`` and ``bytes_received`` are the remote backend's
    counters over the operation (see :class:`objstore.storage.backend.base.BackendStats`).
    ``renumbered`` lists ``(old, new)`` names of local versions a pull re-based;
    ``kept`` lists refs (and annotation states) where both sides changed and the
    destination's value was kept; ``annotations`` the annotation states moved forward.
    """

    direction: str
    remote: str
    chunks: int = 0
    chunk_bytes: int = 0  # stored (encoded) bytes of the chunks moved
    packs: int = 0
    objects: int = 0
    refs: list[str] = field(default_factory=list)
    renumbered: list[tuple[str, str]] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    annotations: list[str] = field(default_factory=list)  # annotation states brought forward (objstore.transfer.annotate)
    requests: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view (the CLI's ``--json`` shape)."""
        return {
            "direction": self.direction, "remote": self.remote, "chunks": self.chunks, "chunk_bytes": self.chunk_bytes,
            "packs": self.packs, "objects": self.objects, "refs": list(self.refs),
            "renumbered": [{"old": o, "new": n} for o, n in self.renumbered], "kept": list(self.kept),
            "annotations": list(self.annotations),
            "requests": self.requests, "bytes_sent": self.bytes_sent, "bytes_received": self.bytes_received,
            "seconds": round(self.seconds, 3),
        }


# -- small helpers -------------------------------------------------------------

def pmap(fn: Callable[[T], R], items: Sequence[T], workers: int = IO_WORKERS) -> list[R]:
    """``[fn(i) for i in items]``, run on up to ``workers`` threads (round trips, not CPU)."""
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(workers, len(items))) as pool:
        return list(pool.map(fn, items))


def ref_value(raw: bytes | None) -> bytes | None:
    """A ref's value for comparison: absent and tombstone are both 'nothing'."""
    if raw is None:
        return None
    stripped = raw.strip()
    return stripped or None


@dataclass(frozen=True, slots=True)
class RefName:
    """A parsed ref key: ``kind`` is version, alias, digest or run."""

    key: str
    kind: str
    entity: str
    project: str
    name: str  # the collection (empty for runs)
    tail: str  # vN, the alias, the digest hex, or the run id

    @property
    def collection(self) -> CollectionPath:
        return CollectionPath(self.entity, self.project, self.name)


def parse_ref(key: str) -> RefName | None:
    """Parse ``refs/e/p/n/{versions,aliases,digests}/x`` or ``refs/e/p/runs/id``; None otherwise."""
    parsed = parse_ref_key(key)  # the layout is keys'; the version-number rule is versions'
    if parsed is None or (parsed.kind == "version" and version_index(parsed.tail) is None):
        return None
    return RefName(parsed.key, parsed.kind, parsed.entity, parsed.project, parsed.name, parsed.tail)


def selection_prefixes(names: Iterable[str] | None) -> list[str]:
    """Ref prefixes for ``names``: None is everything; ``entity/project`` a project;
    ``entity/project/name`` one collection (a trailing ``:selector`` is ignored)."""
    if not names:
        return [REFS]
    out: list[str] = []
    for name in names:
        text = name.split(":", 1)[0].strip("/")
        parts = text.split("/")
        if len(parts) == 3 and all(parts):
            out.append(collection_prefix(*parts))
        elif len(parts) == 2 and all(parts):
            out.append(refs_prefix(parts[0], parts[1]))
        else:
            raise InvalidName(f"{name!r} names no collection; use name, project/name, entity/project/name or "
                              f"entity/project")
    return sorted(set(out))


def qualify_names(names: Iterable[str] | None, *sides: Store) -> list[str] | None:
    """``names`` as a transfer selects them (``entity/project/name`` or ``entity/project``),
    short names filled in as every command fills them (:mod:`objstore.settings`):
    ``name`` is a collection of the default entity and project; ``a/b`` is the project
    ``a/b`` when one of ``sides`` holds refs under it, else the collection ``b`` of the
    default entity's project ``a`` (as ``log demo/llm`` reads it)."""
    if not names:
        return None
    out: list[str] = []
    for name in names:
        text = name.split(":", 1)[0].strip("/")
        parts = text.split("/")
        if len(parts) == 1 and parts[0]:
            text = f"{resolve_entity()}/{resolve_project()}/{parts[0]}"
        elif len(parts) == 2 and all(parts) and not any(_holds(side, refs_prefix(*parts)) for side in sides):
            text = f"{resolve_entity()}/{text}"
        out.append(text)
    return out


def _holds(store: Store, prefix: str) -> bool:
    return any(True for _ in store.backend.iter_prefix(prefix))


def read_refs(store: Store, prefixes: Sequence[str]) -> dict[str, bytes]:
    """Raw values of every ref under ``prefixes`` (tombstones as ``b""``)."""
    keys: list[str] = []
    for prefix in prefixes:
        keys.extend(info.key for info in store.backend.iter_prefix(prefix))
    keys = sorted({k for k in keys if parse_ref(k) is not None})
    values = pmap(store.refs.read_raw, keys)
    return {k: v for k, v in zip(keys, values) if v is not None}


def read_keys(store: Store, keys: Iterable[str]) -> dict[str, bytes]:
    """Raw values of exactly ``keys`` (absent ones left out)."""
    ordered = sorted(set(keys))
    values = pmap(store.refs.read_raw, ordered)
    return {k: v for k, v in zip(ordered, values) if v is not None}


def ref_target(key: str, raw: bytes | None) -> ObjectId | None:
    """The id a ref value points at; None for an absent ref or a tombstone."""
    return None if raw is None else decode_value(key, raw)


def describe(result: TransferResult) -> str:
    """One line saying what a transfer did."""
    moved = f"{result.chunks} chunks ({human_bytes(result.chunk_bytes)} in {result.packs} packs), {result.objects} objects"
    refs = f"{len(result.refs)} refs"
    verb = {"push": "pushed", "fetch": "fetched", "pull": "pulled", "clone": "cloned"}.get(result.direction, result.direction)
    return f"{verb} {moved}, {refs} {'to' if result.direction == 'push' else 'from'} {result.remote}"
