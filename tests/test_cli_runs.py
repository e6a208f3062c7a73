"""CLI commands that belong to one run (``run start``, ``--run ID``, ``$OBJSTORE_RUN_ID``,
``run finish``), ``runs list`` / ``runs show``, the grouping seen in ``lineage``, and
``show``'s summary of a long ``used by`` (issue 15, point 3)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_helpers import run_cli
from click.testing import CliRunner

import objstore
from cli.main import main
from objstore.settings import default_entity


@pytest.fixture
def store(tmp_path: Path) -> Path:
    where = tmp_path / "store"
    run_cli(where, "init")
    for name in ("a.bin", "b.bin"):
        (tmp_path / name).write_bytes(os.urandom(2000))
    run_cli(where, "log-model", str(tmp_path / "a.bin"), "-n", "base", "-p", "demo")
    return where


def upstream_runs(store: Path, name: str) -> list[dict[str, object]]:
    lin = run_cli(store, "lineage", name, "-p", "demo", "--json").json()
    return list(lin["upstream"])  # type: ignore[index]


def test_without_a_run_each_command_is_its_own(store: Path) -> None:
    run_cli(store, "use-model", "base", "-p", "demo", "--root", str(store.parent / "dl"))
    run_cli(store, "log-model", str(store.parent / "b.bin"), "-n", "tuned", "-p", "demo")
    (run,) = upstream_runs(store, "tuned")
    assert run["children"] == []  # the run that logged tuned used nothing


def test_commands_joining_one_run_show_in_lineage(store: Path) -> None:
    started = run_cli(store, "run", "start", "-p", "demo", "--name", "finetune")
    run_id = started.out.strip()
    assert "OBJSTORE_RUN_ID" in started.err
    run_cli(store, "use-model", "base", "-p", "demo", "--run", run_id, "--root", str(store.parent / "dl"))
    run_cli(store, "log-model", str(store.parent / "b.bin"), "-n", "tuned", "-p", "demo",
            env={"OBJSTORE_RUN_ID": run_id})
    (run,) = upstream_runs(store, "tuned")
    assert run["name"] == f"{default_entity()}/demo/{run_id}"
    assert "finetune" in str(run["detail"]) and "running" in str(run["detail"])
    assert [c["name"] for c in run["children"]] == [f"{default_entity()}/demo/base:v0"]  # type: ignore[index]
    text = run_cli(store, "lineage", "tuned", "-p", "demo").out
    assert f"run {default_entity()}/demo/{run_id} (finetune" in text and "version " in text

    shown = run_cli(store, "runs", "show", run_id, "-p", "demo", "--json").json()
    assert shown["used"] == [f"{default_entity()}/demo/base:v0"]  # type: ignore[index]
    assert shown["logged"] == [f"{default_entity()}/demo/tuned:v0"]  # type: ignore[index]
    assert shown["state"] == "running"  # type: ignore[index]
    listed = run_cli(store, "runs", "list", "demo", "--json").json()
    assert run_id in [r["id"] for r in listed["runs"]]  # type: ignore[index]
    assert run_cli(store, "runs", "-p", "demo", check=False).code == 2  # options belong to 'runs list'
    assert run_id in run_cli(store, "runs", env={"OBJSTORE_PROJECT": "demo"}).out

    finished = run_cli(store, "run", "finish", "-p", "demo", env={"OBJSTORE_RUN_ID": run_id})
    assert "finished run" in finished.out
    assert run_cli(store, "runs", "show", run_id, "-p", "demo", "--json").json()["state"] == "finished"  # type: ignore[index]


def test_run_errors(store: Path) -> None:
    run_id = run_cli(store, "run", "start", "-p", "demo", "--id", "fixedid1").out.strip()
    assert run_id == "fixedid1"
    again = run_cli(store, "run", "start", "-p", "demo", "--id", "fixedid1", check=False)
    assert again.code == 1 and "exists" in again.err
    missing = run_cli(store, "run", "finish", check=False)
    assert missing.code == 2 and "OBJSTORE_RUN_ID" in missing.err
    typo = run_cli(store, "runs", "show", "fixedid2", "-p", "demo", check=False)
    assert typo.code == 1 and "did you mean fixedid1?" in typo.err
    elsewhere = run_cli(store, "run", "finish", "fixedid1", check=False)
    assert elsewhere.code == 1 and "demo/fixedid1 exists" in elsewhere.err


def test_show_summarizes_a_long_used_by(store: Path) -> None:
    for _ in range(8):
        with objstore.init(project="demo", store=str(store)) as run:
            run.use_artifact("base")
    result = CliRunner().invoke(main, ["--store", str(store), "show", "demo/base"])
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("used by"))
    assert "8 runs; the newest: " in line and line.count("/demo/") == 5 and "--json" in line
    data = run_cli(store, "show", "demo/base", "--json").json()
    assert data["used_by_count"] == 8 and len(data["used_by"]) == 8  # type: ignore[index,arg-type]
