"""How the CLI talks: JSON for scripts, aligned text for people, progress bars
only on a terminal, and errors as one line on stderr."""

from __future__ import annotations

import datetime as _dt
import json
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager

import click

from objstore.console import human_bytes


def emit_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=False, default=str))


def when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return _dt.datetime.fromtimestamp(ts).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return _dt.datetime.fromtimestamp(ts, _dt.UTC).isoformat()


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    cells = [[str(h) for h in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    for r in cells:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip())


def size(n: int | None) -> str:
    return "-" if n is None else human_bytes(n)


@contextmanager
def progress_bar(total: int, label: str) -> Iterator[Callable[[int], None] | None]:
    """A bytes / rate / ETA bar on stderr when it is a terminal; None (no bar) otherwise."""
    if not sys.stderr.isatty() or os.environ.get("OBJSTORE_QUIET", "") not in ("", "0") or total <= 0:
        yield None
        return
    start = time.monotonic()
    done = 0
    last = 0.0

    def draw(final: bool = False) -> None:
        elapsed = max(time.monotonic() - start, 1e-6)
        rate = done / elapsed
        frac = min(done / total, 1.0)
        eta = (total - done) / rate if rate > 0 and not final else 0.0
        bar = "#" * int(frac * 24)
        sys.stderr.write(f"\r{label} [{bar:<24}] {human_bytes(done)}/{human_bytes(total)} {human_bytes(rate)}/s ETA {eta:4.0f}s ")
        sys.stderr.flush()

    def update(n: int) -> None:
        nonlocal done, last
        done += n
        now = time.monotonic()
        if now - last >= 0.1:
            last = now
            draw()

    try:
        yield update
    finally:
        draw(final=True)
        sys.stderr.write("\n")
        sys.stderr.flush()


def path_size(path: str) -> int:
    """Bytes under a local path (0 for a URI or something unreadable)."""
    try:
        if os.path.isfile(path):
            return os.path.getsize(path)
        total = 0
        for dirpath, _, files in os.walk(path):
            for f in files:
                try:
                    total += os.path.getsize(os.path.join(dirpath, f))
                except OSError:
                    pass
        return total
    except OSError:
        return 0
