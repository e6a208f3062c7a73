"""Writing into a destination directory that others may write to, and where a symlink leads.

Every write objstore makes into a destination (materialized files, directories and
symlinks, downloaded references) goes through one :class:`Destination`, which keeps
these invariants:

- Nothing is followed below the root. Each directory is entered relative to its
  parent's open descriptor with ``O_DIRECTORY | O_NOFOLLOW``, so a symlink standing
  where the version has a directory is refused, never followed, and a directory
  swapped for a link after it was checked changes nothing: writes go to the
  descriptor, not to a path. The root itself is taken as the caller names it (links
  in the path leading to it are the caller's own); when objstore chose it (the
  default ``artifacts/<name>:<version>``), its last component is entered like any
  directory below it, so a link planted there is refused.
- Files are written to a new temp name, created with ``O_CREAT | O_EXCL |
  O_NOFOLLOW`` in the directory's descriptor (so never through a planted link), then
  renamed over the final name relative to the same descriptor. A rename replaces
  whatever non-directory stands at the name, a planted link included, and never
  writes through it. A directory standing where the version has a file or a symlink
  is refused: it may hold the user's work. A file is created with the mode the
  version gives it, less setuid, setgid and sticky bits, and as the user's umask
  (or the directory's default ACL) allows: a tree cannot make a file executable as
  another user or writable by others the umask excludes.
- An existing file is reused as a finished copy (:meth:`Destination.open_regular`)
  only when it is a regular file with one link, owned by the user writing: a hard
  link planted to a file outside, or a file someone else owns (who could rewrite
  it after it was checked), is replaced instead, so a path handed back never
  shares its bytes with a file outside the destination.
- Temp names are :data:`TEMP_PREFIX` and 16 hex digits (30 bytes), whatever the
  final name, so any name the file system allows can be written. No version can hold
  a name with that prefix (:func:`objstore.storage.trees.check_entry_name` refuses it), so a
  file with the prefix is a leftover of a writer that was killed: it is removed the
  first time a writer enters its directory.
- A destination is locked (``flock`` on the root directory) while it is written, so
  two processes materializing into one root take turns, and neither removes the
  other's temp file. On a file system without ``flock`` the lock is skipped (one
  of two overlapping writers may then fail, with a clear error). Whoever can open
  the root can hold its lock (a reader too), so a writer that has to wait says so.
- Every refusal is an :class:`~objstore.errors.UnsafePath`, every failure of the
  operating system a :class:`~objstore.errors.DestinationError`; both name the path.

:func:`resolve_link` is the one rule for where a symlink leads: the kernel's
resolution, walked over a namespace given as a lookup function and never allowed
above its root. Logging a directory (``Artifact.add_dir``) and materializing a tree
apply it, so whatever is logged as a link can be materialized.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import stat as statmod
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from objstore import faults
from objstore.console import say
from objstore.errors import DestinationError, ObjstoreError, UnsafePath
from objstore.storage.trees import TEMP_PREFIX  # reserved there: no version holds a name that starts so

MAX_LINKS = 40  # links followed while resolving one path, as Linux allows before ELOOP
OPEN_DIRS = 64  # directory descriptors kept open (an LRU); a tree may have many more directories

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

Parts = tuple[str, ...]
# What stands at a root-relative path: ("dir" | "file" | "link", the link's target), or None.
Lookup = Callable[[Parts], tuple[str, str | None] | None]


@dataclass(frozen=True, slots=True)
class LinkResolution:
    """Where a symlink leads. ``outcome`` is ``inside`` (``path``, root-relative, is a
    file or directory of the namespace, ``kind`` says which), ``escapes`` (absolute,
    or above the root at some step, counting the steps after a missing name as if
    it were a directory), ``dangling`` (``path`` is missing, or a file is used as a
    directory) or ``loop`` (more than :data:`MAX_LINKS` links)."""

    outcome: str
    path: Parts = ()
    kind: str = "dir"


def resolve_link(lookup: Lookup, link: Parts, target: str) -> LinkResolution:
    """Resolve the symlink at root-relative ``link`` whose target is ``target``."""
    budget = [MAX_LINKS]
    return _resolve(lookup, link[:-1], target, budget)


def _resolve(lookup: Lookup, start: Parts, target: str, budget: list[int]) -> LinkResolution:
    if not target or target.startswith("/") or "\0" in target:
        return LinkResolution("escapes")
    cur = list(start)
    kind = "dir"
    parts = [p for p in target.split("/") if p and p != "."]
    for i, part in enumerate(parts):
        if kind != "dir":
            return LinkResolution("dangling", tuple(cur))  # a file used as a directory: ENOTDIR
        if part == "..":
            if not cur:
                return LinkResolution("escapes")
            cur.pop()
            continue
        node = lookup((*cur, part))
        if node is None:
            # What is missing may be made later (a directory the user creates); a
            # link that would climb out through it leads outside all the same.
            depth = len(cur) + 1
            for rest in parts[i + 1:]:
                depth += -1 if rest == ".." else 1
                if depth < 0:
                    return LinkResolution("escapes")
            return LinkResolution("dangling", (*cur, part))
        kind, inner = node
        if kind == "link":
            budget[0] -= 1
            if budget[0] < 0:
                return LinkResolution("loop", (*cur, part))
            # a link's target is relative to the directory holding the link
            found = _resolve(lookup, tuple(cur), inner or "", budget)
            if found.outcome != "inside":
                return found
            cur, kind = list(found.path), found.kind
        else:
            cur.append(part)
    return LinkResolution("inside", tuple(cur), kind)


def _kind_of(mode: int) -> str:
    if statmod.S_ISLNK(mode):
        return "link"
    return "dir" if statmod.S_ISDIR(mode) else "file"


def directory_lookup(top: Path) -> Lookup:
    """A :data:`Lookup` over a real directory, links not followed (for logging)."""
    def lookup(parts: Parts) -> tuple[str, str | None] | None:
        path = top.joinpath(*parts)
        try:
            kind = _kind_of(os.lstat(path).st_mode)
            return kind, os.readlink(path) if kind == "link" else None
        except OSError:
            return None
    return lookup


def _where(root: Path, parts: Sequence[str]) -> str:
    return str(root.joinpath(*parts))


def _os_error(root: Path, parts: Sequence[str], doing: str, exc: OSError) -> DestinationError:
    where = _where(root, parts)
    if exc.errno == errno.ENAMETOOLONG:
        return DestinationError(f"cannot {doing} {where}: the name is longer than its file system allows; "
                                f"choose a root on another file system", errno=exc.errno)
    return DestinationError(f"cannot {doing} {where}: {exc.strerror or exc}", errno=exc.errno)


class Destination:
    """A destination directory opened for writing: the only way objstore writes into one.

    Paths are tuples of checked, root-relative components. Use as a context manager;
    leaving it releases the lock and closes every descriptor.
    """

    def __init__(self, root: Path, fd: int, fresh: bool = False) -> None:
        self.root = root
        self._fd = fd
        self.fresh = fresh  # this session made the root: see __exit__
        self._dirs: OrderedDict[Parts, int] = OrderedDict()
        self._visited: set[Parts] = set()

    @classmethod
    def open(cls, root: str | os.PathLike[str], *, follow_root: bool = True) -> Destination:
        """Create ``root`` if needed, lock it, and remove stale temp files at its top.

        ``follow_root=False`` when objstore chose the root's last component itself (the
        default download directory): a link standing there is not the caller's, so it is
        refused like one below the root, and the root is entered through its parent's
        descriptor (no window between making it and opening it)."""
        path = Path(root).absolute()
        fresh = not os.path.lexists(path)
        made = path if follow_root else path.parent
        try:
            os.makedirs(made, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise DestinationError(f"{path} cannot be a destination directory: it, or a directory above it, "
                                   f"is a file; choose another root") from None
        except OSError as exc:
            raise _os_error(made, (), "create", exc) from None
        try:
            fd = os.open(made, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise _os_error(made, (), "open", exc) from None
        if not follow_root:
            fd = cls._enter_root(fd, path)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                # Anyone who can open the directory can hold its lock, a reader too: never
                # wait without saying so, and say how to find who holds it.
                say(f"waiting for another process writing into {path} (it holds the directory's lock; "
                    f"'fuser {path}' names it)")
                fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            # No flock here (some network file systems). Writers may then overlap: still
            # nothing is followed, but one may fail, clearly, when another removes its temp file.
            pass
        dest = cls(path, fd, fresh)
        try:
            dest._enter((), fd)
        except BaseException:
            dest.close()
            raise
        return dest

    @classmethod
    def _enter_root(cls, parent: int, path: Path) -> int:
        """Open (making it if missing) directory ``path.name`` in ``parent``, never through a link. Closes ``parent``."""
        try:
            try:
                return os.open(path.name, _DIR_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                try:
                    os.mkdir(path.name, 0o777, dir_fd=parent)
                except FileExistsError:
                    pass  # made meanwhile: opened and checked like any other
                return os.open(path.name, _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EEXIST):
                what = cls._what(parent, path.name)
                raise UnsafePath(f"{path} is {what}, not a directory; objstore downloads there by default and follows "
                                 f"no link it did not make: move it away, or pass root= to download elsewhere") from None
            raise _os_error(path, (), "create", exc) from None
        finally:
            os.close(parent)

    def __enter__(self) -> Destination:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        if exc_type is not None and self.fresh:
            self._remove_empty_dirs()  # still holding the root's lock: no other writer is inside
        self.close()

    def _remove_empty_dirs(self) -> None:
        """A download that failed or was interrupted (Ctrl-C) into a root it made
        leaves no empty directory behind, nor the root if nothing was finished in it.
        Only empty directories go (rmdir refuses any other); each finished file stays,
        intact, and a rerun keeps it rather than fetch it again."""
        for dirpath, _, _ in os.walk(self.root, topdown=False, followlinks=False):
            try:
                os.rmdir(dirpath)
            except OSError:
                pass  # not empty, or not ours to remove

    def close(self) -> None:
        for fd in self._dirs.values():
            os.close(fd)
        self._dirs.clear()
        if self._fd >= 0:
            os.close(self._fd)  # releases the lock
            self._fd = -1

    # -- directories ----------------------------------------------------------------
    def _enter(self, parts: Parts, fd: int) -> None:
        """First visit of a directory in this session: remove what killed writers left."""
        if parts in self._visited:
            return
        self._visited.add(parts)
        try:
            names = os.listdir(fd)
        except OSError as exc:
            raise _os_error(self.root, parts, "list", exc) from None
        for name in names:
            if not name.startswith(TEMP_PREFIX):
                continue
            try:
                if not statmod.S_ISDIR(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                    os.unlink(name, dir_fd=fd)  # unlink never follows: a link is removed, not its target
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise _os_error(self.root, (*parts, name), "remove the stale temp file", exc) from None

    def directory(self, parts: Parts) -> int:
        """The descriptor of directory ``parts``, created if missing (borrowed: do not close)."""
        if not parts:
            return self._fd
        fd = self._dirs.get(parts)
        if fd is not None:
            self._dirs.move_to_end(parts)
            return fd
        parent = self.directory(parts[:-1])
        name = parts[-1]
        try:
            try:
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            except FileNotFoundError:
                try:
                    os.mkdir(name, 0o777, dir_fd=parent)
                except FileExistsError:
                    pass  # made meanwhile by someone else: opened and checked below like any other
                fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EEXIST):
                what = self._what(parent, name)
                raise UnsafePath(f"{_where(self.root, parts)} is {what} where the version has a directory; "
                                 f"move it away and retry") from None
            raise _os_error(self.root, parts, "create the directory", exc) from None
        try:
            self._enter(parts, fd)
        except BaseException:
            os.close(fd)
            raise
        self._dirs[parts] = fd
        while len(self._dirs) > OPEN_DIRS:
            _, old = self._dirs.popitem(last=False)
            os.close(old)
        return fd

    @staticmethod
    def _what(dir_fd: int, name: str) -> str:
        try:
            mode = os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode
        except OSError:
            return "something else"
        if statmod.S_ISLNK(mode):
            return "a symlink"
        if statmod.S_ISDIR(mode):
            return "a directory"
        return "a file" if statmod.S_ISREG(mode) else "a special file"

    def _refuse_directory(self, dir_fd: int, parts: Parts, what: str) -> None:
        try:
            mode = os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False).st_mode
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _os_error(self.root, parts, "inspect", exc) from None
        if statmod.S_ISDIR(mode):
            raise UnsafePath(f"{_where(self.root, parts)} is a directory where the version has {what}; "
                             f"move it away and retry")

    def _temp_name(self, make: Callable[[str], None]) -> str:
        for _ in range(100):
            name = TEMP_PREFIX + secrets.token_hex(8)
            try:
                make(name)
                return name
            except FileExistsError:
                continue  # exclusive creation lost to a name already there: draw another
        raise DestinationError(f"no free temp name in {self.root} after 100 tries")

    def _replace(self, dir_fd: int, tmp: str, parts: Parts, what: str) -> None:
        faults.point("rename")
        try:
            os.replace(tmp, parts[-1], src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except OSError as exc:
            # a directory made at the name since it was checked: renaming over it fails
            if exc.errno in (errno.EISDIR, errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR):
                raise UnsafePath(f"{_where(self.root, parts)} is a directory where the version has {what}; "
                                 f"move it away and retry") from None
            raise _os_error(self.root, parts, "write", exc) from None

    # -- files and links ----------------------------------------------------------------
    def open_regular(self, parts: Parts) -> int | None:
        """A descriptor of the file at ``parts`` if it can be kept as a finished copy: a
        regular file with one link, owned by this user. None if something else (or
        nothing) is there. Never follows a link, never blocks on a FIFO. Caller closes it."""
        try:
            dir_fd = self.directory(parts[:-1])
        except UnsafePath:
            return None
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
        except OSError:
            return None
        st = os.fstat(fd)
        # Another name for the inode (a hard link) or another owner could change the
        # bytes after they were checked, from outside this destination.
        if not statmod.S_ISREG(st.st_mode) or st.st_nlink != 1 or st.st_uid != os.geteuid():
            os.close(fd)
            return None
        return fd

    def write_file(self, parts: Parts, fill: Callable[[BinaryIO], None], mode: int) -> None:
        """Write a regular file at ``parts``: ``fill`` writes its bytes to a fresh temp
        file (through ``out``, or at offsets through ``out.fileno()``), which is
        renamed into place only when ``fill`` returns. Whatever ``fill``
        raises leaves nothing behind. ``mode``'s permission bits are applied as the
        umask allows; setuid, setgid and sticky never are."""
        dir_fd = self.directory(parts[:-1])
        self._refuse_directory(dir_fd, parts, "a file")
        fds: list[int] = []

        def create(name: str) -> None:
            # Created with its final mode, so the kernel applies the umask (fchmod would not).
            # The descriptor is writable whatever the mode says.
            fds.append(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                               mode & 0o777, dir_fd=dir_fd))

        try:
            tmp = self._temp_name(create)
        except OSError as exc:
            raise _os_error(self.root, parts, "write", exc) from None
        try:
            with os.fdopen(fds[0], "wb") as out:
                try:
                    fill(out)
                    out.flush()
                    faults.point("write")
                except ObjstoreError:
                    raise  # several are OSErrors too (NotFound, BackendError): already explained
                except OSError as exc:
                    raise _os_error(self.root, parts, "write", exc) from None
            self._replace(dir_fd, tmp, parts, "a file")
        except BaseException:
            _discard_temp(dir_fd, tmp)
            raise

    def symlink(self, parts: Parts, target: str) -> bool:
        """Make ``parts`` a symlink to ``target``, replacing a file or link standing
        there; False when that very link is already there."""
        dir_fd = self.directory(parts[:-1])
        try:
            if os.readlink(parts[-1], dir_fd=dir_fd) == target:
                return False
        except OSError:
            pass  # not a link, or nothing there
        self._refuse_directory(dir_fd, parts, "a symlink")
        try:
            tmp = self._temp_name(lambda name: os.symlink(target, name, dir_fd=dir_fd))
        except OSError as exc:
            raise _os_error(self.root, parts, "create the symlink", exc) from None
        try:
            self._replace(dir_fd, tmp, parts, "a symlink")
        except BaseException:
            _discard_temp(dir_fd, tmp)
            raise
        return True

    def remove_link(self, parts: Parts) -> None:
        """Remove the symlink at ``parts`` if one is there (undoing :meth:`symlink`)."""
        try:
            dir_fd = self.directory(parts[:-1])
            if statmod.S_ISLNK(os.stat(parts[-1], dir_fd=dir_fd, follow_symlinks=False).st_mode):
                os.unlink(parts[-1], dir_fd=dir_fd)
        except (OSError, UnsafePath):
            pass


def _discard_temp(dir_fd: int, tmp: str) -> None:
    """Remove a temp file of ours that will not be renamed into place (a failed or
    interrupted write); one already gone is fine."""
    try:
        os.unlink(tmp, dir_fd=dir_fd)
    except OSError:
        pass
