"""Where this store stands against each remote, as ``git status`` says it: the
versions it has that a remote lacks (ahead) and those the remote has that it
lacks (behind), per collection.

Computed from the remote-tracking state (:mod:`objstore.transfer.tracking`): what
the remote's refs held when this store last fetched from, pulled from or pushed
to it. Like git's, it asks the remote nothing, so it is only as fresh as that
last transfer (``objstore fetch`` refreshes it). Versions are compared by id (their
content and record), so a version pulled under another number is the same version.
"""

from __future__ import annotations

from dataclasses import dataclass

from objstore.model.store import Store
from objstore.storage.keys import REFS
from objstore.transfer.remotes import Remote, remote_list
from objstore.transfer.sync import read_refs
from objstore.transfer.tracking import TOMBSTONE, Tracking, collections_in, version_chain


@dataclass(frozen=True, slots=True)
class CollectionStatus:
    """One collection against one remote: ``ahead`` versions here the remote
    lacks, ``behind`` versions there this store lacks."""

    collection: str
    ahead: int
    behind: int

    def to_dict(self) -> dict[str, object]:
        return {"collection": self.collection, "ahead": self.ahead, "behind": self.behind}


@dataclass(frozen=True, slots=True)
class RemoteStatus:
    """``known``: whether this store ever transferred with the remote (without
    that, everything here counts as ahead and nothing as behind)."""

    name: str
    url: str
    known: bool
    collections: tuple[CollectionStatus, ...]  # only those that differ

    @property
    def ahead(self) -> int:
        return sum(c.ahead for c in self.collections)

    @property
    def behind(self) -> int:
        return sum(c.behind for c in self.collections)

    def to_dict(self) -> dict[str, object]:
        return {"name": self.name, "url": self.url, "known": self.known, "ahead": self.ahead, "behind": self.behind,
                "collections": [c.to_dict() for c in self.collections]}


def remote_status(store: Store, remote: Remote) -> RemoteStatus:
    """``store`` against what it last saw of ``remote`` (see the module docstring)."""
    mine = collections_in(read_refs(store, [REFS]))
    seen = Tracking(store, remote.tracking_prefix).read_all([REFS])
    theirs = collections_in(seen)
    out = []
    for coll in sorted(mine.keys() | theirs.keys(), key=str):
        here = {v for v in version_chain(mine[coll])} - {TOMBSTONE} if coll in mine else set()
        there = {v for v in version_chain(theirs[coll])} - {TOMBSTONE} if coll in theirs else set()
        if here != there:
            out.append(CollectionStatus(str(coll), len(here - there), len(there - here)))
    return RemoteStatus(remote.name, remote.url, bool(seen), tuple(out))


def store_status(store: Store) -> list[RemoteStatus]:
    """:func:`remote_status` for every configured remote, by name."""
    return [remote_status(store, r) for r in remote_list(store)]
