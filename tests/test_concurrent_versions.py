"""Many processes logging or linking at once: versions stay dense (v0..v7), each
holds what its writer logged, and ``latest`` moved through every one of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import objstore
from objstore.model.store import Store
from objstore.storage.keys import alias_ref

WRITERS = 8

WRITER = textwrap.dedent('''
    import json, os, sys, time
    from pathlib import Path
    import objstore

    store, go, mode, i = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    model = Path(store).parent / f"model-{i}.bin"
    model.write_bytes(os.urandom(50_000) + f"writer {i}".encode())
    while not go.exists():  # start together, to make the race real
        time.sleep(0.001)
    with objstore.init(project="race", entity="team", store=store) as run:
        if mode == "log":
            art = run.log_model(str(model), name="shared")
        else:
            art = run.link_model(str(model), registered_model_name="Shared-Model", name=f"model-{i}")
    print(json.dumps({"writer": i, "version": art.version, "digest": art.digest, "file": str(model)}))
''')


def _race(tmp_path: Path, mode: str) -> list[dict[str, object]]:
    store = tmp_path / "store"
    Store.open(store)
    go = tmp_path / "go"
    env = {**os.environ, "OBJSTORE_QUIET": "1"}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(store), str(go), mode, str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(WRITERS)
    ]
    time.sleep(1.0)  # let every interpreter start and wait at the barrier
    go.touch()
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    return results


def _check(tmp_path: Path, results: list[dict[str, object]], name: str) -> None:
    api = objstore.Api(store=tmp_path / "store", entity="team", project="race")
    versions = api.artifact_versions(None, name)
    assert [v.version for v in versions] == [f"v{i}" for i in range(WRITERS)]
    assert sorted(r["version"] for r in results) == [f"v{i}" for i in range(WRITERS)]
    for r in results:
        art = api.artifact(f"{name}:{r['version']}")
        assert art.digest == r["digest"]
        got = Path(art.download(tmp_path / "out" / str(r["writer"])))
        files = list(got.iterdir())
        assert len(files) == 1 and files[0].read_bytes() == Path(str(r["file"])).read_bytes()
    store = Store.open(tmp_path / "store")
    coll = versions[0]._logged()[1].collection
    log = store.refs.reflog(alias_ref(coll.entity, coll.project, coll.name, "latest"))
    assert len(log) == WRITERS
    assert [store.odb.get_object(e.new).index for e in log] == list(range(WRITERS))
    assert api.artifact(f"{name}:latest").version == f"v{WRITERS - 1}"


def test_eight_processes_log_one_artifact(tmp_path: Path) -> None:
    results = _race(tmp_path, "log")
    _check(tmp_path, results, "team/race/shared")


def test_eight_processes_link_one_registered_model(tmp_path: Path) -> None:
    results = _race(tmp_path, "link")
    _check(tmp_path, results, "team/model-registry/Shared-Model")
