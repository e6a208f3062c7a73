"""Lock files for the local backend, with stale-lock recovery.

A lock is a file created with O_EXCL holding ``pid host time``. A writer that
died holding one must not block the store forever: if the owner is on this host
and no longer running, the lock is broken at once; if we cannot tell (another
host), it is broken once older than ``LOCK_STALE_SECONDS``. Breaking is itself a
rename to a unique name, so two waiters cannot both break and both take it.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
import time
from pathlib import Path
from types import TracebackType

from .constants import LOCK_STALE_SECONDS, LOCK_WAIT_SECONDS
from . import faults
from .errors import LockTimeout

_HOST = socket.gethostname()


def _owner_alive(pid: int, host: str) -> bool | None:
    """True/False when the owner is on this host; None when we cannot tell."""
    if host != _HOST:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FileLock:
    """An exclusive lock on ``path``. Use as a context manager."""

    def __init__(self, path: Path, *, wait_seconds: float = LOCK_WAIT_SECONDS) -> None:
        self.path = Path(path)
        self.wait_seconds = wait_seconds
        self._held = False

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait_seconds
        delay = 0.001
        token = f"{os.getpid()} {_HOST} {time.time():.3f}\n".encode()
        while True:
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self._break_if_stale():
                    continue
                if time.monotonic() > deadline:
                    raise LockTimeout(
                        f"{self.path} is held by {self._describe_owner()}; "
                        "wait for it to finish, or remove the lock file if that process is gone"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.05)
                continue
            try:
                faults.point("lock")
                os.write(fd, token)
            finally:
                os.close(fd)
            self._held = True
            return

    def release(self) -> None:
        if self._held:
            self._held = False
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass

    def _read_owner(self) -> tuple[int, str, float] | None:
        try:
            text = self.path.read_text()
        except (FileNotFoundError, UnicodeDecodeError):
            return None
        parts = text.split()
        if len(parts) != 3:
            # Being written right now, or garbage: judge it by its age alone.
            try:
                return (-1, "", self.path.stat().st_mtime)
            except FileNotFoundError:
                return None
        try:
            return int(parts[0]), parts[1], float(parts[2])
        except ValueError:
            return (-1, "", 0.0)

    def _describe_owner(self) -> str:
        owner = self._read_owner()
        if owner is None:
            return "another process"
        pid, host, _ = owner
        return f"process {pid} on {host}" if pid > 0 else "an unknown process"

    def _break_if_stale(self) -> bool:
        owner = self._read_owner()
        if owner is None:
            return True  # vanished between our open and read: just retry
        pid, host, since = owner
        alive = _owner_alive(pid, host) if pid > 0 else None
        stale = alive is False or (alive is None and time.time() - since > LOCK_STALE_SECONDS)
        if not stale:
            return False
        # Rename first so that only one waiter breaks this particular lock file.
        graveyard = self.path.with_name(f"{self.path.name}.stale-{secrets.token_hex(4)}")
        try:
            os.rename(self.path, graveyard)
        except FileNotFoundError:
            return True
        try:
            os.unlink(graveyard)
        except FileNotFoundError:
            pass
        print(
            f"objstore: broke a stale lock {self.path.name} left by process {pid} on {host or 'an unknown host'}",
            file=sys.stderr,
        )
        return True

    def __enter__(self) -> "FileLock":
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
