"""An older objstore release's package, extracted from this checkout's history, for
tests that run it in a subprocess against a store today's code made (or the reverse)."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def extract_release(commit: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory holding ``objstore/`` as of ``commit`` (skips when the history is absent,
    as in a shallow clone)."""
    done = subprocess.run(["git", "-C", str(REPO), "archive", commit, "objstore"], capture_output=True, timeout=120,
                          check=False)
    if done.returncode != 0:
        pytest.skip(f"the older release is not in this checkout's history ({done.stderr.decode().strip()})")
    root = tmp_path_factory.mktemp("old-release")
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
        tar.extractall(root, filter="data")
    return root
