"""Deduplication: a fine-tune costs about its changed tensors, re-logging costs
nothing, and an insertion near the start of a plain file leaves most chunks shared."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from modelgen import fine_tune, store_bytes, transformer, write_safetensors

import objstore
from objstore.files.ingest import chunk_file
from objstore.model.store import Store
from objstore.model.versions import list_versions

MiB = 1024 * 1024
CHANGED = [f"layers.{i}.attn.{p}.weight" for i in (5, 6) for p in ("q", "k", "v", "o")]  # the last two layers


def test_fine_tune_costs_only_its_changed_tensors(tmp_path: Path, capsys) -> None:
    base = transformer(seed=1)
    tuned = fine_tune(base, CHANGED, seed=2)
    base_path = write_safetensors(tmp_path / "base.safetensors", base)
    tuned_path = write_safetensors(tmp_path / "tuned.safetensors", tuned)
    model_size = base_path.stat().st_size
    assert 64 * MiB <= model_size < 65 * MiB
    changed_bytes = sum(len(tuned[name][2]) for name in CHANGED)

    store = tmp_path / "store"
    with objstore.init(project="llm", entity="team", store=store) as run:
        run.log_model(str(base_path), name="llama")
        after_base = store_bytes(store)
        art = run.log_model(str(tuned_path), name="llama")
        after_tuned = store_bytes(store)
    growth = after_tuned - after_base
    with capsys.disabled():
        print(f"\nbase stored {after_base / MiB:.2f} MiB of {model_size / MiB:.2f} MiB; "
              f"fine-tune grew the store by {growth / MiB:.2f} MiB for {changed_bytes / MiB:.2f} MiB of changed tensors")
    assert art.version == "v1"
    assert growth <= changed_bytes + 0.02 * model_size
    assert art.new_bytes <= changed_bytes

    # Logging either again adds no chunk and no version.
    opened = Store.open(store)
    packs_before = sorted(opened.odb.iter_pack_names())
    with objstore.init(project="llm", entity="team", store=store) as run:
        again = run.log_model(str(tuned_path), name="llama")
        again_base = run.log_model(str(base_path), name="llama")
    assert (again.version, again_base.version) == ("v1", "v0")
    assert sorted(opened.odb.iter_pack_names()) == packs_before
    assert [i for i, _ in list_versions(opened, again._logged()[1].collection)] == [0, 1]
    assert "already holds this content" in capsys.readouterr().err


def test_insertion_near_the_start_reuses_most_chunks(tmp_path: Path) -> None:
    rng = np.random.default_rng(7)
    data = rng.integers(0, 256, size=64 * MiB, dtype=np.uint8).tobytes()
    original = tmp_path / "model.bin"
    original.write_bytes(data)
    shifted = tmp_path / "model-shifted.bin"
    shifted.write_bytes(data[:4096] + rng.integers(0, 256, size=100, dtype=np.uint8).tobytes() + data[4096:])

    store = Store.open(tmp_path / "store")
    first = chunk_file(original, store.chunker, None)
    second = chunk_file(shifted, store.chunker, None)
    old_ids = {c for c, _ in first.chunks}
    reused = sum(1 for c, _ in second.chunks if c in old_ids)
    share = reused / len(second.chunks)
    print(f"\n{reused} of {len(second.chunks)} chunks reused ({share:.1%}) after a 100-byte insertion")
    assert share >= 0.95
    assert first.size == len(data) and second.size == len(data) + 100
