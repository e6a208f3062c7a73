"""The one place the library talks to a person: short lines on stderr.

Set ``OBJSTORE_QUIET=1`` to silence them for a whole process (and its children);
:func:`quiet` silences them within a block (the CLI's ``--json`` and completion use it,
so a command run inside a longer-lived process never leaves that process silenced).

Invariants: every note is one line, prefixed ``objstore: ``. A program that
draws something of its own on the terminal (the CLI's progress bar) routes the
notes through :func:`route`, so they are printed above its drawing and never into
it. A note marked ``summary=True`` says what a call did as a whole (``logged …``,
``pushed …``); a caller that prints its own summary of the result passes
``summaries=False`` so a command ends with one summary line, not two.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_sink: Callable[[str], None] | None = None
_summaries = True
_quiet_depth = 0


def say(message: str, *, summary: bool = False) -> None:
    if is_quiet():
        return
    with _lock:
        sink, summaries = _sink, _summaries
    if summary and not summaries:
        return
    line = f"objstore: {message}"
    if sink is not None:
        sink(line)
    else:
        print(line, file=sys.stderr, flush=True)


@contextmanager
def route(write: Callable[[str], None] | None, *, summaries: bool = True) -> Iterator[None]:
    """Within the block, notes go to ``write`` (one line each, no newline) instead
    of stderr, and summary notes are dropped unless ``summaries``."""
    global _sink, _summaries
    with _lock:
        old = _sink, _summaries
        _sink, _summaries = write, summaries
    try:
        yield
    finally:
        with _lock:
            _sink, _summaries = old


@contextmanager
def quiet() -> Iterator[None]:
    """Within the block, no note is said (nested blocks stack)."""
    global _quiet_depth
    with _lock:
        _quiet_depth += 1
    try:
        yield
    finally:
        with _lock:
            _quiet_depth -= 1


def is_quiet() -> bool:
    """True where :func:`say` would print nothing: ``OBJSTORE_QUIET`` or a :func:`quiet` block."""
    with _lock:
        depth = _quiet_depth
    return depth > 0 or os.environ.get("OBJSTORE_QUIET", "") not in ("", "0")


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_duration(seconds: float) -> str:
    """131617 -> '1d 12h', 5400 -> '1h 30m', 3600 -> '1h', 95 -> '1m 35s', 4 -> '4s', 0.2 -> '<1s'."""
    if 0 < seconds < 0.5:
        return "<1s"
    s = max(int(round(seconds)), 0)
    days, s = divmod(s, 86400)
    hours, s = divmod(s, 3600)
    minutes, s = divmod(s, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m {s:02d}s"
    return f"{s}s"
