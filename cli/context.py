"""What every command group shares: the store the group options name (:class:`State`),
the common options, and turning command-line words into library calls' arguments.

Command modules import this module and the library, never each other or
``cli.main`` (which only assembles the groups), so the CLI has no import cycle.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from objstore.api.artifact import Artifact
from objstore.api.naming import artifact_name_for
from objstore.api.runs import Run
from objstore.console import quiet
from objstore.errors import InvalidInput
from objstore.files.ignore import rules_for
from objstore.model.names import check_name, parse_version_spec
from objstore.model.store import Store
from objstore.model.versions import ResolvedVersion, resolve
from objstore.settings import ENV_VARS, resolve_entity, resolve_project

from . import output as out
from .completion import complete_entities, complete_projects


class State:
    """What the group options set up, for the commands."""

    def __init__(self, store: str | None) -> None:
        self.location = store
        self.opened: Store | None = None

    def store(self) -> Store:
        """The store, which must exist (``objstore init`` creates it)."""
        if self.opened is None:
            self.opened = Store.open_existing(self.location)
        return self.opened

    def adopt(self, store: Store) -> None:
        """Use ``store`` (just opened or created by the command) and close it at the end."""
        self.opened = store

    def close(self) -> None:
        if self.opened is not None:
            self.opened.close()


pass_state = click.make_pass_decorator(State)

# Exit codes beyond click's own (1 an error, 2 a usage error): fsck found damage.
EXIT_DAMAGE = 3


F = TypeVar("F", bound=Callable[..., object])


def json_option(f: F) -> F:
    def silence(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
        if value:  # library notes go to stderr anyway; keep even those out, for this command only
            ctx.with_resource(quiet())
        return value

    return click.option("--json", "as_json", is_flag=True, callback=silence, expose_value=True, is_eager=True,
                        help="Print JSON (shape in docs/cli-json.md).")(f)


def project_option(f: F) -> F:
    return click.option("--project", "-p", default=None, shell_complete=complete_projects,
                        help="Project for short names [$OBJSTORE_PROJECT, $WANDB_PROJECT, the config file, "
                             "else 'uncategorized'].")(f)


def entity_option(f: F) -> F:
    return click.option("--entity", "-e", default=None, shell_complete=complete_entities,
                        help="Entity for short names [$OBJSTORE_ENTITY, $WANDB_ENTITY, the config file, "
                             "else the OS user].")(f)


def names(entity: str | None, project: str | None) -> tuple[str, str]:
    """The entity and project short names mean: the options, else :mod:`objstore.settings`' order."""
    return check_name(resolve_entity(entity), "entity"), check_name(resolve_project(project), "project")


def resolve_spec(state: State, text: str, entity: str | None, project: str | None) -> ResolvedVersion:
    ent, proj = names(entity, project)
    return resolve(state.store(), parse_version_spec(text, entity=ent, project=proj))


def parse_metadata(items: tuple[str, ...]) -> dict[str, object]:
    """KEY=VALUE pairs; a VALUE that parses as JSON (numbers, true, lists) is kept typed."""
    import json

    meta: dict[str, object] = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise click.BadParameter(f"{item!r} is not KEY=VALUE (e.g. --metadata lr=0.001)", param_hint="--metadata")
        try:
            meta[key] = json.loads(value)
        except ValueError:
            meta[key] = value
    return meta


# The run commands join when no --run is given (see cli.run_commands): objstore.settings'
# variables, in its order, so a command joins the run objstore.init() would.
RUN_ENVS = list(ENV_VARS["run_id"])
RUN_ENV = RUN_ENVS[0]


def run_option(f: F) -> F:
    return click.option("--run", "run_id", envvar=RUN_ENVS, default=None, metavar="ID",
                        help=f"Join the run ID (made if absent; 'objstore run start' makes one) instead of a run "
                             f"of this command alone [{', '.join('$' + v for v in RUN_ENVS)}].")(f)


def start_run(state: State, entity: str | None, project: str | None, run_id: str | None = None) -> Run:
    ent, proj = names(entity, project)
    return Run(state.store(), entity=ent, project=proj, name=None, config=None, job_type="cli", id=run_id)


@contextmanager
def command_run(state: State, entity: str | None, project: str | None, run_id: str | None,
                joined: str | None) -> Iterator[Run]:
    """The run a command records its work in: the run ``joined`` (``--run``), left
    running for the commands after it, else a run of this command alone, finished
    (or crashed) when it ends. ``run_id`` is the id of the command's own run."""
    if joined is None:
        with start_run(state, entity, project, run_id) as run:
            yield run
        return
    run = start_run(state, entity, project, joined)
    try:
        yield run
    finally:
        run.detach()


def check_log_args(path: str, name: str | None, run_id: str, excludes: tuple[str, ...] = ()) -> None:
    """Refuse bad input before a run is recorded, so a failed command changes nothing.

    The library's rules (the path exists, the name or the default name is valid,
    the directory is no store, the ignore patterns parse) are
    :func:`objstore.api.naming.artifact_name_for`'s and
    :func:`objstore.files.ignore.rules_for`'s; only what a command line adds (a
    path the user cannot read, a socket or device) is checked here."""
    artifact_name_for(path, name, run_id)
    if os.path.isdir(path):
        rules_for(Path(path), excludes)
    if os.path.exists(path) and not os.access(path, os.R_OK):
        raise InvalidInput(f"{path} is not readable (permission denied)")
    if os.path.exists(path) and not (os.path.isfile(path) or os.path.isdir(path)):
        raise InvalidInput(f"{path} is not a regular file or directory; give a model file or directory")


def artifact_dict(art: Artifact) -> dict[str, Any]:  # JSON: the shape is docs/cli-json.md's
    return {
        "name": art.qualified_name, "version": art.version, "type": art.type, "digest": art.digest,
        "size": art.size, "new_bytes": art.new_bytes, "aliases": sorted(art.aliases), "created_at": out.iso(art.created_timestamp),
    }
