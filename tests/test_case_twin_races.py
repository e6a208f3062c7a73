"""Case twins made at the same instant, and by runs with a random id.

A listing finds a twin already in the store; two real processes that list at once
both find none. Of two processes making names that differ only in ASCII case
(an entity, a project, a collection, a given run id, an alias of one collection),
exactly one must win and the other get InvalidName with no ref of its spelling written: the folded name claim
(``objstore.model.nameclaims``) decides. A run with a random id must not land in a
twin of an existing entity or project either, even when it logs nothing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import objstore
from objstore.errors import InvalidName
from objstore.model.store import Store

_WORKER = textwrap.dedent("""
    import sys, time, pathlib
    import objstore
    from objstore.errors import InvalidName
    store, mode, spelling, start = sys.argv[1], sys.argv[2], sys.argv[3], pathlib.Path(sys.argv[4])
    model = start.parent / f"model-{spelling}.bin"
    model.write_bytes(spelling.encode() * 100)
    while not start.exists():
        pass  # spin: both processes leave together
    try:
        if mode == "collection":
            with objstore.init(entity="race", project="coll", store=store) as run:
                run.log_model(str(model), name=spelling)
        elif mode == "entity":  # a random-id run that only logs metrics
            with objstore.init(entity=spelling, project="p", store=store) as run:
                run.log({"loss": 0.5})
        elif mode == "project":
            with objstore.init(entity="race", project=spelling, store=store) as run:
                run.log_model(str(model), name="m")
        elif mode == "alias":  # a new version of one collection, each with its alias
            with objstore.init(entity="race", project="aliases", store=store) as run:
                run.log_model(str(model), name="m", aliases=[spelling])
        elif mode == "alias-save":  # an alias added to the version both read
            art = objstore.Api(store=store).artifact("race/aliases/m:v0")
            art.aliases.append(spelling)
            art.save()
        else:  # a given run id
            with objstore.init(entity="race", project="ids", id=spelling, store=store) as run:
                run.log({"loss": 0.5})
    except InvalidName as exc:
        print(exc, file=sys.stderr)
        sys.exit(3)
""")


def _ref_parts(store: Path | str) -> set[str]:
    """Every path part under refs/ (the names as spelled in keys)."""
    opened = Store.open_existing(store) if isinstance(store, Path) else Store.open(store)
    return {part for key in opened.backend.iter_prefix("refs/") for part in key.key.split("/")}


@pytest.mark.parametrize("mode, spellings", [
    ("collection", ("MNIST", "mnist")),
    ("entity", ("Acme", "acme")),
    ("project", ("Vision", "vision")),
    ("run-id", ("Run-1", "run-1")),
    ("alias", ("Best", "best")),
    ("alias-save", ("Prod.Lock", "prod.lock")),
])
def test_of_two_processes_making_case_twins_at_once_exactly_one_wins(tmp_path: Path, mode: str,
                                                                      spellings: tuple[str, str]) -> None:
    _race(tmp_path, mode, spellings, [tmp_path / f"store{r}" for r in range(3)])


@pytest.mark.s3
@pytest.mark.parametrize("mode, spellings", [("collection", ("MNIST", "mnist")), ("entity", ("Acme", "acme")),
                                             ("alias", ("Best", "best")), ("alias-save", ("Prod.Lock", "prod.lock"))])
def test_case_twins_at_once_on_s3(s3_bucket_url: str, tmp_path: Path, mode: str, spellings: tuple[str, str]) -> None:
    _race(tmp_path, mode, spellings, [f"{s3_bucket_url}-{r}" for r in range(2)])


def _race(tmp_path: Path, mode: str, spellings: tuple[str, str], stores: list[Path | str]) -> None:
    script = tmp_path / "worker.py"
    script.write_text(_WORKER)
    for round_, store in enumerate(stores):
        Store.open(store)
        if mode == "alias-save":
            first = tmp_path / "first.bin"
            first.write_bytes(b"first" * 100)
            with objstore.init(entity="race", project="aliases", store=store) as run:
                run.log_model(str(first), name="m")
        start = tmp_path / f"start{round_}"
        procs = [subprocess.Popen([sys.executable, str(script), str(store), mode, s, str(start)],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE) for s in spellings]
        start.touch()
        results = [(p.wait(timeout=120), p.stderr.read().decode() if p.stderr else "") for p in procs]
        codes = sorted(code for code, _ in results)
        assert codes == [0, 3], results
        loser = spellings[[code for code, _ in results].index(3)]
        winner = spellings[1 - spellings.index(loser)]
        assert f"{loser!r} differs only in case from {winner!r}" in "".join(err for _, err in results)
        parts = _ref_parts(store)
        assert winner in parts and loser not in parts, (mode, parts)  # no key of the loser's spelling
        if mode.startswith("alias"):  # the loser's version was refused before its ref too: nothing half-written
            versions = [a.version for a in objstore.Api(store=store).artifacts(None, "race/aliases/m")]
            assert versions == ["v0"], versions
            assert sorted(objstore.Api(store=store).artifact("race/aliases/m:v0").aliases) == sorted([winner, "latest"])


def test_a_random_id_run_in_a_twin_entity_or_project_is_refused_and_writes_nothing(tmp_path: Path) -> None:
    store = tmp_path / "store"
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights" * 100)
    with objstore.init(entity="team", project="proj", store=store) as run:
        run.log_model(str(model), name="m")
    for entity, project in (("Team", "proj"), ("team", "PROJ")):
        run = objstore.init(entity=entity, project=project, store=store)
        run.log({"loss": 1.0})
        with pytest.raises(InvalidName, match="differs only in case"):
            run.finish()
    # A use of another project's version: the run's own names are still checked.
    run = objstore.init(entity="team", project="Proj", store=store)
    with pytest.raises(InvalidName, match="'Proj' differs only in case from 'proj'"):
        run.use_model("team/proj/m:latest", root=tmp_path / "out")
    parts = _ref_parts(store)
    assert not {"Team", "PROJ", "Proj"} & parts
    assert [r.path.split("/")[:2] for r in objstore.Api(store=store).runs("team/proj")] == [["team", "proj"]]
    # The exact names go on working, in a store whose claims were made now or never.
    with objstore.init(entity="team", project="proj", store=store) as run:
        run.log({"loss": 0.1})
    with objstore.init(entity="other", project="proj", store=store) as run:
        run.use_model("team/proj/m:latest", root=tmp_path / "out2")


def test_a_claim_left_by_a_failed_writer_is_taken_over_only_once_stale(tmp_path: Path) -> None:
    """A writer that claimed ``Ghost`` and died before its first ref leaves a claim
    with nothing under it: refused while young (it may be about to write), taken over
    after NAME_CLAIM_STALE_SECONDS."""
    from objstore.constants import NAME_CLAIM_STALE_SECONDS
    from objstore.storage.keys import name_claim_key

    store = Store.open(tmp_path / "store")
    model = tmp_path / "model.bin"
    model.write_bytes(b"weights" * 100)
    young = f"refs/Ghost/\n{time.time():.3f}".encode()
    store.backend.put(name_claim_key("ghost"), young)
    with pytest.raises(InvalidName, match="'ghost' differs only in case from 'Ghost'"):
        with objstore.init(entity="ghost", project="p", store=store) as run:
            run.log_model(str(model), name="m")
    old = f"refs/Ghost/\n{time.time() - NAME_CLAIM_STALE_SECONDS - 1:.3f}".encode()
    store.backend.put(name_claim_key("ghost"), old)
    with objstore.init(entity="ghost", project="p", store=store) as run:
        run.log_model(str(model), name="m")
    assert store.backend.get(name_claim_key("ghost")).startswith(b"refs/ghost/\n")
    # Now live: the other spelling is refused again, whatever the claim's age.
    with pytest.raises(InvalidName, match="'Ghost' differs only in case from 'ghost'"):
        with objstore.init(entity="Ghost", project="p", store=store) as run:
            run.log_model(str(model), name="m")
