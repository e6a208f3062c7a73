"""``objstore cache``: the local cache of remote stores (info, prune, limit)."""

from __future__ import annotations

import click

from objstore.console import human_bytes
from objstore.storage.remotecache import cache_info, configured_bound, parse_size, prune, save_bound

from . import output as out
from .context import json_option


@click.group("cache")
def cache_grp() -> None:
    """The local cache of what remote stores hold (immutable objects, indexes, pack ranges).

    It lives in $OBJSTORE_CACHE_DIR, else ~/.cache/objstore/remote, and stays under its
    bound: $OBJSTORE_CACHE_SIZE, else what 'objstore cache limit' saved, else 2 GiB.

    \b
    Example:
      objstore cache info
      objstore cache prune --to 500MiB
      objstore cache limit 10GiB
    """


@cache_grp.command("info")
@json_option
def cache_info_cmd(as_json: bool) -> None:
    """Where the cache is, its bound, what it holds per kind and store, hits and misses."""
    info = cache_info()
    if as_json:
        out.emit_json(info.to_dict())
        return
    click.echo(f"location: {info.root}")
    click.echo(f"size:     {human_bytes(info.bytes)} of {human_bytes(info.bound)}")
    click.echo("entries:  " + ", ".join(f"{n} {kind}" for kind, n in info.entries.items()))
    for store, size in sorted(info.stores.items(), key=lambda s: -s[1]):
        click.echo(f"store {store}: {human_bytes(size)}")
    click.echo(f"hits:     {info.hits} ({human_bytes(info.bytes_served)} served), misses: {info.misses} "
               f"({human_bytes(info.bytes_kept)} kept)")


@cache_grp.command("prune")
@click.option("--to", "to", metavar="SIZE", default=None, help="Keep at most this much (e.g. 500MiB); default: nothing.")
@click.option("--store", "store", metavar="ID|URL", default=None, help="Only this store's entries (its id or URL).")
@json_option
def cache_prune_cmd(to: str | None, store: str | None, as_json: bool) -> None:
    """Delete least recently used entries, down to --to (or all of them).

    \b
    Example:
      objstore cache prune
      objstore cache prune --to 1GiB
      objstore cache prune --store s3://team-models/store
    """
    before, after = prune(parse_size(to) if to else 0, store)
    if as_json:
        out.emit_json({"before": before, "after": after, "freed": before - after})
    else:
        click.echo(f"freed {human_bytes(before - after)}; {human_bytes(after)} left")


@cache_grp.command("limit")
@click.argument("size", required=False)
@json_option
def cache_limit_cmd(size: str | None, as_json: bool) -> None:
    """Show the bound, or save SIZE as the bound for every process ($OBJSTORE_CACHE_SIZE wins; 0 turns the cache off).

    \b
    Example:
      objstore cache limit 10GiB
    """
    if size is not None:
        save_bound(parse_size(size))
    bound = configured_bound()
    out.emit_json({"bound": bound}) if as_json else click.echo(human_bytes(bound))


COMMANDS: tuple[click.Command, ...] = (cache_grp,)
