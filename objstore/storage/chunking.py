"""Content-defined chunking: FastCDC over a stream, in bounded memory.

A segment (a whole file, or one tensor of a safetensors file; see
:mod:`objstore.storage.segmenting`) is read in blocks of ``READ_BLOCK`` bytes and cut with
FastCDC. Cut points depend only on content, so inserting bytes near the start of
a file moves only the chunks around the insertion.

Element alignment: inside a tensor of ``align``-byte elements every cut is
rounded up to the next multiple of ``align`` (relative to the segment start), so
a chunk never splits a bf16 or fp32 word and byte-plane codecs see whole words.
The rounding is applied to the cuts FastCDC reports; FastCDC itself always
restarts at its own, unrounded cut, so the boundaries are the same however the
stream is split into reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from pyfastcdc import FastCDC

from objstore import constants
from objstore.errors import FileChanged


@dataclass(frozen=True, slots=True)
class ChunkParams:
    """FastCDC parameters, recorded in a store's config and fixed for its lifetime."""

    avg_size: int = constants.CHUNK_AVG
    min_size: int = constants.CHUNK_MIN
    max_size: int = constants.CHUNK_MAX
    normalization: int = constants.CHUNK_NORMALIZATION

    def to_dict(self) -> dict[str, int]:
        return {"avg": self.avg_size, "min": self.min_size, "max": self.max_size, "nc": self.normalization}

    @classmethod
    def from_dict(cls, d: dict[str, int]) -> ChunkParams:
        return cls(int(d["avg"]), int(d["min"]), int(d["max"]), int(d["nc"]))


class Readable(Protocol):
    def readinto(self, buffer: memoryview) -> int | None: ...


class Chunker:
    """Cuts byte streams into content-defined chunks.

    >>> import io
    >>> chunker = Chunker(ChunkParams())
    >>> sum(len(c) for c in chunker.iter_chunks(io.BytesIO(b"x" * 100_000), 100_000))
    100000
    """

    def __init__(self, params: ChunkParams, read_block: int = constants.READ_BLOCK) -> None:
        self.params = params
        # FastCDC's avg_size counts bytes after the min_size skip (its paper's
        # "cut-point skipping"), so ask for avg - min to get chunks of avg on average.
        self._cdc = FastCDC(
            max(params.avg_size - params.min_size, 256),
            min_size=params.min_size,
            max_size=params.max_size,
            # pyfastcdc types it Literal[0, 1, 2, 3]; ours is an int read from the store's config
            normalized_chunking=params.normalization,  # type: ignore[arg-type]
        )
        self._capacity = read_block + params.max_size

    def iter_chunks(self, stream: Readable, length: int, align: int = 1) -> Iterator[memoryview]:
        """Yield the chunks of the next ``length`` bytes of ``stream``.

        Each yielded view is valid only until the next one is requested; copy it
        (``bytes(view)``) to keep it. Raises if the stream ends early.
        """
        if length <= 0:
            return
        buf = bytearray(min(self._capacity, length))
        whole = memoryview(buf)
        filled = 0  # valid bytes in buf
        remaining = length  # bytes not yet read from the stream
        base = 0  # segment offset of buf[0]; always one of FastCDC's own cuts
        emitted = 0  # buffer offset up to which chunks were yielded (>= 0)
        try:
            while True:
                while filled < len(buf) and remaining > 0:
                    n = stream.readinto(whole[filled : filled + min(len(buf) - filled, remaining)])
                    if not n:
                        raise FileChanged(detail=f" (it ended {remaining} bytes early)")
                    filled += n
                    remaining -= n
                at_end = remaining == 0
                carry_from = filled
                view = whole[:filled]
                for chunk in self._cdc.cut_buf(view):
                    start = chunk.offset
                    end = start + chunk.length
                    if end == filled and not at_end:
                        carry_from = start  # may not be a real cut: redo it with more data
                        break
                    cut = end
                    if align > 1:
                        cut = -(-(base + end) // align) * align - base
                        if cut > filled:
                            if not at_end:
                                carry_from = start  # the rounded cut needs bytes not read yet
                                break
                            cut = filled
                    if cut > emitted:
                        yield whole[emitted:cut]
                        emitted = cut
                del view
                if at_end and carry_from == filled:
                    if emitted < filled:
                        yield whole[emitted:filled]
                    return
                keep = filled - carry_from
                buf[:keep] = buf[carry_from:filled]
                base += carry_from
                emitted -= carry_from
                filled = keep
        finally:
            whole.release()
