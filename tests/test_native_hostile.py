"""Hostile calls of the native core (objstore.storage._native), as a caller that
bypasses ``native.Cdc``'s validation would make them: every parameter the C code
trusts for its bounds is checked by the C code itself, and a buffer shared with
another thread is held (not resizable) for the whole GIL-free call.

The calls that could corrupt memory run in a subprocess, so a failure is a
failed test, not a dead test runner."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from objstore.storage import native
from objstore.storage.ids import _KEYS, Kind

ROOT = Path(__file__).resolve().parent.parent
KEY = _KEYS[Kind.CHUNK]
ALL_ONES = (1 << 64) - 1

pytestmark = pytest.mark.skipif(native.native_core is None, reason="the C extension is not built")


def run_native(call: str) -> subprocess.CompletedProcess[str]:
    code = ("import os\nfrom objstore.storage import _native as n\nbuf = bytearray(os.urandom(1 << 16))\n"
            f"try:\n    {call}\nexcept (ValueError, OverflowError) as exc:\n    print('refused:', exc)\n")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20, cwd=ROOT)


@pytest.mark.parametrize("stride", [0, 64], ids=["gear", "words"])
@pytest.mark.parametrize("config", [
    (64, 1 << 20, 1024, ALL_ONES, ALL_ONES),  # avg > max: the first scan runs to avg, past the buffer
    (4096, 2, 8192, 1, 1),  # avg < min: chunks shorter than min - 1 overflow the ends array
    (4096, 0, 8192, 1, 1),  # avg 0: empty chunks, no progress (a GIL-free endless loop)
    (32, 256, 1024, 1, 1),  # min < 64: a word-sampled candidate's word would start before the chunk
], ids=["avg>max", "avg<min", "avg=0", "min<64"])
def test_native_refuses_an_average_outside_min_max(config: tuple[int, ...], stride: int) -> None:
    proc = run_native(f"n.chunk_block(buf, len(buf), True, 0, 1, 0, {(*config, stride)!r}, bytes(32))")
    assert proc.returncode == 0 and proc.stdout.startswith("refused:"), (proc.returncode, proc.stdout, proc.stderr[-500:])


@pytest.mark.parametrize("args", ["buf, len(buf), True, -1, 1, 0", "buf, len(buf), True, 0, -2, 0",
                                  "buf, -1, True, 0, 1, 0", "buf, len(buf), True, 0, 1, -1"])
def test_native_refuses_negative_offsets(args: str) -> None:
    """An unsigned conversion without a range check would wrap -1 to 2**64 - 1 and
    cut (silently) where the Python core never would."""
    proc = run_native(f"n.chunk_block({args}, (64, 256, 1024, 255, 63, 0), bytes(32))")
    assert proc.returncode == 0 and proc.stdout.startswith("refused:"), (proc.returncode, proc.stdout, proc.stderr[-500:])


def test_a_buffer_being_cut_cannot_be_resized() -> None:
    """The GIL is released while the C code reads the buffer: a resize from another
    thread meanwhile must be refused by the buffer export, never free the memory."""
    assert native.native_core is not None
    cdc = native.Cdc(1024, 256, 4096, 1)
    buf = bytearray(os.urandom(4 << 20))
    results: list[native.BlockCuts] = []
    done = threading.Event()

    def cut() -> None:
        for _ in range(3):
            results.append(native.native_core.chunk_block(cdc, buf, len(buf), True, 0, 1, 0, KEY))  # type: ignore[union-attr]
        done.set()

    worker = threading.Thread(target=cut)
    worker.start()
    refused = 0
    while not done.is_set():
        try:
            buf.extend(b"x")
        except BufferError:
            refused += 1
        else:
            del buf[-1]  # it was between calls: undo
    worker.join()
    assert results and all(r == results[0] for r in results)
    assert refused > 0


@pytest.mark.parametrize("stride", [0, 2, 64], ids=["gear", "words2", "words64"])
def test_a_buffer_mutated_while_cut_gives_valid_cuts(stride: int) -> None:
    """Bytes changed by another thread during the call may give any cuts and ids,
    but cuts stay inside the buffer, increase, and each id is of 32 bytes."""
    assert native.native_core is not None
    cdc = native.Cdc(1024, 256, 4096, 1, stride=stride)
    buf = bytearray(os.urandom(2 << 20))
    stop = threading.Event()

    def scribble() -> None:
        noise = os.urandom(1 << 16)
        i = 0
        while not stop.is_set():
            at = (i * 7919 * 64) % (len(buf) - len(noise))
            buf[at : at + len(noise)] = noise
            i += 1

    writer = threading.Thread(target=scribble)
    writer.start()
    try:
        for align in (1, 2, 4):
            cuts = native.native_core.chunk_block(cdc, buf, len(buf), True, 0, align, 0, KEY)
            assert cuts.done and cuts.ends[-1] == len(buf)
            assert all(a < b for a, b in zip([0, *cuts.ends], cuts.ends))
            assert cuts.ids is not None and len(cuts.ids) == 32 * len(cuts.ends)
    finally:
        stop.set()
        writer.join()
