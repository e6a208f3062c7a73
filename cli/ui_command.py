"""``objstore ui``: serve the local web view of a store (:mod:`objstore.ui`)."""

from __future__ import annotations

import click

from .context import State, pass_state


@click.command("ui")
@click.option("--store", "store_location", metavar="PATH|URL", default=None,
              help="The store to show (as objstore --store; default: the store in use).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback serves the store to whoever can reach it.")
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535), help="Port (0: a free one).")
@click.option("--no-browser", is_flag=True, help="Do not open a browser.")
@click.option("--allow-edits", is_flag=True,
              help="Let the page move aliases and edit the descriptions and tags of versions and collections "
                   "(each a compare-and-swap; read-only without it).")
@pass_state
def ui_cmd(state: State, store_location: str | None, host: str, port: int, no_browser: bool, allow_edits: bool) -> None:
    """Serve a web view of the store: projects, versions, lineage, the registry, diffs.

    Prints 'serving http://HOST:PORT/' first and runs until Ctrl-C.
    Needs the 'ui' extra: pip install 'objstore[ui]'.

    \b
    Example:
      objstore ui
      objstore ui --store s3://team-bucket/models --port 8765 --no-browser
    """
    from objstore.ui.serve import is_loopback, serve  # the extra's imports only when asked for

    if store_location is not None:
        state.location = store_location
    store = state.store()
    if not is_loopback(host):
        click.echo(f"warning: serving on {host}, not loopback: anyone who can reach this machine can read the store"
                   + (", move its aliases and edit its descriptions and tags" if allow_edits else ""), err=True)
    serve(store, host=host, port=port, allow_edits=allow_edits, open_browser=not no_browser,
          announce=lambda url: click.echo(f"serving {url}"))


COMMANDS: tuple[click.Command, ...] = (ui_cmd,)
