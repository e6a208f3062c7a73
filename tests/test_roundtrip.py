"""Round trips: random directory trees come back byte-identical, and ``verify``
notices a single changed byte, naming the file."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import objstore
from objstore.errors import VerificationFailed
from objstore.model.store import Store

# Names as file systems allow them: unicode, dots, spaces, but no separators.
names = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\\\0"),
    min_size=1, max_size=20,
).filter(lambda n: n not in (".", "..") and len(n.encode()) <= 200)

# Sizes from empty to several chunks (the store below uses 4 KiB average chunks
# so that "several chunks" stays cheap). Content mixes noise and runs.
sizes = st.sampled_from([0, 1, 7, 1000, 4095, 4096, 5000, 20_000, 70_000])


@st.composite
def trees(draw: st.DrawFn, depth: int = 0) -> dict[str, object]:
    """A nested dict: name -> bytes (a file) or dict (a directory, possibly empty)."""
    entries: dict[str, object] = {}
    for name in draw(st.lists(names, max_size=5, unique_by=lambda n: n.casefold())):
        if depth < 3 and draw(st.booleans()):
            entries[name] = draw(trees(depth + 1))
        else:
            size = draw(sizes)
            seed = draw(st.integers(0, 2**32 - 1))
            entries[name] = _content(size, seed)
    return entries


def _content(size: int, seed: int) -> bytes:
    rnd = __import__("random").Random(seed)
    if seed % 3 == 0:
        return bytes([seed % 251]) * size
    return rnd.randbytes(size)


def _write(root: Path, tree: dict[str, object]) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for name, value in tree.items():
        if isinstance(value, dict):
            _write(root / name, value)
        else:
            assert isinstance(value, bytes)
            (root / name).write_bytes(value)


def _read(root: Path) -> dict[str, object]:
    out: dict[str, object] = {}
    for p in sorted(root.iterdir()):
        out[p.name] = _read(p) if p.is_dir() else p.read_bytes()
    return out


@pytest.fixture(scope="module")
def small_chunk_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    from objstore.storage.chunking import ChunkParams

    return Store.open(tmp_path_factory.mktemp("rt") / "store", chunking=ChunkParams(4096, 1024, 16384))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(tree=trees())
def test_random_trees_round_trip(small_chunk_store: Store, tree: dict[str, object]) -> None:
    work = Path(tempfile.mkdtemp(prefix="objstore-rt-"))
    try:
        src = work / "src"
        _write(src, tree)
        (src / "marker.bin").write_bytes(b"x")  # a tree is never empty
        with objstore.init(project="rt", entity="prop", store=small_chunk_store) as run:
            art = objstore.Artifact("tree", type="dataset")
            art.add_dir(src)
            run.log_artifact(art)
        out = work / "out"
        art.download(out)
        assert _read(out) == _read(src)
        art.verify(out)
    finally:
        shutil.rmtree(work)


def test_verify_names_the_changed_file(tmp_path: Path) -> None:
    src = tmp_path / "model"
    (src / "sub").mkdir(parents=True)
    (src / "weights.bin").write_bytes(os.urandom(300_000))
    (src / "sub" / "config.json").write_text('{"layers": 2}')
    with objstore.init(project="p", entity="e", store=tmp_path / "store") as run:
        art = run.log_model(str(src), name="m")
    out = Path(art.download(tmp_path / "out"))
    art.verify(out)
    target = out / "weights.bin"
    data = bytearray(target.read_bytes())
    data[123_456] ^= 0x01
    target.write_bytes(bytes(data))
    with pytest.raises(VerificationFailed) as err:
        art.verify(out)
    assert err.value.paths == ("weights.bin",)
    assert "weights.bin" in str(err.value)
    # A removed file is named too; an intact copy of the rest is not.
    (out / "sub" / "config.json").unlink()
    with pytest.raises(VerificationFailed) as err:
        art.verify(out)
    assert set(err.value.paths) == {"weights.bin", "sub/config.json"}
    # Downloading again repairs exactly the damage.
    art.download(out)
    art.verify(out)


def test_existing_intact_copy_is_not_rewritten(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # use_model's default root is ./artifacts
    (tmp_path / "m.bin").write_bytes(os.urandom(100_000))
    with objstore.init(project="p", entity="e", store=tmp_path / "store") as run:
        path = Path(run.use_model(run.log_model(str(tmp_path / "m.bin"), name="m").name))
    inode = path.stat().st_ino
    with objstore.init(project="p", entity="e", store=tmp_path / "store") as run:
        again = Path(run.use_model("m:v0"))
    assert again == path and again.stat().st_ino == inode
    assert path.parent == tmp_path / "artifacts" / "m:v0"  # absolute, as W&B
