"""Request rate and throughput of the backends: local directory and SeaweedFS S3 on loopback.

    python benchmarks/bench_backend.py [--small-count 300] [--large-mib 64]

Uses ``OBJSTORE_TEST_S3_ENDPOINT`` (+ ``_ACCESS_KEY`` / ``_SECRET_KEY``) when set,
else starts its own SeaweedFS with the test helpers. Prints a table and writes
JSON to ``benchmarks/results/backend-<timestamp>.json``.
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
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import conftest  # noqa: E402  (sets the AWS metadata safety variables, SeaweedFS helpers)

from objstore.storage.backend import open_backend  # noqa: E402


def bench(backend, small_count: int, small_size: int, large_size: int, tmp: Path) -> list[dict]:  # type: ignore[no-untyped-def]
    rows = []
    payload = os.urandom(small_size)

    def timed(op: str, count: int, nbytes: int, fn) -> None:  # type: ignore[no-untyped-def]
        start = time.perf_counter()
        for i in range(count):
            fn(i)
        elapsed = time.perf_counter() - start
        rows.append({"op": op, "count": count, "bytes": nbytes, "seconds": elapsed,
                     "ops_per_s": count / elapsed, "mb_per_s": nbytes / elapsed / 1e6})

    timed(f"put {small_size // 1024} KiB", small_count, small_count * small_size,
          lambda i: backend.put(f"small/{i}", payload))
    timed(f"get {small_size // 1024} KiB", small_count, small_count * small_size,
          lambda i: backend.get(f"small/{i}"))
    timed(f"put_if_absent new {small_size // 1024} KiB", small_count, small_count * small_size,
          lambda i: backend.put_if_absent(f"pia/{i}", payload))
    timed("put_if_absent existing", small_count, 0, lambda i: backend.put_if_absent(f"pia/{i}", payload))
    timed("get_range 4 KiB", small_count, small_count * 4096, lambda i: backend.get_range(f"small/{i}", 1000, 4096))
    timed("compare_and_swap", small_count // 3, 0,
          lambda i: backend.compare_and_swap("ref", None if i == 0 else str(i - 1).encode(), str(i).encode()))
    big = tmp / "big.bin"
    big.write_bytes(os.urandom(large_size))
    timed(f"put_file_if_absent {large_size >> 20} MiB", 1, large_size,
          lambda i: backend.put_file_if_absent("big/pack", big))
    timed(f"get {large_size >> 20} MiB", 1, large_size, lambda i: backend.get("big/pack"))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small-count", type=int, default=300)
    parser.add_argument("--small-kib", type=int, default=64)
    parser.add_argument("--large-mib", type=int, default=64)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="objstore-bench-"))
    proc = None
    try:
        endpoint = os.environ.get("OBJSTORE_TEST_S3_ENDPOINT")
        access = os.environ.get("OBJSTORE_TEST_S3_ACCESS_KEY", conftest.TEST_ACCESS_KEY)
        secret = os.environ.get("OBJSTORE_TEST_S3_SECRET_KEY", conftest.TEST_SECRET_KEY)
        if not endpoint:
            proc, endpoint = conftest.start_seaweedfs(tmp / "weed")
        server = conftest.S3Server(endpoint, access, secret)
        os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID=access, AWS_SECRET_ACCESS_KEY=secret,
                          AWS_REGION="us-east-1", AWS_ALLOW_HTTP="true")
        bucket = f"objstore-bench-{secrets.token_hex(4)}"
        conftest.create_bucket(server, bucket)
        results = {}
        for name, url in [("local", str(tmp / "local")), ("s3-seaweedfs", f"s3://{bucket}/bench")]:
            backend = open_backend(url)
            results[name] = {"rows": bench(backend, args.small_count, args.small_kib * 1024,
                                           args.large_mib << 20, tmp),
                             "stats": {"requests": backend.stats.requests, "bytes_sent": backend.stats.bytes_sent,
                                       "bytes_received": backend.stats.bytes_received}}
        print(f"{'backend':<14} {'operation':<30} {'ops/s':>10} {'MB/s':>10}")
        for name, result in results.items():
            for row in result["rows"]:
                print(f"{name:<14} {row['op']:<30} {row['ops_per_s']:>10.1f} {row['mb_per_s']:>10.1f}")
        out_dir = ROOT / "benchmarks" / "results"
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / f"backend-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.write_text(json.dumps({"when": time.time(), "machine": platform.platform(), "args": vars(args),
                                   "results": results}, indent=2))
        print(f"wrote {out}")
    finally:
        if proc is not None:
            conftest.stop_process(proc)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
