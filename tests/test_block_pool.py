"""Pooled block buffers (:class:`objstore.storage.chunking.BufferPool`): a block's bytes
stay what was read until its lease is released, however late, and buffers are
reused once both the reader and the consumer let go; the chunks are those of
unpooled fresh blocks."""

from __future__ import annotations

from collections import deque

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from objstore.storage.chunking import Block, BufferPool, Chunker, ChunkParams
from objstore.storage.ids import _KEYS, Kind

KEY = _KEYS[Kind.CHUNK]
PARAMS = ChunkParams(4096, 1024, 16384, 2)


class Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def readinto(self, buf: memoryview) -> int:
        n = min(len(buf), len(self.data) - self.pos)
        buf[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        return n


def _chunks(block: Block) -> list[bytes]:
    out, start = [], block.start
    for end in block.ends:
        out.append(bytes(block.data[start:end]))
        start = end
    return out


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(0, 200_000), read_block=st.sampled_from([5000, 20_000, 65_536]),
       held=st.integers(0, 4), keep=st.integers(0, 3))
@example(seed=3, n=200_000, read_block=5000, held=2, keep=3)  # blocks held across two reuses of a buffer
def test_a_pooled_block_holds_its_bytes_until_released(seed: int, n: int, read_block: int, held: int, keep: int) -> None:
    data = np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()
    chunker = Chunker(PARAMS, read_block=read_block)
    want = [c for b in chunker.iter_blocks(Reader(data), n, 2, KEY, fresh=True, read_block=read_block) for c in _chunks(b)]
    pool = BufferPool(read_block + PARAMS.max_size, keep)
    got: list[bytes] = []
    waiting: deque[tuple[Block, list[bytes]]] = deque()  # blocks whose consumer has not let go yet
    for block in chunker.iter_blocks(Reader(data), n, 2, KEY, fresh=True, read_block=read_block, pool=pool):
        assert block.lease is not None
        waiting.append((block, _chunks(block)))
        while len(waiting) > held:
            old, seen = waiting.popleft()
            assert _chunks(old) == seen  # not overwritten by the reads since
            got.extend(seen)
            assert old.lease is not None
            old.lease.release()
    for old, seen in waiting:
        assert _chunks(old) == seen
        got.extend(seen)
    assert got == want
    assert b"".join(got) == data


def test_buffers_are_reused_once_both_holders_let_go() -> None:
    data = np.random.default_rng(1).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
    pool = BufferPool(20_000 + PARAMS.max_size, 4)
    seen: set[int] = set()
    blocks = 0
    for block in Chunker(PARAMS).iter_blocks(Reader(data), len(data), 1, KEY, fresh=True, read_block=20_000, pool=pool):
        seen.add(id(block.data.obj))
        blocks += 1
        assert block.lease is not None
        block.lease.release()
    assert blocks > 5 and len(seen) <= 2  # the one being filled and the one whose carry is copied out


def test_a_pool_of_the_wrong_size_is_refused() -> None:
    with pytest.raises(ValueError, match="pool"):
        list(Chunker(PARAMS).iter_blocks(Reader(b"x" * 100), 100, 1, KEY, fresh=True, read_block=1000,
                                         pool=BufferPool(1000, 1)))
