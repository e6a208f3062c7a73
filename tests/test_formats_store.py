"""Issue 16's store-level targets for torch.save checkpoints and .npz archives, and what
every format gets from segmentation: a tensor diff by the format's own names with each
changed tensor's relative L2 change, lazy get_tensor, hostile files logged plainly."""

from __future__ import annotations

import io
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli
from format_targets import CHANGED, Tensors, assert_targets, measure, small_model
from modelgen import fine_tune

import objstore
from objstore.api.diff import diff_versions

torch = pytest.importorskip("torch")

_TORCH_DTYPES = {"F32": torch.float32, "F16": torch.float16}
_NP_DTYPES = {"F32": np.float32, "F16": np.float16}


def write_pt(path: Path, tensors: Tensors, extra: int) -> Path:
    """A state dict saved by torch.save; ``extra`` bytes as a tensor added first (every storage key then moves)."""
    sd = {"extra": torch.ones(extra, dtype=torch.uint8)} if extra else {}
    for name, (dtype, shape, raw) in tensors.items():
        sd[name] = torch.frombuffer(bytearray(raw), dtype=_TORCH_DTYPES[dtype]).reshape(shape)
    torch.save(sd, path)
    return path


def write_npz(path: Path, tensors: Tensors, extra: int) -> Path:
    """np.savez of the tensors; ``extra`` bytes as a member stored first."""
    arrays = {"extra": np.ones(extra, np.uint8)} if extra else {}
    arrays.update({name: np.frombuffer(raw, _NP_DTYPES[dtype]).reshape(shape) for name, (dtype, shape, raw) in tensors.items()})
    np.savez(path, **arrays)  # type: ignore[arg-type]
    return path


WRITERS = {".pt": write_pt, ".npz": write_npz}


@pytest.mark.parametrize("suffix", list(WRITERS))
def test_store_targets(tmp_path: Path, suffix: str) -> None:
    assert_targets(measure(tmp_path, WRITERS[suffix], suffix))


@pytest.mark.parametrize("suffix", list(WRITERS))
def test_diff_names_exactly_the_changed_tensors_with_their_l2_change(tmp_path: Path, suffix: str) -> None:
    base = small_model()
    tuned = fine_tune(base, CHANGED, seed=2)
    nudged = dict(tuned)
    name, (dtype, shape, raw) = "embed.weight", base["embed.weight"]
    values = np.frombuffer(raw, np.float32)
    nudged[name] = (dtype, shape, (values * np.float32(1.01)).astype(np.float32).tobytes())
    with objstore.init(project="p", entity="e", store=tmp_path / "s") as run:
        v0 = run.log_model(str(WRITERS[suffix](tmp_path / f"m{suffix}", base, 0)), name="m")
        v1 = run.log_model(str(WRITERS[suffix](tmp_path / f"m{suffix}", nudged, 0)), name="m")
    store = v0._logged()[0]
    (change,) = diff_versions(store, v0._logged()[1], v1._logged()[1]).files
    got = {t.name: t for t in change.tensors or ()}
    assert sorted(got) == sorted([*CHANGED, name])
    assert {t.change for t in got.values()} == {"values"}
    assert got[name].relative_l2 == pytest.approx(0.01, rel=1e-3)  # every value moved by 1%
    for n in CHANGED:  # replaced by fresh weights of the same scale: about sqrt(2)
        a = np.frombuffer(base[n][2], np.float16).astype(np.float64)
        b = np.frombuffer(tuned[n][2], np.float16).astype(np.float64)
        assert got[n].relative_l2 == pytest.approx(np.linalg.norm(b - a) / np.linalg.norm(a), rel=1e-9)
    assert change.to_dict()["tensors"][0]["relative_l2"] == got[sorted(got)[0]].relative_l2  # type: ignore[index]
    if suffix == ".pt":  # the CLI's line, once (a subprocess costs seconds under load)
        text = run_cli(tmp_path / "s", "diff", "e/p/m:v0", "e/p/m:v1").out
        assert f"tensor {name}: values (F32 [1024, 384], relative L2 change 0.01)" in text


@pytest.mark.parametrize("suffix", list(WRITERS))
def test_get_tensor_reads_each_format_lazily(tmp_path: Path, suffix: str) -> None:
    base = small_model()
    with objstore.init(project="p", entity="e", store=tmp_path / "s") as run:
        version = run.log_model(str(WRITERS[suffix](tmp_path / f"m{suffix}", base, 0)), name="m")
    with version.safe_open(f"m{suffix}") as f:
        assert f.keys() == sorted(base)
        for name, (dtype, shape, raw) in base.items():
            t = f.get_tensor(name)
            assert (t.dtype, t.shape, t.tobytes()) == (np.dtype(_NP_DTYPES[dtype]), shape, raw)
        rows = f.get_slice("embed.weight")[10:12]
        assert rows.tobytes() == np.frombuffer(base["embed.weight"][2], np.float32).reshape(1024, 384)[10:12].tobytes()


class _System:
    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os
        return os.system, (self.command,)


def test_hostile_checkpoints_are_logged_plainly_never_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    good = io.BytesIO()
    torch.save({"w": torch.randn(64)}, good)
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w", zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickle.dumps({"w": _System(f"touch {marker}")}, protocol=2))
        z.writestr("archive/data/0", b"\0" * 256)
    files = {"evil.pt": evil.getvalue(), "truncated.pt": good.getvalue()[:-100],
             "lying.npy": b"\x93NUMPY\x01\x00\x40\x00{'descr': '<f4', 'fortran_order': False, 'shape': (99999,)}   \n"}
    model = tmp_path / "model"
    model.mkdir()
    for name, data in files.items():
        (model / name).write_bytes(data)
    with objstore.init(project="p", entity="e", store=tmp_path / "s") as run:
        version = run.log_model(str(model), name="m")
    assert not marker.exists()
    out = tmp_path / "out"
    version.download(root=out)
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == files
