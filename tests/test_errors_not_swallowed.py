"""Errors that must reach the caller (issue 11):

- a directory fsync that fails for any reason but "this filesystem cannot"
  (ENOTSUP/EOPNOTSUPP/ENOENT/EINVAL, as restic ignores) is a BackendError,
  since the write it should make durable may be lost;
- ``ObjectDatabase.abort`` drains failed seals but lets an interrupt through.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from objstore.errors import BackendError
from objstore.storage.backend import _local
from objstore.storage.odb import ObjectDatabase


def _fail_fsync(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    def fsync(fd: int) -> None:
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(_local.os, "fsync", fsync)


@pytest.mark.parametrize("code", [errno.EINVAL, errno.ENOTSUP, errno.ENOENT])
def test_fsync_dir_ignores_only_cannot(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, code: int) -> None:
    _fail_fsync(monkeypatch, code)
    _local._fsync_dir(tmp_path)


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC])
def test_fsync_dir_reports_a_real_failure(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, code: int) -> None:
    _fail_fsync(monkeypatch, code)
    with pytest.raises(BackendError):
        _local._fsync_dir(tmp_path)


def test_abort_drains_failed_seals_but_not_an_interrupt(monkeypatch: pytest.MonkeyPatch) -> None:
    odb = ObjectDatabase.__new__(ObjectDatabase)
    import threading
    odb._lock = threading.Lock()  # type: ignore[attr-defined]
    odb._append_lock = threading.Lock()  # type: ignore[attr-defined]
    odb._writer = None  # type: ignore[attr-defined]
    outcomes: list[BaseException | None] = [RuntimeError("seal failed"), None]

    def wait_oldest() -> bool:
        if not outcomes:
            return False
        exc = outcomes.pop(0)
        if exc is not None:
            raise exc
        return True
    monkeypatch.setattr(odb, "_wait_oldest", wait_oldest)
    odb.abort()  # the failed seal is drained, the good one waited for
    assert outcomes == []
    outcomes.extend([KeyboardInterrupt(), None])
    with pytest.raises(KeyboardInterrupt):
        odb.abort()
