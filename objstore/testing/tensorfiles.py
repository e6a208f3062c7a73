"""Writing safetensors files without torch, and synthetic transformer-shaped
models: for the quickstart, tests and benchmarks.

A safetensors file is an 8-byte little-endian header length, a JSON header
naming each tensor's dtype, shape and byte range, then the tensor bytes.
(Reading the header is :func:`objstore.storage.formats.safetensors.read_safetensors_header`.)
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np

Tensor = tuple[str, tuple[int, ...], bytes]  # (safetensors dtype, shape, raw little-endian bytes)

_NUMPY_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64}


def random_weights(rng: np.random.Generator, shape: tuple[int, ...], dtype: str, scale: float = 0.02) -> bytes:
    """Normal(0, scale) values, as trained weights look, encoded as ``dtype`` (BF16, F16, F32, F64)."""
    values = rng.standard_normal(int(np.prod(shape)), dtype=np.float32) * np.float32(scale)
    if dtype == "BF16":
        return (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    return values.astype(_NUMPY_DTYPES[dtype]).tobytes()


def write_safetensors(path: Path, tensors: Mapping[str, Tensor], metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``{name: (dtype, shape, raw bytes)}`` as a safetensors file, tensors in the given order."""
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format pads the header to 8 bytes
    path = Path(path)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for _, _, data in tensors.values():
            f.write(data)
    return path


def transformer(seed: int, *, layers: int = 7, hidden: int = 1024, vocab: int = 4096, dtype: str = "BF16") -> dict[str, Tensor]:
    """A transformer-shaped state dict: embeddings, then per layer four square
    attention matrices. With the defaults in bf16 it is 64 MiB."""
    rng = np.random.default_rng(seed)
    tensors: dict[str, Tensor] = {"embed.weight": (dtype, (vocab, hidden), random_weights(rng, (vocab, hidden), dtype))}
    for i in range(layers):
        for part in ("q", "k", "v", "o"):
            tensors[f"layers.{i}.attn.{part}.weight"] = (dtype, (hidden, hidden), random_weights(rng, (hidden, hidden), dtype))
    return tensors


def fine_tune(tensors: dict[str, Tensor], layer_names: list[str], seed: int) -> dict[str, Tensor]:
    """A copy with the named tensors replaced by fresh weights (what fine-tuning them does)."""
    rng = np.random.default_rng(seed)
    out = dict(tensors)
    for name in layer_names:
        dtype, shape, _ = tensors[name]
        out[name] = (dtype, shape, random_weights(rng, shape, dtype))
    return out
