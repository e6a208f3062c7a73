"""The ingest pipeline: the same chunks, file objects and packs as the simple
sequential path, whatever the thread count or job size; bounded memory."""

from __future__ import annotations

import json
import operator
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest

from objstore.errors import NotFound
from objstore.files import ingest
from objstore.files.ingest import chunk_file
from objstore.model.store import Store
from objstore.testing.tensorfiles import transformer, write_safetensors


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("inputs")
    model = write_safetensors(d / "model.safetensors", transformer(11, layers=4, hidden=512, vocab=2048))  # ~8 MiB bf16
    f32 = write_safetensors(d / "f32.safetensors", transformer(12, layers=2, hidden=512, vocab=1024, dtype="F32"))
    rng = np.random.default_rng(3)
    plain = d / "plain.bin"
    block = rng.bytes(1 << 20)
    plain.write_bytes(b"".join(block[i:] + bytes([i]) * 999 for i in range(0, 12)))  # repeats: dedup inside the file
    return {"model": model, "f32": f32, "plain": plain}


def ingest_with(path: Path, root: Path, **kwargs: object) -> tuple[object, dict[str, bytes]]:
    store = Store.open(root)
    fobj = chunk_file(path, store.chunker, store.odb, stat_cache=None, **kwargs)  # type: ignore[arg-type]
    store.odb.flush()
    packs = {p.name: p.read_bytes() for p in (root / "packs").iterdir()}
    return fobj, packs


@pytest.mark.parametrize("name", ["model", "f32", "plain"])
@pytest.mark.parametrize("workers,job_bytes", [(1, 8 << 20), (2, 8 << 20), (2, 1 << 20), (3, 256 << 10)])
def test_pipeline_equals_sequential(inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                    name: str, workers: int, job_bytes: int) -> None:
    path = inputs[name]
    seq_obj, seq_packs = ingest_with(path, tmp_path / "seq", workers=0)
    monkeypatch.setattr(ingest, "JOB_BYTES", job_bytes)
    monkeypatch.setattr(ingest, "PIPELINE_MIN_BYTES", 0)
    par_obj, par_packs = ingest_with(path, tmp_path / "par", workers=workers)
    assert par_obj == seq_obj
    assert par_packs == seq_packs, "packs differ: chunks written in another order or encoded differently"
    # identity only (odb=None) agrees too
    assert chunk_file(path, Store.open(tmp_path / "seq").chunker, None, workers=workers) == seq_obj


def test_pipeline_deduplicates_against_the_store(inputs: dict[str, Path], tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s")
    first = chunk_file(inputs["model"], store.chunker, store.odb, stat_cache=None, workers=2)
    store.odb.flush()
    stored = store.odb.new_bytes
    again = chunk_file(inputs["model"], store.chunker, store.odb, stat_cache=None, workers=2)
    store.odb.flush()
    assert again == first and store.odb.new_bytes == stored


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    store = Store.open(tmp_path / "s")
    with pytest.raises(NotFound):
        chunk_file(tmp_path / "nope.bin", store.chunker, store.odb)


RSS_CHILD = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import objstore
    run = objstore.init(project="p", entity="e", store=sys.argv[1])
    run.log_model(sys.argv[2], name="big")
    run.finish()
    with open("/proc/self/status") as f:
        hwm = next(int(l.split()[1]) * 1024 for l in f if l.startswith("VmHWM:"))
    print(json.dumps({"peak_rss": hwm}))
""")


def test_logging_a_1gib_file_keeps_peak_rss_bounded(tmp_path: Path) -> None:
    """1 GiB of mostly repeated random blocks (cheap to store, costly to read)."""
    big = tmp_path / "big.bin"
    rng = np.random.default_rng(9)
    block = bytearray(rng.bytes(8 << 20))
    with open(big, "wb") as f:
        for i in range(128):
            block[i * 4096 : i * 4096 + 8] = i.to_bytes(8, "little")  # each block differs a little
            f.write(block)
    assert big.stat().st_size == 1 << 30
    proc = subprocess.run([sys.executable, "-c", RSS_CHILD, str(tmp_path / "store"), str(big)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    peak = json.loads(proc.stdout.strip().splitlines()[-1])["peak_rss"]
    print(f"peak RSS logging 1 GiB: {peak / 2**20:.0f} MiB")
    assert peak < 256 * 2**20, f"peak RSS {peak / 2**20:.0f} MiB"
    os.unlink(big)


def test_jobs_ahead_never_take_the_room_kept_for_the_job_being_written() -> None:
    # Without the reserve, threads on later jobs could take every place while the
    # thread of the job the writer waits for waits for one: a deadlock.
    stop = threading.Event()
    room = ingest._Room(3, 2)
    assert room.take(2, stop)  # a job ahead: 3 free > 2 reserved
    got: list[bool] = []
    ahead = threading.Thread(target=lambda: got.append(room.take(1, stop)))
    ahead.start()
    ahead.join(0.3)
    assert ahead.is_alive(), "a job ahead took a place of the reserve"
    assert room.take(0, stop) and room.take(0, stop)  # the job being written takes the reserve
    room.give()  # the writer wrote one of job 0's blocks: one place free, still reserved
    ahead.join(0.3)
    assert ahead.is_alive(), "a job ahead took a place of the reserve"
    room.advance(1)  # the writer moves on to job 1: its thread may now take it
    ahead.join(5)
    assert got == [True]
    assert not room.take(0, _set())  # full, and stopping: gives up instead of waiting


def _set() -> threading.Event:
    event = threading.Event()
    event.set()
    return event


def test_encoders_run_the_writers_next_job_first_and_hand_back_errors() -> None:
    encoders = ingest._Encoders(1)
    gate = threading.Event()
    order: list[int] = []
    try:
        blocker = encoders.submit(0, gate.wait)
        later = [encoders.submit(5, order.append, 5), encoders.submit(5, order.append, 6)]
        sooner = encoders.submit(1, order.append, 1)
        failing = encoders.submit(2, operator.truediv, 1, 0)
        gate.set()
        for fut in (blocker, *later, sooner):
            fut.result(timeout=10)
        assert order == [1, 5, 6]  # job 1 before job 5, submitted before it; within a job, as submitted
        with pytest.raises(ZeroDivisionError):
            failing.result(timeout=10)
        gate.clear()
        encoders.submit(0, gate.wait)
        pending = encoders.submit(3, order.append, 9)
    finally:
        gate.set()
        encoders.shutdown()
    assert pending.cancelled() or pending.done()


def test_jobs_holding_only_ids_do_not_wait_behind_a_slow_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A job whose tensors the segment cache answers holds only ids once done: it gives its
    place among the LOOKAHEAD back at once, so while one thread is stuck on a long job
    (a large new tensor being chunked) the other verifies every later tensor instead of
    stopping LOOKAHEAD - 1 jobs in to wait for it. The file object is the same."""
    monkeypatch.setattr(ingest, "MIN_SEGMENT", 64 << 10)
    monkeypatch.setattr(ingest, "JOB_BYTES", 1)  # a job per segment
    monkeypatch.setattr(ingest, "PIPELINE_MIN_BYTES", 0)
    tensors = transformer(11, layers=4, hidden=512, vocab=2048)
    store = Store.open(tmp_path / "store")
    chunk_file(write_safetensors(tmp_path / "base.safetensors", tensors), store.chunker, store.odb, stat_cache=None,
               workers=2)
    store.odb.flush()
    shifted = write_safetensors(tmp_path / "shifted.safetensors", tensors, metadata={"note": "x" * 11})
    expected = chunk_file(shifted, store.chunker, None, workers=0)

    wanted = ingest.LOOKAHEAD + 3
    done: list[int] = []
    seen_while_stuck: list[int] = []
    go_on = threading.Event()
    real = ingest._segment_runs

    def runs(fd: int, segment: object, *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        if segment.offset == 0:  # type: ignore[attr-defined]  # the first job: stuck until the others got far
            go_on.wait(30)  # set as soon as enough others finished; only a failing run waits it out
            seen_while_stuck.append(len(done))
        yield from real(fd, segment, *args, **kwargs)  # type: ignore[arg-type]
        done.append(segment.offset)  # type: ignore[attr-defined]
        if len(done) >= wanted:
            go_on.set()

    monkeypatch.setattr(ingest, "_segment_runs", runs)
    got = chunk_file(shifted, store.chunker, store.odb, stat_cache=None, workers=2)
    assert seen_while_stuck and seen_while_stuck[0] >= wanted, f"only {seen_while_stuck} jobs ran while the first was stuck"
    assert got == expected
