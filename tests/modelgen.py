"""Synthetic model files for tests: safetensors written with numpy alone (no torch).

A safetensors file is an 8-byte little-endian header length, a JSON header
naming each tensor's dtype, shape and byte range, then the tensor bytes.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

_NUMPY_DTYPES = {"F32": np.float32, "F16": np.float16}


def random_tensor(rng: np.random.Generator, shape: tuple[int, ...], dtype: str) -> bytes:
    """Normal(0, 0.02) weights, as trained weights look, in ``dtype`` (BF16, F16, F32)."""
    values = (rng.standard_normal(int(np.prod(shape)), dtype=np.float32) * 0.02)
    if dtype == "BF16":
        return (values.view(np.uint32) >> 16).astype(np.uint16).tobytes()
    return values.astype(_NUMPY_DTYPES[dtype]).tobytes()


def write_safetensors(path: Path, tensors: dict[str, tuple[str, tuple[int, ...], bytes]], metadata: dict[str, str] | None = None) -> Path:
    """Write ``{name: (dtype, shape, raw bytes)}`` as a safetensors file, tensors in the given order."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = metadata
    offset = 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for _, _, data in tensors.values():
            f.write(data)
    return path


def transformer(seed: int, *, layers: int = 7, hidden: int = 1024, vocab: int = 4096, dtype: str = "BF16") -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    """A transformer-shaped state dict: embeddings, then per layer four square
    attention matrices. With the defaults in bf16 it is 64 MiB."""
    rng = np.random.default_rng(seed)
    tensors = {"embed.weight": (dtype, (vocab, hidden), random_tensor(rng, (vocab, hidden), dtype))}
    for i in range(layers):
        for part in ("q", "k", "v", "o"):
            tensors[f"layers.{i}.attn.{part}.weight"] = (dtype, (hidden, hidden), random_tensor(rng, (hidden, hidden), dtype))
    return tensors


def fine_tune(tensors: dict[str, tuple[str, tuple[int, ...], bytes]], layer_names: list[str], seed: int) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    """A copy with the named tensors replaced by fresh weights (what fine-tuning them does)."""
    rng = np.random.default_rng(seed)
    out = dict(tensors)
    for name in layer_names:
        dtype, shape, _ = tensors[name]
        out[name] = (dtype, shape, random_tensor(rng, shape, dtype))
    return out


def store_bytes(root: Path) -> int:
    """Bytes a local store occupies on disk (its files' sizes), temp files excluded."""
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file() and "tmp" not in p.relative_to(root).parts[:1])


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its content, for before/after comparisons."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}
