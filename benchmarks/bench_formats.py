"""Issue 16's benchmark rows: the same model in every tensor format objstore parses, beside safetensors.

One transformer-shaped model (F32 embedding and norms, F16 attention and MLP: the issue's "fp16 mix";
``--quick`` has fewer layers) is written in each format by that format's own library (torch.save,
h5py — default and ``libver="latest"``, whose >8-member groups are dense —, a Keras 3 ``.keras`` zip,
the ``gguf`` package, ``np.savez``, onnx inline and with external data). Each format is logged as a
four-version sequence into a fresh store, in one child process (timed like every other ingest here):

- ``base``; ``header``: the same tensors with 12 KiB more metadata (or, for ``.pt`` and ``.npz``, a
  small tensor added first: what moves every entry after it);
- ``ft1``: a fine-tune of two layers (attention and MLP-down of layers 3 and 7: about 11% of the
  bytes); ``ft2``: from ft1, two more layers (0 and the last).

Reported per format: stored / size of ``base`` (and the safetensors control's), the header variant's
growth as a fraction of the file, each fine-tune's growth against the issue's bound (changed bytes ×
the format's stored ratio + 256 KiB), whether ``diff`` names exactly the changed tensors (each with a
relative L2), and the ingest speed of ``base`` (cold, into an empty store) and of ``ft1`` in GB/s and
as a ratio to the run's limits (medians of ``--trials`` runs, each a fresh store in a fresh process).
Writers need torch, h5py, gguf and onnx (a format whose library is missing is reported as skipped).
"""

from __future__ import annotations

import json
import shutil
import statistics
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

KiB = 1024
HEADER_EXTRA = 12 * KiB
Tensors = dict[str, tuple[str, tuple[int, ...], bytes]]
NP = {"F32": np.float32, "F16": np.float16}


def model(layers: int, hidden: int = 512, vocab: int = 8192, seed: int = 0) -> Tensors:
    """``embed`` F32 [vocab, hidden]; per layer: 4 F16 attention [h, h], F16 MLP up/down [4h, h] / [h, 4h], 2 F32 norms."""
    from objstore.testing.tensorfiles import random_weights

    rng = np.random.default_rng(seed)
    out: Tensors = {"embed.weight": ("F32", (vocab, hidden), random_weights(rng, (vocab, hidden), "F32"))}
    for i in range(layers):
        for part in ("q", "k", "v", "o"):
            out[f"layers.{i}.attn.{part}.weight"] = ("F16", (hidden, hidden), random_weights(rng, (hidden, hidden), "F16"))
        out[f"layers.{i}.mlp.up.weight"] = ("F16", (4 * hidden, hidden), random_weights(rng, (4 * hidden, hidden), "F16"))
        out[f"layers.{i}.mlp.down.weight"] = ("F16", (hidden, 4 * hidden), random_weights(rng, (hidden, 4 * hidden), "F16"))
        for norm in ("ln1", "ln2"):
            out[f"layers.{i}.{norm}.weight"] = ("F32", (hidden,), random_weights(rng, (hidden,), "F32", scale=1.0))
    return out


def tuned_names(layers: tuple[int, ...]) -> list[str]:
    return [f"layers.{i}.attn.{p}.weight" for i in layers for p in "qkvo"] + [f"layers.{i}.mlp.down.weight" for i in layers]


def fine_tune(tensors: Tensors, names: list[str], seed: int) -> Tensors:
    """``names`` moved by a small update (about 1% of their scale), everything else byte-identical."""
    rng = np.random.default_rng(seed)
    out = dict(tensors)
    for n in names:
        dtype, shape, raw = tensors[n]
        values = np.frombuffer(raw, NP[dtype]).astype(np.float32)
        moved = values + rng.standard_normal(values.size, dtype=np.float32) * np.float32(0.0002)
        out[n] = (dtype, shape, moved.astype(NP[dtype]).tobytes())
    return out


def arrays(tensors: Tensors) -> dict[str, np.ndarray]:
    return {n: np.frombuffer(raw, NP[d]).reshape(s) for n, (d, s, raw) in tensors.items()}


# -- writers: (path, tensors, header change?) -> the file (or directory) to log ---------------------------

def write_safetensors(path: Path, t: Tensors, header: bool) -> Path:
    from objstore.testing.tensorfiles import write_safetensors as write

    return write(path, t, {"note": "n" * HEADER_EXTRA} if header else None)


def write_pt(path: Path, t: Tensors, header: bool) -> Path:
    import torch

    sd = {"extra": torch.ones(HEADER_EXTRA, dtype=torch.uint8)} if header else {}
    sd.update({n: torch.from_numpy(a.copy()) for n, a in arrays(t).items()})
    torch.save(sd, path)
    return path


def write_npz(path: Path, t: Tensors, header: bool) -> Path:
    a: dict[str, np.ndarray] = {"extra": np.ones(HEADER_EXTRA, np.uint8)} if header else {}
    a.update(arrays(t))
    np.savez(path, **a)  # type: ignore[arg-type]
    return path


def h5_name(n: str) -> str:
    return n.replace(".", "/")


def write_h5(path: Path, t: Tensors, header: bool, libver: str = "earliest") -> Path:
    import h5py

    with h5py.File(path, "w", libver=libver) as f:
        f.attrs["keras_version"] = "3.5.0"
        if header:
            f.attrs["training_config"] = "c" * HEADER_EXTRA
        for n, a in arrays(t).items():
            f.create_dataset(h5_name(n), data=a)
    return path


def write_h5_latest(path: Path, t: Tensors, header: bool) -> Path:
    return write_h5(path, t, header, libver="latest")


def write_keras(path: Path, t: Tensors, header: bool) -> Path:
    weights = write_h5(path.with_suffix(".weights.h5"), t, header)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("metadata.json", json.dumps({"keras_version": "3.5.0"}))
        z.writestr("config.json", json.dumps({"class_name": "Sequential"}))
        z.write(weights, "model.weights.h5")
    weights.unlink()
    return path


def write_gguf(path: Path, t: Tensors, header: bool) -> Path:
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    if header:
        w.add_string("general.description", "d" * HEADER_EXTRA)
    kinds = {"F32": gguf.GGMLQuantizationType.F32, "F16": gguf.GGMLQuantizationType.F16}
    for n, (d, s, raw) in t.items():
        w.add_tensor(n, np.frombuffer(raw, np.uint8).reshape(*s[:-1], -1), raw_dtype=kinds[d])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _onnx_model(t: Tensors, header: bool) -> Any:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    node = helper.make_node("Identity", ["x"], ["y"])
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
                              initializer=[numpy_helper.from_array(a, n) for n, a in arrays(t).items()])
    del onnx
    return helper.make_model(graph, doc_string="d" * HEADER_EXTRA if header else "")


def write_onnx(path: Path, t: Tensors, header: bool) -> Path:
    import onnx

    onnx.save(_onnx_model(t, header), str(path))
    return path


def write_onnx_external(path: Path, t: Tensors, header: bool) -> Path:
    import onnx

    path.mkdir()
    onnx.save(_onnx_model(t, header), str(path / "model.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0)
    return path


# name -> (writer, file suffix, how the format names tensor n)
FORMATS: dict[str, tuple[Callable[[Path, Tensors, bool], Path], str, Callable[[str], str]]] = {
    "safetensors": (write_safetensors, ".safetensors", str),
    "pt": (write_pt, ".pt", str),
    "h5": (write_h5, ".h5", h5_name),
    "h5 latest (dense groups)": (write_h5_latest, ".h5", h5_name),
    "keras": (write_keras, ".keras", h5_name),
    "gguf": (write_gguf, ".gguf", str),
    "npz": (write_npz, ".npz", str),
    "onnx": (write_onnx, ".onnx", str),
    "onnx + external data": (write_onnx_external, ".dir", str),
}


def size_of(path: Path) -> int:
    return sum(p.stat().st_size for p in path.iterdir()) if path.is_dir() else path.stat().st_size


def write_sequence(work: Path, layers: int) -> tuple[dict[str, list[Path] | str], dict[str, Any]]:
    """Each format's four files (or why it is skipped), and what changed between them."""
    base = model(layers)
    ft1_names = tuned_names((3 % layers, 7 % layers))
    ft2_names = tuned_names((0, layers - 1))
    ft1 = fine_tune(base, ft1_names, seed=1)
    ft2 = fine_tune(ft1, ft2_names, seed=2)
    files: dict[str, list[Path] | str] = {}
    for i, (name, (write, suffix, _)) in enumerate(FORMATS.items()):
        d = work / f"format-{i}"
        d.mkdir(parents=True)
        try:
            files[name] = [write(d / f"v0-base{suffix}", base, False), write(d / f"v1-header{suffix}", base, True),
                           write(d / f"v2-ft1{suffix}", ft1, False), write(d / f"v3-ft2{suffix}", ft2, False)]
        except ImportError as exc:
            files[name] = f"skipped: {exc}"
    changed = {"ft1": sorted(set(ft1_names)), "ft2": sorted(set(ft2_names)),
               "ft1_bytes": sum(len(base[n][2]) for n in set(ft1_names)),
               "ft2_bytes": sum(len(base[n][2]) for n in set(ft2_names)),
               "tensors": len(base), "model_bytes": sum(len(r) for _, _, r in base.values())}
    return files, changed


def child_diff(store: str, name: str) -> dict[str, Any]:
    """What ``diff`` lists for v0 → v2 and v2 → v3 of the sequence in ``store``: (tensor, relative L2 given)."""
    import objstore
    from objstore.api.diff import diff_versions

    api = objstore.Api(store=store)
    out: dict[str, Any] = {}
    for label, a, b in (("ft1", 0, 2), ("ft2", 2, 3)):
        va, vb = api.artifact(f"bench/bench/{name}:v{a}"), api.artifact(f"bench/bench/{name}:v{b}")
        s, ra = va._logged()
        files = diff_versions(s, ra, vb._logged()[1]).files
        out[label] = sorted([t.name, t.relative_l2 is not None] for f in files for t in f.tensors or ())
    return out


def rows(bench: Any, work: Path, layers: int) -> dict[str, Any]:
    """The section's results (``bench`` is the running :class:`benchmarks.run.Bench`)."""
    files, changed = write_sequence(work, layers)
    out: dict[str, Any] = {"model": changed, "formats": {}}
    control_ratio = None
    for name, paths in files.items():
        if isinstance(paths, str):
            out["formats"][name] = {"error": paths}
            continue
        _, _, name_of = FORMATS[name]
        runs = []
        for trial in range(bench.trials):  # each trial a fresh store in a fresh process; stores are deterministic
            store = bench.fresh_dir("formats")
            runs.append(bench.child("sequence", store=str(store), paths=[str(p) for p in paths]))
            if trial == 0:
                d = bench.child("formats_diff", store=str(store), name="model")
            shutil.rmtree(store, ignore_errors=True)
        r = runs[0]
        seconds = [statistics.median(x["seconds"][i] for x in runs) for i in range(len(paths))]
        size = size_of(paths[0])
        stored = r["stored_after"]
        ratio = stored[0] / size
        if name == "safetensors":
            control_ratio = ratio
        gbps = size / seconds[0] / 1e9
        ft_gbps = size_of(paths[2]) / seconds[2] / 1e9
        row: dict[str, Any] = {"size": size, "stored_ratio": ratio, "header_growth_fraction": (stored[1] - stored[0]) / size,
                               "ingest_gbps": gbps, "vs_limits": bench.rel(gbps), "ft1_ingest_gbps": ft_gbps,
                               "ft1_vs_limits": bench.rel(ft_gbps), "seconds": seconds, "trials": len(runs),
                               "stored_after": stored, "peak_rss_mib": max(x["peak_rss"] for x in runs) / 2**20}
        for label, grown in (("ft1", stored[2] - stored[1]), ("ft2", stored[3] - stored[2])):
            bound = int(changed[f"{label}_bytes"] * ratio) + 256 * KiB
            want = sorted([name_of(n), True] for n in changed[label])
            row[label] = {"growth": grown, "bound": bound, "met": grown <= bound, "diff_exact": d[label] == want,
                          "diff_listed": len(d[label])}
        out["formats"][name] = row
    for row in out["formats"].values():
        if "stored_ratio" in row and control_ratio is not None:
            row["vs_control"] = row["stored_ratio"] - control_ratio
            row["targets_met"] = (abs(row["vs_control"]) <= 0.01 and row["header_growth_fraction"] <= 0.02
                                  and row["ft1"]["met"] and row["ft2"]["met"] and row["ft1"]["diff_exact"]
                                  and row["ft2"]["diff_exact"])
    return out


def print_rows(r: dict[str, Any], b1: float | None) -> None:
    m = r["model"]
    print(f"\nformats (issue 16): one model, {m['tensors']} tensors, {m['model_bytes'] / 1e6:.0f} MB of F32/F16 weights; "
          f"fine-tunes of {m['ft1_bytes'] / m['model_bytes']:.0%} / {m['ft2_bytes'] / m['model_bytes']:.0%} of the bytes")
    print(f"{'format':26s} {'stored/size':>11s} {'vs ctrl':>8s} {'header +':>9s} {'ft1 + MB (bound)':>17s} "
          f"{'ft2 + MB (bound)':>17s} {'diff':>5s} {'GB/s':>6s} {'x B3-1t':>8s} {'ft1 GB/s':>9s}  targets")
    for name, x in r["formats"].items():
        if "error" in x:
            print(f"{name:26s} {x['error']}")
            continue
        ft = [f"{x[k]['growth'] / 1e6:6.2f} ({x[k]['bound'] / 1e6:5.2f})" for k in ("ft1", "ft2")]
        exact = "yes" if x["ft1"]["diff_exact"] and x["ft2"]["diff_exact"] else "NO"
        rel = f"{x['ingest_gbps'] / b1:.2f}" if b1 else "-"
        met = {True: "met", False: "NOT met", None: ""}[x.get("targets_met")]
        print(f"{name:26s} {x['stored_ratio']:11.4f} {x.get('vs_control', 0.0):+8.4f} {x['header_growth_fraction']:9.2%} "
              f"{ft[0]:>17s} {ft[1]:>17s} {exact:>5s} {x['ingest_gbps']:6.2f} {rel:>8s} {x['ft1_ingest_gbps']:9.2f}  {met}")
