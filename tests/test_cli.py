"""The installed ``objstore`` command, driven as a user (and a script) would."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import OBJSTORE, random_layers, run_cli, sha, snapshot, write_safetensors

import objstore
from objstore.api.naming import default_entity

ENTITY = default_entity()


def test_console_script_is_installed() -> None:
    assert OBJSTORE.exists() and os.access(OBJSTORE, os.X_OK)
    r = run_cli("", "--help")
    assert "Example:" in r.out and "log-model" in r.out and "fsck" in r.out


@pytest.mark.parametrize("command", ["init", "log-model", "use-model", "link-model", "ls", "log", "show", "alias", "diff",
                                     "lineage", "cat-file", "fsck", "gc", "du", "delete", "status",
                                     "completion", "log-artifact", "use-artifact"])
def test_every_command_help_shows_an_example(command: str) -> None:
    from click.testing import CliRunner

    from cli.main import main

    r = CliRunner().invoke(main, [command, "--help"])
    assert r.exit_code == 0
    assert "Example:" in r.output
    assert "objstore " in r.output.split("Example:")[1]


def test_json_silences_notes_for_that_command_only(tmp_path: Path) -> None:
    """``--json`` keeps the library's notes off stderr for its own command; a program that runs
    a command in-process (a test, a notebook) says its notes again afterwards."""
    from click.testing import CliRunner

    from cli.main import main
    from objstore import console

    store = tmp_path / "store"
    assert CliRunner().invoke(main, ["--store", str(store), "init"]).exit_code == 0
    listed = CliRunner().invoke(main, ["--store", str(store), "ls", "--json"])
    assert listed.exit_code == 0, listed.output
    assert "OBJSTORE_QUIET" not in os.environ
    assert not console.is_quiet()


@pytest.fixture
def session(tmp_path: Path) -> dict[str, Path]:
    """A store with mnist:v0 (base) and mnist:v1 (fine-tune: layer2 and layer3 changed), logged by the CLI."""
    store = tmp_path / "store"
    work = tmp_path / "work"
    work.mkdir()
    model = work / "model.safetensors"
    base = random_layers(1)
    write_safetensors(model, base)
    base_copy = work / "base.safetensors"
    base_copy.write_bytes(model.read_bytes())
    run_cli(store, "init")
    run_cli(store, "log-model", str(model), "--name", "mnist", "-m", "lr=0.001", "-m", "arch=mlp", "-d", "base model")
    tuned = dict(base)
    tuned["layer2.weight"] = tuned["layer2.weight"] ^ 1
    tuned["layer3.weight"] = tuned["layer3.weight"] + 3
    write_safetensors(model, tuned)
    run_cli(store, "log-model", str(model), "--name", "mnist", "--alias", "tuned")
    return {"store": store, "work": work, "model": model, "base": base_copy}


def test_full_session(tmp_path: Path) -> None:
    store = tmp_path / "store"
    work = tmp_path / "work"
    work.mkdir()
    model = work / "model.safetensors"

    r = run_cli(store, "init")
    assert "Initialized empty objstore store" in r.out and (store / "config").exists()
    assert "Reinitialized existing" in run_cli(store, "init").out

    base = random_layers(1, layers=4)
    write_safetensors(model, base)
    r = run_cli(store, "log-model", str(model), "--name", "mnist", "-m", "lr=0.001", "-d", "base model")
    assert r.out.startswith(f"logged {ENTITY}/uncategorized/mnist:v0")
    base_bytes = model.read_bytes()

    # fine-tune: the last two layers change, the first two do not
    tuned = dict(base)
    tuned["layer2.weight"] = tuned["layer2.weight"] ^ 1
    tuned["layer3.weight"] = tuned["layer3.weight"] + 3
    write_safetensors(model, tuned)
    r = run_cli(store, "log-model", str(model), "--name", "mnist", "--alias", "tuned")
    assert r.out.startswith(f"logged {ENTITY}/uncategorized/mnist:v1")
    tuned_bytes = model.read_bytes()

    # logging the same content again makes no version
    r = run_cli(store, "log-model", str(model), "--name", "mnist")
    assert r.out.startswith(f"unchanged {ENTITY}/uncategorized/mnist:v1")

    r = run_cli(store, "log", "mnist")
    lines = r.out.splitlines()
    assert lines[0].split()[:2] == ["VERSION", "ALIASES"]
    assert lines[1].split()[0] == "v1" and "tuned" in lines[1] and "latest" in lines[1]
    assert lines[2].split()[0] == "v0" and len(lines) == 3
    log_json = run_cli(store, "log", "mnist", "--json").json()
    v1, v0 = log_json["versions"]
    assert v1["new_bytes"] < v0["new_bytes"] / 1.5  # two of four layers: about half the bytes

    r = run_cli(store, "show", "mnist:v0")
    assert "base model" in r.out and "lr: 0.001" in r.out and "model.safetensors" in r.out
    assert f"logged by   {ENTITY}/uncategorized/" in r.out

    r = run_cli(store, "diff", "mnist:v0", "mnist:v1")
    tensor_lines = [line.strip() for line in r.out.splitlines() if "tensor " in line]
    assert [line.split(", relative L2 change ")[0] for line in tensor_lines] == [
        "tensor layer2.weight: values (BF16 [256, 256]", "tensor layer3.weight: values (BF16 [256, 256]"]
    assert all(line.endswith("relative L2 change n/a)") for line in tensor_lines)  # random bit patterns: NaNs among them
    assert "M  model.safetensors" in r.out

    r = run_cli(store, "alias", "mnist:v0", "production")
    assert r.out.strip() == f"{ENTITY}/uncategorized/mnist:production -> v0"

    out_dir = tmp_path / "use"
    r = run_cli(store, "use-model", "mnist:production", "--root", str(out_dir))
    used = Path(r.out.strip())
    assert used == out_dir / "model.safetensors" and used.read_bytes() == base_bytes
    r = run_cli(store, "use-model", "mnist:tuned", "--root", str(tmp_path / "use2"))
    assert Path(r.out.strip()).read_bytes() == tuned_bytes

    r = run_cli(store, "link-model", str(model), "Digits", "--name", "mnist", "--alias", "staging")
    assert r.out.strip() == f"linked {ENTITY}/uncategorized/mnist:v1 as {ENTITY}/model-registry/Digits:v0"
    r = run_cli(store, "use-model", f"{ENTITY}/model-registry/Digits:staging", "--root", str(tmp_path / "use3"))
    assert Path(r.out.strip()).read_bytes() == tuned_bytes

    r = run_cli(store, "lineage", "mnist:v0")
    assert "upstream:" in r.out and "downstream:" in r.out
    down = r.out.split("downstream:")[1]
    assert down.count("run ") == 1 and "cli" in down  # the use-model run of mnist:production
    dot = run_cli(store, "lineage", "mnist:v1", "--format", "dot").out
    assert dot.startswith("digraph lineage {") and dot.rstrip().endswith("}") and "->" in dot

    r = run_cli(store, "du")
    assert "versions           2" in r.out and "dedup ratio" in r.out and "compression ratio" in r.out
    du = run_cli(store, "du", "--json").json()
    assert du["logical_bytes"] == len(base_bytes) + len(tuned_bytes)
    assert du["unique_bytes"] < du["logical_bytes"] * 0.8 and du["dedup_ratio"] > 1.25

    r = run_cli(store, "fsck")
    assert r.code == 0 and "ok: no damage found" in r.out

    r = run_cli(store, "gc", "--grace", "0")
    assert "delete 0 pack(s) and 0 object(s)" in r.out  # nothing is garbage
    assert run_cli(store, "fsck").code == 0

    digest = run_cli(store, "show", "mnist:v1", "--json").json()["digest"]
    assert run_cli(store, "cat-file", "-t", digest).out.strip() == "tree"
    tree = json.loads(run_cli(store, "cat-file", "-p", digest[:12]).out)
    file_id = tree["entries"][0][2]
    assert run_cli(store, "cat-file", "-t", file_id).out.strip() == "file"
    chunks = json.loads(run_cli(store, "cat-file", "-p", file_id).out)["chunks"]
    assert int(run_cli(store, "cat-file", "-s", file_id).out) > 0
    first_chunk = chunks[0][0]
    assert run_cli(store, "cat-file", "-t", first_chunk).out.strip() == "chunk"
    assert int(run_cli(store, "cat-file", "-s", first_chunk).out) == chunks[0][1]


def test_json_matches_the_api(session: dict[str, Path]) -> None:
    store = session["store"]
    api = objstore.Api(store=str(store))

    projects = run_cli(store, "ls", "--json").json()["projects"]
    assert projects == [{"entity": ENTITY, "project": "uncategorized", "collections": 1}]
    colls = run_cli(store, "ls", f"{ENTITY}/uncategorized", "--json").json()["collections"]
    expected = api.artifact_collections("uncategorized", entity=ENTITY)
    assert colls == [{"name": c.name, "type": c.type, "versions": c.version_count, "aliases": list(c.aliases)} for c in expected]

    log = run_cli(store, "log", "mnist", "--json").json()
    versions = list(reversed(api.artifact_versions("model", "mnist")))
    assert log["collection"] == f"{ENTITY}/uncategorized/mnist"
    assert [v["version"] for v in log["versions"]] == [a.version for a in versions] == ["v1", "v0"]
    for row, art in zip(log["versions"], versions):
        assert row["digest"] == art.digest and row["size"] == art.size and row["new_bytes"] == art.new_bytes
        assert row["aliases"] == sorted(art.aliases) and row["run"] == art.logged_by().path

    show = run_cli(store, "show", "mnist:v0", "--json").json()
    art = api.artifact("mnist:v0")
    assert show["name"] == art.qualified_name and show["digest"] == art.digest
    assert show["metadata"] == art.metadata == {"lr": 0.001, "arch": "mlp"}
    assert show["description"] == "base model" and show["logged_by"] == art.logged_by().path
    assert show["files"] == [{"path": f.path, "size": f.size, "kind": f.kind, "digest": f.digest, "ref": f.ref} for f in art.files()]

    diff = run_cli(store, "diff", "mnist:v0", "mnist:latest", "--json").json()
    assert [f["path"] for f in diff["files"]] == ["model.safetensors"]
    assert [(t["name"], t["change"]) for t in diff["files"][0]["tensors"]] == [("layer2.weight", "values"), ("layer3.weight", "values")]
    assert diff["bytes_new"] == 2 * 256 * 256 * 2  # the two changed bf16 tensors, nothing else
    assert diff["bytes_shared"] + diff["bytes_new"] >= art.size - 1024

    du = run_cli(store, "du", "--by", "project", "--json").json()
    total = sum(a.size for a in versions)
    assert du["logical_bytes"] == total and du["versions"] == 2
    assert du["projects"][f"{ENTITY}/uncategorized"]["logical_bytes"] == total
    assert du["stored_bytes"] >= du["chunk_stored_bytes"] > 0


def test_diff_reports_added_removed_and_reshaped_tensors(tmp_path: Path) -> None:
    store = tmp_path / "store"
    model = tmp_path / "model.safetensors"
    run_cli(store, "init")
    a = random_layers(3, layers=3)
    write_safetensors(model, a)
    run_cli(store, "log-model", str(model), "--name", "m")
    b = dict(a)
    del b["layer0.weight"]
    b["layer1.weight"] = b["layer1.weight"].reshape(128, 512)
    b["head.weight"] = np.zeros((16, 16), dtype=np.uint16)
    write_safetensors(model, b)
    (tmp_path / "extra.txt").write_text("notes")
    run_cli(store, "log-model", str(model), "--name", "m")
    d = run_cli(store, "diff", "m:v0", "m:v1", "--json").json()
    changes = {t["name"]: t["change"] for t in d["files"][0]["tensors"]}
    assert changes == {"head.weight": "added", "layer0.weight": "removed", "layer1.weight": "shape"}


BAD_INVOCATIONS = [
    ("unknown command", ["frobnicate"], 2),
    ("missing store", ["--store", "{tmp}/nowhere", "ls"], 1),
    ("malformed selector", ["show", "mnist:"], 1),
    ("too many slashes", ["show", "a/b/c/d:v0"], 1),
    ("unknown version", ["show", "mnist:v99"], 1),
    ("unknown collection", ["log", "nosuch"], 1),
    ("bad alias (version-like)", ["alias", "mnist:v0", "v3"], 1),
    ("bad alias (slash)", ["alias", "mnist:v0", "a/b"], 1),
    ("delete an absent alias", ["alias", "--delete", "mnist", "nosuch"], 1),
    ("bad metadata syntax", ["log-model", "{model}", "--name", "mnist", "-m", "novalue"], 2),
    ("missing path", ["log-model", "{tmp}/absent.safetensors", "--name", "mnist"], 1),
    ("unreadable path (a fifo)", ["log-model", "{fifo}", "--name", "mnist"], 1),
    ("invalid collection name", ["log-model", "{model}", "--name", "bad name"], 1),
    ("invalid registered model", ["link-model", "{model}", "a/b"], 1),
    ("use an unknown model", ["use-model", "nosuch:v0", "--root", "{tmp}/x"], 1),
    ("diff with an unknown version", ["diff", "mnist:v0", "mnist:v7"], 1),
    ("cat-file of a non-id", ["cat-file", "-t", "zzzz"], 1),
    ("cat-file of an absent id", ["cat-file", "-t", "0" * 64], 1),
    ("cat-file without a mode", ["cat-file", "0" * 64], 2),
    ("negative grace", ["gc", "--grace", "-5"], 2),
    ("du by an unknown key", ["du", "--by", "entity"], 2),
    ("lineage in an unknown format", ["lineage", "mnist:v0", "--format", "svg"], 2),
    ("delete without --yes", ["delete", "mnist"], 2),
    ("ls with a bad path", ["ls", "a/b/c"], 2),
    ("missing argument", ["log-model"], 2),
    ("invalid entity", ["log", "mnist", "--entity", ".hidden"], 1),
]


def test_bad_invocations_fail_cleanly_and_change_nothing(session: dict[str, Path], tmp_path: Path) -> None:
    store = session["store"]
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    before = snapshot(store)
    assert len(BAD_INVOCATIONS) >= 20
    for what, args, code in BAD_INVOCATIONS:
        argv = [a.format(tmp=tmp_path, model=session["model"], fifo=fifo) for a in args]
        use_store = "" if argv[0] == "--store" else store
        r = run_cli(use_store, *argv, check=False)
        assert r.code == code, f"{what}: exit {r.code}, stderr {r.err!r}"
        lines = r.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("objstore: error: "), f"{what}: {r.err!r}"
        assert "Traceback" not in r.err + r.out, what
        assert len(lines[0]) > len("objstore: error: ") + 10, what
        assert snapshot(store) == before, f"{what} changed the store"
    assert not (tmp_path / "nowhere").exists()


def test_debug_env_shows_traceback(session: dict[str, Path]) -> None:
    r = run_cli(session["store"], "show", "mnist:v99", check=False, env={"OBJSTORE_DEBUG": "1"})
    assert r.code == 1 and "Traceback" in r.err and r.err.strip().splitlines()[-1].startswith("objstore: error:")


def test_json_is_clean_and_project_env(session: dict[str, Path], tmp_path: Path) -> None:
    store = session["store"]
    model = tmp_path / "p.safetensors"
    write_safetensors(model, random_layers(9, layers=1))
    r = run_cli(store, "log-model", str(model), "--name", "pm", "--json", env={"OBJSTORE_PROJECT": "proj1"})
    data = r.json()
    assert data["name"] == f"{ENTITY}/proj1/pm:v0" and data["created"] is True
    assert r.err == ""  # --json keeps the library's notes quiet too
    assert run_cli(store, "ls", "proj1", "--json").json()["collections"][0]["name"] == "pm"


def test_progress_is_silent_when_piped(session: dict[str, Path], tmp_path: Path) -> None:
    r = run_cli(session["store"], "use-model", "mnist:v0", "--root", str(tmp_path / "o"))
    assert "ETA" not in r.err and "[" not in r.err
    assert sha(r.out.strip()) == sha(session["base"])
