"""The hostile-store fuzzer: damage one file of a small real store, then use it.

A template store is built once (two versions of a safetensors model, a
directory model, a registry link; :func:`hostile_support.build_template`). Each
example copies it, picks one of its files (a pack, an index, a consolidated index file, a metadata object,
a ref, the config, a reflog entry) and one mutation (flip a byte, truncate,
extend with junk, replace by a FIFO, by a link to ``/dev/zero`` or to a file
outside the store, by a tiny zstd frame declaring 4 TiB, by msgpack declaring a
4 GiB length, grow it sparsely to 2 GiB, remove it), then runs, each as an
``objstore`` subprocess under a 1 GiB address-space limit and a timeout:

- ``fsck`` on the damaged store,
- ``clone`` of it into a fresh directory,
- ``pull`` from it into a clone taken when it held only its first version,
- ``use-model`` of one of its versions.

Each must end cleanly (:func:`hostile_support.problem`): success, a one-line
objstore error, or fsck's damage report; never a hang, a MemoryError, a
traceback or an unexpected exception. A success must hand back the logged
bytes: use-model's output is compared with them, and every version a
successful clone or pull holds is read back in-process and compared too. A
failed clone leaves no directory, and a sentinel directory beside the store
(which the "link outside" mutation points into) must stay as it was.

Budgets: ``FUZZ_EXAMPLES`` examples in the default run (derandomized, so CI
sees the same ones each time), ``OBJSTORE_FUZZ_EXAMPLES`` (default 2000) in the
``-m slow`` run. ``OBJSTORE_FUZZ_LOG=FILE`` appends one line per example
(mutation, file kind, each probe's exit code).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
from hostile_support import (
    SPECS,
    ZSTD_BOMB,
    Arena,
    Probe,
    Template,
    build_template,
    materialized,
    problem,
    run_probe,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import objstore
from objstore.errors import ObjstoreError
from objstore.storage import codecs

FUZZ_EXAMPLES = 30
LONG_EXAMPLES = int(os.environ.get("OBJSTORE_FUZZ_EXAMPLES", "2000"))
FUZZ_TIMEOUT = 30.0
# Set to a file path to get one line per example (mutation, category, exit codes).
LOG = os.environ.get("OBJSTORE_FUZZ_LOG")

CATEGORIES = ("pack", "idx", "midx", "object", "ref", "config", "reflog")
MUTATIONS = ("flip", "truncate", "extend", "fifo", "dev-zero", "link-outside", "zstd-bomb", "msgpack-bomb",
             "sparse-2gib", "remove")

# msgpack headers that declare far more than follows: array32, map32, bin32 and str32
# of 2**32-1, inside a map that looks like a metadata object's.
MSGPACK_BOMBS = (
    b"\x82\xa1v\x01\xa7entries\xdd\xff\xff\xff\xff",
    b"\xdf\xff\xff\xff\xff",
    b"\x82\xa1v\x01\xa6chunks\xc6\xff\xff\xff\xff",
    b"\x83\xa1v\x01\xa1k\xa4tree\xa4name\xdb\xff\xff\xff\xff",
)


def category(rel: str) -> str | None:
    if rel.startswith("packs/"):
        for suffix, kind in ((".pack", "pack"), (".midx", "midx"), (".idx", "idx")):
            if rel.endswith(suffix):
                return kind
        return None
    if rel.startswith("objects/"):
        return "object"
    if rel.startswith("refs/"):
        return "ref"
    if rel == "config":
        return "config"
    if rel.startswith("logs/"):
        return "reflog"
    return None


@dataclass(frozen=True)
class Case:
    file: str
    mutation: str
    position: int
    mask: int
    junk: bytes
    bomb: bytes
    spec: str

    def __str__(self) -> str:
        return f"{self.mutation} {self.file} (position {self.position}, spec {self.spec})"


def edited(data: bytes, case: Case) -> bytes | None:
    """The file's new bytes for the mutations that rewrite it (None for the others)."""
    m = case.mutation
    if m == "flip":
        if not data:
            return b"\x01"
        i = case.position % len(data)
        return data[:i] + bytes([data[i] ^ case.mask]) + data[i + 1:]
    if m == "truncate":
        return data[:case.position % max(len(data), 1)]
    if m == "extend":
        return data + case.junk
    if m == "zstd-bomb":
        return ZSTD_BOMB
    if m == "msgpack-bomb":
        # Objects are zstd frames of msgpack; refs, config and reflog entries are raw.
        return codecs.zstd_compressor().compress(case.bomb) if case.file.startswith("objects/") else case.bomb
    return None


def mutate(arena: Arena, case: Case, store: Path | None = None) -> None:
    """Apply ``case`` to the arena's copy of the store (or to ``store``)."""
    path = (store or arena.store) / case.file
    data = path.read_bytes()
    m = case.mutation
    new = edited(data, case)
    if new is not None:
        path.write_bytes(new)
    elif m == "fifo":
        path.unlink()
        os.mkfifo(path)
    elif m == "dev-zero":
        path.unlink()
        path.symlink_to("/dev/zero")
    elif m == "link-outside":
        # A regular file outside the store, holding what the original held: a reader
        # may follow it (its bytes are verified), a writer must never write through it.
        target = arena.sentinel / "planted"
        target.write_bytes(data)
        path.unlink()
        path.symlink_to(target)
        arena.sentinel_state = {**arena.sentinel_state, "planted": _digest(data)}
    elif m == "sparse-2gib":
        with open(path, "r+b") as f:
            f.truncate(2 << 30)
    elif m == "remove":
        path.unlink()
    else:  # pragma: no cover
        raise AssertionError(m)


def _digest(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def _read_back(store: Path, template: Template, scratch: Path) -> list[str]:
    """Every spec a store written by a successful clone or pull holds must read back
    as logged (a spec it lacks is fine: the damaged source may not have had it)."""
    wrong = []
    for i, spec in enumerate(SPECS):
        dest = scratch / f"read-{i}"
        try:
            art = objstore.Api(store=str(store), entity="e", project="demo").artifact(spec)
            path = Path(art.download(dest))
        except ObjstoreError:
            continue
        got = materialized(path)
        if len(got) == 1 and "" not in got and len(template.expected[spec]) == 1 and "" in template.expected[spec]:
            got = {"": next(iter(got.values()))}
        if got != template.expected[spec]:
            wrong.append(f"{store.name} serves other bytes for {spec}")
    return wrong


def run_case(template: Template, case: Case) -> list[str]:
    """Damage a fresh copy of the template as ``case`` says, probe it; what went wrong."""
    root = Path(tempfile.mkdtemp(prefix="objstore-fuzz-"))
    try:
        arena = Arena.make(template, root / "arena")
        # use-model writes to the store it reads (the run that used the version), so
        # it gets its own, equally damaged copy and all four probes run side by side.
        use_store = arena.root / "store-use"
        shutil.copytree(template.store, use_store, symlinks=True)
        mutate(arena, case)
        mutate(arena, case, use_store)
        pull_dst = arena.work / "pull" / ".objstore"
        shutil.copytree(template.early_clone, pull_dst, symlinks=True)
        store = str(arena.store)
        out = arena.work / "out"
        with ThreadPoolExecutor(4) as pool:
            probes = [
                pool.submit(run_probe, "--store", store, "fsck", cwd=arena.work, timeout=FUZZ_TIMEOUT),
                pool.submit(run_probe, "clone", store, str(arena.work / "clone"), cwd=arena.work, timeout=FUZZ_TIMEOUT),
                pool.submit(run_probe, "--store", str(pull_dst), "pull", store, cwd=arena.work, timeout=FUZZ_TIMEOUT),
                pool.submit(run_probe, "--store", str(use_store), "use-model", case.spec, "--root", str(out),
                            cwd=arena.work, timeout=FUZZ_TIMEOUT),
            ]
            fsck, clone, pull, use = (f.result() for f in probes)

        found: list[str] = []

        def judge(p: Probe, ok_codes: tuple[int, ...]) -> bool:
            why = problem(p, ok_codes=ok_codes)
            if why:
                found.append(f"{why}: {p.describe()}")
            return why is None and p.code == 0

        judge(fsck, (0, 1, 3))
        if judge(clone, (0, 1)):
            found.extend(_read_back(arena.work / "clone", template, root))
        elif (arena.work / "clone").exists():
            found.append(f"a failed clone left {arena.work / 'clone'}: {clone.describe()}")
        if judge(pull, (0, 1)):
            found.extend(_read_back(pull_dst, template, root))
        if judge(use, (0, 1)):
            got = materialized(Path(use.out.strip().splitlines()[-1]))
            if got != template.expected[case.spec]:
                found.append(f"use-model {case.spec} handed back other bytes than were logged")
        if not arena.sentinel_untouched():
            found.append("something wrote outside the store (the sentinel directory changed)")
        strays = sorted(p.name for p in arena.root.iterdir() if p.name not in ("store", "store-use", "work", "sentinel"))
        if strays:
            found.append(f"files appeared beside the store: {strays}")
        if LOG:
            with open(LOG, "a") as f:
                codes = " ".join(f"{name}={p.code}" for name, p in
                                 (("fsck", fsck), ("clone", clone), ("pull", pull), ("use", use)))
                f.write(f"{case.mutation}\t{category(case.file)}\t{codes}\t{len(found)}\n")
        return found
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    built = build_template(tmp_path_factory.mktemp("fuzz-template"))
    _consolidate_half(built.store)
    return built


def _consolidate_half(store: Path) -> None:
    """Merge half the packs' ``.idx`` into a consolidated index file (as a
    compaction does), so the template holds both kinds of index."""
    import io

    from objstore.storage.indexfile import from_pack_index, merge, write_index_file
    from objstore.storage.packs import decode_idx

    idx = sorted((store / "packs").glob("*.idx"))[: max(len(list((store / "packs").glob("*.idx"))) // 2, 1)]
    parts = [from_pack_index(p.stem, (store / "packs" / f"{p.stem}.pack").stat().st_size, decode_idx(p.read_bytes(), p.stem))
             for p in idx]
    out = io.BytesIO()
    name = write_index_file(out, *merge(parts))
    (store / "packs" / f"{name}.midx").write_bytes(out.getvalue())
    for p in idx:
        p.unlink()


def _files(template: Template) -> list[str]:
    rels = sorted(p.relative_to(template.store).as_posix() for p in template.store.rglob("*") if p.is_file())
    return [r for r in rels if category(r) is not None]


def cases(files: list[str]) -> st.SearchStrategy[Case]:
    by_category = {c: [f for f in files if category(f) == c] for c in CATEGORIES}
    file = st.sampled_from([c for c in CATEGORIES if by_category[c]]).flatmap(lambda c: st.sampled_from(by_category[c]))
    return st.builds(
        Case,
        file=file,
        mutation=st.sampled_from(MUTATIONS),
        position=st.integers(0, 1 << 32),
        mask=st.integers(1, 255),
        junk=st.binary(min_size=1, max_size=64),
        bomb=st.sampled_from(MSGPACK_BOMBS),
        spec=st.sampled_from(SPECS),
    )


def _fuzz(template: Template, examples: int, derandomize: bool) -> None:
    @settings(max_examples=examples, deadline=None, derandomize=derandomize, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
    @given(case=cases(_files(template)))
    def check(case: Case) -> None:
        found = run_case(template, case)
        assert not found, f"{case}:\n" + "\n".join(found)

    check()


def test_fuzz_hostile_store(template: Template) -> None:
    _fuzz(template, FUZZ_EXAMPLES, derandomize=True)


@pytest.mark.slow
def test_fuzz_hostile_store_long(template: Template) -> None:
    _fuzz(template, LONG_EXAMPLES, derandomize=False)


# The mutations that mean something for a binary index (the bombs are for zstd and msgpack).
@pytest.mark.parametrize("mutation", ["flip", "truncate", "extend", "fifo", "link-outside", "sparse-2gib", "remove"])
def test_every_mutation_of_a_consolidated_index_file(template: Template, mutation: str) -> None:
    (midx,) = [f for f in _files(template) if category(f) == "midx"]
    found = run_case(template, Case(midx, mutation, 3000, 0x10, b"junk" * 4, MSGPACK_BOMBS[0], SPECS[0]))
    assert not found, "\n".join(found)
