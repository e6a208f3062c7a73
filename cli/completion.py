"""Shell completion (click's own, for bash, zsh and fish): ``objstore completion
SHELL`` prints the script to load, and the callbacks here complete version
arguments with the store's collection names, versions and aliases, REMOTE
arguments with the remotes' names, and ``--entity`` / ``--project`` with the
entities and projects the store holds.

A callback runs in the shell's process tree on every Tab, so it never prints,
never fails (a store that cannot be opened completes nothing) and reads listings
only (:func:`objstore.api.completion.complete_version`). Command modules import
the callbacks from here; this module imports no other command module (no cycle).
"""

from __future__ import annotations

from collections.abc import Callable

import click
from click.shell_completion import CompletionItem, get_completion_class

from objstore.api.completion import complete_entity, complete_project, complete_version
from objstore.console import quiet
from objstore.errors import ObjstoreError
from objstore.model.store import Store
from objstore.settings import DEFAULT_PROJECT, default_entity, resolve_entity, resolve_project
from objstore.transfer.remotes import remote_list

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_OBJSTORE_COMPLETE"  # click's name for prog 'objstore'


def _open(ctx: click.Context) -> Store | None:
    """The store the command line names, or None (a Tab press never shows an error)."""
    try:
        return Store.open_existing(ctx.find_root().params.get("store"))
    except Exception:  # noqa: BLE001 - a Tab press never shows an error
        return None


def _names(ctx: click.Context) -> tuple[str, str]:
    """The entity and project of the command line so far, else the settings' (never failing)."""
    try:
        return resolve_entity(ctx.params.get("entity")), resolve_project(ctx.params.get("project"))
    except ObjstoreError:  # a bad config file: its error shows when the command runs
        return ctx.params.get("entity") or default_entity(), ctx.params.get("project") or DEFAULT_PROJECT


def _completing(ctx: click.Context, words: Callable[[Store], list[str]]) -> list[CompletionItem]:
    with quiet():  # no note may reach the shell's line
        store = _open(ctx)
        if store is None:
            return []
        try:
            return [CompletionItem(w) for w in words(store)]
        except Exception:  # noqa: BLE001 - a Tab press never shows an error
            return []
        finally:
            store.close()


def complete_versions(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """``shell_complete`` of a NAME[:VERSION|ALIAS] argument."""
    entity, project = _names(ctx)
    return _completing(ctx, lambda store: complete_version(store, incomplete, entity=entity, project=project))


def complete_entities(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """``shell_complete`` of ``--entity``: the entities holding anything."""
    return _completing(ctx, lambda store: complete_entity(store, incomplete))


def complete_projects(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """``shell_complete`` of ``--project``: the projects of the entity given (else the default one)."""
    entity = _names(ctx)[0]
    return _completing(ctx, lambda store: complete_project(store, incomplete, entity=entity))


def complete_remotes(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """``shell_complete`` of a REMOTE argument: the store's and the config file's remotes."""
    return _completing(ctx, lambda store: [r.name for r in remote_list(store) if r.name.startswith(incomplete)])


def complete_remote_then_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """``shell_complete`` of push/fetch/pull's ``[REMOTE] [NAME]...``: the first word
    is a remote or a collection, the later ones collections."""
    entity, project = _names(ctx)

    def words(store: Store) -> list[str]:
        names = complete_version(store, incomplete, entity=entity, project=project)
        if ctx.params.get(param.name or "args"):
            return names
        return [r.name for r in remote_list(store) if r.name.startswith(incomplete)] + names

    return _completing(ctx, words)


@click.command("completion")
@click.argument("shell", type=click.Choice(SHELLS))
@click.pass_context
def completion_cmd(ctx: click.Context, shell: str) -> None:
    """Print the shell completion script for SHELL (commands, options, collection
    names, versions and aliases).

    \b
    Example:
      echo 'eval "$(objstore completion bash)"' >> ~/.bashrc
      echo 'eval "$(objstore completion zsh)"' >> ~/.zshrc
      objstore completion fish > ~/.config/fish/completions/objstore.fish

    bash splits words at ':'; to complete versions after it, also put
    COMP_WORDBREAKS=${COMP_WORDBREAKS//:} in ~/.bashrc.
    """
    cls = get_completion_class(shell)
    assert cls is not None  # every name in SHELLS is one of click's
    click.echo(cls(ctx.find_root().command, {}, "objstore", COMPLETE_VAR).source())


COMMANDS: tuple[click.Command, ...] = (completion_cmd,)
