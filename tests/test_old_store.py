"""Stores written by an earlier objstore stay readable.

``tests/golden/store_v1.tar.gz`` was written by ``tests/golden/make_store_v1.py``
with the code of the commit that added it, and is never regenerated: every
version in it must read back byte for byte as ``store_v1.json`` records, and the
store must fsck clean, whatever the read path, codecs or index loading become.

It is a format-1 store, shared (say) with users of the release that wrote it:
reading it, logging into it, gc and fsck leave it format 1 with no consolidated
index file (that release would miss the chunks of packs whose ``.idx`` one
replaced); only ``objstore maintenance --upgrade`` raises it (to format 3, the
current one), which that release refuses.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import subprocess
import tarfile
from pathlib import Path

import msgpack
import pytest
from cli_helpers import run_cli

import objstore
from objstore.constants import STORE_FORMAT
from objstore.errors import InvalidInput, UsageError
from objstore.maintenance.fsck import fsck
from objstore.maintenance.gc import collect_garbage
from objstore.model.store import CONFIG_KEY, Store, StoreConfig
from objstore.storage import codecs

GOLDEN = Path(__file__).parent / "golden"
EXPECTED: dict[str, dict[str, str]] = json.loads((GOLDEN / "store_v1.json").read_text())


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    with tarfile.open(GOLDEN / "store_v1.tar.gz") as tar:
        tar.extractall(tmp_path, filter="data")
    return tmp_path / "store"


def _contents(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        out[rel] = ("link:" + os.readlink(p)) if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _read_back(store: Path, tmp_path: Path, label: str) -> None:
    api = objstore.Api(store)
    for n, (spec, files) in enumerate(EXPECTED.items()):
        root = tmp_path / f"{label}{n}"
        art = api.artifact(spec)
        art.download(root)
        assert _contents(root) == files, spec
        art.verify(root)


def test_the_fixture_uses_every_codec_of_its_day(old_store: Path) -> None:
    with Store.open_existing(old_store) as store:
        store.odb.refresh()
        used = {loc.codec for _, loc in store.odb.index.iter_entries()}
    assert used == {codecs.RAW, codecs.ZSTD, codecs.BYTEGROUP2, codecs.BYTEGROUP4}


def test_every_version_reads_back_byte_identical(old_store: Path, tmp_path: Path) -> None:
    _read_back(old_store, tmp_path, "out")


def test_aliases_links_and_runs_are_there(old_store: Path) -> None:
    api = objstore.Api(old_store)
    assert api.artifact("old/fixture/tiny:first").version == "v0"
    assert api.artifact("old/model-registry/tiny-registered:prod").digest == api.artifact("old/fixture/tiny:v1").digest
    assert api.artifact("old/model-registry/tiny-registered:latest").digest == api.artifact("old/fixture/tiny:v1").digest
    run = api.artifact("old/fixture/tiny:v1").logged_by()
    assert run is not None and run.state == "finished"


def test_it_fscks_clean(old_store: Path) -> None:
    with Store.open_existing(old_store) as store:
        report = fsck(store)
    assert report.ok, report.to_dict()
    assert report.versions >= 3


def test_a_clone_of_it_reads_back(old_store: Path, tmp_path: Path) -> None:
    clone_dir = tmp_path / "clone"
    objstore.clone(str(old_store), clone_dir)
    _read_back(clone_dir, tmp_path, "cloned")


# -- the format gate ---------------------------------------------------------------


def _format(store: Path) -> int:
    fmt = msgpack.unpackb((store / CONFIG_KEY).read_bytes())["format"]
    assert isinstance(fmt, int)
    return fmt


def _assert_still_format_1(store: Path, config: bytes) -> None:
    assert (store / CONFIG_KEY).read_bytes() == config
    assert not list((store / "packs").glob("*.midx"))
    packs = {p.stem for p in (store / "packs").glob("*.pack")}
    assert packs and packs == {p.stem for p in (store / "packs").glob("*.idx")}


def test_reads_logs_gc_and_fsck_leave_it_format_1(old_store: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = (old_store / CONFIG_KEY).read_bytes()
    assert _format(old_store) == 1
    monkeypatch.setenv("OBJSTORE_INDEX_COMPACT_THRESHOLD", "1")  # any writer on a newer store would compact
    _read_back(old_store, tmp_path, "out")
    _assert_still_format_1(old_store, config)
    for i in range(3):
        data = tmp_path / f"new{i}.bin"
        data.write_bytes(os.urandom(50_000))
        with objstore.init(project="fixture", entity="old", store=str(old_store)) as run:
            run.log_model(path=str(data), name=f"new{i}")
    _assert_still_format_1(old_store, config)
    with Store.open_existing(old_store) as store:
        collect_garbage(store, grace_seconds=0)
        assert fsck(store).ok
        with pytest.raises(UsageError, match="upgrade"):
            store.odb.compact_index()
    _assert_still_format_1(old_store, config)
    r = run_cli(old_store, "maintenance")
    assert "--upgrade" in r.out
    _assert_still_format_1(old_store, config)
    _read_back(old_store, tmp_path, "again")


def test_maintenance_upgrade_raises_it_to_format_3_then_compacts(old_store: Path, tmp_path: Path) -> None:
    r = run_cli(old_store, "maintenance", "--upgrade")
    assert "upgraded from format 1 to 3" in r.out and "refuse" in r.out
    assert _format(old_store) == 3 == STORE_FORMAT
    assert len(list((old_store / "packs").glob("*.midx"))) == 1 and not list((old_store / "packs").glob("*.idx"))
    with Store.open_existing(old_store) as store:
        assert store.config.format == 3 and store.odb.index_files
        assert fsck(store).ok
    _read_back(old_store, tmp_path, "out")
    # A reader that knows only format 1 (the check it runs) refuses the upgraded store.
    monkeypatch = pytest.MonkeyPatch()
    with monkeypatch.context() as m:
        m.setattr("objstore.model.store.STORE_FORMAT", 1)
        with pytest.raises(InvalidInput, match="has format 3; this objstore reads up to 1: upgrade objstore"):
            StoreConfig.decode((old_store / CONFIG_KEY).read_bytes(), old_store)
    again = run_cli(old_store, "maintenance", "--upgrade", "--json").json()
    assert isinstance(again, dict) and again["upgraded"] is False


def test_a_new_store_is_format_3_and_compacts_by_itself(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBJSTORE_INDEX_COMPACT_THRESHOLD", "2")
    store = tmp_path / "store"
    for i in range(3):
        data = tmp_path / f"m{i}.bin"
        data.write_bytes(os.urandom(50_000))
        with objstore.init(project="p", entity="e", store=str(store)) as run:
            run.log_model(path=str(data), name=f"m{i}")
    assert _format(store) == 3
    assert list((store / "packs").glob("*.midx"))


def _upgrade(store: str, barrier: multiprocessing.synchronize.Barrier, results: multiprocessing.Queue[tuple[bool, int]]) -> None:
    with Store.open_existing(store) as s:
        barrier.wait()
        upgraded = s.upgrade()
        results.put((upgraded, s.config.format))


def test_two_processes_upgrading_at_once_make_one_swap(old_store: Path) -> None:
    config = StoreConfig.decode((old_store / CONFIG_KEY).read_bytes())
    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_upgrade, args=(str(old_store), barrier, results)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    got = sorted(results.get(timeout=10) for _ in procs)
    assert got == [(False, 3), (True, 3)]
    after = StoreConfig.decode((old_store / CONFIG_KEY).read_bytes())
    assert after == StoreConfig(3, config.chunking, config.created_at)  # nothing else changed


OLD_RELEASE = os.environ.get("OBJSTORE_OLD_RELEASE_PYTHON")  # a python with the format-1 release (24b944b) installed


@pytest.mark.skipif(not OLD_RELEASE, reason="set OBJSTORE_OLD_RELEASE_PYTHON to a python with objstore at 24b944b")
def test_the_format_1_release_refuses_the_upgraded_store(old_store: Path) -> None:
    assert OLD_RELEASE
    script = "import sys; from objstore.model.store import Store; from objstore.maintenance.gc import collect_garbage; " \
             "collect_garbage(Store.open_existing(sys.argv[1]), grace_seconds=0)"
    before = subprocess.run([OLD_RELEASE, "-c", script, str(old_store)], capture_output=True, text=True, cwd="/")
    assert before.returncode == 0, before.stderr  # it uses the store it wrote
    run_cli(old_store, "maintenance", "--upgrade")
    listing = sorted(p.name for p in (old_store / "packs").iterdir())
    after = subprocess.run([OLD_RELEASE, "-c", script, str(old_store)], capture_output=True, text=True, cwd="/")
    assert after.returncode != 0 and "upgrade objstore" in after.stderr
    assert sorted(p.name for p in (old_store / "packs").iterdir()) == listing
