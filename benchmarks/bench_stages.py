"""Cold ingest stage by stage: the CPU-seconds (getrusage user + sys) of each stage of
``log_model`` alone, on one thread, over one file (default: the 1 GiB bf16 ``base``).

    python -m benchmarks.bench_stages [FILE] [--out-dir DIR]

Each stage row adds one step to the one above (read; + segment key; + cuts; +
chunk ids; + codec, per block as ingest runs it and per chunk), then the pack writes of the encoded chunks into ``--out-dir``
(default ``/dev/shm``), with and without the pack format. Their sum is what the
pipeline spreads over its threads; compare it with the whole ingest's CPU time.
"""

from __future__ import annotations

import argparse
import os
import resource
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from objstore.storage import codecs
from objstore.storage.chunking import Chunker, ChunkParams
from objstore.storage.ids import Kind, ObjectId, hasher, key_of
from objstore.storage.packs import PackBuilder
from objstore.storage.segmenting import Segment, segment_file

BLOCK = 2 << 20  # what the pipeline reads per block (ingest.BLOCK_BYTES)
PACK = 32 << 20
_T = TypeVar("_T")
Encoded = list[tuple[int, int, bytes | memoryview]]


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def stage(name: str, fn: Callable[[], _T]) -> _T:
    cpu, wall = _cpu(), time.perf_counter()
    out = fn()
    print(f"{name:40s} CPU {_cpu() - cpu:5.2f} s   wall {time.perf_counter() - wall:5.2f} s", flush=True)
    return out


class _Reader:
    def __init__(self, fd: int, offset: int) -> None:
        self.fd, self.offset = fd, offset

    def readinto(self, buffer: memoryview) -> int:
        n = os.preadv(self.fd, [buffer], self.offset)
        self.offset += n
        return n


def _read(fd: int, size: int, segment_key: bool) -> None:
    view = memoryview(bytearray(BLOCK))
    h = hasher(Kind.SEGMENT)
    offset = 0
    while offset < size:
        n = os.preadv(fd, [view[: min(BLOCK, size - offset)]], offset)
        if segment_key:
            h.update(view[:n])
        offset += n


def _cut(fd: int, segments: list[Segment], key: bytes | None) -> int:
    chunker = Chunker(ChunkParams())
    chunks = 0
    for seg in segments:
        for block in chunker.iter_blocks(_Reader(fd, seg.offset), seg.length, seg.align, key, False, BLOCK):
            chunks += len(block.ends)
    return chunks


def _encode(fd: int, segments: list[Segment]) -> Encoded:
    chunker = Chunker(ChunkParams())
    out: Encoded = []
    for seg in segments:
        for block in chunker.iter_blocks(_Reader(fd, seg.offset), seg.length, seg.align, key_of(Kind.CHUNK), True, BLOCK):
            start = block.start
            for end in block.ends:
                codec_id, payload = codecs.encode_chunk(block.data[start:end], seg.dtype)
                out.append((codec_id, end - start, payload))
                start = end
    return out


def _encode_blocks(fd: int, segments: list[Segment]) -> int:
    """The codec as ingest runs it: encode_many per block into one reused buffer
    (the one-call C encoder when built); payloads dropped, their bytes counted."""
    chunker = Chunker(ChunkParams())
    out = bytearray(BLOCK + ChunkParams().max_size)
    stored = 0
    for seg in segments:
        for block in chunker.iter_blocks(_Reader(fd, seg.offset), seg.length, seg.align, key_of(Kind.CHUNK), True, BLOCK):
            items: list[tuple[bytes | memoryview, str | None]] = []
            start = block.start
            for end in block.ends:
                items.append((block.data[start:end], seg.dtype))
                start = end
            stored += sum(len(p) for _, p in codecs.encode_many(items, None, out))
    return stored


def _write_packs(encoded: Encoded, out_dir: Path, formatted: bool) -> None:
    i = 0
    while i < len(encoded):
        path = out_dir / f"objstore-stage-{os.getpid()}-{i}"
        with open(path, "wb", buffering=0) as f:
            builder = PackBuilder(f)
            written = 0
            while i < len(encoded) and written < PACK:
                codec_id, raw_len, payload = encoded[i]
                if formatted:
                    builder.add(ObjectId(os.urandom(32)), codec_id, raw_len, payload)
                else:
                    f.write(payload)
                written += len(payload)
                i += 1
            if formatted:
                builder.finish()
            os.fsync(f.fileno())
        path.unlink()


def main() -> None:
    from benchmarks.workloads import CACHE, model_file

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("file", nargs="?", default=None, help="a file to ingest (default: the 1 GiB bf16 base)")
    ap.add_argument("--out-dir", default="/dev/shm", help="where the pack writes go")
    args = ap.parse_args()
    path = Path(args.file) if args.file else model_file("base", 1 << 30, "BF16", CACHE)[0]
    fd = os.open(path, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        with open(path, "rb") as f:
            segments = segment_file(f, size)
        print(f"{path} ({size / 2**30:.2f} GiB), load {os.getloadavg()[0]:.1f}")
        stage("pread 2 MiB blocks", lambda: _read(fd, size, False))
        stage("+ segment-key BLAKE3", lambda: _read(fd, size, True))
        stage("pread + FastCDC cuts", lambda: _cut(fd, segments, None))
        chunks = stage("pread + cuts + chunk ids", lambda: _cut(fd, segments, key_of(Kind.CHUNK)))
        stage(f"pread + cuts + ids + codec per block ({'one call' if codecs.BATCH_INTO else 'batch'})",
              lambda: _encode_blocks(fd, segments))
        encoded = stage("pread + cuts + ids + codec per chunk", lambda: _encode(fd, segments))
        stored = sum(len(p) for _, _, p in encoded)
        print(f"{chunks} chunks, stored {stored / size:.3f}x logical")
        out_dir = Path(args.out_dir)
        stage("pack records + checksum + fsync", lambda: _write_packs(encoded, out_dir, True))
        stage("payload write + fsync only", lambda: _write_packs(encoded, out_dir, False))
    finally:
        os.close(fd)


if __name__ == "__main__":
    main()
