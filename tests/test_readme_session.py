"""The README's command-line session is a real one: docs/session.sh run afresh prints
what README.md shows, digests, run ids, times and sizes aside (issue 15, "must show").
On a failure, `python docs/session.py` rewrites the README's blocks from a fresh run."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_spec = importlib.util.spec_from_file_location("session", ROOT / "docs" / "session.py")
assert _spec is not None and _spec.loader is not None
session = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(session)


def test_the_readme_session_matches_a_fresh_run() -> None:
    parts = session.transcript(Path(sys.executable).parent)
    shown = session.readme_parts(session.README.read_text())
    assert set(parts) == {"start", "look", "name", "share", "tidy"} and set(shown) == set(parts)
    for name, text in parts.items():
        assert session.normalise(shown[name]) == session.normalise(text), (
            f"README.md's session part {name!r} differs from a fresh run; run 'python docs/session.py'")
