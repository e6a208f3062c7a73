"""A directory log never takes a store or the downloads directory, and obeys
``.objstoreignore`` (gitignore syntax) and ``--exclude`` / ``exclude=``, in the
library's walk, so the API and the CLI leave out the same (issue 15, point 5)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_helpers import run_cli

import objstore
from objstore.errors import InvalidInput


def make_tree(root: Path) -> Path:
    files = {
        "model.safetensors": b"weights" * 50, "config.json": b"{}", "step-1.ckpt": b"ckpt",
        "keep.ckpt": b"keep", "logs/train.log": b"log", "sub/logs/deep.log": b"deep",
        "sub/notes.txt": b"notes", "top.txt": b"top", "sub/top.txt": b"subtop", "data/a.bin": b"a",
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def logged_paths(art: objstore.Artifact) -> set[str]:
    return {f.path for f in art.files()}


def test_the_store_and_artifacts_directory_are_never_logged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work = make_tree(tmp_path / "work")
    monkeypatch.chdir(work)
    monkeypatch.delenv("OBJSTORE_ARTIFACT_DIR", raising=False)
    monkeypatch.delenv("WANDB_ARTIFACT_DIR", raising=False)
    run_cli(work / ".objstore", "init")
    run_cli(work / "other-store", "init")  # a store under another name: found by its layout
    (work / "artifacts" / "llm:v0").mkdir(parents=True)
    (work / "artifacts" / "llm:v0" / "w.bin").write_bytes(b"downloaded")
    with objstore.init(store=str(work / ".objstore")) as run:
        art = run.log_model(".", name="self")
    paths = logged_paths(art)
    assert "model.safetensors" in paths and "sub/notes.txt" in paths
    assert not [p for p in paths if p.startswith((".objstore", "other-store", "artifacts"))], paths
    # the store itself, named as the directory to log, is refused
    with objstore.init(store=str(work / ".objstore")) as run, pytest.raises(InvalidInput, match="never logged"):
        run.log_model(str(work / "other-store"), name="store")
    # a downloaded version logged again is fine: only the downloads directory inside is left out
    with objstore.init(store=str(work / ".objstore")) as run:
        assert logged_paths(run.log_model(str(work / "artifacts" / "llm:v0"), name="again")) == {"w.bin"}


def test_objstoreignore_and_exclude(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "m")
    (root / ".objstoreignore").write_text("# checkpoints\n*.ckpt\n!keep.ckpt\nlogs/\n/top.txt\n")
    with objstore.init(store=str(tmp_path / "store")) as run:
        art = run.log_model(str(root), name="m")
        assert logged_paths(art) == {".objstoreignore", "model.safetensors", "config.json", "keep.ckpt",
                                     "sub/notes.txt", "sub/top.txt", "data/a.bin"}
        art = run.log_model(str(root), name="m", exclude=["data/", "*.json"])
        assert logged_paths(art) == {".objstoreignore", "model.safetensors", "keep.ckpt", "sub/notes.txt", "sub/top.txt"}
    draft = objstore.Artifact("d", type="dataset")
    draft.add_dir(str(root), name="under", exclude=["sub"])
    assert {e for e in draft.manifest.entries} == {"under/.objstoreignore", "under/model.safetensors",
                                                   "under/config.json", "under/keep.ckpt", "under/data/a.bin"}


def test_an_ignored_directory_is_never_read(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "m")
    secret = root / "private"
    secret.mkdir()
    (secret / "x").write_bytes(b"x")
    secret.chmod(0)
    try:
        if os.access(secret, os.R_OK):
            pytest.skip("running as a user that reads anything")
        with objstore.init(store=str(tmp_path / "store")) as run:
            with pytest.raises(InvalidInput, match="cannot be listed"):
                run.log_model(str(root), name="m")
            assert "private/x" not in logged_paths(run.log_model(str(root), name="m", exclude=["private/"]))
    finally:
        secret.chmod(0o755)


def test_cli_exclude_and_the_name_note(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "m")
    store = tmp_path / "store"
    run_cli(store, "init")
    logged = run_cli(store, "log-model", str(root), "-n", "m", "-x", "*.ckpt", "--exclude", "logs/", "--json")
    assert "note" not in logged.err
    shown = run_cli(store, "show", "m", "--json").json()
    paths = {f["path"] for f in shown["files"]}  # type: ignore[index]
    assert not [p for p in paths if p.endswith(".ckpt") or "logs/" in p] and "sub/notes.txt" in paths
    unnamed = run_cli(store, "log-model", str(root / "model.safetensors"))
    assert "each log-model makes a new collection" in unnamed.err and "--name" in unnamed.err
    bad = run_cli(store, "log-model", str(root), "-n", "m", "--exclude", "", check=False)
    assert bad.code == 1 and "exclude pattern" in bad.err
    refused = run_cli(store, "log-model", str(store), "-n", "s", check=False)
    assert refused.code == 1 and "never logged" in refused.err
    assert len(run_cli(store, "log", "m", "--json").json()["versions"]) == 1  # type: ignore[index]


def test_logging_dot_with_nested_directories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``log_model(".")`` of a tree two levels deep: the walk keyed its directories by
    ``Path`` (``a``) but looked them up by os.walk's ``./a``, a KeyError."""
    (tmp_path / "m" / "a" / "b").mkdir(parents=True)
    (tmp_path / "m" / "a" / "b" / "f").write_bytes(b"f")
    monkeypatch.chdir(tmp_path / "m")
    with objstore.init(store=str(tmp_path / "store")) as run:
        assert logged_paths(run.log_model(".", name="dot")) == {"a/b/f"}


def drafted(root: Path, exclude: list[str] | None = None) -> set[str]:
    draft = objstore.Artifact("d", type="dataset")
    draft.add_dir(str(root), exclude=exclude or ())
    return {e for e in draft.manifest.entries if not e.endswith(".objstoreignore")}


def test_nested_objstoreignore_files_apply_below_their_directory(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "m")
    (root / "sub/deeper").mkdir()
    for rel in ("sub/keep.ckpt", "sub/deeper/keep.ckpt", "sub/deeper/top.txt", "sub/deeper/x.tmp", "x.tmp"):
        (root / rel).write_bytes(b"x")
    (root / ".objstoreignore").write_text("*.ckpt\n")
    # patterns relative to sub/: '/top.txt' is sub/top.txt only; '!keep.ckpt' brings back
    # what the file above left out; 'logs/' leaves out sub/logs/ only
    (root / "sub/.objstoreignore").write_text("/top.txt\n!keep.ckpt\nlogs/\n*.tmp\n")
    (root / "sub/deeper/.objstoreignore").write_text("keep.ckpt\n")  # deeper still: later wins again
    assert drafted(root) == {"model.safetensors", "config.json", "logs/train.log", "sub/notes.txt", "top.txt",
                             "data/a.bin", "sub/keep.ckpt", "sub/deeper/top.txt", "x.tmp"}
    # --exclude comes last, over every file (as git's command-line patterns)
    assert "sub/keep.ckpt" not in drafted(root, exclude=["keep.ckpt"])
    assert "step-1.ckpt" in drafted(root, exclude=["!step-1.ckpt"])


def test_the_ignore_file_of_a_directory_left_out_is_never_read(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "m")
    (root / ".objstoreignore").write_text("logs/\n")
    (root / "logs/.objstoreignore").write_bytes(b"\xff\xfe not utf-8")  # would fail if read
    assert "logs/train.log" not in drafted(root)
    (root / "sub/.objstoreignore").write_bytes(b"\xff\xfe not utf-8")
    with pytest.raises(InvalidInput, match="sub/.objstoreignore is not UTF-8"):
        drafted(root)


def deep_tree(root: Path, depth: int = 6, width: int = 4) -> Path:
    """``depth`` levels of ``width`` directories' worth of files, so a file deep down
    is reached well into the walk, after many files were already staged."""
    here = root
    for level in range(depth):
        for i in range(width):
            (here / f"w{level}-{i}.bin").parent.mkdir(parents=True, exist_ok=True)
            (here / f"w{level}-{i}.bin").write_bytes(os.urandom(20_000))
            (here / f"side{i}").mkdir(exist_ok=True)
            (here / f"side{i}" / "s.bin").write_bytes(os.urandom(5_000))
        here = here / f"level{level}"
    here.mkdir()
    return here  # the deepest directory (empty yet)


@pytest.mark.parametrize(("command", "bad"), [
    (["log-model", "--name", "deep"], "invalid"), (["log-model", "--name", "deep"], "bad-range"),
    (["log-model", "--name", "deep"], "unreadable"), (["log-artifact", "--name", "deep"], "bad-range"),
    (["link-model", "--name", "deep"], "invalid"),
])
def test_a_bad_nested_ignore_file_mid_walk_is_one_line_and_writes_nothing(tmp_path: Path, command: list[str],
                                                                          bad: str) -> None:
    from cli_helpers import snapshot

    store = tmp_path / "store"
    run_cli(store, "init")
    root = tmp_path / "m"
    deepest = deep_tree(root)
    (deepest / "x.bin").write_bytes(b"x")
    ignore = root / "level0/level1/level2/level3" / ".objstoreignore"
    if bad == "invalid":
        ignore.write_text("*.tmp\nfoo\\\n")  # a trailing backslash: git rejects it too
    elif bad == "bad-range":
        ignore.write_text("*.tmp\n[z-a]\n")  # pathspec hands back a regex error for it
    else:
        ignore.mkdir()  # unreadable (as root too): a directory where the file should be
    before = snapshot(store)
    args = [command[0], str(root), *([] if command[0] != "link-model" else ["Reg"]), *command[1:]]
    r = run_cli(store, *args, check=False)
    assert r.code != 0 and r.out == ""
    [line] = r.err.splitlines()
    assert line.startswith("objstore: error: ") and "unexpected" not in line and "Traceback" not in r.err
    assert "level3/.objstoreignore" in line  # names the file to fix
    if bad != "unreadable":
        assert "line 2: " in line  # and the pattern
    assert snapshot(store) == before  # no run record, no chunk, no ref


def test_a_bad_exclude_pattern_names_itself(tmp_path: Path) -> None:
    from objstore.files.ignore import rules_for

    with pytest.raises(InvalidInput, match=r"--exclude / exclude=\) '\[z-a\]' \(bad character range"):
        rules_for(make_tree(tmp_path / "m"), ["*.ckpt", "[z-a]"])
