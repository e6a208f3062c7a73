"""Page times of ``objstore ui`` on a store with 1,000 versions (issue 17).

    python -m benchmarks.bench_ui [--versions 1000] [--trials 5] [--keep DIR]

Builds a local store through the public API, as scripts would: ``--versions``
versions spread over two projects and four collections (``team/vision/resnet``
gets most of them), logged by runs of ten versions each, the newest two of
``resnet`` a safetensors model and its fine-tune, linked into the registry
(``team/model-registry/Classifier``). Each version but those two is one small
file, so the build takes about a minute: page cost depends on how many
versions, refs and runs there are, not on their bytes (the diff and version
pages, which read files, get a real model).

Then, for each page, a fresh Store and the UI's own Starlette application served
by uvicorn on a loopback port in this process, fetched with urllib: the first
request (nothing warm but the OS page cache) with the backend's counters
(requests: one per file operation, a listing is one; bytes read), then
``--trials`` more, whose median is the warm time. Pages: store, project,
registry, collection (the first page, and one half-way back), version, diff,
run, and usage (``objstore du``'s figures, which read every version by design).
Prints a table and writes JSON to ``benchmarks/results/ui-<time>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import uvicorn  # noqa: E402

import objstore  # noqa: E402
from objstore.model.store import Store  # noqa: E402
from objstore.testing.tensorfiles import fine_tune, transformer, write_safetensors  # noqa: E402
from objstore.ui.app import UI  # noqa: E402
from objstore.ui.serve import address, bind  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
# (project, collection, type, share of the versions); resnet takes the rest.
SPREAD = (("vision", "eval-report", "report", 0.1), ("nlp", "tokenizer", "model", 0.25),
          ("nlp", "embeddings", "dataset", 0.05))
PER_RUN = 10  # versions each run logs


def build(store: Path, files: Path, versions: int) -> dict[str, Any]:
    """The store described in the module docstring; returns what the pages address."""
    files.mkdir(parents=True, exist_ok=True)
    plan = [(p, n, t, int(versions * share)) for p, n, t, share in SPREAD]
    plan.insert(0, ("vision", "resnet", "model", versions - sum(c for *_, c in plan) - 2))
    k = 0
    for project, name, kind, count in plan:
        for start in range(0, count, PER_RUN):
            with objstore.init(entity="team", project=project, job_type="train", config={"lr": 0.001, "start": start},
                               store=str(store)) as run:
                for i in range(start, min(count, start + PER_RUN)):
                    path = files / f"{name}-{i}.bin"
                    path.write_bytes(os.urandom(256) + f"{name} {i}".encode())
                    run.log_artifact(str(path), name=name, type=kind)
                    k += 1
                run.log({"loss": 1.0 / (start + 1)})
    base = transformer(1, layers=4, hidden=256, vocab=1024)
    write_safetensors(files / "base.safetensors", base)
    write_safetensors(files / "tuned.safetensors", fine_tune(base, ["layers.3.attn.q.weight"], 2))
    with objstore.init(entity="team", project="vision", job_type="fine-tune", config={"lr": 3e-4},
                       store=str(store)) as run:
        run.log_model(str(files / "base.safetensors"), name="resnet")
        tuned = run.log_model(str(files / "tuned.safetensors"), name="resnet", aliases=["prod"])
        run.link_model(str(files / "tuned.safetensors"), "Classifier", name="resnet")
        run_id = run.id
    newest = int(tuned.version.lstrip("v"))
    return {"versions": k + 2, "newest": newest, "run": run_id, "older": 50 * (newest // 100)}


class Served:
    """The UI's application over a freshly opened store, on a loopback port, in a thread."""

    def __init__(self, location: Path) -> None:
        self.store = Store.open(location, create=False)
        sock = bind("127.0.0.1", 0)
        self.url = address(sock).rstrip("/")
        self.server = uvicorn.Server(uvicorn.Config(UI(self.store).app, log_level="warning", access_log=False,
                                                    lifespan="off"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)

    def get(self, path: str) -> tuple[float, int]:
        """(seconds, response bytes) of one GET; a page that is not 200 is an error here."""
        t = time.perf_counter()
        with urllib.request.urlopen(self.url + path, timeout=600) as r:
            body = r.read()
            if r.status != 200:
                raise RuntimeError(f"{path}: HTTP {r.status}")
        return time.perf_counter() - t, len(body)

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join()
        self.store.close()


def pages(made: dict[str, Any]) -> dict[str, str]:
    n, coll = made["newest"], "entity=team&project=vision&name=resnet"
    return {
        "store": "/", "project": "/project?entity=team&project=vision",
        "registry": "/project?entity=team&project=model-registry",
        "collection": f"/collection?{coll}", f"collection, skip={made['older']}": f"/collection?{coll}&skip={made['older']}",
        "version": f"/version?{coll}&v={n}", "diff": f"/diff?{coll}&a={n - 1}&b={n}",
        "run": f"/run?entity=team&project=vision&id={made['run']}", "usage (reads every version)": "/usage",
    }


def measure(location: Path, path: str, trials: int) -> dict[str, Any]:
    served = Served(location)
    try:
        before = served.store.backend.stats.snapshot()
        first, size = served.get(path)
        after = served.store.backend.stats.snapshot()
        warm = [served.get(path)[0] for _ in range(trials)]
    finally:
        served.close()
    return {"first_ms": first * 1e3, "warm_ms": statistics.median(warm) * 1e3 if warm else None,
            "requests": after.requests - before.requests, "bytes_read": after.bytes_received - before.bytes_received,
            "html_bytes": size}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--versions", type=int, default=1000)
    ap.add_argument("--trials", type=int, default=5)
    ap.add_argument("--keep", type=Path, default=None, help="build (or reuse) the store here instead of a temp dir")
    args = ap.parse_args(argv)
    work = args.keep or Path(tempfile.mkdtemp(prefix="bench-ui-"))
    store, made_file = work / "store", work / "made.json"
    t = time.perf_counter()
    if made_file.exists():
        made = json.loads(made_file.read_text())
    else:
        made = build(store, work / "files", args.versions)
        made_file.write_text(json.dumps(made))
    built = time.perf_counter() - t
    rows = {name: measure(store, path, args.trials) for name, path in pages(made).items()}
    load = os.getloadavg()
    print(f"objstore ui on a local store of {made['versions']} versions (built in {built:.0f} s); "
          f"load {load[0]:.1f}, {os.cpu_count()} cores")
    print(f"{'page':30} {'first ms':>9} {'warm ms':>9} {'requests':>9} {'KiB read':>9} {'KiB html':>9}")
    for name, r in rows.items():
        print(f"{name:30} {r['first_ms']:9.1f} {r['warm_ms']:9.1f} {r['requests']:9d} "
              f"{r['bytes_read'] / 1024:9.1f} {r['html_bytes'] / 1024:9.1f}")
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"ui-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.write_text(json.dumps({"versions": made["versions"], "build_seconds": built, "load": load,
                               "python": platform.python_version(), "pages": rows}, indent=2))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
