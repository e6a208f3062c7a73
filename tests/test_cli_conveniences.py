"""The CLI's usage, messages and conveniences as a person meets them (issue 15,
points 2, 6 and 8): bare groups print their usage, messages say what happened
(already linked, header-only diffs, which bytes "new" counts, what du and fsck
count, why gc freed nothing), ``--version``, ``status`` ahead / behind, shell
completion driven through click's environment variables, colour and NO_COLOR."""

from __future__ import annotations

import json
import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import OBJSTORE, random_layers, run_cli, write_safetensors

from objstore.api.naming import default_entity

ENTITY = default_entity()


def safetensors_with_metadata(path: Path, tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> None:
    header: dict[str, object] = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name, arr in tensors.items():
        data = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": "BF16", "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


@pytest.fixture
def store(tmp_path: Path) -> Path:
    s = tmp_path / "store"
    run_cli(s, "init")
    model = tmp_path / "model.safetensors"
    write_safetensors(model, random_layers(1, layers=2))
    run_cli(s, "log-model", str(model), "--name", "mnist", "--alias", "best")
    write_safetensors(model, random_layers(2, layers=2))
    run_cli(s, "log-model", str(model), "--name", "mnist")
    return s


# -- 2: bare groups --------------------------------------------------------------

@pytest.mark.parametrize("args", [[], ["remote"], ["cache"]])
def test_a_bare_group_prints_its_usage_not_an_error_line(args: list[str]) -> None:
    r = run_cli("", *args, check=False)
    assert r.code == 2 and r.err == ""
    assert r.out.startswith(f"Usage: objstore {' '.join(args)}".rstrip() + " [OPTIONS] COMMAND [ARGS]...")
    assert "Commands:" in r.out and len(r.out.splitlines()) > 8  # the whole usage, one line per entry


# -- 6: messages that mislead no more ---------------------------------------------

def test_link_model_of_a_linked_version_says_so(store: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.safetensors"
    first = run_cli(store, "link-model", str(model), "Digits", "--name", "mnist")
    assert first.out.strip() == f"linked {ENTITY}/uncategorized/mnist:v1 as {ENTITY}/model-registry/Digits:v0"
    again = run_cli(store, "link-model", str(model), "Digits", "--name", "mnist")
    assert again.out.strip() == (f"{ENTITY}/uncategorized/mnist:v1 is already linked as "
                                 f"{ENTITY}/model-registry/Digits:v0; nothing changed")
    assert again.err == ""  # the library's own note is not printed on top
    assert run_cli(store, "link-model", str(model), "Digits", "--name", "mnist", "--json").json()["created"] is False


def test_a_diff_of_header_metadata_only_shows_the_keys(tmp_path: Path) -> None:
    s = tmp_path / "store"
    run_cli(s, "init")
    model = tmp_path / "m.safetensors"
    tensors = random_layers(4, layers=2)
    safetensors_with_metadata(model, tensors, {"format": "pt", "step": "100"})
    run_cli(s, "log-model", str(model), "--name", "m")
    safetensors_with_metadata(model, tensors, {"format": "pt", "step": "200", "note": "ema"})
    run_cli(s, "log-model", str(model), "--name", "m")
    r = run_cli(s, "diff", "m:v0", "m:v1")
    lines = [line.strip() for line in r.out.splitlines()]
    assert "metadata note: (none) -> 'ema'" in lines and "metadata step: '100' -> '200'" in lines
    assert not any(line.startswith("tensor ") for line in lines)  # every tensor is the same
    d = run_cli(s, "diff", "m:v0", "m:v1", "--json").json()
    assert d["files"][0]["metadata"] == [{"key": "note", "old": None, "new": "ema"},
                                         {"key": "step", "old": "100", "new": "200"}]
    assert d["files"][0]["tensors"] == []


def test_new_is_labelled_stored_in_log_and_raw_in_diff(store: Path) -> None:
    log = run_cli(store, "log", "mnist").out.splitlines()
    assert log[0].split()[:5] == ["VERSION", "ALIASES", "SIZE", "NEW", "STORED"]
    diff = run_cli(store, "diff", "mnist:v0", "mnist:v1").out.splitlines()
    assert diff[-1].endswith("new raw bytes (before compression)")
    show = run_cli(store, "show", "mnist:v1").out
    assert "new stored bytes when logged" in show


def test_du_and_fsck_say_what_they_count(store: Path, tmp_path: Path) -> None:
    run_cli(store, "link-model", str(tmp_path / "model.safetensors"), "Digits", "--name", "mnist")
    du = run_cli(store, "du").out
    assert "versions           2 (distinct versions; a registry link to one is not counted again)" in du
    fsck = run_cli(store, "fsck").out
    assert "3 version objects (versions and registry links; du counts distinct versions)" in fsck


def test_gc_after_delete_says_why_nothing_was_freed(store: Path) -> None:
    run_cli(store, "delete", "mnist", "--yes")
    r = run_cli(store, "gc")
    assert "free 0 B" in r.out
    kept = [line for line in r.out.splitlines() if line.startswith("kept: ")]
    assert len(kept) == 1 and "stored less than the grace period (1h) ago" in kept[0]
    assert "a gc after " in kept[0] and "1h later frees it" in kept[0]
    assert "--grace 0 frees it now" in r.out
    data = run_cli(store, "gc", "--json").json()
    assert data["bytes_young"] > 0 and data["young_due"] is not None
    # Past the grace period the same store is freed, and nothing is said to wait.
    r = run_cli(store, "gc", "--grace", "0")
    assert "kept: " not in r.out and "free 0 B" not in r.out


def test_gc_says_when_a_mark_is_due(store: Path) -> None:
    run_cli(store, "delete", "mnist", "--yes")
    # grace 1 s: the next gc marks (the packs are older than 1 s by then), the one after frees.
    import time

    time.sleep(1.2)
    marked = run_cli(store, "gc", "--grace", "1").out
    assert "kept: " in marked and "is marked; a gc after " in marked
    time.sleep(1.2)
    freed = run_cli(store, "gc", "--grace", "1").out
    assert "free 0 B" not in freed and "kept: " not in freed


def _clone_with_two_versions(tmp_path: Path) -> tuple[Path, Path]:
    """A store with mnist v0 and v1 (distinct content) and a clone of it: (origin, clone's store)."""
    origin = tmp_path / "origin"
    run_cli(origin, "init")
    model = tmp_path / "model.safetensors"
    for seed in (1, 2):
        write_safetensors(model, random_layers(seed, layers=2))
        run_cli(origin, "log-model", str(model), "--name", "mnist")
    run_cli("", "clone", str(origin), str(tmp_path / "clone"))
    return origin, tmp_path / "clone" / ".objstore"


def _kept_by_tracking(out: str) -> list[str]:
    return [line for line in out.splitlines() if "remote-tracking" in line]


def test_gc_in_a_clone_says_a_version_deleted_here_is_kept_by_the_remote(tmp_path: Path) -> None:
    origin, clone = _clone_with_two_versions(tmp_path)
    write_safetensors(tmp_path / "model.safetensors", random_layers(3, layers=2))
    run_cli(origin, "log-model", str(tmp_path / "model.safetensors"), "--name", "mnist")
    run_cli(clone, "fetch", "origin")  # v2 is fetched, not pulled: kept on purpose, and not reported
    run_cli(clone, "delete", "mnist:v0", "--yes")
    r = run_cli(clone, "gc", "--grace", "0")
    assert "free 0 B" in r.out  # origin still has v0: its tracking refs keep it here
    [line] = _kept_by_tracking(r.out + r.err)
    assert f"{ENTITY}/uncategorized/mnist:v0" in line and "origin" in line and "mnist:v2" not in line
    assert "'objstore push origin'" in line  # deletes it there too, after which gc frees it
    size = run_cli(origin, "show", "mnist:v0", "--json").json()["size"]
    assert run_cli(clone, "gc", "--json", "--grace", "0").json()["tracked_only"] == [
        ["origin", f"{ENTITY}/uncategorized/mnist:v0", size]]
    run_cli(clone, "push", "origin")
    assert [line.split()[0] for line in run_cli(origin, "log", "mnist").out.splitlines()[1:]] == ["v2", "v1"]
    freed = run_cli(clone, "gc", "--grace", "0")
    assert not _kept_by_tracking(freed.out + freed.err) and "free 0 B" not in freed.out


def test_gc_in_a_clone_after_a_deletion_on_the_remote_is_freed_by_fetch(tmp_path: Path) -> None:
    origin, clone = _clone_with_two_versions(tmp_path)
    run_cli(origin, "delete", "mnist:v0", "--yes")
    run_cli(clone, "delete", "mnist:v0", "--yes")  # deleted on both sides; the clone has not fetched since
    stale = run_cli(clone, "gc", "--grace", "0")
    [line] = _kept_by_tracking(stale.out + stale.err)
    assert "'objstore fetch origin'" in line
    run_cli(clone, "fetch", "origin")  # learns origin no longer holds v0 (nor its digest ref)
    freed = run_cli(clone, "gc", "--grace", "0")
    assert not _kept_by_tracking(freed.out + freed.err) and "free 0 B" not in freed.out


# -- 8: version, status, completion, colour ---------------------------------------

def test_version_names_the_native_core() -> None:
    r = run_cli("", "--version")
    assert r.out.startswith("objstore ") and "(native core: " in r.out


def test_status_shows_the_store_its_size_and_ahead_behind_each_remote(store: Path, tmp_path: Path) -> None:
    r = run_cli(store, "status")
    assert r.out.splitlines()[0].startswith(f"store    {store}")
    assert "stored in 1 pack(s)" in r.out or "stored in" in r.out
    assert "remotes  none" in r.out
    origin = tmp_path / "origin"
    run_cli(store, "remote", "add", "origin", str(origin))
    assert "never fetched or pushed" in run_cli(store, "status").out
    run_cli(store, "push")
    assert "up to date" in run_cli(store, "status").out
    # Ahead: a version logged here. Behind: one a teammate pushed, seen after a fetch.
    model = tmp_path / "model.safetensors"
    write_safetensors(model, random_layers(5, layers=2))
    run_cli(store, "log-model", str(model), "--name", "mnist")
    r = run_cli(store, "status")
    assert "ahead 1 version(s) in 1 collection(s)" in r.out and f"{ENTITY}/uncategorized/mnist: ahead 1" in r.out
    mate = tmp_path / "mate"
    run_cli("", "clone", str(origin), str(mate))
    write_safetensors(model, random_layers(6, layers=2))
    run_cli(mate / ".objstore", "log-model", str(model), "--name", "other")
    run_cli(mate / ".objstore", "push")
    assert "behind" not in run_cli(store, "status").out  # status asks no remote: only as fresh as the last fetch
    run_cli(store, "fetch")
    data = run_cli(store, "status", "--json").json()
    (origin_status,) = data["remotes"]
    assert (origin_status["ahead"], origin_status["behind"]) == (1, 1)
    assert {c["collection"]: (c["ahead"], c["behind"]) for c in origin_status["collections"]} == {
        f"{ENTITY}/uncategorized/mnist": (1, 0), f"{ENTITY}/uncategorized/other": (0, 1)}


def complete(store: Path, words: str, shell: str = "bash") -> list[str]:
    """What click's completion answers for COMP_WORDS=words (the last word partial)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBJSTORE_")}
    parts = words.split(" ")
    # bash and zsh give the index of the word completed; fish gives the word itself.
    cword = parts[-1] if shell == "fish" else str(len(parts) - 1)
    env.update({"_OBJSTORE_COMPLETE": f"{shell}_complete", "COMP_WORDS": words, "COMP_CWORD": cword, "OBJSTORE_DIR": str(store)})
    proc = subprocess.run([str(OBJSTORE)], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    if shell == "bash":
        return [line.split(",", 1)[1] for line in proc.stdout.splitlines() if line]
    return proc.stdout.splitlines()


def test_completion_of_commands_collections_versions_and_aliases(store: Path, tmp_path: Path) -> None:
    model = tmp_path / "model.safetensors"
    write_safetensors(model, random_layers(7, layers=1))
    run_cli(store, "log-model", str(model), "--name", "mlp", "--project", "vision")
    assert complete(store, "objstore st") == ["status"]
    assert complete(store, "objstore show mn") == ["mnist"]
    assert complete(store, "objstore use-model m") == ["mnist"]
    assert complete(store, "objstore diff mnist:v0 mnist:") == ["mnist:v1", "mnist:v0", "mnist:best", "mnist:latest"]
    assert complete(store, "objstore log vis") == ["vision/"]
    assert complete(store, "objstore log vision/") == ["vision/mlp"]
    assert complete(store, f"objstore show {ENTITY}/vision/m") == [f"{ENTITY}/vision/mlp"]
    assert complete(store, "objstore show mlp --project vision m") == []  # an option's value: not completed here
    assert complete(store, "objstore show nothing") == []
    assert complete(tmp_path / "no-store", "objstore show mn") == []  # no store: nothing, and no error
    assert complete(store, "objstore show mn", shell="zsh") == ["plain", "mnist", "_"]
    assert complete(store, "objstore show mn", shell="fish") == ["plain,mnist"]


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_prints_the_shell_script(shell: str) -> None:
    r = run_cli("", "completion", shell)
    assert "_OBJSTORE_COMPLETE" in r.out and f"{shell}_complete" in r.out


def test_colour_only_on_a_terminal_and_never_with_no_color(tmp_path: Path) -> None:
    import pexpect

    env = {k: v for k, v in os.environ.items() if not k.startswith("OBJSTORE_")}
    env["TERM"] = "xterm"
    argv = ["--store", str(tmp_path / "nowhere"), "ls"]
    coloured = pexpect.spawn(str(OBJSTORE), argv, env=env, encoding="utf-8").read()
    assert "\x1b[31merror\x1b[0m" in coloured
    env["NO_COLOR"] = "1"
    plain = pexpect.spawn(str(OBJSTORE), argv, env=env, encoding="utf-8").read()
    assert "\x1b[" not in plain and "objstore: error: " in plain
    piped = run_cli(tmp_path / "nowhere", "ls", check=False)
    assert "\x1b[" not in piped.err and piped.err.startswith("objstore: error: ")


def test_log_and_use_artifact_for_a_dataset(tmp_path: Path) -> None:
    s = tmp_path / "store"
    run_cli(s, "init")
    data = tmp_path / "data"
    (data / "split").mkdir(parents=True)
    (data / "split" / "train.csv").write_text("x,y\n1,2\n")
    (data / "README").write_text("a dataset")
    r = run_cli(s, "log-artifact", str(data), "--name", "digits", "--alias", "y2024")
    assert r.out.startswith(f"logged {ENTITY}/uncategorized/digits:v0: ") and r.err == ""
    assert run_cli(s, "log-artifact", str(data), "--name", "digits").out.startswith("unchanged ")
    shown = run_cli(s, "show", "digits:y2024", "--json").json()
    assert shown["type"] == "dataset"
    out = Path(run_cli(s, "use-artifact", "digits:y2024", "--root", str(tmp_path / "out")).out.strip())
    assert (out / "split" / "train.csv").read_text() == "x,y\n1,2\n" and (out / "README").read_text() == "a dataset"
    wrong = run_cli(s, "use-artifact", "digits", "--type", "model", check=False)
    assert wrong.code == 1 and "is of type 'dataset', not 'model'" in wrong.err
    assert run_cli(s, "use-model", "digits", check=False).code == 1  # a dataset is not a model
    assert run_cli(s, "log-artifact", str(data), check=False).code == 2  # --name is required: no run-<id> collections
