"""Golden vectors for the ingest path, recorded from the pure-Python implementation
before the native core existed: chunk boundaries and ids for many shapes of input,
alignments, chunking parameters and read splits, file ids, and the exact pack and
index bytes of a small store ingest (by their checksums, which cover every byte).

Both implementations (:mod:`objstore.storage.native`: the compiled one and the
Python fallback, ``OBJSTORE_NATIVE=0``) must reproduce them; a difference is a
format change. Two sets: ``ingest_v1.json``, the gear scan inside tensors that
stores made before stop 28 keep (``tensor_scan="gear"``), and
``ingest_words_v1.json``, the word-sampled cuts of new stores (recorded from the
numpy reference when they were introduced). Regenerate only with a new store format:
``OBJSTORE_WRITE_GOLDEN=1 pytest tests/test_golden_ingest.py``.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import replace
from pathlib import Path

import blake3
import numpy as np
import pytest

from objstore.files.ingest import chunk_file
from objstore.storage import codecs
from objstore.storage.backend import open_backend
from objstore.storage.chunking import GEAR, WORDS, Chunker, ChunkParams
from objstore.storage.ids import Kind, hash_bytes
from objstore.storage.odb import ObjectDatabase

GOLDEN_DIR = Path(__file__).parent / "data" / "golden"
GOLDEN = GOLDEN_DIR / "ingest_v1.json"
GOLDEN_FILES = {GEAR: GOLDEN, WORDS: GOLDEN_DIR / "ingest_words_v1.json"}

TINY = ChunkParams(avg_size=1024, min_size=256, max_size=4096, normalization=1, tensor_scan=GEAR)
SMALL = ChunkParams(avg_size=4096, min_size=1024, max_size=16384, normalization=2, tensor_scan=GEAR)
# the default of stores made before 128 KiB became the default; such stores keep it
DEFAULT = ChunkParams(avg_size=64 * 1024, min_size=16 * 1024, max_size=256 * 1024, normalization=1, tensor_scan=GEAR)
PARAMS = {"tiny": TINY, "small": SMALL, "default": DEFAULT,
          "nc0": ChunkParams(avg_size=8192, min_size=2048, max_size=32768, normalization=0, tensor_scan=GEAR),
          "nc3": ChunkParams(avg_size=8192, min_size=2048, max_size=32768, normalization=3, tensor_scan=GEAR)}
# the store-level cases of the word-sampled set: today's default, and SMALL's sizes
STORE_PARAMS = {GEAR: (("st_default", DEFAULT), ("st_small", SMALL)),
                WORDS: (("st_default", ChunkParams()), ("st_small", replace(SMALL, tensor_scan=WORDS)))}


def xof(seed: str, n: int) -> bytes:
    """Deterministic incompressible bytes (BLAKE3 XOF): the same on every machine and numpy."""
    return blake3.blake3(seed.encode()).digest(length=n)


def bf16_like(seed: str, n_words: int) -> bytes:
    """bf16 words as trained weights look (sign, exponents in a narrow band, random
    mantissas), from integer arithmetic only, so every platform makes the same bytes."""
    r = np.frombuffer(xof(seed, 2 * n_words), dtype="<u2").astype(np.uint32)
    exp = 118 + (r % 7)
    word = ((r >> 15) << 15) | (exp << 7) | ((r >> 3) & 0x7F)
    return word.astype("<u2").tobytes()


def fp32_like(seed: str, n_words: int) -> bytes:
    r = np.frombuffer(xof(seed, 4 * n_words), dtype="<u4").astype(np.uint64)
    exp = 116 + (r % 9)
    word = ((r >> 31) << 31) | (exp << 23) | ((r >> 5) & 0x7FFFFF)
    return word.astype("<u4").tobytes()


def repetitive(seed: str, n: int) -> bytes:
    block = xof(seed, 50_000)
    out = b"".join(block[i * 7:] + bytes([i]) * 3001 for i in range(40))
    return (out * (n // len(out) + 1))[:n]


class SplitReader:
    """A stream whose reads return the given sizes in turn (a pipe, a socket, a slow disk)."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data, self.pos, self.sizes, self.k = data, 0, sizes, 0

    def readinto(self, buf: memoryview) -> int:
        want = self.sizes[self.k % len(self.sizes)]
        self.k += 1
        n = min(want, len(buf), len(self.data) - self.pos)
        buf[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


def _inputs() -> dict[str, tuple[bytes, int, int]]:
    """name -> (bytes, align, stride: the tensor grid the word-sampled set cuts on)."""
    return {
        "random": (xof("golden random", 700_001), 1, 1),
        "random_a2": (xof("golden random a2", 300_000), 2, 2),
        "random_a4": (xof("golden random a4", 300_000), 4, 64),
        "bf16": (bf16_like("golden bf16", 400_000), 2, 64),
        "fp32": (fp32_like("golden fp32", 150_000), 4, 16),
        "zeros": (bytes(200_000), 1, 8),
        "zeros_a4": (bytes(200_000), 4, 4),
        "repetitive": (repetitive("golden rep", 500_000), 1, 32),
        "below_min": (xof("golden small", 255), 1, 1),
        "exactly_min": (xof("golden min", 256), 1, 64),
        "exactly_max": (xof("golden max", 4096), 1, 64),
        "max_plus_one": (xof("golden max1", 4097), 1, 64),
        "odd_a2": (xof("golden odd", 99_999), 2, 2),
        "one_byte": (b"\x07", 1, 1),
    }


# (read_block, read sizes): one big read, short reads, and odd splits straddling cuts
_SPLITS = {"whole": (1 << 20, [1 << 30]), "block_1": (1, [1 << 30]), "block_5000": (5000, [1 << 30]),
           "reads_odd": (65_536, [1, 4095, 12_289, 777]), "reads_7": (20_000, [7, 1 << 30])}


def _chunk_case(data: bytes, align: int, stride: int, params: ChunkParams, read_block: int, sizes: list[int],
                full: bool) -> dict[str, object]:
    """Lengths in full for one split of each input (to read in a diff), as a digest for the others."""
    chunker = Chunker(params, read_block=read_block)
    lengths, ids = [], blake3.blake3()
    for view in chunker.iter_chunks(SplitReader(data, sizes), len(data), align, stride):
        lengths.append(len(view))
        ids.update(hash_bytes(Kind.CHUNK, view).raw)
    digest = blake3.blake3(np.array(lengths, dtype="<u4").tobytes()).hexdigest()
    return {"n": len(lengths), "lengths": lengths if full else digest, "ids": ids.hexdigest()}


def chunk_vectors(scan: str) -> dict[str, object]:
    out: dict[str, object] = {}
    inputs = _inputs()
    for pname, params in PARAMS.items():
        names = list(inputs) if pname == "tiny" else ["random", "bf16", "fp32", "zeros", "repetitive", "odd_a2"]
        splits = list(_SPLITS) if pname in ("tiny", "small") else ["whole", "reads_odd"]
        for name in names:
            data, align, stride = inputs[name]
            for split in splits:
                read_block, sizes = _SPLITS[split]
                out[f"{pname}/{name}/{split}"] = _chunk_case(data, align, stride if scan == WORDS else 0,
                                                             replace(params, tensor_scan=scan), read_block, sizes,
                                                             split == "whole")
    return out


def safetensors_file(path: Path) -> Path:
    """A small safetensors file: bf16 and fp32 tensors, a tiny one, an odd-sized I8 one, a repeat."""
    w = bf16_like("golden st w", 600_000)
    tensors = [("a.weight", "BF16", [600, 1000], w), ("b.bias", "F32", [1023], fp32_like("golden st b", 1023)),
               ("c.weight", "F32", [300, 700], fp32_like("golden st c", 210_000)), ("d.tiny", "BF16", [3], w[:6]),
               ("e.bytes", "I8", [77_777], xof("golden st e", 77_777)), ("f.copy", "BF16", [600, 1000], w)]
    header: dict[str, object] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(t[3] for t in tensors))
    return path


class PinnedPolicy:
    """Today's default codec choice, by codec id, so the pack bytes stay pinned even
    if the default policy for new stores changes."""

    def candidates(self, dtype: str | None) -> tuple[int, ...]:
        return {"BF16": (2,), "F16": (2,), "F32": (3,)}.get(dtype or "", (codecs.ZSTD,))


def store_vectors(tmp: Path, workers: int, scan: str = GEAR) -> dict[str, object]:
    st = safetensors_file(tmp / "model.safetensors")
    plain = tmp / "plain.bin"
    plain.write_bytes(repetitive("golden plain", 3_000_000))
    root = tmp / f"store-{workers}"
    odb = ObjectDatabase(open_backend(str(root)), codec_policy=PinnedPolicy())
    out: dict[str, object] = {}
    cases = [(name, st, params) for name, params in STORE_PARAMS[scan]] + [("plain_small", plain, SMALL)]
    for name, path, params in cases:
        fobj = chunk_file(path, Chunker(params), odb, stat_cache=None, segment_cache=None, workers=workers)
        out[name] = {"file_id": fobj.compute_id().hex, "chunks": len(fobj.chunks), "size": fobj.size}
        out[name + "/identity"] = chunk_file(path, Chunker(params), None, workers=workers).compute_id().hex
    odb.flush()
    packs = sorted(p.name for p in (root / "packs").iterdir())
    out["packs"] = packs
    out["pack_bytes"] = {p: blake3.blake3((root / "packs" / p).read_bytes()).hexdigest() for p in packs}
    return out


def golden_vectors(tmp: Path, scan: str) -> dict[str, object]:
    return {"chunks": chunk_vectors(scan), "store": store_vectors(tmp, 0, scan)}


def _dump(vectors: dict[str, object]) -> str:
    """JSON with one case per line: small, and a change shows as a one-line diff."""
    lines = [f"{json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in sorted(vectors["chunks"].items())]  # type: ignore[attr-defined]
    chunks = "{\n" + ",\n".join(lines) + "\n}"
    return f'{{"chunks": {chunks},\n"store": {json.dumps(vectors["store"], sort_keys=True, indent=1)}}}\n'


@pytest.mark.parametrize("scan", [GEAR, WORDS])
def test_golden_ingest(tmp_path: Path, scan: str) -> None:
    got = golden_vectors(tmp_path, scan)
    golden = GOLDEN_FILES[scan]
    if os.environ.get("OBJSTORE_WRITE_GOLDEN"):
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(_dump(got))
    want = json.loads(golden.read_text())
    moved = [k for k in want["chunks"] if got["chunks"].get(k) != want["chunks"][k]]  # type: ignore[attr-defined]
    assert not moved, f"chunk boundaries or ids changed for {moved[:5]} (+{max(len(moved) - 5, 0)})"
    assert got["store"] == want["store"], "file ids or pack bytes changed"


@pytest.mark.parametrize("scan", [GEAR, WORDS])
@pytest.mark.parametrize("workers", [1, 2])
def test_golden_store_through_the_pipeline(tmp_path: Path, workers: int, scan: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from objstore.files import ingest

    monkeypatch.setattr(ingest, "PIPELINE_MIN_BYTES", 0)
    monkeypatch.setattr(ingest, "JOB_BYTES", 1 << 20)
    want = json.loads(GOLDEN_FILES[scan].read_text())["store"]
    assert store_vectors(tmp_path, workers, scan) == want


@pytest.mark.skipif(os.environ.get("OBJSTORE_NATIVE") == "0", reason="the fallback has no one-call encoder")
def test_golden_store_through_the_one_call_encoder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pipeline's blocks go through the one-call C encoder into pooled buffers
    (issue 12), and the packs are still the pinned bytes."""
    from objstore.files import ingest
    from objstore.storage import codecs

    if not codecs.BATCH_INTO:
        pytest.skip("the C batch encoder is not built")
    calls: list[int] = []
    real = codecs._encode_group_into

    def counted(codec_id: int, raws: list[bytes | memoryview], out: bytearray, pos: int
                ) -> tuple[list[tuple[int, bytes | memoryview]], int]:
        calls.append(len(raws))
        return real(codec_id, raws, out, pos)

    monkeypatch.setattr(codecs, "_encode_group_into", counted)
    monkeypatch.setattr(ingest, "PIPELINE_MIN_BYTES", 0)
    monkeypatch.setattr(ingest, "JOB_BYTES", 1 << 20)
    want = json.loads(GOLDEN.read_text())["store"]
    assert store_vectors(tmp_path, 2) == want
    assert calls and sum(calls) > len(calls)  # several chunks per call


SEGMENT_KEYS = GOLDEN.parent / "segment_keys_v2.json"


@pytest.mark.parametrize("workers", [0, 2])
def test_golden_segment_keys(tmp_path: Path, workers: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The segment-cache probes a log records (the names of its entries): pinned, since a
    probe computed otherwise turns every entry of every store into a miss. Probe
    ranges of 1,000 bytes, so larger tensors are probed in three ranges and the
    smallest whole."""
    from objstore.files import ingest, segmentcache

    monkeypatch.setattr(ingest, "MIN_SEGMENT", 1)
    monkeypatch.setattr(segmentcache, "PROBE_BYTES", 1000)
    monkeypatch.setattr(ingest, "PIPELINE_MIN_BYTES", 0)
    monkeypatch.setattr(ingest, "JOB_BYTES", 1 << 20)
    path = safetensors_file(tmp_path / "model.safetensors")
    root = tmp_path / "store"
    odb = ObjectDatabase(open_backend(str(root)), codec_policy=PinnedPolicy())
    chunker = Chunker(SMALL)
    chunk_file(path, chunker, odb, stat_cache=None, segment_cache=ingest.segment_cache_for(odb, chunker), workers=workers)
    odb.flush()
    got = sorted(p.parent.name + p.name[:62] for p in (root / "cache" / "segments").rglob("*") if p.is_file())
    if os.environ.get("OBJSTORE_WRITE_GOLDEN"):
        SEGMENT_KEYS.write_text(json.dumps(got, indent=1) + "\n")
    assert len(got) >= 5  # every segment (the copy of a.weight shares its entry)
    assert got == json.loads(SEGMENT_KEYS.read_text())
