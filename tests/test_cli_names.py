"""Names resolve the same way in every command, and a name that finds nothing says
what was meant: a typo'd remote is an unknown remote with the close ones, a
collection in another project is named, collections and aliases get difflib's
closest, a short digest prefix states the 8-hex-digit rule (issue 15, point 4)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from cli_helpers import run_cli
from click.testing import CliRunner

from cli.main import main
from objstore.settings import default_entity


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("names")
    model = root / "m.bin"
    model.write_bytes(os.urandom(3000))
    where = root / "store"
    run_cli(where, "init")
    run_cli(where, "log-model", str(model), "-n", "llm", "-p", "demo", "-a", "production")
    run_cli(where, "remote", "add", "team", str(root / "team"))
    return where


def cli(store: Path, *args: str, **env: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["--store", str(store), *args], env={"OBJSTORE_PROJECT": None, **env})
    return result.exit_code, result.output


def test_push_with_a_short_name_defaults_the_entity(store: Path) -> None:
    pushed = run_cli(store, "push", "team", "demo/llm", "--json").json()
    assert [r for r in pushed["refs"] if "demo/llm" in r]  # type: ignore[index]
    # entity/project still selects a whole project
    run_cli(store, "push", "team", f"{default_entity()}/demo")
    # and a bare name takes the project from the environment, as log-model does
    run_cli(store, "push", "team", "llm", env={"OBJSTORE_PROJECT": "demo"})


def test_a_typod_remote_is_an_unknown_remote(store: Path) -> None:
    refused = run_cli(store, "push", "tema", "demo/llm", check=False)
    assert refused.code == 1
    assert "no remote 'tema'" in refused.err and "did you mean team?" in refused.err
    assert "names no collection" not in refused.err and "nothing to push" not in refused.err
    code, out = cli(store, "pull", "tema")
    assert code == 1 and "did you mean team?" in out


def test_show_without_the_project_names_the_project_that_has_it(store: Path) -> None:
    code, out = cli(store, "show", "llm")
    assert code == 1
    assert "demo/llm exists" in out and "OBJSTORE_PROJECT" in out
    code, out = cli(store, "use-model", "llm")
    assert code == 1 and "demo/llm exists" in out
    code, _ = cli(store, "show", "llm", OBJSTORE_PROJECT="demo")
    assert code == 0


@pytest.mark.parametrize("command", ["show", "log", "use-model", "annotations"])
def test_a_typod_collection_gets_did_you_mean(store: Path, command: str) -> None:
    code, out = cli(store, command, "demo/lmm")
    assert code == 1, out
    assert "did you mean llm?" in out


def test_a_typod_alias_gets_did_you_mean(store: Path) -> None:
    code, out = cli(store, "show", "demo/llm:prodution")
    assert code == 1 and "did you mean production?" in out
    code, out = cli(store, "alias", "--delete", "demo/llm", "prodution")
    assert code == 1 and "did you mean production?" in out


def test_a_short_digest_prefix_states_the_rule(store: Path) -> None:
    code, out = cli(store, "show", "demo/llm:abcd")
    assert code == 1 and "at least 8 hex digits" in out
    digest = run_cli(store, "show", "demo/llm", "--json").json()["digest"]  # type: ignore[index]
    code, out = cli(store, "show", f"demo/llm:{str(digest)[:8]}")
    assert code == 0, out


def test_push_of_a_typod_collection_gets_did_you_mean(store: Path) -> None:
    code, out = cli(store, "push", "team", "demo/lmm")
    assert code == 1, out
    assert "nothing to push" in out and "did you mean llm?" in out
    # one typo among good names refuses the push too, rather than pushing the rest silently
    code, out = cli(store, "push", "team", "demo/llm", "demo/lmm")
    assert code == 1 and "did you mean llm?" in out


def complete(store: Path, words: str, **env: str) -> list[str]:
    """What bash completion answers for COMP_WORDS=words (the last word partial), in-process."""
    parts = words.split(" ")
    result = CliRunner().invoke(main, [], prog_name="objstore", env={
        "_OBJSTORE_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(len(parts) - 1),
        "OBJSTORE_DIR": str(store), "OBJSTORE_PROJECT": None, "OBJSTORE_QUIET": None, **env})
    assert result.exit_code == 0, result.output
    return [line.split(",", 1)[1] for line in result.output.splitlines() if line]


def test_completion_of_remotes_projects_and_entities(store: Path) -> None:
    entity = default_entity()
    assert complete(store, "objstore push t") == ["team"]
    assert complete(store, "objstore push ") == ["team", "demo/", f"{entity}/"]  # a remote, or what to push
    assert complete(store, "objstore push team demo/") == ["demo/llm"]  # after the remote: collections only
    assert complete(store, "objstore pull te") == ["team"]
    assert complete(store, "objstore remote remove ") == ["team"]
    assert complete(store, "objstore fsck --repair-from ") == ["team"]
    assert complete(store, "objstore show llm --project d") == ["demo"]
    assert complete(store, "objstore log --entity ") == [entity]
    assert complete(store, "objstore log --entity nobody --project ") == []
    assert complete(store, "objstore show ", OBJSTORE_PROJECT="demo") == ["demo/", "llm", f"{entity}/"]  # settings apply
