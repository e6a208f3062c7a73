"""An objstore older than tombstones (the release before 450bf2d) writing to a
store where a version was deleted: it logs past the deleted number (its claim
fails there) but leaves ``latest`` behind it. ``objstore gc`` (its expiry step)
and this release's next log put ``latest`` right. The older release is the real
code of that commit, run in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
from old_releases import extract_release

import objstore
from objstore.model.deletion import expire_versions
from objstore.model.store import CONFIG_KEY, Store

OLD_RELEASE = "450bf2d^"  # the last commit before deleted versions left tombstones


@pytest.fixture(scope="module")
def old_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return extract_release(OLD_RELEASE, tmp_path_factory)


def old_log(old_release: Path, store: Path, path: Path) -> str:
    code = ("import sys, objstore\n"
            "with objstore.init(entity='e', project='p', store=sys.argv[1]) as run:\n"
            "    print(run.log_model(sys.argv[2], name='m').version)\n"
            "assert objstore.__file__.startswith(sys.argv[3]), objstore.__file__\n")
    done = subprocess.run([sys.executable, "-c", code, str(store), str(path), str(old_release)], capture_output=True,
                          text=True, timeout=120, check=False, cwd=old_release, env={"PYTHONPATH": str(old_release),
                                                                                       "PATH": "/usr/bin:/bin"})
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def latest(store: Path) -> str:
    return objstore.Api(store=store).artifact("e/p/m:latest").version


def test_gc_and_the_next_log_put_right_a_latest_an_older_release_left_behind(old_release: Path, tmp_path: Path) -> None:
    for name in "abcd":
        (tmp_path / name).write_bytes(name.encode())
    store = tmp_path / "store"
    with objstore.init(entity="e", project="p", store=store) as run:
        run.log_model(str(tmp_path / "a"), name="m")
        run.log_model(str(tmp_path / "b"), name="m")
    # A store of format 2, the newest that release knows (it refuses format 3, see test_old_release_lineage).
    config = store / CONFIG_KEY
    config.chmod(0o644)
    config.write_bytes(msgpack.packb({**msgpack.unpackb(config.read_bytes()), "format": 2}))
    objstore.Api(store=store).artifact("e/p/m:v1").delete(delete_aliases=True)
    assert latest(store) == "v0"
    assert old_log(old_release, store, tmp_path / "c") == "v2"  # past the deleted number: it stays taken
    assert latest(store) == "v0"  # what the older release leaves
    assert expire_versions(Store.open_existing(store)).settled == ("e/p/m",)
    assert latest(store) == "v2"
    assert expire_versions(Store.open_existing(store)).settled == ()  # nothing left to put right

    objstore.Api(store=store).artifact("e/p/m:v2").delete(delete_aliases=True)
    assert old_log(old_release, store, tmp_path / "d") == "v3"
    assert latest(store) == "v0"
    with objstore.init(entity="e", project="p", store=store) as run:
        assert run.log_model(str(tmp_path / "b"), name="m").version == "v4"
    assert latest(store) == "v4"
    with pytest.raises(objstore.errors.NotFound):
        objstore.Api(store=store).artifact("e/p/m:v1")
