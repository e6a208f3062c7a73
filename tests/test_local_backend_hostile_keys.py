"""A key of a local store that is not a regular file (a symlink, a directory) is hostile.

Readers already refuse one (CorruptObject: "not a regular file"). A create-only
write must not take it for the value being there: it used to, so a push onto a
store whose ``packs/<name>.pack`` was a symlink reported success for a pack the
destination did not hold. It refuses instead, with the same one-line error, and
leaves the key as it found it for fsck to report (replacing it would hide the
tampering; the store's write path never makes anything but regular files).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from transfer_support import log, make_models

import objstore
from objstore.errors import CorruptObject
from objstore.model.store import Store
from objstore.storage.backend import LocalBackend
from objstore.transfer.remotes import remote_add


def _hostile(root: Path, key: str, kind: str, outside: Path) -> Path:
    path = root / key
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "symlink":
        outside.write_bytes(b"not this store's bytes")
        path.symlink_to(outside)
    elif kind == "dangling symlink":
        path.symlink_to(outside / "nowhere")
    else:
        path.mkdir()
    return path


@pytest.mark.parametrize("kind", ["symlink", "dangling symlink", "directory"])
def test_create_only_writes_refuse_a_key_that_is_not_a_regular_file(tmp_path: Path, kind: str) -> None:
    backend = LocalBackend(tmp_path / "store")
    for key, write in (("packs/a.idx", lambda k: backend.put_if_absent(k, b"x")),
                       ("packs/a.pack", lambda k: backend.put_file_if_absent(k, _temp(backend, b"x")))):
        path = _hostile(tmp_path / "store", key, kind, tmp_path / f"outside-{key.replace('/', '-')}")
        with pytest.raises(CorruptObject, match=rf"{key} .* not a regular file"):
            write(key)
        assert path.is_symlink() or path.is_dir()  # left for fsck, not replaced
    assert backend.put_if_absent("packs/b.idx", b"x") and not backend.put_if_absent("packs/b.idx", b"x")


def _temp(backend: LocalBackend, data: bytes) -> Path:
    path = backend.new_temp_path()
    path.write_bytes(data)
    return path


def test_a_push_onto_a_symlinked_pack_fails_instead_of_reporting_success(tmp_path: Path) -> None:
    base, _ = make_models(tmp_path / "models")
    local = Store.open(tmp_path / "local")
    log(local, base)
    Store.open(tmp_path / "remote").close()
    for pack in (tmp_path / "local" / "packs").glob("*.pack"):
        _hostile(tmp_path / "remote", f"packs/{pack.name}", "symlink", tmp_path / f"outside-{pack.name}")
    remote_add(local, "origin", str(tmp_path / "remote"))
    with pytest.raises(CorruptObject, match="not a regular file") as refused:
        objstore.push(local)
    assert "is a symlink" in str(refused.value) and "\n" not in str(refused.value)
    assert not list((tmp_path / "remote").glob("refs/**/latest"))  # no ref names what is not there
