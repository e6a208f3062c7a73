"""Packs written with O_DIRECT (:class:`objstore.storage.packs.DirectFile`) hold exactly
the bytes a plain file gets, whatever the record sizes against the staging size and
the alignment; where the file system refuses O_DIRECT a plain file is used;
a store's packs are the same bytes either way."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from objstore.storage import packs
from objstore.storage.ids import Kind, hash_bytes
from objstore.storage.packs import DirectFile, PackBuilder, open_pack_file

ROOT = Path(__file__).resolve().parent.parent


def _direct_ok(directory: Path) -> bool:
    try:
        DirectFile(directory / "probe").close()
    except OSError:
        return False
    finally:
        (directory / "probe").unlink(missing_ok=True)
    return True


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sizes=st.lists(st.integers(0, 20_000), max_size=30))
def test_a_direct_pack_holds_what_a_plain_one_holds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      sizes: list[int]) -> None:
    if not _direct_ok(tmp_path):
        pytest.skip("this file system refuses O_DIRECT")
    monkeypatch.setattr(packs, "DIRECT_STAGE", 8192)  # many staged writes from a few records
    memory = io.BytesIO()
    plain = PackBuilder(memory)
    path = tmp_path / f"p{len(sizes)}-{sum(sizes)}"
    f = DirectFile(path)
    direct = PackBuilder(f)  # type: ignore[arg-type]  # a DirectFile writes like a binary file
    for i, n in enumerate(sizes):
        payload = bytes([i % 256]) * n
        chunk_id = hash_bytes(Kind.CHUNK, payload + i.to_bytes(4, "little"))
        plain.add(chunk_id, 0, n, payload)
        direct.add(chunk_id, 0, n, memoryview(payload))
    assert direct.finish() == plain.finish()
    f.flush()
    os.fsync(f.fileno())
    f.close()
    assert path.read_bytes() == memory.getvalue()
    path.unlink()


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="no tmpfs at /dev/shm")
def test_tmpfs_gets_a_working_pack_file() -> None:
    """A plain file where tmpfs refuses O_DIRECT (before Linux 6.6), else a direct one."""
    path = Path("/dev/shm") / f"objstore-test-{os.getpid()}"
    try:
        f = open_pack_file(path)
        assert isinstance(f, DirectFile) == _direct_ok(Path("/dev/shm"))
        f.write(b"abc")
        f.flush()
        f.close()
        assert path.read_bytes() == b"abc"
    finally:
        path.unlink(missing_ok=True)


def test_a_store_has_the_same_packs_with_and_without_direct_writes(tmp_path: Path) -> None:
    """In subprocesses (the switch is read at import): several packs' worth of chunks
    added to two stores, OBJSTORE_DIRECT_PACKS on and off."""
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from objstore.storage import odb as o\n"
        "from objstore.storage.backend import LocalBackend\n"
        "from objstore.storage.ids import Kind, hash_bytes\n"
        "o.PACK_TARGET = 3 << 20\n"
        "db = o.ObjectDatabase(LocalBackend(Path(sys.argv[1])))\n"
        "for i in range(40):\n"
        "    payload = bytes([i]) * (150_000 + 4097 * i)\n"
        "    db.add_encoded(hash_bytes(Kind.CHUNK, payload), 0, len(payload), payload)\n"
        "db.flush()\n"
    )
    stores = {}
    for flag in ("1", "0"):
        store = tmp_path / f"s{flag}"
        env = {**os.environ, "OBJSTORE_DIRECT_PACKS": flag}
        subprocess.run([sys.executable, "-c", script, str(store)], check=True, env=env, cwd=ROOT, timeout=300)
        stores[flag] = {p.name: p.read_bytes() for p in sorted((store / "packs").rglob("*")) if p.is_file()}
    assert len([n for n in stores["1"] if n.endswith(".pack")]) >= 2
    assert stores["1"] == stores["0"]


def test_a_failed_write_behind_is_raised_by_the_next_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Full buffers are written by the pack-writing thread while the caller goes on: an
    # error there (a full disk, here a descriptor that no longer writes) must reach
    # the caller, at its next write or flush, never be lost.
    if not _direct_ok(tmp_path):
        pytest.skip("this file system refuses O_DIRECT")
    monkeypatch.setattr(packs, "DIRECT_STAGE", 8192)
    f = DirectFile(tmp_path / "p")
    (tmp_path / "ro").write_bytes(b"")
    ro = os.open(tmp_path / "ro", os.O_RDONLY)
    os.dup2(ro, f.fileno())  # the file's descriptor now refuses writes (EBADF)
    os.close(ro)
    f.write(b"x" * 8192)  # a full buffer: handed to the writing thread
    with pytest.raises(OSError):
        f.write(b"y" * 8192)  # the next full buffer waits for that write, and raises its error
        f.flush()
    f.close()  # a discarded pack: closing still works
