"""The native core and the Python reference agree byte for byte: cuts, carries and
chunk ids over random tensors, dtypes, alignments, chunking parameters and read
splits; and objstore installs and works with the fallback forced."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import blake3
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from objstore.storage import native
from objstore.storage.chunking import Chunker, ChunkParams
from objstore.storage.ids import _KEYS, Kind

ROOT = Path(__file__).resolve().parent.parent
KEY = _KEYS[Kind.CHUNK]

requires_native = pytest.mark.skipif(native.native_core is None, reason="the C extension is not built")


def test_the_extension_is_built_where_ci_requires_it() -> None:
    if os.environ.get("OBJSTORE_REQUIRE_NATIVE") == "1":
        assert native.native_core is not None, "the C extension did not build"
        assert native.IMPLEMENTATION == ("python" if native.FORCED_OFF else "native")


def tensor_bytes(seed: int, n: int, dtype: str) -> bytes:
    """Weights-like floats (narrow exponents), or raw bytes, or long runs: what chunking meets."""
    rng = np.random.default_rng(seed)
    if dtype == "bf16":
        return ((rng.standard_normal(n // 2 + 1, dtype=np.float32) * 0.02).view(np.uint32) >> 16).astype("<u2").tobytes()[:n]
    if dtype == "f32":
        return (rng.standard_normal(n // 4 + 1, dtype=np.float32) * 0.02).astype("<f4").tobytes()[:n]
    if dtype == "runs":
        return bytes(rng.integers(0, 3, n, dtype=np.uint8) * (rng.random(n) < 0.01))
    return rng.bytes(n)


PARAMS = st.sampled_from([ChunkParams(1024, 256, 4096, 1), ChunkParams(4096, 1024, 16384, 2),
                          ChunkParams(2048, 1024, 8192, 0), ChunkParams(8192, 64, 65536, 3), ChunkParams()])
needs_native = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# 0: FastCDC's gear; else the word-sampled cuts on that grid (every divisor of 64)
STRIDES = st.sampled_from([0, 1, 2, 4, 8, 16, 32, 64])


@requires_native
@needs_native
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 300_000), dtype=st.sampled_from(["bf16", "f32", "bytes", "runs"]),
       params=PARAMS, align=st.sampled_from([1, 2, 4, 8]), base=st.integers(0, 7), emitted_frac=st.floats(0, 1),
       at_end=st.booleans(), stride=STRIDES)
def test_one_block_cuts_and_ids_agree(seed: int, n: int, dtype: str, params: ChunkParams, align: int, base: int,
                                      emitted_frac: float, at_end: bool, stride: int) -> None:
    data = bytearray(tensor_bytes(seed, n, dtype))
    cdc = native.Cdc(max(params.avg_size - params.min_size, 256), params.min_size, params.max_size, params.normalization,
                     stride=stride)
    emitted = min(int(emitted_frac * params.max_size), n)
    args = (cdc, data, n, at_end, base, align, emitted, KEY)
    assert native.native_core is not None
    assert native.native_core.chunk_block(*args) == native.python_core.chunk_block(*args)


class SplitReader:
    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self.data, self.pos, self.sizes, self.k = data, 0, sizes, 0

    def readinto(self, buf: memoryview) -> int:
        want = self.sizes[self.k % len(self.sizes)]
        self.k += 1
        n = min(want, len(buf), len(self.data) - self.pos)
        buf[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


def stream_chunks(core: native.Core, data: bytes, params: ChunkParams, read_block: int, sizes: list[int], align: int,
                  fresh: bool, stride: int = 0) -> list[tuple[bytes, bytes]]:
    saved = native.core
    native.core = core
    try:
        out = []
        chunker = Chunker(params, read_block=read_block)
        for block in chunker.iter_blocks(SplitReader(data, sizes), len(data), align, KEY, fresh, stride=stride):
            assert block.ids is not None
            start = block.start
            for i, end in enumerate(block.ends):
                out.append((bytes(block.data[start:end]), block.ids[32 * i : 32 * i + 32]))
                start = end
        return out
    finally:
        native.core = saved


@requires_native
@needs_native
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 400_000), dtype=st.sampled_from(["bf16", "f32", "bytes", "runs"]),
       params=PARAMS, align=st.sampled_from([1, 2, 4]), read_block=st.sampled_from([1, 5000, 65_536, 1 << 20]),
       sizes=st.lists(st.integers(1, 100_000), min_size=1, max_size=5), fresh=st.booleans(), stride=STRIDES)
def test_streams_agree_whatever_the_read_splits(seed: int, n: int, dtype: str, params: ChunkParams, align: int,
                                                read_block: int, sizes: list[int], fresh: bool, stride: int) -> None:
    data = tensor_bytes(seed, n, dtype)
    stride = stride and max(stride, align)  # a tensor's grid is a multiple of its element size
    assert native.native_core is not None
    got = stream_chunks(native.native_core, data, params, read_block, sizes, align, fresh, stride)
    want = stream_chunks(native.python_core, data, params, 1 << 20, [1 << 30], align, False, stride)
    assert [len(c) for c, _ in got] == [len(c) for c, _ in want]
    assert got == want
    assert all(blake3.blake3(c, key=KEY).digest() == i for c, i in got)
    assert b"".join(c for c, _ in got) == data
    if stride:  # every cut but the segment's end is on the grid
        assert all(len(c) % stride == 0 for c, _ in got[:-1])


@requires_native
@settings(max_examples=20, deadline=None)
@given(data=st.binary(max_size=20_000), cuts=st.lists(st.integers(0, 20_000), max_size=10), start=st.integers(0, 100))
def test_hash_many_agrees(data: bytes, cuts: list[int], start: int) -> None:
    start = min(start, len(data))
    ends = sorted(min(c, len(data)) for c in cuts if c >= start)
    assert native.native_core is not None
    assert native.native_core.hash_many(KEY, data, start, ends) == native.python_core.hash_many(KEY, data, start, ends)


@requires_native
@settings(max_examples=30, deadline=None)
@given(batches=st.lists(st.lists(st.binary(max_size=5000), max_size=6), max_size=5))
def test_stream_agrees(batches: list[list[bytes]]) -> None:
    # the pack checksum: one GIL-free call per batch of record heads and payloads
    assert native.native_core is not None
    got, want = native.native_core.new_stream(KEY), native.python_core.new_stream(KEY)
    for batch in batches:
        got.update_many([memoryview(b) for b in batch])
        want.update_many(list(batch))
        assert got.digest() == want.digest()
    assert got.digest() == blake3.blake3(b"".join(b"".join(batch) for batch in batches), key=KEY).digest()


@requires_native
@pytest.mark.parametrize("sizes", [[41, 70_000, 3 * 65_536, 5, 65_536 - 46, 200_000], [65_536, 65_536], [0, 131_072, 1]])
def test_stream_agrees_across_its_buffer(sizes: list[int]) -> None:
    # the C stream hashes in whole 64 KiB buffers (copied, or straight from a piece that
    # starts on one): every way a piece meets a buffer boundary gives the same digest
    assert native.native_core is not None
    pieces = [bytes([i % 251]) * n for i, n in enumerate(sizes)]
    got = native.native_core.new_stream(KEY)
    for k in range(0, len(pieces), 2):
        got.update_many(pieces[k : k + 2])
    assert got.digest() == blake3.blake3(b"".join(pieces), key=KEY).digest()


@requires_native
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(min_size=1, max_size=30_000), cuts=st.lists(st.integers(1, 30_000), max_size=12),
       offset=st.integers(0, 200), room=st.integers(1, 12_000), damage=st.sampled_from(["none", "byte", "id", "truncate"]),
       where=st.integers(0, 1 << 30))
def test_verify_at_agrees(tmp_path: Path, data: bytes, cuts: list[int], offset: int, room: int, damage: str,
                          where: int) -> None:
    # the segment cache's verification: a file's bytes at given cuts against given ids,
    # read a buffer at a time; both cores answer alike, and True exactly when it holds
    ends = sorted({min(c, len(data)) for c in cuts} | {len(data)})
    lengths = [b - a for a, b in zip([0, *ends], ends) if b > a]
    room = max(room, max(lengths))
    ids = native.python_core.hash_many(KEY, data, 0, ends)
    body = bytearray(data)
    if damage == "byte":
        body[where % len(body)] ^= 1
    elif damage == "id":
        k = where % len(ids)
        ids = ids[:k] + bytes([ids[k] ^ 1]) + ids[k + 1 :]
    elif damage == "truncate":
        del body[where % len(body):]
    path = tmp_path / "f"
    path.write_bytes(b"\xa5" * offset + bytes(body))
    fd = os.open(path, os.O_RDONLY)
    try:
        answers = {core.name: core.verify_at(KEY, fd, offset, lengths, ids, memoryview(bytearray(room)))
                   for core in (native.native_core, native.python_core) if core is not None}
    finally:
        os.close(fd)
    assert answers == {"native": damage == "none", "python": damage == "none"}


@requires_native
def test_verify_at_refuses_what_no_caller_may_ask() -> None:
    fd = os.open(__file__, os.O_RDONLY)
    try:
        for core in (native.native_core, native.python_core):
            assert core is not None
            with pytest.raises(ValueError):
                core.verify_at(KEY, fd, 0, [10, 5], b"x" * 32, memoryview(bytearray(16)))  # ids for one chunk of two
            with pytest.raises(ValueError):
                core.verify_at(KEY, fd, 0, [17], b"x" * 32, memoryview(bytearray(16)))  # a chunk larger than the buffer
            with pytest.raises(ValueError):
                core.verify_at(KEY, fd, 0, [0], b"x" * 32, memoryview(bytearray(16)))  # an empty chunk
    finally:
        os.close(fd)
    bad = os.open(os.path.dirname(__file__), os.O_RDONLY)  # a directory: every read fails
    try:
        for core in (native.native_core, native.python_core):
            assert core is not None
            with pytest.raises(OSError):
                core.verify_at(KEY, bad, 0, [10], b"x" * 32, memoryview(bytearray(16)))
    finally:
        os.close(bad)


@requires_native
def test_native_refuses_states_it_did_not_make() -> None:
    assert native.native_core is not None
    m = native.native_core._m
    stream = m.stream_new(KEY)
    for bad in (bytearray(len(stream)), bytearray(8), b"x" * len(stream)):  # zeroed, short, read-only
        with pytest.raises((ValueError, BufferError, TypeError)):
            m.stream_update(bad, [b"abc"])
        with pytest.raises((ValueError, BufferError, TypeError)):
            m.stream_digest(bad)
    with pytest.raises(TypeError):
        m.stream_update(stream, [b"ok", 3])  # the buffers taken so far are let go


@requires_native
def test_native_refuses_bad_arguments() -> None:
    assert native.native_core is not None
    m = native.native_core._m
    cdc = native.Cdc(1024, 256, 4096, 1)
    with pytest.raises(ValueError):
        m.chunk_block(b"abc", 10, True, 0, 1, 0, cdc.config, None)  # filled past the buffer
    with pytest.raises(ValueError):
        m.chunk_block(b"abc", 3, True, 0, 1, 0, cdc.config, b"short key")
    with pytest.raises(ValueError):
        m.hash_many(KEY, b"abc", 0, [2, 1])
    with pytest.raises(ValueError):
        m.hash_many(KEY, b"abc", 0, [4])


def test_forced_fallback_passes_the_golden_vectors() -> None:
    """A machine without a compiler runs the Python path: forced here, in a subprocess."""
    env = {**os.environ, "OBJSTORE_NATIVE": "0"}
    probe = subprocess.run([sys.executable, "-c", "from objstore.storage import native; print(native.IMPLEMENTATION)"],
                           env=env, capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "python"
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "tests/test_golden_ingest.py",
                          "tests/test_chunking.py"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]


@pytest.mark.parametrize("forced_off", [False, True])
def test_version_names_the_core(forced_off: bool) -> None:
    env = {**os.environ, "OBJSTORE_NATIVE": "0" if forced_off else "1"}
    run = subprocess.run([sys.executable, "-c", "import sys; from cli.main import main; sys.argv[0] = 'objstore'; main()", "--version"],
                         cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    if forced_off or native.native_core is None:
        assert run.stdout.strip() == "objstore 0.1.0 (native core: python)"
    else:
        assert run.stdout.strip() == f"objstore 0.1.0 (native core: native, {native.native_core.simd})"


def ingest_with(core: native.Core, path: Path, root: Path, params: ChunkParams, workers: int) -> tuple[object, dict[str, bytes]]:
    from objstore.files.ingest import chunk_file
    from objstore.storage.backend import open_backend
    from objstore.storage.odb import ObjectDatabase

    saved = native.core
    native.core = core
    try:
        odb = ObjectDatabase(open_backend(str(root)))
        fobj = chunk_file(path, Chunker(params), odb, stat_cache=None, segment_cache=None, workers=workers)
        odb.flush()
    finally:
        native.core = saved
    return fobj, {p.name: p.read_bytes() for p in sorted((root / "packs").iterdir())}


@requires_native
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 2**32 - 1), tensors=st.lists(st.tuples(st.sampled_from(["BF16", "F32", "I8"]), st.integers(0, 120_000)),
                                                        min_size=1, max_size=4), workers=st.sampled_from([0, 2]))
def test_packs_agree(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch, seed: int,
                     tensors: list[tuple[str, int]], workers: int) -> None:
    from objstore.files import ingest
    from objstore.testing.tensorfiles import write_safetensors

    monkeypatch.setattr(ingest, "PIPELINE_MIN_BYTES", 0)
    monkeypatch.setattr(ingest, "BLOCK_BYTES", 40_000)
    tmp = tmp_path_factory.mktemp("packs")
    size = {"BF16": 2, "F32": 4, "I8": 1}
    data = {f"t{i}": (dt, (n,), tensor_bytes(seed + i, n * size[dt], {"BF16": "bf16", "F32": "f32", "I8": "bytes"}[dt]))
            for i, (dt, n) in enumerate(tensors)}
    path = write_safetensors(tmp / "m.safetensors", data)
    params = ChunkParams(4096, 1024, 16384, 1)
    assert native.native_core is not None
    got = ingest_with(native.native_core, path, tmp / "native", params, workers)
    want = ingest_with(native.python_core, path, tmp / "python", params, 0)
    assert got == want


@requires_native
def test_native_refuses_parameters_that_would_not_progress() -> None:
    assert native.native_core is not None
    m = native.native_core._m
    for config in [(1, 256, 4096, 0, 0, 0), (64, 256, 32, 0, 0, 0), (0, 0, 0, 0, 0, 0), (64, 256, 4096, 0, 0, 65),
                   (1, 256, 4096, 0, 0, 64)]:
        with pytest.raises(ValueError):
            m.chunk_block(bytes(10_000), 10_000, True, 0, 1, 0, config, None)


@requires_native
@settings(max_examples=10, deadline=None)
@given(min_size=st.integers(64, 200), seed=st.integers(0, 100))
def test_odd_minimum_sizes_agree(min_size: int, seed: int) -> None:
    """An odd min_size lets FastCDC cut at min_size - 1: the native ends[] must have room."""
    data = bytearray(tensor_bytes(seed, 200_000, "runs"))
    cdc = native.Cdc(256, min_size, 1024, 3)
    assert native.native_core is not None
    args = (cdc, data, len(data), True, 0, 1, 0, KEY)
    assert native.native_core.chunk_block(*args) == native.python_core.chunk_block(*args)
