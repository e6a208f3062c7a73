"""Remotes on the real SeaweedFS S3 server: round trip, incremental push, resume
after kill -9, two stores racing on one bucket, and bad remotes."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import (
    TEST_ACCESS_KEY,
    TEST_SECRET_KEY,
    S3Server,
    _free_ports,
    create_bucket,
    start_seaweedfs,
    stop_process,
)
from test_transfer import check_resume
from transfer_support import (
    aliases,
    assert_intact,
    chain,
    log,
    make_models,
    ref_values,
    sha,
    use,
)

import objstore
from objstore.errors import BackendError
from objstore.model.store import Store
from objstore.storage.keys import pack_key
from objstore.storage.packs import verify_pack
from objstore.transfer.remotes import open_store, remote_add

pytestmark = pytest.mark.s3


@pytest.fixture
def models(tmp_path: Path) -> tuple[Path, Path]:
    return make_models(tmp_path / "models")


def test_push_to_bucket_and_clone(tmp_path: Path, s3_bucket_url: str, models: tuple[Path, Path]) -> None:
    base, ft = models
    local = Store.open(tmp_path / "local")
    log(local, base, aliases=["best"], link="Reg")
    log(local, ft, aliases=["candidate"])
    remote_add(local, "origin", s3_bucket_url)
    objstore.push(local)

    clone, _ = objstore.clone(s3_bucket_url, tmp_path / "clone")
    assert ref_values(clone) == ref_values(local)
    assert chain(clone) == chain(local) and len(chain(clone)) == 2
    assert aliases(clone) == {"best": 0, "candidate": 1, "latest": 1}
    assert_intact(clone)
    bucket_store = open_store(s3_bucket_url)
    assert_intact(bucket_store)
    assert ref_values(bucket_store) == ref_values(local)
    assert sha(use(clone, "model:v0", tmp_path / "o0")) == sha(base)
    assert sha(use(clone, "model:v1", tmp_path / "o1")) == sha(ft)
    assert sha(use(clone, "team/model-registry/Reg:latest", tmp_path / "o2")) == sha(base)
    logged = objstore.Api(store=clone).artifact("team/proj/model:v1").logged_by()
    assert logged is not None and logged.state == "finished"


def test_incremental_push_to_bucket(tmp_path: Path, s3_bucket_url: str, models: tuple[Path, Path]) -> None:
    base, ft = models
    local = Store.open(tmp_path / "local")
    log(local, base)
    objstore.push(local, s3_bucket_url)
    changed = log(local, ft).new_bytes
    result = objstore.push(local, s3_bucket_url)
    assert 0 < result.chunk_bytes <= changed
    assert result.bytes_sent <= 1.1 * changed, (result.bytes_sent, changed)
    assert result.requests <= 60, result.requests


def test_killed_push_to_bucket_resumes(tmp_path: Path, s3_bucket_url: str, s3_env: dict[str, str],
                                       models: tuple[Path, Path]) -> None:
    check_resume(tmp_path, s3_bucket_url, s3_env, models)


RACE_SCRIPT = textwrap.dedent("""
    import os, sys, time, objstore
    from objstore.errors import NonFastForward
    while not os.path.exists(sys.argv[2]):
        time.sleep(0.002)
    try:
        objstore.push(sys.argv[1])
    except NonFastForward as exc:
        print(exc, file=sys.stderr)
        sys.exit(3)
""")


def test_two_stores_race_on_one_bucket(tmp_path: Path, s3_bucket_url: str, models: tuple[Path, Path]) -> None:
    base, ft = models
    a = Store.open(tmp_path / "a")
    log(a, base)
    remote_add(a, "origin", s3_bucket_url)
    objstore.push(a)
    b, _ = objstore.clone(s3_bucket_url, tmp_path / "b")
    other = tmp_path / "other.bin"
    other.write_bytes(os.urandom(2_000_000))
    digests = {"a": log(a, ft).digest, "b": log(b, other).digest}
    a.close()
    b.close()

    go = tmp_path / "go"
    procs = {w: subprocess.Popen([sys.executable, "-c", RACE_SCRIPT, str(tmp_path / w), str(go)],
                                 env={**os.environ, "OBJSTORE_QUIET": "1"}, stderr=subprocess.PIPE, text=True)
             for w in "ab"}
    time.sleep(0.5)
    go.touch()
    outcome = {w: (p.wait(timeout=120), p.stderr.read() if p.stderr else "") for w, p in procs.items()}
    codes = sorted(code for code, _ in outcome.values())
    assert codes == [0, 3], outcome
    loser = next(w for w, (code, _) in outcome.items() if code == 3)
    message = outcome[loser][1].strip()
    assert "pull" in message and "\n" not in message

    bucket = open_store(s3_bucket_url)
    assert chain(bucket) == [chain(a)[0], digests["a" if loser == "b" else "b"]]
    loser_store = Store.open_existing(tmp_path / loser)
    pulled = objstore.pull(loser_store)
    assert pulled.renumbered == [("team/proj/model:v1", "team/proj/model:v2")]
    objstore.push(loser_store)
    final = chain(open_store(s3_bucket_url))
    assert len(final) == 3 and set(final[1:]) == set(digests.values())  # dense, none lost
    winner = Store.open_existing(tmp_path / ("a" if loser == "b" else "b"))
    objstore.pull(winner)
    assert chain(winner) == final
    assert_intact(open_store(s3_bucket_url))


# -- bad remotes ---------------------------------------------------------------

def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file() and "tmp" not in p.parts}


def _refused(local: Store, url: str, match: str) -> str:
    before = _files(Path(local.backend.url))
    with pytest.raises(BackendError, match=match) as info:
        objstore.push(local, url)
    assert _files(Path(local.backend.url)) == before
    message = str(info.value)
    assert "\n" not in message and len(message) < 400, message
    return message


def test_bad_remotes_fail_with_one_clear_line(tmp_path: Path, s3_server: S3Server, s3_bucket_url: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    local = Store.open(tmp_path / "local")
    small = tmp_path / "small.bin"
    small.write_bytes(os.urandom(100_000))
    log(local, small)

    missing = f"s3://objstore-missing-{secrets.token_hex(4)}/store"
    assert "does not exist" in _refused(local, missing, "bucket")

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    _refused(local, s3_bucket_url, "credentials")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)

    (port,) = _free_ports(1)
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    _refused(local, s3_bucket_url, "cannot reach")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint)

    objstore.push(local, s3_bucket_url)  # and the right one works
    assert chain(open_store(s3_bucket_url)) == chain(local)


def test_server_stopped_mid_push(tmp_path: Path, s3_env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                 models: tuple[Path, Path]) -> None:
    """A private SeaweedFS, killed after the first pack; restarted on the same data,
    the bucket shows no ref and no partial pack, and the push completes."""
    base, ft = models
    workdir = tmp_path / "weed"
    try:
        proc, endpoint = start_seaweedfs(workdir)
    except (OSError, RuntimeError) as exc:
        pytest.skip(f"cannot start a private SeaweedFS: {exc}")
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", TEST_ACCESS_KEY)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", TEST_SECRET_KEY)
        create_bucket(S3Server(endpoint, TEST_ACCESS_KEY, TEST_SECRET_KEY), "mid")
        local = Store.open(tmp_path / "local")
        log(local, base)
        log(local, ft)
        monkeypatch.setenv("OBJSTORE_TRANSFER_PACK_BYTES", str(1 << 20))

        def kill_server(stage: str, done: int, total: int) -> None:
            if stage == "chunks" and proc.poll() is None:
                proc.kill()
                proc.wait()

        before = _files(tmp_path / "local")
        with pytest.raises(BackendError, match="cannot reach") as info:
            objstore.push(local, "s3://mid/store", progress=kill_server)
        assert "\n" not in str(info.value)
        assert _files(tmp_path / "local") == before
    finally:
        stop_process(proc)

    # weed keeps its ports in nothing but flags, so the restart gets new ones.
    proc, endpoint = start_seaweedfs(workdir)
    try:
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        bucket = open_store("s3://mid/store")
        assert ref_values(bucket) == {}
        assert_intact(bucket)
        for name in bucket.odb.iter_pack_names():  # every pack there is whole
            verify_pack(bucket.backend.get(pack_key(name)), name)
        objstore.push(local, "s3://mid/store")
        clone, _ = objstore.clone("s3://mid/store", tmp_path / "clone")
        assert chain(clone) == chain(local)
        assert_intact(clone)
    finally:
        stop_process(proc)
        shutil.rmtree(workdir, ignore_errors=True)
