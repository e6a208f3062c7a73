"""Hostile input: hand-crafted trees and objects, and fuzzed names and metadata.

Trees and manifests are built directly (with objstore.storage.objects and odb.put_object,
and as raw msgpack bodies that bypass the dataclasses' own checks), committed as
versions, and then materialized or pulled. Each must be refused with a clear
objstore error, and nothing may be written outside the destination: a sentinel
directory beside it is checked after every attempt.

Names and metadata of every kind go through the API and the CLI under
hypothesis: only InvalidName / ObjstoreError subclasses may escape, and nothing
is ever written outside the store (and the run's ./artifacts directory).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import objstore
from objstore.errors import CorruptObject, ObjstoreError, UnsafePath
from objstore.model.names import CollectionPath
from objstore.model.store import Store
from objstore.model.versions import commit_version
from objstore.storage import codecs
from objstore.storage.ids import Kind, ObjectId, hash_bytes
from objstore.storage.keys import object_key
from objstore.storage.objects import FILE, SYMLINK, TREE, FileObject

ENTITY, PROJECT = "e", "p"


def _put_raw(store: Store, kind: Kind, body: dict[str, Any] | bytes) -> ObjectId:
    """Store a metadata object from a raw msgpack body, bypassing every dataclass check."""
    data = body if isinstance(body, bytes) else msgpack.packb(body, use_bin_type=True)
    oid = hash_bytes(kind, data)
    store.backend.put_if_absent(object_key(oid), codecs.zstd_compressor().compress(data))
    return oid


def _file(store: Store, data: bytes) -> ObjectId:
    cid = hash_bytes(Kind.CHUNK, data)
    store.odb.add_chunk(cid, data)
    store.odb.flush()
    return store.odb.put_object(FileObject(len(data), ((cid, len(data)),)))


def _raw_entry(name: str, kind: str, oid: ObjectId | None, size: int, target: str | None = None) -> list[Any]:
    return [name, kind, oid.raw if oid else None, size, 0o644, target, None]


def _raw_tree(store: Store, entries: list[list[Any]]) -> ObjectId:
    return _put_raw(store, Kind.TREE, {"v": 1, "k": "tree", "entries": entries})


def _commit(store: Store, tree: ObjectId, name: str) -> str:
    resolved, _ = commit_version(store, CollectionPath(ENTITY, PROJECT, name), tree=tree, size=1, new_bytes=0,
                                 artifact_type="model", metadata={}, description=None, run=None)
    return resolved.qualified_name


@pytest.fixture
def arena(tmp_path: Path) -> tuple[Store, Path, Path]:
    """(store, destination, sentinel): the sentinel directory sits beside the destination."""
    store = Store.open(tmp_path / "store")
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "keep.txt").write_text("untouched")
    return store, tmp_path / "dest", sentinel


def _outside_untouched(tmp_path: Path, sentinel: Path) -> None:
    assert sorted(p.name for p in tmp_path.iterdir()) in (["sentinel", "store"], ["dest", "sentinel", "store"])
    assert [p.name for p in sentinel.iterdir()] == ["keep.txt"] and (sentinel / "keep.txt").read_text() == "untouched"
    for p in tmp_path.rglob("*"):
        if p.is_symlink():
            real = Path(os.path.realpath(p))
            assert real.is_relative_to(tmp_path / "dest") or real.is_relative_to(tmp_path / "store"), f"{p} -> {real}"


def _download(store: Store, spec: str, dest: Path) -> None:
    objstore.Api(store=store, entity=ENTITY, project=PROJECT).artifact(spec).download(dest)


def _hostile_trees(store: Store) -> dict[str, ObjectId]:
    ok = _file(store, b"payload")
    inner = _raw_tree(store, [_raw_entry("x", FILE, ok, 7)])
    cases = {
        "dotdot": [_raw_entry("..", FILE, ok, 7)],
        "dot": [_raw_entry(".", TREE, inner, 7)],
        "absolute": [_raw_entry("/tmp/objstore-evil", FILE, ok, 7)],
        "slash": [_raw_entry("../sentinel/evil", FILE, ok, 7)],
        "backslash": [_raw_entry("..\\sentinel\\evil", FILE, ok, 7)],
        "nul": [_raw_entry("evil\0.txt", FILE, ok, 7)],
        "empty": [_raw_entry("", FILE, ok, 7)],
        "duplicate": [_raw_entry("a", FILE, ok, 7), _raw_entry("a", FILE, ok, 7)],
        "file-and-dir": [_raw_entry("a", FILE, ok, 7), _raw_entry("a", TREE, inner, 7)],
        "symlink-up": [_raw_entry("link", SYMLINK, None, 0, "../sentinel")],
        "symlink-absolute": [_raw_entry("link", SYMLINK, None, 0, str(Path("/tmp")))],
        "symlink-deep-up": [_raw_entry("d", TREE, _raw_tree(store, [_raw_entry("l", SYMLINK, None, 0, "../../sentinel/keep.txt")]), 0)],
        # Each link alone stays inside; resolved together, 'out' leaves the destination:
        # sub/up -> .. is dest itself, so sub/up/../sentinel is the sentinel.
        "symlink-chain": [_raw_entry("out", SYMLINK, None, 0, "sub/up/../../sentinel"),
                          _raw_entry("sub", TREE, _raw_tree(store, [_raw_entry("up", SYMLINK, None, 0, "..")]), 0)],
        "symlink-chain-2": [_raw_entry("out", SYMLINK, None, 0, "sub/up/../x"),
                            _raw_entry("sub", TREE, _raw_tree(store, [_raw_entry("up", SYMLINK, None, 0, "..")]), 0)],
        "size-disagrees": [_raw_entry("f", FILE, ok, 9999)],
        "tree-as-file": [_raw_entry("f", FILE, inner, 7)],
        "missing-id": [_raw_entry("f", FILE, None, 7)],
        "unknown-kind": [_raw_entry("f", "device", ok, 7)],
        "negative-size": [_raw_entry("f", FILE, ok, -1)],
    }
    return {name: _raw_tree(store, entries) for name, entries in cases.items()}


def test_hostile_trees_are_refused_and_write_nothing_outside(arena: tuple[Store, Path, Path], tmp_path: Path) -> None:
    store, dest, sentinel = arena
    trees = _hostile_trees(store)
    for i, (case, tree) in enumerate(trees.items()):
        spec = _commit(store, tree, f"hostile-{i}")
        with pytest.raises(ObjstoreError) as info:
            _download(store, spec, dest)
        assert isinstance(info.value, (UnsafePath, CorruptObject)), f"{case}: {type(info.value).__name__}: {info.value}"
        assert str(info.value), case
        _outside_untouched(tmp_path, sentinel)


def test_symlink_in_destination_is_not_followed(arena: tuple[Store, Path, Path], tmp_path: Path) -> None:
    """A destination that already holds a symlink to outside where the tree has a directory."""
    store, dest, sentinel = arena
    ok = _file(store, b"payload")
    tree = _raw_tree(store, [_raw_entry("sub", TREE, _raw_tree(store, [_raw_entry("keep.txt", FILE, ok, 7)]), 7)])
    spec = _commit(store, tree, "through-link")
    dest.mkdir()
    (dest / "sub").symlink_to(sentinel)
    with pytest.raises(UnsafePath):
        _download(store, spec, dest)
    (dest / "sub").unlink()
    (dest / "sub").symlink_to(sentinel / "keep.txt")  # a file symlink where a directory goes
    with pytest.raises(UnsafePath):
        _download(store, spec, dest)
    assert (sentinel / "keep.txt").read_text() == "untouched"


def test_file_object_lying_about_its_chunks(arena: tuple[Store, Path, Path], tmp_path: Path) -> None:
    """A file object whose sizes add up but whose claimed chunk length is not the chunk's:
    its id is computed from the claim, so only a length check at read time catches it."""
    store, dest, sentinel = arena
    data = b"0123456789"
    cid = hash_bytes(Kind.CHUNK, data)
    store.odb.add_chunk(cid, data)
    store.odb.flush()
    liar = FileObject(20, ((cid, 5), (cid, 15)))  # sum is 20; the chunk is 10 bytes each time
    fid = store.odb.put_object(liar)
    spec = _commit(store, _raw_tree(store, [_raw_entry("f", FILE, fid, 20)]), "liar")
    with pytest.raises(CorruptObject):
        _download(store, spec, dest)
    assert not (dest / "f").exists()
    # And a size field that disagrees with the chunk list is refused at decode.
    bad = _put_raw(store, Kind.FILE, {"v": 1, "k": "file", "size": 999, "chunks": cid.raw + (10).to_bytes(8, "little")})
    spec = _commit(store, _raw_tree(store, [_raw_entry("g", FILE, bad, 999)]), "bad-size")
    with pytest.raises(CorruptObject):
        _download(store, spec, dest)
    _outside_untouched(tmp_path, sentinel)


BOMB = textwrap.dedent("""
    import resource, sys
    resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[2]), int(sys.argv[2])))
    from objstore.model.store import Store
    from objstore.storage.ids import ObjectId
    from objstore.errors import ObjstoreError
    store = Store.open_existing(sys.argv[1])
    for hexid in sys.argv[3:]:
        try:
            store.odb.get_object(ObjectId.from_hex(hexid))
            print("accepted", hexid[:8])
        except ObjstoreError as exc:
            print("refused", type(exc).__name__)
        except MemoryError:
            print("memoryerror")
""")


def test_msgpack_bombs_are_refused_in_bounded_memory(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "store")
    bombs = [
        # nesting far deeper than any real object
        _put_raw(store, Kind.TREE, b"\x91" * 100_000 + b"\xc0"),
        # an array header promising 2**32-1 elements with none following
        _put_raw(store, Kind.TREE, b"\x81\xa7entries\xdd\xff\xff\xff\xff"),
        # a map header promising 2**32-1 pairs
        _put_raw(store, Kind.TREE, b"\xdf\xff\xff\xff\xff"),
        # a bin header promising 4 GiB
        _put_raw(store, Kind.FILE, b"\x82\xa6chunks\xc6\xff\xff\xff\xff"),
        # a tree with a million tiny entries: well-formed, and still bounded
        _put_raw(store, Kind.TREE, {"v": 1, "k": "tree", "entries": [["a", "file", None, 0, 0, None, None]] * 200_000}),
    ]
    # A zstd frame that expands 1000x (2 GiB of zeros), stored under some id.
    zeros = codecs.zstd_compressor().compress(b"\0" * (64 << 20))
    zid = hash_bytes(Kind.TREE, b"zip-bomb")
    store.backend.put_if_absent(object_key(zid), zeros * 32)
    bombs.append(zid)
    limit = 1536 << 20  # the interpreter, numpy and objstore fit in well under this
    proc = subprocess.run([sys.executable, "-c", BOMB, str(tmp_path / "store"), str(limit), *(b.hex for b in bombs)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = proc.stdout.split("\n")[:-1]
    assert len(results) == len(bombs), proc.stdout + proc.stderr
    assert all(r.startswith("refused") for r in results[:-2] + results[-1:]), results
    # the 200k-entry tree decodes (it is valid msgpack) but is refused as a tree later
    assert results[-2].startswith(("refused", "accepted")), results


# -- pulling hostile trees ----------------------------------------------------------------

def test_pull_refuses_each_hostile_tree(tmp_path: Path) -> None:
    """Each hostile version alone on a remote: pull refuses it with a clear error and
    the local store gets no ref to it (materialize would refuse it anyway)."""
    remotes = pytest.importorskip("objstore.transfer.remotes")
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "keep.txt").write_text("untouched")
    cases = list(_hostile_trees(Store.open(tmp_path / "probe")))
    # Escapes that exist only in combination (or only once written) are materialize's to refuse.
    late = {"symlink-up", "symlink-deep-up", "symlink-chain", "symlink-chain-2", "size-disagrees", "tree-as-file"}
    for i, case in enumerate(cases):
        remote = Store.open(tmp_path / f"remote-{i}")
        _commit(remote, _hostile_trees(remote)[case], "hostile")
        local = Store.open(tmp_path / f"local-{i}")
        try:
            remotes.pull(local, str(tmp_path / f"remote-{i}"))
        except (UnsafePath, CorruptObject) as exc:
            assert str(exc), case
            assert not list(Store.open_existing(str(tmp_path / f"local-{i}")).backend.iter_prefix("refs/e/p/hostile/versions/")), case
            continue
        assert case in late, f"{case}: pulled without an error"
        with pytest.raises(ObjstoreError):
            _download(Store.open_existing(str(tmp_path / f"local-{i}")), "hostile:v0", tmp_path / f"dest-{i}")
    assert [p.name for p in sentinel.iterdir()] == ["keep.txt"] and (sentinel / "keep.txt").read_text() == "untouched"
    assert not Path("/tmp/objstore-evil").exists()


# -- fuzzed names and metadata ------------------------------------------------------------

names = st.one_of(
    st.text(max_size=140),
    st.text(alphabet="abc.-_/\\:\0 ~$", max_size=12),
    st.sampled_from(["..", ".", "", "/", "../x", "v3", "latest", "a" * 128, "a" * 129, "CON", "x:y", "-", ".hidden", "ok-name"]),
)
# Half the time a valid name, so fuzzing reaches the calls after init.
names_or_valid = st.one_of(st.from_regex(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,20}", fullmatch=True), names)
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=30), st.binary(max_size=30)),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=12,
)
metadata = st.one_of(st.none(), st.dictionaries(st.one_of(st.text(max_size=10), st.integers()), json_values, max_size=5),
                     st.integers(), st.text(max_size=5), st.lists(st.integers(), max_size=3))


def _files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(entity=names_or_valid, project=names_or_valid, name=names_or_valid, alias=names_or_valid,
       registered=names_or_valid, use=names_or_valid, meta=metadata, description=st.one_of(st.none(), st.text(max_size=50)))
def test_fuzzed_names_through_the_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, entity: str, project: str, name: str,
                                      alias: str, registered: str, use: str, meta: Any, description: str | None) -> None:
    work = tmp_path / "fuzz"
    work.mkdir(exist_ok=True)
    monkeypatch.chdir(work)
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights")
    before = _files_under(tmp_path)
    store = tmp_path / "store"
    try:
        with objstore.init(project=project, entity=entity, store=store) as run:
            for call in (lambda: run.log_model(model, name=name, aliases=[alias], metadata=meta, description=description),
                         lambda: run.use_model(use),
                         lambda: run.link_model(model, registered, name=name if name else None, aliases=[alias]),
                         lambda: run.use_model(f"{entity}/model-registry/{registered}:{alias}")):
                try:
                    call()
                except ObjstoreError:
                    pass
    except ObjstoreError:
        pass
    new = _files_under(tmp_path) - before
    outside = {p for p in new if not p.startswith(("store/", "fuzz/artifacts"))} - {"store"}
    assert not outside, outside


CLI_CALLS = [
    ["log-model", "{model}", "--name", "{name}", "--alias", "{alias}", "--project", "{project}", "--entity", "{entity}",
     "--metadata", "{meta}"],
    ["use-model", "{entity}/{project}/{name}:{alias}", "--root", "{root}"],
    ["link-model", "{model}", "{name}", "--alias", "{alias}"],
]
# Each CLI call is a new interpreter (~1 s): a few examples by default, more on request.
CLI_EXAMPLES = int(os.environ.get("OBJSTORE_CLI_FUZZ_EXAMPLES", "4"))


@settings(max_examples=CLI_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=names_or_valid.filter(lambda s: "\0" not in s), alias=names_or_valid.filter(lambda s: "\0" not in s),
       project=st.text(alphabet="abc./-", max_size=6), entity=st.text(alphabet="ab./\\", max_size=6),
       meta=st.text(alphabet="ab=.:,{}\"", max_size=12))
def test_fuzzed_names_through_the_cli(tmp_path: Path, name: str, alias: str, project: str, entity: str, meta: str) -> None:
    cli = str(Path(sys.executable).parent / "objstore")
    work = tmp_path / "cli"
    work.mkdir(exist_ok=True)
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights")
    before = _files_under(tmp_path)
    values = {"model": str(model), "name": name, "alias": alias, "project": project, "entity": entity, "meta": meta,
              "root": str(work / "out")}
    for call in CLI_CALLS:
        args = [a.format(**values) for a in call]
        proc = subprocess.run([cli, "--store", str(tmp_path / "store"), *args], capture_output=True, text=True, cwd=work, timeout=60)
        assert "Traceback" not in proc.stderr, (args, proc.stderr)
        assert proc.returncode in (0, 1, 2), (args, proc.returncode, proc.stderr)
        if proc.returncode:
            assert proc.stderr.strip(), args
    new = _files_under(tmp_path) - before
    assert all(p.startswith(("store", "cli")) for p in new), new
    assert all(not p.startswith("cli/") or p.startswith("cli/out") or p.startswith("cli/artifacts") for p in new), new
