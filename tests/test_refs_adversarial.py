"""A second, adversarial pass over the ref invariants of tests/test_refs_integrity.py.

Every ref promises something about the object it holds, and every reader that
follows a ref must check that promise, not only fsck and pull:

- ``versions/vN`` holds entry number N of its collection, ``digests/<tree>`` an
  entry holding that tree, ``aliases/latest`` an entry of its own collection.
  A digest selector (``a:2d1fc2…``) never serves another tree's bytes; logging
  content never answers "already holds this content" with another version;
  one edited ``latest`` or ``versions/vN`` never makes the next log skip
  numbers or spin moving ``latest`` in place.
- Concurrent and stale ``save()`` calls (one adding an alias, others removing
  it from where they last saw it) end with the alias where the adder put it,
  on the local backend and on S3; a registry entry's ``save()`` changes the
  registry's aliases.
- No false refusals: a pull that re-bases local versions, a legitimately
  moved or deleted remote alias, and a fresh clone afterwards all succeed and
  are fsck-clean.
- A compare-and-swap whose lock holders are SIGKILLed loses no update.

Forged stores are made by editing a real store's ref files; concurrency and
crashes by real processes and SIGKILL.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from cli_helpers import run_cli
from test_refs_integrity import A_BYTES, B_BYTES, E, P, _forge, _pushed_remote, _write, alias_targets, log, ref_file, use

import objstore
from objstore.errors import CorruptObject
from objstore.maintenance.fsck import fsck
from objstore.model.names import CollectionPath
from objstore.model.store import Store
from objstore.model.versions import list_versions
from objstore.storage.keys import alias_ref, digest_ref, run_ref, version_ref

C_BYTES = b"model C " * 4000


def _indices(store: Path | Store, name: str) -> list[int]:
    s = store if isinstance(store, Store) else Store.open(store)
    return [i for i, _ in list_versions(s, CollectionPath(E, P, name))]


# -- every reader checks what the ref it followed promises -----------------------------

def test_digest_selector_never_serves_another_versions_bytes(tmp_path: Path) -> None:
    store = tmp_path / "store"
    a0 = log(store, "a", A_BYTES, tmp_path)
    a1 = log(store, "a", B_BYTES, tmp_path)
    _forge(store, digest_ref(E, P, "a", a0.digest), a1.id)  # A's digest now names v1 (B's bytes)
    with pytest.raises(CorruptObject, match="digests/"):
        use(store, f"e/p/a:{a0.digest[:12]}", tmp_path / "out")
    assert not (tmp_path / "out").exists() or b"model B" not in b"".join(
        p.read_bytes() for p in (tmp_path / "out").rglob("*") if p.is_file())


def test_logging_content_again_never_answers_with_another_version(tmp_path: Path) -> None:
    store = tmp_path / "store"
    a0 = log(store, "a", A_BYTES, tmp_path)
    a1 = log(store, "a", B_BYTES, tmp_path)
    _forge(store, digest_ref(E, P, "a", a0.digest), a1.id)
    # Before: "e/p/a:v1 already holds this content" and the run's output was v1 (B's bytes).
    with pytest.raises(CorruptObject, match="digests/"):
        log(store, "a", A_BYTES, tmp_path)
    assert _indices(store, "a") == [0, 1]


def test_latest_edited_into_another_collection_never_makes_a_gap(tmp_path: Path) -> None:
    store = tmp_path / "store"
    log(store, "a", A_BYTES, tmp_path)
    b = [log(store, "b", bytes([65 + i]) * 30000, tmp_path) for i in range(4)]
    _forge(store, alias_ref(E, P, "a", "latest"), b[3].id)
    # Before: the next log of a took b:v3's number as a hint and became a:v4 (a:v1..v3 never exist).
    with pytest.raises(CorruptObject, match="a/aliases/latest"):
        log(store, "a", C_BYTES, tmp_path)
    assert _indices(store, "a") == [0]


def test_version_ref_holding_an_older_version_is_refused_at_once(tmp_path: Path) -> None:
    store = tmp_path / "store"
    a0 = log(store, "a", A_BYTES, tmp_path)
    _forge(store, version_ref(E, P, "a", 1), a0.id)  # v1 holds the object numbered v0
    started = time.monotonic()
    # Before: latest was "moved" onto the same value 10,000 times (10,001 reflog
    # entries, about three minutes), then Conflict "could not move latest; retry".
    with pytest.raises(CorruptObject, match="a/versions/v1"):
        log(store, "a", B_BYTES, tmp_path)
    assert time.monotonic() - started < 20
    assert len(Store.open(store).refs.reflog(alias_ref(E, P, "a", "latest"))) < 5
    assert _indices(store, "a") == [0, 1], "a number was claimed past the misplaced ref"


def test_listing_versions_refuses_a_misnumbered_version_ref(tmp_path: Path) -> None:
    store = tmp_path / "store"
    a0 = log(store, "a", A_BYTES, tmp_path)
    log(store, "a", B_BYTES, tmp_path)
    _forge(store, version_ref(E, P, "a", 1), a0.id)
    # Before: two artifacts, both "v0".
    with pytest.raises(CorruptObject, match="a/versions/v1"):
        objstore.Api(store=str(store), entity=E, project=P).artifact_versions(None, "a")


@pytest.mark.parametrize("spelling", ["v00", "v\u0660"])
def test_a_version_ref_spelled_as_objstore_never_writes_is_no_version(tmp_path: Path, spelling: str) -> None:
    """``versions/v00`` (a leading zero) or ``versions/v٠`` (an Arabic-Indic zero, a digit to
    ``\\d`` and int()) beside ``versions/v0``: the listings counted it as version 0 a second time
    ("2 versions"), and the log stopped with "e/p/a:v0 was removed while its log was read" on
    every run, as did the ui's collection page (before the fix). fsck names it; nothing else
    counts it."""
    store = tmp_path / "store"
    a0 = log(store, "a", A_BYTES, tmp_path)
    ref_file(store, version_ref(E, P, "a", 0)).with_name(spelling).write_bytes(
        ref_file(store, version_ref(E, P, "a", 0)).read_bytes())
    assert _indices(store, "a") == [0]
    listed = run_cli(store, "ls", f"{E}/{P}").out
    assert " 1 " in listed.splitlines()[1], listed
    shown = run_cli(store, "log", f"{E}/{P}/a")
    assert shown.code == 0 and "v0" in shown.out
    assert objstore.Api(store=str(store)).artifact(f"{E}/{P}/a:v0").digest == a0.digest
    assert any(spelling in p.object_id for p in fsck(Store.open(store)).problems)


def test_forged_remote_run_ref_holding_another_runs_record_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "store"
    for run_id, name, data in (("r1", "a", A_BYTES), ("r2", "b", B_BYTES)):
        src = _write(tmp_path / "src" / f"{run_id}.bin", data)
        with objstore.init(project=P, entity=E, store=store, id=run_id) as run:
            run.log_model(str(src), name=name)
    remote = _pushed_remote(tmp_path, store)
    r2 = Store.open(store).refs.read(run_ref(E, P, "r2"))
    assert r2 is not None
    _forge(remote, run_ref(E, P, "r1"), r2.hex)
    with pytest.raises(CorruptObject, match="runs/r1"):
        objstore.clone(str(remote), tmp_path / "clone")
    assert not (tmp_path / "clone").exists()


# -- save(): concurrent, stale, registry ------------------------------------------------

ADD_REMOVE = textwrap.dedent("""
    import sys
    import objstore
    store, role, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    api = objstore.Api(store=store, entity="e", project="p")
    objs = [api.artifact("e/p/m:v1" if role == "add" else "e/p/m:v0") for _ in range(n)]
    # A remover's objects must all have been loaded while r<k> was still on v0,
    # so no process starts saving before every one has loaded (a start time
    # instead let a process slowed by load miss it, and find r<k> gone).
    print("ready", flush=True)
    sys.stdin.readline()
    for k, art in enumerate(objs):
        if role == "add":
            art.aliases.append(f"r{k}")
        else:
            art.aliases.remove(f"r{k}")
        art.save()
    print("done", flush=True)
""")


def _add_remove_race(store: str, tmp_path: Path, n: int = 12, removers: int = 4) -> None:
    """r0..r<n-1> start on v0; one process moves each to v1 while ``removers``
    stale processes remove each from v0. Whatever the interleaving, every alias
    must end on v1: a removal only removes an alias still on its version."""
    log(store, "m", A_BYTES, tmp_path, aliases=[f"r{k}" for k in range(n)])  # type: ignore[arg-type]
    log(store, "m", B_BYTES, tmp_path)  # type: ignore[arg-type]
    script = tmp_path / "add_remove.py"
    script.write_text(ADD_REMOVE)
    roles = ["add"] + ["remove"] * removers
    procs = [subprocess.Popen([sys.executable, str(script), store, role, str(n)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for role in roles]
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise AssertionError(proc.communicate(timeout=60)[1])
        for proc in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for proc in procs:
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, err
            assert out.strip() == "done"
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    got = alias_targets(store if "://" not in store else Store.open(store), "m")  # type: ignore[arg-type]
    assert got == {f"r{k}": 1 for k in range(n)} | {"latest": 1}, got


def test_one_process_moves_aliases_while_stale_ones_remove_them(tmp_path: Path) -> None:
    _add_remove_race(str(tmp_path / "store"), tmp_path)


@pytest.mark.s3
def test_one_process_moves_aliases_while_stale_ones_remove_them_on_s3(tmp_path: Path, s3_bucket_url: str) -> None:
    _add_remove_race(s3_bucket_url, tmp_path)


def test_stale_object_never_re_adds_an_alias_removed_meanwhile(tmp_path: Path) -> None:
    store = tmp_path / "store"
    log(store, "m", A_BYTES, tmp_path, aliases=["production"])
    api = objstore.Api(store=str(store), entity=E, project=P)
    stale, remover = api.artifact("m:v0"), api.artifact("m:v0")
    remover.aliases.remove("production")
    remover.save()
    stale.aliases.append("reviewed")  # still lists production, as loaded
    stale.save()
    assert alias_targets(store, "m") == {"latest": 0, "reviewed": 0}
    assert sorted(stale.aliases) == ["latest", "reviewed"]


def test_save_of_a_registry_entry_changes_the_registrys_aliases(tmp_path: Path) -> None:
    store = tmp_path / "store"
    src = _write(tmp_path / "src" / "a.bin", A_BYTES)
    with objstore.init(project=P, entity=E, store=store) as run:
        run.link_model(str(src), "Reg", name="a", aliases=["champion"])
    api = objstore.Api(store=str(store), entity=E, project=P)
    entry = api.artifact("e/model-registry/Reg:champion")
    entry.aliases.remove("champion")
    entry.aliases.append("production")
    entry.save()
    s = Store.open(store)
    link = s.refs.read(version_ref(E, "model-registry", "Reg", 0))
    assert s.refs.read(alias_ref(E, "model-registry", "Reg", "production")) == link
    assert s.refs.read(alias_ref(E, "model-registry", "Reg", "champion")) is None
    assert alias_targets(store, "a") == {"latest": 0}, "the registry's alias landed on the linked collection"
    assert use(store, "e/model-registry/Reg:production", tmp_path / "out") == A_BYTES
    assert fsck(s).ok


def test_objstore_alias_latest_is_a_one_line_error(tmp_path: Path) -> None:
    store = tmp_path / "store"
    log(store, "m", A_BYTES, tmp_path)
    log(store, "m", B_BYTES, tmp_path)
    for args in (("alias", "e/p/m:v0", "latest"), ("alias", "--delete", "e/p/m", "latest")):
        result = run_cli(store, *args, check=False)
        assert result.code != 0
        assert "Traceback" not in result.err
        assert len(result.err.strip().splitlines()) == 1 and "latest" in result.err, result.err
    assert alias_targets(store, "m") == {"latest": 1}


# -- no false refusals ---------------------------------------------------------------------

def test_pull_re_basing_then_push_and_fresh_clone_are_accepted_and_clean(tmp_path: Path) -> None:
    """Divergent histories: the teammate's versions come first, ours are re-based
    (new numbers, aliases, digests and registry links following). Every ref the
    pull writes, and every ref a later clone takes, passes the ref checks."""
    mine, theirs = tmp_path / "mine", tmp_path / "theirs"
    log(theirs, "a", A_BYTES, tmp_path, aliases=["production"])
    remote = _pushed_remote(tmp_path, theirs)
    objstore.clone(str(remote), mine)[0].close()
    log(theirs, "a", B_BYTES, tmp_path, aliases=["production"])
    objstore.push(str(theirs), "origin")
    mine_c = log(mine, "a", C_BYTES, tmp_path, aliases=["candidate"])
    with objstore.init(project=P, entity=E, store=mine) as run:
        run.link_artifact(run.use_artifact(f"a:v{mine_c.version[1:]}"), "Reg", aliases=["champion"])
    result = objstore.pull(str(mine))
    assert ("e/p/a:v1", "e/p/a:v2") in result.renumbered
    assert fsck(Store.open(mine)).ok
    assert use(mine, "e/p/a:production", tmp_path / "o1") == B_BYTES
    assert use(mine, "e/p/a:candidate", tmp_path / "o2") == C_BYTES
    assert use(mine, "e/p/a:v2", tmp_path / "o3") == C_BYTES
    assert use(mine, "e/model-registry/Reg:champion", tmp_path / "o4") == C_BYTES
    digest_c = objstore.Api(store=str(mine), entity=E, project=P).artifact("a:candidate").digest
    assert use(mine, f"e/p/a:{digest_c[:12]}", tmp_path / "o5") == C_BYTES
    objstore.push(str(mine), "origin")
    assert objstore.pull(str(theirs)).renumbered == []
    assert fsck(Store.open(theirs)).ok
    fresh, _ = objstore.clone(str(remote), tmp_path / "fresh")
    assert fsck(fresh).ok
    fresh.close()
    assert use(tmp_path / "fresh", "e/model-registry/Reg:champion", tmp_path / "o6") == C_BYTES


def test_pull_takes_a_legitimately_moved_and_a_deleted_alias(tmp_path: Path) -> None:
    theirs = tmp_path / "theirs"
    log(theirs, "a", A_BYTES, tmp_path, aliases=["production", "staging"])
    remote = _pushed_remote(tmp_path, theirs)
    objstore.clone(str(remote), tmp_path / "mine")[0].close()
    log(theirs, "a", B_BYTES, tmp_path, aliases=["production"])
    art = objstore.Api(store=str(theirs), entity=E, project=P).artifact("a:v0")
    art.aliases.remove("staging")
    art.save()
    objstore.push(str(theirs), "origin")
    objstore.pull(str(tmp_path / "mine"))
    assert alias_targets(tmp_path / "mine", "a") == {"latest": 1, "production": 1}
    assert ref_file(tmp_path / "mine", alias_ref(E, P, "a", "staging")).read_bytes() == b""  # a tombstone
    assert fsck(Store.open(tmp_path / "mine")).ok


# -- the stale-lock breaker under SIGKILL ------------------------------------------------------

CAS_WORKER = textwrap.dedent("""
    import os, sys
    from objstore.storage.backend._local import LocalBackend
    from objstore.errors import Conflict
    root, me, n, log_path = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    backend = LocalBackend(root)
    key = "refs/e/p/m/aliases/counter"
    with open(log_path, "a") as log:
        for j in range(n):
            token = f"{me}-{j}"
            while True:
                try:
                    current = backend.get(key)
                except Exception:
                    current = None
                items = (current or b"").decode().split()
                try:
                    backend.compare_and_swap(key, current, " ".join(items + [token]).encode())
                    break
                except Conflict:
                    continue
            log.write(token + "\\n")  # acknowledged: from here on the update must survive
            log.flush()
    print("done", flush=True)
""")


def test_cas_loses_no_update_while_lock_holders_are_sigkilled(tmp_path: Path) -> None:
    """Eight processes append tokens to one value by compare-and-swap on the local
    backend while processes are SIGKILLed at random moments (some while holding
    the key's lock, which the next writer must break as its owner is dead).
    Every acknowledged token is in the final value; nothing blocks."""
    root = tmp_path / "store"
    root.mkdir()
    script = tmp_path / "cas_worker.py"
    script.write_text(CAS_WORKER)
    logs = tmp_path / "acks"
    logs.mkdir()
    rng = random.Random(10)
    started, killed, spawned = time.monotonic(), 0, 0

    def spawn() -> subprocess.Popen[str]:
        nonlocal spawned
        spawned += 1
        return subprocess.Popen([sys.executable, str(script), str(root), f"w{spawned}", "60", str(logs / f"w{spawned}.log")],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    live = [spawn() for _ in range(8)]
    finished: list[subprocess.Popen[str]] = []
    while time.monotonic() - started < 25 and killed < 24:
        time.sleep(rng.uniform(0.05, 0.3))
        running = [p for p in live if p.poll() is None]
        if not running:
            break
        victim = rng.choice(running)
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()  # reaped, so its pid is dead to the lock breaker
        killed += 1
        live.remove(victim)
        live.append(spawn())
    for proc in live:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        finished.append(proc)
    final = set((root / "refs/e/p/m/aliases/counter").read_bytes().decode().split())
    acked = {t for f in logs.iterdir() for t in f.read_text().split()}
    assert killed >= 5, "too few kills to mean anything"
    assert acked - final == set(), f"lost {len(acked - final)} acknowledged updates"
    assert len(finished) == 8 and f"w{spawned}-59" in final  # the survivors ran to the end
    assert not any(p.name.endswith(".lock") for p in (root / "refs").rglob("*"))


# -- pull never undoes a local move made while it runs ---------------------------------------

def test_pull_never_undoes_an_alias_removed_here_while_it_runs(tmp_path: Path) -> None:
    """pull decides each alias from a snapshot of the local refs; a local writer
    that moves the alias after that snapshot (here: removes production from v0
    while the pull is busy with the collections sorted before it) must not be
    overwritten with the remote's value, as a pull that had seen the removal
    would have kept it (changed on both sides: the local value wins)."""
    import threading

    from objstore.model.versions import remove_alias_from

    theirs, mine = tmp_path / "theirs", tmp_path / "mine"
    earlier = [f"c{i:02d}" for i in range(40)]  # sorted before "z": processed first by the pull
    for name in earlier:
        log(theirs, name, name.encode() * 1000, tmp_path)
    log(theirs, "z", A_BYTES, tmp_path, aliases=["production"])
    remote = _pushed_remote(tmp_path, theirs)
    objstore.clone(str(remote), mine)[0].close()
    for name in earlier:
        log(theirs, name, name.encode() * 2000, tmp_path)
    log(theirs, "z", B_BYTES, tmp_path, aliases=["production"])
    objstore.push(str(theirs), "origin")

    local = Store.open(mine)
    z0 = local.refs.read(version_ref(E, P, "z", 0))
    assert z0 is not None
    removed: list[bool] = []
    first_write = ref_file(mine, version_ref(E, P, earlier[0], 1))

    def remover() -> None:  # another writer of this store: starts once the pull writes refs
        deadline = time.monotonic() + 60
        while not first_write.exists() and time.monotonic() < deadline:
            time.sleep(0.0005)
        removed.append(remove_alias_from(local, CollectionPath(E, P, "z"), "production", z0))

    thread = threading.Thread(target=remover)
    thread.start()
    objstore.pull(str(mine))
    thread.join()
    if removed == [True]:  # the removal landed before the pull wrote production
        assert local.refs.read(alias_ref(E, P, "z", "production")) is None, "the pull undid the local removal"
    else:
        pytest.skip("the local removal came after the pull had moved production; nothing to check")
