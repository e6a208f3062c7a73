"""``objstore status``: the store in use, what it takes, and where it stands
against each remote (ahead / behind, as git status says it, from what the last
fetch, pull or push saw: :mod:`objstore.transfer.status`)."""

from __future__ import annotations

import click

from objstore.console import human_bytes
from objstore.maintenance.stats import stored
from objstore.storage import native
from objstore.transfer.status import RemoteStatus, store_status

from . import output as out
from .context import State, json_option, pass_state


@click.command("status")
@click.option("--verbose", "-v", is_flag=True, help="List every collection that differs from a remote.")
@json_option
@pass_state
def status_cmd(state: State, verbose: bool, as_json: bool) -> None:
    """Show the store in use, its size and its remotes, ahead / behind each.

    Ahead and behind count versions, as of the last fetch, pull or push with
    that remote ('objstore fetch' refreshes them; status itself asks no remote).

    \b
    Example:
      objstore status
      objstore fetch && objstore status -v
    """
    store = state.store()
    st = stored(store)
    remotes = store_status(store)
    if as_json:
        out.emit_json({"store": str(store.location), "format": store.config.format, "stored_bytes": st.total,
                       "packs": st.packs, "objects": st.objects, "native_core": native.describe(),
                       "remotes": [r.to_dict() for r in remotes]})
        return
    click.echo(f"store    {store.location} (format {store.config.format})")
    click.echo(f"size     {human_bytes(st.total)} stored in {st.packs} pack(s) and {st.objects} object(s)"
               + (f"; {human_bytes(st.temp_bytes)} in temp files" if st.temp_files else ""))
    if not remotes:
        click.echo("remotes  none (add one with 'objstore remote add origin URL')")
        return
    click.echo("remotes")
    for r in remotes:
        click.echo(f"  {r.name:<10} {r.url}  {_standing(r)}")
        shown = r.collections if verbose else r.collections[:5]
        for c in shown:
            click.echo(f"      {c.collection}: {_counts(c.ahead, c.behind)}")
        if len(shown) < len(r.collections):
            click.echo(f"      ... and {len(r.collections) - len(shown)} more collection(s) (objstore status -v)")


def _counts(ahead: int, behind: int) -> str:
    parts = []
    if ahead:
        parts.append(out.paint(f"ahead {ahead}", "green"))
    if behind:
        parts.append(out.paint(f"behind {behind}", "yellow"))
    return ", ".join(parts)


def _standing(r: RemoteStatus) -> str:
    if not r.known:
        return f"never fetched or pushed; {r.ahead} version(s) here ('objstore fetch {r.name}' to compare)"
    if not r.collections:
        return out.paint("up to date", "green") + " (as of the last fetch or push)"
    return (f"{_counts(r.ahead, r.behind)} version(s) in {len(r.collections)} collection(s) (as of the last fetch or push; "
            + ("'objstore push'" if not r.behind else "'objstore pull'") + " to sync)")


COMMANDS: tuple[click.Command, ...] = (status_cmd,)
