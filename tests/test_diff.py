"""diff pairs a one-file model saved under a new name with its predecessor."""

from __future__ import annotations

from pathlib import Path

from modelgen import fine_tune, transformer, write_safetensors

import objstore
from objstore.api.diff import diff_versions


def test_renamed_model_file_is_compared_tensor_by_tensor(tmp_path: Path) -> None:
    base = transformer(seed=3, layers=2, hidden=128, vocab=256)
    changed = ["layers.1.attn.q.weight", "layers.1.attn.v.weight"]
    write_safetensors(tmp_path / "base.safetensors", base)
    write_safetensors(tmp_path / "tuned.safetensors", fine_tune(base, changed, seed=4))
    (tmp_path / "copy").mkdir()
    write_safetensors(tmp_path / "copy" / "renamed.safetensors", base)
    with objstore.init(project="p", entity="e", store=tmp_path / "s") as run:
        v0 = run.log_model(str(tmp_path / "base.safetensors"), name="m")
        v1 = run.log_model(str(tmp_path / "tuned.safetensors"), name="m")
        v2 = run.log_model(str(tmp_path / "copy" / "renamed.safetensors"), name="m")
    store = v0._logged()[0]
    d = diff_versions(store, v0._logged()[1], v1._logged()[1])
    (change,) = d.files
    assert (change.status, change.old_path, change.path) == ("changed", "base.safetensors", "tuned.safetensors")
    assert sorted(t.name for t in change.tensors or ()) == changed
    assert {t.change for t in change.tensors or ()} == {"values"}
    assert d.bytes_new == sum(len(base[n][2]) for n in changed)
    (same,) = diff_versions(store, v0._logged()[1], v2._logged()[1]).files
    assert (same.status, same.old_path, same.path) == ("renamed", "base.safetensors", "renamed.safetensors")
