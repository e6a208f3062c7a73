"""Fault injection for the crash and resource tests, driven by one environment variable.

``OBJSTORE_FAULT`` names the fault points to trip, comma-separated, each as
``<kind>:<n>[:<action>]``: at the ``n``-th time (1-based) this process reaches a
point of that kind, do ``action``. Kinds, as the writers call :func:`point`:

- ``write``  a temporary file holds the new bytes (not yet in place)
- ``rename`` just before a temporary file is renamed or linked into place
- ``put``    the start of a backend put (put, put-if-absent, CAS, pack upload)
- ``lock``   a lock file was just created (its owner line not yet written)
- ``delete`` just before a key is deleted (gc)
- ``claim``  a version's number was just claimed (its ``versions/vN`` ref exists;
  its digest ref, ``latest`` and the run's output record not yet)
- ``any``    counts every point of every kind

Actions: ``kill`` (the default: SIGKILL this process, as a power cut or OOM
kill would, with no cleanup, no ``finally``, no atexit), ``exit`` (``os._exit(137)``),
``enospc`` / ``eio`` / ``efbig`` (raise that ``OSError`` where the point is, as a full
disk, a failing device or a file size limit would).

``OBJSTORE_FAULT="write:17"`` kills the process at its 17th temp-file write;
``OBJSTORE_FAULT="any:5,rename:2:enospc"`` trips whichever comes first.

When the variable is unset, :func:`point` is one global lookup and a return: the
variable is read once, at import (or by :func:`configure` in a forked child).
"""

from __future__ import annotations

import errno
import os
import signal

ENV = "OBJSTORE_FAULT"
KINDS = ("write", "rename", "put", "lock", "delete", "claim", "any")
ACTIONS = ("kill", "exit", "enospc", "eio", "efbig")

_ERRNO = {"enospc": errno.ENOSPC, "eio": errno.EIO, "efbig": errno.EFBIG}

# (kind, n, action) triples still armed; None when fault injection is off.
_armed: list[tuple[str, int, str]] | None = None
_counts: dict[str, int] = {}


def parse(spec: str) -> list[tuple[str, int, str]]:
    """``"write:3,any:9:eio"`` -> ``[("write", 3, "kill"), ("any", 9, "eio")]``."""
    out = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        parts = item.split(":")
        if len(parts) not in (2, 3) or parts[0] not in KINDS or not parts[1].isdigit() or int(parts[1]) < 1:
            raise ValueError(f"{ENV}: bad fault {item!r}; use <kind>:<n>[:<action>] with kind in {', '.join(KINDS)}")
        action = parts[2] if len(parts) == 3 else "kill"
        if action not in ACTIONS:
            raise ValueError(f"{ENV}: bad action {action!r}; use one of {', '.join(ACTIONS)}")
        out.append((parts[0], int(parts[1]), action))
    return out


def configure(spec: str | None = None) -> None:
    """Arm the faults in ``spec`` (default: re-read ``$OBJSTORE_FAULT``) and reset the counters."""
    global _armed
    text = os.environ.get(ENV, "") if spec is None else spec
    _armed = parse(text) or None
    _counts.clear()


def counts() -> dict[str, int]:
    """How many points of each kind this process has passed since :func:`configure`."""
    return dict(_counts)


def point(kind: str) -> None:
    """A place where a crash or an I/O error matters. Free when no fault is armed."""
    if _armed is None:
        return
    _trip(kind)


def _trip(kind: str) -> None:
    _counts[kind] = _counts.get(kind, 0) + 1
    _counts["any"] = _counts.get("any", 0) + 1
    for want, n, action in list(_armed or ()):
        if _counts.get(want, 0) != n or (want != kind and want != "any"):
            continue
        if action == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        if action == "exit":
            os._exit(137)
        code = _ERRNO[action]
        raise OSError(code, f"{os.strerror(code)} (injected by {ENV} at {kind} #{_counts[kind]})")


configure()
