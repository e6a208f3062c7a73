"""push / fetch / pull / clone between two local stores (no server needed).

The same flows run against SeaweedFS in test_remote_s3.py; here they also pin
the rules: fast-forward only, re-basing on pull, aliases by CAS against what
was fetched, resume after a kill, and nothing unverified taken from a remote.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transfer_support import (
    ENTITY,
    PROJECT,
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
from objstore.errors import CorruptObject, InvalidInput, NonFastForward, NotFound
from objstore.model.names import CollectionPath
from objstore.model.store import Store
from objstore.model.versions import set_alias
from objstore.storage.keys import pack_key
from objstore.transfer.remotes import remote_add, remote_get, remote_list, remote_remove


@pytest.fixture
def models(tmp_path: Path) -> tuple[Path, Path]:
    return make_models(tmp_path / "models")


def test_push_then_clone_carries_everything(tmp_path: Path, models: tuple[Path, Path]) -> None:
    base, ft = models
    local = Store.open(tmp_path / "local")
    log(local, base, aliases=["best"], link="Reg")
    log(local, ft, aliases=["candidate"])
    remote_add(local, "origin", str(tmp_path / "remote"))
    pushed = objstore.push(local)
    assert pushed.chunks > 0 and pushed.objects > 0

    clone, result = objstore.clone(str(tmp_path / "remote"), tmp_path / "clone")
    assert ref_values(clone) == ref_values(local)  # every version, alias, digest, link and run
    assert chain(clone) == chain(local) and len(chain(clone)) == 2
    assert aliases(clone) == {"best": 0, "candidate": 1, "latest": 1}
    assert result.renumbered == []
    assert_intact(clone)
    assert_intact(Store.open_existing(tmp_path / "remote"))
    assert sha(use(clone, "model:v0", tmp_path / "out0")) == sha(base)
    assert sha(use(clone, "model:candidate", tmp_path / "out1")) == sha(ft)
    assert sha(use(clone, f"{ENTITY}/model-registry/Reg:v0", tmp_path / "out2")) == sha(base)
    # Runs came along, lineage included.
    logged_by = objstore.Api(store=clone).artifact("team/proj/model:v1").logged_by()
    assert logged_by is not None and logged_by.path == objstore.Api(store=local).artifact("team/proj/model:v1").logged_by().path
    assert [r.path for r in objstore.Api(store=clone).artifact("team/proj/model:v0").used_by()] != []
    assert remote_get(clone, "origin").url == str(tmp_path / "remote")

    # Pushing or pulling again moves nothing.
    again = objstore.push(local)
    assert (again.chunks, again.objects, again.refs) == (0, 0, [])
    pulled = objstore.pull(clone)
    assert (pulled.chunks, pulled.objects, pulled.refs) == (0, 0, [])


def test_incremental_push_sends_only_the_changed_tensors(tmp_path: Path, models: tuple[Path, Path]) -> None:
    base, ft = models
    local = Store.open(tmp_path / "local")
    log(local, base)
    objstore.push(local, str(tmp_path / "remote"))
    changed = log(local, ft).new_bytes  # stored (compressed) bytes of the changed tensors
    assert changed > 1_000_000
    result = objstore.push(local, str(tmp_path / "remote"))
    assert result.chunk_bytes <= changed
    assert result.bytes_sent <= 1.1 * changed, (result.bytes_sent, changed)
    assert result.requests <= 80, result.requests


def test_diverged_push_is_refused_and_pull_rebases(tmp_path: Path, models: tuple[Path, Path]) -> None:
    base, ft = models
    remote = str(tmp_path / "remote")
    a = Store.open(tmp_path / "a")
    log(a, base)
    objstore.push(a, remote)
    b, _ = objstore.clone(remote, tmp_path / "b")

    a_art = log(a, ft, aliases=["prod"])
    objstore.push(a, remote)
    other = tmp_path / "other.bin"
    other.write_bytes(os.urandom(300_000))
    log(b, other, aliases=["candidate"])
    log(b, ft)  # the same content as a's v1, logged independently: b's v2

    before = ref_values(Store.open_existing(remote))
    with pytest.raises(NonFastForward, match="pull"):
        objstore.push(b, "origin")
    assert ref_values(Store.open_existing(remote)) == before  # nothing moved

    pulled = objstore.pull(b)
    assert pulled.renumbered == [("team/proj/model:v1", "team/proj/model:v2"), ("team/proj/model:v2", "team/proj/model:v3")]
    assert chain(b)[:2] == chain(a)
    assert aliases(b) == {"prod": 1, "candidate": 2, "latest": 3}
    # b's run now names the re-based versions as its outputs.
    v2 = objstore.Api(store=b).artifact("team/proj/model:v2")
    run = v2.logged_by()
    assert run is not None and [a.version for a in run.logged_artifacts()] == ["v2"]
    objstore.push(b)
    objstore.pull(a, remote)
    assert chain(a) == chain(b) == chain(Store.open_existing(remote))
    assert len(chain(a)) == 4 and chain(a)[1] == a_art.digest
    assert aliases(a) == aliases(b)
    for store in (a, b, Store.open_existing(remote)):
        assert_intact(store)
    assert sha(use(a, "model:candidate", tmp_path / "cand")) == sha(other)


def test_alias_moved_on_both_sides_is_refused_not_overwritten(tmp_path: Path, models: tuple[Path, Path]) -> None:
    base, ft = models
    remote = str(tmp_path / "remote")
    a = Store.open(tmp_path / "a")
    log(a, base)
    log(a, ft)
    objstore.push(a, remote)
    b, _ = objstore.clone(remote, tmp_path / "b")
    coll = CollectionPath(ENTITY, PROJECT, "model")
    v0, v1 = (objstore.Api(store=a).artifact(f"team/proj/model:v{i}")._logged()[1].object_id for i in (0, 1))

    set_alias(a, coll, "prod", v0)
    objstore.push(a, remote)
    set_alias(b, coll, "prod", v1)
    with pytest.raises(NonFastForward, match="prod"):
        objstore.push(b)
    assert aliases(Store.open_existing(remote))["prod"] == 0

    pulled = objstore.pull(b)  # both changed it: b keeps its own and says so
    assert pulled.kept == ["refs/team/proj/model/aliases/prod"] and aliases(b)["prod"] == 1
    with pytest.raises(NonFastForward):
        objstore.push(b)
    objstore.push(b, force=True)
    assert aliases(Store.open_existing(remote))["prod"] == 1

    # An alias changed only on the remote fast-forwards on pull, and is not pushed back.
    objstore.pull(a, remote)
    assert aliases(a)["prod"] == 1
    set_alias(b, coll, "prod", v0)
    objstore.push(b)
    objstore.pull(a, remote)
    assert aliases(a)["prod"] == 0


PUSH_SCRIPT = textwrap.dedent("""
    import sys, time, objstore
    packs = 0
    def progress(stage, done, total):
        global packs
        if stage == "chunks":
            packs += 1
            print("chunks", done, total, flush=True)
            if packs == int(sys.argv[3]):
                time.sleep(60)  # the test kills us here, with this many packs stored
    objstore.push(sys.argv[1], sys.argv[2], progress=progress)
""")


def push_killed_after_packs(store: Path, remote: str, packs: int, env: dict[str, str]) -> tuple[int, int]:
    """Run a push in a subprocess with 1 MiB packs; kill -9 it once ``packs`` packs
    are stored. Returns (stored bytes sent so far, total to send)."""
    proc = subprocess.Popen([sys.executable, "-c", PUSH_SCRIPT, str(store), remote, str(packs)],
                            env={**os.environ, **env, "OBJSTORE_TRANSFER_PACK_BYTES": str(1 << 20), "OBJSTORE_QUIET": "1"},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for seen, line in enumerate(proc.stdout, 1):
            _, done, total = line.split()
            if seen == packs:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=30)
                return int(done), int(total)
        raise AssertionError(f"push ended before {packs} packs: {proc.wait()} {proc.stderr.read() if proc.stderr else ''}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def check_resume(tmp_path: Path, remote: str, env: dict[str, str], models: tuple[Path, Path]) -> None:
    base, ft = models
    local = Store.open(tmp_path / "local")
    log(local, base)
    log(local, ft)
    local.close()
    done, total = push_killed_after_packs(tmp_path / "local", remote, 2, env)
    assert 0 < done < total
    half = objstore.transfer.remotes.open_store(remote)
    assert ref_values(half) == {}  # no ref, so none to anything missing
    assert_intact(half)
    assert len(list(half.odb.iter_pack_names())) == 2
    half.close()

    local = Store.open_existing(tmp_path / "local")
    result = objstore.push(local, remote)
    assert 0 < result.chunk_bytes <= total - done, (result.chunk_bytes, total, done)
    clone, _ = objstore.clone(remote, tmp_path / "clone")
    assert chain(clone) == chain(local)
    assert_intact(clone)
    assert sha(use(clone, "model:v1", tmp_path / "out")) == sha(ft)


def test_killed_push_resumes_with_only_the_rest(tmp_path: Path, models: tuple[Path, Path]) -> None:
    check_resume(tmp_path, str(tmp_path / "remote"), {}, models)


def _flip_payload_byte(store: Store) -> None:
    name = next(store.odb.iter_pack_names())
    path = Path(store.backend.url) / pack_key(name)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF  # inside the first chunk's payload
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))


def test_tampered_remote_stores_nothing_locally(tmp_path: Path, models: tuple[Path, Path]) -> None:
    base, _ = models
    remote = tmp_path / "remote"
    a = Store.open(tmp_path / "a")
    log(a, base)
    objstore.push(a, str(remote))
    _flip_payload_byte(Store.open_existing(remote))

    with pytest.raises(CorruptObject, match="does not hash|checksum|decode|corrupt|damaged"):
        objstore.clone(str(remote), tmp_path / "clone")
    assert not (tmp_path / "clone").exists()

    c = Store.open(tmp_path / "c")
    remote_add(c, "origin", str(remote))
    with pytest.raises(CorruptObject):
        objstore.pull(c)
    assert ref_values(c) == {}
    assert list(c.odb.iter_pack_names()) == []
    assert_intact(c)


def test_remote_config(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s")
    assert remote_list(store) == []
    with pytest.raises(NotFound, match="remote add"):
        objstore.push(store)
    remote_add(store, "origin", "s3://bucket/prefix", endpoint="http://127.0.0.1:1")
    remote_add(store, "backup", str(tmp_path / "b"))
    assert [(r.name, r.url) for r in remote_list(store)] == [("backup", str(tmp_path / "b")), ("origin", "s3://bucket/prefix")]
    with pytest.raises(InvalidInput, match="already points"):
        remote_add(store, "origin", "s3://other/x")
    with pytest.raises(InvalidInput, match="credentials"):
        remote_add(store, "bad", "s3://AKIA:secret@bucket/x")
    with pytest.raises(InvalidInput, match="credential"):
        remote_add(store, "bad", "s3://bucket/x", secret_access_key="x")
    with pytest.raises(objstore.errors.InvalidName):
        remote_add(store, "../x", "s3://bucket/x")
    config = b"".join(p.read_bytes() for p in (tmp_path / "s" / "remotes").rglob("*") if p.is_file())
    assert b"secret" not in config
    remote_remove(store, "origin")
    assert [r.name for r in remote_list(store)] == ["backup"]
    with pytest.raises(NotFound):
        remote_remove(store, "origin")


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.sampled_from(["log", "sync"]), st.integers(0, 5)), min_size=1, max_size=6))
def test_any_interleaving_converges_without_losing_a_version(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, str, int]]
) -> None:
    root = tmp_path_factory.mktemp("converge")
    remote = str(root / "remote")
    stores = {w: Store.open(root / w) for w in "ab"}
    for s in stores.values():
        remote_add(s, "origin", remote)
    logged: set[str] = set()
    for who, op, seed in ops:
        store = stores[who]
        if op == "log":
            f = root / f"{who}-{seed}.bin"
            f.write_bytes(seed.to_bytes(1, "little") * (1000 + seed))
            logged.add(log(store, f).digest)
        else:
            if (root / "remote" / "config").exists():
                objstore.pull(store)
            objstore.push(store)
    for _ in range(2):
        for store in stores.values():
            if (root / "remote" / "config").exists():
                objstore.pull(store)
            objstore.push(store)
    final = chain(Store.open_existing(remote))
    assert chain(stores["a"]) == chain(stores["b"]) == final
    assert set(final) == logged  # every logged content is some version
    for store in stores.values():
        assert aliases(store).get("latest") == (len(final) - 1 if final else None)


def objstore_cli(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("objstore")
    return subprocess.run(
        [str(exe), *args], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120, check=False
    )


def test_cli_remote_push_clone_pull(tmp_path: Path, models: tuple[Path, Path]) -> None:
    import json

    base, ft = models
    a = ["--store", str(tmp_path / "a")]
    assert objstore_cli(*a, "init", cwd=tmp_path).returncode == 0
    assert objstore_cli(*a, "log-model", str(base), "-e", ENTITY, "-p", PROJECT, "--name", "model", cwd=tmp_path).returncode == 0
    assert objstore_cli(*a, "remote", "add", "origin", str(tmp_path / "remote"), cwd=tmp_path).returncode == 0
    listed = json.loads(objstore_cli(*a, "remote", "list", "--json", cwd=tmp_path).stdout)
    assert listed == [{"name": "origin", "url": str(tmp_path / "remote"), "options": {}}]
    pushed = json.loads(objstore_cli(*a, "push", "--json", cwd=tmp_path).stdout)
    assert pushed["direction"] == "push" and pushed["chunks"] > 0 and "refs/team/proj/model/versions/v0" in pushed["refs"]

    cloned = objstore_cli("clone", str(tmp_path / "remote"), "copy", cwd=tmp_path)
    assert cloned.returncode == 0, cloned.stderr
    assert (tmp_path / "copy" / ".objstore" / "config").exists()
    # Inside the clone, commands find its store.
    assert objstore_cli("log-model", str(ft), "-e", ENTITY, "-p", PROJECT, "--name", "model", cwd=tmp_path / "copy").returncode == 0
    other = tmp_path / "other.bin"
    other.write_bytes(os.urandom(5000))
    assert objstore_cli(*a, "log-model", str(other), "-e", ENTITY, "-p", PROJECT, "--name", "model", cwd=tmp_path).returncode == 0
    assert objstore_cli(*a, "push", cwd=tmp_path).returncode == 0

    refused = objstore_cli("push", cwd=tmp_path / "copy")
    assert refused.returncode == 1
    assert refused.stderr.count("\n") == 1 and "pull" in refused.stderr and "Traceback" not in refused.stderr
    pulled = objstore_cli("pull", cwd=tmp_path / "copy")
    assert pulled.returncode == 0 and "renumbered team/proj/model:v1 -> v2" in pulled.stdout
    assert objstore_cli("push", cwd=tmp_path / "copy").returncode == 0
    assert chain(Store.open_existing(tmp_path / "remote")) == chain(Store.open_existing(tmp_path / "copy" / ".objstore"))

    for bad in (
        ["push", "nowhere"],
        ["pull", "nowhere"],
        ["clone", str(tmp_path / "missing"), "nothing"],
        ["remote", "add", "x", "s3://key:secret@bucket/p"],
        ["remote", "remove", "nowhere"],
    ):
        res = objstore_cli(*a, *bad, cwd=tmp_path)
        assert res.returncode == 1, (bad, res.stdout, res.stderr)
        assert res.stderr.count("\n") == 1 and res.stderr.startswith("objstore: error:"), (bad, res.stderr)
    assert not (tmp_path / "nothing").exists()


def _published_and_tracked(tmp_path: Path, model: Path) -> tuple[Store, Store]:
    """Store a with ``model`` logged and pushed to a remote; store b, empty, with that remote as origin."""
    a = Store.open(tmp_path / "a")
    log(a, model)
    objstore.push(a, str(tmp_path / "remote"))
    b = Store.open(tmp_path / "b")
    remote_add(b, "origin", str(tmp_path / "remote"))
    return a, b


def test_fetch_moves_objects_but_no_local_ref(tmp_path: Path, models: tuple[Path, Path]) -> None:
    a, b = _published_and_tracked(tmp_path, models[0])
    fetched = objstore.fetch(b)
    assert fetched.chunks > 0 and ref_values(b) == {}
    assert objstore.fetch(b).chunks == 0  # already there
    pulled = objstore.pull(b)
    assert pulled.chunks == 0 and chain(b) == chain(a)


def test_gc_keeps_what_fetch_stored_for_a_later_pull(tmp_path: Path, models: tuple[Path, Path]) -> None:
    """Fetched content is reached only by remote-tracking refs until a pull:
    gc must keep it (a fetch-then-offline-pull must not find it gone)."""
    from objstore.maintenance.fsck import fsck
    from objstore.maintenance.gc import collect_garbage

    a, b = _published_and_tracked(tmp_path, models[0])
    assert objstore.fetch(b).chunks > 0
    collect_garbage(Store.open(tmp_path / "b"), grace_seconds=0)
    b = Store.open(tmp_path / "b")
    assert objstore.fetch(b).chunks == 0  # nothing was dropped, so nothing to fetch again
    assert fsck(b).ok
    objstore.pull(b)
    assert chain(b) == chain(a)


def test_pull_refuses_a_version_ref_to_another_collection(tmp_path: Path, models: tuple[Path, Path]) -> None:
    base, _ = models
    a = Store.open(tmp_path / "a")
    log(a, base)
    remote = Store.open(tmp_path / "remote")
    objstore.push(a, str(tmp_path / "remote"))
    v0 = remote.refs.read("refs/team/proj/model/versions/v0")
    assert v0 is not None
    remote.refs.create("refs/team/proj/evil/versions/v0", v0, "tampering")  # a version of 'model' posing as 'evil'
    b = Store.open(tmp_path / "b")
    with pytest.raises(CorruptObject, match="evil"):
        objstore.pull(b, str(tmp_path / "remote"))
    assert ref_values(b) == {}
