"""The command line for deleting and annotations: ``objstore delete NAME:vN``,
``objstore annotations``, ``objstore alias`` refusing ``latest``, ``gc`` expiring by ttl."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest
from cli_helpers import run_cli

import objstore


@pytest.fixture
def store(tmp_path: Path) -> Path:
    s = tmp_path / "s"
    for i in range(2):
        (tmp_path / "m.bin").write_bytes(os.urandom(2000) + bytes([i]))
        with objstore.init(entity="e", project="p", store=s) as run:
            run.log_model(str(tmp_path / "m.bin"), name="m", aliases=["best"] if i == 0 else None)
    return s


def test_delete_one_version(store: Path) -> None:
    refused = run_cli(store, "delete", "e/p/m:v0", "--yes", check=False)
    assert refused.code == 1 and "best" in refused.err and "--delete-aliases" in refused.err  # CLI wording
    done = run_cli(store, "delete", "e/p/m:v0", "--yes", "--delete-aliases", "--json").json()
    assert done == {"version": "e/p/m:v0", "aliases": ["best"], "unlinked": False}
    gone = run_cli(store, "show", "e/p/m:v0", check=False)
    assert gone.code == 1 and "deleted" in gone.err
    assert run_cli(store, "delete", "e/p/m:v1", check=False).code == 2  # no --yes without a terminal


@pytest.mark.parametrize("args", [["alias", "e/p/m:v0", "latest"], ["alias", "--delete", "e/p/m", "latest"]])
def test_alias_refuses_latest(store: Path, args: list[str]) -> None:
    result = run_cli(store, *args, check=False)
    assert result.code == 1 and "managed by the store" in result.err
    assert objstore.Api(store=store).artifact("e/p/m:latest").version == "v1"


def test_annotations_shows_the_history(store: Path) -> None:
    art = objstore.Api(store=store).artifact("e/p/m:v1")
    art.tags = ["prod"]
    art.description = "tuned"
    art.save()
    data = run_cli(store, "annotations", "e/p/m:v1", "--json").json()
    assert isinstance(data, dict)
    assert (data["tags"], data["description"], data["ttl"]) == (["prod"], "tuned", "inherit")
    assert [c["field"] for c in data["history"][0]["changes"]] == ["description", "tags"]
    text = run_cli(store, "annotations", "e/p/m:v1").out
    assert "r1" in text and "description: None -> 'tuned'" in text


def test_gc_expires_versions_past_their_ttl(store: Path) -> None:
    art = objstore.Api(store=store).artifact("e/p/m:v1")
    art.ttl = timedelta(seconds=1)
    art.save()
    import time
    time.sleep(1.5)
    dry = run_cli(store, "gc", "--dry-run", "--json").json()
    assert isinstance(dry, dict) and dry["expired"] == ["e/p/m:v1"]
    assert objstore.Api(store=store).artifact("e/p/m:v1").version == "v1"
    out = run_cli(store, "gc", "--grace", "0").out
    assert "expire e/p/m:v1" in out
    assert objstore.Api(store=store).artifact("e/p/m:latest").version == "v0"
    assert run_cli(store, "fsck").code == 0
