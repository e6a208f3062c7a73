"""The logging pipeline: what a draft artifact's staged entries become in the store.

Invariants: every link among the staged entries is checked over the whole draft
before anything is stored; chunks and packs are flushed before any file object
or tree names them (the write order objects, then refs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from objstore.errors import InvalidInput, UnsafePath
from objstore.files.materialize import check_symlinks
from objstore.storage.objects import FILE, TREE, TreeEntry


@dataclass(slots=True)
class _Staged:
    kind: str
    size: int
    source: Path | None = None  # local file to ingest
    entry: TreeEntry | None = None  # a ready entry (reference, symlink, empty dir)


def _check_links(staged: dict[str, "_Staged"]) -> None:
    """Whatever is logged as a link can be materialized: each add_dir judged its links
    over its own directory, but links from two calls can combine (``l -> k/../..``
    from one, ``k -> .`` from another) into one that leaves; resolve every link over
    the whole draft by the rule materialize applies, before anything is stored."""
    entries: list[tuple[str, TreeEntry]] = []
    dirs: set[str] = set()
    for path, item in staged.items():
        parts = path.split("/")
        dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
        entries.append((path, item.entry if item.entry is not None else TreeEntry("", FILE, item.size)))
    entries.extend((d, TreeEntry("", TREE, 0)) for d in sorted(dirs) if d not in staged)
    try:
        check_symlinks(entries)
    except UnsafePath as exc:
        raise InvalidInput(f"{str(exc).removesuffix('; refusing')} once combined with the artifact's other entries, "
                           f"so it could never be downloaded; add the link and what it points through in one add_dir") from None
