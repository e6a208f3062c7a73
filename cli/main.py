"""``objstore``: the git-style command over a store.

This module only assembles: the top-level group and its error handling, and
the commands of each group's module (:mod:`cli.artifacts`, :mod:`cli.artifact_commands`,
:mod:`cli.maintenance`, :mod:`cli.remote_commands`, :mod:`cli.status`, :mod:`cli.completion`),
which share :mod:`cli.context`. Every command is a few lines over the library; nothing here decides anything the library does not.
JSON shapes of ``--json`` are documented in ``docs/cli-json.md``.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Sequence
from typing import Any

import click

from objstore.errors import ObjstoreError
from objstore.storage import native

from . import (
    artifact_commands,
    artifacts,
    cache_commands,
    completion,
    maintenance,
    remote_commands,
    run_commands,
    status,
    ui_command,
)
from . import output as out
from .context import State

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a command stopped by Ctrl-C

MAIN_HELP = """objstore: a git-like content-addressed store for ML models.

\b
Example:
  objstore init
  objstore log-model model.safetensors --name mnist --alias best
  objstore log mnist
  objstore diff mnist:v0 mnist:v1
  objstore use-model mnist:best

The store is --store, else $OBJSTORE_DIR, else the nearest .objstore directory
above the working directory, else ~/.objstore. Set OBJSTORE_DEBUG=1 to see
tracebacks.
"""


class ObjstoreGroup(click.Group):
    """A click group whose errors are one line on stderr and never a traceback."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:  # click's own signature
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        debug = os.environ.get("OBJSTORE_DEBUG", "") not in ("", "0")
        try:
            code = super().main(args, prog_name or "objstore", complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            # A bare group (``objstore``, ``objstore remote``): its usage, as git
            # prints it, on stdout; still a usage error for a script.
            click.echo(exc.ctx.get_help())
            sys.exit(EXIT_USAGE)
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else "objstore"
            _fail(f"{exc.format_message()} (see '{where} --help')", EXIT_USAGE, debug)
        except click.ClickException as exc:
            _fail(exc.format_message(), exc.exit_code or EXIT_ERROR, debug)
        except click.Abort as exc:
            # click turns Ctrl-C into Abort; the shell's convention is 128 + SIGINT.
            if isinstance(exc.__cause__, KeyboardInterrupt):
                _fail("interrupted", EXIT_INTERRUPTED, debug)
            _fail("aborted", EXIT_ERROR, debug)
        except KeyboardInterrupt:
            _fail("interrupted", EXIT_INTERRUPTED, debug)
        except BrokenPipeError:
            sys.exit(EXIT_ERROR)
        except ObjstoreError as exc:
            _fail(exc.cli_message or str(exc), EXIT_ERROR, debug)
        except Exception as exc:  # noqa: BLE001 - the top level turns anything into one line
            _fail(f"unexpected {type(exc).__name__}: {exc}; rerun with OBJSTORE_DEBUG=1 and report it", EXIT_ERROR, debug)
        sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int, debug: bool) -> None:
    if debug:
        traceback.print_exc()
    text = " ".join(str(message).split())  # always one line
    click.echo(f"objstore: {out.paint('error', 'red', err=True)}: {text}", err=True)
    sys.exit(code)


@click.group(cls=ObjstoreGroup, help=MAIN_HELP, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.option("--store", metavar="PATH|URL", envvar=None, help="The store (a directory or an s3:// URL).")
@click.version_option(package_name="objstore", prog_name="objstore",
                      message=f"%(prog)s %(version)s (native core: {native.describe()})")
@click.pass_context
def main(ctx: click.Context, store: str | None) -> None:
    state = State(store)
    ctx.obj = state
    ctx.call_on_close(state.close)


for _command in (*artifacts.COMMANDS, *maintenance.COMMANDS, *remote_commands.COMMANDS, *cache_commands.COMMANDS,
                 *run_commands.COMMANDS, *status.COMMANDS, *completion.COMMANDS, *artifact_commands.COMMANDS,
                 *ui_command.COMMANDS):
    main.add_command(_command)

if __name__ == "__main__":
    main()
