"""Shared pieces of the transfer tests (local and S3): small synthetic models,
logging into a store by path, and whole-store checks."""

from __future__ import annotations

import hashlib
from pathlib import Path

import objstore
from objstore.model.names import CollectionPath
from objstore.model.store import Store
from objstore.model.versions import list_aliases, list_versions, read_entry
from objstore.storage.ids import ObjectId
from objstore.storage.keys import REFS
from objstore.testing.tensorfiles import fine_tune, transformer, write_safetensors

ENTITY = "team"
PROJECT = "proj"
# bf16, 1 MiB of embeddings and 2 MiB per layer: 7 MiB in all, the last layer 2 MiB.
LAYERS, HIDDEN, VOCAB = 3, 512, 1024
CHANGED = [f"layers.{LAYERS - 1}.attn.{p}.weight" for p in ("q", "k", "v", "o")]


def make_models(directory: Path, seed: int = 1) -> tuple[Path, Path]:
    """A base model and a fine-tune whose last layer changed; returns both paths."""
    directory.mkdir(parents=True, exist_ok=True)
    base = transformer(seed, layers=LAYERS, hidden=HIDDEN, vocab=VOCAB)
    base_path = write_safetensors(directory / "base.safetensors", base)
    ft_path = write_safetensors(directory / "finetune.safetensors", fine_tune(base, CHANGED, seed + 100))
    return base_path, ft_path


def log(store: Store | Path | str, path: Path | str, name: str = "model", aliases: list[str] | None = None,
        link: str | None = None) -> objstore.Artifact:
    """Log ``path`` as a model in team/proj (and link it into the registry as ``link``)."""
    with objstore.init(project=PROJECT, entity=ENTITY, store=store) as run:
        art = run.log_model(str(path), name=name, aliases=aliases)
        if link:
            run.link_model(str(path), link, name=name)
    return art


def sha(path: Path | str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def ref_values(store: Store) -> dict[str, bytes]:
    """Every live ref (tombstones dropped) and its value."""
    return {k: oid.raw for k, oid in store.refs.iter_refs(REFS)}


def chain(store: Store, name: str = "model", project: str = PROJECT) -> list[str]:
    """The tree ids (digests) of v0, v1, … of a collection, checking the numbering is dense."""
    coll = CollectionPath(ENTITY, project, name)
    versions = list_versions(store, coll)
    assert [i for i, _ in versions] == list(range(len(versions))), f"versions of {coll} are not dense: {versions}"
    out = []
    for idx, oid in versions:
        entry = read_entry(store, coll, oid)
        assert entry.index == idx, f"{coll}:v{idx} holds an object numbered v{entry.index}"
        out.append(entry.version.digest)
    return out


def aliases(store: Store, name: str = "model") -> dict[str, int]:
    coll = CollectionPath(ENTITY, PROJECT, name)
    return {a: read_entry(store, coll, oid).index for a, oid in list_aliases(store, coll).items()}


def assert_intact(store: Store) -> None:
    """fsck finds nothing wrong, and every ref resolves."""
    from objstore.maintenance.fsck import fsck

    report = fsck(store)
    assert report.ok, [p.message for p in report.problems]
    for key, raw in ref_values(store).items():
        assert store.odb.has_object(ObjectId(raw)), f"{key} points at a missing object"


def use(store: Store, spec: str, root: Path) -> str:
    with objstore.init(project=PROJECT, entity=ENTITY, store=store) as run:
        return run.use_model(spec, root=root)
