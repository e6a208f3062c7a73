"""Mixed concurrency: writers logging, linking and moving aliases while gc and fsck run.

Eight writer processes share one store for a bounded time. Each loops: log a new
model into a shared collection and into its own, link one into a shared
registered model, move its own alias and a shared one. One process runs gc in a
loop (with a short grace period, so marking and deleting really happen while
writers write), another runs fsck in a loop. Every step a writer completes is
printed (acknowledged). Afterwards:

- every acknowledged version is there, holding what its writer logged;
- versions of every collection are dense, and ``latest`` is the newest;
- each writer's own alias is where its last acknowledged move put it, and the
  shared alias is at one of the acknowledged targets;
- fsck is clean, and none of the concurrent fscks saw damage.

The same runs against a store on the shared S3 bucket (SeaweedFS), with fewer
writers and a shorter time.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import objstore
from objstore.maintenance.fsck import fsck
from objstore.model.store import Store
from objstore.model.versions import list_aliases, list_collections, list_versions

WRITER = textwrap.dedent("""
    import os, random, sys, time, json
    import objstore
    from objstore.errors import Conflict, LockTimeout
    store, me, deadline, work = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    rng = random.Random(me)
    base = rng.randbytes(120_000)
    def emit(*words):
        print(json.dumps(words), flush=True)
    step = 0
    api = objstore.Api(store=store, entity="e", project="p")
    # One round at least, however late this process started: on a loaded machine a
    # writer may reach the loop after the deadline, and the test counts one version each.
    while step == 0 or time.time() < deadline:
        step += 1
        path = os.path.join(work, f"w{me}-{step}.bin")
        with open(path, "wb") as f:
            f.write(base[: 60_000 + rng.randrange(60_000)] + f"{me}-{step}".encode() + rng.randbytes(2_000))
        with objstore.init(project="p", entity="e", store=store) as run:
            shared = run.log_model(path, name="shared")
            emit("version", "e/p/shared", shared.version, shared.digest)
            own = run.log_model(path, name=f"own-{me}")
            emit("version", f"e/p/own-{me}", own.version, own.digest)
            if step % 2 == 0:
                linked = run.link_model(path, "reg", name=f"own-{me}")
                emit("version", "e/model-registry/reg", linked.version, linked.digest)
        art = api.artifact(f"own-{me}:{own.version}")
        art.aliases.append(f"w{me}")
        art.save()
        emit("alias", f"e/p/own-{me}", f"w{me}", own.version)
        art = api.artifact(f"shared:{shared.version}")
        if "best" not in art.aliases:
            art.aliases.append("best")
            art.save()
        emit("alias", "e/p/shared", "best", shared.version)
    emit("done")
""")

GC = textwrap.dedent("""
    import sys, time
    from objstore.model.store import Store
    from objstore.maintenance.gc import collect_garbage
    store, deadline, grace = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    runs = 0
    while time.time() < deadline:
        collect_garbage(Store.open_existing(store), grace_seconds=grace)
        runs += 1
        time.sleep(0.2)
    print("gc runs", runs, flush=True)
""")

FSCK = textwrap.dedent("""
    import sys, time, json
    from objstore.model.store import Store
    from objstore.maintenance.fsck import fsck
    store, deadline = sys.argv[1], float(sys.argv[2])
    runs = 0
    while time.time() < deadline:
        report = fsck(Store.open_existing(store))
        runs += 1
        for p in report.problems:
            print(json.dumps(["problem", p.kind, p.message]), flush=True)
    print(json.dumps(["fsck runs", runs]), flush=True)
""")


def _run(store: str, tmp_path: Path, writers: int, seconds: float, grace: float) -> None:
    Store.open(store).close()
    work = tmp_path / "work"
    work.mkdir()
    deadline = time.time() + seconds
    env = dict(os.environ)
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, store, str(i), str(deadline), str(work)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env) for i in range(writers)]
    gc = subprocess.Popen(
        [sys.executable, "-c", GC, store, str(deadline), str(grace)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    checker = subprocess.Popen(
        [sys.executable, "-c", FSCK, store, str(deadline)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    outputs = [p.communicate(timeout=seconds + 300) for p in procs]
    gc_out = gc.communicate(timeout=300)
    fsck_out = checker.communicate(timeout=300)
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    assert gc.returncode == 0, gc_out[1][-3000:]
    assert checker.returncode == 0, fsck_out[1][-3000:]
    # What the fsck running beside the writers saw is checked last: first whether the store really
    # lost anything (everything acknowledged reads back, a final fsck is clean), so a failure says
    # which of the two it is (a report beside repacks was once a false one: fsck's re-look).
    seen_damage = [json.loads(line) for line in fsck_out[0].splitlines() if line.startswith('["problem"')]

    versions: dict[tuple[str, str], str] = {}
    aliases: dict[tuple[str, str], list[str]] = {}
    for out, _ in outputs:
        events = [json.loads(line) for line in out.splitlines()]
        assert events and events[-1] == ["done"]
        for ev in events:
            if ev[0] == "version":
                key = (ev[1], ev[2])
                assert versions.setdefault(key, ev[3]) == ev[3], f"{key} acknowledged with two contents"
            elif ev[0] == "alias":
                aliases.setdefault((ev[1], ev[2]), []).append(ev[3])
    assert len({k for k in versions if k[0] == "e/p/shared"}) >= writers

    s = Store.open_existing(store)
    api = objstore.Api(store=s, entity="e", project="p")
    for (coll, vname), digest in versions.items():
        assert api.artifact(f"{coll}:{vname}").digest == digest, f"{coll}:{vname} lost or changed"
    for ent, proj in (("e", "p"), ("e", "model-registry")):
        for coll in list_collections(s, ent, proj):
            idx = [i for i, _ in list_versions(s, coll)]
            assert idx == list(range(len(idx))), f"{coll}: versions not dense: {idx}"
            assert list_aliases(s, coll)["latest"] == list_versions(s, coll)[-1][1], f"{coll}: latest is behind"
    for (coll, alias), targets in aliases.items():
        at = api.artifact(f"{coll}:{alias}").version
        if alias == "best":
            assert at in targets, f"{coll}:{alias} at {at}, never acknowledged"
        else:
            assert at == targets[-1], f"{coll}:{alias} at {at}; its only writer last moved it to {targets[-1]}"
    report = fsck(s)
    assert report.ok, [p.message for p in report.problems]
    # Everything acknowledged still reads back whole after gc had its go at the store.
    for i, ((coll, vname), _) in enumerate(sorted(versions.items())[:20]):
        api.artifact(f"{coll}:{vname}").download(tmp_path / "out" / str(i))
    assert not seen_damage, f"the store is whole, but the fsck beside the writers reported: {seen_damage}"


def test_mixed_writers_gc_and_fsck_local(tmp_path: Path) -> None:
    _run(str(tmp_path / "store"), tmp_path, writers=8, seconds=float(os.environ.get("OBJSTORE_CONCURRENCY_SECONDS", "12")), grace=1.0)


@pytest.mark.s3
def test_mixed_writers_gc_and_fsck_s3(s3_bucket_url: str, tmp_path: Path) -> None:
    _run(s3_bucket_url, tmp_path, writers=4, seconds=float(os.environ.get("OBJSTORE_CONCURRENCY_SECONDS", "12")), grace=1.0)
