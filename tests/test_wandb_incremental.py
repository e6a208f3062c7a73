"""W&B's ``Artifact(incremental=True)``: logged over the collection's latest
version (its files, the draft's added or replacing those at the same path);
alone when the collection has none; ``incremental`` read-only."""

from __future__ import annotations

from pathlib import Path

import pytest

import objstore
from objstore import errors


def files(store: Path, spec: str, root: Path) -> dict[str, bytes]:
    out = Path(objstore.Api(store=store).artifact(spec).download(root=str(root)))
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_an_incremental_draft_is_logged_over_latest(tmp_path: Path) -> None:
    store = tmp_path / "store"
    src = tmp_path / "src"
    with objstore.init(entity="e", project="p", store=store) as run:
        first = objstore.Artifact("data", type="dataset", incremental=True)  # nothing logged yet: the draft alone
        assert first.incremental
        first.add_file(str(write(src / "a.txt", b"a")))
        first.add_file(str(write(src / "b.txt", b"b")))
        first.add_file(str(write(src / "d" / "x.txt", b"x")), name="d/x.txt")
        first.add_file(str(write(src / "f", b"a file f")), name="f")
        run.log_artifact(first)
        more = objstore.Artifact("data", "dataset", None, None, True)  # W&B's positional order
        more.add_file(str(write(src / "b2.txt", b"b, changed")), name="b.txt")
        more.add_file(str(write(src / "c.txt", b"c")))
        more.add_file(str(write(src / "y", b"y")), name="d")  # a file where latest has a directory
        more.add_file(str(write(src / "g", b"g")), name="f/g")  # a directory where latest has a file
        logged = run.log_artifact(more)
    assert logged.version == "v1" and logged.incremental  # the draft's flag, as W&B's
    assert not objstore.Api(store=store).artifact("e/p/data:v1").incremental
    assert files(store, "e/p/data:v1", tmp_path / "o1") == {"a.txt": b"a", "b.txt": b"b, changed", "c.txt": b"c",
                                                           "d": b"y", "f/g": b"g"}
    assert files(store, "e/p/data:v0", tmp_path / "o0") == {"a.txt": b"a", "b.txt": b"b", "d/x.txt": b"x", "f": b"a file f"}
    # Not incremental: only what the draft holds.
    with objstore.init(entity="e", project="p", store=store) as run:
        plain = objstore.Artifact("data", type="dataset")
        plain.add_file(str(src / "c.txt"))
        assert run.log_artifact(plain).version == "v2"
        # Incremental with nothing new over v2: v2's content, which is v2 itself.
        again = objstore.Artifact("data", type="dataset", incremental=True)
        again.add_file(str(src / "c.txt"))
        assert run.log_artifact(again).version == "v2"
    assert files(store, "e/p/data:latest", tmp_path / "o2") == {"c.txt": b"c"}


def test_incremental_is_read_only(tmp_path: Path) -> None:
    art = objstore.Artifact("d", type="dataset")
    assert art.incremental is False
    with pytest.raises(errors.UnsupportedError, match="incremental"):
        art.incremental = True  # type: ignore[misc]
