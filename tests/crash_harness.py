"""Crash-trial harness: run a store operation in a forked child, kill it, check the store.

A trial forks a child that performs one operation (log a model, link one into
the registry, move an alias, gc, push, clone a remote, materialize a version
with ``use_model``) on a local store and writes one line to a
pipe after each step the store acknowledged. The child dies by SIGKILL, either
from inside at the N-th fault point (``objstore.faults``, armed in the child
only) or from the parent after a random delay. The parent then checks:

- the store opens and is consistent (:func:`check_store`: every ref resolves,
  every reachable object and chunk reads back verified, versions are dense,
  aliases and digests point into their own collection; plus ``objstore.maintenance.fsck``
  when that module exists);
- everything ever acknowledged is still there (versions with their content,
  alias moves);
- repeating the interrupted operation, with no fault, succeeds.

Forking (rather than starting a new interpreter) keeps a trial at tens of
milliseconds instead of the ~0.8 s it costs to import objstore afresh.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import os
import random
import signal
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from objstore import faults
from objstore.errors import CorruptObject, NotFound, ObjstoreError
from objstore.model.store import Store
from objstore.storage.ids import ObjectId
from objstore.storage.objects import FILE, TREE, FileObject, Link, RunRecord, Tree, Version
from objstore.storage.packs import decode_idx, verify_pack

ENTITY = "e"
PROJECT = "p"
REGISTRY = "model-registry"
FAULT_KINDS = ("write", "rename", "put", "lock", "claim", "any")
COUNT_ONLY = "any:1000000000"  # armed so the child counts its fault points, never trips


# -- a store check that needs nothing but the odb and refs ---------------------------

def check_store(location: str | Path) -> list[str]:
    """Every problem found in the store at ``location`` (empty when it is sound).

    Reads every ref, decodes every object a ref reaches (each verified against its
    id by the odb), reads every chunk of every file (verified), and checks the
    shape rules: versions dense from v0, a version ref's object has that index and
    names its own collection, parents chain, aliases and digest refs point at a
    version of their own collection, and registry links reach a sound version.
    """
    problems: list[str] = []
    try:
        store = Store.open_existing(str(location))
    except ObjstoreError as exc:
        return [f"store does not open: {exc}"]
    backend = store.backend
    # Packs: every index names a pack that exists and verifies.
    for info in backend.iter_prefix("packs/"):
        if not info.key.endswith(".idx"):
            continue
        name = info.key[len("packs/"):-len(".idx")]
        try:
            decode_idx(backend.get(info.key), name)
            verify_pack(backend.get(f"packs/{name}.pack"), name)
        except (CorruptObject, NotFound) as exc:
            problems.append(f"pack {name[:16]}: {exc}")
    sound_trees: set[ObjectId] = set()

    def check_tree(tree_id: ObjectId, where: str, depth: int = 0) -> None:
        if tree_id in sound_trees:
            return
        tree = store.odb.get_object(tree_id)
        if not isinstance(tree, Tree):
            raise CorruptObject(f"{where}: {tree_id.hex[:16]} is not a tree")
        for entry in tree.entries:
            if entry.kind == TREE:
                assert entry.id is not None
                check_tree(entry.id, f"{where}/{entry.name}", depth + 1)
            elif entry.kind == FILE:
                assert entry.id is not None
                fobj = store.odb.get_object(entry.id)
                if not isinstance(fobj, FileObject) or fobj.size != entry.size:
                    raise CorruptObject(f"{where}/{entry.name}: file object disagrees with its entry")
                got = sum(len(b) for b in store.odb.iter_chunks(c for c, _ in fobj.chunks))
                if got != fobj.size:
                    raise CorruptObject(f"{where}/{entry.name}: chunks hold {got} bytes, not {fobj.size}")
        sound_trees.add(tree_id)

    collections: dict[tuple[str, str, str], dict[str, dict[str, ObjectId]]] = {}
    runs: list[tuple[str, ObjectId]] = []
    for info in backend.iter_prefix("refs/"):
        parts = info.key.split("/")[1:]
        try:
            oid = store.refs.read(info.key)
        except CorruptObject as exc:
            problems.append(f"ref {info.key}: {exc}")
            continue
        if len(parts) == 4 and parts[2] == "runs":
            if oid is None:
                problems.append(f"run ref {info.key} is empty")
            else:
                runs.append((info.key, oid))
            continue
        if len(parts) != 5 or parts[3] not in ("versions", "aliases", "digests"):
            problems.append(f"unexpected ref {info.key}")
            continue
        if oid is None:
            if parts[3] != "aliases":
                problems.append(f"{info.key} is empty (only aliases may be deleted)")
            continue
        collections.setdefault((parts[0], parts[1], parts[2]), {"versions": {}, "aliases": {}, "digests": {}})[parts[3]][parts[4]] = oid

    for (ent, proj, name), refs in sorted(collections.items()):
        coll = f"{ent}/{proj}/{name}"
        by_index: dict[int, ObjectId] = {}
        version_of: dict[ObjectId, tuple[int, Version]] = {}
        for vname, oid in refs["versions"].items():
            if not (vname.startswith("v") and vname[1:].isdigit()):
                problems.append(f"{coll}: bad version ref name {vname}")
                continue
            idx = int(vname[1:])
            by_index[idx] = oid
            try:
                obj = store.odb.get_object(oid)
                if isinstance(obj, Link):
                    if obj.index != idx or obj.registry != coll:
                        problems.append(f"{coll}:{vname}: link says {obj.registry}:v{obj.index}")
                    target = store.odb.get_object(obj.target)
                    if not isinstance(target, Version):
                        problems.append(f"{coll}:{vname}: link target is not a version")
                        continue
                    check_tree(target.tree, f"{coll}:{vname}")
                    version_of[oid] = (idx, target)
                elif isinstance(obj, Version):
                    if obj.index != idx or (obj.entity, obj.project, obj.name) != (ent, proj, name):
                        problems.append(f"{coll}:{vname}: version object says {obj.entity}/{obj.project}/{obj.name}:v{obj.index}")
                    check_tree(obj.tree, f"{coll}:{vname}")
                    version_of[oid] = (idx, obj)
                else:
                    problems.append(f"{coll}:{vname}: points at a {type(obj).__name__}")
            except (CorruptObject, NotFound) as exc:
                problems.append(f"{coll}:{vname}: {exc}")
        if by_index and sorted(by_index) != list(range(len(by_index))):
            problems.append(f"{coll}: versions are not dense: {sorted(by_index)}")
        for idx, oid in by_index.items():
            entry = version_of.get(oid)
            if entry is None or isinstance(store.odb.get_object(oid), Link):
                continue
            expected_parent = by_index.get(idx - 1)
            if entry[1].parent != expected_parent:
                problems.append(f"{coll}:v{idx}: parent is not v{idx - 1}")
        for alias, oid in refs["aliases"].items():
            if oid not in version_of:
                problems.append(f"{coll}: alias {alias} points at {oid.hex[:16]}, not a version of this collection")
        for hexd, oid in refs["digests"].items():
            if oid not in version_of:
                problems.append(f"{coll}: digest ref {hexd[:16]} points at {oid.hex[:16]}, not a version of this collection")
            elif version_of[oid][1].tree.hex != hexd and version_of[oid][1].tree.hex != hexd:
                problems.append(f"{coll}: digest ref {hexd[:16]} points at a version with tree {version_of[oid][1].tree.hex[:16]}")
    for key, oid in runs:
        try:
            rec = store.odb.get_object(oid)
            if not isinstance(rec, RunRecord):
                problems.append(f"{key}: not a run record")
                continue
            # A run's inputs and outputs are weak edges (objstore.model.inventory): absent is
            # legitimate after a delete and gc. The trials delete nothing, so here every
            # one must be stored: a run records an output only after the version is.
            for vid in rec.inputs + rec.outputs:
                if not store.odb.has_object(vid):
                    problems.append(f"{key}: names version {vid.hex[:16]}, which is not stored")
        except (CorruptObject, NotFound) as exc:
            problems.append(f"{key}: {exc}")
    problems.extend(_fsck_module_problems(store))
    store.backend.close()
    return problems


def _fsck_module_problems(store: Store) -> list[str]:
    """What ``objstore.maintenance.fsck`` reports, once that module exists (it is written in parallel)."""
    try:
        fsck_mod = importlib.import_module("objstore.maintenance.fsck")
    except ImportError:
        return []
    run = getattr(fsck_mod, "fsck", None)
    if run is None:
        return []
    report = run(store)
    ok = getattr(report, "ok", True)
    if callable(ok):
        ok = ok()
    if ok:
        return []
    return [f"objstore.maintenance.fsck: {getattr(p, 'message', p)}" for p in getattr(report, "problems", [report])]


def duplicate_contents(location: str | Path) -> list[str]:
    """Collections holding the same tree in two versions (logging equal content must reuse)."""
    store = Store.open_existing(str(location))
    out = []
    for info in store.backend.iter_prefix("refs/"):
        parts = info.key.split("/")[1:]
        if len(parts) == 5 and parts[3] == "versions" and parts[4] == "v0":
            ent, proj, name = parts[:3]
            seen: dict[str, str] = {}
            for vinfo in store.backend.iter_prefix(f"refs/{ent}/{proj}/{name}/versions/"):
                oid = store.refs.read(vinfo.key)
                if oid is None:
                    continue
                obj = store.odb.get_object(oid)
                tree = (store.odb.get_object(obj.target).tree if isinstance(obj, Link) else obj.tree).hex  # type: ignore[union-attr]
                vname = vinfo.key.rsplit("/", 1)[-1]
                if tree in seen:
                    out.append(f"{ent}/{proj}/{name}: {seen[tree]} and {vname} hold the same content")
                seen[tree] = vname
    return out


# -- the operations a child performs --------------------------------------------------

@dataclass
class Op:
    """One operation of a trial: ``kind`` in log, link, alias, gc, push, pull, clone, use; ``args`` its parameters."""

    kind: str
    args: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.kind}({', '.join(f'{k}={v}' for k, v in sorted(self.args.items()))})"


def _emit(fd: int, *words: object) -> None:
    os.write(fd, (" ".join(str(w) for w in words) + "\n").encode())


def perform(store_path: str, op: Op, fd: int) -> None:
    """Carry out ``op`` in this process, writing TRY/ACK lines to ``fd``."""
    import objstore
    from objstore.model.names import CollectionPath
    from objstore.model.versions import list_versions

    if op.kind in ("log", "link"):
        with objstore.init(project=PROJECT, entity=ENTITY, store=store_path) as run:
            if op.kind == "log":
                coll = f"{ENTITY}/{PROJECT}/{op.args['name']}"
                for alias in op.args.get("aliases") or ():
                    _emit(fd, "TRY", "alias", coll, alias, "*")
                art = run.log_model(op.args["path"], name=op.args["name"], aliases=op.args.get("aliases"))
                _emit(fd, "ACK", "log", coll, art.version, art.digest)
                for alias in op.args.get("aliases") or ():
                    _emit(fd, "ACK", "alias", coll, alias, art.version)
            else:
                linked = run.link_model(op.args["path"], op.args["registered"], name=op.args["name"], aliases=op.args.get("aliases"))
                v = linked._logged()[1].version  # may be another collection's, if its content was linked first
                _emit(fd, "ACK", "log", f"{v.entity}/{v.project}/{v.name}", f"v{v.index}", linked.digest)
                _emit(fd, "ACK", "link", f"{ENTITY}/{REGISTRY}/{op.args['registered']}", linked.version, linked.digest)
        _emit(fd, "DONE")
    elif op.kind == "alias":
        api = objstore.Api(store=store_path, entity=ENTITY, project=PROJECT)
        coll = op.args["coll"]
        target = op.args["version"]
        alias = op.args["alias"]
        if op.args.get("delete"):
            _emit(fd, "TRY", "alias", coll, alias, "-")
            try:
                art = api.artifact(f"{coll}:{alias}")
            except NotFound:
                art = None  # not set (or already deleted): nothing to do
            if art is not None:
                art.aliases.remove(alias)
                art.save()
        else:
            _emit(fd, "TRY", "alias", coll, alias, target)
            art = api.artifact(f"{coll}:{target}")
            if alias not in art.aliases:
                art.aliases.append(alias)
            art.save()
        _emit(fd, "ACK", "alias", coll, op.args["alias"], "-" if op.args.get("delete") else target)
        _emit(fd, "DONE")
    elif op.kind == "gc":
        gc_mod = importlib.import_module("objstore.maintenance.gc")
        store = Store.open_existing(store_path)
        # The writer of every earlier trial is dead, so no grace period is needed.
        gc_mod.collect_garbage(store, grace_seconds=op.args.get("grace_seconds", 0.0))
        _emit(fd, "DONE")
    elif op.kind == "push":
        remotes = importlib.import_module("objstore.transfer.remotes")
        remotes.push(store_path, op.args["remote"])
        _emit(fd, "DONE")
    elif op.kind == "pull":
        remotes = importlib.import_module("objstore.transfer.remotes")
        remotes.pull(store_path, op.args["remote"])
        _emit(fd, "DONE")
    elif op.kind == "clone":
        # Clone the store at store_path into args["dest"] (re-running resumes it).
        remotes = importlib.import_module("objstore.transfer.remotes")
        local, _ = remotes.clone(store_path, op.args["dest"])
        local.close()
        _emit(fd, "DONE")
    elif op.kind == "use":
        # Materialize a version under args["root"], then check the copy byte for byte.
        with objstore.init(project=PROJECT, entity=ENTITY, store=store_path) as run:
            path = run.use_model(op.args["spec"], root=op.args["root"])
            art = run.use_artifact(op.args["spec"])
        art.verify(op.args["root"])
        _emit(fd, "USED", op.args["spec"], path)
        _emit(fd, "DONE")
    else:
        raise ValueError(op.kind)
    del CollectionPath, list_versions


@dataclass
class ChildResult:
    lines: list[str]
    status: int  # the raw wait status
    counts: dict[str, int]
    elapsed: float
    error: str

    @property
    def killed(self) -> bool:
        return os.WIFSIGNALED(self.status) and os.WTERMSIG(self.status) == signal.SIGKILL

    @property
    def ok(self) -> bool:
        return os.WIFEXITED(self.status) and os.WEXITSTATUS(self.status) == 0 and "DONE" in self.lines


def run_child(store_path: str, op: Op, *, fault: str | None = None, kill_after: float | None = None) -> ChildResult:
    """Fork, perform ``op`` in the child (with ``fault`` armed), optionally SIGKILL it
    after ``kill_after`` seconds, and collect what it acknowledged."""
    r, w = os.pipe()
    err_r, err_w = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    start = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(r)
            os.close(err_r)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            os.dup2(err_w, 2)
            faults.configure(fault or COUNT_ONLY)
            perform(store_path, op, w)
            _emit(w, "COUNTS", *(f"{k}={v}" for k, v in sorted(faults.counts().items())))
        except BaseException:
            os.write(err_w, traceback.format_exc().encode())
            code = 1
        os._exit(code)
    os.close(w)
    os.close(err_w)
    status: int | None = None
    if kill_after is not None:
        deadline = start + kill_after
        while status is None and time.monotonic() < deadline:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st
            else:
                time.sleep(min(0.002, max(0.0, deadline - time.monotonic())))
        if status is None:
            os.kill(pid, signal.SIGKILL)  # still ours: not yet reaped
    out = _read_all(r)
    err = _read_all(err_r)
    if status is None:
        _, status = os.waitpid(pid, 0)
    elapsed = time.monotonic() - start
    lines = out.decode().splitlines()
    counts: dict[str, int] = {}
    for line in lines:
        if line.startswith("COUNTS"):
            counts = {k: int(v) for k, v in (item.split("=") for item in line.split()[1:])}
    return ChildResult([ln for ln in lines if not ln.startswith("COUNTS")], status, counts, elapsed, err.decode(errors="replace"))


def _read_all(fd: int) -> bytes:
    chunks = []
    with io.FileIO(fd, "r", closefd=True) as f:
        while True:
            data = f.read(65536)
            if not data:
                break
            chunks.append(data)
    return b"".join(chunks)


# -- the trial loop --------------------------------------------------------------------

@dataclass
class Ledger:
    """What the store acknowledged, across all trials."""

    versions: dict[tuple[str, str], str] = field(default_factory=dict)  # (collection, vN) -> tree hex
    aliases: dict[tuple[str, str], set[str]] = field(default_factory=dict)  # (collection, alias) -> allowed targets
    content_of: dict[str, str] = field(default_factory=dict)  # tree hex -> sha256 of the content logged

    def record(self, lines: list[str]) -> None:
        tried: dict[tuple[str, str], str] = {}
        for line in lines:
            words = line.split()
            if words[:2] == ["ACK", "log"] or words[:2] == ["ACK", "link"]:
                key = (words[2], words[3])
                if key in self.versions and self.versions[key] != words[4]:
                    raise AssertionError(f"{key} was acknowledged as {self.versions[key][:12]} and now as {words[4][:12]}")
                self.versions[key] = words[4]
            elif words[:2] == ["TRY", "alias"]:
                tried[(words[2], words[3])] = words[4]
            elif words[:2] == ["ACK", "alias"]:
                self.aliases[(words[2], words[3])] = {words[4]}
                tried.pop((words[2], words[3]), None)
        # A move that was tried but not acknowledged may or may not have happened.
        for key, target in tried.items():
            self.aliases.setdefault(key, {"-"}).add(target)


def check_ledger(location: str | Path, ledger: Ledger) -> list[str]:
    """Every acknowledged version is there with its content; every alias is where an
    acknowledged (or since attempted) move put it."""
    from objstore.model.names import CollectionPath
    from objstore.model.versions import read_entry
    from objstore.storage.keys import alias_ref, version_ref

    store = Store.open_existing(str(location))
    problems = []
    for (coll, vname), tree in sorted(ledger.versions.items()):
        ent, proj, name = coll.split("/")
        oid = store.refs.read(version_ref(ent, proj, name, int(vname[1:])))
        if oid is None:
            problems.append(f"acknowledged {coll}:{vname} is gone")
            continue
        got = read_entry(store, CollectionPath(ent, proj, name), oid).version.tree.hex
        if got != tree:
            problems.append(f"acknowledged {coll}:{vname} held {tree[:12]}, now holds {got[:12]}")
    for (coll, alias), allowed in sorted(ledger.aliases.items()):
        ent, proj, name = coll.split("/")
        oid = store.refs.read(alias_ref(ent, proj, name, alias))
        if oid is None:
            actual = "-"
        else:
            obj = store.odb.get_object(oid)
            actual = f"v{obj.index}"  # type: ignore[union-attr]
        if actual not in allowed and "*" not in allowed:
            problems.append(f"alias {coll}:{alias} is at {actual}; acknowledged moves allow only {sorted(allowed)}")
    store.backend.close()
    return problems


def mirror_problems(local: str | Path, remote: str | Path) -> list[str]:
    """After a completed push of everything: every version ref of ``local`` is in
    ``remote`` with the same value."""
    here, there = Store.open_existing(str(local)), Store.open_existing(str(remote))
    out = []
    for info in here.backend.iter_prefix("refs/"):
        parts = info.key.split("/")
        if len(parts) == 6 and parts[4] == "versions":
            mine, theirs = here.refs.read(info.key), there.refs.read(info.key)
            if mine != theirs:
                out.append(f"remote {info.key} holds {theirs.hex[:12] if theirs else 'nothing'}, "
                           f"local {mine.hex[:12] if mine else 'nothing'}")
    return out


def latest_problems(location: str | Path) -> list[str]:
    """``latest`` of every collection is its newest version (true once a writer finished)."""
    from objstore.model.names import CollectionPath
    from objstore.model.versions import list_aliases, list_collections, list_projects, list_versions

    store = Store.open_existing(str(location))
    out = []
    for ent, proj in list_projects(store):
        for coll in list_collections(store, ent, proj):
            versions = list_versions(store, coll)
            latest = list_aliases(store, coll).get("latest")
            if versions and latest != versions[-1][1]:
                out.append(f"{coll}: latest is not v{versions[-1][0]}")
    del CollectionPath
    return out


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def make_contents(root: Path, rng: random.Random, count: int = 6) -> list[Path]:
    """``count`` model files (and one directory model) that share most of their bytes,
    so logging them exercises dedup: each is a base with one region replaced."""
    root.mkdir(parents=True, exist_ok=True)
    base = bytearray(rng.randbytes(320_000))
    paths = []
    for i in range(count):
        data = bytearray(base)
        start = rng.randrange(0, len(data) - 40_000)
        data[start : start + 40_000] = rng.randbytes(40_000)
        p = root / f"model-{i}.bin"
        p.write_bytes(bytes(data[: 200_000 + 20_000 * i]))
        paths.append(p)
    d = root / "model-dir"
    (d / "sub").mkdir(parents=True, exist_ok=True)
    (d / "weights.bin").write_bytes(bytes(base[:150_000]))
    (d / "sub" / "config.json").write_text('{"layers": 4}')
    (d / "empty").mkdir(exist_ok=True)
    paths.append(d)
    return paths


Chooser = Callable[[random.Random], Op]
