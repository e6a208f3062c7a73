"""A bounded sequential reader of a file's header, for the parsers of formats read front to back (GGUF, ONNX).

Every read or skip is checked against the file's size before anything is read or allocated, so a
length a hostile header claims can never make a parser read past the end, allocate for it, or loop
over it; a read that comes back short (the file shrank) is the same :class:`PastEnd`. Reads are
buffered in blocks, so walking many small fields costs few system calls; a file object with a
``read_ahead`` attribute (a stored file, whose every read fetches whole chunks) gets reads of
that much more than asked instead, so walking a header never fetches the tensors after it.
"""

from __future__ import annotations

from typing import BinaryIO

BLOCK = 1 << 20  # bytes read from the file at a time


class PastEnd(Exception):
    """A read or skip would go past the end of the file (or the file is shorter than its size)."""


class SequentialReader:
    """Reads of ``f`` (of ``size`` bytes) from position ``pos`` on, each checked against ``size``."""

    def __init__(self, f: BinaryIO, size: int, pos: int = 0) -> None:
        self._f = f
        self.size = size
        self.pos = pos
        self._buf = b""
        self._buf_at = 0
        self._block: int = getattr(f, "read_ahead", BLOCK)

    def left(self) -> int:
        return self.size - self.pos

    def take(self, n: int) -> bytes:
        """The next ``n`` bytes."""
        if n < 0 or n > self.left():
            raise PastEnd
        start = self.pos - self._buf_at
        if start < 0 or start + n > len(self._buf):
            self._f.seek(self.pos)
            self._buf = self._f.read(max(n, self._block))
            self._buf_at = self.pos
            start = 0
            if len(self._buf) < n:
                raise PastEnd
        self.pos += n
        return self._buf[start:start + n]

    def skip(self, n: int) -> None:
        """Move ``n`` bytes on without reading them."""
        if n < 0 or n > self.left():
            raise PastEnd
        self.pos += n
