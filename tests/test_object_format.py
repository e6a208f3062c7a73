"""Metadata objects as stored: bodies written by earlier code decode and re-encode
byte for byte, so their ids never change and old stores stay readable.

The bodies below were written by objstore before run inputs and outputs became
``ObjectId`` in memory and before a link's display name came from its target
version. Changing how an object is held in memory must never change its bytes.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import msgpack
import pytest

import objstore
from objstore.errors import CorruptObject
from objstore.model.names import REGISTRY_PROJECT, CollectionPath
from objstore.model.store import Store
from objstore.storage.ids import Kind, ObjectId, hash_bytes
from objstore.storage.keys import version_ref
from objstore.storage.objects import Link, RunRecord, Version, decode, encode

A = ObjectId.from_hex("15eb0bffa753f32acdf2f50ee8271008e67f2cefbb026852658d9fb13c4a063f")
B = ObjectId.from_hex("a4270201a6bcf26871e634423abc5c9f27cbe7be9bca2eebe9a82d9b3efdd102")

# kind: (id, body), as written by the earlier code
GOLDEN = {
    "file": ("0559b5e260d9af91aecebc5a6e13c8a978320309634011be2107c5813d916808",
             "84a17601a16ba466696c65a473697a650aa66368756e6b73c4285acff8b2b29cb55bf5d5052e688528f8c1bb66598881f0f9c8"
             "9de66285769f370a00000000000000"),
    "tree": ("3eaf235e61c9cd2a8f5aba88add99140a7fb6fd9f97b808979ba5f2d9ca1fcb5",
             "83a17601a16ba474726565a7656e74726965739297a26c6ea773796d6c696e6bc000cd01ffa56d2e62696ec097a56d2e62696ea4"
             "66696c65c4200559b5e260d9af91aecebc5a6e13c8a978320309634011be2107c5813d9168080acd01a4c0c0"),
    "version": ("f7eed8e2fe8aad353dacd38725cfd147314a1688da78278b809fd6968739ee42",
                "8fa17601a16ba776657273696f6ea474726565c420c6c88a2832e5c25adb484ffeda2161ef3206af104481bd63b29165e761d8"
                "821ca6706172656e74c42015eb0bffa753f32acdf2f50ee8271008e67f2cefbb026852658d9fb13c4a063fa474797065a56d6f"
                "64656ca6656e74697479a165a770726f6a656374a170a46e616d65a16da5696e64657801a473697a650aa96e65775f62797465"
                "730aab6465736372697074696f6ea464657363a86d6574616461746181a16b9201a178aa637265617465645f6174cb41d954fc"
                "40000000a372756ea6652f702f7231"),
    "link": ("50ab58c6fe18ceb7e474f213f075f8399ab45a2616f76f26dde840eea395dce8",
             "88a17601a16ba46c696e6ba87265676973747279b2652f6d6f64656c2d72656769737472792f6da5696e64657800a6746172676574"
             "c42015eb0bffa753f32acdf2f50ee8271008e67f2cefbb026852658d9fb13c4a063fab7461726765745f6e616d65a8652f702f6d"
             "3a7630aa637265617465645f6174cb41d954fc72000000a372756ea6652f702f7231"),
    "run": ("f6e08ab43deb3530ebd6a14e7215d9a096dbf8de4c762a7feab515890d5de11f",
            "8da17601a16ba372756ea26964a27231a6656e74697479a165a770726f6a656374a170a46e616d65a5747261696ea6636f6e6669"
            "6781a26c72cb3fb999999999999aa86a6f625f74797065a5747261696eaa737461727465645f6174cb41d954fc40200000ab6669"
            "6e69736865645f6174cb41d954fc59100000a57374617465a866696e6973686564a6696e7075747391d940313565623062666661"
            "37353366333261636466326635306565383237313030386536376632636566626230323638353236353864396662313363346130"
            "363366a76f75747075747392d9406134323730323031613662636632363837316536333434323361626335633966323763626537"
            "6265396263613265656265396138326439623365666464313032d940313565623062666661373533663332616364663266353065"
            "65383237313030386536376632636566626230323638353236353864396662313363346130363366"),
}


@pytest.mark.parametrize("kind", sorted(GOLDEN))
def test_old_objects_decode_and_re_encode_byte_identically(kind: str) -> None:
    oid_hex, body_hex = GOLDEN[kind]
    oid, body = ObjectId.from_hex(oid_hex), bytes.fromhex(body_hex)
    obj = decode(body, oid)  # checks the id too
    assert encode(obj) == (oid, body)


def test_run_ids_are_object_ids_in_memory_and_hex_when_stored() -> None:
    oid_hex, body_hex = GOLDEN["run"]
    run = decode(bytes.fromhex(body_hex), ObjectId.from_hex(oid_hex))
    assert isinstance(run, RunRecord)
    assert run.inputs == (A,) and run.outputs == (B, A)
    stored = msgpack.unpackb(encode(run)[1], raw=False)
    assert stored["inputs"] == [A.hex] and stored["outputs"] == [B.hex, A.hex]


def _version(index: int) -> Version:
    return Version(B, None, "model", "e", "p", "m", index, 1, 1, None, {}, 1700000000.0, None)


def test_a_new_link_is_written_as_before_with_its_targets_name() -> None:
    """Readers before this change require ``target_name`` and compare it with the
    target version's name, so a new link still stores it, derived from the target."""
    link = Link.to_version("e/model-registry/m", 0, A, _version(0), 1700000200.0, "e/p/r1")
    assert encode(link) == (ObjectId.from_hex(GOLDEN["link"][0]), bytes.fromhex(GOLDEN["link"][1]))


def test_a_link_without_the_name_field_decodes_and_keeps_its_bytes() -> None:
    d = msgpack.unpackb(bytes.fromhex(GOLDEN["link"][1]), raw=False)
    del d["target_name"]
    body = msgpack.packb(d, use_bin_type=True)
    link = decode(body, hash_bytes(Kind.LINK, body))
    assert isinstance(link, Link) and link.target == A and link.written_name is None
    assert encode(link)[1] == body


def test_a_links_name_comes_from_its_target_not_the_stored_field(tmp_path: Path) -> None:
    """A link whose stored name disagrees with its target (a store edited, or
    renumbered by an older pull) still resolves, named by the version it links."""
    with objstore.init(project="p", entity="e", store=str(tmp_path / "s")) as run:
        (tmp_path / "m.bin").write_bytes(b"weights")
        run.link_model(str(tmp_path / "m.bin"), registered_model_name="reg", name="m")
    store = Store.open(tmp_path / "s")
    registry = CollectionPath("e", REGISTRY_PROJECT, "reg")
    ref = version_ref(registry.entity, registry.project, registry.name, 0)
    link = store.odb.get_object(store.refs.read(ref))  # type: ignore[arg-type]
    assert isinstance(link, Link) and link.written_name == "e/p/m:v0"
    edited = replace(link, written_name="x/y/z:v9")
    store.refs.set(ref, store.odb.put_object(edited), "edited")
    store.close()
    art = objstore.Api(store=str(tmp_path / "s")).artifact("e/model-registry/reg:v0")
    assert art.source_qualified_name == "e/p/m:v0"


@pytest.mark.parametrize("bad", ["not hex", A.hex.upper(), A.hex[:-2], 7])
def test_a_run_naming_a_non_id_is_corrupt(bad: object) -> None:
    """Only the code's own lower-case hex ids are accepted: anything else could not
    re-encode to the bytes that were hashed."""
    d = msgpack.unpackb(bytes.fromhex(GOLDEN["run"][1]), raw=False)
    d["inputs"] = [bad]
    body = msgpack.packb(d, use_bin_type=True)
    with pytest.raises(CorruptObject):
        decode(body, hash_bytes(Kind.RUN, body))


# A run record with the optional fields added for W&B's init (tags, notes, group,
# summary), frozen here as the old kinds are above.
RUN_WITH_ANNOTATIONS = (
    "8bd3c5d2b8bc0e6689bb0f569d5ca67459e27b8d334ccaa9dcf0abd44386c3c6",
    "de0011a17601a16ba372756ea26964a27232a6656e74697479a165a770726f6a656374a170a46e616d65a5747261696ea6636f6e66696781"
    "a26c72cb3fb999999999999aa86a6f625f74797065a5747261696eaa737461727465645f6174cb41d954fc40200000ab66696e6973686564"
    "5f6174cb41d954fc59100000a57374617465a866696e6973686564a6696e7075747391d94031356562306266666137353366333261636466"
    "326635306565383237313030386536376632636566626230323638353236353864396662313363346130363366a76f75747075747390a474"
    "61677392a8626173656c696e65a178a56e6f746573a9666972737420747279a567726f7570a773776565702d31a773756d6d61727982a46c"
    "6f7373cb3fd0000000000000a361636381a4746f7031cb3feccccccccccccd",
)


def test_a_run_without_the_optional_fields_is_stored_as_before() -> None:
    old = decode(bytes.fromhex(GOLDEN["run"][1]), ObjectId.from_hex(GOLDEN["run"][0]))
    assert isinstance(old, RunRecord)
    assert (old.tags, old.notes, old.group, old.summary) == ((), None, None, {})
    assert set(msgpack.unpackb(encode(old)[1], raw=False)) == set(msgpack.unpackb(bytes.fromhex(GOLDEN["run"][1]), raw=False))


def test_a_run_with_tags_notes_group_summary_decodes_and_re_encodes_byte_identically() -> None:
    oid, body = ObjectId.from_hex(RUN_WITH_ANNOTATIONS[0]), bytes.fromhex(RUN_WITH_ANNOTATIONS[1])
    run = decode(body, oid)
    assert isinstance(run, RunRecord)
    assert (run.tags, run.notes, run.group, run.summary) == (("baseline", "x"), "first try", "sweep-1",
                                                              {"loss": 0.25, "acc": {"top1": 0.9}})
    assert encode(run) == (oid, body)
    # the fields readers before them know are all still there, as they were: those readers read the rest
    d = msgpack.unpackb(body, raw=False)
    old_keys = set(msgpack.unpackb(bytes.fromhex(GOLDEN["run"][1]), raw=False))
    assert old_keys <= set(d) and set(d) - old_keys == {"tags", "notes", "group", "summary"}


@pytest.mark.parametrize("field, bad", [("tags", "x"), ("tags", [1]), ("notes", 3), ("group", []), ("summary", [1])])
def test_a_run_with_a_malformed_optional_field_is_corrupt(field: str, bad: object) -> None:
    d = msgpack.unpackb(bytes.fromhex(GOLDEN["run"][1]), raw=False)
    d[field] = bad
    with pytest.raises(CorruptObject, match=field):
        decode(msgpack.packb(d, use_bin_type=True))
