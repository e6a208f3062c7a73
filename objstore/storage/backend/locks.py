"""Lock files for the local backend, with stale-lock recovery.

A lock is a file holding ``pid host time``. It is born whole: the owner line is
written to a private file first, which is then hard-linked to the lock's name
(``link`` fails if the name exists), so a writer killed at any instant leaves
either no lock or one that names its owner, never an empty one that only age
could break.

A writer that died holding a lock must not block the store forever: if the
owner is on this host and no longer running, the lock is broken at once; if we
cannot tell (another host), it is broken once older than ``LOCK_STALE_SECONDS``.
Breakers take a kernel lock (``flock``, released by the kernel when its holder
dies) on a guard file beside the lock and re-read the lock under it: while the
guard is held nothing else can remove the stale lock (its owner is dead, other
breakers wait) and nothing can create a new one (the name is taken), so the
file removed is exactly the one judged stale, never a live owner's.

The owner's private file (``<lock>.<pid>-<random>``) and the breakers' guard
(``<lock>.break``) live beside the lock, so a lock must be placed in a directory
that holds nothing but locks (the local backend keeps them under ``locks/``,
where no key can go): nothing else may be named like them, and a breaker only
ever removes the lock file itself.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import socket
import stat
import sys
import time
from pathlib import Path
from types import TracebackType

from objstore import faults
from objstore.constants import LOCK_STALE_SECONDS, LOCK_WAIT_SECONDS
from objstore.errors import LockTimeout

_HOST = socket.gethostname()
# An owner line is `pid host time`; a host name is at most 255 bytes.
_MAX_OWNER_LINE = 4096


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
    """An exclusive lock on ``path``. Use as a context manager.

    ``label`` says what the lock protects, for messages (default: the lock's file name).
    """

    def __init__(self, path: Path, *, wait_seconds: float = LOCK_WAIT_SECONDS, label: str | None = None) -> None:
        self.path = Path(path)
        self.label = label or self.path.name
        self.wait_seconds = wait_seconds
        self._held = False
        self._token = b""

    def acquire(self) -> None:
        deadline = time.monotonic() + self.wait_seconds
        delay = 0.001
        token = f"{os.getpid()} {_HOST} {time.time():.3f}\n".encode()
        while True:
            if self._create(token):
                self._token = token
                self._held = True
                return
            if self._break_if_stale():
                continue
            if time.monotonic() > deadline:
                raise LockTimeout(
                    f"{self.path} (the lock on {self.label}) is held by {self._describe_owner()}; "
                    "wait for it to finish, or remove the lock file if that process is gone"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)

    def _create(self, token: bytes) -> bool:
        """Create the lock holding ``token`` in one step; False if it exists."""
        mine = self.path.with_name(f"{self.path.name}.{os.getpid()}-{secrets.token_hex(4)}")
        fd = os.open(mine, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        try:
            os.write(fd, token)
        finally:
            os.close(fd)
        try:
            faults.point("lock")
            os.link(mine, self.path)
            return True
        except FileExistsError:
            return False
        finally:
            try:
                os.unlink(mine)
            except FileNotFoundError:
                pass

    def release(self) -> None:
        if self._held:
            self._held = False
            try:
                # Remove only our own lock: had it been broken as stale (a very
                # slow owner on another host), the file may now be someone else's.
                if self._read_raw() == self._token:
                    os.unlink(self.path)
            except FileNotFoundError:
                pass

    def _describe_owner(self) -> str:
        raw = self._read_raw()
        if raw is None:
            return "another process"
        pid, host, since = self._parse(raw)
        if pid <= 0:
            return "an unknown process"
        return f"process {pid} on {host} (since {time.strftime('%H:%M:%S', time.localtime(since))})"

    def _break_if_stale(self) -> bool:
        judged = self._read_raw()
        if judged is None:
            return True  # released between our attempt and this read: just retry
        owner = self._parse(judged)
        if not self._is_stale(owner):
            return False
        guard = self.path.with_name(f"{self.path.name}.break")
        try:
            gfd = os.open(guard, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError:
            gfd = -1  # cannot make a guard here; break unguarded rather than block forever
        try:
            if gfd >= 0:
                try:
                    fcntl.flock(gfd, fcntl.LOCK_EX)
                except OSError:
                    pass  # a file system without flock: unguarded, as above
            # Re-read under the guard: this read, not the first, decides.
            if self._read_raw() != judged:
                return True
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                return True
        finally:
            if gfd >= 0:
                os.close(gfd)  # releases the flock
        pid, host, _ = owner
        print(
            f"objstore: broke a stale lock {self.label} left by process {pid} on {host or 'an unknown host'}",
            file=sys.stderr,
        )
        return True

    def _read_raw(self) -> bytes | None:
        """The lock file's owner line; None if there is none. A lock is a small
        regular file: anything else standing at its name (a FIFO, a device, a link
        to one, a huge file) reads as an unknown owner, never as a blocked or
        unbounded read."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
        except FileNotFoundError:
            return None
        except OSError:
            return b""
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return b""
            return os.read(fd, _MAX_OWNER_LINE)
        finally:
            os.close(fd)

    def _parse(self, raw: bytes) -> tuple[int, str, float]:
        parts = raw.decode("utf-8", "replace").split()
        try:
            if len(parts) == 3:
                return int(parts[0]), parts[1], float(parts[2])
        except ValueError:
            pass
        # Garbage, or an empty lock left by an older objstore: judge it by its age alone.
        try:
            return (-1, "", self.path.stat().st_mtime)
        except FileNotFoundError:
            return (-1, "", time.time())

    @staticmethod
    def _is_stale(owner: tuple[int, str, float]) -> bool:
        pid, host, since = owner
        alive = _owner_alive(pid, host) if pid > 0 else None
        return alive is False or (alive is None and time.time() - since > LOCK_STALE_SECONDS)

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
