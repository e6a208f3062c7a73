"""Hostile stores and remotes: every read of an untrusted object is bounded, nothing blocks.

Each test damages a copy of a small real store the way an attacker (or a broken
disk) would — a zstd frame declaring 4 TiB, a FIFO or a link to ``/dev/zero``
where a file should be, an index claiming 4 GiB chunks, a ref of gigabytes —
and runs ``use-model``, ``fsck`` and ``clone`` on it as subprocesses under a
1 GiB address-space limit and a timeout (:mod:`hostile_support`). Each must end
with a clear one-line objstore error naming what is damaged, or succeed with
bytes equal to those logged: never a hang, a MemoryError or a traceback. A
failed clone leaves no destination behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from hostile_support import (
    SPECS,
    ZSTD_BOMB,
    Arena,
    Probe,
    Template,
    build_template,
    forge_idx,
    forge_pack_index,
    materialized,
    object_path,
    pack_of,
    probe_env,
    problem,
    rewrite_pack,
    run_probe,
    version_objects,
)

from objstore.errors import CorruptObject, ObjstoreError
from objstore.model.store import Store
from objstore.storage import codecs
from objstore.transfer.remotes import clone, open_store

BEST = "refs/e/demo/llm/versions/v1"
HANG_TIMEOUT = 20.0


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    return build_template(tmp_path_factory.mktemp("hostile-bounds"))


@pytest.fixture
def arena(template: Template, tmp_path: Path) -> Arena:
    return Arena.make(template, tmp_path / "arena")


def _use(arena: Arena, spec: str, timeout: float = HANG_TIMEOUT) -> Probe:
    out = arena.work / ("out-" + spec.replace("/", "_").replace(":", "_"))
    return run_probe("--store", str(arena.store), "use-model", spec, "--root", str(out), cwd=arena.work, timeout=timeout)


def _fsck(arena: Arena, timeout: float = HANG_TIMEOUT) -> Probe:
    return run_probe("--store", str(arena.store), "fsck", cwd=arena.work, timeout=timeout)


def _clone(arena: Arena, url: str | None = None, timeout: float = HANG_TIMEOUT) -> Probe:
    return run_probe("clone", url or str(arena.store), str(arena.work / "clone"), cwd=arena.work, timeout=timeout)


def _assert_clean(p: Probe, ok_codes: tuple[int, ...]) -> None:
    why = problem(p, ok_codes=ok_codes)
    assert why is None, f"{why}\n{p.describe()}"


def _assert_fails_naming(p: Probe, name: str, ok_codes: tuple[int, ...] = (1,)) -> None:
    _assert_clean(p, ok_codes)
    assert p.code != 0, p.describe()
    assert name in p.err + p.out, f"the error does not name {name}\n{p.describe()}"


def _assert_serves(arena: Arena, template: Template, p: Probe, spec: str) -> None:
    _assert_clean(p, (0,))
    assert materialized(Path(p.out.strip().splitlines()[-1])) == template.expected[spec]


def _assert_no_clone_left(arena: Arena, p: Probe) -> None:
    if p.code != 0:
        assert not (arena.work / "clone").exists(), f"a failed clone left {arena.work / 'clone'}\n{p.describe()}"


# -- declared sizes ---------------------------------------------------------------------------

def test_metadata_object_declaring_4_tib(arena: Arena, template: Template) -> None:
    """A 16-byte object whose zstd header claims 4 TiB (python-zstandard allocates the
    declared size before decoding, even with max_output_size): refused by its header."""
    vid = version_objects(arena.store, BEST)["version"]
    object_path(arena.store, vid).write_bytes(ZSTD_BOMB)
    _assert_fails_naming(_use(arena, "e/demo/llm:best"), vid.hex[:16])
    _assert_fails_naming(_fsck(arena), vid.hex[:16], ok_codes=(3,))
    p = _clone(arena)
    _assert_fails_naming(p, vid.hex[:16])
    _assert_no_clone_left(arena, p)
    _assert_serves(arena, template, _use(arena, "e/demo/llm:v0"), "e/demo/llm:v0")


def test_chunk_payload_declaring_4_tib(arena: Arena, template: Template) -> None:
    """A chunk in a well-formed, correctly checksummed pack whose zstd payload claims 4 TiB."""
    cid = version_objects(arena.store, BEST)["chunk"]
    rewrite_pack(arena.store, pack_of(arena.store, cid),
                 lambda e, payload: (codecs.ZSTD, e.raw_len, ZSTD_BOMB) if e.chunk_id == cid else (e.codec, e.raw_len, payload))
    _assert_fails_naming(_use(arena, "e/demo/llm:best"), cid.hex[:16])
    _assert_fails_naming(_fsck(arena), cid.hex[:16], ok_codes=(3,))
    p = _clone(arena)
    _assert_fails_naming(p, cid.hex[:16])
    _assert_no_clone_left(arena, p)


def test_idx_claiming_4_gib_chunks_falls_back_to_the_pack(arena: Arena, template: Template) -> None:
    """A forged .idx (checksum valid) claiming 4 GiB per chunk: readers must not allocate
    what it claims; the pack's own index is intact, so the bytes are still served."""
    cid = version_objects(arena.store, BEST)["chunk"]
    name = pack_of(arena.store, cid)

    def huge(index: np.ndarray) -> None:
        index["stored_len"] = 0xFFFF_FF00
        index["raw_len"] = 0xFFFF_FF00

    forge_idx(arena.store, name, huge)
    _assert_serves(arena, template, _use(arena, "e/demo/llm:best"), "e/demo/llm:best")
    _assert_fails_naming(_fsck(arena), name[:16], ok_codes=(3,))
    p = _clone(arena)
    _assert_clean(p, (0, 1))
    _assert_no_clone_left(arena, p)


def test_pack_whose_own_index_claims_4_gib_chunks(arena: Arena, template: Template) -> None:
    """A pack re-checksummed after its index section (and .idx) were made to claim 4 GiB
    chunks: self-consistent and lying. Refused as damaged, in bounded memory."""
    cid = version_objects(arena.store, BEST)["chunk"]

    def huge(index: np.ndarray) -> None:
        index["stored_len"] = 0xFFFF_FF00
        index["raw_len"] = 0xFFFF_FF00

    name = forge_pack_index(arena.store, pack_of(arena.store, cid), huge)
    _assert_fails_naming(_use(arena, "e/demo/llm:best"), name[:16])
    _assert_fails_naming(_fsck(arena), name[:16], ok_codes=(3,))
    p = _clone(arena)
    _assert_fails_naming(p, name[:16])
    _assert_no_clone_left(arena, p)


# -- files that are not files ------------------------------------------------------------------

def _fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


@pytest.mark.parametrize("what", ["alias ref", "version object", "config", "idx"])
def test_fifo_never_blocks_a_reader(arena: Arena, template: Template, what: str) -> None:
    """A FIFO where a ref, an object, the config or an index should be: opening it for
    reading would block until a writer comes, which never happens."""
    objs = version_objects(arena.store, BEST)
    pack = pack_of(arena.store, objs["chunk"])
    path = {
        "alias ref": arena.store / "refs/e/demo/llm/aliases/best",
        "version object": object_path(arena.store, objs["version"]),
        "config": arena.store / "config",
        "idx": arena.store / "packs" / f"{pack}.idx",
    }[what]
    _fifo(path)
    key = path.relative_to(arena.store).as_posix()
    p = _clone(arena)
    if what == "idx":
        _assert_clean(p, (0,))  # the pack's own index stands in for it
    else:
        _assert_fails_naming(p, key)
    _assert_no_clone_left(arena, p)
    use = _use(arena, "e/demo/llm:best")
    if what == "idx":
        _assert_serves(arena, template, use, "e/demo/llm:best")
    else:
        _assert_fails_naming(use, key)
    _assert_clean(_fsck(arena), (1, 3) if what != "idx" else (3,))


@pytest.mark.parametrize("what", ["version object", "alias ref", "pack"])
def test_link_to_dev_zero_is_not_read(arena: Arena, template: Template, what: str) -> None:
    """A store file that is a symlink to /dev/zero: an endless stream of zeros, read
    without limit today. Only regular files are read, and never past their legit size."""
    objs = version_objects(arena.store, BEST)
    path = {
        "version object": object_path(arena.store, objs["version"]),
        "alias ref": arena.store / "refs/e/demo/llm/aliases/best",
        "pack": arena.store / "packs" / f"{pack_of(arena.store, objs['chunk'])}.pack",
    }[what]
    path.unlink()
    path.symlink_to("/dev/zero")
    key = path.relative_to(arena.store).as_posix()
    # The listing sees a 0-byte pack, so its index (claiming records) is refused first.
    named = key if what != "pack" else path.stem[:16]
    _assert_fails_naming(_use(arena, "e/demo/llm:best"), named)
    _assert_clean(_fsck(arena), (1, 3))
    p = _clone(arena)
    _assert_fails_naming(p, named)
    _assert_no_clone_left(arena, p)


def test_huge_ref_is_not_read_whole(arena: Arena) -> None:
    """A "ref" of 2 GiB (sparse: it costs no disk): a ref is 65 bytes, so reading more
    than a few hundred of them is never needed."""
    key = "refs/e/demo/llm/aliases/huge"
    with open(arena.store / key, "wb") as f:
        f.truncate(2 << 30)
    with Store.open_existing(arena.store) as store:
        before = store.backend.stats.snapshot().bytes_received
        with pytest.raises(CorruptObject, match="huge"):
            store.refs.read_raw(key)
        assert store.backend.stats.snapshot().bytes_received - before < 64 * 1024
    p = _clone(arena)
    _assert_fails_naming(p, key)
    _assert_no_clone_left(arena, p)


@pytest.mark.s3
def test_huge_ref_on_a_bucket_is_not_read_whole(template: Template, s3_bucket_url: str, tmp_path: Path) -> None:
    """A 64 MiB "ref" on a bucket: refused from its size, without downloading it."""
    import objstore

    with Store.open_existing(template.store) as local:
        objstore.push(local, s3_bucket_url)
    key = "refs/e/demo/llm/aliases/huge"
    remote = open_store(s3_bucket_url)
    try:
        remote.backend.put(key, b"0" * (64 << 20))
        before = remote.backend.stats.snapshot().bytes_received
        with pytest.raises(CorruptObject, match="huge"):
            remote.refs.read_raw(key)
        assert remote.backend.stats.snapshot().bytes_received - before < 1 << 20
    finally:
        remote.close()
    work = tmp_path / "work"
    work.mkdir()
    p = run_probe("clone", s3_bucket_url, str(work / "clone"), cwd=work, timeout=60)
    _assert_fails_naming(p, key)
    assert not (work / "clone").exists()


# -- a failed clone leaves nothing behind --------------------------------------------------------

def test_failed_clone_into_an_empty_directory_leaves_it_empty(arena: Arena) -> None:
    vid = version_objects(arena.store, BEST)["version"]
    path = object_path(arena.store, vid)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    dest = arena.work / "empty"
    dest.mkdir()
    with pytest.raises(ObjstoreError):
        clone(str(arena.store), dest)
    assert list(dest.iterdir()) == []


CLONE_SCRIPT = textwrap.dedent("""
    import sys
    import objstore
    try:
        objstore.clone(sys.argv[1], sys.argv[2])
    except BaseException as exc:
        print(type(exc).__name__)
        sys.exit(1)
""")


@pytest.mark.parametrize("fault", ["put:6:eio", "rename:4:enospc"])
def test_clone_cleans_up_after_any_failure(arena: Arena, fault: str) -> None:
    """Whatever the failure (here an I/O error at the n-th write, raised where no
    objstore code maps it), the clone's destination is removed."""
    dest = arena.work / "dest" / ".objstore"
    env = {**probe_env(), "OBJSTORE_FAULT": fault}
    proc = subprocess.run([sys.executable, "-c", CLONE_SCRIPT, str(arena.store), str(dest)], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    left = sorted(p.relative_to(arena.work).as_posix() for p in arena.work.rglob("*"))
    assert not left, f"clone failed ({proc.stdout.strip()}) and left {left}"


def test_template_is_sound(arena: Arena, template: Template) -> None:
    """The undamaged copy: everything is served, fsck is clean, clone works."""
    for spec in SPECS:
        _assert_serves(arena, template, _use(arena, spec), spec)
    _assert_clean(_fsck(arena), (0,))
    _assert_clean(_clone(arena), (0,))


def test_intact_indexes_are_read_without_their_packs(template: Template) -> None:
    """The bounds refuse only what no pack holds: a sound store's .idx files all pass
    the checks against their packs' sizes, so opening it reads no pack."""
    with Store.open_existing(template.store) as store:
        store.odb.refresh()
        assert not store.odb.damaged_packs
        assert len(store.odb.index) > 0
        packs = sum(p.stat().st_size for p in (template.store / "packs").glob("*.pack"))
        assert store.backend.stats.snapshot().bytes_received < packs / 4


def test_fifo_in_the_local_cache_does_not_block_a_log(arena: Arena, tmp_path: Path) -> None:
    """The stat and segment caches live in the store directory too: a FIFO (or a device)
    planted as an entry is a miss, not a reader blocked forever."""
    from objstore.testing.tensorfiles import transformer, write_safetensors

    model = write_safetensors(tmp_path / "m.safetensors", transformer(5, layers=1, hidden=128, vocab=256))
    first = run_probe("--store", str(arena.store), "log-model", str(model), "-n", "fresh", "-p", "demo", "-e", "e",
                      cwd=arena.work)
    _assert_clean(first, (0,))
    entries = [p for p in (arena.store / "cache").rglob("*") if p.is_file()]
    assert entries
    for i, entry in enumerate(entries):
        entry.unlink()
        if i % 2:
            entry.symlink_to("/dev/zero")
        else:
            os.mkfifo(entry)
    again = run_probe("--store", str(arena.store), "log-model", str(model), "-n", "fresh", "-p", "demo", "-e", "e",
                      cwd=arena.work, timeout=HANG_TIMEOUT)
    _assert_clean(again, (0,))


@pytest.mark.parametrize("kind", ["fifo", "dev zero"])
def test_fsck_reports_an_unreadable_pack_and_goes_on(arena: Arena, kind: str) -> None:
    """A pack that is not a regular file is damage fsck reports (exit 3, naming the
    pack and the versions it breaks), not a reason to stop checking (exit 1)."""
    objs = version_objects(arena.store, BEST)
    path = arena.store / "packs" / f"{pack_of(arena.store, objs['chunk'])}.pack"
    if kind == "fifo":
        _fifo(path)
    else:
        path.unlink()
        path.symlink_to("/dev/zero")
    p = _fsck(arena)
    _assert_clean(p, (3,))
    assert path.stem[:16] in p.out + p.err, p.describe()
