"""An objstore from before the lineage index (the release before 07aa31d) and a
store whose index says it is complete.

That release records runs without ``lineage/used|logged/<version>/<run>`` keys,
so an index it wrote beside would miss its runs: ``used_by`` trusting
``lineage/complete`` would not list them. The decision (git's rule for a
repository format it does not know): the trusted index is store format 3, which
that release (it knows formats 1 and 2) refuses; on a format-2 store the index
is kept up but every run is read, and ``objstore maintenance --upgrade`` raises
the store to 3, drops a ``lineage/complete`` written at format 2 and indexes
every run once. The older release is the real code of that commit, run in a
subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
from cli_helpers import run_cli
from old_releases import extract_release

import objstore
from objstore.model.store import CONFIG_KEY
from objstore.storage.keys import LINEAGE_COMPLETE

OLD_RELEASE = "07aa31d^"  # the last commit before the lineage index


@pytest.fixture(scope="module")
def old_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return extract_release(OLD_RELEASE, tmp_path_factory)


def old_use(old_release: Path, store: Path, spec: str) -> subprocess.CompletedProcess[str]:
    """The older release runs a run that uses ``spec``; its run id on stdout."""
    code = ("import sys, objstore\n"
            "assert objstore.__file__.startswith(sys.argv[3]), objstore.__file__\n"
            "with objstore.init(entity='e', project='p', store=sys.argv[1]) as run:\n"
            "    run.use_model(sys.argv[2])\n"
            "    print(run.id)\n")
    return subprocess.run([sys.executable, "-c", code, str(store), spec, str(old_release)], capture_output=True,
                          text=True, timeout=120, check=False, cwd=old_release,
                          env={"PYTHONPATH": str(old_release), "PATH": "/usr/bin:/bin"})


def users(store: Path) -> set[str]:
    return {r.id for r in objstore.Api(store=store, entity="e", project="p").artifact("e/p/m:v0").used_by()}


def _store_with_a_version(tmp_path: Path) -> Path:
    store = tmp_path / "store"
    (tmp_path / "m.bin").write_bytes(b"weights")
    with objstore.init(entity="e", project="p", store=store) as run:
        run.log_model(str(tmp_path / "m.bin"), name="m")
    return store


def test_the_release_before_the_index_refuses_a_store_whose_index_is_trusted(old_release: Path, tmp_path: Path) -> None:
    store = _store_with_a_version(tmp_path)
    assert (store / LINEAGE_COMPLETE).exists()
    done = old_use(old_release, store, "e/p/m:v0")
    assert done.returncode != 0 and "has format 3; this objstore reads up to 2: upgrade objstore" in done.stderr
    assert users(store) == set()


def test_on_a_format_2_store_its_runs_are_found_and_the_upgrade_indexes_them(old_release: Path, tmp_path: Path) -> None:
    """A format-2 store with ``lineage/complete`` (what stop 23 created): the older
    release writes a run using v0 there; used-by trusted the index and missed it."""
    store = _store_with_a_version(tmp_path)
    config = msgpack.unpackb((store / CONFIG_KEY).read_bytes())
    (store / CONFIG_KEY).chmod(0o644)
    (store / CONFIG_KEY).write_bytes(msgpack.packb({**config, "format": 2}))
    assert (store / LINEAGE_COMPLETE).exists()
    done = old_use(old_release, store, "e/p/m:v0")
    assert done.returncode == 0, done.stderr
    old_run = done.stdout.strip()
    assert not list((store / "lineage" / "used").rglob(f"*{old_run}*"))  # it wrote no index key
    assert users(store) == {old_run}
    r = run_cli(store, "maintenance", "--upgrade")
    assert "upgraded from format 2 to 3" in r.out and "lineage: indexed" in r.out
    assert (store / LINEAGE_COMPLETE).exists() and list((store / "lineage" / "used").rglob(f"*{old_run}*"))
    assert users(store) == {old_run}  # now by the index
    refused = old_use(old_release, store, "e/p/m:v0")
    assert refused.returncode != 0 and "upgrade objstore" in refused.stderr
