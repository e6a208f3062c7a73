"""Lazy tensor reads (``Artifact.safe_open``): bytes and requests per tensor, against a full download.

    python benchmarks/bench_lazy.py [--layers 7] [--hidden 1024]

Logs a bf16 transformer-shaped safetensors model (64 MiB with the defaults) into
a local store and into SeaweedFS S3 on loopback (``OBJSTORE_TEST_S3_ENDPOINT``
when set, else its own server, as bench_backend does), then, from a freshly
opened store each time, counts with the backend's counters: opening the file
(header), ``get_tensor`` of the largest, a middle and the smallest tensor, a
32-row slice, and ``download`` of the whole version (the limit each is compared
with, in the same run). Bytes fetched are shown against the tensor's stored
bytes (its chunks' payloads, from the index). Writes JSON to
``benchmarks/results/lazy-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import conftest  # noqa: E402  (sets the AWS metadata safety variables, SeaweedFS helpers)

import objstore  # noqa: E402
from objstore.api.artifact import Artifact, logged_version  # noqa: E402
from objstore.storage.objects import FileObject  # noqa: E402
from objstore.storage.trees import entry_at  # noqa: E402
from objstore.testing.tensorfiles import transformer, write_safetensors  # noqa: E402

NAME = "model.safetensors"


def fresh(url: str) -> Artifact:
    return objstore.Api(store=url).artifact("e/p/lazy:latest")


def stored_bytes(art: Artifact, start: int, length: int) -> tuple[int, int]:
    """(stored payload bytes, chunk count) of the chunks covering ``start .. start + length``."""
    store, resolved = logged_version(art)
    entry = entry_at(store.odb, resolved.version.tree, NAME)
    assert entry.id is not None
    fobj = store.odb.get_object(entry.id)
    assert isinstance(fobj, FileObject)
    pos, ids = 0, []
    for cid, n in fobj.chunks:
        if pos < start + length and pos + n > start:
            ids.append(cid)
        pos += n
    locs = store.odb.locate_many(ids)
    return sum(loc.stored_len for _, loc in locs), len(locs)


def counted(art: Artifact, fn: Callable[[], object]) -> dict[str, float]:
    stats = logged_version(art)[0].backend.stats
    before, start = stats.snapshot(), time.perf_counter()
    fn()
    seconds, after = time.perf_counter() - start, stats.snapshot()
    return {"requests": after.requests - before.requests, "bytes": after.bytes_received - before.bytes_received,
            "seconds": seconds}


def bench(url: str, tmp: Path, tensors: dict[str, tuple[str, tuple[int, ...], bytes]]) -> list[dict[str, Any]]:
    art = fresh(url)
    logged_version(art)[0].odb.refresh()  # the chunk index: the store's opening cost, not the file's
    rows: list[dict[str, Any]] = [{"op": "open (header)", **counted(art, lambda: art.safe_open(NAME))}]
    with art.safe_open(NAME) as f:
        infos = {n: (f.get_slice(n).get_shape(), len(tensors[n][2])) for n in f.keys()}
    by_size = sorted(infos, key=lambda n: infos[n][1])
    offsets = _offsets(tmp / NAME)
    for label, name in [("largest", by_size[-1]), ("middle", by_size[len(by_size) // 2]), ("smallest", by_size[0])]:
        art = fresh(url)
        logged_version(art)[0].odb.refresh()
        with art.safe_open(NAME) as f:
            row = counted(art, lambda f=f, name=name: f.get_tensor(name))
        stored, chunks = stored_bytes(art, *offsets[name])
        rows.append({"op": f"get_tensor {label} ({infos[name][1] >> 10} KiB)", **row, "stored": stored, "chunks": chunks})
    name = by_size[-1]
    art = fresh(url)
    logged_version(art)[0].odb.refresh()
    with art.safe_open(NAME) as f:
        rows.append({"op": f"get_slice {name}[0:32]", **counted(art, lambda f=f: f.get_slice(name)[0:32])})
    art = fresh(url)
    logged_version(art)[0].odb.refresh()
    out = tmp / f"download-{secrets.token_hex(3)}"
    rows.append({"op": "download (the limit)", **counted(art, lambda: art.download(out))})
    return rows


def _offsets(path: Path) -> dict[str, tuple[int, int]]:
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    return {k: (8 + n + v["data_offsets"][0], v["data_offsets"][1] - v["data_offsets"][0])
            for k, v in header.items() if k != "__metadata__"}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--layers", type=int, default=7)
    parser.add_argument("--hidden", type=int, default=1024)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="objstore-bench-lazy-"))
    proc = None
    try:
        endpoint = os.environ.get("OBJSTORE_TEST_S3_ENDPOINT")
        access = os.environ.get("OBJSTORE_TEST_S3_ACCESS_KEY", conftest.TEST_ACCESS_KEY)
        secret = os.environ.get("OBJSTORE_TEST_S3_SECRET_KEY", conftest.TEST_SECRET_KEY)
        if not endpoint:
            proc, endpoint = conftest.start_seaweedfs(tmp / "weed")
        os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID=access, AWS_SECRET_ACCESS_KEY=secret,
                          AWS_REGION="us-east-1", AWS_ALLOW_HTTP="true")
        bucket = f"objstore-bench-{secrets.token_hex(4)}"
        conftest.create_bucket(conftest.S3Server(endpoint, access, secret), bucket)
        tensors = transformer(1, layers=args.layers, hidden=args.hidden)
        write_safetensors(tmp / NAME, tensors)
        results = {}
        for where, url in [("local", str(tmp / "local")), ("s3-seaweedfs", f"s3://{bucket}/bench")]:
            with objstore.init("e", "p", store=url) as run:
                run.log_model(path=str(tmp / NAME), name="lazy")
            results[where] = bench(url, tmp, tensors)
        print(f"load: {os.getloadavg()[0]:.2f}  model: {(tmp / NAME).stat().st_size >> 20} MiB")
        print(f"{'store':<13} {'operation':<40} {'requests':>8} {'fetched':>11} {'stored':>11} {'ratio':>6} {'s':>7}")
        for where, rows in results.items():
            for r in rows:
                ratio = f"{r['bytes'] / r['stored']:.4f}" if r.get("stored") else ""
                print(f"{where:<13} {r['op']:<40} {r['requests']:>8} {r['bytes']:>11} {r.get('stored', ''):>11} {ratio:>6} "
                      f"{r['seconds']:>7.3f}")
        out_dir = ROOT / "benchmarks" / "results"
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / f"lazy-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.write_text(json.dumps({"when": time.time(), "machine": platform.platform(), "load": os.getloadavg(),
                                   "args": vars(args), "results": results}, indent=2))
        print(f"wrote {out}")
    finally:
        if proc is not None:
            conftest.stop_process(proc)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
