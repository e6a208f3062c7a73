"""Refs keep their meaning: no internal file can pose as one, no save loses
another writer's alias move, and no ref can point into another collection.

- Class 4: aliases whose names look like the local backend's lock and temp
  files (``best.lock``, ``latest.lock``, ``x.lock.break.lock``) are listed,
  resolve, never block a log and are never removed as "stale locks".
- Class 5: ``Artifact.save()`` applies exactly the alias changes made to that
  object (each by compare-and-swap), so two objects of one version, a stale
  object, or eight processes saving at once lose nothing and undo nothing.
- Class 7: a ref that points at a version of another collection (or at the
  wrong number), or whose name breaks the name rules, is refused when it is
  read, when it is pulled or cloned, and reported by fsck.

Everything here runs on real files: forged stores are made by editing a real
store's ref files, concurrency by real processes.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from cli_helpers import run_cli

import objstore
from objstore.errors import CorruptObject, InvalidInput, InvalidName, ObjstoreError
from objstore.maintenance.fsck import fsck
from objstore.model.names import CollectionPath
from objstore.model.store import Store
from objstore.model.versions import list_aliases, list_versions
from objstore.storage.keys import alias_ref, digest_ref, version_ref
from objstore.transfer.remotes import remote_add

E, P = "e", "p"


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def log(store: Path | Store, name: str, data: bytes, tmp: Path, aliases: list[str] | None = None) -> objstore.Artifact:
    src = _write(tmp / "src" / f"{name}-{hashlib.sha256(data).hexdigest()[:8]}.bin", data)
    with objstore.init(project=P, entity=E, store=store) as run:
        return run.log_model(str(src), name=name, aliases=aliases)


def use(store: Path | Store, spec: str, root: Path) -> bytes:
    with objstore.init(project=P, entity=E, store=store) as run:
        return Path(run.use_model(spec, root=root)).read_bytes()


def alias_targets(store: Path | Store, name: str) -> dict[str, int]:
    s = store if isinstance(store, Store) else Store.open(store)
    versions = {oid: idx for idx, oid in list_versions(s, CollectionPath(E, P, name))}
    return {a: versions[oid] for a, oid in list_aliases(s, CollectionPath(E, P, name)).items()}


def ref_file(store: Path, ref: str) -> Path:
    return store.joinpath(*ref.split("/"))


A_BYTES = b"model A " * 4000
B_BYTES = b"model B " * 4000


# -- class 4: names that look like internal files ------------------------------------

@pytest.mark.parametrize("alias", ["best.lock", "latest.lock", "x.lock.break.lock", "y.lock.123-abcdef01.lock", "z.tmp"])
def test_lock_like_alias_is_listed_and_resolves(tmp_path: Path, alias: str) -> None:
    store = tmp_path / "store"
    log(store, "m", A_BYTES, tmp_path, aliases=[alias])
    assert alias_targets(store, "m").get(alias) == 0
    assert alias in objstore.Api(store=str(store), entity=E, project=P).artifact("m:v0").aliases
    assert use(store, f"m:{alias}", tmp_path / "out") == A_BYTES


def test_alias_latest_lock_does_not_block_the_next_log(tmp_path: Path) -> None:
    store = tmp_path / "store"
    log(store, "m", A_BYTES, tmp_path, aliases=["latest.lock"])
    started = time.monotonic()
    second = log(store, "m", B_BYTES, tmp_path)
    assert time.monotonic() - started < 10, "the log waited on an alias as if it were a lock"
    assert second.version == "v1"
    assert alias_targets(store, "m") == {"latest": 1, "latest.lock": 0}


def test_stale_lock_breaker_never_deletes_a_user_ref(tmp_path: Path) -> None:
    store = tmp_path / "store"
    log(store, "m", A_BYTES, tmp_path, aliases=["latest.lock", "best"])
    # An old alias file named like latest's lock: a breaker that judged it a
    # stale lock by its age would delete it.
    old = time.time() - 7200
    path = ref_file(store, alias_ref(E, P, "m", "latest.lock"))
    os.utime(path, (old, old))
    log(store, "m", B_BYTES, tmp_path, aliases=["best"])
    assert path.exists()
    assert alias_targets(store, "m") == {"latest": 1, "latest.lock": 0, "best": 1}


def test_no_lock_or_temp_file_is_left_among_the_refs(tmp_path: Path) -> None:
    store = tmp_path / "store"
    log(store, "m", A_BYTES, tmp_path, aliases=["a", "b"])
    log(store, "m", B_BYTES, tmp_path, aliases=["a"])
    stray = [p for p in (store / "refs").rglob("*") if p.is_file() and p.name.endswith(".lock")]
    assert stray == []


def test_legacy_lock_file_among_refs_is_not_a_ref(tmp_path: Path) -> None:
    """A store written by an older objstore may hold ``<ref>.lock`` files (owner
    line ``pid host time``) left by a killed writer: they are not aliases."""
    store = tmp_path / "store"
    log(store, "m", A_BYTES, tmp_path, aliases=["best"])
    legacy = ref_file(store, alias_ref(E, P, "m", "latest")).with_name("latest.lock")
    legacy.write_bytes(b"999999999 some-host 1700000000.000\n")
    ref_file(store, alias_ref(E, P, "m", "best")).with_name("best.lock.break.lock").write_bytes(b"")
    assert alias_targets(store, "m") == {"latest": 0, "best": 0}
    log(store, "m", B_BYTES, tmp_path, aliases=["best"])
    assert alias_targets(store, "m") == {"latest": 1, "best": 1}
    assert fsck(Store.open(store)).ok


# -- class 5: lost alias updates -------------------------------------------------------

def test_two_objects_of_one_version_each_add_an_alias(tmp_path: Path) -> None:
    store = tmp_path / "store"
    log(store, "m", A_BYTES, tmp_path)
    api = objstore.Api(store=str(store), entity=E, project=P)
    first, second = api.artifact("m:v0"), api.artifact("m:v0")
    first.aliases.append("one")
    second.aliases.append("two")
    first.save()
    second.save()
    assert alias_targets(store, "m") == {"latest": 0, "one": 0, "two": 0}


def test_stale_save_does_not_move_production_back(tmp_path: Path) -> None:
    store = tmp_path / "store"
    log(store, "m", A_BYTES, tmp_path, aliases=["production"])
    log(store, "m", B_BYTES, tmp_path)
    api = objstore.Api(store=str(store), entity=E, project=P)
    stale = api.artifact("m:v0")  # loaded while production is on v0
    stale_remover = api.artifact("m:v0")
    assert "production" in stale.aliases
    newer = api.artifact("m:v1")
    newer.aliases.append("production")
    newer.save()
    stale.aliases.append("reviewed")
    stale.save()
    assert alias_targets(store, "m") == {"latest": 1, "production": 1, "reviewed": 0}
    # Removing an alias only removes it from this version: production moved on.
    stale_remover.aliases.remove("production")
    stale_remover.save()
    assert alias_targets(store, "m") == {"latest": 1, "production": 1, "reviewed": 0}
    # Added on purpose, it does move here (W&B: adding an alias points it at this version).
    stale_remover.aliases.append("production")
    stale_remover.save()
    assert alias_targets(store, "m")["production"] == 0


def test_removing_an_alias_that_is_here_removes_it(tmp_path: Path) -> None:
    store = tmp_path / "store"
    log(store, "m", A_BYTES, tmp_path, aliases=["best", "keep"])
    art = objstore.Api(store=str(store), entity=E, project=P).artifact("m:v0")
    art.aliases.remove("best")
    art.save()
    assert alias_targets(store, "m") == {"latest": 0, "keep": 0}
    assert sorted(art.aliases) == ["keep", "latest"]


def test_latest_is_not_moved_by_save(tmp_path: Path) -> None:
    store = tmp_path / "store"
    log(store, "m", A_BYTES, tmp_path)
    log(store, "m", B_BYTES, tmp_path)
    api = objstore.Api(store=str(store), entity=E, project=P)
    old = api.artifact("m:v0")
    old.aliases.append("latest")
    with pytest.raises(InvalidInput, match="latest"):
        old.save()
    new = api.artifact("m:v1")
    new.aliases.remove("latest")
    with pytest.raises(InvalidInput, match="latest"):
        new.save()
    assert alias_targets(store, "m") == {"latest": 1}


ALIAS_WRITER = textwrap.dedent("""
    import sys, time
    import objstore
    store, me, go = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    api = objstore.Api(store=store, entity="e", project="p")
    while time.time() < go:
        time.sleep(0.001)
    for j in range(5):
        art = api.artifact("e/p/m:v0")
        art.aliases.append(f"w{me}-{j}")
        art.save()
    print("done", flush=True)
""")


def _alias_race(store: str, tmp_path: Path, writers: int = 8) -> None:
    script = tmp_path / "writer.py"
    script.write_text(ALIAS_WRITER)
    go = time.time() + 3.0
    procs = [subprocess.Popen([sys.executable, str(script), store, str(i), str(go)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(writers)]
    for proc in procs:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert out.strip() == "done"


def test_eight_processes_adding_aliases_lose_none(tmp_path: Path) -> None:
    store = tmp_path / "store"
    log(store, "m", A_BYTES, tmp_path)
    _alias_race(str(store), tmp_path)
    got = alias_targets(store, "m")
    wanted = {f"w{i}-{j}": 0 for i in range(8) for j in range(5)} | {"latest": 0}
    assert got == wanted, f"lost {sorted(set(wanted) - set(got))}"


@pytest.mark.s3
def test_eight_processes_adding_aliases_lose_none_on_s3(tmp_path: Path, s3_bucket_url: str) -> None:
    log(s3_bucket_url, "m", A_BYTES, tmp_path)  # type: ignore[arg-type]
    _alias_race(s3_bucket_url, tmp_path)
    got = alias_targets(Store.open(s3_bucket_url), "m")
    wanted = {f"w{i}-{j}": 0 for i in range(8) for j in range(5)} | {"latest": 0}
    assert got == wanted, f"lost {sorted(set(wanted) - set(got))}"


# -- class 7: refs that point into another collection ---------------------------------

def _two_collections(tmp_path: Path) -> tuple[Path, str, str]:
    """A store with e/p/a (A's bytes, alias production) and e/p/b (B's bytes);
    returns the store and the version ids of a:v0 and b:v0."""
    store = tmp_path / "store"
    a = log(store, "a", A_BYTES, tmp_path, aliases=["production"])
    b = log(store, "b", B_BYTES, tmp_path)
    return store, a.id, b.id


def _forge(store: Path, ref: str, oid_hex: str) -> None:
    _write(ref_file(store, ref), oid_hex.encode() + b"\n")


def _pushed_remote(tmp_path: Path, store: Path) -> Path:
    remote = tmp_path / "remote"
    remote_add(Store.open(store), "origin", str(remote))
    objstore.push(str(store), "origin")
    return remote


def test_clone_refuses_an_alias_pointing_into_another_collection(tmp_path: Path) -> None:
    store, a_id, b_id = _two_collections(tmp_path)
    remote = _pushed_remote(tmp_path, store)
    _forge(remote, alias_ref(E, P, "a", "production"), b_id)
    with pytest.raises(CorruptObject, match="aliases/production"):
        objstore.clone(str(remote), tmp_path / "clone")
    assert not (tmp_path / "clone").exists()


def test_pull_refuses_a_forged_alias_and_never_serves_the_other_bytes(tmp_path: Path) -> None:
    store, a_id, b_id = _two_collections(tmp_path)
    remote = _pushed_remote(tmp_path, store)
    clone, _ = objstore.clone(str(remote), tmp_path / "clone")
    clone.close()
    _forge(remote, alias_ref(E, P, "a", "production"), b_id)
    with pytest.raises(CorruptObject, match="aliases/production"):
        objstore.pull(str(tmp_path / "clone"))
    assert use(tmp_path / "clone", "e/p/a:production", tmp_path / "out") == A_BYTES


def test_pull_refuses_a_forged_digest_ref(tmp_path: Path) -> None:
    store, a_id, b_id = _two_collections(tmp_path)
    remote = _pushed_remote(tmp_path, store)
    s = Store.open(store)
    a_digest = objstore.Api(store=s, entity=E, project=P).artifact("a:v0").digest
    _forge(remote, digest_ref(E, P, "a", a_digest), b_id)
    with pytest.raises(CorruptObject, match="digests/"):
        objstore.clone(str(remote), tmp_path / "clone")


# W&B's alias rule takes "has space" and ".hidden" now; "/" and ":" it never takes
# (encoded, they are a key part like any other: only the rule refuses them).
@pytest.mark.parametrize("bad_alias", ["v3", "a/b", "a:b"])
def test_clone_refuses_an_alias_whose_name_breaks_the_rules(tmp_path: Path, bad_alias: str) -> None:
    store, a_id, b_id = _two_collections(tmp_path)
    remote = _pushed_remote(tmp_path, store)
    _forge(remote, alias_ref(E, P, "a", bad_alias), a_id)
    with pytest.raises(ObjstoreError, match=re.escape(bad_alias)):
        objstore.clone(str(remote), tmp_path / "clone")
    assert not (tmp_path / "clone").exists()


def test_pull_refuses_an_alias_named_like_a_version(tmp_path: Path) -> None:
    store, a_id, b_id = _two_collections(tmp_path)
    remote = _pushed_remote(tmp_path, store)
    objstore.clone(str(remote), tmp_path / "clone")[0].close()
    _forge(remote, alias_ref(E, P, "a", "v3"), a_id)
    with pytest.raises((CorruptObject, InvalidName), match="v3"):
        objstore.pull(str(tmp_path / "clone"))
    assert not ref_file(tmp_path / "clone", alias_ref(E, P, "a", "v3")).exists()


def test_local_version_ref_edited_to_another_collection_is_refused_and_reported(tmp_path: Path) -> None:
    store, a_id, b_id = _two_collections(tmp_path)
    _forge(store, version_ref(E, P, "a", 0), b_id)
    with pytest.raises(CorruptObject, match="versions/v0"):
        use(store, "e/p/a:v0", tmp_path / "out")
    with pytest.raises(CorruptObject):
        objstore.Api(store=str(store), entity=E, project=P).artifact("a:v0")
    report = fsck(Store.open(store))
    assert not report.ok
    assert any("refs/e/p/a/versions/v0" in p.message for p in report.problems), [p.message for p in report.problems]
    result = run_cli(store, "fsck", check=False)
    assert result.code == 3, result
    assert "refs/e/p/a/versions/v0" in result.out + result.err


def test_local_alias_edited_to_another_collection_is_refused_and_reported(tmp_path: Path) -> None:
    store, a_id, b_id = _two_collections(tmp_path)
    _forge(store, alias_ref(E, P, "a", "production"), b_id)
    with pytest.raises(CorruptObject, match="aliases/production"):
        use(store, "e/p/a:production", tmp_path / "out")
    report = fsck(Store.open(store))
    assert any("refs/e/p/a/aliases/production" in p.message for p in report.problems), [p.message for p in report.problems]


def test_local_version_ref_with_the_wrong_number_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "store"
    a0 = log(store, "a", A_BYTES, tmp_path)
    log(store, "a", B_BYTES, tmp_path)
    _forge(store, version_ref(E, P, "a", 1), a0.id)  # v1 now holds the object numbered v0
    with pytest.raises(CorruptObject, match="versions/v1"):
        use(store, "e/p/a:v1", tmp_path / "out")
    report = fsck(Store.open(store))
    assert any("refs/e/p/a/versions/v1" in p.message for p in report.problems), [p.message for p in report.problems]


def test_registry_link_ref_pointing_elsewhere_is_refused(tmp_path: Path) -> None:
    store = tmp_path / "store"
    src = _write(tmp_path / "src" / "a.bin", A_BYTES)
    with objstore.init(project=P, entity=E, store=store) as run:
        run.link_model(str(src), "RegA", name="a")
        run.link_model(str(_write(tmp_path / "src" / "b.bin", B_BYTES)), "RegB", name="b")
    s = Store.open(store)
    regb_link = s.refs.read(version_ref(E, "model-registry", "RegB", 0))
    assert regb_link is not None
    _forge(store, version_ref(E, "model-registry", "RegA", 0), regb_link.hex)
    with pytest.raises(CorruptObject, match="RegA/versions/v0"):
        use(store, "e/model-registry/RegA:v0", tmp_path / "out")
    report = fsck(Store.open(store))
    assert any("RegA/versions/v0" in p.message for p in report.problems), [p.message for p in report.problems]


@pytest.mark.s3
@pytest.mark.parametrize("forged", ["other-collection", "alias-v3"])
def test_clone_and_pull_from_a_forged_bucket_are_refused(tmp_path: Path, s3_bucket_url: str, forged: str) -> None:
    from objstore.storage.backend import open_backend

    store, a_id, b_id = _two_collections(tmp_path)
    remote_add(Store.open(store), "origin", s3_bucket_url)
    objstore.push(str(store), "origin")
    objstore.clone(s3_bucket_url, tmp_path / "clone")[0].close()
    bucket = open_backend(s3_bucket_url)
    try:
        if forged == "other-collection":
            key, value = alias_ref(E, P, "a", "production"), b_id
        else:
            key, value = alias_ref(E, P, "a", "v3"), a_id
        bucket.put(key, value.encode() + b"\n")
    finally:
        bucket.close()
    with pytest.raises(CorruptObject, match=key.rsplit("/", 2)[-2] + "/" + key.rsplit("/", 1)[-1]):
        objstore.clone(s3_bucket_url, tmp_path / "clone2")
    assert not (tmp_path / "clone2").exists()
    with pytest.raises(CorruptObject):
        objstore.pull(str(tmp_path / "clone"))
    assert use(tmp_path / "clone", "e/p/a:production", tmp_path / "out") == A_BYTES
    assert not ref_file(tmp_path / "clone", alias_ref(E, P, "a", "v3")).exists()
