"""Library errors reach the command line in its words: a message that names a
Python argument (``delete_aliases=True``) carries the CLI's wording too
(``--delete-aliases``), and the CLI prints that one (issue 15, point 4)."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

from click.testing import CliRunner

import objstore
from cli.main import main

ROOT = Path(__file__).resolve().parent.parent
KEYWORD_ARGUMENT = re.compile(r"\b[a-z_]+=(True|False|None)\b")
# Raised only by Python calls no command makes (a draft's add_file of a path it already holds).
API_ONLY = {"overwrite=True"}


def _raised_messages() -> list[tuple[str, int, str, bool]]:
    """(file, line, message text, wrapped in in_cli_words) of every ``raise`` in the library."""
    found = []
    for path in sorted((ROOT / "objstore").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if not isinstance(node, ast.Raise) or node.exc is None:
                continue
            wrapped = isinstance(node.exc, ast.Call) and getattr(node.exc.func, "id", "") == "in_cli_words"
            text = " ".join(n.value for n in ast.walk(node.exc) if isinstance(n, ast.Constant) and isinstance(n.value, str))
            found.append((str(path.relative_to(ROOT)), node.lineno, text, wrapped))
    return found


def test_every_error_naming_a_keyword_argument_has_cli_words() -> None:
    raised = _raised_messages()
    assert len(raised) > 100  # the scan sees the library's raises
    unworded = [f"{f}:{line}: {text}" for f, line, text, wrapped in raised
                if (m := KEYWORD_ARGUMENT.search(text)) and m.group(0) not in API_ONLY and not wrapped]
    assert not unworded, "library errors in API words that a command can meet; wrap them in in_cli_words:\n" + "\n".join(unworded)


def test_deleting_a_version_with_aliases_names_the_flag(tmp_path: Path) -> None:
    model = tmp_path / "m.bin"
    model.write_bytes(os.urandom(2000))
    store = tmp_path / "store"
    runner = CliRunner()

    def cli(*args: str) -> tuple[int, str]:
        result = runner.invoke(main, ["--store", str(store), *args], env={"OBJSTORE_PROJECT": "demo"})
        return result.exit_code, result.output

    assert cli("init")[0] == 0
    assert cli("log-model", str(model), "-n", "llm", "-a", "best")[0] == 0
    code, out = cli("delete", "llm:v0", "--yes")
    assert code == 1
    assert "pass --delete-aliases" in out and "delete_aliases=True" not in out
    # the library keeps its own words for a Python caller
    api = objstore.Api(store, project="demo")
    try:
        api.artifact("llm:v0").delete()
    except objstore.errors.CommError as exc:
        assert "delete_aliases=True" in str(exc)
    else:
        raise AssertionError("delete of a version with aliases was not refused")
    assert cli("delete", "llm:v0", "--delete-aliases", "--yes")[0] == 0
