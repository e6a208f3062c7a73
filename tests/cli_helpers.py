"""Helpers for tests that drive the installed ``objstore`` command as a subprocess."""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

OBJSTORE = Path(sys.executable).parent / "objstore"


@dataclass
class Result:
    code: int
    out: str
    err: str

    def json(self) -> object:
        return json.loads(self.out)


def run_cli(store: Path | str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None,
            check: bool = True, timeout: float = 120) -> Result:
    """Run ``objstore --store STORE ARGS`` (or without --store if STORE is empty)."""
    full_env = dict(os.environ)
    full_env.pop("OBJSTORE_DIR", None)
    full_env.pop("OBJSTORE_PROJECT", None)
    full_env.pop("OBJSTORE_DEBUG", None)
    if env:
        full_env.update(env)
    argv = [str(OBJSTORE)] + (["--store", str(store)] if store else []) + list(args)
    proc = subprocess.run(argv, capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL)
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    if check and proc.returncode != 0:
        raise AssertionError(f"objstore {' '.join(args)} exited {proc.returncode}\nstdout: {proc.stdout}\nstderr: {proc.stderr}")
    return result


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], dtype: str = "BF16") -> None:
    """A safetensors file (8-byte LE header length, JSON header, data) without torch.

    bf16 values are given as uint16 bit patterns.
    """
    header: dict[str, object] = {}
    blobs = []
    offset = 0
    for name, arr in tensors.items():
        data = np.ascontiguousarray(arr).tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)


def random_layers(seed: int, layers: int = 4, shape: tuple[int, int] = (256, 256), prefix: str = "layer") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {f"{prefix}{i}.weight": rng.integers(0, 1 << 16, size=shape, dtype=np.uint16) for i in range(layers)}


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` with a hash of its content."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            p = Path(dirpath, name)
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def sha(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
