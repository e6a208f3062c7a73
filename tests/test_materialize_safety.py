"""Materializing into a destination someone else can write to, and logging directories with symlinks.

Destinations are prepared the way an attacker (or an unlucky earlier run) would leave
them: symlinks planted at a file's name, at an intermediate directory, at the temp
names objstore writes to; a file where the root goes; a directory where the version
has a symlink; the temp file a SIGKILLed ``use_model`` left behind. Every case checks
that nothing is written outside the destination (a sentinel directory beside it) and
that every refusal is an ``ObjstoreError`` with a message.

Logged directories hold symlinks of every shape (inside, to a directory outside,
leaving and re-entering, dangling): each is followed, stored so that it can be
materialized, or refused with a message, and never silently dropped.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_hostile import ENTITY, PROJECT, _commit, _file, _raw_entry, _raw_tree

import objstore
from objstore.errors import ObjstoreError, UnsafePath, VerificationFailed
from objstore.model.store import Store
from objstore.storage.objects import FILE, SYMLINK

TEMP_PREFIX = ".objstore-tmp-"  # objstore.storage.trees.TEMP_PREFIX; spelled out so this file imports on old code


@pytest.fixture
def arena(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(store path, destination, sentinel): the sentinel directory sits beside the destination."""
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "keep.txt").write_text("untouched")
    return tmp_path / "store", tmp_path / "dest", sentinel


def _log_dir(store: Path, src: Path, name: str = "m") -> objstore.Artifact:
    with objstore.init(project=PROJECT, entity=ENTITY, store=store) as run:
        return run.log_model(src, name=name)


def _api_artifact(store: Path, spec: str) -> objstore.Artifact:
    return objstore.Api(store=store, entity=ENTITY, project=PROJECT).artifact(spec)


def _model_dir(tmp_path: Path, files: dict[str, bytes]) -> Path:
    src = tmp_path / "src" / "model"
    for rel, data in files.items():
        (src / rel).parent.mkdir(parents=True, exist_ok=True)
        (src / rel).write_bytes(data)
    return src


def _listing(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


# -- class 2: writes through planted paths ------------------------------------------------

def test_reference_temp_name_symlink_is_not_followed(arena: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """The old fixed temp name ``.NAME.objstore-ref`` was a place to plant a link: the
    download copied through it into the sentinel."""
    store, dest, sentinel = arena
    ref = tmp_path / "refs" / "weights.bin"
    ref.parent.mkdir()
    ref.write_bytes(b"referenced bytes")
    with objstore.init(project=PROJECT, entity=ENTITY, store=store) as run:
        art = objstore.Artifact("r", type="model")
        art.add_reference(ref.as_uri())
        run.log_artifact(art)
    dest.mkdir()
    (dest / ".weights.bin.objstore-ref").symlink_to(sentinel / "evil.bin")
    got = _api_artifact(store, "r:v0")
    got.download(dest)
    assert (dest / "weights.bin").read_bytes() == b"referenced bytes" and not (dest / "weights.bin").is_symlink()
    assert [p.name for p in sentinel.iterdir()] == ["keep.txt"]
    assert (sentinel / "keep.txt").read_text() == "untouched"
    (dest / ".weights.bin.objstore-ref").unlink()
    got.verify(dest)
    # verify checks a downloaded reference too: by size, and by the BLAKE3 logged with it
    (dest / "weights.bin").write_bytes(b"referenced bytez")
    with pytest.raises(VerificationFailed, match="weights.bin"):
        got.verify(dest)
    (dest / "weights.bin").unlink()
    with pytest.raises(VerificationFailed, match="weights.bin"):
        got.verify(dest)


def test_symlink_at_a_files_destination_is_replaced_not_written_through(arena: tuple[Path, Path, Path], tmp_path: Path) -> None:
    store, dest, sentinel = arena
    _log_dir(store, _model_dir(tmp_path, {"model.bin": b"weights", "sub/inner.bin": b"inner", "sub/fifo.bin": b"f"}))
    dest.mkdir()
    (dest / "model.bin").symlink_to(sentinel / "keep.txt")
    (dest / "sub").mkdir()
    (dest / "sub" / "inner.bin").symlink_to(sentinel / "keep.txt")
    os.mkfifo(dest / "sub" / "fifo.bin")  # where a file goes later; opening it must not block
    art = _api_artifact(store, "m:v0")
    art.download(dest)
    for rel, data in (("model.bin", b"weights"), ("sub/inner.bin", b"inner"), ("sub/fifo.bin", b"f")):
        assert not (dest / rel).is_symlink() and (dest / rel).read_bytes() == data
    assert (sentinel / "keep.txt").read_text() == "untouched"
    art.verify(dest)


def test_symlink_at_the_temp_name_is_not_followed(arena: tuple[Path, Path, Path], tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """An attacker who can predict the temp name plants a link there first."""
    store, dest, sentinel = arena
    _log_dir(store, _model_dir(tmp_path, {"model.bin": b"weights"}))
    real = secrets.token_hex
    calls = iter(range(1_000_000))

    def predictable(n: int | None = None) -> str:
        # the first name each writer draws is the one the attacker guessed
        return "ab" * (n or 16) if next(calls) == 0 else real(n)

    monkeypatch.setattr(secrets, "token_hex", predictable)
    dest.mkdir()
    for guess in (f".model.bin.objstore-{'ab' * 4}", f"{TEMP_PREFIX}{'ab' * 8}", f"{TEMP_PREFIX}{'ab' * 16}"):
        (dest / guess).symlink_to(sentinel / "evil.bin")
    _api_artifact(store, "m:v0").download(dest)
    assert (dest / "model.bin").read_bytes() == b"weights" and not (dest / "model.bin").is_symlink()
    assert [p.name for p in sentinel.iterdir()] == ["keep.txt"]


def test_intermediate_directory_swapped_for_a_symlink_during_materialize(arena: tuple[Path, Path, Path],
                                                                       tmp_path: Path) -> None:
    """A second thread keeps swapping ``dest/sub`` between a real directory and a link to
    the sentinel while the version's files are written into it. A path-based writer
    checks the directory, then writes through whatever stands there a moment later."""
    store, dest, sentinel = arena
    files = {f"sub/f{i:04d}": f"payload {i}".encode() for i in range(600)}
    _log_dir(store, _model_dir(tmp_path, files))
    art = _api_artifact(store, "m:v0")
    outside = tmp_path / "outside"
    outside.mkdir()
    for attempt in range(3):
        root = dest / str(attempt)
        (root / "sub").mkdir(parents=True)
        stop = threading.Event()

        def flip(root: Path = root, stop: threading.Event = stop) -> None:  # this attempt's
            sub, moved = root / "sub", root / "sub.real"
            while not stop.is_set():
                try:
                    os.rename(sub, moved)
                    os.symlink(outside, sub)
                    os.unlink(sub)
                    os.rename(moved, sub)
                except FileNotFoundError:
                    # materialize made "sub" again while it was moved away
                    pass
                except OSError:
                    pass

        flipper = threading.Thread(target=flip)
        flipper.start()
        try:
            art.download(root)
        except ObjstoreError as exc:
            assert str(exc)
        finally:
            stop.set()
            flipper.join()
        assert list(outside.iterdir()) == [], sorted(p.name for p in outside.iterdir())[:5]
    assert [p.name for p in sentinel.iterdir()] == ["keep.txt"]


def test_file_name_of_255_bytes_round_trips(arena: tuple[Path, Path, Path], tmp_path: Path) -> None:
    store, dest, _ = arena
    long_name = "w" * 251 + ".bin"
    assert len(long_name.encode()) == 255
    src = _model_dir(tmp_path, {long_name: b"long-named weights", "d" * 255 + "/x": b"in a long directory"})
    ref = tmp_path / "refs" / ("r" * 255)
    ref.parent.mkdir()
    ref.write_bytes(b"referenced")
    with objstore.init(project=PROJECT, entity=ENTITY, store=store) as run:
        art = objstore.Artifact("long", type="model")
        art.add_dir(src)
        art.add_reference(ref.as_uri())
        with art.new_file("n" * 255, mode="wb") as f:
            f.write(b"new file")
        run.log_artifact(art)
    got = _api_artifact(store, "long:v0")
    got.download(dest)
    assert (dest / long_name).read_bytes() == b"long-named weights"
    assert (dest / ("d" * 255) / "x").read_bytes() == b"in a long directory"
    assert (dest / ("r" * 255)).read_bytes() == b"referenced"
    assert (dest / ("n" * 255)).read_bytes() == b"new file"
    got.verify(dest)


KILLED_USE = textwrap.dedent("""
    import json, sys
    import objstore
    from objstore import faults
    with objstore.init(project=sys.argv[2], entity=sys.argv[3], store=sys.argv[1]) as run:
        faults.configure(sys.argv[5])
        run.use_model("m:v0", root=sys.argv[4])
        print(json.dumps(faults.counts()))
""")


def test_sigkilled_use_model_leaves_nothing_the_rerun_hands_back(arena: tuple[Path, Path, Path], tmp_path: Path) -> None:
    store, dest, _ = arena
    _log_dir(store, _model_dir(tmp_path, {"model.bin": os.urandom(3 << 20), "config.json": b"{}"}))

    def use(root: Path, fault: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-c", KILLED_USE, str(store), PROJECT, ENTITY, str(root), fault],
                              capture_output=True, text=True, timeout=120)

    # A dry run counts the temp-file writes use_model makes; the last one is the model's.
    dry = use(tmp_path / "dry", "write:1000000")
    assert dry.returncode == 0, dry.stderr
    last = json.loads(dry.stdout.splitlines()[-1]).get("write", 0)
    killed = use(dest, f"write:{last}")
    assert killed.returncode == -9, (killed.returncode, killed.stderr[-2000:])
    leftovers = [p for p in _listing(dest) if p not in ("config.json", "model.bin")]
    assert leftovers, f"the kill left no temp file behind: {_listing(dest)}"
    with objstore.init(project=PROJECT, entity=ENTITY, store=store) as run:
        path = run.use_model("m:v0", root=dest)
    assert Path(path) == dest
    assert _listing(dest) == ["config.json", "model.bin"]
    _api_artifact(store, "m:v0").verify(dest)


def test_concurrent_downloads_into_one_root_take_turns(arena: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """Each writer removes the temp files it finds; the lock on the root is what keeps
    it from removing another live writer's."""
    store, dest, _ = arena
    files = {f"shard-{i}.bin": os.urandom(256 << 10) for i in range(6)}
    _log_dir(store, _model_dir(tmp_path, files))
    code = textwrap.dedent("""
        import sys, objstore
        objstore.Api(store=sys.argv[1], entity=sys.argv[2], project=sys.argv[3]).artifact("m:v0").download(sys.argv[4])
    """)
    procs = [subprocess.Popen([sys.executable, "-c", code, str(store), ENTITY, PROJECT, str(dest)],
                              stderr=subprocess.PIPE, text=True) for _ in range(4)]
    for proc in procs:
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-2000:]
    assert _listing(dest) == sorted(files)
    _api_artifact(store, "m:v0").verify(dest)


def test_verify_reports_files_the_version_does_not_hold(arena: tuple[Path, Path, Path], tmp_path: Path) -> None:
    store, dest, _ = arena
    _log_dir(store, _model_dir(tmp_path, {"model.bin": b"weights", "sub/a.bin": b"a"}))
    art = _api_artifact(store, "m:v0")
    art.download(dest)
    art.verify(dest)
    (dest / "sub" / "stray.bin").write_bytes(b"not in the version")
    (dest / "extra-dir").mkdir()
    with pytest.raises(VerificationFailed) as info:
        art.verify(dest)
    assert "sub/stray.bin" in info.value.paths and "extra-dir/" in info.value.paths, info.value.paths
    assert "stray.bin" in str(info.value)


def test_root_that_is_a_file_is_a_clear_error(arena: tuple[Path, Path, Path], tmp_path: Path) -> None:
    store, dest, _ = arena
    _log_dir(store, _model_dir(tmp_path, {"model.bin": b"weights"}))
    dest.write_bytes(b"a file, not a directory")
    art = _api_artifact(store, "m:v0")
    with pytest.raises(ObjstoreError, match=str(dest)):
        art.download(dest)
    with pytest.raises(ObjstoreError, match=str(dest)):
        art.download(dest / "below")
    assert dest.read_bytes() == b"a file, not a directory"


def test_directory_where_the_version_has_a_symlink_or_file(arena: tuple[Path, Path, Path], tmp_path: Path) -> None:
    store, dest, _ = arena
    src = _model_dir(tmp_path, {"model.bin": b"weights", "sub/a.bin": b"a"})
    (src / "link").symlink_to("model.bin")
    _log_dir(store, src)
    art = _api_artifact(store, "m:v0")
    assert {f.path: f.kind for f in art.files()}["link"] == SYMLINK
    (dest / "link").mkdir(parents=True)
    (dest / "link" / "mine.txt").write_text("the user's")
    with pytest.raises(UnsafePath, match="link"):
        art.download(dest)
    assert (dest / "link" / "mine.txt").read_text() == "the user's"
    # A file standing where the version has a directory, and a directory where it has a file.
    for blocker, kind in (("sub", "file"), ("model.bin", "dir")):
        other = tmp_path / f"dest-{kind}"
        other.mkdir()
        if kind == "file":
            (other / blocker).write_text("the user's")
        else:
            (other / blocker).mkdir()
        with pytest.raises(UnsafePath, match=blocker):
            art.download(other)


def test_dangling_link_that_would_climb_out_is_refused_before_writing(arena: tuple[Path, Path, Path],
                                                                     tmp_path: Path) -> None:
    """``a -> missing/../../sentinel``: harmless while ``missing`` is missing, out of the
    destination as soon as anyone makes that directory."""
    store_path, dest, sentinel = arena
    store = Store.open(store_path)
    ok = _file(store, b"payload")
    spec = _commit(store, _raw_tree(store, [_raw_entry("a", SYMLINK, None, 0, "missing/../../sentinel"),
                                           _raw_entry("f", FILE, ok, 7)]), "climb")
    with pytest.raises(UnsafePath, match="'a'"):
        _api_artifact(store_path, spec).download(dest)
    assert not (dest / "f").exists() and [p.name for p in sentinel.iterdir()] == ["keep.txt"]


def test_reserved_temp_prefix_is_refused_in_trees_and_at_logging(arena: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """Temp files are recognizable because no version can hold a name with their prefix."""
    store_path, dest, _ = arena
    store = Store.open(store_path)
    ok = _file(store, b"payload")
    spec = _commit(store, _raw_tree(store, [_raw_entry(TEMP_PREFIX + "x", FILE, ok, 7)]), "reserved")
    with pytest.raises(UnsafePath):
        _api_artifact(store_path, spec).download(dest)
    assert not (dest / (TEMP_PREFIX + "x")).exists()
    art = objstore.Artifact("reserved2", type="model")
    with pytest.raises(ObjstoreError, match="reserved"):
        art.add_file(_model_dir(tmp_path, {"a": b"a"}) / "a", name=TEMP_PREFIX + "a")


# -- class 10: symlinks in logged directories ---------------------------------------------

def test_link_to_a_directory_outside_is_followed(arena: tuple[Path, Path, Path], tmp_path: Path) -> None:
    store, dest, _ = arena
    src = _model_dir(tmp_path, {"model.bin": b"weights"})
    shared = tmp_path / "shared" / "tokenizer"
    (shared / "deep").mkdir(parents=True)
    (shared / "vocab.txt").write_text("a b c")
    (shared / "deep" / "merges.txt").write_text("ab")
    (src / "tokenizer").symlink_to(shared)
    art = _log_dir(store, src)
    assert {f.path: f.kind for f in art.files()} == {"model.bin": FILE, "tokenizer/deep/merges.txt": FILE,
                                                      "tokenizer/vocab.txt": FILE}
    got = _api_artifact(store, "m:v0")
    got.download(dest)
    assert (dest / "tokenizer" / "vocab.txt").read_text() == "a b c"
    assert (dest / "tokenizer" / "deep" / "merges.txt").read_text() == "ab"
    got.verify(dest)


def test_link_that_leaves_and_reenters_is_materializable(arena: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """``m/alias.bin -> ../m/file.bin`` names a file inside ``m`` by way of its parent:
    stored as that link, it could never be written anywhere but a directory named m."""
    store, dest, _ = arena
    src = _model_dir(tmp_path, {"file.bin": b"weights", "sub/x.bin": b"x"})
    assert src.name == "model"
    (src / "alias.bin").symlink_to("../model/file.bin")
    (src / "sub" / "up.bin").symlink_to("../../model/sub/x.bin")
    (src / "inside.bin").symlink_to("sub/x.bin")  # an ordinary inside link stays a link
    art = _log_dir(store, src)
    kinds = {f.path: f.kind for f in art.files()}
    assert kinds["inside.bin"] == SYMLINK
    got = _api_artifact(store, "m:v0")
    got.download(dest)
    assert (dest / "alias.bin").read_bytes() == b"weights"
    assert (dest / "sub" / "up.bin").read_bytes() == b"x"
    assert os.readlink(dest / "inside.bin") == "sub/x.bin"
    got.verify(dest)


def test_dangling_and_looping_links_are_refused_with_a_message(arena: tuple[Path, Path, Path], tmp_path: Path) -> None:
    store, _, _ = arena
    for i, (name, target) in enumerate((("gone.bin", "missing.bin"), ("gone.bin", str(tmp_path / "nowhere")),
                                        ("loop", "loop"))):
        src = _model_dir(tmp_path / str(i), {"model.bin": b"weights"})
        (src / name).symlink_to(target)
        with pytest.raises(ObjstoreError, match=name):
            _log_dir(store, src, name=f"d{i}")
        with pytest.raises(ObjstoreError):
            _api_artifact(store, f"d{i}:latest")


@pytest.mark.s3
def test_s3_reference_temp_name_symlink_is_not_followed(arena: tuple[Path, Path, Path], tmp_path: Path,
                                                        s3_server: object, s3_bucket_url: str) -> None:
    """remote_refs had the same fixed ``.NAME.objstore-ref`` temp name as file references."""
    from conftest import S3Server, s3_request

    assert isinstance(s3_server, S3Server)
    store, dest, sentinel = arena
    bucket = s3_bucket_url[len("s3://"):].split("/", 1)[0]
    data = os.urandom(1 << 20)

    def put(body: bytes) -> None:
        status, _ = s3_request("PUT", s3_server.endpoint, f"/{bucket}/w/model.bin", s3_server.access_key,
                               s3_server.secret_key, body)
        assert status == 200

    put(data)
    with objstore.init(project=PROJECT, entity=ENTITY, store=store) as run:
        art = objstore.Artifact("s3ref", type="model")
        art.add_reference(f"s3://{bucket}/w/model.bin")
        run.log_artifact(art)
    dest.mkdir()
    (dest / ".model.bin.objstore-ref").symlink_to(sentinel / "evil.bin")
    got = _api_artifact(store, "s3ref:v0")
    got.download(dest)
    assert not (dest / "model.bin").is_symlink() and (dest / "model.bin").read_bytes() == data
    assert [p.name for p in sentinel.iterdir()] == ["keep.txt"]
    # A refused download (the object changed) leaves no temp file behind.
    put(data[:-1] + bytes([data[-1] ^ 1]))
    with pytest.raises(VerificationFailed):
        got.download(tmp_path / "dest2")
    assert _listing(tmp_path / "dest2") == []


def test_file_reference_to_a_directory_follows_links_and_refuses_dangling_ones(arena: tuple[Path, Path, Path],
                                                                               tmp_path: Path) -> None:
    """A ``file://`` reference to a directory dropped its links to directories and its
    dangling links without a word."""
    store, dest, _ = arena
    ref = tmp_path / "refdir"
    (ref / "own").mkdir(parents=True)
    (ref / "own" / "a.bin").write_bytes(b"a")
    other = tmp_path / "other"
    other.mkdir()
    (other / "b.bin").write_bytes(b"b")
    (ref / "linked").symlink_to(other)
    with objstore.init(project=PROJECT, entity=ENTITY, store=store) as run:
        art = objstore.Artifact("refdir", type="model")
        art.add_reference(ref.as_uri())
        run.log_artifact(art)
    assert [f.path for f in art.files()] == ["linked/b.bin", "own/a.bin"]
    art.download(dest)
    assert (dest / "linked" / "b.bin").read_bytes() == b"b"
    (ref / "gone").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ObjstoreError, match="gone"):
        objstore.Artifact("refdir2", type="model").add_reference(ref.as_uri())
    (ref / "gone").unlink()
    (ref / "own" / "up").symlink_to(ref)
    with pytest.raises(ObjstoreError, match="contains it"):
        objstore.Artifact("refdir3", type="model").add_reference(ref.as_uri())


# -- the link rule agrees with the kernel ---------------------------------------------------

# "ABS" stands for an absolute path to the file outside the root
LINK_TARGETS = st.sampled_from([
    ".", "..", "f", "d", "d/g", "d/..", "d/../f", "../root/f", "../x", "../../x", "ABS", "l0", "l1", "l2",
    "d/l0", "l0/g", "l1/../f", "d/l1/..", "missing", "f/g", "d/./g", "d//g", "l2/../../x", "missing/../../x",
])


@settings(max_examples=150, deadline=None)
@given(links=st.lists(st.tuples(st.sampled_from(["l0", "l1", "l2", "d/l0", "d/l1"]), LINK_TARGETS), max_size=5,
                      unique_by=lambda t: t[0]))
def test_resolve_link_agrees_with_the_kernel(links: list[tuple[str, str]]) -> None:
    """Inside: the kernel reaches that very path. Dangling or a loop: the kernel reaches
    nothing. (Escapes: the kernel may still come back, as ``../root/f`` does; such a
    link is followed at logging and refused at materializing, never stored as a link.)"""
    from objstore.files.safepath import directory_lookup, resolve_link

    with tempfile.TemporaryDirectory() as tmp:
        outer = Path(os.path.realpath(tmp)) / "outer"  # so ../../x lands in tmp, never in a directory of someone else's
        outer.mkdir()
        (outer / "x").write_text("outside")
        root = outer / "root"
        (root / "d").mkdir(parents=True)
        (root / "f").write_text("f")
        (root / "d" / "g").write_text("g")
        links = [(rel, str(outer / "x") if target == "ABS" else target) for rel, target in links]
        for rel, target in links:
            os.symlink(target, root / rel)
        for rel, target in links:
            found = resolve_link(directory_lookup(root), tuple(rel.split("/")), target)
            link = root / rel
            if found.outcome == "inside":
                assert os.path.realpath(link) == str(root.joinpath(*found.path)), (rel, target, found)
                assert os.path.isdir(link) == (found.kind == "dir"), (rel, target, found)
            elif found.outcome in ("dangling", "loop"):
                assert not os.path.exists(link), (rel, target, found)
            else:
                assert found.outcome == "escapes"


@settings(max_examples=40, deadline=None)
@given(links=st.lists(st.tuples(st.sampled_from(["l0", "l1", "l2", "d/l0", "d/l1"]), LINK_TARGETS), max_size=4,
                      unique_by=lambda t: t[0]))
def test_whatever_add_dir_accepts_materializes_as_it_reads(links: list[tuple[str, str]]) -> None:
    """Nothing accepted is unreadable: a logged directory with any links either is
    refused with a message, or downloads to a copy where every path reads as in the
    original and verify() passes."""
    # the store and the copy live apart from outer: the links may log all of it
    with tempfile.TemporaryDirectory() as tmp, tempfile.TemporaryDirectory() as elsewhere:
        work = Path(elsewhere)
        outer = Path(os.path.realpath(tmp)) / "outer"  # so ../../x lands in tmp, never in a directory of someone else's
        outer.mkdir()
        (outer / "x").write_text("outside")
        root = outer / "root"
        (root / "d").mkdir(parents=True)
        (root / "f").write_text("f")
        (root / "d" / "g").write_text("g")
        links = [(rel, str(outer / "x") if target == "ABS" else target) for rel, target in links]
        for rel, target in links:
            os.symlink(target, root / rel)
        try:
            _log_dir(work / "store", root)
        except ObjstoreError as exc:
            assert str(exc) and "symlink" in str(exc), exc
            return
        art = _api_artifact(work / "store", "m:v0")
        dest = work / "dest"
        art.download(dest)
        art.verify(dest)
        for rel in ["f", "d/g", *(r for r, _ in links)]:
            src, got = root / rel, dest / rel
            if os.path.isfile(src):
                assert got.read_bytes() == src.read_bytes(), rel
            elif os.path.isdir(src):
                assert sorted(os.listdir(got)) == sorted(os.listdir(src)), rel
