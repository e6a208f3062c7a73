"""``log-artifact`` / ``use-artifact``: log-model / use-model for artifacts that
are not models (datasets, tokenizers, evaluation results), of any type.

The same library calls as the W&B-style API (:meth:`objstore.api.runs.Run.log_artifact`,
:meth:`~objstore.api.runs.Run.use_artifact`), the same progress bar and one
summary line as the model commands; a version is always of the type it was logged as.
"""

from __future__ import annotations

import click

from objstore.api.naming import new_run_id
from objstore.model.names import check_aliases, check_name

from . import output as out
from .completion import complete_versions
from .context import (
    State,
    artifact_dict,
    check_log_args,
    entity_option,
    json_option,
    pass_state,
    project_option,
    resolve_spec,
    start_run,
)


@click.command("log-artifact")
@click.argument("path")
@click.option("--name", "-n", required=True, help="Collection name.")
@click.option("--type", "-t", "type_", default="dataset", show_default=True, help="Artifact type.")
@click.option("--alias", "-a", "aliases", multiple=True, help="Alias to set (repeatable).")
@project_option
@entity_option
@json_option
@pass_state
def log_artifact_cmd(state: State, path: str, name: str, type_: str, aliases: tuple[str, ...], project: str | None,
                     entity: str | None, as_json: bool) -> None:
    """Log a file or directory of any type (a dataset by default) as a new version.

    \b
    Example:
      objstore log-artifact data/train --name mnist-train --type dataset --alias y2024
      objstore use-artifact mnist-train:y2024
    """
    check_name(type_, "artifact type")
    check_aliases(list(aliases))
    run_id = new_run_id()
    check_log_args(path, name, run_id)
    state.store()
    with start_run(state, entity, project, run_id) as run:
        with out.progress("logging", out.path_size(path)) as bar:
            art = run.log_artifact(path, name=name, type=type_, aliases=list(aliases), progress=bar.on_bytes)
    if as_json:
        out.emit_json({**artifact_dict(art), "created": art.created, "run": run.path})
    else:
        click.echo(out.logged_line(art))


@click.command("use-artifact")
@click.argument("name", shell_complete=complete_versions)
@click.option("--root", default=None, type=click.Path(file_okay=False), help="Where to put it [./artifacts/<name>:<version>].")
@click.option("--type", "-t", "type_", default=None, help="Refuse a version of another type.")
@project_option
@entity_option
@json_option
@pass_state
def use_artifact_cmd(state: State, name: str, root: str | None, type_: str | None, project: str | None,
                     entity: str | None, as_json: bool) -> None:
    """Download an artifact version (of any type) and print its directory.

    \b
    Example:
      objstore use-artifact mnist-train:latest --root /tmp/data
    """
    resolved = resolve_spec(state, name, entity, project)  # fail before a run is recorded
    with start_run(state, entity, project) as run:
        art = run.use_artifact(resolved.qualified_name, type=type_)
        with out.progress("downloading", resolved.version.size) as bar:
            path = art.download(root, progress=bar.on_bytes)
    if as_json:
        out.emit_json({"name": resolved.qualified_name, "type": art.type, "path": path, "run": run.path})
    else:
        click.echo(path)


COMMANDS: tuple[click.Command, ...] = (log_artifact_cmd, use_artifact_cmd)
