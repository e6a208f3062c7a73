"""The chunk index at scale: memory and lookups over a huge index, requests to open a long history.

    python benchmarks/bench_index.py [--entries 10000000] [--queries 100000] [--sessions 300] [--s3]

1. A local store whose consolidated index file holds ``--entries`` chunk entries
   (synthetic: random ids over ``entries / 500`` packs). A fresh subprocess opens
   the store and loads its index; it reports the RSS that added, the time to
   open (the file is checked against its checksum, in blocks) and the time of
   ``--queries`` membership queries (half hits) and as many locates. Raw limits
   of the same run, in another fresh subprocess: the RSS of the ids alone read
   into memory (what a loaded index costs at least), ``np.searchsorted`` of the
   same probes over that in-memory array, and BLAKE3 over the file.
2. ``--sessions`` writer sessions, each storing one small pack, as many
   short-lived logging sessions leave; then the requests a fresh process issues
   to open the store (list + index GETs), with compaction off (as before issue
   13), with automatic compaction at the default threshold, and after
   ``objstore maintenance`` (which also repacks the small packs: packs, and
   of them those marked, which gc deletes past its grace period). ``--s3``
   does it on SeaweedFS too (started here,
   or ``OBJSTORE_TEST_S3_ENDPOINT``).

Prints a table and writes JSON to ``benchmarks/results/index-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import secrets
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402

from objstore.model.store import Store  # noqa: E402
from objstore.storage.ids import Kind, hash_bytes  # noqa: E402
from objstore.storage.indexfile import ENTRY_DTYPE, write_index_file  # noqa: E402
from objstore.storage.keys import index_file_key  # noqa: E402


def build_big_index(store: Path, entries: int) -> tuple[Path, Path]:
    """A store whose only index is one file of ``entries`` entries; and a sample of its ids."""
    Store.open(str(store)).close()
    rng = np.random.default_rng(13)
    ids = np.sort(np.frombuffer(rng.bytes(32 * entries), dtype="S32"))
    packs = max(entries // 500, 1)
    names = sorted(hash_bytes(Kind.PACK, i.to_bytes(8, "little")).hex for i in range(packs))
    table = np.zeros(entries, dtype=ENTRY_DTYPE)
    table["pack"] = rng.integers(0, packs, entries, dtype=np.uint32)
    table["offset"] = rng.integers(49, 100 << 20, entries, dtype=np.uint64)
    table["stored_len"] = 60_000
    table["raw_len"] = 65_536
    table["codec"] = 1
    tmp = store / "tmp" / "big.midx"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as out:
        name = write_index_file(out, [(n, 200 << 20) for n in names], ids, table)
    target = store.joinpath(*index_file_key(name).split("/"))
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(tmp, target)
    sample = store.parent / "sample.npy"
    np.save(sample, ids[rng.integers(0, entries, 50_000)])
    return target, sample


OPEN = textwrap.dedent("""
    import json, sys, time
    import numpy as np
    def rss(kind="VmRSS:"):
        for line in open("/proc/self/status"):
            if line.startswith(kind):
                return int(line.split()[1]) * 1024
    from objstore.model.store import Store
    store, sample, queries = sys.argv[1], sys.argv[2], int(sys.argv[3])
    hits = np.load(sample)
    rng = np.random.default_rng(1)
    probe = [bytes(x).ljust(32, b"\\0") for x in hits[: queries // 2]] + [rng.bytes(32) for _ in range(queries - queries // 2)]
    before, anon, mapped = rss(), rss("RssAnon:"), rss("RssFile:")
    t0 = time.perf_counter()
    s = Store.open_existing(store)
    s.odb.refresh()
    opened = time.perf_counter() - t0
    after_open = rss()
    s.odb.index.contains_many(probe[:1000])
    after_1000 = rss()
    t0 = time.perf_counter()
    found = s.odb.index.contains_many(probe)
    member = time.perf_counter() - t0
    after_member = rss()
    t0 = time.perf_counter()
    locs = s.odb.index.locate_many(probe)
    locate = time.perf_counter() - t0
    assert int(found.sum()) == queries // 2 == sum(l is not None for l in locs), int(found.sum())
    print(json.dumps({"entries": len(s.odb.index), "rss_open": after_open - before, "rss_after_queries": rss() - before,
                      "rss_after_1000": after_1000 - before, "rss_after_membership": after_member - before,
                      "anon_after_queries": rss("RssAnon:") - anon, "file_after_queries": rss("RssFile:") - mapped,
                      "open_s": opened, "membership_s": member, "locate_s": locate}))
""")

RAW = textwrap.dedent("""
    import json, sys, time
    import blake3
    import numpy as np
    def rss():
        for line in open("/proc/self/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    path, sample, queries, entries, offset = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
    hits = np.load(sample)
    rng = np.random.default_rng(1)
    probe = [bytes(x).ljust(32, b"\\0") for x in hits[: queries // 2]] + [rng.bytes(32) for _ in range(queries - queries // 2)]
    probe = np.array(probe, "S32")
    before = rss()
    with open(path, "rb") as f:
        f.seek(offset)
        ids = np.frombuffer(f.read(32 * entries), "S32")
    loaded = rss() - before
    t0 = time.perf_counter()
    pos = np.minimum(np.searchsorted(ids, probe), len(ids) - 1)
    hit = ids[pos] == probe
    search = time.perf_counter() - t0
    assert int(hit.sum()) == queries // 2
    del ids
    t0 = time.perf_counter()
    h = blake3.blake3()
    with open(path, "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
    hashed = time.perf_counter() - t0
    print(json.dumps({"rss_ids_loaded": loaded, "searchsorted_s": search, "blake3_file_s": hashed}))
""")


def child(code: str, *args: str, env: dict[str, str] | None = None) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True,
                         env=dict(os.environ, **(env or {})))
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


SESSIONS = textwrap.dedent("""
    import os, sys
    from objstore.model.store import Store
    from objstore.storage.ids import Kind, hash_bytes
    url, start, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    for i in range(start, start + count):
        s = Store.open(url)  # a fresh database per session, as each logging process has
        raw = os.urandom(2000) + str(i).encode()
        s.odb.add_chunk(hash_bytes(Kind.CHUNK, raw), raw)
        s.odb.flush()
        s.close()
""")

OPEN_REQUESTS = textwrap.dedent("""
    import json, sys
    from objstore.model.store import Store
    from objstore.storage.chunkindex import list_indexes, marked_packs
    s = Store.open_existing(sys.argv[1])
    listing = list_indexes(s.backend)
    before = s.backend.stats.snapshot().requests
    s.odb.refresh()
    print(json.dumps({"requests": s.backend.stats.snapshot().requests - before, "idx_files": len(listing.idx),
                      "index_files": len(listing.files), "packs": len(listing.packs),
                      "marked": len(marked_packs(s.backend) & set(listing.packs))}))
""")


def history(url: str, sessions: int, tag: str) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for mode, threshold in (("no compaction (before)", "0"), ("automatic compaction", "")):
        store = f"{url}-{tag}-{threshold or 'auto'}"
        env = {"OBJSTORE_INDEX_COMPACT_THRESHOLD": threshold} if threshold else {}
        if not threshold:
            os.environ.pop("OBJSTORE_INDEX_COMPACT_THRESHOLD", None)
        t0 = time.perf_counter()
        child(SESSIONS + "\nprint('{}')", store, "0", str(sessions), env=env)
        build = time.perf_counter() - t0
        row = {"backend": tag, "mode": mode, "sessions": sessions, "build_s": build, **child(OPEN_REQUESTS, store)}
        rows.append(row)
        if not threshold:
            objstore_cli = str(Path(sys.executable).parent / "objstore")
            subprocess.run([objstore_cli, "--store", store, "maintenance"], check=True, capture_output=True)
            rows.append({"backend": tag, "mode": "after objstore maintenance", "sessions": sessions,
                         **child(OPEN_REQUESTS, store)})

    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=10_000_000)
    parser.add_argument("--queries", type=int, default=100_000)
    parser.add_argument("--sessions", type=int, default=300)
    parser.add_argument("--s3", action="store_true")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="objstore-bench-index-"))
    proc = None
    try:
        load = os.getloadavg()
        path, sample = build_big_index(tmp / "big", args.entries)
        from objstore.storage.indexfile import FIXED_BYTES, PACK_DTYPE

        big = child(OPEN, str(tmp / "big"), str(sample), str(args.queries))
        # Again, as the next command would: the file was checked once (stamped), and a
        # command asks about far fewer chunks (1,000: a few 64 MiB models).
        small = child(OPEN, str(tmp / "big"), str(sample), "1000")
        offset = FIXED_BYTES - 32 + max(args.entries // 500, 1) * PACK_DTYPE.itemsize
        raw = child(RAW, str(path), str(sample), str(args.queries), str(args.entries), str(offset))
        rows = history(str(tmp / "hist"), args.sessions, "local")
        if args.s3:
            import conftest

            endpoint = os.environ.get("OBJSTORE_TEST_S3_ENDPOINT")
            access = os.environ.get("OBJSTORE_TEST_S3_ACCESS_KEY", conftest.TEST_ACCESS_KEY)
            secret = os.environ.get("OBJSTORE_TEST_S3_SECRET_KEY", conftest.TEST_SECRET_KEY)
            if not endpoint:
                proc, endpoint = conftest.start_seaweedfs(tmp / "weed")
            os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID=access, AWS_SECRET_ACCESS_KEY=secret,
                              AWS_REGION="us-east-1", AWS_ALLOW_HTTP="true", XDG_CACHE_HOME=str(tmp / "cache"))
            bucket = f"objstore-bench-{secrets.token_hex(4)}"
            conftest.create_bucket(conftest.S3Server(endpoint, access, secret), bucket)
            rows += history(f"s3://{bucket}/hist", args.sessions, "s3-seaweedfs")
        mib = 1 << 20
        print(f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} ({os.cpu_count()} cores)")
        print(f"index of {big['entries']:,} entries, file {path.stat().st_size / mib:,.0f} MiB")
        print(f"  RSS added by opening it      {big['rss_open'] / mib:8.1f} MiB   (target < 64; ids alone loaded: "
              f"{raw['rss_ids_loaded'] / mib:,.0f} MiB)")
        print(f"  RSS after 1,000 queries      {big['rss_after_1000'] / mib:8.1f} MiB")
        print(f"  RSS after {args.queries:,} queries {big['rss_after_membership'] / mib:8.1f} MiB   (target < 64)")
        print(f"  RSS after as many locates    {big['rss_after_queries'] / mib:8.1f} MiB   (anonymous "
              f"{big['anon_after_queries'] / mib:.1f} MiB, mapped file pages {big['file_after_queries'] / mib:.1f} MiB: "
              "lookups release each window, see objstore.storage.indexfile)")
        print(f"  open (checksum, map)         {big['open_s']:8.3f} s     (BLAKE3 over the file: {raw['blake3_file_s']:.3f} s, "
              f"ratio {big['open_s'] / raw['blake3_file_s']:.2f})")
        print(f"  {args.queries:,} membership queries  {big['membership_s']:8.3f} s     (target < 0.5; searchsorted in memory "
              f"{raw['searchsorted_s']:.3f} s, ratio {big['membership_s'] / raw['searchsorted_s']:.2f})")
        print(f"  {args.queries:,} locates             {big['locate_s']:8.3f} s")
        print(f"  next open (checked before)   {small['open_s']:8.3f} s; after 1,000 queries "
              f"RSS +{small['rss_after_queries'] / mib:.1f} MiB "
              f"(anonymous {small['anon_after_queries'] / mib:.1f} MiB), {small['membership_s'] * 1000:.1f} ms")
        print(f"{'backend':<14} {'history':<28} {'sessions':>8} {'packs':>6} {'marked':>6} {'.idx':>5} "
              f"{'index files':>11} {'open requests':>13}")
        for r in rows:
            print(f"{r['backend']:<14} {r['mode']:<28} {r['sessions']:>8} {r['packs']:>6} {r['marked']:>6} {r['idx_files']:>5} "
                  f"{r['index_files']:>11} {r['requests']:>13}")
        out_dir = ROOT / "benchmarks" / "results"
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / f"index-{time.strftime('%Y%m%d-%H%M%S')}.json"
        out.write_text(json.dumps({"when": time.time(), "machine": platform.platform(), "load": load, "args": vars(args),
                                   "big_index": big, "next_open_1000_queries": small, "raw_limits": raw, "history": rows}, indent=2))
        print(f"wrote {out}")
    finally:
        if proc is not None:
            import conftest

            conftest.stop_process(proc)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
