"""Requests and wall time per command as a store's history grows (issue 13).

    python benchmarks/bench_requests.py [--sizes 10,300,3000] [--delay-ms 25] [--versions 1000]

Builds stores written by 10, 300 and 3,000 separate sessions, each logging one
small file as a new version of one collection (so N sessions leave N packs, N
versions, N runs, and whatever compaction the sessions ran on the way), then
measures, in stores on a local disk and on SeaweedFS through a counting proxy
on loopback that adds ``--delay-ms`` to every request (a real bucket answers in
20-50 ms):

- ``use_model`` of the newest version (one small file) into an empty directory;
- ``log_model`` of a new small file;
- ``log -n 10`` and ``log`` (the first page, the newest 50) of the collection.

Each command runs on a freshly opened Store with an empty user cache directory
(no index file copy from an earlier command, nothing warm), as a new process on
a new machine would. Requests are counted twice for S3: by the proxy (what the
server saw) and by the backend (``stats.requests``); locally by the backend (one
per file operation). The bound checked is issue 13's: from the smallest store to
each larger one, requests grow by at most 1.5x + 10.

How the stores are built, cheaply: the sessions run on a local store, one after
another in this process, each with a Store (and so an object database, a run
and a compaction decision) of its own, exactly what separate processes would
do; the store is snapshotted at 10 and 300 sessions. Each snapshot is then
copied key by key into a bucket of its own: the key layout is the same on every
backend (objstore.storage.backend.base), so the bucket holds the very store a
team's sessions would have left there. Writing 3,000 sessions through S3 would
cost ~100,000 requests and tell nothing more about what a command costs after.

``--versions`` adds one collection of that many versions (cheap ones: a
symlink each, no packs) for the "first page of a 1,000-version log" target.
Prints a table and writes JSON to ``benchmarks/results/requests-<time>.json``.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import conftest  # noqa: E402  (sets the AWS metadata safety variables, SeaweedFS helpers)

import objstore  # noqa: E402
from objstore.api.runinfo import log_with_runs  # noqa: E402
from objstore.model.names import CollectionPath  # noqa: E402
from objstore.model.store import Store  # noqa: E402
from objstore.model.versions import commit_version  # noqa: E402
from objstore.storage.backend import open_backend  # noqa: E402
from objstore.storage.objects import SYMLINK, Tree, TreeEntry  # noqa: E402
from objstore.testing.s3proxy import MisbehavingProxy  # noqa: E402

ENTITY, PROJECT, NAME = "team", "bench", "model"
FILE_BYTES = 4096
UPLOAD_THREADS = 16


def session(location: Path, work: Path, i: int) -> None:
    """One session of its own: a Store, a run, one small file logged as a new version."""
    path = work / "session.bin"
    path.write_bytes(os.urandom(FILE_BYTES))
    with Store.open(location) as store, objstore.init(entity=ENTITY, project=PROJECT, store=store) as run:
        run.log_model(str(path), name=NAME)


def many_versions(location: Path, count: int) -> None:
    coll = CollectionPath(ENTITY, PROJECT, "long")
    with Store.open(location) as store:
        for i in range(count):
            tree = store.odb.put_object(Tree((TreeEntry("link", SYMLINK, 1, target=f"t{i}"),)))
            commit_version(store, coll, tree=tree, size=1, new_bytes=0, artifact_type="model", metadata={},
                           description=None, run=f"{ENTITY}/{PROJECT}/long-run-{i % 10}")


def upload(local: Path, url: str) -> int:
    """Copy every key of the local store at ``local`` into the bucket at ``url``.

    The ``.idx`` files (those no index file covers: a compaction deleted the
    others) go last, one at a time in the order the sessions wrote them and a
    second apart, so the bucket dates them as a team's sessions would have (a
    bucket's dates have a second's resolution; readers read the newest first)."""
    source = open_backend(local)
    target = open_backend(url)
    infos = list(source.iter_prefix(""))
    loose = sorted((i for i in infos if i.key.endswith(".idx")), key=lambda i: i.mtime)
    rest = [i.key for i in infos if not i.key.endswith(".idx")]
    with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
        list(pool.map(lambda k: target.put(k, source.get(k, max_size=1 << 30)), rest))
    for info in loose:
        time.sleep(1.05)
        target.put(info.key, source.get(info.key, max_size=1 << 30))
    return len(infos)


def layout(location: Path) -> dict[str, int]:
    backend = open_backend(location)
    counts = {"pack": 0, "idx": 0, "midx": 0}
    for info in backend.iter_prefix("packs/"):
        kind = info.key.rsplit(".", 1)[-1]
        if kind in counts:
            counts[kind] += 1
    return counts


class Commands:
    """The measured commands, each on a freshly opened store with an empty user cache."""

    def __init__(self, work: Path) -> None:
        self.work = work

    def use_model(self, store: Store) -> None:
        with objstore.init(entity=ENTITY, project=PROJECT, store=store) as run:
            run.use_model(f"{NAME}:latest", root=self.work / f"out-{secrets.token_hex(4)}")

    def log_model(self, store: Store) -> None:
        path = self.work / "new.bin"
        path.write_bytes(os.urandom(FILE_BYTES))
        with objstore.init(entity=ENTITY, project=PROJECT, store=store) as run:
            run.log_model(str(path), name=NAME)

    @staticmethod
    def log(count: int, name: str = NAME) -> Callable[[Store], None]:
        def command(store: Store) -> None:  # what `objstore log -n COUNT` reads
            log_with_runs(store, CollectionPath(ENTITY, PROJECT, name), limit=count)
        return command


def opener_for(location: str | Path, endpoint: str | None = None) -> Callable[[], Store]:
    """Opens the store at ``location`` afresh each call (through ``endpoint``, for a bucket)."""
    return lambda: Store.open(location, create=False, options={"endpoint": endpoint} if endpoint else None)


def measure(open_store: Callable[[], Store], command: Callable[[Store], None], proxy: MisbehavingProxy | None,
            work: Path, cache: Path | None = None) -> dict[str, Any]:
    """Requests and wall time of ``command`` on a fresh Store; with an empty user
    cache (removed after), or ``cache``, kept (a machine that ran commands before)."""
    keep = cache is not None
    cache = cache if cache is not None else Path(tempfile.mkdtemp(dir=work, prefix="cache-"))
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(cache)
    try:
        if proxy is not None:
            proxy.take_count()
        start = time.perf_counter()
        store = open_store()
        try:
            command(store)
        finally:
            store.close()
        wall = time.perf_counter() - start
        seen = proxy.take_count() if proxy is not None else None
    finally:
        if old is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = old
        if not keep:
            shutil.rmtree(cache, ignore_errors=True)
    return {"requests": store.backend.stats.requests, "proxy_requests": seen, "seconds": wall}


def warm(size: int, what: str, command: Callable[[Store], None], opener: Callable[[], Store], proxy: MisbehavingProxy,
         commands: Commands, work: Path) -> dict[str, Any]:
    """``command`` on a machine that ran a ``use_model`` before (its remote cache
    kept), after a teammate elsewhere logged a new version (a new pack and
    ``.idx`` the cache has not seen): what the cache saves a team."""
    cache = Path(tempfile.mkdtemp(dir=work, prefix="warm-cache-"))
    measure(opener, commands.use_model, proxy, work, cache)  # this machine, earlier
    measure(opener, commands.log_model, proxy, work)  # a teammate's session, on a machine of its own
    row = {"size": size, "where": "s3", "command": f"{what}, warm cache", **measure(opener, command, proxy, work, cache)}
    shutil.rmtree(cache, ignore_errors=True)
    print(f"  {size:>5} s3    {row['command']:22} {row['requests']:>5} requests (proxy {row['proxy_requests']})"
          f" {row['seconds']:.2f} s", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="10,300,3000", help="sessions (packs) per store, ascending")
    ap.add_argument("--delay-ms", type=float, default=25.0, help="added to every S3 request by the proxy")
    ap.add_argument("--versions", type=int, default=1000, help="versions of the long collection (0: none)")
    ap.add_argument("--trials", type=int, default=3, help="runs of each cold command (the fastest is shown)")
    ap.add_argument("--no-s3", action="store_true", help="local stores only")
    ap.add_argument("--work", default=None, help="scratch directory (default: a temp dir, removed after)")
    ap.add_argument("--out", default=None, help="JSON results file")
    ap.add_argument("--reuse", action="store_true", help="reuse the stores an earlier run left in --work")
    args = ap.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="objstore-bench-requests-"))
    work.mkdir(parents=True, exist_ok=True)
    os.environ["XDG_CACHE_HOME"] = str(work / "build-cache")
    server = proc = proxy = None
    results: dict[str, Any] = {"load": os.getloadavg(), "machine": platform.machine(), "cpus": os.cpu_count(),
                               "delay_ms": args.delay_ms, "sizes": sizes, "rows": []}
    try:
        # -- build ------------------------------------------------------------
        building = work / "building"
        snapshots: dict[int, Path] = {}
        done = 0
        start = time.perf_counter()
        for size in sizes:
            snapshots[size] = work / f"store-{size}"
            if args.reuse and snapshots[size].is_dir():
                print(f"reusing {snapshots[size]}: {layout(snapshots[size])}", flush=True)
                continue
            while done < size:
                session(building, work, done)
                done += 1
            shutil.copytree(building, snapshots[size])
            print(f"built {size} sessions: {layout(snapshots[size])} ({time.perf_counter() - start:.0f} s)", flush=True)
        if args.versions and not (args.reuse and (snapshots[sizes[-1]] / "refs" / ENTITY / PROJECT / "long").is_dir()):
            many_versions(snapshots[sizes[-1]], args.versions)
        # -- S3 ---------------------------------------------------------------
        urls: dict[int, str] = {}
        if not args.no_s3:
            endpoint = os.environ.get("OBJSTORE_TEST_S3_ENDPOINT")
            access = os.environ.get("OBJSTORE_TEST_S3_ACCESS_KEY", conftest.TEST_ACCESS_KEY)
            secret = os.environ.get("OBJSTORE_TEST_S3_SECRET_KEY", conftest.TEST_SECRET_KEY)
            if not endpoint:
                proc, endpoint = conftest.start_seaweedfs(work / "weed")
            server = conftest.S3Server(endpoint, access, secret)
            os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID=access, AWS_SECRET_ACCESS_KEY=secret,
                              AWS_REGION=conftest.TEST_REGION, AWS_ALLOW_HTTP="true")
            for size, local in snapshots.items():
                bucket = f"bench-requests-{size}-{secrets.token_hex(4)}"
                conftest.create_bucket(server, bucket)
                urls[size] = f"s3://{bucket}/store"
                print(f"uploaded {upload(local, urls[size])} keys of the {size}-session store", flush=True)
            up = urlparse(endpoint)
            proxy = MisbehavingProxy((up.hostname or "127.0.0.1", up.port or 80), key_suffix="", mode="none",
                                     delay=args.delay_ms / 1000)
            proxy.start()
        # -- measure ----------------------------------------------------------
        commands = Commands(work)
        plan: list[tuple[str, Callable[[Store], None]]] = [
            ("use_model", commands.use_model), ("log_model", commands.log_model),
            ("log -n 10", commands.log(10)), ("log (first 50)", commands.log(50)),
        ]
        if urls and proxy is not None:  # unrecorded: the server's and the proxy's first requests are slow
            measure(opener_for(urls[sizes[0]], proxy.endpoint), commands.log(10), proxy, work)
        for size in sizes:
            wheres: list[tuple[str, Callable[[], Store], MisbehavingProxy | None]] = [
                ("local", opener_for(snapshots[size]), None)]
            if size in urls and proxy is not None:
                wheres.append(("s3", opener_for(urls[size], proxy.endpoint), proxy))
            for where, opener, via in wheres:
                for what, command in plan:
                    trials = [measure(opener, command, via, work) for _ in range(args.trials)]
                    row = {"size": size, "where": where, "command": what, **min(trials, key=lambda t: t["seconds"]),
                           "trials": trials}  # the fastest of the trials; requests are the same in each (cold)
                    results["rows"].append(row)
                    print(f"  {size:>5} {where:5} {what:16} {row['requests']:>5} requests"
                          f"{'' if row['proxy_requests'] is None else ' (proxy ' + str(row['proxy_requests']) + ')'}"
                          f" {row['seconds']:.2f} s", flush=True)
            if size in urls and proxy is not None:  # the same commands on a machine whose cache is warm
                for what, command in plan[:3]:
                    results["rows"].append(warm(size, what, command, opener_for(urls[size], proxy.endpoint), proxy,
                                                commands, work))
        if args.versions:
            big = sizes[-1]
            for where in ["local", *(["s3"] if big in urls and proxy is not None else [])]:
                opener = opener_for(snapshots[big]) if where == "local" or proxy is None else opener_for(urls[big], proxy.endpoint)
                for what, count in ((f"log of {args.versions} versions, first 50", 50),
                                    (f"log of {args.versions} versions, all", 0)):
                    row = {"size": big, "where": where, "command": what,
                           **measure(opener, Commands.log(count or args.versions, "long"), proxy if where == "s3" else None, work)}
                    results["rows"].append(row)
                    print(f"  {where:5} {what:34} {row['requests']:>5} requests {row['seconds']:.2f} s", flush=True)
    finally:
        if proxy is not None:
            proxy.close()
        if proc is not None:
            conftest.stop_process(proc)
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print_table(results)
    out = Path(args.out) if args.out else ROOT / "benchmarks" / "results" / f"requests-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")
    return 0


def print_table(results: dict[str, Any]) -> None:
    rows = results["rows"]
    sizes = results["sizes"]
    print(f"\nrequests (wall s) per command; load {results['load'][0]:.1f}, {results['delay_ms']:.0f} ms added per S3 request")
    print(f"{'where':6} {'command':22} " + " ".join(f"{str(s) + ' packs':>18}" for s in sizes) + "  bound 1.5x+10")
    # The bound, for requests and for wall time: 1.5x the smallest store's, plus 10
    # requests (on S3, plus 10 requests' delay in seconds; locally, the requests bound only).
    per_request = results["delay_ms"] / 1000
    for where in ("local", "s3"):
        for what in ("use_model", "use_model, warm cache", "log_model", "log_model, warm cache", "log -n 10",
                     "log -n 10, warm cache", "log (first 50)"):
            cells = {r["size"]: r for r in rows if r["where"] == where and r["command"] == what}
            if not cells:
                continue
            base, base_wall = cells[sizes[0]]["requests"], cells[sizes[0]]["seconds"]
            ok = all(c["requests"] <= 1.5 * base + 10 for c in cells.values())
            wall_ok = where == "local" or all(c["seconds"] <= 1.5 * base_wall + 10 * per_request for c in cells.values())
            verdict = ("ok" if ok else "EXCEEDED") + ("" if where == "local" else ", wall " + ("ok" if wall_ok else "EXCEEDED"))
            if what == "log (first 50)":
                verdict = "n/a: shows min(50, versions)"
            line = " ".join(f"{str(cells[s]['requests']) + ' (' + format(cells[s]['seconds'], '.2f') + ')':>18}"
                            if s in cells else f"{'-':>18}" for s in sizes)
            print(f"{where:6} {what:22} {line}  {verdict}")
    for r in rows:
        if r["command"].startswith("log of"):
            print(f"{r['where']:6} {r['command']}: {r['requests']} requests, {r['seconds']:.2f} s")


if __name__ == "__main__":
    sys.exit(main())
