"""Porting from W&B, deleting and retention: ``Artifact.delete``, ``unlink``, ttl
expiry; numbers never reused; gc frees the bytes; ``latest`` stays the store's."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import objstore
from objstore import errors
from objstore.maintenance.fsck import fsck
from objstore.maintenance.gc import collect_garbage
from objstore.model.deletion import expire_versions
from objstore.model.names import CollectionPath
from objstore.model.store import Store
from objstore.model.versions import list_versions
from objstore.storage.keys import ANNOTATIONS, collection_prefix


def log(store: Path | str, tmp_path: Path, content: bytes, name: str = "m", aliases: list[str] | None = None) -> objstore.Artifact:
    f = tmp_path / "m.bin"
    f.write_bytes(content)
    with objstore.init(entity="e", project="p", store=store) as run:
        return run.log_model(str(f), name=name, aliases=aliases)


@pytest.fixture
def store(tmp_path: Path) -> Path:
    s = tmp_path / "s"
    for i in range(3):
        log(s, tmp_path, os.urandom(3000) + bytes([i]), aliases=["best"] if i == 0 else None)
    return s


def api(store: Path | str) -> objstore.Api:
    return objstore.Api(store=store)


def test_delete_a_version_without_aliases(store: Path, tmp_path: Path) -> None:
    api(store).artifact("e/p/m:v1").delete()
    with pytest.raises(errors.NotFound, match="deleted"):
        api(store).artifact("e/p/m:v1")
    assert [a.version for a in api(store).artifact_versions(None, "e/p/m")] == ["v0", "v2"]
    assert log(store, tmp_path, b"new").version == "v3"  # v1 is never given again


def test_a_runs_artifacts_leave_out_deleted_versions(store: Path, tmp_path: Path) -> None:
    """As W&B (a deleted version is in no run's list), so its documented loop
    ``for a in run.logged_artifacts(): a.delete(delete_aliases=True)`` runs twice."""
    with objstore.init(entity="e", project="p", store=store) as run:
        run.use_model("m:v1", root=str(tmp_path / "use"))
        run.use_model("m:v2", root=str(tmp_path / "use2"))
    api(store).artifact("e/p/m:v1").delete()
    runs = api(store).runs("e/p")
    assert [a.version for r in runs for a in r.logged_artifacts()] == ["v0", "v2"]
    assert [a.version for a in runs[-1].used_artifacts()] == ["v2"]
    for _ in range(2):
        for r in api(store).runs("e/p"):
            for a in r.logged_artifacts():
                a.delete(delete_aliases=True)
    assert not any(api(store).artifact_exists(f"e/p/m:v{i}") for i in range(3))


def test_delete_is_refused_while_the_version_has_aliases(store: Path) -> None:
    v0 = api(store).artifact("e/p/m:v0")
    with pytest.raises(errors.CommError, match="best"):  # W&B's server refuses with a CommError
        v0.delete()
    assert api(store).artifact("e/p/m:best").version == "v0"
    v0.delete(delete_aliases=True)
    with pytest.raises(errors.NotFound):
        api(store).artifact("e/p/m:best")


def test_deleting_the_latest_version_moves_latest_back_and_logging_goes_on(store: Path, tmp_path: Path) -> None:
    api(store).artifact("e/p/m:v2").delete(delete_aliases=True)
    assert api(store).artifact("e/p/m:latest").version == "v1"
    api(store).artifact("e/p/m:v1").delete(delete_aliases=True)
    assert api(store).artifact("e/p/m:latest").version == "v0"
    new = log(store, tmp_path, b"after")
    assert new.version == "v3"
    assert api(store).artifact("e/p/m:latest").version == "v3"  # latest passed over the deleted numbers
    assert fsck(Store.open_existing(store)).ok


def test_logging_deleted_content_again_makes_a_new_version(tmp_path: Path) -> None:
    s = tmp_path / "s"
    log(s, tmp_path, b"same")
    log(s, tmp_path, b"other")
    api(s).artifact("e/p/m:v0").delete()
    again = log(s, tmp_path, b"same")
    assert again.created and again.version == "v2"
    assert log(s, tmp_path, b"same").version == "v2"  # and it is found by digest from then on


def test_save_and_delete_of_a_deleted_version_say_so(store: Path) -> None:
    a, b = api(store).artifact("e/p/m:v1"), api(store).artifact("e/p/m:v1")
    a.delete()
    b.aliases.append("prod")
    with pytest.raises(errors.NotFound, match="deleted"):
        b.save()
    with pytest.raises(errors.NotFound, match="deleted"):
        b.delete()


def test_latest_is_the_stores_to_move(store: Path) -> None:
    v0 = api(store).artifact("e/p/m:v0")
    v0.aliases.append("latest")
    with pytest.raises(errors.InvalidInput, match="managed by the store"):
        v0.save()
    v2 = api(store).artifact("e/p/m:v2")
    v2.aliases.remove("latest")
    with pytest.raises(errors.InvalidInput, match="managed by the store"):
        v2.save()


def test_unlink_and_delete_of_a_registry_link(tmp_path: Path) -> None:
    s = tmp_path / "s"
    (tmp_path / "m.bin").write_bytes(b"w")
    (tmp_path / "n.bin").write_bytes(b"x")
    with objstore.init(entity="e", project="p", store=s) as run:
        run.link_model(str(tmp_path / "m.bin"), "Reg", name="m", aliases=["prod"])
        run.link_model(str(tmp_path / "n.bin"), "Reg", name="n")
    source = api(s).artifact("e/p/m:v0")
    with pytest.raises(ValueError, match="not a linked artifact"):
        source.unlink()
    with pytest.raises(errors.CommError, match="linked from"):
        source.delete(delete_aliases=True)
    api(s).artifact("e/model-registry/Reg:prod").unlink()
    with pytest.raises(errors.NotFound):
        api(s).artifact("e/model-registry/Reg:v0")
    assert api(s).artifact("e/p/m:v0").digest == source.digest  # the source stays
    api(s).artifact("e/model-registry/Reg:v1").delete()  # on a link, delete unlinks
    assert api(s).artifact("e/p/n:v0").version == "v0"
    source.delete(delete_aliases=True)  # no link left
    assert fsck(Store.open_existing(s)).ok


def _store_bytes(root: Path) -> int:
    return sum(f.stat().st_size for f in (root / "packs").rglob("*") if f.is_file()) + \
        sum(f.stat().st_size for f in (root / "objects").rglob("*") if f.is_file())


def test_gc_frees_a_deleted_versions_bytes_after_the_grace_period(tmp_path: Path) -> None:
    s = tmp_path / "s"
    log(s, tmp_path, os.urandom(400_000))
    big = log(s, tmp_path, os.urandom(2_000_000))
    big.aliases.append("best")
    big.save()
    big.tags = ["x"]
    big.save()
    opened = Store.open_existing(s)
    collect_garbage(opened, grace_seconds=0)
    before = _store_bytes(s)
    api(s).artifact("e/p/m:v1").delete(delete_aliases=True)
    report = collect_garbage(opened, grace_seconds=3600)  # marks only: a reader that resolved it may still read
    assert report.packs_deleted == 0 and _store_bytes(s) >= before - 10_000
    collect_garbage(opened, grace_seconds=0)
    assert _store_bytes(s) < before - 1_500_000
    assert fsck(opened).ok
    assert api(s).artifact("e/p/m:latest").version == "v0"
    assert Path(api(s).artifact("e/p/m:v0").download(tmp_path / "out")).is_dir()
    assert not any("/v1/" in i.key for i in opened.backend.iter_prefix(ANNOTATIONS))


def test_ttl_expires_versions_by_the_same_mechanism(tmp_path: Path) -> None:
    s = tmp_path / "s"
    keep = log(s, tmp_path, os.urandom(5000))
    doomed = log(s, tmp_path, os.urandom(500_000), aliases=["candidate"])
    doomed.ttl = timedelta(hours=1)
    doomed.save()
    keep.ttl = None
    keep.save()
    opened = Store.open_existing(s)
    assert expire_versions(opened).expired == ()  # not yet
    later = time.time() + 2 * 3600
    plan = expire_versions(opened, now=later, dry_run=True)
    assert [d.version for d in plan.expired] == ["e/p/m:v1"]
    assert api(s).artifact("e/p/m:v1").version == "v1"  # a dry run deletes nothing
    done = expire_versions(opened, now=later)
    assert [(d.version, sorted(d.aliases)) for d in done.expired] == [("e/p/m:v1", ["candidate", "latest"])]
    with pytest.raises(errors.NotFound, match="deleted"):
        api(s).artifact("e/p/m:v1")
    assert api(s).artifact("e/p/m:latest").version == "v0"
    collect_garbage(opened, grace_seconds=0)
    assert fsck(opened).ok
    assert [i for i, _ in list_versions(opened, CollectionPath("e", "p", "m"))] == [0]


def test_a_linked_version_does_not_expire(tmp_path: Path) -> None:
    s = tmp_path / "s"
    (tmp_path / "m.bin").write_bytes(b"w")
    with objstore.init(entity="e", project="p", store=s) as run:
        run.link_model(str(tmp_path / "m.bin"), "Reg", name="m")
    art = api(s).artifact("e/p/m:v0")
    art.ttl = timedelta(seconds=1)
    art.save()
    result = expire_versions(Store.open_existing(s), now=time.time() + 10)
    assert result.expired == () and [k for k, _ in result.kept] == ["e/p/m:v0"]


def test_delete_collection_drops_its_annotations(store: Path) -> None:
    art = api(store).artifact("e/p/m:v0")
    art.tags = ["x"]
    art.save()
    from objstore.model.deletion import delete_collection
    opened = Store.open_existing(store)
    delete_collection(opened, CollectionPath("e", "p", "m"))
    assert list(opened.backend.iter_prefix(ANNOTATIONS)) == []


def test_a_writer_whose_new_version_is_deleted_before_it_moves_latest_gives_up_at_once(tmp_path: Path) -> None:
    # The race above, one step at a time: a writer holds its new version's entry
    # (mine) while a deleter tombstones that version and moves latest back. Moving
    # latest onto it, seeing the tombstone and retreating must not repeat: with the
    # entry taken from the writer's hand each time, it did, 10,000 times, then Conflict.
    from objstore.model import versions as v

    s = tmp_path / "s"
    log(s, tmp_path, b"zero")
    log(s, tmp_path, b"one")
    opened = Store.open_existing(s)
    coll = CollectionPath("e", "p", "m")
    (_, _), (index, oid) = list_versions(opened, coll)
    ref = v.version_ref("e", "p", "m", index)
    mine = v.read_entry(opened, coll, oid, ref=ref)
    api(s).artifact(f"e/p/m:v{index}").delete(delete_aliases=True)
    assert api(s).artifact("e/p/m:latest").version == "v0"
    started = time.monotonic()
    v.advance_latest(opened, coll, index, mine=(ref, mine))
    assert time.monotonic() - started < 5
    assert api(s).artifact("e/p/m:latest").version == "v0"  # never left on the deleted version
    assert fsck(Store.open_existing(s)).ok


RACER = textwrap.dedent('''
    import os, sys, time
    from pathlib import Path
    import objstore
    from objstore import errors
    store, go, role, seconds, work = sys.argv[1], Path(sys.argv[2]), sys.argv[3], float(sys.argv[4]), sys.argv[5]
    while not go.exists():
        time.sleep(0.001)
    end = time.time() + seconds
    n = 0
    while time.time() < end:
        try:
            if role == "log":
                f = Path(work, f"m-{os.getpid()}.bin")
                f.write_bytes(os.urandom(20_000) + str(n).encode())
                with objstore.init(entity="e", project="p", store=store) as run:
                    run.log_model(str(f), name="m")
            elif role == "use":
                with objstore.init(entity="e", project="p", store=store) as run:
                    run.use_model("m:latest", root=str(Path(work, f"use-{os.getpid()}")))
            else:
                versions = objstore.Api(store=store).artifact_versions(None, "e/p/m")
                # One deleter takes the oldest, one the newest (latest moves back). More than
                # two: each has at most one delete in flight, so one version is always left
                # (with > 1, both could see the same two and delete both).
                if len(versions) > 2:
                    versions[0 if role == "delete-old" else -1].delete(delete_aliases=True)
        except errors.NotFound:
            pass  # deleted under us: the race this test is about
        n += 1
''')


def _delete_race(store: str, tmp_path: Path, seconds: float) -> None:
    log(store, tmp_path, os.urandom(20_000))
    go = tmp_path / "go"
    roles = ["log", "log", "use", "delete-old", "delete-new"]
    procs = [subprocess.Popen([sys.executable, "-c", RACER, store, str(go), role, str(seconds), str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              env={**os.environ, "OBJSTORE_QUIET": "1"}) for role in roles]
    time.sleep(1.0)
    go.touch()
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    opened = Store.open_existing(store)
    report = fsck(opened)
    assert report.ok, report.problems
    versions = list_versions(opened, CollectionPath("e", "p", "m"))
    deleted = [i for i in opened.backend.iter_prefix(collection_prefix("e", "p", "m") + "versions/") if i.size == 0]
    assert deleted and versions, "the race deleted nothing, or left nothing"
    latest = api(store).artifact("e/p/m:latest")
    assert latest.version == f"v{versions[-1][0]}"  # latest is the newest version left
    collect_garbage(opened, grace_seconds=0)
    assert fsck(opened).ok
    for index, _ in versions:
        api(store).artifact(f"e/p/m:v{index}").download(tmp_path / f"dl{index}")


def test_delete_racing_use_model_and_log_model_leaves_fsck_clean_local(tmp_path: Path) -> None:
    _delete_race(str(tmp_path / "s"), tmp_path, seconds=6)


@pytest.mark.s3
def test_delete_racing_use_model_and_log_model_leaves_fsck_clean_s3(s3_bucket_url: str, tmp_path: Path) -> None:
    _delete_race(s3_bucket_url, tmp_path, seconds=6)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(st.sampled_from(["log", "delete"]), st.integers(0, 3)), min_size=1, max_size=12))
def test_numbers_are_never_reused_and_latest_is_the_newest_left(tmp_path: Path, steps: list[tuple[str, int]]) -> None:
    """Against a model: logging content k (0..3) and deleting the k-th version left,
    in any order: each new version gets a number above every number given before,
    content already held is found again, deleted content is new again, and
    ``latest`` is the newest version left."""
    s = tmp_path / f"s{time.time_ns()}"
    given_numbers: list[int] = []
    live: dict[int, int] = {}  # number -> content
    for op, k in steps:
        if op == "log":
            art = log(s, tmp_path, b"content %d" % k)
            n = int(art.version[1:])
            held = [num for num, c in live.items() if c == k]
            if held:
                assert not art.created and n == held[0]
            else:
                assert art.created and n > max(given_numbers, default=-1)
                given_numbers.append(n)
                live[n] = k
        elif live:
            n = sorted(live)[k % len(live)]
            api(s).artifact(f"e/p/m:v{n}").delete(delete_aliases=True)
            del live[n]
        if live:
            assert api(s).artifact("e/p/m:latest").version == f"v{max(live)}"
        elif given_numbers:
            with pytest.raises(errors.NotFound):
                api(s).artifact("e/p/m:latest")
    if given_numbers:
        assert fsck(Store.open_existing(s)).ok


@pytest.mark.parametrize("call", ["delete", "unlink", "annotation_history"])
def test_a_draft_has_nothing_to_delete(call: str) -> None:
    with pytest.raises(errors.ArtifactNotLoggedError, match=call):
        getattr(objstore.Artifact("d", type="dataset"), call)()
