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
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from cli_helpers import run_cli

import objstore
from objstore.errors import CorruptObject, InvalidInput, InvalidName, ObjstoreError
from objstore.fsck import fsck
from objstore.names import CollectionPath
from objstore.refs import alias_ref, digest_ref, version_ref
from objstore.remotes import remote_add
from objstore.store import Store
from objstore.versions import list_aliases, list_versions

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
