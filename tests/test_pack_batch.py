"""Batched pack writes (``add_encoded_many``, ``PackBuilder.add_many``) give exactly the
packs that adding the same records one at a time gives: same bytes, same names,
each pack closed after the same record, whatever the batch sizes."""

from __future__ import annotations

import io
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from objstore.storage import odb as odb_module
from objstore.storage.backend import LocalBackend
from objstore.storage.ids import Kind, ObjectId, hash_bytes
from objstore.storage.odb import ObjectDatabase
from objstore.storage.packs import PackBuilder

Record = tuple[ObjectId, int, int, bytes]


def _records(sizes: list[int], repeat_every: int) -> list[Record]:
    """Distinct records, except that every ``repeat_every``-th one repeats an earlier
    one (each id goes into a pack once)."""
    out: list[Record] = []
    for i, n in enumerate(sizes):
        if repeat_every and i and i % repeat_every == 0:
            out.append(out[i // 2])
            continue
        payload = bytes([i % 251]) * n
        out.append((hash_bytes(Kind.CHUNK, payload + i.to_bytes(4, "little")), 0, n, payload))
    return out


def _batches(records: list[Record], cuts: list[int]) -> list[list[Record]]:
    bounds = sorted({0, len(records), *(c % (len(records) + 1) for c in cuts)})
    return [records[a:b] for a, b in zip(bounds, bounds[1:])]


def _packs(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((root / "packs").rglob("*")) if p.is_file()}


@settings(max_examples=15, deadline=None)
@given(sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=40), repeat_every=st.integers(0, 7),
       cuts=st.lists(st.integers(0, 40), max_size=6))
def test_batched_adds_write_the_packs_single_adds_write(tmp_path_factory: pytest.TempPathFactory, sizes: list[int],
                                                         repeat_every: int, cuts: list[int]) -> None:
    records = _records(sizes, repeat_every)
    one, many = tmp_path_factory.mktemp("one"), tmp_path_factory.mktemp("many")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(odb_module, "PACK_TARGET", 8000)  # several packs from a few KB of records
        single = ObjectDatabase(LocalBackend(one))
        added_single = sum(single.add_encoded(*r) for r in records)
        single.flush()
        batched = ObjectDatabase(LocalBackend(many))
        added_batched = sum(batched.add_encoded_many(b) for b in _batches(records, cuts))
        batched.flush()
    assert added_batched == added_single
    assert (batched.new_chunks, batched.new_bytes) == (single.new_chunks, single.new_bytes)
    assert _packs(many) == _packs(one)
    assert len(_packs(one)) >= 2 or sum(sizes) < 8000


def test_builder_on_an_unbuffered_file_writes_what_it_writes_to_memory(tmp_path: Path) -> None:
    records = _records([5, 0, 70_000, 3, 70_000, 12], repeat_every=4)  # records[4] repeats records[2]
    memory = io.BytesIO()
    in_memory = PackBuilder(memory)
    for r in records:
        in_memory.add(*r)
    with open(tmp_path / "p", "wb", buffering=0) as f:
        on_disk = PackBuilder(f)
        assert on_disk.add_many(records[:3]) == (3, 3)
        assert on_disk.add_many(records, 3) == (len(records), 2)
        name = on_disk.finish()
    assert name == in_memory.finish()
    assert (tmp_path / "p").read_bytes() == memory.getvalue()


def _held_writes(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, threading.Event]:
    """Make every pack write wait for ``release`` (after saying ``writing``): a disk
    that takes its time, with the real write still done afterwards."""
    writing, release = threading.Event(), threading.Event()
    real = PackBuilder.write_staged

    def slow(self: PackBuilder, pieces: list[bytes | memoryview]) -> None:
        if len(pieces) > 1:  # records (head, payload, ...), not the pack's header
            writing.set()
            assert release.wait(30), "the test never released the write"
        real(self, pieces)

    monkeypatch.setattr(PackBuilder, "write_staged", slow)
    return writing, release


def test_lookups_do_not_wait_for_a_pack_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The chunking threads ask has_chunks for every block while the writer appends:
    # a write (disk, pack checksum) under the database's lock stalled them all, so
    # cold ingest kept about one core busy of two.
    db = ObjectDatabase(LocalBackend(tmp_path / "store"))
    (rec,) = _records([5000], 0)
    other = hash_bytes(Kind.CHUNK, b"not stored")
    writing, release = _held_writes(monkeypatch)
    writer = threading.Thread(target=db.add_encoded_many, args=([rec],))
    writer.start()
    assert writing.wait(30)
    answers: list[list[bool]] = []
    looker = threading.Thread(target=lambda: answers.append(db.has_chunks([rec[0], other])))
    looker.start()
    looker.join(30)
    done_while_writing = not looker.is_alive()
    release.set()
    writer.join()
    looker.join()
    assert done_while_writing, "has_chunks waited for the pack write"
    assert answers == [[True, False]]  # counted in the open pack from the moment it is staged


def test_flush_waits_for_a_write_in_progress(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A flush racing an append must seal the pack only after the append's bytes are
    # written: the pack's index already lists them.
    db = ObjectDatabase(LocalBackend(tmp_path / "store"))
    payload = bytes(range(256)) * 20
    rec = (hash_bytes(Kind.CHUNK, payload), 0, len(payload), payload)
    writing, release = _held_writes(monkeypatch)
    writer = threading.Thread(target=db.add_encoded_many, args=([rec],))
    writer.start()
    assert writing.wait(30)
    flusher = threading.Thread(target=db.flush)
    flusher.start()
    release.set()
    writer.join()
    flusher.join()
    assert db.get_chunk(rec[0]) == rec[3]
    assert db.packs_stored == 1
