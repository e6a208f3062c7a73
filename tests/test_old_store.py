"""Stores written by an earlier objstore stay readable.

``tests/golden/store_v1.tar.gz`` was written by ``tests/golden/make_store_v1.py``
with the code of the commit that added it, and is never regenerated: every
version in it must read back byte for byte as ``store_v1.json`` records, and the
store must fsck clean, whatever the read path, codecs or index loading become.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from pathlib import Path

import pytest

import objstore
from objstore.maintenance.fsck import fsck
from objstore.model.store import Store
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
