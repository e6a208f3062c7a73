"""The one place the library talks to a person: short lines on stderr.

Set ``OBJSTORE_QUIET=1`` to silence them (the CLI's ``--json`` does).
"""

from __future__ import annotations

import os
import sys


def say(message: str) -> None:
    if os.environ.get("OBJSTORE_QUIET", "") not in ("", "0"):
        return
    print(f"objstore: {message}", file=sys.stderr, flush=True)


def human_bytes(n: float) -> str:
    """1536 -> '1.5 KiB'."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"
