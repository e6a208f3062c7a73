"""Commands that move work between stores: remote, push, fetch, pull, clone.

Thin over :mod:`objstore.transfer.remotes`. ``--json`` prints the transfer's
:meth:`~objstore.transfer.sync.TransferResult.to_dict` (push / fetch / pull / clone)
or the list of remotes (``[{"name", "url", "options"}]``).
"""

from __future__ import annotations

from pathlib import Path

import click

from objstore.model.store import STORE_DIRNAME, local_directory
from objstore.transfer.remotes import (
    clone,
    fetch,
    pull,
    push,
    remote_add,
    remote_list,
    remote_remove,
    split_remote_args,
)
from objstore.transfer.sync import TransferResult, describe

from . import output as out
from .completion import complete_remote_then_names, complete_remotes
from .context import State, json_option, pass_state


def _split_remote(state: State, args: tuple[str, ...]) -> tuple[str | None, list[str]]:
    """``[REMOTE] [NAME…]``: the library's rule (:func:`objstore.transfer.remotes.split_remote_args`)."""
    return split_remote_args(state.store(), args)


TRANSFER_UNITS = {"chunks": "B", "objects": "objects"}  # stage chunks counts stored bytes (objstore.transfer.sync)


def _report(result: TransferResult, as_json: bool) -> None:
    if as_json:
        out.emit_json(result.to_dict())
        return
    click.echo(describe(result))
    for old, new in result.renumbered:
        click.echo(f"renumbered {old} -> {new.rsplit(':', 1)[1]}")
    # What was kept where both sides changed is the library's note (stderr), which
    # says which side kept it and what to do; --json lists it under "kept".



@click.group("remote")
def remote_grp() -> None:
    """Name other stores to push to and pull from.

    \b
    Example:
      objstore remote add origin s3://team-models/store
      objstore remote list
      objstore remote remove origin
    """

@remote_grp.command("add")
@click.argument("name")
@click.argument("url")
@click.option("--endpoint", default=None, help="S3-compatible endpoint (else $AWS_ENDPOINT_URL).")
@click.option("--region", default=None, help="Region (else $AWS_REGION).")
@json_option
@pass_state
def remote_add_cmd(state: State, name: str, url: str, endpoint: str | None, region: str | None, as_json: bool) -> None:
    """Add a remote. Credentials are never stored: they come from AWS_ACCESS_KEY_ID etc.

    \b
    Example:
      objstore remote add origin s3://team-models/store --endpoint http://127.0.0.1:8333
      objstore remote add backup /mnt/nas/models-store
    """
    options = {k: v for k, v in (("endpoint", endpoint), ("region", region)) if v}
    remote = remote_add(state.store(), name, url, **options)
    if as_json:
        out.emit_json(remote.to_dict())
    else:
        click.echo(f"added remote {remote.name} -> {remote.url}")

@remote_grp.command("list")
@json_option
@pass_state
def remote_list_cmd(state: State, as_json: bool) -> None:
    """List remotes.

    \b
    Example:
      objstore remote list --json
    """
    remotes = remote_list(state.store())
    if as_json:
        out.emit_json([r.to_dict() for r in remotes])
        return
    if not remotes:
        click.echo("no remotes (add one with 'objstore remote add origin URL')")
        return
    out.table(["name", "url", "options"],
              [[r.name, r.url, " ".join(f"{k}={v}" for k, v in sorted(r.options.items())) or "-"] for r in remotes],
              cut=(1, 2))

@remote_grp.command("remove")
@click.argument("name", shell_complete=complete_remotes)
@pass_state
def remote_remove_cmd(state: State, name: str) -> None:
    """Forget a remote (nothing on the remote changes).

    \b
    Example:
      objstore remote remove origin
    """
    remote_remove(state.store(), name)
    click.echo(f"removed remote {name}")

@click.command("push")
@click.argument("args", nargs=-1, metavar="[REMOTE] [NAME]...", shell_complete=complete_remote_then_names)
@click.option("--force", is_flag=True, help="Overwrite aliases and runs changed on the remote (never versions).")
@json_option
@pass_state
def push_cmd(state: State, args: tuple[str, ...], force: bool, as_json: bool) -> None:
    """Send versions the remote lacks, then move its refs (fast-forward only).

    NAME is a collection (name, project/name, entity/project/name; short
    names take the entity and project as every command does) or
    entity/project; none means everything.
    A push whose versions diverge from the remote's is refused: pull, then push.

    \b
    Example:
      objstore push
      objstore push origin charlie/mnist/MNIST
      objstore push team demo/llm
    """
    remote, selected = _split_remote(state, args)
    with out.progress("pushing", units=TRANSFER_UNITS) as bar:
        result = push(state.store(), remote, selected or None, force=force, progress=bar.on_stage)
    _report(result, as_json)

@click.command("fetch")
@click.argument("args", nargs=-1, metavar="[REMOTE] [NAME]...", shell_complete=complete_remote_then_names)
@json_option
@pass_state
def fetch_cmd(state: State, args: tuple[str, ...], as_json: bool) -> None:
    """Download what the remote has that this store lacks; local refs do not move.

    \b
    Example:
      objstore fetch origin
    """
    remote, selected = _split_remote(state, args)
    with out.progress("fetching", units=TRANSFER_UNITS) as bar:
        result = fetch(state.store(), remote, selected or None, progress=bar.on_stage)
    _report(result, as_json)

@click.command("pull")
@click.argument("args", nargs=-1, metavar="[REMOTE] [NAME]...", shell_complete=complete_remote_then_names)
@json_option
@pass_state
def pull_cmd(state: State, args: tuple[str, ...], as_json: bool) -> None:
    """Fetch, then take the remote's new versions, aliases and runs.

    Local versions the remote never had are renumbered after the remote's
    (same content; their aliases follow); each renumbering is printed.

    \b
    Example:
      objstore pull
      objstore pull origin charlie/mnist/MNIST
    """
    remote, selected = _split_remote(state, args)
    with out.progress("pulling", units=TRANSFER_UNITS) as bar:
        result = pull(state.store(), remote, selected or None, progress=bar.on_stage)
    _report(result, as_json)

@click.command("clone")
@click.argument("url")
@click.argument("directory", required=False)
@click.option("--endpoint", default=None, help="S3-compatible endpoint (else $AWS_ENDPOINT_URL).")
@json_option
@click.pass_context
def clone_cmd(ctx: click.Context, url: str, directory: str | None, endpoint: str | None, as_json: bool) -> None:
    """Copy a whole store into DIRECTORY/.objstore, with URL as remote 'origin'.

    DIRECTORY defaults to the last part of URL; objstore commands run inside
    it find the store. With --store and no DIRECTORY, clone into that path.

    \b
    Example:
      objstore clone s3://team-models/store models
      cd models && objstore ls
    """
    given = ctx.find_root().params.get("store")
    if directory is not None:
        dest = local_directory(directory, "the clone's DIRECTORY") / STORE_DIRNAME
    elif given:
        dest = local_directory(given, "--store (the clone's destination)")
    else:
        base = url.rstrip("/").rsplit("/", 1)[-1] or "store"
        dest = Path(base) / STORE_DIRNAME
    options = {"endpoint": endpoint} if endpoint else {}
    with out.progress("cloning", units=TRANSFER_UNITS) as bar:  # a failed clone leaves nothing behind: clone() removes what it made
        store, result = clone(url, dest, progress=bar.on_stage, **options)
    store.close()
    if as_json:
        out.emit_json({**result.to_dict(), "store": str(dest.absolute())})
    else:
        click.echo(f"{describe(result)}, into {dest}")  # one summary line (a clone renumbers nothing)

COMMANDS: tuple[click.Command, ...] = (remote_grp, push_cmd, fetch_cmd, pull_cmd, clone_cmd)
