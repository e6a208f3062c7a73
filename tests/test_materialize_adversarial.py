"""A second, adversarial pass over materializing and logging directories.

The attacker controls a store's or a remote's trees (entry modes, reference targets,
deep paths), or can write into the destination before a download (a hard link to a
file outside, a file of their own with the right bytes), or leaves a FIFO where a
``file://`` reference points. The user's side: an unreadable directory inside a
logged one, a umask that keeps files private. Each case checks what was written and
that every refusal is an ``ObjstoreError``; the ordinary workflows (download twice,
over an older version's copy, one-file and multi-file ``use_model``) still work.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
from test_hostile import ENTITY, PROJECT, _commit, _file, _raw_entry, _raw_tree

import objstore
from objstore.errors import ObjstoreError, VerificationFailed
from objstore.model.store import Store
from objstore.storage.objects import FILE, REFERENCE, TREE


@pytest.fixture
def arena(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(store path, destination, sentinel): the sentinel directory sits beside the destination."""
    sentinel = tmp_path / "sentinel"
    sentinel.mkdir()
    (sentinel / "keep.txt").write_text("untouched")
    return tmp_path / "store", tmp_path / "dest", sentinel


def _api_artifact(store: Path, spec: str) -> objstore.Artifact:
    return objstore.Api(store=store, entity=ENTITY, project=PROJECT).artifact(spec)


def _entry(name: str, kind: str, oid: object, size: int, target: str | None = None, mode: int = 0o644,
           extra: dict[str, object] | None = None) -> list[object]:
    e = _raw_entry(name, kind, oid, size, target)  # type: ignore[arg-type]
    e[4], e[6] = mode, extra
    return e


class _Umask:
    def __init__(self, mask: int) -> None:
        self.mask = mask

    def __enter__(self) -> None:
        self.old = os.umask(self.mask)

    def __exit__(self, *exc: object) -> None:
        os.umask(self.old)


# -- modes: what a tree says is applied as the user's umask allows -------------------------

def test_tree_modes_never_make_files_setuid_or_writable_by_others(arena: tuple[Path, Path, Path]) -> None:
    """A remote's tree says 0o6777: before, the copy was 0o777 (fchmod ignores the umask),
    so any local user could rewrite the model the victim then loads."""
    store_path, dest, _ = arena
    store = Store.open(store_path)
    ok = _file(store, b"payload")
    spec = _commit(store, _raw_tree(store, [_entry("tool", FILE, ok, 7, mode=0o6777),
                                           _entry("data", FILE, ok, 7, mode=0o666)]), "modes")
    with _Umask(0o022):
        _api_artifact(store_path, spec).download(dest)
    assert oct(os.stat(dest / "tool").st_mode & 0o7777) == oct(0o755)
    assert oct(os.stat(dest / "data").st_mode & 0o7777) == oct(0o644)
    _api_artifact(store_path, spec).verify(dest)


def test_a_private_umask_keeps_downloads_private(arena: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """umask 077 says nobody else reads my files; files and references came out 0o644."""
    store_path, dest, _ = arena
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.bin").write_bytes(b"weights")
    (src / "model.bin").chmod(0o644)
    ref = tmp_path / "ref.bin"
    ref.write_bytes(b"referenced")
    with objstore.init(project=PROJECT, entity=ENTITY, store=store_path) as run:
        art = objstore.Artifact("m", type="model")
        art.add_dir(src)
        art.add_reference(ref.as_uri())
        run.log_artifact(art)
    with _Umask(0o077):
        _api_artifact(store_path, "m:v0").download(dest)
    for name in ("model.bin", "ref.bin"):
        assert oct(os.stat(dest / name).st_mode & 0o777) == oct(0o600), name


# -- reference entries a hostile tree can hold ---------------------------------------------

def test_file_reference_to_a_fifo_is_refused_not_waited_on(arena: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """Opening a FIFO for reading blocks until a writer comes: the download hung forever."""
    store_path, dest, _ = arena
    store = Store.open(store_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    spec = _commit(store, _raw_tree(store, [_entry("w.bin", REFERENCE, None, 7, fifo.as_uri())]), "fifo")
    outcome: list[BaseException | None] = []

    def run() -> None:
        try:
            _api_artifact(store_path, spec).download(dest)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(30)
    if worker.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # let the stuck reader go
        worker.join(30)
        pytest.fail("the download waited on a FIFO named by a reference")
    assert isinstance(outcome[0], ObjstoreError) and "fifo" in str(outcome[0]), outcome
    assert not (dest / "w.bin").exists()


@pytest.mark.parametrize("target", [None, "file://[x/etc/passwd", "file:///etc/passwd\x00x", "s3://[bucket/key"])
def test_reference_entries_without_a_usable_target_are_clear_errors(arena: tuple[Path, Path, Path],
                                                                     target: str | None) -> None:
    """Before: AssertionError (no target), ValueError (unparsable URL, NUL in the path)."""
    store_path, dest, _ = arena
    store = Store.open(store_path)
    ok = _file(store, b"payload")
    spec = _commit(store, _raw_tree(store, [_entry("a.bin", FILE, ok, 7), _entry("w.bin", REFERENCE, None, 7, target)]),
                   "badref")
    with pytest.raises(ObjstoreError, match="w.bin|reference"):
        _api_artifact(store_path, spec).download(dest)
    assert not (dest / "w.bin").exists()


# -- what stands in the destination before the download ------------------------------------

def test_planted_hard_link_is_not_kept_as_the_intact_copy(arena: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """dest/model.bin is a hard link to a file outside holding the right bytes: it was
    kept as intact and use_model handed back a path whose bytes live outside (a write
    to it, or by its other owner, changes both)."""
    store_path, dest, _ = arena
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.bin").write_bytes(b"weights")
    with objstore.init(project=PROJECT, entity=ENTITY, store=store_path) as run:
        run.log_model(src / "model.bin", name="m")
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"weights")
    dest.mkdir()
    os.link(outside, dest / "model.bin")
    with objstore.init(project=PROJECT, entity=ENTITY, store=store_path) as run:
        path = Path(run.use_model("m:v0", root=dest))
    assert path == dest / "model.bin" and path.read_bytes() == b"weights"
    assert not os.path.samefile(path, outside) and os.stat(path).st_nlink == 1
    with open(path, "r+b") as f:  # what a training script saving in place would do
        f.write(b"W")
    assert outside.read_bytes() == b"weights"


@pytest.mark.skipif(os.geteuid() != 0, reason="planting a file owned by another user needs root")
def test_someone_elses_file_is_not_kept_as_the_intact_copy(arena: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """In a shared directory another user plants the right bytes in a file they own, then
    rewrites it once the victim trains on it."""
    store_path, dest, _ = arena
    store = Store.open(store_path)
    ok = _file(store, b"payload")
    spec = _commit(store, _raw_tree(store, [_entry("f", FILE, ok, 7)]), "owned")
    dest.mkdir()
    (dest / "f").write_bytes(b"payload")
    os.chown(dest / "f", 65534, 65534)
    _api_artifact(store_path, spec).download(dest)
    assert os.stat(dest / "f").st_uid == os.geteuid()


def test_verify_of_paths_longer_than_path_max_is_an_answer(arena: tuple[Path, Path, Path]) -> None:
    """Materialize writes relative to directory descriptors, so a tree 20 levels of
    250-byte names deep downloads; verify went by full paths and raised a bare OSError."""
    store_path, dest, _ = arena
    store = Store.open(store_path)
    ok = _file(store, b"payload")
    tree = _raw_tree(store, [_entry("f", FILE, ok, 7)])
    for _ in range(20):
        tree = _raw_tree(store, [_entry("d" * 250, TREE, tree, 7, mode=0o755)])
    spec = _commit(store, tree, "deep")
    art = _api_artifact(store_path, spec)
    art.download(dest)
    art.verify(dest)
    fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(20):
            new = os.open("d" * 250, os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = new
        with open(os.open("f", os.O_WRONLY, dir_fd=fd), "wb") as f:
            f.write(b"changed")
        with open(os.open("extra", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "wb") as f:
            f.write(b"x")
    finally:
        os.close(fd)
    with pytest.raises(VerificationFailed) as info:
        art.verify(dest)
    assert "1 differ" in str(info.value) and "1 are not in the version" in str(info.value)


# -- logging: nothing is dropped silently --------------------------------------------------

LOG_DIR = textwrap.dedent("""
    import sys, objstore
    from objstore.errors import ObjstoreError
    try:
        with objstore.init(project=sys.argv[2], entity=sys.argv[3], store=sys.argv[1]) as run:
            art = run.log_model(sys.argv[4], name="m")
            print("LOGGED", sorted(f.path for f in art.files()))
    except ObjstoreError as exc:
        print("REFUSED", exc)
""")


def _as_unprivileged(cmd: list[str]) -> list[str]:
    """Root reads everything; drop the capabilities that let it, so permissions apply."""
    if os.geteuid() != 0:
        return cmd
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot be made to apply")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", *cmd]


def test_unreadable_directory_in_a_logged_one_is_refused_not_dropped(tmp_path: Path) -> None:
    """os.walk skips a directory it cannot list: its files vanished from the version."""
    src = tmp_path / "model"
    (src / "shards").mkdir(parents=True)
    (src / "config.json").write_text("{}")
    (src / "shards" / "part-0.bin").write_bytes(b"weights")
    (src / "shards").chmod(0)
    try:
        done = subprocess.run(_as_unprivileged([sys.executable, "-c", LOG_DIR, str(tmp_path / "store"), PROJECT, ENTITY,
                                                str(src)]), capture_output=True, text=True, timeout=120)
    finally:
        (src / "shards").chmod(0o755)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("REFUSED") and "shards" in done.stdout, done.stdout


# -- ordinary workflows still work --------------------------------------------------------

def test_ordinary_downloads_still_work(arena: tuple[Path, Path, Path], tmp_path: Path) -> None:
    store_path, dest, sentinel = arena
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "model.bin").write_bytes(b"v0 weights")
    (src / "sub" / "a.bin").write_bytes(b"a")
    (src / "tool.sh").write_bytes(b"#!/bin/sh\n")
    (src / "tool.sh").chmod(0o755)
    (src / "latest.bin").symlink_to("model.bin")
    single = tmp_path / "single.bin"
    single.write_bytes(b"just one")
    with objstore.init(project=PROJECT, entity=ENTITY, store=store_path) as run:
        run.log_model(src, name="m")
        (src / "model.bin").write_bytes(b"v1 weights, longer")
        (src / "sub" / "b.bin").write_bytes(b"b")
        run.log_model(src, name="m")
        run.log_model(single, name="one")
    with _Umask(0o022), objstore.init(project=PROJECT, entity=ENTITY, store=store_path) as run:
        assert Path(run.use_model("m:v0", root=dest)) == dest
        ino = os.stat(dest / "sub" / "a.bin").st_ino
        assert Path(run.use_model("m:v0", root=dest)) == dest  # twice: intact files are not rewritten
        assert os.stat(dest / "sub" / "a.bin").st_ino == ino
        assert Path(run.use_model("m:v1", root=dest)) == dest  # over the older version's copy
        one = Path(run.use_model("one:v0", root=tmp_path / "one"))
    assert (dest / "model.bin").read_bytes() == b"v1 weights, longer" and os.readlink(dest / "latest.bin") == "model.bin"
    assert os.stat(dest / "sub" / "a.bin").st_ino == ino
    assert os.stat(dest / "tool.sh").st_mode & 0o777 == 0o755
    _api_artifact(store_path, "m:v1").verify(dest)
    assert one == tmp_path / "one" / "single.bin" and one.read_bytes() == b"just one"
    assert [p.name for p in sentinel.iterdir()] == ["keep.txt"]


FLIPPER = textwrap.dedent("""
    import os, sys
    d, n = sys.argv[1], int(sys.argv[2])
    while True:
        for i in range(n):
            link, tmp = f"{d}/l{i}", f"{d}/t{i}"
            try:
                with open(tmp, "wb") as f:
                    f.write(b"y")
                os.replace(tmp, link)  # the link becomes a file...
                os.symlink(f"f{i}", tmp)
                os.replace(tmp, link)  # ...and a link again
                os.rmdir(f"{d}/s{i}")
                os.mkdir(f"{d}/s{i}")
            except OSError:
                pass
""")


def test_a_directory_changing_while_it_is_added_is_a_clear_error(tmp_path: Path) -> None:
    """Another process turns links into files and back and removes directories while
    add_dir reads: readlink's EINVAL and stat's ENOENT escaped as bare OSErrors."""
    src = tmp_path / "m"
    src.mkdir()
    n = 400
    for i in range(n):
        (src / f"f{i}").write_bytes(b"x")
        os.symlink(f"f{i}", src / f"l{i}")
        (src / f"s{i}").mkdir()
    flipper = subprocess.Popen([sys.executable, "-c", FLIPPER, str(src), str(n)])
    escaped: list[str] = []
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not escaped:
            try:
                objstore.Artifact("m", type="model").add_dir(src)
            except ObjstoreError:
                pass
            except Exception as exc:  # noqa: BLE001 - what the test is after
                escaped.append(repr(exc))
    finally:
        flipper.kill()
        flipper.wait()
    assert not escaped, escaped


def test_links_from_two_add_dirs_that_combine_to_leave_are_refused_at_logging(arena: tuple[Path, Path, Path],
                                                                              tmp_path: Path) -> None:
    """Each add_dir judges its links over its own directory: ``l -> k/../..`` is inside A
    (k -> x/y), ``k -> .`` is inside B; B's k replaces A's, and l leads out. It was
    logged, and then could never be downloaded (UnsafePath on every download)."""
    store_path, dest, _ = arena
    a, b = tmp_path / "A", tmp_path / "B"
    (a / "x" / "y").mkdir(parents=True)
    (a / "x" / "y" / "f").write_bytes(b"data")
    (a / "k").symlink_to("x/y")
    (a / "l").symlink_to("k/../..")
    b.mkdir()
    (b / "k").symlink_to(".")
    with objstore.init(project=PROJECT, entity=ENTITY, store=store_path) as run:
        art = objstore.Artifact("combo", type="model")
        art.add_dir(a)
        art.add_dir(b)
        with pytest.raises(ObjstoreError, match="'l'"):
            run.log_artifact(art)
        alone = objstore.Artifact("alone", type="model")
        alone.add_dir(a)
        run.log_artifact(alone)  # each directory alone is fine, and materializes
    with pytest.raises(ObjstoreError):
        _api_artifact(store_path, "combo:latest")
    _api_artifact(store_path, "alone:v0").download(dest)
    assert (dest / "l" / "x" / "y" / "f").read_bytes() == b"data"


HOLD_LOCK = textwrap.dedent("""
    import fcntl, os, sys, time
    fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY)  # read access is enough to take the lock
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("held", flush=True)
    time.sleep(float(sys.argv[2]))
""")


def test_a_download_waiting_for_the_roots_lock_says_so(arena: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """Any process that can open the destination can hold its lock: the download waited
    without a word (forever, if the holder never lets go)."""
    store_path, dest, _ = arena
    store = Store.open(store_path)
    ok = _file(store, b"payload")
    spec = _commit(store, _raw_tree(store, [_entry("f", FILE, ok, 7)]), "locked")
    dest.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(dest), "3"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        code = textwrap.dedent("""
            import sys, objstore
            objstore.Api(store=sys.argv[1], entity=sys.argv[2], project=sys.argv[3]).artifact(sys.argv[4]).download(sys.argv[5])
        """)
        done = subprocess.run([sys.executable, "-c", code, str(store_path), ENTITY, PROJECT, spec, str(dest)],
                              capture_output=True, text=True, timeout=120, env={**os.environ, "OBJSTORE_QUIET": ""})
    finally:
        holder.kill()
        holder.wait()
    assert done.returncode == 0, done.stderr[-2000:]
    assert "waiting for another process writing into" in done.stderr and str(dest) in done.stderr
    assert (dest / "f").read_bytes() == b"payload"


def test_a_link_planted_as_the_default_download_directory_is_refused(arena: tuple[Path, Path, Path], tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """use_model with no root writes into artifacts/<name>:<version>, a name objstore
    chose: someone who can write into artifacts/ planted that name as a link, and the
    model's files (config.json over the victim's own) went where it pointed."""
    store_path, _, sentinel = arena
    src = tmp_path / "src"
    src.mkdir()
    (src / "model.bin").write_bytes(b"weights")
    (src / "keep.txt").write_text("the model's")
    with objstore.init(project=PROJECT, entity=ENTITY, store=store_path) as run:
        run.log_model(src, name="m")
    work = tmp_path / "work"
    (work / "artifacts").mkdir(parents=True)
    monkeypatch.chdir(work)
    (work / "artifacts" / "m:v0").symlink_to(sentinel)
    with objstore.init(project=PROJECT, entity=ENTITY, store=store_path) as run:
        with pytest.raises(ObjstoreError, match="m:v0"):
            run.use_model("m:v0")
    assert [p.name for p in sentinel.iterdir()] == ["keep.txt"] and (sentinel / "keep.txt").read_text() == "untouched"
    # the user's own link at artifacts/ (a bigger disk) is the user's: followed as before
    (work / "artifacts" / "m:v0").unlink()
    (work / "artifacts").rmdir()
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    (work / "artifacts").symlink_to(scratch)
    with objstore.init(project=PROJECT, entity=ENTITY, store=store_path) as run:
        got = Path(run.use_model("m:v0"))
    assert got == work / "artifacts" / "m:v0" and (scratch / "m:v0" / "model.bin").read_bytes() == b"weights"  # absolute, as W&B
    _api_artifact(store_path, "m:v0").verify(got)
