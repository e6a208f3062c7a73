"""Write the old-format store fixture ``tests/golden/store_v1.tar.gz`` and its
expected contents ``store_v1.json``.

Run once, with the code of the commit that added it (``python
tests/golden/make_store_v1.py``); never regenerate it with later code: it is
what a store written by that code looks like, and tests/test_old_store.py
checks that every later objstore still reads it back byte for byte.

It holds every codec in use then (raw, zstd, bytegroup2, bytegroup4), a bf16
and an fp32 safetensors file, a plain file, a symlink, an alias, a link into
the model registry, two versions sharing chunks, and run records.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

import objstore
from objstore.model.store import Store
from objstore.storage.chunking import ChunkParams
from objstore.testing.tensorfiles import random_weights, write_safetensors

HERE = Path(__file__).resolve().parent
PARAMS = ChunkParams(avg_size=4096, min_size=1024, max_size=16384, normalization=1)


def _model(dir_: Path, seed: int, changed: bool) -> None:
    rng = np.random.default_rng(seed)
    bf16 = {"embed.weight": ("BF16", (64, 64), random_weights(rng, (64, 64), "BF16")),
            "layer.0.weight": ("BF16", (64, 64), random_weights(rng, (64, 64), "BF16"))}
    if changed:  # fine-tuned: only the second tensor differs, the first is shared
        bf16["layer.0.weight"] = ("BF16", (64, 64), random_weights(np.random.default_rng(seed + 100), (64, 64), "BF16"))
    write_safetensors(dir_ / "model.safetensors", bf16, {"format": "pt"})
    fp32 = {"head.weight": ("F32", (32, 64), random_weights(np.random.default_rng(7), (32, 64), "F32"))}
    write_safetensors(dir_ / "head.safetensors", fp32)
    (dir_ / "config.json").write_text(json.dumps({"hidden": 64, "layers": 1, "note": "x" * 2000}, indent=2))
    (dir_ / "noise.bin").write_bytes(np.random.default_rng(11).bytes(6000))  # does not compress: raw
    os.symlink("model.safetensors", dir_ / "weights.safetensors")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        store_dir = work / "store"
        Store.open(store_dir, chunking=PARAMS).close()
        expected: dict[str, dict[str, str]] = {}
        for n, changed in enumerate((False, True)):
            src = work / f"v{n}"
            src.mkdir()
            _model(src, 1, changed)
            with objstore.init(project="fixture", entity="old", store=store_dir, name=f"run{n}") as run:
                if n == 0:
                    run.log_model(src, name="tiny", aliases=["first"])
                else:
                    run.link_model(src, "tiny-registered", name="tiny", aliases=["prod"])
            files: dict[str, str] = {}
            for p in sorted(src.rglob("*")):
                rel = p.relative_to(src).as_posix()
                files[rel] = ("link:" + os.readlink(p)) if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
            expected[f"old/fixture/tiny:v{n}"] = files
        expected["old/model-registry/tiny-registered:v0"] = expected["old/fixture/tiny:v1"]
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz", format=tarfile.PAX_FORMAT) as tar:
            for p in sorted(store_dir.rglob("*")):
                info = tar.gettarinfo(str(p), arcname="store/" + p.relative_to(store_dir).as_posix())
                info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
                if info.isfile():
                    with open(p, "rb") as f:
                        tar.addfile(info, f)
                else:
                    tar.addfile(info)
        (HERE / "store_v1.tar.gz").write_bytes(buf.getvalue())
        (HERE / "store_v1.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
        print(f"store_v1.tar.gz: {len(buf.getvalue())} bytes", file=sys.stderr)


if __name__ == "__main__":
    main()
