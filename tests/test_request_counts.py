"""Requests per command, counted (never timed) on the real SeaweedFS server.

What a command costs must not grow with the store's history (issue 13): the
constant cost of ``use_model`` of a one-file version and ``log_model`` of a
small file, and that cost on a store written by many more sessions. Each
command opens its own Store (a new process would), so nothing is remembered
between commands but what the store holds; requests are the backend's own
count (each HTTP request, retries included; a listing page is one).

``log`` of a long collection is bounded by the versions it shows, counted on a
local store (the local backend counts one per file operation, the same unit).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from cli_helpers import run_cli

import objstore
import objstore.api.runinfo
from objstore.model.names import CollectionPath
from objstore.model.store import Store
from objstore.model.versions import commit_version, log_page
from objstore.storage.objects import SYMLINK, Tree, TreeEntry

USE_MODEL_BOUND = 15
LOG_MODEL_BOUND = 25
LOG_PAGE_BOUND = 60


def _counted(location: str | Path, command: Callable[[Store], object]) -> int:
    """Requests of ``command`` on a freshly opened store, the opening included."""
    store = Store.open(location, create=False)
    try:
        command(store)
    finally:
        store.close()
    return store.backend.stats.requests


def _log_session(location: str | Path, tmp: Path, i: int) -> None:
    """One session of its own (a fresh Store: a process of its own) logging a small file."""
    path = tmp / f"model-{i}.bin"
    path.write_bytes(os.urandom(20_000))
    with Store.open(location) as store, objstore.init(entity="team", project="p", store=store) as run:
        run.log_model(str(path), name="model")


def _use_model(tmp: Path) -> Callable[[Store], object]:
    def command(store: Store) -> None:
        with objstore.init(entity="team", project="p", store=store) as run:
            run.use_model("model:latest", root=tmp / f"out-{os.urandom(4).hex()}")
    return command


def _log_model(tmp: Path) -> Callable[[Store], object]:
    def command(store: Store) -> None:
        path = tmp / f"new-{os.urandom(4).hex()}.bin"
        path.write_bytes(os.urandom(20_000))
        with objstore.init(entity="team", project="p", store=store) as run:
            run.log_model(str(path), name="model")
    return command


def _costs(location: str, tmp: Path) -> tuple[int, int]:
    return _counted(location, _use_model(tmp)), _counted(location, _log_model(tmp))


@pytest.mark.s3
def test_constant_cost_of_use_model_and_log_model(s3_bucket_url: str, tmp_path: Path) -> None:
    _log_session(s3_bucket_url, tmp_path, 0)
    use, log = _costs(s3_bucket_url, tmp_path)
    assert use <= USE_MODEL_BOUND, f"use_model of a one-file version took {use} requests"
    assert log <= LOG_MODEL_BOUND, f"log_model of a small file took {log} requests"


@pytest.mark.s3
def test_constant_cost_on_a_cold_machine_reading_loose_idx_files(s3_bucket_url: str, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A store written by 10 sessions (10 ``.idx`` files no index file covers, under
    the compaction threshold), each command on a machine with an empty cache: the
    index is consulted newest first and only as far as the command needs, so the
    loose ``.idx`` files are not one GET each. Sessions a second apart, as a team's
    are: a bucket dates its keys to the second, and newest first needs the dates."""
    for i in range(10):
        _log_session(s3_bucket_url, tmp_path, i)
        time.sleep(1.05)
    costs = []
    for command in (_use_model(tmp_path), _log_model(tmp_path)):
        cold = tmp_path / f"cache-{os.urandom(4).hex()}"
        monkeypatch.setenv("XDG_CACHE_HOME", str(cold))
        costs.append(_counted(s3_bucket_url, command))
    use, log = costs
    print(f"cold, 10 sessions: use_model {use} requests, log_model {log}")
    assert use <= USE_MODEL_BOUND, f"use_model of a one-file version took {use} requests, cold, after 10 sessions"
    assert log <= LOG_MODEL_BOUND, f"log_model of a small file took {log} requests, cold, after 10 sessions"


@pytest.mark.s3
def test_run_record_is_written_at_use_and_at_finish_by_use_model(s3_bucket_url: str, tmp_path: Path) -> None:
    _log_session(s3_bucket_url, tmp_path, 0)
    store = Store.open(s3_bucket_url, create=False)
    before = {i.key for i in store.backend.iter_prefix("objects/")}
    _use_model(tmp_path)(store)
    runs = [k for k in (i.key for i in store.backend.iter_prefix("objects/")) if k not in before]
    assert len(runs) == 2  # two run records: started with its input (at use), finished
    [run] = [r for r in objstore.api.runinfo.iter_runs(store, "team", "p") if r.inputs]
    assert run.state == "finished" and len(run.inputs) == 1
    assert len(store.refs.reflog(f"refs/team/p/runs/{run.id}")) == 2
    store.close()


@pytest.mark.s3
def test_requests_flat_in_history(s3_bucket_url: str, tmp_path: Path) -> None:
    """5 sessions against 60 (past the compaction threshold several times): at most 1.5x + 10.
    ``log`` shows the newest 5 both times: what it shows may cost more, history may not."""
    for i in range(5):
        _log_session(s3_bucket_url, tmp_path, i)
    small = _costs(s3_bucket_url, tmp_path)
    small_log = _counted(s3_bucket_url, lambda s: log_page(s, CollectionPath("team", "p", "model"), limit=5))
    for i in range(5, 60):
        _log_session(s3_bucket_url, tmp_path, i)
    large = _costs(s3_bucket_url, tmp_path)
    large_log = _counted(s3_bucket_url, lambda s: log_page(s, CollectionPath("team", "p", "model"), limit=5))
    for what, a, b in (("use_model", small[0], large[0]), ("log_model", small[1], large[1]),
                       ("log", small_log, large_log)):
        assert b <= 1.5 * a + 10, f"{what}: {a} requests after 5 sessions, {b} after 60"


def _many_versions(location: Path, count: int) -> None:
    """``count`` versions of team/p/model, cheaply (one symlink each: no chunks, no packs)."""
    coll = CollectionPath("team", "p", "model")
    with Store.open(location) as store:
        for i in range(count):
            tree = store.odb.put_object(Tree((TreeEntry("link", SYMLINK, 1, target=f"t{i}"),)))
            commit_version(store, coll, tree=tree, size=1, new_bytes=0, artifact_type="model", metadata={},
                           description=None, run=f"team/p/run{i % 7}")


def test_log_first_page_is_bounded_by_what_it_shows(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    _many_versions(store_dir, 130)
    coll = CollectionPath("team", "p", "model")
    first = _counted(store_dir, lambda s: log_page(s, coll, limit=50))
    assert first <= LOG_PAGE_BOUND, f"the newest 50 of 130 versions took {first} requests"
    whole = _counted(store_dir, lambda s: log_page(s, coll))
    assert whole <= 130 + 20, f"all 130 versions took {whole} requests"  # about one per version shown
    page = Store.open(store_dir)
    try:
        shown = log_page(page, coll, limit=50, skip=50)
    finally:
        page.close()
    assert [e.index for e in shown.entries] == list(range(79, 29, -1))
    assert shown.total == 130


def test_log_pages_on_the_command_line(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    _many_versions(store_dir, 60)
    first = run_cli(store_dir, "log", "team/p/model", "--json").json()
    assert isinstance(first, dict)
    assert [v["version"] for v in first["versions"]] == [f"v{i}" for i in range(59, 9, -1)]
    assert first["total"] == 60
    rest = run_cli(store_dir, "log", "team/p/model", "--skip", "50", "--json").json()
    assert isinstance(rest, dict)
    assert [v["version"] for v in rest["versions"]] == [f"v{i}" for i in range(9, -1, -1)]
    everything = run_cli(store_dir, "log", "team/p/model", "-n", "0", "--json").json()
    assert isinstance(everything, dict)
    assert len(everything["versions"]) == 60
    assert everything["versions"][0]["aliases"] == ["latest"]
    assert all(v["run_state"] == "absent" for v in everything["versions"])  # no run records were written


@pytest.mark.s3
def test_a_listing_counts_the_pages_it_requests(s3_bucket_url: str) -> None:
    """The backend's count is what the server sees: a listing is one request per page of
    a thousand keys, not one per call into the stream (it used to count three for one page)."""
    from objstore.storage.backend import open_backend

    backend = open_backend(s3_bucket_url)
    for i in range(3):
        backend.put(f"few/{i}", b"x")
    for kind, expected in (("few/", 1), ("none/", 1)):
        before = backend.stats.requests
        list(backend.iter_prefix(kind))
        assert backend.stats.requests - before == expected, kind
    backend.close()


def test_a_run_never_finished_is_written_at_exit(tmp_path: Path) -> None:
    """Changes are held until the record is next written; a script that never calls
    finish (and drops its run) still records what it used, when the interpreter exits."""
    import subprocess
    import sys
    import textwrap

    store_dir = tmp_path / "store"
    _log_session(str(store_dir), tmp_path, 0)
    script = tmp_path / "unfinished.py"
    script.write_text(textwrap.dedent(f"""
        import objstore
        def work():
            run = objstore.init(entity="team", project="p", store={str(store_dir)!r}, id="unfinished", reinit="create_new")
            run.use_model("model:latest", root={str(tmp_path / "out")!r})
        work()
    """))
    subprocess.run([sys.executable, str(script)], check=True, capture_output=True)
    with Store.open(store_dir, create=False) as store:
        run = objstore.api.runinfo.read_run_by_path(store, "team/p/unfinished")
    assert run.state == "running" and len(run.inputs) == 1


@pytest.mark.parametrize("how", ["use_model", "use_artifact"])
def test_what_a_run_used_is_recorded_when_the_process_is_killed_outright(tmp_path: Path, how: str) -> None:
    """An input reaches the store when it is used: a process killed by SIGKILL (or
    the OOM killer) right after, with no finish and no exit handler, still leaves
    a run record naming it."""
    import signal
    import subprocess
    import sys
    import textwrap

    store_dir = tmp_path / "store"
    _log_session(str(store_dir), tmp_path, 0)
    script = tmp_path / "killed.py"
    use = (f'run.use_model("model:latest", root={str(tmp_path / "out")!r})' if how == "use_model"
           else 'run.use_artifact("model:latest")')
    script.write_text(textwrap.dedent(f"""
        import os, signal
        import objstore
        run = objstore.init(entity="team", project="p", store={str(store_dir)!r}, id="killed")
        {use}
        os.kill(os.getpid(), signal.SIGKILL)
    """))
    done = subprocess.run([sys.executable, str(script)], capture_output=True)
    assert done.returncode == -signal.SIGKILL, done.stderr.decode()
    with Store.open(store_dir, create=False) as store:
        run = objstore.api.runinfo.read_run_by_path(store, "team/p/killed")
        [version] = run.inputs
        assert run.state == "running"
        assert version == objstore.Api(store=store, entity="team", project="p").artifact("model:latest").id
