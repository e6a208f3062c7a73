"""Shared pieces of the hostile-store tests (test_hostile_bounds, test_fuzz_store).

A *template* is a small real store: two versions of a safetensors model (the
second aliased ``best``), a directory model, and a registry link to the second
version, plus an *early clone* taken when the store held only the first
version (so a ``pull`` from the full store has real work to do).

A *probe* is one ``objstore`` command run as a subprocess under an
address-space limit (``RLIMIT_AS``, 1 GiB) and a timeout. :func:`problem`
judges how it ended: success, or a clear error (exit 1 with one final ``objstore: error: …``
line on stderr, or ``fsck``'s exit 3 with its report) are fine; a hang, a traceback,
a ``MemoryError`` or an ``unexpected …`` error (the CLI's wording for an
exception objstore did not raise on purpose) are bugs.

glibc reserves 64 MiB of address space per malloc arena, one arena per thread
up to 8 per core; the probes set ``MALLOC_ARENA_MAX=2`` so that the limit
measures what objstore allocates, not what the allocator reserves.
"""

from __future__ import annotations

import hashlib
import os
import resource
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from cli_helpers import OBJSTORE

import objstore
from objstore.model.store import Store
from objstore.storage.ids import Kind, ObjectId, hash_bytes
from objstore.storage.keys import object_key
from objstore.storage.objects import FileObject, Tree, Version
from objstore.storage.packs import INDEX_DTYPE, TRAILER, PackBuilder, PackEntry, decode_idx, encode_idx, scan_records
from objstore.testing.tensorfiles import fine_tune, transformer, write_safetensors

ENTITY, PROJECT = "e", "demo"
AS_LIMIT = 1 << 30
PROBE_TIMEOUT = 30.0

# A zstd frame of 16 bytes whose header declares 4 TiB of content: magic,
# frame header descriptor 0xE0 (8-byte content size, single segment), the size,
# then one empty raw block marked last. python-zstandard allocates the declared
# size before it decodes a byte, whatever max_output_size says.
ZSTD_BOMB = b"\x28\xb5\x2f\xfd\xe0" + struct.pack("<Q", 4 << 40) + b"\x01\x00\x00"

SPECS = ("e/demo/llm:v0", "e/demo/llm:best", "e/model-registry/Reg:latest", "e/demo/d:latest")


@dataclass(frozen=True)
class Template:
    """A built store and what each spec of :data:`SPECS` must materialize to."""

    root: Path
    store: Path
    early_clone: Path  # a clone of the store when it held only e/demo/llm:v0
    expected: dict[str, dict[str, bytes]]  # spec -> {relative path ("" for a one-file model): bytes}


def build_template(root: Path) -> Template:
    root.mkdir(parents=True, exist_ok=True)
    src = root / "src"
    src.mkdir()
    base = transformer(1, layers=1, hidden=128, vocab=512)
    m0 = write_safetensors(src / "m0.safetensors", base)
    m1 = write_safetensors(src / "m1.safetensors", fine_tune(base, ["layers.0.attn.q.weight"], 2))
    d = src / "dir"
    (d / "sub").mkdir(parents=True)
    (d / "notes.txt").write_text("hello " * 1000)
    (d / "sub" / "table.bin").write_bytes(bytes(range(256)) * 300)
    store = root / "store"
    with objstore.init(project=PROJECT, entity=ENTITY, store=store) as run:
        run.log_model(str(m0), name="llm")
    early = root / "early" / ".objstore"
    objstore.clone(str(store), early)[0].close()
    with objstore.init(project=PROJECT, entity=ENTITY, store=store) as run:
        run.log_model(str(m1), name="llm", aliases=["best"])
        run.log_model(str(d), name="d")
        run.link_model(str(m1), "Reg", name="llm")
    expected = {
        "e/demo/llm:v0": {"": m0.read_bytes()},
        "e/demo/llm:best": {"": m1.read_bytes()},
        "e/model-registry/Reg:latest": {"": m1.read_bytes()},
        "e/demo/d:latest": {p.relative_to(d).as_posix(): p.read_bytes() for p in d.rglob("*") if p.is_file()},
    }
    shutil.rmtree(src)
    return Template(root, store, early, expected)


# -- finding things in a store ------------------------------------------------------------

def ref_target(store: Path, ref: str) -> ObjectId:
    return ObjectId.from_hex((store / ref).read_text().strip())


def object_path(store: Path, oid: ObjectId) -> Path:
    return store / object_key(oid)


def version_objects(store_path: Path, version_ref: str) -> dict[str, ObjectId]:
    """The version a ref names, its tree and its (first) file object, and that file's first chunk."""
    with Store.open_existing(store_path) as store:
        vid = ref_target(store_path, version_ref)
        version = store.odb.get_object(vid)
        assert isinstance(version, Version)
        tree = store.odb.get_object(version.tree)
        assert isinstance(tree, Tree)
        fid = next(e.id for e in tree.entries if e.kind == "file" and e.id is not None)
        fobj = store.odb.get_object(fid)
        assert isinstance(fobj, FileObject)
        return {"version": vid, "tree": version.tree, "file": fid, "chunk": fobj.chunks[-1][0]}


# -- probes ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Probe:
    args: tuple[str, ...]
    code: int | None  # None: killed after the timeout
    out: str
    err: str
    seconds: float

    def describe(self) -> str:
        return (
            f"objstore {' '.join(self.args)} -> {self.code} in {self.seconds:.1f}s\nstdout: {self.out[-1500:]}\nstderr: {self.err[-3000:]}"
        )


def _limit_address_space(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def probe_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBJSTORE_")}
    env["MALLOC_ARENA_MAX"] = "2"
    return env


def run_probe(*args: str, cwd: Path, timeout: float = PROBE_TIMEOUT, limit: int = AS_LIMIT, env: dict[str, str] | None = None) -> Probe:
    """Run ``objstore ARGS`` under ``RLIMIT_AS=limit``; kill its process group after ``timeout``."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [str(OBJSTORE), *args],
        cwd=cwd,
        env=env or probe_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: _limit_address_space(limit),
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        code = None
    return Probe(tuple(args), code, out, err, time.monotonic() - started)


def problem(p: Probe, *, ok_codes: tuple[int, ...] = (0, 1)) -> str | None:
    """What is wrong with how a probe ended, or None if it ended cleanly."""
    if p.code is None:
        return "hung (killed after the timeout)"
    if "Traceback" in p.err:
        return "printed a traceback"
    if "MemoryError" in p.err or "unexpected " in p.err:
        return "died of an exception objstore did not raise on purpose"
    if p.code not in ok_codes:
        return f"exited {p.code}"
    if p.code == 3 and "damage found" in p.out:
        return None  # fsck's report
    if p.code != 0:
        errors = [line for line in p.err.splitlines() if line.startswith("objstore: error: ")]
        if len(errors) != 1 or not p.err.rstrip("\n").splitlines()[-1].startswith("objstore: error: "):
            return "failed without exactly one final 'objstore: error: …' line"
    return None


def materialized(path: Path) -> dict[str, bytes]:
    """What use-model handed back, in the shape of :attr:`Template.expected`."""
    if path.is_file():
        return {"": path.read_bytes()}
    return {p.relative_to(path).as_posix(): p.read_bytes() for p in path.rglob("*") if p.is_file()}


def tree_digest(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (files hashed, links by target), for 'nothing changed here' checks."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = "special"
    return out


@dataclass
class Arena:
    """One example's directory: a copy of the template store to damage, a work
    directory for the probes, and a sentinel directory that nothing may touch."""

    root: Path
    store: Path
    work: Path
    sentinel: Path
    sentinel_state: dict[str, str] = field(default_factory=dict)

    @classmethod
    def make(cls, template: Template, root: Path) -> Arena:
        root.mkdir(parents=True)
        store = root / "store"
        shutil.copytree(template.store, store, symlinks=True)
        work = root / "work"
        work.mkdir()
        sentinel = root / "sentinel"
        sentinel.mkdir()
        (sentinel / "keep.txt").write_text("untouched\n")
        arena = cls(root, store, work, sentinel)
        arena.sentinel_state = tree_digest(sentinel)
        return arena

    def sentinel_untouched(self) -> bool:
        return tree_digest(self.sentinel) == self.sentinel_state


# -- forging packs and indexes --------------------------------------------------------------


def pack_of(store_path: Path, chunk: ObjectId) -> str:
    with Store.open_existing(store_path) as store:
        return store.odb.locate(chunk).pack


def rewrite_pack(store_path: Path, name: str, edit: Callable[[PackEntry, bytes], tuple[int, int, bytes]]) -> str:
    """Rebuild pack ``name`` record by record, ``edit(entry, payload) -> (codec, raw_len, payload)``,
    store it and its index under the new name (checksums valid), and remove the old one."""
    packs = store_path / "packs"
    data = (packs / f"{name}.pack").read_bytes()
    tmp = store_path / "tmp" / "forged.pack"
    tmp.parent.mkdir(exist_ok=True)
    with open(tmp, "wb") as out:
        builder = PackBuilder(out)
        for entry, payload in scan_records(data):
            codec, raw_len, new_payload = edit(entry, bytes(payload))
            builder.add(entry.chunk_id, codec, raw_len, new_payload)
        new = builder.finish()
    tmp.rename(packs / f"{new}.pack")
    (packs / f"{new}.idx").write_bytes(encode_idx(new, builder.index))
    if new != name:
        (packs / f"{name}.pack").unlink()
        (packs / f"{name}.idx").unlink()
    return new


def forge_idx(store_path: Path, name: str, edit: Callable[[np.ndarray], None]) -> None:
    """Rewrite ``packs/<name>.idx`` with ``edit`` applied to its entries, checksum valid."""
    path = store_path / "packs" / f"{name}.idx"
    index = decode_idx(path.read_bytes(), name).copy()
    edit(index)
    path.write_bytes(encode_idx(name, index))


def forge_pack_index(store_path: Path, name: str, edit: Callable[[np.ndarray], None]) -> str:
    """Rewrite the index section of pack ``name`` (and its .idx) with ``edit`` applied,
    re-checksummed under its new name: a pack that is self-consistent and lies."""
    packs = store_path / "packs"
    data = (packs / f"{name}.pack").read_bytes()
    index_offset, count, end = TRAILER.unpack_from(data, len(data) - 32 - TRAILER.size)
    index = np.frombuffer(data[index_offset : index_offset + count * INDEX_DTYPE.itemsize], dtype=INDEX_DTYPE).copy()
    edit(index)
    body = data[:index_offset] + index.tobytes() + data[index_offset + count * INDEX_DTYPE.itemsize : -32]
    digest = hash_bytes(Kind.PACK, body)
    new = digest.hex
    (packs / f"{new}.pack").write_bytes(body + digest.raw)
    (packs / f"{new}.idx").write_bytes(encode_idx(new, index))
    (packs / f"{name}.pack").unlink()
    (packs / f"{name}.idx").unlink()
    return new
