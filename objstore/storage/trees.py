"""Trees: building nested directory objects from flat paths, and walking them.

Entry names are single path components; a tree read from a store or a remote is
untrusted, so every name is checked here before anything uses it as a path. Names
starting with :data:`TEMP_PREFIX` are reserved for materialize's temp files
(:mod:`objstore.files.safepath`) and refused, when logging and when reading.
Logging refuses what reading would: a path nested deeper than :data:`MAX_DEPTH`
trees (walk_tree's limit, and fsck's and gc's) or a name that is not UTF-8 is
refused by :func:`split_path` when it is staged, before anything is read.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace

from objstore.constants import MAX_TREE_DEPTH
from objstore.errors import CorruptObject, InvalidInput, NotFound, UnsafePath
from objstore.storage.ids import ObjectId
from objstore.storage.objects import REFERENCE, SYMLINK, TREE, Tree, TreeEntry
from objstore.storage.odb import ObjectDatabase

# Reading refuses a tree nested deeper than this; so does logging (split_path, build_tree).
MAX_DEPTH = MAX_TREE_DEPTH
# The prefix of materialize's temp names (objstore.files.safepath): no entry name may start so.
TEMP_PREFIX = ".objstore-tmp-"


def check_entry_name(name: str) -> str:
    """Refuse names that could escape or confuse a destination directory, and the
    prefix materialize reserves for its temp files (so a leftover one is always
    recognizable as such)."""
    if (
        not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name
        or "\0" in name or len(name.encode("utf-8", "surrogatepass")) > 255
    ):
        raise UnsafePath(f"unsafe entry name {name!r} in a tree; refusing to write it")
    if name.startswith(TEMP_PREFIX):
        raise UnsafePath(f"entry name {name!r} starts with {TEMP_PREFIX!r}, which is reserved for objstore's temp files; rename it")
    return name


def split_path(path: str, *, directory: bool = False) -> list[str]:
    """Split an artifact-relative path (``a/b/c.bin``) into checked components.

    Refuses what could not be read back once logged: a name that is not valid
    UTF-8, or a path deeper than a reader follows (a tree more than MAX_DEPTH
    levels below the root; a ``directory`` is a tree itself, a file is not).
    """
    if path.startswith("/"):
        raise UnsafePath(f"{path!r} is absolute; artifact paths are relative")
    parts = [check_entry_name(p) for p in path.split("/")]
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidInput(f"{path!r} is not valid UTF-8 (a file name in another encoding?); rename it to log it") from None
    depth = len(parts) if directory else len(parts) - 1
    if depth > MAX_DEPTH:
        raise InvalidInput(f"{_short(path)} nests {depth} directories deep; objstore reads at most {MAX_DEPTH} levels")
    return parts


def _short(path: str) -> str:
    return repr(path) if len(path) <= 80 else repr(path[:40] + "…" + path[-30:])


def build_tree(odb: ObjectDatabase, leaves: Mapping[str, TreeEntry]) -> tuple[ObjectId, int]:
    """Store the trees for ``{relative path: leaf entry}`` and return (root id, total size).

    Leaf entries carry their final name as the last path component; directories
    are created for the rest. A leaf of kind ``tree`` (with no id) stands for an
    empty directory. Unchanged subdirectories get the ids they had before.
    """
    root: dict[str, object] = {}
    for path, entry in leaves.items():
        parts = split_path(path, directory=entry.kind == TREE)
        node = root
        if entry.kind == TREE:  # an empty directory: just make sure it exists
            for part in parts:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    raise UnsafePath(f"{path!r} is both a file and a directory")
                node = child
            continue
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise UnsafePath(f"{path!r} puts a file where a directory is named the same")
            node = child
        if parts[-1] in node:
            raise UnsafePath(f"{path!r} is added twice, or is both a file and a directory")
        node[parts[-1]] = replace(entry, name=parts[-1])
    return _store_dir(odb, root)


def _store_dir(odb: ObjectDatabase, node: dict[str, object]) -> tuple[ObjectId, int]:
    entries = []
    total = 0
    for name, child in node.items():
        if isinstance(child, dict):
            tree_id, size = _store_dir(odb, child)
            entries.append(TreeEntry(name, TREE, size, tree_id, 0o755))
        else:
            assert isinstance(child, TreeEntry)
            entries.append(child)
            size = child.size
        total += size
    tree = Tree(tuple(sorted(entries, key=lambda e: e.name)))
    return odb.put_object(tree), total


def read_tree(odb: ObjectDatabase, tree_id: ObjectId) -> Tree:
    obj = odb.get_object(tree_id)
    if not isinstance(obj, Tree):
        raise CorruptObject(f"object {tree_id.hex[:16]} should be a tree", object_id=tree_id.hex)
    return check_tree(obj, tree_id)


def check_tree(tree: Tree, tree_id: ObjectId) -> Tree:
    """Refuse a tree (read from a store or a remote) that cannot be written safely:
    unsafe or repeated names, symlinks with empty or absolute targets, references
    naming no URI (or one with a NUL, which no path or key holds). Whether a
    relative symlink escapes depends on where the tree is written; materialize
    checks that."""
    names = [e.name for e in tree.entries]
    if len(set(names)) != len(names):
        raise UnsafePath(f"tree {tree_id.hex[:16]} names an entry twice; refusing it")
    for entry in tree.entries:
        check_entry_name(entry.name)
        if entry.kind == SYMLINK and (not entry.target or entry.target.startswith("/") or "\0" in entry.target):
            raise UnsafePath(
                f"symlink {entry.name!r} in tree {tree_id.hex[:16]} points to {entry.target!r}, outside any destination; refusing it")
        if entry.kind == REFERENCE and (not entry.target or "\0" in entry.target):
            raise UnsafePath(f"reference {entry.name!r} in tree {tree_id.hex[:16]} names no usable URI ({entry.target!r}); refusing it")
    return tree


def walk_tree(
    odb: ObjectDatabase, tree_id: ObjectId, prefix: str = "", depth: int = 0, *, include_dirs: bool = False
) -> Iterator[tuple[str, TreeEntry]]:
    """Every entry under ``tree_id`` as (relative path, entry), in name order;
    directories themselves only with ``include_dirs`` (before their contents)."""
    if depth > MAX_DEPTH:
        raise UnsafePath(f"tree {tree_id.hex[:16]} nests deeper than {MAX_DEPTH} levels; refusing it")
    for entry in read_tree(odb, tree_id).entries:
        path = f"{prefix}{entry.name}"
        if entry.kind == TREE:
            if entry.id is None:
                raise CorruptObject(f"directory {path!r} in tree {tree_id.hex[:16]} has no id", object_id=tree_id.hex)
            if include_dirs:
                yield path, entry
            yield from walk_tree(odb, entry.id, path + "/", depth + 1, include_dirs=include_dirs)
        else:
            yield path, entry


def entry_at(odb: ObjectDatabase, tree_id: ObjectId, path: str) -> TreeEntry:
    """The entry at artifact-relative ``path`` (``a/b/c.bin``) under ``tree_id``,
    reading only the trees on the way down; NotFound if there is none."""
    parts = split_path(path)
    for depth, part in enumerate(parts):
        entry = next((e for e in read_tree(odb, tree_id).entries if e.name == part), None)
        if entry is None:
            raise NotFound(f"{_short(path)} is not in this version", key=path)
        if depth == len(parts) - 1:
            return entry
        if entry.kind != TREE or entry.id is None:
            raise NotFound(f"{_short(path)} is not in this version ({'/'.join(parts[:depth + 1])} is not a directory)", key=path)
        tree_id = entry.id
    raise NotFound(f"{_short(path)} is not in this version", key=path)  # split_path never returns no parts
