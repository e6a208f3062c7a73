"""The local cache of remote stores: bytes and requests of a first and a second use_model on S3.

    python -m benchmarks.bench_cache [--quick] [--size BYTES]

Logs the ``base`` bf16 workload straight into a SeaweedFS bucket, then, each in a
freshly opened store with the cache in an empty directory: reads every pack of
the bucket whole (the raw limit: one GET per pack), ``use_model`` with the cache off, a first one (cold
cache) and a second one into another directory (warm cache). Prints bytes
received from the bucket, requests and seconds of each, and the ratios (second
over first; each over the raw read). Uses ``OBJSTORE_TEST_S3_ENDPOINT`` (+
``_ACCESS_KEY`` / ``_SECRET_KEY``) when set, else starts its own SeaweedFS.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import conftest

import objstore
from benchmarks.workloads import model_file
from objstore.model.store import Store
from objstore.storage.keys import PACKS, pack_name_of
from objstore.storage.remotecache import cache_info

DEFAULT_SIZE = 256 << 20
QUICK_SIZE = 32 << 20


def measured(url: str, what: str, fn: Any) -> dict[str, Any]:
    store = Store.open(url)
    try:
        start = time.perf_counter()
        fn(store)
        secs = time.perf_counter() - start
        stats = store.backend.stats.snapshot()
    finally:
        store.close()
    return {"op": what, "seconds": secs, "requests": stats.requests, "bytes_received": stats.bytes_received}


def read_packs(store: Store) -> None:
    for info in list(store.backend.iter_prefix(PACKS)):
        if pack_name_of(info.key) is not None:
            store.backend.get_range(info.key, 0, info.size)


def use(root: Path) -> Any:
    def run(store: Store) -> None:
        with objstore.init(project="bench", entity="bench", store=store) as r:
            r.use_model("model:v0", root=str(root))
    return run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"a {QUICK_SIZE >> 20} MiB model instead of {DEFAULT_SIZE >> 20} MiB")
    parser.add_argument("--size", type=int, default=None, help="model size in bytes")
    args = parser.parse_args(argv)
    size = args.size or (QUICK_SIZE if args.quick else DEFAULT_SIZE)
    os.environ.setdefault("OBJSTORE_QUIET", "1")
    tmp = Path(tempfile.mkdtemp(prefix="objstore-bench-cache-"))
    os.environ["OBJSTORE_CACHE_DIR"] = str(tmp / "cache")
    os.environ.pop("OBJSTORE_CACHE_SIZE", None)
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
        url = f"s3://{bucket}/bench"
        path, _ = model_file("base", size)
        with objstore.init(project="bench", entity="bench", store=url) as run:
            run.log_model(str(path), name="model")
        rows = [measured(url, "raw: every pack, one GET each", read_packs)]
        os.environ["OBJSTORE_CACHE_SIZE"] = "0"
        rows.append(measured(url, "use_model, no cache", use(tmp / "n")))
        del os.environ["OBJSTORE_CACHE_SIZE"]
        shutil.rmtree(tmp / "cache", ignore_errors=True)  # the cache starts empty
        rows.append(measured(url, "use_model, cold cache", use(tmp / "a")))
        rows.append(measured(url, "use_model again, warm cache", use(tmp / "b")))
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        for d in ("n", "a", "b"):
            (written,) = [p for p in (tmp / d).rglob("*") if p.is_file()]
            assert hashlib.sha256(written.read_bytes()).hexdigest() == digest, d
        raw, _, first, second = rows
        load = os.getloadavg()[0]
        print(f"model {size >> 20} MiB bf16 on SeaweedFS (loopback), load average {load:.1f}")
        print(f"{'operation':<32} {'s':>7} {'requests':>9} {'received MB':>12} {'x raw bytes':>12} {'x raw time':>11}")
        for r in rows:
            print(f"{r['op']:<32} {r['seconds']:>7.2f} {r['requests']:>9} {r['bytes_received'] / 1e6:>12.2f} "
                  f"{r['bytes_received'] / raw['bytes_received']:>12.4f} {r['seconds'] / raw['seconds']:>11.2f}")
        share = second["bytes_received"] / max(first["bytes_received"], 1)
        print(f"second use_model fetched {share:.4%} of the first's bytes (target <= 1%: {'yes' if share <= 0.01 else 'no'})")
        info = cache_info()
        print(f"cache: {info.bytes / 1e6:.1f} MB of {info.bound / 1e9:.1f} GB, entries {info.entries}")
        out_dir = ROOT / "benchmarks" / "results"
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / f"cache-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.write_text(json.dumps({"when": time.time(), "size": size, "load": load, "rows": rows,
                                   "second_over_first_bytes": share}, indent=2))
        print(f"wrote {out}")
    finally:
        if proc is not None:
            conftest.stop_process(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
