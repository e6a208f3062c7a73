"""W&B's distributed artifacts: ``run.upsert_artifact(…, distributed_id=…)`` from
several real processes at once, ``run.finish_artifact`` in one of them making one
version holding every part; the edge cases as W&B has them (no group and no id: a
TypeError; a finish with nothing upserted logs its own files; parts upserted after
a finish go into the next version; another name is another artifact; another type
is refused with W&B's message); pending parts survive gc; writers on two machines
sharing a remote push their parts and the finisher pulls them (objstore.transfer.parts)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cli_helpers import run_cli

import objstore
from objstore import errors
from objstore.maintenance.fsck import fsck
from objstore.maintenance.gc import collect_garbage
from objstore.model.store import Store

# One worker: waits for the start file (so all upsert at once), then upserts its files.
_WORKER = textwrap.dedent("""
    import os, sys, time, pathlib
    import objstore as wandb
    store, worker, start, files = sys.argv[1], int(sys.argv[2]), pathlib.Path(sys.argv[3]), int(sys.argv[4])
    d = pathlib.Path(sys.argv[5]) / f"w{worker}"
    d.mkdir()
    for i in range(files):
        (d / f"w{worker}-{i}.txt").write_text(f"worker {worker} file {i}\\n" * (i + 1))
    while not start.exists():
        time.sleep(0.01)
    with wandb.init(entity="team", project="dist", group="job-7", job_type="shard", store=store) as run:
        for i in range(files):  # one upsert per file: many parts per process, all racing
            art = wandb.Artifact("shards", type="dataset", metadata={f"worker{worker}": i})
            art.add_file(str(d / f"w{worker}-{i}.txt"), name=f"w{worker}/{i}.txt")
            run.upsert_artifact(art, aliases=[f"w{worker}"])
""")


def _workers(store: Path | str, tmp_path: Path, n: int, files: int, first: int = 0) -> None:
    tmp_path.mkdir(exist_ok=True)
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    start = tmp_path / "start"
    procs = [subprocess.Popen([sys.executable, str(script), str(store), str(w), str(start), str(files), str(tmp_path)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for w in range(first, first + n)]
    start.touch()
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()


def test_parts_upserted_by_racing_processes_finish_into_one_version_holding_all(tmp_path: Path) -> None:
    _racing_parts(tmp_path / "store", tmp_path)


@pytest.mark.s3
def test_parts_upserted_by_racing_processes_on_s3(s3_bucket_url: str, tmp_path: Path) -> None:
    _racing_parts(s3_bucket_url, tmp_path)


def _racing_parts(store: Path | str, tmp_path: Path) -> None:
    n, files = 4, 3
    _workers(store, tmp_path, n, files)
    with objstore.init(entity="team", project="dist", group="job-7", store=store) as run:
        final = objstore.Artifact("shards", type="dataset", metadata={"finished": True})
        done = run.finish_artifact(final)
    assert done.version == "v0" and done.created and done.state == "COMMITTED" and done.distributed_id == "job-7"
    expected = {f"w{w}/{i}.txt" for w in range(n) for i in range(files)}
    assert set(done.manifest.entries) == expected
    assert sorted(done.aliases) == sorted({"latest", *(f"w{w}" for w in range(n))})
    assert done.metadata["finished"] is True and {f"worker{w}" for w in range(n)} <= set(done.metadata)
    root = Path(done.download(tmp_path / "out"))
    for w in range(n):
        for i in range(files):
            assert (root / f"w{w}/{i}.txt").read_text() == f"worker {w} file {i}\n" * (i + 1)
    api = objstore.Api(store=store)
    assert [a.version for a in api.artifacts("dataset", "team/dist/shards")] == ["v0"]  # one version, not one per part
    # Lineage: the finishing run and every upserting run list the version as an output.
    shard_runs = [r for r in api.runs("team/dist") if r.job_type == "shard"]
    assert len(shard_runs) == n and all(done.id in r.outputs for r in shard_runs)
    assert fsck(Store.open_existing(store) if isinstance(store, Path) else Store.open(store)).ok
    # The parts were taken: a second finish has nothing pending, and an empty draft has no files.
    with objstore.init(entity="team", project="dist", group="job-7", store=store) as run:
        with pytest.raises(errors.InvalidInput, match="has no files"):
            run.finish_artifact(objstore.Artifact("shards", type="dataset"))


def test_a_part_upserted_after_a_finish_goes_into_the_next_version(tmp_path: Path) -> None:
    store = tmp_path / "store"
    for name in ("a", "b", "c"):
        (tmp_path / name).write_text(name)
    with objstore.init(entity="e", project="p", store=store) as run:
        run.upsert_artifact(str(tmp_path / "a"), name="data", type="dataset", distributed_id="d1")
        first = run.finish_artifact(str(tmp_path / "b"), name="data", type="dataset", distributed_id="d1")
        assert set(first.manifest.entries) == {"a", "b"} and first.version == "v0"
        # Finishing twice: the parts were taken by the first, so the second is its own files alone.
        again = run.finish_artifact(str(tmp_path / "b"), name="data", type="dataset", distributed_id="d1")
        assert again.created and again.version == "v1" and set(again.manifest.entries) == {"b"}
        # ... and once more with the same content: no new version (objstore's content dedup).
        same = run.finish_artifact(str(tmp_path / "b"), name="data", type="dataset", distributed_id="d1")
        assert not same.created and same.version == "v1"
        run.upsert_artifact(str(tmp_path / "c"), name="data", type="dataset", distributed_id="d1")
        second = run.finish_artifact(str(tmp_path / "a"), name="data", type="dataset", distributed_id="d1")
    assert second.version == "v2" and set(second.manifest.entries) == {"a", "c"}  # the new part and the finishing file


def test_finish_with_no_upserts_logs_its_own_files_and_other_names_are_other_artifacts(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (tmp_path / "x").write_text("x")
    (tmp_path / "y").write_text("y")
    with objstore.init(entity="e", project="p", store=store) as run:
        alone = run.finish_artifact(str(tmp_path / "x"), name="solo", type="model", distributed_id="never-upserted")
        assert set(alone.manifest.entries) == {"x"} and alone.version == "v0"
        with pytest.raises(ValueError, match="Artifact solo already exists with type 'model'; cannot create another with type 'dataset'"):
            run.upsert_artifact(str(tmp_path / "y"), name="solo", type="dataset", distributed_id="z")  # the collection's type
        run.upsert_artifact(str(tmp_path / "y"), name="left", type="dataset", distributed_id="d")
        other = run.finish_artifact(str(tmp_path / "x"), name="right", type="dataset", distributed_id="d")
        assert set(other.manifest.entries) == {"x"}  # a mismatched name finishes its own artifact, not "left"'s parts
        assert not objstore.Api(store=store).artifact_exists("e/p/left:latest")  # still pending
        done = run.finish_artifact(objstore.Artifact("left", type="dataset"), distributed_id="d")
        assert set(done.manifest.entries) == {"y"}


def test_wandb_errors_and_a_finalized_part(tmp_path: Path) -> None:
    store = tmp_path / "store"
    (tmp_path / "f").write_text("f")
    with objstore.init(entity="e", project="p", store=store) as run:  # no group
        for call in (run.upsert_artifact, run.finish_artifact):
            with pytest.raises(TypeError, match="unless run is in a group or distributed_id is provided"):
                call(str(tmp_path / "f"), name="n", type="dataset")
        art = objstore.Artifact("n", type="dataset")
        art.add_file(str(tmp_path / "f"))
        out = run.upsert_artifact(art, distributed_id="d")
        assert out is art and art.state == "PENDING" and art.distributed_id == "d"
        assert art.wait() is art and art.state == "PENDING"  # W&B waits for the upload, which is done here
        with pytest.raises(errors.ArtifactFinalizedError):
            art.add_file(str(tmp_path / "f"), name="g")
        with pytest.raises(errors.ArtifactFinalizedError):
            art.remove("f")
        with pytest.raises(errors.UnsupportedError, match="distributed_id"):
            art.distributed_id = "other"  # type: ignore[misc]
        # Another type than the parts' (or than the collection's): W&B's ValueError.
        with pytest.raises(ValueError, match="already exists with type 'dataset'; cannot create another with type 'model'"):
            run.upsert_artifact(str(tmp_path / "f"), name="n", type="model", distributed_id="d")
        with pytest.raises(ValueError, match="already exists with type 'dataset'"):
            run.finish_artifact(str(tmp_path / "f"), name="n", type="model", distributed_id="d")
        with pytest.raises(errors.InvalidName, match="distributed_id"):
            run.upsert_artifact(str(tmp_path / "f"), name="n", type="dataset", distributed_id="")


def test_a_disabled_runs_distributed_calls_do_nothing(tmp_path: Path) -> None:
    run = objstore.init(entity="e", project="p", mode="disabled", store=tmp_path / "store")
    run.upsert_artifact(str(tmp_path / "nothing"), distributed_id="d")
    run.finish_artifact(str(tmp_path / "nothing"), distributed_id="d")
    run.finish()
    assert not (tmp_path / "store").exists()


def test_pending_parts_survive_gc_until_finished(tmp_path: Path) -> None:
    store = tmp_path / "store"
    payload = bytes(range(256)) * 4096
    (tmp_path / "big.bin").write_bytes(payload)
    with objstore.init(entity="e", project="p", group="g", store=store) as run:
        run.upsert_artifact(str(tmp_path / "big.bin"), name="weights", type="model")
    opened = Store.open_existing(store)
    collect_garbage(opened, grace_seconds=0)
    collect_garbage(opened, grace_seconds=0)  # marked, then due: a pending part must be neither
    (tmp_path / "big.bin").unlink()
    with objstore.init(entity="e", project="p", group="g", store=store) as run:
        (tmp_path / "card.md").write_text("card")
        done = run.finish_artifact(str(tmp_path / "card.md"), name="weights", type="model")
    root = Path(done.download(tmp_path / "out"))
    assert (root / "big.bin").read_bytes() == payload and (root / "card.md").read_text() == "card"
    assert fsck(Store.open_existing(store)).ok


@pytest.mark.parametrize("claims", [True, False], ids=["claimed", "store-older-than-claims"])
def test_an_upsert_into_a_case_twin_is_refused_before_any_ref(tmp_path: Path, claims: bool) -> None:
    store = tmp_path / "store"
    (tmp_path / "f").write_text("f")
    with objstore.init(entity="team", project="proj", store=store) as run:
        run.log_artifact(str(tmp_path / "f"), name="Data", type="dataset")
    if not claims:
        shutil.rmtree(store / "names")  # as a store written before name claims: the listing must find the twin
    for entity, project, name in (("team", "proj", "data"), ("Team", "other", "x"), ("team", "PROJ", "x")):
        run = objstore.init(entity=entity, project=project, store=store)
        with pytest.raises(errors.InvalidName, match="differs only in case"):
            run.upsert_artifact(str(tmp_path / "f"), name=name, type="dataset", distributed_id="d")
    keys = [k.key for k in Store.open_existing(store).backend.iter_prefix("refs/")]
    assert not [k for k in keys if "/pending/" in k or k.startswith(("refs/Team/", "refs/team/PROJ/"))]


def test_parts_pushed_from_two_machines_are_pulled_and_finished_by_one(tmp_path: Path) -> None:
    _parts_across_machines(tmp_path / "remote", tmp_path)


@pytest.mark.s3
def test_parts_across_machines_through_an_s3_remote(s3_bucket_url: str, tmp_path: Path) -> None:
    _parts_across_machines(s3_bucket_url, tmp_path)


def _parts_across_machines(remote: Path | str, tmp_path: Path) -> None:
    """Machines A and B each run two upserting processes into their own store, and
    push; B pulls A's parts and finishes: one v0 with every file. Pushing it clears
    the parts on the remote; A's pull clears its own; nothing is finished twice."""
    a, b, files = tmp_path / "a", tmp_path / "b", 3
    Store.open(remote)
    _workers(a, tmp_path / "wa", 2, files)
    _workers(b, tmp_path / "wb", 2, files, first=2)
    assert [r for r in objstore.push(a, str(remote)).refs if "/pending/" in r] and objstore.push(b, str(remote)).refs
    objstore.push(a, str(remote))  # again: nothing new, nothing refused
    pulled = objstore.pull(b, str(remote))
    assert len([r for r in pulled.refs if "/pending/" in r]) == 2 * files  # A's parts, not B's own
    with objstore.init(entity="team", project="dist", group="job-7", store=b) as run:
        done = run.finish_artifact(objstore.Artifact("shards", type="dataset"))
    expected = {f"w{w}/{i}.txt" for w in range(4) for i in range(files)}
    assert done.version == "v0" and set(done.manifest.entries) == expected
    objstore.push(b, str(remote))
    objstore.push(a, str(remote))  # A has not pulled: its parts, finished there, are not brought back
    objstore.pull(a, str(remote))
    for store in (a, b, remote):
        opened = Store.open_existing(store) if isinstance(store, Path) else Store.open(store)
        api = objstore.Api(store=opened)
        assert [x.version for x in api.artifacts("dataset", "team/dist/shards")] == ["v0"], store
        assert set(api.artifact("team/dist/shards:v0").manifest.entries) == expected
        assert fsck(opened).ok
        with objstore.init(entity="team", project="dist", group="job-7", store=opened) as run:
            with pytest.raises(errors.InvalidInput, match="has no files"):  # nothing pending anywhere
                run.finish_artifact(objstore.Artifact("shards", type="dataset"))


def test_a_collection_holding_only_pending_parts_is_listed_with_no_version(tmp_path: Path) -> None:
    """As W&B (the collection exists from the first upsert; its one version is PENDING,
    and ``artifacts`` lists COMMITTED versions): listed by ``artifact_collections``
    and ``objstore ls``, found by ``artifact_collection(_exists)``, with no version."""
    store = tmp_path / "store"
    (tmp_path / "a").write_text("part a")
    with objstore.init(entity="team", project="dist", store=store) as run:
        run.upsert_artifact(str(tmp_path / "a"), name="shards", type="dataset", distributed_id="d1")
    api = objstore.Api(store=store, entity="team", project="dist")
    [coll] = api.artifact_collections("dist")
    assert (coll.name, coll.type, coll.version_count, coll.aliases) == ("shards", "dataset", 0, [])
    assert api.artifact_collection("dataset", "shards").artifacts() == []
    assert api.artifact_collection_exists("shards", "dataset") and not api.artifact_collection_exists("shards", "model")
    assert api.artifacts("dataset", "shards") == [] and [t.name for t in api.artifact_types("dist")] == ["dataset"]
    assert not api.artifact_exists("shards:latest")  # no version until finished
    with pytest.raises(errors.NotFound):
        api.artifacts("dataset", "nothing-here")
    listed = run_cli(store, "ls", "team/dist", "--json").json()["collections"]
    assert listed == [{"name": "shards", "type": "dataset", "versions": 0, "aliases": []}]
    assert "0 (pending)" in run_cli(store, "ls", "team/dist").out
    assert run_cli(store, "ls", "--json").json()["projects"] == [{"entity": "team", "project": "dist", "collections": 1}]
    with objstore.init(entity="team", project="dist", store=store) as run:
        run.finish_artifact(str(tmp_path / "a"), name="shards", type="dataset", distributed_id="d1")
    assert [a.version for a in api.artifact_collection("dataset", "shards").artifacts()] == ["v0"]
