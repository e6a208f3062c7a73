"""How the CLI talks: JSON for scripts, aligned text for people, one progress bar
(tqdm) per long command only on a terminal with the library's notes printed above
it, colour only on a terminal without NO_COLOR, and errors as one line on stderr."""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
import shutil
import sys
import threading
from collections.abc import Callable, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import click
from tqdm import tqdm

from objstore.console import human_bytes, human_duration, is_quiet, route

if TYPE_CHECKING:
    from objstore.api.artifact import Artifact


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


# Characters a store's names and texts must not send to a terminal: the C0 and C1 controls (ESC
# starts sequences that erase lines, move the cursor, set the window title; BEL, CR, backspace) and
# the bidi overrides and isolates that reorder what follows ("Trojan source"). A store someone else
# wrote can hold any of them in a file name, a description or metadata.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def printable(text: object, *, lines: bool = False) -> str:
    """``text`` as the CLI prints a value read from a store: each control character as its
    escape (``\\x1b``, ``\\n``, ``\\u202e``), so it shows what the value holds and never acts
    on the terminal; ``lines`` keeps line breaks and tabs (a description's own)."""
    def escape(m: re.Match[str]) -> str:
        c = m.group()
        return c if lines and c in "\n\t" else repr(c)[1:-1]  # Python's own escape, as in a str's repr

    return _CONTROLS.sub(escape, str(text))


MIN_CUT_WIDTH = 12  # a cell cut to fit the terminal keeps at least this much (or its header's width)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]], cut: Sequence[int] | None = None) -> None:
    """Aligned columns. On a terminal, a row wider than the window would wrap into
    the next: the widest of the columns ``cut`` (names; all if None — never dates
    or sizes, which a cut would falsify) are narrowed to fit, each cell cut in the
    middle with '…' (a long name's start and end are what tell it from its
    neighbours). Piped, every cell stays whole, for scripts."""
    cells = [[str(h) for h in headers]] + [[printable(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    if sys.stdout.isatty():
        floors = [len(h) if cut is None or i in cut else widths[i] for i, h in enumerate(cells[0])]
        widths = _fitted(widths, floors, shutil.get_terminal_size().columns)
    for r in cells:
        click.echo("  ".join(_cut(c, w).ljust(w) for c, w in zip(r, widths)).rstrip())


def _fitted(widths: list[int], floors: list[int], columns: int) -> list[int]:
    """``widths`` narrowed, widest first, until the row (two spaces between cells) fits ``columns``, or nothing more can go."""
    widths = list(widths)
    while (excess := sum(widths) + 2 * (len(widths) - 1) - columns) > 0:
        floor = [max(f, min(MIN_CUT_WIDTH, w)) for f, w in zip(floors, widths)]
        cuttable = [i for i, w in enumerate(widths) if w > floor[i]]
        if not cuttable:
            break
        i = max(cuttable, key=lambda j: widths[j])
        others = sorted((widths[j] for j in cuttable if j != i), reverse=True)
        # down to the next widest column (then both shrink together), or by what is still too much
        widths[i] = max(floor[i], widths[i] - excess, min(widths[i] - 1, others[0]) if others else 0)
    return widths


def _cut(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    head = width // 2  # the start gets the odd character: '…' takes one
    return text[:head] + "…" + text[len(text) - (width - 1 - head):]


def size(n: int | None) -> str:
    return "-" if n is None else human_bytes(n)


class _Bar(tqdm):  # type: ignore[type-arg]  # tqdm is generic in its stubs (types-tqdm) only
    """tqdm with our units: bytes as ``1.5 GiB``, rates as ``312.4 MiB/s``, the ETA as ``1m 35s``."""

    @staticmethod
    def status_printer(file: Any) -> Callable[[str], None]:
        """Each redraw erases to the end of the line (ESC[K) instead of tqdm's padding
        with spaces to the last line's length: a shorter line leaves nothing behind,
        and after the window narrows no padding wraps onto the next line."""

        def print_status(s: str) -> None:
            file.write(f"\r{s}\x1b[K")
            file.flush()

        return print_status

    @property
    def format_dict(self) -> MutableMapping[str, Any]:
        d = super().format_dict
        n, total, elapsed, rate = d["n"], d["total"] or 0, d["elapsed"], d["rate"]
        if rate is None and elapsed:
            rate = n / elapsed
        as_bytes = d["unit"] == "B"
        count: Callable[[float], str] = human_bytes if as_bytes else (lambda x: f"{x:.0f}")
        d["done"] = count(n)
        d["size"] = count(total) if total else "?"
        d["speed"] = "-" if not rate else (f"{human_bytes(rate)}/s" if as_bytes else f"{rate:.1f} {d['unit']}/s")
        d["eta"] = human_duration((total - n) / rate) if rate and total and n < total else ("0s" if total and n >= total else "?")
        return d


BAR_FORMAT = "{desc} {percentage:3.0f}%|{bar}| {done}/{size}  {speed}  ETA {eta}"


def drawing() -> bool:
    """Whether a command draws its progress: only on a terminal (stderr, where the
    bar goes, as git does), never with OBJSTORE_QUIET or --json."""
    return sys.stderr.isatty() and not is_quiet() and os.environ.get("TERM") != "dumb"


class Progress:
    """One bar for one command, fed by the library's progress callbacks.

    :attr:`on_bytes` is the ``progress(n)`` of logging and downloading (n more
    bytes done); :attr:`on_stage` the ``progress(stage, done, total)`` of
    transfers, fsck and gc: a new stage resets the same bar (one line, never a
    second bar). Both are None when nothing is drawn, so the library skips the calls.
    """

    def __init__(self, label: str, total: int, unit: str, units: dict[str, str]) -> None:
        self.label, self.total, self.unit, self.units = label, total, unit, units
        self._lock = threading.Lock()
        self._stage: str | None = None
        self.bar: _Bar | None = None
        self.drawn = drawing()
        if self.drawn and total > 0:
            self._open(label, total, unit)  # else at the first call: no empty "0 B/?" bar before a stage starts
        self.on_bytes: Callable[[int], None] | None = self._advance if self.drawn else None
        self.on_stage: Callable[[str, int, int], None] | None = self._set if self.drawn else None

    def _open(self, desc: str, total: int, unit: str) -> _Bar:
        self.bar = _Bar(total=total or None, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True,
                        mininterval=0.1, miniters=1, bar_format=BAR_FORMAT, ascii=False)
        return self.bar

    def _advance(self, n: int) -> None:
        with self._lock:
            (self.bar or self._open(self.label, self.total, self.unit)).update(n)

    def _set(self, stage: str, done: int, total: int) -> None:
        with self._lock:
            desc, unit = f"{self.label} {stage}", self.units.get(stage, "B")
            bar = self.bar
            if bar is None:
                bar = self._open(desc, total, unit)
            elif stage != self._stage:
                bar.unit = unit
                bar.set_description_str(desc, refresh=False)
                bar.reset(total=total or None)
            elif total and total != bar.total:
                bar.total = total
            self._stage = stage
            bar.update(done - bar.n)
            if total and done >= total:
                # A stage that ends within tqdm's redraw interval (a whole pack copied
                # at once) would otherwise be reset unseen: show its end, with its rate.
                bar.refresh()

    def note(self, line: str) -> None:
        """Print ``line`` above the bar (the library's notes come here)."""
        with self._lock:
            tqdm.write(line, file=sys.stderr)

    def close(self) -> None:
        with self._lock:
            if self.bar is not None:
                self.bar.close()  # leave=False: the line is cleared, the summary takes its place
                self.bar = None


@contextmanager
def progress(label: str, total: int = 0, unit: str = "B", units: dict[str, str] | None = None) -> Iterator[Progress]:
    """The bar of a long command. Within the block the library's notes print above
    it, and its summary notes are dropped: the command prints its own one summary
    line on stdout after the block."""
    p = Progress(label, total, unit, units or {})
    try:
        with route(p.note if p.drawn else None, summaries=False):
            yield p
    finally:
        p.close()


def paint(text: str, fg: str, *, err: bool = False) -> str:
    """``text`` in colour ``fg`` when the stream it goes to is a terminal and NO_COLOR
    is not set (https://no-color.org)."""
    on = (sys.stderr.isatty() if err else sys.stdout.isatty()) and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"
    return click.style(text, fg=fg) if on else text


def logged_line(art: Artifact) -> str:
    """log-model's one summary line. "new" is what the version added to the store,
    in stored bytes (after dedup and compression), as in 'objstore log'."""
    if not art.created:
        return f"unchanged {art.qualified_name}: it already holds this content (digest {art.digest[:12]}); no new version"
    return (f"logged {art.qualified_name}: {size(art.size)}, {size(art.new_bytes)} new stored, "
            f"digest {art.digest[:12]}" + (f", aliases {', '.join(art.aliases)}" if art.aliases else ""))


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
