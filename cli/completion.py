"""Shell completion (click's own, for bash, zsh and fish): ``objstore completion
SHELL`` prints the script to load, and the callbacks here complete version
arguments with the store's collection names, versions and aliases.

A callback runs in the shell's process tree on every Tab, so it never prints,
never fails (a store that cannot be opened completes nothing) and reads listings
only (:func:`objstore.api.completion.complete_version`). Command modules import
the callbacks from here; this module imports no other command module (no cycle).
"""

from __future__ import annotations

import os

import click
from click.shell_completion import CompletionItem, get_completion_class

from objstore.api.completion import complete_version
from objstore.api.naming import DEFAULT_PROJECT, default_entity
from objstore.model.store import Store

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_OBJSTORE_COMPLETE"  # click's name for prog 'objstore'


def complete_versions(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    """``shell_complete`` of a NAME[:VERSION|ALIAS] argument."""
    os.environ["OBJSTORE_QUIET"] = "1"  # no note may reach the shell's line
    root = ctx.find_root()
    entity = ctx.params.get("entity") or default_entity()
    project = ctx.params.get("project") or os.environ.get("OBJSTORE_PROJECT") or DEFAULT_PROJECT
    try:
        store = Store.open_existing(root.params.get("store"))
    except Exception:  # noqa: BLE001 - a Tab press never shows an error
        return []
    try:
        return [CompletionItem(w) for w in complete_version(store, incomplete, entity=entity, project=project)]
    finally:
        store.close()


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
