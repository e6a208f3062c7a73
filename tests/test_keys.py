"""The key layout has one owner (objstore.storage.keys).

- every builder's key parses back to what built it;
- no other module of the library or the CLI spells a namespace prefix or
  slices ``refs/`` keys by hand (a copy of the layout drifts);
- refs that repair replaces and that deletion removes leave reflog entries,
  like every other ref move.
"""

from __future__ import annotations

import re
from pathlib import Path

from objstore.model.refs import RefStore
from objstore.storage import keys
from objstore.storage.backend import open_backend
from objstore.storage.ids import Kind, ObjectId, hash_bytes

ROOT = Path(__file__).resolve().parent.parent


def test_builders_and_parsers_round_trip() -> None:
    oid = hash_bytes(Kind.CHUNK, b"x")
    assert keys.object_hex_of(keys.object_key(oid)) == oid.hex
    assert keys.object_key(oid).startswith(keys.object_prefix(oid.hex[:5]))
    assert keys.pack_name_of(keys.pack_key("abc")) == "abc"
    assert keys.idx_name_of(keys.idx_key("abc")) == "abc"
    assert keys.pack_name_of(keys.idx_key("abc")) is None and keys.idx_name_of(keys.pack_key("abc")) is None
    assert keys.marked_pack_name_of(keys.marked_pack_key("abc")) == "abc"
    assert keys.index_file_name_of(keys.index_file_key("abc")) == "abc"
    assert keys.idx_name_of(keys.index_file_key("abc")) is None and keys.pack_name_of(keys.index_file_key("abc")) is None
    assert keys.index_file_name_of(keys.idx_key("abc")) is None
    assert keys.remote_name_of_config(keys.remote_config_key("origin")) == "origin"
    assert keys.remote_name_of_config(keys.remote_prefix("origin") + "refs/a/b/c/versions/v1") is None
    ref = keys.version_ref("e", "p", "n", 3)
    assert keys.tracked_ref_of(keys.remote_prefix("origin") + ref) == ref
    parsed = keys.parse_ref_key(ref)
    assert parsed is not None and (parsed.kind, parsed.entity, parsed.project, parsed.name, parsed.tail) == ("version", "e", "p", "n", "v3")
    assert keys.ref_label(parsed) == "e/p/n:v3" and keys.ref_display(ref) == "e/p/n/versions/v3"
    run = keys.parse_ref_key(keys.run_ref("e", "p", "r1"))
    assert run is not None and (run.kind, run.tail, run.name) == ("run", "r1", "")
    assert keys.version_ref("e", "p", "n", 1).startswith(keys.refs_prefix("e", "p"))
    assert keys.refs_prefix() == keys.REFS and keys.refs_prefix(None, "p") == keys.REFS
    assert keys.reflog_key(ref, "1").startswith(keys.reflog_prefix(ref))
    assert keys.reflog_prefix(ref).startswith(keys.reflogs_under(keys.collection_prefix("e", "p", "n")))
    assert not keys.reflog_prefix(keys.version_ref("e", "p", "n2", 1)).startswith(keys.reflogs_under(keys.collection_prefix("e", "p", "n")))


_PREFIX_LITERAL = re.compile(r"""["'](packs|objects|remotes|gc|tmp|refs|logs|quarantine)/["'{]""")
_HAND_PARSE = re.compile(r"len\((REFS|PACKS|OBJECTS|REMOTES|LOGS|GC_MARKED|TRACKING)\)")


def test_only_the_key_layout_module_spells_the_layout() -> None:
    offenders = []
    for path in sorted([*(ROOT / "objstore").rglob("*.py"), *(ROOT / "cli").rglob("*.py")]):
        if path == ROOT / "objstore" / "storage" / "keys.py":
            continue
        for no, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if _PREFIX_LITERAL.search(code) or _HAND_PARSE.search(code):
                offenders.append(f"{path.relative_to(ROOT)}:{no}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_replacing_garbage_and_removing_a_ref_are_logged(tmp_path: Path) -> None:
    refs = RefStore(open_backend(str(tmp_path)), who="t")
    ref = keys.version_ref("e", "p", "n", 1)
    refs.backend.put(ref, b"garbage\n")
    oid = hash_bytes(Kind.VERSION, b"v")
    refs.replace_garbage(ref, b"garbage\n", oid, "repaired")
    assert refs.read(ref) == oid
    assert [(e.old, e.new, e.why) for e in refs.reflog(ref)] == [(None, oid, "repaired")]
    refs.remove(ref, "deleted")
    assert refs.read_raw(ref) is None
    assert [(e.old, e.new) for e in refs.reflog(ref)][-1] == (oid, None)
    other = keys.version_ref("e", "p", "n2", 1)
    refs.create(other, ObjectId(oid.raw), "kept")
    assert refs.drop_reflogs(keys.collection_prefix("e", "p", "n")) == 2
    assert refs.reflog(ref) == [] and len(refs.reflog(other)) == 1  # a sibling collection's log is untouched


def test_chunk_verification_and_id_padding_have_one_owner() -> None:
    """Chunks are decoded and checked only by packs.decode_verified, and index ids
    padded only by packs.entry_id (a copy that forgets the padding mishandles ids
    ending in a zero byte)."""
    offenders = []
    for path in sorted([*(ROOT / "objstore").rglob("*.py"), *(ROOT / "cli").rglob("*.py")]):
        if path in (ROOT / "objstore" / "storage" / "packs.py", ROOT / "objstore" / "storage" / "codecs.py"):
            continue
        for no, line in enumerate(path.read_text().splitlines(), 1):
            if "decode_chunk(" in line or "ljust(32" in line or "hash_bytes(Kind.CHUNK, raw" in line:
                offenders.append(f"{path.relative_to(ROOT)}:{no}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_entry_id_keeps_a_trailing_zero_byte() -> None:
    import numpy as np

    from objstore.storage.packs import INDEX_DTYPE, entry_id, index_ids

    raw = bytes(range(1, 32)) + b"\0"
    index = np.zeros(1, dtype=INDEX_DTYPE)
    index["id"][0] = raw
    assert entry_id(index[0]["id"]) == raw and index_ids(index) == [raw]


def test_a_part_whose_percent_escapes_are_no_utf8_is_no_name(tmp_path: Path) -> None:
    """``%E2%80`` decodes to two bytes of a three-byte UTF-8 character: unquote raised
    UnicodeDecodeError, not InvalidName, and a store holding such a ref directory (someone else
    wrote it) made ls, fsck, gc and the ui's store page end in "unexpected UnicodeDecodeError"
    (before the fix). Now it is a part no name encodes to, like any other."""
    import pytest

    from objstore.errors import InvalidName
    with pytest.raises(InvalidName):
        keys.decode_name("%E2%80")
    assert keys.ref_key_parts("refs/e/%E2%80/m/versions/v0") is None

    import subprocess
    import sys

    cli = str(Path(sys.executable).with_name("objstore"))
    store = tmp_path / "s"
    (tmp_path / "f").write_bytes(b"w")
    subprocess.run([cli, "--store", str(store), "init"], check=True, capture_output=True)
    subprocess.run([cli, "--store", str(store), "log-model", str(tmp_path / "f"), "--name", "m", "--project", "p"],
                   check=True, capture_output=True)
    (version,) = store.glob("refs/*/p/m/versions/v0")
    planted = store / "refs" / version.parts[-5] / "%E2%80" / "m" / "versions"
    planted.mkdir(parents=True)
    (planted / "v0").write_bytes(version.read_bytes())
    for command in (["ls"], ["fsck"], ["gc"]):
        done = subprocess.run([cli, "--store", str(store), *command], capture_output=True, text=True)
        assert "unexpected" not in done.stderr and "Traceback" not in done.stderr, (command, done.stderr)
