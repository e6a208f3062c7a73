"""Encoding alone: CPU-seconds per GiB of ingest's encode stage over a file's chunks.

    python -m benchmarks.bench_encode FILE [--trials 3] [--per-chunk | --no-out]

Cuts FILE as ingest does (its segments, the store's default chunking) into
``BLOCK_BYTES`` blocks of chunk views into one buffer, then times
``codecs.encode_many`` as ingest calls it, into one reused output buffer (with
``--no-out``, without one: the three-call batch with python-zstandard's frames;
with ``--per-chunk``, ``codecs.encode_chunk`` per chunk: the encoder before the
batch encoder) over every block, one thread,
dropping each block's payloads as the writer does. Prints CPU-seconds (getrusage
user + sys) per GiB, min and median of the trials, the stored ratio and the load.
Every chunk counts as new (a cold ingest). To compare builds, run it from each
build's checkout (``PYTHONPATH``) alternately, in one sitting.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
from collections.abc import Callable

from objstore.files import ingest
from objstore.storage import codecs
from objstore.storage.chunking import Chunker, ChunkParams
from objstore.storage.segmenting import segment_file

Block = list[tuple[memoryview, str | None]]


def blocks_of(path: str) -> tuple[bytes, list[Block]]:
    with open(path, "rb") as f:
        data = f.read()
    view = memoryview(data)
    chunker = Chunker(ChunkParams())
    blocks: list[Block] = []
    with open(path, "rb", buffering=0) as f:
        for seg in segment_file(f, len(data)):
            f.seek(seg.offset)
            pos, block, size = seg.offset, [], 0
            for chunk in chunker.iter_chunks(f, seg.length, seg.align):
                n = len(chunk)
                block.append((view[pos : pos + n], seg.dtype))
                pos += n
                size += n
                if size >= ingest.BLOCK_BYTES:
                    blocks.append(block)
                    block, size = [], 0
            if block:
                blocks.append(block)
    return data, blocks


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("file")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--per-chunk", action="store_true", help="encode_chunk per chunk instead of encode_many")
    ap.add_argument("--no-out", action="store_true", help="encode_many without an output buffer (three calls per block)")
    args = ap.parse_args()
    data, blocks = blocks_of(args.file)
    policy = codecs.DEFAULT_POLICY
    out = None if args.no_out else bytearray(ingest.BLOCK_BYTES + ChunkParams().max_size)
    encode: Callable[[Block], list[tuple[int, bytes | memoryview]]] = (
        (lambda b: [codecs.encode_chunk(raw, dtype, policy) for raw, dtype in b]) if args.per_chunk
        else (lambda b: codecs.encode_many(b, policy, out)))
    gib = len(data) / 2**30
    spent: list[float] = []
    stored = 0
    for _ in range(args.trials):
        t0 = cpu_seconds()
        stored = sum(sum(len(p) for _, p in encode(b)) for b in blocks)
        spent.append(cpu_seconds() - t0)
    way = ("encode_chunk per chunk" if args.per_chunk else f"encode_many per block (planes {codecs.PLANES_IMPLEMENTATION}, "
           f"{'one C call' if out is not None and codecs.BATCH_INTO else 'three calls'})")
    print(f"{os.path.basename(args.file)}: {way}: {min(spent) / gib:.3f} CPU-s per GiB min, "
          f"{statistics.median(spent) / gib:.3f} median of {args.trials}; {len(data) / min(spent) / 1e9:.2f} GB/s per core; "
          f"stored {stored / len(data):.4f}; {sum(map(len, blocks))} chunks in {len(blocks)} blocks; "
          f"load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
