"""Names differing only in case: W&B's names are case-sensitive and objstore keeps
them as they are in keys (older stores stay found), so on a case-insensitive file
system (macOS's and Windows's defaults) ``MNIST`` and ``mnist`` would share one
directory. A store refuses the second of two such names wherever one is first
made (collection, entity, project, alias, run id) and wherever refs arrive (pull,
fetch, clone, push). The key function's side: two names map to keys equal under
case folding exactly when they differ only in ASCII case, so those are the only
pairs to refuse."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_transfer_deletions import remote_url  # noqa: F401  (the local/S3 remote fixture)

import objstore
from objstore.errors import InvalidName
from objstore.model.store import Store
from objstore.storage.keys import case_twin, collection_prefix, encode_name
from objstore.transfer.remotes import open_store, remote_add

_ANY_NAME = st.text(st.characters(codec="utf-8", exclude_characters="\0/:"), min_size=1, max_size=12)


def _flip(name: str, flips: list[bool]) -> str:
    return "".join(c.swapcase() if c.isascii() and f else c for c, f in zip(name, flips + [False] * len(name)))


@settings(max_examples=200, deadline=None)
@given(_ANY_NAME, _ANY_NAME)
def test_keys_fold_together_exactly_when_names_differ_only_in_ascii_case(a: str, b: str) -> None:
    same_ignoring_case = a.encode().lower() == b.encode().lower()
    assert (encode_name(a).casefold() == encode_name(b).casefold()) == same_ignoring_case
    twin = case_twin([collection_prefix("e", "p", a) + "versions/v0", collection_prefix("e", "p", b) + "versions/v0"])
    assert (twin is not None) == (same_ignoring_case and a != b)


@settings(max_examples=50, deadline=None)
@given(_ANY_NAME, st.lists(st.booleans(), max_size=12))
def test_a_case_flipped_name_is_found_at_any_depth(name: str, flips: list[bool]) -> None:
    flipped = _flip(name, flips)
    for key, other in [(f"refs/{encode_name(name)}/p/n/versions/v0", f"refs/{encode_name(flipped)}/p/m/aliases/a"),
                       (f"refs/e/{encode_name(name)}/runs/r", f"refs/e/{encode_name(flipped)}/n/versions/v0"),
                       (f"refs/e/p/n/aliases/{encode_name(name)}", f"refs/e/p/n/aliases/{encode_name(flipped)}")]:
        twin = case_twin([key, other])
        assert (twin is None) == (flipped == name)
        if twin is not None:
            assert (twin.existing, twin.twin, twin.name) == (key, name, flipped)


def _log(store: Store, path: Path, name: str, entity: str = "team", project: str = "proj",
         aliases: list[str] | None = None) -> objstore.Artifact:
    with objstore.init(entity=entity, project=project, store=store) as run:
        return run.log_model(str(path), name=name, aliases=aliases)


@pytest.fixture
def model(tmp_path: Path) -> Path:
    path = tmp_path / "model.bin"
    path.write_bytes(b"weights" * 100)
    return path


def test_a_second_name_differing_only_in_case_is_refused_where_it_is_first_made(tmp_path: Path, model: Path) -> None:
    store = Store.open(tmp_path / "store")
    _log(store, model, "MNIST", aliases=["Best"])
    with pytest.raises(InvalidName, match=r"'mnist' differs only in case from 'MNIST' \(team/proj/MNIST/"):
        _log(store, model, "mnist")
    with pytest.raises(InvalidName, match="'Team' differs only in case from 'team'"):
        _log(store, model, "other", entity="Team")
    with pytest.raises(InvalidName, match="'PROJ' differs only in case from 'proj'"):
        _log(store, model, "other", project="PROJ")
    with pytest.raises(InvalidName, match="'best' differs only in case from 'Best'"):
        _log(store, model, "MNIST", aliases=["best"])
    art = objstore.Api(store=store).artifact("team/proj/MNIST:latest")
    art.aliases.append("BEST")
    with pytest.raises(InvalidName, match="'BEST' differs only in case from 'Best'"):
        art.save()
    with objstore.init(entity="team", project="proj", id="Run-1", store=store) as run:
        run.log({"loss": 1.0})
    with pytest.raises(InvalidName, match="'run-1' differs only in case from 'Run-1'"):
        objstore.init(entity="team", project="proj", id="run-1", store=store)
    # No collection or alias of the refused ones was written (a refused log leaves
    # its run's record, as a failed run); the exact names go on working.
    assert [c.name for c in objstore.Api(store=store).artifact_collections("team/proj", "model")] == ["MNIST"]
    _log(store, model, "MNIST", aliases=["Best"])
    _log(store, model, "mnist", project="other")  # another project: another directory
    with objstore.init(entity="team", project="proj", id="Run-1", store=store, resume="allow"):
        pass


def test_twins_arriving_by_pull_or_push_are_refused_and_nothing_changes(tmp_path: Path, model: Path,
                                                                       remote_url: str) -> None:  # noqa: F811
    local = Store.open(tmp_path / "local")
    _log(local, model, "mnist")
    remote_add(local, "origin", remote_url)
    objstore.push(local)
    _log(open_store(remote_url), model, "MNIST", project="elsewhere")  # no twin there: another project
    other = Store.open(tmp_path / "other")
    _log(other, model, "MNIST")
    remote_add(other, "origin", remote_url)
    with pytest.raises(InvalidName, match=r"push refused: .*'MNIST' differs only in case from 'mnist'.*nothing was sent"):
        objstore.push(other)
    with pytest.raises(InvalidName, match=r"'mnist' differs only in case from 'MNIST'.*nothing was changed here"):
        objstore.pull(other)
    names = [(c.project, c.name) for p in ("proj", "elsewhere")
             for c in objstore.Api(store=other).artifact_collections(f"team/{p}", "model")]
    assert names == [("proj", "MNIST")]
    assert [(c.project, c.name) for c in objstore.Api(store=open_store(remote_url)).artifact_collections("team/proj", "model")] \
        == [("proj", "mnist")]
