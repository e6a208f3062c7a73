"""Push and pull throughput and request counts: local directory and SeaweedFS S3 on loopback.

    python -m benchmarks.bench_transfer [--quick] [--size BYTES]
    python benchmarks/bench_transfer.py --quick

Logs the ``base`` bf16 workload and its ``head`` variant (last two layers and
the output head retrained) into a local store, then times, for each remote
(a local directory and a SeaweedFS bucket): a full push of ``base`` to an empty
remote, the incremental push of ``head``, and a clone of the whole remote into
an empty directory (which is fetch + pull). MB/s is stored (compressed) bytes
moved per second and logical model bytes per second; requests per GiB are the
remote backend's request counter over the stored bytes moved. The incremental
push also reports bytes sent against the stored size of the changed tensors.

Uses ``OBJSTORE_TEST_S3_ENDPOINT`` (+ ``_ACCESS_KEY`` / ``_SECRET_KEY``) when
set, else starts its own SeaweedFS with the test helpers. Prints a table and
writes JSON to ``benchmarks/results/transfer-<timestamp>.json``.
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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import conftest

import objstore
from benchmarks.workloads import model_file
from objstore.model.store import Store
from objstore.transfer.remotes import clone, push

GiB = 1 << 30
DEFAULT_SIZE = 512 << 20
QUICK_SIZE = 64 << 20


def log_version(store_dir: Path, variant: str, size: int) -> Any:
    path, _ = model_file(variant, size)
    with objstore.init(project="bench", entity="bench", store=store_dir) as run:
        return run.log_model(str(path), name="model", aliases=[variant])


def row(op: str, remote: str, result: Any, logical: int) -> dict[str, Any]:
    secs = max(result.seconds, 1e-9)
    moved = result.chunk_bytes
    return {
        "op": op, "remote": remote, "seconds": round(secs, 3), "chunk_bytes": moved, "logical_bytes": logical,
        "stored_mb_per_s": moved / secs / 1e6, "logical_mb_per_s": logical / secs / 1e6,
        "requests": result.requests, "requests_per_gib": result.requests / (moved / GiB) if moved else None,
        "bytes_sent": result.bytes_sent, "bytes_received": result.bytes_received, "packs": result.packs,
    }


def run_remote(name: str, url: str, size: int, tmp: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    source = tmp / f"source-{name}"
    base = log_version(source, "base", size)
    logical = model_file("base", size)[0].stat().st_size
    store = Store.open_existing(source)
    rows = [row("push base (full)", name, push(store, url), logical)]
    store.close()
    head = log_version(source, "head", size)
    changed = model_file("head", size)[1].changed_bytes()
    store = Store.open_existing(source)
    r = push(store, url)
    store.close()
    inc = row("push head (incremental)", name, r, changed)
    inc["sent_over_changed_stored"] = r.bytes_sent / head.new_bytes if head.new_bytes else None
    rows.append(inc)
    copy, r = clone(url, tmp / f"clone-{name}")
    copy.close()
    rows.append(row("clone (pull all)", name, r, 2 * logical))
    info = {"logical": logical, "base_stored": base.new_bytes, "head_stored": head.new_bytes, "head_changed_logical": changed}
    return rows, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help=f"a {QUICK_SIZE >> 20} MiB model instead of {DEFAULT_SIZE >> 20} MiB")
    parser.add_argument("--size", type=int, default=None, help="model size in bytes")
    parser.add_argument("--no-s3", action="store_true", help="local directory remote only")
    args = parser.parse_args(argv)
    size = args.size or (QUICK_SIZE if args.quick else DEFAULT_SIZE)
    os.environ.setdefault("OBJSTORE_QUIET", "1")

    tmp = Path(tempfile.mkdtemp(prefix="objstore-bench-transfer-"))
    proc = None
    try:
        remotes = [("dir", str(tmp / "remote-dir"))]
        if not args.no_s3:
            endpoint = os.environ.get("OBJSTORE_TEST_S3_ENDPOINT")
            access = os.environ.get("OBJSTORE_TEST_S3_ACCESS_KEY", conftest.TEST_ACCESS_KEY)
            secret = os.environ.get("OBJSTORE_TEST_S3_SECRET_KEY", conftest.TEST_SECRET_KEY)
            if not endpoint:
                proc, endpoint = conftest.start_seaweedfs(tmp / "weed")
            os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID=access, AWS_SECRET_ACCESS_KEY=secret,
                              AWS_REGION="us-east-1", AWS_ALLOW_HTTP="true")
            bucket = f"objstore-bench-{secrets.token_hex(4)}"
            conftest.create_bucket(conftest.S3Server(endpoint, access, secret), bucket)
            remotes.append(("s3", f"s3://{bucket}/bench"))
        rows: list[dict[str, Any]] = []
        info: dict[str, Any] = {}
        for name, url in remotes:
            got, info = run_remote(name, url, size, tmp)
            rows.extend(got)

        print(f"model {size >> 20} MiB bf16: base stored {info['base_stored'] / 1e6:.1f} MB, "
              f"head adds {info['head_stored'] / 1e6:.1f} MB stored ({info['head_changed_logical'] / 1e6:.1f} MB of tensors changed)")
        print(
            f"{'remote':<6} {'operation':<26} {'s':>7} {'stored MB/s':>12} {'logical MB/s':>13} "
            f"{'requests':>9} {'req/GiB':>8} {'sent MB':>8} {'recv MB':>8}"
        )
        for r in rows:
            per_gib = f"{r['requests_per_gib']:.0f}" if r["requests_per_gib"] else "-"
            print(
                f"{r['remote']:<6} {r['op']:<26} {r['seconds']:>7.2f} {r['stored_mb_per_s']:>12.1f} {r['logical_mb_per_s']:>13.1f} "
                f"{r['requests']:>9} {per_gib:>8} {r['bytes_sent'] / 1e6:>8.1f} {r['bytes_received'] / 1e6:>8.1f}"
            )
        for r in rows:
            if "sent_over_changed_stored" in r:
                print(f"{r['remote']}: incremental push sent {r['sent_over_changed_stored']:.3f}x the stored size of the changed tensors")
        out_dir = ROOT / "benchmarks" / "results"
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / f"transfer-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.write_text(
            json.dumps({"when": time.time(), "machine": platform.platform(), "size": size, "model": info, "rows": rows}, indent=2)
        )
        print(f"wrote {out}")
    finally:
        if proc is not None:
            conftest.stop_process(proc)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
