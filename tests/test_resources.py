"""Resource exhaustion: a write that fails leaves the store as it was, and says why.

- a file size limit (RLIMIT_FSIZE, in a subprocess that ignores SIGXFSZ),
- a read-only store (a read-only bind mount: tests run as root, where file modes
  do not stop writes),
- a full disk (a small tmpfs),
- and ENOSPC / EIO injected at every write point of a log (``objstore.faults``).

After each failure: the error is an ObjstoreError whose message says what
happened, the store is fsck-clean, no version became visible unless it is whole,
no temporary file is left behind, and once the cause is gone the same log
succeeds and creates exactly one version.
"""

from __future__ import annotations

import os
import random
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import objstore
from objstore import faults
from objstore.errors import BackendError, ObjstoreError
from objstore.maintenance.fsck import fsck
from objstore.model.store import Store

LOG = textwrap.dedent("""
    import sys, objstore
    from objstore.errors import ObjstoreError
    try:
        with objstore.init(project="p", entity="e", store=sys.argv[1]) as run:
            art = run.log_model(sys.argv[2], name="m")
        print("logged", art.version)
    except ObjstoreError as exc:
        print("error", type(exc).__name__, exc)
        sys.exit(1)
""")


def _versions(store: Path) -> list[str]:
    d = store / "refs/e/p/m/versions"
    return sorted(p.name for p in d.iterdir()) if d.exists() else []


def _assert_sound(store: Path) -> None:
    report = fsck(Store.open_existing(str(store)))
    assert report.ok, [p.message for p in report.problems]
    tmp = store / "tmp"
    assert not tmp.exists() or not any(tmp.iterdir()), f"left behind: {list(tmp.iterdir())}"


def _model(path: Path, size: int, seed: int = 0) -> Path:
    path.write_bytes(random.Random(seed).randbytes(size))
    return path


def _snapshot(store: Path) -> dict[str, bytes]:
    return {p.relative_to(store).as_posix(): p.read_bytes() for p in store.rglob("*") if p.is_file() and not p.name.endswith(".lock")}


def test_file_size_limit(tmp_path: Path) -> None:
    store = tmp_path / "store"
    Store.open(store).close()
    model = _model(tmp_path / "model.bin", 3_000_000)
    before = _snapshot(store)

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # get EFBIG instead of being killed
        resource.setrlimit(resource.RLIMIT_FSIZE, (1_000_000, 1_000_000))

    proc = subprocess.run([sys.executable, "-c", LOG, str(store), str(model)], capture_output=True, text=True, preexec_fn=limit)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.startswith("error BackendError") and "file size limit" in proc.stdout, proc.stdout
    assert _versions(store) == []
    _assert_sound(store)
    # Left behind, all harmless: the run, logs, unreferenced objects (gc's), and cache
    # entries (packs are written O_DIRECT a 4 MiB stage at a time, so this write error
    # surfaces when the last pack is sealed, after the file's cache entries were
    # made; every cache hit is checked against the stored chunks before it is used).
    assert {
        k: v for k, v in _snapshot(store).items()
        if not k.startswith("refs/e/p/runs") and not k.startswith(("logs/", "objects/", "cache/"))
    } == before
    proc = subprocess.run([sys.executable, "-c", LOG, str(store), str(model)], capture_output=True, text=True)
    assert proc.stdout.startswith("logged v0"), proc.stdout + proc.stderr
    _assert_sound(store)  # the cache entry of the failed log was not trusted: every chunk is stored


def _mount(args: list[str]) -> None:
    proc = subprocess.run(["mount", *args], capture_output=True, text=True)
    if proc.returncode:
        pytest.skip(f"cannot mount here ({proc.stderr.strip() or proc.returncode}); needs root with mount permission")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True)


@pytest.fixture
def readonly_store(tmp_path: Path) -> Path:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a read-only mount needs root and mount(8); file modes do not stop root")
    store = tmp_path / "store"
    with objstore.init(project="p", entity="e", store=store) as run:
        run.log_model(_model(tmp_path / "first.bin", 200_000, 1), name="m")
    _mount(["--bind", str(store), str(store)])
    try:
        _mount(["-o", "remount,bind,ro", str(store)])
    except BaseException:
        _umount(store)
        raise
    yield store
    _umount(store)


def test_read_only_store(readonly_store: Path, tmp_path: Path) -> None:
    before = _snapshot(readonly_store)
    model = _model(tmp_path / "model.bin", 300_000)
    proc = subprocess.run([sys.executable, "-c", LOG, str(readonly_store), str(model)], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    assert "read-only" in proc.stdout, proc.stdout
    assert _snapshot(readonly_store) == before
    # Reading still works.
    art = objstore.Api(store=str(readonly_store), entity="e", project="p").artifact("m:v0")
    art.download(tmp_path / "out")


@pytest.fixture
def small_disk(tmp_path: Path) -> Path:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a tmpfs mount needs root and mount(8)")
    disk = tmp_path / "disk"
    disk.mkdir()
    _mount(["-t", "tmpfs", "-o", "size=8m", "tmpfs", str(disk)])
    yield disk
    _umount(disk)


def test_full_disk(small_disk: Path, tmp_path: Path) -> None:
    store = small_disk / "store"
    with objstore.init(project="p", entity="e", store=store) as run:
        run.log_model(_model(tmp_path / "small.bin", 300_000, 1), name="m")
    before = _versions(store)
    big = _model(tmp_path / "big.bin", 12_000_000, 2)  # incompressible, larger than the disk
    proc = subprocess.run([sys.executable, "-c", LOG, str(store), str(big)], capture_output=True, text=True)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    assert proc.stdout.startswith("error BackendError") and "disk is full" in proc.stdout, proc.stdout
    assert _versions(store) == before
    _assert_sound(store)
    # The space is free again (no half-written pack kept), so a model that fits logs fine.
    medium = _model(tmp_path / "medium.bin", 3_000_000, 3)
    proc = subprocess.run([sys.executable, "-c", LOG, str(store), str(medium)], capture_output=True, text=True)
    assert proc.stdout.startswith("logged v1"), proc.stdout + proc.stderr
    _assert_sound(store)


@pytest.mark.parametrize("action", ["enospc", "eio"])
def test_error_at_every_write_point(tmp_path: Path, action: str) -> None:
    """Fail the N-th write (or rename) of a log with ENOSPC / EIO, for every N the
    log reaches: each failure is a BackendError saying why, the store stays sound,
    and a version that became visible is whole; the retry then succeeds with exactly
    one version holding the content."""
    store = tmp_path / "store"
    with objstore.init(project="p", entity="e", store=store) as run:
        run.log_model(_model(tmp_path / "base.bin", 200_000, 1), name="m")
    n = 0
    while True:
        n += 1
        kind = "write" if n % 2 else "rename"
        model = _model(tmp_path / f"model-{n}.bin", 150_000, 100 + n)
        faults.configure(f"{kind}:{(n + 1) // 2}:{action}")
        try:
            with objstore.init(project="p", entity="e", store=store) as run:
                run.log_model(model, name="m")
            failed = None
        except ObjstoreError as exc:
            failed = exc
        finally:
            counted = faults.counts()
            faults.configure("")
        if failed is not None:
            assert isinstance(failed, BackendError), f"{kind} #{(n + 1) // 2}: {type(failed).__name__}: {failed}"
            reason = "disk is full" if action == "enospc" else "Input/output error"
            assert reason in str(failed), str(failed)
        _assert_sound(store)
        with objstore.init(project="p", entity="e", store=store) as run:
            art = run.log_model(model, name="m")
        holding = [
            v for v in objstore.Api(store=str(store), entity="e", project="p").artifact_versions("model", "m") if v.digest == art.digest
        ]
        assert len(holding) == 1, f"{kind} #{(n + 1) // 2}: {len(holding)} versions hold the content"
        if failed is None and counted.get(kind, 0) < (n + 1) // 2:
            break
    assert n > 10


def test_a_pack_that_fails_to_seal_in_the_background_fails_the_log(tmp_path: Path) -> None:
    """Full packs are sealed on a background thread; its failure must reach the
    writer (the log fails, no version), never be lost between two packs."""
    from objstore.constants import PACK_TARGET

    model = _model(tmp_path / "big.bin", PACK_TARGET + 8 * 1024 * 1024, seed=3)  # incompressible: two packs
    store = tmp_path / "store"
    Store.open(store)
    faults.configure("rename:1:eio")  # the first link into place: the full pack, on the sealer thread
    try:
        with pytest.raises(ObjstoreError, match="Input/output error|EIO|I/O"):
            with objstore.init(project="p", entity="e", store=store) as run:
                run.log_model(str(model), name="m")
    finally:
        faults.configure("")
    assert _versions(store) == []
    _assert_sound(store)


def test_flush_reports_a_background_seal_that_failed_before_it_was_called(tmp_path: Path) -> None:
    """The seal of a full pack fails while nobody is waiting for it: the next flush
    (what every writer calls before naming chunks) must raise, not return."""
    import time

    from objstore.constants import PACK_TARGET
    from objstore.storage.ids import Kind, hash_bytes

    store = Store.open(tmp_path / "store")
    rng = random.Random(5)
    faults.configure("rename:1:eio")
    try:
        added = 0
        while added < PACK_TARGET:  # the add that crosses the target hands the pack to the sealer
            payload = rng.randbytes(1 << 20)
            store.odb.add_encoded(hash_bytes(Kind.CHUNK, payload), 0, len(payload), payload)
            added += len(payload)
        deadline = time.monotonic() + 10
        while faults.counts().get("rename", 0) < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # let the failed seal finish unwinding
        with pytest.raises(ObjstoreError):
            store.odb.flush()
    finally:
        faults.configure("")
    assert not list((tmp_path / "store" / "packs").glob("*.pack"))


FAILED_WRITE_THEN_FLUSH = textwrap.dedent("""
    import random, resource, signal, sys
    from objstore.model.store import Store
    from objstore.storage.ids import Kind, hash_bytes
    store = Store.open(sys.argv[1])
    rng = random.Random(7)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
    resource.setrlimit(resource.RLIMIT_FSIZE, (8_000_000, resource.RLIM_INFINITY))
    try:
        for _ in range(64):  # 1 MiB each: the pack's temp file passes the 8 MB limit
            payload = rng.randbytes(1 << 20)
            store.odb.add_encoded(hash_bytes(Kind.CHUNK, payload), 0, len(payload), payload)
        store.odb.flush()
        print("no error")
    except Exception as exc:
        print("write failed", type(exc).__name__)
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))  # room again
    try:
        store.odb.flush()  # what a run's finish or the store's close calls after a failed log
        print("flush stored")
    except Exception as exc:
        print("flush refused", type(exc).__name__)
""")


def test_a_pack_whose_write_failed_is_never_stored_by_a_later_flush(tmp_path: Path) -> None:
    """A pack's index names every record staged into it; once one of its writes
    failed (a full disk, a file size limit), a later flush must not store it, even
    once there is room again: its index would name records whose bytes never
    reached the file."""
    store = tmp_path / "store"
    Store.open(store).close()
    proc = subprocess.run([sys.executable, "-c", FAILED_WRITE_THEN_FLUSH, str(store)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "write failed" in proc.stdout, proc.stdout
    assert "flush refused" in proc.stdout, proc.stdout
    assert not list((store / "packs").glob("*.pack")), "a pack with unwritten records was stored"
    _assert_sound(store)
