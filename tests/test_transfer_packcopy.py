"""Whole packs carried between local stores (objstore.storage.packcopy): a pack is
published only after its checksum, its records against its index, and every chunk
against its id were checked on the destination's own file; a forged, damaged or
truncated pack lands nowhere; a crash leaves the remote valid."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transfer_support import assert_intact, chain, log, make_models, ref_values, sha, use

import objstore
from objstore.errors import CorruptObject, NotFound
from objstore.maintenance.fsck import fsck
from objstore.model.store import Store
from objstore.storage import codecs
from objstore.storage.ids import Kind, ObjectId, hash_bytes
from objstore.storage.keys import idx_key, pack_key
from objstore.storage.packcopy import copy_pack_file
from objstore.storage.packs import (
    INDEX_DTYPE,
    PACK_END,
    RECORD_HEAD,
    TRAILER,
    PackBuilder,
    encode_idx,
    read_pack_index,
    scan_records,
)
from objstore.transfer.remotes import open_store


@pytest.fixture
def models(tmp_path: Path) -> tuple[Path, Path]:
    return make_models(tmp_path / "models")


def _one_pack(store_dir: Path) -> tuple[str, Path]:
    store = Store.open_existing(store_dir)
    (name,) = list(store.odb.iter_pack_names())
    store.close()
    return name, store_dir / pack_key(name)


def _replace_pack(store_dir: Path, old: str, data: bytes) -> str:
    """Put ``data`` in the store as its pack (named by its checksum) with an .idx
    matching its trailer, in place of pack ``old``: a pack a hostile store could serve."""
    name = hash_bytes(Kind.PACK, data[:-32]).hex
    index_offset, count, _ = TRAILER.unpack_from(data, len(data) - 32 - TRAILER.size)
    index = np.frombuffer(data[index_offset:index_offset + count * INDEX_DTYPE.itemsize], dtype=INDEX_DTYPE)
    (store_dir / pack_key(old)).unlink()
    (store_dir / idx_key(old)).unlink()
    (store_dir / pack_key(name)).write_bytes(data)
    (store_dir / idx_key(name)).write_bytes(encode_idx(name, index))
    return name


def _rebuilt(records: list[tuple[bytes, int, int, bytes]]) -> bytes:
    out = io.BytesIO()
    builder = PackBuilder(out)
    for cid, codec, raw_len, payload in records:
        builder.add(ObjectId(cid), codec, raw_len, payload)
    builder.finish()
    return out.getvalue()


def _records(path: Path) -> list[tuple[bytes, int, int, bytes]]:
    return [(e.chunk_id.raw, e.codec, e.raw_len, bytes(p)) for e, p in scan_records(path.read_bytes())]


def _nothing_landed(remote: Path) -> None:
    if not remote.exists():
        return
    packs = list((remote / "packs").glob("*.pack")) if (remote / "packs").exists() else []
    assert packs == [], packs
    leftovers = [p for p in (remote / "tmp").iterdir()] if (remote / "tmp").exists() else []
    assert leftovers == [], leftovers
    assert ref_values(open_store(str(remote))) == {}


def test_forged_chunk_under_a_right_checksum_is_refused_both_ways(tmp_path: Path, models: tuple[Path, Path]) -> None:
    # A hostile store can checksum any pack (the pack key is no secret): one record
    # re-encoded from other bytes, under the old chunk id, in a pack whose checksum,
    # name and .idx are all right. Only the chunk's id can tell.
    base, _ = models
    log(tmp_path / "a", base)
    name, path = _one_pack(tmp_path / "a")
    records = _records(path)
    cid, _, raw_len, _ = records[3]
    codec, payload = codecs.encode_chunk(bytes(raw_len), None)
    records[3] = (cid, codec, raw_len, bytes(payload))
    _replace_pack(tmp_path / "a", name, _rebuilt(records))

    with pytest.raises(CorruptObject, match="does not hash to its id.*nothing of it was stored"):
        objstore.push(Store.open_existing(tmp_path / "a"), str(tmp_path / "remote"))
    _nothing_landed(tmp_path / "remote")

    with pytest.raises(CorruptObject, match="does not hash to its id"):
        objstore.clone(str(tmp_path / "a"), tmp_path / "clone")
    assert not (tmp_path / "clone").exists()


def test_record_the_index_does_not_list_is_refused(tmp_path: Path, models: tuple[Path, Path]) -> None:
    # The index and checksum are right, but a record hides between the listed ones:
    # an index rebuilt from the records later would take a chunk nobody checked.
    base, _ = models
    log(tmp_path / "a", base)
    name, path = _one_pack(tmp_path / "a")
    data = path.read_bytes()
    index = read_pack_index(data, name)
    index_offset = len(data) - 32 - TRAILER.size - len(index) * INDEX_DTYPE.itemsize
    junk = bytes(range(256)) * 4
    extra = RECORD_HEAD.pack(b"\x07" * 32, 0, len(junk), len(junk)) + junk
    body = data[:index_offset] + extra
    index = index.copy()
    body += index.tobytes() + TRAILER.pack(len(body), len(index), PACK_END)
    forged = body + hash_bytes(Kind.PACK, body).raw
    _replace_pack(tmp_path / "a", name, forged)

    with pytest.raises(CorruptObject, match="records its index does not list"):
        objstore.push(Store.open_existing(tmp_path / "a"), str(tmp_path / "remote"))
    _nothing_landed(tmp_path / "remote")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cut=st.integers(min_value=0, max_value=10**9), link=st.booleans())
def test_any_truncated_pack_is_refused_and_leaves_no_file(tmp_path_factory: pytest.TempPathFactory, cut: int,
                                                          link: bool) -> None:
    # What is checked is the file that landed, so a source cut short at any byte
    # (before or while it is copied) is a refused copy, never a published one.
    work = tmp_path_factory.mktemp("trunc")
    records = [(hash_bytes(Kind.CHUNK, bytes([i]) * 5000).raw, 0, 5000, bytes([i]) * 5000) for i in range(4)]
    data = _rebuilt(records)
    name = hash_bytes(Kind.PACK, data[:-32]).hex
    source = work / "src.pack"
    source.write_bytes(data[: cut % len(data)])
    os.chmod(source, 0o644)
    with pytest.raises(CorruptObject):
        copy_pack_file(source, work / "landed", name, link=link)
    assert not (work / "landed").exists()
    source.write_bytes(data)
    copied = copy_pack_file(source, work / "landed", name, link=link)
    assert len(copied.index) == 4 and copied.size == len(data)


def test_pack_grown_after_its_checksum_is_refused(tmp_path: Path) -> None:
    records = [(hash_bytes(Kind.CHUNK, b"x" * 3000).raw, 0, 3000, b"x" * 3000)]
    data = _rebuilt(records)
    name = hash_bytes(Kind.PACK, data[:-32]).hex
    (tmp_path / "src.pack").write_bytes(data + b"more")
    with pytest.raises(CorruptObject):
        copy_pack_file(tmp_path / "src.pack", tmp_path / "landed", name)
    assert not (tmp_path / "landed").exists()


def test_links_only_files_no_one_else_can_change(tmp_path: Path, models: tuple[Path, Path],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    base, _ = models
    log(tmp_path / "a", base)
    name, path = _one_pack(tmp_path / "a")
    os.chmod(path, 0o644)
    objstore.push(Store.open_existing(tmp_path / "a"), str(tmp_path / "r1"))
    assert (tmp_path / "r1" / pack_key(name)).stat().st_ino == path.stat().st_ino  # same file system, ours: linked

    os.chmod(path, 0o664)  # a group member could rewrite it: copied, not shared
    objstore.push(Store.open_existing(tmp_path / "a"), str(tmp_path / "r2"))
    assert (tmp_path / "r2" / pack_key(name)).stat().st_ino != path.stat().st_ino
    os.chmod(path, 0o644)

    monkeypatch.setenv("OBJSTORE_TRANSFER_LINK", "0")
    objstore.push(Store.open_existing(tmp_path / "a"), str(tmp_path / "r3"))
    landed = tmp_path / "r3" / pack_key(name)
    assert landed.stat().st_ino != path.stat().st_ino and landed.read_bytes() == path.read_bytes()
    for remote in ("r1", "r2", "r3"):
        clone, _ = objstore.clone(str(tmp_path / remote), tmp_path / f"clone-{remote}")
        assert_intact(clone)
        assert sha(use(clone, "model:v0", tmp_path / f"out-{remote}")) == sha(base)


def test_planted_symlink_at_the_destination_pack_path_writes_nothing_outside(tmp_path: Path,
                                                                               models: tuple[Path, Path]) -> None:
    base, _ = models
    log(tmp_path / "a", base)
    name, _ = _one_pack(tmp_path / "a")
    Store.open(tmp_path / "remote").close()
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"not a pack")
    (tmp_path / "remote" / "packs").mkdir(exist_ok=True)
    (tmp_path / "remote" / pack_key(name)).symlink_to(outside)
    with pytest.raises(CorruptObject):  # the backend refuses a key that is a symlink: the push fails, says why
        objstore.push(Store.open_existing(tmp_path / "a"), str(tmp_path / "remote"))
    assert outside.read_bytes() == b"not a pack"
    # The remote holds nothing readable of it: a reader refuses or finds nothing, never takes wrong bytes.
    with pytest.raises((CorruptObject, NotFound)):
        clone, _ = objstore.clone(str(tmp_path / "remote"), tmp_path / "clone")
        use(clone, "model:v0", tmp_path / "out")
    assert outside.read_bytes() == b"not a pack"


PUSH_SCRIPT = textwrap.dedent("""
    import sys, time
    import objstore
    packs = 0
    def progress(stage, done, total):
        global packs
        if stage == "chunks":
            packs += 1
            print("chunks", done, total, flush=True)
            if packs == int(sys.argv[3]):
                time.sleep(60)  # the test kills us here, with this many packs stored
    objstore.push(sys.argv[1], sys.argv[2], progress=progress)
""")


def test_push_of_whole_packs_killed_midway_leaves_the_remote_valid(tmp_path: Path) -> None:
    # Four sessions, four packs, each carried whole; killed after the first (the
    # two copying meanwhile may land too, and nothing else).
    local = tmp_path / "local"
    paths = [make_models(tmp_path / f"m{seed}", seed=seed)[0] for seed in (1, 2, 3, 4)]
    for p in paths:
        log(local, p)
    assert len(list(Store.open_existing(local).odb.iter_pack_names())) == 4
    remote = tmp_path / "remote"
    proc = subprocess.Popen([sys.executable, "-c", PUSH_SCRIPT, str(local), str(remote), "1"],
                            env={**os.environ, "OBJSTORE_QUIET": "1"}, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done, total = (int(x) for x in line.split()[1:])
    assert 0 < done < total
    half = open_store(str(remote))
    assert ref_values(half) == {}
    assert_intact(half)
    packs = len(list(half.odb.iter_pack_names()))
    indexed = len(list((remote / "packs").glob("*.idx")))  # a pack killed before its .idx is sent again
    assert 1 <= indexed <= packs <= 3, (indexed, packs)
    half.close()

    result = objstore.push(Store.open_existing(local), str(remote))
    assert 0 < result.chunk_bytes <= total - done and result.packs == 4 - indexed, (result, indexed, packs)
    clone, _ = objstore.clone(str(remote), tmp_path / "clone")
    assert chain(clone) == chain(Store.open_existing(local))
    assert_intact(clone)
    assert sha(use(clone, "model:v3", tmp_path / "out")) == sha(paths[3])



def _log_as_an_old_writer(store_dir: Path, path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Log ``path`` the way writers did before they read the pending ``.idx`` files up
    front (odb.expect_bytes, stop 22): a chunk only an uncovered ``.idx`` lists is
    stored again. Returns the one pack this session wrote."""
    import objstore.storage.odb as odb_module

    before = set(Store.open_existing(store_dir).odb.iter_pack_names())
    with monkeypatch.context() as m:
        m.setattr(odb_module, "DEDUP_UNCHECKED_CHUNKS", 10**9)
        m.setattr(odb_module.ObjectDatabase, "expect_bytes", lambda self, size: None)
        log(store_dir, path, name=name)
    (pack,) = set(Store.open_existing(store_dir).odb.iter_pack_names()) - before
    return pack


def _pack_ids(store_dir: Path, pack: str) -> set[bytes]:
    data = (store_dir / pack_key(pack)).read_bytes()
    return {bytes(e["id"]) for e in read_pack_index(data, pack)}


def test_a_pack_repeating_one_chunk_in_sixteen_the_remote_holds_is_still_carried_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """WHOLE_PACK_SLACK: a store written before stop 22 holds, in each session's pack,
    a copy of a chunk an older pack holds (a fine-tune's header). Pushing such a pack
    to a remote that has the older one wants all of its chunks but that one: at most
    one in WHOLE_PACK_SLACK unwanted, it is carried whole (the same pack lands, by
    name); with more unwanted than that it is sent chunk by chunk (new packs)."""
    from objstore.transfer.closure import WHOLE_PACK_SLACK

    a, remote, files = tmp_path / "a", tmp_path / "remote", tmp_path / "files"
    files.mkdir()
    rng = np.random.default_rng(7)
    x = rng.bytes(4 * 1024 * 1024)
    (files / "x.bin").write_bytes(x)
    log(a, files / "x.bin", name="x")
    (x_pack,) = Store.open_existing(a).odb.iter_pack_names()
    objstore.push(Store.open_existing(a), str(remote))  # the remote holds x's chunks
    src = Store.open_existing(a)
    cuts = [len(c) for c in src.chunker.iter_chunks(io.BytesIO(x), len(x))]
    # One file repeats x's first chunk, the other its first two, then each goes on
    # with new bytes (a few more of x's first: the chunker looks one byte past a cut).
    (files / "one.bin").write_bytes(x[:cuts[0] + 1000] + rng.bytes(3 * 1024 * 1024))
    (files / "two.bin").write_bytes(x[:cuts[0] + cuts[1] + 1000] + rng.bytes(3 * 1024 * 1024))
    one = _log_as_an_old_writer(a, files / "one.bin", "one", monkeypatch)
    two = _log_as_an_old_writer(a, files / "two.bin", "two", monkeypatch)
    x_ids, one_ids, two_ids = _pack_ids(a, x_pack), _pack_ids(a, one), _pack_ids(a, two)
    # The stores this test is about: the repeated chunks really are stored again.
    assert len(one_ids & x_ids) == 1 and len(one_ids) >= WHOLE_PACK_SLACK
    assert len(two_ids & x_ids) == 2 and 2 > len(two_ids) // WHOLE_PACK_SLACK

    objstore.push(Store.open_existing(a), str(remote))
    assert (remote / pack_key(one)).exists()  # carried whole: the same pack, the chunk the remote had included
    assert not (remote / pack_key(two)).exists()  # more than the slack the remote had: chunk by chunk, new packs
    r = Store.open_existing(remote)
    assert fsck(r).ok
    for name in ("x", "one", "two"):
        assert sha(use(r, f"{name}:v0", tmp_path / "out" / name)) == sha(files / f"{name}.bin")
