"""A writer that has not read every ``.idx`` yet still stores no chunk twice
when it logs more than one chunk's worth (issue 13): each session of a
fine-tune sequence stores only the tensors it changed, the header chunk it
shares with the session before included. Counted over the index of every pack
that stays: a pack the writers' automatic repack copied is marked for gc's
second phase and its copy holds the same chunks until gc deletes it (two-phase,
:mod:`objstore.storage.repack`), which is not a chunk stored twice."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import objstore
from objstore.model.store import Store
from objstore.storage.chunkindex import list_indexes, marked_packs, read_all_indexes
from objstore.testing.tensorfiles import fine_tune, transformer, write_safetensors


def test_a_fine_tune_sequence_stores_no_chunk_twice(tmp_path: Path) -> None:
    store = tmp_path / "store"
    base = transformer(1, layers=2, hidden=256, vocab=512)
    names = [n for n in base if n != "embed.weight"]
    tensors = base
    for i in range(20):  # a session each (a Store of its own); a compaction runs on the way
        tensors = fine_tune(tensors, [names[i % len(names)]], seed=100 + i)
        (tmp_path / f"s{i}").mkdir()
        path = write_safetensors(tmp_path / f"s{i}" / "model.safetensors", tensors)
        with Store.open(store) as s, objstore.init(entity="e", project="p", store=s) as run:
            run.log_model(str(path), name="model")
    backend = Store.open_existing(store).backend
    marked = marked_packs(backend)
    indexes = {n: index for n, index in read_all_indexes(backend, list_indexes(backend)).items() if n not in marked}
    counts = Counter(bytes(i) for index in indexes.values() for i in index["id"])
    twice = {k.hex()[:16]: n for k, n in counts.items() if n > 1}
    assert not twice, f"{len(twice)} chunks stored more than once over {len(indexes)} packs: {twice}"
