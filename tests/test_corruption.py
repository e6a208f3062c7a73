"""Corruption: damaged packs, indexes, objects, refs and config never yield wrong bytes.

A module-wide template store holds three versions that share chunks plus a
registry link; each test copies it, damages one thing, and checks that

- every read that touches the damage raises CorruptObject (NotFound when the
  thing is gone) naming the object, and Artifact.download names the version;
- every read that does not touch it still returns the right bytes;
- no read ever returns bytes that differ from what was logged;
- fsck finds the damage and names exactly the versions it breaks;
- repair_from(a store that holds the same versions intact) makes the store whole.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

import objstore
from objstore.errors import CorruptObject, NotFound, ObjstoreError
from objstore.maintenance.fsck import fsck
from objstore.model.store import Store

VERSIONS = ("e/p/m:v0", "e/p/m:v1", "e/p/other:v0", "e/model-registry/reg:v0")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree_shas(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): _sha(p) for p in sorted(root.rglob("*")) if p.is_file() and not p.is_symlink()}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, str]]]:
    """A store with m:v0, m:v1 (sharing most chunks with v0), other:v0 and reg:v0 -> m:v1,
    and the sha256 of every file of each version as logged."""
    root = tmp_path_factory.mktemp("corruption")
    rng = random.Random(3)
    src = root / "src"
    (src / "m0").mkdir(parents=True)
    base = rng.randbytes(600_000)
    (src / "m0" / "weights.bin").write_bytes(base)
    (src / "m0" / "config.json").write_text('{"a": 1}')
    (src / "m1").mkdir()
    (src / "m1" / "weights.bin").write_bytes(base[:400_000] + rng.randbytes(200_000))
    (src / "m1" / "config.json").write_text('{"a": 2}')
    (src / "other").mkdir()
    (src / "other" / "data.bin").write_bytes(rng.randbytes(300_000))
    store = root / "store"
    with objstore.init(project="p", entity="e", store=store) as run:
        run.log_model(src / "m0", name="m")
        run.log_model(src / "m1", name="m")
        run.log_model(src / "other", name="other")
        run.link_model(src / "m1", "reg", name="m")
    expected = {"e/p/m:v0": _tree_shas(src / "m0"), "e/p/m:v1": _tree_shas(src / "m1"),
                "e/p/other:v0": _tree_shas(src / "other"), "e/model-registry/reg:v0": _tree_shas(src / "m1")}
    assert fsck(Store.open_existing(store)).ok
    return store, expected


@pytest.fixture
def damaged(template: tuple[Path, dict[str, dict[str, str]]], tmp_path: Path) -> tuple[Path, Path, dict[str, dict[str, str]]]:
    """(a store to damage, an intact copy of it, the expected contents)."""
    store, expected = template
    shutil.copytree(store, tmp_path / "store")
    shutil.copytree(store, tmp_path / "intact")
    return tmp_path / "store", tmp_path / "intact", expected


def _read_all(store_path: Path, expected: dict[str, dict[str, str]], out: Path) -> dict[str, str]:
    """Download every version; return {version: "ok" | error class name}. Fails the test
    if any download succeeds with bytes other than those logged, or raises anything but
    CorruptObject / NotFound."""
    results = {}
    try:
        api = objstore.Api(store=str(store_path), entity="e", project="p")
    except CorruptObject as exc:
        return {v: f"CorruptObject:{exc}" for v in expected}
    for i, name in enumerate(expected):
        dest = out / f"{i}"
        try:
            api.artifact(name).download(dest)
        except (CorruptObject, NotFound) as exc:
            results[name] = f"{type(exc).__name__}:{exc}"
            continue
        except ObjstoreError as exc:  # pragma: no cover - the assertion explains
            pytest.fail(f"reading {name} raised {type(exc).__name__}: {exc}")
        got = _tree_shas(dest)
        assert got == expected[name], f"{name} came back with wrong bytes"
        results[name] = "ok"
    return results


def _pack_paths(store: Path) -> list[Path]:
    return sorted((store / "packs").glob("*.pack"))


def _objects(store: Path) -> dict[str, Path]:
    return {p.parent.name + p.name: p for p in (store / "objects").rglob("*") if p.is_file()}


def _object_of(store_path: Path, spec: str, what: str) -> str:
    """The hex id of the version / tree / first file object of ``spec``."""
    api = objstore.Api(store=str(store_path), entity="e", project="p")
    art = api.artifact(spec)
    _, resolved = art._logged()
    if what == "version":
        return resolved.version_id.hex
    if what == "tree":
        return resolved.version.tree.hex
    files = [f for f in art.files() if f.path == "config.json"]
    return files[0].digest or ""


def _chunks_of(store_path: Path, spec: str, path: str) -> list[bytes]:
    from objstore.files.materialize import read_file_object
    from objstore.storage.ids import ObjectId

    store = Store.open_existing(str(store_path))
    art = objstore.Api(store=store, entity="e", project="p").artifact(spec)
    fid = next(f.digest for f in art.files() if f.path == path)
    return [c.raw for c, _ in read_file_object(store.odb, ObjectId.from_hex(fid or "")).chunks]


def _locate(store_path: Path, chunk: bytes) -> tuple[Path, int, int]:
    from objstore.storage.ids import ObjectId

    store = Store.open_existing(str(store_path))
    loc = store.odb.locate(ObjectId(chunk))
    return store_path / "packs" / f"{loc.pack}.pack", loc.offset, loc.stored_len


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x5A
    os.chmod(path, 0o644)
    path.write_bytes(bytes(data))


# Each damage returns the versions it must break (and only those).
Damage = Callable[[Path], set[str]]


def flip_chunk_only_in_v0(store: Path) -> set[str]:
    only_v0 = set(_chunks_of(store, "e/p/m:v0", "weights.bin")) - set(_chunks_of(store, "e/p/m:v1", "weights.bin"))
    pack, off, n = _locate(store, sorted(only_v0)[0])
    _flip(pack, off + n // 2)
    return {"e/p/m:v0"}


def flip_shared_chunk(store: Path) -> set[str]:
    shared = set(_chunks_of(store, "e/p/m:v0", "weights.bin")) & set(_chunks_of(store, "e/p/m:v1", "weights.bin"))
    pack, off, n = _locate(store, sorted(shared)[0])
    _flip(pack, off)
    return {"e/p/m:v0", "e/p/m:v1", "e/model-registry/reg:v0"}


def truncate_pack(store: Path) -> set[str]:
    pack = _pack_paths(store)[0]
    # The chunks past the cut are lost; everything else of that pack still verifies.
    chunk = sorted(_chunks_of(store, "e/p/other:v0", "data.bin"))[0]
    pack, off, _ = _locate(store, chunk)
    with open(pack, "r+b") as f:
        f.truncate(off + 10)
    return {"?"}  # computed by the test: whichever versions have chunks past the cut


def delete_pack(store: Path) -> set[str]:
    chunk = _chunks_of(store, "e/p/other:v0", "data.bin")[0]
    pack, _, _ = _locate(store, chunk)
    pack.unlink()
    return {"?"}


def flip_idx(store: Path) -> set[str]:
    chunk = _chunks_of(store, "e/p/other:v0", "data.bin")[0]
    pack, _, _ = _locate(store, chunk)
    _flip(pack.with_suffix(".idx"), 40)
    return set()  # the pack itself is intact: the index is rebuilt from it


def delete_idx(store: Path) -> set[str]:
    chunk = _chunks_of(store, "e/p/other:v0", "data.bin")[0]
    pack, _, _ = _locate(store, chunk)
    pack.with_suffix(".idx").unlink()
    return {"?"}


def flip_version_object(store: Path) -> set[str]:
    _flip(_objects(store)[_object_of(store, "e/p/other:v0", "version")], 12)
    return {"e/p/other:v0"}


def flip_tree_object(store: Path) -> set[str]:
    _flip(_objects(store)[_object_of(store, "e/p/m:v0", "tree")], 20)
    return {"e/p/m:v0"}


def truncate_file_object(store: Path) -> set[str]:
    path = _objects(store)[_object_of(store, "e/p/m:v1", "file")]
    path.write_bytes(path.read_bytes()[:-5])
    return {"e/p/m:v1", "e/model-registry/reg:v0"}


def delete_file_object(store: Path) -> set[str]:
    _objects(store)[_object_of(store, "e/p/m:v0", "file")].unlink()
    return {"e/p/m:v0"}


def garbage_version_ref(store: Path) -> set[str]:
    (store / "refs/e/p/other/versions/v0").write_bytes(b"not an id\n")
    return {"e/p/other:v0"}


def swap_version_ref(store: Path) -> set[str]:
    """A ref pointing at another collection's version: wrong, though every object is intact."""
    other = (store / "refs/e/p/other/versions/v0").read_bytes()
    (store / "refs/e/p/m/versions/v0").write_bytes(other)
    return {"e/p/m:v0"}


DAMAGES = [flip_chunk_only_in_v0, flip_shared_chunk, truncate_pack, delete_pack, flip_idx, delete_idx,
           flip_version_object, flip_tree_object, truncate_file_object, delete_file_object, garbage_version_ref]


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda d: d.__name__)
def test_damage_is_an_error_never_wrong_bytes(
    damaged: tuple[Path, Path, dict[str, dict[str, str]]], damage: Damage, tmp_path: Path
) -> None:
    store, intact, expected = damaged
    must_break = damage(store)
    results = _read_all(store, expected, tmp_path / "out")
    broken = {v for v, r in results.items() if r != "ok"}
    report = fsck(Store.open_existing(str(store)))
    if "?" in must_break:  # whatever lost its bytes: fsck and the readers must agree
        must_break = broken
        assert broken, f"{damage.__name__}: nothing broke?"
    assert broken == must_break, f"{damage.__name__}: reads broke {sorted(broken)}, expected {sorted(must_break)}: {results}"
    for name in broken:
        assert "Corrupt" in results[name] or "NotFound" in results[name]
    assert not report.ok, f"{damage.__name__}: fsck found nothing"
    if must_break:
        assert set(report.damaged_versions) >= must_break, (report.damaged_versions, [p.message for p in report.problems])
        assert (
            set(report.damaged_versions) <= must_break | {"e/p/m:v1"}
            if "e/model-registry/reg:v0" in must_break
            else set(report.damaged_versions) <= must_break
        )


def test_download_names_the_object_and_the_version(damaged: tuple[Path, Path, dict[str, dict[str, str]]], tmp_path: Path) -> None:
    store, _, _ = damaged
    flip_chunk_only_in_v0(store)
    art = objstore.Api(store=str(store), entity="e", project="p").artifact("e/p/m:v0")
    with pytest.raises(CorruptObject) as info:
        art.download(tmp_path / "out")
    assert info.value.object_id and len(info.value.object_id) == 64
    assert "e/p/m:v0" in info.value.breaks and "e/p/m:v0" in str(info.value)
    assert not (tmp_path / "out" / "weights.bin").exists()  # nothing half-written under the real name


def test_damaged_config_is_a_clear_error(damaged: tuple[Path, Path, dict[str, dict[str, str]]]) -> None:
    store, _, _ = damaged
    (store / "config").write_bytes(b"\xc1garbage")
    with pytest.raises(CorruptObject, match="config"):
        Store.open_existing(str(store))


@pytest.mark.parametrize("damage", DAMAGES, ids=lambda d: d.__name__)
def test_repair_from_an_intact_store(damaged: tuple[Path, Path, dict[str, dict[str, str]]], damage: Damage, tmp_path: Path) -> None:
    from objstore.maintenance.repair import repair_from

    store_path, intact, expected = damaged
    damage(store_path)
    store = Store.open_existing(str(store_path))
    report = repair_from(store, Store.open_existing(str(intact)))
    assert report.ok, [p.message for p in report.after.problems] + report.unavailable
    assert not report.before.ok
    assert all(v == "ok" for v in _read_all(store_path, expected, tmp_path / "out").values())
    # Nothing else to do the second time, and the damaged files are kept aside, not read.
    again = repair_from(Store.open_existing(str(store_path)), Store.open_existing(str(intact)))
    assert again.before.ok and not again.quarantined
    from objstore.storage.packs import verify_pack

    for key in report.quarantined:
        assert (store_path / "quarantine" / key).exists()
        # Gone, or back under its own (content) name with the content that name promises.
        if key.endswith(".pack") and (store_path / key).exists():
            verify_pack((store_path / key).read_bytes(), Path(key).stem)


def test_repair_reports_what_the_other_store_lacks(damaged: tuple[Path, Path, dict[str, dict[str, str]]], tmp_path: Path) -> None:
    from objstore.maintenance.repair import repair_from

    store_path, intact, _ = damaged
    flip_chunk_only_in_v0(store_path)
    flip_chunk_only_in_v0(intact)  # the same chunk is damaged there too
    report = repair_from(Store.open_existing(str(store_path)), Store.open_existing(str(intact)))
    assert not report.ok
    assert report.after.damaged_versions == ("e/p/m:v0",)
    assert len(report.unavailable) == 1 and "chunk" in report.unavailable[0]
    # Everything else of the damaged pack was saved into a new pack.
    assert report.repacked_chunks > 0
    api = objstore.Api(store=str(store_path), entity="e", project="p")
    api.artifact("e/p/m:v1").download(tmp_path / "v1")
    with pytest.raises((CorruptObject, NotFound)):  # its one bad copy is in quarantine now
        api.artifact("e/p/m:v0").download(tmp_path / "v0")


def test_cli_fsck_repair_from(damaged: tuple[Path, Path, dict[str, dict[str, str]]]) -> None:
    import subprocess
    import sys

    store_path, intact, _ = damaged
    flip_shared_chunk(store_path)
    objstore_cmd = [str(Path(sys.executable).parent / "objstore")]
    first = subprocess.run([*objstore_cmd, "--store", str(store_path), "fsck"], capture_output=True, text=True)
    assert first.returncode == 3 and "e/p/m:v0" in first.stdout and "e/p/other:v0" not in first.stdout
    fixed = subprocess.run(
        [*objstore_cmd, "--store", str(store_path), "fsck", "--repair-from", str(intact)], capture_output=True, text=True
    )
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert "quarantined: packs/" in fixed.stdout and "ok: no damage found" in fixed.stdout
    bad = subprocess.run([*objstore_cmd, "--store", str(store_path), "fsck", "--repair-from", "nosuch"], capture_output=True, text=True)
    assert bad.returncode == 1 and "Traceback" not in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
