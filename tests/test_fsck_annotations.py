"""fsck checks annotation keys: a damaged or unparsable state or history entry,
or a key objstore never writes, is reported (kind ``annotation``), never
crashes fsck; readers of a damaged state get a one-line CorruptObject, never a
TypeError. Edited, dropped (empty) and stale states are not damage."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

import objstore
from objstore.maintenance.fsck import fsck
from objstore.model.store import Store
from objstore.storage import keys


@pytest.fixture
def store(tmp_path: Path) -> Path:
    (tmp_path / "f").write_bytes(b"weights")
    with objstore.init(entity="e", project="p", store=tmp_path / "s") as run:
        run.log_model(str(tmp_path / "f"), name="m")
    a = objstore.Api(store=tmp_path / "s").artifact("e/p/m:v0")
    a.tags, a.description = ["x"], "edited"
    a.save()
    c = objstore.Api(store=tmp_path / "s").artifact_collection("model", "e/p/m")
    c.tags = ["c"]
    c.save()
    return tmp_path / "s"


def problems(store: Path) -> list[tuple[str, str, str]]:
    return [(p.kind, p.object_id, p.message) for p in fsck(Store.open_existing(store)).problems]


def state(doc: dict[str, object]) -> bytes:
    data: bytes = msgpack.packb(doc, use_bin_type=True)
    return data


def test_edited_annotations_are_clean(store: Path) -> None:
    assert problems(store) == []


@pytest.mark.parametrize("damage", ["garbage", "wrong kinds", "tags not strings", "bad ttl"])
def test_a_damaged_version_state_is_reported_and_readers_say_so(store: Path, damage: str) -> None:
    s = Store.open_existing(store)
    key = keys.annotation_key("e", "p", "m", 0)
    doc = msgpack.unpackb(s.backend.get(key), raw=False)
    raw = {
        "garbage": b"\xc1\xff not msgpack",
        "wrong kinds": state({**doc, "fields": ["not", "a", "map"]}),
        "tags not strings": state({**doc, "fields": {**doc["fields"], "tags": [1, 2]}}),
        "bad ttl": state({**doc, "fields": {**doc["fields"], "ttl": -5}}),
    }[damage]
    s.backend.put(key, raw)
    found = problems(store)
    assert [(k, o) for k, o, _ in found] == [("annotation", key)], found
    with pytest.raises(objstore.errors.CorruptObject, match="delete the key"):
        objstore.Api(store=store).artifact("e/p/m:v0").tags  # noqa: B018
    done = subprocess.run([str(Path(sys.executable).with_name("objstore")), "--store", str(store), "fsck"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 3 and "Traceback" not in done.stderr + done.stdout


def test_damaged_history_entries_and_stray_keys_are_reported(store: Path) -> None:
    s = Store.open_existing(store)
    log_prefix = keys.annotation_log_prefix("e", "p", "m", 0)
    entry = next(iter(s.backend.iter_prefix(log_prefix))).key
    s.backend.put(entry, b"\x00\x01garbage")
    renumbered = entry.replace("000000000001-", "000000000007-")
    s.backend.put(renumbered, s.backend.get(next(iter(s.backend.iter_prefix(
        keys.collection_annotation_log_prefix("e", "p", "m")))).key))  # revision 1's entry under 7's key
    stray = keys.annotations_prefix("e", "p", "m") + "v0/notes.txt"
    s.backend.put(stray, b"hello")
    coll_state = keys.collection_annotation_key("e", "p", "m")
    s.backend.put(coll_state, state({"format": 1, "id": 5, "revision": 1, "fields": {}}))
    found = {o: m for _, o, m in problems(store)}
    assert set(found) == {entry, renumbered, stray, coll_state}, found
    assert "damaged" in found[entry] and "revision 1, not 7" in found[renumbered]
    # The history shows what is readable; the damaged entry hides no other.
    assert objstore.Api(store=store).artifact("e/p/m:v0").tags == ["x"]


def test_dropped_and_stale_states_are_not_damage(store: Path, tmp_path: Path) -> None:
    objstore.Api(store=store).artifact("e/p/m:v0").delete(delete_aliases=True)
    s = Store.open_existing(store)
    s.backend.put(keys.annotation_key("e", "p", "m", 0), b"")  # a dropped state left by an older writer
    assert problems(store) == []



def test_keys_numbered_with_digits_int_refuses_are_reported_not_a_crash(store: Path) -> None:
    """``①`` and ``²`` are digits to str.isdigit() but int() refuses them: a history entry
    ``①-owner`` or a state under ``v²`` (a store someone else wrote) made fsck stop with
    "unexpected ValueError" (before the fix). Now each is a key objstore never writes."""
    s = Store.open_existing(store)
    log_prefix = keys.annotation_log_prefix("e", "p", "m", 0)
    entry = next(iter(s.backend.iter_prefix(log_prefix))).key
    odd_entry = entry.rsplit("/", 1)[0] + "/\u2460-" + entry.rsplit("-", 1)[1]
    s.backend.put(odd_entry, s.backend.get(entry))
    version_state = keys.annotations_prefix("e", "p", "m") + "v0/state"
    odd_state = version_state.replace("/v0/", "/v\u00b2/")
    s.backend.put(odd_state, s.backend.get(version_state))
    found = {o: m for _, o, m in problems(store)}
    assert odd_entry in found and "not a key objstore writes" in found[odd_entry], found
    assert odd_state in found, found
    done = subprocess.run([str(Path(sys.executable).with_name("objstore")), "--store", str(store), "fsck"], capture_output=True, text=True)
    assert "unexpected" not in done.stderr and "Traceback" not in done.stderr, done.stderr
