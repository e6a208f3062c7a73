"""Issue 16's store-level targets, measured the same way for every format's tests.

A small transformer-shaped model (F32 embeddings, F16 attention, ~5 MiB) is written once as
safetensors (the control) and once in the format under test by a writer the test passes in.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from modelgen import fine_tune, store_bytes, write_safetensors

import objstore
from objstore.api.diff import diff_versions
from objstore.storage.formats.base import ParsedFile
from objstore.testing.tensorfiles import random_weights

Tensors = dict[str, tuple[str, tuple[int, ...], bytes]]
Writer = Callable[[Path, Tensors, int], Path]  # (path, tensors, bytes of extra metadata) -> path

KiB = 1024


class Parser(Protocol):
    def parse(self, f: BinaryIO, size: int) -> ParsedFile | None: ...


def parsing(parser: Parser) -> tuple[Callable[[Path], ParsedFile | None], Callable[[bytes], ParsedFile | None]]:
    """A format's parser applied to a file on disk and to bytes in memory (each format test's two entry points)."""
    def parse_path(path: Path) -> ParsedFile | None:
        with open(path, "rb") as f:
            return parser.parse(f, path.stat().st_size)

    def parse_bytes(data: bytes) -> ParsedFile | None:
        return parser.parse(io.BytesIO(data), len(data))

    return parse_path, parse_bytes


def assert_well_formed(p: ParsedFile, size: int) -> None:
    """Tensors in file order, none overlapping, all inside the file."""
    end = 0
    for t in p.tensors:
        assert end <= t.offset and t.offset + t.length <= size
        end = t.offset + t.length
CHANGED = [f"layers.1.attn.{p}.weight" for p in ("q", "k")]  # 2 of 9 tensors, 15% of the bytes


def small_model(seed: int = 1, hidden: int = 384, vocab: int = 1024, layers: int = 2) -> Tensors:
    import numpy as np

    rng = np.random.default_rng(seed)
    tensors: Tensors = {"embed.weight": ("F32", (vocab, hidden), random_weights(rng, (vocab, hidden), "F32"))}
    for i in range(layers):
        for part in ("q", "k", "v", "o"):
            tensors[f"layers.{i}.attn.{part}.weight"] = ("F16", (hidden, hidden),
                                                          random_weights(rng, (hidden, hidden), "F16"))
    return tensors


def stored(store: Path, path: Path) -> tuple[int, objstore.Artifact]:
    """How much logging ``path`` to ``store`` grows it, and the version logged."""
    before = store_bytes(store) if store.exists() else 0
    with objstore.init(project="p", entity="e", store=store) as run:
        art = run.log_model(str(path), name="m")
    return store_bytes(store) - before, art


def changed_tensors(base: objstore.Artifact, tuned: objstore.Artifact) -> list[tuple[str, bool]]:
    """What ``objstore diff`` says changed between two one-file versions: (tensor, relative L2 given), sorted."""
    store = base._logged()[0]
    files = diff_versions(store, base._logged()[1], tuned._logged()[1]).files
    return sorted((t.name, t.relative_l2 is not None) for f in files for t in f.tensors or ())


@dataclass(frozen=True)
class Targets:
    ratio: float  # stored / size of the format's file
    control_ratio: float  # the same for the same tensors as safetensors
    header_growth: float  # store growth from the header-change variant, as a fraction of the file
    tune_growth: int  # store growth from the fine-tune, bytes
    tune_bound: int  # changed bytes x ratio + 256 KiB
    diff: list[tuple[str, bool]]  # (tensor, relative L2 given) diff lists between the base and the fine-tune


def measure(tmp_path: Path, write: Writer, suffix: str, size_of: Callable[[Path], int] = lambda p: p.stat().st_size
            ) -> Targets:
    """Every store-level target of issue 16 for the format ``write`` writes (a file, or a directory
    ``size_of`` measures)."""
    base = small_model()
    tuned = fine_tune(base, CHANGED, seed=2)
    control = write_safetensors(tmp_path / "control.safetensors", base)
    control_ratio = stored(tmp_path / "s0", control)[0] / control.stat().st_size
    original = write(tmp_path / f"base{suffix}", base, 0)
    size = size_of(original)
    grown, v0 = stored(tmp_path / "s1", original)
    header_growth = stored(tmp_path / "s1", write(tmp_path / f"header{suffix}", base, 12 * KiB))[0] / size
    tune_growth, v2 = stored(tmp_path / "s1", write(tmp_path / f"tuned{suffix}", tuned, 0))
    changed = sum(len(tuned[n][2]) for n in CHANGED)
    ratio = grown / size
    return Targets(ratio, control_ratio, header_growth, tune_growth, int(changed * ratio) + 256 * KiB,
                   changed_tensors(v0, v2))


def assert_targets(t: Targets, name_of: Callable[[str], str] = lambda name: name) -> None:
    """Issue 16's targets; ``name_of`` spells a tensor's name as the format names it."""
    assert abs(t.ratio - t.control_ratio) <= 0.01, t
    assert t.header_growth <= 0.02, t
    assert t.tune_growth <= t.tune_bound, t
    assert t.diff == sorted((name_of(n), True) for n in CHANGED), t
