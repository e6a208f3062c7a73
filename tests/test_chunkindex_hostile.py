"""Consolidated index files an adversary wrote with a valid checksum (a checksum
proves only that the writer meant it), a pack an index file lists gone, and
compactions running at once: a read gives the stored bytes or a clear error,
never another chunk's bytes; a dedup hit is never answered by a missing pack."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_chunkindex import COMPACTOR, _read_all, _sessions

import objstore
from objstore.errors import CorruptObject, NotFound
from objstore.maintenance.fsck import fsck
from objstore.maintenance.repair import repair_from
from objstore.model.store import Store
from objstore.storage.chunkindex import compact
from objstore.storage.indexfile import ENTRY_DTYPE, IndexFile, write_index_file


def _compacted(tmp_path: Path, count: int) -> tuple[Path, Path, Path]:
    store, files = tmp_path / "store", tmp_path / "files"
    _sessions(store, files, 0, count)
    compact(Store.open_existing(store).backend)
    (midx,) = (store / "packs").glob("*.midx")
    assert not list((store / "packs").glob("*.idx"))
    return store, files, midx


def _rewrite(midx: Path, edit: object) -> Path:
    """Replace ``midx`` by a file with its ids/entries edited and a valid checksum."""
    f = IndexFile.parse(midx.read_bytes(), midx.stem)
    packs = list(zip(f.pack_names, (int(s) for s in f.pack_sizes)))
    ids, entries = np.array(f.ids), np.array(f.entries)
    ids, entries = edit(ids, entries)  # type: ignore[operator]
    out = io.BytesIO()
    name = write_index_file(out, packs, ids, entries)
    forged = midx.parent / f"{name}.midx"
    forged.write_bytes(out.getvalue())
    midx.chmod(0o644)
    midx.unlink()
    return forged


def _read_or_refuse(store: Path, files: Path, which: range) -> None:
    api = objstore.Api(store=str(store), entity="e", project="p")
    for i in which:
        try:
            out = api.artifact(f"m{i}:latest").download(str(files.parent / "out" / str(i)))
        except (CorruptObject, NotFound):
            continue
        assert (Path(out) / f"m{i}.bin").read_bytes() == (files / f"m{i}.bin").read_bytes(), i


def _swap(ids: np.ndarray, entries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every id given the next id's location: each entry points at a real record of another chunk."""
    e = entries.copy()
    for field in ("pack", "offset", "stored_len", "raw_len", "codec"):
        e[field] = np.roll(entries[field], 1)
    return ids, e


def test_entries_swapped_between_chunks_never_give_another_chunks_bytes(tmp_path: Path) -> None:
    store, files, midx = _compacted(tmp_path, 4)
    _rewrite(midx, _swap)
    _read_or_refuse(store, files, range(4))
    assert not fsck(Store.open_existing(store)).ok


def test_fsck_names_the_index_file_to_delete(tmp_path: Path) -> None:
    store, files, midx = _compacted(tmp_path, 4)
    forged = _rewrite(midx, _swap)
    problems = fsck(Store.open_existing(store)).problems
    assert problems and all(forged.stem[:16] in p.message or p.object_id == forged.stem for p in problems), problems
    forged.unlink()  # as told, then repair (from a store with nothing: the packs are intact)
    repair_from(Store.open_existing(store), Store.open(tmp_path / "empty"))
    _read_all(store, files, range(4))
    report = fsck(Store.open_existing(store))
    assert report.ok, [p.message for p in report.problems]


def test_unsorted_ids_cost_a_miss_not_the_chunks(tmp_path: Path) -> None:
    """ids reversed (a valid checksum): a lookup may miss; reads fall back or fail clearly."""
    store, files, midx = _compacted(tmp_path, 4)
    _rewrite(midx, lambda ids, entries: (ids[::-1].copy(), entries[::-1].copy()))
    _read_or_refuse(store, files, range(4))
    assert not fsck(Store.open_existing(store)).ok


def test_a_pack_gone_under_an_index_file_is_no_dedup_hit(tmp_path: Path) -> None:
    """An index file lists a pack that no longer exists (lost, or deleted by hand):
    logging the same bytes again must store them again, not trust the entry."""
    store, files, midx = _compacted(tmp_path, 3)
    f = IndexFile.parse(midx.read_bytes(), midx.stem)
    for name in f.pack_names:
        (store / "packs" / f"{name}.pack").unlink()
    with objstore.init(project="p", entity="e", store=str(store)) as run:
        run.log_model(path=str(files / "m1.bin"), name="again")
    api = objstore.Api(store=str(store), entity="e", project="p")
    out = api.artifact("again:latest").download(str(tmp_path / "again"))
    assert (Path(out) / "m1.bin").read_bytes() == (files / "m1.bin").read_bytes()


def test_two_compactions_at_once_lose_nothing(tmp_path: Path) -> None:
    store, files = tmp_path / "store", tmp_path / "files"
    _sessions(store, files, 0, 6)
    for round_ in range(3):
        procs = [subprocess.Popen([sys.executable, "-c", COMPACTOR, str(store)], stderr=subprocess.PIPE) for _ in range(2)]
        for p in procs:
            _, err = p.communicate(timeout=120)
            assert p.returncode == 0, err.decode()[-2000:]
        _read_all(store, files, range(6 + 3 * round_))
        report = fsck(Store.open_existing(store))
        assert report.ok, [p.message for p in report.problems]
        _sessions(store, files, 6 + 3 * round_, 3)
    assert len(list((store / "packs").glob("*.midx"))) <= 3


def test_an_index_file_of_no_entries_parses() -> None:
    out = io.BytesIO()
    name = write_index_file(out, [], np.empty(0, "S32"), np.empty(0, ENTRY_DTYPE))
    f = IndexFile.parse(out.getvalue(), name)
    assert len(f) == 0 and f.pack_names == []


TRUNCATE_WHILE_MAPPED = """
import os, sys
from objstore.model.store import Store
from objstore.storage.indexfile import IndexFile
store, midx = sys.argv[1], sys.argv[2]
ids = [bytes(x).ljust(32, b"\\0") for x in IndexFile.parse(open(midx, "rb").read(), os.path.basename(midx)[:-5]).ids]
s = Store.open_existing(store)
s.odb.refresh()
assert s.odb.index.files, "no index file mapped"
assert all(loc is not None for loc in s.odb.index.locate_many(ids))
os.chmod(midx, 0o644)
os.truncate(midx, 0)  # another process (or a full disk's repair) cuts the file under the mapping
try:
    s.odb.index.locate_many(ids)
except Exception as exc:
    print("error:", type(exc).__name__)
print("alive")
"""


@pytest.mark.parametrize("cache", ["writable", "unusable"])
def test_an_index_file_truncated_while_mapped_is_no_crash(tmp_path: Path, cache: str) -> None:
    """Readers map a private copy in the user cache, or (no usable cache) read the
    file into memory: never the store's own file, which others may truncate."""
    store, _, midx = _compacted(tmp_path, 4)
    env = dict(os.environ)
    if cache == "unusable":
        blocker = tmp_path / "not-a-directory"
        blocker.write_bytes(b"")
        env["XDG_CACHE_HOME"] = str(blocker)
    proc = subprocess.run([sys.executable, "-c", TRUNCATE_WHILE_MAPPED, str(store), str(midx)],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0 and "alive" in proc.stdout, (proc.returncode, proc.stderr[-2000:])


def test_gc_right_after_a_compaction_killed_at_any_point_loses_nothing(tmp_path: Path) -> None:
    """SIGKILL at each fault point of a compaction, then gc with no grace (what a
    cron job would run next), then every version reads back and fsck is clean."""
    import shutil

    from objstore.maintenance.gc import collect_garbage

    base, files = tmp_path / "base", tmp_path / "files"
    _sessions(base, files, 0, 4)
    compact(Store.open_existing(base).backend)
    _sessions(base, files, 4, 4)  # the next compaction merges these with the first file
    for n in range(1, 60):
        store = tmp_path / f"s{n}"
        shutil.copytree(base, store)
        env = dict(os.environ, OBJSTORE_FAULT=f"any:{n}")
        proc = subprocess.run([sys.executable, "-c", COMPACTOR, str(store)], env=env, capture_output=True, timeout=120)
        assert proc.returncode in (0, -9), proc.stderr.decode()[-2000:]
        collect_garbage(Store.open_existing(store), grace_seconds=0)
        _read_all(store, files, range(8))
        report = fsck(Store.open_existing(store))
        assert report.ok, (n, [p.message for p in report.problems])
        shutil.rmtree(store)
        if proc.returncode == 0:
            break
    else:
        pytest.fail("compaction never finished")
