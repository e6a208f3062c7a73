"""Synthetic models and store snapshots for tests."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from objstore.testing.tensorfiles import fine_tune, random_weights, transformer, write_safetensors

__all__ = ["fine_tune", "random_weights", "snapshot", "store_bytes", "tensor_range", "transformer", "write_safetensors"]


def store_bytes(root: Path) -> int:
    """Bytes a local store occupies on disk (its files' sizes), temp files excluded."""
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file() and "tmp" not in p.relative_to(root).parts[:1])


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its content, for before/after comparisons."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(Path(root).rglob("*")) if p.is_file()}


def tensor_range(path: Path, name: str) -> tuple[int, int]:
    """(absolute offset, length) of tensor ``name`` in a safetensors file."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    start, end = header[name]["data_offsets"]
    return 8 + n + start, end - start
