"""Lock files: a writer that died holding a lock never blocks the store for good.

Real processes take :class:`objstore.storage.backend.locks.FileLock` and are SIGKILLed while
holding it; the lock records its owner's pid and host, is broken at once when
that owner is gone (with a message naming it), waited for while the owner
lives, and a timeout names the owner. Breaking is safe when many waiters race
to break the same stale lock: no two processes ever hold it together.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from objstore.constants import LOCK_STALE_SECONDS
from objstore.errors import LockTimeout
from objstore.storage.backend import open_backend
from objstore.storage.backend.locks import FileLock

HOST = socket.gethostname()

HOLDER = textwrap.dedent("""
    import sys, time, pathlib
    from objstore.storage.backend.locks import FileLock
    lock = FileLock(pathlib.Path(sys.argv[1]))
    lock.acquire()
    print("held", flush=True)
    go = pathlib.Path(sys.argv[2])
    while not go.exists():
        time.sleep(0.01)
    lock.release()
    print("released", flush=True)
""")


def _holder(lock: Path, go: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(lock), str(go)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_lock_records_owner_pid_and_host(tmp_path: Path) -> None:
    lock = tmp_path / "ref.lock"
    proc = _holder(lock, tmp_path / "go")
    try:
        pid, host, since = lock.read_text().split()
        assert int(pid) == proc.pid and host == HOST and abs(float(since) - time.time()) < 60
    finally:
        (tmp_path / "go").touch()
        proc.wait(timeout=30)
    assert not lock.exists()


def test_lock_of_killed_owner_is_broken_with_a_message(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    lock = tmp_path / "ref.lock"
    proc = _holder(lock, tmp_path / "never")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert lock.exists()  # the dead owner could not clean up
    taker = FileLock(lock, wait_seconds=5)
    taker.acquire()
    try:
        assert lock.read_text().split()[0] == str(os.getpid())
    finally:
        taker.release()
    err = capfd.readouterr().err
    assert f"broke a stale lock ref.lock left by process {proc.pid} on {HOST}" in err


def test_live_owner_is_waited_for_and_named_on_timeout(tmp_path: Path) -> None:
    lock, go = tmp_path / "ref.lock", tmp_path / "go"
    proc = _holder(lock, go)
    try:
        with pytest.raises(LockTimeout) as info:
            FileLock(lock, wait_seconds=0.3).acquire()
        assert f"process {proc.pid} on {HOST}" in str(info.value)
        got: list[str] = []

        def wait_for_it() -> None:
            with FileLock(lock, wait_seconds=60):
                got.append(lock.read_text().split()[0])

        waiter = threading.Thread(target=wait_for_it)
        waiter.start()
        waiter.join(0.5)
        assert waiter.is_alive() and not got, "took a lock its live owner still holds"
        go.touch()
        assert proc.stdout is not None and proc.stdout.readline().strip() == "released"
        waiter.join(30)
        assert got == [str(os.getpid())]
    finally:
        go.touch()
        proc.wait(timeout=30)


def test_lock_from_another_host_is_broken_only_when_old(tmp_path: Path) -> None:
    lock = tmp_path / "ref.lock"
    lock.write_text(f"4242 some-other-host {time.time():.3f}\n")
    with pytest.raises(LockTimeout) as info:
        FileLock(lock, wait_seconds=0.2).acquire()
    assert "process 4242 on some-other-host" in str(info.value)
    lock.write_text(f"4242 some-other-host {time.time() - LOCK_STALE_SECONDS - 5:.3f}\n")
    with FileLock(lock, wait_seconds=5):
        assert lock.read_text().split()[1] == HOST


def test_unreadable_lock_is_judged_by_age(tmp_path: Path) -> None:
    lock = tmp_path / "ref.lock"
    lock.write_bytes(b"")  # what an older objstore left when killed mid-creation
    with pytest.raises(LockTimeout, match="unknown process"):
        FileLock(lock, wait_seconds=0.2).acquire()
    old = time.time() - LOCK_STALE_SECONDS - 5
    os.utime(lock, (old, old))
    with FileLock(lock, wait_seconds=5):
        pass


def test_killed_at_lock_creation_leaves_no_empty_lock(tmp_path: Path) -> None:
    """OBJSTORE_FAULT=lock:1 kills the process as the lock is created: whatever it
    left, the next taker gets the lock at once (no 10-minute wait on an empty file)."""
    lock = tmp_path / "ref.lock"
    code = "import sys, pathlib; from objstore.storage.backend.locks import FileLock; FileLock(pathlib.Path(sys.argv[1])).acquire()"
    proc = subprocess.run([sys.executable, "-c", code, str(lock)], env={**os.environ, "OBJSTORE_FAULT": "lock:1"})
    assert proc.returncode == -signal.SIGKILL
    assert not lock.exists() or lock.read_text().strip()
    with FileLock(lock, wait_seconds=5):
        pass


RACER = textwrap.dedent("""
    import os, sys, pathlib
    from objstore.storage.backend.locks import FileLock
    lock, inside, counter = (pathlib.Path(p) for p in sys.argv[1:4])
    for _ in range(int(sys.argv[4])):
        with FileLock(lock, wait_seconds=60):
            try:
                fd = os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                other = int(inside.read_text() or 0)
                try:
                    os.kill(other, 0)
                    alive = True
                except ProcessLookupError:
                    alive = False
                if alive and other != os.getpid():
                    print("OVERLAP", other, flush=True)
                os.unlink(inside)
                fd = os.open(inside, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            os.write(fd, str(os.getpid()).encode()); os.close(fd)
            n = int(counter.read_text())
            tmp = counter.with_suffix(f".{os.getpid()}")
            tmp.write_text(str(n + 1)); os.replace(tmp, counter)
            os.unlink(inside)
""")


def test_racing_breakers_never_share_the_lock(tmp_path: Path) -> None:
    """Eight processes start on a stale lock and take turns; some are SIGKILLed
    while holding it. No one ever enters while a live holder is inside, and every
    completed turn is counted."""
    lock, inside, counter = tmp_path / "ref.lock", tmp_path / "inside", tmp_path / "counter"
    counter.write_text("0")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock.write_text(f"{dead.pid} {HOST} {time.time():.3f}\n")  # held by a process that is gone
    turns = 30
    procs = [subprocess.Popen([sys.executable, "-c", RACER, str(lock), str(inside), str(counter), str(turns)],
                              stdout=subprocess.PIPE, text=True) for _ in range(8)]
    time.sleep(1.0)
    victims = procs[:2]
    for proc in victims:  # kill two mid-run (maybe holding the lock)
        proc.send_signal(signal.SIGKILL)
    outputs = [proc.communicate(timeout=120)[0] for proc in procs]
    assert all(p.returncode == 0 for p in procs[2:]), [p.returncode for p in procs]
    assert not any("OVERLAP" in out for out in outputs), outputs
    total = int(counter.read_text())
    assert 6 * turns <= total <= 8 * turns


def test_backend_cas_proceeds_after_its_lock_holder_was_killed(tmp_path: Path) -> None:
    backend = open_backend(tmp_path / "store")
    key = "refs/e/p/m/aliases/best"
    backend.compare_and_swap(key, None, b"a\n")
    proc = _holder(backend.lock_path(key), tmp_path / "never")
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    backend.compare_and_swap(key, b"a\n", b"b\n")
    assert backend.get(key) == b"b\n"
    assert [i.key for i in backend.iter_prefix("refs/")] == [key]  # lock files are never listed as refs


def test_a_fifo_at_the_lock_name_never_blocks(tmp_path: Path) -> None:
    """A FIFO standing where a lock file goes (a hostile or broken store) reads as an
    unknown owner judged by its age, never as a read that waits for a writer."""
    lock = tmp_path / "ref.lock"
    os.mkfifo(lock)
    started = time.monotonic()
    with pytest.raises(LockTimeout, match="unknown process"):
        FileLock(lock, wait_seconds=0.2).acquire()
    assert time.monotonic() - started < 10
    old = time.time() - LOCK_STALE_SECONDS - 5
    os.utime(lock, (old, old))
    with FileLock(lock, wait_seconds=5):
        pass
