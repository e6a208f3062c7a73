"""What a directory log leaves out: the ignore rules of :meth:`Artifact.add_dir`'s walk.

Three kinds of entries are never logged, in this order of precedence:

1. **A store**: a directory named ``.objstore``, or one whose ``config`` file is a
   store's (a small msgpack map with ``format`` and ``chunking``: a store made with
   ``--store`` under another name, even one nothing was logged into yet). ``objstore log-model . -n self`` must not copy
   the store into itself, whatever the ignore file says; the directory logged
   being a store is refused outright.
2. **The directories the caller names** (the downloads directory, ``./artifacts``
   by default): matched by device and inode, so any path to them counts.
3. **What the patterns match**, in gitignore syntax (pathspec's ``GitIgnoreSpec``:
   ``*.ckpt``, ``logs/``, ``/top-only``, ``!keep``, ``**``) and with git's precedence,
   the last match deciding: the ``.objstoreignore`` at the top of the directory
   logged, then each ``.objstoreignore`` of a directory below it on the way to the
   path (a file in ``sub/`` applies below ``sub/``, its patterns relative to
   ``sub/``, so a deeper file overrides a shallower one and ``!`` can bring back
   what a shallower file left out), then the caller's (``--exclude``), relative
   to the top. As in git, a directory left out is not walked into, so a ``!``
   pattern cannot bring back a file below it, and its ignore file is never read.

Invariant: each ignore file is read once, when the walk first asks about its
directory, and the rules never change after that; a path the rules leave out is
never read, so an unreadable file there fails nothing.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from objstore.constants import STORE_DIRNAME
from objstore.errors import InvalidInput

IGNORE_FILE = ".objstoreignore"
EXCLUDE_SOURCE = "the exclude patterns (--exclude / exclude=)"

STORE_CONFIG = "config"
MAX_STORE_CONFIG_BYTES = 4096  # a store's config is under 100 bytes; a bigger file named config is not one
MAX_IGNORE_BYTES = 1 << 20  # an ignore file is a few lines; more is a mistake, not rules


def is_store(path: Path, filenames: Iterable[str]) -> bool:
    """Whether the directory ``path`` (holding the files ``filenames``) is an objstore store."""
    if path.name == STORE_DIRNAME:
        return True
    if STORE_CONFIG not in filenames:
        return False
    try:  # never through a link, never blocking on a FIFO named config
        fd = os.open(path / STORE_CONFIG, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return False
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return False
        raw = os.read(fd, MAX_STORE_CONFIG_BYTES + 1)
    except OSError:
        return False
    finally:
        os.close(fd)
    if len(raw) > MAX_STORE_CONFIG_BYTES:
        return False
    import msgpack

    try:
        data = msgpack.unpackb(raw)
    except Exception:  # noqa: BLE001 - any undecodable file is simply not a store's config
        return False
    return isinstance(data, dict) and "format" in data and "chunking" in data


@dataclass(frozen=True)
class IgnoreRules:
    """The rules of one directory walk (see the module docstring)."""

    top: Path
    spec: Any  # pathspec.GitIgnoreSpec of the top's .objstoreignore, or None when it has no patterns
    never: frozenset[tuple[int, int]]
    exclude: Any = None  # the caller's patterns (GitIgnoreSpec), or None
    # A subdirectory's ignore file as the walk first reached it: its rel path -> spec or None.
    nested: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    def skips_dir(self, rel: str, path: Path) -> bool:
        """Whether the directory at ``rel`` (relative to ``top``, no trailing ``/``) is left
        out by its name (``.objstoreignore``), the caller's list or the patterns; a store under
        another name is found when the walk lists it (:func:`is_store`)."""
        if path.name == STORE_DIRNAME:
            return True
        if self.never:
            try:
                st = path.stat()
            except OSError:
                return False  # the walk itself reports what vanished
            if (st.st_dev, st.st_ino) in self.never:
                return True
        return self._matched(rel, rel + "/")

    def skips_file(self, rel: str) -> bool:
        """Whether the file (or link) at ``rel`` is left out by the patterns."""
        return self._matched(rel, rel)

    def _matched(self, rel: str, path: str) -> bool:
        """The last verdict of the ignore files from the top down to ``rel``'s parent, then ``exclude``'s."""
        verdict: bool | None = None
        parents = rel.split("/")[:-1]
        for depth in range(len(parents) + 1):
            here = "/".join(parents[:depth])
            spec = self.spec if not here else self._spec_of(here)
            if spec is not None:
                result = spec.check_file(path[len(here) + 1:] if here else path)
                if result.include is not None:
                    verdict = result.include
        if self.exclude is not None:
            result = self.exclude.check_file(path)
            if result.include is not None:
                verdict = result.include
        return bool(verdict)

    def _spec_of(self, rel_dir: str) -> Any:
        if rel_dir not in self.nested:
            path = self.top / rel_dir / IGNORE_FILE
            self.nested[rel_dir] = _spec(_ignore_lines(path), str(path))
        return self.nested[rel_dir]


def rules_for(top: Path, exclude: Sequence[str] = (), never: Iterable[Path] = ()) -> IgnoreRules:
    """The rules for walking ``top``: the ``.objstoreignore`` files, then ``exclude``;
    ``never`` are directories left out wherever they appear. Refuses a ``top`` that
    is itself a store, and a bad pattern, with a one-line InvalidInput (a bad
    pattern in a subdirectory's file, when the walk reaches it)."""
    try:
        names = [e.name for e in os.scandir(top)]
    except OSError:
        names = []  # the walk reports an unlistable top itself
    if is_store(top, names):
        raise InvalidInput(f"{top} is an objstore store; a store is never logged (log the directory of the model)")
    for pattern in exclude:
        if not isinstance(pattern, str) or not pattern.strip() or "\n" in pattern:
            raise InvalidInput(f"exclude pattern {pattern!r} must be one non-empty gitignore pattern, e.g. '*.ckpt'")
    never_ids = set()
    for path in never:
        try:
            st = Path(path).stat()
        except OSError:
            continue
        never_ids.add((st.st_dev, st.st_ino))
    return IgnoreRules(top, _spec(_ignore_lines(top / IGNORE_FILE), str(top / IGNORE_FILE)), frozenset(never_ids),
                       _spec(list(exclude), EXCLUDE_SOURCE))


def _spec(lines: list[str], source: str) -> Any:
    """The GitIgnoreSpec of ``lines`` (read from ``source``, named in the error), or None when they hold no pattern."""
    if not any(line.strip() and not line.lstrip().startswith("#") for line in lines):
        return None
    import pathspec

    try:
        return pathspec.GitIgnoreSpec.from_lines(lines)
    # pathspec raises its own ValueError for a pattern git rejects, and lets a
    # regex error through for one it translates badly ('[z-a]'): both are the user's input.
    except (ValueError, TypeError, re.error) as exc:
        bad = next((n for n, line in enumerate(lines, 1) if not _parses(line)), None)
        if bad is None:
            where = source
        elif source == EXCLUDE_SOURCE:  # one pattern per --exclude: its line number means nothing to the user
            where = f"{source} {lines[bad - 1]!r}"
        else:
            where = f"{source}, line {bad}: {lines[bad - 1]!r}"
        raise InvalidInput(f"bad ignore pattern in {where} ({exc}); patterns use gitignore syntax") from None


def _parses(line: str) -> bool:
    import pathspec

    try:
        pathspec.GitIgnoreSpec.from_lines([line])
    except (ValueError, TypeError, re.error):
        return False
    return True


def _ignore_lines(path: Path) -> list[str]:
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_IGNORE_BYTES + 1)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise InvalidInput(f"{path} cannot be read ({exc.strerror or exc}); fix it or remove it") from None
    if len(raw) > MAX_IGNORE_BYTES:
        raise InvalidInput(f"{path} is over {MAX_IGNORE_BYTES} bytes; an ignore file holds patterns, one a line")
    try:
        return raw.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise InvalidInput(f"{path} is not UTF-8 text; an ignore file holds gitignore patterns") from None
