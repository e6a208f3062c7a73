"""Commands over artifacts and models: init, log-model, use-model, link-model, ls,
log, show, alias, delete, annotations. Each is a few lines over the library; the store and
the shared options come from :mod:`cli.context`."""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from objstore.api.artifact import Artifact, artifact_of
from objstore.api.naming import new_run_id
from objstore.api.public import Api
from objstore.api.runinfo import RunInfo, log_with_runs
from objstore.errors import CorruptObject, InvalidInput, NotFound
from objstore.model.annotations import (
    Edit,
    annotation_history,
    collection_annotation_history,
    edit_annotations,
    edit_collection_annotations,
    read_annotations,
    read_collection_annotations,
)
from objstore.model.deletion import delete_collection, delete_version
from objstore.model.names import (
    check_alias,
    check_aliases,
    check_name,
    check_tags,
    parse_version_spec,
)
from objstore.model.store import init_store
from objstore.model.versions import (
    collection_exists,
    delete_alias,
    list_collections,
    list_projects,
    missing_collection,
    resolve,
    set_alias,
)

from . import output as out
from .completion import complete_versions
from .context import (
    State,
    artifact_dict,
    check_log_args,
    command_run,
    entity_option,
    json_option,
    names,
    parse_metadata,
    pass_state,
    project_option,
    resolve_spec,
    run_option,
)

# -- commands -------------------------------------------------------------------

@click.command("init")
@json_option
@pass_state
def init_cmd(state: State, as_json: bool) -> None:
    """Create a store (or say it is there): --store, else $OBJSTORE_DIR, else
    ./.objstore in the current directory, as git init does.

    \b
    Example:
      objstore init
      objstore --store s3://models/team init
    """
    store, created = init_store(state.location)
    state.adopt(store)
    if as_json:
        out.emit_json({"store": str(store.location), "created": created})
    else:
        click.echo(f"{'Initialized empty' if created else 'Reinitialized existing'} objstore store at {store.location}")


@click.command("log-model")
@click.argument("path")
@click.option("--name", "-n", default=None, help="Collection name [run-<run id>-<basename>].")
@click.option("--alias", "-a", "aliases", multiple=True, help="Alias to set (repeatable).")
@click.option("--metadata", "-m", multiple=True, metavar="KEY=VALUE", help="Metadata entry (repeatable; JSON values kept typed).")
@click.option("--description", "-d", default=None, help="Version description.")
@click.option("--exclude", "-x", "excludes", multiple=True, metavar="PATTERN",
              help="Leave out what this gitignore pattern matches (repeatable; after the directory's .objstoreignore).")
@project_option
@entity_option
@run_option
@json_option
@pass_state
def log_model_cmd(state: State, path: str, name: str | None, aliases: tuple[str, ...], metadata: tuple[str, ...],
                  description: str | None, excludes: tuple[str, ...], project: str | None, entity: str | None,
                  run_id: str | None, as_json: bool) -> None:
    """Log a model file or directory as a new version.

    A directory is logged without any store in it, the downloads directory
    (./artifacts), and what its .objstoreignore or --exclude match.

    \b
    Example:
      objstore log-model out/model.safetensors --name mnist --alias best -m lr=0.001
      objstore log-model . --name llm --exclude '*.ckpt' --exclude 'wandb/'
    """
    meta = parse_metadata(metadata)
    check_aliases(list(aliases))
    new_id = run_id or new_run_id()
    check_log_args(path, name, new_id, excludes)
    state.store()
    if name is None:
        click.echo(f"objstore: note: without --name each log-model makes a new collection (run-<run id>-"
                   f"{os.path.basename(os.path.normpath(path))}), so nothing is versioned; pass --name NAME "
                   f"to log versions of one model", err=True)
    with command_run(state, entity, project, new_id, run_id) as run:
        with out.progress("logging", out.path_size(path)) as bar:
            art = run.log_model(path, name=name, aliases=list(aliases), metadata=meta, description=description,
                                progress=bar.on_bytes, exclude=excludes)
    if as_json:
        out.emit_json({**artifact_dict(art), "created": art.created, "run": run.path})
    else:
        click.echo(out.logged_line(art))


@click.command("use-model")
@click.argument("name", shell_complete=complete_versions)
@click.option("--root", default=None, type=click.Path(file_okay=False), help="Where to put it [./artifacts/<name>:<version>].")
@project_option
@entity_option
@run_option
@json_option
@pass_state
def use_model_cmd(state: State, name: str, root: str | None, project: str | None, entity: str | None,
                  run_id: str | None, as_json: bool) -> None:
    """Download a model version and print its path (the file itself for a one-file model).

    \b
    Example:
      objstore use-model mnist:best --root /tmp/mnist
    """
    resolved = resolve_spec(state, name, entity, project)  # fail before a run is recorded
    with command_run(state, entity, project, None, run_id) as run:
        with out.progress("downloading", resolved.version.size) as bar:
            path = run.use_model(resolved.qualified_name, root=root, progress=bar.on_bytes)
    if as_json:
        out.emit_json({"name": resolved.qualified_name, "path": path, "run": run.path})
    else:
        click.echo(path)


@click.command("link-model")
@click.argument("path")
@click.argument("registered_model")
@click.option("--name", "-n", default=None, help="Collection to log PATH into first.")
@click.option("--alias", "-a", "aliases", multiple=True, help="Alias to set in the registry (repeatable).")
@click.option("--exclude", "-x", "excludes", multiple=True, metavar="PATTERN",
              help="As log-model's: leave out of a directory what this gitignore pattern matches (repeatable).")
@project_option
@entity_option
@run_option
@json_option
@pass_state
def link_model_cmd(state: State, path: str, registered_model: str, name: str | None, aliases: tuple[str, ...],
                   excludes: tuple[str, ...], project: str | None, entity: str | None, run_id: str | None,
                   as_json: bool) -> None:
    """Log (or reuse) a model and link it into <entity>/model-registry/REGISTERED_MODEL.

    PATH is logged as log-model logs it (a directory with its .objstoreignore
    files and --exclude); content the collection already holds is reused.

    \b
    Example:
      objstore link-model out/model.safetensors Digits --name mnist --alias production
      objstore link-model out/ Tiny-LLM --name llm --exclude '*.ckpt'
    """
    check_name(registered_model, "registered model name")
    check_aliases(list(aliases))
    new_id = run_id or new_run_id()
    check_log_args(path, name, new_id, excludes)
    state.store()
    with command_run(state, entity, project, new_id, run_id) as run:
        with out.progress("linking", out.path_size(path)) as bar:
            linked = run.link_model(path, registered_model, name=name, aliases=list(aliases), progress=bar.on_bytes,
                                    exclude=excludes)
    if as_json:
        out.emit_json({**artifact_dict(linked), "source": linked.source_qualified_name, "created": linked.created,
                       "run": run.path})
    elif linked.created:
        click.echo(f"linked {linked.source_qualified_name} as {linked.qualified_name}")
    else:
        click.echo(f"{linked.source_qualified_name} is already linked as {linked.qualified_name}; nothing changed")


@click.command("ls")
@click.argument("where", required=False, metavar="[ENTITY/PROJECT]")
@entity_option
@json_option
@pass_state
def ls_cmd(state: State, where: str | None, entity: str | None, as_json: bool) -> None:
    """List projects, or the collections of ENTITY/PROJECT (or PROJECT of your entity).

    \b
    Example:
      objstore ls
      objstore ls charlie/mnist
    """
    store = state.store()
    if where is None:
        rows = []
        for ent, proj in list_projects(store, entity):
            rows.append({"entity": ent, "project": proj, "collections": len(list_collections(store, ent, proj, pending=True))})
        rows = [r for r in rows if r["collections"]]
        if as_json:
            out.emit_json({"projects": rows})
        else:
            out.table(["PROJECT", "COLLECTIONS"], [[f"{r['entity']}/{r['project']}", r["collections"]] for r in rows],
                      cut=(0,))
        return
    parts = where.split("/")
    if len(parts) == 1:
        ent, proj = names(entity, None)[0], parts[0]
    elif len(parts) == 2:
        ent, proj = parts
    else:
        raise click.BadParameter(f"{where!r} is not ENTITY/PROJECT", param_hint="ENTITY/PROJECT")
    check_name(ent, "entity")
    check_name(proj, "project")
    colls = Api(store, entity=ent, project=proj).artifact_collections(proj, entity=ent)
    data: list[dict[str, Any]] = [{"name": c.name, "type": c.type, "versions": c.version_count, "aliases": list(c.aliases)} for c in colls]
    if as_json:
        out.emit_json({"entity": ent, "project": proj, "collections": data})
    else:
        # No version yet: only a distributed version's parts (W&B shows that version PENDING).
        out.table(["NAME", "TYPE", "VERSIONS", "ALIASES"],
                  [[d["name"], d["type"], d["versions"] or "0 (pending)", ",".join(d["aliases"])] for d in data], cut=(0, 3))


@click.command("log")
@click.argument("name", shell_complete=complete_versions)
@click.option("--max-count", "-n", "count", default=50, show_default=True, type=click.IntRange(min=0),
              help="Show at most this many versions (0: all).")
@click.option("--skip", default=0, type=click.IntRange(min=0), help="Skip this many of the newest versions first.")
@project_option
@entity_option
@json_option
@pass_state
def log_cmd(state: State, name: str, count: int, skip: int, project: str | None, entity: str | None,
            as_json: bool) -> None:
    """Show the versions of a collection, newest first (the newest 50 unless -n says otherwise).

    \b
    Example:
      objstore log mnist
      objstore log mnist -n 0                  # every version
      objstore log mnist --skip 50             # the next page
      objstore log charlie/model-registry/Digits --json
    """
    ent, proj = names(entity, project)
    store = state.store()
    coll = parse_version_spec(name.split(":", 1)[0], entity=ent, project=proj).collection
    page, recorded = log_with_runs(store, coll, limit=count or None, skip=skip)
    if page.total == 0:
        raise missing_collection(store, coll)
    runs = [e.link.run if e.link is not None else e.version.run for e in page.entries]
    rows: list[dict[str, Any]] = []  # JSON rows (docs/cli-json.md)
    for entry, run in zip(page.entries, runs):
        v = entry.version
        rows.append({
            "version": f"v{entry.index}", "aliases": list(page.aliases.get(entry.object_id, ())), "size": v.size,
            "new_bytes": v.new_bytes, "created_at": out.iso(v.created_at), "run": run,
            "run_state": "present" if run in recorded else "absent", "digest": v.digest, "source": v.label,
        })
    if as_json:
        out.emit_json({"collection": str(coll), "total": page.total, "skip": skip, "versions": rows})
        return
    # NEW STORED: what logging the version added to the store, after dedup and
    # compression ('objstore diff' says raw bytes, and says so).
    out.table(["VERSION", "ALIASES", "SIZE", "NEW STORED", "CREATED", "RUN"], [
        [r["version"], ",".join(r["aliases"]), out.size(r["size"]), out.size(r["new_bytes"]),
         out.when(e.version.created_at), run_label(r["run"], r["run_state"])] for r, e in zip(rows, page.entries)],
        cut=(1, 5))
    older = page.total - skip - len(rows)
    if older > 0:
        click.echo(f"({older} older version{'s' if older != 1 else ''}: objstore log {name} --skip {skip + len(rows)}, "
                   f"or -n 0 for all)", err=True)


def run_state(art: Artifact) -> str:
    """``present``, ``absent`` (a run is lineage: a transfer or a crash may leave it
    out) or ``damaged`` (its ref is here, its record does not read; fsck says more)."""
    try:
        return "present" if art.logged_by() is not None else "absent"
    except (CorruptObject, NotFound):
        return "damaged"


def run_label(path: str | None, state: str) -> str:
    """A run as log and show print it."""
    if not path:
        return "-"
    return {"present": path, "absent": f"{path} (not in this store)"}.get(state, f"{path} (damaged; run 'objstore fsck')")


@click.command("show")
@click.argument("name", shell_complete=complete_versions)
@project_option
@entity_option
@json_option
@pass_state
def show_cmd(state: State, name: str, project: str | None, entity: str | None, as_json: bool) -> None:
    """Show one version: metadata, description, files, digest, who logged and used it.

    \b
    Example:
      objstore show mnist:v1
    """
    resolved = resolve_spec(state, name, entity, project)
    art = artifact_of(state.store(), resolved)
    recorded = run_state(art)
    users = sorted(art.used_by(), key=lambda r: (r.started_at, r.path), reverse=True)  # newest first
    data = {
        **artifact_dict(art), "id": resolved.object_id.hex, "source": art.source_qualified_name,
        "description": art.description, "metadata": art.metadata,
        "files": [{"path": f.path, "size": f.size, "kind": f.kind, "digest": f.digest, "ref": f.ref} for f in art.files()],
        "logged_by": art.logged_by_path, "logged_by_state": recorded,
        "used_by": sorted(r.path for r in users), "used_by_count": len(users),
    }
    if as_json:
        out.emit_json(data)
        return
    click.echo(out.printable(f"{data['name']}  ({data['type']})"))
    if data["source"] != data["name"]:
        click.echo(f"links to    {out.printable(data['source'])}")
    click.echo(f"digest      {data['digest']}")
    click.echo(f"id          {data['id']}")
    click.echo(f"aliases     {out.printable(', '.join(data['aliases']) or '-')}")
    click.echo(f"size        {out.size(art.size)} ({out.size(art.new_bytes)} new stored bytes when logged)")
    click.echo(f"created     {out.when(art.created_timestamp)}")
    click.echo(f"logged by   {run_label(data['logged_by'], recorded)}")
    click.echo(f"used by     {used_by_line(users, name)}")
    click.echo(f"description {out.printable(art.description or '-', lines=True)}")
    if art.metadata:
        click.echo("metadata")
        for k, v in sorted(art.metadata.items()):
            click.echo(f"  {out.printable(k)}: {out.printable(v)}")
    click.echo("files")
    for f in data["files"]:
        click.echo(f"  {out.size(f['size']):>10}  {out.printable(f['path'])}" + (f" -> {out.printable(f['ref'])}" if f["ref"] else ""))


# How many of the runs that used a version show lists by name; more are counted.
USED_BY_SHOWN = 5


def used_by_line(users: list[RunInfo], name: str) -> str:
    """The runs that used a version, newest first: all of a few, else the count and the newest."""
    if not users:
        return "-"
    shown = ", ".join(r.path for r in users[:USED_BY_SHOWN])
    if len(users) <= USED_BY_SHOWN:
        return shown
    return f"{len(users)} runs; the newest: {shown} (all: objstore show {name} --json)"


@click.command("alias")
@click.argument("name", shell_complete=complete_versions)
@click.argument("alias")
@click.option("--delete", "delete", is_flag=True, help="Remove ALIAS from the collection NAME.")
@project_option
@entity_option
@json_option
@pass_state
def alias_cmd(state: State, name: str, alias: str, delete: bool, project: str | None, entity: str | None, as_json: bool) -> None:
    """Point ALIAS at a version, or remove it with --delete.

    \b
    Example:
      objstore alias mnist:v1 production
      objstore alias --delete mnist production
    """
    check_alias(alias)
    ent, proj = names(entity, project)
    if delete:
        if ":" in name:
            raise click.BadParameter(f"give the collection without a version: {name.split(':', 1)[0]}", param_hint="NAME")
        coll = parse_version_spec(name, entity=ent, project=proj).collection
        resolve(state.store(), parse_version_spec(f"{coll}:{alias}", entity=ent, project=proj))  # says what exists if not
        delete_alias(state.store(), coll, alias)
        result = {"collection": str(coll), "alias": alias, "version": None}
    else:
        if ":" not in name:
            raise click.BadParameter(f"give the version to point at, e.g. {name}:v0", param_hint="NAME")
        resolved = resolve(state.store(), parse_version_spec(name, entity=ent, project=proj))
        set_alias(state.store(), resolved.collection, alias, resolved.object_id)
        result = {"collection": str(resolved.collection), "alias": alias, "version": f"v{resolved.index}"}
    if as_json:
        out.emit_json(result)
    elif delete:
        click.echo(f"removed alias {alias} from {result['collection']}")
    else:
        click.echo(f"{result['collection']}:{alias} -> {result['version']}")


@click.command("delete")
@click.argument("name", shell_complete=complete_versions)
@click.option("--delete-aliases", is_flag=True, help="Deleting one version: remove its aliases with it (else refused while it has any).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@project_option
@entity_option
@json_option
@pass_state
def delete_cmd(state: State, name: str, delete_aliases: bool, yes: bool, project: str | None, entity: str | None,
               as_json: bool) -> None:
    """Delete a whole collection (NAME), or one version (NAME:SELECTOR; a registry
    entry is unlinked); 'objstore gc' then frees the bytes no longer used. A
    deleted version's number is never given again.

    \b
    Example:
      objstore delete old-experiment --yes && objstore gc
      objstore delete mnist:v3 --delete-aliases --yes
    """
    ent, proj = names(entity, project)
    spec = parse_version_spec(name, entity=ent, project=proj)
    what = f"{spec.collection}:{spec.selector}" if ":" in name else f"every version of {spec.collection}"
    if not yes:
        if not sys.stdin.isatty():
            raise click.UsageError(f"refusing to delete {what} without confirmation; pass --yes")
        click.confirm(f"delete {what}?", abort=True, err=True)
    if ":" in name:
        done = delete_version(state.store(), resolve(state.store(), spec), delete_aliases=delete_aliases)
        if as_json:
            out.emit_json({"version": done.version, "aliases": list(done.aliases), "unlinked": done.unlinked})
        else:
            click.echo(f"{'unlinked' if done.unlinked else 'deleted'} {done.version}"
                       + (f" and its aliases {', '.join(done.aliases)}" if done.aliases else "")
                       + ("" if done.unlinked else "; run 'objstore gc' to free its bytes"))
        return
    if delete_aliases:
        raise click.BadParameter("--delete-aliases is for one version (NAME:SELECTOR); a collection goes whole",
                                 param_hint="--delete-aliases")
    result = delete_collection(state.store(), spec.collection)
    if as_json:
        out.emit_json({"collection": result.collection, "versions": result.versions, "refs": result.refs})
    else:
        click.echo(f"deleted {result.collection} ({result.versions} versions); run 'objstore gc' to free its bytes")


@click.command("annotations")
@click.argument("name", shell_complete=complete_versions)
@click.option("--collection", "of_collection", is_flag=True,
              help="NAME is a collection (or registered model): show or edit its own description and tags")
@click.option("--description", default=None, help="set the description first (as save() would)")
@click.option("--tag", "tags_add", multiple=True, help="add this tag first (repeatable)")
@click.option("--untag", "tags_remove", multiple=True, help="remove this tag first (repeatable)")
@project_option
@entity_option
@json_option
@pass_state
def annotations_cmd(state: State, name: str, of_collection: bool, description: str | None, tags_add: tuple[str, ...],
                    tags_remove: tuple[str, ...], project: str | None, entity: str | None, as_json: bool) -> None:
    """Show a version's annotations (description, tags, ttl, metadata), or with
    --collection a collection's own description and tags, and every edit of them:
    who, when, old -> new. --description/--tag/--untag edit them first, by
    compare-and-swap, as save() does (concurrent edits of other tags are kept).

    \b
    Examples:
      objstore annotations mnist:v1
      objstore annotations mnist:v1 --tag reviewed --description "the good one"
      objstore annotations mnist --collection --tag vision
    """
    ent, proj = names(entity, project)
    store = state.store()
    edit = Edit(description=description, set_description=description is not None,
                tags_add=check_tags(list(tags_add)), tags_remove=check_tags(list(tags_remove)))
    if of_collection:
        if ":" in name:
            raise InvalidInput(f"--collection takes a collection name, not a version ({name!r}); drop the ':…'")
        coll = parse_version_spec(name, entity=ent, project=proj).collection
        if not collection_exists(store, coll):
            raise NotFound(f"no artifact collection {coll} in the store; objstore ls lists them", key=str(coll))
        now = edit_collection_annotations(store, coll, edit) if not edit.is_empty() else read_collection_annotations(store, coll)
        history = collection_annotation_history(store, coll)
        data: dict[str, Any] = {"collection": str(coll), "description": now.description, "tags": list(now.tags)}
    else:
        entry = resolve(store, parse_version_spec(name, entity=ent, project=proj))
        shown = edit_annotations(store, entry, edit) if not edit.is_empty() else read_annotations(store, entry)
        history = annotation_history(store, entry)
        data = {"version": entry.qualified_name, "description": shown.description, "metadata": shown.metadata,
                "tags": list(shown.tags), "ttl": shown.ttl}
    data["history"] = [{"revision": h.revision, "when": h.when, "who": h.who,
                        "changes": [{"field": c.field, "old": c.old, "new": c.new} for c in h.changes]} for h in history]
    if as_json:
        out.emit_json(data)
        return
    click.echo(f"{data.get('version') or data['collection']}")
    click.echo(f"description {out.printable(data['description'] if data['description'] is not None else '-', lines=True)}")
    click.echo(f"tags        {out.printable(', '.join(data['tags']) or '-')}")
    if not of_collection:
        ttl = data["ttl"]
        click.echo(f"ttl         {'inherited (none)' if ttl == 'inherit' else 'none' if ttl is None else f'{ttl} s'}")
    for h in history:
        click.echo(f"r{h.revision}  {out.when(h.when)}  {out.printable(h.who)}")
        for c in h.changes:
            click.echo(f"    {c.field}: {c.old!r} -> {c.new!r}")


COMMANDS: tuple[click.Command, ...] = (
    init_cmd, log_model_cmd, use_model_cmd, link_model_cmd, ls_cmd, log_cmd, show_cmd, alias_cmd, delete_cmd,
    annotations_cmd,
)
